"""Capped, dense, multi-cutoff and batched forms against the plain full list."""

import numpy as np
import pytest
import torch

from lamforge.neighbors import (
    DPA2_SPECS,
    batch_dense_neighbor_lists,
    dense_neighbor_lists,
    neighbor_list,
)


def water_like_box(num_molecules, seed):
    """Random O/H positions at liquid-water density (0.0334 molecules per cubic Angstrom)."""
    rng = np.random.default_rng(seed)
    side = (num_molecules / 0.0334) ** (1 / 3)
    oxygens = rng.uniform(0, side, size=(num_molecules, 3))
    hydrogens = oxygens[:, None, :] + rng.normal(scale=0.6, size=(num_molecules, 2, 3))
    positions = np.concatenate((oxygens, hydrogens.reshape(-1, 3)))
    return positions, np.diag([side, side, side])


@pytest.fixture(scope="module")
def system():
    positions, cell = water_like_box(64, seed=3)
    # Shear it so the cell is triclinic, and pull some atoms outside.
    cell = cell + np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [1.0, -1.5, 0.0]])
    positions = positions @ np.linalg.solve(np.diag(np.diag(cell)), cell)
    positions[::7] += 1.3 * cell[0] - 2.0 * cell[2]
    return positions, cell


def first_per_centre(nl, max_neighbors):
    """Pairs of the sorted full list whose rank within their centre is below max_neighbors."""
    starts = np.searchsorted(nl.centers, nl.centers, side="left")
    return np.arange(nl.num_pairs) - starts < max_neighbors


@pytest.mark.parametrize("pbc", [(True, True, True), (True, True, False)])
def test_capped_equals_capping_the_sorted_full_list(system, pbc):
    positions, cell = system
    full = neighbor_list(positions, cell, pbc, cutoff=5.0)
    counts = np.bincount(full.centers, minlength=len(positions))
    cap = int(np.median(counts))
    capped = neighbor_list(positions, cell, pbc, cutoff=5.0, max_neighbors=cap)
    keep = first_per_centre(full, cap)
    assert capped.num_dropped == int(np.maximum(counts - cap, 0).sum()) > 0
    np.testing.assert_array_equal(capped.centers, full.centers[keep])
    np.testing.assert_array_equal(capped.neighbors, full.neighbors[keep])
    np.testing.assert_array_equal(capped.shifts, full.shifts[keep])
    np.testing.assert_array_equal(capped.distances, full.distances[keep])
    np.testing.assert_array_equal(capped.vectors, full.vectors[keep])


def test_dense_matrices_match_the_sparse_list(system):
    positions, cell = system
    full = neighbor_list(positions, cell, cutoff=6.0)
    dense = full.dense(40)
    counts = np.bincount(full.centers, minlength=len(positions))
    assert dense.num_dropped == int(np.maximum(counts - 40, 0).sum())
    np.testing.assert_array_equal(dense.mask.sum(axis=1), np.minimum(counts, 40))
    keep = first_per_centre(full, 40)
    np.testing.assert_array_equal(dense.index[dense.mask], full.neighbors[keep])
    np.testing.assert_array_equal(dense.shifts[dense.mask], full.shifts[keep])
    np.testing.assert_array_equal(dense.distances[dense.mask], full.distances[keep])
    assert np.all(dense.index[~dense.mask] == -1)
    assert np.all(dense.shifts[~dense.mask] == 0)
    assert np.all(np.isinf(dense.distances[~dense.mask]))
    assert full.dense().max_neighbors == counts.max()


def test_multi_cutoff_equals_separate_calls(system):
    positions, cell = system
    specs = [(6.0, 60), (4.0, 20), (3.0, 500)]
    together = dense_neighbor_lists(positions, cell, specs=specs)
    for (cutoff, max_neighbors), dense in zip(specs, together, strict=True):
        alone = dense_neighbor_lists(positions, cell, specs=[(cutoff, max_neighbors)])[0]
        from_sparse = neighbor_list(positions, cell, cutoff=cutoff).dense(max_neighbors)
        for other in (alone, from_sparse):
            np.testing.assert_array_equal(dense.index, other.index)
            np.testing.assert_array_equal(dense.shifts, other.shifts)
            np.testing.assert_array_equal(dense.distances, other.distances)
            assert dense.num_dropped == other.num_dropped
    assert together[0].num_dropped > 0 and together[1].num_dropped > 0


def test_dpa2_defaults_and_threads(system):
    positions, cell = system
    one = dense_neighbor_lists(positions, cell, num_threads=1)
    two = dense_neighbor_lists(positions, cell, num_threads=2)
    assert [d.cutoff for d in one] == [spec[0] for spec in DPA2_SPECS]
    assert [d.max_neighbors for d in one] == [spec[1] for spec in DPA2_SPECS]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.distances, b.distances)
    sparse_one = neighbor_list(positions, cell, cutoff=6.0, num_threads=1)
    sparse_two = neighbor_list(positions, cell, cutoff=6.0, num_threads=2)
    np.testing.assert_array_equal(sparse_one.neighbors, sparse_two.neighbors)
    np.testing.assert_array_equal(sparse_one.vectors, sparse_two.vectors)


def test_batch_equals_frame_by_frame():
    rng = np.random.default_rng(5)
    frames = []
    for number, size in enumerate([10, 0, 40, 1, 25]):
        positions, cell = water_like_box(max(size, 1), seed=number)
        positions = positions[: size * 3] if size else positions[:0]
        pbc = [
            (True, True, True),
            (True, True, True),
            (True, True, False),
            (True,) * 3,
            (False,) * 3,
        ][number]
        frames.append((positions + rng.uniform(-3, 3, size=3), cell, pbc))
    flat = np.concatenate([f[0] for f in frames])
    offsets = np.cumsum([0] + [len(f[0]) for f in frames])
    cells = np.stack([f[1] for f in frames])
    pbcs = np.array([f[2] for f in frames])
    specs = [(5.0, 30), (3.0, 8)]
    batched = batch_dense_neighbor_lists(flat, offsets, cells, pbcs, specs=specs)
    for spec_number, dense in enumerate(batched):
        assert dense.index.shape == (len(flat), specs[spec_number][1])
        total_dropped = 0
        for number, (positions, cell, pbc) in enumerate(frames):
            single = dense_neighbor_lists(positions, cell, pbc, specs=specs)[spec_number]
            rows = slice(offsets[number], offsets[number + 1])
            expected = np.where(single.index >= 0, single.index + offsets[number], -1)
            np.testing.assert_array_equal(dense.index[rows], expected)
            np.testing.assert_array_equal(dense.shifts[rows], single.shifts)
            np.testing.assert_array_equal(dense.distances[rows], single.distances)
            total_dropped += single.num_dropped
        assert dense.num_dropped == total_dropped


def test_torch_tensors_are_accepted(system):
    positions, cell = system
    from_numpy = neighbor_list(positions, cell, cutoff=4.0)
    from_torch = neighbor_list(torch.from_numpy(positions), torch.from_numpy(cell), cutoff=4.0)
    np.testing.assert_array_equal(from_numpy.neighbors, from_torch.neighbors)
    np.testing.assert_array_equal(from_numpy.distances, from_torch.distances)
    offsets = torch.tensor([0, len(positions)])
    batched = batch_dense_neighbor_lists(
        torch.from_numpy(positions),
        offsets,
        torch.from_numpy(cell)[None],
        torch.ones(1, 3, dtype=torch.bool),
    )
    np.testing.assert_array_equal(batched[0].index, dense_neighbor_lists(positions, cell)[0].index)


def test_cluster_without_cell_ignores_pbc():
    positions, _ = water_like_box(30, seed=9)
    free = neighbor_list(positions, None, cutoff=4.0)
    explicit = neighbor_list(positions, np.zeros((3, 3)), (False, False, False), cutoff=4.0)
    np.testing.assert_array_equal(free.neighbors, explicit.neighbors)
    assert np.all(free.shifts == 0)


def test_empty_frames_give_empty_lists():
    empty = np.zeros((0, 3))
    nl = neighbor_list(empty, np.eye(3) * 3.0, cutoff=2.0)
    assert nl.num_pairs == 0 and nl.shifts.shape == (0, 3) and nl.vectors.shape == (0, 3)
    assert [d.index.shape for d in dense_neighbor_lists(empty, np.eye(3) * 3.0)] == [
        (0, 120),
        (0, 48),
    ]
    batched = batch_dense_neighbor_lists(empty, [0, 0], np.eye(3)[None] * 3.0, [True] * 3)
    assert batched[1].index.shape == (0, 48)
