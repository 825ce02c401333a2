"""The function that a deployed model traces: flat tensors in, energy, forces and virials out.

:class:`EnergyProgram` wraps one head of a lamforge model (DPA-2 or se_e2_a) behind the calling
convention of :mod:`lamforge.deploy.format`. It is written to trace with symbolic shapes:

* the model runs with ``static_shapes`` set on its descriptor (no slot trimming, no three-body
  grouping, no per-element gathering: every tensor shape follows the inputs' shapes, never their
  values), which gives the same numbers as the eager model;
* neighbour blocks have at most their cap of slots; the blocks that DPA-2 may trim exactly
  (those whose result ignores trailing empty slots: ``exact_without_empty_slots``) run on the
  slots given, so a runtime that passes only the used width gets the speed of the eager model's
  trimming; the other blocks (se_e2_a, which averages over the slots; repinit with a non-zero
  mean) get empty slots appended up to the cap, by concatenating and slicing, which needs no
  comparison of the input width with the cap;
* forces and virials come from one ``torch.autograd.grad`` of the energy with respect to the edge
  vectors, shared with eager evaluation (``lamforge.nn.forces.edge_derivatives``); tracing with
  ``make_fx`` records the backward operations as ordinary graph nodes.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from lamforge import kernels
from lamforge.nn.forces import edge_derivatives
from lamforge.nn.geometry import BlockGeometry
from lamforge.nn.inputs import edge_vectors
from lamforge.nn.model import DTYPES, block_geometry, empty_slot_types, frame_sum


def cast_model(model: nn.Module, precision: str) -> nn.Module:
    """The same model in ``precision`` (energy biases stay float64); ``model`` if it already is."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}")
    if model.config.precision == precision:
        return model
    cast = type(model)(dataclasses.replace(model.config, precision=precision))
    cast.load_state_dict(model.state_dict(), strict=True)
    return cast


def neighbor_blocks(model: nn.Module) -> tuple[tuple[float, int], ...]:
    """The distinct ``(cutoff, max_neighbors)`` the model reads, largest cutoff first."""
    specs = set(model.descriptor.neighbor_specs().values())
    return tuple(sorted(specs, reverse=True))


def _pad_slots(values: torch.Tensor, width: int, fill: int | torch.Tensor) -> torch.Tensor:
    """``values`` [N, K, ...] (K <= width) padded with ``fill`` to [N, width, ...].

    Concatenating ``width`` slots and slicing needs no comparison of K with ``width`` (which a
    symbolic trace would have to guard on).
    """
    shape = (values.shape[0], width, *values.shape[2:])
    if isinstance(fill, torch.Tensor):  # one value per row
        padding = fill.reshape(-1, *([1] * (len(shape) - 1))).expand(shape).to(values.dtype)
    else:
        padding = values.new_full(shape, fill)
    return torch.cat([values, padding], dim=1)[:, :width]


def _padded(geometry: BlockGeometry, width: int, empty_slot_type: torch.Tensor) -> BlockGeometry:
    """``geometry`` with empty slots appended up to ``width`` (differentiable in the vectors)."""
    return BlockGeometry(
        index=_pad_slots(geometry.index, width, 0),
        mask=_pad_slots(geometry.mask, width, False),
        vectors=_pad_slots(geometry.vectors, width, 0),
        neighbor_types=_pad_slots(geometry.neighbor_types, width, empty_slot_type),
    )


class EnergyProgram(nn.Module):
    """One head of a model as a function of flat tensors (see :mod:`lamforge.deploy.format`).

    Args:
        model: a DPA-2 or se_e2_a model; it is copied, and the copy is put in eval mode with
            ``static_shapes`` set on every module that has the switch.
        head: the head to evaluate (``None`` for a single-head model).

    Raises:
        ValueError, KeyError: ``head`` is missing on a multi-head model, or not a head of it.
    """

    def __init__(self, model: nn.Module, head: str | None = None) -> None:
        super().__init__()
        model.head(head)  # fails early, naming the heads
        self.head_name = head if head is not None else next(iter(model.heads))
        model = copy.deepcopy(model).eval()
        # Only the chosen head is kept: the file holds nothing the program does not read.
        for name in list(model.heads):
            if name != self.head_name:
                del model.heads[name]
        for module in model.modules():
            if hasattr(module, "static_shapes"):
                module.static_shapes = True
        model.requires_grad_(False)
        self.model = model
        self.blocks = neighbor_blocks(model)
        self.roles = model.descriptor.neighbor_specs()
        # Roles whose result does not depend on trailing empty slots (DPA2Descriptor's trimming
        # rule) run on the slots given; the others get their block padded to the cap.
        statistics_blocks = model.descriptor.statistics_blocks()
        self.trimmable = {
            role: hasattr(statistics_blocks[role], "exact_without_empty_slots")
            and statistics_blocks[role].exact_without_empty_slots()
            for role in self.roles
        }

    def forward(
        self,
        positions: torch.Tensor,
        atom_types: torch.Tensor,
        cell: torch.Tensor,
        frame_index: torch.Tensor,
        *neighbors: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """Energy, atomic energies, forces, virial, atomic virial (shapes in the format module).

        Args:
            positions: [N, 3].
            atom_types: [N] int64.
            cell: [F, 3, 3].
            frame_index: [N] int64.
            *neighbors: ``index_b`` [N, K_b], ``shifts_b`` [N, K_b, 3] for each block in turn.
        """
        if len(neighbors) != 2 * len(self.blocks):
            raise ValueError(
                f"expected index and shifts of {len(self.blocks)} neighbour blocks "
                f"{list(self.blocks)}, got {len(neighbors)} tensors"
            )
        model = self.model
        num_frames = cell.shape[0]
        empty_slot_type = empty_slot_types(atom_types, frame_index, num_frames)
        with torch.enable_grad(), kernels.use_fused(False):
            narrow, padded = {}, {}
            for block, (cutoff, cap) in enumerate(self.blocks):
                # At most ``cap`` slots: the calling convention, which torch.export checks at run
                # time (cutting wider inputs here would make the tracer guard on the width).
                index, shifts = neighbors[2 * block], neighbors[2 * block + 1]
                vectors = edge_vectors(positions, cell, frame_index, index, shifts).detach()
                # Neighbours beyond this block's cutoff are empty slots here (a list built with
                # a larger cutoff may stand in), as in ModelInput.neighbor_list.
                too_far = torch.linalg.norm(vectors, dim=-1) > cutoff
                index = torch.where(too_far, -1, index)
                vectors.requires_grad_(True)
                geometry = block_geometry(vectors, index, atom_types, empty_slot_type)
                narrow[cutoff, cap] = geometry
                padded[cutoff, cap] = _padded(geometry, cap, empty_slot_type)
            geometries = {
                role: (narrow if self.trimmable[role] else padded)[spec]
                for role, spec in self.roles.items()
            }
            atomic_energies = model.atomic_energies_from_geometry(
                geometries, atom_types, self.head_name
            )
            energy = frame_sum(atomic_energies, frame_index, num_frames)
            distinct = list(narrow.values())
            gradients = torch.autograd.grad(
                energy.sum(), [geometry.vectors for geometry in distinct], allow_unused=True
            )
        forces, atomic_virial = edge_derivatives(distinct, gradients, forces=True, virial=True)
        # A model that reads no edge at all (impossible for lamforge's blocks) would give None.
        assert forces is not None and atomic_virial is not None
        virial = frame_sum(atomic_virial, frame_index, num_frames)
        return (
            energy.detach(),
            atomic_energies.detach(),
            forces.detach(),
            virial.detach(),
            atomic_virial.detach(),
        )
