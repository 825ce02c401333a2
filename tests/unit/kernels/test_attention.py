"""The fused gated pair-attention map against its reference, in all four modes."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import random_edges, random_tensor, tolerance

from lamforge.kernels.attention import pair_attention_reference, pair_attention_weights

MODES = [(True, True), (True, False), (False, True), (False, False)]


def _inputs(dtype, device, num_atoms=3, heads=2, num_slots=6, hidden=3, seed=0):
    _, mask, _ = random_edges(num_atoms, num_slots, dtype, device, seed=seed)
    shape = (num_atoms, heads, num_slots, hidden)
    query = random_tensor(*shape, dtype=dtype, device=device, seed=seed + 1)
    key = random_tensor(*shape, dtype=dtype, device=device, seed=seed + 2)
    h2 = random_tensor(num_atoms, num_slots, 3, dtype=dtype, device=device, seed=seed + 3)
    switch = random_tensor(num_atoms, num_slots, dtype=dtype, device=device, seed=4).abs() * mask
    return query, key, h2, switch, mask


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("smooth", "gate"), MODES)
def test_forward_matches_reference(smooth, gate, dtype, device):
    # 20 slots pad to a 32-wide tile; hidden 5 is not a power of two.
    query, key, h2, switch, mask = _inputs(dtype, device, num_slots=20, hidden=5)
    weights = pair_attention_weights(query, key, h2, switch, mask, smooth=smooth, gate=gate)
    expected = pair_attention_reference(query, key, h2, switch, mask, smooth, gate)
    assert weights.shape == (3, 20, 20, 2)
    torch.testing.assert_close(weights, expected.permute(0, 2, 3, 1), **tolerance(dtype))
    assert bool((weights[0] == 0).all())  # the atom without neighbours


@pytest.mark.parametrize(("smooth", "gate"), [(True, True), (False, False)])
def test_first_and_second_derivatives(smooth, gate, device):
    query, key, h2, switch, mask = _inputs(torch.float64, device, num_atoms=2, num_slots=4)
    inputs = tuple(tensor.requires_grad_(True) for tensor in (query, key, h2, switch))

    def function(query, key, h2, switch):
        return pair_attention_weights(query, key, h2, switch, mask, smooth=smooth, gate=gate)

    assert torch.autograd.gradcheck(function, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(function, inputs, fast_mode=True)


def test_too_many_slots_is_a_clear_error(device):
    query, key, h2, switch, mask = _inputs(torch.float64, device, num_atoms=1, num_slots=130)
    with pytest.raises(ValueError, match="N = 130 slots in one tile; at most 128"):
        pair_attention_weights(query, key, h2, switch, mask, smooth=True, gate=True)


def test_custom_ops_pass_opcheck(device):
    query, key, h2, switch, mask = _inputs(torch.float64, device, num_atoms=2, num_slots=4)
    # As in the model: query and key are non-contiguous halves of one permuted projection, and
    # the fake outputs must have the real (contiguous) strides.
    projected = torch.cat([query, key], dim=1).permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    query, key = torch.split(projected, 2, dim=1)
    assert not query.is_contiguous()
    ops = torch.ops.lamforge
    torch.library.opcheck(ops.pair_attention, (query, key, h2, switch, mask, True, True))
    grad = random_tensor(2, 2, 4, 4, dtype=torch.float64, device=device, seed=7)
    torch.library.opcheck(
        ops.pair_attention_backward, (grad, query, key, h2, switch, mask, True, True)
    )
