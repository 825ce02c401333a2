"""CUDA-only checks of the fused path: default switch, torch.compile (Inductor), CUDA graphs."""

from __future__ import annotations

import pytest
import torch
from test_model import ELEMENTS, _frames

import lamforge.kernels as kernels
from lamforge.nn import DPA2Model, dpa2_medium, evaluate
from lamforge.testing.reference_neighbors import model_input

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def medium():
    """The medium preset (gated pair attention) in float64 on the GPU, with its inputs."""
    model = DPA2Model(dpa2_medium(ELEMENTS)).cuda()
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    return model, model_input(_frames() * 4, ELEMENTS, specs=specs).to("cuda")


def test_cuda_defaults_to_fused_and_matches_reference(medium):
    model, inputs = medium
    assert kernels.fused_setting() is None
    assert kernels.fused_enabled(inputs.positions)
    fused = evaluate(model, inputs)
    with kernels.use_fused(False):
        reference = evaluate(model, inputs)
    for name in ("energy", "forces", "virial"):
        torch.testing.assert_close(getattr(fused, name), getattr(reference, name), msg=name)


@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
def test_torch_compile_with_inductor(medium):
    model, inputs = medium
    geometries, _ = model.geometries(inputs)
    compiled = torch.compile(model.atomic_energies_from_geometry)
    energies = compiled(geometries, inputs.atom_types, None)
    torch.testing.assert_close(
        energies, model.atomic_energies_from_geometry(geometries, inputs.atom_types, None)
    )


def test_cuda_graph_replay_of_fused_inference(medium):
    """Fixed-size MD inference: capture descriptor, energy and edge gradients, replay on new edges.

    The neighbour lists and geometry are rebuilt outside the graph (they change with the
    neighbour list); the captured part is the model and its backward, where the fused ops run.
    """
    model, inputs = medium
    geometries, distinct = model.geometries(inputs)
    vectors = [geometry.vectors.detach().clone().requires_grad_(True) for geometry, _ in distinct]
    for geometry, leaf in zip((g for g, _ in distinct), vectors, strict=True):
        object.__setattr__(geometry, "vectors", leaf)

    def step():
        energies = model.atomic_energies_from_geometry(geometries, inputs.atom_types, None)
        return energies, torch.autograd.grad(energies.sum(), vectors)

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm up: Triton compiles its kernels outside the capture
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_energies, captured_gradients = step()
    with torch.no_grad():
        for leaf in vectors:
            leaf.mul_(1.01)
    graph.replay()
    energies, gradients = step()
    torch.testing.assert_close(captured_energies, energies)
    for captured, direct in zip(captured_gradients, gradients, strict=True):
        torch.testing.assert_close(captured, direct)
