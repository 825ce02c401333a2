"""Batched products with a thin factor on the CPU, in the Rust core (``lamforge._core.thin``).

The embedding nets' last layers are contracted with the environment rows right away
(:mod:`lamforge.nn.contraction`): per centre, ``R`` [K, m] (K slots, m = 4 columns) against
[K, n] activations. Every product of that contraction and of its first and second derivatives is
one of (``R`` in its natural [B, K, m] layout)::

    combine(R, Y) [B, m, n] = Rᵀ Y
    spread(R, G)  [B, K, n] = R G
    dot(G, Y)     [B, K, m] = Y Gᵀ

or a spread with the tanh derivative fused in (:func:`spread_slope`,
:func:`spread_slope_second`). Batch items are padded (K rows each) or ragged (``offsets``: item
b owns rows ``offsets[b]:offsets[b + 1]`` of [P, ·] operands). PyTorch's CPU ``bmm`` handles
these shapes poorly (one size is 4) and each elementwise step is another pass over a [B, K, n]
tensor; the Rust kernels make one pass over the large operands with the thin one in registers.
These functions compute values only (the callers' autograd Functions hold the derivatives).
``THIN_FUSED = False`` (or another device, tracing, ``lamforge.kernels.use_fused(False)``, or
``reference=True``) selects PyTorch operations; both give the same values up to rounding.
"""

from __future__ import annotations

import torch

from lamforge import kernels
from lamforge.nn.geometry import segment_ids

# Use the Rust products where they apply (CPU float tensors, outside torch.compile).
THIN_FUSED = True

# Below this many multiply-adds a call runs on the calling thread (a thread pool hand-off costs
# ~20 µs, more than the work).
PARALLEL_MIN_WORK = 1 << 18


def _core():
    from lamforge import _core

    return _core


def applies(tensor: torch.Tensor) -> bool:
    """Whether the Rust kernels can run on ``tensor``.

    ``THIN_FUSED`` and :func:`lamforge.kernels.core_kernel_applies` (a plain CPU float tensor, not
    while tracing, not under ``lamforge.kernels.use_fused(False)``).
    """
    return THIN_FUSED and kernels.core_kernel_applies(tensor, "thin")


def _flat(tensor: torch.Tensor, dtype: torch.dtype):
    return tensor.detach().to(dtype).contiguous().reshape(-1).numpy()


def _run(kernel: str, inputs, shape, out_shape, dtype, offsets=None) -> torch.Tensor:
    """Runs one core kernel on ``inputs`` into a fresh tensor of ``out_shape``."""
    batch, rows, columns, width = shape
    out = torch.empty(out_shape, dtype=dtype)
    work = (batch * rows if offsets is None else inputs[0].shape[0]) * columns * width
    threads = torch.get_num_threads() if work >= PARALLEL_MIN_WORK else 1
    _core().thin(
        kernel,
        batch,
        rows,
        columns,
        width,
        [_flat(x, dtype) for x in inputs],
        out.reshape(-1).numpy(),
        threads,
        offsets=None if offsets is None else offsets.to(torch.int64).contiguous().numpy(),
    )
    return out


def _use_core(values: torch.Tensor, reference: bool) -> bool:
    return not reference and applies(values)


# Layouts: padded, rows [B, K, m] and values [B, K, n]; ragged (``offsets`` [B + 1]), rows [P, m]
# and values [P, n] with item b's rows at offsets[b]:offsets[b + 1]. Per-item tensors (G, and
# combine's output) are [B, m, n] in both. ``reference=True`` runs the PyTorch operations
# (differentiable).


def combine(
    rows: torch.Tensor,
    values: torch.Tensor,
    offsets: torch.Tensor | None = None,
    reference: bool = False,
) -> torch.Tensor:
    """``rowsᵀ @ values`` per item: [B, K, m] and [B, K, n] (or ragged) -> [B, m, n]."""
    columns, width = rows.shape[-1], values.shape[-1]
    if offsets is not None:
        num_items = offsets.shape[0] - 1
        if not _use_core(values, reference):
            outer = rows.unsqueeze(-1) * values.unsqueeze(-2)
            zeros = values.new_zeros((num_items, columns, width))
            return zeros.index_add(0, segment_ids(offsets), outer)
        shape = (num_items, 0, columns, width)
        out_shape = (num_items, columns, width)
        return _run("combine", (rows, values), shape, out_shape, values.dtype, offsets)
    if not _use_core(values, reference):
        return torch.matmul(rows.transpose(-1, -2), values)
    batch, num_rows = rows.shape[0], rows.shape[1]
    shape = (batch, num_rows, columns, width)
    return _run("combine", (rows, values), shape, (batch, columns, width), values.dtype)


def _spread_reference(rows, values, offsets):
    if offsets is None:
        return torch.matmul(rows, values)
    return torch.matmul(rows.unsqueeze(-2), values[segment_ids(offsets)]).squeeze(-2)


def _row_shapes(rows, values, offsets):
    """(core shape, [rows, n] output shape) of the spreads."""
    columns, width = rows.shape[-1], values.shape[-1]
    if offsets is not None:
        return (offsets.shape[0] - 1, 0, columns, width), (rows.shape[0], width)
    batch, num_rows = rows.shape[0], rows.shape[1]
    return (batch, num_rows, columns, width), (batch, num_rows, width)


def spread(
    rows: torch.Tensor,
    values: torch.Tensor,
    offsets: torch.Tensor | None = None,
    reference: bool = False,
) -> torch.Tensor:
    """``rows @ values`` per item: [B, K, m] (or ragged [P, m]) and [B, m, n] -> rows × n."""
    if not _use_core(values, reference):
        return _spread_reference(rows, values, offsets)
    shape, out_shape = _row_shapes(rows, values, offsets)
    return _run("spread", (rows, values), shape, out_shape, values.dtype, offsets)


def spread_slope(
    rows: torch.Tensor,
    values: torch.Tensor,
    y: torch.Tensor,
    offsets: torch.Tensor | None = None,
    reference: bool = False,
) -> torch.Tensor:
    """``(rows @ values) ⊙ (1 - y²)`` (the gradient through y = tanh(z)); y rows × n."""
    if not _use_core(values, reference):
        product = _spread_reference(rows, values, offsets)
        if reference:
            return product * (1.0 - y * y)
        return torch.ops.aten.tanh_backward(product, y)
    shape, out_shape = _row_shapes(rows, values, offsets)
    return _run("spread_slope", (rows, values, y), shape, out_shape, values.dtype, offsets)


def spread_slope_second(
    rows: torch.Tensor,
    up_rows: torch.Tensor,
    values: torch.Tensor,
    y: torch.Tensor,
    upstream: torch.Tensor,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(up_rows @ values - 2 y ⊙ upstream ⊙ (rows @ values)) ⊙ (1 - y²)``.

    The derivative of :func:`spread_slope` in z (through y = tanh(z), for the upstream
    ``upstream`` of its output) plus the part through its ``rows`` (for their upstream
    ``up_rows``). Shapes: rows, up_rows [B, K, m] (ragged [P, m]); values [B, m, n]; y,
    upstream rows × n.
    """
    if not applies(values):
        product = _spread_reference(rows, values, offsets) * upstream * y * -2.0
        second = _spread_reference(up_rows, values, offsets)
        return torch.ops.aten.tanh_backward(product + second, y)
    shape, out_shape = _row_shapes(rows, values, offsets)
    inputs = (rows, up_rows, values, y, upstream)
    return _run("spread_slope_second", inputs, shape, out_shape, values.dtype, offsets)


def dot(
    thin: torch.Tensor,
    values: torch.Tensor,
    offsets: torch.Tensor | None = None,
    reference: bool = False,
) -> torch.Tensor:
    """``values @ thinᵀ`` per item: [B, m, n] and [B, K, n] (or ragged [P, n]) -> rows × m."""
    columns, width = thin.shape[1], thin.shape[2]
    if offsets is not None:
        if not _use_core(values, reference):
            gathered = thin[segment_ids(offsets)]  # [P, m, n]
            return torch.matmul(gathered, values.unsqueeze(-1)).squeeze(-1)
        shape = (offsets.shape[0] - 1, 0, columns, width)
        out_shape = (values.shape[0], columns)
        return _run("dot", (thin, values), shape, out_shape, values.dtype, offsets)
    if not _use_core(values, reference):
        return torch.matmul(values, thin.transpose(-1, -2))
    batch, num_rows = thin.shape[0], values.shape[1]
    shape = (batch, num_rows, columns, width)
    return _run("dot", (thin, values), shape, (batch, num_rows, columns), values.dtype)
