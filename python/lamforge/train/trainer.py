"""The training loop: one readable loop for single-task, multi-task and fine-tuning runs.

Each step takes the next batch of the stream (a batch belongs to one task, and the task names the
head), predicts energy, forces and virial (forces by autograd with ``create_graph=True``, so the
force loss trains the weights through a second backward), computes that task's loss with
prefactors that follow the learning rate, and takes one optimiser step over the whole model. Heads
of other tasks get no gradient that step and Adam skips them, exactly as in deepmd-kit's
multi-task training.

Under ``torchrun`` (``torch.distributed`` initialised) the model is wrapped in
``DistributedDataParallel`` (``find_unused_parameters=True``: each rank may train a different head
in a step); every rank streams its own part of the data, and rank 0 validates, logs and writes
checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from lamforge.memory import keep_freed_memory
from lamforge.nn.forces import evaluate
from lamforge.train.checkpoint import CheckpointManager, load_file
from lamforge.train.curves import CurveLog, CurveRow
from lamforge.train.ema import ExponentialMovingAverage
from lamforge.train.loss import EnergyLoss, EnergyPrediction, LossConfig, LossValue
from lamforge.train.metrics import ErrorAccumulator, ErrorMetrics
from lamforge.train.schedule import ExponentialDecay, LearningRateConfig
from lamforge.train.step import DEFAULT_TRAINING_CHUNK_ATOMS, EnergyForceModule, backward_in_chunks
from lamforge.train.stream import BatchStream, TrainingBatch


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Optimiser and gradient handling.

    Attributes:
        name: ``adam`` (deepmd-kit's default) or ``adamw``.
        weight_decay: L2 (Adam) or decoupled (AdamW) weight decay.
        gradient_max_norm: Clip the gradient norm to this value (None: no clipping).
        ema_decay: Keep an exponential moving average of the weights with this decay (None: off).
    """

    name: Literal["adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    gradient_max_norm: float | None = 5.0
    ema_decay: float | None = None


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """Length, schedule and bookkeeping of a training run.

    Attributes:
        steps: Optimiser steps of the whole run.
        learning_rate: Warm-up and exponential decay.
        optimizer: Optimiser settings.
        loss: Loss of every task without an entry in ``task_losses``.
        task_losses: Loss per task (multi-task runs may weight terms differently per dataset).
        log_every: Steps between training-loss rows of the learning curves.
        validate_every: Steps between validations (0: only at the end).
        checkpoint_every: Steps between checkpoints (0: only at the end).
        keep_last: Step checkpoints kept.
        max_atoms_per_chunk: Back-propagate a batch in runs of whole frames of at most this many
            atoms (a larger frame alone), one backward each, so that the force-training graph of
            only one run is alive at a time (``lamforge.train.step``; the gradients are those of
            the whole batch). None: the whole batch in one backward.
        keep_freed_memory: Let the process reuse the memory a step frees instead of returning it
            to the OS (glibc; :func:`lamforge.memory.keep_freed_memory`): no page faults on fresh
            pages each step, about 7 % of a small-system CPU training step, for up to 512 MiB of
            freed memory kept resident between steps.
    """

    steps: int = 1000
    learning_rate: LearningRateConfig = field(default_factory=LearningRateConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    task_losses: dict[str, LossConfig] = field(default_factory=dict)
    log_every: int = 10
    validate_every: int = 100
    checkpoint_every: int = 100
    keep_last: int = 3
    max_atoms_per_chunk: int | None = DEFAULT_TRAINING_CHUNK_ATOMS
    keep_freed_memory: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        for name in ("log_every", "validate_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative")
        if self.max_atoms_per_chunk is not None and self.max_atoms_per_chunk < 1:
            raise ValueError(
                f"max_atoms_per_chunk must be positive, got {self.max_atoms_per_chunk}"
            )


#: Validation data per task: a function returning the task's batches (called once per validation).
ValidationSets = Mapping[str, Callable[[], Iterable[TrainingBatch]]]


def predict(model: nn.Module, batch: TrainingBatch) -> EnergyPrediction:
    """Energy, forces and (if labelled) virial of a batch, without a graph for training."""
    wants_virial = batch.labels.virial_mask is not None and bool(batch.labels.virial_mask.any())
    output = evaluate(model, batch.inputs, batch.task, forces=True, virial=wants_virial)
    return EnergyPrediction(
        energy=output.energy.detach(),
        forces=output.forces.detach(),
        virial=None if output.virial is None else output.virial.detach(),
    )


def evaluate_errors(model: nn.Module, batches: Iterable[TrainingBatch]) -> ErrorMetrics:
    """Error metrics of ``model`` over ``batches`` (each with its task's head)."""
    accumulator = ErrorAccumulator()
    for batch in batches:
        accumulator.add(predict(model, batch), batch.labels)
    return accumulator.result()


@dataclass(frozen=True, kw_only=True)
class TrainingResult:
    """What a run produced: last step, final validation metrics and where the files are."""

    steps: int
    seconds: float
    validation: dict[str, ErrorMetrics]
    last_checkpoint: Path | None
    best_checkpoint: Path | None


class Trainer:
    """Runs :class:`TrainerConfig` on a model, a batch stream and validation sets.

    Args:
        model: A ``DPA2Model`` (or any model with heads named after the tasks).
        config: The run's settings.
        stream: Training batches of every task.
        output_dir: Folder of checkpoints and learning curves.
        validation: Validation batches per task (optional).
        progress: Show a progress bar.
        extra_state: Plain data saved into every checkpoint (e.g. the model and run configs).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainerConfig,
        stream: BatchStream,
        output_dir: Path,
        validation: ValidationSets | None = None,
        progress: bool = True,
        extra_state: dict | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.stream = stream
        self.validation = dict(validation or {})
        self.progress = progress
        self.extra_state = dict(extra_state or {})
        self.output_dir = Path(output_dir)
        self.distributed = dist.is_available() and dist.is_initialized()
        self.is_main = not self.distributed or dist.get_rank() == 0
        self.schedule = ExponentialDecay(config.learning_rate, config.steps)
        self.module: nn.Module = EnergyForceModule(model)
        if self.distributed:
            self.module = nn.parallel.DistributedDataParallel(
                self.module, find_unused_parameters=True
            )
        optimizer_class = (
            torch.optim.AdamW if config.optimizer.name == "adamw" else torch.optim.Adam
        )
        self.optimizer = optimizer_class(
            [p for p in model.parameters() if p.requires_grad],
            lr=config.learning_rate.start,
            weight_decay=config.optimizer.weight_decay,
        )
        decay = config.optimizer.ema_decay
        self.ema = None if decay is None else ExponentialMovingAverage(model, decay)
        self.losses: dict[str, EnergyLoss] = {}
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", config.keep_last)
        self.step = 0

    def _loss(self, task: str) -> EnergyLoss:
        if task not in self.losses:
            self.losses[task] = EnergyLoss(self.config.task_losses.get(task, self.config.loss))
        return self.losses[task]

    def train_step(self, batch: TrainingBatch) -> LossValue:
        """One optimiser step on ``batch``; returns its loss (before the step)."""
        self.module.train()
        learning_rate = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate
        loss_fn = self._loss(batch.task)
        wants_virial = loss_fn.config.virial.active and batch.labels.virial is not None
        self.optimizer.zero_grad(set_to_none=True)
        extra = self.extra_loss(batch)
        if extra is not None:
            # Before the chunks: under DDP the accumulated .grad, this term included, is
            # all-reduced by the last chunk's backward.
            extra.backward()
        loss = backward_in_chunks(
            self.module, batch, loss_fn, self.schedule.factor(self.step),
            virial=wants_virial, max_atoms_per_chunk=self.config.max_atoms_per_chunk,
        )  # fmt: skip
        if extra is not None:
            loss = replace(loss, total=loss.total + extra.detach().to(loss.total.dtype))
        if self.config.optimizer.gradient_max_norm is not None:
            nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.optimizer.gradient_max_norm
            )
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        return loss

    def extra_loss(self, batch: TrainingBatch) -> torch.Tensor | None:
        """A term added to the loss of ``batch`` (a scalar with a graph to the weights), or None.

        The plain Trainer has none; subclasses (distillation) override it. Its gradient is added
        to the energy/force loss's in the same optimiser step.
        """
        return None

    def validate(self) -> dict[str, ErrorMetrics]:
        """Error metrics per validation task (with the averaged weights when EMA is on)."""
        self.module.eval()
        if self.ema is None:
            return {
                task: evaluate_errors(self.model, make()) for task, make in self.validation.items()
            }
        with self.ema.averaged() as model:
            return {task: evaluate_errors(model, make()) for task, make in self.validation.items()}

    def state_dict(self) -> dict:
        """Everything needed to continue the run exactly."""
        return {
            **self.extra_state,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "stream": self.stream.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restores a :meth:`state_dict` (from a checkpoint)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])

    def resume(self, path: Path | None = None) -> int:
        """Loads ``path`` or the newest checkpoint of the run; returns the step to continue from."""
        path = path or self.checkpoints.latest()
        if path is None:
            return 0
        self.load_state_dict(load_file(path))
        return self.step

    def _save(self, validation: dict[str, ErrorMetrics] | None) -> Path | None:
        if not self.is_main:
            return None
        score = _validation_score(validation) if validation else None
        return self.checkpoints.save(self.step, self.state_dict(), validation=score)

    def _log_validation(self, log: CurveLog, metrics: dict[str, ErrorMetrics]) -> None:
        for task, value in metrics.items():
            log.write(
                CurveRow(
                    step=self.step, split="valid", task=task,
                    learning_rate=self.schedule(self.step),
                    energy_rmse_per_atom=value.energy_rmse_per_atom,
                    forces_rmse=value.forces_rmse,
                    virial_rmse_per_atom=value.virial_rmse_per_atom,
                )
            )  # fmt: skip

    def run(self, resume: bool = False) -> TrainingResult:
        """Trains until ``config.steps``; with ``resume``, continues from the newest checkpoint.

        A Ctrl-C (KeyboardInterrupt) saves a checkpoint of the last completed step, then re-raises.
        """
        config = self.config
        if config.keep_freed_memory:
            keep_freed_memory()
        if resume:
            self.resume()
        log = CurveLog(self.output_dir / "curves.csv", resume_step=self.step if resume else None)
        start = time.perf_counter()
        validation: dict[str, ErrorMetrics] = {}
        bar = tqdm(
            total=config.steps, initial=self.step, desc="training", unit="step",
            disable=not (self.progress and self.is_main),
        )  # fmt: skip
        try:
            while self.step < config.steps:
                batch = self.stream.next_batch()
                loss = self.train_step(batch)
                bar.update(1)
                if self.is_main and (self.step % max(config.log_every, 1) == 0):
                    bar.set_postfix(
                        loss=f"{float(loss.total.detach()):.3g}",
                        lr=f"{self.schedule(self.step):.2e}",
                    )
                    log.write(
                        CurveRow(
                            step=self.step, split="train", task=batch.task,
                            learning_rate=self.schedule(self.step), loss=float(loss.total.detach()),
                            energy_rmse_per_atom=loss.energy_rmse_per_atom,
                            forces_rmse=loss.forces_rmse,
                            virial_rmse_per_atom=loss.virial_rmse_per_atom,
                        )
                    )  # fmt: skip
                last = self.step == config.steps
                validation = {}
                if (
                    self.validation
                    and self.is_main
                    and (last or (config.validate_every and self.step % config.validate_every == 0))
                ):
                    validation = self.validate()
                    self._log_validation(log, validation)
                if last or (config.checkpoint_every and self.step % config.checkpoint_every == 0):
                    self._save(validation)
        except KeyboardInterrupt:
            self._save(None)
            raise
        finally:
            bar.close()
        return TrainingResult(
            steps=self.step,
            seconds=time.perf_counter() - start,
            validation=validation,
            last_checkpoint=self.checkpoints.latest(),
            best_checkpoint=self.checkpoints.best(),
        )


def _validation_score(metrics: dict[str, ErrorMetrics]) -> float:
    """One number to rank checkpoints: mean over tasks of energy/atom RMSE + force RMSE."""
    scores = [
        (value.energy_rmse_per_atom or 0.0) + (value.forces_rmse or 0.0)
        for value in metrics.values()
    ]
    return sum(scores) / len(scores)
