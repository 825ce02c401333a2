"""``lamforge quickstart``: the paper's workflow end to end on generated demo data.

Stages so far: ``data`` (generate the EMT demo tasks and write them as extended XYZ). Each later
stage (store, multi-task pre-training, fine-tuning, from-scratch baseline, distillation, MD) is
added
by the issue that builds its part of the library.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lamforge.data.demo import DemoConfig, demo_tasks, write_extxyz
from lamforge.workflows.summary import Summary


@dataclass(frozen=True, kw_only=True)
class QuickstartConfig:
    """Options of the quickstart.

    Attributes:
        workdir: Folder that receives every output (created if missing).
        demo: Size and seed of the generated data.
        progress: Show progress bars.
    """

    workdir: Path = Path("lamforge-quickstart")
    demo: DemoConfig = DemoConfig()
    progress: bool = True


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

    summary.save(workdir / "summary.json")
    return summary
