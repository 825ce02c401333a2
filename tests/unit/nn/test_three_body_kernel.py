"""The fused three-body net (Rust) against the same net in PyTorch operations.

The kernel replaces autograd's graph of the repinit three-body net by three hand-written nodes
(forward, the force path, its derivative for training on forces). Each order is compared with
autograd through plain PyTorch: values, gradients with respect to the cosines and every
parameter, and the second-order gradients a force loss needs.
"""

from __future__ import annotations

import pytest
import torch
from tests.unit.nn.nn_helpers import (
    ELEMENTS,
    assert_runs_agree,
    build_model,
    force_loss_runs,
    molecule_frame,
    periodic_frame,
    slab_frame,
)

from lamforge.nn import three_body_kernel as kernel
from lamforge.nn.layers import DenseLayer
from lamforge.testing.reference_neighbors import model_input

# (widths after the first layer, resnet_dt): doubling skips with timesteps (the shipped 2-4-8),
# an identity skip then a doubling one, and a layer without skip.
NETS = [((2, 4, 8), True), ((3, 3, 6), False), ((4, 5), False)]


def _layers(widths, resnet_dt, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    layers = [
        DenseLayer(
            1 + 6,  # cosine + two 3-wide type embeddings: only row 0 is used by the kernel
            widths[0],
            bias=False,  # the bias is part of the table
            activation="tanh",
            resnet=True,
            dtype=dtype,
            generator=generator,
        )
    ]
    for num_in, num_out in zip(widths[:-1], widths[1:], strict=False):
        layers.append(
            DenseLayer(
                num_in,
                num_out,
                activation="tanh",
                resnet=True,
                use_timestep=resnet_dt,
                dtype=dtype,
                generator=generator,
            )
        )
    return layers


def _rows(num_rows, num_types, num_segments, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    cosine = (torch.rand(num_rows, generator=generator, dtype=dtype) * 2 - 1).requires_grad_()
    weight = torch.rand(num_rows, generator=generator, dtype=dtype) + 0.5
    row_type = torch.randint(num_types, (num_rows,), generator=generator)
    segment = torch.randint(num_segments, (num_rows,), generator=generator)
    return cosine, weight, row_type, segment


def _reference(cosine, weight, row_type, segment, num_segments, table, layers):
    """The same sum through PyTorch operations (autograd differentiates it)."""
    x = torch.tanh(table[row_type] + cosine.unsqueeze(-1) * layers[0].weight[0])
    for layer in layers[1:]:
        x = layer(x)
    contributions = (weight * cosine).unsqueeze(-1) * x
    return x.new_zeros(num_segments, x.shape[-1]).index_add(0, segment, contributions)


def _orders(function, cosine, table, layers, upstream, direction):
    """Value, first-order gradients and the gradients of a force-like loss of ``function``.

    The "force loss" is Σ direction · ∂(Σ upstream ⊙ out)/∂cosine, differentiated with respect
    to the cosines, the upstream gradient and every parameter (what training on forces does).
    """
    params = [table] + [p for layer in layers for p in layer.parameters()]
    out = function()
    first = torch.autograd.grad((out * upstream).sum(), [cosine, *params], create_graph=True)
    force_loss = (first[0] * direction).sum()
    second = torch.autograd.grad(force_loss, [cosine, upstream, *params], allow_unused=True)
    return out, first, second


@pytest.mark.parametrize(("widths", "resnet_dt"), NETS)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_fused_net_matches_pytorch_to_second_order(widths, resnet_dt, num_threads):
    dtype = torch.float64
    layers = _layers(widths, resnet_dt, dtype, seed=3)
    num_types, num_segments = 5, 7
    # 300 rows: full blocks of 16 and a partial one; several threads' chunks.
    cosine, weight, row_type, segment = _rows(300, num_types, num_segments, dtype, seed=4)
    table = torch.randn(num_types, widths[0], dtype=dtype, requires_grad=True)
    upstream = torch.randn(num_segments, widths[-1], dtype=dtype, requires_grad=True)
    direction = torch.randn(300, dtype=dtype)
    args = (cosine, weight, row_type, segment, num_segments, table, layers)
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        fused = _orders(
            lambda: kernel.three_body_sum(*args), cosine, table, layers, upstream, direction
        )
    finally:
        torch.set_num_threads(threads)
    expected = _orders(lambda: _reference(*args), cosine, table, layers, upstream, direction)
    assert torch.allclose(fused[0], expected[0], rtol=0, atol=1e-13)
    for order in (1, 2):
        for got, want in zip(fused[order], expected[order], strict=True):
            want = torch.zeros_like(got) if want is None else want
            assert got is not None
            assert torch.allclose(got, want, rtol=1e-11, atol=1e-12)


def test_fused_net_in_float32():
    dtype = torch.float32
    layers = _layers((2, 4, 8), True, dtype, seed=5)
    cosine, weight, row_type, segment = _rows(100, 3, 4, dtype, seed=6)
    table = torch.randn(3, 2, dtype=dtype, requires_grad=True)
    upstream = torch.randn(4, 8, dtype=dtype, requires_grad=True)
    direction = torch.randn(100, dtype=dtype)
    args = (cosine, weight, row_type, segment, 4, table, layers)
    fused = _orders(
        lambda: kernel.three_body_sum(*args), cosine, table, layers, upstream, direction
    )
    expected = _orders(lambda: _reference(*args), cosine, table, layers, upstream, direction)
    assert fused[0].dtype == torch.float32
    assert torch.allclose(fused[0], expected[0], rtol=1e-5, atol=1e-6)
    for got, want in zip(fused[2], expected[2], strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_parameter_gradients_are_not_differentiable_a_third_time():
    layers = _layers((2, 4, 8), True, torch.float64, seed=7)
    cosine, weight, row_type, segment = _rows(20, 3, 2, torch.float64, seed=8)
    table = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    out = kernel.three_body_sum(cosine, weight, row_type, segment, 2, table, layers)
    (table_grad,) = torch.autograd.grad(out.square().sum(), table, create_graph=True)
    with pytest.raises(NotImplementedError, match="parameter gradients are not differentiable"):
        torch.autograd.grad(table_grad.sum(), table)


def test_input_gradients_only_skips_parameter_gradients_not_forces():
    layers = _layers((2, 4, 8), True, torch.float64, seed=9)
    cosine, weight, row_type, segment = _rows(50, 3, 2, torch.float64, seed=10)
    table = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    out = kernel.three_body_sum(cosine, weight, row_type, segment, 2, table, layers)
    (expected,) = torch.autograd.grad(out.sum(), cosine, retain_graph=True)
    with kernel.input_gradients_only():
        (got,) = torch.autograd.grad(out.sum(), cosine, retain_graph=True)
        assert torch.equal(got, expected)
        # Inside, the parameters get no gradient from the fused node at all.
        (none,) = torch.autograd.grad(out.sum(), table, allow_unused=True, retain_graph=True)
        assert none is None
    (table_grad,) = torch.autograd.grad(out.sum(), table)
    assert table_grad.abs().sum() > 0


def test_constant_row_weights_are_required():
    layers = _layers((2, 4, 8), True, torch.float64, seed=11)
    cosine, weight, row_type, segment = _rows(10, 3, 2, torch.float64, seed=12)
    table = torch.randn(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="row weights must be constants"):
        kernel.three_body_sum(cosine, weight.requires_grad_(), row_type, segment, 2, table, layers)


def test_out_of_range_rows_name_the_row():
    layers = _layers((2, 4, 8), True, torch.float64, seed=13)
    cosine, weight, row_type, segment = _rows(10, 3, 2, torch.float64, seed=14)
    segment[4] = 9
    with pytest.raises(ValueError, match="row 4: segment 9 outside"):
        kernel.three_body_sum(
            cosine, weight, row_type, segment, 2, torch.randn(3, 2, dtype=torch.float64), layers
        )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_model_with_fused_three_body_equals_pytorch_ops(dtype, monkeypatch):
    # The DPA-2 test model (three-body branch in concat mode, pair list): energies, forces,
    # virials and the weight gradients of a force loss, fused against PyTorch operations.
    model = build_model("new", precision="float32" if dtype == torch.float32 else "float64")
    batch = [periodic_frame(), slab_frame(), molecule_frame()]
    inputs = model_input(batch, ELEMENTS, [(4.0, 40), (3.0, 20)]).to(dtype=dtype)
    layers = model.descriptor.three_body.embedding.layers

    def use_fused(fused):
        monkeypatch.setattr(kernel, "THREE_BODY_FUSED", fused)
        assert kernel.fused_applies(layers, torch.device("cpu")) is fused

    runs = force_loss_runs(model, inputs, use_fused)
    assert any(name.startswith("descriptor.three_body.") for name in runs[0][1])
    assert_runs_agree(runs, dtype)


def test_single_input_backward_keeps_only_the_cosine_factors():
    layers = _layers((2, 4, 8), True, torch.float64, seed=15)
    cosine, weight, row_type, segment = _rows(70, 3, 4, torch.float64, seed=16)
    table = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 8, dtype=torch.float64)
    args = (cosine, weight, row_type, segment, 4, table, layers)
    expected_out = kernel.three_body_sum(*args)
    (expected,) = torch.autograd.grad(expected_out, cosine, upstream)
    with kernel.single_input_backward():
        out = kernel.three_body_sum(*args)
    assert torch.equal(out, expected_out)
    with kernel.input_gradients_only():
        (got,) = torch.autograd.grad(out, cosine, upstream)
    assert torch.allclose(got, expected, rtol=0, atol=1e-14)
    message = r"once, inside input_gradients_only\(\), without create_graph"
    for create_graph in (True, False):
        with kernel.single_input_backward():
            out = kernel.three_body_sum(*args)
        # create_graph, or outside input_gradients_only (parameter gradients may be wanted).
        with pytest.raises(RuntimeError, match=message):
            torch.autograd.grad(out, cosine, upstream, create_graph=create_graph)


def test_no_grad_gives_the_same_sums_without_a_graph():
    layers = _layers((2, 4, 8), True, torch.float64, seed=17)
    cosine, weight, row_type, segment = _rows(40, 3, 3, torch.float64, seed=18)
    table = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    args = (cosine, weight, row_type, segment, 3, table, layers)
    with torch.no_grad():
        plain = kernel.three_body_sum(*args)
    assert not plain.requires_grad
    assert torch.equal(plain, kernel.three_body_sum(*args).detach())


def test_weights_pass_without_the_cosines_gradient_matches(monkeypatch):
    """Training on forces backpropagates ``loss.backward(inputs=parameters)``: the cosines come
    from the positions, so the fused node's backward skips their gradient (and the tangents).
    The parameters' gradients equal those of a backward that computes it."""
    dtype = torch.float64
    layers = _layers((2, 4, 8), True, dtype, seed=15)
    positions, weight, row_type, segment = _rows(120, 3, 5, dtype, seed=16)
    table = torch.randn(3, 2, dtype=dtype, requires_grad=True)
    params = [table] + [p for layer in layers for p in layer.parameters()]
    direction = torch.randn(120, dtype=dtype)
    asked = []
    wants = kernel.wants_gradient
    monkeypatch.setattr(
        kernel, "wants_gradient", lambda ctx, index: asked.append(wants(ctx, index)) or asked[-1]
    )
    results = []
    for skip in (True, False):
        if not skip:
            monkeypatch.setattr(kernel, "wants_gradient", lambda ctx, index: True)
        cosine = positions.detach().sin().requires_grad_()  # not a leaf of the weights' pass
        rows = (cosine * 1.0, weight, row_type, segment, 5)
        out = kernel.three_body_sum(*rows, table, layers)
        (force,) = torch.autograd.grad(out.square().sum(), cosine, create_graph=True)
        loss = (force * direction).sum() + out.sum()
        for p in params:
            p.grad = None
        loss.backward(inputs=params)
        results.append([p.grad.clone() for p in params])
    assert asked == [False]  # the weights' pass skipped the cosines' gradient
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-14)
