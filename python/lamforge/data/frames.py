"""Typed frames: one labelled structure (``Frame``) and many concatenated (``FrameBatch``).

Units and conventions are the store's (see ``lamforge.data.format``): eV, Å, eV/Å, virial in eV
with ``virial = -stress * volume`` (ASE's stress sign). Conversions to and from ASE live here too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import chemical_symbols


class FrameError(ValueError):
    """A frame's field has the wrong shape, type or value; the message names the field."""


@dataclass(kw_only=True)
class Frame:
    """One labelled structure.

    Attributes:
        positions: [num_atoms, 3] Cartesian positions, Å.
        atomic_numbers: [num_atoms] atomic numbers.
        cell: [3, 3] lattice vectors as rows, Å; zeros when not periodic.
        pbc: [3] periodic along each cell vector.
        energy: Total potential energy, eV; None when not labelled.
        forces: [num_atoms, 3] forces, eV/Å, raw (constraints not applied); None when not labelled.
        virial: [3, 3] virial, eV (``-stress * volume``); None when not labelled.
        charges: [num_atoms] partial charges, e; optional.
        magnetic_moments: [num_atoms] magnetic moments, Bohr magneton; optional.
        source: Provenance: the input file (or dataset) the frame was read from.
        source_index: Index of the frame within ``source``.
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None
    charges: np.ndarray | None = None
    magnetic_moments: np.ndarray | None = None
    source: str = ""
    source_index: int = 0

    @property
    def num_atoms(self) -> int:
        """Number of atoms."""
        return int(self.atomic_numbers.shape[0])

    def check(self) -> None:
        """Checks shapes, types and finiteness of every field.

        Raises:
            FrameError: naming the first field at fault.
        """
        num_atoms = self.num_atoms
        _check_shape("positions", self.positions, (num_atoms, 3))
        _check_shape("cell", self.cell, (3, 3))
        _check_shape("pbc", self.pbc, (3,))
        if num_atoms == 0:
            raise FrameError("field 'atomic_numbers': the frame has no atoms")
        if self.atomic_numbers.min() < 1 or self.atomic_numbers.max() >= len(chemical_symbols):
            raise FrameError(
                f"field 'atomic_numbers': values must be in 1..{len(chemical_symbols) - 1}, "
                f"got {self.atomic_numbers.min()}..{self.atomic_numbers.max()}"
            )
        for name, shape in (
            ("forces", (num_atoms, 3)),
            ("virial", (3, 3)),
            ("charges", (num_atoms,)),
            ("magnetic_moments", (num_atoms,)),
        ):
            value = getattr(self, name)
            if value is not None:
                _check_shape(name, value, shape)
        if self.virial is not None and not self.pbc.all():
            raise FrameError("field 'virial': only frames periodic in all directions have one")
        pbc = np.asarray(self.pbc, dtype=bool)
        if pbc.all():
            degenerate = abs(np.linalg.det(self.cell)) < 1e-9
        else:
            periodic_vectors = np.asarray(self.cell)[pbc]
            degenerate = np.linalg.matrix_rank(periodic_vectors, tol=1e-9) < pbc.sum()
        if degenerate:
            raise FrameError(
                f"field 'cell': the lattice vectors of the periodic directions "
                f"(pbc={self.pbc.tolist()}) are zero or linearly dependent"
            )
        for name in ("positions", "cell", "energy", "forces", "virial"):
            value = getattr(self, name)
            if value is not None and not np.all(np.isfinite(value)):
                raise FrameError(f"field '{name}': contains NaN or infinity")


def _check_shape(name: str, value: np.ndarray, shape: tuple[int, ...]) -> None:
    if np.shape(value) != shape:
        raise FrameError(f"field '{name}': expected shape {shape}, got {np.shape(value)}")


@dataclass(kw_only=True)
class FrameBatch:
    """Frames with their atoms concatenated, as read from a store.

    ``F`` is the number of frames and ``A`` the total number of atoms; frame ``i`` owns atoms
    ``atom_offsets[i]:atom_offsets[i + 1]``.

    Attributes:
        frame_ids: [F] frame ids in the dataset.
        atom_offsets: [F + 1] int64 offsets of each frame's first atom in this batch.
        positions: [A, 3] Å.
        atomic_numbers: [A] uint8.
        cell: [F, 3, 3] Å.
        pbc: [F, 3] bool.
        energy: [F] eV; NaN where ``has_energy`` is false.
        has_energy: [F] bool.
        forces: [A, 3] eV/Å, NaN for frames without forces; None if the dataset has none.
        has_forces: [F] bool.
        virial: [F, 3, 3] eV, NaN where missing; None if the dataset has none.
        has_virial: [F] bool.
        charges: [A] e; None if the dataset has none.
        magnetic_moments: [A] Bohr magneton; None if the dataset has none.
    """

    frame_ids: np.ndarray
    atom_offsets: np.ndarray
    positions: np.ndarray
    atomic_numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: np.ndarray
    has_energy: np.ndarray
    has_forces: np.ndarray
    has_virial: np.ndarray
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None
    charges: np.ndarray | None = None
    magnetic_moments: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return int(self.frame_ids.shape[0])

    @property
    def num_atoms(self) -> int:
        """Total number of atoms."""
        return int(self.atom_offsets[-1])

    def frame(self, index: int) -> Frame:
        """The ``index``-th frame of the batch (not the dataset's frame id)."""
        atoms = slice(int(self.atom_offsets[index]), int(self.atom_offsets[index + 1]))

        def per_atom(values: np.ndarray | None, mask: bool) -> np.ndarray | None:
            return None if values is None or not mask else values[atoms]

        has_forces = bool(self.has_forces[index])
        return Frame(
            positions=self.positions[atoms],
            atomic_numbers=self.atomic_numbers[atoms],
            cell=self.cell[index],
            pbc=self.pbc[index],
            energy=float(self.energy[index]) if self.has_energy[index] else None,
            forces=per_atom(self.forces, has_forces),
            virial=self.virial[index] if self.has_virial[index] else None,
            charges=per_atom(self.charges, self.charges is not None),
            magnetic_moments=per_atom(self.magnetic_moments, self.magnetic_moments is not None),
            source_index=int(self.frame_ids[index]),
        )

    def frames(self) -> list[Frame]:
        """Every frame of the batch."""
        return [self.frame(index) for index in range(self.num_frames)]


def stress_to_virial(stress: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Converts an ASE stress (eV/Å^3, [3, 3] or Voigt [6]) to the stored virial (eV).

    Args:
        stress: [3, 3] or Voigt-ordered [6] (xx, yy, zz, yz, xz, xy) stress with ASE's sign.
        cell: [3, 3] lattice vectors, Å.

    Returns:
        [3, 3] virial ``-stress * volume``.
    """
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if stress.shape != (3, 3):
        raise FrameError(f"field 'stress': expected shape (3, 3) or (6,), got {stress.shape}")
    return -stress * abs(np.linalg.det(cell))


def virial_to_stress(virial: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Inverse of ``stress_to_virial``: [3, 3] virial (eV) to [3, 3] ASE stress (eV/Å^3)."""
    return -np.asarray(virial) / abs(np.linalg.det(cell))


def frame_from_atoms(atoms: Atoms, *, source: str = "", source_index: int = 0) -> Frame:
    """Builds a frame from an ASE ``Atoms`` with its calculator's stored results.

    Forces are taken from the calculator's results as stored, so the forces on atoms fixed by a
    constraint keep their DFT values (``get_forces()`` would zero them).
    """
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not pbc.any():
        cell = np.zeros((3, 3))
    energy = results.get("energy", results.get("free_energy"))
    stress = results.get("stress")
    virial = None
    if stress is not None and pbc.all():
        virial = stress_to_virial(stress, cell)
    # Only computed charges and moments are labels; ``initial_*`` arrays are inputs.
    charges = results.get("charges")
    magmoms = results.get("magmoms")
    return Frame(
        positions=np.asarray(atoms.positions, dtype=np.float64),
        atomic_numbers=np.asarray(atoms.numbers),
        cell=cell,
        pbc=pbc,
        energy=None if energy is None else float(energy),
        forces=None if results.get("forces") is None else np.asarray(results["forces"], float),
        virial=virial,
        charges=None if charges is None else np.asarray(charges, dtype=np.float64),
        magnetic_moments=None if magmoms is None else np.asarray(magmoms, dtype=np.float64),
        source=source,
        source_index=source_index,
    )


def frame_to_atoms(frame: Frame) -> Atoms:
    """An ASE ``Atoms`` carrying the frame's labels in a ``SinglePointCalculator``."""
    atoms = Atoms(
        numbers=frame.atomic_numbers.astype(int),
        positions=frame.positions,
        cell=frame.cell,
        pbc=frame.pbc,
    )
    # Charges and moments are computed labels, so they go with the results (extended XYZ then
    # writes them as ``charges`` and ``magmoms`` columns that ASE reads back as results).
    results = {}
    if frame.charges is not None:
        results["charges"] = frame.charges
    if frame.magnetic_moments is not None:
        results["magmoms"] = frame.magnetic_moments
    if frame.energy is not None:
        results["energy"] = frame.energy
    if frame.forces is not None:
        results["forces"] = frame.forces
    if frame.virial is not None:
        results["stress"] = virial_to_stress(frame.virial, frame.cell)
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms
