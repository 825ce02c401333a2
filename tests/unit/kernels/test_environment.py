"""The fused environment matrix against its reference: forward, first and second derivatives."""

from __future__ import annotations

import pytest
import torch
from kernel_helpers import random_edges, random_tensor, tolerance

from lamforge.kernels.environment import environment_matrix, environment_reference
from lamforge.nn.env_mat import environment_matrix as model_environment_matrix

CUTOFF, CUTOFF_SMOOTH = 3.3, 1.7


def _statistics(num_atoms, dtype, device):
    mean = 0.1 * random_tensor(num_atoms, 4, dtype=dtype, device=device, seed=5)
    std = 0.5 + random_tensor(num_atoms, 4, dtype=dtype, device=device, seed=6).abs()
    return mean, std


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("protection", [0.0, 0.3])
def test_forward_matches_reference(dtype, protection, device):
    vectors, mask, _ = random_edges(6, 9, dtype, device)
    mean, std = _statistics(6, dtype, device)
    options = {"cutoff": CUTOFF, "cutoff_smooth": CUTOFF_SMOOTH, "protection": protection}
    env, switch = environment_matrix(vectors, mask, mean, std, **options)
    expected_env, expected_switch = environment_reference(vectors, mask, mean, std, **options)
    torch.testing.assert_close(env, expected_env, **tolerance(dtype))
    torch.testing.assert_close(switch, expected_switch, **tolerance(dtype))
    # Empty slots: R̃ = 0, so env = -mean/std, and the switch is 0.
    torch.testing.assert_close(env[0], (-mean[0] / std[0]).expand(9, 4), **tolerance(dtype))
    assert bool((switch[~mask] == 0).all())
    # The reference is the model's own environment matrix, normalised.
    raw, model_switch = model_environment_matrix(vectors, mask, CUTOFF, CUTOFF_SMOOTH, protection)
    torch.testing.assert_close(expected_env, (raw - mean[:, None]) / std[:, None])
    torch.testing.assert_close(expected_switch, model_switch)


def test_first_and_second_derivatives(device):
    vectors, mask, _ = random_edges(3, 5, torch.float64, device, seed=1)
    mean, std = _statistics(3, torch.float64, device)

    def function(vectors):
        return environment_matrix(
            vectors, mask, mean, std, cutoff=CUTOFF, cutoff_smooth=CUTOFF_SMOOTH, protection=0.2
        )

    vectors.requires_grad_(True)
    assert torch.autograd.gradcheck(function, (vectors,), fast_mode=True)
    assert torch.autograd.gradgradcheck(function, (vectors,), fast_mode=True)


def test_empty_slots_get_no_gradient(device):
    vectors, mask, _ = random_edges(4, 6, torch.float64, device, seed=2)
    mean, std = _statistics(4, torch.float64, device)
    vectors.requires_grad_(True)
    env, switch = environment_matrix(
        vectors, mask, mean, std, cutoff=CUTOFF, cutoff_smooth=CUTOFF_SMOOTH
    )
    (gradient,) = torch.autograd.grad(env.sum() + switch.sum(), vectors)
    assert bool((gradient[~mask] == 0).all())
    assert bool((gradient[mask].abs().sum(-1) > 0).any())


def test_bad_arguments_are_named(device):
    vectors, mask, _ = random_edges(2, 3, torch.float64, device)
    mean, std = _statistics(2, torch.float64, device)
    options = {"cutoff": CUTOFF, "cutoff_smooth": CUTOFF_SMOOTH}
    with pytest.raises(ValueError, match="mean rows must not require grad"):
        environment_matrix(vectors, mask, mean.requires_grad_(True), std, **options)
    with pytest.raises(ValueError, match="std rows is torch.float32"):
        environment_matrix(vectors, mask, mean.detach(), std.float(), **options)
    with pytest.raises(ValueError, match="mask must be bool"):
        environment_matrix(vectors, mask.long(), mean.detach(), std, **options)
    with pytest.raises(ValueError, match="cutoff_smooth 4.0 >= cutoff 3.3"):
        environment_matrix(vectors, mask, mean.detach(), std, cutoff=3.3, cutoff_smooth=4.0)


def test_custom_ops_pass_opcheck(device):
    vectors, mask, _ = random_edges(3, 4, torch.float64, device)
    mean, std = _statistics(3, torch.float64, device)
    scalars = (CUTOFF, CUTOFF_SMOOTH, 0.1)
    torch.library.opcheck(
        torch.ops.lamforge.environment_matrix, (vectors, mask, mean, std, *scalars)
    )
    grad_env = random_tensor(3, 4, 4, dtype=torch.float64, device=device, seed=3)
    grad_switch = random_tensor(3, 4, dtype=torch.float64, device=device, seed=4)
    torch.library.opcheck(
        torch.ops.lamforge.environment_matrix_backward,
        (vectors, mask, std, grad_env, grad_switch, *scalars),
    )
