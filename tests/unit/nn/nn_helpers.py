"""Tiny DPA-2 configurations and small ASE structures for the model's unit tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from lamforge.nn import (
    DescriptorConfig,
    DPA2Model,
    FittingConfig,
    ModelConfig,
    RepformerConfig,
    RepinitConfig,
    evaluate,
)
from lamforge.nn.statistics import compute_statistics
from lamforge.testing.reference_neighbors import model_input

ELEMENTS = ("H", "C", "O")

TINY_REPINIT = RepinitConfig(
    cutoff=4.0,
    cutoff_smooth=0.5,
    max_neighbors=40,
    neurons=(4, 8),
    axis_neurons=4,
    type_embedding_dim=4,
    use_three_body=True,
    three_body_cutoff=3.0,
    three_body_cutoff_smooth=2.0,
    three_body_max_neighbors=20,
    three_body_neurons=(2, 4),
)

# Every update term on, new style (deepmd-kit's shipped examples, all options switched on).
TINY_NEW = RepformerConfig(
    cutoff=3.0,
    cutoff_smooth=2.5,
    max_neighbors=20,
    num_layers=2,
    g1_dim=8,
    g2_dim=4,
    axis_neurons=2,
    attn1_hidden=4,
    attn1_heads=2,
    attn2_hidden=4,
    attn2_heads=2,
    attn2_has_gate=True,
    update_g1_has_attn=True,
    update_g2_has_g1g1=True,
    update_g2_has_attn=True,
    update_h2=True,
    update_style="res_residual",
    update_residual=0.1,
)

# Paper-era style: old conv and MLP, 1/N normalisation, res_avg, no three-body, strip mode.
TINY_OLD = dataclasses.replace(
    TINY_NEW,
    update_style="res_avg",
    use_sqrt_nnei=False,
    g1_out_conv=False,
    g1_out_mlp=False,
)

# No attention (deepmd-kit's small example, plus g1g1): the repformer runs on its real pairs only
# (the ragged layout) where the Rust reductions apply.
TINY_ATTENTION_FREE = dataclasses.replace(
    TINY_NEW, update_g1_has_attn=False, update_g2_has_attn=False, update_h2=False
)

VARIANTS = {
    "new": DescriptorConfig(repinit=TINY_REPINIT, repformer=TINY_NEW),
    "old_strip": DescriptorConfig(
        repinit=dataclasses.replace(TINY_REPINIT, use_three_body=False, type_input_mode="strip"),
        repformer=TINY_OLD,
        add_tebd_to_repinit_out=True,
    ),
    "incr_direct": DescriptorConfig(
        repinit=dataclasses.replace(TINY_REPINIT, type_input_mode="strip", resnet_dt=True),
        repformer=dataclasses.replace(TINY_NEW, update_style="res_incr", direct_dist=True),
        concat_output_tebd=False,
    ),
    "attention_free": DescriptorConfig(repinit=TINY_REPINIT, repformer=TINY_ATTENTION_FREE),
    "attention_free_direct": DescriptorConfig(
        repinit=dataclasses.replace(TINY_REPINIT, type_input_mode="strip"),
        repformer=dataclasses.replace(
            TINY_ATTENTION_FREE, update_style="res_incr", direct_dist=True
        ),
    ),
    "attention_free_old": DescriptorConfig(
        repinit=TINY_REPINIT,
        repformer=dataclasses.replace(
            TINY_OLD, update_g1_has_attn=False, update_g2_has_attn=False, update_h2=False
        ),
    ),
}


def tiny_config(variant: str = "new", precision: str = "float64", **model_fields) -> ModelConfig:
    return ModelConfig(
        elements=ELEMENTS,
        descriptor=VARIANTS[variant],
        heads={"default": FittingConfig(neurons=(8, 8), resnet_dt=True)},
        precision=precision,
        **model_fields,
    )


def periodic_frame(seed: int = 0, num_atoms: int = 8, length: float = 4.5) -> Atoms:
    """Random atoms (min distance 0.9 Å) in a small triclinic cell: images matter at 4 Å."""
    rng = np.random.default_rng(seed)
    cell = np.array([[length, 0.0, 0.0], [0.6, length, 0.0], [0.3, -0.4, length]])
    positions: list[np.ndarray] = []
    while len(positions) < num_atoms:
        candidate = rng.uniform(0, 1, 3) @ cell
        atoms = Atoms(
            "X" * (len(positions) + 1), positions=[*positions, candidate], cell=cell, pbc=True
        )
        if (
            len(positions) == 0
            or atoms.get_distances(-1, range(len(positions)), mic=True).min() > 0.9
        ):
            positions.append(candidate)
    symbols = [ELEMENTS[k % 3] for k in range(num_atoms)]
    return Atoms(symbols, positions=positions, cell=cell, pbc=True)


def slab_frame(seed: int = 1) -> Atoms:
    atoms = periodic_frame(seed, num_atoms=6, length=4.2)
    atoms.pbc = (True, True, False)
    return atoms


def molecule_frame() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.fixture(scope="module")
def frames() -> dict[str, Atoms]:
    return {"periodic": periodic_frame(), "slab": slab_frame(), "molecule": molecule_frame()}


def build_model(variant: str = "new", precision: str = "float64", **fields) -> DPA2Model:
    """A tiny model with statistics from the test structures and a non-trivial energy bias."""
    torch.manual_seed(0)
    model = DPA2Model(tiny_config(variant, "float64", **fields))
    sample = [periodic_frame(), slab_frame(), molecule_frame()]
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    compute_statistics(model, [model_input(sample, ELEMENTS, specs)])
    for head in model.heads.values():
        head.energy_bias.copy_(torch.tensor([-13.6, -1030.0, -2040.0], dtype=torch.float64))
    if precision == "float64":
        return model
    single = DPA2Model(tiny_config(variant, precision, **fields))
    single.load_state_dict(model.state_dict())
    return single


def force_loss_runs(model, inputs, use_fused) -> list[tuple[object, dict[str, torch.Tensor]]]:
    """(output, weight gradients of a force loss) with a fused path switched on, then off.

    ``use_fused(flag)`` switches the path under test; the loss is the sum of squared energies
    and forces, so the gradients are those of force training (a derivative of a derivative).
    """
    runs = []
    for fused in (True, False):
        use_fused(fused)
        model.zero_grad(set_to_none=True)
        out = evaluate(model, inputs, create_graph=True)
        (out.energy.square().sum() + out.forces.square().sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        runs.append((out, grads))
    return runs


def assert_runs_agree(runs, dtype: torch.dtype) -> None:
    """The two runs of :func:`force_loss_runs` agree to rounding (float64) or float32 level."""
    (out, grads), (expected, expected_grads) = runs
    tight = dtype == torch.float64
    atol = 1e-11 if tight else 1e-4
    assert torch.allclose(out.energy, expected.energy, rtol=1e-13 if tight else 1e-5, atol=0)
    assert torch.allclose(out.forces, expected.forces, rtol=0, atol=atol)
    assert torch.allclose(out.virial, expected.virial, rtol=0, atol=atol)
    assert grads.keys() == expected_grads.keys()
    for name, value in expected_grads.items():
        assert torch.allclose(
            grads[name], value, rtol=1e-10 if tight else 1e-3, atol=1e-12 if tight else 1e-4
        ), name


def plain_contract(left, z, x):
    """``left @ (tanh(z) + S(x))`` in plain PyTorch operations: the reference of
    :func:`lamforge.nn.contraction.tanh_contract` (S: nothing, the identity or [x, x])."""
    out = left @ torch.tanh(z)
    if x is None:
        return out
    skip = left @ x
    return out + (skip if skip.shape[-1] == out.shape[-1] else torch.cat([skip, skip], dim=-1))
