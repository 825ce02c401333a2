"""Energy, forces and virial of a compressed se_e2_a model with hand-written derivatives.

Generic autograd (``lamforge.nn.forces``) records every operation of the forward pass and replays
it backwards; for a tabulated se_e2_a model (``SeAModel.compress``) the backward is short enough
to write out, which removes autograd's per-operation bookkeeping from every MD step. Notation of
``lamforge.nn.se_e2_a``, per centre i and slot j, S = max_neighbors, M = axis_neurons:

    forward:   R_ij (env. matrix),  G_ij = table(s_ij = R_ij[0]),  Mom_i = R_iᵀ G_i / S  [4, ng],
               D_i = Mom_iᵀ Mom_i[:, :M]  [ng, M],   E = Σ_i fit(D_i)

    backward (∂E/∂D from the fitting net's own hand-written backward, ``_fitting``):
        ∂E/∂Mom_i       = Mom_i[:, :M] (∂E/∂D_i)ᵀ,  plus Mom_i (∂E/∂D_i) on the first M columns
        ∂E/∂R_ij        = G_ij (∂E/∂Mom_i)ᵀ / S,  plus on column 0 (∂E/∂G_ij · G'(s_ij))
        ∂E/∂G_ij        = R_ij (∂E/∂Mom_i) / S,   G' from the table's derivative polynomials

    environment matrix (r = |v|, p = env_protection, σ = std of the centre's element):
        R[0] = a(r) / σ_0,  R[1:] = b(r) v / σ_1,   a = sw / (r + p),  b = sw / (r + p)²
        ∂E/∂v = (g_0 a' / σ_0 + (g_{1:} · v) b' / σ_1) v / r + b g_{1:} / σ_1

The edge gradients ∂E/∂v become forces and virial exactly as in ``lamforge.nn.forces``.
"""

from __future__ import annotations

import math

import torch

from lamforge.nn.forces import ModelOutput
from lamforge.nn.inputs import ModelInput, edge_vectors
from lamforge.nn.layers import silut_parameters
from lamforge.nn.model import empty_slot_types, frame_sum
from lamforge.nn.se_e2_a import SeAModel
from lamforge.nn.tabulate import EmbeddingTable


def _switch_and_slope(length: torch.Tensor, cutoff_smooth: float, cutoff: float):
    """sw(r) and dsw/dr (zero outside (rs, rc), where the clamp makes sw constant)."""
    width = cutoff - cutoff_smooth
    u = (length.clamp(cutoff_smooth, cutoff) - cutoff_smooth) / width
    u2 = u * u
    switch = u2 * u * (-6 * u2 + 15 * u - 10) + 1
    slope = -30 / width * u2 * (u - 1) * (u - 1)
    return switch, slope


def evaluate_tabulated(
    model: SeAModel,
    inputs: ModelInput,
    head: str | None = None,
    *,
    virial: bool = True,
    width: int | None = None,
) -> ModelOutput:
    """Energy, forces and (optionally) the virial per frame of a compressed se_e2_a model.

    The same numbers as ``lamforge.nn.forces.evaluate`` on the same model (up to summation order),
    without recording an autograd graph of the descriptor. Not differentiable with respect to the
    parameters (use ``evaluate`` to train).

    Args:
        model: an se_e2_a model with a table (``SeAModel.compress``).
        inputs: a flat batch of frames.
        head: head name; ``None`` for a single-head model.
        virial: compute the virial [num_frames, 3, 3].
        width: run on the first ``width`` slots of the neighbour block; None takes
            :func:`slot_width` of the block. Pass it (computed outside) under ``torch.compile``:
            finding it reads a tensor value, which would split the compiled graph.

    Returns:
        :class:`ModelOutput` with energy, atomic energies, forces and the virial (when asked).
    """
    if model.descriptor.block.table is None:
        raise ValueError("evaluate_tabulated needs a compressed model (SeAModel.compress)")
    config = model.config
    neighbors = inputs.neighbor_list(config.cutoff, config.max_neighbors)
    # Slots are nearest first and padded at the end; the moments are normalised by
    # max_neighbors, not by the slot count, so dropping slots empty for every centre is exact.
    width = slot_width(neighbors.index) if width is None else width
    index, shifts = neighbors.index[:, :width], neighbors.shifts[:, :width]
    mask = index >= 0
    with torch.no_grad():
        vectors = _edge_vectors(inputs.positions.to(model.dtype), inputs, index, shifts)
        # Empty slots: a vector of length rc + 1, where sw and its slope are zero.
        vectors[..., 0].masked_fill_(~mask, config.cutoff + 1.0)
        net_index = _neighbor_types(model, inputs, index, mask)
        if not model.descriptor.block.type_one_side:
            net_index = inputs.atom_types.unsqueeze(1) * len(config.elements) + net_index
        edge_gradient, atomic_energies = _edge_gradients(
            model, head, vectors, mask, net_index, inputs.atom_types
        )
        safe_index = index.clamp(min=0).reshape(-1)
        forces = edge_gradient.sum(1).index_add(0, safe_index, -edge_gradient.reshape(-1, 3))
        energy = frame_sum(atomic_energies, inputs.frame_index, inputs.num_frames)
        frame_virial = None
        if virial:
            # W = -Σ_e g_e ⊗ r_e, per centre then per frame (empty slots have g = 0).
            if inputs.num_frames == 1:
                flat_gradient, flat_vectors = edge_gradient.reshape(-1, 3), vectors.reshape(-1, 3)
                frame_virial = -torch.matmul(flat_gradient.t(), flat_vectors).unsqueeze(0)
            else:
                per_centre = -torch.matmul(edge_gradient.transpose(1, 2), vectors)
                frame_virial = frame_sum(per_centre, inputs.frame_index, inputs.num_frames)
    return ModelOutput(
        energy=energy, atomic_energies=atomic_energies, forces=forces, virial=frame_virial
    )


def _edge_gradients(
    model: SeAModel,
    head: str | None,
    vectors: torch.Tensor,
    mask: torch.Tensor,
    net_index: torch.Tensor,
    atom_types: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge gradients ∂E/∂v [n, S, 3] and atomic energies [n] of n centres (module docstring).

    Args:
        model: the compressed model.
        head: head name or None.
        vectors: [n, S, 3] edge vectors, empty slots at length rc + 1.
        mask: [n, S] True for real neighbours.
        net_index: [n, S] table (net) of each slot.
        atom_types: [n] centre elements.
    """
    config = model.config
    block = model.descriptor.block
    table = block.table
    assert table is not None
    length = torch.linalg.vector_norm(vectors, dim=-1)
    switch, switch_slope = _switch_and_slope(length, config.cutoff_smooth, config.cutoff)
    inverse = 1 / (length + config.env_protection)
    radial_factor = switch * inverse  # a
    angular_factor = radial_factor * inverse  # b
    std = block.std[atom_types]  # [n, 4]
    radial_std, angular_std = std[:, :1], std[:, 1:2]
    # R transposed, [n, 4, S]: the products below are fastest with S last.
    env = torch.cat(
        [
            (radial_factor / radial_std).unsqueeze(1),
            vectors.transpose(1, 2) * (angular_factor / angular_std).unsqueeze(1),
        ],
        1,
    )
    num_atoms, _, num_slots = env.shape
    normaliser = config.max_neighbors
    looked_up = _values_and_slopes(table, env[:, 0], net_index)  # [2, n, S, ng]: G and G'
    moment = torch.matmul(env, looked_up[0]) / normaliser  # [n, 4, ng]
    axis = moment[:, :, : block.axis_neurons]
    descriptor = torch.matmul(moment.transpose(1, 2), axis)  # [n, ng, M]
    descriptor_gradient, atomic_energies = _fitting(model, descriptor, atom_types, head)
    moment_gradient = torch.matmul(axis, descriptor_gradient.transpose(1, 2))
    moment_gradient[:, :, : block.axis_neurons] += torch.matmul(moment, descriptor_gradient)
    moment_gradient /= normaliser
    # (∂E/∂Mom) [G ; G']ᵀ: the first product is (∂E/∂R)ᵀ through G's coefficient; the second,
    # dotted with R, is ∂E/∂s through G itself (Σ_c ∂E/∂G_c G'_c = Σ_a R_a (∂E/∂Mom G'ᵀ)_a).
    both = torch.bmm(
        moment_gradient.repeat(2, 1, 1),
        looked_up.reshape(2 * num_atoms, num_slots, -1).transpose(1, 2),
    ).reshape(2, num_atoms, 4, num_slots)
    radial_gradient = (both[0, :, 0] + (both[1] * env).sum(1)) / radial_std  # g_0 / σ_0
    angular_gradient = both[0, :, 1:].transpose(1, 2) / angular_std.unsqueeze(-1)  # g_{1:} / σ_1
    # a' = sw' / (r + p) - sw / (r + p)²,  b' = sw' / (r + p)² - 2 sw / (r + p)³
    radial_slope = (switch_slope - radial_factor) * inverse
    angular_slope = (switch_slope - 2 * radial_factor) * inverse * inverse
    along = (
        radial_gradient * radial_slope + (angular_gradient * vectors).sum(-1) * angular_slope
    ) / length
    edge_gradient = along.unsqueeze(-1) * vectors + angular_factor.unsqueeze(-1) * angular_gradient
    return edge_gradient.masked_fill(~mask.unsqueeze(-1), 0.0), atomic_energies


def slot_width(index: torch.Tensor) -> int:
    """Slots of a dense block that some centre uses, rounded up to a multiple of 8 (at most all).

    Rounding keeps the number of distinct widths (each one a compilation under
    ``torch.compile``) small while an MD run's neighbour counts drift.

    Args:
        index: [num_atoms, max_neighbors] neighbour indices, -1 for empty slots (at the end).
    """
    used = int((index >= 0).sum(1).max()) if index.numel() else 0
    return min(max(-(-used // 8) * 8, 8), index.shape[1])


def _edge_vectors(
    positions: torch.Tensor, inputs: ModelInput, index: torch.Tensor, shifts: torch.Tensor
) -> torch.Tensor:
    """``inputs.edge_vectors`` with one matrix product for the offsets of a single frame."""
    cell = inputs.cell.to(positions.dtype)
    if inputs.num_frames != 1:
        return edge_vectors(positions, cell, inputs.frame_index, index, shifts)
    offsets = torch.matmul(shifts.to(positions.dtype), cell[0])
    return positions[index.clamp(min=0)] - positions.unsqueeze(1) + offsets


def _neighbor_types(
    model: SeAModel, inputs: ModelInput, index: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Element of each slot; empty slots as in ``block_geometry`` (their rows are zero anyway)."""
    empty = empty_slot_types(inputs.atom_types, inputs.frame_index, inputs.num_frames)
    return torch.where(mask, inputs.atom_types[index.clamp(min=0)], empty.unsqueeze(1))


def _values_and_slopes(
    table: EmbeddingTable, radial: torch.Tensor, net_index: torch.Tensor
) -> torch.Tensor:
    """G(s) and dG/ds of every slot: [num_atoms, S] twice -> [2, num_atoms, S, ng].

    One ``embedding_bag`` call: a bag of the six rows of each pair's interval weighted by
    t^0..t^5 (the value), then a bag of its last five rows weighted by d t^(d-1) / h (the slope;
    the constant row does not contribute), so the result needs no copy into place.
    """
    t, rows = table.locate(radial.reshape(-1), net_index.reshape(-1))
    num_pairs = t.shape[0]
    powers = torch.linalg.vander(t, N=6)  # t^0 .. t^5
    slope_weights = powers[:, :5] * (_DEGREES.to(t.dtype) / table.config.step)
    # int32 indices: half the index traffic of int64 (tables are far below 2^31 rows).
    offsets = torch.cat(
        [
            torch.arange(0, 6 * num_pairs, 6, device=t.device, dtype=torch.int32),
            torch.arange(6 * num_pairs, 11 * num_pairs, 5, device=t.device, dtype=torch.int32),
        ]
    )
    rows = rows.to(torch.int32)
    looked_up = torch.nn.functional.embedding_bag(
        torch.cat([rows.reshape(-1), rows[:, 1:].reshape(-1)]),
        table.weight,
        offsets,
        mode="sum",
        per_sample_weights=torch.cat([powers.reshape(-1), slope_weights.reshape(-1)]),
    )
    return looked_up.reshape(2, *radial.shape, -1)


_DEGREES = torch.arange(1.0, 6.0)


def _fitting(model: SeAModel, descriptor: torch.Tensor, atom_types: torch.Tensor, head):
    """Atomic energies [num_atoms] and ∂E/∂D [num_atoms, ng, M] of the fitting net.

    The net is a few [num_atoms, width] layers, so autograd's bookkeeping would cost more than
    the arithmetic: the layers are run forward keeping their activations, then backward by hand.
    The centre-element embedding enters the first layer as a per-element row added to its
    pre-activation (it does not depend on positions).
    """
    energy_head = model.head(head)
    layers = list(energy_head.fitting_net.layers)
    flat = descriptor.reshape(descriptor.shape[0], -1)
    num_descriptor = flat.shape[1]
    first = layers[0]
    # [T(t) ; 0] for the type columns of the first layer's input.
    type_rows = model.descriptor.type_embedding.table()[:-1] @ first.weight[num_descriptor:]
    x = flat
    saved = []
    for position, layer in enumerate(layers):
        weight = layer.weight[:num_descriptor] if position == 0 else layer.weight
        pre = torch.nn.functional.linear(x, weight.t(), layer.bias)
        if position == 0:
            pre = pre + type_rows[atom_types]
        # torch.tanh directly: the layers' autograd-friendly tanh costs more per call here.
        activated = torch.tanh(pre) if layer.activation_name == "tanh" else layer.activation(pre)
        saved.append((pre, activated))
        y = activated if layer.timestep is None else activated * layer.timestep
        if layer.has_skip and position > 0:
            y = y + (x if layer.num_out == layer.num_in else torch.cat([x, x], dim=-1))
        x = y
    fitted = x.squeeze(-1)
    if energy_head.config.zero_isolated_atoms:
        vacuum = model.vacuum_descriptor()
        fitted = fitted - energy_head.fitting_net(vacuum).squeeze(-1)[atom_types]
    atomic_energies = fitted.to(torch.float64) + energy_head.energy_bias[atom_types]
    gradient = torch.ones_like(x)  # ∂E/∂(output), [num_atoms, 1]
    for position in range(len(layers) - 1, -1, -1):
        layer, (pre, activated) = layers[position], saved[position]
        through = gradient if layer.timestep is None else gradient * layer.timestep
        through = through * _activation_slope(layer.activation_name, pre, activated)
        weight = layer.weight[:num_descriptor] if position == 0 else layer.weight
        upstream = torch.matmul(through, weight.t())
        if layer.has_skip and position > 0:
            skip = gradient if layer.num_out == layer.num_in else _fold(gradient)
            upstream = upstream + skip
        gradient = upstream
    return gradient.reshape(descriptor.shape), atomic_energies


def _fold(gradient: torch.Tensor) -> torch.Tensor:
    """Gradient of the doubling skip [x, x]: the two halves summed."""
    half = gradient.shape[-1] // 2
    return gradient[..., :half] + gradient[..., half:]


def _activation_slope(name: str, pre: torch.Tensor, activated: torch.Tensor) -> torch.Tensor:
    """Derivative of an activation of ``lamforge.nn.layers.ACTIVATIONS`` at ``pre``."""
    silut = silut_parameters(name)
    name = name.lower()
    if name == "tanh":
        return 1 - activated * activated
    if name in ("linear", "none"):
        return torch.ones_like(pre)
    if name == "relu":
        return (pre > 0).to(pre.dtype)
    if name == "relu6":
        return ((pre > 0) & (pre < 6)).to(pre.dtype)
    if name == "sigmoid":
        return activated * (1 - activated)
    if name == "softplus":
        return torch.sigmoid(pre)
    if name in ("gelu", "gelu_tf"):
        # d/dx of x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
        scale = math.sqrt(2.0 / math.pi)
        inner = torch.tanh(scale * (pre + 0.044715 * pre**3))
        return 0.5 * (1 + inner) + 0.5 * pre * (1 - inner * inner) * scale * (
            1 + 3 * 0.044715 * pre * pre
        )
    if name == "silu" or silut is not None:
        sigmoid = torch.sigmoid(pre)
        slope = sigmoid * (1 + pre * (1 - sigmoid))
        if silut is None:
            return slope
        threshold, tail_slope, _ = silut
        tail = torch.tanh(tail_slope * (pre - threshold))
        return torch.where(pre >= threshold, tail_slope * (1 - tail * tail), slope)
    raise ValueError(f"no derivative for activation {name!r}")
