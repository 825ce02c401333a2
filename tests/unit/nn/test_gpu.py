"""The model on a CUDA device agrees with the CPU (run with ``-m gpu`` on a machine with CUDA)."""

from __future__ import annotations

import pytest
import torch
from nn_helpers import ELEMENTS, build_model, molecule_frame, periodic_frame

from lamforge.nn import evaluate
from lamforge.testing.reference_neighbors import model_input

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_cuda_matches_cpu(precision):
    model = build_model("new", precision)
    inputs = model_input([periodic_frame(), molecule_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    cpu = evaluate(model, inputs)
    gpu = evaluate(model.to("cuda"), inputs.to("cuda"))
    tolerance = 1e-10 if precision == "float64" else 1e-4
    assert torch.allclose(gpu.energy.cpu(), cpu.energy, rtol=tolerance, atol=0)
    assert torch.allclose(gpu.forces.cpu(), cpu.forces, rtol=0, atol=tolerance)
    assert torch.allclose(gpu.virial.cpu(), cpu.virial, rtol=0, atol=tolerance)
