"""Pieces of a repformer layer that hold no parameters (spec §1.8; deepmd-kit ``_cal_hg``).

The pair moment A_i = norm · Σ_j h2_ij ⊗ g_ij of the grrg and drrd terms, its symmetrised
invariant A[:, :axis]ᵀ A / 3, and :class:`CentreGroup`, the slice of centres whose pair work a
layer does in one go (the block runs centres in groups of similar neighbour counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lamforge import kernels
from lamforge.nn import aggregate_kernel

# deepmd-kit's protection of 1/count in the non-smooth normalisations.
COUNT_EPSILON = 1e-4


@dataclass(kw_only=True, frozen=True)
class CentreGroup:
    """Some centres of a repformer block and their neighbour slots (the pair work of a layer).

    Attributes:
        rows: their rows of g1 (the block keeps g1 in group order, so a slice).
        index: [n, N] neighbour rows of g1, empty slots set to a valid row.
        mask: [n, N] bool.
        switch: [n, N], zero in empty slots.
        num_trimmed: empty slots trimmed off beyond N (the attention accounts for them).
    """

    rows: slice
    index: torch.Tensor
    mask: torch.Tensor
    switch: torch.Tensor
    num_trimmed: int


def fixed_norm(max_neighbors: int, sqrt: bool) -> float:
    """1/√N or 1/N of the smooth normalisations, as a Python number.

    Products with it are scalar multiplications (no broadcast tensor of ones, no gradient for
    it). In float64 it is deepmd-kit's ``rsqrt(N · ones)`` to the bit (both round √N and the
    division correctly).
    """
    return 1.0 / (math.sqrt(float(max_neighbors)) if sqrt else float(max_neighbors))


def pair_moment(
    g2: torch.Tensor,
    h2: torch.Tensor,
    mask: torch.Tensor,
    switch: torch.Tensor,
    *,
    smooth: bool,
    use_sqrt_nnei: bool,
    max_neighbors: int,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """A_i = norm · Σ_j h2_ij ⊗ (g2_ij · sw_ij), [num_atoms, 3, d] (deepmd-kit ``_cal_hg``).

    norm is 1/N or 1/√N with the fixed cap N (``max_neighbors``) when smooth, else
    1/(1e-4 + count) or 1/(1e-4 + √count). With ``index``, ``g2`` is [num_atoms, d] per-atom
    features used as ``g2[index]`` (the fused kernels, Triton on a GPU and
    :mod:`lamforge.nn.aggregate_kernel` on the CPU, read them without materialising the
    [num_atoms, N, d] copy).
    """
    if smooth:
        norm = fixed_norm(max_neighbors, use_sqrt_nnei)
    else:
        count = torch.sum(mask.type_as(h2), dim=-1)
        norm = 1.0 / (COUNT_EPSILON + (torch.sqrt(count) if use_sqrt_nnei else count))
        norm = norm[:, None, None]
    if kernels.fused_enabled(h2):
        weight = switch if smooth else mask.type_as(h2)
        return kernels.gather_outer_sum(h2, g2, index, weight) * norm
    if index is not None and aggregate_kernel.applies(h2):
        # CPU: the weight goes on the 3-wide h2; the Rust reduction reads g2[index] in place.
        weight = switch if smooth else mask.type_as(h2)
        return aggregate_kernel.gather_outer_sum(h2 * weight.unsqueeze(-1), g2, index) * norm
    if index is not None:
        g2 = g2[index]
    if smooth:
        # The switch is zero in empty slots, so it also does the masking; applied to the 3-wide
        # h2 instead of the d-wide g2 (the same sum, far less work in the double backward).
        h2 = h2 * switch.unsqueeze(-1)
    else:
        g2 = g2.masked_fill(~mask.unsqueeze(-1), 0.0)
    return torch.matmul(h2.transpose(-1, -2), g2) * norm


def symmetrise(moment: torch.Tensor, axis_neurons: int) -> torch.Tensor:
    """A[:, :axis]^T A / 3 flattened axis-major: [num_atoms, 3, d] -> [num_atoms, axis · d]."""
    product = torch.matmul(moment[..., :axis_neurons].transpose(-1, -2), moment) / (3.0**1)
    return product.reshape(moment.shape[0], -1)
