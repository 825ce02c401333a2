"""Batched products with a thin factor on the CPU, in the Rust core (``lamforge._core.thin``).

The embedding nets' last layers are contracted with the environment rows right away
(:mod:`lamforge.nn.contraction`): per centre, ``R`` [K, m] (K slots, m = 4 columns) against
[K, n] activations. Every product of that contraction and of its first and second derivatives is
one of (``R`` in its natural [B, K, m] layout)::

    combine(R, Y) [B, m, n] = Rᵀ Y
    spread(R, G)  [B, K, n] = R G
    dot(G, Y)     [B, K, m] = Y Gᵀ

or a spread with the tanh derivative fused in (:func:`spread_slope`,
:func:`spread_slope_second`). PyTorch's CPU ``bmm`` handles these shapes poorly (one size is 4)
and each elementwise step is another pass over a [B, K, n] tensor; the Rust kernels make one pass
over the large operands with the thin one in registers. These functions compute values only (the
callers' autograd Functions hold the derivatives). ``THIN_FUSED = False`` (or another device,
tracing, ``lamforge.kernels.use_fused(False)``) selects ``torch.matmul``; both give the same
values up to rounding.
"""

from __future__ import annotations

import torch

from lamforge import kernels

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


def _run(kernel: str, inputs, shape, out_shape, dtype) -> torch.Tensor:
    """Runs one core kernel on ``inputs`` into a fresh tensor of ``out_shape``."""
    batch, rows, columns, width = shape
    out = torch.empty(out_shape, dtype=dtype)
    work = batch * rows * columns * width
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
    )
    return out


def combine(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``rowsᵀ @ values``: [B, K, m] and [B, K, n] -> [B, m, n]."""
    if not applies(values):
        return torch.matmul(rows.transpose(-1, -2), values)
    (batch, num_rows, columns), width = rows.shape, values.shape[-1]
    shape = (batch, num_rows, columns, width)
    return _run("combine", (rows, values), shape, (batch, columns, width), values.dtype)


def spread(rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``rows @ values``: [B, K, m] and [B, m, n] -> [B, K, n]."""
    if not applies(values):
        return torch.matmul(rows, values)
    (batch, num_rows, columns), width = rows.shape, values.shape[-1]
    shape = (batch, num_rows, columns, width)
    return _run("spread", (rows, values), shape, (batch, num_rows, width), values.dtype)


def spread_slope(rows: torch.Tensor, values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``(rows @ values) ⊙ (1 - y²)`` (the gradient through y = tanh(z)); y [B, K, n]."""
    if not applies(values):
        return torch.ops.aten.tanh_backward(torch.matmul(rows, values), y)
    (batch, num_rows, columns), width = rows.shape, values.shape[-1]
    shape = (batch, num_rows, columns, width)
    out_shape = (batch, num_rows, width)
    return _run("spread_slope", (rows, values, y), shape, out_shape, values.dtype)


def spread_slope_second(
    rows: torch.Tensor,
    up_rows: torch.Tensor,
    values: torch.Tensor,
    y: torch.Tensor,
    upstream: torch.Tensor,
) -> torch.Tensor:
    """``(up_rows @ values - 2 y ⊙ upstream ⊙ (rows @ values)) ⊙ (1 - y²)``.

    The derivative of :func:`spread_slope` in z (through y = tanh(z), for the upstream
    ``upstream`` of its output) plus the part through its ``rows`` (for their upstream
    ``up_rows``). Shapes: rows, up_rows [B, K, m]; values [B, m, n]; y, upstream [B, K, n].
    """
    if not applies(values):
        product = torch.matmul(rows, values) * upstream * y * -2.0
        return torch.ops.aten.tanh_backward(product + torch.matmul(up_rows, values), y)
    (batch, num_rows, columns), width = rows.shape, values.shape[-1]
    shape = (batch, num_rows, columns, width)
    inputs = (rows, up_rows, values, y, upstream)
    out_shape = (batch, num_rows, width)
    return _run("spread_slope_second", inputs, shape, out_shape, values.dtype)


def dot(thin: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values @ thinᵀ``: [B, m, n] and [B, K, n] -> [B, K, m]."""
    if not applies(values):
        return torch.matmul(values, thin.transpose(-1, -2))
    (batch, columns, width), num_rows = thin.shape, values.shape[1]
    shape = (batch, num_rows, columns, width)
    return _run("dot", (thin, values), shape, (batch, num_rows, columns), values.dtype)
