"""Configuration of ``lamforge distill CONFIG`` (YAML, typed, unknown keys are errors).

A config looks like (``examples/distill_demo.yaml`` is complete)::

    output_dir: runs/distill
    store: data/store
    teacher: {model: runs/teacher/model.pt, head: null}
    source: {dataset: water, split: true, initial_frames: 50, holdout_frames: 20}
    student: {kind: se_e2_a, precision: float32}
    trainer: {steps: 500, learning_rate: {start: 0.001, stop: 1.0e-5, decay_steps: 50}}
    exploration: {temperatures: [300, 600], steps: 200, sample_every: 20}
    trust: {low: 0.05, high: 0.5, max_candidates: 20}
    loop: {max_iterations: 5, accurate_threshold: 0.99}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lamforge.distill.explore import ExplorationConfig
from lamforge.distill.loss import DistillLossConfig
from lamforge.distill.select import TrustLevels
from lamforge.distill.students import EnergyModel, build_student
from lamforge.nn.config import FittingConfig
from lamforge.nn.se_e2_a import SeAModel
from lamforge.train.trainer import TrainerConfig


@dataclass(frozen=True, kw_only=True)
class TeacherSection:
    """The teacher: a lamforge model file or a deepmd-kit checkpoint, and its head."""

    model: Path
    head: str | None = None


@dataclass(frozen=True, kw_only=True)
class SourceSection:
    """Where starting structures and the held-out set come from.

    Attributes:
        dataset: A store dataset (its own labels, if any, are the reference for held-out errors).
        split: Use its index's train/valid split: starts and initial frames from ``train``,
            held-out frames from ``valid``; otherwise the held-out frames are its last frames.
        initial_frames: Frames labelled by the teacher before the first iteration (evenly
            spread over the training frames).
        holdout_frames: Held-out frames (evenly spread) for the report's errors.
    """

    dataset: str
    split: bool = False
    initial_frames: int = 20
    holdout_frames: int = 10

    def __post_init__(self) -> None:
        if self.initial_frames < 1 or self.holdout_frames < 1:
            raise ValueError("source: initial_frames and holdout_frames must be at least 1")


@dataclass(frozen=True, kw_only=True)
class StudentSection:
    """The student model (fields left null keep the preset's value; se_e2_a only).

    Attributes:
        kind: ``se_e2_a`` or ``dpa2_student`` (small DPA-2 without attention).
        precision: ``float64`` or ``float32``.
        head: Name of the student's head.
        seed: Initialisation seed.
        cutoff, max_neighbors, neurons, axis_neurons, fitting_neurons: se_e2_a sizes.
    """

    kind: Literal["se_e2_a", "dpa2_student"] = "se_e2_a"
    precision: Literal["float64", "float32"] = "float64"
    head: str = "default"
    seed: int = 1
    cutoff: float | None = None
    max_neighbors: int | None = None
    neurons: tuple[int, ...] | None = None
    axis_neurons: int | None = None
    fitting_neurons: tuple[int, ...] | None = None

    def build(self, elements: tuple[str, ...]) -> EnergyModel:
        """A fresh student over ``elements``."""
        overrides: dict[str, object] = {
            name: getattr(self, name)
            for name in ("cutoff", "max_neighbors", "neurons", "axis_neurons")
            if getattr(self, name) is not None
        }
        if self.fitting_neurons is not None:
            overrides["heads"] = {self.head: FittingConfig(neurons=self.fitting_neurons)}
        model = build_student(
            self.kind,
            elements,
            head=self.head,
            precision=self.precision,
            seed=self.seed,
            overrides=overrides,
        )
        assert isinstance(model, SeAModel) or not overrides
        return model


@dataclass(frozen=True, kw_only=True)
class LoopSection:
    """Stopping rule and bookkeeping of the loop.

    Attributes:
        max_iterations: Stop after this many iterations.
        accurate_threshold: Converged when the accurate fraction reaches this on two successive
            iterations.
        dataset_prefix: Names of the datasets the loop writes (``<prefix>_initial``,
            ``<prefix>_holdout``, ``<prefix>_iter000``, ...).
        frames_per_batch: Training frames per batch.
        max_atoms_per_batch: Atom budget of teacher/student inference batches.
        num_threads: Threads of the neighbour search.
    """

    max_iterations: int = 5
    accurate_threshold: float = 0.99
    dataset_prefix: str = "distill"
    frames_per_batch: int = 1
    max_atoms_per_batch: int = 2048
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.max_iterations < 1 or not 0 < self.accurate_threshold <= 1:
            raise ValueError("loop: need max_iterations >= 1 and 0 < accurate_threshold <= 1")


@dataclass(frozen=True, kw_only=True)
class DistillConfig:
    """A whole distillation run. ``trainer.steps`` are the steps of EACH iteration."""

    store: Path
    teacher: TeacherSection
    source: SourceSection
    output_dir: Path = Path("runs/distill")
    student: StudentSection = field(default_factory=StudentSection)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(steps=200))
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    trust: TrustLevels = field(default_factory=TrustLevels)
    loop: LoopSection = field(default_factory=LoopSection)
    seed: int = 0

    def with_output(self, output_dir: Path) -> DistillConfig:
        """The same run written elsewhere."""
        return dataclasses.replace(self, output_dir=output_dir)
