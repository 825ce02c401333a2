"""The exponential learning-rate schedule follows deepmd-kit's definition."""

import math

import pytest

from lamforge.train.schedule import ExponentialDecay, LearningRateConfig


def test_reaches_stop_at_the_last_step_in_stairs():
    config = LearningRateConfig(start=1e-3, stop=1e-6, decay_steps=100)
    schedule = ExponentialDecay(config, total_steps=1000)
    assert schedule(0) == 1e-3
    assert schedule(99) == 1e-3
    assert schedule(100) == pytest.approx(1e-3 * schedule.decay_rate)
    assert schedule(1000) == pytest.approx(1e-6, rel=1e-9)
    assert schedule.decay_rate == pytest.approx((1e-6 / 1e-3) ** (100 / 1000))


def test_paper_example_decay_rate():
    # The shipped DPA-2 examples: 1e6 steps, decay every 5000, 1e-3 -> 3.51e-8: rate ~0.95.
    schedule = ExponentialDecay(LearningRateConfig(), total_steps=1_000_000)
    assert schedule.decay_rate == pytest.approx(0.95, abs=0.001)


def test_explicit_rate_and_floor():
    config = LearningRateConfig(start=1.0, stop=0.3, decay_steps=1, decay_rate=0.5)
    schedule = ExponentialDecay(config, total_steps=10)
    assert [schedule(t) for t in range(4)] == [1.0, 0.5, 0.3, 0.3]


def test_smooth_and_warmup():
    config = LearningRateConfig(
        start=1.0, stop=0.01, decay_steps=10, warmup_steps=4, warmup_start_factor=0.5, smooth=True
    )
    schedule = ExponentialDecay(config, total_steps=104)
    assert [schedule(t) for t in range(4)] == [0.5, 0.625, 0.75, 0.875]
    assert schedule(4) == 1.0
    assert schedule(9) == pytest.approx(schedule.decay_rate ** (5 / 10))
    assert schedule(104) == pytest.approx(0.01)
    assert schedule.factor(104) == pytest.approx(0.01)


def test_short_run_shortens_the_decay_period():
    schedule = ExponentialDecay(LearningRateConfig(decay_steps=5000), total_steps=500)
    assert schedule.decay_steps == 6  # 500 // 100 + 1, as deepmd-kit
    assert schedule.decay_rate == pytest.approx((3.51e-8 / 1e-3) ** (6 / 500))
    assert math.isclose(schedule(500), 1e-3 * schedule.decay_rate ** (500 // 6), rel_tol=1e-12)


def test_bad_settings():
    with pytest.raises(ValueError, match="decay_steps"):
        LearningRateConfig(decay_steps=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        ExponentialDecay(LearningRateConfig(warmup_steps=10), total_steps=10)
