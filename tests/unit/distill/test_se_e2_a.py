"""se_e2_a physics (finite differences, invariances, smoothness) and its model interface."""

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
from lamforge.nn.statistics import fit_energy_bias
from lamforge.testing import physics


def tiny_config(**changes) -> SeAConfig:
    base = SeAConfig(
        elements=("C", "O", "H"),
        cutoff=4.0,
        cutoff_smooth=1.0,
        max_neighbors=60,
        neurons=(4, 8),
        axis_neurons=4,
        type_embedding_dim=3,
        heads={"default": FittingConfig(neurons=(8, 8))},
    )
    return dataclasses.replace(base, **changes)


def model_with_statistics(**changes) -> SeAModel:
    model = SeAModel(tiny_config(**changes))
    inputs = model_input_from_atoms([periodic_frame()], model.elements, [(4.0, 60)])
    compute_se_a_statistics(model, [inputs])
    return model


def periodic_frame(seed: int = 0) -> Atoms:
    atoms = bulk("C", "diamond", a=3.9, cubic=True)
    atoms.set_chemical_symbols(["C", "O", "H", "C", "O", "H", "C", "H"])
    atoms.rattle(0.15, seed=seed)
    return atoms


@pytest.mark.parametrize("type_one_side", [True, False])
def test_forces_and_virial_are_energy_derivatives(type_one_side):
    evaluate_frames = physics.dpa2_evaluator(model_with_statistics(type_one_side=type_one_side))
    physics.check_forces_finite_difference(evaluate_frames, periodic_frame(), tolerance=1e-6)
    physics.check_virial_finite_difference(evaluate_frames, periodic_frame(), tolerance=1e-6)


def test_rotation_translation_permutation_invariance():
    evaluate_frames = physics.dpa2_evaluator(model_with_statistics(type_one_side=False))
    physics.check_invariance(evaluate_frames, periodic_frame(1), tolerance=1e-10)


def test_supercell_and_batch_consistency():
    evaluate_frames = physics.dpa2_evaluator(model_with_statistics())
    physics.check_supercell_extensivity(evaluate_frames, periodic_frame(), tolerance=1e-10)
    physics.check_batch_consistency(evaluate_frames, [periodic_frame(2), periodic_frame(3)])


@pytest.mark.parametrize("crossing", [4.0, float(np.sqrt(15.0)), 1.0])
def test_smooth_across_the_cutoff(crossing):
    # A at the origin, B off the x axis, C moves along x: A-C and B-C cross the cutoff (and the
    # switch's start at 1 Å) at different positions.
    trimer = Atoms("COH", positions=[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    evaluate_frames = physics.dpa2_evaluator(model_with_statistics())
    physics.check_cutoff_smoothness(
        evaluate_frames, trimer, 2, np.array([1.0, 0.0, 0.0]), crossing, tolerance=1e-7
    )


def test_isolated_atom_has_its_bias_with_zero_isolated_atoms():
    model = model_with_statistics(
        heads={"default": FittingConfig(neurons=(8,), zero_isolated_atoms=True)}
    )
    model.heads["default"].energy_bias.copy_(torch.tensor([-1.0, -2.0, -3.0]))
    physics.check_isolated_atoms(physics.dpa2_evaluator(model), ["C", "O", "H"], [-1, -2, -3])


def test_save_load_round_trip_and_bad_files(tmp_path):
    model = model_with_statistics()
    fit_energy_bias(
        model,
        [
            (
                model_input_from_atoms([periodic_frame()], model.elements, [(4.0, 60)]),
                torch.tensor([-7.0]),
            )
        ],
    )
    save_se_a(model, tmp_path / "student.pt")
    loaded = load_se_a(tmp_path / "student.pt")
    assert loaded.config == model.config
    inputs = model_input_from_atoms([periodic_frame(4)], model.elements, [(4.0, 60)])
    assert torch.equal(loaded.energy(inputs), model.energy(inputs))
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt.*lamforge.se_e2_a/1"):
        load_se_a(tmp_path / "other.pt")


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['cutof'\]"):
        SeAConfig.from_dict({"elements": ["H"], "cutof": 5.0})
    with pytest.raises(ValueError, match="axis_neurons 9"):
        tiny_config(axis_neurons=9)
    with pytest.raises(ValueError, match="cutoff_smooth"):
        tiny_config(cutoff_smooth=5.0)
    assert SeAConfig.from_dict(tiny_config().to_dict()) == tiny_config()


def test_calculator_matches_evaluate_and_float32_agrees():
    model = model_with_statistics()
    atoms = periodic_frame(5)
    atoms.calc = LAMCalculator(model, num_threads=1)
    inputs = model_input_from_atoms([atoms], model.elements, [(4.0, 60)])
    output = evaluate(model, inputs)
    assert atoms.get_potential_energy() == pytest.approx(
        float(output.energy[0].detach()), abs=1e-10
    )
    np.testing.assert_allclose(atoms.get_forces(), output.forces.detach().numpy(), atol=1e-10)
    stress = -output.virial[0].detach().numpy() / atoms.get_volume()
    np.testing.assert_allclose(atoms.get_stress(voigt=False), stress, atol=1e-10)
    single = SeAModel(dataclasses.replace(model.config, precision="float32"))
    state = model.state_dict()
    single.load_state_dict(
        {k: v if "energy_bias" in k else v.to(torch.float32) for k, v in state.items()}
    )
    inputs32 = model_input_from_atoms([atoms], model.elements, [(4.0, 60)], torch.float32)
    forces32 = evaluate(single, inputs32).forces.detach().double().numpy()
    np.testing.assert_allclose(forces32, output.forces.detach().numpy(), atol=1e-4)
