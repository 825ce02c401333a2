"""deepmd-kit model parameters (``_extra_state.model_params``) -> lamforge :class:`ModelConfig`.

Every deepmd-kit key is either translated to one of our config fields, ignored because it only
steers deepmd-kit's training (statistics sampling, seeds, trainability), or required to hold the
value under which the model computes what lamforge computes. Anything else, and any required value
that differs, raises :class:`UnsupportedCheckpointError` naming the option, so a checkpoint is
never silently loaded into a model that computes something else.
"""

from __future__ import annotations

from typing import Any

from ase.data import atomic_numbers

from lamforge.nn.config import (
    DescriptorConfig,
    FittingConfig,
    ModelConfig,
    RepformerConfig,
    RepinitConfig,
)
from lamforge.nn.layers import ACTIVATIONS, is_activation


class UnsupportedCheckpointError(ValueError):
    """The checkpoint uses a deepmd-kit option that lamforge's DPA-2 does not implement."""


# deepmd-kit key -> our field, per section.
_REPINIT_FIELDS = {
    "rcut": "cutoff",
    "rcut_smth": "cutoff_smooth",
    "nsel": "max_neighbors",
    "neuron": "neurons",
    "axis_neuron": "axis_neurons",
    "tebd_dim": "type_embedding_dim",
    "tebd_input_mode": "type_input_mode",
    "set_davg_zero": "set_mean_zero",
    "activation_function": "activation",
    "type_one_side": "type_one_side",
    "resnet_dt": "resnet_dt",
    "use_three_body": "use_three_body",
    "three_body_neuron": "three_body_neurons",
    "three_body_rcut": "three_body_cutoff",
    "three_body_rcut_smth": "three_body_cutoff_smooth",
    "three_body_sel": "three_body_max_neighbors",
}
_REPFORMER_FIELDS = {
    "rcut": "cutoff",
    "rcut_smth": "cutoff_smooth",
    "nsel": "max_neighbors",
    "nlayers": "num_layers",
    "g1_dim": "g1_dim",
    "g2_dim": "g2_dim",
    "axis_neuron": "axis_neurons",
    "direct_dist": "direct_dist",
    "update_g1_has_conv": "update_g1_has_conv",
    "update_g1_has_drrd": "update_g1_has_drrd",
    "update_g1_has_grrg": "update_g1_has_grrg",
    "update_g1_has_attn": "update_g1_has_attn",
    "update_g2_has_g1g1": "update_g2_has_g1g1",
    "update_g2_has_attn": "update_g2_has_attn",
    "use_sqrt_nnei": "use_sqrt_nnei",
    "g1_out_conv": "g1_out_conv",
    "g1_out_mlp": "g1_out_mlp",
    "update_h2": "update_h2",
    "attn1_hidden": "attn1_hidden",
    "attn1_nhead": "attn1_heads",
    "attn2_hidden": "attn2_hidden",
    "attn2_nhead": "attn2_heads",
    "attn2_has_gate": "attn2_has_gate",
    "activation_function": "activation",
    "update_style": "update_style",
    "update_residual": "update_residual",
    "update_residual_init": "update_residual_init",
    "set_davg_zero": "set_mean_zero",
    "trainable_ln": "trainable_layer_norm",
    "ln_eps": "layer_norm_eps",
}
_DESCRIPTOR_FIELDS = {
    "concat_output_tebd": "concat_output_tebd",
    "smooth": "smooth",
    "add_tebd_to_repinit_out": "add_tebd_to_repinit_out",
    "use_tebd_bias": "use_tebd_bias",
    "env_protection": "env_protection",
}
_FITTING_FIELDS = {
    "neuron": "neurons",
    "resnet_dt": "resnet_dt",
    "activation_function": "activation",
}

# Keys that only steer deepmd-kit's training or bookkeeping; they do not change predictions.
_DESCRIPTOR_IGNORED = {"type", "precision", "seed", "trainable"}
_FITTING_IGNORED = {"type", "precision", "seed", "trainable", "rcond", "layer_name"}
_MODEL_IGNORED = {
    "type_map",
    "descriptor",
    "fitting_net",
    "data_stat_nbatch",
    "data_stat_protect",
    "data_bias_nsample",
    "preset_out_bias",
    "srtab_add_bias",
    "model_branch_alias",
    "info",
    "finetune_head",
    "bridging_r_inner",
    "bridging_r_outer",
}

# Options lamforge supports only at the value that switches them off: (key, accepted values).
_DESCRIPTOR_REQUIRED = {"exclude_types": ([],), "use_econf_tebd": (False,)}
_FITTING_REQUIRED = {
    "numb_fparam": (0,),
    "numb_aparam": (0,),
    "default_fparam": (None,),
    "dim_case_embd": (0,),
    "atom_ener": ([], None),
    "use_aparam_as_mask": (False,),
}
_MODEL_REQUIRED = {
    "type": ("standard",),
    "pair_exclude_types": ([],),
    "atom_exclude_types": ([],),
    "bridging_method": ("None", None),
    "use_srtab": (None,),
    "spin": (None,),
}

# deepmd-kit's "default" precision is float64 (unless DP_INTERFACE_PREC says otherwise).
_PRECISIONS = {
    "float64": "float64",
    "double": "float64",
    "default": "float64",
    "float32": "float32",
    "single": "float32",
}

# deepmd-kit 3.2 defaults (``deepmd/utils/argcheck.py``). Checkpoints store normalised parameters,
# so these only fill keys that an older deepmd-kit did not write, with the value deepmd-kit itself
# then uses; they never depend on lamforge's own defaults.
_DEEPMD_DEFAULTS = {
    "repinit": {
        "neuron": [25, 50, 100], "axis_neuron": 16, "tebd_dim": 8, "tebd_input_mode": "concat",
        "set_davg_zero": True, "activation_function": "tanh", "type_one_side": False,
        "resnet_dt": False, "use_three_body": False, "three_body_neuron": [2, 4, 8],
        "three_body_rcut": 4.0, "three_body_rcut_smth": 0.5, "three_body_sel": 40,
    },
    "repformer": {
        "nlayers": 3, "g1_dim": 128, "g2_dim": 16, "axis_neuron": 4, "direct_dist": False,
        "update_g1_has_conv": True, "update_g1_has_drrd": True, "update_g1_has_grrg": True,
        "update_g1_has_attn": True, "update_g2_has_g1g1": True, "update_g2_has_attn": True,
        "use_sqrt_nnei": True, "g1_out_conv": True, "g1_out_mlp": True, "update_h2": False,
        "attn1_hidden": 64, "attn1_nhead": 4, "attn2_hidden": 16, "attn2_nhead": 4,
        "attn2_has_gate": False, "activation_function": "tanh", "update_style": "res_avg",
        "update_residual": 0.001, "update_residual_init": "norm", "set_davg_zero": True,
        "trainable_ln": True, "ln_eps": None,
    },
    "descriptor": {
        "concat_output_tebd": True, "smooth": True, "env_protection": 0.0,
        "add_tebd_to_repinit_out": False, "use_tebd_bias": False,
    },
    "fitting_net": {"neuron": [120, 120, 120], "activation_function": "tanh", "resnet_dt": True},
}  # fmt: skip


def _translate(
    values: dict[str, Any],
    fields: dict[str, str],
    *,
    section: str,
    ignored: set[str] = frozenset(),
    required: dict[str, tuple[Any, ...]] | None = None,
) -> dict[str, Any]:
    required = required or {}
    translated = {}
    for key, value in values.items():
        if key in required:
            if value not in required[key]:
                raise UnsupportedCheckpointError(
                    f"deepmd-kit option `{section}.{key}` = {value!r} is not supported by "
                    f"lamforge (supported: {list(required[key])})"
                )
        elif key in fields:
            translated[fields[key]] = tuple(value) if isinstance(value, list) else value
        elif key not in ignored:
            raise UnsupportedCheckpointError(
                f"deepmd-kit option `{section}.{key}` is not supported by lamforge's DPA-2"
            )
    return translated


def _check_activation(config: dict[str, Any], section: str) -> None:
    activation = config.get("activation")
    if activation is not None and not is_activation(activation):
        raise UnsupportedCheckpointError(
            f"deepmd-kit option `{section}.activation_function` = {activation!r} is not "
            f"supported (lamforge has {sorted(ACTIVATIONS)} and silut[:threshold])"
        )


def _check_neighbor_caps(values: dict[str, Any], section: str) -> None:
    for key in ("nsel", "three_body_sel"):
        if key in values and not isinstance(values[key], int):
            raise UnsupportedCheckpointError(
                f"deepmd-kit option `{section}.{key}` = {values[key]!r} is not an integer "
                "neighbour cap (an unresolved 'auto' selection?)"
            )


def precision_of(params: dict[str, Any], where: str) -> str:
    """The single float precision of a model's descriptor and fitting net."""
    precisions = {
        part: _PRECISIONS.get(str(params.get(part, {}).get("precision", "float64")).lower())
        for part in ("descriptor", "fitting_net")
    }
    if None in precisions.values() or len(set(precisions.values())) != 1:
        raw = {part: params.get(part, {}).get("precision") for part in precisions}
        raise UnsupportedCheckpointError(
            f"{where}: lamforge models use one precision (float64 or float32) for descriptor and "
            f"fitting net; the checkpoint has {raw}"
        )
    return precisions["descriptor"]


def descriptor_config(params: dict[str, Any], where: str) -> DescriptorConfig:
    """Translate a deepmd-kit ``dpa2`` descriptor section."""
    kind = params.get("type")
    if kind != "dpa2":
        raise UnsupportedCheckpointError(
            f"{where}: descriptor type {kind!r} is not supported; lamforge loads DPA-2 (`dpa2`)"
        )
    params = dict(params)
    sections = {
        name: {**_DEEPMD_DEFAULTS[name], **params.pop(name, {})}
        for name in ("repinit", "repformer")
    }
    for name, values in sections.items():
        _check_neighbor_caps(values, f"{where}.descriptor.{name}")
    repinit = _translate(
        sections["repinit"], _REPINIT_FIELDS, section=f"{where}.descriptor.repinit"
    )
    repformer = _translate(
        sections["repformer"], _REPFORMER_FIELDS, section=f"{where}.descriptor.repformer"
    )
    if repformer.get("layer_norm_eps", 0.0) is None:
        # deepmd-kit's LayerNorm falls back to 1e-5 when ln_eps is null.
        repformer["layer_norm_eps"] = 1e-5
    for section, values in (("repinit", repinit), ("repformer", repformer)):
        _check_activation(values, f"{where}.descriptor.{section}")
    descriptor = _translate(
        {**_DEEPMD_DEFAULTS["descriptor"], **params},
        _DESCRIPTOR_FIELDS,
        section=f"{where}.descriptor",
        ignored=_DESCRIPTOR_IGNORED,
        required=_DESCRIPTOR_REQUIRED,
    )
    return DescriptorConfig(
        repinit=RepinitConfig(**repinit), repformer=RepformerConfig(**repformer), **descriptor
    )


def fitting_config(params: dict[str, Any], where: str) -> FittingConfig:
    """Translate a deepmd-kit ``ener`` fitting section."""
    kind = params.get("type", "ener")
    if kind != "ener":
        raise UnsupportedCheckpointError(
            f"{where}: fitting_net type {kind!r} is not supported; lamforge loads energy models"
        )
    fitting = _translate(
        {**_DEEPMD_DEFAULTS["fitting_net"], **params},
        _FITTING_FIELDS,
        section=f"{where}.fitting_net",
        ignored=_FITTING_IGNORED,
        required=_FITTING_REQUIRED,
    )
    _check_activation(fitting, f"{where}.fitting_net")
    return FittingConfig(**fitting)


def check_model_options(params: dict[str, Any], where: str) -> None:
    """Reject model-level options (spin, ZBL/linear models, exclusions) lamforge lacks."""
    _translate(
        params,
        {},
        section=where,
        ignored=_MODEL_IGNORED,
        required=_MODEL_REQUIRED,
    )
    if "descriptor" not in params or "fitting_net" not in params:
        raise UnsupportedCheckpointError(
            f"{where}: expected a standard model with `descriptor` and `fitting_net` sections"
        )


def elements_of(type_map: list[str], where: str) -> tuple[str, ...]:
    """The type map as lamforge elements; every entry must be a chemical symbol."""
    not_symbols = [name for name in type_map if name not in atomic_numbers or name == "X"]
    if not_symbols:
        raise UnsupportedCheckpointError(
            f"{where}: type_map entries {not_symbols} are not chemical symbols; lamforge models "
            "index atoms by element"
        )
    return tuple(type_map)


def model_config(heads: dict[str, dict[str, Any]]) -> ModelConfig:
    """One :class:`ModelConfig` for heads sharing a descriptor and a type map.

    Args:
        heads: our head name -> that head's deepmd-kit model parameters (single-task params, or
            one ``model_dict`` entry of a multi-task checkpoint).
    """
    first_name, first = next(iter(heads.items()))
    elements = elements_of(first.get("type_map", []), f"head {first_name!r}")
    descriptor = descriptor_config(first["descriptor"], f"head {first_name!r}")
    precision = precision_of(first, f"head {first_name!r}")
    fittings = {}
    for name, params in heads.items():
        where = f"head {name!r}"
        check_model_options(params, where)
        if tuple(params.get("type_map", [])) != elements:
            raise UnsupportedCheckpointError(
                f"{where}: type_map {params.get('type_map')} differs from head {first_name!r}'s "
                f"{list(elements)}; lamforge heads share one element list"
            )
        if descriptor_config(params["descriptor"], where) != descriptor:
            raise UnsupportedCheckpointError(
                f"{where}: descriptor settings differ from head {first_name!r}'s; load one head "
                "at a time with head="
            )
        if precision_of(params, where) != precision:
            raise UnsupportedCheckpointError(f"{where}: precision differs from head {first_name!r}")
        fittings[name] = fitting_config(params["fitting_net"], where)
    return ModelConfig(
        elements=elements, descriptor=descriptor, heads=fittings, precision=precision
    )
