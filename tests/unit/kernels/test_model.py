"""The whole model with fused ops equals the reference path: energy, forces, virial, training."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from kernel_helpers import COMPILED

import lamforge.kernels as kernels
from lamforge.nn import DPA2Model, evaluate
from lamforge.testing.reference_neighbors import model_input
from lamforge.testing.tiny_models import TINY_SPECS, tiny_dpa2_config

ELEMENTS = ("H", "O")


def _frames() -> list[Atoms]:
    rng = np.random.default_rng(3)
    frames = []
    # Dense enough that every repformer slot is filled (no trimmed slots): every fused op runs.
    for num_atoms, length in ((6, 2.9), (5, 2.8)):
        grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
        positions = (grid[:num_atoms] + 0.1 * rng.standard_normal((num_atoms, 3))) * length / 2
        symbols = ["O" if k % 3 == 0 else "H" for k in range(num_atoms)]
        frames.append(Atoms(symbols, positions=positions, cell=np.eye(3) * length, pbc=True))
    return frames


@pytest.fixture(scope="module")
def model_and_input(device):
    config = tiny_dpa2_config(ELEMENTS)
    # Every fused path at once: the gated pair attention and the h2 update are off by default.
    repformer = replace(config.descriptor.repformer, attn2_has_gate=True, update_h2=True)
    config = replace(config, descriptor=replace(config.descriptor, repformer=repformer))
    model = DPA2Model(config)
    with torch.no_grad():
        for block in model.descriptor.statistics_blocks().values():
            block.mean.uniform_(-0.1, 0.1)
            block.std.uniform_(0.5, 1.5)
    return model.to(device), model_input(_frames(), ELEMENTS, specs=TINY_SPECS).to(device)


@pytest.fixture
def op_calls(monkeypatch):
    """Counts of the fused ops the model calls (checks that the fused path really runs)."""
    counts: dict[str, int] = {}
    for name in ("environment_matrix", "gather_product_sum", "gather_outer_sum"):
        original = getattr(kernels, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernels, name, counted)
    original_attention = kernels.pair_attention_weights

    def attention(*args, **kwargs):
        counts["pair_attention_weights"] = counts.get("pair_attention_weights", 0) + 1
        return original_attention(*args, **kwargs)

    monkeypatch.setattr(kernels, "pair_attention_weights", attention)
    return counts


def test_energy_forces_virial_equal_the_reference(model_and_input, op_calls):
    model, inputs = model_and_input
    with kernels.use_fused(False):
        reference = evaluate(model, inputs, atomic_virial=True)
    assert op_calls == {}
    with kernels.use_fused(True):
        fused = evaluate(model, inputs, atomic_virial=True)
    layers = model.config.descriptor.repformer.num_layers
    # repinit, three-body off, repformer env; conv per layer; grrg + drrd per layer; attention in
    # every layer but the last.
    assert op_calls == {
        "environment_matrix": 2,
        "gather_product_sum": layers,
        "gather_outer_sum": 2 * layers,
        "pair_attention_weights": layers - 1,
    }
    for name in ("energy", "atomic_energies", "forces", "virial", "atomic_virial"):
        torch.testing.assert_close(
            getattr(fused, name), getattr(reference, name), rtol=1e-10, atol=1e-10, msg=name
        )


def test_force_training_gradients_equal_the_reference(model_and_input):
    """Force loss: the parameter gradients need the fused ops' second derivatives."""
    model, inputs = model_and_input
    gradients = {}
    for fused in (False, True):
        model.zero_grad()
        with kernels.use_fused(fused):
            output = evaluate(model, inputs, create_graph=True)
            loss = output.energy.square().sum() + output.forces.square().sum()
            loss.backward()
        gradients[fused] = {
            name: parameter.grad.clone()
            for name, parameter in model.named_parameters()
            if parameter.grad is not None
        }
    assert gradients[True].keys() == gradients[False].keys()
    assert len(gradients[True]) > 20
    for name, expected in gradients[False].items():
        torch.testing.assert_close(gradients[True][name], expected, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.skipif(COMPILED, reason="checks the CPU interpreter's switch semantics")
def test_switch_defaults_and_errors(monkeypatch):
    cpu = torch.zeros(1)
    assert kernels.fused_setting() is None
    assert not kernels.fused_enabled(cpu)  # CPU keeps the reference path by default
    with kernels.use_fused(True):
        assert kernels.fused_enabled(cpu)  # allowed here: the interpreter is on
        monkeypatch.setenv("TRITON_INTERPRET", "0")
        with pytest.raises(RuntimeError, match="use_fused\\(True\\) with a cpu tensor"):
            kernels.fused_enabled(cpu)
    assert kernels.fused_setting() is None
    with pytest.raises(ValueError, match="use_fused takes True, False or None"):
        kernels.use_fused("yes")


# Dynamo itself instantiates autograd.Function while tracing (torch 2.11) and warns about it.
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
def test_torch_compile_traces_the_fused_model(model_and_input):
    """Dynamo + AOTAutograd trace the fused ops through their fake implementations, no breaks."""
    model, inputs = model_and_input
    with kernels.use_fused(True):
        geometries, distinct = model.geometries(inputs)
        vectors = [geometry.vectors.detach().requires_grad_(True) for geometry, _ in distinct]
        for (geometry, _), leaf in zip(distinct, vectors, strict=True):
            object.__setattr__(geometry, "vectors", leaf)
        compiled = torch.compile(
            model.atomic_energies_from_geometry, backend="aot_eager", fullgraph=True
        )
        results = []
        for function in (compiled, model.atomic_energies_from_geometry):
            energies = function(geometries, inputs.atom_types, None)
            results.append((energies, torch.autograd.grad(energies.sum(), vectors)))
    (compiled_energies, compiled_gradients), (energies, gradients) = results
    torch.testing.assert_close(compiled_energies, energies)
    for compiled_gradient, gradient in zip(compiled_gradients, gradients, strict=True):
        torch.testing.assert_close(compiled_gradient, gradient)
