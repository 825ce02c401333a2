"""Frames from DeePMD-kit npy systems.

A system is a directory with ``type.raw`` (one type index per atom), ``type_map.raw`` (element
symbol of each type) and ``set.*/`` folders holding ``coord.npy`` [frames, atoms * 3],
``box.npy`` [frames, 9] (absent when the system has a ``nopbc`` marker file), ``energy.npy``
[frames], and optionally ``force.npy`` [frames, atoms * 3] and ``virial.npy`` [frames, 9].
DeePMD's virial is in eV with the same sign as the store's (``-stress * volume``), so it is stored
as is. Sets are read in name order and memory-mapped, one frame at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers as symbol_to_number

from lamforge.data.frames import Frame
from lamforge.data.importers.errors import DataImportError
from lamforge.data.units import InputUnits


def is_deepmd_system(path: Path) -> bool:
    """True when ``path`` is a DeePMD system directory."""
    return (path / "type.raw").is_file()


def find_deepmd_systems(root: Path) -> list[Path]:
    """DeePMD systems at or under ``root``, sorted by path."""
    if is_deepmd_system(root):
        return [root]
    return sorted(path.parent for path in root.rglob("type.raw"))


def _atomic_numbers(system: Path) -> np.ndarray:
    types = np.loadtxt(system / "type.raw", dtype=np.int64, ndmin=1)
    type_map_file = system / "type_map.raw"
    if not type_map_file.is_file():
        raise DataImportError(f"{type_map_file}: missing (needed to know the elements)")
    type_map = type_map_file.read_text().split()
    if types.min() < 0 or types.max() >= len(type_map):
        raise DataImportError(
            f"{system / 'type.raw'}: type indices {types.min()}..{types.max()} do not fit "
            f"type_map.raw's {len(type_map)} elements"
        )
    unknown = [symbol for symbol in type_map if symbol not in symbol_to_number]
    if unknown:
        raise DataImportError(f"{type_map_file}: unknown element symbols {unknown}")
    return np.array([symbol_to_number[symbol] for symbol in type_map])[types]


def _load(set_dir: Path, name: str, columns: int, num_frames: int | None) -> np.ndarray | None:
    path = set_dir / f"{name}.npy"
    if not path.is_file():
        return None
    array = np.load(path, mmap_mode="r")
    rows = array.shape[0] if array.ndim else 0
    expected = (num_frames if num_frames is not None else rows, columns)
    if array.reshape(rows, -1).shape != expected:
        raise DataImportError(
            f"{path}, field '{name}': expected shape {expected}, got {array.shape}"
        )
    return array.reshape(expected)


def read_deepmd(system: Path, *, units: InputUnits, skip: int = 0) -> Iterator[Frame]:
    """Yields the frames of one DeePMD system, converted to eV and Å.

    Args:
        system: System directory.
        units: Units of the values (DeePMD's convention is eV and Å).
        skip: Frames at the start of the system to skip (already imported, when resuming).

    Raises:
        DataImportError: naming the file, the frame and the field at fault.
    """
    numbers = _atomic_numbers(system)
    num_atoms = numbers.shape[0]
    periodic = not (system / "nopbc").exists()
    if (system / "set.000" / "real_atom_types.npy").exists():
        raise DataImportError(f"{system}: mixed-type DeePMD systems are not supported")
    sets = sorted(path for path in system.glob("set.*") if path.is_dir())
    if not sets:
        raise DataImportError(f"{system}: no set.* directories")
    index = 0
    for set_dir in sets:
        coord = _load(set_dir, "coord", num_atoms * 3, None)
        if coord is None:
            raise DataImportError(f"{set_dir}: missing coord.npy")
        num_frames = coord.shape[0]
        energy = _load(set_dir, "energy", 1, num_frames)
        force = _load(set_dir, "force", num_atoms * 3, num_frames)
        virial = _load(set_dir, "virial", 9, num_frames)
        box = _load(set_dir, "box", 9, num_frames) if periodic else None
        if periodic and box is None:
            raise DataImportError(f"{set_dir}: missing box.npy (and no nopbc marker)")
        for row in range(num_frames):
            if index >= skip:
                yield units.convert(
                    Frame(
                        positions=np.array(coord[row], dtype=np.float64).reshape(num_atoms, 3),
                        atomic_numbers=numbers,
                        cell=np.zeros((3, 3)) if box is None else box[row].reshape(3, 3) * 1.0,
                        pbc=np.full(3, periodic),
                        energy=None if energy is None else float(energy[row, 0]),
                        forces=None if force is None else force[row].reshape(num_atoms, 3) * 1.0,
                        virial=None if virial is None else virial[row].reshape(3, 3) * 1.0,
                        source=str(system),
                        source_index=index,
                    )
                )
            index += 1
