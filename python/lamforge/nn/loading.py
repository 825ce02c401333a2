"""One entry point that reads any model file lamforge can evaluate.

* a lamforge DPA-2 file (``lamforge.nn.checkpoint``, format ``lamforge.dpa2/1``);
* a lamforge se_e2_a file (``lamforge.nn.se_e2_a``, a distillation student);
* a training checkpoint of a DPA-2 run (``lamforge train``'s ``checkpoints/ckpt-*.pt`` and
  ``best.pt``: the model state and its config), so intermediate models can be tested and run;
* a deepmd-kit PyTorch training checkpoint of a DPA-2 energy model (``lamforge.interop.deepmd``).

Every path reads with ``torch.load(weights_only=True)``: opening a model file never runs code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lamforge.nn.checkpoint import FORMAT as DPA2_FORMAT
from lamforge.nn.checkpoint import load_checkpoint
from lamforge.nn.config import ModelConfig
from lamforge.nn.model import DPA2Model
from lamforge.nn.se_e2_a import FORMAT as SE_A_FORMAT
from lamforge.nn.se_e2_a import load_se_a


def load_model(path: str | Path) -> nn.Module:
    """Reads a lamforge model file (DPA-2 or se_e2_a) or a deepmd-kit DPA-2 checkpoint.

    Raises:
        ValueError: the file is missing or is none of these, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not plain data: possibly a deepmd-kit file, which the interop reads
        payload = None
    format_name = payload.get("format") if isinstance(payload, dict) else None
    if format_name == SE_A_FORMAT:
        return load_se_a(path)
    if format_name == DPA2_FORMAT:
        return load_checkpoint(path)
    if isinstance(payload, dict) and "model" in payload and "model_config" in payload:
        return _from_training_checkpoint(path, payload)
    from lamforge.interop.deepmd import load_checkpoint as load_deepmd

    try:
        return load_deepmd(path)
    except Exception as error:
        raise ValueError(
            f"{path}: neither a lamforge model file nor a readable deepmd-kit checkpoint ({error})"
        ) from error


def _from_training_checkpoint(path: Path, payload: dict) -> DPA2Model:
    """The DPA-2 model of a training checkpoint (its weights, statistics and biases)."""
    try:
        model = DPA2Model(ModelConfig.from_dict(payload["model_config"]))
    except Exception as error:
        raise ValueError(
            f"{path}: training checkpoint of a model that is not DPA-2 ({error})"
        ) from error
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: model state does not match its config "
            f"(missing {missing}, unexpected {unexpected})"
        )
    return model
