"""The loop's resumable state and its report (one row per finished iteration).

``state.json`` is rewritten atomically (temporary file, then rename) at the end of every
iteration, so an interrupted run restarts at the first unfinished iteration; ``report.csv`` and
``report.json`` are regenerated from the state's rows each time.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

STATE_VERSION = 1


@dataclass(kw_only=True)
class ReportRow:
    """One finished iteration.

    Attributes:
        iteration: Iteration number (from 0).
        training_frames: Teacher-labelled frames the student was trained on.
        frames_explored: Frames recorded by the exploration MD.
        frames_added: Candidates labelled by the teacher and added.
        accurate_fraction, candidate_fraction, rejected_fraction: Of the explored frames.
        max_deviation: Largest force deviation seen (eV/Å).
        holdout_energy_rmse_teacher: Student vs teacher, energy per atom (meV/atom).
        holdout_forces_rmse_teacher: Student vs teacher, forces (meV/Å).
        holdout_energy_rmse_reference: Student vs the source dataset's labels (meV/atom), or None.
        holdout_forces_rmse_reference: Student vs the source dataset's labels (meV/Å), or None.
        seconds: Wall time of the iteration.
        max_ensemble_spread: Largest student-ensemble force spread (eV/Å), or None without an
            ensemble.
    """

    iteration: int
    training_frames: int
    frames_explored: int
    frames_added: int
    accurate_fraction: float
    candidate_fraction: float
    rejected_fraction: float
    max_deviation: float
    holdout_energy_rmse_teacher: float | None
    holdout_forces_rmse_teacher: float | None
    holdout_energy_rmse_reference: float | None
    holdout_forces_rmse_reference: float | None
    seconds: float
    max_ensemble_spread: float | None = None


@dataclass(kw_only=True)
class LoopState:
    """Everything a rerun needs to continue.

    Attributes:
        teacher_sha256: The teacher the run started with (a rerun with another teacher fails).
        datasets: Teacher-labelled training datasets in the store, in order.
        holdout_dataset: The teacher-labelled held-out dataset.
        student: The last student's model file (relative to the output folder), or None.
        accurate_streak: Successive iterations at or above the accuracy threshold.
        converged: Whether the stopping rule was met.
        rows: Report rows of the finished iterations.
    """

    teacher_sha256: str
    datasets: list[str] = field(default_factory=list)
    holdout_dataset: str | None = None
    student: str | None = None
    accurate_streak: int = 0
    converged: bool = False
    rows: list[ReportRow] = field(default_factory=list)

    @property
    def completed_iterations(self) -> int:
        """Iterations finished."""
        return len(self.rows)

    def save(self, path: Path) -> None:
        """Writes the state atomically."""
        data = {"version": STATE_VERSION, **dataclasses.asdict(self)}
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(json.dumps(data, indent=2))
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> LoopState:
        """Reads a state written by :meth:`save`.

        Raises:
            ValueError: a damaged or foreign file, naming it.
        """
        try:
            data = json.loads(path.read_text())
            if data.pop("version") != STATE_VERSION:
                raise ValueError("unsupported version")
            rows = [ReportRow(**row) for row in data.pop("rows")]
            return cls(**data, rows=rows)
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a distillation state file ({error})") from error


def write_report(rows: list[ReportRow], folder: Path) -> None:
    """``report.csv`` and ``report.json`` of the rows (atomically each)."""
    names = [item.name for item in dataclasses.fields(ReportRow)]
    temporary = folder / ".report.csv.partial"
    with open(temporary, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
    os.replace(temporary, folder / "report.csv")
    temporary = folder / ".report.json.partial"
    temporary.write_text(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
    os.replace(temporary, folder / "report.json")
