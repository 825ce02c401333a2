"""Training batch streams: what the training loop pulls its batches from.

A stream yields training batches forever (the loop decides when to stop) and can save and
restore its position, so that a resumed run sees exactly the batches the uninterrupted run would
have seen. :class:`InMemoryStream` serves small datasets held in memory (the quickstart, tests,
fine-tuning on a few hundred frames); the Rust loader of ``lamforge.data`` serves stores of any
size through the same protocol.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from lamforge.data.batch import Batch
from lamforge.nn.inputs import ModelInput, NeighborList, atom_types_from_numbers
from lamforge.train.loss import EnergyLabels

if TYPE_CHECKING:  # the store loader pulls in polars, which in-memory training never needs
    from lamforge.data.loader import StoreLoader


@dataclass(kw_only=True)
class TrainingBatch:
    """A batch of one task: model input, labels, and the task (head) it belongs to."""

    task: str
    inputs: ModelInput
    labels: EnergyLabels


class BatchStream(Protocol):
    """An endless, resumable source of training batches."""

    def next_batch(self) -> TrainingBatch:
        """The next batch."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Position of the stream, as plain data."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from a saved position."""
        ...


class InMemoryStream:
    """Draws a task per step with the given weights, then that task's next batch.

    Each task's batches are reshuffled at every pass over them (an epoch of that task). Seeded:
    the same seed gives the same sequence of batches.

    Args:
        batches: Pre-built batches of each task.
        weights: Sampling weight of each task (default: proportional to its number of batches,
            deepmd-kit's ``prob_sys_size``); normalised to sum to one.
        seed: Seed of the task draws and the shuffles.
    """

    def __init__(
        self,
        batches: Mapping[str, Sequence[TrainingBatch]],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        if not batches or any(len(b) == 0 for b in batches.values()):
            raise ValueError("every task of an InMemoryStream needs at least one batch")
        self.tasks = sorted(batches)
        self.batches = {task: list(batches[task]) for task in self.tasks}
        raw = weights or {task: float(len(self.batches[task])) for task in self.tasks}
        missing = sorted(set(self.tasks) - set(raw))
        if missing or any(raw[task] < 0 for task in self.tasks):
            raise ValueError(f"weights must be non-negative and given for every task {missing}")
        total = sum(raw[task] for task in self.tasks)
        self.probabilities = np.array([raw[task] / total for task in self.tasks])
        self.rng = np.random.default_rng(seed)
        self.orders = {task: np.array([], dtype=np.int64) for task in self.tasks}
        self.positions = dict.fromkeys(self.tasks, 0)

    def next_batch(self) -> TrainingBatch:
        """The next batch of a randomly drawn task."""
        task = self.tasks[int(self.rng.choice(len(self.tasks), p=self.probabilities))]
        if self.positions[task] >= len(self.orders[task]):
            self.orders[task] = self.rng.permutation(len(self.batches[task]))
            self.positions[task] = 0
        batch = self.batches[task][int(self.orders[task][self.positions[task]])]
        self.positions[task] += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """RNG state, per-task order and position."""
        return {
            "rng": self.rng.bit_generator.state,
            "orders": {task: order.tolist() for task, order in self.orders.items()},
            "positions": dict(self.positions),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from :meth:`state_dict`."""
        self.rng.bit_generator.state = state["rng"]
        self.orders = {
            task: np.array(order, dtype=np.int64) for task, order in state["orders"].items()
        }
        self.positions = dict(state["positions"])


def warn_dropped_neighbors(batch: Batch) -> bool:
    """Warn if a neighbour cap left pairs out of a frame of ``batch``; True if it warned.

    The first such frame is named (dataset and frame id). Its atoms keep their nearest
    neighbours, as in deepmd-kit, so the model sees a truncated environment there; the loader's
    ``error_on_dropped`` turns this into an error instead.
    """
    for block in batch.neighbors:
        frames = torch.nonzero(block.num_dropped).flatten()
        if frames.numel() == 0:
            continue
        first = int(frames[0])
        dataset = batch.dataset_names[int(batch.dataset_id[first])]
        warnings.warn(
            f"training data: frame {int(batch.frame_id[first])} of dataset {dataset!r} has "
            f"{int(block.num_dropped[first])} pair(s) within {block.cutoff:g} Å beyond the "
            f"{block.name} cap max_neighbors={block.max_neighbors} ({frames.numel()} frame(s) "
            "of this batch are truncated; warned once). Those atoms keep their nearest "
            "neighbours; raise the cap, or set the loader's error_on_dropped to stop instead.",
            RuntimeWarning,
            stacklevel=3,
        )
        return True
    return False


def training_batch(
    batch: Batch, elements: Sequence[str], tasks: Mapping[str, str]
) -> TrainingBatch:
    """Converts a loader :class:`~lamforge.data.batch.Batch` of one task into a training batch.

    Args:
        batch: Frames of datasets that all belong to one task.
        elements: The model's element list.
        tasks: Task (head) of each dataset name.

    Raises:
        ValueError: the batch mixes tasks (build the loader with ``mixed_batches=False``), or a
            dataset has no task.
    """
    names = {batch.dataset_names[int(i)] for i in batch.dataset_id.unique()}
    unknown = sorted(names - set(tasks))
    if unknown:
        raise ValueError(f"datasets {unknown} have no task; tasks are given for {sorted(tasks)}")
    batch_tasks = {tasks[name] for name in names}
    if len(batch_tasks) != 1:
        raise ValueError(f"a training batch must hold one task, got {sorted(batch_tasks)}")
    num_atoms = batch.atom_offsets[1:] - batch.atom_offsets[:-1]
    inputs = ModelInput(
        positions=batch.positions,
        atom_types=atom_types_from_numbers(batch.atomic_numbers, elements),
        cell=batch.cell,
        frame_index=batch.atom_frame,
        neighbors=tuple(
            NeighborList(
                cutoff=block.cutoff,
                max_neighbors=block.max_neighbors,
                index=block.index,
                shifts=block.shifts,
            )
            for block in batch.neighbors
        ),
    )
    labels = EnergyLabels(
        energy=batch.energy,
        energy_mask=batch.has_energy,
        forces=batch.forces,
        forces_mask=batch.has_forces[batch.atom_frame],
        num_atoms=num_atoms,
        virial=batch.virial if bool(batch.has_virial.any()) else None,
        virial_mask=batch.has_virial if bool(batch.has_virial.any()) else None,
    )
    return TrainingBatch(task=batch_tasks.pop(), inputs=inputs, labels=labels)


class LoaderStream:
    """An endless stream over a store loader: epoch after epoch, resumable.

    Args:
        loader: The Rust-backed loader (``LoaderConfig(...).build()``), one task per batch.
        elements: The model's element list.
        tasks: Task (head) of each dataset of the loader.
    """

    def __init__(self, loader: StoreLoader, elements: Sequence[str], tasks: Mapping[str, str]):
        self.loader = loader
        self.elements = tuple(elements)
        self.tasks = dict(tasks)
        self._iterator: Iterator[Batch] | None = None
        self._warned_dropped = False

    def next_batch(self) -> TrainingBatch:
        """The next batch; a finished epoch starts the next one."""
        for _ in range(2):
            if self._iterator is None:
                self._iterator = iter(self.loader)
            try:
                batch = next(self._iterator)
                if not self._warned_dropped:
                    self._warned_dropped = warn_dropped_neighbors(batch)
                return training_batch(batch, self.elements, self.tasks)
            except StopIteration:
                self._iterator = None
                self.loader.set_epoch(self.loader.epoch + 1)
        raise RuntimeError("the loader yields no batch: are its datasets empty?")

    def state_dict(self) -> dict[str, Any]:
        """The loader's position."""
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continues from a saved loader position."""
        self.loader.load_state_dict(state)
        self._iterator = None
