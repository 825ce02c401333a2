"""What the running autograd backward will use, for hand-written backward passes."""

from __future__ import annotations

import torch


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
