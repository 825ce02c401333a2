"""``lamforge quickstart``: the paper's workflow end to end on generated demo data.

Stages so far: ``data`` (generate the EMT demo tasks and write them as extended XYZ) and ``store``
(import them into a lamforge store, one dataset per task, with ``lamforge data stats`` numbers as
metrics). Each later stage (multi-task pre-training, fine-tuning, from-scratch baseline,
distillation, MD) is added by the issue that builds its part of the library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lamforge.data.demo import DemoConfig, DemoTask, demo_tasks, write_extxyz
from lamforge.workflows.demo_training import DemoTrainingConfig
from lamforge.workflows.summary import Stage, Summary


@dataclass(frozen=True, kw_only=True)
class QuickstartConfig:
    """Options of the quickstart.

    Attributes:
        workdir: Folder that receives every output (created if missing).
        demo: Size and seed of the generated data.
        training: Steps and sizes of the training stages.
        progress: Show progress bars.
    """

    workdir: Path = Path("lamforge-quickstart")
    demo: DemoConfig = DemoConfig()
    training: DemoTrainingConfig = field(default_factory=DemoTrainingConfig)
    progress: bool = True


def smoke_config(workdir: Path, progress: bool = False) -> QuickstartConfig:
    """A seconds-long quickstart with every stage (for tests and ``--smoke``)."""
    return QuickstartConfig(
        workdir=workdir,
        demo=DemoConfig(frames_per_task=24),
        training=DemoTrainingConfig(
            pretrain_steps=12, finetune_steps=6, downstream_train_frames=(4, 8),
            downstream_test_frames=8, md_steps=10, distill_iterations=1, distill_steps=10,
        ),
        progress=progress,
    )  # fmt: skip


def run_quickstart(config: QuickstartConfig) -> Summary:
    """Runs every stage and writes ``summary.json`` into the working folder.

    Returns:
        The summary (also saved to ``<workdir>/summary.json``).
    """
    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summary = Summary()

    with summary.stage("data") as stage:
        tasks = demo_tasks(config.demo, progress=config.progress)
        for task in tasks:
            write_extxyz(task, workdir / "data" / f"{task.name}.extxyz")
        stage.metrics["frames"] = {task.name: len(task.frames) for task in tasks}
        stage.metrics["atoms"] = {
            task.name: sum(len(frame) for frame in task.frames) for task in tasks
        }
        stage.metrics["downstream"] = [task.name for task in tasks if task.downstream]

    with summary.stage("store") as stage:
        store_stage(tasks, workdir, stage, progress=config.progress)

    _training_stages(summary, tasks, workdir, config)

    summary.save(workdir / "summary.json")
    return summary


def _training_stages(
    summary: Summary, tasks: list[DemoTask], workdir: Path, config: QuickstartConfig
) -> None:
    """Pre-training, fine-tuning vs from scratch on the downstream task, and MD."""
    from lamforge.workflows import demo_training

    store = workdir / "store.zarr"
    training = config.training
    pretrain_tasks = [task.name for task in tasks if not task.downstream]
    (downstream,) = [task.name for task in tasks if task.downstream]
    with summary.stage("pretrain") as stage:
        pretrained, validation = demo_training.pretrain(
            store, workdir, pretrain_tasks, training, config.progress
        )
        stage.metrics["steps"] = training.pretrain_steps
        stage.metrics["validation"] = validation
    with summary.stage("finetune") as stage:
        rows = demo_training.transfer(
            store, workdir, downstream, pretrained, training, config.progress
        )
        stage.metrics["steps"] = training.finetune_steps
        stage.metrics["test"] = [row for row in rows if row["method"] != "from scratch"]
    summary.stages.append(
        Stage(name="scratch", seconds=0.0,
              metrics={"steps": training.finetune_steps,
                       "test": [row for row in rows if row["method"] == "from scratch"]})
    )  # fmt: skip
    finetuned = workdir / f"fine-tuned-{max(training.downstream_train_frames)}" / "model.pt"
    with summary.stage("md") as stage:
        stage.metrics.update(demo_training.molecular_dynamics(finetuned, training.md_steps))
    with summary.stage("distill") as stage:
        stage.metrics.update(
            demo_training.distill(
                store, workdir, finetuned, downstream, training.distill_iterations,
                training.distill_steps, config.progress,
            )
        )  # fmt: skip


def store_stage(tasks: list[DemoTask], workdir: Path, stage: Stage, *, progress: bool) -> None:
    """Imports each task's extended-XYZ file as one dataset of ``<workdir>/store.zarr``."""
    from lamforge.data.format import DatasetInfo, LevelOfTheory
    from lamforge.data.ingest import import_sources
    from lamforge.data.stats import dataset_stats
    from lamforge.data.store import Store
    from lamforge.data.validate import ValidationConfig, validate_dataset

    store = Store.open(workdir / "store.zarr", create=True)
    metrics: dict[str, dict[str, object]] = {}
    for task in tasks:
        info = DatasetInfo(
            name=task.name,
            level_of_theory=LevelOfTheory(code="ASE", functional="EMT + per-element offsets"),
            licence="MIT",
            description=task.description,
        )
        import_sources(
            store,
            info,
            [workdir / "data" / f"{task.name}.extxyz"],
            overwrite=True,
            progress=progress,
        )
        reader = store.reader(task.name)
        stats = dataset_stats(reader)
        findings = validate_dataset(reader, ValidationConfig())
        metrics[task.name] = {
            "frames": stats.num_frames,
            "atoms": stats.num_atoms,
            "elements": len(stats.elements),
            "virials": stats.labels.get("virial", 0),
            "energy_per_atom_mean": stats.energy_per_atom.mean,
            "force_p99": stats.force_magnitude.percentiles.get("p99", float("nan")),
            "validation_errors": sum(f.severity == "error" for f in findings),
        }
    stage.metrics["datasets"] = metrics
    stage.metrics["store_bytes"] = sum(
        path.stat().st_size for path in store.path.rglob("*") if path.is_file()
    )
