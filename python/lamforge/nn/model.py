"""A DPA-2 energy model: one descriptor and an ``nn.ModuleDict`` of named energy heads.

Multi-task training uses several heads on one descriptor; fine-tuning copies, replaces or freezes
modules (``model.heads["new"] = ...``, ``model.descriptor.requires_grad_(False)``).
"""

from __future__ import annotations

import torch
from torch import nn

from lamforge.nn.config import ModelConfig
from lamforge.nn.dpa2 import DPA2Descriptor
from lamforge.nn.fitting import EnergyHead
from lamforge.nn.geometry import BlockGeometry
from lamforge.nn.inputs import ModelInput, edge_vectors

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class EnergyModel(nn.Module):
    """The energy path shared by every lamforge model: a descriptor plus named energy heads.

    A subclass sets ``config`` (with ``elements``), ``dtype``, ``descriptor`` (a module with
    ``neighbor_specs()`` and ``forward(geometries, atom_types)``) and ``heads`` (an
    ``nn.ModuleDict`` of :class:`EnergyHead`); :func:`lamforge.nn.evaluate`, the trainer, bias
    fitting and the calculators work on any such model.
    """

    dtype: torch.dtype
    descriptor: nn.Module
    heads: nn.ModuleDict

    @property
    def elements(self) -> tuple[str, ...]:
        """The model's element list; ``atom_types`` index into it."""
        return self.config.elements

    def head(self, name: str | None = None) -> EnergyHead:
        """The head called ``name``; ``None`` is allowed when there is exactly one head."""
        if name is None:
            if len(self.heads) != 1:
                raise ValueError(f"the model has heads {list(self.heads)}; choose one with head=")
            return next(iter(self.heads.values()))
        if name not in self.heads:
            raise KeyError(f"no head {name!r}; the model has heads {list(self.heads)}")
        return self.heads[name]

    def geometries(
        self, inputs: ModelInput, positions: torch.Tensor | None = None
    ) -> tuple[dict[str, BlockGeometry], list[tuple[BlockGeometry, torch.Tensor]]]:
        """Edge geometry of every block the descriptor reads.

        Args:
            inputs: the batch.
            positions: [num_atoms, 3] overrides ``inputs.positions`` (e.g. a tensor requiring grad).

        Returns:
            The geometry per role, and the distinct (geometry, raw neighbour index) pairs (roles
            with the same cutoff and cap share one geometry, hence one edge-vector tensor).
        """
        positions = (inputs.positions if positions is None else positions).to(self.dtype)
        cell = inputs.cell.to(self.dtype)
        empty_slot_type = empty_slot_types(inputs.atom_types, inputs.frame_index, inputs.num_frames)
        by_spec: dict[tuple[float, int], tuple[BlockGeometry, torch.Tensor]] = {}
        roles = {}
        for role, spec in self.descriptor.neighbor_specs().items():
            if spec not in by_spec:
                block = inputs.neighbor_list(*spec)
                vectors = edge_vectors(
                    positions, cell, inputs.frame_index, block.index, block.shifts
                )
                geometry = block_geometry(vectors, block.index, inputs.atom_types, empty_slot_type)
                by_spec[spec] = (geometry, block.index)
            roles[role] = by_spec[spec][0]
        return roles, list(by_spec.values())

    def atomic_energies_from_geometry(
        self, geometries: dict[str, BlockGeometry], atom_types: torch.Tensor, head: str | None
    ) -> torch.Tensor:
        """[num_atoms] float64 atomic energies of ``head`` for prepared geometries."""
        descriptor = self.descriptor(geometries, atom_types)
        energy_head = self.head(head)
        vacuum = self.vacuum_descriptor() if energy_head.config.zero_isolated_atoms else None
        return energy_head(descriptor, atom_types, vacuum)

    def vacuum_descriptor(self) -> torch.Tensor:
        """Descriptor of an isolated atom (no neighbours) of each element, [num_elements, dim]."""
        parameter = next(self.descriptor.parameters())
        num_elements = len(self.elements)
        atom_types = torch.arange(num_elements, device=parameter.device)
        geometries = {}
        for role, (_, max_neighbors) in self.descriptor.neighbor_specs().items():
            index = torch.zeros(num_elements, max_neighbors, dtype=torch.int64)
            geometries[role] = BlockGeometry(
                index=index.to(parameter.device),
                mask=torch.zeros_like(index, dtype=torch.bool),
                vectors=parameter.new_zeros(num_elements, max_neighbors, 3),
                neighbor_types=atom_types.unsqueeze(1).expand(-1, max_neighbors),
            )
        return self.descriptor(geometries, atom_types)

    def atomic_energies(self, inputs: ModelInput, head: str | None = None) -> torch.Tensor:
        """[num_atoms] float64 atomic energies."""
        geometries, _ = self.geometries(inputs)
        return self.atomic_energies_from_geometry(geometries, inputs.atom_types, head)

    def energy(self, inputs: ModelInput, head: str | None = None) -> torch.Tensor:
        """[num_frames] float64 frame energies (sum of atomic energies, reduced in float64)."""
        return frame_sum(self.atomic_energies(inputs, head), inputs.frame_index, inputs.num_frames)


class DPA2Model(EnergyModel):
    """DPA-2 descriptor plus energy heads.

    Attributes:
        config: the :class:`ModelConfig` it was built from.
        descriptor: :class:`DPA2Descriptor`.
        heads: ``nn.ModuleDict`` of :class:`EnergyHead` by name.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.dtype = DTYPES[config.precision]
        generator = torch.Generator().manual_seed(config.seed)
        num_elements = len(config.elements)
        self.descriptor = DPA2Descriptor(
            config.descriptor, num_elements=num_elements, dtype=self.dtype, generator=generator
        )
        self.heads = nn.ModuleDict(
            {
                name: EnergyHead(
                    head,
                    num_in=self.descriptor.num_out,
                    num_elements=num_elements,
                    dtype=self.dtype,
                    generator=generator,
                )
                for name, head in config.heads.items()
            }
        )


def empty_slot_types(
    atom_types: torch.Tensor, frame_index: torch.Tensor, num_frames: int
) -> torch.Tensor:
    """Element of the first atom of each atom's frame, [num_atoms]: the type of its empty slots.

    deepmd-kit points empty slots at the frame's first atom (see :class:`BlockGeometry`). The first
    atom of frame f is the number of atoms in earlier frames (``frame_index`` is non-decreasing);
    ``searchsorted`` finds it without data-dependent shapes, so this also traces for export.
    """
    frames = torch.arange(num_frames, device=frame_index.device, dtype=frame_index.dtype)
    first_atom = torch.searchsorted(frame_index, frames)
    return atom_types[first_atom[frame_index]]


def block_geometry(
    vectors: torch.Tensor,
    index: torch.Tensor,
    atom_types: torch.Tensor,
    empty_slot_type: torch.Tensor,
) -> BlockGeometry:
    """The :class:`BlockGeometry` of one neighbour block.

    Args:
        vectors: [num_atoms, max_neighbors, 3] edge vectors (see ``inputs.edge_vectors``).
        index: [num_atoms, max_neighbors] neighbour indices, -1 for empty slots.
        atom_types: [num_atoms].
        empty_slot_type: [num_atoms] from :func:`empty_slot_types`.
    """
    mask = index >= 0
    safe_index = index.clamp(min=0)
    neighbor_types = torch.where(mask, atom_types[safe_index], empty_slot_type.unsqueeze(1))
    return BlockGeometry(
        index=safe_index, mask=mask, vectors=vectors, neighbor_types=neighbor_types
    )


def frame_sum(values: torch.Tensor, frame_index: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Sum per-atom values per frame: [num_atoms, ...] -> [num_frames, ...]."""
    out = values.new_zeros((num_frames, *values.shape[1:]))
    return out.index_add(0, frame_index, values)
