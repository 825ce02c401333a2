# ruff: noqa: N803 - Triton block sizes are upper-case constexpr arguments by convention.
"""Fused environment matrix: smooth switch, R̃ and the per-element normalisation in one pass.

Per edge (centre i, slot j) with r = |r_ij|, s = r + protection and sw the C² switch
(``lamforge.nn.env_mat``), the op returns

    env_ij = (sw · [1/s, x/s², y/s², z/s²] - mean_i) / std_i        switch_ij = sw · mask_ij

with R̃ = 0 in empty slots (so env = -mean/std there). The reference path reads each edge vector
and writes about ten [num_atoms, N] temporaries (and autograd keeps most of them); the kernel
reads 3 + 1 numbers and writes 5 per edge.

Backward, with ĝ = grad_env / std (the cotangent of R̃), gs the switch cotangent, a = sw,
a' = dsw/dr, t = ĝ_xyz · r:

    ∂L/∂r = q/r · r + a/s² · ĝ_xyz,
    q = ĝ_0 (a'/s - a/s²) + gs a' + t (a'/s² - 2a/s³)

Layers: Triton kernels -> ``torch.ops.lamforge.environment_matrix{,_backward}`` (with fake
implementations for ``torch.compile``) -> autograd Functions (the backward's own backward goes
through :func:`environment_reference`, see ``second_order``) -> :func:`environment_matrix`.
"""

import contextlib

import torch
import triton
import triton.language as tl

from lamforge.kernels.launch import check_float, check_shape, split_scalar
from lamforge.kernels.second_order import double_backward

EDGE_BLOCK = 128


def environment_reference(
    vectors: torch.Tensor,
    mask: torch.Tensor,
    mean_rows: torch.Tensor,
    std_rows: torch.Tensor,
    cutoff: float,
    cutoff_smooth: float,
    protection: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch reference of the op (same arguments and results as the fused one)."""
    real = mask.unsqueeze(-1)
    safe = torch.zeros_like(vectors)
    safe[..., 0] = cutoff + 1.0
    vectors = torch.where(real, vectors, safe)
    length = torch.linalg.norm(vectors, dim=-1, keepdim=True)
    shifted = length + protection
    clamped = torch.clamp(length, min=cutoff_smooth, max=cutoff)
    u = (clamped - cutoff_smooth) / (cutoff - cutoff_smooth)
    switch = u * u * u * (-6 * u * u + 15 * u - 10) + 1
    weight = switch * real
    raw = torch.cat([1 / shifted, vectors / shifted**2], dim=-1) * weight
    env = (raw - mean_rows.unsqueeze(1)) / std_rows.unsqueeze(1)
    return env, weight.squeeze(-1)


@triton.jit
def _switch(length, cutoff_smooth, cutoff):
    """The switch and its derivative d sw / d r (zero outside (rs, rc), as clamp's gradient)."""
    inverse_width = 1.0 / (cutoff - cutoff_smooth)
    clamped = tl.minimum(tl.maximum(length, cutoff_smooth), cutoff)
    u = (clamped - cutoff_smooth) * inverse_width
    u2 = u * u
    switch = u2 * u * (-6.0 * u2 + 15.0 * u - 10.0) + 1.0
    slope = -30.0 * u2 * (u - 1.0) * (u - 1.0) * inverse_width
    inside = (length > cutoff_smooth) & (length < cutoff)
    return switch, tl.where(inside, slope, 0.0)


@triton.jit
def _load_edge(vectors_ptr, mask_ptr, edge, valid, cutoff):
    """Edge vector with empty slots replaced by (rc + 1, 0, 0), and the real-slot flag."""
    real = tl.load(mask_ptr + edge, mask=valid, other=0) != 0
    x = tl.load(vectors_ptr + 3 * edge, mask=valid, other=0.0)
    y = tl.load(vectors_ptr + 3 * edge + 1, mask=valid, other=0.0)
    z = tl.load(vectors_ptr + 3 * edge + 2, mask=valid, other=0.0)
    x = tl.where(real, x, cutoff + 1.0)
    y = tl.where(real, y, 0.0)
    z = tl.where(real, z, 0.0)
    return x, y, z, real


@triton.jit
def _environment_forward_kernel(
    vectors_ptr, mask_ptr, mean_ptr, std_ptr, env_ptr, switch_ptr, num_edges, num_slots,
    cutoff_hi, cutoff_lo, smooth_hi, smooth_lo, protection_hi, protection_lo,
    BLOCK: tl.constexpr,
):  # fmt: skip
    edge = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = edge < num_edges
    atom = edge // num_slots
    # Adding the float32 halves onto a zero of the output dtype recovers float64 scalars.
    zero = tl.zeros([BLOCK], dtype=env_ptr.dtype.element_ty)
    cutoff = zero + cutoff_hi + cutoff_lo
    cutoff_smooth = zero + smooth_hi + smooth_lo
    protection = zero + protection_hi + protection_lo
    x, y, z, real = _load_edge(vectors_ptr, mask_ptr, edge, valid, cutoff)
    length = tl.sqrt(x * x + y * y + z * z)
    switch, _ = _switch(length, cutoff_smooth, cutoff)
    weight = tl.where(real, switch, 0.0)
    inverse = 1.0 / (length + protection)
    radial = weight * inverse
    scale = radial * inverse
    values = (radial, scale * x, scale * y, scale * z)
    for column in tl.static_range(4):
        mean = tl.load(mean_ptr + 4 * atom + column, mask=valid, other=0.0)
        std = tl.load(std_ptr + 4 * atom + column, mask=valid, other=1.0)
        tl.store(env_ptr + 4 * edge + column, (values[column] - mean) / std, mask=valid)
    tl.store(switch_ptr + edge, weight, mask=valid)


@triton.jit
def _environment_backward_kernel(
    vectors_ptr, mask_ptr, std_ptr, grad_env_ptr, grad_switch_ptr, grad_vectors_ptr,
    num_edges, num_slots,
    cutoff_hi, cutoff_lo, smooth_hi, smooth_lo, protection_hi, protection_lo,
    BLOCK: tl.constexpr,
):  # fmt: skip
    edge = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    valid = edge < num_edges
    atom = edge // num_slots
    # Adding the float32 halves onto a zero of the output dtype recovers float64 scalars.
    zero = tl.zeros([BLOCK], dtype=grad_vectors_ptr.dtype.element_ty)
    cutoff = zero + cutoff_hi + cutoff_lo
    cutoff_smooth = zero + smooth_hi + smooth_lo
    protection = zero + protection_hi + protection_lo
    x, y, z, real = _load_edge(vectors_ptr, mask_ptr, edge, valid, cutoff)
    g0 = tl.load(grad_env_ptr + 4 * edge, mask=valid, other=0.0) / tl.load(
        std_ptr + 4 * atom, mask=valid, other=1.0
    )
    gx = tl.load(grad_env_ptr + 4 * edge + 1, mask=valid, other=0.0) / tl.load(
        std_ptr + 4 * atom + 1, mask=valid, other=1.0
    )
    gy = tl.load(grad_env_ptr + 4 * edge + 2, mask=valid, other=0.0) / tl.load(
        std_ptr + 4 * atom + 2, mask=valid, other=1.0
    )
    gz = tl.load(grad_env_ptr + 4 * edge + 3, mask=valid, other=0.0) / tl.load(
        std_ptr + 4 * atom + 3, mask=valid, other=1.0
    )
    gs = tl.load(grad_switch_ptr + edge, mask=valid, other=0.0)
    length = tl.sqrt(x * x + y * y + z * z)
    switch, slope = _switch(length, cutoff_smooth, cutoff)
    inverse = 1.0 / (length + protection)
    inverse2 = inverse * inverse
    projection = gx * x + gy * y + gz * z
    q = (
        g0 * (slope * inverse - switch * inverse2)
        + gs * slope
        + projection * (slope * inverse2 - 2.0 * switch * inverse2 * inverse)
    )
    radial_part = tl.where(real, q / length, 0.0)
    angular_part = tl.where(real, switch * inverse2, 0.0)
    tl.store(grad_vectors_ptr + 3 * edge, radial_part * x + angular_part * gx, mask=valid)
    tl.store(grad_vectors_ptr + 3 * edge + 1, radial_part * y + angular_part * gy, mask=valid)
    tl.store(grad_vectors_ptr + 3 * edge + 2, radial_part * z + angular_part * gz, mask=valid)


def device_guard(tensor: torch.Tensor) -> contextlib.AbstractContextManager:
    """Make ``tensor``'s GPU current while launching (Triton launches on the current device)."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def _scalars(cutoff: float, cutoff_smooth: float, protection: float) -> tuple[float, ...]:
    return (*split_scalar(cutoff), *split_scalar(cutoff_smooth), *split_scalar(protection))


@torch.library.custom_op("lamforge::environment_matrix", mutates_args=())
def _environment_op(
    vectors: torch.Tensor,
    mask: torch.Tensor,
    mean_rows: torch.Tensor,
    std_rows: torch.Tensor,
    cutoff: float,
    cutoff_smooth: float,
    protection: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    num_atoms, num_slots, _ = vectors.shape
    env = vectors.new_empty(num_atoms, num_slots, 4)
    switch = vectors.new_empty(num_atoms, num_slots)
    num_edges = num_atoms * num_slots
    if num_edges:
        with device_guard(vectors):
            _environment_forward_kernel[(triton.cdiv(num_edges, EDGE_BLOCK),)](
                vectors.contiguous(), mask.contiguous().view(torch.uint8),
                mean_rows.contiguous(), std_rows.contiguous(), env, switch, num_edges, num_slots,
                *_scalars(cutoff, cutoff_smooth, protection), BLOCK=EDGE_BLOCK,
            )  # fmt: skip
    return env, switch


@_environment_op.register_fake
def _(vectors, mask, mean_rows, std_rows, cutoff, cutoff_smooth, protection):
    num_atoms, num_slots, _ = vectors.shape
    return vectors.new_empty(num_atoms, num_slots, 4), vectors.new_empty(num_atoms, num_slots)


@torch.library.custom_op("lamforge::environment_matrix_backward", mutates_args=())
def _environment_backward_op(
    vectors: torch.Tensor,
    mask: torch.Tensor,
    std_rows: torch.Tensor,
    grad_env: torch.Tensor,
    grad_switch: torch.Tensor,
    cutoff: float,
    cutoff_smooth: float,
    protection: float,
) -> torch.Tensor:
    num_atoms, num_slots, _ = vectors.shape
    grad_vectors = torch.empty_like(vectors, memory_format=torch.contiguous_format)
    num_edges = num_atoms * num_slots
    if num_edges:
        with device_guard(vectors):
            _environment_backward_kernel[(triton.cdiv(num_edges, EDGE_BLOCK),)](
                vectors.contiguous(), mask.contiguous().view(torch.uint8), std_rows.contiguous(),
                grad_env.contiguous(), grad_switch.contiguous(), grad_vectors, num_edges,
                num_slots, *_scalars(cutoff, cutoff_smooth, protection), BLOCK=EDGE_BLOCK,
            )  # fmt: skip
    return grad_vectors


@_environment_backward_op.register_fake
def _(vectors, mask, std_rows, grad_env, grad_switch, cutoff, cutoff_smooth, protection):
    return torch.empty_like(vectors, memory_format=torch.contiguous_format)


class EnvironmentMatrix(torch.autograd.Function):
    """Autograd Function of the fused op; differentiable in ``vectors`` only."""

    @staticmethod
    def forward(ctx, vectors, mask, mean_rows, std_rows, cutoff, cutoff_smooth, protection):
        """Run the forward kernel."""
        ctx.save_for_backward(vectors, mask, mean_rows, std_rows)
        ctx.scalars = (cutoff, cutoff_smooth, protection)
        return torch.ops.lamforge.environment_matrix(
            vectors, mask, mean_rows, std_rows, cutoff, cutoff_smooth, protection
        )

    @staticmethod
    def backward(ctx, grad_env, grad_switch):
        """Run the backward kernel through a Function that is itself differentiable."""
        vectors, mask, mean_rows, std_rows = ctx.saved_tensors
        grad_vectors = EnvironmentMatrixBackward.apply(
            vectors, mask, mean_rows, std_rows, grad_env, grad_switch, *ctx.scalars
        )
        return grad_vectors, None, None, None, None, None, None


class EnvironmentMatrixBackward(torch.autograd.Function):
    """The first backward as a Function; its backward is the reference's second derivative."""

    @staticmethod
    def forward(ctx, vectors, mask, mean_rows, std_rows, grad_env, grad_switch, *scalars):
        """Run the backward kernel."""
        ctx.save_for_backward(vectors, mask, mean_rows, std_rows, grad_env, grad_switch)
        ctx.scalars = scalars
        return torch.ops.lamforge.environment_matrix_backward(
            vectors, mask, std_rows, grad_env, grad_switch, *scalars
        )

    @staticmethod
    def backward(ctx, grad_grad_vectors):
        """Second derivatives (force training) through the reference."""
        vectors, mask, mean_rows, std_rows, grad_env, grad_switch = ctx.saved_tensors

        def reference(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return environment_reference(vectors, mask, mean_rows, std_rows, *ctx.scalars)

        (d_vectors,), (d_grad_env, d_grad_switch) = double_backward(
            reference, [vectors], [grad_env, grad_switch], [grad_grad_vectors]
        )
        return d_vectors, None, None, None, d_grad_env, d_grad_switch, None, None, None


def environment_matrix(
    vectors: torch.Tensor,
    mask: torch.Tensor,
    mean_rows: torch.Tensor,
    std_rows: torch.Tensor,
    *,
    cutoff: float,
    cutoff_smooth: float,
    protection: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised environment matrix and switch by the fused kernels.

    Args:
        vectors: [num_atoms, N, 3] r_ij; ignored in empty slots.
        mask: [num_atoms, N] bool, True for real neighbours.
        mean_rows: [num_atoms, 4] the centre element's mean row (a buffer: no gradient).
        std_rows: [num_atoms, 4] the centre element's std row (a buffer: no gradient).
        cutoff: rc.
        cutoff_smooth: rs (< rc).
        protection: added to r in the denominators.

    Returns:
        env [num_atoms, N, 4] and switch [num_atoms, N] (zero in empty slots).
    """
    num_atoms, num_slots = mask.shape
    check_shape("environment vectors", vectors, (num_atoms, num_slots, 3))
    check_float("environment vectors", vectors, vectors.dtype, vectors.device)
    for name, rows in (("environment mean rows", mean_rows), ("environment std rows", std_rows)):
        check_shape(name, rows, (num_atoms, 4))
        check_float(name, rows, vectors.dtype, vectors.device)
        if rows.requires_grad:
            raise ValueError(f"lamforge.kernels: {name} must not require grad (statistics)")
    if mask.dtype != torch.bool:
        raise ValueError(f"lamforge.kernels: environment mask must be bool, got {mask.dtype}")
    if not cutoff_smooth < cutoff:
        raise ValueError(f"environment matrix: cutoff_smooth {cutoff_smooth} >= cutoff {cutoff}")
    return EnvironmentMatrix.apply(
        vectors, mask, mean_rows, std_rows, float(cutoff), float(cutoff_smooth), float(protection)
    )
