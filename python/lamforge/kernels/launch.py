"""Small helpers shared by the kernel wrappers: argument checks and exact scalar passing."""

from __future__ import annotations

import numpy as np
import torch

FLOAT_DTYPES = (torch.float32, torch.float64)


def split_scalar(value: float) -> tuple[float, float]:
    """``value`` as a float32 pair (hi, lo) with hi + lo == value to ~1e-15 relative.

    Triton passes Python floats as float32 kernel arguments; a float64 kernel adds the two parts
    in float64 to recover cutoffs such as 3.14 without a float32 rounding (and without building a
    device tensor per call, which CUDA graph capture forbids from host data).
    """
    hi = float(np.float32(value))
    return hi, float(np.float32(value - hi))


def check_float(name: str, tensor: torch.Tensor, dtype: torch.dtype, device: torch.device) -> None:
    """Raise a ValueError naming ``name`` when ``tensor`` has the wrong dtype or device."""
    if tensor.dtype != dtype or tensor.device != device:
        raise ValueError(
            f"lamforge.kernels: {name} is {tensor.dtype} on {tensor.device}, expected {dtype} on "
            f"{device}"
        )
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"lamforge.kernels: {name} must be float32 or float64, got {dtype}")


def check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Raise a ValueError naming ``name`` when ``tensor`` is not of ``shape``."""
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"lamforge.kernels: {name} has shape {tuple(tensor.shape)}, expected {shape}"
        )


def next_power_of_two(value: int, minimum: int = 1) -> int:
    """The smallest power of two >= max(value, minimum) (Triton block sizes)."""
    value = max(int(value), minimum)
    return 1 << (value - 1).bit_length()
