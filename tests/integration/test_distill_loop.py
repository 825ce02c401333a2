"""`lamforge distill`: a tiny loop end to end on EMT alloy frames, resume, stopping rule, errors."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
import torch
import yaml
from distill_world import build_world, tiny_config

from lamforge.cli.main import main
from lamforge.config import save_yaml
from lamforge.data.store import Store
from lamforge.distill.loop import Distillation
from lamforge.distill.loss import DistillLossConfig
from lamforge.distill.select import TrustLevels
from lamforge.distill.teacher import file_sha256


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("distill_world"))


def _rows(folder):
    with open(folder / "report.csv") as stream:
        return list(csv.DictReader(stream))


def test_cli_loop_runs_resumes_and_records_provenance(world, tmp_path, capsys):
    store_path, teacher = world
    output = tmp_path / "run"
    config_path = tmp_path / "distill.yaml"
    save_yaml(tiny_config(store_path, teacher, output), config_path)

    assert main(["distill", str(config_path), "--max-iterations", "1", "--quiet"]) == 0
    first = _rows(output)
    assert len(first) == 1 and int(first[0]["frames_explored"]) == 2 * 2 * 3
    assert "iteration 0: trained on 6 frames" in capsys.readouterr().out

    # Rerunning continues after the finished iteration (the first row is kept as it was).
    assert main(["distill", str(config_path), "--quiet"]) == 0
    rows = _rows(output)
    assert len(rows) == 2 and rows[0] == first[0]
    assert "(done) iteration 0" in capsys.readouterr().out
    state = json.loads((output / "state.json").read_text())
    assert state["student"] == "iteration_001/student.pt"
    assert (output / "iteration_001" / "deviations.csv").is_file()
    # Iteration 1 trains on the initial frames plus what iteration 0 added.
    assert int(rows[1]["training_frames"]) == 6 + int(rows[0]["frames_added"])
    for row in rows:
        assert float(row["holdout_forces_rmse_teacher"]) > 0
        assert float(row["holdout_forces_rmse_reference"]) > 0  # EMT labels of the source
    assert sum(
        float(rows[1][k]) for k in ("accurate_fraction", "candidate_fraction", "rejected_fraction")
    ) == pytest.approx(1.0)

    store = Store.open(store_path)
    added = [name for name in state["datasets"] if name.startswith("distill_iter")]
    assert int(rows[0]["frames_added"]) == (store.info(added[0]).num_frames if added else 0)
    info = store.info("distill_initial")
    assert info.num_frames == 6
    assert file_sha256(teacher) in info.level_of_theory.functional
    assert store.info("distill_holdout").num_frames == 4


def test_stops_after_two_accurate_iterations_with_extra_terms(world, tmp_path):
    store_path, teacher = world
    config = tiny_config(
        store_path, teacher, tmp_path / "run", max_iterations=5, dataset_prefix="converge"
    )
    # Trust levels far above any deviation: every explored frame is accurate, nothing is added.
    config = dataclasses.replace(
        config,
        trust=TrustLevels(low=100.0, high=200.0),
        loss=DistillLossConfig(atomic_energy=1.0, hessian=0.1),
    )
    # A two-student ensemble: its spread is reported for every explored frame.
    config = dataclasses.replace(
        config, exploration=dataclasses.replace(config.exploration, ensemble_size=2)
    )
    state = Distillation(config).run()
    assert state.converged and state.completed_iterations == 2
    assert [row.frames_added for row in state.rows] == [0, 0]
    assert state.datasets == ["converge_initial"]
    assert all(row.max_ensemble_spread is not None and row.max_ensemble_spread > 0
               for row in state.rows)  # fmt: skip
    assert (tmp_path / "run" / "iteration_001" / "student_1.pt").is_file()
    with open(tmp_path / "run" / "iteration_001" / "deviations.csv") as stream:
        spreads = [float(row["ensemble_spread"]) for row in csv.DictReader(stream)]
    assert len(spreads) == 12 and max(spreads) == pytest.approx(state.rows[1].max_ensemble_spread)


def test_errors_name_the_problem(world, tmp_path):
    store_path, teacher = world
    config_path = tmp_path / "bad.yaml"
    data = yaml.safe_load(
        yaml.safe_dump(
            {
                "store": str(store_path),
                "teacher": {"model": str(teacher)},
                "source": {"dataset": "alloy"},
                "trust": {"lowest": 0.1},
            }
        )
    )
    config_path.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit, match=r"trust: unknown key\(s\) \['lowest'\]"):
        main(["distill", str(config_path)])
    missing = tiny_config(store_path, teacher, tmp_path / "out")
    missing = dataclasses.replace(
        missing, source=dataclasses.replace(missing.source, dataset="nowhere")
    )
    with pytest.raises(ValueError, match="source dataset 'nowhere' is not in the store"):
        Distillation(missing)
    # A rerun with a different teacher is refused: the labels would mix two teachers.
    output = tmp_path / "run"
    run = Distillation(tiny_config(store_path, teacher, output, dataset_prefix="mismatch"))
    run.prepare()
    other = tmp_path / "other_teacher.pt"
    other.write_bytes(teacher.read_bytes())
    state = json.loads((output / "state.json").read_text())
    state["teacher_sha256"] = "0" * 64
    (output / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="started with teacher sha256 0000"):
        Distillation(tiny_config(store_path, other, output))


def test_example_config_parses():
    from pathlib import Path

    from lamforge.config import load_yaml
    from lamforge.distill.config import DistillConfig

    root = Path(__file__).resolve().parents[2]
    config = load_yaml(DistillConfig, root / "examples" / "distill_water.yaml")
    assert config.student.kind == "se_e2_a" and config.trust.low == 0.8


def test_label_command_writes_a_teacher_dataset(world, capsys):
    store_path, teacher = world
    arguments = ["label", "--teacher", str(teacher), "--store", str(store_path)]
    assert main([*arguments, "--dataset", "alloy", "--output", "alloy_taught"]) == 0
    assert "labelled 24 frames" in capsys.readouterr().out
    info = Store.open(store_path).info("alloy_taught")
    assert info.num_frames == 24 and file_sha256(teacher) in info.level_of_theory.functional
    with pytest.raises(SystemExit, match="alloy_taught.*already exists"):
        main([*arguments, "--dataset", "alloy", "--output", "alloy_taught"])
    with pytest.raises(SystemExit, match="dataset 'absent' is not in the store"):
        main([*arguments, "--dataset", "absent", "--output", "x"])


def test_an_interrupted_iteration_resumes_its_training(world, tmp_path, monkeypatch):
    from lamforge.distill import loop

    store_path, teacher = world
    config = tiny_config(store_path, teacher, tmp_path / "run", max_iterations=1,
                         dataset_prefix="resume")  # fmt: skip

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # Stop after the training of iteration 0 (as a Ctrl-C during exploration would).
    monkeypatch.setattr(loop, "explore", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Distillation(config).run()
    assert json.loads((tmp_path / "run" / "state.json").read_text())["rows"] == []
    curves = (tmp_path / "run" / "iteration_000" / "train" / "curves.csv").read_text()
    monkeypatch.undo()
    state = Distillation(config).run()
    assert state.completed_iterations == 1
    # The finished training was resumed from its checkpoint, not repeated.
    assert (tmp_path / "run" / "iteration_000" / "train" / "curves.csv").read_text() == curves
