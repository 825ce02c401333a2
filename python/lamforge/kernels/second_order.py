"""Second derivatives of a fused op, taken through its plain-PyTorch reference.

Every fused op has two autograd Functions: the op itself, whose backward calls a fused backward
kernel, and that backward, whose own backward (needed once: force training differentiates the
forces, which are a first derivative) comes from here. Let y = f(x) be the reference and
b(x, g) = (∂f/∂x)ᵀ g its vector-Jacobian product (the first backward). Given a cotangent c of
b's output, the second backward returns

    ∂⟨b(x, g), c⟩/∂x   and   ∂⟨b(x, g), c⟩/∂g = (∂f/∂x) c,

which autograd computes by recording b on fresh leaves. This is exact (the same expression the
reference path differentiates), costs one reference forward and two reference backwards, and
supports derivatives up to second order; a third one raises instead of silently being wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def double_backward(
    reference: Callable[..., tuple[torch.Tensor, ...]],
    primals: Sequence[torch.Tensor],
    first_cotangents: Sequence[torch.Tensor],
    second_cotangents: Sequence[torch.Tensor | None],
) -> tuple[list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Gradients of ⟨b(x, g), c⟩ with respect to the primals x and the cotangents g.

    Args:
        reference: differentiable ``f(*primals) -> tuple of outputs``.
        primals: the differentiable inputs x of ``f`` (the others are closed over).
        first_cotangents: g, one per output of ``f``.
        second_cotangents: c, one per primal (None where nothing flows back).

    Returns:
        (gradients for the primals, gradients for the first cotangents); None where zero.

    Raises:
        RuntimeError: a third derivative was asked for (the backward runs with grad enabled).
    """
    if torch.is_grad_enabled():
        raise RuntimeError(
            "lamforge.kernels: third derivatives of fused ops are not supported; run with "
            "lamforge.kernels.use_fused(False) for higher-order gradients"
        )
    with torch.enable_grad():
        x = [primal.detach().requires_grad_(True) for primal in primals]
        g = [cotangent.detach().requires_grad_(True) for cotangent in first_cotangents]
        outputs = reference(*x)
        first = torch.autograd.grad(outputs, x, g, create_graph=True, allow_unused=True)
        pairs = [
            (value, cotangent)
            for value, cotangent in zip(first, second_cotangents, strict=True)
            if value is not None and cotangent is not None and value.requires_grad
        ]
        if not pairs:
            return [None] * len(x), [None] * len(g)
        second = torch.autograd.grad(
            [value for value, _ in pairs],
            [*x, *g],
            [cotangent for _, cotangent in pairs],
            allow_unused=True,
        )
    return list(second[: len(x)]), list(second[len(x) :])
