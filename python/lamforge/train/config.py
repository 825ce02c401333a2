"""Configuration of ``lamforge train`` and ``lamforge finetune`` runs (YAML, typed, strict).

A run file looks like (see ``examples/`` for complete ones)::

    output_dir: runs/water
    model:
      preset: dpa2_small            # dpa2_small | dpa2_medium | dpa2_large | dpa2_paper
      precision: float64
      elements: [H, O]              # default: every element of the training datasets
    data:
      store: data/store
      frames_per_batch: 1
      tasks:
        water:                      # one head per task; several tasks = multi-task training
          train: [water]            # datasets of the store
          split: true               # use the index's train/valid split of those datasets
          weight: 1.0               # multi-task sampling weight (default: by training frames)
    trainer:
      steps: 100000
      learning_rate: {start: 0.001, stop: 3.51e-8, decay_steps: 5000}
    finetune:                       # only for ``lamforge finetune``
      pretrained: runs/pretrain/model.pt
      from_head: water_pbe          # null: a fresh head
      freeze_descriptor: false

Unknown keys are errors naming their path (``data.tasks.water.trian``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lamforge.train.loss import LossConfig
from lamforge.train.trainer import TrainerConfig


@dataclass(frozen=True, kw_only=True)
class ModelSection:
    """Which model to build.

    Attributes:
        preset: A named preset of ``lamforge.nn.presets``; ignored when ``custom`` is given.
        precision: ``float64`` (deepmd-kit's default) or ``float32``.
        elements: The model's element list; default: the elements of the training data.
        custom: A complete model configuration (``ModelConfig`` as a mapping) instead of a preset.
    """

    preset: Literal["dpa2_small", "dpa2_medium", "dpa2_large", "dpa2_paper"] = "dpa2_small"
    precision: Literal["float64", "float32"] = "float64"
    elements: tuple[str, ...] | None = None
    custom: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class TaskData:
    """The data of one task (one fitting head).

    Attributes:
        train: Store datasets trained on.
        validation: Store datasets validated on (in addition to the ``split`` ones).
        split: Use the frame index's ``split`` column (``lamforge data split``): frames marked
            ``train`` train and frames marked ``valid`` validate.
        weight: Multi-task sampling weight; default: proportional to the training frames.
        loss: The task's loss (default: ``trainer.loss``).
    """

    train: tuple[str, ...]
    validation: tuple[str, ...] = ()
    split: bool = False
    weight: float | None = None
    loss: LossConfig | None = None

    def __post_init__(self) -> None:
        if not self.train:
            raise ValueError("a task needs at least one training dataset")


@dataclass(frozen=True, kw_only=True)
class DataSection:
    """Where the data come from and how batches are formed.

    Attributes:
        store: The lamforge store.
        tasks: Data of every task, by task (head) name.
        frames_per_batch: Frames per batch (deepmd-kit's ``batch_size``); or None with
            ``max_atoms``.
        max_atoms: Atom budget per batch instead of a frame count.
        statistics_frames: Frames per dataset, drawn at random, for environment statistics and
            (when fine-tuning) the energy bias.
        bias_frames: Frames per dataset, drawn at random, for the energy bias of a new model
            (element counts and energies only: cheap).
        num_threads: Threads of the loader (0: all cores).
    """

    store: Path
    tasks: dict[str, TaskData]
    frames_per_batch: int | None = 1
    max_atoms: int | None = None
    statistics_frames: int = 100
    bias_frames: int = 1000
    num_threads: int = 0

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("data.tasks must name at least one task")
        if (self.frames_per_batch is None) == (self.max_atoms is None):
            raise ValueError("give exactly one of frames_per_batch and max_atoms")
        if self.statistics_frames < 1 or self.bias_frames < 1:
            raise ValueError("data.statistics_frames and data.bias_frames must be at least 1")


@dataclass(frozen=True, kw_only=True)
class FinetuneSection:
    """Fine-tuning from a pre-trained model (``lamforge finetune``).

    Attributes:
        pretrained: A lamforge model file (``model.pt``) or a deepmd-kit checkpoint
            (``*.pt`` with ``model_params``).
        from_head: Pre-trained head to start from; None for a fresh head.
        bias_mode: ``change`` or ``set``; default by ``from_head`` (``lamforge.train.finetune``).
        freeze_descriptor: Train only the head.
    """

    pretrained: Path
    from_head: str | None = None
    bias_mode: Literal["change", "set"] | None = None
    freeze_descriptor: bool = False


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """A whole training or fine-tuning run."""

    data: DataSection
    model: ModelSection = field(default_factory=ModelSection)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    finetune: FinetuneSection | None = None
    output_dir: Path = Path("runs/lamforge")
    seed: int = 0
