# ruff: noqa: N803 - Triton block sizes are upper-case constexpr arguments by convention.
"""Fused neighbour gather + weighted reductions of the repformer layer (spec §1.8).

Two ops cover the layer's aggregation steps without materialising the gathered neighbour
features ``node[index]`` ([num_atoms, N, d], the largest tensors of the reference path):

* :func:`gather_product_sum` (the g1 convolution):
  ``out[i, d] = Σ_j pair[i, j, d] · node[index[i, j], d] · weight[i, j]``.
* :func:`gather_outer_sum` (the grrg/drrd pair moments, before the symmetrisation
  ``Aᵀ A[:, :axis]``, a tiny matmul left to PyTorch):
  ``out[i, c, d] = Σ_j left[i, j, c] · node[index[i, j], d] · weight[i, j]``; with
  ``index=None`` the right factor is a pair tensor ``[num_atoms, N, d]`` read in place (grrg).

``weight`` carries the switch (smooth models) or the mask (others), so it is differentiable: the
switch depends on the edge vectors and feeds the forces. Both ops are multilinear; their
backward kernels recompute the gathers and scatter the node gradient with atomic adds (the
summation order, hence the last bits, can differ between runs on a GPU).
"""

import torch
import triton
import triton.language as tl

from lamforge.kernels.environment import device_guard
from lamforge.kernels.launch import check_float, check_shape, next_power_of_two
from lamforge.kernels.second_order import double_backward

SLOT_BLOCK = 16


def gather_product_sum_reference(
    pair: torch.Tensor, node: torch.Tensor, index: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Plain-PyTorch reference of :func:`gather_product_sum`."""
    return torch.sum(pair * node[index] * weight.unsqueeze(-1), dim=1)


def gather_outer_sum_reference(
    left: torch.Tensor, node: torch.Tensor, index: torch.Tensor | None, weight: torch.Tensor
) -> torch.Tensor:
    """Plain-PyTorch reference of :func:`gather_outer_sum`."""
    right = node if index is None else node[index]
    return torch.matmul(left.transpose(-1, -2), right * weight.unsqueeze(-1))


@triton.jit
def _slot_tile(index_ptr, weight_ptr, atom, start, num_slots: tl.constexpr, BLOCK_N: tl.constexpr):
    slots = start + tl.arange(0, BLOCK_N)
    slot_ok = slots < num_slots
    edge = atom * num_slots + slots
    rows = tl.load(index_ptr + edge, mask=slot_ok, other=0)
    weight = tl.load(weight_ptr + edge, mask=slot_ok, other=0.0)
    return edge, slot_ok, rows, weight


@triton.jit
def _product_sum_forward_kernel(
    pair_ptr, node_ptr, index_ptr, weight_ptr, out_ptr, num_slots: tl.constexpr, dim: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    atom = tl.program_id(0).to(tl.int64)
    columns = tl.arange(0, BLOCK_D)
    column_ok = columns < dim
    total = tl.zeros([BLOCK_D], dtype=out_ptr.dtype.element_ty)
    for start in range(0, num_slots, BLOCK_N):
        edge, slot_ok, rows, weight = _slot_tile(
            index_ptr, weight_ptr, atom, start, num_slots, BLOCK_N
        )
        ok = slot_ok[:, None] & column_ok[None, :]
        pair = tl.load(pair_ptr + edge[:, None] * dim + columns[None, :], mask=ok, other=0.0)
        gathered = tl.load(node_ptr + rows[:, None] * dim + columns[None, :], mask=ok, other=0.0)
        total += tl.sum(pair * gathered * weight[:, None], axis=0)
    tl.store(out_ptr + atom * dim + columns, total, mask=column_ok)


@triton.jit
def _product_sum_backward_kernel(
    grad_ptr, pair_ptr, node_ptr, index_ptr, weight_ptr,
    grad_pair_ptr, grad_node_ptr, grad_weight_ptr, num_slots: tl.constexpr, dim: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    atom = tl.program_id(0).to(tl.int64)
    columns = tl.arange(0, BLOCK_D)
    column_ok = columns < dim
    grad = tl.load(grad_ptr + atom * dim + columns, mask=column_ok, other=0.0)
    for start in range(0, num_slots, BLOCK_N):
        edge, slot_ok, rows, weight = _slot_tile(
            index_ptr, weight_ptr, atom, start, num_slots, BLOCK_N
        )
        ok = slot_ok[:, None] & column_ok[None, :]
        pair_offsets = edge[:, None] * dim + columns[None, :]
        node_offsets = rows[:, None] * dim + columns[None, :]
        pair = tl.load(pair_ptr + pair_offsets, mask=ok, other=0.0)
        gathered = tl.load(node_ptr + node_offsets, mask=ok, other=0.0)
        tl.store(grad_pair_ptr + pair_offsets, grad[None, :] * gathered * weight[:, None], mask=ok)
        tl.store(
            grad_weight_ptr + edge, tl.sum(grad[None, :] * pair * gathered, axis=1), mask=slot_ok
        )
        tl.atomic_add(grad_node_ptr + node_offsets, grad[None, :] * pair * weight[:, None], mask=ok)


@triton.jit
def _outer_sum_forward_kernel(
    left_ptr, node_ptr, index_ptr, weight_ptr, out_ptr,
    num_slots: tl.constexpr, num_left: tl.constexpr, dim: tl.constexpr,
    GATHER: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    atom = tl.program_id(0).to(tl.int64)
    lefts = tl.arange(0, BLOCK_C)
    columns = tl.arange(0, BLOCK_D)
    total = tl.zeros([BLOCK_C, BLOCK_D], dtype=out_ptr.dtype.element_ty)
    for start in range(0, num_slots, BLOCK_N):
        edge, slot_ok, rows, weight = _slot_tile(
            index_ptr, weight_ptr, atom, start, num_slots, BLOCK_N
        )
        if not GATHER:
            rows = edge
        left_ok = slot_ok[:, None] & (lefts < num_left)[None, :]
        right_ok = slot_ok[:, None] & (columns < dim)[None, :]
        left = tl.load(
            left_ptr + edge[:, None] * num_left + lefts[None, :], mask=left_ok, other=0.0
        )
        right = tl.load(node_ptr + rows[:, None] * dim + columns[None, :], mask=right_ok, other=0.0)
        weighted = left * weight[:, None]
        total += tl.sum(weighted[:, :, None] * right[:, None, :], axis=0)
    out_ok = (lefts < num_left)[:, None] & (columns < dim)[None, :]
    offsets = atom * num_left * dim + lefts[:, None] * dim + columns[None, :]
    tl.store(out_ptr + offsets, total, mask=out_ok)


@triton.jit
def _outer_sum_backward_kernel(
    grad_ptr, left_ptr, node_ptr, index_ptr, weight_ptr,
    grad_left_ptr, grad_node_ptr, grad_weight_ptr, num_slots: tl.constexpr,
    num_left: tl.constexpr, dim: tl.constexpr,
    GATHER: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    atom = tl.program_id(0).to(tl.int64)
    lefts = tl.arange(0, BLOCK_C)
    columns = tl.arange(0, BLOCK_D)
    grad_ok = (lefts < num_left)[:, None] & (columns < dim)[None, :]
    grad = tl.load(
        grad_ptr + atom * num_left * dim + lefts[:, None] * dim + columns[None, :],
        mask=grad_ok,
        other=0.0,
    )
    for start in range(0, num_slots, BLOCK_N):
        edge, slot_ok, rows, weight = _slot_tile(
            index_ptr, weight_ptr, atom, start, num_slots, BLOCK_N
        )
        if not GATHER:
            rows = edge
        left_ok = slot_ok[:, None] & (lefts < num_left)[None, :]
        right_ok = slot_ok[:, None] & (columns < dim)[None, :]
        left_offsets = edge[:, None] * num_left + lefts[None, :]
        right_offsets = rows[:, None] * dim + columns[None, :]
        left = tl.load(left_ptr + left_offsets, mask=left_ok, other=0.0)
        right = tl.load(node_ptr + right_offsets, mask=right_ok, other=0.0)
        # [slots, C]: Σ_d G[c, d] right[d];  [slots, D]: Σ_c G[c, d] left[c].
        grad_right_product = tl.sum(grad[None, :, :] * right[:, None, :], axis=2)
        grad_left_product = tl.sum(grad[None, :, :] * left[:, :, None], axis=1)
        tl.store(grad_left_ptr + left_offsets, grad_right_product * weight[:, None], mask=left_ok)
        tl.store(grad_weight_ptr + edge, tl.sum(left * grad_right_product, axis=1), mask=slot_ok)
        if GATHER:
            tl.atomic_add(
                grad_node_ptr + right_offsets, grad_left_product * weight[:, None], mask=right_ok
            )
        else:
            tl.store(
                grad_node_ptr + right_offsets, grad_left_product * weight[:, None], mask=right_ok
            )


def _blocks(dim: int) -> dict[str, int]:
    return {"BLOCK_N": SLOT_BLOCK, "BLOCK_D": next_power_of_two(dim)}


@torch.library.custom_op("lamforge::gather_product_sum", mutates_args=())
def _product_sum_op(
    pair: torch.Tensor, node: torch.Tensor, index: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    num_atoms, num_slots, dim = pair.shape
    out = pair.new_empty(num_atoms, dim)
    if num_atoms:
        with device_guard(pair):
            _product_sum_forward_kernel[(num_atoms,)](
                pair.contiguous(), node.contiguous(), index.contiguous(), weight.contiguous(),
                out, num_slots, dim, **_blocks(dim),
            )  # fmt: skip
    return out


@_product_sum_op.register_fake
def _(pair, node, index, weight):
    return pair.new_empty(pair.shape[0], pair.shape[2])


@torch.library.custom_op("lamforge::gather_product_sum_backward", mutates_args=())
def _product_sum_backward_op(
    grad: torch.Tensor,
    pair: torch.Tensor,
    node: torch.Tensor,
    index: torch.Tensor,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    num_atoms, num_slots, dim = pair.shape
    grad_pair = torch.empty_like(pair, memory_format=torch.contiguous_format)
    grad_node = torch.zeros_like(node, memory_format=torch.contiguous_format)
    grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format)
    if num_atoms:
        with device_guard(pair):
            _product_sum_backward_kernel[(num_atoms,)](
                grad.contiguous(), pair.contiguous(), node.contiguous(), index.contiguous(),
                weight.contiguous(), grad_pair, grad_node, grad_weight, num_slots, dim,
                **_blocks(dim),
            )  # fmt: skip
    return grad_pair, grad_node, grad_weight


@_product_sum_backward_op.register_fake
def _(grad, pair, node, index, weight):
    return (
        torch.empty_like(pair, memory_format=torch.contiguous_format),
        torch.empty_like(node, memory_format=torch.contiguous_format),
        torch.empty_like(weight, memory_format=torch.contiguous_format),
    )


@torch.library.custom_op("lamforge::gather_outer_sum", mutates_args=())
def _outer_sum_op(
    left: torch.Tensor, node: torch.Tensor, index: torch.Tensor | None, weight: torch.Tensor
) -> torch.Tensor:
    num_atoms, num_slots, num_left = left.shape
    dim = node.shape[-1]
    out = left.new_empty(num_atoms, num_left, dim)
    if num_atoms:
        with device_guard(left):
            _outer_sum_forward_kernel[(num_atoms,)](
                left.contiguous(), node.contiguous(), _index_or_dummy(index, weight),
                weight.contiguous(), out, num_slots, num_left, dim, GATHER=index is not None,
                BLOCK_C=next_power_of_two(num_left), **_blocks(dim),
            )  # fmt: skip
    return out


@_outer_sum_op.register_fake
def _(left, node, index, weight):
    return left.new_empty(left.shape[0], left.shape[2], node.shape[-1])


@torch.library.custom_op("lamforge::gather_outer_sum_backward", mutates_args=())
def _outer_sum_backward_op(
    grad: torch.Tensor,
    left: torch.Tensor,
    node: torch.Tensor,
    index: torch.Tensor | None,
    weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    num_atoms, num_slots, num_left = left.shape
    dim = node.shape[-1]
    grad_left = torch.empty_like(left, memory_format=torch.contiguous_format)
    grad_node = torch.zeros_like(node, memory_format=torch.contiguous_format)
    grad_weight = torch.empty_like(weight, memory_format=torch.contiguous_format)
    if num_atoms:
        with device_guard(left):
            _outer_sum_backward_kernel[(num_atoms,)](
                grad.contiguous(), left.contiguous(), node.contiguous(),
                _index_or_dummy(index, weight), weight.contiguous(), grad_left, grad_node,
                grad_weight, num_slots, num_left, dim, GATHER=index is not None,
                BLOCK_C=next_power_of_two(num_left), **_blocks(dim),
            )  # fmt: skip
    return grad_left, grad_node, grad_weight


@_outer_sum_backward_op.register_fake
def _(grad, left, node, index, weight):
    return (
        torch.empty_like(left, memory_format=torch.contiguous_format),
        torch.empty_like(node, memory_format=torch.contiguous_format),
        torch.empty_like(weight, memory_format=torch.contiguous_format),
    )


def _index_or_dummy(index: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
    # The kernel never reads the index without GATHER but needs a pointer of the right type.
    if index is not None:
        return index.contiguous()
    return torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)


class GatherProductSum(torch.autograd.Function):
    """Autograd Function of :func:`gather_product_sum` (differentiable in pair, node, weight)."""

    @staticmethod
    def forward(ctx, pair, node, index, weight):
        """Run the forward kernel."""
        ctx.save_for_backward(pair, node, index, weight)
        return torch.ops.lamforge.gather_product_sum(pair, node, index, weight)

    @staticmethod
    def backward(ctx, grad):
        """Run the backward kernel through a differentiable Function."""
        pair, node, index, weight = ctx.saved_tensors
        grad_pair, grad_node, grad_weight = _GatherProductSumBackward.apply(
            grad, pair, node, index, weight
        )
        return grad_pair, grad_node, None, grad_weight


class _GatherProductSumBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, pair, node, index, weight):
        ctx.save_for_backward(grad, pair, node, index, weight)
        return torch.ops.lamforge.gather_product_sum_backward(grad, pair, node, index, weight)

    @staticmethod
    def backward(ctx, grad_grad_pair, grad_grad_node, grad_grad_weight):
        grad, pair, node, index, weight = ctx.saved_tensors

        def reference(pair, node, weight):
            return (gather_product_sum_reference(pair, node, index, weight),)

        (d_pair, d_node, d_weight), (d_grad,) = double_backward(
            reference,
            [pair, node, weight],
            [grad],
            [grad_grad_pair, grad_grad_node, grad_grad_weight],
        )
        return d_grad, d_pair, d_node, None, d_weight


class GatherOuterSum(torch.autograd.Function):
    """Autograd Function of :func:`gather_outer_sum` (differentiable in left, node, weight)."""

    @staticmethod
    def forward(ctx, left, node, index, weight):
        """Run the forward kernel."""
        ctx.save_for_backward(left, node, index, weight)
        return torch.ops.lamforge.gather_outer_sum(left, node, index, weight)

    @staticmethod
    def backward(ctx, grad):
        """Run the backward kernel through a differentiable Function."""
        left, node, index, weight = ctx.saved_tensors
        grad_left, grad_node, grad_weight = _GatherOuterSumBackward.apply(
            grad, left, node, index, weight
        )
        return grad_left, grad_node, None, grad_weight


class _GatherOuterSumBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, left, node, index, weight):
        ctx.save_for_backward(grad, left, node, index, weight)
        return torch.ops.lamforge.gather_outer_sum_backward(grad, left, node, index, weight)

    @staticmethod
    def backward(ctx, grad_grad_left, grad_grad_node, grad_grad_weight):
        grad, left, node, index, weight = ctx.saved_tensors

        def reference(left, node, weight):
            return (gather_outer_sum_reference(left, node, index, weight),)

        (d_left, d_node, d_weight), (d_grad,) = double_backward(
            reference,
            [left, node, weight],
            [grad],
            [grad_grad_left, grad_grad_node, grad_grad_weight],
        )
        return d_grad, d_left, d_node, None, d_weight


def _check_edges(
    name: str, pair_like: torch.Tensor, index: torch.Tensor | None, weight: torch.Tensor
) -> None:
    num_atoms, num_slots = pair_like.shape[:2]
    check_shape(f"{name} weight", weight, (num_atoms, num_slots))
    check_float(f"{name} weight", weight, pair_like.dtype, pair_like.device)
    if index is not None:
        check_shape(f"{name} index", index, (num_atoms, num_slots))
        if index.dtype != torch.int64 or index.device != pair_like.device:
            raise ValueError(
                f"lamforge.kernels: {name} index must be int64 on {pair_like.device}, got "
                f"{index.dtype} on {index.device}"
            )


def gather_product_sum(
    pair: torch.Tensor, node: torch.Tensor, index: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """``out[i] = Σ_j pair[i, j] ⊙ node[index[i, j]] · weight[i, j]`` by the fused kernels.

    Args:
        pair: [num_atoms, N, d].
        node: [num_nodes, d] per-atom features (gathered by ``index``).
        index: [num_atoms, N] int64 rows of ``node``, valid in every slot (empty slots carry
            any valid row and a zero weight).
        weight: [num_atoms, N].

    Returns:
        [num_atoms, d].
    """
    check_float("gather_product_sum node", node, pair.dtype, pair.device)
    check_shape("gather_product_sum node", node, (node.shape[0], pair.shape[2]))
    _check_edges("gather_product_sum", pair, index, weight)
    return GatherProductSum.apply(pair, node, index, weight)


def gather_outer_sum(
    left: torch.Tensor, node: torch.Tensor, index: torch.Tensor | None, weight: torch.Tensor
) -> torch.Tensor:
    """``out[i] = Σ_j left[i, j] ⊗ right[i, j] · weight[i, j]`` by the fused kernels.

    Args:
        left: [num_atoms, N, c] (c small: the three h2 components).
        node: [num_nodes, d] gathered by ``index``, or [num_atoms, N, d] used in place when
            ``index`` is None.
        index: [num_atoms, N] int64 rows of ``node``, or None.
        weight: [num_atoms, N].

    Returns:
        [num_atoms, c, d].
    """
    check_float("gather_outer_sum node", node, left.dtype, left.device)
    if index is None:
        check_shape("gather_outer_sum pair", node, (*left.shape[:2], node.shape[-1]))
    elif node.ndim != 2:
        raise ValueError(f"lamforge.kernels: gather_outer_sum node must be 2-D, got {node.shape}")
    _check_edges("gather_outer_sum", left, index, weight)
    return GatherOuterSum.apply(left, node, index, weight)
