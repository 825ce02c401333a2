"""Fixtures of the data-engine tests."""

from __future__ import annotations

import pytest

from lamforge.data.demo import DemoConfig, demo_tasks


@pytest.fixture(scope="session")
def demo():
    """The four demo tasks, 6 frames each (EMT labels with stress for periodic tasks)."""
    return {task.name: task for task in demo_tasks(DemoConfig(frames_per_task=6, seed=3))}
