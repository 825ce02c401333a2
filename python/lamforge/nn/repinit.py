"""repinit: the attention-free DPA-1 block and its optional three-body branch (spec §1.4, §1.5).

Two-body (deepmd-kit ``DescrptBlockSeAtten`` with ``attn_layer=0``), per centre i:

    G_ij  = EmbeddingNet([s_ij, T_j, T_i])                          (concat mode)
          = G_s(s_ij) ⊙ Ĝ_t[t_i, t_j] + G_s(s_ij)                   (strip mode, Ĝ_t ⊙ sw if smooth)
    Mom_i = (1/N) Σ_j R_ij^T ⊗ G_ij            [4, ng]   (N = the fixed max_neighbors)
    D_i   = Mom_i^T · Mom_i[:, :M]             [ng, M] flattened ng-major

Three-body (``DescrptBlockSeTTebd``): e_jk = R_ij[1:4] · R_ik[1:4],
H_jk = EmbeddingNet([e_jk, T_j, T_k]) (or strip), D3_i = (1/N3²) Σ_jk e_jk H_jk.

Where empty slots add nothing (zero mean), the two-body block runs on the CPU on the real pairs
only (:data:`RAGGED_REPINIT`: [P, ·] rows in centre order, CSR offsets, the contraction in the
Rust thin kernels' ragged mode); elsewhere in centre groups by neighbour count, or on all slots
(``group=False``, export).
"""

from __future__ import annotations

import torch
from torch import nn

from lamforge import kernels
from lamforge.nn import aggregate_kernel
from lamforge.nn.aggregate_kernel import gather_outer_sum
from lamforge.nn.config import RepinitConfig
from lamforge.nn.engine import in_single_input_backward
from lamforge.nn.env_mat import environment_matrix
from lamforge.nn.geometry import BlockGeometry, RaggedEdges
from lamforge.nn.layers import EmbeddingNet
from lamforge.nn.three_body_kernel import fused_applies, three_body_sum

# Groups of centres (by neighbour count) in the three-body branch, each of at least this many
# centres (smaller groups cost more in per-operation overhead than the slots they save).
THREE_BODY_GROUPS = 4
THREE_BODY_GROUP_ATOMS = 48
# The same for the two-body repinit block (water: 78 to 101 of its 120 slots used per centre).
REPINIT_GROUPS = 4
REPINIT_GROUP_ATOMS = 48
# On the CPU, where empty slots add nothing, the two-body block runs on the real pairs only (the
# ragged layout) instead of centre groups (a switch for the tests that compare both).
RAGGED_REPINIT = True
# Concat mode: evaluate the three-body net on the list of real neighbour pairs j <= k instead of
# every slot pair (a switch for the tests that compare both).
THREE_BODY_PAIR_LIST = True


class _StatisticsBlock(nn.Module):
    """A block with its own cutoff, neighbour cap and per-element ``mean``/``std`` buffers."""

    def __init__(
        self,
        *,
        cutoff: float,
        cutoff_smooth: float,
        max_neighbors: int,
        num_elements: int,
        protection: float,
        dtype: torch.dtype,
    ) -> None:
        super().__init__()
        self.cutoff = cutoff
        self.cutoff_smooth = cutoff_smooth
        self.max_neighbors = max_neighbors
        self.protection = protection
        self.register_buffer("mean", torch.zeros(num_elements, 4, dtype=dtype))
        self.register_buffer("std", torch.ones(num_elements, 4, dtype=dtype))

    def empty_rows_are_zero(self, columns: slice) -> bool:
        """Whether empty slots give zero normalised rows in ``columns`` (zero mean there)."""
        return bool((self.mean[:, columns] == 0).all())

    def raw_environment(self, geometry: BlockGeometry) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised R̃ [num_atoms, max_neighbors, 4] and switch [num_atoms, max_neighbors]."""
        return environment_matrix(
            geometry.vectors.to(self.mean.dtype),
            geometry.mask,
            self.cutoff,
            self.cutoff_smooth,
            self.protection,
        )

    def ragged_environment(
        self, edges: RaggedEdges, atom_types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """R [P, 4] and the switch [P] of the real edges (every row a real pair: no masking)."""
        vectors = edges.vectors.to(self.mean.dtype)
        raw, switch = environment_matrix(
            vectors, None, self.cutoff, self.cutoff_smooth, self.protection
        )
        centre_types = atom_types[edges.centres]
        return (raw - self.mean[centre_types]) / self.std[centre_types], switch

    def normalised_environment(
        self, geometry: BlockGeometry, atom_types: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """R = (R̃ - mean[t_i]) / std[t_i] and the switch."""
        vectors = geometry.vectors.to(self.mean.dtype)
        if kernels.fused_enabled(vectors):
            return kernels.environment_matrix(
                vectors, geometry.mask, self.mean[atom_types], self.std[atom_types],
                cutoff=self.cutoff, cutoff_smooth=self.cutoff_smooth, protection=self.protection,
            )  # fmt: skip
        raw, switch = self.raw_environment(geometry)
        env = (raw - self.mean[atom_types].unsqueeze(1)) / self.std[atom_types].unsqueeze(1)
        return env, switch


def _pair_table(type_table: torch.Tensor) -> torch.Tensor:
    """Rows ``a * (T+1) + b`` = [type_table[b], type_table[a]], [(T+1)², 2·dim].

    This is deepmd-kit's two-side table layout for repinit strip mode: the first index is the
    centre, the neighbour's embedding comes first in the concatenation.
    """
    rows = type_table.shape[0]
    neighbor = type_table.unsqueeze(0).expand(rows, -1, -1)
    center = type_table.unsqueeze(1).expand(-1, rows, -1)
    return torch.cat([neighbor, center], dim=-1).reshape(rows * rows, -1)


class RepinitBlock(_StatisticsBlock):
    """Two-body repinit block.

    Parameters: ``embedding`` (deepmd-kit ``filter_layers.networks.0``) and, in strip mode,
    ``type_embedding_net`` (``filter_layers_strip.networks.0``). Buffers ``mean``/``std``.
    """

    def __init__(
        self,
        config: RepinitConfig,
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
        self.mode = config.type_input_mode
        self.type_one_side = config.type_one_side
        self.smooth = smooth
        self.axis_neurons = config.axis_neurons
        tebd = config.type_embedding_dim
        type_input = tebd if config.type_one_side else 2 * tebd
        if self.mode not in ("concat", "strip"):
            raise ValueError(f"repinit: unknown type_input_mode {self.mode!r}")
        self.embedding = EmbeddingNet(
            1 + type_input if self.mode == "concat" else 1,
            config.neurons,
            activation=config.activation,
            resnet_dt=config.resnet_dt,
            dtype=dtype,
            generator=generator,
        )
        self.type_embedding_net = (
            EmbeddingNet(
                type_input,
                config.neurons,
                activation=config.activation,
                resnet_dt=config.resnet_dt,
                dtype=dtype,
                generator=generator,
            )
            if self.mode == "strip"
            else None
        )
        self.num_out = config.neurons[-1] * config.axis_neurons

    def exact_without_empty_slots(self) -> bool:
        """Empty slots add (0 - mean)/std ⊗ G to the moment: nothing when the mean is zero."""
        return self.empty_rows_are_zero(slice(None))

    def forward(
        self,
        geometry: BlockGeometry,
        atom_types: torch.Tensor,
        type_table: torch.Tensor,
        group: bool = True,
    ) -> torch.Tensor:
        """Invariant descriptor D.

        Args:
            geometry: this block's edges.
            atom_types: [num_atoms].
            type_table: [num_elements + 1, tebd_dim] (last row zero).
            group: run centres in groups of similar neighbour counts where that is exact;
                False runs every centre on all slots (no shape that depends on the data: export).

        Returns:
            [num_atoms, ng * axis_neurons].
        """
        if not group:
            return self._descriptor(geometry, atom_types, type_table)
        if (
            RAGGED_REPINIT
            and aggregate_kernel.applies(self.mean)  # first: False while tracing
            and not kernels.fused_enabled(geometry.vectors)
            and self.exact_without_empty_slots()
        ):
            edges = geometry.ragged()
            env, switch = self.ragged_environment(edges, atom_types)  # [P, 4], [P]
            centre_types = atom_types[edges.centres]
            if torch.is_grad_enabled() and not in_single_input_backward():
                # Training: one set of operations (the saved tensors dominate its memory).
                return self._descriptor_ragged(edges, env, switch, centre_types, type_table)
            # Inference: consecutive runs of centres, so that the transient pair tensors of the
            # forward and the backward stay a fraction of the block's (no padding either way).
            num_atoms = atom_types.shape[0]
            num_runs = max(min(REPINIT_GROUPS, num_atoms // REPINIT_GROUP_ATOMS), 1)
            bounds = torch.linspace(0, num_atoms, num_runs + 1).long().tolist()
            outputs = []
            for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
                run, pairs = edges.centre_range(start, stop)
                outputs.append(
                    self._descriptor_ragged(
                        run, env[pairs], switch[pairs], centre_types[pairs], type_table
                    )
                )
            return torch.cat(outputs)
        num_atoms, num_slots = geometry.mask.shape
        num_groups = min(REPINIT_GROUPS, num_atoms // REPINIT_GROUP_ATOMS)
        if (
            num_groups < 2
            or not self.exact_without_empty_slots()
            or kernels.fused_enabled(geometry.vectors)
        ):
            return self._descriptor(geometry, atom_types, type_table)
        # Centres sorted by their last used slot run in groups, each on its own width (exact:
        # empty slots add nothing and the moment is normalised by the fixed cap).
        width = (geometry.mask * torch.arange(1, num_slots + 1, device=atom_types.device)).amax(1)
        order = torch.argsort(width)
        outputs = []
        for group in torch.tensor_split(order, num_groups):
            used = max(int(width[group].max()), 1)
            outputs.append(
                self._descriptor(geometry.select(group, used), atom_types[group], type_table)
            )
        return torch.cat(outputs)[torch.argsort(order)]

    def _descriptor_ragged(
        self,
        edges: RaggedEdges,
        env: torch.Tensor,
        switch: torch.Tensor,
        centre_types: torch.Tensor,
        type_table: torch.Tensor,
    ) -> torch.Tensor:
        """D of the centres of ``edges`` from their real neighbours only (no padded rows).

        Exact where empty slots add nothing (zero mean): the embedding runs on the P real pairs,
        [P, ·] in centre order, and each centre's moment sums its own rows (CSR offsets).
        ``env`` [P, 4], ``switch`` [P] and ``centre_types`` [P] are those of the edges.
        """
        offsets, neighbor_types = edges.offsets, edges.neighbor_types
        radial = env[:, :1]
        if self.mode == "concat":
            parts = [type_table[neighbor_types]]
            if not self.type_one_side:
                parts.append(type_table[centre_types])
            moment = self.embedding.forward_concatenated(radial, parts, left=env, offsets=offsets)
        else:
            assert self.type_embedding_net is not None
            geometric = self.embedding(radial)
            rows = type_table.shape[0]
            if self.type_one_side:
                type_part = self.type_embedding_net(type_table)[neighbor_types]
            else:
                pair_index = centre_types * rows + neighbor_types
                type_part = self.type_embedding_net(_pair_table(type_table))[pair_index]
            if self.smooth:
                type_part = type_part * switch.unsqueeze(-1)
            pair = geometric * type_part + geometric
            moment = gather_outer_sum(env, pair, None, offsets)
        return self._invariant(moment)

    def _invariant(self, moment: torch.Tensor) -> torch.Tensor:
        """D = Mom^T Mom[:, :M] / N² flattened, from the summed moment [n, 4, ng]."""
        # Normalised by the fixed cap, not the slot count (slots may be trimmed, spec §8).
        moment = moment / self.max_neighbors
        moment_t = moment.transpose(1, 2)
        descriptor = torch.matmul(moment_t, moment[:, :, : self.axis_neurons])
        return descriptor.reshape(moment.shape[0], -1)

    def _descriptor(
        self, geometry: BlockGeometry, atom_types: torch.Tensor, type_table: torch.Tensor
    ) -> torch.Tensor:
        """D of the centres of ``geometry`` (arguments and result as :meth:`forward`)."""
        env, switch = self.normalised_environment(geometry, atom_types)
        radial = env[..., :1]
        if self.mode == "concat":
            # Input [s_ij, T_j, T_i] (or [s_ij, T_j] one-sided), first layer factored by block.
            parts = [type_table[geometry.neighbor_types]]
            if not self.type_one_side:
                parts.append(type_table[atom_types].unsqueeze(1))
            # [num_atoms, 4, ng]: the moment of the environment rows weighted by the embedding,
            # contracted through the last layer (its skip is applied to the moment).
            moment = self.embedding.forward_concatenated(radial, parts, left=env.transpose(1, 2))
        else:
            assert self.type_embedding_net is not None
            geometric = self.embedding(radial)
            rows = type_table.shape[0]
            if self.type_one_side:
                type_part = self.type_embedding_net(type_table)[geometry.neighbor_types]
            else:
                pair_index = atom_types.unsqueeze(1) * rows + geometry.neighbor_types
                type_part = self.type_embedding_net(_pair_table(type_table))[pair_index]
            if self.smooth:
                type_part = type_part * switch.unsqueeze(-1)
            pair = geometric * type_part + geometric
            moment = torch.matmul(env.transpose(1, 2), pair)
        return self._invariant(moment)


class ThreeBodyBlock(_StatisticsBlock):
    """The three-body repinit branch. Parameters as in :class:`RepinitBlock`."""

    def __init__(
        self,
        config: RepinitConfig,
        *,
        num_elements: int,
        smooth: bool,
        protection: float,
        dtype: torch.dtype,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__(
            cutoff=config.three_body_cutoff,
            cutoff_smooth=config.three_body_cutoff_smooth,
            max_neighbors=config.three_body_max_neighbors,
            num_elements=num_elements,
            protection=protection,
            dtype=dtype,
        )
        self.mode = config.type_input_mode
        self.smooth = smooth
        tebd = config.type_embedding_dim
        self.embedding = EmbeddingNet(
            1 + 2 * tebd if self.mode == "concat" else 1,
            config.three_body_neurons,
            activation=config.activation,
            resnet_dt=config.resnet_dt,
            dtype=dtype,
            generator=generator,
        )
        self.type_embedding_net = (
            EmbeddingNet(
                2 * tebd,
                config.three_body_neurons,
                activation=config.activation,
                resnet_dt=config.resnet_dt,
                dtype=dtype,
                generator=generator,
            )
            if self.mode == "strip"
            else None
        )
        self.num_out = config.three_body_neurons[-1]

    def exact_without_empty_slots(self) -> bool:
        """Empty slots have zero angular rows (zero angular mean), so zero cosines."""
        return self.empty_rows_are_zero(slice(1, None))

    def forward(
        self,
        geometry: BlockGeometry,
        atom_types: torch.Tensor,
        type_table: torch.Tensor,
        group: bool = True,
    ) -> torch.Tensor:
        """Three-body descriptor D3, [num_atoms, three_body_neurons[-1]].

        Args as :class:`RepinitBlock`; ``group=False`` runs every centre on all slots (no shape
        that depends on the data: for export).
        """
        env, switch = self.normalised_environment(geometry, atom_types)
        types = geometry.neighbor_types
        if not group:
            return self._descriptor(env, switch, types, type_table)
        # The pair list has a data-dependent length: not on the fused (compilable) path.
        if self._pair_list_applies() and not kernels.fused_enabled(env):
            return self._descriptor_from_pairs(env, geometry.mask, types, type_table)
        num_atoms, num_slots = env.shape[:2]
        num_groups = min(THREE_BODY_GROUPS, num_atoms // THREE_BODY_GROUP_ATOMS)
        if num_groups < 2 or not self.exact_without_empty_slots():
            return self._descriptor(env, switch, types, type_table)
        # The cost is quadratic in the slots: centres sorted by their last used slot run in
        # groups, each on its own width (exact, empty slots add nothing here).
        position = torch.arange(1, num_slots + 1, device=env.device)
        width = (geometry.mask * position).amax(dim=1)
        order = torch.argsort(width)
        outputs = []
        for group in torch.tensor_split(order, num_groups):
            used = max(int(width[group].max()), 1)
            outputs.append(
                self._descriptor(
                    env[group, :used], switch[group, :used], types[group, :used], type_table
                )
            )
        return torch.cat(outputs)[torch.argsort(order)]

    def _pair_list_applies(self) -> bool:
        """Concat mode, a first layer without skip followed by more layers, zero angular mean."""
        layers = self.embedding.layers
        return (
            THREE_BODY_PAIR_LIST
            and self.mode == "concat"
            and len(layers) > 1
            and not layers[0].has_skip
            and self.exact_without_empty_slots()
        )

    def _descriptor_from_pairs(
        self,
        env: torch.Tensor,
        mask: torch.Tensor,
        types: torch.Tensor,
        type_table: torch.Tensor,
    ) -> torch.Tensor:
        """D3 from the real neighbour pairs j <= k only (concat mode).

        e_jk = e_kj, and H_jk = H_kj when neighbours j and k are the same element (the net's input
        [e, T_j, T_k] is then the same), so

            Σ_jk e_jk H_jk = Σ_j e_jj H_jj + Σ_{j<k} e_jk (H(e_jk, T_j, T_k) + H(e_jk, T_k, T_j))

        takes one evaluation per same-element pair (counted twice) and two, types swapped, per
        mixed pair. Pairs with an empty slot have e = 0 (zero angular rows) and are skipped.
        """
        num_atoms, num_slots = env.shape[:2]
        angular = env[..., 1:]
        cosines = torch.matmul(angular, angular.transpose(1, 2))
        upper = torch.ones(num_slots, num_slots, dtype=torch.bool, device=env.device).triu_()
        real = mask.unsqueeze(2) & mask.unsqueeze(1) & upper
        centre, first, second = real.nonzero(as_tuple=True)
        flat = (centre * num_slots + first) * num_slots + second
        cosine = cosines.reshape(-1).index_select(0, flat)
        type_first, type_second = types[centre, first], types[centre, second]
        off_diagonal = first != second
        mixed = off_diagonal & (type_first != type_second)
        swapped = mixed.nonzero().squeeze(1)
        centre = torch.cat([centre, centre[swapped]])
        cosine = torch.cat([cosine, cosine.index_select(0, swapped)])
        rows = type_table.shape[0]
        pair_type = torch.cat(
            [type_first * rows + type_second, (type_second * rows + type_first)[swapped]]
        )
        multiplicity = torch.cat(
            [1.0 + (off_diagonal & ~mixed).to(env.dtype), env.new_ones(swapped.shape[0])]
        )
        # First layer on [e, T_a, T_b]: e w_0 + (T_a W_a + T_b W_b + b), the type part one row of
        # a small per-element-pair table, gathered, and the sum one fused multiply-add.
        layers = self.embedding.layers
        weight = layers[0].weight
        dim = type_table.shape[1]
        first_part = type_table @ weight[1 : 1 + dim]
        second_part = type_table @ weight[1 + dim : 1 + 2 * dim]
        type_part = first_part.unsqueeze(1) + second_part.unsqueeze(0)
        if layers[0].bias is not None:
            type_part = type_part + layers[0].bias
        cap = float(self.max_neighbors)
        if fused_applies(layers, env.device):
            # The whole net per pair in the Rust core (forward and both derivative orders).
            return three_body_sum(
                cosine,
                multiplicity * (1.0 / cap / cap),
                pair_type,
                centre,
                num_atoms,
                type_part.reshape(rows * rows, -1),
                layers,
            )
        type_part = type_part.reshape(rows * rows, -1).index_select(0, pair_type)
        pre = torch.addcmul(type_part, cosine.unsqueeze(-1), weight[0])
        x = layers[0].finish(pre, None)
        for layer in layers[1:-1]:
            x = layer(x)
        summed = layers[-1].segment_sum(multiplicity * cosine, x, centre, num_atoms)
        return summed * (1.0 / cap / cap)

    def _descriptor(
        self,
        env: torch.Tensor,
        switch: torch.Tensor,
        types: torch.Tensor,
        type_table: torch.Tensor,
    ) -> torch.Tensor:
        """D3 of centres: normalised env [n, slots, 4], switch and neighbour types [n, slots]."""
        num_atoms, num_slots = env.shape[:2]
        angular = env[..., 1:]
        # [num_atoms, j, k]: products of the normalised direction rows of two neighbours.
        cosines = torch.einsum("ijm,ikm->ijk", angular, angular)
        if self.mode == "concat":
            # Input [e_jk, T_j, T_k], first layer factored by block.
            embedded = type_table[types]
            # Σ_jk e_jk H_jk contracted through the last layer (its skip on the sum).
            summed = self.embedding.forward_concatenated(
                cosines.unsqueeze(-1),
                [embedded.unsqueeze(2), embedded.unsqueeze(1)],
                left=cosines.reshape(num_atoms, 1, num_slots * num_slots),
            ).squeeze(1)
        else:
            assert self.type_embedding_net is not None
            geometric = self.embedding(cosines.unsqueeze(-1))
            rows = type_table.shape[0]
            # Row a * (T+1) + b of the table is [T_a, T_b] (first neighbour's embedding first).
            first = type_table.unsqueeze(1).expand(-1, rows, -1)
            second = type_table.unsqueeze(0).expand(rows, -1, -1)
            table = self.type_embedding_net(torch.cat([first, second], -1).reshape(rows * rows, -1))
            type_part = table[types.unsqueeze(2) * rows + types.unsqueeze(1)]
            if self.smooth:
                type_part = type_part * switch[:, :, None, None] * switch[:, None, :, None]
            triple = geometric * type_part + geometric
            summed = torch.matmul(
                cosines.reshape(num_atoms, 1, num_slots * num_slots),
                triple.reshape(num_atoms, num_slots * num_slots, -1),
            ).squeeze(1)
        cap = float(self.max_neighbors)
        return summed * (1.0 / cap / cap)
