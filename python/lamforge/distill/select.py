"""DP-GEN trust levels and a diverse, capped choice of candidate frames.

Frames with deviation below ``low`` are accurate (the student already reproduces the teacher),
frames above ``high`` are rejected (usually unphysical, from a run the student drove off the
training distribution; labelling them would teach the student about irrelevant regions), and the
frames in between are candidates. At most ``max_candidates`` of them are labelled, chosen by
farthest-point sampling in a per-frame feature space (the mean student descriptor per element),
so that near-duplicates from one MD trajectory are not all labelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from lamforge.distill.students import EnergyModel
from lamforge.nn.atoms import model_input_from_atoms


@dataclass(frozen=True, kw_only=True)
class TrustLevels:
    """Force-deviation thresholds (eV/Å) and the labelling cap of a round."""

    low: float = 0.05
    high: float = 0.5
    max_candidates: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.low < self.high:
            raise ValueError(f"trust levels need 0 <= low < high, got {self.low}, {self.high}")
        if self.max_candidates < 0:
            raise ValueError(f"max_candidates must be >= 0, got {self.max_candidates}")


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Classification of explored frames (indices into the explored list)."""

    accurate: np.ndarray
    candidates: np.ndarray
    rejected: np.ndarray
    chosen: np.ndarray

    @property
    def num_frames(self) -> int:
        """Frames classified."""
        return len(self.accurate) + len(self.candidates) + len(self.rejected)

    def fractions(self) -> tuple[float, float, float]:
        """Accurate, candidate and rejected fractions (0 when nothing was explored)."""
        total = max(self.num_frames, 1)
        return (
            len(self.accurate) / total,
            len(self.candidates) / total,
            len(self.rejected) / total,
        )


def farthest_point_sampling(features: np.ndarray, count: int, first: int = 0) -> np.ndarray:
    """Indices of ``count`` rows of ``features`` [n, d], each the farthest from those chosen.

    Starts at row ``first``; returns every row (from ``first``) when ``count >= n``.
    """
    num_rows = features.shape[0]
    if num_rows == 0 or count <= 0:
        return np.array([], dtype=np.int64)
    count = min(count, num_rows)
    chosen = [first]
    distance = np.linalg.norm(features - features[first], axis=1)
    while len(chosen) < count:
        following = int(np.argmax(distance))
        chosen.append(following)
        distance = np.minimum(distance, np.linalg.norm(features - features[following], axis=1))
    return np.array(chosen, dtype=np.int64)


@torch.no_grad()
def frame_features(model: EnergyModel, frames: list[Atoms]) -> np.ndarray:
    """[num_frames, num_elements * dim] mean descriptor of each element's atoms per frame."""
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)
    rows = []
    num_elements = len(model.elements)
    for atoms in frames:
        inputs = model_input_from_atoms([atoms], model.elements, specs, model.dtype)
        geometries, _ = model.geometries(inputs)
        descriptor = model.descriptor(geometries, inputs.atom_types).double()
        parts = []
        for element in range(num_elements):
            mine = descriptor[inputs.atom_types == element]
            parts.append(mine.mean(0) if len(mine) else descriptor.new_zeros(descriptor.shape[1]))
        rows.append(torch.cat(parts).numpy())
    return np.stack(rows) if rows else np.zeros((0, 0))


def select_frames(
    deviations: np.ndarray, levels: TrustLevels, features: np.ndarray | None = None
) -> Selection:
    """Classifies frames by ``deviations`` and picks at most ``max_candidates`` candidates.

    Args:
        deviations: [num_frames] force deviation per frame (eV/Å).
        levels: Trust levels and cap.
        features: [num_frames, d] per-frame features for farthest-point sampling; without them
            the candidates are stratified by deviation (evenly spaced in sorted order).

    Raises:
        ValueError: a deviation is not finite (a blown-up frame must be caught before) or the
            features do not match the frames.
    """
    deviations = np.asarray(deviations, dtype=np.float64)
    if not np.isfinite(deviations).all():
        raise ValueError("select_frames: deviations must be finite")
    accurate = np.flatnonzero(deviations < levels.low)
    rejected = np.flatnonzero(deviations > levels.high)
    candidates = np.flatnonzero((deviations >= levels.low) & (deviations <= levels.high))
    if len(candidates) <= levels.max_candidates:
        chosen = candidates
    elif features is not None:
        if features.shape[0] != len(deviations):
            raise ValueError(
                f"select_frames: {features.shape[0]} feature rows for {len(deviations)} frames"
            )
        scale = features[candidates].std(axis=0) + 1e-12
        normalised = (features[candidates] - features[candidates].mean(axis=0)) / scale
        # Start from the worst candidate: the most informative frame is always labelled.
        first = int(np.argmax(deviations[candidates]))
        chosen = candidates[farthest_point_sampling(normalised, levels.max_candidates, first)]
    else:
        order = candidates[np.argsort(deviations[candidates])]
        picks = np.linspace(0, len(order) - 1, levels.max_candidates).round().astype(np.int64)
        chosen = order[np.unique(picks)]
    return Selection(
        accurate=accurate, candidates=candidates, rejected=rejected, chosen=np.sort(chosen)
    )
