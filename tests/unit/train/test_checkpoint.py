"""Checkpoints: atomic, rotated, best kept, loaded without executing code."""

import pickle

import pytest
import torch

from lamforge.train.checkpoint import CheckpointManager, load_file, save_file


def _payload(value):
    return {"model": {"weight": torch.full((2, 2), float(value))}, "rng": torch.get_rng_state()}


def test_keeps_last_n_and_best(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step, validation in [(10, 3.0), (20, 1.0), (30, 2.0), (40, 5.0)]:
        manager.save(step, _payload(step), validation=validation)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt")) == [
        "ckpt-00000030.pt", "ckpt-00000040.pt",
    ]  # fmt: skip
    assert manager.latest() == tmp_path / "ckpt-00000040.pt"
    best = load_file(manager.best())
    assert best["step"] == 20
    assert float(best["model"]["weight"][0, 0]) == 20.0
    again = CheckpointManager(tmp_path, keep_last=2)
    assert again.index.best_step == 20
    assert again.index.steps == [30, 40]
    assert not list(tmp_path.glob(".*partial"))


def test_failed_write_leaves_previous_files_intact(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, _payload(1))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        manager.save(2, {"model": Unpicklable()})
    assert manager.latest() == tmp_path / "ckpt-00000001.pt"
    assert load_file(manager.latest())["step"] == 1
    assert not (tmp_path / "ckpt-00000002.pt").exists()


def test_index_ignores_missing_files(tmp_path):
    manager = CheckpointManager(tmp_path)
    manager.save(1, _payload(1))
    manager.save(2, _payload(2))
    (tmp_path / "ckpt-00000002.pt").unlink()
    assert CheckpointManager(tmp_path).latest() == tmp_path / "ckpt-00000001.pt"


def test_loading_never_executes_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Exploit()}))
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_file(path)
    truncated = tmp_path / "truncated.pt"
    save_file(_payload(1), truncated)
    truncated.write_bytes(truncated.read_bytes()[:50])
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_file(truncated)
    with pytest.raises(FileNotFoundError):
        load_file(tmp_path / "missing.pt")
