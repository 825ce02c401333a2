"""Compressed (tabulated) se_e2_a: agreement with the nets, derivatives, checkpoints, calculator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from lamforge.calculators import LAMCalculator
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.config import FittingConfig
from lamforge.nn.forces import evaluate
from lamforge.nn.se_e2_a import SeAConfig, SeAModel, compute_se_a_statistics, load_se_a, save_se_a
from lamforge.nn.se_e2_a_inference import evaluate_tabulated
from lamforge.testing import physics

SPECS = [(4.0, 60)]


def frame(seed: int = 0) -> Atoms:
    atoms = bulk("C", "diamond", a=3.9, cubic=True)
    atoms.set_chemical_symbols(["C", "O", "H", "C", "O", "H", "C", "H"])
    atoms.rattle(0.15, seed=seed)
    return atoms


def model_with_statistics(precision: str = "float64", **changes) -> SeAModel:
    config = SeAConfig(
        elements=("C", "O", "H"),
        cutoff=4.0,
        cutoff_smooth=1.0,
        max_neighbors=60,
        neurons=(4, 8, 16),
        axis_neurons=4,
        type_embedding_dim=3,
        heads={"default": FittingConfig(neurons=(8, 8))},
        precision=precision,
    )
    model = SeAModel(dataclasses.replace(config, **changes))
    inputs = model_input_from_atoms([frame()], model.elements, SPECS, model.dtype)
    compute_se_a_statistics(model, [inputs])
    return model


def inputs_of(frames: list[Atoms], model: SeAModel):
    return model_input_from_atoms(frames, model.elements, SPECS, model.dtype)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("type_one_side", [True, False])
def test_compressed_matches_the_nets_in_float64(type_one_side):
    model = model_with_statistics(type_one_side=type_one_side)
    compressed = model.compress()
    inputs = inputs_of([frame(1), frame(2)], model)
    exact, tabulated = evaluate(model, inputs), evaluate(compressed, inputs)
    for name in ("energy", "forces", "virial"):
        error = relative_error(getattr(tabulated, name), getattr(exact, name))
        assert error < 1e-9, (name, error)
    # A coarser table is still far inside the ~1e-5 a float32 model resolves.
    coarse = evaluate(model.compress(step=0.2), inputs)
    assert relative_error(coarse.forces, exact.forces) < 1e-6


def test_table_reproduces_each_net_between_the_knots():
    model = model_with_statistics()
    table = model.compress().descriptor.block.table
    upper = table.config.upper
    s = torch.linspace(0.0, upper, 2001, dtype=torch.float64)
    for net_id, net in enumerate(model.descriptor.block.embeddings):
        expected = net(s.unsqueeze(-1)).detach()
        looked_up = table.lookup(s, torch.full_like(s, net_id, dtype=torch.int64))
        assert float((looked_up - expected).abs().max()) < 1e-9 * float(expected.abs().max())


def test_float32_compressed_agrees_within_float32_noise():
    model = model_with_statistics(precision="float32")
    inputs = inputs_of([frame(3)], model)
    exact, tabulated = evaluate(model, inputs), evaluate(model.compress(), inputs)
    assert relative_error(tabulated.forces, exact.forces) < 1e-5
    assert relative_error(tabulated.energy, exact.energy) < 1e-6


@pytest.mark.parametrize("type_one_side", [True, False])
def test_hand_written_derivatives_match_autograd(type_one_side):
    # A fitting net with a doubling skip and timestep vectors, and a zero-isolated-atom head.
    head = FittingConfig(neurons=(8, 16), resnet_dt=True, zero_isolated_atoms=True)
    model = model_with_statistics(type_one_side=type_one_side, heads={"default": head})
    compressed = model.compress()
    for frames in ([frame(4)], [frame(5), frame(6)]):  # one frame and a batch
        inputs = inputs_of(frames, compressed)
        expected = evaluate(compressed, inputs)
        actual = evaluate_tabulated(compressed, inputs)
        for name in ("energy", "atomic_energies", "forces", "virial"):
            error = relative_error(getattr(actual, name), getattr(expected, name))
            assert error < 1e-12, (name, error)


def tabulated_evaluator(model: SeAModel) -> physics.Evaluator:
    def run(frames):
        output = evaluate_tabulated(model, inputs_of(frames, model))
        counts = np.cumsum([0] + [len(atoms) for atoms in frames])
        forces = output.forces.numpy()
        return physics.Prediction(
            energy=output.energy.numpy(),
            forces=[forces[counts[k] : counts[k + 1]] for k in range(len(frames))],
            virial=output.virial.numpy(),
        )

    return run


def test_forces_and_virial_are_derivatives_of_the_compressed_energy():
    compressed = model_with_statistics().compress()
    for evaluator in (physics.dpa2_evaluator(compressed), tabulated_evaluator(compressed)):
        physics.check_forces_finite_difference(evaluator, frame(7), tolerance=1e-6)
        physics.check_virial_finite_difference(evaluator, frame(7), tolerance=1e-6)
        physics.check_invariance(evaluator, frame(8), tolerance=1e-10)


def test_lookup_is_twice_differentiable():
    table = model_with_statistics().compress().descriptor.block.table
    radial = torch.tensor([0.03, 0.4, 1.7, 2.2], dtype=torch.float64, requires_grad=True)
    nets = torch.tensor([0, 1, 2, 0])
    torch.autograd.gradcheck(lambda s: table.lookup(s, nets), (radial,))
    torch.autograd.gradgradcheck(lambda s: table.lookup(s, nets), (radial,))


def test_checkpoint_round_trip_keeps_the_table(tmp_path):
    compressed = model_with_statistics().compress(step=0.1, min_distance=0.6)
    save_se_a(compressed, tmp_path / "student.pt")
    loaded = load_se_a(tmp_path / "student.pt")
    assert loaded.config == compressed.config
    assert loaded.config.table is not None and loaded.config.table.step == 0.1
    assert SeAConfig.from_dict(compressed.config.to_dict()) == compressed.config
    inputs = inputs_of([frame(9)], compressed)
    assert torch.equal(loaded.energy(inputs), compressed.energy(inputs))


def test_calculator_runs_the_compressed_student():
    model = model_with_statistics()
    compressed = model.compress()
    atoms = frame(10)
    atoms.calc = LAMCalculator(compressed, num_threads=1)
    assert atoms.calc.tabulated
    expected = evaluate(model, inputs_of([atoms], model))
    energy = float(expected.energy[0].detach())
    assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-9)
    np.testing.assert_allclose(
        atoms.get_forces(), expected.forces.detach().numpy(), rtol=0, atol=1e-9
    )
    stress = -expected.virial[0].detach().numpy() / atoms.get_volume()
    np.testing.assert_allclose(atoms.get_stress(voigt=False), stress, atol=1e-9)
    # A move is seen by the calculator's own change check.
    atoms.positions[0, 0] += 0.01
    moved = evaluate(model, inputs_of([atoms], model))
    np.testing.assert_allclose(atoms.get_forces(), moved.forces.detach().numpy(), atol=1e-9)


def test_compress_needs_no_training_state_and_keeps_the_original():
    model = model_with_statistics()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    compressed = model.compress()
    assert model.config.table is None and model.descriptor.block.table is None
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    with pytest.raises(ValueError, match="compressed model"):
        evaluate_tabulated(model, inputs_of([frame()], model))
    assert compressed.descriptor.block.table.weight.dtype == model.dtype


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside torch.compile
def test_compiled_calculator_matches_eager():
    compressed = model_with_statistics().compress()
    atoms = frame(11)
    atoms.calc = LAMCalculator(compressed, num_threads=1)
    expected = atoms.get_forces()
    compiled = frame(11)
    compiled.calc = LAMCalculator(compressed, num_threads=1, compile=True)
    np.testing.assert_allclose(compiled.get_forces(), expected, atol=1e-10)
