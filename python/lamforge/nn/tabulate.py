"""Tabulated (compressed) embedding nets of se_e2_a: piecewise quintic polynomials.

The se_e2_a embedding net G(s) has a single scalar input, the normalised radial entry
s = sw(r) / (r · std[t_i]) of the environment matrix. deepmd-kit's ``dp compress`` replaces it by
piecewise fifth-order polynomials of s, one per output channel (Lu et al., "DP Compress",
J. Chem. Theory Comput. 17, 5435 (2021)). We build the same: on knots s_k = k·h the nets' values,
first and second derivatives (exact, by autograd) fix on each interval [s_k, s_{k+1}] the unique
quintic that matches all three at both ends (quintic Hermite interpolation, so the table is C² and
its error is O(h⁶ · G⁽⁶⁾)). Each interval stores that quintic in the local coordinate
t = s / h - k as six coefficient rows,

    G(s) = Σ_{d=0..5} c_{k,d} t^d,        c_{k,d} = table row 6k + d  [ng],

and pairs beyond the last knot (closer than ``min_distance``) continue the last interval's
polynomial.

A pair's G is then a weighted sum of six table rows with weights t^d: one ``embedding_bag`` with
per-sample weights, which sums the rows without building a [pairs, 6, ng] gather. Its derivative
in s is the same sum with weights d t^(d-1) / h, so forces cost one more lookup. The per-pair work
no longer depends on the depth or width of the net.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# Quintic Hermite basis: on t in [0, 1], the quintic with value p, first derivative v and second
# derivative a at t = 0 (index 0..2) and t = 1 (index 3..5) has the coefficient of t^d
# Σ_m _HERMITE[d][m] · (p_0, v_0, a_0, p_1, v_1, a_1)[m].
_HERMITE = (
    # p_0   v_0   a_0   p_1   v_1   a_1
    (1.0, 0.0, 0.0, 0.0, 0.0, 0.0),  # t^0
    (0.0, 1.0, 0.0, 0.0, 0.0, 0.0),  # t^1
    (0.0, 0.0, 0.5, 0.0, 0.0, 0.0),  # t^2
    (-10.0, -6.0, -1.5, 10.0, -4.0, 0.5),  # t^3
    (15.0, 8.0, 1.5, -15.0, 7.0, -1.0),  # t^4
    (-6.0, -3.0, -0.5, 6.0, -3.0, 0.5),  # t^5
)
#: Table rows per interval: the coefficients of t^0 .. t^5.
ROWS_PER_INTERVAL = 6


@dataclass(kw_only=True, frozen=True)
class TableConfig:
    """Where and how finely the embedding nets are tabulated.

    Attributes:
        step: Knot spacing h in the normalised radial input s (deepmd-kit's ``stride``; s is
            of order 1, so 0.05 keeps the table within ~1e-9 of the nets, far below float32).
        upper: Largest tabulated s (the value at ``min_distance`` for the element with the
            smallest radial std, fixed when the table is built).
        min_distance: The distance (Å) the table reaches down to.
    """

    step: float = 0.05
    upper: float = 0.0
    min_distance: float = 0.5

    def __post_init__(self) -> None:
        if self.step <= 0 or self.min_distance <= 0 or self.upper < 0:
            raise ValueError(
                f"table config: step and min_distance must be positive and upper non-negative, "
                f"got {self.step}, {self.min_distance}, {self.upper}"
            )

    @property
    def num_intervals(self) -> int:
        """Intervals of the knot grid 0, h, ..., covering [0, upper]."""
        return max(1, math.ceil(self.upper / self.step - 1e-9))


class EmbeddingTable(nn.Module):
    """The tables of every embedding net of a block, stacked.

    Attributes:
        config: the :class:`TableConfig`.
        num_nets: nets tabulated (one per neighbour element, or per element pair).
        rows_per_net: ``num_intervals · 6``.
        weight: buffer [num_nets · rows_per_net, ng]: per net, per interval, the coefficients of
            t^0 .. t^5 of every channel.
    """

    def __init__(
        self, config: TableConfig, *, num_nets: int, num_out: int, dtype: torch.dtype
    ) -> None:
        super().__init__()
        self.config = config
        self.num_nets = num_nets
        self.rows_per_net = config.num_intervals * ROWS_PER_INTERVAL
        self.register_buffer(
            "weight", torch.zeros(num_nets * self.rows_per_net, num_out, dtype=dtype)
        )

    @torch.no_grad()
    def fill(self, nets: nn.ModuleList) -> None:
        """Tabulate ``nets`` (each [..., 1] -> [..., ng]) on the knots, in float64."""
        step = self.config.step
        knots = torch.arange(self.config.num_intervals + 1, dtype=torch.float64) * step
        hermite = torch.tensor(_HERMITE, dtype=torch.float64)
        tables = []
        for net in nets:
            values, first, second = _derivatives(net, knots)
            # Per knot (G, h·G', h²·G''): the derivatives in t = s / h.
            ends = torch.stack([values, step * first, step * step * second], dim=1)
            pairs = torch.cat([ends[:-1], ends[1:]], dim=1)  # [intervals, 6, ng]
            tables.append(torch.einsum("dm,kmc->kdc", hermite, pairs))
        self.weight.copy_(torch.cat(tables).reshape(self.weight.shape).to(self.weight.dtype))

    def moments(self, env: torch.Tensor, net_index: torch.Tensor, num_slots: int) -> torch.Tensor:
        """Mom_i = (1 / num_slots) Σ_j R_ijᵀ G_{n_ij}(s_ij) through the table.

        Args:
            env: [num_atoms, max_neighbors, 4] normalised environment matrix (zero rows for
                empty slots, which then add nothing whatever their net).
            net_index: [num_atoms, max_neighbors] the net of each slot.
            num_slots: the normalisation (the block's neighbour cap).

        Returns:
            [num_atoms, 4, ng].
        """
        num_atoms, max_neighbors, _ = env.shape
        pair = self.lookup(env[..., 0].reshape(-1), net_index.reshape(-1))
        pair = pair.reshape(num_atoms, max_neighbors, -1)
        return torch.matmul(env.transpose(1, 2), pair) / num_slots

    def lookup(self, radial: torch.Tensor, net_index: torch.Tensor) -> torch.Tensor:
        """G_n(s) of every pair from the table, [pairs] twice -> [pairs, ng], differentiable."""
        t, rows = self.locate(radial, net_index)
        return _TableLookup.apply(t, rows, self.weight, 0, self.config.step)

    def locate(
        self, radial: torch.Tensor, net_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Local coordinate t [pairs] (differentiable) and table rows [pairs, 6] of every pair."""
        scaled = radial / self.config.step
        interval = scaled.detach().floor().clamp(0, self.config.num_intervals - 1)
        t = scaled - interval  # in [0, 1) inside the table, > 1 past its end
        first_row = (net_index * self.config.num_intervals + interval.to(torch.int64)) * 6
        rows = first_row.unsqueeze(1) + torch.arange(ROWS_PER_INTERVAL, device=radial.device)
        return t, rows


def power_weights(t: torch.Tensor, order: int, step: float) -> torch.Tensor:
    """Weights of the coefficient rows for the ``order``-th derivative in s: [pairs] -> [pairs, 6].

    d^n/ds^n Σ_d c_d t^d = Σ_{d >= n} c_d · d! / (d - n)! · t^(d - n) / h^n  (t = s / h - k).
    """
    powers = torch.linalg.vander(t, N=ROWS_PER_INTERVAL)
    if order == 0:
        return powers
    factors = [
        math.perm(degree, order) / step**order if degree >= order else 0.0
        for degree in range(ROWS_PER_INTERVAL)
    ]
    shifted = torch.zeros_like(powers)
    shifted[:, order:] = powers[:, : ROWS_PER_INTERVAL - order]
    return shifted * torch.tensor(factors, dtype=t.dtype, device=t.device)


def table_sum(rows: torch.Tensor, weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Σ_m basis[:, m] · weight[rows[:, m]]: [pairs, 6] rows and basis -> [pairs, ng]."""
    return torch.nn.functional.embedding_bag(rows, weight, per_sample_weights=basis, mode="sum")


class _TableLookup(torch.autograd.Function):
    """The ``order``-th derivative of the table in s, differentiable in t any number of times.

    The derivative of a lookup is the lookup of the next order (the table is a polynomial).
    """

    @staticmethod
    def forward(ctx, t, rows, weight, order, step):  # noqa: D102
        ctx.save_for_backward(t, rows, weight)
        ctx.order, ctx.step = order, step
        return table_sum(rows, weight, power_weights(t, order, step))

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        t, rows, weight = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        # d/dt = h · d/ds
        slope = _TableLookup.apply(t, rows, weight, ctx.order + 1, ctx.step) * ctx.step
        return (grad * slope).sum(-1), None, None, None, None


def _derivatives(net: nn.Module, knots: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """G, G' and G'' of a scalar-input net at ``knots`` [K]: three [K, ng] tensors (float64)."""
    parameter = next(net.parameters())
    original = parameter.dtype
    net.to(torch.float64)
    try:
        with torch.enable_grad():
            x = knots.clone().unsqueeze(-1).requires_grad_(True)
            values = net(x)
            first, second = [], []
            for channel in range(values.shape[-1]):
                (slope,) = torch.autograd.grad(values[:, channel].sum(), x, create_graph=True)
                (curvature,) = torch.autograd.grad(slope.sum(), x, retain_graph=True)
                first.append(slope.squeeze(-1).detach())
                second.append(curvature.squeeze(-1))
        return values.detach(), torch.stack(first, -1), torch.stack(second, -1)
    finally:
        net.to(original)
