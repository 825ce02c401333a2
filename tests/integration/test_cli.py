"""The console script: version and quickstart."""

import json
import subprocess
import sys

from lamforge.cli.main import main


def test_help_lists_commands():
    result = subprocess.run(
        [sys.executable, "-m", "lamforge.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for command in ("version", "quickstart"):
        assert command in result.stdout


def test_version_json(capsys):
    assert main(["version", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["lamforge"] == info["rust_core"]
    assert info["torch"]
    assert isinstance(info["cuda_available"], bool)


def test_quickstart_writes_summary(tmp_path, capsys):
    workdir = tmp_path / "qs"
    assert main(["quickstart", "--workdir", str(workdir), "--smoke", "--quiet"]) == 0
    summary = json.loads((workdir / "summary.json").read_text())
    stages = {stage["name"]: stage for stage in summary["stages"]}
    assert list(stages) == ["data", "store", "pretrain", "finetune", "scratch", "md", "distill"]
    assert stages["data"]["metrics"]["frames"] == {
        "bulk": 24, "surfaces": 24, "clusters": 24, "alloy": 24,
    }  # fmt: skip
    for task in stages["data"]["metrics"]["frames"]:
        assert (workdir / "data" / f"{task}.extxyz").is_file()
    assert set(stages["pretrain"]["metrics"]["validation"]) == {"bulk", "surfaces", "clusters"}
    methods = {
        (row["method"], row["train_frames"]) for row in stages["finetune"]["metrics"]["test"]
    }
    assert methods == {("zero-shot", 4), ("fine-tuned", 4), ("zero-shot", 8), ("fine-tuned", 8)}
    assert len(stages["scratch"]["metrics"]["test"]) == 2
    assert stages["md"]["metrics"]["finite"]
    assert stages["distill"]["metrics"]["iterations"] == 1
    assert stages["distill"]["metrics"]["student_atom_steps_per_second"] > 0
    assert (workdir / "pretrain" / "model.pt").is_file()
    assert "pretrain" in capsys.readouterr().out
