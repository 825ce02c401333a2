"""Student models, model files of any kind, and data-dependent initialisation of a model.

Students: :func:`dpa2_student_config` (a small DPA-2 without repformer attention) and se_e2_a
(:mod:`lamforge.nn.se_e2_a`). Model files: lamforge DPA-2 and se_e2_a checkpoints and deepmd-kit
checkpoints (through the interop) are told apart by their ``format`` entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.config import (
    DescriptorConfig,
    FittingConfig,
    ModelConfig,
    Precision,
    RepformerConfig,
    RepinitConfig,
)
from lamforge.nn.model import DPA2Model, EnergyModel
from lamforge.nn.se_e2_a import SeAConfig, SeAModel, compute_se_a_statistics, save_se_a
from lamforge.nn.statistics import compute_statistics, fit_energy_bias
from lamforge.train.initialize import energy_samples
from lamforge.train.stream import TrainingBatch


def dpa2_student_config(
    elements: Sequence[str],
    *,
    heads: Sequence[str] = ("default",),
    precision: Precision = "float64",
    seed: int = 1,
) -> ModelConfig:
    """A small DPA-2 without attention: repinit 6 Å / 80, two repformer layers (4 Å / 30).

    Both repformer attention terms (g1 local attention and g2 gated self-attention) are off: they
    are the most expensive part of DPA-2 inference and the first to go in a distilled student.
    """
    return ModelConfig(
        elements=tuple(elements),
        descriptor=DescriptorConfig(
            repinit=RepinitConfig(
                cutoff=6.0,
                cutoff_smooth=0.5,
                max_neighbors=80,
                neurons=(16, 32),
                axis_neurons=8,
                type_embedding_dim=8,
            ),
            repformer=RepformerConfig(
                cutoff=4.0,
                cutoff_smooth=3.5,
                max_neighbors=30,
                num_layers=2,
                g1_dim=32,
                g2_dim=8,
                axis_neurons=4,
                update_g1_has_attn=False,
                update_g2_has_attn=False,
                update_style="res_residual",
                update_residual=0.01,
            ),
        ),
        heads={name: FittingConfig(neurons=(32, 32)) for name in heads},
        precision=precision,
        seed=seed,
    )


def se_a_student_config(
    elements: Sequence[str],
    *,
    heads: Sequence[str] = ("default",),
    precision: Precision = "float64",
    seed: int = 1,
    cutoff: float = 6.0,
    max_neighbors: int = 120,
) -> SeAConfig:
    """A compact se_e2_a student: embedding (8, 16, 32), 8 axis neurons, fitting (64, 64)."""
    return SeAConfig(
        elements=tuple(elements),
        cutoff=cutoff,
        cutoff_smooth=0.5,
        max_neighbors=max_neighbors,
        neurons=(8, 16, 32),
        axis_neurons=8,
        type_embedding_dim=4,
        heads={name: FittingConfig(neurons=(64, 64)) for name in heads},
        precision=precision,
        seed=seed,
    )


StudentKind = Literal["se_e2_a", "dpa2_student"]


def build_student(
    kind: StudentKind,
    elements: Sequence[str],
    *,
    head: str = "default",
    precision: Precision = "float64",
    seed: int = 1,
    overrides: Mapping[str, object] | None = None,
) -> EnergyModel:
    """A freshly initialised student of ``kind`` with one head; ``overrides`` replace fields."""
    if kind == "se_e2_a":
        config = se_a_student_config(elements, heads=(head,), precision=precision, seed=seed)
        return SeAModel(dataclasses.replace(config, **dict(overrides or {})))
    if kind == "dpa2_student":
        if overrides:
            raise ValueError("student overrides are supported for se_e2_a only")
        return DPA2Model(
            dpa2_student_config(elements, heads=(head,), precision=precision, seed=seed)
        )
    raise ValueError(f"unknown student kind {kind!r}; choose se_e2_a or dpa2_student")


def save_model(model: EnergyModel, path: str | Path) -> None:
    """Write a lamforge model file of either kind."""
    if isinstance(model, SeAModel):
        save_se_a(model, path)
    else:
        save_checkpoint(model, path)


def initialize_model(model: EnergyModel, samples: Mapping[str, Sequence[TrainingBatch]]) -> None:
    """Environment statistics (all tasks pooled) and each task head's energy bias.

    ``lamforge.train.initialize.initialize_from_data`` for any model kind (the DPA-2 statistics
    code reads DPA-2 config fields, so se_e2_a goes through its own).

    Raises:
        ValueError: a task has no batch whose frames all carry an energy label.
    """
    inputs = [batch.inputs for batches in samples.values() for batch in batches]
    if isinstance(model, SeAModel):
        compute_se_a_statistics(model, inputs)
    else:
        compute_statistics(model, inputs)
    for task, batches in samples.items():
        labelled = energy_samples(batches)
        if not labelled:
            raise ValueError(f"task {task!r}: no sampled batch has energy labels on every frame")
        fit_energy_bias(model, labelled, task, mode="set")  # type: ignore[arg-type]
