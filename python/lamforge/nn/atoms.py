"""Model inputs from structures, with neighbour lists from the Rust core.

The one place that turns structures into a :class:`~lamforge.nn.inputs.ModelInput`: positions
concatenated over frames, element indices of the model's element list, cells (zero for
non-periodic frames) and one dense, distance-sorted, capped neighbour block per
``(cutoff, max_neighbors)`` computed by ``lamforge.neighbors`` in one search per frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms

from lamforge.neighbors import dense_neighbor_lists
from lamforge.nn.inputs import ModelInput, NeighborList, atom_types_from_numbers


def model_input_from_arrays(
    positions: np.ndarray,
    atomic_numbers: np.ndarray,
    cells: np.ndarray,
    pbcs: np.ndarray,
    atom_offsets: np.ndarray,
    elements: Sequence[str],
    specs: Sequence[tuple[float, int]],
    dtype: torch.dtype = torch.float64,
    num_threads: int = 0,
) -> ModelInput:
    """Builds the model input of a flat batch of frames.

    Args:
        positions: [num_atoms, 3] Å, frames concatenated.
        atomic_numbers: [num_atoms].
        cells: [num_frames, 3, 3] lattice vectors as rows (ignored for non-periodic frames).
        pbcs: [num_frames, 3] periodicity along each lattice vector.
        atom_offsets: [num_frames + 1] first atom of each frame, then the total.
        elements: The model's element list (``model.elements``).
        specs: Neighbour blocks ``(cutoff, max_neighbors)``; a model derives smaller blocks from
            larger ones, so its largest block (or every block it reads) is enough.
        dtype: Floating dtype of positions and cell.
        num_threads: Threads of the neighbour search (0: all cores).

    Raises:
        ValueError: an element the model does not know, or bad geometry (from the search).
    """
    num_frames = len(atom_offsets) - 1
    if num_frames < 1:
        raise ValueError("a model input needs at least one frame")
    indices: list[list[np.ndarray]] = [[] for _ in specs]
    shifts: list[list[np.ndarray]] = [[] for _ in specs]
    cells = np.array(cells, dtype=np.float64).reshape(num_frames, 3, 3)
    for frame in range(num_frames):
        start, stop = int(atom_offsets[frame]), int(atom_offsets[frame + 1])
        pbc = tuple(bool(p) for p in pbcs[frame])
        if not any(pbc):
            cells[frame] = 0.0
        cell = cells[frame] if any(pbc) else None
        blocks = dense_neighbor_lists(
            positions[start:stop], cell, pbc, specs=list(specs), num_threads=num_threads
        )
        for position, block in enumerate(blocks):
            indices[position].append(np.where(block.index >= 0, block.index + start, -1))
            shifts[position].append(block.shifts)
    return ModelInput(
        positions=torch.as_tensor(np.asarray(positions), dtype=dtype),
        atom_types=atom_types_from_numbers(np.asarray(atomic_numbers, dtype=np.int64), elements),
        cell=torch.as_tensor(cells, dtype=dtype),
        frame_index=torch.repeat_interleave(
            torch.arange(num_frames), torch.as_tensor(np.diff(atom_offsets))
        ),
        neighbors=tuple(
            NeighborList(
                cutoff=float(cutoff),
                max_neighbors=int(max_neighbors),
                index=torch.from_numpy(np.concatenate(indices[position])),
                shifts=torch.from_numpy(np.concatenate(shifts[position])),
            )
            for position, (cutoff, max_neighbors) in enumerate(specs)
        ),
    )


def model_input_from_atoms(
    frames: Sequence[Atoms],
    elements: Sequence[str],
    specs: Sequence[tuple[float, int]],
    dtype: torch.dtype = torch.float64,
    num_threads: int = 0,
) -> ModelInput:
    """Builds the model input of ASE structures (see :func:`model_input_from_arrays`)."""
    if not frames:
        raise ValueError("model_input_from_atoms needs at least one frame")
    return model_input_from_arrays(
        positions=np.concatenate([atoms.positions for atoms in frames]),
        atomic_numbers=np.concatenate([atoms.numbers for atoms in frames]),
        cells=np.stack([atoms.cell.array for atoms in frames]),
        pbcs=np.stack([atoms.pbc for atoms in frames]),
        atom_offsets=np.concatenate([[0], np.cumsum([len(atoms) for atoms in frames])]),
        elements=elements,
        specs=specs,
        dtype=dtype,
        num_threads=num_threads,
    )
