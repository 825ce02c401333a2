"""Statistics of a dataset: counts, element coverage and distributions (``lamforge data stats``).

Everything but the force-magnitude distribution comes from the frame index; force magnitudes are
read from the ``forces`` array a batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from lamforge.data.reader import DatasetReader


@dataclass(frozen=True, kw_only=True)
class Distribution:
    """Summary of a sample with its histogram.

    Attributes:
        count: Number of values (missing ones excluded).
        minimum, maximum, mean, std: Moments and range.
        percentiles: Values at 1, 5, 50, 95 and 99 percent, keyed ``p1`` ... ``p99``.
        bin_edges: [bins + 1] histogram edges.
        counts: [bins] histogram counts.
    """

    count: int
    minimum: float
    maximum: float
    mean: float
    std: float
    percentiles: dict[str, float]
    bin_edges: list[float]
    counts: list[int]

    @classmethod
    def of(cls, values: np.ndarray, bins: int = 50, log: bool = False) -> Distribution:
        """Summarises ``values`` (NaN ignored); ``log`` spaces the bins logarithmically."""
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return cls(
                count=0,
                minimum=np.nan,
                maximum=np.nan,
                mean=np.nan,
                std=np.nan,
                percentiles={},
                bin_edges=[],
                counts=[],
            )
        low, high = float(values.min()), float(values.max())
        if log and high > 0:
            positive_low = float(values[values > 0].min()) if (values > 0).any() else high
            edges = np.geomspace(max(positive_low, high * 1e-8), high, bins + 1)
            edges[0] = min(edges[0], low) if low > 0 else 0.0
        else:
            edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        counts, edges = np.histogram(values, bins=edges)
        return cls(
            count=int(values.size),
            minimum=low,
            maximum=high,
            mean=float(values.mean()),
            std=float(values.std()),
            percentiles={f"p{q}": float(np.percentile(values, q)) for q in (1, 5, 50, 95, 99)},
            bin_edges=edges.tolist(),
            counts=counts.tolist(),
        )


@dataclass(frozen=True, kw_only=True)
class DatasetStats:
    """What ``lamforge data stats`` reports for one dataset.

    Attributes:
        name: Dataset name.
        num_frames, num_atoms: Counts.
        labels: Frames carrying each label.
        elements: Per element symbol: ``{"frames": frames containing it, "atoms": atoms of it}``.
        periodicity: Frames per ``pbc`` pattern (``TTT``, ``TTF``, ``FFF``...).
        splits: Frames per split (``unassigned`` before ``lamforge data split``).
        duplicates: Frames whose structure repeats an earlier frame.
        energy_per_atom: Distribution in eV/atom.
        force_magnitude: Distribution of per-atom |F| in eV/Å (all atoms with forces).
        atoms_per_frame: Distribution of frame sizes.
    """

    name: str
    num_frames: int
    num_atoms: int
    labels: dict[str, int]
    elements: dict[str, dict[str, int]]
    periodicity: dict[str, int]
    splits: dict[str, int]
    duplicates: int
    energy_per_atom: Distribution
    force_magnitude: Distribution
    atoms_per_frame: Distribution


def _counts(index: pl.DataFrame, column: str, missing: str) -> dict[str, int]:
    table = index.group_by(pl.col(column).fill_null(missing)).len().sort(column)
    return {str(key): int(count) for key, count in table.iter_rows()}


def dataset_stats(reader: DatasetReader, *, bins: int = 50) -> DatasetStats:
    """Computes the statistics of one dataset."""
    index = reader.index()
    per_element_frames = (
        index.select("elements").explode("elements").group_by("elements").len().iter_rows()
    )
    numbers = np.zeros(256, dtype=np.int64)
    magnitudes = []
    for batch in reader.iter_batches():
        numbers += np.bincount(batch.atomic_numbers, minlength=256)
        if batch.forces is not None:
            per_atom_frame = np.repeat(batch.has_forces, np.diff(batch.atom_offsets))
            forces = batch.forces[per_atom_frame]
            magnitudes.append(np.sqrt((forces**2).sum(axis=1)))
    from ase.data import atomic_numbers

    elements = {
        symbol: {"frames": int(frames), "atoms": int(numbers[atomic_numbers[symbol]])}
        for symbol, frames in sorted(per_element_frames, key=lambda row: atomic_numbers[row[0]])
    }
    force_values = np.concatenate(magnitudes) if magnitudes else np.zeros(0)
    return DatasetStats(
        name=reader.info.name,
        num_frames=reader.num_frames,
        num_atoms=reader.num_atoms,
        labels=dict(reader.info.labels),
        elements=elements,
        periodicity=_counts(index, "pbc", "?"),
        splits=_counts(index, "split", "unassigned"),
        duplicates=index.height - index["content_hash"].n_unique(),
        energy_per_atom=Distribution.of(index["energy_per_atom"].to_numpy(), bins),
        force_magnitude=Distribution.of(force_values, bins, log=True),
        atoms_per_frame=Distribution.of(index["num_atoms"].to_numpy(), bins),
    )
