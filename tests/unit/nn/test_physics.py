"""Physics checks of tiny DPA-2 models on periodic, slab and molecule frames (float64)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ase import Atoms
from nn_helpers import build_model, molecule_frame, periodic_frame, slab_frame, tiny_config

from lamforge.nn import DPA2Model
from lamforge.testing import physics

STRUCTURES = {"periodic": periodic_frame, "slab": slab_frame, "molecule": molecule_frame}
VARIANTS = [
    "new",
    "old_strip",
    "incr_direct",
    "attention_free",
    "attention_free_old",
    "attention_free_direct",
]


@pytest.fixture(scope="module", params=VARIANTS)
def model64(request) -> DPA2Model:
    return build_model(request.param)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_forces_match_finite_differences(model64, structure):
    evaluate = physics.dpa2_evaluator(model64)
    physics.check_forces_finite_difference(evaluate, STRUCTURES[structure](), tolerance=1e-6)


@pytest.mark.parametrize("structure", ["periodic", "slab", "molecule"])
def test_virial_matches_strain_derivative(model64, structure):
    evaluate = physics.dpa2_evaluator(model64)
    physics.check_virial_finite_difference(evaluate, STRUCTURES[structure](), tolerance=1e-6)


@pytest.mark.parametrize("structure", list(STRUCTURES))
def test_invariance(model64, structure):
    evaluate = physics.dpa2_evaluator(model64)
    physics.check_invariance(evaluate, STRUCTURES[structure](), seed=7, tolerance=1e-10)


def test_supercell_extensivity(model64):
    evaluate = physics.dpa2_evaluator(model64)
    physics.check_supercell_extensivity(evaluate, periodic_frame(), tolerance=1e-10)


def test_slab_supercell_extensivity(model64):
    evaluate = physics.dpa2_evaluator(model64)
    physics.check_supercell_extensivity(evaluate, slab_frame(), repeat=(2, 2, 1), tolerance=1e-10)


def test_batch_equals_one_frame_at_a_time(model64):
    evaluate = physics.dpa2_evaluator(model64)
    frames = [periodic_frame(), molecule_frame(), slab_frame(), periodic_frame(seed=5)]
    physics.check_batch_consistency(evaluate, frames, tolerance=1e-11)


def _trimer(y: float = 1.0) -> Atoms:
    # A at the origin, B off the x axis, C moves along x: A-C and B-C cross cutoffs at
    # different positions.
    return Atoms("COH", positions=[[0.0, 0.0, 0.0], [0.0, y, 0.0], [0.0, 0.0, 0.0]])


# repinit 4.0 (rs 0.5), three-body 3.0 (rs 2.0), repformer 3.0 (rs 2.5).
CROSSINGS = {
    "repinit A-C": 4.0,
    "repinit B-C": float(np.sqrt(15.0)),
    "repformer/three-body A-C": 3.0,
    "repformer/three-body B-C": float(np.sqrt(8.0)),
    "repformer smooth start A-C": 2.5,
    "three-body smooth start A-C": 2.0,
}


@pytest.mark.parametrize("variant", ["new", "old_strip", "attention_free"])
@pytest.mark.parametrize("crossing", list(CROSSINGS))
def test_smooth_across_each_cutoff(variant, crossing):
    model = build_model(variant)
    evaluate = physics.dpa2_evaluator(model)
    physics.check_cutoff_smoothness(
        evaluate, _trimer(), 2, np.array([1.0, 0.0, 0.0]), CROSSINGS[crossing], tolerance=1e-7
    )


def test_smoothness_check_catches_hard_attention():
    # With smooth=False the g1 attention gives an entering neighbour a finite weight at once, so
    # the check must fail: it can tell a smooth model from a non-smooth one.
    config = tiny_config("new")
    config = dataclasses.replace(
        config, descriptor=dataclasses.replace(config.descriptor, smooth=False)
    )
    evaluate = physics.dpa2_evaluator(DPA2Model(config))
    with pytest.raises(AssertionError, match="smoothness"):
        physics.check_cutoff_smoothness(
            evaluate, _trimer(), 2, np.array([1.0, 0.0, 0.0]), 3.0, tolerance=1e-7
        )
