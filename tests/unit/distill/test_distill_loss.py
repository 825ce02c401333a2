"""The extra distillation terms: Hessian-vector products by double backward and their gradients."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase.build import bulk

from lamforge.distill.loss import (
    DistillLossConfig,
    distillation_terms,
    hessian_vector_product,
    random_directions,
)
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.forces import evaluate
from lamforge.nn.se_e2_a import SeAModel
from lamforge.testing.tiny_models import tiny_se_a_config

SPECS = [(4.0, 40)]


def student(seed: int = 1) -> SeAModel:
    return SeAModel(tiny_se_a_config(("Cu", "Au"), seed=seed))


def frame():
    atoms = bulk("Cu", "fcc", a=3.7, cubic=True).repeat((2, 1, 1))
    atoms.symbols[::3] = "Au"
    atoms.rattle(0.1, seed=0)
    return atoms


def test_hessian_vector_product_matches_force_differences():
    model = student()
    atoms = frame()
    inputs = model_input_from_atoms([atoms], model.elements, SPECS)
    directions = random_directions(len(atoms), 2, seed=3)
    products = hessian_vector_product(model, inputs, directions).detach().numpy()
    step = 1e-5
    for direction, product in zip(directions.numpy(), products, strict=True):
        forces = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions = atoms.positions + sign * step * direction
            moved_inputs = model_input_from_atoms([moved], model.elements, SPECS)
            forces.append(evaluate(model, moved_inputs).forces.detach().numpy())
        # H v = d(∇E)/dε along v = -(F(x + εv) - F(x - εv)) / 2ε
        expected = -(forces[0] - forces[1]) / (2 * step)
        np.testing.assert_allclose(product, expected, atol=1e-6 * max(1, np.abs(expected).max()))


def test_directions_shape_is_checked():
    model = student()
    inputs = model_input_from_atoms([frame()], model.elements, SPECS)
    with pytest.raises(ValueError, match=r"directions must be \[num_directions, 8, 3\]"):
        hessian_vector_product(model, inputs, torch.zeros(1, 3, 3))


def _gradient(model, teacher, inputs, config):
    model.zero_grad()
    distillation_terms(model, teacher, inputs, config).total.backward()
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
            for p in model.parameters()
        ]
    )


@pytest.mark.parametrize(
    "config",
    [DistillLossConfig(atomic_energy=1.0), DistillLossConfig(hessian=1.0, hessian_directions=2)],
    ids=["atomic_energy", "hessian"],
)
def test_terms_vanish_on_the_teacher_and_a_step_reduces_them(config):
    model = student(seed=1)
    inputs = model_input_from_atoms([frame()], model.elements, SPECS)
    # A student identical to its teacher: zero term, zero gradient.
    same = distillation_terms(model, copy.deepcopy(model), inputs, config)
    assert float(same.total.detach()) == pytest.approx(0.0, abs=1e-24)
    assert float(_gradient(model, copy.deepcopy(model), inputs, config).abs().max()) < 1e-12
    # Another teacher: a non-zero gradient, and a small step against it lowers the term.
    teacher = student(seed=7)
    before = float(distillation_terms(model, teacher, inputs, config).total.detach())
    gradient = _gradient(model, teacher, inputs, config)
    assert before > 0 and float(gradient.norm()) > 0
    with torch.no_grad():
        offset = 0
        for parameter in model.parameters():
            size = parameter.numel()
            parameter -= (
                1e-3 / float(gradient.norm()) * gradient[offset : offset + size].view_as(parameter)
            )
            offset += size
    after = float(distillation_terms(model, teacher, inputs, config).total.detach())
    assert after < before


def test_hessian_gradient_is_the_derivative_of_the_term():
    # Directional derivative of the Hessian term along a random parameter direction equals the
    # gradient's projection: the third backward gives the right gradient, not just a non-zero one.
    model = student(seed=1)
    teacher = student(seed=5)
    inputs = model_input_from_atoms([frame()], model.elements, SPECS)
    config = DistillLossConfig(hessian=1.0)
    gradient = _gradient(model, teacher, inputs, config)
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(gradient.shape, generator=generator, dtype=gradient.dtype)
    step = 1e-6
    values = []
    for sign in (1, -1):
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            offset = 0
            for parameter in shifted.parameters():
                size = parameter.numel()
                parameter += sign * step * direction[offset : offset + size].view_as(parameter)
                offset += size
        values.append(float(distillation_terms(shifted, teacher, inputs, config).total.detach()))
    numeric = (values[0] - values[1]) / (2 * step)
    assert float(gradient @ direction) == pytest.approx(numeric, rel=1e-5)


def test_inactive_config_and_bad_weights():
    assert not DistillLossConfig().active
    with pytest.raises(ValueError, match="non-negative"):
        DistillLossConfig(hessian=-1.0)


def test_distill_trainer_trains_a_dpa2_student_with_the_extra_terms(tmp_path):
    from ase.calculators.emt import EMT

    from lamforge.distill.students import build_student, initialize_model
    from lamforge.distill.trainer import DistillTrainer
    from lamforge.train.frames import batches_from_atoms
    from lamforge.train.stream import InMemoryStream
    from lamforge.train.trainer import TrainerConfig

    atoms = frame()
    atoms.calc = EMT()
    atoms.get_forces()
    model = build_student("dpa2_student", ("Cu", "Au"))
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    batches = batches_from_atoms(
        [atoms], "default", model.elements, specs,
        lambda chunk, elements, block: model_input_from_atoms(chunk, elements, block),
    )  # fmt: skip
    initialize_model(model, {"default": batches})
    before = [p.detach().clone() for p in model.parameters()]
    config = DistillLossConfig(atomic_energy=1.0, hessian=0.1)
    with pytest.raises(ValueError, match="need a teacher"):
        DistillTrainer(model, TrainerConfig(steps=2), InMemoryStream({"default": batches}),
                       tmp_path / "no_teacher", distill_loss=config)  # fmt: skip
    trainer = DistillTrainer(
        model, TrainerConfig(steps=2, validate_every=0, checkpoint_every=0),
        InMemoryStream({"default": batches}), tmp_path / "run", teacher=student(seed=3),
        distill_loss=config, progress=False,
    )  # fmt: skip
    loss = trainer.train_step(batches[0])
    assert torch.isfinite(loss.total) and trainer.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_distill_step_gradient_is_that_of_the_loss_plus_the_extra_terms(tmp_path):
    """The Trainer's ``extra_loss`` hook: one step's gradient = ∇(energy/force loss + terms)."""
    from ase.calculators.emt import EMT

    from lamforge.distill.trainer import DistillTrainer
    from lamforge.train.frames import batches_from_atoms
    from lamforge.train.loss import EnergyLoss, EnergyPrediction
    from lamforge.train.stream import InMemoryStream
    from lamforge.train.trainer import OptimizerConfig, TrainerConfig

    frames = [frame(), frame()]
    frames[1].rattle(0.05, seed=4)
    for atoms in frames:
        atoms.calc = EMT()
        atoms.get_forces()
    model = student(seed=1).double()
    batches = batches_from_atoms(
        frames, "default", model.elements, SPECS,
        lambda chunk, elements, block: model_input_from_atoms(chunk, elements, block),
    )  # fmt: skip
    batch = batches[0]
    config = DistillLossConfig(atomic_energy=1.0, hessian=0.1)
    teacher = student(seed=3).double()
    trainer_config = TrainerConfig(
        steps=2, validate_every=0, checkpoint_every=0,
        optimizer=OptimizerConfig(gradient_max_norm=None),
    )  # fmt: skip
    trainer = DistillTrainer(
        model, trainer_config, InMemoryStream({"default": batches}), tmp_path / "run",
        teacher=teacher, distill_loss=config, progress=False,
    )  # fmt: skip
    trainer.optimizer.step = lambda: None  # keep the weights: compare the gradients only
    reported = trainer.train_step(batch)
    by_trainer = [p.grad.clone() for p in model.parameters()]

    model.zero_grad(set_to_none=True)
    output = evaluate(model, batch.inputs, "default", forces=True, create_graph=True)
    prediction = EnergyPrediction(energy=output.energy, forces=output.forces, virial=None)
    loss = EnergyLoss(trainer_config.loss)(prediction, batch.labels, trainer.schedule.factor(0))
    extra = distillation_terms(model, teacher, batch.inputs, config, step=0)
    (loss.total + extra.total).backward()
    for ours, reference in zip(by_trainer, model.parameters(), strict=True):
        torch.testing.assert_close(ours, reference.grad, rtol=1e-10, atol=1e-14)
    expected = float((loss.total + extra.total).detach())
    assert float(reported.total) == pytest.approx(expected, rel=1e-10)
