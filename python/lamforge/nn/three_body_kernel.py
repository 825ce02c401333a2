"""The three-body embedding net on CPU, fused per neighbour pair in the Rust core.

The repinit three-body branch (:class:`lamforge.nn.repinit.ThreeBodyBlock`) sums a small tanh net
(deepmd-kit ``three_body_neuron``, 2 -> 4 -> 8 in the shipped presets) over every neighbour pair of
every centre, ~100,000 pairs for a 192-atom water box. As PyTorch operations each
derivative order is a dozen passes over ``[pairs, width]`` tensors, most of the branch's time.
``lamforge._core.three_body_*`` evaluate the whole net per pair in registers instead:

    out[segment] = Σ_rows weight · c · net(c, row_type)
    net: z_0 = table[row_type] + c · first_weight, y_0 = tanh(z_0),
         y_l = timestep_l ⊙ tanh(y_{l-1} W_l + b_l) + skip_l(y_{l-1})

with the forces' derivative (``backward``) and its derivative (``double_backward``, for training
on forces) written out, so autograd sees three nodes instead of hundreds. ``THREE_BODY_FUSED``
switches it off (the tests compare both paths).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lamforge.nn.engine import (  # noqa: F401  (the contexts are part of this module's API)
    in_input_gradients_only,
    in_single_input_backward,
    input_gradients_only,
    single_input_backward,
    wants_gradient,
)
from lamforge.nn.layers import DenseLayer

# Use the fused Rust path where it applies (CPU, tanh nets); False forces the PyTorch ops.
THREE_BODY_FUSED = True

_SKIP_CODES = {"none": 0, "identity": 1, "double": 2}


def _core():
    from lamforge import _core

    return _core


def fused_applies(layers: Sequence[DenseLayer], device: torch.device) -> bool:
    """Whether :func:`three_body_sum` can run these layers (first layer without skip)."""
    return (
        THREE_BODY_FUSED
        and device.type == "cpu"
        and not torch.compiler.is_compiling()
        and all(layer.activation_name == "tanh" for layer in layers)
        and not layers[0].has_skip
        and layers[0].timestep is None
        and hasattr(_core(), "three_body_forward")
    )


def _skip_code(layer: DenseLayer) -> int:
    if not layer.has_skip:
        return _SKIP_CODES["none"]
    return _SKIP_CODES["identity" if layer.num_out == layer.num_in else "double"]


def _array(tensor: torch.Tensor):
    return tensor.detach().contiguous().numpy()


class _Net:
    """The net's parameters as the Rust kernels take them (NumPy views of the tensors)."""

    def __init__(self, table, first_weight, params: Sequence, skips: Sequence[int]) -> None:
        self.table, self.first_weight = table, first_weight
        self.params = list(params)  # per layer: weight, bias or None, timestep or None
        self.skips = list(skips)

    def arrays(self):
        weights, biases, timesteps = [], [], []
        for start in range(0, len(self.params), 3):
            weight, bias, timestep = self.params[start : start + 3]
            weights.append(_array(weight))
            biases.append(_array(bias if bias is not None else weight.new_zeros(weight.shape[1])))
            timesteps.append(None if timestep is None else _array(timestep))
        return (
            _array(self.table),
            _array(self.first_weight),
            weights,
            biases,
            timesteps,
            self.skips,
        )

    def param_grads(self, grads, needs: Sequence[bool]) -> list[torch.Tensor | None]:
        """Kernel gradients (table, first weight, per layer) as tensors; None where unneeded."""
        table, first_weight, weights, biases, timesteps = grads
        flat = [table, first_weight]
        for index in range(len(weights)):
            flat += [weights[index], biases[index], timesteps[index]]
        out = []
        tensors = [self.table, self.first_weight, *self.params]
        for value, tensor, need in zip(flat, tensors, needs, strict=True):
            out.append(torch.from_numpy(value) if need and tensor is not None else None)
        return out


def _rows(cosine, weight, row_type, segment, num_segments: int):
    return (_array(cosine), _array(weight), _array(row_type), _array(segment), num_segments)


def _save(ctx, tensors: Sequence[torch.Tensor], params: Sequence, num_segments: int, skips) -> None:
    """Saves ``tensors`` and the per-layer parameters (None kept as a flag) for the backward."""
    ctx.save_for_backward(*tensors, *[p if p is not None else torch.empty(0) for p in params])
    ctx.present = [p is not None for p in params]
    ctx.num_segments, ctx.skips = num_segments, skips


def _restore(ctx, count: int) -> tuple[list[torch.Tensor], list]:
    """The first ``count`` saved tensors and the parameters, as :func:`_save` got them."""
    saved = ctx.saved_tensors
    params = [p if present else None for p, present in zip(saved[count:], ctx.present, strict=True)]
    return list(saved[:count]), params


def _backward_gradients(net: _Net, rows, saved, grad_out, needs, with_cosine: bool):
    """(cosines' gradient or None, parameter gradients or None each) from the core's backward.

    ``needs``: whether each of the table, the first weight and the per-layer parameters wants a
    gradient; ``with_cosine=False`` leaves the cosines' gradient (and its tangents) out.
    """
    with_params = any(needs)
    grad_cosine, grads = _core().three_body_backward(
        net.arrays(),
        rows,
        _array(saved),
        _array(grad_out),
        with_params,
        torch.get_num_threads(),
        with_cosine,
    )
    param_grads = net.param_grads(grads, needs) if with_params else [None] * len(needs)
    return (torch.from_numpy(grad_cosine) if with_cosine else None), param_grads


class _ThreeBodySum(torch.autograd.Function):
    """forward: the segment sums; backward: :class:`_ThreeBodyBackward` (differentiable)."""

    @staticmethod
    def forward(
        ctx, cosine, weight, row_type, segment, num_segments, skips, table, first_weight, *params
    ):  # noqa: D102
        net = _Net(table, first_weight, params, skips)
        rows = _rows(cosine, weight, row_type, segment, num_segments)
        if not any(ctx.needs_input_grad):
            save = "nothing"
        elif in_single_input_backward():
            # One backward, for the cosines only: keep each row's factor of the upstream
            # gradient (8 numbers per row for a 2-4-8 net) and nothing else.
            save = "cosine_factors"
        else:
            # The tanh outputs of every layer, for any number of derivatives (14 numbers per row
            # for a 2-4-8 net): they then cost no tanh at all.
            save = "activations"
        out, saved = _core().three_body_forward(net.arrays(), rows, save, torch.get_num_threads())
        ctx.save = save
        if save != "nothing":
            tensors = (cosine, weight, row_type, segment, torch.from_numpy(saved), table)
            _save(ctx, (*tensors, first_weight), params, num_segments, skips)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        tensors, params = _restore(ctx, 7)
        cosine, weight, row_type, segment, saved, table, first_weight = tensors
        needs = ctx.needs_input_grad
        if ctx.save == "cosine_factors":
            if torch.is_grad_enabled() or not in_input_gradients_only():
                raise RuntimeError(
                    "the fused three-body net ran under single_input_backward(): its graph "
                    "gives the inputs' gradient once, inside input_gradients_only(), without "
                    "create_graph or parameter gradients"
                )
            net = _Net(table, first_weight, params, ctx.skips)
            rows = _rows(cosine, weight, row_type, segment, ctx.num_segments)
            grad_cosine = _core().three_body_cosine_gradient(
                net.arrays(), rows, _array(saved), _array(grad_out)
            )
            return torch.from_numpy(grad_cosine), *([None] * (len(needs) - 1))
        if in_input_gradients_only():
            needs = tuple(False for _ in needs)
        if not torch.is_grad_enabled():
            # Nothing recorded: the core directly, without the cosines' gradient (and its
            # forward-mode tangents) when the running backward does not use it (the weights'
            # pass of training on forces: it leads to the positions only).
            with_cosine = wants_gradient(ctx, 0)
            net = _Net(table, first_weight, params, ctx.skips)
            rows = _rows(cosine, weight, row_type, segment, ctx.num_segments)
            cosine_grad, param_grads = _backward_gradients(
                net, rows, saved, grad_out, needs[6:], with_cosine
            )
            return cosine_grad, None, None, None, None, None, *param_grads
        grads = _ThreeBodyBackward.apply(
            grad_out,
            cosine,
            weight,
            row_type,
            segment,
            saved,
            ctx.num_segments,
            ctx.skips,
            needs[6:],
            table,
            first_weight,
            *params,
        )
        return grads[0], None, None, None, None, None, *grads[1:]


class _ThreeBodyBackward(torch.autograd.Function):
    """(grad_cosine, parameter gradients) of the sum; its own backward is the force path's."""

    @staticmethod
    def forward(
        ctx,
        grad_out,
        cosine,
        weight,
        row_type,
        segment,
        saved,
        num_segments,
        skips,
        needs,
        table,
        first_weight,
        *params,
    ):  # noqa: D102
        ctx.set_materialize_grads(False)
        net = _Net(table, first_weight, params, skips)
        rows = _rows(cosine, weight, row_type, segment, num_segments)
        grad_cosine, param_grads = _backward_gradients(net, rows, saved, grad_out, needs, True)
        tensors = (grad_out, cosine, weight, row_type, segment, saved, table, first_weight)
        _save(ctx, tensors, params, num_segments, skips)
        return (grad_cosine, *param_grads)

    @staticmethod
    def backward(ctx, grad_grad_cosine, *grad_param_grads):  # noqa: D102
        if any(g is not None for g in grad_param_grads):
            raise NotImplementedError(
                "the fused three-body net's parameter gradients are not differentiable "
                "(set lamforge.nn.three_body_kernel.THREE_BODY_FUSED = False for higher orders)"
            )
        tensors, params = _restore(ctx, 8)
        grad_out, cosine, weight, row_type, segment, saved, table, first_weight = tensors
        num_inputs = 11 + len(params)
        if grad_grad_cosine is None:
            return (None,) * num_inputs
        net = _Net(table, first_weight, params, ctx.skips)
        rows = _rows(cosine, weight, row_type, segment, ctx.num_segments)
        grad_grad_out, grad_cosine, grads = _core().three_body_double_backward(
            net.arrays(),
            rows,
            _array(saved),
            _array(grad_out),
            _array(grad_grad_cosine),
            torch.get_num_threads(),
        )
        needs = ctx.needs_input_grad
        param_grads = net.param_grads(grads, needs[9:])
        return (
            torch.from_numpy(grad_grad_out) if needs[0] else None,
            torch.from_numpy(grad_cosine) if needs[1] else None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            *param_grads,
        )


def three_body_sum(
    cosine: torch.Tensor,
    weight: torch.Tensor,
    row_type: torch.Tensor,
    segment: torch.Tensor,
    num_segments: int,
    table: torch.Tensor,
    layers: Sequence[DenseLayer],
) -> torch.Tensor:
    """``out[s] = Σ_{rows r in segment s} weight_r · c_r · net(c_r, row_type_r)``, fused.

    Args:
        cosine: [rows] the net's scalar input c (differentiable).
        weight: [rows] constant factors (no gradient).
        row_type: [rows] int64 row of ``table``.
        segment: [rows] int64 output row.
        num_segments: number of output rows.
        table: [row_types, width_0] the first layer's pre-activation without the cosine's term
            (bias included; differentiable).
        layers: the net's :class:`DenseLayer` s; the cosine's weight is ``layers[0].weight[0]``
            (its other rows are folded into ``table``), the others run as they are.

    Returns:
        [num_segments, layers[-1].num_out].
    """
    if weight.requires_grad:
        raise ValueError("three_body_sum: the row weights must be constants")
    dtype = cosine.dtype
    params = []
    for layer in layers[1:]:
        params += [layer.weight, layer.bias, layer.timestep]
    if any(p is not None and p.dtype != dtype for p in [table, *params]):
        raise TypeError(f"three_body_sum: parameters must be {dtype}")
    skips = tuple(_skip_code(layer) for layer in layers[1:])
    weight = weight.to(dtype)
    if not torch.is_grad_enabled():
        # No graph (inside a Function's forward needs_input_grad cannot tell): save nothing.
        net = _Net(table, layers[0].weight[0], params, skips)
        rows = _rows(cosine, weight, row_type, segment, num_segments)
        out, _ = _core().three_body_forward(net.arrays(), rows, "nothing", torch.get_num_threads())
        return torch.from_numpy(out)
    return _ThreeBodySum.apply(
        cosine, weight, row_type, segment, num_segments, skips, table, layers[0].weight[0], *params
    )
