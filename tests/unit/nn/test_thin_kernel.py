"""The Rust thin-factor products (``lamforge.nn.thin_kernel``) against ``torch.matmul``.

Values of every product for thin widths with and without a specialised kernel, wide widths with
and without a remainder of the register block, float64 and float32, one and several threads; the
contraction's derivatives (``lamforge.nn.contraction``) with the kernels against autograd; and a
model's force-training gradients with the kernels on and off.
"""

import pytest
import torch
from tests.unit.nn.nn_helpers import (
    ELEMENTS,
    assert_runs_agree,
    build_model,
    force_loss_runs,
    molecule_frame,
    periodic_frame,
    plain_contract,
)

from lamforge.nn import contraction, layers, thin_kernel
from lamforge.testing.reference_neighbors import model_input


def _operands(dtype, batch=3, rows=7, columns=4, width=21, seed=0):
    generator = torch.Generator().manual_seed(seed)
    options = {"dtype": dtype, "generator": generator}
    return {
        "rows": torch.randn(batch, rows, columns, **options),
        "up_rows": torch.randn(batch, rows, columns, **options),
        "wide": torch.randn(batch, rows, width, **options),
        "upstream": torch.randn(batch, rows, width, **options),
        "y": torch.rand(batch, rows, width, **options) * 2.0 - 1.0,
        "thin": torch.randn(batch, columns, width, **options),
    }


def _products(t):
    """Every product of the module, as (name, Rust-or-reference callable, plain reference)."""
    slope = 1.0 - t["y"] * t["y"]
    return [
        (
            "combine",
            lambda: thin_kernel.combine(t["rows"], t["wide"]),
            t["rows"].transpose(-1, -2) @ t["wide"],
        ),
        ("spread", lambda: thin_kernel.spread(t["rows"], t["thin"]), t["rows"] @ t["thin"]),
        (
            "dot",
            lambda: thin_kernel.dot(t["thin"], t["wide"]),
            t["wide"] @ t["thin"].transpose(-1, -2),
        ),
        (
            "spread_slope",
            lambda: thin_kernel.spread_slope(t["rows"], t["thin"], t["y"]),
            (t["rows"] @ t["thin"]) * slope,
        ),
        (
            "spread_slope_second",
            lambda: thin_kernel.spread_slope_second(
                t["rows"], t["up_rows"], t["thin"], t["y"], t["upstream"]
            ),
            (t["up_rows"] @ t["thin"] - 2.0 * t["y"] * t["upstream"] * (t["rows"] @ t["thin"]))
            * slope,
        ),
    ]


@pytest.mark.parametrize("columns", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("width", [3, 16, 50])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_products_match_matmul(columns, width, dtype):
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {}
    for name, function, expected in _products(_operands(dtype, columns=columns, width=width)):
        got = function()
        assert got.dtype == dtype, name
        torch.testing.assert_close(got, expected, **tolerance, msg=name)


def test_threads_give_the_same_bits(monkeypatch):
    monkeypatch.setattr(thin_kernel, "PARALLEL_MIN_WORK", 0)  # threads even for tiny work
    operands = _operands(torch.float64, batch=9, width=37)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [function() for _, function, _ in _products(operands)]
        torch.set_num_threads(3)
        three = [function() for _, function, _ in _products(operands)]
    finally:
        torch.set_num_threads(previous)
    for a, b in zip(one, three, strict=True):
        assert torch.equal(a, b)


def test_non_contiguous_operands_and_empty_batches():
    operands = _operands(torch.float64, width=16)
    transposed = operands["wide"].transpose(0, 1).contiguous().transpose(0, 1)
    assert not transposed.is_contiguous()
    torch.testing.assert_close(
        thin_kernel.combine(operands["rows"], transposed),
        operands["rows"].transpose(-1, -2) @ operands["wide"],
    )
    empty = _operands(torch.float64, batch=0)
    for name, function, expected in _products(empty):
        assert function().shape == expected.shape, name


def test_switch_off_and_tracing_use_matmul(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lamforge import kernels

    tensor = torch.zeros(2, dtype=torch.float64)
    assert thin_kernel.applies(tensor)
    assert not thin_kernel.applies(tensor.to(torch.int64))
    with kernels.use_fused(False):
        assert not thin_kernel.applies(tensor)
    with FakeTensorMode() as mode:
        assert not thin_kernel.applies(mode.from_tensor(tensor))
    monkeypatch.setattr(thin_kernel, "THIN_FUSED", False)
    assert not thin_kernel.applies(tensor)
    # The reference path gives the same values.
    for name, function, expected in _products(_operands(torch.float64)):
        torch.testing.assert_close(function(), expected, msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("skip_width", [None, 9, 18])
def test_contraction_training_derivatives_with_the_kernels(dtype, skip_width):
    """The contraction's value, force-like derivative and its derivative (the hand-written
    formulas on the Rust products) against autograd on plain operations; the environment-like
    left factor is a transposed view, as repinit passes it."""
    generator = torch.Generator().manual_seed(3)
    options = {"dtype": dtype, "generator": generator}
    rows = torch.randn(5, 23, 4, **options)
    z = torch.randn(5, 23, 18, **options)
    x = None if skip_width is None else torch.randn(5, 23, skip_width, **options)
    results = []
    for function in (contraction.tanh_contract, plain_contract):
        left_rows = rows.clone().requires_grad_()
        leaves = [left_rows, z.clone().requires_grad_()]
        if x is not None:
            leaves.append(x.clone().requires_grad_())
        left = left_rows.transpose(-1, -2)
        out = function(left, leaves[1], leaves[2] if x is not None else None)
        weight = torch.linspace(-1.0, 1.0, out.numel(), dtype=dtype).view_as(out)
        first = torch.autograd.grad((out * weight).sum(), leaves, create_graph=True)
        loss = (out**2).sum() + sum((g * g.detach().sin()).sum() for g in first)
        results.append([out, *first, *torch.autograd.grad(loss, leaves)])
    tolerance = 1e-12 if dtype == torch.float64 else 1e-4
    for ours, reference in zip(*results, strict=True):
        scale = max(float(reference.detach().abs().max()), 1.0)
        torch.testing.assert_close(ours, reference, rtol=0, atol=tolerance * scale)


RAGGED_COUNTS = [3, 0, 6, 1, 2]


def _ragged(dtype=torch.float64, columns=4, width=21, seed=2):
    """Ragged rows [P, m], values [P, n], item tensors [B, m, n] and offsets [B + 1]."""
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *RAGGED_COUNTS]).cumsum(0)
    total, items = int(offsets[-1]), len(RAGGED_COUNTS)
    options = {"dtype": dtype, "generator": generator}
    rows = torch.randn(total, columns, **options)
    up_rows = torch.randn(total, columns, **options)
    values = torch.randn(total, width, **options)
    y = torch.tanh(torch.randn(total, width, **options))
    upstream = torch.randn(total, width, **options)
    item = torch.randn(items, columns, width, **options)
    return offsets, rows, up_rows, values, y, upstream, item


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("columns", [1, 3, 4, 5])
def test_ragged_products_match_item_by_item(dtype, columns):
    # Every kernel on ragged items (0 to 6 rows) against the padded kernel on one item at a
    # time, the Rust core and the PyTorch reference of the ragged layout.
    offsets, rows, up_rows, values, y, upstream, item = _ragged(dtype, columns)
    bounds = list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))

    def per_item(function, *operands):
        pieces = []
        for b, (start, end) in enumerate(bounds):
            args = [x[b : b + 1] if x is item else x[start:end].unsqueeze(0) for x in operands]
            pieces.append(function(*args)[0])
        return pieces

    cases = {
        "combine": (thin_kernel.combine, (rows, values), True),
        "spread": (thin_kernel.spread, (rows, item), False),
        "spread_slope": (thin_kernel.spread_slope, (rows, item, y), False),
        "dot": (thin_kernel.dot, (item, values), False),
        "spread_slope_second": (
            thin_kernel.spread_slope_second,
            (rows, up_rows, item, y, upstream),
            False,
        ),
    }
    tolerance = {"rtol": 0, "atol": 1e-12 if dtype == torch.float64 else 1e-5}
    for name, (function, operands, per_item_output) in cases.items():
        pieces = per_item(function, *operands)
        expected = torch.stack(pieces) if per_item_output else torch.cat(pieces)
        got = function(*operands, offsets=offsets)
        torch.testing.assert_close(got, expected, **tolerance, msg=name)
        if name != "spread_slope_second":
            reference = function(*operands, offsets=offsets, reference=True)
            torch.testing.assert_close(reference, expected, **tolerance, msg=name)


@pytest.mark.parametrize("skip_width", [None, 9, 18])
def test_ragged_contraction_derivatives_match_item_by_item(skip_width):
    # tanh_contract_ragged against tanh_contract on one item at a time: the value, a force-like
    # derivative and its derivative (training), and a third derivative (the reference path).
    offsets, rows, _, _, _, _, _ = _ragged()
    generator = torch.Generator().manual_seed(9)
    z = torch.randn(rows.shape[0], 18, dtype=torch.float64, generator=generator)
    x = None
    if skip_width is not None:
        x = torch.randn(rows.shape[0], skip_width, dtype=torch.float64, generator=generator)
    bounds = list(zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True))

    def ragged(r, z_, x_):
        return contraction.tanh_contract_ragged(r, z_, x_, offsets)

    def one_at_a_time(r, z_, x_):
        outs = []
        for start, end in bounds:
            if start == end:  # an item without rows sums to zero
                outs.append(z_.new_zeros(r.shape[1], z_.shape[1]))
                continue
            left = r[start:end].transpose(0, 1).unsqueeze(0)
            skip = None if x_ is None else x_[start:end].unsqueeze(0)
            outs.append(contraction.tanh_contract(left, z_[start:end].unsqueeze(0), skip)[0])
        return torch.stack(outs)

    results = []
    for function in (ragged, one_at_a_time):
        leaves = [rows.clone().requires_grad_(), z.clone().requires_grad_()]
        if x is not None:
            leaves.append(x.clone().requires_grad_())
        out = function(leaves[0], leaves[1], leaves[2] if x is not None else None)
        weight = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
        first = torch.autograd.grad((out * weight).sum(), leaves, create_graph=True)
        loss = (out**2).sum() + sum((g * g.detach().sin()).sum() for g in first)
        second = torch.autograd.grad(loss, leaves, create_graph=True)
        third = torch.autograd.grad(sum((g**2).sum() for g in second), leaves)
        results.append([out, *first, *second, *third])
    for ours, reference in zip(*results, strict=True):
        scale = max(float(reference.detach().abs().max()), 1.0)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12 * scale)


def test_single_input_backward_drops_the_pre_activation():
    # Forces at inference (one plain backward): the same gradients without keeping z, and a
    # clear error for a differentiable backward of such a graph.
    from lamforge.nn.engine import single_input_backward

    generator = torch.Generator().manual_seed(5)
    rows = torch.randn(4, 11, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    z = torch.randn(4, 11, 12, dtype=torch.float64, generator=generator, requires_grad=True)
    x = torch.randn(4, 11, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    upstream = torch.randn(4, 4, 12, dtype=torch.float64, generator=generator)
    expected = torch.autograd.grad(
        contraction.tanh_contract(rows.transpose(-1, -2), z, x), (rows, z, x), upstream
    )
    with single_input_backward():
        out = contraction.tanh_contract(rows.transpose(-1, -2), z, x)
    node = out.grad_fn.next_functions[0][0]  # the contraction's node, under a view
    saved_sizes = sorted(t.numel() for t in node.saved_tensors)
    assert saved_sizes[0] == 0  # z is not kept
    got = torch.autograd.grad(out, (rows, z, x), upstream)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)
    with single_input_backward():
        out = contraction.tanh_contract(rows.transpose(-1, -2), z, x)
    with pytest.raises(RuntimeError, match="single_input_backward"):
        torch.autograd.grad(out, (rows, z, x), upstream, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_model_with_thin_kernels_equals_matmul(dtype, monkeypatch):
    # Energies, forces, virials and force-training weight gradients of the test model, kernels
    # on against off (the hand-written contraction lowered to the test model's small tensors).
    monkeypatch.setattr(layers, "HAND_DERIVATIVE_MIN_SIZE", 0)
    calls = []
    run = thin_kernel._run
    monkeypatch.setattr(
        thin_kernel, "_run", lambda kernel, *args: calls.append(kernel) or run(kernel, *args)
    )
    model = build_model("new", precision="float32" if dtype == torch.float32 else "float64")
    inputs = model_input([periodic_frame(), molecule_frame()], ELEMENTS, [(4.0, 40), (3.0, 20)])
    runs = force_loss_runs(
        model,
        inputs.to(dtype=dtype),
        lambda fused: monkeypatch.setattr(thin_kernel, "THIN_FUSED", fused),
    )
    assert_runs_agree(runs, dtype)
    assert set(calls) == {"combine", "spread", "dot", "spread_slope", "spread_slope_second"}


def test_core_rejects_unknown_kernels_and_misfit_operands():
    from lamforge import _core

    values = [torch.zeros(24, dtype=torch.float64).numpy(), torch.zeros(30).double().numpy()]
    out = torch.zeros(40, dtype=torch.float64).numpy()
    with pytest.raises(ValueError, match='thin kernel "nope"'):
        _core.thin("nope", 2, 3, 4, 5, values, out, 1)
    with pytest.raises(ValueError, match="Y has 29 values, expected 30"):
        _core.thin("combine", 2, 3, 4, 5, [values[0], values[1][:29]], out, 1)


def test_weights_pass_skips_the_environment_gradient(monkeypatch):
    """In ``loss.backward(inputs=parameters)`` the environment rows' gradient is not wanted: the
    contraction's backward passes leave it out, and the wanted gradients stay the same."""
    generator = torch.Generator().manual_seed(5)
    options = {"dtype": torch.float64, "generator": generator}
    positions = torch.randn(4, 19, 4, **options)
    z_leaf = torch.randn(4, 19, 10, **options).requires_grad_()
    x_leaf = torch.randn(4, 19, 5, **options).requires_grad_()
    asked = []
    wants = contraction.wants_gradient
    monkeypatch.setattr(
        contraction,
        "wants_gradient",
        lambda ctx, index: asked.append(wants(ctx, index)) or asked[-1],
    )
    results = []
    for skip in (True, False):
        if not skip:
            monkeypatch.setattr(contraction, "wants_gradient", lambda ctx, index: True)
        rows_leaf = positions.clone().requires_grad_()
        left = (rows_leaf * 1.0).transpose(-1, -2)  # not a leaf: like repinit's environment
        out = contraction.tanh_contract(left, z_leaf * 1.0, x_leaf * 1.0)
        (force,) = torch.autograd.grad(out.square().sum(), rows_leaf, create_graph=True)
        loss = force.sin().sum() + out.sum()
        z_leaf.grad = x_leaf.grad = None
        loss.backward(inputs=[z_leaf, x_leaf])
        results.append([z_leaf.grad.clone(), x_leaf.grad.clone()])
    assert asked == [False, False]  # both backward passes left the environment's gradient out
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)
