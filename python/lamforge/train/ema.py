"""Exponential moving average of model weights (optional in training).

``shadow = decay * shadow + (1 - decay) * weight`` after every optimiser step. Validation and the
saved "best" model can use the averaged weights, which are usually smoother and more accurate late
in training. Buffers (statistics, energy biases) are copied, not averaged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ExponentialMovingAverage:
    """EMA of the floating-point parameters of ``model``."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model = model
        self.decay = decay
        self.shadow = {
            name: parameter.detach().clone() for name, parameter in model.named_parameters()
        }

    @torch.no_grad()
    def update(self) -> None:
        """Moves the average towards the current weights."""
        for name, parameter in self.model.named_parameters():
            self.shadow[name].lerp_(parameter.detach(), 1.0 - self.decay)

    @contextmanager
    def averaged(self) -> Iterator[nn.Module]:
        """Temporarily loads the averaged weights into the model."""
        saved = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                parameter.copy_(self.shadow[name])
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for name, parameter in self.model.named_parameters():
                    parameter.copy_(saved[name])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores the averaged weights."""
        for name, value in state.items():
            self.shadow[name].copy_(value)
