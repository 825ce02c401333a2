"""float32 against float64 with the same weights, float32 physics, and double backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_helpers import ELEMENTS, build_model, molecule_frame, periodic_frame, slab_frame

from lamforge.nn import evaluate
from lamforge.testing import physics
from lamforge.testing.reference_neighbors import model_input


@pytest.mark.parametrize("variant", ["new", "old_strip"])
def test_float32_agrees_with_float64(variant):
    frames = [periodic_frame(), slab_frame(), molecule_frame()]
    double = physics.dpa2_evaluator(build_model(variant, "float64"))(frames)
    single = physics.dpa2_evaluator(build_model(variant, "float32"))(frames)
    # Energies carry large per-element biases added in float64; the fitted part is float32.
    assert np.abs(single.energy - double.energy).max() < 1e-4
    for f32, f64 in zip(single.forces, double.forces, strict=True):
        assert np.abs(f32 - f64).max() < 1e-4 * max(1.0, np.abs(f64).max())
    assert np.abs(single.virial - double.virial).max() < 1e-4 * max(
        1.0, np.abs(double.virial).max()
    )


def test_float32_physics():
    model = build_model("new", "float32")
    assert model.descriptor.repinit.embedding.layers[0].weight.dtype == torch.float32
    evaluate32 = physics.dpa2_evaluator(model)
    physics.check_invariance(evaluate32, periodic_frame(), tolerance=1e-5)
    physics.check_batch_consistency(
        evaluate32, [periodic_frame(), molecule_frame()], tolerance=1e-5
    )
    physics.check_supercell_extensivity(evaluate32, periodic_frame(), tolerance=1e-5)
    physics.check_forces_finite_difference(
        evaluate32, molecule_frame(), delta=1e-2, tolerance=5e-3, max_atoms=2
    )


def test_force_loss_double_backward_matches_finite_difference():
    # Training on forces differentiates the forces with respect to the parameters.
    model = build_model("new")
    inputs = model_input([periodic_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    parameter = model.descriptor.repformers.layers[0].linear1.weight

    def loss() -> torch.Tensor:
        output = evaluate(model, inputs, create_graph=True)
        return (output.forces**2).sum() + (output.virial**2).sum()

    value = loss()
    (gradient,) = torch.autograd.grad(value, parameter)
    assert gradient.abs().max() > 0
    delta = 1e-6
    with torch.no_grad():
        parameter[0, 0] += delta
    plus = loss().item()
    with torch.no_grad():
        parameter[0, 0] -= 2 * delta
    minus = loss().item()
    with torch.no_grad():
        parameter[0, 0] += delta
    numeric = (plus - minus) / (2 * delta)
    assert abs(numeric - gradient[0, 0].item()) <= 1e-6 * max(1.0, abs(numeric))
