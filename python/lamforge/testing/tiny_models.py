"""Tiny model configurations for fast tests of training, fine-tuning and distillation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from lamforge.nn.config import (
    DescriptorConfig,
    FittingConfig,
    ModelConfig,
    RepformerConfig,
    RepinitConfig,
)
from lamforge.nn.se_e2_a import SeAConfig

#: Neighbour blocks of :func:`tiny_dpa2_config`: (cutoff, max_neighbors) of repinit and repformer.
TINY_SPECS: tuple[tuple[float, int], ...] = ((4.0, 40), (3.0, 20))


def tiny_dpa2_config(
    elements: Sequence[str], heads: Sequence[str] = ("default",), seed: int = 1
) -> ModelConfig:
    """A DPA-2 with every block present but tiny widths (a few hundred parameters per block)."""
    return ModelConfig(
        elements=tuple(elements),
        descriptor=DescriptorConfig(
            repinit=RepinitConfig(
                cutoff=4.0, cutoff_smooth=0.5, max_neighbors=40, neurons=(4, 8),
                axis_neurons=4, type_embedding_dim=4,
            ),
            repformer=RepformerConfig(
                cutoff=3.0, cutoff_smooth=2.5, max_neighbors=20, num_layers=2, g1_dim=8,
                g2_dim=4, axis_neurons=2, attn1_hidden=4, attn1_heads=1, attn2_hidden=4,
                attn2_heads=1,
            ),
        ),
        heads={name: FittingConfig(neurons=(8, 8)) for name in heads},
        seed=seed,
    )  # fmt: skip


def tiny_se_a_config(
    elements: Sequence[str], heads: Sequence[str] = ("default",), seed: int = 1, **changes
) -> SeAConfig:
    """A tiny se_e2_a (4 Å, 40 slots, embedding (4, 8), fitting (8,)); ``changes`` override."""
    config = SeAConfig(
        elements=tuple(elements),
        cutoff=4.0,
        cutoff_smooth=1.0,
        max_neighbors=40,
        neurons=(4, 8),
        axis_neurons=4,
        type_embedding_dim=2,
        heads={name: FittingConfig(neurons=(8,)) for name in heads},
        seed=seed,
    )
    return dataclasses.replace(config, **changes)
