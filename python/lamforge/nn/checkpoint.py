"""Save and load lamforge model checkpoints without executing code on load.

A checkpoint is one ``torch.save`` file holding only plain data: ``{"format": ...,
"config": <ModelConfig as nested dict of str/int/float/bool/list>, "state": <state dict of
tensors>}``. Loading uses ``torch.load(weights_only=True)``, which refuses anything but tensors and
plain containers, so a model file cannot run code.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from lamforge.nn.config import ModelConfig
from lamforge.nn.model import DPA2Model

FORMAT = "lamforge.dpa2/1"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Writes a file through ``write(handle)`` atomically: temporary file, fsync, rename.

    A crash or Ctrl-C during the write leaves the previous file (if any) intact, never a half file.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    with open(temporary, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_model_file(model: torch.nn.Module, model_format: str, path: str | Path) -> None:
    """Writes ``{"format", "config", "state"}`` of a model (plain data only), atomically."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    payload = {"format": model_format, "config": model.config.to_dict(), "state": state}
    atomic_write(path, lambda handle: torch.save(payload, handle))


def save_checkpoint(model: DPA2Model, path: str | Path) -> None:
    """Write ``model`` (config, weights, statistics and energy biases) to ``path``."""
    save_model_file(model, FORMAT, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> DPA2Model:
    """Read a model written by :func:`save_checkpoint`.

    Raises:
        ValueError: if the file is not a lamforge checkpoint, naming the file and what is wrong.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(f"{path}: not a loadable lamforge checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: expected checkpoint format {FORMAT!r}, found {found!r}")
    config = ModelConfig.from_dict(payload["config"])
    model = DPA2Model(config)
    missing, unexpected = model.load_state_dict(payload["state"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: state does not match its config (missing {missing}, unexpected {unexpected})"
        )
    return model.to(map_location)
