"""The distillation loop: train -> explore -> select -> label, until the student is accurate.

Before the first iteration the teacher labels ``source.initial_frames`` frames of the source
dataset (the first training set) and ``source.holdout_frames`` held-out frames (the report's
test set); both become store datasets. Iteration k then:

1. trains the student (warm-started from iteration k-1's weights; fresh statistics and energy
   bias only at k = 0) on every teacher-labelled dataset so far;
2. explores with MD driven by the student from starting structures of the source dataset;
3. labels every explored frame with the teacher (one batched pass) and computes the
   student-teacher force deviation;
4. selects by trust levels; the chosen candidates become the dataset ``<prefix>_iterNNN``;
5. appends a report row and rewrites ``state.json`` atomically.

It stops when the accurate fraction reaches ``loop.accurate_threshold`` on two successive
iterations, or after ``loop.max_iterations``. Rerunning the same command continues: finished
iterations are skipped, and an interrupted iteration's training resumes from its checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from ase import Atoms

from lamforge.data.store import Store
from lamforge.distill.config import DistillConfig
from lamforge.distill.explore import (
    ExplorationConfig,
    ensemble_spread,
    explore,
    force_deviation,
)
from lamforge.distill.select import Selection, frame_features, select_frames
from lamforge.distill.state import LoopState, ReportRow, write_report
from lamforge.distill.students import EnergyModel, initialize_model, save_model
from lamforge.distill.teacher import (
    Teacher,
    frames_from_store,
    predict_frames,
    write_labelled_dataset,
)
from lamforge.distill.trainer import DistillTrainer
from lamforge.nn.atoms import model_input_from_atoms
from lamforge.nn.loading import load_model
from lamforge.nn.se_e2_a import SeAModel
from lamforge.train.frames import batches_from_atoms
from lamforge.train.stream import InMemoryStream, TrainingBatch
from lamforge.train.trainer import evaluate_errors


def _spread(ids: Sequence[int], count: int) -> list[int]:
    """``count`` entries of ``ids`` evenly spread (all of them when there are fewer)."""
    ids = list(ids)
    if count >= len(ids):
        return ids
    return [ids[int(k)] for k in np.linspace(0, len(ids) - 1, count).round()]


def source_frame_ids(store: Store, config: DistillConfig) -> tuple[list[int], list[int]]:
    """(training, held-out) frame ids of the source dataset."""
    source = config.source
    if source.dataset not in store:
        raise ValueError(f"source dataset {source.dataset!r} is not in the store {store.path}")
    if source.split:
        index = store.index(source.dataset)
        if index["split"].null_count() == len(index):
            raise ValueError(
                f"source dataset {source.dataset!r} has no split; run `lamforge data split` "
                "or set source.split: false"
            )
        train = index.filter(pl.col("split") == "train")["frame"].to_list()
        held_out = index.filter(pl.col("split") == "valid")["frame"].to_list()
    else:
        num_frames = store.info(source.dataset).num_frames
        cut = max(num_frames - source.holdout_frames, 1)
        train, held_out = list(range(cut)), list(range(cut, num_frames))
    if not train or not held_out:
        raise ValueError(
            f"source dataset {source.dataset!r}: need training and held-out frames, got "
            f"{len(train)} and {len(held_out)}"
        )
    return train, _spread(held_out, source.holdout_frames)


class Distillation:
    """One distillation run (see the module docstring); :meth:`run` executes or continues it."""

    def __init__(self, config: DistillConfig, progress: bool = False) -> None:
        self.config = config
        self.progress = progress
        self.output = Path(config.output_dir)
        self.output.mkdir(parents=True, exist_ok=True)
        self.store = Store.open(config.store)
        self.teacher = Teacher.load(config.teacher.model, config.teacher.head)
        self.head = config.student.head
        self.state_path = self.output / "state.json"
        if self.state_path.exists():
            self.state = LoopState.load(self.state_path)
            if self.state.teacher_sha256 != self.teacher.sha256:
                raise ValueError(
                    f"{self.state_path}: the run was started with teacher sha256 "
                    f"{self.state.teacher_sha256}, but {config.teacher.model} has "
                    f"{self.teacher.sha256}; use a new output_dir"
                )
        else:
            self.state = LoopState(teacher_sha256=self.teacher.sha256)
        self.train_ids, self.holdout_ids = source_frame_ids(self.store, config)

    # -- data ------------------------------------------------------------------------------------
    def _dataset_name(self, suffix: str) -> str:
        return f"{self.config.loop.dataset_prefix}_{suffix}"

    def _label(self, frames: list[Atoms]) -> list[Atoms]:
        return predict_frames(
            self.teacher.model,
            frames,
            self.teacher.head,
            max_atoms=self.config.loop.max_atoms_per_batch,
            num_threads=self.config.loop.num_threads,
        )

    def prepare(self) -> None:
        """Teacher labels of the initial and held-out frames (once per run)."""
        source = self.config.source
        if not self.state.datasets:
            ids = _spread(self.train_ids, source.initial_frames)
            frames = frames_from_store(self.store, source.dataset, ids)
            name = self._dataset_name("initial")
            write_labelled_dataset(
                self.store,
                name,
                self._label(frames),
                self.teacher,
                source=f"{source.dataset} frames {ids[0]}..{ids[-1]}",
                overwrite=True,
            )
            self.state.datasets.append(name)
        if self.state.holdout_dataset is None:
            frames = frames_from_store(self.store, source.dataset, self.holdout_ids)
            name = self._dataset_name("holdout")
            write_labelled_dataset(
                self.store,
                name,
                self._label(frames),
                self.teacher,
                source=f"{source.dataset} held-out frames",
                overwrite=True,
            )
            self.state.holdout_dataset = name
        self.state.save(self.state_path)

    def _batches(self, frames: list[Atoms], model: EnergyModel) -> list[TrainingBatch]:
        specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
        threads = self.config.loop.num_threads

        def build(chunk, elements, block_specs):
            return model_input_from_atoms(chunk, elements, block_specs, model.dtype, threads)

        return batches_from_atoms(
            frames, self.head, model.elements, specs, build, self.config.loop.frames_per_batch
        )

    def training_frames(self) -> list[Atoms]:
        """Every teacher-labelled training frame so far."""
        return [
            atoms for name in self.state.datasets for atoms in frames_from_store(self.store, name)
        ]

    # -- one iteration ---------------------------------------------------------------------------
    def _student(self, frames: list[Atoms], member: int = 0) -> EnergyModel:
        """The student (``member`` 0) or ensemble member to train: last weights, or fresh."""
        if self.state.student is not None:
            last = self.output / self.state.student
            return load_model(last if member == 0 else last.with_name(f"student_{member}.pt"))
        elements = tuple(self.teacher.model.elements)
        section = self.config.student
        student = dataclasses.replace(section, seed=section.seed + member).build(elements)
        sample = self._batches(frames[: min(len(frames), 50)], student)
        initialize_model(student, {self.head: sample})
        return student

    def _train(self, student: EnergyModel, frames: list[Atoms], folder: Path) -> None:
        holdout = self._batches(frames_from_store(self.store, self.state.holdout_dataset), student)
        trainer = DistillTrainer(
            student,
            self.config.trainer,
            InMemoryStream(
                {self.head: self._batches(frames, student)},
                seed=self.config.seed + self.state.completed_iterations,
            ),
            folder,
            teacher=self.teacher.model if self.config.loss.active else None,
            distill_loss=self.config.loss,
            teacher_head=self.teacher.head,
            validation={self.head: lambda: holdout},
            progress=self.progress,
        )
        trainer.run(resume=True)

    def _starts(self, iteration: int) -> list[Atoms]:
        rng = np.random.default_rng([self.config.seed, iteration])
        count = min(self.config.exploration.max_starts, len(self.train_ids))
        ids = sorted(int(i) for i in rng.choice(self.train_ids, size=count, replace=False))
        return frames_from_store(self.store, self.config.source.dataset, ids)

    def holdout_errors(self, student: EnergyModel) -> tuple[object, object | None]:
        """Student error metrics on the held-out frames vs the teacher and vs the reference."""
        assert self.state.holdout_dataset is not None
        versus_teacher = evaluate_errors(
            student,
            self._batches(frames_from_store(self.store, self.state.holdout_dataset), student),
        )
        reference = frames_from_store(self.store, self.config.source.dataset, self.holdout_ids)
        has_labels = all(
            atoms.calc is not None and "forces" in atoms.calc.results for atoms in reference
        )
        versus_reference = (
            evaluate_errors(student, self._batches(reference, student)) if has_labels else None
        )
        return versus_teacher, versus_reference

    def _write_deviations(
        self,
        folder: Path,
        deviations: np.ndarray,
        selection: Selection,
        spread: np.ndarray | None,
    ) -> None:
        kind = np.full(len(deviations), "candidate", dtype=object)
        kind[selection.accurate] = "accurate"
        kind[selection.rejected] = "rejected"
        chosen = np.zeros(len(deviations), dtype=bool)
        chosen[selection.chosen] = True
        with open(folder / "deviations.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(
                ["frame", "max_force_deviation", "class", "labelled", "ensemble_spread"]
            )
            for index, value in enumerate(deviations):
                member_spread = "" if spread is None else f"{spread[index]:.6g}"
                writer.writerow(
                    [index, f"{value:.6g}", kind[index], bool(chosen[index]), member_spread]
                )

    def iteration(self) -> ReportRow:
        """Runs the next iteration and records it."""
        start_time = time.perf_counter()
        iteration = self.state.completed_iterations
        folder = self.output / f"iteration_{iteration:03d}"
        folder.mkdir(exist_ok=True)
        frames = self.training_frames()
        student = self._student(frames)
        self._train(student, frames, folder / "train")
        save_model(student, folder / "student.pt")
        student.eval()
        members = []
        for member in range(1, self.config.exploration.ensemble_size):
            extra = self._student(frames, member)
            self._train(extra, frames, folder / f"train_{member}")
            save_model(extra, folder / f"student_{member}.pt")
            members.append(extra.eval())

        explored = explore(
            _md_driver(student, self.config.exploration),
            self._starts(iteration),
            self.config.exploration,
            head=self.head,
            seed=self.config.seed + iteration,
            num_threads=self.config.loop.num_threads,
        )
        labelled = self._label(explored) if explored else []
        predicted = (
            predict_frames(student, explored, self.head, num_threads=self.config.loop.num_threads)
            if explored
            else []
        )
        deviations = force_deviation(predicted, labelled)
        # A frame whose forces are not finite is as far from trustworthy as a frame can be.
        deviations = np.where(np.isfinite(deviations), deviations, np.inf)
        finite = np.where(np.isinf(deviations), 10 * self.config.trust.high, deviations)
        needs_features = (
            int(((finite >= self.config.trust.low) & (finite <= self.config.trust.high)).sum())
            > self.config.trust.max_candidates
        )
        features = frame_features(student, explored) if needs_features else None
        selection = select_frames(finite, self.config.trust, features)
        spread = (
            ensemble_spread([student, *members], explored, self.head)
            if members and explored
            else None
        )
        self._write_deviations(folder, finite, selection, spread)
        chosen = [labelled[int(i)] for i in selection.chosen]
        if chosen:
            name = self._dataset_name(f"iter{iteration:03d}")
            write_labelled_dataset(
                self.store,
                name,
                chosen,
                self.teacher,
                source=f"exploration of distillation iteration {iteration}",
                overwrite=True,
            )
            self.state.datasets.append(name)

        versus_teacher, versus_reference = self.holdout_errors(student)
        accurate, candidate, rejected = selection.fractions()
        row = ReportRow(
            iteration=iteration,
            training_frames=len(frames),
            frames_explored=len(explored),
            frames_added=len(chosen),
            accurate_fraction=accurate,
            candidate_fraction=candidate,
            rejected_fraction=rejected,
            max_deviation=float(finite.max()) if len(finite) else 0.0,
            holdout_energy_rmse_teacher=_milli(versus_teacher.energy_rmse_per_atom),
            holdout_forces_rmse_teacher=_milli(versus_teacher.forces_rmse),
            holdout_energy_rmse_reference=_milli(
                versus_reference.energy_rmse_per_atom if versus_reference else None
            ),
            holdout_forces_rmse_reference=_milli(
                versus_reference.forces_rmse if versus_reference else None
            ),
            seconds=time.perf_counter() - start_time,
            max_ensemble_spread=None if spread is None else float(spread.max()),
        )
        self.state.student = str((folder / "student.pt").relative_to(self.output))
        meets = len(explored) > 0 and accurate >= self.config.loop.accurate_threshold
        self.state.accurate_streak = self.state.accurate_streak + 1 if meets else 0
        self.state.converged = self.state.accurate_streak >= 2
        self.state.rows.append(row)
        self.state.save(self.state_path)
        write_report(self.state.rows, self.output)
        return row

    def run(self, on_row: Callable[[ReportRow], None] | None = None) -> LoopState:
        """Runs (or continues) the loop until converged or out of iterations."""
        self.prepare()
        while (
            not self.state.converged
            and self.state.completed_iterations < self.config.loop.max_iterations
        ):
            row = self.iteration()
            if on_row is not None:
                on_row(row)
        return self.state

    def final_student(self) -> EnergyModel:
        """The last trained student."""
        if self.state.student is None:
            raise ValueError(f"{self.output}: no iteration has finished yet")
        return load_model(self.output / self.state.student)


def _milli(value: float | None) -> float | None:
    return None if value is None else 1000.0 * value


def run_distillation(config: DistillConfig, progress: bool = False) -> LoopState:
    """Runs or continues the distillation of ``config``; returns the final state."""
    return Distillation(config, progress).run()


def _md_driver(student: EnergyModel, config: ExplorationConfig) -> EnergyModel:
    """The model that runs the exploration MD: the tabulated form of an se_e2_a student."""
    if config.compressed and isinstance(student, SeAModel) and student.config.table is None:
        return student.compress().eval()
    return student
