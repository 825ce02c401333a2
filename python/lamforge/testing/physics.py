"""Reusable physics checks for energy models that map ASE frames to energy, forces and virial.

Every check takes an ``evaluate`` callable (``frames -> Prediction``), so it works for any model;
:func:`dpa2_evaluator` adapts a :class:`lamforge.nn.DPA2Model` (with the reference neighbour
lists, or any other builder of :class:`lamforge.nn.ModelInput`). Each check raises
``AssertionError`` with the measured discrepancy and returns it otherwise, so tests can also log
or compare the numbers.

Conventions: energy in eV per frame; forces -dE/dx (eV/Å); virial W[k, l] = Σ F_k X_l (eV), which
equals -(∂E/∂ε)ᵀ for the strain x -> x (1 + ε) applied to positions and cell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from lamforge.nn.forces import evaluate as evaluate_model
from lamforge.nn.inputs import ModelInput
from lamforge.nn.model import DPA2Model
from lamforge.testing.reference_neighbors import model_input


@dataclass(kw_only=True, frozen=True)
class Prediction:
    """Predictions for a list of frames (float64 NumPy).

    Attributes:
        energy: [num_frames].
        forces: one [num_atoms_f, 3] array per frame.
        virial: [num_frames, 3, 3].
    """

    energy: np.ndarray
    forces: list[np.ndarray]
    virial: np.ndarray


Evaluator = Callable[[Sequence[Atoms]], Prediction]


def dpa2_evaluator(
    model: DPA2Model,
    head: str | None = None,
    build_input: Callable[[Sequence[Atoms]], ModelInput] | None = None,
) -> Evaluator:
    """Evaluator of a DPA-2 model; by default over the slow ASE reference neighbour lists."""
    specs = sorted(set(model.descriptor.neighbor_specs().values()), reverse=True)

    def default_builder(frames: Sequence[Atoms]) -> ModelInput:
        return model_input(frames, model.elements, specs, dtype=model.dtype)

    builder = build_input or default_builder

    def run(frames: Sequence[Atoms]) -> Prediction:
        inputs = builder(frames)
        output = evaluate_model(model, inputs, head)
        assert output.forces is not None and output.virial is not None
        counts = np.cumsum([0] + [len(atoms) for atoms in frames])
        forces = output.forces.detach().double().cpu().numpy()
        return Prediction(
            energy=output.energy.detach().double().cpu().numpy(),
            forces=[forces[counts[k] : counts[k + 1]] for k in range(len(frames))],
            virial=output.virial.detach().double().cpu().numpy(),
        )

    return run


def _check(name: str, error: float, tolerance: float) -> float:
    assert error <= tolerance, f"{name}: discrepancy {error:.3e} exceeds tolerance {tolerance:.3e}"
    return error


def check_forces_finite_difference(
    evaluate: Evaluator,
    atoms: Atoms,
    *,
    delta: float = 1e-4,
    tolerance: float = 1e-6,
    max_atoms: int = 4,
) -> float:
    """Forces against central differences of the energy for the first ``max_atoms`` atoms.

    Returns the largest absolute difference (eV/Å).
    """
    checked = min(max_atoms, len(atoms))
    displaced = []
    for atom in range(checked):
        for axis in range(3):
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions[atom, axis] += sign * delta
                displaced.append(moved)
    # One batched evaluation: the reference frame first, then the displaced copies in order.
    out = evaluate([atoms, *displaced])
    energies = out.energy[1:].reshape(checked, 3, 2)
    numeric = -(energies[..., 0] - energies[..., 1]) / (2 * delta)
    error = float(np.abs(numeric - out.forces[0][:checked]).max())
    return _check("forces vs finite differences", error, tolerance)


def strained(atoms: Atoms, strain: np.ndarray) -> Atoms:
    """Positions and cell mapped by x -> x (1 + strain) (row vectors)."""
    deformation = np.eye(3) + strain
    moved = atoms.copy()
    moved.set_cell(atoms.cell.array @ deformation, scale_atoms=False)
    moved.positions = atoms.positions @ deformation
    return moved


def check_virial_finite_difference(
    evaluate: Evaluator, atoms: Atoms, *, delta: float = 1e-5, tolerance: float = 1e-6
) -> float:
    """Virial against W = -(∂E/∂ε)ᵀ by central differences of all nine strain components."""
    deformed = []
    for row in range(3):
        for column in range(3):
            for sign in (1.0, -1.0):
                strain = np.zeros((3, 3))
                strain[row, column] = sign * delta
                deformed.append(strained(atoms, strain))
    out = evaluate([atoms, *deformed])
    virial = out.virial[0]
    energies = out.energy[1:].reshape(3, 3, 2)
    derivative = (energies[..., 0] - energies[..., 1]) / (2 * delta)
    error = float(np.abs(virial - (-derivative.T)).max())
    return _check("virial vs strain finite differences", error, tolerance)


def random_rotation(seed: int) -> np.ndarray:
    """A random proper rotation matrix (QR of a Gaussian matrix, determinant +1)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def check_invariance(
    evaluate: Evaluator, atoms: Atoms, *, seed: int = 0, tolerance: float = 1e-8
) -> float:
    """Rotation, translation and permutation: energy invariant, forces and virial covariant.

    The tolerance is relative to the largest |energy|, |force| and |virial| entry.
    """
    rng = np.random.default_rng(seed)
    reference = evaluate([atoms])
    scale_e = max(1.0, abs(reference.energy[0]))
    scale_f = max(1e-3, float(np.abs(reference.forces[0]).max()))
    scale_w = max(1e-3, float(np.abs(reference.virial[0]).max()))
    rotation = random_rotation(seed)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation
    rotated.set_cell(atoms.cell.array @ rotation, scale_atoms=False)
    translated = atoms.copy()
    translated.positions = atoms.positions + rng.normal(size=3) * 3.0
    order = rng.permutation(len(atoms))
    permuted = atoms[order]
    out = evaluate([rotated, translated, permuted])
    errors = [
        abs(out.energy[0] - reference.energy[0]) / scale_e,
        np.abs(out.forces[0] - reference.forces[0] @ rotation).max() / scale_f,
        np.abs(out.virial[0] - rotation.T @ reference.virial[0] @ rotation).max() / scale_w,
        abs(out.energy[1] - reference.energy[0]) / scale_e,
        np.abs(out.forces[1] - reference.forces[0]).max() / scale_f,
        abs(out.energy[2] - reference.energy[0]) / scale_e,
        np.abs(out.forces[2] - reference.forces[0][order]).max() / scale_f,
        np.abs(out.virial[2] - reference.virial[0]).max() / scale_w,
    ]
    return _check("rotation/translation/permutation invariance", float(max(errors)), tolerance)


def check_cutoff_smoothness(
    evaluate: Evaluator,
    atoms: Atoms,
    moving_atom: int,
    direction: np.ndarray,
    crossing: float,
    *,
    step: float = 1e-5,
    tolerance: float = 1e-7,
) -> float:
    """Energy and forces continuous as ``moving_atom`` crosses a cutoff.

    ``atoms`` is placed so that moving ``moving_atom`` by ``crossing`` along ``direction`` puts a
    neighbour distance exactly on a cutoff. Energy and forces at ``crossing + step`` must match
    their linear extrapolation from two points before the crossing (``- 2 step``, ``- step``):
    a jump in the value or the slope shows up directly, a smooth curve only at O(step²). The
    error is relative to the largest force (at least 1).
    """
    unit = np.asarray(direction, dtype=float) / np.linalg.norm(direction)

    def moved(distance: float) -> Atoms:
        copy = atoms.copy()
        copy.positions[moving_atom] += distance * unit
        return copy

    samples = [crossing - 2 * step, crossing - step, crossing + step]
    out = evaluate([moved(d) for d in samples])
    scale = max(1.0, float(max(np.abs(f).max() for f in out.forces)))
    # Linear extrapolation over 2 steps from the two points before the crossing.
    predicted_energy = out.energy[1] + 2 * (out.energy[1] - out.energy[0])
    predicted_forces = out.forces[1] + 2 * (out.forces[1] - out.forces[0])
    errors = [
        abs(out.energy[2] - predicted_energy) / scale,
        float(np.abs(out.forces[2] - predicted_forces).max()) / scale,
    ]
    return _check(f"smoothness across the cutoff at +{crossing:.3f} Å", max(errors), tolerance)


def check_supercell_extensivity(
    evaluate: Evaluator, atoms: Atoms, *, repeat: tuple[int, int, int] = (2, 2, 2), tolerance=1e-8
) -> float:
    """E(supercell) = n E, forces repeat, W(supercell) = n W (relative errors)."""
    copies = int(np.prod(repeat))
    out = evaluate([atoms, atoms.repeat(repeat)])
    scale_e = max(1.0, abs(out.energy[0]) * copies)
    scale_f = max(1e-3, float(np.abs(out.forces[0]).max()))
    scale_w = max(1e-3, float(np.abs(out.virial[0]).max()) * copies)
    errors = [
        abs(out.energy[1] - copies * out.energy[0]) / scale_e,
        np.abs(out.forces[1] - np.tile(out.forces[0], (copies, 1))).max() / scale_f,
        np.abs(out.virial[1] - copies * out.virial[0]).max() / scale_w,
    ]
    return _check(f"supercell {repeat} extensivity", float(max(errors)), tolerance)


def check_batch_consistency(
    evaluate: Evaluator, frames: Sequence[Atoms], *, tolerance: float = 1e-10
) -> float:
    """Evaluating frames together equals evaluating them one at a time (relative error)."""
    together = evaluate(frames)
    errors = []
    for k, atoms in enumerate(frames):
        alone = evaluate([atoms])
        scale = max(1.0, abs(alone.energy[0]))
        errors.append(abs(together.energy[k] - alone.energy[0]) / scale)
        force_scale = max(1e-3, float(np.abs(alone.forces[0]).max()))
        errors.append(np.abs(together.forces[k] - alone.forces[0]).max() / force_scale)
        errors.append(np.abs(together.virial[k] - alone.virial[0]).max() / scale)
    return _check("batch vs one frame at a time", float(max(errors)), tolerance)


def check_isolated_atoms(
    evaluate: Evaluator, symbols: Sequence[str], expected: Sequence[float], *, tolerance=1e-10
) -> float:
    """An atom without neighbours (no cell) has energy ``expected`` and zero force."""
    frames = [Atoms(symbol, positions=[[0.0, 0.0, 0.0]]) for symbol in symbols]
    out = evaluate(frames)
    errors = [abs(e - x) for e, x in zip(out.energy, expected, strict=True)]
    errors += [float(np.abs(f).max()) for f in out.forces]
    return _check("isolated atom energy", float(max(errors)), tolerance)


def torch_precision_tolerance(dtype: torch.dtype, float64: float, float32: float) -> float:
    """Pick a tolerance by precision."""
    return float64 if dtype == torch.float64 else float32
