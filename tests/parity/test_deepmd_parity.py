"""lamforge vs deepmd-kit on the same DPA-2 weights: energy, forces and virial in float64.

The checkpoints come from deepmd-kit's own trainer (``conftest.py``), are loaded with
``lamforge.interop.deepmd.load_checkpoint`` and evaluated with dense neighbour lists from the
reference builder; deepmd-kit's predictions come from ``deepmd.infer.DeepPot`` on the same
checkpoint and frames. Water frames are periodic 192-atom boxes, molecules are non-periodic and
MPtrj frames are small cells with many periodic images.
"""

from __future__ import annotations

import deepmd_reference  # tests/parity is on sys.path (conftest.py)
import numpy as np
import pytest
import torch
from ase import Atoms

from lamforge.interop.deepmd import load_checkpoint
from lamforge.nn import evaluate
from lamforge.testing.reference_neighbors import model_input

# The first test of a session may train the reference models (minutes on a busy 2-core machine).
pytestmark = pytest.mark.timeout(1200)

ENERGY_RELATIVE_TOLERANCE = 1e-10
FORCE_TOLERANCE = 1e-8  # eV/Å
VIRIAL_TOLERANCE = 1e-8  # eV, relative to max(1, |W|)
ATOM_ENERGY_TOLERANCE = 1e-9  # eV

# (case, deepmd-kit head); cases are defined in deepmd_cases.reference_cases.
PARITY_CASES = [
    ("small", "Default"),
    ("paper", "Default"),
    ("options", "Default"),
    ("mptrj", "Default"),
    ("multitask", "water"),
    ("multitask", "molecules"),
    pytest.param("medium", "Default", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
    pytest.param("paper12", "Default", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]


# The compressed water box (neighbour caps active) costs most to evaluate; check it on these.
DENSE_WATER_CASES = {"small", "medium", "paper12"}


def to_atoms(frame: deepmd_reference.Frame) -> Atoms:
    if frame.cell is None:
        return Atoms(symbols=frame.symbols, positions=frame.positions, pbc=False)
    return Atoms(symbols=frame.symbols, positions=frame.positions, cell=frame.cell, pbc=True)


def lamforge_predictions(model, head, frames):
    """Energy, forces, virial and atomic energies of a batch of all frames at once."""
    atoms = [to_atoms(frame) for frame in frames]
    # One list with the largest (repinit) cutoff and cap: the model derives the repformer and
    # three-body lists from it by truncation, as deepmd-kit does from its sorted list.
    spec = model.descriptor.neighbor_specs()["repinit"]
    inputs = model_input(atoms, model.elements, specs=[spec], dtype=torch.float64)
    output = evaluate(model, inputs, head=head)
    split = np.cumsum([len(a) for a in atoms])[:-1]
    return (
        output.energy.detach().numpy(),
        np.split(output.forces.detach().numpy(), split),
        output.virial.detach().numpy(),
        np.split(output.atomic_energies.detach().numpy(), split),
    )


@pytest.mark.parametrize(("case", "head"), PARITY_CASES)
def test_matches_deepmd_inference(deepmd_models, shared_data, case, head):
    directory = deepmd_models.case_directory(case)
    our_head = None if head == "Default" else head
    model = load_checkpoint(directory / "model.ckpt-2.pt", head=our_head)
    assert model.config.precision == "float64"
    type_map = tuple(model.elements)
    evaluation_sets = deepmd_reference.evaluation_sets(type_map, shared_data)
    if case not in DENSE_WATER_CASES:
        evaluation_sets = [name for name in evaluation_sets if name != "water_dense"]
    assert evaluation_sets, f"case {case} has no evaluation frames"
    for set_name in evaluation_sets:
        frames = deepmd_reference.evaluation_frames(shared_data, set_name)
        reference = np.load(deepmd_reference.reference_path(directory, head, set_name))
        energy, forces, virial, atom_energy = lamforge_predictions(model, our_head, frames)
        for i in range(len(frames)):
            where = f"{case}/{head}/{set_name} frame {i}"
            expected_energy = float(reference[f"energy_{i}"])
            relative = abs(energy[i] - expected_energy) / abs(expected_energy)
            assert relative <= ENERGY_RELATIVE_TOLERANCE, (where, energy[i], expected_energy)
            force_error = np.abs(forces[i] - reference[f"forces_{i}"]).max()
            assert force_error <= FORCE_TOLERANCE, (where, force_error)
            expected_virial = reference[f"virial_{i}"]
            virial_error = np.abs(virial[i] - expected_virial).max()
            scale = max(1.0, np.abs(expected_virial).max())
            assert virial_error <= VIRIAL_TOLERANCE * scale, (where, virial_error)
            atom_error = np.abs(atom_energy[i] - reference[f"atom_energy_{i}"]).max()
            assert atom_error <= ATOM_ENERGY_TOLERANCE, (where, atom_error)
