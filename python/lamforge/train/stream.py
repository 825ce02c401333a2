"""Training batch streams: what the training loop pulls its batches from.

A stream yields training batches forever (the loop decides when to stop) and can save and
restore its position, so that a resumed run sees exactly the batches the uninterrupted run would
have seen. :class:`InMemoryStream` serves small datasets held in memory (the quickstart, tests,
fine-tuning on a few hundred frames); the Rust loader of ``lamforge.data`` serves stores of any
size through the same protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from lamforge.nn.inputs import ModelInput
from lamforge.train.loss import EnergyLabels


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
