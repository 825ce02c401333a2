"""``left @ (tanh(z) + skip(x))`` with hand-written first and second derivatives (CPU training).

The last layer of an embedding net is contracted with the environment rows right away
(:meth:`lamforge.nn.layers.DenseLayer.contract`). Per centre, with L [M, K] the left factor,
z [K, n] the layer's pre-activation, x [K, m] its input and y = tanh(z),

    out = L y + S(L x)          S: nothing, the identity (m = n) or [a, a] (n = 2m)

Training on forces differentiates this twice. Left to autograd, the derivative of its derivative
builds about eight fresh [K, n] pair-sized tensors per call, and on the CPU the first touch of
fresh memory (page faults) costs as much as the arithmetic. Here, with g = ∂/∂out and Sᵀ the
adjoint of S (identity, or the sum of the two halves),

    ∂/∂z = (Lᵀ g) ⊙ (1 - y²)      ∂/∂x = Lᵀ Sᵀ(g)      ∂/∂L = g yᵀ + Sᵀ(g) xᵀ

is :class:`_TanhContractGradient`, whose own derivative, for upstream (u_z, u_x, u_L) of those
three outputs, is

    ∂/∂g = L (u_z ⊙ (1 - y²)) + u_L y + S(u_L x + L u_x)
    ∂/∂L = g (u_z ⊙ (1 - y²))ᵀ + Sᵀ(g) u_xᵀ
    ∂/∂x = u_Lᵀ Sᵀ(g)
    ∂/∂z = (u_Lᵀ g - 2 y ⊙ u_z ⊙ (Lᵀ g)) ⊙ (1 - y²)

computed with two fresh pair-sized tensors. Every product here has the thin M = 4 factor L, so
they run as :mod:`lamforge.nn.thin_kernel` products on the CPU (the tanh derivative fused into
∂/∂z's), and the gradients towards L, which lead only to the positions, are left out when the
running backward will not use them (the weights' pass of force training,
:func:`lamforge.nn.engine.wants_gradient`); under :func:`lamforge.nn.engine.single_input_backward`
(forces at inference) z is not kept. When a third derivative is being recorded
(``create_graph`` in the second backward), the same formulas run as ordinary differentiable
operations on y = tanh(z).
"""

from __future__ import annotations

import torch

from lamforge.nn import thin_kernel as thin
from lamforge.nn.engine import in_single_input_backward, wants_gradient


def _skip_adjoint(grad: torch.Tensor, skip: int) -> torch.Tensor:
    """Sᵀ(grad): the gradient of the skip's input from that of the output (``skip`` = m)."""
    if grad.shape[-1] == skip:
        return grad
    return grad[..., :skip] + grad[..., skip:]


def _skip_add(out: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Add S(value) to ``out`` in place (a fresh tensor)."""
    if out.shape[-1] == value.shape[-1]:
        return out.add_(value)
    width = value.shape[-1]
    out[..., :width].add_(value)
    out[..., width:].add_(value)
    return out


def _tanh(z: torch.Tensor) -> torch.Tensor:
    # The sigmoid form of lamforge.nn.layers.tanh, one fresh tensor.
    return (2.0 * z).sigmoid_().mul_(2.0).sub_(1.0)


def tanh_contract(left: torch.Tensor, z: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    """``left @ tanh(z) + S(left @ x)`` (module docstring); x None means no skip.

    Args:
        left: [..., M, K].
        z: [..., K, n] pre-activation.
        x: [..., K, m] with m = n or 2m = n, or None.

    Returns:
        [..., M, n].
    """
    batch = left.shape[:-2]
    rows = left.reshape(-1, *left.shape[-2:]).transpose(-1, -2)  # Lᵀ, the thin factor's layout
    z = z.reshape(-1, *z.shape[-2:])
    x = z.new_zeros(0) if x is None else x.reshape(-1, *x.shape[-2:])
    out = _TanhContract.apply(rows, z, x, None)
    return out.view(*batch, *out.shape[-2:])


def tanh_contract_ragged(
    rows: torch.Tensor, z: torch.Tensor, x: torch.Tensor | None, offsets: torch.Tensor
) -> torch.Tensor:
    """:func:`tanh_contract` per item of a ragged layout: Σ over item b's rows of Lᵀ ⊗ tanh(z).

    Args:
        rows: [P, M] the thin factor's rows (Lᵀ), item b's at ``offsets[b]:offsets[b + 1]``.
        z: [P, n] pre-activation.
        x: [P, m] with m = n or 2m = n, or None.
        offsets: [B + 1] int64.

    Returns:
        [B, M, n].
    """
    x = z.new_zeros(0) if x is None else x
    return _TanhContract.apply(rows, z, x, offsets.to(torch.int64).contiguous())


def _first_derivatives(
    grad: torch.Tensor,
    rows: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    offsets: torch.Tensor | None,
    with_rows: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(∂/∂Lᵀ, ∂/∂z, ∂/∂x) of the module docstring for the upstream ``grad`` [B, M, n].

    ``rows`` is Lᵀ ([B, K, M], or ragged [P, M] with ``offsets``); ``with_rows=False`` leaves
    out ∂/∂Lᵀ (None).
    """
    grad_z = thin.spread_slope(rows, grad, y, offsets)
    grad_rows = thin.dot(grad, y, offsets) if with_rows else None
    if x.numel() > 0:
        skip_grad = _skip_adjoint(grad, x.shape[-1])
        grad_x = thin.spread(rows, skip_grad, offsets)
        if grad_rows is not None:
            grad_rows = grad_rows.add_(thin.dot(skip_grad, x, offsets))
    else:
        grad_x = x.new_zeros(0)
    return grad_rows, grad_z, grad_x


class _TanhContract(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, z, x, offsets) -> torch.Tensor:  # noqa: D102
        y = _tanh(z)
        out = thin.combine(rows, y, offsets)
        if x.numel() > 0:
            _skip_add(out, thin.combine(rows, x, offsets))
        # y is kept as a constant: its derivative is taken through z (see the gradient function).
        # z itself only serves a differentiable backward; a forward that promises one plain
        # backward (forces at inference) does not keep it.
        ctx.single = in_single_input_backward()
        ctx.offsets = offsets
        ctx.save_for_backward(rows, z.new_empty(0) if ctx.single else z, x, y)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        rows, z, x, y = ctx.saved_tensors
        if torch.is_grad_enabled():
            if ctx.single:
                raise RuntimeError(
                    "the embedding contraction ran under single_input_backward(): its graph "
                    "gives the inputs' gradient once, without create_graph"
                )
            grad_rows, grad_z, grad_x = _TanhContractGradient.apply(
                grad, rows, z, x, y, ctx.offsets
            )
        else:  # nothing recorded (no create_graph): the plain operations
            with_rows = wants_gradient(ctx, 0)
            grad_rows, grad_z, grad_x = _first_derivatives(grad, rows, x, y, ctx.offsets, with_rows)
        return (
            grad_rows if ctx.needs_input_grad[0] else None,
            grad_z if ctx.needs_input_grad[1] else None,
            grad_x if ctx.needs_input_grad[2] and x.numel() > 0 else None,
            None,
        )


class _TanhContractGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, rows, z, x, y, offsets):  # noqa: D102
        ctx.save_for_backward(grad, rows, z, x, y)
        ctx.offsets = offsets
        return _first_derivatives(grad, rows, x, y, offsets)

    @staticmethod
    def backward(  # noqa: D102
        ctx, up_rows: torch.Tensor, up_z: torch.Tensor, up_x: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad, rows, z, x, y = ctx.saved_tensors
        offsets = ctx.offsets
        if torch.is_grad_enabled():
            return _gradient_derivative_reference(ctx, grad, rows, z, x, up_rows, up_z, up_x)
        has_skip = x.numel() > 0
        need_grad, need_z, need_x = (ctx.needs_input_grad[i] for i in (0, 2, 3))
        need_rows = wants_gradient(ctx, 1)
        out_grad = out_rows = out_z = out_x = None
        if need_z:
            # (u_Lᵀ g - 2 y ⊙ u_z ⊙ (Lᵀ g)) ⊙ (1 - y²) in one pass.
            out_z = thin.spread_slope_second(rows, up_rows, grad, y, up_z, offsets)
        if need_grad or need_rows:
            damped = torch.ops.aten.tanh_backward(up_z, y)
            skip_grad = _skip_adjoint(grad, x.shape[-1]) if has_skip else None
            if need_grad:
                out_grad = thin.combine(rows, damped, offsets)
                out_grad = out_grad.add_(thin.combine(up_rows, y, offsets))
                if has_skip:
                    inner = thin.combine(up_rows, x, offsets)
                    _skip_add(out_grad, inner.add_(thin.combine(rows, up_x, offsets)))
            if need_rows:
                out_rows = thin.dot(grad, damped, offsets)
                if has_skip:
                    out_rows = out_rows.add_(thin.dot(skip_grad, up_x, offsets))
        if need_x and has_skip:
            out_x = thin.spread(up_rows, _skip_adjoint(grad, x.shape[-1]), offsets)
        return out_grad, out_rows, out_z, out_x, None, None


def _gradient_derivative_reference(
    ctx,
    grad: torch.Tensor,
    rows: torch.Tensor,
    z: torch.Tensor,
    x: torch.Tensor,
    up_rows: torch.Tensor,
    up_z: torch.Tensor,
    up_x: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """The derivative of :class:`_TanhContractGradient` as differentiable operations."""
    from lamforge.nn.layers import tanh

    offsets = ctx.offsets
    options = {"offsets": offsets, "reference": True}
    has_skip = x.numel() > 0
    y = tanh(z)
    slope = 1.0 - y * y
    damped = up_z * slope
    out_grad = thin.combine(rows, damped, **options) + thin.combine(up_rows, y, **options)
    out_rows = thin.dot(grad, damped, **options)
    out_x = None
    if has_skip:
        skip_grad = _skip_adjoint(grad, x.shape[-1])
        inner = thin.combine(up_rows, x, **options) + thin.combine(rows, up_x, **options)
        if inner.shape[-1] == out_grad.shape[-1]:
            out_grad = out_grad + inner
        else:
            out_grad = out_grad + torch.cat([inner, inner], dim=-1)
        out_rows = out_rows + thin.dot(skip_grad, up_x, **options)
        out_x = thin.spread(up_rows, skip_grad, **options)
    out_z = (
        thin.spread(up_rows, grad, **options) - 2.0 * y * up_z * thin.spread(rows, grad, **options)
    ) * slope
    needs = ctx.needs_input_grad
    return (
        out_grad if needs[0] else None,
        out_rows if needs[1] else None,
        out_z if needs[2] else None,
        out_x if needs[3] else None,
        None,
        None,
    )
