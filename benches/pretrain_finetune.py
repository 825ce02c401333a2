"""Real-data acceptance of the training workflow: multi-task pre-training, then transfer.

On the DFT data of ``../shared/data`` (each source its own task, own head and energy bias):

1. ``store``: imports the sources into a lamforge store and splits the pre-training tasks 90/10.
2. ``pretrain``: one DPA-2 (``dpa2_small`` preset) pre-trained multi-task on every source but the
   held-out downstream one (default: the ``nopbc`` gas-phase combustion fragments, MN15/6-31G**,
   a level of theory no pre-training task shares); validation RMSE per task.
3. ``transfer``: on the held-out task, a fixed test set and nested training sets of 10, 100 and
   1,000 frames; for each size the zero-shot model (pre-trained descriptor and the ``ethanol`` head,
   energy bias re-fitted on the training frames, no training), the fine-tuned model and the same
   architecture trained from scratch for the same number of steps, all tested on the same frames.
4. ``report``: ``results.json``, a Markdown table and ``learning_curve.png`` (test force and
   energy RMSE against training frames).

Every stage is resumable: rerunning skips finished stages and transfer rows, and continues an
interrupted pre-training from its last checkpoint. Example (about 1.5 hours on 1 core)::

    PYTHONPATH=python python benches/pretrain_finetune.py --threads 1 --pretrain-steps 12000

Skips with a message when ``../shared/data`` is absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lamforge.config import from_dict
from lamforge.data.curate import assign_splits, copy_frames
from lamforge.data.format import DatasetInfo, LevelOfTheory
from lamforge.data.ingest import import_sources
from lamforge.data.store import Store
from lamforge.nn.checkpoint import load_checkpoint
from lamforge.train.config import FinetuneSection, RunConfig
from lamforge.train.evaluate import dataset_batches, evaluate_dataset, zero_shot_model
from lamforge.train.run import run

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Store dataset name -> (paths under ../shared/data, level of theory, licence).
SOURCES: dict[str, tuple[tuple[str, ...], LevelOfTheory, str]] = {
    "mptrj": (("mptrj/mptrj-random-1k.xyz",), LevelOfTheory(code="VASP", functional="PBE/PBE+U"),
              "MIT"),
    "oc20": (("oc20",), LevelOfTheory(code="VASP", functional="RPBE"), "CC-BY-4.0"),
    "ethanol": (("molecules/ethanol/train_eth_meth.xyz",),
                LevelOfTheory(code="ORCA", functional="PBE", basis="def2-SVP"), "MIT"),
    "3bpa": (("molecules/3bpa/train_300K.xyz", "molecules/3bpa/train_mixedT.xyz"),
             LevelOfTheory(functional="wB97X", basis="6-31G(d)"), "MIT"),
    "water": (tuple(f"deepmd/water/data_{i}" for i in range(4)), LevelOfTheory(), "LGPL-3.0"),
    "nopbc": (tuple(f"deepmd/nopbc/{name}" for name in ("C1H4O2", "C3H3O4", "C4H3O1")),
              LevelOfTheory(functional="MN15", basis="6-31G**"), "LGPL-3.0"),
}  # fmt: skip


def _paths(relative: tuple[str, ...]) -> list[Path]:
    paths = []
    for item in relative:
        path = SHARED / item
        paths.extend(sorted(path.glob("*.traj")) if path.is_dir() and item == "oc20" else [path])
    return paths


def build_store(store_path: Path, downstream: str, seed: int) -> None:
    """Imports every source (skipping those already in the store) and splits pre-training tasks."""
    store = Store.open(store_path, create=True)
    for name, (relative, theory, licence) in SOURCES.items():
        if name not in store:
            info = DatasetInfo(
                name=name,
                level_of_theory=theory,
                licence=licence,
                description=f"../shared/data source {name}",
            )
            import_sources(store, info, _paths(relative), progress=True)
        if name != downstream:
            store.write_index(name, assign_splits(store.index(name), (0.9, 0.1), seed=seed))


def _trainer(steps: int, start_lr: float, stop_lr: float) -> dict:
    return {
        "steps": steps,
        "learning_rate": {"start": start_lr, "stop": stop_lr, "decay_steps": max(steps // 40, 1)},
        "loss": {"energy": {"start": 0.2, "limit": 1.0}, "forces": {"start": 100.0, "limit": 1.0}},
        "validate_every": max(steps // 6, 1),
        "checkpoint_every": max(steps // 12, 1),
        "keep_last": 2,
        "log_every": 20,
    }


def pretrain(arguments: argparse.Namespace) -> Path:
    """Multi-task pre-training on every source but the downstream one; returns the model file."""
    output = arguments.workdir / "pretrain"
    model_file = output / "model.pt"
    if model_file.exists():
        return model_file
    tasks = {n: {"train": [n], "split": True} for n in SOURCES if n != arguments.downstream}
    config = from_dict(
        RunConfig,
        {
            "output_dir": str(output),
            "seed": arguments.seed,
            "model": {"preset": "dpa2_small", "precision": arguments.precision},
            "data": {"store": str(arguments.workdir / "store"), "tasks": tasks,
                     "frames_per_batch": 1, "statistics_frames": 50, "num_threads": 1},
            "trainer": _trainer(arguments.pretrain_steps, 1e-3, 1e-5),
        },
    )  # fmt: skip
    resume = (output / "checkpoints").exists() and any((output / "checkpoints").iterdir())
    start = time.perf_counter()
    result = run(config, resume=resume, progress=True)
    summary = {
        "steps": arguments.pretrain_steps,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "validation": {task: m.summary_row() for task, m in result.validation.items()},
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return model_file


def _subsets(store_path: Path, downstream: str, sizes, test_frames: int, seed: int):
    """A fixed test set and nested training sets of the downstream task (curated datasets)."""
    store = Store.open(store_path)
    base = store.info(downstream)
    frames = np.random.default_rng(seed).permutation(base.num_frames)
    if test_frames + max(sizes) > base.num_frames:
        raise ValueError(f"{downstream} has {base.num_frames} frames: too few for the split")
    test_name = f"{downstream}_test"
    if test_name not in store:
        copy_frames(store, [(downstream, np.sort(frames[:test_frames]))],
                    dataclasses.replace(base, name=test_name))  # fmt: skip
    names = {}
    for size in sizes:
        name = f"{downstream}_train_{size}"
        if name not in store:
            pool = frames[test_frames : test_frames + size]
            copy_frames(store, [(downstream, np.sort(pool))],
                        dataclasses.replace(base, name=name))  # fmt: skip
        names[size] = name
    return test_name, names


def transfer(arguments: argparse.Namespace, pretrained: Path) -> list[dict]:
    """Zero-shot, fine-tuned and from-scratch test errors per training-set size (cached rows)."""
    store_path = arguments.workdir / "store"
    rows_file = arguments.workdir / "transfer_rows.json"
    rows = json.loads(rows_file.read_text()) if rows_file.exists() else []
    done = {(row["method"], row["train_frames"]) for row in rows}
    downstream, head = arguments.downstream, arguments.from_head
    test_name, train_names = _subsets(
        store_path, downstream, arguments.sizes, arguments.test_frames, arguments.seed
    )
    model = load_checkpoint(pretrained)

    def save(row: dict) -> None:
        rows.append(row)
        rows_file.write_text(json.dumps(rows, indent=2))
        print(json.dumps(row), flush=True)

    for size in arguments.sizes:
        train_name = train_names[size]
        if ("zero-shot", size) not in done:
            bias = dataset_batches(store_path, train_name, model, head)
            zero_shot = zero_shot_model(model, bias, head, task=downstream)
            test = dataset_batches(store_path, test_name, zero_shot, downstream)
            metrics = evaluate_dataset(zero_shot, test, test_name).metrics
            save({"method": "zero-shot", "train_frames": size, **metrics.summary_row()})
        for method in ("fine-tuned", "from scratch"):
            if (method, size) in done:
                continue
            output = arguments.workdir / f"{method.replace(' ', '-')}-{size}"
            config = from_dict(
                RunConfig,
                {
                    "output_dir": str(output),
                    "seed": arguments.seed,
                    "model": {"preset": "dpa2_small", "precision": arguments.precision},
                    "data": {"store": str(store_path),
                             "tasks": {downstream: {"train": [train_name]}},
                             "frames_per_batch": 1, "statistics_frames": size,
                             "num_threads": 1},
                    "trainer": _trainer(arguments.finetune_steps, arguments.finetune_lr, 1e-5),
                },
            )  # fmt: skip
            if method == "fine-tuned":
                config = dataclasses.replace(
                    config, finetune=FinetuneSection(pretrained=pretrained, from_head=head)
                )
            start = time.perf_counter()
            run(config, progress=False)
            seconds = time.perf_counter() - start
            trained = load_checkpoint(output / "model.pt")
            test = dataset_batches(store_path, test_name, trained, downstream)
            metrics = evaluate_dataset(trained, test, test_name).metrics
            save({"method": method, "train_frames": size, "steps": arguments.finetune_steps,
                  "train_seconds": round(seconds, 1), **metrics.summary_row()})  # fmt: skip
    return rows


def report(arguments: argparse.Namespace, rows: list[dict]) -> str:
    """Markdown table, ``results.json`` and ``learning_curve.png`` of the transfer rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary_file = arguments.workdir / "pretrain" / "summary.json"
    pretrain_summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    lines = [
        "| task | valid frames | energy RMSE meV/atom | force RMSE meV/Å |",
        "|---|---:|---:|---:|",
    ]
    for task, m in pretrain_summary.get("validation", {}).items():
        lines.append(
            f"| {task} | {m['frames']} | {m['energy_rmse_mev_per_atom']} |"
            f" {m['forces_rmse_mev_per_a']} |"
        )
    lines += ["", "| train frames | method | energy RMSE meV/atom | force RMSE meV/Å |",
              "|---:|---|---:|---:|"]  # fmt: skip
    methods = ("zero-shot", "fine-tuned", "from scratch")
    for size in arguments.sizes:
        for method in methods:
            for row in rows:
                if row["method"] == method and row["train_frames"] == size:
                    lines.append(
                        f"| {size} | {method} | {row['energy_rmse_mev_per_atom']} |"
                        f" {row['forces_rmse_mev_per_a']} |"
                    )
    table = "\n".join(lines)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for method, marker in zip(methods, "osd", strict=True):
        chosen = sorted((r for r in rows if r["method"] == method), key=lambda r: r["train_frames"])
        if not chosen:
            continue
        sizes = [r["train_frames"] for r in chosen]
        for axis, key in zip(
            axes, ("forces_rmse_mev_per_a", "energy_rmse_mev_per_atom"), strict=True
        ):
            axis.plot(sizes, [r[key] for r in chosen], marker=marker, label=method)
    for axis, label in zip(axes, ("force RMSE (meV/Å)", "energy RMSE (meV/atom)"), strict=True):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(f"{arguments.downstream} training frames")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    figure.suptitle(f"held-out {arguments.downstream}: pre-trained vs from scratch")
    figure.tight_layout()
    figure.savefig(arguments.workdir / "learning_curve.png", dpi=120)
    results = {"pretrain": pretrain_summary, "transfer": rows, "table": table}
    (arguments.workdir / "results.json").write_text(json.dumps(results, indent=2))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/pretrain_finetune"))
    parser.add_argument("--downstream", default="nopbc", choices=sorted(SOURCES))
    parser.add_argument("--from-head", default="ethanol")
    parser.add_argument("--pretrain-steps", type=int, default=12000)
    parser.add_argument("--finetune-steps", type=int, default=2000)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--test-frames", type=int, default=500)
    parser.add_argument("--precision", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stage", default="all", choices=["store", "pretrain", "transfer", "all"])
    arguments = parser.parse_args(argv)
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is absent (the shared DFT data sits beside the repository)")
        return 0
    torch.set_num_threads(arguments.threads)
    arguments.workdir.mkdir(parents=True, exist_ok=True)
    build_store(arguments.workdir / "store", arguments.downstream, arguments.seed)
    if arguments.stage == "store":
        return 0
    pretrained = pretrain(arguments)
    if arguments.stage == "pretrain":
        return 0
    rows = transfer(arguments, pretrained)
    print(report(arguments, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
