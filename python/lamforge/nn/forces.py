"""Forces, virial and per-atom virial from the energy by autograd.

The energy depends on positions only through the edge vectors r_e = x_j - x_i + S_e·cell of the
neighbour blocks (no ghost atoms). With g_e = ∂E/∂r_e (one autograd call over all blocks):

    F_a = -∂E/∂x_a = Σ_{e: centre a} g_e - Σ_{e: neighbour a} g_e

Virial, deepmd-kit's convention W = Σ_ext F ⊗ X over extended (image) atoms, W[k, l] = Σ F_k X_l.
Every image position is X = x + S·cell, so Σ_ext F ⊗ X = -Σ_e g_e ⊗ r_e:

    W = -Σ_e g_e ⊗ r_e            ([num_frames, 3, 3], edges grouped by the centre's frame)

Equivalently, straining positions and cell by x -> x(1 + ε) (row vectors) gives W = -(∂E/∂ε)ᵀ;
``lamforge.testing.physics`` checks this against finite differences of the strain. The per-atom
virial splits each edge's term equally between its two atoms (it sums to W; deepmd-kit's per-atom
split differs, only totals are comparable).

For training on forces pass ``create_graph=True``: the returned forces stay differentiable with
respect to the parameters (double backward).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lamforge.nn.engine import input_gradients_only, single_input_backward
from lamforge.nn.geometry import BlockGeometry
from lamforge.nn.inputs import ModelInput
from lamforge.nn.model import DPA2Model, frame_sum

# Chunk size of :func:`evaluate` (and of the training step): every chunk costs the same few
# thousand operations whatever its size, so larger is faster (a 16-frame, 298-atom MPtrj batch
# whole instead of in 32-atom chunks: 24 % less CPU time at inference, 20 % for a training step,
# dpa2_small); the bound keeps the work memory of a batch of many frames to about that of one
# 384-atom frame, twice a 192-atom water frame's (training step, float64: 435 MB dpa2_small,
# 1.1 GB dpa2_medium).
DEFAULT_MAX_ATOMS_PER_CHUNK = 384


@dataclass(kw_only=True, frozen=True)
class ModelOutput:
    """Predictions for a batch.

    Attributes:
        energy: [num_frames] float64 (eV).
        atomic_energies: [num_atoms] float64 (eV).
        forces: [num_atoms, 3] (eV/Å), or None.
        virial: [num_frames, 3, 3] (eV), W[k, l] = Σ F_k X_l, or None.
        atomic_virial: [num_atoms, 3, 3] (eV), or None.
    """

    energy: torch.Tensor
    atomic_energies: torch.Tensor
    forces: torch.Tensor | None = None
    virial: torch.Tensor | None = None
    atomic_virial: torch.Tensor | None = None


def evaluate(
    model: DPA2Model,
    inputs: ModelInput,
    head: str | None = None,
    *,
    forces: bool = True,
    virial: bool = True,
    atomic_virial: bool = False,
    create_graph: bool = False,
    max_atoms_per_chunk: int | None = DEFAULT_MAX_ATOMS_PER_CHUNK,
) -> ModelOutput:
    """Energy and, by autograd, forces and virials of every frame of ``inputs`` (one batch).

    Args:
        model: the model.
        inputs: a flat batch of any number of frames.
        head: head name; ``None`` for a single-head model.
        forces: compute forces [num_atoms, 3].
        virial: compute the virial per frame [num_frames, 3, 3].
        atomic_virial: compute the per-atom virial [num_atoms, 3, 3].
        create_graph: keep forces and virials differentiable (training on them).
        max_atoms_per_chunk: evaluate runs of whole frames of at most this many atoms at a time
            (a larger frame runs alone) and concatenate; ``None`` evaluates the batch at once.
            Frames are independent, so the results are the same; the work memory of the
            model's pair and triplet tensors is bounded by the chunk instead of the batch.

    Returns:
        :class:`ModelOutput`. Without any derivative the energy follows the caller's grad mode
        (so ``model`` can be trained on energies alone); with derivatives every output is
        detached unless ``create_graph`` is set.
    """
    chunks = frame_chunks(inputs, max_atoms_per_chunk)
    options = {
        "forces": forces,
        "virial": virial,
        "atomic_virial": atomic_virial,
        "create_graph": create_graph,
    }
    if len(chunks) == 1:
        return _evaluate_batch(model, inputs, head, **options)
    outputs = [
        _evaluate_batch(model, inputs.frames(start, stop), head, **options)
        for start, stop in chunks
    ]
    return ModelOutput(
        **{
            name: None
            if getattr(outputs[0], name) is None
            else torch.cat([getattr(output, name) for output in outputs])
            for name in ModelOutput.__dataclass_fields__
        }
    )


def frame_chunks(inputs: ModelInput, max_atoms: int | None) -> list[tuple[int, int]]:
    """Consecutive frame ranges [start, stop) of at most ``max_atoms`` atoms (or one frame)."""
    if max_atoms is not None and max_atoms < 1:
        raise ValueError(f"max_atoms_per_chunk must be a positive number of atoms, got {max_atoms}")
    if max_atoms is None or inputs.num_atoms <= max_atoms or inputs.num_frames == 1:
        return [(0, inputs.num_frames)]
    counts = torch.bincount(inputs.frame_index, minlength=inputs.num_frames).tolist()
    chunks = []
    start, atoms = 0, 0
    for frame, count in enumerate(counts):
        if frame > start and atoms + count > max_atoms:
            chunks.append((start, frame))
            start, atoms = frame, 0
        atoms += count
    chunks.append((start, inputs.num_frames))
    return chunks


def _without_inference_tensors(inputs: ModelInput) -> ModelInput:
    """``inputs`` with copies of the tensors made under ``torch.inference_mode()``.

    Autograd may not save such tensors; the copies (made outside inference mode) are normal.
    """

    def normal(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.clone() if tensor.is_inference() else tensor

    fields = (inputs.positions, inputs.atom_types, inputs.cell, inputs.frame_index)
    blocks = [(block.index, block.shifts) for block in inputs.neighbors]
    if not any(t.is_inference() for t in (*fields, *[t for pair in blocks for t in pair])):
        return inputs
    return ModelInput(
        positions=normal(inputs.positions),
        atom_types=normal(inputs.atom_types),
        cell=normal(inputs.cell),
        frame_index=normal(inputs.frame_index),
        neighbors=tuple(
            dataclasses.replace(block, index=normal(block.index), shifts=normal(block.shifts))
            for block in inputs.neighbors
        ),
    )


def _evaluate_batch(
    model: DPA2Model,
    inputs: ModelInput,
    head: str | None,
    *,
    forces: bool,
    virial: bool,
    atomic_virial: bool,
    create_graph: bool,
) -> ModelOutput:
    """:func:`evaluate` of the whole batch at once."""
    need_gradient = forces or virial or atomic_virial
    with (
        # Forces need autograd, also when called inside torch.inference_mode().
        torch.inference_mode(False) if need_gradient else contextlib.nullcontext(),
        torch.enable_grad() if need_gradient else contextlib.nullcontext(),
        # One backward for the edge vectors only: the fused three-body net keeps just that.
        single_input_backward() if need_gradient and not create_graph else contextlib.nullcontext(),
    ):
        if need_gradient:
            inputs = _without_inference_tensors(inputs)
        geometries, distinct = model.geometries(inputs)
        if need_gradient:
            for geometry, _ in distinct:
                if not geometry.vectors.requires_grad:
                    geometry.vectors.requires_grad_(True)
        atomic_energies = model.atomic_energies_from_geometry(geometries, inputs.atom_types, head)
        energy = frame_sum(atomic_energies, inputs.frame_index, inputs.num_frames)
        if not need_gradient:
            return ModelOutput(energy=energy, atomic_energies=atomic_energies)
        vectors = [geometry.vectors for geometry, _ in distinct]
        # Only the edge vectors' gradients: the fused three-body net may skip its parameters'.
        with input_gradients_only():
            gradients = torch.autograd.grad(
                energy.sum(), vectors, create_graph=create_graph, allow_unused=True
            )
    if not create_graph:
        # The grad call above freed the graph: hand out plain tensors, not dead graph ends.
        energy, atomic_energies = energy.detach(), atomic_energies.detach()
    total_forces, per_atom_virial = edge_derivatives(
        [geometry for geometry, _ in distinct],
        gradients,
        forces=forces,
        virial=virial or atomic_virial,
        create_graph=create_graph,
    )
    zeros3 = torch.zeros_like(inputs.positions, dtype=model.dtype)
    return ModelOutput(
        energy=energy,
        atomic_energies=atomic_energies,
        forces=(total_forces if total_forces is not None else zeros3) if forces else None,
        virial=frame_sum(
            per_atom_virial if per_atom_virial is not None else _zeros33(inputs, model),
            inputs.frame_index,
            inputs.num_frames,
        )
        if virial
        else None,
        atomic_virial=(per_atom_virial if per_atom_virial is not None else _zeros33(inputs, model))
        if atomic_virial
        else None,
    )


def edge_derivatives(
    geometries: Sequence[BlockGeometry],
    gradients: Sequence[torch.Tensor | None],
    *,
    forces: bool = True,
    virial: bool = True,
    create_graph: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Forces and per-atom virial from the edge gradients g_e = ∂E/∂r_e (module docstring).

    Shared by :func:`evaluate` and the exported programs of ``lamforge.export``.

    Args:
        geometries: the distinct blocks whose ``vectors`` the energy was differentiated by.
        gradients: ∂E/∂vectors per block (None for a block the energy does not read).
        forces: compute the forces.
        virial: compute the per-atom virial.
        create_graph: keep the virial differentiable through the edge vectors.

    Returns:
        Forces [num_atoms, 3] and per-atom virial [num_atoms, 3, 3], each None when not asked
        for or when no block was read.
    """
    total_forces = None
    per_atom_virial = None
    for geometry, gradient in zip(geometries, gradients, strict=True):
        if gradient is None:
            continue
        gradient = gradient * geometry.mask.unsqueeze(-1)
        neighbor = geometry.index.reshape(-1)
        if forces:
            block_forces = gradient.sum(dim=1).index_add(0, neighbor, -gradient.reshape(-1, 3))
            total_forces = block_forces if total_forces is None else total_forces + block_forces
        if virial:
            # -g ⊗ r per edge, half to the centre and half to the neighbour.
            position = geometry.vectors if create_graph else geometry.vectors.detach()
            edge = -gradient.unsqueeze(-1) * position.unsqueeze(-2).to(gradient.dtype)
            half = 0.5 * edge
            block_virial = half.sum(dim=1).index_add(0, neighbor, half.reshape(-1, 3, 3))
            per_atom_virial = (
                block_virial if per_atom_virial is None else per_atom_virial + block_virial
            )
    return total_forces, per_atom_virial


def _zeros33(inputs: ModelInput, model: DPA2Model) -> torch.Tensor:
    return torch.zeros(inputs.num_atoms, 3, 3, dtype=model.dtype, device=inputs.positions.device)
