"""Softmax over the last axis with a lean second derivative (CPU training on forces).

For y = softmax(x) and an upstream g, the derivative is x̄ = y ⊙ (g - s), s = Σ g ⊙ y (aten's
``_softmax_backward_data``). Its own derivative, for an upstream u of x̄ and r = Σ u ⊙ y, is

    ∂/∂g = y ⊙ (u - r)                       (the same softmax backward, applied to u)
    ∂/∂y = u ⊙ (g - s) - r · g

autograd builds the second from about seven fresh tensors of the size of the attention logits
(the largest tensors of a repformer layer with pair attention). Here it is one fresh tensor and
in-place products when no higher derivative is recorded; with ``create_graph`` the same formula
runs as ordinary differentiable operations.
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
