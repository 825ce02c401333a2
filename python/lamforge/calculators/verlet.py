"""Neighbour lists reused across MD steps with a skin (Verlet lists).

One full list is searched at ``max(cutoff) + skin``. While no atom has moved more than
``skin / 2`` since that search (and the cell, the atoms and their periodicity are unchanged),
every pair closer than ``max(cutoff)`` now is still in it, so each step only recomputes the cached
pairs' distances and rebuilds the dense, distance-sorted, capped blocks the model reads: the same
blocks a fresh search gives, without the search.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamforge.neighbors import dense_neighbor_lists, neighbor_list


class VerletNeighbors:
    """Dense neighbour blocks of one structure, with a cached full list.

    Args:
        specs: Blocks to build, ``(cutoff, max_neighbors)``.
        skin: Extra search radius (Å); 0 searches at every call.
        num_threads: Threads of the search (0: all cores).
    """

    def __init__(self, specs: Sequence[tuple[float, int]], skin: float, num_threads: int = 0):
        if skin < 0:
            raise ValueError(f"skin must be non-negative, got {skin}")
        self.specs = [(float(c), int(n)) for c, n in specs]
        self.skin = skin
        self.num_threads = num_threads
        self.searches = 0
        # Per spec, neighbours within the cutoff that the last call's cap left out.
        self.num_dropped: list[int] = [0] * len(self.specs)
        self._reference: np.ndarray | None = None
        self._key: tuple | None = None
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def _valid(self, positions: np.ndarray, key: tuple) -> bool:
        if self._reference is None or key != self._key:
            return False
        moved = np.linalg.norm(positions - self._reference, axis=1)
        return bool(moved.max(initial=0.0) < 0.5 * self.skin)

    def blocks(
        self, positions: np.ndarray, cell: np.ndarray | None, pbc: tuple[bool, bool, bool],
        numbers: np.ndarray,
    ) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """``(index, shifts)`` of every spec for the current positions.

        Returns:
            Per spec: index int64 [num_atoms, max_neighbors] (-1 padded) and shifts int64
            [num_atoms, max_neighbors, 3], nearest first.
        """
        if self.skin == 0.0:
            self.searches += 1
            found = dense_neighbor_lists(positions, cell, pbc, self.specs, self.num_threads)
            self.num_dropped = [block.num_dropped for block in found]
            return [(block.index, block.shifts) for block in found]
        key = (None if cell is None else cell.tobytes(), pbc, numbers.tobytes())
        if not self._valid(positions, key):
            self.searches += 1
            radius = max(cutoff for cutoff, _ in self.specs) + self.skin
            found = neighbor_list(positions, cell, pbc, cutoff=radius, num_threads=self.num_threads)
            self._pairs = (found.centers, found.neighbors, found.shifts)
            self._reference, self._key = positions.copy(), key
        centers, neighbors, shifts = self._pairs
        offsets = shifts @ cell if cell is not None else np.zeros((len(centers), 3))
        distances = np.linalg.norm(positions[neighbors] - positions[centers] + offsets, axis=1)
        built = [
            _dense(len(positions), centers, neighbors, shifts, distances, cutoff, cap)
            for cutoff, cap in self.specs
        ]
        self.num_dropped = [dropped for _, _, dropped in built]
        return [(index, dense_shifts) for index, dense_shifts, _ in built]


def _dense(num_atoms, centers, neighbors, shifts, distances, cutoff, cap):
    """Pairs within ``cutoff``, sorted per centre by (distance, neighbour, shift), capped.

    Returns (index, shifts, number of pairs within the cutoff the cap left out).
    """
    keep = distances < cutoff
    centers, neighbors, shifts, distances = (
        centers[keep], neighbors[keep], shifts[keep], distances[keep],
    )  # fmt: skip
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], neighbors, distances, centers))
    centers, neighbors, shifts = centers[order], neighbors[order], shifts[order]
    starts = np.searchsorted(centers, np.arange(num_atoms))
    slot = np.arange(len(centers)) - starts[centers]
    fits = slot < cap
    index = np.full((num_atoms, cap), -1, dtype=np.int64)
    dense_shifts = np.zeros((num_atoms, cap, 3), dtype=np.int64)
    index[centers[fits], slot[fits]] = neighbors[fits]
    dense_shifts[centers[fits], slot[fits]] = shifts[fits]
    return index, dense_shifts, int(np.count_nonzero(~fits))
