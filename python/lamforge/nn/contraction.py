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
    left = left.reshape(-1, *left.shape[-2:])
    z = z.reshape(-1, *z.shape[-2:])
    x = z.new_zeros(0) if x is None else x.reshape(-1, *x.shape[-2:])
    out = _TanhContract.apply(left, z, x)
    return out.view(*batch, *out.shape[-2:])


def _first_derivatives(
    grad: torch.Tensor,
    left: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    with_left: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """(∂/∂L, ∂/∂z, ∂/∂x) of the module docstring for the upstream ``grad`` (3-d tensors).

    ``with_left=False`` leaves out ∂/∂L (None).
    """
    rows = left.transpose(-1, -2)  # Lᵀ [B, K, M], the thin factor in its own layout
    grad_z = thin.spread_slope(rows, grad, y)
    grad_rows = thin.dot(grad, y) if with_left else None
    if x.numel() > 0:
        skip_grad = _skip_adjoint(grad, x.shape[-1])
        grad_x = thin.spread(rows, skip_grad)
        if grad_rows is not None:
            grad_rows = grad_rows.add_(thin.dot(skip_grad, x))
    else:
        grad_x = x.new_zeros(0)
    return (None if grad_rows is None else grad_rows.transpose(-1, -2)), grad_z, grad_x


class _TanhContract(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = _tanh(z)
        rows = left.transpose(-1, -2)
        out = thin.combine(rows, y)
        if x.numel() > 0:
            _skip_add(out, thin.combine(rows, x))
        # y is kept as a constant: its derivative is taken through z (see the gradient function).
        # z itself only serves a differentiable backward; a forward that promises one plain
        # backward (forces at inference) does not keep it.
        ctx.single = in_single_input_backward()
        ctx.save_for_backward(left, z.new_empty(0) if ctx.single else z, x, y)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        left, z, x, y = ctx.saved_tensors
        if torch.is_grad_enabled():
            if ctx.single:
                raise RuntimeError(
                    "the embedding contraction ran under single_input_backward(): its graph "
                    "gives the inputs' gradient once, without create_graph"
                )
            grad_left, grad_z, grad_x = _TanhContractGradient.apply(grad, left, z, x, y)
        else:  # nothing recorded (no create_graph): the plain operations
            with_left = wants_gradient(ctx, 0)
            grad_left, grad_z, grad_x = _first_derivatives(grad, left, x, y, with_left)
        return (
            grad_left if ctx.needs_input_grad[0] else None,
            grad_z if ctx.needs_input_grad[1] else None,
            grad_x if ctx.needs_input_grad[2] and x.numel() > 0 else None,
        )


class _TanhContractGradient(torch.autograd.Function):
    @staticmethod
    def forward(  # noqa: D102
        ctx,
        grad: torch.Tensor,
        left: torch.Tensor,
        z: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(grad, left, z, x, y)
        return _first_derivatives(grad, left, x, y)

    @staticmethod
    def backward(  # noqa: D102
        ctx, up_left: torch.Tensor, up_z: torch.Tensor, up_x: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad, left, z, x, y = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _gradient_derivative_reference(ctx, grad, left, z, x, up_left, up_z, up_x)
        has_skip = x.numel() > 0
        need_grad, need_z, need_x = (ctx.needs_input_grad[i] for i in (0, 2, 3))
        need_left = wants_gradient(ctx, 1)
        rows, up_rows = left.transpose(-1, -2), up_left.transpose(-1, -2)
        out_grad = out_left = out_z = out_x = None
        if need_z:
            # (u_Lᵀ g - 2 y ⊙ u_z ⊙ (Lᵀ g)) ⊙ (1 - y²) in one pass.
            out_z = thin.spread_slope_second(rows, up_rows, grad, y, up_z)
        if need_grad or need_left:
            damped = torch.ops.aten.tanh_backward(up_z, y)
            skip_grad = _skip_adjoint(grad, x.shape[-1]) if has_skip else None
            if need_grad:
                out_grad = thin.combine(rows, damped).add_(thin.combine(up_rows, y))
                if has_skip:
                    inner = thin.combine(up_rows, x).add_(thin.combine(rows, up_x))
                    _skip_add(out_grad, inner)
            if need_left:
                left_rows = thin.dot(grad, damped)
                if has_skip:
                    left_rows = left_rows.add_(thin.dot(skip_grad, up_x))
                out_left = left_rows.transpose(-1, -2)
        if need_x and has_skip:
            out_x = thin.spread(up_rows, _skip_adjoint(grad, x.shape[-1]))
        return out_grad, out_left, out_z, out_x, None


def _gradient_derivative_reference(
    ctx,
    grad: torch.Tensor,
    left: torch.Tensor,
    z: torch.Tensor,
    x: torch.Tensor,
    up_left: torch.Tensor,
    up_z: torch.Tensor,
    up_x: torch.Tensor,
) -> tuple[torch.Tensor | None, ...]:
    """The derivative of :class:`_TanhContractGradient` as differentiable operations."""
    from lamforge.nn.layers import tanh

    has_skip = x.numel() > 0
    y = tanh(z)
    slope = 1.0 - y * y
    left_t = left.transpose(-1, -2)
    damped = up_z * slope
    out_grad = torch.matmul(left, damped) + torch.matmul(up_left, y)
    out_left = torch.matmul(grad, damped.transpose(-1, -2))
    out_x = None
    if has_skip:
        skip_grad = _skip_adjoint(grad, x.shape[-1])
        inner = torch.matmul(up_left, x) + torch.matmul(left, up_x)
        if inner.shape[-1] == out_grad.shape[-1]:
            out_grad = out_grad + inner
        else:
            out_grad = out_grad + torch.cat([inner, inner], dim=-1)
        out_left = out_left + torch.matmul(skip_grad, up_x.transpose(-1, -2))
        out_x = torch.matmul(up_left.transpose(-1, -2), skip_grad)
    out_z = (
        torch.matmul(up_left.transpose(-1, -2), grad) - 2.0 * y * up_z * torch.matmul(left_t, grad)
    ) * slope
    needs = ctx.needs_input_grad
    return (
        out_grad if needs[0] else None,
        out_left if needs[1] else None,
        out_z if needs[2] else None,
        out_x if needs[3] else None,
        None,
    )
