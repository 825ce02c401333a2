"""Every example configuration parses into its config type (distill*.yaml: DistillConfig)."""

from pathlib import Path

import pytest

from lamforge.config import load_yaml
from lamforge.distill.config import DistillConfig
from lamforge.train.config import RunConfig

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_parses(path):
    if path.name.startswith("distill"):
        config = load_yaml(DistillConfig, path)
        assert config.loop.max_iterations > 0
    else:
        config = load_yaml(RunConfig, path)
        assert config.data.tasks
    assert config.trainer.steps > 0


def test_examples_exist():
    assert len(EXAMPLES) >= 3
