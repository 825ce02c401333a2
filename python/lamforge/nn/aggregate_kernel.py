"""The repformer's neighbour reductions on the CPU, in the Rust core (no gathered copies).

A repformer layer gathers each neighbour's g1 row (``g1[index]``, [n, N, d1], the largest tensors
of a layer) only to reduce it right away: the g1 convolution (``Σ_j pair_ij ⊙ g1_j``) and the drrd
moment (``Σ_j h2_ij ⊗ g1_j``). Training on forces differentiates both twice; as PyTorch operations
every derivative order gathers, multiplies and scatters [n, N, d1] tensors again.
``lamforge._core.aggregate`` computes them reading the node rows in place, and the derivatives of
each reduction are again reductions of the same family (bilinear forms; ``Σ_(i,j)→a`` runs over
the slots holding node ``a``)::

    product_sum(pair, node)   [n, d]     = Σ_j pair[i, j] ⊙ node[index[i, j]]
    gather_scale(grad, node)  [n, N, d]  = grad[i] ⊙ node[index[i, j]]
    scatter_scale(grad, pair) [A, d]     = Σ_(i,j)→a grad[i] ⊙ pair[i, j]
    outer_sum(left, node)     [n, C, d]  = Σ_j left[i, j, c] node[index[i, j]]
    pair_dot(grad, node)      [n, N, C]  = ⟨grad[i, c], node[index[i, j]]⟩
    scatter_outer(left, grad) [A, d]     = Σ_(i,j)→a Σ_c left[i, j, c] grad[i, c]

so the six autograd Functions below call each other in their backward passes and support any
order of derivative. The slots are padded (``[n, N, ...]`` pair tensors, N per centre) or ragged
(``[P, ...]``, only real pairs, centre i's at ``offsets[i]:offsets[i + 1]``; an index of None
then lets slot p read node row p, the grrg moment of the pair tensor g2 itself). Weights (switch
or mask) are folded into ``pair`` / ``left`` by the caller.
``AGGREGATE_FUSED = False`` (or another device, tracing, or ``lamforge.kernels.use_fused(False)``)
selects the PyTorch reference, which the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lamforge import kernels
from lamforge.nn.geometry import segment_ids

# Use the Rust reductions where they apply (CPU tensors, outside torch.compile).
AGGREGATE_FUSED = True


def applies(tensor: torch.Tensor) -> bool:
    """Whether the Rust kernels can run on ``tensor``.

    ``AGGREGATE_FUSED`` and :func:`lamforge.kernels.core_kernel_applies` (a plain CPU float
    tensor, not while tracing, not under ``lamforge.kernels.use_fused(False)``).
    """
    return AGGREGATE_FUSED and kernels.core_kernel_applies(tensor, "aggregate")


def _core():
    from lamforge import _core

    return _core


@dataclass(frozen=True)
class Edges:
    """The slots of n centres and the node row each one reads.

    Attributes:
        index: padded: [n, N] node rows; ragged: [P] node rows, or None: slot p reads node row p
            (a per-pair tensor that is its own node table).
        offsets: None (padded: N slots per centre, pair tensors [n, N, ...]) or [n + 1] int64
            CSR offsets (ragged: centre i owns slots offsets[i]..offsets[i + 1], pair tensors
            [P, ...], no empty slots).
    """

    index: torch.Tensor | None
    offsets: torch.Tensor | None = None

    @property
    def num_centres(self) -> int:
        """The number of centres (n)."""
        if self.offsets is not None:
            return self.offsets.shape[0] - 1
        assert self.index is not None
        return self.index.shape[0]

    def pair_shape(self, num_nodes: int) -> tuple[int, ...]:
        """The leading dims of a pair tensor: (n, N) padded, (P,) ragged."""
        if self.index is None:
            return (num_nodes,)
        return tuple(self.index.shape)


# Below this many multiply-adds a call runs on the calling thread: handing it to a thread pool
# costs ~20 µs, more than the work.
PARALLEL_MIN_WORK = 1 << 18


def _run(kernel: str, edges: Edges, first, second, shape, num_nodes: int, left_width=0, width=0):
    """Runs one core kernel into a fresh tensor of ``shape``."""
    out = torch.empty(shape, dtype=first.dtype)
    index = edges.index
    num_pairs = num_nodes if index is None else index.numel()
    work = num_pairs * width * max(left_width, 1)
    threads = torch.get_num_threads() if work >= PARALLEL_MIN_WORK else 1
    _core().aggregate(
        kernel,
        None if index is None else index.reshape(-1).numpy(),
        index.shape[1] if index is not None and edges.offsets is None else 0,
        num_nodes,
        first.detach().contiguous().reshape(-1).numpy(),
        second.detach().contiguous().reshape(-1).numpy(),
        left_width,
        width,
        out.reshape(-1).numpy(),
        threads,
        offsets=None if edges.offsets is None else edges.offsets.numpy(),
    )
    return out


# Each Function keeps its ``Edges`` on ``ctx`` (integer tensors, never differentiated).


class _ProductSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pair, node, edges):  # noqa: D102
        ctx.save_for_backward(pair, node)
        ctx.edges = edges
        num, width = edges.num_centres, node.shape[1]
        return _run("product_sum", edges, pair, node, (num, width), node.shape[0], width=width)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        pair, node = ctx.saved_tensors
        edges = ctx.edges
        grad_pair = _GatherScale.apply(grad, node, edges) if ctx.needs_input_grad[0] else None
        grad_node = (
            _ScatterScale.apply(grad, pair, edges, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return grad_pair, grad_node, None


class _GatherScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, node, edges):  # noqa: D102
        ctx.save_for_backward(grad, node)
        ctx.edges = edges
        width = node.shape[1]
        shape = (*edges.pair_shape(node.shape[0]), width)
        return _run("gather_scale", edges, grad, node, shape, node.shape[0], width=width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        grad, node = ctx.saved_tensors
        edges = ctx.edges
        d_grad = _ProductSum.apply(upstream, node, edges) if ctx.needs_input_grad[0] else None
        d_node = (
            _ScatterScale.apply(grad, upstream, edges, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return d_grad, d_node, None


class _ScatterScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, pair, edges, num_nodes):  # noqa: D102
        ctx.save_for_backward(grad, pair)
        ctx.edges = edges
        width = grad.shape[1]
        return _run("scatter_scale", edges, grad, pair, (num_nodes, width), num_nodes, width=width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        grad, pair = ctx.saved_tensors
        edges = ctx.edges
        d_grad = _ProductSum.apply(pair, upstream, edges) if ctx.needs_input_grad[0] else None
        d_pair = _GatherScale.apply(grad, upstream, edges) if ctx.needs_input_grad[1] else None
        return d_grad, d_pair, None, None


class _OuterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left, node, edges):  # noqa: D102
        ctx.save_for_backward(left, node)
        ctx.edges = edges
        columns, width = left.shape[-1], node.shape[1]
        shape = (edges.num_centres, columns, width)
        return _run("outer_sum", edges, left, node, shape, node.shape[0], columns, width)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        left, node = ctx.saved_tensors
        edges = ctx.edges
        d_left = _PairDot.apply(grad, node, edges) if ctx.needs_input_grad[0] else None
        d_node = (
            _ScatterOuter.apply(left, grad, edges, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return d_left, d_node, None


class _PairDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, node, edges):  # noqa: D102
        ctx.save_for_backward(grad, node)
        ctx.edges = edges
        columns, width = grad.shape[1], node.shape[1]
        shape = (*edges.pair_shape(node.shape[0]), columns)
        return _run("pair_dot", edges, grad, node, shape, node.shape[0], columns, width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        grad, node = ctx.saved_tensors
        edges = ctx.edges
        d_grad = _OuterSum.apply(upstream, node, edges) if ctx.needs_input_grad[0] else None
        d_node = (
            _ScatterOuter.apply(upstream, grad, edges, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return d_grad, d_node, None


class _ScatterOuter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left, grad, edges, num_nodes):  # noqa: D102
        ctx.save_for_backward(left, grad)
        ctx.edges = edges
        columns, width = grad.shape[1], grad.shape[2]
        shape = (num_nodes, width)
        return _run("scatter_outer", edges, left, grad, shape, num_nodes, columns, width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        left, grad = ctx.saved_tensors
        edges = ctx.edges
        d_left = _PairDot.apply(grad, upstream, edges) if ctx.needs_input_grad[0] else None
        d_grad = _OuterSum.apply(left, upstream, edges) if ctx.needs_input_grad[1] else None
        return d_left, d_grad, None, None


def _edges(index: torch.Tensor | None, offsets: torch.Tensor | None) -> Edges:
    if index is None and offsets is None:
        raise ValueError("aggregate: an index of None (slot p reads node row p) needs offsets")
    if index is not None:
        if index.dtype != torch.int64:
            index = index.to(torch.int64)
        index = index.contiguous()
    if offsets is not None:
        offsets = offsets.to(torch.int64).contiguous()
    return Edges(index, offsets)


def _segment_sum(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Σ over each centre's slots of a ragged [P, ...] tensor: [n, ...]."""
    out = values.new_zeros((offsets.shape[0] - 1, *values.shape[1:]))
    return out.index_add(0, segment_ids(offsets), values)


def gather_product_sum(
    pair: torch.Tensor,
    node: torch.Tensor,
    index: torch.Tensor | None,
    offsets: torch.Tensor | None = None,
):
    """``Σ_j pair[:, j] ⊙ node[index[:, j]]`` without gathering ``node``.

    The Rust kernel where :func:`applies`, else the PyTorch reference.

    Args:
        pair: [n, N, d] (padded) or [P, d] (ragged).
        node: [A, d].
        index: [n, N] or [P] rows of ``node`` (every entry valid; weight empty slots through
            ``pair``); None with ``offsets``: slot p reads row p (A = P).
        offsets: None (padded) or [n + 1] CSR offsets of the ragged layout.

    Returns:
        [n, d].
    """
    edges = _edges(index, offsets)
    if applies(pair):
        return _ProductSum.apply(pair, node, edges)
    product = pair * (node if edges.index is None else node[edges.index])
    return product.sum(1) if offsets is None else _segment_sum(product, edges.offsets)


def gather_outer_sum(
    left: torch.Tensor,
    node: torch.Tensor,
    index: torch.Tensor | None,
    offsets: torch.Tensor | None = None,
):
    """``Σ_j left[:, j, :, None] · node[index[:, j], None, :]`` without gathering ``node``.

    The Rust kernel where :func:`applies`, else the PyTorch reference.

    Args:
        left: [n, N, C] (padded) or [P, C] (ragged).
        node: [A, d].
        index: [n, N] or [P] rows of ``node`` (every entry valid; weight empty slots through
            ``left``); None with ``offsets``: slot p reads row p (A = P).
        offsets: None (padded) or [n + 1] CSR offsets of the ragged layout.

    Returns:
        [n, C, d].
    """
    edges = _edges(index, offsets)
    if applies(left):
        return _OuterSum.apply(left, node, edges)
    gathered = node if edges.index is None else node[edges.index]
    if offsets is None:
        return torch.matmul(left.transpose(-1, -2), gathered)
    return _segment_sum(left.unsqueeze(-1) * gathered.unsqueeze(-2), edges.offsets)
