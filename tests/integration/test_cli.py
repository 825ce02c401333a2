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
    code = main(["quickstart", "--workdir", str(workdir), "--frames-per-task", "4", "--quiet"])
    assert code == 0
    summary = json.loads((workdir / "summary.json").read_text())
    data = next(stage for stage in summary["stages"] if stage["name"] == "data")
    assert data["seconds"] > 0
    assert data["metrics"]["frames"] == {"bulk": 4, "surfaces": 4, "clusters": 4, "alloy": 4}
    for task in data["metrics"]["frames"]:
        assert (workdir / "data" / f"{task}.extxyz").is_file()
    assert "stage" in capsys.readouterr().out
