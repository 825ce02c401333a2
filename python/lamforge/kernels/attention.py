# ruff: noqa: N803 - Triton block sizes are upper-case constexpr arguments by convention.
"""Fused gated pair-attention map of the repformer layer (deepmd-kit ``Atten2Map``, spec §1.8).

For centre i and head h, with q, k the [N, hidden] query and key rows, G_jk = h2_j · h2_k the
gate (the neighbours' equivariant channel), s the switch and m the mask:

    ℓ = (q kᵀ / √hidden) ⊙ G   (⊙ G only with the gate)
    smooth:  z = (ℓ + 20) ⊙ s sᵀ - 20,  P = softmax_k(z) ⊙ m mᵀ ⊙ s sᵀ
    else:    z = ℓ with empty columns at -inf,  P = softmax_k(z) ⊙ m mᵀ
    W = P ⊙ G / √3                                   [num_atoms, heads, N, N]

The reference runs about a dozen elementwise passes over [num_atoms, heads, N, N] (and keeps
most of them for backward); the kernel reads q, k, h2, s, m once per (atom, head) and writes W
once, and its backward recomputes the softmax instead of storing it. One program handles one
(atom, head) pair with the whole N × N tile (N ≤ 128 slots, padded to a power of two); the dot
products are rank-1 updates over the hidden dimension so that float64 needs no tensor cores.
"""

import torch
import triton
import triton.language as tl

from lamforge.kernels.environment import device_guard
from lamforge.kernels.launch import check_float, check_shape, next_power_of_two
from lamforge.kernels.second_order import double_backward

ATTENTION_SHIFT = 20.0
MAX_SLOTS = 128


def pair_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    h2: torch.Tensor,
    switch: torch.Tensor,
    mask: torch.Tensor,
    smooth: bool,
    gate: bool,
) -> torch.Tensor:
    """Plain-PyTorch reference of :func:`pair_attention_weights` (head-major output)."""
    hidden = query.shape[-1]
    logits = torch.matmul(query, key.transpose(-1, -2)) / hidden**0.5
    gram = torch.matmul(h2, h2.transpose(-1, -2)).unsqueeze(1)
    if gate:
        logits = logits * gram
    column_empty = ~mask[:, None, None, :]
    row_empty = ~mask[:, None, :, None]
    pair_switch = switch[:, None, :, None] * switch[:, None, None, :]
    if smooth:
        logits = (logits + ATTENTION_SHIFT) * pair_switch - ATTENTION_SHIFT
    else:
        logits = logits.masked_fill(column_empty, float("-inf"))
    weights = torch.softmax(logits, dim=-1)
    weights = weights.masked_fill(column_empty, 0.0).masked_fill(row_empty, 0.0)
    if smooth:
        weights = weights * pair_switch
    return weights * gram / 3.0**0.5


@triton.jit
def _recompute(
    query_ptr, key_ptr, h2_ptr, switch_ptr, mask_ptr, atom, head,
    num_heads: tl.constexpr, num_slots: tl.constexpr, hidden: tl.constexpr,
    SMOOTH: tl.constexpr, GATE: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Scaled q kᵀ, the gate G, the shifted logits ℓ + 20, softmax p and the keep mask."""
    rows = tl.arange(0, BLOCK_N)
    ok = rows < num_slots
    qk_base = ((atom * num_heads + head) * num_slots + rows) * hidden
    dtype = query_ptr.dtype.element_ty
    scores = tl.zeros([BLOCK_N, BLOCK_N], dtype=dtype)
    for t in range(hidden):
        query = tl.load(query_ptr + qk_base + t, mask=ok, other=0.0)
        key = tl.load(key_ptr + qk_base + t, mask=ok, other=0.0)
        scores += query[:, None] * key[None, :]
    # 1/√hidden in the kernel's dtype (a Python float literal would be rounded to float32).
    scores = scores / tl.sqrt(tl.full([1, 1], hidden, dtype))
    gram = tl.zeros([BLOCK_N, BLOCK_N], dtype=dtype)
    for c in range(3):
        component = tl.load(h2_ptr + (atom * num_slots + rows) * 3 + c, mask=ok, other=0.0)
        gram += component[:, None] * component[None, :]
    logits = scores * gram if GATE else scores
    switch = tl.load(switch_ptr + atom * num_slots + rows, mask=ok, other=0.0)
    real = (tl.load(mask_ptr + atom * num_slots + rows, mask=ok, other=0) != 0) & ok
    pair_switch = switch[:, None] * switch[None, :]
    if SMOOTH:
        shifted = logits + 20.0
        z = tl.where(ok[None, :], shifted * pair_switch - 20.0, float("-inf"))
    else:
        shifted = logits
        z = tl.where(real[None, :], logits, float("-inf"))
    row_max = tl.max(z, axis=1)
    row_max = tl.where(row_max == float("-inf"), 0.0, row_max)
    exponential = tl.exp(z - row_max[:, None])
    total = tl.sum(exponential, axis=1)
    softmax = exponential / tl.where(total > 0.0, total, 1.0)[:, None]
    keep = real[:, None] & real[None, :]
    return rows, ok, scores, gram, shifted, softmax, keep, switch, pair_switch


@triton.jit
def _attention_forward_kernel(
    query_ptr, key_ptr, h2_ptr, switch_ptr, mask_ptr, out_ptr,
    num_heads: tl.constexpr, num_slots: tl.constexpr, hidden: tl.constexpr,
    SMOOTH: tl.constexpr, GATE: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    atom = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    rows, ok, scores, gram, shifted, softmax, keep, switch, pair_switch = _recompute(
        query_ptr, key_ptr, h2_ptr, switch_ptr, mask_ptr, atom, head,
        num_heads, num_slots, hidden, SMOOTH, GATE, BLOCK_N,
    )  # fmt: skip
    weights = tl.where(keep, softmax, 0.0)
    if SMOOTH:
        weights = weights * pair_switch
    weights = weights * gram / tl.sqrt(tl.full([1, 1], 3.0, gram.dtype))
    offsets = (atom * num_heads + head) * num_slots * num_slots
    offsets += rows[:, None] * num_slots + rows[None, :]
    tl.store(out_ptr + offsets, weights, mask=ok[:, None] & ok[None, :])


@triton.jit
def _attention_backward_kernel(
    grad_ptr, query_ptr, key_ptr, h2_ptr, switch_ptr, mask_ptr,
    grad_query_ptr, grad_key_ptr, grad_h2_ptr, grad_switch_ptr,
    num_heads: tl.constexpr, num_slots: tl.constexpr, hidden: tl.constexpr,
    SMOOTH: tl.constexpr, GATE: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    atom = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    rows, ok, scores, gram, shifted, softmax, keep, switch, pair_switch = _recompute(
        query_ptr, key_ptr, h2_ptr, switch_ptr, mask_ptr, atom, head,
        num_heads, num_slots, hidden, SMOOTH, GATE, BLOCK_N,
    )  # fmt: skip
    tile = (atom * num_heads + head) * num_slots * num_slots
    tile_ok = ok[:, None] & ok[None, :]
    grad = tl.load(
        grad_ptr + tile + rows[:, None] * num_slots + rows[None, :], mask=tile_ok, other=0.0
    )
    inverse_sqrt3 = 1.0 / tl.sqrt(tl.full([1, 1], 3.0, gram.dtype))
    kept = tl.where(keep, softmax, 0.0)
    # W = kept ⊙ ss ⊙ G/√3 (ss only when smooth).
    grad_kept = tl.where(keep, grad * gram * inverse_sqrt3, 0.0)
    if SMOOTH:
        grad_gram = grad * kept * pair_switch * inverse_sqrt3
        grad_softmax = grad_kept * pair_switch
        grad_pair_switch = grad_kept * softmax
    else:
        grad_gram = grad * kept * inverse_sqrt3
        grad_softmax = grad_kept
    grad_z = softmax * (grad_softmax - tl.sum(grad_softmax * softmax, axis=1)[:, None])
    if SMOOTH:
        grad_logits = grad_z * pair_switch
        grad_pair_switch += grad_z * shifted
    else:
        grad_logits = grad_z
    if GATE:
        grad_scores = grad_logits * gram
        grad_gram += grad_logits * scores
    else:
        grad_scores = grad_logits
    grad_scores = grad_scores / tl.sqrt(tl.full([1, 1], hidden, gram.dtype))
    qk_base = ((atom * num_heads + head) * num_slots + rows) * hidden
    for t in range(hidden):
        query = tl.load(query_ptr + qk_base + t, mask=ok, other=0.0)
        key = tl.load(key_ptr + qk_base + t, mask=ok, other=0.0)
        tl.store(grad_query_ptr + qk_base + t, tl.sum(grad_scores * key[None, :], axis=1), mask=ok)
        tl.store(grad_key_ptr + qk_base + t, tl.sum(grad_scores * query[:, None], axis=0), mask=ok)
    per_head = (atom * num_heads + head) * num_slots + rows
    for c in range(3):
        component = tl.load(h2_ptr + (atom * num_slots + rows) * 3 + c, mask=ok, other=0.0)
        value = tl.sum(grad_gram * component[None, :], axis=1)
        value += tl.sum(grad_gram * component[:, None], axis=0)
        tl.store(grad_h2_ptr + per_head * 3 + c, value, mask=ok)
    if SMOOTH:
        value = tl.sum(grad_pair_switch * switch[None, :], axis=1)
        value += tl.sum(grad_pair_switch * switch[:, None], axis=0)
    else:
        value = tl.zeros([BLOCK_N], dtype=gram.dtype)
    tl.store(grad_switch_ptr + per_head, value, mask=ok)


def _meta(query: torch.Tensor, smooth: bool, gate: bool) -> dict:
    _, num_heads, num_slots, hidden = query.shape
    return {
        "num_heads": num_heads,
        "num_slots": num_slots,
        "hidden": hidden,
        "SMOOTH": smooth,
        "GATE": gate,
        "BLOCK_N": next_power_of_two(num_slots, 16),
    }


@torch.library.custom_op("lamforge::pair_attention", mutates_args=())
def _attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    h2: torch.Tensor,
    switch: torch.Tensor,
    mask: torch.Tensor,
    smooth: bool,
    gate: bool,
) -> torch.Tensor:
    num_atoms, num_heads, num_slots, _ = query.shape
    out = query.new_empty(num_atoms, num_heads, num_slots, num_slots)
    if num_atoms:
        with device_guard(query):
            _attention_forward_kernel[(num_atoms, num_heads)](
                query.contiguous(), key.contiguous(), h2.contiguous(), switch.contiguous(),
                mask.contiguous().view(torch.uint8), out, **_meta(query, smooth, gate),
            )  # fmt: skip
    return out


@_attention_op.register_fake
def _(query, key, h2, switch, mask, smooth, gate):
    num_atoms, num_heads, num_slots, _ = query.shape
    return query.new_empty(num_atoms, num_heads, num_slots, num_slots)


@torch.library.custom_op("lamforge::pair_attention_backward", mutates_args=())
def _attention_backward_op(
    grad: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    h2: torch.Tensor,
    switch: torch.Tensor,
    mask: torch.Tensor,
    smooth: bool,
    gate: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    num_atoms, num_heads, num_slots, _ = query.shape
    grad_query = torch.empty_like(query, memory_format=torch.contiguous_format)
    grad_key = torch.empty_like(key, memory_format=torch.contiguous_format)
    grad_h2 = query.new_empty(num_atoms, num_heads, num_slots, 3)
    grad_switch = query.new_empty(num_atoms, num_heads, num_slots)
    if num_atoms:
        with device_guard(query):
            _attention_backward_kernel[(num_atoms, num_heads)](
                grad.contiguous(), query.contiguous(), key.contiguous(), h2.contiguous(),
                switch.contiguous(), mask.contiguous().view(torch.uint8), grad_query, grad_key,
                grad_h2, grad_switch, **_meta(query, smooth, gate),
            )  # fmt: skip
    # Heads were written separately (no atomics); their shares of h2 and the switch add here.
    return grad_query, grad_key, grad_h2.sum(dim=1), grad_switch.sum(dim=1)


@_attention_backward_op.register_fake
def _(grad, query, key, h2, switch, mask, smooth, gate):
    return (
        torch.empty_like(query, memory_format=torch.contiguous_format),
        torch.empty_like(key, memory_format=torch.contiguous_format),
        torch.empty_like(h2, memory_format=torch.contiguous_format),
        torch.empty_like(switch, memory_format=torch.contiguous_format),
    )


class PairAttention(torch.autograd.Function):
    """Autograd Function of the fused map; differentiable in query, key, h2 and switch."""

    @staticmethod
    def forward(ctx, query, key, h2, switch, mask, smooth, gate):
        """Run the forward kernel."""
        ctx.save_for_backward(query, key, h2, switch, mask)
        ctx.flags = (smooth, gate)
        return torch.ops.lamforge.pair_attention(query, key, h2, switch, mask, smooth, gate)

    @staticmethod
    def backward(ctx, grad):
        """Run the backward kernel through a differentiable Function."""
        query, key, h2, switch, mask = ctx.saved_tensors
        grads = _PairAttentionBackward.apply(grad, query, key, h2, switch, mask, *ctx.flags)
        return *grads, None, None, None


class _PairAttentionBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, query, key, h2, switch, mask, smooth, gate):
        ctx.save_for_backward(grad, query, key, h2, switch, mask)
        ctx.flags = (smooth, gate)
        return torch.ops.lamforge.pair_attention_backward(
            grad, query, key, h2, switch, mask, smooth, gate
        )

    @staticmethod
    def backward(ctx, *second_cotangents):
        grad, query, key, h2, switch, mask = ctx.saved_tensors

        def reference(query, key, h2, switch):
            return (pair_attention_reference(query, key, h2, switch, mask, *ctx.flags),)

        primal_grads, (d_grad,) = double_backward(
            reference, [query, key, h2, switch], [grad], list(second_cotangents)
        )
        return d_grad, *primal_grads, None, None, None


def pair_attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    h2: torch.Tensor,
    switch: torch.Tensor,
    mask: torch.Tensor,
    *,
    smooth: bool,
    gate: bool,
) -> torch.Tensor:
    """Gated pair-attention weights times the angular factor, by the fused kernels.

    Args:
        query: [num_atoms, heads, N, hidden].
        key: [num_atoms, heads, N, hidden].
        h2: [num_atoms, N, 3].
        switch: [num_atoms, N], zero in empty slots.
        mask: [num_atoms, N] bool.
        smooth: deepmd-kit's smooth attention (shifted logits and switch factors).
        gate: multiply the logits by h2_j · h2_k.

    Returns:
        [num_atoms, N, N, heads] (a permuted view of a head-major tensor, as the reference).
    """
    num_atoms, num_heads, num_slots, hidden = query.shape
    if num_slots > MAX_SLOTS:
        raise ValueError(
            f"lamforge.kernels: pair attention holds all N = {num_slots} slots in one tile; "
            f"at most {MAX_SLOTS} are supported"
        )
    check_shape("pair attention key", key, tuple(query.shape))
    check_float("pair attention key", key, query.dtype, query.device)
    check_shape("pair attention h2", h2, (num_atoms, num_slots, 3))
    check_float("pair attention h2", h2, query.dtype, query.device)
    check_shape("pair attention switch", switch, (num_atoms, num_slots))
    check_float("pair attention switch", switch, query.dtype, query.device)
    if mask.dtype != torch.bool or tuple(mask.shape) != (num_atoms, num_slots):
        raise ValueError(
            f"lamforge.kernels: pair attention mask must be bool [{num_atoms}, {num_slots}], got "
            f"{mask.dtype} {tuple(mask.shape)}"
        )
    weights = PairAttention.apply(query, key, h2, switch, mask, bool(smooth), bool(gate))
    return weights.permute(0, 2, 3, 1)
