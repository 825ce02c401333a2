"""Inputs, configs, presets, heads, statistics, energy bias and checkpoints."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from ase.build import molecule
from nn_helpers import (
    ELEMENTS,
    build_model,
    molecule_frame,
    periodic_frame,
    slab_frame,
    tiny_config,
)

from lamforge.nn import (
    PRESETS,
    DPA2Model,
    FittingConfig,
    ModelConfig,
    atom_types_from_numbers,
    evaluate,
)
from lamforge.nn.checkpoint import load_checkpoint, save_checkpoint
from lamforge.nn.env_mat import environment_matrix
from lamforge.nn.fitting import EnergyHead
from lamforge.nn.statistics import environment_statistics, fit_energy_bias
from lamforge.testing import physics
from lamforge.testing.reference_neighbors import dense_neighbors, model_input

# ../shared/dpa2-spec.md §2.3 (ntypes = 2): descriptor, one fitting head, total.
SPEC_PARAMETER_COUNTS = {
    "dpa2_small": (472_938, 149_281, 622_219),
    "dpa2_medium": (867_882, 149_281, 1_017_163),
    "dpa2_large": (1_591_722, 149_281, 1_741_003),
    "dpa2_paper": (4_825_234, 149_281, 4_974_515),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_parameter_counts_match_spec(preset):
    model = DPA2Model(PRESETS[preset](("O", "H")))
    descriptor = sum(p.numel() for p in model.descriptor.parameters())
    head = sum(p.numel() for p in model.heads.parameters())
    assert (descriptor, head, descriptor + head) == SPEC_PARAMETER_COUNTS[preset]


def test_type_embedding_adds_tebd_dim_per_element():
    two = DPA2Model(PRESETS["dpa2_small"](("O", "H")))
    three = DPA2Model(PRESETS["dpa2_small"](("O", "H", "C")))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(three) - count(two) == 8


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_presets_build_in_both_precisions(precision):
    model = DPA2Model(PRESETS["dpa2_small"](("O", "H"), precision=precision))
    assert {p.dtype for p in model.parameters()} == {getattr(torch, precision)}


def test_atom_types_from_numbers_names_unknown_elements():
    assert atom_types_from_numbers([8, 1, 1, 6], ("H", "C", "O")).tolist() == [2, 0, 0, 1]
    with pytest.raises(ValueError, match=r"\['Fe', 'N'\]"):
        atom_types_from_numbers([8, 26, 7], ("H", "C", "O"))


def test_config_round_trip_and_unknown_keys():
    config = tiny_config("old_strip")
    data = json.loads(json.dumps(config.to_dict()))
    assert ModelConfig.from_dict(data) == config
    data["descriptor"]["repformer"]["nlayers"] = 3
    with pytest.raises(ValueError, match=r"descriptor.repformer: unknown key\(s\) \['nlayers'\]"):
        ModelConfig.from_dict(data)


def test_config_rejects_inconsistent_cutoffs():
    config = tiny_config()
    repinit = dataclasses.replace(config.descriptor.repinit, cutoff=2.0)
    with pytest.raises(ValueError, match="repinit cutoff and max_neighbors"):
        dataclasses.replace(
            config, descriptor=dataclasses.replace(config.descriptor, repinit=repinit)
        )


@pytest.mark.parametrize("g1_out_conv", [True, False])
def test_config_rejects_a_g1_mlp_without_inputs(g1_out_conv):
    config = tiny_config()
    options = {"update_g1_has_grrg": False, "update_g1_has_drrd": False, "g1_out_mlp": True}
    repformer = dataclasses.replace(config.descriptor.repformer, g1_out_conv=g1_out_conv, **options)
    descriptor = dataclasses.replace(config.descriptor, repformer=repformer)
    if g1_out_conv or not repformer.update_g1_has_conv:
        with pytest.raises(ValueError, match=r"g1 MLP update \(linear1\) has no input"):
            dataclasses.replace(config, descriptor=descriptor)
    else:  # the conv term feeds the MLP
        model = DPA2Model(dataclasses.replace(config, descriptor=descriptor))
        assert model.descriptor.repformers.layers[0].linear1.weight.shape[0] > 0


def test_derived_neighbor_block_equals_direct_block():
    frames = [periodic_frame(), molecule_frame()]
    derived = model_input(frames, ELEMENTS, [(4.0, 40)]).neighbor_list(3.0, 20)
    direct = model_input(frames, ELEMENTS, [(3.0, 20)]).neighbors[0]
    assert torch.equal(derived.index, direct.index)
    real = direct.index >= 0
    assert torch.equal(derived.shifts[real], direct.shifts[real])


def test_reference_neighbors_convention():
    atoms = periodic_frame()
    index, shifts = dense_neighbors(atoms, 4.0, 60)
    vectors = atoms.positions[index] - atoms.positions[:, None] + shifts @ atoms.cell.array
    lengths = np.where(index >= 0, np.linalg.norm(vectors, axis=-1), 1e9)
    assert np.all(np.diff(lengths, axis=1) >= -1e-12)  # sorted, padding last
    assert np.all(lengths[index >= 0] <= 4.0)
    counts = (index >= 0).sum(axis=1)
    from ase.neighborlist import neighbor_list

    assert np.array_equal(counts, np.bincount(neighbor_list("i", atoms, 4.0), minlength=len(atoms)))


def test_environment_statistics_match_direct_numpy():
    model = DPA2Model(tiny_config())
    frames = [periodic_frame(), slab_frame()]
    inputs = model_input(frames, ELEMENTS, [(4.0, 40), (3.0, 20)])
    stats = environment_statistics(model, [inputs])
    block = inputs.neighbor_list(3.0, 20)
    vectors = model.geometries(inputs)[0]["repformers"].vectors
    raw, _ = environment_matrix(vectors, block.index >= 0, 3.0, 2.5)
    raw = raw.numpy()
    for element in range(3):
        rows = raw[inputs.atom_types.numpy() == element]
        mean, std = stats["repformers"].mean_std(set_mean_zero=False)
        assert mean[element, 0] == pytest.approx(rows[..., 0].mean(), rel=1e-12)
        assert std[element, 0] == pytest.approx(max(rows[..., 0].std(), 1e-2), rel=1e-10)
        assert std[element, 1] == pytest.approx(max(rows[..., 1:].std(), 1e-2), rel=1e-10)
        assert np.all(mean[element, 1:] == 0)


def test_energy_bias_least_squares_recovers_shifts():
    model = build_model("new")
    frames = [periodic_frame(seed) for seed in range(3)] + [molecule_frame(), slab_frame()]
    inputs = model_input(frames, ELEMENTS, [(4.0, 40), (3.0, 20)])
    shifts = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    counts = torch.zeros(len(frames), 3, dtype=torch.float64)
    counts.index_put_(
        (inputs.frame_index, inputs.atom_types),
        torch.ones(inputs.num_atoms, dtype=torch.float64),
        True,
    )
    old_bias = model.head().energy_bias.clone()
    labels = model.energy(inputs).detach() + counts @ shifts
    fit_energy_bias(model, [(inputs, labels)], mode="change")
    assert torch.allclose(model.head().energy_bias, old_bias + shifts, atol=1e-8)
    with pytest.raises(ValueError, match="2 energies for 5 frames"):
        fit_energy_bias(model, [(inputs, labels[:2])])


def test_energy_bias_of_an_underdetermined_sample_stays_near_the_mean_per_atom():
    """Two compositions cannot fix three biases: the fit reproduces their energies exactly and
    leaves the unfixed direction at the sample's mean energy per atom (not at arbitrary values)."""
    model = build_model("new")
    water, methane = molecule("H2O"), molecule("CH4")
    inputs = model_input([water, methane], ELEMENTS, [(4.0, 40), (3.0, 20)])
    counts = torch.tensor([[2.0, 0.0, 1.0], [4.0, 1.0, 0.0]], dtype=torch.float64)  # H C O
    labels = counts @ torch.tensor([-13.0, -1030.0, -2040.0], dtype=torch.float64)
    bias = fit_energy_bias(model, [(inputs, labels)], mode="set")
    assert torch.allclose(counts @ bias, labels, atol=1e-8)
    per_atom = float(labels.sum() / counts.sum())
    null = torch.tensor([1.0, -4.0, -2.0], dtype=torch.float64)  # counts @ null == 0
    assert float((bias - per_atom) @ null) == pytest.approx(0.0, abs=1e-8)


def test_heads_share_the_descriptor_and_differ_by_bias():
    config = dataclasses.replace(
        tiny_config(), heads={"water": FittingConfig(neurons=(8, 8)), "oxides": FittingConfig()}
    )
    model = DPA2Model(config)
    model.heads["oxides"] = EnergyHead(
        FittingConfig(neurons=(8, 8)),
        num_in=model.descriptor.num_out,
        num_elements=3,
        dtype=torch.float64,
    )
    model.heads["oxides"].load_state_dict(model.heads["water"].state_dict())
    model.heads["oxides"].energy_bias += torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    inputs = model_input([molecule_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    water = model.energy(inputs, "water")
    oxides = model.energy(inputs, "oxides")
    # ethanol C2H6O: 6 H, 2 C, 1 O
    assert float((oxides - water).detach()) == pytest.approx(6 * 1.0 + 2 * 2.0 + 3.0, abs=1e-10)
    with pytest.raises(ValueError, match="choose one with head="):
        model.energy(inputs)
    with pytest.raises(KeyError, match="no head 'nope'"):
        model.energy(inputs, "nope")


def test_isolated_atom_energy_equals_bias():
    config = dataclasses.replace(
        tiny_config(), heads={"default": FittingConfig(neurons=(8, 8), zero_isolated_atoms=True)}
    )
    model = DPA2Model(config)
    bias = torch.tensor([-13.6, -1030.0, -2040.0], dtype=torch.float64)
    model.head().energy_bias.copy_(bias)
    evaluator = physics.dpa2_evaluator(model)
    physics.check_isolated_atoms(evaluator, ELEMENTS, bias.tolist(), tolerance=1e-12)
    physics.check_forces_finite_difference(evaluator, molecule_frame(), tolerance=1e-6)
    # deepmd-kit's convention (the default) adds the fitting output of the empty environment.
    plain = build_model("new")
    vacuum = plain.head().fitting_net(plain.vacuum_descriptor()).squeeze(-1).detach()
    expected = (plain.head().energy_bias + vacuum).tolist()
    physics.check_isolated_atoms(physics.dpa2_evaluator(plain), ELEMENTS, expected)


def test_checkpoint_round_trip(tmp_path):
    model = build_model("old_strip")
    path = tmp_path / "model.pt"
    save_checkpoint(model, path)
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    inputs = model_input([periodic_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    assert torch.equal(evaluate(loaded, inputs).forces, evaluate(model, inputs).forces)
    assert torch.equal(loaded.descriptor.repinit.std, model.descriptor.repinit.std)


def test_checkpoint_loading_never_runs_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "lamforge.dpa2/1", "config": Payload(), "state": {}}, path)
    with pytest.raises(ValueError, match="not a loadable lamforge checkpoint"):
        load_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="expected checkpoint format"):
        load_checkpoint(other)


@pytest.mark.parametrize("variant", ["new", "old_strip", "incr_direct"])
@pytest.mark.parametrize("smooth", [True, False])
def test_trimming_empty_slots_is_exact(variant, smooth):
    # Smooth attention keeps empty slots in its softmax denominator (logit -20); trimming must
    # account for them exactly. The molecule has far fewer neighbours than slots.
    model = _tiny_model(variant, smooth)
    inputs = model_input([molecule_frame(), periodic_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    assert model.descriptor.repformers.exact_without_empty_slots()
    trimmed = evaluate(model, inputs)
    model.descriptor.trim_empty_slots = False
    full = evaluate(model, inputs)
    assert torch.allclose(trimmed.energy, full.energy, rtol=1e-13, atol=0)
    assert torch.allclose(trimmed.forces, full.forces, rtol=0, atol=1e-11)
    assert torch.allclose(trimmed.virial, full.virial, rtol=0, atol=1e-11)


def build_model_from(config):
    model = DPA2Model(config)
    for head in model.heads.values():
        head.energy_bias.fill_(-100.0)
    return model


def test_model_input_errors_name_the_field():
    inputs = model_input([periodic_frame()], ELEMENTS, [(4.0, 40)])
    with pytest.raises(ValueError, match="cell must be"):
        dataclasses.replace(inputs, cell=inputs.cell[0])
    with pytest.raises(ValueError, match="frame_index must be non-decreasing"):
        dataclasses.replace(inputs, frame_index=torch.arange(inputs.num_atoms).flip(0))
    with pytest.raises(ValueError, match="no neighbour block covers cutoff 5.0"):
        inputs.neighbor_list(5.0, 20)
    block = inputs.neighbors[0]
    with pytest.raises(ValueError, match="shifts has shape"):
        dataclasses.replace(block, shifts=block.shifts[:, :3])


def test_forces_sum_to_zero_and_virial_is_symmetric():
    model = build_model("new")
    inputs = model_input([periodic_frame(), molecule_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    output = evaluate(model, inputs, atomic_virial=True)
    for frame in range(2):
        atoms = inputs.frame_index == frame
        assert output.forces[atoms].sum(0).abs().max() < 1e-12
        assert torch.allclose(output.atomic_virial[atoms].sum(0), output.virial[frame], atol=1e-12)
    assert torch.allclose(output.virial, output.virial.transpose(1, 2), atol=1e-10)


def test_frame_range_equals_the_frames_built_alone():
    batch = [periodic_frame(), slab_frame(), molecule_frame()]
    inputs = model_input(batch, ELEMENTS, [(4.0, 40)])
    alone = model_input(batch[1:], ELEMENTS, [(4.0, 40)])
    part = inputs.frames(1, 3)
    for name in ("positions", "atom_types", "cell", "frame_index"):
        assert torch.equal(getattr(part, name), getattr(alone, name)), name
    assert torch.equal(part.neighbors[0].index, alone.neighbors[0].index)
    assert torch.equal(part.neighbors[0].shifts, alone.neighbors[0].shifts)
    with pytest.raises(ValueError, match=r"frame range \[2, 4\) is outside the batch's 3 frames"):
        inputs.frames(2, 4)


def _force_loss_run(model, inputs, **options):
    """Outputs of ``evaluate`` and the weight gradients of a force loss, by parameter name."""
    model.zero_grad(set_to_none=True)
    out = evaluate(model, inputs, create_graph=True, **options)
    (out.energy.square().sum() + out.forces.square().sum()).backward()
    gradients = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, gradients


def _assert_same_run(run, reference):
    """Energy, forces, virial and every weight gradient of two :func:`_force_loss_run` agree."""
    (out, gradients), (expected, expected_gradients) = run, reference
    assert torch.allclose(out.energy, expected.energy, rtol=1e-13, atol=0)
    assert torch.allclose(out.forces, expected.forces, rtol=0, atol=1e-11)
    assert torch.allclose(out.virial, expected.virial, rtol=0, atol=1e-11)
    assert gradients.keys() == expected_gradients.keys()
    for name, value in expected_gradients.items():
        assert torch.allclose(gradients[name], value, rtol=1e-10, atol=1e-12), name


def test_chunked_evaluation_equals_the_whole_batch():
    # Chunks of at most 15 atoms: (8 + 6 atoms), (9), (8); and one frame per chunk. The gradient
    # of a force loss with respect to the weights (training) must agree as well.
    model = build_model("new")
    batch = [periodic_frame(), slab_frame(), molecule_frame(), periodic_frame(seed=5)]
    inputs = model_input(batch, ELEMENTS, [(4.0, 40), (3.0, 20)])
    whole, *chunked = (
        _force_loss_run(model, inputs, atomic_virial=True, max_atoms_per_chunk=chunk)
        for chunk in (None, 15, 1)
    )
    for run in chunked:
        _assert_same_run(run, whole)
        for name in ("atomic_energies", "atomic_virial"):
            assert torch.allclose(
                getattr(run[0], name), getattr(whole[0], name), rtol=0, atol=1e-11
            )
    with pytest.raises(ValueError, match="max_atoms_per_chunk must be a positive"):
        evaluate(model, inputs, max_atoms_per_chunk=0)


def test_three_body_groups_by_neighbour_count_are_exact(monkeypatch):
    # Groups of 3 centres (instead of 48) so that a tiny batch is split; each group runs on its
    # own slot width, which must not change any output.
    from lamforge.nn import repinit

    model = build_model("new")
    inputs = model_input([molecule_frame(), periodic_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    monkeypatch.setattr(repinit, "THREE_BODY_PAIR_LIST", False)  # groups are the dense path's
    monkeypatch.setattr(repinit, "THREE_BODY_GROUP_ATOMS", 3)
    grouped = evaluate(model, inputs)
    monkeypatch.setattr(repinit, "THREE_BODY_GROUPS", 1)
    whole = evaluate(model, inputs)
    assert torch.allclose(grouped.energy, whole.energy, rtol=1e-13, atol=0)
    assert torch.allclose(grouped.forces, whole.forces, rtol=0, atol=1e-11)
    assert torch.allclose(grouped.virial, whole.virial, rtol=0, atol=1e-11)


def test_three_body_pair_list_equals_every_slot_pair(monkeypatch):
    # The pair list evaluates the three-body net once per real same-element pair j <= k and twice
    # (types swapped) per mixed pair; every slot pair on the dense path. Outputs and the weight
    # gradients of a force loss (double backward) must agree.
    from lamforge.nn import repinit

    model = build_model("new")
    batch = [periodic_frame(), slab_frame(), molecule_frame()]
    inputs = model_input(batch, ELEMENTS, [(4.0, 40), (3.0, 20)])
    results = []
    for pair_list in (True, False):
        monkeypatch.setattr(repinit, "THREE_BODY_PAIR_LIST", pair_list)
        assert model.descriptor.three_body._pair_list_applies() is pair_list
        results.append(_force_loss_run(model, inputs))
    pairs, dense = results
    assert any(name.startswith("descriptor.three_body.") for name in dense[1])
    _assert_same_run(pairs, dense)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_tanh_matches_torch_tanh_and_its_derivatives(dtype, monkeypatch):
    from lamforge.nn import layers
    from lamforge.nn.layers import tanh

    # The hand-written second derivative even on this small sample.
    monkeypatch.setattr(layers, "HAND_DERIVATIVE_MIN_SIZE", 0)

    x = torch.linspace(-30.0, 30.0, 2001, dtype=dtype)
    x = torch.cat([x, torch.tensor([0.0, 1e-300 if dtype == torch.float64 else 1e-30])])
    tolerance = 4e-16 if dtype == torch.float64 else 4e-7
    assert (tanh(x) - torch.tanh(x)).abs().max() <= tolerance
    sample = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tanh, (sample,))
    assert torch.autograd.gradgradcheck(tanh, (sample,))
    # The second derivative without create_graph (the in-place path of a training step).
    second = []
    for function in (tanh, torch.tanh):
        (first,) = torch.autograd.grad(function(sample).sum(), sample, create_graph=True)
        second.append(torch.autograd.grad((first**2).sum(), sample)[0])
    assert torch.allclose(second[0], second[1], rtol=0, atol=1e-14)


def _tiny_model(variant: str, smooth: bool):
    """The tiny test model of ``variant`` with the descriptor's ``smooth`` set."""
    config = tiny_config(variant)
    config = dataclasses.replace(
        config, descriptor=dataclasses.replace(config.descriptor, smooth=smooth)
    )
    return build_model_from(config)


@pytest.mark.parametrize(
    "variant", ["new", "old_strip", "incr_direct", "attention_free", "attention_free_old"]
)
@pytest.mark.parametrize("smooth", [True, False])
def test_repformer_centre_groups_are_exact(variant, smooth, monkeypatch):
    # Groups of 3 centres (instead of 48), each on its own slot width, against all centres at
    # once: outputs and the weight gradients of a force loss (double backward) must agree.
    from lamforge.nn import repformers

    model = _tiny_model(variant, smooth)
    monkeypatch.setattr(repformers, "RAGGED_PAIRS", False)  # the padded groups
    _assert_centre_groups_are_exact(model, repformers, "CENTER", monkeypatch)


@pytest.mark.parametrize(
    "variant", ["attention_free", "attention_free_old", "attention_free_direct"]
)
@pytest.mark.parametrize("smooth", [True, False])
def test_repformer_ragged_pairs_are_exact(variant, smooth, monkeypatch):
    # Attention-free layers on the real pairs only (ragged) against padded centre groups of 3
    # atoms: outputs and the weight gradients of a force loss (double backward) agree, and the
    # ragged run really took the ragged path.
    from lamforge.nn import repformers

    model = _tiny_model(variant, smooth)
    monkeypatch.setattr(repformers, "CENTER_GROUP_ATOMS", 3)
    block = repformers.RepformerBlock
    _assert_ragged_is_exact(
        model, repformers, "RAGGED_PAIRS", block, "_forward_ragged", monkeypatch
    )


def _assert_ragged_is_exact(model, module, switch, owner, method, monkeypatch):
    """The ragged layout (``module.<switch>`` on) against padded centre groups: outputs and
    the weight gradients of a force loss agree, inference (forces without a graph, where the
    ragged repinit runs in runs of centres) too, and ``owner.<method>`` ran only when on."""
    batch = [molecule_frame(), periodic_frame(), slab_frame()]
    inputs = model_input(batch, ELEMENTS, [(4.0, 40), (3.0, 20)])
    calls = []
    ragged = getattr(owner, method)

    def counted(*args, **kwargs):
        calls.append(1)
        return ragged(*args, **kwargs)

    monkeypatch.setattr(owner, method, counted)
    results, inference = [], []
    for use_ragged in (True, False):
        monkeypatch.setattr(module, switch, use_ragged)
        results.append(_force_loss_run(model, inputs))
        inference.append(evaluate(model, inputs))
        assert bool(calls) == use_ragged
        calls.clear()
    _assert_same_run(*results)
    for name in ("energy", "forces", "virial"):
        got, expected = (getattr(output, name) for output in inference)
        assert torch.allclose(got, expected, rtol=1e-13, atol=1e-12), name


REPINIT_OPTIONS = {
    "concat": {},
    "concat one-side": {"type_one_side": True},
    "strip": {"type_input_mode": "strip"},
    "strip one-side": {"type_input_mode": "strip", "type_one_side": True},
    "gelu": {"activation": "gelu"},
    "resnet_dt": {"resnet_dt": True},
}


@pytest.mark.parametrize("options", list(REPINIT_OPTIONS))
@pytest.mark.parametrize("hand_derivatives", [True, False])
def test_repinit_ragged_pairs_are_exact(options, hand_derivatives, monkeypatch):
    # The two-body repinit on its real pairs only (ragged) against padded centre groups of 3
    # atoms, for both type-embedding modes and sides, a non-tanh activation and timesteps (the
    # plain contraction), with the hand-written contraction derivatives on the tiny tensors too.
    from lamforge.nn import layers, repinit

    if hand_derivatives:
        monkeypatch.setattr(layers, "HAND_DERIVATIVE_MIN_SIZE", 0)
    config = tiny_config("new")
    descriptor = config.descriptor
    repinit_config = dataclasses.replace(descriptor.repinit, **REPINIT_OPTIONS[options])
    config = dataclasses.replace(
        config, descriptor=dataclasses.replace(descriptor, repinit=repinit_config)
    )
    model = build_model_from(config)
    assert model.descriptor.repinit.exact_without_empty_slots()
    monkeypatch.setattr(repinit, "REPINIT_GROUP_ATOMS", 3)
    block = repinit.RepinitBlock
    _assert_ragged_is_exact(
        model, repinit, "RAGGED_REPINIT", block, "_descriptor_ragged", monkeypatch
    )


@pytest.mark.parametrize("variant", ["new", "old_strip"])
def test_repinit_centre_groups_are_exact(variant, monkeypatch):
    # Groups of 3 centres, each on its own slot width, against all centres at once (concat and
    # strip repinit): outputs and the weight gradients of a force loss must agree.
    from lamforge.nn import repinit

    model = build_model(variant)
    assert model.descriptor.repinit.exact_without_empty_slots()
    monkeypatch.setattr(repinit, "RAGGED_REPINIT", False)  # the padded groups
    _assert_centre_groups_are_exact(model, repinit, "REPINIT", monkeypatch)


def _assert_centre_groups_are_exact(model, module, prefix, monkeypatch):
    """Groups of 3 centres (``module.<prefix>_GROUPS`` = 4) against all centres at once: the
    outputs and the weight gradients of a force loss agree."""
    batch = [molecule_frame(), periodic_frame(), slab_frame()]
    inputs = model_input(batch, ELEMENTS, [(4.0, 40), (3.0, 20)])
    monkeypatch.setattr(module, f"{prefix}_GROUP_ATOMS", 3)
    results = []
    for groups in (4, 1):
        monkeypatch.setattr(module, f"{prefix}_GROUPS", groups)
        results.append(_force_loss_run(model, inputs))
    _assert_same_run(*results)


@pytest.mark.parametrize("variant", ["new", "attention_free"])
def test_evaluate_inside_inference_mode(variant):
    # torch.inference_mode() around evaluate (a common habit for inference): forces and virials
    # still come by autograd, from inputs made outside or inside the inference mode.
    model = build_model(variant)
    frames = [periodic_frame(), molecule_frame()]
    specs = [(4.0, 40), (3.0, 20)]
    expected = evaluate(model, model_input(frames, ELEMENTS, specs))
    outside = model_input(frames, ELEMENTS, specs)
    with torch.inference_mode():
        inside = model_input(frames, ELEMENTS, specs)
        for inputs in (outside, inside):
            output = evaluate(model, inputs)
            for name in ("energy", "forces", "virial"):
                assert torch.equal(getattr(output, name), getattr(expected, name)), name
            energy_only = evaluate(model, inputs, forces=False, virial=False)
            assert torch.equal(energy_only.energy, expected.energy)


def test_evaluate_hands_out_plain_tensors_unless_asked_for_a_graph():
    model = build_model()
    inputs = model_input([periodic_frame(), molecule_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    output = evaluate(model, inputs, forces=True, virial=True, atomic_virial=True)
    for name in ("energy", "atomic_energies", "forces", "virial", "atomic_virial"):
        assert not getattr(output, name).requires_grad, name
    trained = evaluate(model, inputs, forces=True, virial=True, create_graph=True)
    assert trained.energy.requires_grad and trained.forces.requires_grad
    # Same forces; the fused three-body net sums in another order for a single backward.
    torch.testing.assert_close(trained.forces.detach(), output.forces, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name",
    ["tanh", "relu", "relu6", "softplus", "sigmoid", "silu", "gelu", "gelu_tf", "linear", "none",
     "silut", "silut:0.5", "custom_silu:1.5"],
)  # fmt: skip
def test_activation_slopes_match_autograd(name):
    # The hand-written derivatives of the tabulated se_e2_a path, for every activation name.
    from lamforge.nn.layers import activation_function, is_activation
    from lamforge.nn.se_e2_a_inference import _activation_slope

    assert is_activation(name)
    function = activation_function(name)
    pre = torch.linspace(-7.0, 7.0, 281, dtype=torch.float64).requires_grad_(True)
    activated = function(pre)
    (expected,) = torch.autograd.grad(activated.sum(), pre)
    got = _activation_slope(name, pre.detach(), activated.detach())
    # relu and relu6 have kinks exactly on grid points; compare away from them.
    away = (pre.detach() - 0.0).abs().gt(1e-9) & (pre.detach() - 6.0).abs().gt(1e-9)
    torch.testing.assert_close(got[away], expected[away], rtol=1e-12, atol=1e-12)


def test_unknown_activation_names_are_refused():
    from lamforge.nn.layers import activation_function, is_activation

    for name in ("mish", "silut:x", "siluty"):
        assert not is_activation(name)
        with pytest.raises(ValueError, match="unsupported activation"):
            activation_function(name)
