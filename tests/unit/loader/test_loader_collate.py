"""Collated batches against zarr-python and a brute-force neighbour search."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from loader_helpers import zarr_frame

from lamforge.data.format import COMPACT_ZSTD_LEVEL
from lamforge.data.loader import DatasetSource, LoaderConfig, NeighborSpec
from lamforge.neighbors import dense_neighbor_lists

NAMES = ("bulk", "slab", "molecules")


def config(store, **options) -> LoaderConfig:
    return LoaderConfig(
        store=store,
        datasets=tuple(DatasetSource(name=name) for name in NAMES),
        num_threads=2,
        **options,
    )


def test_every_frame_equals_what_zarr_python_reads(loader_store):
    with config(loader_store.path, neighbors=(), batch_size=7).build() as loader:
        seen = 0
        for batch in loader:
            offsets = batch.atom_offsets.numpy()
            assert offsets[0] == 0 and offsets[-1] == batch.num_atoms
            assert batch.positions.shape == (batch.num_atoms, 3)
            assert batch.cell.shape == (batch.num_frames, 3, 3)
            for position in range(batch.num_frames):
                dataset = NAMES[int(batch.dataset_id[position])]
                frame = int(batch.frame_id[position])
                expected = zarr_frame(loader_store.path, dataset, frame)
                atoms = batch.frame_slice(position)
                np.testing.assert_array_equal(batch.positions[atoms].numpy(), expected["positions"])
                np.testing.assert_array_equal(
                    batch.atomic_numbers[atoms].numpy(), expected["atomic_numbers"]
                )
                assert (batch.atom_frame[atoms] == position).all()
                assert (batch.atom_dataset_id[atoms] == batch.dataset_id[position]).all()
                np.testing.assert_array_equal(batch.cell[position].numpy(), expected["cell"])
                np.testing.assert_array_equal(batch.pbc[position].numpy(), expected["pbc"])
                assert bool(batch.has_energy[position]) == bool(expected["has_energy"])
                if expected["has_energy"]:
                    assert float(batch.energy[position]) == float(expected["energy"])
                else:
                    assert float(batch.energy[position]) == 0.0
                for label, rows in (("forces", atoms), ("virial", position)):
                    has = bool(getattr(batch, f"has_{label}")[position])
                    assert has == expected[f"has_{label}"]
                    values = getattr(batch, label)[rows].numpy()
                    if has:
                        np.testing.assert_array_equal(values, expected[label])
                    else:
                        assert (values == 0).all()
                seen += 1
    assert seen == sum(len(frames) for frames in loader_store.frames.values())


def test_a_compact_zstd_level_store_gives_the_same_batches(loader_store, compact_loader_store):
    level = json.loads((compact_loader_store.path / "bulk" / "positions" / "zarr.json").read_text())
    inner = level["codecs"][0]["configuration"]["codecs"]
    assert inner[1]["configuration"]["level"] == COMPACT_ZSTD_LEVEL
    options = {"neighbors": (), "batch_size": 9, "cache_megabytes": 0}
    with (
        config(loader_store.path, **options).build() as default,
        config(compact_loader_store.path, **options).build() as compact,
    ):
        pairs = list(zip(default, compact, strict=True))
    assert len(pairs) > 5
    for expected, got in pairs:
        for name in ("positions", "atomic_numbers", "forces", "cell", "energy", "has_forces"):
            assert torch.equal(getattr(got, name), getattr(expected, name)), name


def test_labels_match_the_frames_written(loader_store):
    """The masks follow which labels each written frame had."""
    with config(loader_store.path, neighbors=()).build() as loader:
        pairs = [(d, f) for d, name in enumerate(NAMES) for f in range(6)]
        batch = loader.collate(pairs)
    for position, (dataset, frame) in enumerate(pairs):
        written = loader_store.frames[NAMES[dataset]][frame]
        assert bool(batch.has_energy[position]) == (written.energy is not None)
        assert bool(batch.has_forces[position]) == (written.forces is not None)
        assert bool(batch.has_virial[position]) == (written.virial is not None)


def brute_force(positions, cell, pbc, cutoff):
    """Every (j, shift) within ``cutoff`` of each atom, by enumerating images."""
    heights = np.zeros(3)
    if pbc.any():
        volume = abs(np.linalg.det(cell))
        for axis in range(3):
            heights[axis] = volume / np.linalg.norm(
                np.cross(cell[(axis + 1) % 3], cell[(axis + 2) % 3])
            )
    reach = [int(np.ceil(cutoff / heights[a])) + 1 if pbc[a] else 0 for a in range(3)]
    shifts = np.array(list(itertools.product(*[range(-r, r + 1) for r in reach])))
    pairs = []
    for i in range(len(positions)):
        vectors = positions[None, :, :] - positions[i] + (shifts @ cell)[:, None, :]
        distance = np.linalg.norm(vectors, axis=-1)
        found = set()
        for s, j in zip(*np.nonzero(distance < cutoff), strict=True):
            if j == i and not shifts[s].any():
                continue
            found.add((int(j), tuple(int(v) for v in shifts[s]), float(distance[s, j])))
        pairs.append(found)
    return pairs


@pytest.mark.parametrize("spec_index", [0, 1])
def test_neighbor_matrices_match_brute_force_with_offsets(loader_store, spec_index):
    specs = (
        NeighborSpec(name="wide", cutoff=5.0, max_neighbors=40),
        NeighborSpec(name="narrow", cutoff=3.0, max_neighbors=12),
    )
    spec = specs[spec_index]
    pairs = [(0, 0), (0, 1), (1, 2), (2, 3), (0, 7), (1, 4), (2, 9)]
    with config(loader_store.path, neighbors=specs).build() as loader:
        batch = loader.collate(pairs)
    neighbors = batch.neighbor_list(spec.name)
    assert neighbors.index.shape == (batch.num_atoms, spec.max_neighbors)
    assert neighbors.shifts.shape == (batch.num_atoms, spec.max_neighbors, 3)
    positions = batch.positions.numpy()
    for position, (_, frame) in enumerate(pairs):
        atoms = batch.frame_slice(position)
        start = atoms.start
        cell, pbc = batch.cell[position].numpy(), batch.pbc[position].numpy()
        expected = brute_force(positions[atoms], cell, pbc, spec.cutoff)
        dropped = 0
        for local, found in enumerate(expected):
            row = neighbors.index[start + local].numpy()
            kept = row[row >= 0]
            assert (row[len(kept) :] == -1).all(), "padding only at the end of a row"
            assert ((kept >= start) & (kept < atoms.stop)).all(), "global indices inside the frame"
            row_shifts = neighbors.shifts[start + local, : len(kept)].numpy()
            listed = {
                (int(j) - start, tuple(int(v) for v in s))
                for j, s in zip(kept, row_shifts, strict=True)
            }
            by_pair = {(j, s): d for j, s, d in found}
            assert listed <= set(by_pair), f"frame {frame}: pairs outside the cutoff"
            assert len(listed) == len(kept), "no pair listed twice"
            assert len(kept) == min(len(found), spec.max_neighbors)
            distances = [
                by_pair[(int(j) - start, tuple(int(v) for v in s))]
                for j, s in zip(kept, row_shifts, strict=True)
            ]
            assert np.all(np.diff(distances) >= -1e-9), "rows sorted by distance"
            vectors = positions[kept] - positions[start + local] + row_shifts @ cell
            np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), distances, atol=1e-9)
            if len(found) > spec.max_neighbors:
                left_out = sorted(d for (j, s), d in by_pair.items() if (j, s) not in listed)
                assert max(distances) <= left_out[0] + 1e-9, "the cap keeps the nearest"
            dropped += len(found) - len(kept)
        assert int(neighbors.num_dropped[position]) == dropped


def test_neighbor_matrices_equal_the_neighbor_module_per_frame(loader_store):
    """Exactly the per-frame lists of ``lamforge.neighbors``, shifted to global atom indices."""
    pairs = [(d, f) for d in range(3) for f in range(0, 25, 4)]
    with config(loader_store.path).build() as loader:
        batch = loader.collate(pairs)
    assert [n.name for n in batch.neighbors] == ["repinit", "repformer"]
    positions = batch.positions.numpy()
    for position in range(batch.num_frames):
        atoms = batch.frame_slice(position)
        pbc = batch.pbc[position].numpy()
        expected = dense_neighbor_lists(
            positions[atoms],
            batch.cell[position].numpy() if pbc.any() else None,
            pbc.tolist(),
            specs=[(6.0, 120), (4.0, 48)],
            num_threads=1,
        )
        for ours, theirs in zip(batch.neighbors, expected, strict=True):
            index = np.where(theirs.index >= 0, theirs.index + atoms.start, -1)
            np.testing.assert_array_equal(ours.index[atoms].numpy(), index)
            np.testing.assert_array_equal(ours.shifts[atoms].numpy(), theirs.shifts)
            assert int(ours.num_dropped[position]) == theirs.num_dropped


def test_batch_moves_to_a_device_with_every_field(loader_store):
    with config(loader_store.path).build() as loader:
        batch = loader.collate([(0, 1), (2, 5)])
    moved = batch.to("cpu")
    assert moved.num_frames == 2 and moved.dataset_names == NAMES
    assert torch.equal(moved.positions, batch.positions)
    for ours, theirs in zip(moved.neighbors, batch.neighbors, strict=True):
        assert ours.name == theirs.name and torch.equal(ours.index, theirs.index)
    assert batch.positions.dtype == torch.float64 and batch.atomic_numbers.dtype == torch.int64
    assert batch.neighbors[0].index.dtype == torch.int64 and batch.pbc.dtype == torch.bool
    with pytest.raises(KeyError, match="repinit"):
        batch.neighbor_list("missing")
