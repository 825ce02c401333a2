"""`lamforge train` / `finetune` runs through a store: learn, resume exactly, fine-tune."""

import csv
import dataclasses

import pytest
import torch

from lamforge.config import from_dict, to_dict
from lamforge.data.demo import DemoConfig, demo_tasks, write_extxyz
from lamforge.data.format import DatasetInfo
from lamforge.data.ingest import import_sources
from lamforge.data.store import Store
from lamforge.nn.checkpoint import load_checkpoint
from lamforge.nn.loading import load_model
from lamforge.testing.tiny_models import tiny_dpa2_config
from lamforge.train.config import FinetuneSection, RunConfig
from lamforge.train.run import run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    store = Store.open(root / "store.zarr", create=True)
    for task in demo_tasks(DemoConfig(frames_per_task=12, seed=2)):
        path = write_extxyz(task, root / f"{task.name}.extxyz")
        import_sources(store, DatasetInfo(name=task.name), [path])
    return store.path


def _config(store, output, steps=6, tasks=("bulk", "surfaces")):
    custom = tiny_dpa2_config(["Al"]).to_dict()
    custom.pop("elements")
    return from_dict(
        RunConfig,
        {
            "output_dir": str(output),
            "model": {"custom": custom},
            "data": {
                "store": str(store),
                "tasks": {name: {"train": [name]} for name in tasks},
                "frames_per_batch": 2,
                "statistics_frames": 4,
                "num_threads": 1,
            },
            "trainer": {
                "steps": steps, "log_every": 1, "validate_every": 0, "checkpoint_every": 3,
                "learning_rate": {"start": 0.003, "stop": 0.0003, "decay_steps": 2},
            },
        },
    )  # fmt: skip


def _losses(path):
    with open(path) as handle:
        return [(r["step"], r["task"], r["loss"]) for r in csv.DictReader(handle) if r["loss"]]


def test_multitask_run_writes_model_and_curves(store, tmp_path):
    config = _config(store, tmp_path / "run")
    assert from_dict(RunConfig, to_dict(config)) == config
    result = run(config, progress=False)
    assert result.steps == 6
    model = load_checkpoint(tmp_path / "run" / "model.pt")
    assert set(model.heads) == {"bulk", "surfaces"}
    assert model.elements == ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au")
    # The bias was fitted per task: the tasks' energy offsets differ, so do the biases.
    assert not torch.equal(model.heads["bulk"].energy_bias, model.heads["surfaces"].energy_bias)
    assert {task for _, task, _ in _losses(tmp_path / "run" / "curves.csv")} <= {"bulk", "surfaces"}
    assert (tmp_path / "run" / "curves.png").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
    # A training checkpoint reads back as the model of its step: the last one is the final model.
    checkpoint = load_model(tmp_path / "run" / "checkpoints" / "ckpt-00000006.pt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(checkpoint.state_dict()[name], tensor), name


def test_statistics_sample_is_drawn_across_a_grouped_dataset(store):
    """The first frames of a store are often one group: the sample must reach beyond them."""
    from lamforge.train.run import _loader, _sample, build_model
    from lamforge.train.run import _sources as sources

    config = _config(store, "unused", tasks=("bulk",))
    model = build_model(config, ("Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"))
    task_sources = sources(Store.open(store), config.data.tasks["bulk"], False)
    loader = _loader(config, task_sources, model, shuffle=False)
    first = _sample(Store.open(store), loader, model, {"bulk": "bulk"}, 4, seed=0)["bulk"]
    other = _sample(Store.open(store), loader, model, {"bulk": "bulk"}, 4, seed=1)["bulk"]
    assert sum(batch.labels.num_atoms.numel() for batch in first) == 4
    positions = [torch.cat([b.inputs.positions for b in sample]) for sample in (first, other)]
    assert not torch.equal(*positions)  # seeded: another seed, another sample
    # The bias sample keeps labels and element counts but no neighbour lists.
    light = _sample(Store.open(store), loader, model, {"bulk": "bulk"}, 4, 0, keep_neighbors=False)
    for batch, full in zip(light["bulk"], first, strict=True):
        assert all(block.index.shape[1] == 0 for block in batch.inputs.neighbors)
        assert torch.equal(batch.inputs.atom_types, full.inputs.atom_types)
        assert torch.equal(batch.labels.energy, full.labels.energy)
    loader.close()


def test_split_gives_validation_metrics(store, tmp_path):
    from lamforge.data.curate import assign_splits

    opened = Store.open(store)
    opened.write_index("bulk", assign_splits(opened.index("bulk"), (0.75, 0.25, 0.0), seed=0))
    config = _config(store, tmp_path / "run", tasks=("bulk",))
    tasks = {"bulk": dataclasses.replace(config.data.tasks["bulk"], split=True)}
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, tasks=tasks))
    result = run(config, progress=False)
    assert result.validation["bulk"].num_frames == 3
    assert result.best_checkpoint is not None
    with open(tmp_path / "run" / "curves.csv") as handle:
        assert any(row["split"] == "valid" for row in csv.DictReader(handle))


def test_resume_continues_the_same_run(store, tmp_path):
    config = _config(store, tmp_path / "run")
    run(config, progress=False)
    straight_losses = _losses(tmp_path / "run" / "curves.csv")
    straight = load_checkpoint(tmp_path / "run" / "model.pt").state_dict()
    # As if the run had stopped after the checkpoint of step 3.
    (tmp_path / "run" / "checkpoints" / "ckpt-00000006.pt").unlink()
    (tmp_path / "run" / "model.pt").unlink()
    run(config, resume=True, progress=False)
    assert _losses(tmp_path / "run" / "curves.csv") == straight_losses
    resumed = load_checkpoint(tmp_path / "run" / "model.pt").state_dict()
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name


def test_finetune_from_pretrained_head(store, tmp_path):
    run(_config(store, tmp_path / "pre"), progress=False)
    config = dataclasses.replace(
        _config(store, tmp_path / "fine", tasks=("alloy",)),
        finetune=FinetuneSection(pretrained=tmp_path / "pre" / "model.pt", from_head="bulk"),
    )
    run(config, progress=False)
    pretrained = load_checkpoint(tmp_path / "pre" / "model.pt")
    model = load_checkpoint(tmp_path / "fine" / "model.pt")
    assert list(model.heads) == ["alloy"]
    assert model.elements == pretrained.elements
    wrong_head = FinetuneSection(pretrained=tmp_path / "pre" / "model.pt", from_head="nope")
    with pytest.raises(KeyError, match="no head 'nope'"):
        run(
            dataclasses.replace(config, output_dir=tmp_path / "bad", finetune=wrong_head),
            progress=False,
        )
