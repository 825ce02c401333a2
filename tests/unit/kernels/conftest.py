"""Kernel tests run the Triton kernels on CPU tensors in Triton's interpreter.

Triton decides at kernel-decoration time whether a kernel is compiled or interpreted, so
``TRITON_INTERPRET=1`` must be set before ``lamforge.kernels``' op modules are imported; this
conftest is imported by pytest before the test modules of this folder. Nothing else in the test
suite imports Triton kernels (``lamforge.kernels`` loads them lazily on the first fused call),
and the variable only matters to Triton, so the rest of the session is unaffected. On a CUDA
machine the ``gpu``-marked tests need compiled kernels: run them in their own process with
``LAMFORGE_KERNELS_COMPILED=1`` (``benches/gpu/run.sh`` does).
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if os.environ.get("LAMFORGE_KERNELS_COMPILED") != "1":
    if any(name.startswith("lamforge.kernels.") and name != "lamforge.kernels.switch"
           for name in sys.modules):  # fmt: skip
        raise RuntimeError("lamforge.kernels ops were imported before TRITON_INTERPRET was set")
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


COMPILED = os.environ.get("LAMFORGE_KERNELS_COMPILED") == "1"  # as kernel_helpers.COMPILED


@pytest.fixture(scope="session")
def device() -> torch.device:
    """CPU under the interpreter, CUDA when the compiled kernels are tested."""
    if COMPILED:
        if not torch.cuda.is_available():
            pytest.skip("LAMFORGE_KERNELS_COMPILED=1 needs a CUDA device")
        return torch.device("cuda")
    return torch.device("cpu")
