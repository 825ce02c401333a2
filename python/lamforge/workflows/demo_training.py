"""The training stages of the quickstart: multi-task pre-training, fine-tuning, from scratch.

On the EMT demo tasks (``lamforge.data.demo``): pre-train one DPA-2 descriptor with one head per
pre-training task (bulk, surfaces, clusters); then, on a few frames of the held-out Cu-Au alloy
task, compare (a) the zero-shot model (pre-trained descriptor and bulk head, bias re-fitted, no
training), (b) fine-tuning from the pre-trained model and (c) the same model trained from scratch
for the same steps, all on the same held-out alloy test frames. This is the paper's workflow at
demo scale; the numbers show the transfer honestly, whatever they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from lamforge.data.demo import PRETRAIN_METALS, DemoTask
from lamforge.nn.config import (
    DescriptorConfig,
    FittingConfig,
    ModelConfig,
    RepformerConfig,
    RepinitConfig,
)
from lamforge.nn.model import DPA2Model
from lamforge.train.finetune import FinetuneConfig, finetune_model
from lamforge.train.frames import InputBuilder, batches_from_atoms
from lamforge.train.initialize import energy_samples, initialize_from_data
from lamforge.train.loss import LossConfig, Prefactor
from lamforge.train.metrics import ErrorMetrics
from lamforge.train.schedule import LearningRateConfig
from lamforge.train.stream import InMemoryStream, TrainingBatch
from lamforge.train.trainer import Trainer, TrainerConfig, evaluate_errors


def demo_model_config(
    heads: Sequence[str], elements: Sequence[str] = PRETRAIN_METALS
) -> ModelConfig:
    """A small DPA-2 for the demo metals: every DPA-2 block, narrow and with short cutoffs.

    Same physics as the shipped presets (repinit + three-body + repformers with residual updates
    and gated pair attention), sized so that the quickstart trains in about a minute on 2 cores.
    """
    return ModelConfig(
        elements=tuple(elements),
        descriptor=DescriptorConfig(
            repinit=RepinitConfig(
                cutoff=5.0, cutoff_smooth=0.5, max_neighbors=60, neurons=(8, 16),
                axis_neurons=4, type_embedding_dim=8, use_three_body=True,
                three_body_cutoff=3.5, three_body_cutoff_smooth=3.0,
                three_body_max_neighbors=24, three_body_neurons=(2, 4, 8),
            ),
            repformer=RepformerConfig(
                cutoff=3.5, cutoff_smooth=3.0, max_neighbors=24, num_layers=2, g1_dim=32,
                g2_dim=8, axis_neurons=4, attn1_hidden=16, attn1_heads=2, attn2_hidden=8,
                attn2_heads=2, attn2_has_gate=True, update_g1_has_attn=False,
                update_g2_has_g1g1=False, update_g2_has_attn=True, update_style="res_residual",
                update_residual=0.01, use_sqrt_nnei=True, g1_out_conv=True, g1_out_mlp=True,
            ),
        ),
        heads={name: FittingConfig(neurons=(32, 32), resnet_dt=True) for name in heads},
    )  # fmt: skip


#: Neighbour blocks the demo model reads (repinit, three-body = repformer cutoff blocks derive).
DEMO_SPECS: tuple[tuple[float, int], ...] = ((5.0, 60), (3.5, 24))


@dataclass(frozen=True, kw_only=True)
class DemoTrainingConfig:
    """Sizes of the quickstart's training stages.

    Attributes:
        pretrain_steps: Optimiser steps of multi-task pre-training.
        finetune_steps: Steps of fine-tuning and of the from-scratch baseline.
        downstream_train_frames: Downstream training-set sizes to compare.
        downstream_test_frames: Held-out downstream frames every model is tested on.
        frames_per_batch: Frames per batch.
        validation_frames: Frames per pre-training task held out for validation.
        learning_rate: Schedule of pre-training (fine-tuning uses a 3x smaller start).
        seed: Seed of splits and streams.
    """

    pretrain_steps: int = 600
    finetune_steps: int = 200
    downstream_train_frames: tuple[int, ...] = (8, 32)
    downstream_test_frames: int = 32
    frames_per_batch: int = 2
    validation_frames: int = 8
    learning_rate: LearningRateConfig = field(
        default_factory=lambda: LearningRateConfig(start=3e-3, stop=1e-4, decay_steps=50)
    )
    seed: int = 0


def _loss() -> LossConfig:
    # deepmd-kit's defaults start at 0.02 / 1000; short demo runs balance them from the start.
    return LossConfig(
        energy=Prefactor(start=0.5, limit=2.0), forces=Prefactor(start=100.0, limit=1.0)
    )


def _batches(frames: Sequence[Atoms], task: str, build: InputBuilder, config: DemoTrainingConfig):
    return batches_from_atoms(
        frames, task, PRETRAIN_METALS, DEMO_SPECS, build, config.frames_per_batch
    )


def _trainer_config(steps: int, learning_rate: LearningRateConfig) -> TrainerConfig:
    return TrainerConfig(
        steps=steps, learning_rate=learning_rate, loss=_loss(), log_every=10,
        validate_every=max(steps // 4, 1), checkpoint_every=max(steps // 2, 1), keep_last=2,
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class PretrainResult:
    """The pre-trained model and its validation metrics per task."""

    model: DPA2Model
    validation: dict[str, ErrorMetrics]
    seconds: float


def pretrain(
    tasks: Sequence[DemoTask],
    config: DemoTrainingConfig,
    workdir: Path,
    build: InputBuilder,
    progress: bool = True,
) -> PretrainResult:
    """Multi-task pre-training on every non-downstream task, one head each."""
    train: dict[str, list[TrainingBatch]] = {}
    valid: dict[str, list[TrainingBatch]] = {}
    for task in tasks:
        if task.downstream:
            continue
        held_out = config.validation_frames
        train[task.name] = _batches(task.frames[held_out:], task.name, build, config)
        valid[task.name] = _batches(task.frames[:held_out], task.name, build, config)
    model = DPA2Model(demo_model_config(list(train)))
    initialize_from_data(model, {name: batches[:16] for name, batches in train.items()})
    trainer = Trainer(
        model,
        _trainer_config(config.pretrain_steps, config.learning_rate),
        InMemoryStream(train, seed=config.seed),
        Path(workdir),
        validation={name: (lambda b=batches: b) for name, batches in valid.items()},
        progress=progress,
        extra_state={"model_config": model.config.to_dict()},
    )
    result = trainer.run()
    return PretrainResult(model=model, validation=result.validation, seconds=result.seconds)


@dataclass(frozen=True, kw_only=True)
class TransferRow:
    """Test errors on the held-out downstream frames for one method and training-set size."""

    method: str
    train_frames: int
    metrics: ErrorMetrics


def compare_transfer(
    pretrained: DPA2Model,
    downstream: DemoTask,
    config: DemoTrainingConfig,
    workdir: Path,
    build: InputBuilder,
    progress: bool = True,
    from_head: str = "bulk",
    on_model: Callable[[str, int, DPA2Model], None] | None = None,
) -> list[TransferRow]:
    """Zero-shot, fine-tuned and from-scratch errors on the downstream test frames.

    ``on_model(method, train_frames, model)`` is called with every trained model (e.g. to save
    the fine-tuned one for MD and distillation).
    """
    name = downstream.name
    test = _batches(downstream.frames[: config.downstream_test_frames], name, build, config)
    pool = downstream.frames[config.downstream_test_frames :]
    learning_rate = dataclasses.replace(config.learning_rate, start=config.learning_rate.start / 3)
    rows = []
    for size in config.downstream_train_frames:
        if size > len(pool):
            raise ValueError(f"{size} downstream training frames requested, {len(pool)} available")
        train = _batches(pool[:size], name, build, config)
        sample = energy_samples(train)
        finetune = FinetuneConfig(head=name, from_head=from_head)
        zero_shot = finetune_model(pretrained, finetune, sample)
        rows.append(TransferRow(method="zero-shot", train_frames=size,
                                metrics=evaluate_errors(zero_shot, test)))  # fmt: skip
        candidates = {
            "fine-tuned": finetune_model(pretrained, finetune, sample),
            "from scratch": _scratch_model(pretrained.config, name, train),
        }
        for method, model in candidates.items():
            folder = Path(workdir) / f"{method.replace(' ', '-')}-{size}"
            Trainer(
                model,
                _trainer_config(config.finetune_steps, learning_rate),
                InMemoryStream({name: train}, seed=config.seed),
                folder,
                progress=progress,
                extra_state={"model_config": model.config.to_dict()},
            ).run()
            rows.append(TransferRow(method=method, train_frames=size,
                                    metrics=evaluate_errors(model, test)))  # fmt: skip
            if on_model is not None:
                on_model(method, size, model)
    return rows


def _scratch_model(config: ModelConfig, head: str, train: list[TrainingBatch]) -> DPA2Model:
    fitting = next(iter(config.heads.values()))
    model = DPA2Model(dataclasses.replace(config, heads={head: fitting}, seed=config.seed + 1))
    initialize_from_data(model, {head: train})
    return model
