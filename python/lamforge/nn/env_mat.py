"""Smooth environment matrix and its per-element statistics (spec §1.1).

For a neighbour slot with vector r (neighbour minus centre) and length r:

    sw(r) = u³(-6u² + 15u - 10) + 1,   u = (clamp(r, rs, rc) - rs) / (rc - rs)
    R̃     = sw(r) · [1/r, x/r², y/r², z/r²]          (zero for empty slots)
    R     = (R̃ - mean[t_i]) / std[t_i]                 (per centre element t_i)

``mean``/``std`` are [num_elements, 4] (deepmd-kit's davg/dstd tiled over the slots, which are all
equal). Statistics pool every slot of every sampled centre, empty ones included, with one std for
the radial column and one pooled std for the three angular columns, floored at 1e-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def smooth_switch(length: torch.Tensor, cutoff_smooth: float, cutoff: float) -> torch.Tensor:
    """The C² switch: 1 below ``cutoff_smooth``, 0 beyond ``cutoff``; same shape as ``length``."""
    clamped = torch.clamp(length, min=cutoff_smooth, max=cutoff)
    u = (clamped - cutoff_smooth) / (cutoff - cutoff_smooth)
    u2 = u * u
    return u2 * u * (-6 * u2 + 15 * u - 10) + 1


def environment_matrix(
    vectors: torch.Tensor,
    mask: torch.Tensor | None,
    cutoff: float,
    cutoff_smooth: float,
    protection: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised environment matrix R̃ and switch.

    Args:
        vectors: [num_atoms, max_neighbors, 3] r_ij (or [P, 3] of P real pairs); values in empty
            slots are ignored.
        mask: [num_atoms, max_neighbors] bool, True for real neighbours; None: every row is a
            real pair (no masking work).
        cutoff: rc.
        cutoff_smooth: rs.
        protection: added to r in the denominators (deepmd-kit ``env_protection``).

    Returns:
        R̃ [num_atoms, max_neighbors, 4] and sw [num_atoms, max_neighbors] (0 in empty slots).
    """
    if mask is not None:
        # Empty slots get a harmless vector so that no norm (and no gradient) is taken at zero.
        safe = torch.zeros_like(vectors)
        safe[..., 0] = cutoff + 1.0
        vectors = torch.where(mask.unsqueeze(-1), vectors, safe)
    length = torch.linalg.norm(vectors, dim=-1, keepdim=True)
    inverse = 1 / (length + protection)
    scaled = vectors / (length + protection) ** 2
    weight = smooth_switch(length, cutoff_smooth, cutoff)
    if mask is not None:
        weight = weight * mask.unsqueeze(-1)
    raw = torch.cat([inverse, scaled], dim=-1) * weight
    return raw, weight.squeeze(-1)


@dataclass(kw_only=True)
class EnvStatistics:
    """Running sums of R̃ per centre element (deepmd-kit ``StatItem``s ``r_t`` and ``a_t``).

    Sums of two statistics objects (e.g. of several tasks) are the statistics of the union.

    Attributes:
        radial_count, radial_sum, radial_sum_squares: [num_elements] over column 0.
        angular_count, angular_sum, angular_sum_squares: [num_elements] over columns 1-3 pooled.
    """

    radial_count: np.ndarray
    radial_sum: np.ndarray
    radial_sum_squares: np.ndarray
    angular_count: np.ndarray
    angular_sum: np.ndarray
    angular_sum_squares: np.ndarray

    @classmethod
    def zeros(cls, num_elements: int) -> EnvStatistics:
        """Empty statistics."""
        return cls(**{name: np.zeros(num_elements) for name in cls.__dataclass_fields__})

    def __add__(self, other: EnvStatistics) -> EnvStatistics:
        return EnvStatistics(
            **{
                name: getattr(self, name) + getattr(other, name)
                for name in self.__dataclass_fields__
            }
        )

    def accumulate(self, raw: torch.Tensor, center_types: torch.Tensor) -> None:
        """Add the rows of one batch.

        Args:
            raw: [num_atoms, max_neighbors, 4] unnormalised R̃.
            center_types: [num_atoms] element index of each centre.
        """
        raw = raw.detach().to(torch.float64).cpu().numpy()
        types = center_types.cpu().numpy()
        for element in np.unique(types):
            rows = raw[types == element]
            radial, angular = rows[..., 0], rows[..., 1:]
            self.radial_count[element] += radial.size
            self.radial_sum[element] += radial.sum()
            self.radial_sum_squares[element] += np.square(radial).sum()
            self.angular_count[element] += angular.size
            self.angular_sum[element] += angular.sum()
            self.angular_sum_squares[element] += np.square(angular).sum()

    def mean_std(self, set_mean_zero: bool) -> tuple[np.ndarray, np.ndarray]:
        """deepmd-kit's davg/dstd rows: mean [num_elements, 4], std [num_elements, 4].

        The mean is [μ_r, 0, 0, 0] (all zero with ``set_mean_zero``); the std is
        [σ_r, σ_a, σ_a, σ_a] with σ floored at 1e-2, and 0.1 for an element never seen.
        """
        radial_mean, radial_std = _mean_std(
            self.radial_count, self.radial_sum, self.radial_sum_squares
        )
        _, angular_std = _mean_std(self.angular_count, self.angular_sum, self.angular_sum_squares)
        mean = np.zeros((radial_mean.size, 4))
        if not set_mean_zero:
            mean[:, 0] = radial_mean
        std = np.stack([radial_std, angular_std, angular_std, angular_std], axis=-1)
        return mean, std


def _mean_std(
    count: np.ndarray, total: np.ndarray, total_squares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    seen = count > 0
    safe_count = np.where(seen, count, 1.0)
    mean = np.where(seen, total / safe_count, 0.0)
    variance = np.clip(total_squares / safe_count - mean * mean, 0.0, None)
    std = np.sqrt(variance)
    std = np.where(np.abs(std) < 1e-2, 1e-2, std)
    return mean, np.where(seen, std, 0.1)
