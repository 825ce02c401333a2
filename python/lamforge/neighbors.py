"""Periodic neighbour lists from the Rust core: sparse pairs and the dense DPA-2 layout.

Convention (the same in the Rust doc comments): a pair ``(center, neighbor, shift)`` stands for

    vector = positions[neighbor] - positions[center] + shift @ cell

with ``shift`` the integer image indices along the three lattice vectors (0 along non-periodic
directions). Lists are full (``i -> j`` and ``j -> i``) and hold the pairs with
``distance < cutoff``. Periodic images of an atom itself are listed (in a cell thinner than the
cutoff they are real neighbours); the zero-shift self pair is not, unless ``self_images=True``.
Centres ascend; the pairs of one centre are sorted by distance, then neighbour index, then shift,
so the same input always gives the same output and a cap keeps the nearest neighbours. Ties are
exact float ties: two images at the same distance up to rounding are ordered by their rounded
distances.

Atoms may lie outside the cell: they give the same pairs as their wrapped copies, with shifts that
account for the difference. ``cell=None`` means no cell: non-periodic in every direction whatever
``pbc`` says. Along non-periodic directions the lattice vector is not used (it may be zero).

The search runs in Rust with the GIL released, on ``num_threads`` threads (0: all cores) of a
fork-safe thread pool; inputs may be NumPy arrays or CPU torch tensors (converted without a copy
when they already are contiguous float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lamforge import _core

__all__ = [
    "DEFAULT_MAX_PAIRS",
    "DPA2_SPECS",
    "DenseNeighbors",
    "NeighborList",
    "batch_dense_neighbor_lists",
    "dense_neighbor_lists",
    "neighbor_list",
]

DEFAULT_MAX_PAIRS = 50_000_000
"""Budget on pairs (or dense slots) per call: about 3.6 GB of sparse output."""

DPA2_SPECS: tuple[tuple[float, int], ...] = ((6.0, 120), (4.0, 48))
"""DPA-2 (Zhang et al. 2024) lists: repinit 6.0 A keeping 120, repformer 4.0 A keeping 48."""

ArrayLike = Any  # numpy array, torch tensor or nested sequence


@dataclass(frozen=True, kw_only=True)
class DenseNeighbors:
    """Neighbours as padded matrices, row ``i`` for atom ``i``, nearest first.

    Attributes:
        index: Neighbour indices, int64 ``[num_atoms, max_neighbors]``, padding ``-1``.
        shifts: Image shifts, int64 ``[num_atoms, max_neighbors, 3]``, padding 0.
        distances: Distances, float64 ``[num_atoms, max_neighbors]``, padding ``+inf``.
        cutoff: Cutoff of the list.
        num_dropped: Neighbours within the cutoff that did not fit in ``max_neighbors``.
    """

    index: npt.NDArray[np.int64]
    shifts: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    cutoff: float
    num_dropped: int

    @property
    def max_neighbors(self) -> int:
        """Columns of the matrices."""
        return self.index.shape[1]

    @property
    def mask(self) -> npt.NDArray[np.bool_]:
        """True where a slot holds a neighbour, ``[num_atoms, max_neighbors]``."""
        return self.index >= 0


@dataclass(frozen=True, kw_only=True)
class NeighborList:
    """A sparse full neighbour list, sorted per centre (see the module docstring).

    Attributes:
        centers: Centre atom of each pair, int64 ``[num_pairs]``, ascending.
        neighbors: Neighbour atom of each pair, int64 ``[num_pairs]``.
        shifts: Integer image shifts, int64 ``[num_pairs, 3]``.
        distances: Pair distances, float64 ``[num_pairs]``.
        vectors: ``positions[neighbors] - positions[centers] + shifts @ cell``,
            float64 ``[num_pairs, 3]``.
        num_atoms: Number of atoms of the frame.
        cutoff: Cutoff of the search.
        num_dropped: Pairs within the cutoff removed by ``max_neighbors``.
    """

    centers: npt.NDArray[np.int64]
    neighbors: npt.NDArray[np.int64]
    shifts: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    vectors: npt.NDArray[np.float64]
    num_atoms: int
    cutoff: float
    num_dropped: int

    @property
    def num_pairs(self) -> int:
        """Number of pairs."""
        return self.centers.shape[0]

    def dense(self, max_neighbors: int | None = None) -> DenseNeighbors:
        """The list as padded matrices.

        Args:
            max_neighbors: Columns; default the largest neighbour count of any atom. Fewer
                columns keep the nearest neighbours and add the rest to ``num_dropped``.

        Returns:
            The dense form, padded with index ``-1``, shift 0 and distance ``+inf``.
        """
        counts = np.bincount(self.centers, minlength=self.num_atoms)
        width = int(counts.max(initial=0)) if max_neighbors is None else int(max_neighbors)
        if width < 0:
            raise ValueError(f"max_neighbors must be >= 0, got {max_neighbors}")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.arange(self.num_pairs) - starts[self.centers]
        keep = rank < width
        rows, columns = self.centers[keep], rank[keep]
        index = np.full((self.num_atoms, width), -1, dtype=np.int64)
        shifts = np.zeros((self.num_atoms, width, 3), dtype=np.int64)
        distances = np.full((self.num_atoms, width), np.inf)
        index[rows, columns] = self.neighbors[keep]
        shifts[rows, columns] = self.shifts[keep]
        distances[rows, columns] = self.distances[keep]
        return DenseNeighbors(
            index=index,
            shifts=shifts,
            distances=distances,
            cutoff=self.cutoff,
            num_dropped=self.num_dropped + int(np.count_nonzero(~keep)),
        )


def _as_array(value: ArrayLike, dtype: type) -> np.ndarray:
    """A C-contiguous NumPy array of ``dtype``; CPU torch tensors are viewed, not copied."""
    if type(value).__module__.startswith("torch"):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(value, dtype=dtype)


def _positions(positions: ArrayLike, name: str = "positions") -> npt.NDArray[np.float64]:
    array = _as_array(positions, np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (num_atoms, 3), got {array.shape}")
    return array


def _cell(cell: ArrayLike | None) -> npt.NDArray[np.float64] | None:
    if cell is None:
        return None
    array = _as_array(cell, np.float64)
    if array.shape != (3, 3):
        raise ValueError(
            f"cell must have shape (3, 3) with lattice vectors as rows, got {array.shape}"
        )
    return array


def _pbc(pbc: bool | Sequence[bool] | ArrayLike) -> list[bool]:
    array = np.asarray(pbc, dtype=bool)
    if array.ndim == 0:
        array = np.repeat(array, 3)
    if array.shape != (3,):
        raise ValueError(f"pbc must be a bool or 3 bools, got shape {array.shape}")
    return [bool(flag) for flag in array]


def _specs(specs: Sequence[tuple[float, int]]) -> list[tuple[float, int]]:
    checked = []
    for position, spec in enumerate(specs):
        if len(spec) != 2:
            raise ValueError(f"specs[{position}] must be (cutoff, max_neighbors), got {spec!r}")
        cutoff, max_neighbors = float(spec[0]), int(spec[1])
        if max_neighbors < 1:
            raise ValueError(f"specs[{position}] max_neighbors must be >= 1, got {max_neighbors}")
        checked.append((cutoff, max_neighbors))
    return checked


def _threads(num_threads: int) -> int:
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0 (0: all cores), got {num_threads}")
    return int(num_threads)


def neighbor_list(
    positions: ArrayLike,
    cell: ArrayLike | None = None,
    pbc: bool | Sequence[bool] = (True, True, True),
    *,
    cutoff: float,
    max_neighbors: int | None = None,
    num_threads: int = 0,
    self_images: bool = False,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> NeighborList:
    """Full neighbour list of one frame, sorted per centre by distance.

    Args:
        positions: Cartesian positions, float64 ``[num_atoms, 3]``.
        cell: Lattice vectors as rows ``[3, 3]``, or None for no cell (non-periodic).
        pbc: Periodicity along each lattice vector (one bool for all three).
        cutoff: Pairs with ``distance < cutoff`` are listed.
        max_neighbors: Keep only the nearest this many neighbours per centre.
        num_threads: Threads for the search; 0 uses all cores.
        self_images: Also list each atom as its own neighbour at zero shift and distance 0 (ASE's
            ``self_interaction``). Periodic images of an atom itself are always listed.
        max_pairs: Refuse (ValueError) requests expected to produce more pairs than this.

    Returns:
        The list; see the module docstring for the convention and the order.

    Raises:
        ValueError: NaN or infinite positions, a singular or nearly flat cell along a periodic
            direction, ``cutoff <= 0``, wrong shapes, or more pairs than ``max_pairs``.
    """
    positions = _positions(positions)
    if max_neighbors is not None and max_neighbors < 0:
        raise ValueError(f"max_neighbors must be >= 0, got {max_neighbors}")
    centers, neighbors, shifts, distances, vectors, num_dropped = _core.neighbor_list(
        positions,
        _cell(cell),
        _pbc(pbc),
        float(cutoff),
        None if max_neighbors is None else int(max_neighbors),
        bool(self_images),
        _threads(num_threads),
        int(max_pairs),
    )
    return NeighborList(
        centers=centers,
        neighbors=neighbors,
        shifts=shifts,
        distances=distances,
        vectors=vectors,
        num_atoms=positions.shape[0],
        cutoff=float(cutoff),
        num_dropped=int(num_dropped),
    )


def dense_neighbor_lists(
    positions: ArrayLike,
    cell: ArrayLike | None = None,
    pbc: bool | Sequence[bool] = (True, True, True),
    specs: Sequence[tuple[float, int]] = DPA2_SPECS,
    num_threads: int = 0,
    *,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> list[DenseNeighbors]:
    """Dense lists for several ``(cutoff, max_neighbors)`` from one search at the largest cutoff.

    Each list equals ``neighbor_list(..., cutoff=c, max_neighbors=m).dense(m)``: the smaller
    lists are prefixes of the sorted list of the largest cutoff, derived in Rust.

    Args:
        positions: Cartesian positions, float64 ``[num_atoms, 3]``.
        cell: Lattice vectors as rows ``[3, 3]``, or None for no cell (non-periodic).
        pbc: Periodicity along each lattice vector.
        specs: ``(cutoff, max_neighbors)`` per list; default DPA-2's ``(6.0, 120), (4.0, 48)``.
        num_threads: Threads for the search; 0 uses all cores.
        max_pairs: Refuse (ValueError) requests with more dense slots than this.

    Returns:
        One :class:`DenseNeighbors` per spec, in the order of ``specs``.

    Raises:
        ValueError: as :func:`neighbor_list`, or an empty ``specs``.
    """
    positions = _positions(positions)
    checked = _specs(specs)
    lists = _core.dense_neighbor_lists(
        positions, _cell(cell), _pbc(pbc), checked, _threads(num_threads), int(max_pairs)
    )
    return [
        DenseNeighbors(
            index=index,
            shifts=shifts,
            distances=distances,
            cutoff=spec[0],
            num_dropped=int(dropped),
        )
        for (index, shifts, distances, dropped), spec in zip(lists, checked, strict=True)
    ]


def batch_dense_neighbor_lists(
    positions: ArrayLike,
    atom_offsets: ArrayLike,
    cells: ArrayLike | None,
    pbcs: ArrayLike,
    specs: Sequence[tuple[float, int]] = DPA2_SPECS,
    num_threads: int = 0,
    *,
    max_pairs: int = DEFAULT_MAX_PAIRS,
) -> list[DenseNeighbors]:
    """Dense lists over a batch of frames concatenated atom by atom, parallel over frames.

    Frame ``f`` owns the atoms ``atom_offsets[f]:atom_offsets[f + 1]`` of the flat arrays; the
    returned indices are global (into the flat atoms), so a batch of ``total_atoms`` atoms gets
    ``[total_atoms, max_neighbors]`` matrices that index the flat positions directly.

    Args:
        positions: Positions of all frames, float64 ``[total_atoms, 3]``.
        atom_offsets: int ``[num_frames + 1]``, from 0 to ``total_atoms``.
        cells: Lattice vectors ``[num_frames, 3, 3]``; None for a batch without cells (then every
            frame is non-periodic). Ignored for frames without a periodic direction.
        pbcs: Periodicity ``[num_frames, 3]`` (or ``[3]`` for all frames).
        specs: ``(cutoff, max_neighbors)`` per list; default DPA-2's.
        num_threads: Threads; 0 uses all cores.
        max_pairs: Refuse (ValueError) requests with more dense slots than this.

    Returns:
        One :class:`DenseNeighbors` per spec over all atoms of the batch.

    Raises:
        ValueError: as :func:`dense_neighbor_lists`, naming the frame at fault, or inconsistent
            offsets, cells and pbcs.
    """
    positions = _positions(positions)
    offsets = _as_array(atom_offsets, np.int64)
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"atom_offsets must have shape (num_frames + 1,), got {offsets.shape}")
    num_frames = offsets.shape[0] - 1
    pbc_array = _as_array(pbcs, np.bool_)
    if pbc_array.shape == (3,):
        pbc_array = np.ascontiguousarray(np.broadcast_to(pbc_array, (num_frames, 3)))
    if cells is None:
        cell_array = np.zeros((num_frames, 3, 3))
        pbc_array = np.zeros((num_frames, 3), dtype=bool)
    else:
        cell_array = _as_array(cells, np.float64)
    checked = _specs(specs)
    lists = _core.batch_dense_neighbor_lists(
        positions, offsets, cell_array, pbc_array, checked, _threads(num_threads), int(max_pairs)
    )
    return [
        DenseNeighbors(
            index=index,
            shifts=shifts,
            distances=distances,
            cutoff=spec[0],
            num_dropped=int(dropped),
        )
        for (index, shifts, distances, dropped), spec in zip(lists, checked, strict=True)
    ]
