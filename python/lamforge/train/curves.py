"""Learning curves: one CSV row per logged step and split, and PNG plots of them.

The CSV (``curves.csv`` in the run folder) has the columns of :data:`COLUMNS`. Rows are appended
and flushed as training goes; on resume, rows of steps after the checkpoint are dropped first, so
the file always describes one consistent run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

COLUMNS = (
    "step", "split", "task", "learning_rate", "loss",
    "energy_rmse_per_atom", "forces_rmse", "virial_rmse_per_atom",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class CurveRow:
    """One point of a learning curve (None for quantities without labels)."""

    step: int
    split: str
    task: str
    learning_rate: float
    loss: float | None = None
    energy_rmse_per_atom: float | None = None
    forces_rmse: float | None = None
    virial_rmse_per_atom: float | None = None


class CurveLog:
    """Appends learning-curve rows to a CSV file."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        rows = []
        if self.path.is_file() and resume_step is not None:
            with open(self.path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: CurveRow) -> None:
        """Appends one row and flushes it to disk."""
        with open(self.path, "a", newline="") as handle:
            values = {key: ("" if value is None else value) for key, value in row.__dict__.items()}
            csv.DictWriter(handle, fieldnames=COLUMNS).writerow(values)


def read_curves(path: Path) -> list[dict[str, str]]:
    """The rows of a curves CSV."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot_curves(csv_path: Path, png_path: Path) -> Path:
    """Plots loss and RMSEs against the step, one line per task and split, on log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_curves(csv_path)
    quantities = ("loss", "energy_rmse_per_atom", "forces_rmse", "virial_rmse_per_atom")
    units = ("", " (eV/atom)", " (eV/Å)", " (eV/atom)")
    figure, axes = plt.subplots(1, len(quantities), figsize=(4 * len(quantities), 3.2))
    series = sorted({(r["task"], r["split"]) for r in rows})
    for axis, quantity, unit in zip(axes, quantities, units, strict=True):
        for task, split in series:
            points = [
                (int(r["step"]), float(r[quantity]))
                for r in rows
                if r["task"] == task and r["split"] == split and r[quantity] not in ("", None)
            ]
            if points:
                steps, values = zip(*points, strict=True)
                style = "-" if split == "train" else "o-"
                axis.plot(steps, values, style, label=f"{task} ({split})", markersize=3)
        axis.set_xlabel("step")
        axis.set_title(quantity + unit, fontsize=9)
        axis.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7)
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    figure.savefig(png_path, dpi=120)
    plt.close(figure)
    return Path(png_path)
