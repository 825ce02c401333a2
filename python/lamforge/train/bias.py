"""Per-element energy bias by least squares (deepmd-kit's ``out_bias`` statistics).

A frame's energy is modelled as ``E_f ≈ sum_t n_ft b_t`` with ``n_ft`` the number of atoms of
element ``t`` in frame ``f``. ``fit_energy_bias`` solves ``min_b ||n b - y||^2``: with ``y`` the
frame energies it is the "set" mode (a fresh head), with ``y`` the residual of a current model it is
the "change" mode of fine-tuning (the shift to add to an inherited head's bias). Elements that are
absent from the data get bias 0 (or keep a given value): the minimum-norm solution, as
``numpy.linalg.lstsq`` gives. ``preset`` fixes chosen elements' biases, as deepmd-kit's
``preset_out_bias`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class BiasFit:
    """Result of a bias fit.

    Attributes:
        bias: Energy per atom of each element [num_elements] (eV).
        residual_rmse_per_atom: RMSE of ``(y - n b) / num_atoms`` over the frames (eV/atom), the
            "RMSE of energy per atom after linear regression" that deepmd-kit logs.
    """

    bias: np.ndarray
    residual_rmse_per_atom: float


def element_counts(atom_types: np.ndarray, atom_offsets: np.ndarray, num_elements: int):
    """Counts atoms of each element per frame.

    Args:
        atom_types: Element index of every atom of the flat batch [num_atoms].
        atom_offsets: Frame boundaries [num_frames + 1].
        num_elements: Number of elements of the model.

    Returns:
        Counts [num_frames, num_elements] (float64).
    """
    frame_of_atom = np.repeat(np.arange(len(atom_offsets) - 1), np.diff(atom_offsets))
    counts = np.zeros((len(atom_offsets) - 1, num_elements))
    np.add.at(counts, (frame_of_atom, atom_types), 1.0)
    return counts


def fit_energy_bias(
    counts: np.ndarray, energies: np.ndarray, preset: dict[int, float] | None = None
) -> BiasFit:
    """Least-squares per-element energy bias.

    Args:
        counts: Atoms of each element per frame [num_frames, num_elements].
        energies: Target frame energies [num_frames] (labels, or label minus a model's prediction
            for the change mode).
        preset: Element index -> fixed bias; those columns are not fitted.

    Returns:
        The bias and the residual RMSE per atom.

    Raises:
        ValueError: shapes disagree, no frame is given, or values are not finite.
    """
    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    if counts.ndim != 2 or energies.shape != (counts.shape[0],):
        raise ValueError(
            f"counts must be [num_frames, num_elements] and energies [num_frames]; got "
            f"{counts.shape} and {energies.shape}"
        )
    if counts.shape[0] == 0:
        raise ValueError("cannot fit an energy bias on zero frames")
    if not (np.isfinite(counts).all() and np.isfinite(energies).all()):
        raise ValueError("counts and energies must be finite")
    preset = preset or {}
    bias = np.zeros(counts.shape[1])
    fixed = np.zeros(counts.shape[1], dtype=bool)
    for element, value in preset.items():
        bias[element] = value
        fixed[element] = True
    target = energies - counts[:, fixed] @ bias[fixed]
    free = ~fixed
    if free.any():
        bias[free] = np.linalg.lstsq(counts[:, free], target, rcond=None)[0]
    residual = (energies - counts @ bias) / np.maximum(counts.sum(axis=1), 1.0)
    return BiasFit(bias=bias, residual_rmse_per_atom=float(np.sqrt(np.mean(residual**2))))
