"""Error metrics of energy models: RMSE and MAE of energy per atom, forces and virial per atom.

Accumulates over batches with label masks, so frames without a label never count, and reports
per task (dataset) as a typed :class:`ErrorMetrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lamforge.train.loss import EnergyLabels, EnergyPrediction


@dataclass(frozen=True, kw_only=True)
class ErrorMetrics:
    """Errors over a set of frames (None where no frame had the label).

    Attributes:
        num_frames: Frames evaluated.
        energy_rmse_per_atom, energy_mae_per_atom: eV/atom.
        forces_rmse, forces_mae: eV/Å over force components.
        virial_rmse_per_atom, virial_mae_per_atom: eV/atom over virial components.
    """

    num_frames: int
    energy_rmse_per_atom: float | None = None
    energy_mae_per_atom: float | None = None
    forces_rmse: float | None = None
    forces_mae: float | None = None
    virial_rmse_per_atom: float | None = None
    virial_mae_per_atom: float | None = None

    def summary_row(self) -> dict[str, float | int | None]:
        """Frames and the energy/force RMSEs in meV (rounded to 0.01), for tables and JSON."""
        return {
            "frames": self.num_frames,
            "energy_rmse_mev_per_atom": _milli(self.energy_rmse_per_atom),
            "forces_rmse_mev_per_a": _milli(self.forces_rmse),
        }


def _milli(value: float | None) -> float | None:
    return None if value is None else round(1000.0 * value, 2)


class _Moments:
    def __init__(self) -> None:
        self.count = 0
        self.squares = 0.0
        self.absolute = 0.0

    def add(self, residual: torch.Tensor) -> None:
        residual = residual.detach().to(torch.float64)
        self.count += residual.numel()
        self.squares += float((residual**2).sum())
        self.absolute += float(residual.abs().sum())

    def rmse(self) -> float | None:
        return math.sqrt(self.squares / self.count) if self.count else None

    def mae(self) -> float | None:
        return self.absolute / self.count if self.count else None


class ErrorAccumulator:
    """Adds up the errors of batches; :meth:`result` gives the metrics."""

    def __init__(self) -> None:
        self.num_frames = 0
        self.energy = _Moments()
        self.forces = _Moments()
        self.virial = _Moments()

    def add(self, prediction: EnergyPrediction, labels: EnergyLabels) -> None:
        """Adds one batch."""
        self.num_frames += int(labels.energy.shape[0])
        atoms = labels.num_atoms.to(torch.float64)
        mask = labels.energy_mask
        self.energy.add((prediction.energy[mask] - labels.energy[mask]) / atoms[mask])
        mask = labels.forces_mask
        self.forces.add(prediction.forces[mask] - labels.forces[mask])
        if (
            prediction.virial is not None
            and labels.virial is not None
            and labels.virial_mask is not None
        ):
            mask = labels.virial_mask
            residual = (prediction.virial[mask] - labels.virial[mask]).reshape(-1, 9)
            self.virial.add(residual / atoms[mask].unsqueeze(-1))

    def result(self) -> ErrorMetrics:
        """The metrics over everything added so far."""
        return ErrorMetrics(
            num_frames=self.num_frames,
            energy_rmse_per_atom=self.energy.rmse(),
            energy_mae_per_atom=self.energy.mae(),
            forces_rmse=self.forces.rmse(),
            forces_mae=self.forces.mae(),
            virial_rmse_per_atom=self.virial.rmse(),
            virial_mae_per_atom=self.virial.mae(),
        )
