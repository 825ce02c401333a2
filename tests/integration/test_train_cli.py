"""The training CLI end to end: data import, train, test, finetune, zero-shot test."""

import json

import pytest
import yaml

from lamforge.cli.main import main
from lamforge.data.demo import DemoConfig, demo_tasks, write_extxyz
from lamforge.testing.tiny_models import tiny_dpa2_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    for task in demo_tasks(DemoConfig(frames_per_task=8, seed=5)):
        path = write_extxyz(task, root / f"{task.name}.extxyz")
        assert main(["data", "import", str(path), "--store", str(root / "store"),
                     "--dataset", task.name]) == 0  # fmt: skip
    return root / "store"


def _config(tmp_path, store, tasks):
    custom = tiny_dpa2_config(["Al"]).to_dict()
    custom.pop("elements")
    config = {
        "output_dir": str(tmp_path / "run"),
        "model": {"custom": custom},
        "data": {"store": str(store), "frames_per_batch": 2, "statistics_frames": 4,
                 "tasks": {name: {"train": [name]} for name in tasks}},
        "trainer": {"steps": 4, "validate_every": 0, "checkpoint_every": 0},
    }  # fmt: skip
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_train_test_finetune(store, tmp_path, capsys):
    config = _config(tmp_path / "pre", store, ["bulk", "clusters"])
    assert main(["train", str(config), "--quiet"]) == 0
    model = tmp_path / "pre" / "run" / "model.pt"
    assert model.is_file()
    capsys.readouterr()
    assert main(["test", "--model", str(model), "--store", str(store), "--dataset", "bulk",
                 "--head", "bulk", "--json"]) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["bulk"]["num_frames"] == 8
    assert metrics["bulk"]["forces_rmse"] > 0

    plot = tmp_path / "parity.png"
    assert main(["test", "--model", str(model), "--store", str(store), "--dataset", "alloy",
                 "--head", "bulk", "--zero-shot", "--plot", str(plot)]) == 0  # fmt: skip
    assert "alloy: frames 8" in capsys.readouterr().out
    assert plot.is_file()

    fine = _config(tmp_path / "fine", store, ["alloy"])
    assert main(["finetune", str(fine), "--pretrained", str(model), "--from-head", "bulk",
                 "--quiet", "--steps", "3"]) == 0  # fmt: skip
    assert "trained 3 steps" in capsys.readouterr().out


def test_bad_config_names_the_key(store, tmp_path):
    path = _config(tmp_path, store, ["bulk"])
    text = path.read_text().replace("frames_per_batch", "frames_per_btch")
    path.write_text(text)
    with pytest.raises(SystemExit, match=r"data: unknown key\(s\) \['frames_per_btch'\]"):
        main(["train", str(path)])
