"""``lamforge test``: errors of a model on store datasets, parity data and plots, zero-shot.

Evaluation streams the chosen frames through the Rust loader in stored order, predicts energy,
forces and (where labelled) virial with the chosen head, and reports RMSE and MAE of energy per
atom, forces and virial per atom. Zero-shot evaluation (the DPA-2 paper's test of a pre-trained
head on a new dataset) first re-fits only the head's per-element energy bias on the dataset's
training frames, then evaluates without any weight update.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lamforge.data.loader import DatasetSource, LoaderConfig, NeighborSpec
from lamforge.data.store import Store
from lamforge.nn.model import DPA2Model
from lamforge.train.finetune import FinetuneConfig, finetune_model
from lamforge.train.initialize import energy_samples
from lamforge.train.metrics import ErrorAccumulator, ErrorMetrics
from lamforge.train.stream import TrainingBatch, training_batch
from lamforge.train.trainer import predict


@dataclass(frozen=True, kw_only=True)
class ParityData:
    """Predictions next to labels, for parity plots.

    Attributes:
        energy_per_atom: [num_frames, 2] (label, prediction) in eV/atom, labelled frames only.
        forces: [num_components, 2] (label, prediction) in eV/Å, labelled atoms only.
    """

    energy_per_atom: np.ndarray
    forces: np.ndarray


@dataclass(frozen=True, kw_only=True)
class DatasetResult:
    """Errors and parity data of one dataset."""

    dataset: str
    metrics: ErrorMetrics
    parity: ParityData


def dataset_batches(
    store_path: Path,
    dataset: str,
    model: DPA2Model,
    head: str,
    split: str | None = None,
    frames_per_batch: int = 8,
) -> list[TrainingBatch]:
    """The frames of ``dataset`` (optionally one split of its index) as batches, stored order."""
    store = Store.open(store_path)
    if dataset not in store:
        raise ValueError(f"dataset {dataset!r} is not in the store {store_path}")
    frames = None
    if split is not None:
        index = store.index(dataset)
        frames = index.filter(pl.col("split") == split)["frame"].to_list()
        if not frames:
            raise ValueError(f"dataset {dataset!r} has no frame in split {split!r}")
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    loader = LoaderConfig(
        store=store_path,
        datasets=(DatasetSource(name=dataset, frames=frames),),
        batch_size=frames_per_batch,
        shuffle=False,
        neighbors=tuple(NeighborSpec(name=f"r{c:g}", cutoff=c, max_neighbors=n) for c, n in specs),
    ).build()
    try:
        return [training_batch(batch, model.elements, {dataset: head}) for batch in loader]
    finally:
        loader.close()


def evaluate_dataset(model: DPA2Model, batches: Sequence[TrainingBatch], dataset: str):
    """Errors and parity data of ``model`` on ``batches``."""
    accumulator = ErrorAccumulator()
    energies, forces = [], []
    for batch in batches:
        prediction = predict(model, batch)
        accumulator.add(prediction, batch.labels)
        labels = batch.labels
        atoms = labels.num_atoms.double()
        mask = labels.energy_mask
        energies.append(
            np.stack([(labels.energy[mask] / atoms[mask]).numpy(),
                      (prediction.energy[mask] / atoms[mask]).numpy()], axis=-1)
        )  # fmt: skip
        mask = labels.forces_mask
        forces.append(
            np.stack([labels.forces[mask].reshape(-1).numpy(),
                      prediction.forces[mask].reshape(-1).numpy()], axis=-1)
        )  # fmt: skip
    return DatasetResult(
        dataset=dataset,
        metrics=accumulator.result(),
        parity=ParityData(
            energy_per_atom=np.concatenate(energies) if energies else np.zeros((0, 2)),
            forces=np.concatenate(forces) if forces else np.zeros((0, 2)),
        ),
    )


def zero_shot_model(
    model: DPA2Model, bias_batches: Sequence[TrainingBatch], head: str, task: str
) -> DPA2Model:
    """``head`` of a pre-trained model with its energy bias re-fitted on ``bias_batches``."""
    return finetune_model(
        model, FinetuneConfig(head=task, from_head=head), energy_samples(bias_batches)
    )


def plot_parity(results: Sequence[DatasetResult], path: Path) -> Path:
    """Energy-per-atom and force parity plots, one row per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(results), 2, figsize=(8, 3.6 * len(results)), squeeze=False)
    for row, result in zip(axes, results, strict=True):
        for axis, data, what, rmse in (
            (row[0], result.parity.energy_per_atom, "energy per atom (eV)",
             result.metrics.energy_rmse_per_atom),
            (row[1], result.parity.forces, "force component (eV/Å)", result.metrics.forces_rmse),
        ):  # fmt: skip
            if len(data):
                axis.plot(data[:, 0], data[:, 1], ".", markersize=2, alpha=0.6)
                low, high = float(data.min()), float(data.max())
                axis.plot([low, high], [low, high], "k--", linewidth=0.8)
            label = "n/a" if rmse is None else f"{rmse:.3g}"
            axis.set_title(f"{result.dataset}: {what}, RMSE {label}", fontsize=9)
            axis.set_xlabel("label")
            axis.set_ylabel("prediction")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
