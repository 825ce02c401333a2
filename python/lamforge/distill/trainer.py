"""Distillation training: lamforge's Trainer plus the optional teacher terms of ``loss.py``.

Everything (schedule, checkpoints, resume, validation, EMA) is the Trainer's; only the step adds
:func:`~lamforge.distill.loss.distillation_terms` to the energy/force loss when they are on.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from lamforge.distill.loss import DistillLossConfig, distillation_terms
from lamforge.distill.students import EnergyModel
from lamforge.train.loss import EnergyPrediction, LossValue
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

    def train_step(self, batch: TrainingBatch) -> LossValue:
        """One optimiser step; the Trainer's own step when no extra term is on."""
        if not self.distill_loss.active:
            return super().train_step(batch)
        assert self.teacher is not None
        self.module.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(self.step)
        loss_fn = self._loss(batch.task)
        wants_virial = loss_fn.config.virial.active and batch.labels.virial is not None
        self.optimizer.zero_grad(set_to_none=True)
        energy, forces, virial = self.module(batch.inputs, batch.task, wants_virial)
        prediction = EnergyPrediction(energy=energy, forces=forces, virial=virial)
        loss = loss_fn(prediction, batch.labels, self.schedule.factor(self.step))
        extra = distillation_terms(
            self.model,
            self.teacher,
            batch.inputs,
            self.distill_loss,
            student_head=batch.task,
            teacher_head=self.teacher_head,
            step=self.step,
        )
        total = loss.total + extra.total.to(loss.total.dtype)
        total.backward()
        if self.config.optimizer.gradient_max_norm is not None:
            nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.optimizer.gradient_max_norm
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        return dataclasses.replace(loss, total=total)
