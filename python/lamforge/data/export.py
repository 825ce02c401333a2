"""Export of a stored dataset to extended XYZ or DeePMD npy systems.

Both writers stream the dataset a batch at a time. Extended XYZ gets energy, forces and ASE's
stress (eV/Å^3) converted back from the stored virial. DeePMD needs the same atom order in every
frame of a system, so frames are grouped by (atomic-number sequence, periodicity, labels present);
each group becomes one system named after its formula, with ``set.NNN`` folders of at most
``set_size`` frames, ``virial.npy`` in eV, and a ``nopbc`` marker for non-periodic systems.
Frames periodic in only some directions are written with their box (DeePMD treats every
direction as periodic; vacuum keeps images apart).
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols
from ase.io import write

from lamforge.data.frames import Frame, frame_to_atoms
from lamforge.data.index import hill_formula
from lamforge.data.reader import DatasetReader

FORMATS = ("extxyz", "deepmd")


def export_extxyz(reader: DatasetReader, path: Path) -> int:
    """Writes every frame to one extended-XYZ file (atomically); returns the frame count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "w") as handle:
        for batch in reader.iter_batches():
            write(handle, [frame_to_atoms(frame) for frame in batch.frames()], format="extxyz")
    os.replace(temporary, path)
    return reader.num_frames


@dataclass
class _System:
    """Frames of one DeePMD system waiting to be written as a set."""

    directory: Path
    numbers: np.ndarray
    periodic: bool
    frames: list[Frame] = field(default_factory=list)
    num_sets: int = 0


def _system_key(frame: Frame) -> tuple:
    return (
        frame.atomic_numbers.tobytes(),
        bool(frame.pbc.any()),
        frame.energy is not None,
        frame.forces is not None,
        frame.virial is not None,
    )


def _write_set(system: _System, type_map: list[str]) -> None:
    if system.num_sets == 0:
        system.directory.mkdir(parents=True)
        types = [type_map.index(chemical_symbols[z]) for z in system.numbers]
        (system.directory / "type.raw").write_text("\n".join(map(str, types)) + "\n")
        (system.directory / "type_map.raw").write_text("\n".join(type_map) + "\n")
        if not system.periodic:
            (system.directory / "nopbc").touch()
    set_dir = system.directory / f"set.{system.num_sets:03d}"
    set_dir.mkdir()
    frames, count = system.frames, len(system.frames)
    np.save(set_dir / "coord.npy", np.stack([f.positions for f in frames]).reshape(count, -1))
    if system.periodic:
        np.save(set_dir / "box.npy", np.stack([f.cell for f in frames]).reshape(count, 9))
    if frames[0].energy is not None:
        np.save(set_dir / "energy.npy", np.array([f.energy for f in frames]))
    if frames[0].forces is not None:
        np.save(set_dir / "force.npy", np.stack([f.forces for f in frames]).reshape(count, -1))
    if frames[0].virial is not None:
        np.save(set_dir / "virial.npy", np.stack([f.virial for f in frames]).reshape(count, 9))
    system.frames = []
    system.num_sets += 1


def export_deepmd(reader: DatasetReader, directory: Path, *, set_size: int = 5000) -> int:
    """Writes the dataset as DeePMD npy systems under ``directory``; returns the system count.

    The directory is built beside its final place and renamed into it when complete.
    """
    directory = Path(directory)
    if directory.exists():
        raise FileExistsError(f"{directory} exists; choose a new output directory")
    temporary = directory.with_name(f".{directory.name}.partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    type_map = list(reader.info.elements)
    systems: dict[tuple, _System] = {}
    names: Counter[str] = Counter()
    for batch in reader.iter_batches():
        for frame in batch.frames():
            key = _system_key(frame)
            if key not in systems:
                symbols, counts = np.unique(
                    [chemical_symbols[z] for z in frame.atomic_numbers], return_counts=True
                )
                formula = hill_formula(dict(zip(symbols.tolist(), counts.tolist(), strict=True)))
                names[formula] += 1
                systems[key] = _System(
                    directory=temporary / f"{formula}_{names[formula] - 1}",
                    numbers=frame.atomic_numbers,
                    periodic=bool(frame.pbc.any()),
                )
            system = systems[key]
            system.frames.append(frame)
            if len(system.frames) == set_size:
                _write_set(system, type_map)
    for system in systems.values():
        if system.frames:
            _write_set(system, type_map)
    temporary.mkdir(exist_ok=True)
    os.replace(temporary, directory)
    return len(systems)
