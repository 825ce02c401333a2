"""load_checkpoint on files that are not deepmd-kit training checkpoints (no deepmd-kit needed)."""

from __future__ import annotations

import warnings

import pytest
import torch

from lamforge.interop.deepmd import load_checkpoint

CALLS: list[str] = []


def _record_call() -> dict:
    CALLS.append("unpickled")
    return {}


class Payload:
    """An object whose unpickling would run code (``_record_call``)."""

    def __reduce__(self):
        return (_record_call, ())


def test_unsafe_pickle_is_refused_without_running_it(tmp_path):
    path = tmp_path / "model.ckpt-1.pt"
    torch.save({"model": {"_extra_state": {"model_params": Payload()}}}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_checkpoint(path)
    assert CALLS == []


def test_frozen_torchscript_model_is_named(tmp_path):
    path = tmp_path / "frozen_model.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; it still writes deepmd's format
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path)
    with pytest.raises(ValueError, match="TorchScript"):
        load_checkpoint(path)


def test_plain_tensor_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a deepmd-kit PyTorch training checkpoint"):
        load_checkpoint(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")
