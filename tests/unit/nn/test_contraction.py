"""The hand-differentiated tanh contraction against the same expression left to autograd."""

from __future__ import annotations

import pytest
import torch

from lamforge.nn.contraction import tanh_contract


def _plain(left, z, x):
    out = left @ torch.tanh(z)
    if x is None:
        return out
    skip = left @ x
    return out + (skip if skip.shape[-1] == out.shape[-1] else torch.cat([skip, skip], dim=-1))


def _inputs(skip_width):
    generator = torch.Generator().manual_seed(skip_width or 0)
    options = {"dtype": torch.float64, "generator": generator}
    left = torch.randn(2, 4, 5, **options).requires_grad_()
    z = torch.randn(2, 5, 6, **options).requires_grad_()
    x = None if skip_width is None else torch.randn(2, 5, skip_width, **options).requires_grad_()
    return left, z, x


@pytest.mark.parametrize("skip_width", [None, 3, 6])
def test_tanh_contract_derivatives_check(skip_width):
    left, z, x = _inputs(skip_width)
    inputs = (left, z) if x is None else (left, z, x)

    def function(*args):
        return tanh_contract(args[0], args[1], args[2] if len(args) > 2 else None)

    assert torch.autograd.gradcheck(function, inputs)
    # Recorded second derivatives (the differentiable reference formulas).
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("skip_width", [None, 3, 6])
def test_tanh_contract_training_step_matches_autograd(skip_width):
    """Value, derivative and the in-place second derivative of a force-like loss."""
    left, z, x = _inputs(skip_width)
    inputs = [tensor for tensor in (left, z, x) if tensor is not None]
    results = []
    for function in (tanh_contract, _plain):
        out = function(left, z, x)
        weight = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
        first = torch.autograd.grad((out * weight).sum(), inputs, create_graph=True)
        loss = (out**2).sum() + sum((grad * grad.detach().sin()).sum() for grad in first)
        results.append([out, *first, *torch.autograd.grad(loss, inputs)])
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-13, atol=1e-13)
