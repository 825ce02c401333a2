"""The energy/force/virial loss: values, masks and prefactor schedule."""

import pytest
import torch

from lamforge.train.loss import EnergyLabels, EnergyLoss, EnergyPrediction, LossConfig, Prefactor


def _batch():
    labels = EnergyLabels(
        energy=torch.tensor([1.0, 2.0]),
        energy_mask=torch.tensor([True, False]),
        forces=torch.zeros(5, 3),
        forces_mask=torch.tensor([True, True, False, True, True]),
        num_atoms=torch.tensor([2, 3]),
        virial=torch.zeros(2, 3, 3),
        virial_mask=torch.tensor([False, True]),
    )
    prediction = EnergyPrediction(
        energy=torch.tensor([1.4, 100.0]),
        forces=torch.ones(5, 3) * torch.tensor([1.0, 2.0, 50.0, 1.0, 1.0]).unsqueeze(-1),
        virial=torch.full((2, 3, 3), 3.0),
    )
    return prediction, labels


def test_prefactor_follows_learning_rate():
    prefactor = Prefactor(start=1000.0, limit=1.0)
    assert prefactor.at(1.0) == 1000.0
    assert prefactor.at(0.0) == 1.0
    assert prefactor.at(0.5) == pytest.approx(500.5)
    assert not Prefactor(start=0.0, limit=1.0).active


def test_mse_value_with_masks():
    prediction, labels = _batch()
    config = LossConfig(
        energy=Prefactor(start=2.0, limit=2.0),
        forces=Prefactor(start=3.0, limit=3.0),
        virial=Prefactor(start=5.0, limit=5.0),
    )
    value = EnergyLoss(config)(prediction, labels, lr_factor=0.3)
    energy_term = 0.4**2 / 2  # frame 0 only, divided by N^1
    forces_term = (3 * 1 + 3 * 4 + 3 * 1 + 3 * 1) / 12  # atom 2 masked
    virial_term = 9.0 / 3  # frame 1 only
    expected = 2 * energy_term + 3 * forces_term + 5 * virial_term
    assert float(value.total) == pytest.approx(expected)
    assert value.energy_rmse_per_atom == pytest.approx(0.2)
    assert value.forces_rmse == pytest.approx(forces_term**0.5)
    assert value.virial_rmse_per_atom == pytest.approx(1.0)


def test_missing_labels_do_not_count_and_inactive_terms_are_off():
    prediction, labels = _batch()
    labels.energy_mask[:] = False
    value = EnergyLoss(LossConfig())(prediction, labels, lr_factor=1.0)
    assert value.energy_rmse_per_atom is None
    assert value.virial_rmse_per_atom is None  # default virial prefactors are 0
    assert float(value.total) == pytest.approx(1000.0 * 21 / 12)


def test_intensive_and_huber():
    prediction, labels = _batch()
    only_energy = {"forces": Prefactor(start=0.0, limit=0.0)}
    intensive = LossConfig(energy=Prefactor(start=1.0, limit=1.0), intensive=True, **only_energy)
    assert float(EnergyLoss(intensive)(prediction, labels, 1.0).total) == pytest.approx(0.04)
    huber = LossConfig(
        energy=Prefactor(start=1.0, limit=1.0), function="huber", huber_delta=0.1, **only_energy
    )
    # per-atom residual 0.2 > delta: linear branch delta * (|r| - delta / 2).
    assert float(EnergyLoss(huber)(prediction, labels, 1.0).total) == pytest.approx(0.1 * 0.15)


def test_gradient_flows_to_prediction():
    prediction, labels = _batch()
    prediction.forces.requires_grad_(True)
    EnergyLoss(LossConfig())(prediction, labels, 1.0).total.backward()
    assert prediction.forces.grad[2].abs().sum() == 0  # masked atom gets no gradient
    assert prediction.forces.grad[0].abs().sum() > 0
