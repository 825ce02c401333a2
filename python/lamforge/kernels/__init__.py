"""Fused Triton kernels for the DPA-2 hot path, each beside its plain-PyTorch reference.

```python
import lamforge.kernels as kernels
kernels.use_fused(None)    # default: fused ops on CUDA, reference ops on CPU
kernels.use_fused(False)   # reference everywhere (e.g. to compare); also a context manager
```

Ops (one module each; raw Triton kernel -> ``torch.ops.lamforge.*`` custom op with a fake
implementation -> autograd Function whose backward is itself differentiable):

* ``environment``: environment matrix, smooth switch and normalisation from edge vectors.
* ``aggregate``: the repformer's neighbour gather + reductions (g1 convolution, grrg/drrd pair
  moments).
* ``attention``: the gated pair-attention map of the repformer.

The op modules import Triton, which decides at import whether kernels are compiled or
interpreted (``TRITON_INTERPRET=1``), so they load lazily on the first fused call; importing
``lamforge.kernels`` (as ``lamforge.nn`` does) never imports Triton.
"""

from lamforge.kernels.switch import (
    core_kernel_applies,
    fused_enabled,
    fused_setting,
    interpreting,
    use_fused,
)

__all__ = [
    "core_kernel_applies",
    "environment_matrix",
    "fused_enabled",
    "fused_setting",
    "gather_outer_sum",
    "gather_product_sum",
    "interpreting",
    "pair_attention_weights",
    "use_fused",
]


def environment_matrix(*args, **kwargs):
    """:func:`lamforge.kernels.environment.environment_matrix` (loads Triton on first use)."""
    from lamforge.kernels.environment import environment_matrix as fused

    return fused(*args, **kwargs)


def gather_product_sum(*args, **kwargs):
    """:func:`lamforge.kernels.aggregate.gather_product_sum` (loads Triton on first use)."""
    from lamforge.kernels.aggregate import gather_product_sum as fused

    return fused(*args, **kwargs)


def gather_outer_sum(*args, **kwargs):
    """:func:`lamforge.kernels.aggregate.gather_outer_sum` (loads Triton on first use)."""
    from lamforge.kernels.aggregate import gather_outer_sum as fused

    return fused(*args, **kwargs)


def pair_attention_weights(*args, **kwargs):
    """:func:`lamforge.kernels.attention.pair_attention_weights` (loads Triton on first use)."""
    from lamforge.kernels.attention import pair_attention_weights as fused

    return fused(*args, **kwargs)
