"""Test stores for the loader, written with the store's own writer (``lamforge.data.store``).

Chunks and shards are made tiny (64 atoms / 8 frames per inner chunk, 4 inner chunks per shard)
so that a few hundred atoms already span many inner chunks and several shard files, and every
boundary case of the Rust reader is exercised.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr

from lamforge.data import format as store_format
from lamforge.data.format import DatasetInfo
from lamforge.data.frames import Frame
from lamforge.data.store import Store

SMALL_CHUNKS = {"CHUNK_ATOMS": 64, "SHARD_ATOMS": 256, "CHUNK_FRAMES": 8, "SHARD_FRAMES": 32}


def random_cell(rng: np.random.Generator, pbc: np.ndarray) -> np.ndarray:
    """A skewed cell 5-9 Å; vacuum directions long, non-periodic frames zero."""
    if not pbc.any():
        return np.zeros((3, 3))
    cell = np.diag(rng.uniform(5.0, 9.0, 3)) + rng.uniform(-1.0, 1.0, (3, 3)) * (1 - np.eye(3))
    for axis in np.flatnonzero(~pbc):
        cell[axis] = 0.0
        cell[axis, axis] = 20.0
    return cell


def random_frames(
    seed: int, num_frames: int, atoms: tuple[int, int], pbc: tuple[bool, bool, bool]
) -> list[Frame]:
    """Frames with every label sometimes missing; positions partly outside the cell."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(num_frames):
        num_atoms = int(rng.integers(atoms[0], atoms[1] + 1))
        periodic = np.array(pbc)
        cell = random_cell(rng, periodic)
        extent = np.diag(cell) if periodic.any() else np.full(3, 1.2 * num_atoms ** (1 / 3) + 2)
        positions = rng.uniform(-0.1, 1.1, (num_atoms, 3)) * extent
        frames.append(
            Frame(
                positions=positions,
                atomic_numbers=rng.integers(1, 90, num_atoms),
                cell=cell,
                pbc=periodic,
                energy=None if index % 7 == 3 else float(rng.normal(-3.0 * num_atoms, 1.0)),
                forces=None if index % 5 == 2 else rng.normal(size=(num_atoms, 3)),
                virial=rng.normal(size=(3, 3)) if periodic.all() and index % 2 == 0 else None,
                source=f"random-{seed}",
                source_index=index,
            )
        )
    return frames


@dataclass(frozen=True)
class LoaderStore:
    path: Path
    frames: dict[str, list[Frame]]


def write_store(
    path: Path, datasets: dict[str, list[Frame]], zstd_level: int = store_format.ZSTD_LEVEL
) -> Path:
    store = Store.open(path, create=True)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SMALL_CHUNKS.items():
            patch.setattr(store_format, name, value)
        for name, frames in datasets.items():
            info = DatasetInfo(name=name, source=(f"test-{name}",))
            writer = store.writer(info, zstd_level=zstd_level)
            writer.flush_atoms = 100
            for frame in frames:
                writer.add(frame)
            writer.commit()
    return path


def zarr_frame(store: Path, dataset: str, frame: int) -> dict[str, np.ndarray]:
    """One frame read with zarr-python: the oracle of the Rust reader."""
    group = zarr.open_group(store / dataset, mode="r")
    offsets = group["atom_offsets"][frame : frame + 2]
    atoms = slice(int(offsets[0]), int(offsets[1]))
    names = set(store_format.stored_arrays(store / dataset))
    out = {
        "positions": group["positions"][atoms],
        "atomic_numbers": group["atomic_numbers"][atoms],
        "cell": group["cell"][frame],
        "pbc": group["pbc"][frame],
        "energy": group["energy"][frame],
        "has_energy": group["has_energy"][frame],
    }
    for label in ("forces", "virial"):
        present = label in names and bool(group[f"has_{label}"][frame])
        out[f"has_{label}"] = present
        rows = atoms if label == "forces" else frame
        out[label] = group[label][rows] if present else None
    return out
