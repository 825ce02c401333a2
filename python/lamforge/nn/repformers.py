"""The repformer block: initial pair channels and the stack of layers (spec §1.7).

Pair layouts (all exact; empty slots only ever enter a reduction with weight zero):

* ragged (attention-free layers on the CPU, :data:`RAGGED_PAIRS`): pair tensors [P, ·] over the
  real pairs only, CSR offsets per centre, the reductions in the Rust core;
* centre groups: centres sorted by neighbour count, each group [n_k, N_k, ·] on its own slot
  width (layers with attention: their softmax runs over a centre's padded slots);
* all at once, [num_atoms, N, ·] (``group=False``: no shape depends on the data, for export).
"""

from __future__ import annotations

import torch
from torch import nn

from lamforge import kernels
from lamforge.nn import aggregate_kernel
from lamforge.nn.config import RepformerConfig
from lamforge.nn.geometry import BlockGeometry
from lamforge.nn.layers import DenseLayer, activation_function
from lamforge.nn.repformer_layer import RepformerLayer
from lamforge.nn.repformer_terms import CentreGroup
from lamforge.nn.repinit import _StatisticsBlock

# Groups of centres by neighbour count (as in the three-body branch of repinit), each of at least
# this many centres.
CENTER_GROUPS = 4
CENTER_GROUP_ATOMS = 48
# Attention-free layers on the CPU run on the real pairs only, without padding (a switch for the
# tests that compare both layouts).
RAGGED_PAIRS = True


class RepformerBlock(_StatisticsBlock):
    """g2⁰ = act(W R[0] + b), h2⁰ = R[1:4] (or |r|/rc and r/rc with ``direct_dist``), then layers.

    Parameters: ``g2_embd`` (deepmd-kit ``g2_embd``), ``layers.{k}``; buffers ``mean``/``std``.
    """

    def __init__(
        self,
        config: RepformerConfig,
        *,
        num_elements: int,
        smooth: bool,
        protection: float,
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__(
            cutoff=config.cutoff,
            cutoff_smooth=config.cutoff_smooth,
            max_neighbors=config.max_neighbors,
            num_elements=num_elements,
            protection=protection,
            dtype=dtype,
        )
        self.direct_dist = config.direct_dist
        self.activation = activation_function(config.activation)
        self.g2_embd = DenseLayer(1, config.g2_dim, dtype=dtype, generator=generator)
        # Attention-free layers run on the real pairs only (the ragged layout, CPU).
        self.attention_free = not (
            config.update_g2_has_attn or config.update_h2 or config.update_g1_has_attn
        )
        self.layers = nn.ModuleList(
            RepformerLayer(
                config,
                is_last=layer == config.num_layers - 1,
                smooth=smooth,
                dtype=dtype,
                generator=generator,
            )
            for layer in range(config.num_layers)
        )

    def exact_without_empty_slots(self) -> bool:
        """Always: empty slots are masked, and the attention accounts for trimmed ones."""
        return True

    def forward(
        self,
        geometry: BlockGeometry,
        atom_types: torch.Tensor,
        g1: torch.Tensor,
        group: bool = True,
    ) -> torch.Tensor:
        """Run the message passing.

        Args:
            geometry: this block's edges.
            atom_types: [num_atoms].
            g1: [num_atoms, g1_dim] the bridge output before its activation.
            group: run centres in groups of similar neighbour counts (exact); False runs them all
                at once (no shape that depends on the data: export).

        Returns:
            g1 after the last layer, [num_atoms, g1_dim].
        """
        g1 = self.activation(g1)
        if group and RAGGED_PAIRS and self.attention_free and aggregate_kernel.applies(g1):
            return self._forward_ragged(geometry, atom_types, g1)
        env, switch = self.normalised_environment(geometry, atom_types)
        mask = geometry.mask
        groups = self._center_groups(mask, g1) if group else None
        if groups is None:
            g2, h2 = self._pair_channels(env, geometry.vectors, mask)
            num_trimmed = self.max_neighbors - mask.shape[1]
            for layer in self.layers:
                g1, g2, h2 = layer(g1, g2, h2, geometry.index, mask, switch, num_trimmed)
            return g1
        # Centres sorted by their last used slot run in groups, each on its own slot width: the
        # pair attention costs the square of the width. g1 is kept in group order (each group's
        # centres are a slice of its rows, the neighbour index points into that order), so the
        # per-atom work of a layer runs once on all atoms. Every layer reads the neighbours' g1
        # of the previous layer, so all groups finish a layer before the next one starts.
        order = torch.cat(groups)
        inverse = torch.argsort(order)
        slot_numbers = self._slot_numbers(mask)
        pairs, centre_groups = [], []
        start = 0
        for centers in groups:
            width = max(int((mask[centers] * slot_numbers).amax()), 1)
            group_mask = mask[centers, :width]
            # The pair channels of the group's slots only (its 4 environment columns are
            # selected, not the g2_dim-wide g2, which is also computed for those slots only).
            pairs.append(
                self._pair_channels(
                    env[centers, :width], geometry.vectors[centers, :width], group_mask
                )
            )
            centre_groups.append(
                CentreGroup(
                    rows=slice(start, start + centers.shape[0]),
                    index=inverse[geometry.index[centers, :width]],
                    mask=group_mask,
                    switch=switch[centers, :width],
                    num_trimmed=self.max_neighbors - width,
                )
            )
            start += centers.shape[0]
        g1 = g1[order]
        for layer in self.layers:
            g1, pairs = layer.forward_groups(g1, pairs, centre_groups)
        return g1[inverse]

    def _forward_ragged(
        self, geometry: BlockGeometry, atom_types: torch.Tensor, g1: torch.Tensor
    ) -> torch.Tensor:
        """The layers on the real pairs only (no empty slots; attention-free layers).

        The pair tensors are [P, ·] over the P real pairs in centre order (CSR offsets), so no
        work goes to padding and every layer's pair work is one set of operations. Exact: empty
        slots only ever enter a reduction with weight zero.
        """
        ragged = geometry.ragged()
        env, switch = self.ragged_environment(ragged, atom_types)
        pair_mask = torch.ones(ragged.index.shape, dtype=torch.bool, device=env.device)
        vectors = ragged.vectors.to(env.dtype)
        pairs = [self._pair_channels(env, vectors, pair_mask)]
        edges = CentreGroup(
            rows=slice(None),
            index=ragged.index,
            mask=pair_mask,
            switch=switch,
            num_trimmed=0,
            offsets=ragged.offsets,
            centres=ragged.centres,
        )
        for layer in self.layers:
            g1, pairs = layer.forward_groups(g1, pairs, [edges])
        return g1

    def _pair_channels(
        self, env: torch.Tensor, vectors: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """g2⁰ [n, N, g2_dim] and h2⁰ [n, N, 3] of some slots (env [n, N, 4], vectors, mask)."""
        if self.direct_dist:
            vectors = vectors.to(env.dtype) * mask.unsqueeze(-1)
            safe = torch.where(mask.unsqueeze(-1), vectors, torch.ones_like(vectors))
            length = torch.linalg.norm(safe, dim=-1, keepdim=True) * mask.unsqueeze(-1)
            g2, h2 = length / self.cutoff, vectors / self.cutoff
        else:
            g2, h2 = torch.split(env, [1, 3], dim=-1)
        return self.activation(self.g2_embd(g2)), h2

    @staticmethod
    def _slot_numbers(mask: torch.Tensor) -> torch.Tensor:
        return torch.arange(1, mask.shape[1] + 1, device=mask.device)

    def _center_groups(self, mask: torch.Tensor, g1: torch.Tensor) -> list[torch.Tensor] | None:
        """Centres in groups of similar neighbour counts, or None to run all at once."""
        num_groups = min(CENTER_GROUPS, mask.shape[0] // CENTER_GROUP_ATOMS)
        if num_groups < 2 or kernels.fused_enabled(g1):
            return None
        width = (mask * self._slot_numbers(mask)).amax(dim=1)
        return list(torch.tensor_split(torch.argsort(width), num_groups))
