"""Back-propagating a batch chunk by chunk gives the gradients and loss of one whole backward."""

import dataclasses

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from lamforge.data.demo import label
from lamforge.nn.model import DPA2Model
from lamforge.testing.reference_neighbors import model_input
from lamforge.testing.tiny_models import TINY_SPECS, tiny_dpa2_config
from lamforge.train.frames import labels_from_atoms
from lamforge.train.loss import EnergyLoss, LabelCounts, LossConfig, Prefactor
from lamforge.train.step import EnergyForceModule, backward_in_chunks
from lamforge.train.stream import TrainingBatch

ELEMENTS = ("Cu", "C", "O", "H")
OFFSETS = dict.fromkeys(ELEMENTS, -1.0)


def mixed_frames():
    """Periodic frames of 4, 8 and 16 atoms (with stress) and a molecule (without)."""
    frames = []
    for seed, repeat in enumerate([(1, 1, 1), (2, 1, 1), (2, 2, 1), (1, 1, 1)]):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeat)
        atoms.rattle(0.1, seed=seed)
        frames.append(label(atoms, OFFSETS))
    frames.insert(2, label(molecule("CH3CH2OH"), OFFSETS))
    return frames


def make_batch(frames, drop_energy_of=None):
    labels = labels_from_atoms(frames)
    if drop_energy_of is not None:
        labels.energy_mask[drop_energy_of] = False
    inputs = model_input(frames, ELEMENTS, TINY_SPECS)
    return TrainingBatch(task="default", inputs=inputs, labels=labels)


LOSSES = {
    "mse": LossConfig(
        energy=Prefactor(start=0.5, limit=1.0),
        forces=Prefactor(start=100.0, limit=1.0),
        virial=Prefactor(start=0.2, limit=1.0),
    ),
    "huber_intensive": LossConfig(
        energy=Prefactor(start=0.5, limit=1.0),
        forces=Prefactor(start=100.0, limit=1.0),
        virial=Prefactor(start=0.2, limit=1.0),
        function="huber",
        huber_delta=0.05,
        intensive=True,
    ),
    "no_virial": LossConfig(),
}


def gradients(model, batch, config, chunk):
    model.zero_grad(set_to_none=True)
    module = EnergyForceModule(model).train()
    wants_virial = config.virial.active and batch.labels.virial is not None
    loss = backward_in_chunks(
        module, batch, EnergyLoss(config), 0.7, virial=wants_virial, max_atoms_per_chunk=chunk
    )
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss, grads


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
@pytest.mark.parametrize("chunk", [1, 12, 20])
def test_chunked_gradients_equal_whole_batch(loss_name, chunk):
    frames = mixed_frames()
    batch = make_batch(frames, drop_energy_of=1)
    assert batch.labels.virial_mask is not None
    assert not bool(batch.labels.virial_mask.all()) and bool(batch.labels.virial_mask.any())
    model = DPA2Model(tiny_dpa2_config(ELEMENTS))
    config = LOSSES[loss_name]
    whole_loss, whole = gradients(model, batch, config, None)
    chunk_loss, chunked = gradients(model, batch, config, chunk)
    assert set(whole) == set(chunked) and whole
    for name, value in whole.items():
        scale = float(value.abs().max()) + 1e-300
        np.testing.assert_allclose(
            chunked[name].numpy(), value.numpy(), rtol=0, atol=1e-12 * max(scale, 1.0),
            err_msg=name,
        )  # fmt: skip
    assert float(chunk_loss.total) == pytest.approx(float(whole_loss.total), rel=1e-13)
    for field in ("energy_rmse_per_atom", "forces_rmse", "virial_rmse_per_atom"):
        mine, theirs = getattr(chunk_loss, field), getattr(whole_loss, field)
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert mine == pytest.approx(theirs, rel=1e-13)


def test_batch_without_virial_labels_and_a_chunk_without_any_label():
    frames = [label(molecule("H2O"), OFFSETS), label(molecule("CH3CH2OH"), OFFSETS)]
    batch = make_batch(frames)
    assert batch.labels.virial is None
    # The water frame has neither energy nor force labels: its chunk contributes zero.
    batch.labels.energy_mask[0] = False
    batch.labels.forces_mask[:3] = False
    model = DPA2Model(tiny_dpa2_config(ELEMENTS))
    config = LOSSES["mse"]
    whole_loss, whole = gradients(model, batch, config, None)
    chunk_loss, chunked = gradients(model, batch, config, 1)
    for name, value in whole.items():
        np.testing.assert_allclose(chunked[name].numpy(), value.numpy(), rtol=1e-11, atol=1e-13)
    assert float(chunk_loss.total) == pytest.approx(float(whole_loss.total), rel=1e-13)


def test_label_parts_sum_to_the_batch():
    batch = make_batch(mixed_frames(), drop_energy_of=0)
    labels = batch.labels
    counts = LabelCounts.of(labels)
    assert counts == LabelCounts(energy=4, forces=labels.forces.shape[0], virial=4)
    parts = [labels.frames(0, 2), labels.frames(2, 5)]
    assert torch.equal(torch.cat([p.forces for p in parts]), labels.forces)
    assert torch.equal(torch.cat([p.num_atoms for p in parts]), labels.num_atoms)


def test_trainer_config_rejects_empty_chunks():
    from lamforge.train.trainer import TrainerConfig

    with pytest.raises(ValueError, match="max_atoms_per_chunk"):
        dataclasses.replace(TrainerConfig(), max_atoms_per_chunk=0)
