"""Learning-rate schedule: linear warm-up, then exponential decay (deepmd-kit's ``exp`` schedule).

After ``warmup_steps`` steps that rise linearly from ``warmup_start_factor * start`` to ``start``,
the rate decays as ``start * rate ** floor(t / decay_steps)`` (or ``rate ** (t / decay_steps)``
with ``smooth``), never below ``stop``, where ``t`` counts steps after the warm-up. Unless
``decay_rate`` is given, ``rate`` is chosen so that the rate reaches ``stop`` at the last step:
``rate = (stop / start) ** (decay_steps / T)`` with ``T = total_steps - warmup_steps``. When
``decay_steps >= T`` the decay period is shortened to 100 steps (or ``T // 100 + 1`` for short
runs), as deepmd-kit does, so short runs still decay. The loss prefactors follow
``learning_rate / start`` (see :mod:`lamforge.train.loss`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class LearningRateConfig:
    """Exponential decay with optional warm-up.

    Attributes:
        start: Learning rate after the warm-up.
        stop: Learning rate at the last step (a floor when ``decay_rate`` is given).
        decay_steps: Steps between two decays.
        decay_rate: Explicit decay factor per ``decay_steps``; derived from ``stop`` when None.
        warmup_steps: Steps of linear warm-up.
        warmup_start_factor: The warm-up starts at this fraction of ``start``.
        smooth: Decay at every step instead of in stairs.
    """

    start: float = 1e-3
    stop: float = 3.51e-8
    decay_steps: int = 5000
    decay_rate: float | None = None
    warmup_steps: int = 0
    warmup_start_factor: float = 0.0
    smooth: bool = False

    def __post_init__(self) -> None:
        if self.start <= 0 or self.stop < 0:
            raise ValueError(f"start must be positive and stop non-negative ({self})")
        if self.decay_steps <= 0:
            raise ValueError(f"decay_steps must be positive, got {self.decay_steps}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be non-negative, got {self.warmup_steps}")


class ExponentialDecay:
    """The schedule of a run of ``total_steps`` steps; call it with a step index."""

    def __init__(self, config: LearningRateConfig, total_steps: int) -> None:
        if total_steps > 0 and config.warmup_steps >= total_steps:
            raise ValueError(
                f"warmup_steps ({config.warmup_steps}) must be smaller than the number of steps "
                f"({total_steps})"
            )
        self.config = config
        decay_total = max(total_steps - config.warmup_steps, 0)
        self.decay_steps = config.decay_steps
        if config.decay_rate is None and self.decay_steps >= decay_total:
            self.decay_steps = 100 if decay_total // 10 > 100 else decay_total // 100 + 1
        if config.decay_rate is not None:
            self.decay_rate = config.decay_rate
        elif decay_total == 0:
            self.decay_rate = 1.0
        else:
            stop = max(config.stop, 1e-10)
            self.decay_rate = math.exp(
                math.log(stop / config.start) / (decay_total / self.decay_steps)
            )

    def __call__(self, step: int) -> float:
        """Learning rate at ``step`` (0-based)."""
        config = self.config
        if step < config.warmup_steps:
            start = config.warmup_start_factor * config.start
            return start + (config.start - start) * step / config.warmup_steps
        t = step - config.warmup_steps
        exponent = t / self.decay_steps if config.smooth else t // self.decay_steps
        return max(config.start * self.decay_rate**exponent, config.stop)

    def factor(self, step: int) -> float:
        """Returns ``learning_rate(step) / start``.

        It is the multiplier of ``torch.optim.lr_scheduler.LambdaLR`` and the fraction of the way
        the loss prefactors still have to go.
        """
        return self(step) / self.config.start
