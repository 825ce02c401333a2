"""Fused neighbour gather + reductions against their references (with colliding scatters)."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import random_edges, random_tensor, tolerance

from lamforge.kernels.aggregate import (
    gather_outer_sum,
    gather_outer_sum_reference,
    gather_product_sum,
    gather_product_sum_reference,
)


def _inputs(dtype, device, num_atoms=5, num_slots=7, dim=6, seed=0):
    _, mask, index = random_edges(num_atoms, num_slots, dtype, device, seed=seed)
    weight = random_tensor(num_atoms, num_slots, dtype=dtype, device=device, seed=seed + 1) * mask
    pair = random_tensor(num_atoms, num_slots, dim, dtype=dtype, device=device, seed=seed + 2)
    node = random_tensor(num_atoms + 2, dim, dtype=dtype, device=device, seed=seed + 3)
    left = random_tensor(num_atoms, num_slots, 3, dtype=dtype, device=device, seed=seed + 4)
    return pair, node, index, weight, left


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_matches_reference(dtype, device):
    # 20 slots with a block of 16: the slot loop runs twice and masks the tail.
    pair, node, index, weight, left = _inputs(dtype, device, num_slots=20, dim=5)
    torch.testing.assert_close(
        gather_product_sum(pair, node, index, weight),
        gather_product_sum_reference(pair, node, index, weight),
        **tolerance(dtype),
    )
    torch.testing.assert_close(
        gather_outer_sum(left, node, index, weight),
        gather_outer_sum_reference(left, node, index, weight),
        **tolerance(dtype),
    )
    torch.testing.assert_close(
        gather_outer_sum(left, pair, None, weight),
        gather_outer_sum_reference(left, pair, None, weight),
        **tolerance(dtype),
    )


def test_product_sum_derivatives(device):
    pair, node, index, weight, _ = _inputs(torch.float64, device, num_atoms=3, num_slots=4, dim=3)
    inputs = tuple(tensor.requires_grad_(True) for tensor in (pair, node, weight))

    def function(pair, node, weight):
        return gather_product_sum(pair, node, index, weight)

    assert torch.autograd.gradcheck(function, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(function, inputs, fast_mode=True)


@pytest.mark.parametrize("gather", [True, False])
def test_outer_sum_derivatives(gather, device):
    pair, node, index, weight, left = _inputs(
        torch.float64, device, num_atoms=3, num_slots=4, dim=3
    )
    right = node if gather else pair
    inputs = tuple(tensor.requires_grad_(True) for tensor in (left, right, weight))

    def function(left, right, weight):
        return gather_outer_sum(left, right, index if gather else None, weight)

    assert torch.autograd.gradcheck(function, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(function, inputs, fast_mode=True)


def test_bad_arguments_are_named(device):
    pair, node, index, weight, left = _inputs(torch.float64, device)
    with pytest.raises(ValueError, match="gather_product_sum index must be int64"):
        gather_product_sum(pair, node, index.int(), weight)
    with pytest.raises(ValueError, match=r"gather_product_sum weight has shape \(5, 6\)"):
        gather_product_sum(pair, node, index, weight[:, :6])
    with pytest.raises(ValueError, match="gather_outer_sum node is torch.float32"):
        gather_outer_sum(left, node.float(), index, weight)


def test_custom_ops_pass_opcheck(device):
    pair, node, index, weight, left = _inputs(torch.float64, device, num_atoms=3, num_slots=4)
    grad = random_tensor(3, 6, dtype=torch.float64, device=device, seed=9)
    ops = torch.ops.lamforge
    torch.library.opcheck(ops.gather_product_sum, (pair, node, index, weight))
    torch.library.opcheck(ops.gather_product_sum_backward, (grad, pair, node, index, weight))
    torch.library.opcheck(ops.gather_outer_sum, (left, node, index, weight))
    torch.library.opcheck(ops.gather_outer_sum, (left, pair, None, weight))
    grad = random_tensor(3, 3, 6, dtype=torch.float64, device=device, seed=10)
    torch.library.opcheck(ops.gather_outer_sum_backward, (grad, left, node, index, weight))
