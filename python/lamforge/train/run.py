"""Builds and runs a training or fine-tuning job from a :class:`~lamforge.train.config.RunConfig`.

Steps: open the store; choose each task's training and validation frames; build the model (a
preset with one head per task, or the fine-tuning model from a pre-trained one); set environment
statistics and energy biases from a sample of the training data; stream batches through the Rust
loader (multi-task: each step draws one task by weight); train; write ``model.pt`` (the model alone,
for inference) and the learning-curve plot into ``output_dir``.

Under ``torchrun`` the process group is initialised here (NCCL on GPUs, gloo on CPUs) and each
rank streams its own part of every epoch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from ase.data import atomic_numbers

from lamforge.config import save_yaml
from lamforge.data.loader import DatasetSource, LoaderConfig, NeighborSpec, StoreLoader
from lamforge.data.store import Store
from lamforge.nn import presets
from lamforge.nn.checkpoint import save_checkpoint
from lamforge.nn.config import ModelConfig
from lamforge.nn.inputs import ModelInput, NeighborList
from lamforge.nn.loading import load_model
from lamforge.nn.model import DPA2Model
from lamforge.train.config import RunConfig, TaskData
from lamforge.train.curves import plot_curves
from lamforge.train.finetune import FinetuneConfig, finetune_model
from lamforge.train.initialize import energy_samples, initialize_from_data
from lamforge.train.stream import LoaderStream, TrainingBatch, training_batch
from lamforge.train.trainer import Trainer, TrainingResult

#: Steps of one "epoch" of task-weighted sampling: a constant, so that a run resumed with more
#: steps continues the same sample order.
WEIGHTED_EPOCH = 1000


def init_distributed() -> tuple[int, int]:
    """Initialises torch.distributed under torchrun; returns (rank, world_size)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _frames(store: Store, dataset: str, split: str | None) -> list[int] | None:
    if split is None:
        return None
    index = store.index(dataset)
    if index["split"].null_count() == len(index):
        raise ValueError(
            f"dataset {dataset!r} has no split; run `lamforge data split` first or set split: false"
        )
    return index.filter(pl.col("split") == split)["frame"].to_list()


def _sources(store: Store, task: TaskData, validation: bool) -> list[DatasetSource]:
    sources = []
    for name in task.train:
        if name not in store:
            raise ValueError(f"dataset {name!r} is not in the store {store.path}")
        if validation and not task.split:
            continue
        frames = _frames(store, name, ("valid" if validation else "train") if task.split else None)
        sources.append(DatasetSource(name=name, frames=frames))
    if validation:
        sources += [DatasetSource(name=name) for name in task.validation]
    return sources


def _weighted(store: Store, config: RunConfig, sources: dict[str, list[DatasetSource]]):
    """Per-dataset weights: task weight (default its frame count) shared by frame counts."""
    weighted = []
    for task, task_sources in sources.items():
        counts = [
            len(s.frames) if s.frames is not None else store.info(s.name).num_frames
            for s in task_sources
        ]
        weight = config.data.tasks[task].weight
        total = weight if weight is not None else float(sum(counts))
        weighted += [
            dataclasses.replace(s, weight=total * count / max(sum(counts), 1))
            for s, count in zip(task_sources, counts, strict=True)
        ]
    return weighted


def data_elements(store: Store, config: RunConfig) -> tuple[str, ...]:
    """Elements of every training dataset, by atomic number."""
    symbols = {
        e for task in config.data.tasks.values() for n in task.train for e in store.info(n).elements
    }
    return tuple(sorted(symbols, key=lambda symbol: atomic_numbers[symbol]))


def build_model(config: RunConfig, elements: Sequence[str]) -> DPA2Model:
    """The model of ``config.model`` with one head per task."""
    section = config.model
    heads = list(config.data.tasks)
    if section.custom is not None:
        model_config = ModelConfig.from_dict({**section.custom, "elements": list(elements)})
        fitting = next(iter(model_config.heads.values()))
        model_config = dataclasses.replace(model_config, heads=dict.fromkeys(heads, fitting))
    else:
        preset = getattr(presets, section.preset)
        model_config = preset(elements, precision=section.precision, heads=heads)
    return DPA2Model(dataclasses.replace(model_config, seed=config.seed + 1))


def _loader(config: RunConfig, sources, model: DPA2Model, **options) -> StoreLoader:
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    return LoaderConfig(
        store=config.data.store,
        datasets=tuple(sources),
        batch_size=config.data.frames_per_batch,
        max_atoms=config.data.max_atoms,
        seed=config.seed,
        neighbors=tuple(
            NeighborSpec(name=f"r{cutoff:g}", cutoff=cutoff, max_neighbors=cap)
            for cutoff, cap in specs
        ),
        num_threads=config.data.num_threads,
        **options,
    ).build()


def _sample(
    store: Store,
    loader: StoreLoader,
    model: DPA2Model,
    tasks: dict[str, str],
    count: int,
    seed: int,
    keep_neighbors: bool = True,
) -> dict[str, list[TrainingBatch]]:
    """``count`` random training frames of each dataset, as batches of its task.

    Seeded by the run's seed. Random, not the first frames: stores are often grouped (by
    composition, trajectory or source file), and statistics or energy biases from one group
    misfit the others. ``keep_neighbors=False`` drops the neighbour lists of the batches (empty
    blocks), for a sample that only needs element counts and labels (the energy bias): a
    thousand frames of 192 atoms would otherwise hold about a gigabyte of neighbour lists.
    """
    samples: dict[str, list[TrainingBatch]] = {task: [] for task in set(tasks.values())}
    for dataset_id, name in enumerate(loader.dataset_names):
        source = loader.config.datasets[dataset_id]
        ids = np.asarray(
            source.frames if source.frames is not None else range(store.info(name).num_frames)
        )
        rng = np.random.default_rng([seed, dataset_id])
        ids = np.sort(rng.choice(ids, size=min(count, len(ids)), replace=False)).tolist()
        for start in range(0, len(ids), 8):
            pairs = [(dataset_id, int(i)) for i in ids[start : start + 8]]
            batch = training_batch(loader.collate(pairs), model.elements, tasks)
            if not keep_neighbors:
                batch.inputs = _without_neighbors(batch.inputs)
            samples[tasks[name]].append(batch)
    return samples


def _without_neighbors(inputs: ModelInput) -> ModelInput:
    """``inputs`` with every neighbour block replaced by an empty one (no slots)."""
    num_atoms = inputs.num_atoms
    empty = tuple(
        NeighborList(
            cutoff=block.cutoff,
            max_neighbors=0,
            index=block.index.new_empty((num_atoms, 0)),
            shifts=block.shifts.new_empty((num_atoms, 0, 3)),
        )
        for block in inputs.neighbors
    )
    return dataclasses.replace(inputs, neighbors=empty)


def run(config: RunConfig, resume: bool = False, progress: bool = True) -> TrainingResult:
    """Trains (or fine-tunes, when ``config.finetune`` is set) and writes ``model.pt``."""
    rank, world_size = init_distributed()
    torch.manual_seed(config.seed)
    store = Store.open(config.data.store)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_yaml(config, output / "config.yaml")
    train_sources = {t: _sources(store, task, False) for t, task in config.data.tasks.items()}
    tasks = {s.name: t for t, sources in train_sources.items() for s in sources}

    if config.finetune is None:
        model = build_model(config, config.model.elements or data_elements(store, config))
    else:
        if len(config.data.tasks) != 1:
            raise ValueError("fine-tuning trains one downstream task; data.tasks has several")
        model = load_pretrained(config.finetune.pretrained)
    sources = _weighted(store, config, train_sources)
    loader = _loader(
        config, sources, model, sampling="weighted", batches_per_epoch=WEIGHTED_EPOCH,
        rank=rank, world_size=world_size,
    )  # fmt: skip
    if not resume:
        samples = _sample(store, loader, model, tasks, config.data.statistics_frames, config.seed)
        if config.finetune is None:
            bias = _sample(
                store, loader, model, tasks, config.data.bias_frames, config.seed,
                keep_neighbors=False,
            )  # fmt: skip
            initialize_from_data(model, samples, bias)
        else:
            ((task, batches),) = samples.items()
            model = finetune_model(
                model,
                FinetuneConfig(
                    head=task, from_head=config.finetune.from_head,
                    bias_mode=config.finetune.bias_mode,
                    freeze_descriptor=config.finetune.freeze_descriptor, seed=config.seed,
                ),
                energy_samples(batches),
            )  # fmt: skip
    validation = {}
    for task, task_data in config.data.tasks.items():
        valid = _sources(store, task_data, True)
        if valid and rank == 0:
            valid_loader = _loader(config, valid, model, shuffle=False)
            validation[task] = _validation_batches(valid_loader, model.elements, task)
    trainer_config = dataclasses.replace(
        config.trainer,
        task_losses={t: d.loss for t, d in config.data.tasks.items() if d.loss is not None},
    )
    trainer = Trainer(
        model, trainer_config, LoaderStream(loader, model.elements, tasks), output,
        validation=validation, progress=progress,
        extra_state={"model_config": model.config.to_dict()},
    )  # fmt: skip
    result = trainer.run(resume=resume)
    loader.close()
    if rank == 0:
        save_checkpoint(model, output / "model.pt")
        plot_curves(output / "curves.csv", output / "curves.png")
    return result


def _validation_batches(loader: StoreLoader, elements, task: str):
    tasks = dict.fromkeys(loader.dataset_names, task)
    batches = [training_batch(batch, elements, tasks) for batch in loader]
    loader.close()
    return lambda: batches


def load_pretrained(path: Path) -> DPA2Model:
    """A lamforge model file, or a deepmd-kit DPA-2 checkpoint through the interop."""
    model = load_model(path)
    if not isinstance(model, DPA2Model):
        raise ValueError(f"{path}: fine-tuning needs a DPA-2 model, got {type(model).__name__}")
    return model
