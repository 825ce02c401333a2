"""Unit conversion of imported frames to the store's eV, Å, eV/Å and virial in eV."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ase import units

from lamforge.data.frames import Frame

#: eV per unit of energy.
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "Hartree": units.Hartree,
    "Ry": units.Rydberg,
    "kcal/mol": units.kcal / units.mol,
    "kJ/mol": units.kJ / units.mol,
}
#: Å per unit of length.
LENGTH_UNITS: dict[str, float] = {"Angstrom": 1.0, "A": 1.0, "Bohr": units.Bohr, "nm": 10.0}


@dataclass(frozen=True, kw_only=True)
class InputUnits:
    """Units of an input whose files do not say (DeePMD npy, plain xyz, ...).

    Attributes:
        energy: Key of ``ENERGY_UNITS``.
        length: Key of ``LENGTH_UNITS``; forces are in energy/length and virials in energy.
    """

    energy: str = "eV"
    length: str = "Angstrom"

    def __post_init__(self) -> None:
        if self.energy not in ENERGY_UNITS:
            raise ValueError(f"unknown energy unit {self.energy!r}; known: {list(ENERGY_UNITS)}")
        if self.length not in LENGTH_UNITS:
            raise ValueError(f"unknown length unit {self.length!r}; known: {list(LENGTH_UNITS)}")

    @property
    def is_native(self) -> bool:
        """True when no conversion is needed."""
        return ENERGY_UNITS[self.energy] == 1.0 and LENGTH_UNITS[self.length] == 1.0

    def convert(self, frame: Frame) -> Frame:
        """The frame in eV and Å (a new frame when a conversion applies)."""
        if self.is_native:
            return frame
        energy, length = ENERGY_UNITS[self.energy], LENGTH_UNITS[self.length]
        return replace(
            frame,
            positions=frame.positions * length,
            cell=frame.cell * length,
            energy=None if frame.energy is None else frame.energy * energy,
            forces=None if frame.forces is None else frame.forces * (energy / length),
            virial=None if frame.virial is None else frame.virial * energy,
        )
