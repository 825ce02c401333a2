"""Statistics from data: environment mean/std per block (spec §1.1) and energy biases (§4.6).

Both follow deepmd-kit. Environment statistics pool every neighbour slot of every sampled centre,
empty slots included (as zeros), per centre element. The energy bias solves the least-squares
problem ``counts @ bias ≈ energies`` over frames (``counts[f, t]`` = atoms of element t in frame
f): "set" fits the bias from scratch, "change" fits a shift on the residual of the current model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import torch

from lamforge.nn.env_mat import EnvStatistics
from lamforge.nn.inputs import ModelInput
from lamforge.nn.model import DPA2Model


@torch.no_grad()
def environment_statistics(
    model: DPA2Model, batches: Iterable[ModelInput]
) -> dict[str, EnvStatistics]:
    """Accumulate R̃ statistics of every descriptor block over ``batches``.

    Returns:
        One :class:`EnvStatistics` per block role ("repinit", "three_body", "repformers"); sum
        them across tasks for a shared descriptor, then pass them to
        :func:`apply_environment_statistics`.
    """
    blocks = model.descriptor.statistics_blocks()
    totals = {role: EnvStatistics.zeros(len(model.elements)) for role in blocks}
    seen_any = False
    for inputs in batches:
        seen_any = True
        geometries, _ = model.geometries(inputs)
        for role, block in blocks.items():
            raw, _ = block.raw_environment(geometries[role])
            totals[role].accumulate(raw, inputs.atom_types)
    if not seen_any:
        raise ValueError("environment_statistics: no batches given")
    return totals


@torch.no_grad()
def apply_environment_statistics(model: DPA2Model, statistics: dict[str, EnvStatistics]) -> None:
    """Store mean/std buffers of every block from ``statistics`` (a mean of zero if configured)."""
    config = model.descriptor.config
    set_mean_zero = {
        "repinit": config.repinit.set_mean_zero,
        "three_body": config.repinit.set_mean_zero,
        "repformers": config.repformer.set_mean_zero,
    }
    for role, block in model.descriptor.statistics_blocks().items():
        if role not in statistics:
            raise KeyError(f"statistics for block {role!r} missing; have {sorted(statistics)}")
        mean, std = statistics[role].mean_std(set_mean_zero[role])
        block.mean.copy_(torch.from_numpy(mean))
        block.std.copy_(torch.from_numpy(std))


def compute_statistics(model: DPA2Model, batches: Iterable[ModelInput]) -> None:
    """Compute and store the environment statistics of ``model`` from a sample of inputs."""
    apply_environment_statistics(model, environment_statistics(model, batches))


def element_counts(inputs: ModelInput, num_elements: int) -> torch.Tensor:
    """[num_frames, num_elements] float64 atom counts per frame and element."""
    counts = torch.zeros(inputs.num_frames, num_elements, dtype=torch.float64)
    ones = torch.ones(inputs.num_atoms, dtype=torch.float64)
    counts.index_put_((inputs.frame_index.cpu(), inputs.atom_types.cpu()), ones, accumulate=True)
    return counts


@torch.no_grad()
def fit_energy_bias(
    model: DPA2Model,
    batches: Iterable[tuple[ModelInput, torch.Tensor]],
    head: str | None = None,
    mode: Literal["set", "change"] = "set",
) -> torch.Tensor:
    """Fit ``head``'s per-element energy bias by least squares and store it.

    Args:
        model: the model.
        batches: (inputs, energies [num_frames] in eV) pairs.
        head: head name (``None`` for a single-head model).
        mode: "set" replaces the bias (deepmd-kit set-by-statistic); "change" adds the fit of the
            residual ``E_label - E_model`` (change-by-statistic, used when fine-tuning).

    Returns:
        The new bias, [num_elements] float64. Where the data fix the bias (the atom-count matrix
        has full column rank) this is the least-squares solution. Otherwise only its component in
        the span of the counts is fitted and the rest stays at a prior: the pretrained bias for
        "change" (minimum-norm correction), and the mean energy per atom of the sample for "set"
        (so elements absent from the data, and compositions outside the span of a few-frame
        sample, get per-atom energies of the data's scale instead of arbitrary values).
    """
    energy_head = model.head(head)
    num_elements = len(model.elements)
    count_rows, targets = [], []
    for inputs, energies in batches:
        energies = torch.as_tensor(energies, dtype=torch.float64).reshape(-1)
        if energies.shape[0] != inputs.num_frames:
            raise ValueError(
                f"fit_energy_bias: {energies.shape[0]} energies for {inputs.num_frames} frames"
            )
        if mode == "change":
            energies = energies - model.energy(inputs, head).cpu()
        elif mode != "set":
            raise ValueError(f"fit_energy_bias: mode must be 'set' or 'change', got {mode!r}")
        count_rows.append(element_counts(inputs, num_elements).numpy())
        targets.append(energies.cpu().numpy())
    if not count_rows:
        raise ValueError("fit_energy_bias: no batches given")
    counts, targets = np.concatenate(count_rows), np.concatenate(targets)
    prior = 0.0 if mode == "change" else targets.sum() / counts.sum()
    correction, *_ = np.linalg.lstsq(counts, targets - prior * counts.sum(axis=1), rcond=None)
    bias = torch.from_numpy(prior + correction).to(energy_head.energy_bias)
    if mode == "change":
        bias = energy_head.energy_bias + bias
    energy_head.energy_bias.copy_(bias)
    return bias.clone()
