"""Energy, force and virial loss with prefactors that follow the learning rate (deepmd-kit).

Each term ``x`` (energy, forces, virial) has a prefactor that moves linearly with the learning
rate from ``start`` to ``limit``::

    p_x(t) = limit + (start - limit) * lr(t) / lr(0)

so early training weights forces heavily (start 1000) and late training balances energy and
forces (limit 1), the DeePMD recipe. A term is used only when both its ``start`` and ``limit`` are
non-zero, and only on the frames (atoms) whose label exists: missing labels are masked, never
treated as zero.

With ``function="mse"`` (deepmd-kit's default) the loss is a sum of mean squared errors::

    L = p_e mean_f (dE_f^2 / N_f^q) + p_f mean_{f,i,k} dF_fik^2 + p_v mean_f mean_9 (dW_f^2 / N_f^q)

with ``q = 1`` (deepmd-kit's default, ``intensive=False``) or ``q = 2`` (``intensive=True``, errors
per atom). ``function="huber"`` replaces each square by the Huber function of the per-atom residual
(energy and virial divided by ``N_f``) with threshold ``huber_delta``.

Every mean is a sum over labelled frames (atoms) divided by their number, so the loss of a batch is
the sum of the losses of its parts when each part divides by the whole batch's counts
(:class:`LabelCounts`): ``lamforge.train.step`` back-propagates a batch part by part this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch


@dataclass(frozen=True, kw_only=True)
class Prefactor:
    """Start and limit of one loss prefactor."""

    start: float
    limit: float

    @property
    def active(self) -> bool:
        """Whether the term enters the loss."""
        return self.start != 0.0 and self.limit != 0.0

    def at(self, lr_factor: float) -> float:
        """Prefactor when the learning rate is ``lr_factor`` times its start value."""
        return self.limit + (self.start - self.limit) * lr_factor


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    """Weights and form of the energy loss (defaults: deepmd-kit's)."""

    energy: Prefactor = field(default_factory=lambda: Prefactor(start=0.02, limit=1.0))
    forces: Prefactor = field(default_factory=lambda: Prefactor(start=1000.0, limit=1.0))
    virial: Prefactor = field(default_factory=lambda: Prefactor(start=0.0, limit=0.0))
    function: Literal["mse", "huber"] = "mse"
    huber_delta: float = 0.01
    intensive: bool = False


@dataclass(kw_only=True)
class EnergyLabels:
    """Reference labels of a flat batch of frames, with masks for missing labels.

    Attributes:
        energy: Frame energies [num_frames] (eV).
        energy_mask: Frames with an energy label [num_frames] (bool).
        forces: Atomic forces [num_atoms, 3] (eV/Å).
        forces_mask: Atoms with a force label [num_atoms] (bool).
        virial: Frame virials [num_frames, 3, 3] (eV), or None when no frame has one.
        virial_mask: Frames with a virial label [num_frames] (bool), or None.
        num_atoms: Atoms per frame [num_frames].
    """

    energy: torch.Tensor
    energy_mask: torch.Tensor
    forces: torch.Tensor
    forces_mask: torch.Tensor
    num_atoms: torch.Tensor
    virial: torch.Tensor | None = None
    virial_mask: torch.Tensor | None = None

    def frames(self, start: int, stop: int) -> EnergyLabels:
        """The labels of frames ``start`` to ``stop - 1`` (atoms of a frame are contiguous)."""
        offsets = torch.cumsum(self.num_atoms, 0).tolist()
        first = offsets[start - 1] if start > 0 else 0
        last = offsets[stop - 1]
        return EnergyLabels(
            energy=self.energy[start:stop],
            energy_mask=self.energy_mask[start:stop],
            forces=self.forces[first:last],
            forces_mask=self.forces_mask[first:last],
            num_atoms=self.num_atoms[start:stop],
            virial=None if self.virial is None else self.virial[start:stop],
            virial_mask=None if self.virial_mask is None else self.virial_mask[start:stop],
        )


@dataclass(frozen=True, kw_only=True)
class LabelCounts:
    """How many frames (atoms) carry each label: the denominators of the loss's means.

    Attributes:
        energy: Frames with an energy label.
        forces: Atoms with a force label.
        virial: Frames with a virial label.
    """

    energy: int
    forces: int
    virial: int

    @classmethod
    def of(cls, labels: EnergyLabels) -> LabelCounts:
        """The counts of a batch of labels."""
        virial = 0 if labels.virial_mask is None else int(labels.virial_mask.sum())
        return cls(
            energy=int(labels.energy_mask.sum()),
            forces=int(labels.forces_mask.sum()),
            virial=virial,
        )


@dataclass(kw_only=True)
class EnergyPrediction:
    """Model output for a flat batch (shapes as in :class:`EnergyLabels`)."""

    energy: torch.Tensor
    forces: torch.Tensor
    virial: torch.Tensor | None = None


@dataclass(kw_only=True)
class LossValue:
    """The loss and its parts.

    Attributes:
        total: The scalar to back-propagate.
        energy_rmse_per_atom: RMSE of energy per atom over labelled frames (eV/atom), or None.
        forces_rmse: RMSE of force components over labelled atoms (eV/Å), or None.
        virial_rmse_per_atom: RMSE of virial components per atom (eV/atom), or None.
    """

    total: torch.Tensor
    energy_rmse_per_atom: float | None = None
    forces_rmse: float | None = None
    virial_rmse_per_atom: float | None = None


def _huber(residual: torch.Tensor, delta: float) -> torch.Tensor:
    absolute = residual.abs()
    return torch.where(absolute < delta, 0.5 * residual**2, delta * (absolute - 0.5 * delta))


def _rmse(squares: torch.Tensor) -> float:
    return float(squares.detach().mean().sqrt())


class EnergyLoss:
    """The loss of :class:`LossConfig`; call it with prediction, labels and ``lr(t) / lr(0)``."""

    def __init__(self, config: LossConfig) -> None:
        self.config = config

    def _term(
        self, residual: torch.Tensor, per_atom: torch.Tensor | None, count: int | None
    ) -> torch.Tensor:
        """Mean of the squares (or Huber values) of ``residual`` [rows, ...].

        With ``count`` (labelled rows of the whole batch) the sum over ``count`` times the row
        width instead: this part's share of the batch's mean.
        """
        if self.config.function == "huber":
            scaled = residual if per_atom is None else residual / per_atom
            values = _huber(scaled, self.config.huber_delta)
        else:
            values = residual**2
            if per_atom is not None:
                exponent = 2 if self.config.intensive else 1
                values = values / per_atom**exponent
        if count is None:
            return values.mean()
        return values.sum() / (count * values.shape[1:].numel())

    def __call__(
        self,
        prediction: EnergyPrediction,
        labels: EnergyLabels,
        lr_factor: float,
        counts: LabelCounts | None = None,
    ) -> LossValue:
        """Computes the loss.

        Args:
            prediction: Model output.
            labels: Reference labels and masks.
            lr_factor: Current learning rate divided by the start learning rate.
            counts: Labelled frames and atoms of the whole batch when ``labels`` is a part of it:
                the terms are then this part's share of the batch's loss (the shares sum to it).
                None: ``labels`` is the whole batch. The RMSEs are always those of this part.

        Returns:
            The total loss and RMSEs of the labelled parts.
        """
        config = self.config
        total = prediction.energy.new_zeros(())
        value = LossValue(total=total)
        atoms = labels.num_atoms.to(prediction.energy.dtype)
        if config.energy.active and labels.energy_mask.any():
            mask = labels.energy_mask
            residual = prediction.energy[mask] - labels.energy[mask]
            count = None if counts is None else counts.energy
            term = self._term(residual, atoms[mask], count)
            total = total + config.energy.at(lr_factor) * term
            value.energy_rmse_per_atom = _rmse((residual / atoms[mask]) ** 2)
        if config.forces.active and labels.forces_mask.any():
            mask = labels.forces_mask
            residual = prediction.forces[mask] - labels.forces[mask]
            count = None if counts is None else counts.forces
            total = total + config.forces.at(lr_factor) * self._term(residual, None, count)
            value.forces_rmse = _rmse(residual**2)
        if (
            config.virial.active
            and prediction.virial is not None
            and labels.virial is not None
            and labels.virial_mask is not None
            and labels.virial_mask.any()
        ):
            mask = labels.virial_mask
            residual = (prediction.virial[mask] - labels.virial[mask]).reshape(-1, 9)
            per_atom = atoms[mask].unsqueeze(-1)
            count = None if counts is None else counts.virial
            total = total + config.virial.at(lr_factor) * self._term(residual, per_atom, count)
            value.virial_rmse_per_atom = _rmse((residual / per_atom) ** 2)
        value.total = total
        return value
