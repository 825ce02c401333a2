"""Load a deployed-model file and evaluate structures with it.

Needs only torch, NumPy, ASE and lamforge's Rust neighbour lists (``lamforge.neighbors``): none of
lamforge's model or training code is imported, so a deployed file runs wherever the wheel's Rust
core and torch are installed.

```python
from lamforge.deploy import DeployedModel

model = DeployedModel("model.pt2")
output = model.evaluate([atoms])        # energy [F], forces [N, 3], virial [F, 3, 3], ...
```
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_numbers

from lamforge.deploy.format import METADATA_NAME, OUTPUT_NAMES, DeployedMetadata
from lamforge.neighbors import batch_dense_neighbor_lists

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(kw_only=True, frozen=True)
class DeployedOutput:
    """Predictions of a deployed model for a batch (shapes as in :mod:`lamforge.deploy.format`).

    Attributes:
        energy: [num_frames] float64 (eV).
        atomic_energies: [num_atoms] float64 (eV).
        forces: [num_atoms, 3] (eV/Å).
        virial: [num_frames, 3, 3] (eV).
        atomic_virial: [num_atoms, 3, 3] (eV).
    """

    energy: torch.Tensor
    atomic_energies: torch.Tensor
    forces: torch.Tensor
    virial: torch.Tensor
    atomic_virial: torch.Tensor


def program_kind(path: str | Path) -> str:
    """``"export"`` or ``"torchscript"``: which loader reads the file.

    Raises:
        ValueError: the file is missing or neither kind of archive.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: deployed model file not found")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        names = []
    if any(name.endswith("/archive_format") for name in names):
        return "export"
    if any("/code/" in name for name in names):
        return "torchscript"
    raise ValueError(
        f"{path}: not a deployed model (neither a torch.export archive nor a TorchScript module); "
        "write one with `lamforge export`"
    )


def load_program(path: str | Path) -> tuple[torch.nn.Module, DeployedMetadata]:
    """The callable program of a deployed-model file and its metadata.

    Raises:
        ValueError: not a deployed model, or one without lamforge metadata.
    """
    kind = program_kind(path)
    extra = {METADATA_NAME: ""}
    if kind == "export":
        with warnings.catch_warnings():
            # torch reads the archive's weights from a read-only buffer and says so; they are
            # constants of the program, never written.
            warnings.filterwarnings("ignore", message="The given buffer is not writable")
            # A file object: torch's loader insists on a ``.pt2`` suffix for paths.
            with open(path, "rb") as handle:
                program = torch.export.load(handle, extra_files=extra).module()
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
            program = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[METADATA_NAME]:
        raise ValueError(f"{path}: a {kind} program without lamforge metadata ({METADATA_NAME})")
    return program, DeployedMetadata.from_json(extra[METADATA_NAME])


class DeployedModel:
    """A deployed model with the input building of lamforge's neighbour lists.

    Args:
        path: a file written by ``lamforge export``.
        num_threads: threads of the neighbour search (0: all cores).

    Attributes:
        metadata: :class:`~lamforge.deploy.format.DeployedMetadata` of the file.
        dtype: the program's floating dtype (positions, cell, forces, virials).
    """

    def __init__(self, path: str | Path, num_threads: int = 0) -> None:
        self.path = Path(path)
        self.program, self.metadata = load_program(path)
        self.dtype = _DTYPES[self.metadata.precision]
        self.num_threads = num_threads
        lookup = np.full(len(atomic_numbers) + 1, -1, dtype=np.int64)
        for position, symbol in enumerate(self.metadata.elements):
            lookup[atomic_numbers[symbol]] = position
        self._type_of_number = lookup

    def __call__(self, *inputs: torch.Tensor) -> DeployedOutput:
        """Runs the program on inputs in its calling convention (see the format module).

        Raises:
            ValueError: a wrong number of inputs, or a neighbour block wider than its cap.
        """
        blocks = self.metadata.neighbor_blocks
        if len(inputs) != 4 + 2 * len(blocks):
            raise ValueError(
                f"expected {4 + 2 * len(blocks)} inputs (positions, atom_types, cell, "
                f"frame_index, then index and shifts of blocks {list(blocks)}), got {len(inputs)}"
            )
        for block, (cutoff, cap) in enumerate(blocks):
            width = inputs[4 + 2 * block].shape[1]
            if width > cap:
                raise ValueError(
                    f"neighbour block {block} (cutoff {cutoff} Å) has {width} slots, more than "
                    f"its cap {cap}: keep the nearest {cap}"
                )
        return DeployedOutput(**dict(zip(OUTPUT_NAMES, self.program(*inputs), strict=True)))

    def atom_types(self, numbers: np.ndarray) -> np.ndarray:
        """Indices into the element list of atomic numbers.

        Raises:
            ValueError: naming the elements the model does not know.
        """
        numbers = np.asarray(numbers, dtype=np.int64)
        in_range = (numbers >= 0) & (numbers < len(self._type_of_number))
        types = np.where(in_range, self._type_of_number[np.where(in_range, numbers, 0)], -1)
        if (types < 0).any():
            unknown = sorted({int(number) for number in numbers[types < 0]})
            raise ValueError(
                f"atomic numbers {unknown} are not elements of the model "
                f"{list(self.metadata.elements)}"
            )
        return types

    def inputs(self, frames: Sequence[Atoms]) -> tuple[torch.Tensor, ...]:
        """The program inputs of a batch of structures (neighbour lists from the Rust core)."""
        if not frames:
            raise ValueError("a deployed model needs at least one structure")
        offsets = np.concatenate([[0], np.cumsum([len(atoms) for atoms in frames])])
        pbcs = np.stack([np.asarray(atoms.pbc, dtype=bool) for atoms in frames])
        # Non-periodic frames get a zero cell: their shifts are all zero anyway.
        cells = np.stack([atoms.cell.array for atoms in frames]) * pbcs.any(axis=1)[:, None, None]
        positions = np.concatenate([atoms.positions for atoms in frames])
        blocks = batch_dense_neighbor_lists(
            positions, offsets, cells, pbcs, self.metadata.neighbor_blocks, self.num_threads
        )
        tensors = [
            torch.as_tensor(positions, dtype=self.dtype),
            torch.from_numpy(self.atom_types(np.concatenate([a.numbers for a in frames]))),
            torch.as_tensor(cells, dtype=self.dtype),
            torch.repeat_interleave(torch.arange(len(frames)), torch.from_numpy(np.diff(offsets))),
        ]
        for block in blocks:
            # Slots empty for every atom are cut off (exact: the program pads the blocks that
            # need their full width, the others run faster on the used width).
            used = np.flatnonzero((block.index >= 0).any(axis=0))
            width = int(used[-1]) + 1 if used.size else 1
            tensors += [
                torch.from_numpy(np.ascontiguousarray(block.index[:, :width])),
                torch.from_numpy(np.ascontiguousarray(block.shifts[:, :width])),
            ]
        return tuple(tensors)

    def evaluate(self, frames: Atoms | Sequence[Atoms]) -> DeployedOutput:
        """Energy, forces and virials of one structure or a batch of them."""
        if isinstance(frames, Atoms):
            frames = [frames]
        return self(*self.inputs(frames))
