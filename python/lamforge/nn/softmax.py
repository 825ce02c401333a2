"""Softmax (and the head products around it) with lean second derivatives (CPU training).

For y = softmax(x) and an upstream g, the derivative is x̄ = y ⊙ (g - s), s = Σ g ⊙ y (aten's
``_softmax_backward_data``). Its own derivative, for an upstream u of x̄ and r = Σ u ⊙ y, is

    ∂/∂g = y ⊙ (u - r)                       (the same softmax backward, applied to u)
    ∂/∂y = u ⊙ (g - s) - r · g

autograd builds the second from about seven fresh tensors of the size of the attention logits
(the largest tensors of a repformer layer with pair attention). Here it is one fresh tensor and
in-place products when no higher derivative is recorded; with ``create_graph`` the same formula
runs as ordinary differentiable operations. :func:`head_product` does the same for the products of
the head-wide attention tensors with head-free pair factors around the softmax.
"""

from __future__ import annotations

import torch

# Smaller tensors use autograd's derivative (less Python overhead than a Function call).
MIN_SIZE = 1 << 14


def softmax(x: torch.Tensor, extra_logit: float | None = None) -> torch.Tensor:
    """``torch.softmax(x, dim=-1)``, with the second derivative above on the CPU.

    With ``extra_logit``, the softmax as if every row had one more column of that constant logit,
    that column left out of the result. Its derivatives are those of the softmax of the kept
    columns: both formulas only read y and the upstream, whose dropped column is zero.
    """
    size = x.numel()
    small = isinstance(size, int) and size < MIN_SIZE  # a symbolic size (export) counts as large
    if x.device.type != "cpu" or torch.compiler.is_compiling() or small:
        if extra_logit is None:
            return torch.softmax(x, dim=-1)
        extra = torch.full_like(x[..., :1], extra_logit)
        return torch.softmax(torch.cat([x, extra], dim=-1), dim=-1)[..., :-1]
    return _Softmax.apply(x, extra_logit)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, extra_logit: float | None) -> torch.Tensor:  # noqa: D102
        if extra_logit is None:
            y = torch.softmax(x, dim=-1)
        else:
            # exp(x - m) / (Σ exp(x - m) + exp(c - m)), m the row maximum with c included.
            top = x.amax(dim=-1, keepdim=True).clamp_(min=extra_logit)
            y = torch.sub(x, top).exp_()
            total = y.sum(dim=-1, keepdim=True).add_(torch.sub(extra_logit, top).exp_())
            y.div_(total)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        (y,) = ctx.saved_tensors
        if not torch.is_grad_enabled():  # nothing recorded: the plain operation
            return torch.ops.aten._softmax_backward_data(grad, y, -1, y.dtype), None
        return _SoftmaxGradient.apply(grad, y), None


class _SoftmaxGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(grad, y)
        return torch.ops.aten._softmax_backward_data(grad, y, -1, y.dtype)

    @staticmethod
    def backward(ctx, upstream: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        grad, y = ctx.saved_tensors
        grad_grad = grad_y = None
        if ctx.needs_input_grad[0]:
            grad_grad = _SoftmaxGradient.apply(upstream, y)
        if ctx.needs_input_grad[1]:
            if torch.is_grad_enabled():
                total = (grad * y).sum(-1, keepdim=True)
                upstream_total = (upstream * y).sum(-1, keepdim=True)
                grad_y = upstream * (grad - total) - upstream_total * grad
            else:
                total = (grad * y).sum(-1, keepdim=True)
                upstream_total = (upstream * y).sum(-1, keepdim=True)
                grad_y = torch.sub(grad, total).mul_(upstream)
                grad_y.addcmul_(grad, upstream_total, value=-1.0)
        return grad_grad, grad_y


def head_product(a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``a * q`` for a [..., heads, K] and a head-free q [..., 1, K], lean second derivative.

    Both derivatives of the product, ā q and Σ_heads ā ⊙ a, and theirs are formed with one fresh
    head-wide tensor each: the sums over the (few) heads run slice by slice into the head-free
    result instead of through a head-wide temporary (autograd's broadcast-and-sum).
    """
    size = a.numel()
    small = isinstance(size, int) and size < MIN_SIZE  # a symbolic size (export) counts as large
    if a.device.type != "cpu" or torch.compiler.is_compiling() or small:
        return a * q
    return _HeadProduct.apply(a, q)


def _head_sum_of_products(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_h x[..., h, :] ⊙ y[..., h, :] -> [..., 1, K], without a head-wide temporary."""
    out = torch.mul(x[..., :1, :], y[..., :1, :])
    for head in range(1, x.shape[-2]):
        out.addcmul_(x[..., head : head + 1, :], y[..., head : head + 1, :])
    return out


class _HeadProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(a, q)
        return a * q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: D102
        a, q = ctx.saved_tensors
        if not torch.is_grad_enabled():  # nothing recorded: the plain operations
            return grad * q, _head_sum_of_products(grad, a)
        return _HeadProductGradient.apply(grad, a, q)


class _HeadProductGradient(torch.autograd.Function):
    """(ḡ, a, q) -> (ḡ q, Σ_h ḡ ⊙ a)."""

    @staticmethod
    def forward(  # noqa: D102
        ctx, grad: torch.Tensor, a: torch.Tensor, q: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.save_for_backward(grad, a, q)
        return grad * q, _head_sum_of_products(grad, a)

    @staticmethod
    def backward(  # noqa: D102
        ctx, up_a: torch.Tensor, up_q: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        grad, a, q = ctx.saved_tensors
        if torch.is_grad_enabled():
            return (
                up_a * q + up_q * a,
                up_q * grad,
                (up_a * grad).sum(dim=-2, keepdim=True),
            )
        out_grad = out_a = out_q = None
        if ctx.needs_input_grad[0]:
            out_grad = torch.mul(up_a, q).addcmul_(up_q, a)
        if ctx.needs_input_grad[1]:
            out_a = up_q * grad
        if ctx.needs_input_grad[2]:
            out_q = _head_sum_of_products(up_a, grad)
        return out_grad, out_a, out_q
