"""Data-dependent initialisation before training: environment statistics and energy biases.

As in deepmd-kit: the descriptor's per-element environment statistics (mean/std of every block)
are accumulated over a sample of every task's training data and pooled (summed) across tasks,
because the descriptor is shared; each task's head then gets its own per-element energy bias by
least squares on that task's frames (``set`` mode). Both are stored in the model's buffers and
travel with its checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lamforge.nn.model import DPA2Model
from lamforge.nn.statistics import compute_statistics, fit_energy_bias
from lamforge.train.stream import TrainingBatch


def energy_samples(batches: Sequence[TrainingBatch]) -> list[tuple]:
    """(inputs, energies) of the batches whose every frame has an energy label."""
    return [
        (batch.inputs, batch.labels.energy)
        for batch in batches
        if bool(batch.labels.energy_mask.all())
    ]


def initialize_from_data(
    model: DPA2Model,
    samples: Mapping[str, Sequence[TrainingBatch]],
    bias_samples: Mapping[str, Sequence[TrainingBatch]] | None = None,
) -> None:
    """Sets the environment statistics (all tasks pooled) and each task head's energy bias.

    Args:
        model: A model with one head per task of ``samples``.
        samples: A few training batches of each task.
        bias_samples: Batches of each task for the energy bias (default: ``samples``). The
            ``set`` fit uses only element counts and energies, so it can afford many more frames
            than the statistics: a dataset of many elements (MPtrj) needs them to fix every bias.

    Raises:
        ValueError: a task has no batch whose frames all carry an energy label.
    """
    compute_statistics(model, [batch.inputs for batches in samples.values() for batch in batches])
    for task, batches in (bias_samples or samples).items():
        labelled = energy_samples(batches)
        if not labelled:
            raise ValueError(f"task {task!r}: no sampled batch has energy labels on every frame")
        fit_energy_bias(model, labelled, task, mode="set")
