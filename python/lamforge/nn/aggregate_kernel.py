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
order of derivative. Weights (switch or mask) are folded into ``pair`` / ``left`` by the caller.
``AGGREGATE_FUSED = False`` (or another device, tracing, or ``lamforge.kernels.use_fused(False)``)
selects the PyTorch reference, which the tests compare against.
"""

from __future__ import annotations

import torch

from lamforge import kernels

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


# Below this many multiply-adds a call runs on the calling thread: handing it to a thread pool
# costs ~20 µs, more than the work.
PARALLEL_MIN_WORK = 1 << 18


def _run(kernel: str, index, first, second, shape, num_nodes: int, left_width=0, width=0):
    """Runs one core kernel into a fresh tensor of ``shape``."""
    out = torch.empty(shape, dtype=first.dtype)
    work = index.numel() * width * max(left_width, 1)
    threads = torch.get_num_threads() if work >= PARALLEL_MIN_WORK else 1
    _core().aggregate(
        kernel,
        index.reshape(-1).numpy(),
        index.shape[1],
        num_nodes,
        first.detach().contiguous().reshape(-1).numpy(),
        second.detach().contiguous().reshape(-1).numpy(),
        left_width,
        width,
        out.reshape(-1).numpy(),
        threads,
    )
    return out


class _ProductSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pair, node, index):  # noqa: D102
        ctx.save_for_backward(pair, node, index)
        num, width = index.shape[0], node.shape[1]
        return _run("product_sum", index, pair, node, (num, width), node.shape[0], width=width)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        pair, node, index = ctx.saved_tensors
        grad_pair = _GatherScale.apply(grad, node, index) if ctx.needs_input_grad[0] else None
        grad_node = (
            _ScatterScale.apply(grad, pair, index, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return grad_pair, grad_node, None


class _GatherScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, node, index):  # noqa: D102
        ctx.save_for_backward(grad, node, index)
        width = node.shape[1]
        shape = (*index.shape, width)
        return _run("gather_scale", index, grad, node, shape, node.shape[0], width=width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        grad, node, index = ctx.saved_tensors
        d_grad = _ProductSum.apply(upstream, node, index) if ctx.needs_input_grad[0] else None
        d_node = (
            _ScatterScale.apply(grad, upstream, index, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return d_grad, d_node, None


class _ScatterScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, pair, index, num_nodes):  # noqa: D102
        ctx.save_for_backward(grad, pair, index)
        width = grad.shape[1]
        return _run("scatter_scale", index, grad, pair, (num_nodes, width), num_nodes, width=width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        grad, pair, index = ctx.saved_tensors
        d_grad = _ProductSum.apply(pair, upstream, index) if ctx.needs_input_grad[0] else None
        d_pair = _GatherScale.apply(grad, upstream, index) if ctx.needs_input_grad[1] else None
        return d_grad, d_pair, None, None


class _OuterSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left, node, index):  # noqa: D102
        ctx.save_for_backward(left, node, index)
        columns, width = left.shape[-1], node.shape[1]
        shape = (index.shape[0], columns, width)
        return _run("outer_sum", index, left, node, shape, node.shape[0], columns, width)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        left, node, index = ctx.saved_tensors
        d_left = _PairDot.apply(grad, node, index) if ctx.needs_input_grad[0] else None
        d_node = (
            _ScatterOuter.apply(left, grad, index, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return d_left, d_node, None


class _PairDot(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, node, index):  # noqa: D102
        ctx.save_for_backward(grad, node, index)
        columns, width = grad.shape[1], node.shape[1]
        shape = (*index.shape, columns)
        return _run("pair_dot", index, grad, node, shape, node.shape[0], columns, width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        grad, node, index = ctx.saved_tensors
        d_grad = _OuterSum.apply(upstream, node, index) if ctx.needs_input_grad[0] else None
        d_node = (
            _ScatterOuter.apply(upstream, grad, index, node.shape[0])
            if ctx.needs_input_grad[1]
            else None
        )
        return d_grad, d_node, None


class _ScatterOuter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left, grad, index, num_nodes):  # noqa: D102
        ctx.save_for_backward(left, grad, index)
        columns, width = grad.shape[1], grad.shape[2]
        shape = (num_nodes, width)
        return _run("scatter_outer", index, left, grad, shape, num_nodes, columns, width)

    @staticmethod
    def backward(ctx, upstream):  # noqa: D102
        left, grad, index = ctx.saved_tensors
        d_left = _PairDot.apply(grad, upstream, index) if ctx.needs_input_grad[0] else None
        d_grad = _OuterSum.apply(left, upstream, index) if ctx.needs_input_grad[1] else None
        return d_left, d_grad, None, None


def _index(index: torch.Tensor) -> torch.Tensor:
    if index.dtype != torch.int64:
        index = index.to(torch.int64)
    return index.contiguous()


def gather_product_sum(pair: torch.Tensor, node: torch.Tensor, index: torch.Tensor):
    """``Σ_j pair[:, j] ⊙ node[index[:, j]]`` without gathering ``node``.

    Args:
        pair: [n, N, d].
        node: [A, d].
        index: [n, N] rows of ``node`` (every entry valid; weight empty slots through ``pair``).

    Returns:
        [n, d].
    """
    return _ProductSum.apply(pair, node, _index(index))


def gather_outer_sum(left: torch.Tensor, node: torch.Tensor, index: torch.Tensor):
    """``Σ_j left[:, j, :, None] · node[index[:, j], None, :]`` without gathering ``node``.

    Args:
        left: [n, N, C].
        node: [A, d].
        index: [n, N] rows of ``node`` (every entry valid; weight empty slots through ``left``).

    Returns:
        [n, C, d].
    """
    return _OuterSum.apply(left, node, _index(index))
