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

    Padded (``offsets`` None): every centre has N slots, pair tensors are [n, N, ...]. Ragged
    (``offsets`` set, attention-free layers only): only real pairs, pair tensors are [P, ...]
    with centre i's pairs at ``offsets[i]:offsets[i + 1]``.

    Attributes:
        rows: their rows of g1 (the block keeps g1 in group order, so a slice).
        index: [n, N] (ragged: [P]) neighbour rows of g1, empty slots set to a valid row.
        mask: [n, N] bool (ragged: [P], all True).
        switch: [n, N] (ragged: [P]), zero in empty slots.
        num_trimmed: empty slots trimmed off beyond N (the attention accounts for them).
        offsets: None, or [n + 1] int64 CSR offsets of the ragged layout.
        centres: None, or (ragged) [P] each pair's centre, a row of ``g1[rows]``.
    """

    rows: slice
    index: torch.Tensor
    mask: torch.Tensor
    switch: torch.Tensor
    num_trimmed: int
    offsets: torch.Tensor | None = None
    centres: torch.Tensor | None = None

    def slot_counts(self, dtype: torch.dtype) -> torch.Tensor:
        """[n] real neighbours of each centre."""
        if self.offsets is not None:
            return torch.diff(self.offsets).to(dtype)
        return torch.sum(self.mask.to(dtype), dim=-1)

    def weight(self, smooth: bool, dtype: torch.dtype) -> torch.Tensor | None:
        """Per-slot weight of the reductions: the switch (smooth) or the mask.

        None where every slot counts fully (ragged, not smooth).
        """
        if smooth:
            return self.switch
        return None if self.offsets is not None else self.mask.to(dtype)


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
    group: CentreGroup,
    *,
    smooth: bool,
    use_sqrt_nnei: bool,
    max_neighbors: int,
    index: torch.Tensor | None = None,
) -> torch.Tensor:
    """A_i = norm · Σ_j h2_ij ⊗ (g2_ij · sw_ij), [n, 3, d] (deepmd-kit ``_cal_hg``).

    norm is 1/N or 1/√N with the fixed cap N (``max_neighbors``) when smooth, else
    1/(1e-4 + count) or 1/(1e-4 + √count). ``g2`` and ``h2`` are pair tensors of ``group``
    (padded [n, N, ·] or ragged [P, ·]). With ``index``, ``g2`` is [num_atoms, d] per-atom
    features used as ``g2[index]`` (the fused kernels, Triton on a GPU and
    :mod:`lamforge.nn.aggregate_kernel` on the CPU, read them without materialising the
    gathered copy).
    """
    if smooth:
        norm = fixed_norm(max_neighbors, use_sqrt_nnei)
    else:
        count = group.slot_counts(h2.dtype)
        norm = 1.0 / (COUNT_EPSILON + (torch.sqrt(count) if use_sqrt_nnei else count))
        norm = norm[:, None, None]
    weight = group.weight(smooth, h2.dtype)
    if group.offsets is not None:
        # Ragged (no empty slots): Σ over each centre's pairs, the grrg moment with the pair
        # tensor as its own node table.
        left = h2 if weight is None else h2 * weight.unsqueeze(-1)
        return aggregate_kernel.gather_outer_sum(left, g2, index, group.offsets) * norm
    mask = group.mask
    if kernels.fused_enabled(h2):
        return kernels.gather_outer_sum(h2, g2, index, weight) * norm
    if index is not None and aggregate_kernel.applies(h2):
        # CPU: the weight goes on the 3-wide h2; the Rust reduction reads g2[index] in place.
        assert weight is not None
        return aggregate_kernel.gather_outer_sum(h2 * weight.unsqueeze(-1), g2, index) * norm
    if index is not None:
        g2 = g2[index]
    if smooth:
        # The switch is zero in empty slots, so it also does the masking; applied to the 3-wide
        # h2 instead of the d-wide g2 (the same sum, far less work in the double backward).
        h2 = h2 * group.switch.unsqueeze(-1)
    else:
        g2 = g2.masked_fill(~mask.unsqueeze(-1), 0.0)
    return torch.matmul(h2.transpose(-1, -2), g2) * norm


def symmetrise(moment: torch.Tensor, axis_neurons: int) -> torch.Tensor:
    """A[:, :axis]^T A / 3 flattened axis-major: [num_atoms, 3, d] -> [num_atoms, axis · d]."""
    product = torch.matmul(moment[..., :axis_neurons].transpose(-1, -2), moment) / (3.0**1)
    return product.reshape(moment.shape[0], -1)
