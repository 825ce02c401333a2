"""Tiny models, structures and the eager reference for the export and deploy tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from lamforge.nn import DescriptorConfig, DPA2Model, FittingConfig, ModelConfig
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.config import RepformerConfig, RepinitConfig
from lamforge.nn.forces import evaluate
from lamforge.nn.se_e2_a import SeAConfig, SeAModel, compute_se_a_statistics
from lamforge.nn.statistics import compute_statistics

ELEMENTS = ("H", "C", "O")

# Every optional DPA-2 block and update on: three-body, all repformer terms with h2 and gated
# attention, residual updates; non-zero repinit mean (empty slots then carry a type).
RICH_DESCRIPTOR = DescriptorConfig(
    repinit=RepinitConfig(
        cutoff=4.0, cutoff_smooth=0.5, max_neighbors=40, neurons=(4, 8), axis_neurons=4,
        type_embedding_dim=4, use_three_body=True, three_body_cutoff=3.0,
        three_body_cutoff_smooth=2.0, three_body_max_neighbors=20, three_body_neurons=(2, 4),
        set_mean_zero=False,
    ),
    repformer=RepformerConfig(
        cutoff=3.0, cutoff_smooth=2.5, max_neighbors=20, num_layers=2, g1_dim=8, g2_dim=4,
        axis_neurons=2, attn1_hidden=4, attn1_heads=2, attn2_hidden=4, attn2_heads=2,
        attn2_has_gate=True, update_h2=True, update_style="res_residual", update_residual=0.1,
        set_mean_zero=False,
    ),
)  # fmt: skip

# The paper-era variant: strip type input, non-smooth attention, old conv/MLP, 1/N normalisation.
OLD_DESCRIPTOR = dataclasses.replace(
    RICH_DESCRIPTOR,
    repinit=dataclasses.replace(
        RICH_DESCRIPTOR.repinit, use_three_body=False, type_input_mode="strip"
    ),
    repformer=dataclasses.replace(
        RICH_DESCRIPTOR.repformer,
        update_style="res_avg",
        use_sqrt_nnei=False,
        g1_out_conv=False,
        g1_out_mlp=False,
        direct_dist=True,
    ),
    smooth=False,
    add_tebd_to_repinit_out=True,
)


def periodic_frame(seed: int = 0, num_atoms: int = 8, length: float = 4.5) -> Atoms:
    """Random atoms (at least 0.9 Å apart) in a small triclinic cell: images matter at 4 Å."""
    rng = np.random.default_rng(seed)
    cell = np.array([[length, 0.0, 0.0], [0.6, length, 0.0], [0.3, -0.4, length]])
    atoms = Atoms(cell=cell, pbc=True)
    while len(atoms) < num_atoms:
        candidate = Atoms(ELEMENTS[len(atoms) % 3], positions=[rng.uniform(0, 1, 3) @ cell])
        trial = atoms + candidate
        if len(atoms) == 0 or trial.get_distances(-1, range(len(atoms)), mic=True).min() > 0.9:
            atoms = trial
    return atoms


def slab_frame() -> Atoms:
    atoms = periodic_frame(1, num_atoms=6, length=4.2)
    atoms.pbc = (True, True, False)
    return atoms


def molecule_frame() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    return atoms


def sample_frames() -> list[Atoms]:
    return [periodic_frame(), slab_frame(), molecule_frame()]


def build_dpa2(
    descriptor: DescriptorConfig = RICH_DESCRIPTOR,
    heads: tuple[str, ...] = ("default",),
    zero_isolated_atoms: bool = False,
) -> DPA2Model:
    """A tiny DPA-2 with statistics from the sample structures and a different bias per head."""
    config = ModelConfig(
        elements=ELEMENTS,
        descriptor=descriptor,
        heads={
            name: FittingConfig(neurons=(8, 8), zero_isolated_atoms=zero_isolated_atoms)
            for name in heads
        },
    )
    model = DPA2Model(config)
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    compute_statistics(model, [model_input_from_atoms(sample_frames(), ELEMENTS, specs)])
    for shift, head in enumerate(model.heads.values()):
        bias = torch.tensor([-13.6, -1030.0, -2040.0], dtype=torch.float64) + shift
        head.energy_bias.copy_(bias)
    return model


def build_se_a() -> SeAModel:
    """A tiny se_e2_a student with one net per (centre, neighbour) element pair."""
    model = SeAModel(
        SeAConfig(
            elements=ELEMENTS,
            cutoff=4.0,
            cutoff_smooth=1.0,
            max_neighbors=60,
            neurons=(4, 8),
            axis_neurons=4,
            type_embedding_dim=3,
            type_one_side=False,
            heads={"default": FittingConfig(neurons=(8, 8))},
        )
    )
    inputs = model_input_from_atoms(sample_frames(), ELEMENTS, [(4.0, 60)])
    compute_se_a_statistics(model, [inputs])
    return model


def eager(model, frames: list[Atoms], head: str | None = None) -> dict[str, np.ndarray]:
    """The source model's predictions through lamforge's own evaluation."""
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    inputs = model_input_from_atoms(frames, model.elements, specs, dtype=model.dtype)
    output = evaluate(model, inputs, head, atomic_virial=True)
    return {
        name: getattr(output, name).detach().numpy()
        for name in ("energy", "atomic_energies", "forces", "virial", "atomic_virial")
    }


def assert_matches(deployed, reference: dict[str, np.ndarray], energy_rtol: float, atol: float):
    """Deployed outputs equal the eager ones: energies relatively, derivatives absolutely."""
    np.testing.assert_allclose(deployed.energy.numpy(), reference["energy"], rtol=energy_rtol)
    np.testing.assert_allclose(
        deployed.atomic_energies.numpy(), reference["atomic_energies"], rtol=energy_rtol
    )
    for name in ("forces", "virial", "atomic_virial"):
        np.testing.assert_allclose(
            getattr(deployed, name).numpy(), reference[name], rtol=0, atol=atol, err_msg=name
        )
