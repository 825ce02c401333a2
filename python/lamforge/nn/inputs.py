"""Typed model input: a flat batch of frames with dense, distance-sorted neighbour matrices.

Convention (shared with ``lamforge.neighbors.dense_neighbor_lists``): for centre ``i`` and slot
``k`` with ``j = index[i, k] >= 0``,

    r_ij = positions[j] - positions[i] + shifts[i, k] @ cell[frame_index[i]]

``index`` holds GLOBAL flat atom indices (into the whole batch, never across frames), padded with
-1; slots are sorted by distance (nearest first) and capped at ``max_neighbors``. Periodic images
enter only through ``shifts``: there are no ghost atoms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from ase.data import atomic_numbers, chemical_symbols


@dataclass(kw_only=True, frozen=True)
class NeighborList:
    """One dense neighbour block of a batch.

    Attributes:
        cutoff: the cutoff radius the block was built with (Å).
        max_neighbors: number of slots per centre (the cap).
        index: [num_atoms, max_neighbors] int64 global neighbour indices, -1 for empty slots.
        shifts: [num_atoms, max_neighbors, 3] integer periodic image indices (any int/float dtype).
    """

    cutoff: float
    max_neighbors: int
    index: torch.Tensor
    shifts: torch.Tensor

    def __post_init__(self) -> None:
        num_atoms = self.index.shape[0]
        if self.index.shape != (num_atoms, self.max_neighbors):
            raise ValueError(
                f"neighbour block (cutoff {self.cutoff}): index has shape "
                f"{tuple(self.index.shape)}, expected ({num_atoms}, {self.max_neighbors})"
            )
        if self.shifts.shape != (num_atoms, self.max_neighbors, 3):
            raise ValueError(
                f"neighbour block (cutoff {self.cutoff}): shifts has shape "
                f"{tuple(self.shifts.shape)}, expected ({num_atoms}, {self.max_neighbors}, 3)"
            )


@dataclass(kw_only=True, frozen=True)
class ModelInput:
    """A flat batch of frames; atoms of one frame are contiguous and frames are in order.

    Attributes:
        positions: [num_atoms, 3] Cartesian positions (Å).
        atom_types: [num_atoms] int64 indices into the model's element list.
        cell: [num_frames, 3, 3] cell vectors as rows (zeros for non-periodic frames).
        frame_index: [num_atoms] int64 frame of each atom, non-decreasing.
        neighbors: dense neighbour blocks; the model picks or derives the blocks it needs.
    """

    positions: torch.Tensor
    atom_types: torch.Tensor
    cell: torch.Tensor
    frame_index: torch.Tensor
    neighbors: tuple[NeighborList, ...]

    def __post_init__(self) -> None:
        num_atoms = self.positions.shape[0]
        if self.positions.shape != (num_atoms, 3):
            raise ValueError(f"positions must be [num_atoms, 3], got {tuple(self.positions.shape)}")
        if self.atom_types.shape != (num_atoms,) or self.frame_index.shape != (num_atoms,):
            raise ValueError(
                f"atom_types {tuple(self.atom_types.shape)} and frame_index "
                f"{tuple(self.frame_index.shape)} must both be [{num_atoms}]"
            )
        if self.cell.ndim != 3 or self.cell.shape[1:] != (3, 3):
            raise ValueError(f"cell must be [num_frames, 3, 3], got {tuple(self.cell.shape)}")
        if num_atoms and bool((self.frame_index[1:] < self.frame_index[:-1]).any()):
            raise ValueError("frame_index must be non-decreasing (atoms of a frame contiguous)")
        if not self.neighbors:
            raise ValueError("ModelInput needs at least one neighbour block")
        for block in self.neighbors:
            if block.index.shape[0] != num_atoms:
                raise ValueError(
                    f"neighbour block (cutoff {block.cutoff}) has {block.index.shape[0]} centres "
                    f"for {num_atoms} atoms"
                )

    @property
    def num_atoms(self) -> int:
        """Atoms in the batch."""
        return self.positions.shape[0]

    @property
    def num_frames(self) -> int:
        """Frames in the batch."""
        return self.cell.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move to ``device``; ``dtype`` casts the floating-point fields (positions, cell)."""
        blocks = tuple(
            dataclasses.replace(block, index=block.index.to(device), shifts=block.shifts.to(device))
            for block in self.neighbors
        )
        return ModelInput(
            positions=self.positions.to(device=device, dtype=dtype),
            atom_types=self.atom_types.to(device),
            cell=self.cell.to(device=device, dtype=dtype),
            frame_index=self.frame_index.to(device),
            neighbors=blocks,
        )

    def frames(self, start: int, stop: int) -> ModelInput:
        """The sub-batch of frames ``start`` to ``stop - 1``, neighbour indices rebased to it.

        Frames never share neighbours (an index always points into the centre's own frame), so
        a frame range is a complete, independent batch.
        """
        if not 0 <= start < stop <= self.num_frames:
            raise ValueError(
                f"frame range [{start}, {stop}) is outside the batch's {self.num_frames} frames"
            )
        atoms = torch.searchsorted(
            self.frame_index, torch.tensor([start, stop], device=self.frame_index.device)
        ).tolist()
        first, last = atoms
        blocks = tuple(
            dataclasses.replace(
                block,
                index=torch.where(
                    block.index[first:last] >= 0, block.index[first:last] - first, -1
                ),
                shifts=block.shifts[first:last],
            )
            for block in self.neighbors
        )
        return ModelInput(
            positions=self.positions[first:last],
            atom_types=self.atom_types[first:last],
            cell=self.cell[start:stop],
            frame_index=self.frame_index[first:last] - start,
            neighbors=blocks,
        )

    def neighbor_list(self, cutoff: float, max_neighbors: int) -> NeighborList:
        """The block for ``(cutoff, max_neighbors)``, derived from a larger one if needed.

        Derivation keeps the first ``max_neighbors`` slots of a distance-sorted block with a cutoff
        and a cap at least as large and empties the slots beyond ``cutoff``: deepmd-kit's
        ``build_multiple_neighbor_list``, i.e. "the nearest ``max_neighbors`` within ``cutoff``".
        """
        for block in self.neighbors:
            if block.cutoff == cutoff and block.max_neighbors == max_neighbors:
                return block
        parents = [
            block
            for block in self.neighbors
            if block.cutoff >= cutoff and block.max_neighbors >= max_neighbors
        ]
        if not parents:
            have = [(block.cutoff, block.max_neighbors) for block in self.neighbors]
            raise ValueError(
                f"no neighbour block covers cutoff {cutoff} with {max_neighbors} neighbours; "
                f"the input has (cutoff, max_neighbors) = {have}"
            )
        parent = min(parents, key=lambda block: (block.cutoff, block.max_neighbors))
        index = parent.index[:, :max_neighbors]
        shifts = parent.shifts[:, :max_neighbors]
        with torch.no_grad():
            vectors = edge_vectors(self.positions, self.cell, self.frame_index, index, shifts)
            too_far = torch.linalg.norm(vectors, dim=-1) > cutoff
        index = torch.where(too_far | (index < 0), -1, index)
        return NeighborList(cutoff=cutoff, max_neighbors=max_neighbors, index=index, shifts=shifts)


def edge_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    frame_index: torch.Tensor,
    index: torch.Tensor,
    shifts: torch.Tensor,
) -> torch.Tensor:
    """``r_ij = positions[j] - positions[i] + shifts @ cell[frame_i]``; empty slots give garbage.

    Args:
        positions: [num_atoms, 3].
        cell: [num_frames, 3, 3].
        frame_index: [num_atoms].
        index: [num_atoms, max_neighbors], -1 for empty slots.
        shifts: [num_atoms, max_neighbors, 3].

    Returns:
        [num_atoms, max_neighbors, 3]; callers must mask the empty slots.
    """
    neighbor_positions = positions[index.clamp(min=0)]
    offsets = torch.einsum("iks,isc->ikc", shifts.to(positions.dtype), cell[frame_index])
    return neighbor_positions - positions.unsqueeze(1) + offsets


def atom_types_from_numbers(numbers: Sequence[int] | torch.Tensor, elements: Sequence[str]):
    """Map atomic numbers onto indices into a model's element list.

    Raises:
        ValueError: naming every element the model does not know.
    """
    numbers = torch.as_tensor(numbers, dtype=torch.int64)
    lookup = torch.full((len(chemical_symbols),), -1, dtype=torch.int64)
    for position, symbol in enumerate(elements):
        if symbol not in atomic_numbers:
            raise ValueError(f"model element list contains {symbol!r}, not a chemical symbol")
        lookup[atomic_numbers[symbol]] = position
    if bool(((numbers < 0) | (numbers >= len(chemical_symbols))).any()):
        raise ValueError(f"atomic numbers out of range 0..118: {numbers.unique().tolist()}")
    types = lookup[numbers]
    if bool((types < 0).any()):
        unknown = sorted({chemical_symbols[int(z)] for z in numbers[types < 0]})
        raise ValueError(
            f"the model does not know element(s) {unknown}; its elements are {list(elements)}"
        )
    return types
