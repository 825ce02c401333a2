"""A slow, simple reference for the dense neighbour layout of ``lamforge.nn.ModelInput``.

Built on ``ase.neighborlist.neighbor_list("ijdS")``: for every atom, neighbours within the cutoff
sorted by (distance, neighbour index, shift), capped at ``max_neighbors`` and padded with -1, with
``r_ij = positions[j] - positions[i] + S @ cell``. Indices are global over the batch. This is the
oracle for tests; production code uses the Rust neighbour search with the same layout.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from lamforge.nn.inputs import ModelInput, NeighborList, atom_types_from_numbers


def dense_neighbors(
    atoms: Atoms, cutoff: float, max_neighbors: int
) -> tuple[np.ndarray, np.ndarray]:
    """Dense neighbours of one frame.

    Returns:
        index [num_atoms, max_neighbors] int64 (-1 padded, frame-local) and shifts
        [num_atoms, max_neighbors, 3] int64.
    """
    num_atoms = len(atoms)
    index = np.full((num_atoms, max_neighbors), -1, dtype=np.int64)
    shifts = np.zeros((num_atoms, max_neighbors, 3), dtype=np.int64)
    centres, neighbours, distances, images = neighbor_list("ijdS", atoms, cutoff)
    order = np.lexsort((images[:, 2], images[:, 1], images[:, 0], neighbours, distances, centres))
    centres, neighbours, images = centres[order], neighbours[order], images[order]
    starts = np.searchsorted(centres, np.arange(num_atoms))
    ends = np.searchsorted(centres, np.arange(num_atoms), side="right")
    for atom in range(num_atoms):
        count = min(ends[atom] - starts[atom], max_neighbors)
        index[atom, :count] = neighbours[starts[atom] : starts[atom] + count]
        shifts[atom, :count] = images[starts[atom] : starts[atom] + count]
    return index, shifts


def model_input(
    frames: Sequence[Atoms],
    elements: Sequence[str],
    specs: Sequence[tuple[float, int]] = ((6.0, 120), (4.0, 48)),
    dtype: torch.dtype = torch.float64,
) -> ModelInput:
    """A :class:`ModelInput` for ASE frames with one dense block per (cutoff, max_neighbors)."""
    offsets = np.cumsum([0] + [len(atoms) for atoms in frames])
    blocks = []
    for cutoff, max_neighbors in specs:
        indices, shifts = [], []
        for frame, atoms in enumerate(frames):
            index, shift = dense_neighbors(atoms, cutoff, max_neighbors)
            indices.append(np.where(index >= 0, index + offsets[frame], -1))
            shifts.append(shift)
        blocks.append(
            NeighborList(
                cutoff=cutoff,
                max_neighbors=max_neighbors,
                index=torch.from_numpy(np.concatenate(indices)),
                shifts=torch.from_numpy(np.concatenate(shifts)),
            )
        )
    # Non-periodic directions never get a non-zero shift, so the full cell can be passed on.
    cells = [atoms.cell.array for atoms in frames]
    return ModelInput(
        positions=torch.from_numpy(np.concatenate([a.positions for a in frames])).to(dtype),
        atom_types=atom_types_from_numbers(np.concatenate([a.numbers for a in frames]), elements),
        cell=torch.from_numpy(np.stack(cells)).to(dtype),
        frame_index=torch.from_numpy(
            np.concatenate([np.full(len(a), k) for k, a in enumerate(frames)])
        ),
        neighbors=tuple(blocks),
    )
