"""Distillation training: lamforge's Trainer plus the optional teacher terms of ``loss.py``.

Everything (schedule, checkpoints, resume, validation, EMA, the chunked backward) is the
Trainer's; :meth:`DistillTrainer.extra_loss` adds :func:`~lamforge.distill.loss.distillation_terms`
to the energy/force loss when they are on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lamforge.distill.loss import DistillLossConfig, distillation_terms
from lamforge.distill.students import EnergyModel
from lamforge.train.stream import BatchStream, TrainingBatch
from lamforge.train.trainer import Trainer, TrainerConfig, ValidationSets


class DistillTrainer(Trainer):
    """A :class:`Trainer` whose loss adds teacher per-atom energy and Hessian-vector terms.

    Args:
        model: The student.
        config: Trainer settings.
        stream: Teacher-labelled training batches.
        output_dir: Checkpoints and learning curves.
        teacher: The teacher (needed only when ``distill_loss`` is active).
        distill_loss: Weights of the extra terms.
        teacher_head: The teacher's head.
        validation, progress, extra_state: as for :class:`Trainer`.
    """

    def __init__(
        self,
        model: EnergyModel,
        config: TrainerConfig,
        stream: BatchStream,
        output_dir: Path,
        *,
        teacher: EnergyModel | None = None,
        distill_loss: DistillLossConfig | None = None,
        teacher_head: str | None = None,
        validation: ValidationSets | None = None,
        progress: bool = True,
        extra_state: dict | None = None,
    ) -> None:
        super().__init__(model, config, stream, output_dir, validation, progress, extra_state)
        self.distill_loss = distill_loss or DistillLossConfig()
        if self.distill_loss.active and teacher is None:
            raise ValueError("the per-atom energy and Hessian terms need a teacher model")
        self.teacher = teacher
        self.teacher_head = teacher_head

    def extra_loss(self, batch: TrainingBatch) -> torch.Tensor | None:
        """The teacher's per-atom energy and Hessian-vector terms (None when both are off)."""
        if not self.distill_loss.active:
            return None
        assert self.teacher is not None
        extra = distillation_terms(
            self.model,
            self.teacher,
            batch.inputs,
            self.distill_loss,
            student_head=batch.task,
            teacher_head=self.teacher_head,
            step=self.step,
        )
        return extra.total
