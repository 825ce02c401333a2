"""Typed configuration of a DPA-2 model: descriptor blocks, fitting heads and the whole model.

Every field mirrors one deepmd-kit option (named in the field's comment) so that a deepmd-kit
``input.json`` maps onto these dataclasses one key at a time. Names follow our style (``cutoff``,
``max_neighbors``) except for the repformer update flags, whose deepmd-kit names are the terms of
art of the DPA-2 paper (g1 = single-atom channel, g2 = pair channel, h2 = equivariant pair channel).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Activation = Literal["tanh", "relu", "silu", "linear"]
Precision = Literal["float64", "float32"]
UpdateStyle = Literal["res_avg", "res_incr", "res_residual"]
TypeInputMode = Literal["concat", "strip"]


@dataclass(kw_only=True, frozen=True)
class RepinitConfig:
    """The attention-free DPA-1 style first block and its optional three-body branch.

    deepmd-kit: ``descriptor.repinit`` (``RepinitArgs``).
    """

    cutoff: float = 6.0  # rcut
    cutoff_smooth: float = 0.5  # rcut_smth
    max_neighbors: int = 120  # nsel
    neurons: tuple[int, ...] = (25, 50, 100)  # neuron
    axis_neurons: int = 12  # axis_neuron
    type_embedding_dim: int = 8  # tebd_dim
    type_input_mode: TypeInputMode = "concat"  # tebd_input_mode
    type_one_side: bool = False  # type_one_side
    resnet_dt: bool = False  # resnet_dt
    set_mean_zero: bool = True  # set_davg_zero
    activation: Activation = "tanh"  # activation_function
    use_three_body: bool = False  # use_three_body
    three_body_cutoff: float = 4.0  # three_body_rcut
    three_body_cutoff_smooth: float = 0.5  # three_body_rcut_smth
    three_body_max_neighbors: int = 40  # three_body_sel
    three_body_neurons: tuple[int, ...] = (2, 4, 8)  # three_body_neuron


@dataclass(kw_only=True, frozen=True)
class RepformerConfig:
    """The repformer message-passing block. deepmd-kit: ``descriptor.repformer``."""

    cutoff: float = 4.0  # rcut
    cutoff_smooth: float = 3.5  # rcut_smth
    max_neighbors: int = 48  # nsel
    num_layers: int = 3  # nlayers
    g1_dim: int = 128
    g2_dim: int = 16
    axis_neurons: int = 4  # axis_neuron
    direct_dist: bool = False
    update_g1_has_conv: bool = True
    update_g1_has_drrd: bool = True
    update_g1_has_grrg: bool = True
    update_g1_has_attn: bool = True
    update_g2_has_g1g1: bool = True
    update_g2_has_attn: bool = True
    update_h2: bool = False
    attn1_hidden: int = 64
    attn1_heads: int = 4  # attn1_nhead
    attn2_hidden: int = 16
    attn2_heads: int = 4  # attn2_nhead
    attn2_has_gate: bool = False
    activation: Activation = "tanh"  # activation_function
    update_style: UpdateStyle = "res_avg"
    update_residual: float = 0.001
    update_residual_init: Literal["norm", "const"] = "norm"
    set_mean_zero: bool = True  # set_davg_zero
    trainable_layer_norm: bool = True  # trainable_ln
    layer_norm_eps: float = 1e-5  # ln_eps
    use_sqrt_nnei: bool = True
    g1_out_conv: bool = True
    g1_out_mlp: bool = True


@dataclass(kw_only=True, frozen=True)
class DescriptorConfig:
    """DPA-2 descriptor: type embedding, repinit, bridge, repformers (deepmd-kit ``dpa2``)."""

    repinit: RepinitConfig = field(default_factory=RepinitConfig)
    repformer: RepformerConfig = field(default_factory=RepformerConfig)
    concat_output_tebd: bool = True
    smooth: bool = True
    add_tebd_to_repinit_out: bool = False
    use_tebd_bias: bool = False
    env_protection: float = 0.0


@dataclass(kw_only=True, frozen=True)
class FittingConfig:
    """One energy fitting head. deepmd-kit: ``fitting_net`` of type ``ener``."""

    neurons: tuple[int, ...] = (240, 240, 240)  # neuron
    resnet_dt: bool = True
    activation: Activation = "tanh"  # activation_function
    # Not in deepmd-kit (keep False for parity): subtract the fitting output of the isolated-atom
    # descriptor, so that an atom without neighbours has exactly its element's energy bias.
    zero_isolated_atoms: bool = False


@dataclass(kw_only=True, frozen=True)
class ModelConfig:
    """A whole model: element list, one descriptor and any number of named energy heads."""

    elements: tuple[str, ...]  # type_map
    descriptor: DescriptorConfig = field(default_factory=DescriptorConfig)
    heads: dict[str, FittingConfig] = field(default_factory=lambda: {"default": FittingConfig()})
    precision: Precision = "float64"
    seed: int = 1

    def __post_init__(self) -> None:
        _validate_model_config(self)

    def with_precision(self, precision: Precision) -> ModelConfig:
        """The same model in another floating-point precision."""
        return dataclasses.replace(self, precision=precision)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible nested dict (tuples become lists)."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are errors naming the key and the section."""
        data = dict(data)
        descriptor = dict(data.pop("descriptor", {}))
        repinit = _build(RepinitConfig, descriptor.pop("repinit", {}), "descriptor.repinit")
        repformer = _build(RepformerConfig, descriptor.pop("repformer", {}), "descriptor.repformer")
        descriptor_config = _build(
            DescriptorConfig,
            {**descriptor, "repinit": repinit, "repformer": repformer},
            "descriptor",
        )
        heads = {
            str(name): _build(FittingConfig, head, f"heads.{name}")
            for name, head in data.pop("heads", {"default": {}}).items()
        }
        if "elements" in data:
            data["elements"] = tuple(data["elements"])
        return _build(
            cls, {**data, "descriptor": descriptor_config, "heads": heads}, "model config"
        )


def _build(kind: type, values: dict[str, Any], section: str) -> Any:
    known = {item.name: item for item in dataclasses.fields(kind)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"{section}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    converted = {
        name: tuple(value) if isinstance(value, list) else value for name, value in values.items()
    }
    return kind(**converted)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _to_plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(item) for item in value]
    return value


def _validate_model_config(config: ModelConfig) -> None:
    if not config.elements:
        raise ValueError("model config: `elements` must name at least one element")
    if len(set(config.elements)) != len(config.elements):
        raise ValueError(f"model config: duplicate entries in elements {config.elements}")
    if not config.heads:
        raise ValueError("model config: at least one head is required")
    repinit = config.descriptor.repinit
    repformer = config.descriptor.repformer
    # deepmd-kit derives the inner neighbour lists from the repinit list by truncation, which is
    # only consistent when a larger cutoff also has a larger neighbour cap (dpa2.py asserts this).
    if not (repinit.cutoff > repformer.cutoff and repinit.max_neighbors > repformer.max_neighbors):
        raise ValueError(
            "descriptor config: repinit cutoff and max_neighbors must both exceed the "
            f"repformer's, got repinit ({repinit.cutoff}, {repinit.max_neighbors}) and "
            f"repformer ({repformer.cutoff}, {repformer.max_neighbors})"
        )
    # The g1 MLP (linear1) reads g1 itself unless g1_out_mlp, then only the pair terms feeding it.
    if repformer.g1_out_mlp and not (
        repformer.update_g1_has_grrg
        or repformer.update_g1_has_drrd
        or (repformer.update_g1_has_conv and not repformer.g1_out_conv)
    ):
        raise ValueError(
            "repformer: the g1 MLP update (linear1) has no input: with g1_out_mlp on, turn on "
            "update_g1_has_grrg, update_g1_has_drrd, or update_g1_has_conv with g1_out_conv off "
            "(deepmd-kit cannot run this configuration either)"
        )
    for name, block_cutoff, smooth in (
        ("repinit", repinit.cutoff, repinit.cutoff_smooth),
        ("repformer", repformer.cutoff, repformer.cutoff_smooth),
        ("repinit.three_body", repinit.three_body_cutoff, repinit.three_body_cutoff_smooth),
    ):
        if not smooth < block_cutoff:
            raise ValueError(f"{name}: cutoff_smooth {smooth} must be below cutoff {block_cutoff}")
    if config.precision not in ("float64", "float32"):
        raise ValueError(
            f"model config: precision must be float64 or float32, got {config.precision}"
        )
