"""`lamforge train` under torchrun: two gloo processes train one model (slow: process start-up)."""

import os
import subprocess
import sys

import pytest
import yaml

from lamforge.data.demo import DemoConfig, demo_tasks, write_extxyz
from lamforge.data.format import DatasetInfo
from lamforge.data.ingest import import_sources
from lamforge.data.store import Store
from lamforge.nn.checkpoint import load_checkpoint
from lamforge.testing.tiny_models import tiny_dpa2_config


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_torchrun_two_processes(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    for task in demo_tasks(DemoConfig(frames_per_task=8, seed=4))[:2]:
        path = write_extxyz(task, tmp_path / f"{task.name}.extxyz")
        import_sources(store, DatasetInfo(name=task.name), [path])
    custom = tiny_dpa2_config(["Al"]).to_dict()
    custom.pop("elements")
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"custom": custom},
        "data": {"store": str(tmp_path / "store"), "frames_per_batch": 2, "num_threads": 1,
                 "tasks": {"bulk": {"train": ["bulk"]}, "surfaces": {"train": ["surfaces"]}}},
        "trainer": {"steps": 4, "validate_every": 0, "checkpoint_every": 2},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-port", "29533", "-m", "lamforge.cli.main", "train",
        str(tmp_path / "config.yaml"), "--quiet",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=800)
    assert result.returncode == 0, result.stderr[-3000:]
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert set(model.heads) == {"bulk", "surfaces"}
    assert (tmp_path / "run" / "checkpoints" / "ckpt-00000004.pt").is_file()
