"""ASE calculators over lamforge models."""

from lamforge.calculators.ase import LAMCalculator

__all__ = ["LAMCalculator"]
