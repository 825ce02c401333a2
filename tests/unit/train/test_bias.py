"""Per-element energy bias by least squares."""

import numpy as np
import pytest

from lamforge.train.bias import element_counts, fit_energy_bias


def test_recovers_exact_biases():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 10, size=(50, 3)).astype(float)
    truth = np.array([-3.0, 1.5, -0.25])
    fit = fit_energy_bias(counts, counts @ truth)
    np.testing.assert_allclose(fit.bias, truth, atol=1e-10)
    assert fit.residual_rmse_per_atom < 1e-10


def test_residual_rmse_per_atom_and_change_mode():
    rng = np.random.default_rng(1)
    counts = rng.integers(1, 10, size=(200, 2)).astype(float)
    truth = np.array([-2.0, 0.7])
    noise = rng.normal(scale=0.05, size=200) * counts.sum(axis=1)
    energies = counts @ truth + noise
    fit = fit_energy_bias(counts, energies)
    np.testing.assert_allclose(fit.bias, truth, atol=0.02)
    assert fit.residual_rmse_per_atom == pytest.approx(0.05, rel=0.2)
    # Change mode: fitting the residual of a model that already has `truth` gives the shift.
    shift = fit_energy_bias(counts, energies - counts @ (truth - 1.0))
    np.testing.assert_allclose(shift.bias, [1.0, 1.0], atol=0.02)


def test_missing_element_gets_zero_and_preset_is_kept():
    counts = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 1.0], [2.0, 0.0, 2.0]])
    energies = counts @ np.array([1.0, 9.0, -1.0])
    fit = fit_energy_bias(counts, energies)
    np.testing.assert_allclose(fit.bias, [1.0, 0.0, -1.0], atol=1e-10)
    fit = fit_energy_bias(counts, energies, preset={0: 1.0})
    np.testing.assert_allclose(fit.bias, [1.0, 0.0, -1.0], atol=1e-10)


def test_element_counts():
    types = np.array([0, 1, 1, 2, 0])
    offsets = np.array([0, 3, 5])
    np.testing.assert_array_equal(element_counts(types, offsets, 3), [[1, 2, 0], [1, 0, 1]])


def test_bad_input():
    with pytest.raises(ValueError, match="zero frames"):
        fit_energy_bias(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="counts must be"):
        fit_energy_bias(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="finite"):
        fit_energy_bias(np.ones((2, 1)), np.array([1.0, np.nan]))
