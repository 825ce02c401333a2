"""What the running autograd backward will use, for hand-written backward passes.

:func:`wants_gradient` asks the engine; :func:`single_input_backward` and
:func:`input_gradients_only` are promises of the caller (:func:`lamforge.nn.evaluate` makes them
for forces at inference), per thread.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_state = threading.local()


@contextlib.contextmanager
def _flag(name: str) -> Iterator[None]:
    """Sets the thread's flag ``name`` inside the block (restored after, nesting included)."""
    previous = getattr(_state, name, False)
    setattr(_state, name, True)
    try:
        yield
    finally:
        setattr(_state, name, previous)


@contextlib.contextmanager
def single_input_backward() -> Iterator[None]:
    """Forward passes run inside keep only what one backward for the inputs needs.

    For ``autograd.grad(energy, positions)`` without ``create_graph`` (forces and virials at
    inference, :func:`lamforge.nn.evaluate`): the fused three-body net then saves each row's
    factor of the upstream gradient instead of every activation, and the embedding contraction
    (:mod:`lamforge.nn.contraction`) does not keep its pre-activation. A graph built inside must
    be differentiated once, inside :func:`input_gradients_only`, without ``create_graph``
    (anything else is an error).
    """
    with _flag("single_input_backward"):
        yield


@contextlib.contextmanager
def input_gradients_only() -> Iterator[None]:
    """Backward passes run inside compute no parameter gradients of the fused kernels.

    A custom autograd function cannot always tell which of its inputs' gradients the running
    backward wants, so it computes every one that requires grad. ``torch.autograd.grad(energy,
    positions)`` (the forces, :func:`lamforge.nn.evaluate`) wants none of the parameters'; run
    inside this context the three-body kernel skips their reverse sweep (a third of its
    first-order cost). CPU backward passes run on the calling thread, which this flag belongs to.
    Only wrap ``autograd.grad`` calls whose ``inputs`` are not parameters.
    """
    with _flag("inputs_only"):
        yield


def in_single_input_backward() -> bool:
    """Whether this thread runs inside :func:`single_input_backward`."""
    return getattr(_state, "single_input_backward", False)


def in_input_gradients_only() -> bool:
    """Whether this thread runs inside :func:`input_gradients_only`."""
    return getattr(_state, "inputs_only", False)


def wants_gradient(ctx, index: int) -> bool:
    """Whether the running backward uses the gradient of input ``index`` of ``ctx``'s node.

    ``ctx.needs_input_grad`` only says that the input requires grad. In the weights' pass of
    training on forces (``loss.backward(inputs=parameters)``) the gradients that lead only to the
    positions are not wanted, and the engine will not run their nodes; a custom backward can then
    skip computing them. Where the engine cannot tell (a leaf input under ``torch.autograd.grad``)
    the answer is True.
    """
    if not ctx.needs_input_grad[index]:
        return False
    node = ctx.next_functions[index][0]
    if node is None:
        return True
    try:
        return torch._C._will_engine_execute_node(node)
    except RuntimeError:  # a leaf under torch.autograd.grad: not supported by the engine
        return True
