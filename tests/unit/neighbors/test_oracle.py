"""Property tests: the Rust search against the brute-force image enumeration."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lamforge.neighbors import neighbor_list
from lamforge.testing.neighbors import assert_same_pairs, brute_force_neighbor_list, pair_table

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def systems(draw, *, allow_no_cell=True):
    """Small random systems: tiny, skewed, unwrapped, any periodicity, cutoffs beyond the cell."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    num_atoms = draw(st.integers(1, 8))
    scale = draw(st.floats(0.7, 5.0))
    skew = draw(st.floats(0.0, 1.2))
    cell = scale * (np.eye(3) + skew * rng.uniform(-1, 1, size=(3, 3)))
    heights = abs(np.linalg.det(cell)) / np.linalg.norm(
        np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1
    )
    assume(heights.min() > 0.25)
    pbc = tuple(draw(st.lists(st.booleans(), min_size=3, max_size=3)))
    no_cell = allow_no_cell and draw(st.booleans()) and not any(pbc)
    # Fractional coordinates in [-1.5, 2.5): many atoms lie outside the cell.
    positions = rng.uniform(-1.5, 2.5, size=(num_atoms, 3)) @ cell
    cutoff = draw(st.floats(0.3, 2.5)) * scale
    # Pairs within rounding of the cutoff may fall either side in two correct implementations.
    margin = brute_force_neighbor_list(positions, cell, pbc, cutoff * (1 + 1e-9) + 1e-9)
    assume(not np.any(np.abs(margin.distances - cutoff) < 1e-9 * (1 + cutoff)))
    return positions, (None if no_cell else cell), pbc, cutoff


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@SETTINGS
@given(systems())
def test_matches_brute_force(system):
    positions, cell, pbc, cutoff = system
    actual = neighbor_list(positions, cell, pbc, cutoff=cutoff, num_threads=1)
    assert_same_pairs(actual, brute_force_neighbor_list(positions, cell, pbc, cutoff))
    np.testing.assert_allclose(
        actual.vectors,
        positions[actual.neighbors]
        - positions[actual.centers]
        + (0 if cell is None else actual.shifts @ cell),
        rtol=0,
        atol=1e-12,
    )


@SETTINGS
@given(systems())
def test_sorted_by_centre_distance_neighbour_shift(system):
    positions, cell, pbc, cutoff = system
    nl = neighbor_list(positions, cell, pbc, cutoff=cutoff, num_threads=1)
    order = np.lexsort(
        (nl.shifts[:, 2], nl.shifts[:, 1], nl.shifts[:, 0], nl.neighbors, nl.distances, nl.centers)
    )
    np.testing.assert_array_equal(order, np.arange(nl.num_pairs))


@SETTINGS
@given(systems(allow_no_cell=False), st.integers(0, 2**32 - 1))
def test_invariant_under_rotation_translation_and_wrapping(system, seed):
    positions, cell, pbc, cutoff = system
    rng = np.random.default_rng(seed)
    reference = neighbor_list(positions, cell, pbc, cutoff=cutoff, num_threads=1)

    rotation = random_rotation(rng)
    moved = positions @ rotation.T + rng.uniform(-20, 20, size=3)
    rotated = neighbor_list(moved, cell @ rotation.T, pbc, cutoff=cutoff, num_threads=1)
    np.testing.assert_array_equal(
        pair_table(rotated.centers, rotated.neighbors, rotated.shifts),
        pair_table(reference.centers, reference.neighbors, reference.shifts),
    )

    # Moving each atom by whole cells, r_i' = r_i + n_i @ cell (periodic directions only), keeps
    # every vector r_j - r_i + S @ cell when the shift becomes S' = S + n_i - n_j.
    moves = rng.integers(-3, 4, size=(len(positions), 3)) * np.asarray(pbc, dtype=np.int64)
    wrapped = neighbor_list(positions + moves @ cell, cell, pbc, cutoff=cutoff, num_threads=1)
    expected_shifts = reference.shifts + moves[reference.centers] - moves[reference.neighbors]
    np.testing.assert_array_equal(
        pair_table(wrapped.centers, wrapped.neighbors, wrapped.shifts),
        pair_table(reference.centers, reference.neighbors, expected_shifts),
    )
    sorted_reference = np.sort(reference.distances)
    np.testing.assert_allclose(np.sort(wrapped.distances), sorted_reference, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.sort(rotated.distances), sorted_reference, rtol=0, atol=1e-11)


@pytest.mark.parametrize("num_atoms", [1, 2])
def test_tiny_cell_at_large_cutoff(num_atoms):
    # A 1- or 2-atom cell at 9 A needs thousands of images (the MPtrj worst case).
    rng = np.random.default_rng(num_atoms)
    cell = np.array([[2.1, 0.0, 0.0], [1.0, 1.9, 0.0], [0.3, 0.5, 2.2]])
    positions = rng.uniform(0, 1, size=(num_atoms, 3)) @ cell
    actual = neighbor_list(positions, cell, cutoff=9.0, num_threads=1)
    # About (4/3) pi 9^3 / volume = 348 images per atom pair.
    assert actual.num_pairs > 300 * num_atoms**2
    assert_same_pairs(actual, brute_force_neighbor_list(positions, cell, (True,) * 3, 9.0))


def test_self_images_adds_zero_shift_self_pairs():
    cell = np.eye(3) * 3.0
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    without = neighbor_list(positions, cell, cutoff=3.5)
    with_self = neighbor_list(positions, cell, cutoff=3.5, self_images=True)
    assert with_self.num_pairs == without.num_pairs + 2
    first = with_self.centers == 0
    assert with_self.neighbors[first][0] == 0 and with_self.distances[first][0] == 0.0
    # Periodic images of an atom itself are listed either way.
    assert np.any((without.centers == 0) & (without.neighbors == 0))
    assert_same_pairs(
        with_self, brute_force_neighbor_list(positions, cell, (True,) * 3, 3.5, self_images=True)
    )
