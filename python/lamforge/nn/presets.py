"""Named model presets (functions returning a :class:`ModelConfig`), spec §2.

* ``dpa2_small`` / ``dpa2_medium`` / ``dpa2_large``: deepmd-kit's shipped water examples
  (``examples/water/dpa2/input_torch_{small,medium,large}.json``): 3 / 6 / 12 repformer layers,
  three-body repinit, res_residual, sqrt-N normalisation, g1_out_conv / g1_out_mlp; the medium and
  large ones add gated pair attention on g2.
* ``dpa2_paper``: the paper-era (pre deepmd-kit PR #4089) 12-layer model: repinit 9 Å / 120,
  repformer 4 Å / 40, every update term on (incl. g1 attention and g1g1), res_avg, 1/N
  normalisation, old-style conv and MLP, no three-body branch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lamforge.nn.config import (
    DescriptorConfig,
    FittingConfig,
    ModelConfig,
    Precision,
    RepformerConfig,
    RepinitConfig,
)

_SHIPPED_REPINIT = RepinitConfig(
    cutoff=6.0,
    cutoff_smooth=0.5,
    max_neighbors=120,
    neurons=(25, 50, 100),
    axis_neurons=12,
    type_embedding_dim=8,
    use_three_body=True,
    three_body_cutoff=4.0,
    three_body_cutoff_smooth=3.5,
    three_body_max_neighbors=48,
    three_body_neurons=(2, 4, 8),
)

_SHIPPED_REPFORMER = RepformerConfig(
    cutoff=4.0,
    cutoff_smooth=3.5,
    max_neighbors=48,
    num_layers=3,
    g1_dim=128,
    g2_dim=32,
    axis_neurons=4,
    attn1_hidden=128,
    attn1_heads=4,
    attn2_hidden=32,
    attn2_heads=4,
    attn2_has_gate=True,
    update_g1_has_conv=True,
    update_g1_has_grrg=True,
    update_g1_has_drrd=True,
    update_g1_has_attn=False,
    update_g2_has_g1g1=False,
    update_g2_has_attn=False,
    update_h2=False,
    update_style="res_residual",
    update_residual=0.01,
    update_residual_init="norm",
    use_sqrt_nnei=True,
    g1_out_conv=True,
    g1_out_mlp=True,
)


def _shipped(
    num_layers: int,
    g2_attention: bool,
    elements: Sequence[str],
    precision: Precision,
    heads: Sequence[str],
) -> ModelConfig:
    repformer = dataclasses.replace(
        _SHIPPED_REPFORMER, num_layers=num_layers, update_g2_has_attn=g2_attention
    )
    return ModelConfig(
        elements=tuple(elements),
        descriptor=DescriptorConfig(repinit=_SHIPPED_REPINIT, repformer=repformer),
        heads={name: FittingConfig(neurons=(240, 240, 240), resnet_dt=True) for name in heads},
        precision=precision,
    )


def dpa2_small(
    elements: Sequence[str] = ("O", "H"),
    *,
    precision: Precision = "float64",
    heads: Sequence[str] = ("default",),
) -> ModelConfig:
    """deepmd-kit's small DPA-2 example: 3 repformer layers, no pair attention."""
    return _shipped(3, False, elements, precision, heads)


def dpa2_medium(
    elements: Sequence[str] = ("O", "H"),
    *,
    precision: Precision = "float64",
    heads: Sequence[str] = ("default",),
) -> ModelConfig:
    """deepmd-kit's medium (recommended) DPA-2 example: 6 layers with gated pair attention."""
    return _shipped(6, True, elements, precision, heads)


def dpa2_large(
    elements: Sequence[str] = ("O", "H"),
    *,
    precision: Precision = "float64",
    heads: Sequence[str] = ("default",),
) -> ModelConfig:
    """deepmd-kit's large DPA-2 example: 12 layers with gated pair attention."""
    return _shipped(12, True, elements, precision, heads)


def dpa2_paper(
    elements: Sequence[str] = ("O", "H"),
    *,
    precision: Precision = "float64",
    heads: Sequence[str] = ("default",),
) -> ModelConfig:
    """The paper-era 12-layer DPA-2 (9 Å repinit, 4 Å repformer, all update terms, old style)."""
    repinit = RepinitConfig(
        cutoff=9.0,
        cutoff_smooth=8.0,
        max_neighbors=120,
        neurons=(25, 50, 100),
        axis_neurons=12,
        type_embedding_dim=8,
        use_three_body=False,
    )
    repformer = RepformerConfig(
        cutoff=4.0,
        cutoff_smooth=3.5,
        max_neighbors=40,
        num_layers=12,
        g1_dim=128,
        g2_dim=32,
        axis_neurons=4,
        attn1_hidden=128,
        attn1_heads=4,
        attn2_hidden=32,
        attn2_heads=4,
        attn2_has_gate=True,
        update_g1_has_conv=True,
        update_g1_has_grrg=True,
        update_g1_has_drrd=True,
        update_g1_has_attn=True,
        update_g2_has_g1g1=True,
        update_g2_has_attn=True,
        update_h2=False,
        update_style="res_avg",
        use_sqrt_nnei=False,
        g1_out_conv=False,
        g1_out_mlp=False,
    )
    return ModelConfig(
        elements=tuple(elements),
        descriptor=DescriptorConfig(repinit=repinit, repformer=repformer),
        heads={name: FittingConfig(neurons=(240, 240, 240), resnet_dt=True) for name in heads},
        precision=precision,
    )


PRESETS = {
    "dpa2_small": dpa2_small,
    "dpa2_medium": dpa2_medium,
    "dpa2_large": dpa2_large,
    "dpa2_paper": dpa2_paper,
}
