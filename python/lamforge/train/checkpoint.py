"""Checkpoints: atomic writes, the last N kept, the best by validation loss, safe loading.

A checkpoint is one ``torch.save`` file of plain data (tensors, numbers, strings, lists and dicts):
model and optimiser state dicts, the step, the RNG states and whatever the trainer adds. It is
loaded with ``torch.load(weights_only=True)``, so opening a checkpoint never executes code.

Files in the checkpoint folder::

    ckpt-00001000.pt      one per saved step; the newest ``keep_last`` are kept
    best.pt               a copy of the checkpoint with the lowest validation loss
    checkpoints.json      index: saved steps, the best step and its validation loss

Every file is written to a temporary name, flushed to disk and renamed into place, so a crash or a
Ctrl-C during a save leaves the previous checkpoints intact and never a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lamforge.nn.checkpoint import atomic_write

INDEX_FILE = "checkpoints.json"
BEST_FILE = "best.pt"


def save_file(payload: dict[str, Any], path: Path) -> None:
    """Writes ``payload`` with ``torch.save`` atomically."""
    atomic_write(Path(path), lambda handle: torch.save(payload, handle))


def load_file(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads a checkpoint safely (``weights_only=True``: plain data only, no code).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable checkpoint (truncated, or holds arbitrary objects).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise ValueError(f"checkpoint {path} cannot be read safely: {error}") from error


@dataclass(kw_only=True)
class CheckpointIndex:
    """Contents of ``checkpoints.json``."""

    steps: list[int] = field(default_factory=list)
    best_step: int | None = None
    best_validation: float | None = None


class CheckpointManager:
    """Saves and finds the checkpoints of one training run.

    Args:
        directory: Folder of the checkpoints (created if missing).
        keep_last: Number of step checkpoints kept (older ones are deleted; ``best.pt`` stays).
    """

    def __init__(self, directory: Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1, got {keep_last}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.keep_last = keep_last
        self.index = self._read_index()

    def _read_index(self) -> CheckpointIndex:
        path = self.directory / INDEX_FILE
        if not path.is_file():
            return CheckpointIndex()
        data = json.loads(path.read_text())
        # Only steps whose file survived count (a crash between file and index writes is safe).
        steps = [step for step in data.get("steps", []) if self.path(step).is_file()]
        return CheckpointIndex(
            steps=steps,
            best_step=data.get("best_step"),
            best_validation=data.get("best_validation"),
        )

    def _write_index(self) -> None:
        text = json.dumps(self.index.__dict__, indent=2).encode()
        atomic_write(self.directory / INDEX_FILE, lambda handle: handle.write(text))

    def path(self, step: int) -> Path:
        """File name of the checkpoint of ``step``."""
        return self.directory / f"ckpt-{step:08d}.pt"

    def save(self, step: int, payload: dict[str, Any], validation: float | None = None) -> Path:
        """Writes the checkpoint of ``step``; updates ``best.pt`` when ``validation`` improves.

        Returns:
            The path of the step checkpoint.
        """
        path = self.path(step)
        save_file({**payload, "step": step, "validation": validation}, path)
        if step not in self.index.steps:
            self.index.steps.append(step)
        if validation is not None and (
            self.index.best_validation is None or validation < self.index.best_validation
        ):
            temporary = self.directory / f".{BEST_FILE}.partial"
            shutil.copyfile(path, temporary)
            os.replace(temporary, self.directory / BEST_FILE)
            self.index.best_step, self.index.best_validation = step, validation
        for old in self.index.steps[: -self.keep_last]:
            self.path(old).unlink(missing_ok=True)
        self.index.steps = self.index.steps[-self.keep_last :]
        self._write_index()
        return path

    def latest(self) -> Path | None:
        """The newest step checkpoint, or None when there is none."""
        return self.path(self.index.steps[-1]) if self.index.steps else None

    def best(self) -> Path | None:
        """``best.pt``, or None when no checkpoint had a validation loss."""
        path = self.directory / BEST_FILE
        return path if path.is_file() else None
