"""What load_checkpoint takes from a real deepmd-kit checkpoint, and what it refuses."""

from __future__ import annotations

import copy

import pytest
import torch

from lamforge.interop.deepmd import UnsupportedCheckpointError, load_checkpoint, read_checkpoint

# The first test of a session may train the reference models (minutes on a busy 2-core machine).
pytestmark = pytest.mark.timeout(1200)


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_statistics_bias_and_type_map_come_from_the_checkpoint(deepmd_models):
    path = deepmd_models.case_directory("small") / "model.ckpt-2.pt"
    state = _state(path)
    model = load_checkpoint(path)
    prefix = "model.Default.atomic_model."
    assert model.elements == ("O", "H")
    assert list(model.heads) == ["default"]
    for ours, theirs in (
        (model.descriptor.repinit, "repinit"),
        (model.descriptor.three_body, "repinit_three_body"),
        (model.descriptor.repformers, "repformers"),
    ):
        stddev = state[f"{prefix}descriptor.{theirs}.stddev"]
        assert torch.equal(ours.std, stddev[:, 0])
        assert torch.equal(ours.mean, state[f"{prefix}descriptor.{theirs}.mean"][:, 0])
        # Real statistics from data, not the initial ones.
        assert not torch.allclose(ours.std, torch.ones_like(ours.std))
    assert torch.equal(model.heads["default"].energy_bias, state[f"{prefix}out_bias"][0, :, 0])
    assert torch.equal(
        model.descriptor.bridge.weight, state[f"{prefix}descriptor.g1_shape_tranform.matrix"]
    )


def test_multi_task_heads_share_one_descriptor(deepmd_models):
    path = deepmd_models.case_directory("multitask") / "model.ckpt-2.pt"
    state = _state(path)
    model = load_checkpoint(path)
    assert list(model.heads) == ["water", "molecules"]
    assert model.elements == ("H", "C", "O")
    for head in ("water", "molecules"):
        bias = state[f"model.{head}.atomic_model.out_bias"][0, :, 0]
        assert torch.equal(model.heads[head].energy_bias, bias)
    assert not torch.equal(model.heads["water"].energy_bias, model.heads["molecules"].energy_bias)
    single = load_checkpoint(path, head="molecules")
    assert list(single.heads) == ["molecules"]
    assert torch.equal(single.descriptor.repinit.std, model.descriptor.repinit.std) and torch.equal(
        single.heads["molecules"].energy_bias, model.heads["molecules"].energy_bias
    )
    with pytest.raises(KeyError, match="water.*molecules"):
        load_checkpoint(path, head="nonexistent")


def test_float32_copy_keeps_the_weights(deepmd_models):
    path = deepmd_models.case_directory("small") / "model.ckpt-2.pt"
    model = load_checkpoint(path, precision="float32")
    assert model.config.precision == "float32"
    reference = load_checkpoint(path)
    weight = model.descriptor.repformers.layers[0].linear1.weight
    assert weight.dtype == torch.float32
    assert torch.equal(weight, reference.descriptor.repformers.layers[0].linear1.weight.float())
    assert model.heads["default"].energy_bias.dtype == torch.float64


def _with_params(path, tmp_path, edit, name="edited.pt"):
    payload = torch.load(path, map_location="cpu", weights_only=True)
    params = copy.deepcopy(payload["model"]["_extra_state"]["model_params"])
    edit(params, payload["model"])
    payload["model"]["_extra_state"]["model_params"] = params
    torch.save(payload, tmp_path / name)
    return tmp_path / name


def _set(section_path, value):
    def edit(params, _state):
        *parents, key = section_path.split(".")
        target = params
        for parent in parents:
            target = target[parent]
        target[key] = value

    return edit


UNSUPPORTED = [
    ("descriptor.use_econf_tebd", True, "use_econf_tebd"),
    ("descriptor.type", "se_atten", "se_atten"),
    ("descriptor.exclude_types", [[0, 1]], "exclude_types"),
    ("descriptor.repformer.activation_function", "mish", "activation_function"),
    ("descriptor.repinit.nsel", "auto", "nsel"),
    ("descriptor.precision", "float32", "precision"),
    ("fitting_net.numb_fparam", 2, "numb_fparam"),
    ("fitting_net.numb_aparam", 1, "numb_aparam"),
    ("fitting_net.dim_case_embd", 2, "dim_case_embd"),
    ("fitting_net.type", "dipole", "dipole"),
    ("spin", {"use_spin": [True, False]}, "spin"),
    ("use_srtab", "table.txt", "use_srtab"),
    ("pair_exclude_types", [[0, 1]], "pair_exclude_types"),
    ("type_map", ["OW", "HW"], "OW"),
    ("descriptor.repformer.some_future_option", 1, "some_future_option"),
]


@pytest.mark.parametrize(("option", "value", "named"), UNSUPPORTED)
def test_unsupported_options_are_named(deepmd_models, tmp_path, option, value, named):
    path = deepmd_models.case_directory("small") / "model.ckpt-2.pt"
    edited = _with_params(path, tmp_path, _set(option, value))
    with pytest.raises(UnsupportedCheckpointError, match=named) as error:
        load_checkpoint(edited)
    assert str(edited) in str(error.value)


def test_compressed_descriptor_is_refused(deepmd_models, tmp_path):
    path = deepmd_models.case_directory("small") / "model.ckpt-2.pt"

    def compress(_params, state):
        key = "model.Default.atomic_model.descriptor.repinit.compress_data.0"
        state[key] = torch.ones(10, 6, dtype=torch.float64)

    with pytest.raises(UnsupportedCheckpointError, match="compressed"):
        load_checkpoint(_with_params(path, tmp_path, compress))


def test_missing_weight_is_named(deepmd_models, tmp_path):
    path = deepmd_models.case_directory("small") / "model.ckpt-2.pt"

    def drop(_params, state):
        del state["model.Default.atomic_model.descriptor.repformers.layers.1.linear2.matrix"]

    with pytest.raises(UnsupportedCheckpointError, match=r"repformers\.layers\.1\.linear2"):
        load_checkpoint(_with_params(path, tmp_path, drop))


def test_read_checkpoint_returns_the_model_state(deepmd_models):
    path = deepmd_models.case_directory("multitask") / "model.ckpt-2.pt"
    state = read_checkpoint(path)
    assert set(state["_extra_state"]["model_params"]["model_dict"]) == {"water", "molecules"}


def test_keys_missing_from_older_checkpoints_take_deepmd_defaults(deepmd_models, tmp_path):
    path = deepmd_models.case_directory("small") / "model.ckpt-2.pt"

    def drop_newer_keys(params, _state):
        # Written by deepmd-kit >= 3.0 only; the small config sets them to deepmd-kit's defaults.
        for key in ("use_sqrt_nnei", "g1_out_conv", "g1_out_mlp", "ln_eps", "trainable_ln"):
            del params["descriptor"]["repformer"][key]
        del params["descriptor"]["use_tebd_bias"]

    older = load_checkpoint(_with_params(path, tmp_path, drop_newer_keys))
    assert older.config == load_checkpoint(path).config
