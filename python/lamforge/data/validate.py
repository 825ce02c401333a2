"""Checks of a stored dataset: each finding names the dataset, the frame and what is wrong.

Errors (the data is unusable as is): non-finite values, atoms closer than a threshold, damaged or
missing shards. Warnings (worth a look): frames missing a label others have, energy-per-atom and
force outliers by robust z-score, duplicated structures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
from ase.neighborlist import primitive_neighbor_list
from matscipy.neighbours import neighbour_list

from lamforge.data.frames import FrameBatch
from lamforge.data.reader import DatasetReader, StoreCorruptionError


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One problem found by ``validate_dataset``.

    Attributes:
        dataset: Dataset name.
        frame: Frame id, or None for a problem of the whole dataset.
        severity: ``error`` or ``warning``.
        check: Short name of the check (``non_finite``, ``close_atoms``, ``missing_label``,
            ``energy_outlier``, ``force_outlier``, ``duplicate``, ``corrupt``, ``missing_shard``).
        message: What is wrong, with the values.
    """

    dataset: str
    frame: int | None
    severity: str
    check: str
    message: str


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Thresholds of the checks.

    Attributes:
        min_distance: Atoms closer than this (Å) are an error.
        outlier_z: Robust z-score (median and MAD) above which energy per atom or max |F| is an
            outlier.
        batch_frames: Frames read at a time.
    """

    min_distance: float = 0.5
    outlier_z: float = 10.0
    batch_frames: int = 4096


def robust_z(values: np.ndarray) -> np.ndarray:
    """``0.6745 * (x - median) / MAD``; zeros when the MAD is zero or values are missing."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros_like(values)
    median = np.median(values[finite])
    mad = np.median(np.abs(values[finite] - median))
    if mad == 0:
        return np.zeros_like(values)
    return np.where(finite, 0.6745 * (values - median) / mad, 0.0)


def closest_pair(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> float:
    """Shortest interatomic distance below ``cutoff`` (periodic images included), else inf."""
    if positions.shape[0] < 2 and not pbc.any():
        return float("inf")
    if not pbc.any():
        difference = positions[:, None, :] - positions[None, :, :]
        distances = np.sqrt((difference**2).sum(axis=-1))
        np.fill_diagonal(distances, np.inf)
        return float(distances.min())
    if abs(np.linalg.det(cell)) < 1e-9:
        # A zero vector along a non-periodic direction (allowed): ASE's list copes with it.
        distances = primitive_neighbor_list("d", pbc, cell, positions, cutoff)
    else:
        # matscipy's C cell list: about 100x faster than ASE's NumPy one on 100-atom frames.
        distances = neighbour_list("d", positions=positions, cell=cell, pbc=pbc, cutoff=cutoff)
    return float(distances.min()) if distances.size else float("inf")


def _batch_findings(name: str, batch: FrameBatch, config: ValidationConfig) -> list[Finding]:
    findings = []
    for index in range(batch.num_frames):
        frame_id = int(batch.frame_ids[index])
        atoms = slice(int(batch.atom_offsets[index]), int(batch.atom_offsets[index + 1]))
        bad = ["positions"] if _nonfinite(batch.positions[atoms]) else []
        # A missing label is stored as NaN; only labels the mask says are present must be finite.
        if batch.has_forces[index] and _nonfinite(batch.forces[atoms]):
            bad.append("forces")
        if not np.isfinite(batch.cell[index]).all():
            bad.append("cell")
        if batch.has_energy[index] and not np.isfinite(batch.energy[index]):
            bad.append("energy")
        if batch.has_virial[index] and not np.isfinite(batch.virial[index]).all():
            bad.append("virial")
        if bad:
            message = f"non-finite values (NaN or inf) in {', '.join(bad)}"
            findings.append(
                Finding(
                    dataset=name,
                    frame=frame_id,
                    severity="error",
                    check="non_finite",
                    message=message,
                )
            )
            continue
        distance = closest_pair(
            batch.positions[atoms], batch.cell[index], batch.pbc[index], config.min_distance
        )
        if distance < config.min_distance:
            message = f"atoms {distance:.3f} Å apart (threshold {config.min_distance} Å)"
            findings.append(
                Finding(
                    dataset=name,
                    frame=frame_id,
                    severity="error",
                    check="close_atoms",
                    message=message,
                )
            )
    return findings


def _nonfinite(values: np.ndarray) -> bool:
    return values.size > 0 and not np.isfinite(values).all()


def _index_findings(name: str, index: pl.DataFrame, config: ValidationConfig) -> list[Finding]:
    findings = []
    for label in ("energy", "forces", "virial"):
        column = index[f"has_{label}"]
        if 0 < column.sum() < index.height:
            for frame in index.filter(~pl.col(f"has_{label}"))["frame"]:
                message = f"no {label} (other frames of the dataset have it)"
                findings.append(
                    Finding(
                        dataset=name,
                        frame=int(frame),
                        severity="warning",
                        check="missing_label",
                        message=message,
                    )
                )
    for column, check, unit in (
        ("energy_per_atom", "energy_outlier", "eV/atom"),
        ("max_force", "force_outlier", "eV/Å"),
    ):
        values = index[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
        scores = robust_z(values)
        for row in np.flatnonzero(np.abs(scores) > config.outlier_z):
            message = f"{column} = {values[row]:.4g} {unit}, robust z-score {scores[row]:.1f}"
            findings.append(
                Finding(
                    dataset=name,
                    frame=int(index["frame"][int(row)]),
                    severity="warning",
                    check=check,
                    message=message,
                )
            )
    groups = (
        index.group_by("content_hash")
        .agg(pl.col("frame").sort())
        .filter(pl.col("frame").list.len() > 1)
    )
    for frames in groups.sort(pl.col("frame").list.first())["frame"]:
        first, *others = frames.to_list()
        for frame in others:
            message = f"same structure as frame {first}"
            findings.append(
                Finding(
                    dataset=name,
                    frame=int(frame),
                    severity="warning",
                    check="duplicate",
                    message=message,
                )
            )
    return findings


def validate_dataset(reader: DatasetReader, config: ValidationConfig) -> list[Finding]:
    """Runs every check on one dataset; reads all of its arrays once.

    Returns:
        The findings, sorted by frame id (dataset-wide ones first).
    """
    name = reader.info.name
    findings = [
        Finding(
            dataset=name,
            frame=None,
            severity="error",
            check="missing_shard",
            message=f"shard file {missing} is missing",
        )
        for missing in reader.missing_shards()
    ]
    try:
        for batch in reader.iter_batches(config.batch_frames):
            findings.extend(_batch_findings(name, batch, config))
    except StoreCorruptionError as error:
        findings.append(
            Finding(dataset=name, frame=None, severity="error", check="corrupt", message=str(error))
        )
    findings.extend(_index_findings(name, reader.index(), config))
    return sorted(findings, key=lambda f: -1 if f.frame is None else f.frame)
