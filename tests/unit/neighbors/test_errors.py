"""Bad input gets a ValueError that names the problem."""

import numpy as np
import pytest

from lamforge.neighbors import batch_dense_neighbor_lists, dense_neighbor_lists, neighbor_list

CELL = np.eye(3) * 4.0
POSITIONS = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.0, 0.5, 3.0]])


@pytest.mark.parametrize(
    ("positions", "cell", "pbc", "cutoff", "message"),
    [
        (np.array([[0.0, np.nan, 0.0]]), CELL, True, 3.0, r"NaN or infinite .*atom 0"),
        (np.array([[0.0, 0.0, 0.0], [np.inf, 0, 0]]), CELL, True, 3.0, "atom 1"),
        (POSITIONS, np.zeros((3, 3)), True, 3.0, "cell vector 0 is zero"),
        (POSITIONS, np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 0, 1.0]]), True, 3.0, "singular"),
        (POSITIONS, np.array([[4.0, 0, 0], [0, 4.0, 0], [4.0, 4.0, 1e-9]]), True, 3.0, "flat"),
        (POSITIONS, np.array([[np.nan, 0, 0], [0, 4.0, 0], [0, 0, 4.0]]), True, 3.0, "cell"),
        (POSITIONS, CELL, True, 0.0, "cutoff must be a positive"),
        (POSITIONS, CELL, True, -1.0, "cutoff must be a positive"),
        (POSITIONS, CELL, True, float("nan"), "cutoff must be a positive"),
        (POSITIONS[:, :2], CELL, True, 3.0, r"positions must have shape \(num_atoms, 3\)"),
        (POSITIONS, np.eye(2), True, 3.0, r"cell must have shape \(3, 3\)"),
        (POSITIONS, CELL, (True, False), 3.0, "pbc must be a bool or 3 bools"),
    ],
)
def test_bad_input(positions, cell, pbc, cutoff, message):
    with pytest.raises(ValueError, match=message):
        neighbor_list(positions, cell, pbc, cutoff=cutoff)


def test_flat_direction_that_is_not_periodic_is_fine():
    slab_cell = np.array([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 0.0]])
    nl = neighbor_list(POSITIONS, slab_cell, (True, True, False), cutoff=3.0)
    assert np.all(nl.shifts[:, 2] == 0)


def test_memory_budget_names_the_pair_count():
    with pytest.raises(ValueError, match=r"would produce about .* pairs.*max_pairs"):
        neighbor_list(POSITIONS, np.eye(3) * 2.0, cutoff=20.0, max_pairs=10_000)
    with pytest.raises(ValueError, match=r"slots.*max_pairs"):
        dense_neighbor_lists(POSITIONS, CELL, specs=[(3.0, 10_000)], max_pairs=1_000)


def test_bad_specs_threads_and_batches():
    with pytest.raises(ValueError, match="specs is empty"):
        dense_neighbor_lists(POSITIONS, CELL, specs=[])
    with pytest.raises(ValueError, match=r"specs\[1\] cutoff"):
        dense_neighbor_lists(POSITIONS, CELL, specs=[(3.0, 4), (-1.0, 4)])
    with pytest.raises(ValueError, match=r"specs\[0\] max_neighbors"):
        dense_neighbor_lists(POSITIONS, CELL, specs=[(3.0, 0)])
    with pytest.raises(ValueError, match="num_threads"):
        neighbor_list(POSITIONS, CELL, cutoff=3.0, num_threads=-1)
    cells = np.stack([CELL, CELL])
    pbcs = np.ones((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="atom_offsets must start at 0 and end"):
        batch_dense_neighbor_lists(POSITIONS, [0, 1, 2], cells, pbcs)
    with pytest.raises(ValueError, match="atom_offsets must not decrease"):
        batch_dense_neighbor_lists(POSITIONS, [0, 3, 1, 3], np.stack([CELL] * 3), np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"cells of shape \(2, 3, 3\)"):
        batch_dense_neighbor_lists(POSITIONS, [0, 1, 3], cells[:1], pbcs)
    bad = POSITIONS.copy()
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match="frame 1: positions contain NaN"):
        batch_dense_neighbor_lists(bad, [0, 1, 3], cells, pbcs)
