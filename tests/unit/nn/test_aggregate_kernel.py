"""The Rust neighbour reductions (``lamforge.nn.aggregate_kernel``) against PyTorch references.

Values, first and second derivatives (``gradcheck`` / ``gradgradcheck`` in float64, the same
formulas as the reference path in float32), with several threads and an empty index.
"""

import dataclasses

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

from lamforge.nn import aggregate_kernel, repformers
from lamforge.nn.aggregate_kernel import gather_outer_sum, gather_product_sum
from lamforge.testing.reference_neighbors import model_input


def _inputs(dtype=torch.float64, centres=5, slots=4, nodes=6, width=7, columns=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, nodes, (centres, slots), generator=generator)
    pair = torch.randn(centres, slots, width, generator=generator, dtype=dtype)
    left = torch.randn(centres, slots, columns, generator=generator, dtype=dtype)
    node = torch.randn(nodes, width, generator=generator, dtype=dtype)
    return index, pair, left, node


def _product_reference(pair, node, index):
    return torch.sum(pair * node[index], dim=1)


def _outer_reference(left, node, index):
    return torch.matmul(left.transpose(-1, -2), node[index])


@pytest.mark.parametrize("threads", [1, 3])
def test_values_match_the_references(threads, monkeypatch):
    monkeypatch.setattr(aggregate_kernel, "PARALLEL_MIN_WORK", 0)  # threads even for tiny work
    index, pair, left, node = _inputs()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.testing.assert_close(
            gather_product_sum(pair, node, index), _product_reference(pair, node, index)
        )
        torch.testing.assert_close(
            gather_outer_sum(left, node, index), _outer_reference(left, node, index)
        )
    finally:
        torch.set_num_threads(previous)


def test_first_and_second_derivatives_pass_gradcheck():
    index, pair, left, node = _inputs(centres=3, slots=3, nodes=4, width=5, columns=2)
    for tensor in (pair, left, node):
        tensor.requires_grad_(True)
    product = lambda p, n: gather_product_sum(p, n, index)  # noqa: E731
    outer = lambda columns, n: gather_outer_sum(columns, n, index)  # noqa: E731
    assert torch.autograd.gradcheck(product, (pair, node))
    assert torch.autograd.gradgradcheck(product, (pair, node))
    assert torch.autograd.gradcheck(outer, (left, node))
    assert torch.autograd.gradgradcheck(outer, (left, node))


def _force_training_gradients(function, operands, index):
    """Parameter gradients of a force-like loss: derivative of a derivative, then backward."""
    leaves = [t.detach().clone().requires_grad_(True) for t in operands]
    weight = torch.linspace(-1.0, 1.0, 7, dtype=leaves[0].dtype)
    energy = (torch.tanh(function(*leaves, index)).sum(-1) * weight[: len(leaves)].sum()).sum()
    first = torch.autograd.grad(energy, leaves, create_graph=True)
    loss = sum((g * g).sum() for g in first)
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize(
    ("dtype", "threads"), [(torch.float64, 1), (torch.float32, 1), (torch.float64, 2)]
)
def test_derivative_of_derivative_matches_the_reference(dtype, threads, monkeypatch):
    monkeypatch.setattr(aggregate_kernel, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)  # what the kernels are given
    index, pair, left, node = _inputs(dtype=dtype, centres=9, slots=6, nodes=11, width=16)
    relative = 1e-12 if dtype == torch.float64 else 1e-5
    for fused, reference, first in (
        (gather_product_sum, _product_reference, pair),
        (gather_outer_sum, _outer_reference, left),
    ):
        got = _force_training_gradients(fused, (first, node), index)
        expected = _force_training_gradients(reference, (first, node), index)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=relative * float(b.abs().max()))


def _ragged_inputs(dtype=torch.float64, identity=False):
    """Centres of 2, 0, 3, 1 and 4 pairs over 7 nodes (or the identity index: node = pair)."""
    generator = torch.Generator().manual_seed(4)
    offsets = torch.tensor([0, 2, 2, 5, 6, 10])
    num_pairs = int(offsets[-1])
    index = None if identity else torch.randint(0, 7, (num_pairs,), generator=generator)
    pair = torch.randn(num_pairs, 5, generator=generator, dtype=dtype)
    left = torch.randn(num_pairs, 3, generator=generator, dtype=dtype)
    node = torch.randn(num_pairs if identity else 7, 5, generator=generator, dtype=dtype)
    return index, offsets, pair, left, node


def _ragged_reference(offsets, values):
    """Σ over each centre's pairs by a Python loop."""
    bounds = zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
    return torch.stack([values[start:end].sum(0) for start, end in bounds])


@pytest.mark.parametrize("identity", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_ragged_layout_matches_the_references(identity, threads, monkeypatch):
    # Values against a loop over the centres' pairs, the force-training gradients against the
    # PyTorch reference of the same layout, and gradcheck / gradgradcheck.
    monkeypatch.setattr(aggregate_kernel, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    index, offsets, pair, left, node = _ragged_inputs(identity=identity)
    gathered = node if index is None else node[index]
    torch.testing.assert_close(
        gather_product_sum(pair, node, index, offsets),
        _ragged_reference(offsets, pair * gathered),
    )
    torch.testing.assert_close(
        gather_outer_sum(left, node, index, offsets),
        _ragged_reference(offsets, left.unsqueeze(-1) * gathered.unsqueeze(-2)),
    )
    for function, first in ((gather_product_sum, pair), (gather_outer_sum, left)):

        def call(a, b, function=function):
            return function(a, b, index, offsets)

        runs = []
        for fused in (True, False):
            monkeypatch.setattr(aggregate_kernel, "AGGREGATE_FUSED", fused)
            runs.append(_force_training_gradients(lambda a, b, _: call(a, b), (first, node), None))
        for got, expected in zip(*runs, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
        monkeypatch.setattr(aggregate_kernel, "AGGREGATE_FUSED", True)
        leaves = (first.clone().requires_grad_(True), node.clone().requires_grad_(True))
        assert torch.autograd.gradcheck(call, leaves)
        assert torch.autograd.gradgradcheck(call, leaves)


def test_ragged_layout_errors_name_the_offsets():
    index, offsets, pair, _, node = _ragged_inputs()
    with pytest.raises(ValueError, match="offsets run from 0 to 9, expected 0 to 10"):
        gather_product_sum(pair, node, index, torch.tensor([0, 2, 2, 5, 6, 9]))
    with pytest.raises(ValueError, match="offsets decrease at item 1"):
        gather_product_sum(pair, node, index, torch.tensor([0, 2, 1, 5, 6, 10]))
    with pytest.raises(ValueError, match="needs offsets"):
        gather_product_sum(pair, node, None)


def test_empty_index_and_bad_index():
    node = torch.randn(4, 3, dtype=torch.float64)
    empty = torch.zeros(0, 5, dtype=torch.int64)
    assert gather_product_sum(torch.zeros(0, 5, 3, dtype=torch.float64), node, empty).shape == (
        0,
        3,
    )
    bad = torch.tensor([[0, 4]])
    with pytest.raises(ValueError, match=r"index\[1\] = 4 outside the node table's 4 rows"):
        gather_product_sum(torch.zeros(1, 2, 3, dtype=torch.float64), node, bad)


def test_switch_off_and_other_devices_use_the_reference(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lamforge import kernels

    tensor = torch.zeros(2, dtype=torch.float64)
    assert aggregate_kernel.applies(tensor)
    assert not aggregate_kernel.applies(tensor.to(torch.int64))
    with kernels.use_fused(False):  # what the export program asks for
        assert not aggregate_kernel.applies(tensor)
    with FakeTensorMode() as mode:  # tracers pass tensor subclasses
        assert not aggregate_kernel.applies(mode.from_tensor(tensor))
    monkeypatch.setattr(aggregate_kernel, "AGGREGATE_FUSED", False)
    assert not aggregate_kernel.applies(tensor)


@pytest.mark.parametrize(
    ("variant", "smooth", "dtype"),
    [
        ("new", True, torch.float64),
        ("new", False, torch.float64),
        ("old_strip", True, torch.float64),
        ("incr_direct", False, torch.float64),
        ("new", True, torch.float32),
        ("attention_free", True, torch.float64),
        ("attention_free", False, torch.float64),
        ("attention_free_old", True, torch.float64),
        ("attention_free_old", False, torch.float64),
        ("attention_free", True, torch.float32),
    ],
)
def test_model_with_rust_aggregation_equals_pytorch_ops(variant, smooth, dtype, monkeypatch):
    # Energies, forces, virials and the weight gradients of a force loss of the test model, in
    # centre groups (group size lowered to 8 atoms), Rust reductions against PyTorch operations.
    monkeypatch.setattr(repformers, "CENTER_GROUP_ATOMS", 8)
    model = build_model(variant, precision="float32" if dtype == torch.float32 else "float64")
    if not smooth:
        config = dataclasses.replace(
            model.config, descriptor=dataclasses.replace(model.config.descriptor, smooth=False)
        )
        state = model.state_dict()
        model = type(model)(config)
        model.load_state_dict(state)
    batch = [periodic_frame(), slab_frame(), molecule_frame()]
    inputs = model_input(batch, ELEMENTS, [(4.0, 40), (3.0, 20)]).to(dtype=dtype)
    runs = force_loss_runs(
        model, inputs, lambda fused: monkeypatch.setattr(aggregate_kernel, "AGGREGATE_FUSED", fused)
    )
    assert_runs_agree(runs, dtype)
