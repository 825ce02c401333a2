"""``Batch``: the collated frames of one training step, as torch tensors.

Frames are concatenated atom by atom (no padding of atoms): frame ``f`` owns the flat atoms
``atom_offsets[f]:atom_offsets[f + 1]``. Neighbour matrices are dense and padded per atom, with
*global* flat atom indices, so that one gather serves the whole batch::

    r_ij = positions[j] - positions[i] + shifts_ij @ cell[atom_frame[i]]

Missing labels are zero with their mask false (a masked loss never multiplies a NaN).
The tensors share the memory that the Rust loader allocated (no copy is made on the way).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch


@dataclass(frozen=True, kw_only=True)
class NeighborList:
    """Dense neighbour matrices of one cutoff, over the atoms of a batch.

    Attributes:
        name: Name of the neighbour spec (``repinit``, ``repformer``, ...).
        cutoff: Pairs closer than this, Å.
        max_neighbors: Columns of the matrices (the cap).
        index: [num_atoms, max_neighbors] int64 global flat index of each neighbour, sorted by
            distance; ``-1`` pads a row.
        shifts: [num_atoms, max_neighbors, 3] int64 integer image shifts (0 in padding).
        num_dropped: [num_frames] int64 pairs within the cutoff that did not fit in
            ``max_neighbors``, per frame (0 when nothing was truncated).
    """

    name: str
    cutoff: float
    max_neighbors: int
    index: torch.Tensor
    shifts: torch.Tensor
    num_dropped: torch.Tensor

    def mask(self) -> torch.Tensor:
        """[num_atoms, max_neighbors] bool: true where a slot holds a neighbour."""
        return self.index >= 0


_TENSOR_FIELDS = (
    "dataset_id",
    "frame_id",
    "atom_offsets",
    "atom_frame",
    "atom_dataset_id",
    "positions",
    "atomic_numbers",
    "cell",
    "pbc",
    "energy",
    "has_energy",
    "forces",
    "has_forces",
    "virial",
    "has_virial",
)


@dataclass(frozen=True, kw_only=True)
class Batch:
    """The frames of one step, flat over atoms.

    Attributes:
        num_frames: Number of frames ``F``.
        num_atoms: Number of atoms ``N`` over all frames.
        dataset_names: Names of the loader's datasets; ``dataset_id`` indexes this tuple.
        dataset_id: [F] int64 dataset (task) of each frame.
        frame_id: [F] int64 frame id inside its dataset.
        atom_offsets: [F + 1] int64 first flat atom of each frame, then ``N``.
        atom_frame: [N] int64 frame of each atom (for scatter sums of atomic energies).
        atom_dataset_id: [N] int64 dataset (task) of each atom.
        positions: [N, 3] float64 Cartesian positions, Å.
        atomic_numbers: [N] int64 atomic numbers.
        cell: [F, 3, 3] float64 lattice vectors as rows, Å (zeros for non-periodic frames).
        pbc: [F, 3] bool periodicity along each lattice vector.
        energy: [F] float64 total energy, eV (0 where missing).
        has_energy: [F] bool.
        forces: [N, 3] float64 forces, eV/Å (0 where missing).
        has_forces: [F] bool (per frame: a frame has forces on all its atoms or none).
        virial: [F, 3, 3] float64 virial, eV (0 where missing).
        has_virial: [F] bool.
        neighbors: One ``NeighborList`` per neighbour spec of the loader, in its order (empty
            for an arrays-only loader).
    """

    num_frames: int
    num_atoms: int
    dataset_names: tuple[str, ...]
    dataset_id: torch.Tensor
    frame_id: torch.Tensor
    atom_offsets: torch.Tensor
    atom_frame: torch.Tensor
    atom_dataset_id: torch.Tensor
    positions: torch.Tensor
    atomic_numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    energy: torch.Tensor
    has_energy: torch.Tensor
    forces: torch.Tensor
    has_forces: torch.Tensor
    virial: torch.Tensor
    has_virial: torch.Tensor
    neighbors: tuple[NeighborList, ...] = ()

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, Any],
        *,
        dataset_names: tuple[str, ...],
        neighbor_specs: tuple[tuple[str, float, int], ...],
    ) -> Batch:
        """Wraps the NumPy arrays of the Rust loader as tensors (``torch.from_numpy``: no copy).

        Args:
            arrays: What ``lamforge._core.Loader.next`` returns.
            dataset_names: The loader's dataset names.
            neighbor_specs: ``(name, cutoff, max_neighbors)`` of each neighbour list.
        """
        tensors = {name: torch.from_numpy(arrays[name]) for name in _TENSOR_FIELDS}
        neighbors = tuple(
            NeighborList(
                name=name,
                cutoff=cutoff,
                max_neighbors=max_neighbors,
                index=torch.from_numpy(index),
                shifts=torch.from_numpy(shifts),
                num_dropped=torch.from_numpy(dropped),
            )
            for (name, cutoff, max_neighbors), (index, shifts, dropped) in zip(
                neighbor_specs, arrays["neighbors"], strict=True
            )
        )
        return cls(
            num_frames=int(arrays["num_frames"]),
            num_atoms=int(arrays["num_atoms"]),
            dataset_names=dataset_names,
            neighbors=neighbors,
            **tensors,
        )

    def neighbor_list(self, name: str) -> NeighborList:
        """The neighbour list of spec ``name``.

        Raises:
            KeyError: naming the specs the batch has.
        """
        for neighbors in self.neighbors:
            if neighbors.name == name:
                return neighbors
        raise KeyError(
            f"no neighbour list {name!r}; the batch has {[n.name for n in self.neighbors]}"
        )

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """The batch with every tensor moved to ``device``."""
        moved = {
            field.name: getattr(self, field.name).to(device, non_blocking=non_blocking)
            for field in fields(self)
            if isinstance(getattr(self, field.name), torch.Tensor)
        }
        neighbors = tuple(
            replace(
                n,
                index=n.index.to(device, non_blocking=non_blocking),
                shifts=n.shifts.to(device, non_blocking=non_blocking),
                num_dropped=n.num_dropped.to(device, non_blocking=non_blocking),
            )
            for n in self.neighbors
        )
        return replace(self, neighbors=neighbors, **moved)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory (``torch.utils.data.DataLoader(pin_memory=True)``)."""
        pinned = {
            field.name: getattr(self, field.name).pin_memory()
            for field in fields(self)
            if isinstance(getattr(self, field.name), torch.Tensor)
        }
        neighbors = tuple(
            replace(
                n,
                index=n.index.pin_memory(),
                shifts=n.shifts.pin_memory(),
                num_dropped=n.num_dropped.pin_memory(),
            )
            for n in self.neighbors
        )
        return replace(self, neighbors=neighbors, **pinned)

    def frame_slice(self, frame: int) -> slice:
        """The flat atoms of frame ``frame``."""
        return slice(int(self.atom_offsets[frame]), int(self.atom_offsets[frame + 1]))
