"""The quickstart's training stages: multi-task pre-training, fine-tuning, from scratch, MD.

Everything goes through the same path as a user's run: the demo tasks sit in a lamforge store,
the Rust loader streams batches, :func:`lamforge.train.run.run` trains from a typed
:class:`~lamforge.train.config.RunConfig`, and models are files read back for testing and MD.

* ``pretrain``: one DPA-2 descriptor with one head per pre-training task (bulk, surfaces,
  clusters), each with its own energy bias; 90/10 train/valid split of each task.
* ``finetune`` / ``scratch``: on the held-out Cu-Au alloy task, for several training-set sizes,
  the zero-shot model (pre-trained descriptor and ``bulk`` head, bias re-fitted, no training), the
  fine-tuned model and the same architecture trained from scratch for the same steps, all tested
  on the same held-out alloy frames. This is the paper's workflow at demo scale; the numbers show
  what transfer gives here, whatever it is.
* ``md``: Langevin dynamics of an alloy cell with the fine-tuned model through ``LAMCalculator``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk
from ase.md.langevin import Langevin

from lamforge.calculators import LAMCalculator
from lamforge.config import from_dict, to_dict
from lamforge.data.curate import assign_splits, copy_frames
from lamforge.data.store import Store
from lamforge.nn.checkpoint import load_checkpoint
from lamforge.nn.config import (
    DescriptorConfig,
    FittingConfig,
    ModelConfig,
    RepformerConfig,
    RepinitConfig,
)
from lamforge.train.config import FinetuneSection, RunConfig
from lamforge.train.evaluate import dataset_batches, evaluate_dataset, zero_shot_model
from lamforge.train.run import run


def demo_model_config() -> ModelConfig:
    """A small DPA-2 for the demo metals: every DPA-2 block, narrow and with short cutoffs.

    Same physics as the shipped presets (repinit with the three-body branch, repformers with
    residual updates and gated pair attention), sized to train in about a minute on 2 cores.
    The element list is filled in from the data.
    """
    return ModelConfig(
        elements=("Cu",),
        descriptor=DescriptorConfig(
            repinit=RepinitConfig(
                cutoff=5.0, cutoff_smooth=0.5, max_neighbors=60, neurons=(8, 16),
                axis_neurons=4, type_embedding_dim=8, use_three_body=True,
                three_body_cutoff=3.5, three_body_cutoff_smooth=3.0,
                three_body_max_neighbors=24, three_body_neurons=(2, 4, 8),
            ),
            repformer=RepformerConfig(
                cutoff=3.5, cutoff_smooth=3.0, max_neighbors=24, num_layers=2, g1_dim=32,
                g2_dim=8, axis_neurons=4, attn1_hidden=16, attn1_heads=2, attn2_hidden=8,
                attn2_heads=2, attn2_has_gate=True, update_g1_has_attn=False,
                update_g2_has_g1g1=False, update_g2_has_attn=True, update_style="res_residual",
                update_residual=0.01, use_sqrt_nnei=True, g1_out_conv=True, g1_out_mlp=True,
            ),
        ),
        heads={"default": FittingConfig(neurons=(32, 32), resnet_dt=True)},
    )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DemoTrainingConfig:
    """Sizes of the quickstart's training stages.

    Attributes:
        pretrain_steps: Optimiser steps of multi-task pre-training.
        finetune_steps: Steps of fine-tuning and of the from-scratch baseline.
        downstream_train_frames: Downstream training-set sizes to compare.
        downstream_test_frames: Held-out downstream frames every model is tested on.
        frames_per_batch: Frames per batch.
        md_steps: Langevin steps of the MD stage.
        distill_iterations: Iterations of the distillation loop.
        distill_steps: Student training steps per distillation iteration.
        seed: Seed of splits and sampling.
    """

    pretrain_steps: int = 600
    finetune_steps: int = 200
    downstream_train_frames: tuple[int, ...] = (8, 32)
    downstream_test_frames: int = 32
    frames_per_batch: int = 2
    md_steps: int = 100
    distill_iterations: int = 2
    distill_steps: int = 200
    seed: int = 0
    trainer: dict = field(
        default_factory=lambda: {
            "learning_rate": {"start": 0.003, "stop": 0.0001, "decay_steps": 50},
            # deepmd-kit's defaults start at 0.02 / 1000; short runs balance them from the start.
            "loss": {
                "energy": {"start": 0.5, "limit": 2.0},
                "forces": {"start": 100.0, "limit": 1.0},
            },
            "log_every": 10,
        }
    )


def _run_config(
    store: Path, output: Path, tasks: dict[str, dict], steps: int, config: DemoTrainingConfig
) -> RunConfig:
    custom = to_dict(demo_model_config())
    custom.pop("elements")
    return from_dict(
        RunConfig,
        {
            "output_dir": str(output),
            "seed": config.seed,
            "model": {"custom": custom},
            "data": {"store": str(store), "tasks": tasks,
                     "frames_per_batch": config.frames_per_batch, "statistics_frames": 32},
            "trainer": {**config.trainer, "steps": steps, "validate_every": max(steps // 3, 1),
                        "checkpoint_every": steps, "keep_last": 1},
        },
    )  # fmt: skip


def pretrain(
    store_path: Path, workdir: Path, tasks: list[str], config: DemoTrainingConfig, progress: bool
) -> tuple[Path, dict]:
    """Multi-task pre-training; returns the model file and validation metrics per task."""
    store = Store.open(store_path)
    for name in tasks:
        store.write_index(name, assign_splits(store.index(name), (0.9, 0.1, 0.0), seed=config.seed))
    output = Path(workdir) / "pretrain"
    run_config = _run_config(
        store_path, output, {name: {"train": [name], "split": True} for name in tasks},
        config.pretrain_steps, config,
    )  # fmt: skip
    result = run(run_config, progress=progress)
    return output / "model.pt", {task: m.summary_row() for task, m in result.validation.items()}


def _subsets(store: Store, downstream: str, config: DemoTrainingConfig) -> tuple[str, list[str]]:
    """Test set and nested training sets of the downstream task, as curated datasets."""
    frames = np.random.default_rng(config.seed).permutation(store.info(downstream).num_frames)
    test_name = f"{downstream}_test"
    base = store.info(downstream)
    copy_frames(store, [(downstream, np.sort(frames[: config.downstream_test_frames]))],
                dataclasses.replace(base, name=test_name), overwrite=True)  # fmt: skip
    pool = frames[config.downstream_test_frames :]
    names = []
    for size in config.downstream_train_frames:
        if size > len(pool):
            raise ValueError(f"{size} downstream training frames asked, {len(pool)} available")
        name = f"{downstream}_train_{size}"
        copy_frames(store, [(downstream, np.sort(pool[:size]))],
                    dataclasses.replace(base, name=name), overwrite=True)  # fmt: skip
        names.append(name)
    return test_name, names


def transfer(
    store_path: Path,
    workdir: Path,
    downstream: str,
    pretrained: Path,
    config: DemoTrainingConfig,
    progress: bool,
    from_head: str = "bulk",
) -> list[dict]:
    """Zero-shot, fine-tuned and from-scratch test errors for every training-set size."""
    store = Store.open(store_path)
    test_name, train_names = _subsets(store, downstream, config)
    model = load_checkpoint(pretrained)
    rows = []
    for size, train_name in zip(config.downstream_train_frames, train_names, strict=True):
        bias = dataset_batches(store_path, train_name, model, from_head)
        zero_shot = zero_shot_model(model, bias, from_head, task=downstream)
        test = dataset_batches(store_path, test_name, zero_shot, downstream)
        metrics = evaluate_dataset(zero_shot, test, test_name).metrics
        rows.append({"method": "zero-shot", "train_frames": size, **metrics.summary_row()})
        tasks = {downstream: {"train": [train_name]}}
        for method, finetune in (
            ("fine-tuned", FinetuneSection(pretrained=pretrained, from_head=from_head)),
            ("from scratch", None),
        ):
            output = Path(workdir) / f"{method.replace(' ', '-')}-{size}"
            run_config = _run_config(store_path, output, tasks, config.finetune_steps, config)
            if finetune is not None:
                run_config = dataclasses.replace(run_config, finetune=finetune)
            run(run_config, progress=progress)
            trained = load_checkpoint(output / "model.pt")
            test = dataset_batches(store_path, test_name, trained, downstream)
            metrics = evaluate_dataset(trained, test, test_name).metrics
            rows.append({"method": method, "train_frames": size, **metrics.summary_row()})
    return rows


def molecular_dynamics(model_path: Path, steps: int, seed: int = 0) -> dict:
    """Langevin NVT (600 K) of a 32-atom Cu-Au cell with ``model_path``; speed and stability."""
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.choice(len(atoms), size=len(atoms) // 2, replace=False)] = "Au"
    atoms.calc = LAMCalculator(model_path)
    dynamics = Langevin(
        atoms, 2.0 * units.fs, temperature_K=600, friction=0.02, fixcm=False, rng=rng
    )
    temperatures = []
    dynamics.attach(lambda: temperatures.append(atoms.get_temperature()), interval=10)
    start = time.perf_counter()
    dynamics.run(steps)
    seconds = time.perf_counter() - start
    distances = atoms.get_all_distances(mic=True) + 1e9 * np.eye(len(atoms))
    return {
        "atoms": len(atoms),
        "steps": steps,
        "atom_steps_per_second": round(len(atoms) * steps / seconds, 1),
        "mean_temperature_k": round(float(np.mean(temperatures[1:])), 1),
        "finite": bool(np.isfinite(atoms.get_positions()).all()),
        # A collapsed or exploded structure shows up as atoms far closer than a bond length.
        "min_distance_a": round(float(distances.min()), 3),
    }


def distill(
    store_path: Path,
    workdir: Path,
    teacher: Path,
    downstream: str,
    iterations: int,
    steps: int,
    progress: bool,
) -> dict:
    """Distils the fine-tuned model into an se_e2_a student; accuracy and MD speed of both."""
    from lamforge.distill.config import DistillConfig
    from lamforge.distill.loop import run_distillation

    output = Path(workdir) / "distill"
    config = from_dict(
        DistillConfig,
        {
            "output_dir": str(output), "store": str(store_path),
            "teacher": {"model": str(teacher)},
            "source": {"dataset": f"{downstream}_test", "initial_frames": 16,
                       "holdout_frames": 8},
            "student": {"kind": "se_e2_a", "cutoff": 5.0, "max_neighbors": 60},
            "trainer": {"steps": steps, "log_every": 10, "validate_every": 0,
                        "checkpoint_every": steps, "keep_last": 1,
                        "learning_rate": {"start": 0.003, "stop": 0.0001,
                                          "decay_steps": max(steps // 10, 1)}},
            "exploration": {"temperatures": [600.0], "steps": 40, "sample_every": 5,
                            "timestep_fs": 2.0, "max_starts": 2},
            "trust": {"low": 0.1, "high": 1.0, "max_candidates": 8},
            "loop": {"max_iterations": iterations},
        },
    )  # fmt: skip
    state = run_distillation(config, progress=progress)
    last = state.rows[-1]
    student = output / state.student
    teacher_md = molecular_dynamics(teacher, steps=20)
    student_md = molecular_dynamics(student, steps=20)
    return {
        "iterations": len(state.rows),
        "teacher_frames": last.training_frames,
        "accurate_fraction": round(last.accurate_fraction, 3),
        "student_vs_teacher_forces_rmse_mev_per_a": last.holdout_forces_rmse_teacher,
        "student_vs_emt_forces_rmse_mev_per_a": last.holdout_forces_rmse_reference,
        "teacher_atom_steps_per_second": teacher_md["atom_steps_per_second"],
        "student_atom_steps_per_second": student_md["atom_steps_per_second"],
        "speed_up": round(
            student_md["atom_steps_per_second"] / teacher_md["atom_steps_per_second"], 2
        ),
    }
