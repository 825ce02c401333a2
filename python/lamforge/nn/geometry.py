"""Per-block neighbour geometry handed to the descriptor blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def segment_ids(offsets: torch.Tensor) -> torch.Tensor:
    """[P] the item of each row of a ragged layout with CSR ``offsets`` [n + 1]."""
    counts = torch.diff(offsets)
    return torch.repeat_interleave(torch.arange(counts.shape[0], device=offsets.device), counts)


@dataclass(kw_only=True, frozen=True)
class RaggedEdges:
    """The real edges of a block only, centre by centre (the ragged layout, P edges).

    Attributes:
        offsets: [num_atoms + 1] int64: centre i's edges are ``offsets[i]:offsets[i + 1]``.
        centres: [P] int64 the centre of each edge.
        index: [P] int64 neighbour index.
        vectors: [P, 3] r_ij (differentiable: a selection of the block's vectors).
        neighbor_types: [P] element index of each neighbour.
    """

    offsets: torch.Tensor
    centres: torch.Tensor
    index: torch.Tensor
    vectors: torch.Tensor
    neighbor_types: torch.Tensor

    def centre_range(self, start: int, stop: int) -> tuple[RaggedEdges, slice]:
        """The edges of centres ``start`` to ``stop - 1`` and their rows' slice.

        The edges are views with the centres rebased to 0; the slice selects their rows in
        per-edge tensors of the whole block.
        """
        first, last = int(self.offsets[start]), int(self.offsets[stop])
        rows = slice(first, last)
        edges = RaggedEdges(
            offsets=self.offsets[start : stop + 1] - first,
            centres=self.centres[rows] - start,
            index=self.index[rows],
            vectors=self.vectors[rows],
            neighbor_types=self.neighbor_types[rows],
        )
        return edges, rows


@dataclass(kw_only=True, frozen=True)
class BlockGeometry:
    """Edges of one neighbour block, ready for a descriptor block.

    Attributes:
        index: [num_atoms, max_neighbors] int64 neighbour indices with empty slots set to 0 (a
            valid index; ``mask`` says which slots are real).
        mask: [num_atoms, max_neighbors] bool, True for real neighbours.
        vectors: [num_atoms, max_neighbors, 3] r_ij (neighbour minus centre); the forces module
            differentiates the energy with respect to these.
        neighbor_types: [num_atoms, max_neighbors] element index of each slot. Empty slots carry
            the element of the first atom of the centre's frame, exactly as deepmd-kit's padded
            neighbour index 0 does (this matters only where a block reads the neighbour type of
            an empty slot whose environment row is not zero, i.e. with a non-zero mean).
    """

    index: torch.Tensor
    mask: torch.Tensor
    vectors: torch.Tensor
    neighbor_types: torch.Tensor

    def trimmed(self) -> BlockGeometry:
        """The same edges without the trailing slots that are empty for every centre.

        Blocks whose result does not depend on empty slots (and that normalise by the fixed cap,
        not the slot count) run on the trimmed geometry: in liquids a 48-slot block often uses
        30, and the three-body branch costs the square of that.
        """
        used = self.mask.any(dim=0).nonzero()
        width = int(used.max()) + 1 if used.numel() else 1
        if width == self.mask.shape[1]:
            return self
        return BlockGeometry(
            index=self.index[:, :width],
            mask=self.mask[:, :width],
            vectors=self.vectors[:, :width],
            neighbor_types=self.neighbor_types[:, :width],
        )

    def select(self, centers: torch.Tensor, width: int) -> BlockGeometry:
        """The edges of the centres ``centers`` [k] on their first ``width`` slots."""
        return BlockGeometry(
            index=self.index[centers, :width],
            mask=self.mask[centers, :width],
            vectors=self.vectors[centers, :width],
            neighbor_types=self.neighbor_types[centers, :width],
        )

    def ragged(self) -> RaggedEdges:
        """The real edges only, in centre order (no empty slots)."""
        num_atoms, num_slots = self.mask.shape
        slots = self.mask.reshape(-1).nonzero().squeeze(1)  # [P], centre-major
        offsets = torch.zeros(num_atoms + 1, dtype=torch.int64, device=self.mask.device)
        torch.cumsum(self.mask.sum(dim=1), dim=0, out=offsets[1:])
        return RaggedEdges(
            offsets=offsets,
            centres=torch.div(slots, num_slots, rounding_mode="floor"),
            index=self.index.reshape(-1)[slots],
            vectors=self.vectors.reshape(-1, 3)[slots],
            neighbor_types=self.neighbor_types.reshape(-1)[slots],
        )
