"""The deployed-model file: its calling convention and the metadata stored inside it.

A deployed model (written by ``lamforge export``, read by :mod:`lamforge.deploy.runtime`) is one
file holding a traced program of one energy head plus a JSON document ``lamforge.json``: a
``torch.export`` archive (``.pt2``, read by ``torch.export.load``) or a TorchScript module (read by
``torch.jit.load``); both keep the JSON as an extra file of the archive.

Inputs, positional, in this order (N atoms, F frames, K_b slots of block b; all dynamic):

    positions     [N, 3]        model precision, Å; atoms of a frame contiguous, frames in order
    atom_types    [N]           int64 indices into ``elements``
    cell          [F, 3, 3]     model precision, lattice vectors as rows (zeros when non-periodic)
    frame_index   [N]           int64 frame of each atom, non-decreasing
    then per neighbour block b of ``neighbor_blocks`` (largest cutoff first):
    index_b       [N, K_b]      int64 global neighbour indices, -1 for empty slots
    shifts_b      [N, K_b, 3]   int64 periodic image indices: r_ij = x_j - x_i + shifts @ cell

Each block must be sorted by distance (nearest first) and hold the nearest neighbours within its
cutoff up to its cap, as ``lamforge.neighbors.dense_neighbor_lists`` gives. K_b <= max_neighbors:
slots that are empty for every atom may be left out (``lamforge.deploy`` passes only the used
width, which is faster and exact; blocks that need their full width are padded inside). A
neighbour beyond the block's cutoff counts as an empty slot, so the nearest ``max_neighbors`` of
a list with a larger cutoff (e.g. the first ``max_neighbors`` columns of the first block) may
stand in for a block. A torch.export program refuses K_b > max_neighbors; a TorchScript program
does not check it (``lamforge.deploy`` checks for both).

Outputs, a tuple in this order:

    energy            [F]         float64, eV
    atomic_energies   [N]         float64, eV
    forces            [N, 3]      model precision, eV/Å (-dE/dx by autograd inside the program)
    virial            [F, 3, 3]   model precision, eV, W[k, l] = Σ F_k X_l (deepmd-kit's sign)
    atomic_virial     [N, 3, 3]   model precision, eV

This module imports nothing from lamforge: the runtime and the exporter both read it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

#: Name of the JSON document inside the file.
METADATA_NAME = "lamforge.json"
#: Version tag of this calling convention.
FORMAT = "lamforge.deployed/1"
#: The program kinds: a ``torch.export`` archive or a TorchScript module.
PROGRAM_KINDS = ("export", "torchscript")
OUTPUT_NAMES = ("energy", "atomic_energies", "forces", "virial", "atomic_virial")


@dataclass(kw_only=True, frozen=True)
class DeployedMetadata:
    """What a consumer needs to build a deployed model's inputs.

    Attributes:
        format: :data:`FORMAT`.
        program: ``"export"`` or ``"torchscript"``.
        model_type: ``"dpa2"`` or ``"se_e2_a"``.
        elements: the element list (deepmd-kit ``type_map``); ``atom_types`` index into it.
        neighbor_blocks: ``(cutoff Å, max_neighbors)`` of each neighbour-block input, in order.
        head: the energy head the program evaluates.
        heads: every head of the source model (only ``head`` is in the file).
        precision: ``"float64"`` or ``"float32"`` (positions, cell, forces, virials).
        lamforge_version: version of lamforge that wrote the file.
        torch_version: version of torch that wrote the file.
        config: the source model's configuration (as ``config.to_dict()``).
    """

    format: str
    program: str
    model_type: str
    elements: tuple[str, ...]
    neighbor_blocks: tuple[tuple[float, int], ...]
    head: str
    heads: tuple[str, ...]
    precision: str
    lamforge_version: str
    torch_version: str
    config: dict[str, Any]

    def to_json(self) -> str:
        """The JSON document stored in the file."""
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeployedMetadata:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError: not a document of this format.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"expected deployed-model metadata {FORMAT!r}, found {found!r}")
        data["elements"] = tuple(data["elements"])
        data["heads"] = tuple(data["heads"])
        data["neighbor_blocks"] = tuple(
            (float(cutoff), int(cap)) for cutoff, cap in data["neighbor_blocks"]
        )
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})
