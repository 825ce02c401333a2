"""The DPA-2 descriptor: type embedding -> repinit (+ three-body) -> bridge -> repformers.

    T      = TypeEmbedding(t)                                   [num_atoms, tebd]
    D      = repinit(rc 6 Å, N 120)  (+ D3 = three_body(rc 4 Å, N 48))
    g1⁰    = [D ; D3] W_bridge  (+ T W_tebd if add_tebd_to_repinit_out)
    g1     = repformers(rc 4 Å, N 48, tanh(g1⁰))
    output = [g1 ; T] if concat_output_tebd else g1

Parameter and buffer map, ours -> deepmd-kit ``DescrptDPA2`` (prefix ``descriptor.`` there and
here; deepmd-kit's ``MLPLayer.matrix`` [in, out] is our ``DenseLayer.weight`` [in, out], same
orientation; ``idt`` is ``timestep``; davg/dstd [ntypes, nnei, 4] are tiled copies of our
``mean``/``std`` [num_elements, 4], take slot 0):

Ours -> deepmd-kit (role):

- ``type_embedding.net.layers.0.weight`` -> ``type_embedding.embedding.embedding_net.layers.0
  .matrix`` (element table; ``.bias`` only with use_tebd_bias; the zero padding row is implicit)
- ``repinit.embedding.layers.{k}.{weight,bias,timestep}`` ->
  ``repinit.filter_layers.networks.0.layers.{k}.{matrix,bias,idt}`` (G(s, T_j, T_i))
- ``repinit.type_embedding_net.layers.{k}.*`` -> ``repinit.filter_layers_strip.networks.0
  .layers.{k}.*`` (strip-mode type-pair net)
- ``repinit.mean`` / ``repinit.std`` -> ``repinit.mean`` / ``repinit.stddev`` (davg / dstd)
- ``three_body.{embedding,type_embedding_net,mean,std}`` -> ``repinit_three_body
  .{filter_layers.networks.0, filter_layers_strip.networks.0, mean, stddev}``
- ``bridge.weight`` -> ``g1_shape_tranform.matrix`` ([D ; D3] -> g1; absent when dims match)
- ``tebd_transform.weight`` -> ``tebd_transform.matrix`` (add_tebd_to_repinit_out)
- ``repformers.g2_embd.{weight,bias}`` -> ``repformers.g2_embd.{matrix,bias}`` (g2⁰)
- ``repformers.mean`` / ``repformers.std`` -> ``repformers.mean`` / ``repformers.stddev``
- ``repformers.layers.{l}.{linear1,linear2,g1_self_mlp,proj_g1g2,proj_g1g1g2}`` -> same names
- ``repformers.layers.{l}.{g1,g2,h2}_residual.{k}`` -> same names (res_residual vectors)
- ``repformers.layers.{l}.attn2g_map.query_key`` -> ``...attn2g_map.mapqk`` (pair attn Q/K)
- ``repformers.layers.{l}.attn2_mh_apply.{value,head_map}`` -> ``...attn2_mh_apply.{mapv,
  head_map}`` (pair attention on g2)
- ``repformers.layers.{l}.attn2_lm.{weight,bias}`` -> ``...attn2_lm.{matrix,bias}`` (LayerNorm)
- ``repformers.layers.{l}.attn2_ev_apply.head_map`` -> same name (pair attention on h2)
- ``repformers.layers.{l}.loc_attn.{query,key_value,head_map}`` -> ``...loc_attn.{mapq,mapkv,
  head_map}`` (g1 local attention)

Heads (``lamforge.nn.fitting.EnergyHead``, ``heads.<name>.`` here): ``fitting_net.layers.{k}`` =
deepmd-kit ``fitting_net.filter_layers.networks.0.layers.{k}``; ``energy_bias`` [num_elements]
(float64) = ``atomic_model.out_bias[0, :, 0]`` (deepmd-kit's ``bias_atom_e`` is a zero buffer).
"""

from __future__ import annotations

import torch
from torch import nn

from lamforge import kernels
from lamforge.nn.config import DescriptorConfig
from lamforge.nn.geometry import BlockGeometry
from lamforge.nn.layers import DenseLayer, TypeEmbedding
from lamforge.nn.repformers import RepformerBlock
from lamforge.nn.repinit import RepinitBlock, ThreeBodyBlock


class DPA2Descriptor(nn.Module):
    """DPA-2 descriptor over a model's element list."""

    def __init__(
        self,
        config: DescriptorConfig,
        *,
        num_elements: int,
        dtype: torch.dtype,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_elements = num_elements
        repinit, repformer = config.repinit, config.repformer
        block_options = {
            "num_elements": num_elements,
            "smooth": config.smooth,
            "protection": config.env_protection,
            "dtype": dtype,
            "generator": generator,
        }
        self.type_embedding = TypeEmbedding(
            num_elements,
            repinit.type_embedding_dim,
            use_bias=config.use_tebd_bias,
            dtype=dtype,
            generator=generator,
        )
        self.repinit = RepinitBlock(repinit, **block_options)
        self.three_body = (
            ThreeBodyBlock(repinit, **block_options) if repinit.use_three_body else None
        )
        self.repformers = RepformerBlock(repformer, **block_options)
        repinit_out = self.repinit.num_out + (
            self.three_body.num_out if self.three_body is not None else 0
        )
        self.bridge = (
            DenseLayer(
                repinit_out,
                repformer.g1_dim,
                bias=False,
                init="glorot",
                dtype=dtype,
                generator=generator,
            )
            if repinit_out != repformer.g1_dim
            else None
        )
        self.tebd_transform = (
            DenseLayer(
                repinit.type_embedding_dim,
                repformer.g1_dim,
                bias=False,
                dtype=dtype,
                generator=generator,
            )
            if config.add_tebd_to_repinit_out
            else None
        )
        # Run blocks on trimmed neighbour slots where that is exact (a switch for tests).
        self.trim_empty_slots = True
        # Export mode (``lamforge.export``): no optimisation whose shapes depend on the data
        # (slot trimming, centre grouping, the three-body pair list), so the forward traces with
        # symbolic shapes.
        self.static_shapes = False
        self.num_out = repformer.g1_dim + (
            repinit.type_embedding_dim if config.concat_output_tebd else 0
        )

    def neighbor_specs(self) -> dict[str, tuple[float, int]]:
        """(cutoff, max_neighbors) of each block that reads a neighbour list."""
        specs = {
            "repinit": (self.repinit.cutoff, self.repinit.max_neighbors),
            "repformers": (self.repformers.cutoff, self.repformers.max_neighbors),
        }
        if self.three_body is not None:
            specs["three_body"] = (self.three_body.cutoff, self.three_body.max_neighbors)
        return specs

    def statistics_blocks(self) -> dict[str, nn.Module]:
        """The blocks that carry per-element environment statistics, by role."""
        blocks: dict[str, nn.Module] = {"repinit": self.repinit, "repformers": self.repformers}
        if self.three_body is not None:
            blocks["three_body"] = self.three_body
        return blocks

    def forward(
        self, geometries: dict[str, BlockGeometry], atom_types: torch.Tensor
    ) -> torch.Tensor:
        """Per-atom descriptor.

        Args:
            geometries: one geometry per role of :meth:`neighbor_specs`.
            atom_types: [num_atoms].

        Returns:
            [num_atoms, num_out].
        """
        type_table = self.type_embedding.table()
        atom_embedding = type_table[atom_types]

        # Trimming is data-dependent (no torch.compile graph, no export) and the fused kernels
        # skip empty slots themselves: trim on the eager reference path only.
        trim = (
            self.trim_empty_slots
            and not self.static_shapes
            and not kernels.fused_enabled(type_table)
        )

        def geometry(role: str, block: nn.Module) -> BlockGeometry:
            if trim and block.exact_without_empty_slots():
                return geometries[role].trimmed()
            return geometries[role]

        group = not self.static_shapes
        features = self.repinit(
            geometry("repinit", self.repinit), atom_types, type_table, group=group
        )
        if self.three_body is not None:
            three_body = self.three_body(
                geometry("three_body", self.three_body),
                atom_types,
                type_table,
                group=group,
            )
            features = torch.cat([features, three_body], dim=-1)
        g1 = self.bridge(features) if self.bridge is not None else features
        if self.tebd_transform is not None:
            g1 = g1 + self.tebd_transform(atom_embedding)
        g1 = self.repformers(geometry("repformers", self.repformers), atom_types, g1, group=group)
        if self.config.concat_output_tebd:
            g1 = torch.cat([g1, atom_embedding], dim=-1)
        return g1
