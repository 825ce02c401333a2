"""One repformer layer (spec §1.8; deepmd-kit ``RepformerLayer``).

Channels: g1 [num_atoms, d1] (single atom), g2 [num_atoms, N, d2] (pair, invariant), h2
[num_atoms, N, 3] (pair, equivariant), N = the fixed neighbour cap. The neighbour's g1 is gathered
from the real atom (``g1[index]``) every layer: periodic images share their atom's g1, which is
what deepmd-kit's per-layer ghost copy computes, without materialising the ghosts. Attention-free
layers also take ragged pair tensors ([P, ·] over the real pairs, see
:class:`lamforge.nn.repformer_terms.CentreGroup`).

Update lists and their residual vectors (``res_residual``), in order:
    g1: [g1, self_mlp (g1_out_mlp), conv (g1_out_conv), mlp, local attention]
    g2: [g2, linear2, g1g1, pair attention]        (not on the last layer)
    h2: [h2, pair attention on h2]                 (not on the last layer)
``g1_residual[k]`` multiplies the (k+1)-th list entry, as in deepmd-kit.
"""

from __future__ import annotations

import torch
from torch import nn

from lamforge import kernels
from lamforge.nn import aggregate_kernel
from lamforge.nn.attention import (
    LocalAttention,
    PairAttentionMap,
    PairAttentionValues,
    PairAttentionVectors,
)
from lamforge.nn.config import RepformerConfig
from lamforge.nn.layers import DenseLayer, LayerNorm, activation_function
from lamforge.nn.repformer_terms import (
    COUNT_EPSILON,
    CentreGroup,
    fixed_norm,
    pair_moment,
    symmetrise,
)


def _residual(
    dim: int, config: RepformerConfig, dtype: torch.dtype, generator: torch.Generator | None
) -> nn.Parameter:
    value = torch.empty(dim, dtype=dtype)
    if config.update_residual_init == "norm":
        value.normal_(0.0, config.update_residual, generator=generator)
    elif config.update_residual_init == "const":
        value.fill_(config.update_residual)
    else:
        raise ValueError(f"repformer: unknown update_residual_init {config.update_residual_init!r}")
    return nn.Parameter(value)


class RepformerLayer(nn.Module):
    """One layer; parameter names equal deepmd-kit's except where noted in ``lamforge.nn.dpa2``."""

    def __init__(
        self,
        config: RepformerConfig,
        *,
        is_last: bool,
        smooth: bool,
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        c = config
        if c.update_style not in ("res_avg", "res_incr", "res_residual"):
            raise ValueError(f"repformer: unknown update_style {c.update_style!r}")
        self.config = c
        self.smooth = smooth
        self.activation = activation_function(c.activation)
        self.update_pairs = not is_last
        self.g2_has_g1g1 = c.update_g2_has_g1g1 and self.update_pairs
        self.g2_has_attn = c.update_g2_has_attn and self.update_pairs
        self.update_h2 = c.update_h2 and self.update_pairs
        self._dtype = dtype
        self._generator = generator
        # Residual vectors are created in deepmd-kit's order so that index k matches.
        self.g1_residual = nn.ParameterList()
        self.g2_residual = nn.ParameterList()
        self.h2_residual = nn.ParameterList()
        self._add_residual(self.g1_residual, c.g1_dim)  # linear1
        linear1_in = 0 if c.g1_out_mlp else c.g1_dim
        linear1_in += c.g2_dim * c.axis_neurons if c.update_g1_has_grrg else 0
        linear1_in += c.g1_dim * c.axis_neurons if c.update_g1_has_drrd else 0
        linear1_in += c.g2_dim if c.update_g1_has_conv and not c.g1_out_conv else 0
        self.linear1 = self._dense(linear1_in, c.g1_dim)
        self.linear2 = None
        if self.update_pairs:
            self.linear2 = self._dense(c.g2_dim, c.g2_dim)
            self._add_residual(self.g2_residual, c.g2_dim)
        self.g1_self_mlp = None
        if c.g1_out_mlp:
            self.g1_self_mlp = self._dense(c.g1_dim, c.g1_dim)
            self._add_residual(self.g1_residual, c.g1_dim)
        self.proj_g1g2 = None
        if c.update_g1_has_conv and c.g1_out_conv:
            self.proj_g1g2 = self._dense(c.g2_dim, c.g1_dim, bias=False)
            self._add_residual(self.g1_residual, c.g1_dim)
        elif c.update_g1_has_conv:
            self.proj_g1g2 = self._dense(c.g1_dim, c.g2_dim, bias=False)
        self.proj_g1g1g2 = None
        if self.g2_has_g1g1:
            self.proj_g1g1g2 = self._dense(c.g1_dim, c.g2_dim, bias=False)
            self._add_residual(self.g2_residual, c.g2_dim)
        self._build_pair_attention()
        self.loc_attn = None
        if c.update_g1_has_attn:
            self.loc_attn = LocalAttention(
                c.g1_dim,
                c.attn1_hidden,
                c.attn1_heads,
                smooth=smooth,
                dtype=dtype,
                generator=generator,
            )
            self._add_residual(self.g1_residual, c.g1_dim)
        del self._dtype, self._generator

    def _dense(self, num_in: int, num_out: int, bias: bool = True) -> DenseLayer:
        return DenseLayer(num_in, num_out, bias=bias, dtype=self._dtype, generator=self._generator)

    def _add_residual(self, residuals: nn.ParameterList, dim: int) -> None:
        if self.config.update_style == "res_residual":
            residuals.append(_residual(dim, self.config, self._dtype, self._generator))

    def _build_pair_attention(self) -> None:
        c = self.config
        options = {"dtype": self._dtype, "generator": self._generator}
        self.attn2g_map = None
        self.attn2_mh_apply = None
        self.attn2_lm = None
        self.attn2_ev_apply = None
        if not (self.g2_has_attn or self.update_h2):
            return
        self.attn2g_map = PairAttentionMap(
            c.g2_dim,
            c.attn2_hidden,
            c.attn2_heads,
            has_gate=c.attn2_has_gate,
            smooth=self.smooth,
            **options,
        )
        if self.g2_has_attn:
            self.attn2_mh_apply = PairAttentionValues(c.g2_dim, c.attn2_heads, **options)
            self.attn2_lm = LayerNorm(
                c.g2_dim, eps=c.layer_norm_eps, trainable=c.trainable_layer_norm, dtype=self._dtype
            )
            self._add_residual(self.g2_residual, c.g2_dim)
        if self.update_h2:
            self.attn2_ev_apply = PairAttentionVectors(c.attn2_heads, **options)
            self._add_residual(self.h2_residual, 1)

    def _convolution(
        self,
        neighbor_g1: torch.Tensor | None,
        g2: torch.Tensor,
        group: CentreGroup,
        g1: torch.Tensor,
        fused_index: torch.Tensor | None,
    ) -> torch.Tensor:
        """c_i = norm · Σ_j (g2_ij W) ⊙ g1_j · sw_ij (new style) or g2_ij ⊙ (g1_j W) · sw_ij.

        ``g1`` is every atom's g1 (the table ``fused_index`` points into); the reference path
        reads the gathered ``neighbor_g1`` instead.
        """
        assert self.proj_g1g2 is not None
        mask, switch = group.mask, group.switch
        if self.smooth:
            norm = fixed_norm(self.config.max_neighbors, False)
        else:
            norm = 1.0 / (COUNT_EPSILON + group.slot_counts(g2.dtype)).unsqueeze(-1)
        if fused_index is not None:
            # W has no bias, so projecting g1 before the gather equals projecting after it.
            out_conv = self.config.g1_out_conv
            node = g1 if out_conv else self.proj_g1g2(g1)
            weight = group.weight(self.smooth, g2.dtype)
            if kernels.fused_enabled(g2):
                pair = self.proj_g1g2(g2) if out_conv else g2
                return kernels.gather_product_sum(pair, node, fused_index, weight) * norm
            # CPU: the weight goes on the narrow g2 (before the bias-free projection).
            pair = g2 if weight is None else g2 * weight.unsqueeze(-1)
            pair = self.proj_g1g2(pair) if out_conv else pair
            summed = aggregate_kernel.gather_product_sum(pair, node, fused_index, group.offsets)
            return summed * norm
        assert neighbor_g1 is not None and group.offsets is None
        if self.smooth:
            # sw (zero in empty slots) goes on the narrow g2 before the bias-free projection.
            g2 = g2 * switch.unsqueeze(-1)
            if self.config.g1_out_conv:
                return torch.sum(self.proj_g1g2(g2) * neighbor_g1, dim=1) * norm
            return torch.sum(g2 * self.proj_g1g2(neighbor_g1), dim=1) * norm
        if not self.config.g1_out_conv:
            neighbor_g1 = self.proj_g1g2(neighbor_g1)
        neighbor_g1 = neighbor_g1.masked_fill(~mask.unsqueeze(-1), 0.0)
        if self.config.g1_out_conv:
            g2 = self.proj_g1g2(g2)
        return torch.sum(g2 * neighbor_g1, dim=1) * norm

    def forward(
        self,
        g1: torch.Tensor,
        g2: torch.Tensor,
        h2: torch.Tensor,
        index: torch.Tensor,
        mask: torch.Tensor,
        switch: torch.Tensor,
        num_trimmed: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Update all channels of every atom.

        Args:
            g1: [num_atoms, d1].
            g2: [num_atoms, N, d2].
            h2: [num_atoms, N, 3].
            index: [num_atoms, N] neighbour indices, empty slots set to a valid index.
            mask: [num_atoms, N] bool.
            switch: [num_atoms, N], zero in empty slots.
            num_trimmed: empty slots trimmed off beyond N (the attention accounts for them).

        Returns:
            The new (g1, g2, h2), shapes as given.
        """
        group = CentreGroup(
            rows=slice(None), index=index, mask=mask, switch=switch, num_trimmed=num_trimmed
        )
        g1, [(g2, h2)] = self.forward_groups(g1, [(g2, h2)], [group])
        return g1, g2, h2

    def forward_groups(
        self,
        g1: torch.Tensor,
        pairs: list[tuple[torch.Tensor, torch.Tensor]],
        groups: list[CentreGroup],
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Update all channels, the pair work group by group and the atom work once.

        Args:
            g1: [num_atoms, d1]; the groups' ``rows``, in order, cover all of its rows.
            pairs: per group, (g2 [n, N_k, d2], h2 [n, N_k, 3]) of its n centres (ragged
                groups: [P, d2] and [P, 3]).
            groups: per group, its rows of g1 and its neighbour slots (width N_k).

        Returns:
            The new g1 [num_atoms, d1] and the new (g2, h2) of every group.
        """
        # The fused kernels gather g1 themselves for the conv and drrd terms (one group only);
        # on the CPU the Rust reductions do (any number of groups).
        fused = kernels.fused_enabled(g1)
        if fused and len(groups) > 1:
            raise ValueError("centre groups are for the reference path (fused kernels off)")
        fused = fused or aggregate_kernel.applies(g1)
        new_pairs, pieces = [], []
        for (g2, h2), group in zip(pairs, groups, strict=True):
            if group.offsets is not None and (
                self.attn2g_map is not None or self.loc_attn is not None
            ):
                raise ValueError("repformer: attention needs padded slots, not a ragged group")
            new_pair, piece = self._group_updates(g1, g2, h2, group, fused)
            new_pairs.append(new_pair)
            pieces.append(piece)
        # Per-atom work on all centres at once: larger matrix products, fewer operations.
        conv, mlp_pair_inputs, attention = (
            None if parts[0] is None else torch.cat(parts) if len(parts) > 1 else parts[0]
            for parts in zip(*pieces, strict=True)
        )
        g1_updates = [g1]
        if self.g1_self_mlp is not None:
            g1_updates.append(self.activation(self.g1_self_mlp(g1)))
        if conv is not None:
            g1_updates.append(conv)
        mlp_inputs = [] if self.config.g1_out_mlp else [g1]
        if mlp_pair_inputs is not None:
            mlp_inputs.append(mlp_pair_inputs)
        mlp_input = torch.cat(mlp_inputs, dim=-1) if len(mlp_inputs) > 1 else mlp_inputs[0]
        g1_updates.append(self.activation(self.linear1(mlp_input)))
        if attention is not None:
            g1_updates.append(attention)
        return self._combine(g1_updates, self.g1_residual), new_pairs

    def _group_updates(
        self,
        g1: torch.Tensor,
        g2: torch.Tensor,
        h2: torch.Tensor,
        group: CentreGroup,
        fused: bool,
    ) -> tuple[
        tuple[torch.Tensor, torch.Tensor],
        tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None],
    ]:
        """One group's new (g2, h2) and its g1 pieces (conv update, MLP input, attention)."""
        c = self.config
        index = group.index
        fused_index = index if fused else None
        needs_neighbor_g1 = (
            c.update_g1_has_attn
            or self.g2_has_g1g1
            or (fused_index is None and (c.update_g1_has_drrd or c.update_g1_has_conv))
        )
        # Message passing: the neighbour's current g1, read from its real atom (no ghosts).
        neighbor_g1 = (
            torch.index_select(g1, 0, index.reshape(-1)).view(*index.shape, -1)
            if needs_neighbor_g1
            else None
        )
        centre_g1 = g1[group.rows]
        if self.update_pairs:
            g2_updates, h2_updates = self._pair_updates(centre_g1, g2, h2, neighbor_g1, group)
        pieces = self._g1_pieces(centre_g1, g2, h2, neighbor_g1, group, fused_index, g1)
        if self.update_pairs:
            g2 = self._combine(g2_updates, self.g2_residual)
            h2 = self._combine(h2_updates, self.h2_residual)
        return (g2, h2), pieces

    def _pair_updates(
        self,
        g1: torch.Tensor,
        g2: torch.Tensor,
        h2: torch.Tensor,
        neighbor_g1: torch.Tensor | None,
        group: CentreGroup,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """[g2, linear2, g1g1, attention] and [h2, attention on h2]."""
        assert self.linear2 is not None
        g2_updates = [g2, self.activation(self.linear2(g2))]
        h2_updates = [h2]
        mask, switch = group.mask, group.switch
        if self.proj_g1g1g2 is not None:
            assert neighbor_g1 is not None
            if group.centres is not None:  # ragged: every slot is a real pair
                product = g1[group.centres] * neighbor_g1
            else:
                product = (g1.unsqueeze(-2) * neighbor_g1).masked_fill(~mask.unsqueeze(-1), 0.0)
            if self.smooth:
                product = product * switch.unsqueeze(-1)
            g2_updates.append(self.proj_g1g1g2(product))
        if self.attn2g_map is not None:
            weights = self.attn2g_map(g2, h2, mask, switch, group.num_trimmed)
            if self.attn2_mh_apply is not None:
                assert self.attn2_lm is not None
                g2_updates.append(self.attn2_lm(self.attn2_mh_apply(weights, g2)))
            if self.attn2_ev_apply is not None:
                h2_updates.append(self.attn2_ev_apply(weights, h2))
        return g2_updates, h2_updates

    def _g1_pieces(
        self,
        g1: torch.Tensor,
        g2: torch.Tensor,
        h2: torch.Tensor,
        neighbor_g1: torch.Tensor | None,
        group: CentreGroup,
        fused_index: torch.Tensor | None,
        nodes: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The pair-dependent g1 terms of some centres (g1 [n, d1] is theirs).

        Returns (each None when the model has no such term):
            the conv update (g1_out_conv) [n, d1]; the MLP's pair-dependent input columns (conv
            unless g1_out_conv, grrg, drrd, in linear1's column order) [n, k]; the local
            attention update [n, d1]. The self-MLP and the MLP itself are the caller's.

        ``fused_index`` is the neighbour index on the fused path (None on the reference path),
        into ``nodes``, the g1 of all atoms [num_atoms, d1].
        """
        c = self.config
        conv_update = None
        mlp_inputs = []
        if c.update_g1_has_conv:
            conv = self._convolution(neighbor_g1, g2, group, nodes, fused_index)
            if c.g1_out_conv:
                conv_update = conv
            else:
                mlp_inputs.append(conv)
        moment_options = {
            "smooth": self.smooth,
            "use_sqrt_nnei": c.use_sqrt_nnei,
            "max_neighbors": c.max_neighbors,
        }
        if c.update_g1_has_grrg:
            moment = pair_moment(g2, h2, group, **moment_options)
            mlp_inputs.append(symmetrise(moment, c.axis_neurons))
        if c.update_g1_has_drrd:
            features = neighbor_g1 if fused_index is None else nodes
            assert features is not None
            moment = pair_moment(features, h2, group, index=fused_index, **moment_options)
            mlp_inputs.append(symmetrise(moment, c.axis_neurons))
        mlp_input = None
        if mlp_inputs:
            mlp_input = torch.cat(mlp_inputs, dim=-1) if len(mlp_inputs) > 1 else mlp_inputs[0]
        attention = None
        if self.loc_attn is not None:
            assert neighbor_g1 is not None
            attention = self.loc_attn(g1, neighbor_g1, group.mask, group.switch, group.num_trimmed)
        return conv_update, mlp_input, attention

    def _combine(self, updates: list[torch.Tensor], residuals: nn.ParameterList) -> torch.Tensor:
        style = self.config.update_style
        result = updates[0]
        if style == "res_avg":
            for update in updates[1:]:
                result = result + update
            return result / (float(len(updates)) ** 0.5)
        if style == "res_incr":
            scale = 1.0 / (float(len(updates) - 1) ** 0.5) if len(updates) > 1 else 0.0
            for update in updates[1:]:
                result = result + scale * update
            return result
        for weight, update in zip(residuals, updates[1:], strict=True):
            result = torch.addcmul(result, weight, update)
        return result
