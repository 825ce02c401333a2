"""Functions with hand-written derivatives against the same expressions left to autograd."""

from __future__ import annotations

import pytest
import torch
from tests.unit.nn.nn_helpers import plain_contract

from lamforge.nn.contraction import tanh_contract
from lamforge.nn.softmax import softmax


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
    for function in (tanh_contract, plain_contract):
        out = function(left, z, x)
        weight = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
        first = torch.autograd.grad((out * weight).sum(), inputs, create_graph=True)
        loss = (out**2).sum() + sum((grad * grad.detach().sin()).sum() for grad in first)
        results.append([out, *first, *torch.autograd.grad(loss, inputs)])
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("extra_logit", [None, -2.5])
def test_softmax_derivatives_match_torch_softmax(monkeypatch, extra_logit):
    from lamforge.nn import softmax as module

    monkeypatch.setattr(module, "MIN_SIZE", 0)  # the hand-written path even on small inputs
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, dtype=torch.float64, generator=generator).requires_grad_()

    def ours(t):
        return softmax(t, extra_logit)

    def reference(t):
        if extra_logit is None:
            return torch.softmax(t, dim=-1)
        extra = torch.full_like(t[..., :1], extra_logit)
        return torch.softmax(torch.cat([t, extra], dim=-1), dim=-1)[..., :-1]

    assert torch.autograd.gradcheck(ours, (x,))
    assert torch.autograd.gradgradcheck(ours, (x,))
    results = []
    for function in (ours, reference):
        y = function(x)
        weight = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).view_as(y)
        (first,) = torch.autograd.grad((y * weight).sum(), x, create_graph=True)
        loss = (y**3).sum() + (first * first.detach().cos()).sum()
        results.append([y, first, *torch.autograd.grad(loss, x)])
    for value, expected in zip(*results, strict=True):
        torch.testing.assert_close(value, expected, rtol=1e-13, atol=1e-14)


def test_head_product_derivatives_match_the_broadcast_product(monkeypatch):
    from lamforge.nn import softmax as module

    monkeypatch.setattr(module, "MIN_SIZE", 0)  # the hand-written path even on small inputs
    generator = torch.Generator().manual_seed(4)
    options = {"dtype": torch.float64, "generator": generator}
    a = torch.randn(2, 3, 4, 5, **options).requires_grad_()
    q = torch.randn(2, 3, 1, 5, **options).requires_grad_()
    assert torch.autograd.gradcheck(module.head_product, (a, q))
    assert torch.autograd.gradgradcheck(module.head_product, (a, q))
    results = []
    for function in (module.head_product, torch.mul):
        y = function(a, q)
        weight = torch.linspace(-1.0, 1.0, y.numel(), dtype=y.dtype).view_as(y)
        first = torch.autograd.grad((y * weight).sum(), (a, q), create_graph=True)
        loss = (y**3).sum() + sum((grad * grad.detach().cos()).sum() for grad in first)
        results.append([y, *first, *torch.autograd.grad(loss, (a, q))])
    for value, expected in zip(*results, strict=True):
        torch.testing.assert_close(value, expected, rtol=1e-13, atol=1e-13)
