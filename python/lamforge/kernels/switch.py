"""The switch between the plain-PyTorch reference path and the fused Triton ops.

``use_fused(None)`` (the default) means: fused on CUDA tensors, reference on CPU tensors.
``use_fused(True)`` forces the fused ops (on CPU they need ``TRITON_INTERPRET=1`` set before
``lamforge.kernels`` loads its kernels: Triton decides at decoration time whether a kernel is
compiled or interpreted); ``use_fused(False)`` forces the reference path everywhere.

The switch is process-wide, like ``torch.backends`` flags: the model reads it at every call, so
``torch.compile`` guards on it and recompiles when it changes. ``use_fused`` also works as a
context manager that restores the previous setting on exit.
"""

from __future__ import annotations

import importlib.util
import os

import torch

_setting: bool | None = None
# Looked up once: torch.compile cannot trace importlib, and the answer does not change.
_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None


class use_fused:  # noqa: N801 - used like a function (torch.no_grad style)
    """Set the switch: True (fused), False (reference) or None (fused on CUDA only).

    Usable as a plain call (``use_fused(True)``) or as ``with use_fused(False): ...``.
    """

    def __init__(self, enabled: bool | None) -> None:
        global _setting
        if enabled not in (True, False, None):
            raise ValueError(f"use_fused takes True, False or None, got {enabled!r}")
        self._previous = _setting
        _setting = enabled

    def __enter__(self) -> use_fused:
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _setting
        _setting = self._previous


def fused_setting() -> bool | None:
    """The current switch value (True, False or None)."""
    return _setting


def triton_installed() -> bool:
    """Whether the ``triton`` package can be imported."""
    return _TRITON_INSTALLED


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def fused_enabled(tensor: torch.Tensor) -> bool:
    """Whether the model should take the fused path for an input living where ``tensor`` lives.

    Raises:
        RuntimeError: fused ops were forced on (``use_fused(True)``) but cannot run here.
    """
    if _setting is False:
        return False
    if _setting is None:
        return tensor.is_cuda and _TRITON_INSTALLED
    if torch.compiler.is_compiling():
        return True  # the host-side checks below ran when the same code ran eagerly
    if not _TRITON_INSTALLED:
        raise RuntimeError("use_fused(True): the fused ops need the `triton` package")
    if not tensor.is_cuda and not interpreting():
        raise RuntimeError(
            f"use_fused(True) with a {tensor.device.type} tensor: Triton runs on CUDA devices, or "
            "on the CPU only in its interpreter (set TRITON_INTERPRET=1 before importing lamforge)"
        )
    return True


def core_kernel_applies(tensor: torch.Tensor, function: str) -> bool:
    """Whether the Rust core's CPU kernel ``lamforge._core.<function>`` can run on ``tensor``.

    A plain CPU tensor of float64 or float32, not while tracing (``torch.compile``,
    ``torch.export``, ``make_fx`` and TorchScript see PyTorch operations only: tracers pass tensor
    subclasses), not inside ``use_fused(False)`` (reference operations everywhere, as the export
    program asks), and a build of the core that has the kernel.
    """
    if not (
        type(tensor) is torch.Tensor
        and tensor.device.type == "cpu"
        and tensor.dtype in (torch.float64, torch.float32)
        and _setting is not False
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    ):
        return False
    from lamforge import _core

    return hasattr(_core, function)
