# Type stubs of the Rust extension module `lamforge._core` (rust/lamforge-py).
# tests/unit/test_core_stubs.py checks that every function of the module is declared here.
from typing import Any

import numpy as np
import numpy.typing as npt

def core_version() -> str:
    """Version of the Rust core crate."""

def cell_heights(cell: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """Perpendicular heights of a (3, 3) cell whose rows are lattice vectors.

    Raises:
        ValueError: wrong shape, non-finite values or a singular cell.
    """

def neighbor_list(
    positions: npt.NDArray[np.float64],
    cell: npt.NDArray[np.float64] | None,
    pbc: list[bool],
    cutoff: float,
    max_neighbors: int | None,
    self_pair: bool,
    num_threads: int,
    max_pairs: int,
) -> tuple[
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.int64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    int,
]:
    """Sorted full neighbour list of one frame (see ``lamforge.neighbors.neighbor_list``).

    Returns:
        centers [P], neighbors [P], shifts [P, 3], distances [P], vectors [P, 3], num_dropped.

    Raises:
        ValueError: bad shapes or values, or more than ``max_pairs`` pairs.
    """

def dense_neighbor_lists(
    positions: npt.NDArray[np.float64],
    cell: npt.NDArray[np.float64] | None,
    pbc: list[bool],
    specs: list[tuple[float, int]],
    num_threads: int,
    max_pairs: int,
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], int]]:
    """Dense lists of one frame per (cutoff, max_neighbors) spec from one search.

    Returns:
        Per spec: index [N, M] (-1 padded), shifts [N, M, 3], distances [N, M] (+inf padded),
        num_dropped.
    """

def batch_dense_neighbor_lists(
    positions: npt.NDArray[np.float64],
    atom_offsets: npt.NDArray[np.int64],
    cells: npt.NDArray[np.float64],
    pbcs: npt.NDArray[np.bool_],
    specs: list[tuple[float, int]],
    num_threads: int,
    max_pairs: int,
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], int]]:
    """Dense lists over the flat atoms of a batch (global indices), parallel over frames."""

# The fused three-body net (lamforge.nn.three_body_kernel). ``net`` is (table [types, width_0],
# first_weight [width_0], weights [in, out] per later layer, biases, timesteps or None, skip codes
# 0 none / 1 identity / 2 double); ``rows`` is (cosine, weight, row_type, segment, num_segments).
# Float arrays share one dtype (float64 or float32, chosen by the cosines), C-contiguous.
ThreeBodyNet = tuple[
    npt.NDArray[Any],
    npt.NDArray[Any],
    list[npt.NDArray[Any]],
    list[npt.NDArray[Any]],
    list[npt.NDArray[Any] | None],
    list[int],
]
ThreeBodyRows = tuple[
    npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[np.int64], int
]
ThreeBodyGrads = tuple[
    npt.NDArray[Any],
    npt.NDArray[Any],
    list[npt.NDArray[Any]],
    list[npt.NDArray[Any]],
    list[npt.NDArray[Any]],
]

def three_body_forward(
    net: ThreeBodyNet, rows: ThreeBodyRows, save: str, num_threads: int
) -> tuple[npt.NDArray[Any], npt.NDArray[Any] | None]:
    """(segment sums [num_segments, width_out], saved or None).

    ``save``: "nothing", "activations" (for the backward and double backward) or
    "cosine_factors" (for one ``three_body_cosine_gradient``).
    """

def three_body_backward(
    net: ThreeBodyNet,
    rows: ThreeBodyRows,
    saved: npt.NDArray[Any],
    grad_out: npt.NDArray[Any],
    with_params: bool,
    num_threads: int,
    with_cosine: bool = True,
) -> tuple[npt.NDArray[Any], ThreeBodyGrads | None]:
    """(gradient of the cosines [rows], parameter gradients or None) of Σ grad_out ⊙ out.

    ``with_cosine=False`` leaves the cosines' gradient out (an empty array).
    """

def three_body_double_backward(
    net: ThreeBodyNet,
    rows: ThreeBodyRows,
    saved: npt.NDArray[Any],
    grad_out: npt.NDArray[Any],
    grad_cosine_out: npt.NDArray[Any],
    num_threads: int,
) -> tuple[npt.NDArray[Any], npt.NDArray[Any], ThreeBodyGrads]:
    """Gradients of Σ grad_cosine_out ⊙ grad_cosine: of grad_out, the cosines, the parameters."""

def three_body_cosine_gradient(
    net: ThreeBodyNet,
    rows: ThreeBodyRows,
    factors: npt.NDArray[Any],
    grad_out: npt.NDArray[Any],
) -> npt.NDArray[Any]:
    """The cosines' gradient from the factors of a "cosine_factors" forward."""

class StoreError(RuntimeError):
    """Stored data is missing or damaged; the message names the dataset, array, frame and file."""

class Loader:
    """Seeded, prefetching loader over a lamforge store (wrapped by ``lamforge.data.loader``)."""

    def __init__(
        self,
        *,
        store: str,
        datasets: list[str],
        frames: list[npt.NDArray[np.uint32] | None],
        seed: int,
        batch_size: int | None,
        max_atoms: int | None,
        shuffle: bool,
        shuffle_buffer: int,
        weights: list[float] | None,
        batches_per_epoch: int | None,
        mixed_batches: bool,
        rank: int,
        world_size: int,
        cutoffs: list[float],
        max_neighbors: list[int],
        error_on_dropped: bool,
        num_threads: int,
        prefetch: int,
        cache_bytes: int,
    ) -> None: ...
    def next(self) -> dict[str, Any] | None:
        """The next batch of the epoch as arrays (see ``lamforge.data.batch``); None at its end."""
    def collate(self, frames: npt.NDArray[np.uint32]) -> dict[str, Any]:
        """Collates ``[k, 2]`` (dataset, frame) pairs now."""
    def len(self, epoch: int) -> int:
        """Batches of ``epoch`` on this rank."""
    def plan(self, epoch: int) -> list[npt.NDArray[np.uint32]]:
        """``[k, 2]`` (dataset, frame) pairs of every batch of ``epoch`` on this rank."""
    def set_position(self, epoch: int, position: int) -> None:
        """Moves to batch ``position`` of ``epoch``."""
    @property
    def epoch(self) -> int: ...
    @property
    def position(self) -> int: ...
    def cache_stats(self) -> tuple[int, int, int]:
        """(hits, misses, bytes held) of the decoded-chunk cache."""
    def close(self) -> None:
        """Stops the prefetch thread."""

def aggregate(
    kernel: str,
    index: npt.NDArray[np.int64] | None,
    num_slots: int,
    num_nodes: int,
    first: npt.NDArray[Any],
    second: npt.NDArray[Any],
    left_width: int,
    width: int,
    out: npt.NDArray[Any],
    num_threads: int,
    offsets: npt.NDArray[np.int64] | None = None,
) -> None:
    """Runs one repformer neighbour reduction into ``out`` (flat, C-contiguous arrays).

    ``kernel``: product_sum, gather_scale, scatter_scale, outer_sum, pair_dot or scatter_outer
    (``lamforge.nn.aggregate_kernel``); ``first``/``second`` are its operands, ``out`` has the
    dtype of both (float64 or float32) and is overwritten. ``index`` None: slot p reads node row
    p; ``offsets`` ([n + 1]): ragged slots per centre instead of ``num_slots`` padded ones.
    """

def thin(
    kernel: str,
    batch: int,
    rows: int,
    columns: int,
    width: int,
    inputs: list[npt.NDArray[Any]],
    out: npt.NDArray[Any],
    num_threads: int,
    offsets: npt.NDArray[np.int64] | None = None,
) -> None:
    """Runs one batched product with a thin factor (flat, C-contiguous arrays of one dtype).

    ``kernel``: combine, spread, dot, spread_slope or spread_slope_second
    (``lamforge.nn.thin_kernel``); ``inputs`` are its operands in the core's order, ``out`` (its
    result) is overwritten. ``offsets`` ([B + 1]): ragged batch items (item b owns rows
    ``offsets[b]:offsets[b + 1]``; ``batch`` and ``rows`` unused).
    """
