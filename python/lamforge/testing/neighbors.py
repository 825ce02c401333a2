"""Brute-force neighbour list oracle and pair-set comparison for tests.

The oracle enumerates, for every ordered pair of atoms, every periodic image in a box wide enough
to hold all images within the cutoff (computed per direction from the fractional coordinates and
the cell heights), and keeps those with ``distance < cutoff``. It is O(num_atoms^2 * images) and
meant for systems of tens of atoms. It follows the convention of :mod:`lamforge.neighbors`:
``vector = positions[neighbor] - positions[center] + shift @ cell``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from lamforge.neighbors import NeighborList

__all__ = ["assert_same_pairs", "brute_force_neighbor_list", "pair_table"]


def _image_ranges(
    positions: npt.NDArray[np.float64],
    basis: npt.NDArray[np.float64],
    periodic: Sequence[bool],
    cutoff: float,
) -> list[range]:
    """Per lattice direction, the shifts that can bring any atom within the cutoff of another.

    ``basis`` is the cell with non-periodic vectors replaced (non-singular). An image shift ``s``
    along ``k`` moves an atom by ``s`` in fractional coordinate ``k``; a pair within the cutoff
    differs by at most ``cutoff / height_k`` in that coordinate, so shifts beyond the atoms'
    fractional spread plus that margin cannot matter.
    """
    fractional = positions @ np.linalg.inv(basis)
    volume = abs(np.linalg.det(basis))
    ranges = []
    for k in range(3):
        if not periodic[k]:
            ranges.append(range(0, 1))
            continue
        height = volume / np.linalg.norm(np.cross(basis[(k + 1) % 3], basis[(k + 2) % 3]))
        spread = fractional[:, k].max() - fractional[:, k].min()
        reach = int(np.ceil(spread + cutoff / height)) + 1
        ranges.append(range(-reach, reach + 1))
    return ranges


def _periodic_cell(cell: npt.NDArray[np.float64], periodic: Sequence[bool]) -> np.ndarray:
    """The cell with non-periodic (possibly zero) vectors replaced by orthogonal unit vectors."""
    cell = np.array(cell, dtype=np.float64)
    directions = [k for k in range(3) if periodic[k]]
    if len(directions) == 2:
        other = 3 - sum(directions)
        normal = np.cross(cell[directions[0]], cell[directions[1]])
        cell[other] = normal / np.linalg.norm(normal)
    elif len(directions) == 1:
        k = directions[0]
        along = cell[k] / np.linalg.norm(cell[k])
        helper = np.eye(3)[np.argmin(np.abs(along))]
        first = np.cross(along, helper)
        first /= np.linalg.norm(first)
        cell[(k + 1) % 3] = first
        cell[(k + 2) % 3] = np.cross(along, first)
    return cell


def brute_force_neighbor_list(
    positions: npt.ArrayLike,
    cell: npt.ArrayLike | None,
    pbc: Sequence[bool],
    cutoff: float,
    *,
    self_images: bool = False,
) -> NeighborList:
    """Every pair within ``cutoff`` by enumerating periodic images; the test oracle.

    Args:
        positions: Positions ``[num_atoms, 3]``.
        cell: Lattice vectors as rows ``[3, 3]`` or None (non-periodic).
        pbc: Periodicity per lattice vector.
        cutoff: Pairs with ``distance < cutoff`` are kept.
        self_images: Also keep the zero-shift self pair.

    Returns:
        A :class:`NeighborList` sorted by centre, distance, neighbour, shift.
    """
    positions = np.asarray(positions, dtype=np.float64)
    num_atoms = positions.shape[0]
    periodic = [False] * 3 if cell is None else [bool(flag) for flag in pbc]
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if any(periodic):
        ranges = _image_ranges(positions, _periodic_cell(cell, periodic), periodic, cutoff)
    else:
        ranges = [range(0, 1)] * 3
    difference = positions[None, :, :] - positions[:, None, :]  # [center, neighbor, 3]
    centers, neighbors = np.meshgrid(np.arange(num_atoms), np.arange(num_atoms), indexing="ij")
    found: list[tuple[np.ndarray, ...]] = []
    for shift in itertools.product(*ranges):
        vectors = difference + np.asarray(shift, dtype=np.float64) @ cell
        distances = np.linalg.norm(vectors, axis=-1)
        keep = distances < cutoff
        if shift == (0, 0, 0) and not self_images:
            keep &= centers != neighbors
        count = int(keep.sum())
        found.append(
            (
                centers[keep],
                neighbors[keep],
                np.tile(shift, (count, 1)),
                distances[keep],
                vectors[keep],
            )
        )
    center, neighbor, shifts, distances, vectors = (
        np.concatenate([part[field] for part in found]) for field in range(5)
    )
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], neighbor, distances, center))
    return NeighborList(
        centers=center[order].astype(np.int64),
        neighbors=neighbor[order].astype(np.int64),
        shifts=shifts[order].astype(np.int64).reshape(-1, 3),
        distances=distances[order],
        vectors=vectors[order].reshape(-1, 3),
        num_atoms=num_atoms,
        cutoff=float(cutoff),
        num_dropped=0,
    )


def pair_table(
    centers: npt.ArrayLike, neighbors: npt.ArrayLike, shifts: npt.ArrayLike
) -> npt.NDArray[np.int64]:
    """Pairs as rows ``(center, neighbor, sx, sy, sz)`` sorted lexicographically, ``[P, 5]``."""
    table = np.column_stack(
        (np.asarray(centers), np.asarray(neighbors), np.asarray(shifts).reshape(-1, 3))
    ).astype(np.int64)
    return table[np.lexsort(table.T[::-1])] if len(table) else table.reshape(0, 5)


def assert_same_pairs(actual: NeighborList, expected: NeighborList, *, atol: float = 1e-12) -> None:
    """Asserts equal pair sets (centre, neighbour, shift) with distances and vectors within atol.

    Raises:
        AssertionError: naming the first pairs only one list has, or the worst distance error.
    """
    left = pair_table(actual.centers, actual.neighbors, actual.shifts)
    right = pair_table(expected.centers, expected.neighbors, expected.shifts)
    if left.shape != right.shape or not np.array_equal(left, right):
        only_left = {tuple(row) for row in left} - {tuple(row) for row in right}
        only_right = {tuple(row) for row in right} - {tuple(row) for row in left}
        raise AssertionError(
            f"pair sets differ: {len(left)} vs {len(right)} pairs; only in actual (first 5): "
            f"{sorted(only_left)[:5]}; only in expected (first 5): {sorted(only_right)[:5]}"
        )

    def by_pair(nl: NeighborList) -> np.ndarray:
        table = np.column_stack((nl.centers, nl.neighbors, nl.shifts))
        return np.lexsort(table.T[::-1])

    left_order, right_order = by_pair(actual), by_pair(expected)
    np.testing.assert_allclose(
        actual.distances[left_order], expected.distances[right_order], rtol=0, atol=atol
    )
    np.testing.assert_allclose(
        actual.vectors[left_order], expected.vectors[right_order], rtol=0, atol=atol
    )
