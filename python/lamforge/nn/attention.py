"""The three attention modules of a repformer layer (spec §1.8, items 6 and 9).

Smooth attention (deepmd-kit's convention, needed for bit-level agreement): logits are shifted,
``(ℓ + 20)·sw - 20``, so a neighbour leaving the cutoff fades into a logit of -20; empty slots stay
in the softmax denominator with that logit, are zeroed afterwards, and the weights are multiplied
by the switch again. Head layouts (which weight columns belong to which head) follow deepmd-kit:
the head index varies fastest in every projection.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lamforge import kernels
from lamforge.nn.layers import DenseLayer
from lamforge.nn.softmax import head_product, softmax

ATTENTION_SHIFT = 20.0


def smooth_softmax(logits: torch.Tensor, num_trimmed: int | torch.SymInt) -> torch.Tensor:
    """Softmax over the last axis as if ``num_trimmed`` more slots with logit -20 were present.

    Neighbour slots that are empty for every centre may be trimmed before the repformer runs; in
    smooth attention each of them would still add exp(-20) to the denominator. One extra column
    with logit -20 + ln(num_trimmed) adds exactly that, so trimmed and untrimmed agree.

    A symbolic ``num_trimmed`` (an exported program, whose inputs may be trimmed or not) always
    gets the column: with nothing trimmed its logit is ln(0) = -inf, which adds exactly 0.
    """
    if isinstance(num_trimmed, int):
        if num_trimmed == 0:
            return softmax(logits)
        return softmax(logits, math.log(num_trimmed) - ATTENTION_SHIFT)
    extra = torch.full_like(logits[..., :1], num_trimmed).log() - ATTENTION_SHIFT
    return softmax(torch.cat([logits, extra], dim=-1))[..., :-1]


class PairAttentionMap(nn.Module):
    """Gated multi-head self-attention map over the neighbours of each centre (``Atten2Map``).

    Parameters: ``query_key`` [g2_dim, 2 · hidden · heads] without bias (deepmd-kit ``mapqk``).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        num_heads: int,
        *,
        has_gate: bool,
        smooth: bool,
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.has_gate = has_gate
        self.smooth = smooth
        self.query_key = DenseLayer(
            input_dim, 2 * hidden_dim * num_heads, bias=False, dtype=dtype, generator=generator
        )

    def forward(
        self,
        g2: torch.Tensor,
        h2: torch.Tensor,
        mask: torch.Tensor,
        switch: torch.Tensor,
        num_trimmed: int = 0,
    ) -> torch.Tensor:
        """Attention weights times the angular factor.

        Args:
            g2: [num_atoms, num_slots, g2_dim].
            h2: [num_atoms, num_slots, 3].
            mask: [num_atoms, num_slots] bool.
            switch: [num_atoms, num_slots].
            num_trimmed: empty slots removed beyond ``num_slots`` (see :func:`smooth_softmax`).

        Returns:
            [num_atoms, num_slots, num_heads, num_slots] = softmax(...)_jk · (h2_j · h2_k) / √3
            for (j, head, k) (deepmd-kit returns the heads last; this layout makes every use of
            the weights a plain matrix product over the flattened (j, head) rows).
        """
        num_atoms, num_slots, _ = g2.shape
        # The fused map has no term for trimmed slots: use it only when nothing was trimmed.
        if kernels.fused_enabled(g2) and num_trimmed == 0:
            query, key = self._query_key(g2)
            # The kernel returns [atoms, N, N, heads] (a view of a head-major tensor).
            return kernels.pair_attention_weights(
                query, key, h2, switch, mask, smooth=self.smooth, gate=self.has_gate
            ).permute(0, 1, 3, 2)
        # h2_j · h2_k, [atoms, slots, 1, slots]: the gate and the angular factor.
        overlap = torch.matmul(h2, h2.transpose(-1, -2)).unsqueeze(2)
        logits = self._dot_products(g2)
        if self.smooth and isinstance(num_trimmed, int):
            return self._smooth_weights(logits, overlap, switch, num_trimmed)
        logits = logits / self.hidden_dim**0.5
        if self.has_gate:
            logits = logits * overlap
        if self.smooth:
            pair_switch = switch[:, :, None, None] * switch[:, None, None, :]
            logits = (logits + ATTENTION_SHIFT) * pair_switch - ATTENTION_SHIFT
            weights = smooth_softmax(logits, num_trimmed)
            # The pair switch is zero in empty rows and columns, so it does the masking too; it
            # and the angular factor are multiplied on the head-free [atoms, slots, 1, slots]
            # tensors, leaving one product over the heads (also in the double backward).
            return weights * (pair_switch * (overlap / 3.0**0.5))
        column_empty = ~mask[:, None, None, :]
        row_empty = ~mask[:, :, None, None]
        weights = softmax(logits.masked_fill(column_empty, float("-inf")))
        weights = weights.masked_fill(column_empty, 0.0).masked_fill(row_empty, 0.0)
        return weights * (overlap / 3.0**0.5)

    def _query_key(self, g2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys, each [atoms, heads, slots, hidden] (for the fused kernel)."""
        num_atoms, num_slots, _ = g2.shape
        projected = self.query_key(g2).view(
            num_atoms, num_slots, self.hidden_dim, 2 * self.num_heads
        )
        projected = projected.permute(0, 3, 1, 2)  # [atoms, 2·heads, slots, hidden]
        query, key = torch.split(projected, self.num_heads, dim=1)
        return query, key

    def _dot_products(self, g2: torch.Tensor) -> torch.Tensor:
        """q_hj · k_hk = g2_j (Q_h K_hᵀ) g2_kᵀ, [atoms, slots, heads, slots].

        Q_h and K_h [g2_dim, hidden] are head h's columns of ``query_key`` (column m·2H + h for
        the query, m·2H + H + h for the key): multiplying the weights first (a [g2_dim, g2_dim]
        matrix per head) gives the same dot products as projecting queries and keys, with a
        projection half as wide, no head-major copies and one batched product per centre over
        the flattened (slot, head) rows.
        """
        num_atoms, num_slots, dim = g2.shape
        heads = self.num_heads
        weight = self.query_key.weight.view(dim, self.hidden_dim, 2 * heads)
        # [dim, heads·dim], column h·dim + b: Q_h K_hᵀ of every head side by side.
        bilinear = torch.einsum("amh,bmh->ahb", weight[..., :heads], weight[..., heads:])
        left = torch.matmul(g2, bilinear.reshape(dim, heads * dim))
        products = torch.matmul(left.view(num_atoms, num_slots * heads, dim), g2.transpose(1, 2))
        return products.view(num_atoms, num_slots, heads, num_slots)

    def _smooth_weights(
        self,
        products: torch.Tensor,
        overlap: torch.Tensor,
        switch: torch.Tensor,
        num_trimmed: int,
    ) -> torch.Tensor:
        """The smooth weights of :meth:`forward` with one head-wide multiply-add before the softmax.

        With ℓ = q·k/√d and the gate o (1 without it), the shifted logit is

            (ℓ·o + 20)·sw_jk - 20 = (q·k)·(o·sw_jk/√d) + 20·(sw_jk - 1),

        whose two factors are head-free [atoms, slots, 1, slots] tensors (the same value up to
        rounding). The column of the trimmed slots (see :func:`smooth_softmax`) has the constant
        logit ln(num_trimmed) - 20, which the softmax takes as an argument: no head-wide tensor
        is copied to append it.
        """
        pair_switch = switch[:, :, None, None] * switch[:, None, None, :]
        factor = pair_switch * (1.0 / self.hidden_dim**0.5)
        if self.has_gate:
            factor = factor * overlap
        offset = pair_switch * ATTENTION_SHIFT - ATTENTION_SHIFT
        logits = head_product(products, factor).add_(offset)
        extra = math.log(num_trimmed) - ATTENTION_SHIFT if num_trimmed > 0 else None
        weights = softmax(logits, extra)
        # The pair switch is zero in empty rows and columns, so it does the masking too.
        return head_product(weights, pair_switch * (overlap / 3.0**0.5))


class PairAttentionValues(nn.Module):
    """Apply the pair attention to g2 (``Atten2MultiHeadApply``).

    Parameters: ``value`` [g2_dim, g2_dim · heads] no bias (``mapv``), ``head_map``
    [g2_dim · heads, g2_dim] with bias.
    """

    def __init__(
        self, dim: int, num_heads: int, *, dtype: torch.dtype, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.value = DenseLayer(dim, dim * num_heads, bias=False, dtype=dtype, generator=generator)
        self.head_map = DenseLayer(dim * num_heads, dim, dtype=dtype, generator=generator)

    def forward(self, weights: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
        """Weights [atoms, slots, heads, slots], g2 [atoms, slots, d2] -> [atoms, slots, d2].

        o_j = Σ_h (Σ_k AA_jhk g2_k V_h) O_h + b = Σ_h (Σ_k AA_jhk g2_k) (V_h O_h) + b, with V_h
        and O_h the head's columns of ``value`` and rows of ``head_map``: one batched product
        per centre over the (slot, head) rows of the weights, then one matrix product over all
        pairs against every head's V_h O_h stacked (no head_map product, no copies).
        """
        num_atoms, num_slots, dim = g2.shape
        heads = self.num_heads
        # Column c·heads + h of ``value`` and row c·heads + h of ``head_map`` belong to head h.
        value = self.value.weight.view(dim, dim, heads).permute(2, 0, 1)
        head_map = self.head_map.weight.view(dim, heads, dim).permute(1, 0, 2)
        # [heads·dim, dim], row h·dim + c: every head's V_h O_h stacked.
        folded = torch.matmul(value, head_map).reshape(heads * dim, dim)
        mixed = torch.matmul(weights.reshape(num_atoms, num_slots * heads, num_slots), g2)
        out = torch.matmul(mixed.view(num_atoms, num_slots, heads * dim), folded)
        return out if self.head_map.bias is None else out + self.head_map.bias


class PairAttentionVectors(nn.Module):
    """Apply the pair attention to h2 (``Atten2EquiVarApply``): Σ_h w_h Σ_k AA_hjk h2_k.

    Parameters: ``head_map`` [heads, 1] without bias.
    """

    def __init__(
        self, num_heads: int, *, dtype: torch.dtype, generator: torch.Generator | None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_map = DenseLayer(num_heads, 1, bias=False, dtype=dtype, generator=generator)

    def forward(self, weights: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
        """Weights [atoms, slots, heads, slots], h2 [atoms, slots, 3] -> [atoms, slots, 3]."""
        num_atoms, num_slots, heads, _ = weights.shape
        per_head = torch.matmul(weights.reshape(num_atoms, num_slots * heads, num_slots), h2)
        per_head = per_head.view(num_atoms, num_slots, heads, 3).transpose(-1, -2)
        return self.head_map(per_head).squeeze(-1)


class LocalAttention(nn.Module):
    """g1 attention of a centre over its neighbours' g1 (``LocalAtten``).

    Parameters: ``query`` [g1, hidden · heads] no bias (``mapq``), ``key_value``
    [g1, (hidden + g1) · heads] no bias (``mapkv``), ``head_map`` [g1 · heads, g1] (``head_map``).
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_heads: int,
        *,
        smooth: bool,
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.num_heads = num_heads
        self.smooth = smooth
        self.query = DenseLayer(
            dim, hidden_dim * num_heads, bias=False, dtype=dtype, generator=generator
        )
        self.key_value = DenseLayer(
            dim, (hidden_dim + dim) * num_heads, bias=False, dtype=dtype, generator=generator
        )
        self.head_map = DenseLayer(dim * num_heads, dim, dtype=dtype, generator=generator)

    def forward(
        self,
        g1: torch.Tensor,
        neighbor_g1: torch.Tensor,
        mask: torch.Tensor,
        switch: torch.Tensor,
        num_trimmed: int = 0,
    ) -> torch.Tensor:
        """Attention update of g1.

        Args:
            g1: [num_atoms, g1_dim].
            neighbor_g1: [num_atoms, num_slots, g1_dim].
            mask: [num_atoms, num_slots] bool.
            switch: [num_atoms, num_slots].
            num_trimmed: empty slots removed beyond ``num_slots`` (see :func:`smooth_softmax`).

        Returns:
            [num_atoms, g1_dim].
        """
        num_atoms, num_slots = mask.shape
        heads, hidden, dim = self.num_heads, self.hidden_dim, self.dim
        query = self.query(g1).view(num_atoms, hidden, heads).permute(0, 2, 1)
        key_value = self.key_value(neighbor_g1).view(num_atoms, num_slots, hidden + dim, heads)
        key, value = torch.split(key_value.permute(0, 3, 1, 2), [hidden, dim], dim=-1)
        logits = torch.matmul(query.unsqueeze(-2), key.transpose(-1, -2)) / hidden**0.5
        logits = logits.squeeze(-2)  # [atoms, heads, slots]
        empty = ~mask.unsqueeze(-2)
        if self.smooth:
            logits = (logits + ATTENTION_SHIFT) * switch.unsqueeze(-2) - ATTENTION_SHIFT
            # The switch is zero in empty slots: it masks them as well.
            weights = smooth_softmax(logits, num_trimmed) * switch.unsqueeze(-2)
        else:
            weights = softmax(logits.masked_fill(empty, float("-inf")))
            weights = weights.masked_fill(empty, 0.0)
        out = torch.matmul(weights.unsqueeze(-2), value).squeeze(-2).reshape(num_atoms, heads * dim)
        return self.head_map(out)
