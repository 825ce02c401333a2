"""Every example configuration parses into a RunConfig."""

from pathlib import Path

import pytest

from lamforge.config import load_yaml
from lamforge.train.config import RunConfig

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_example_parses(path):
    config = load_yaml(RunConfig, path)
    assert config.data.tasks
    assert config.trainer.steps > 0


def test_examples_exist():
    assert len(EXAMPLES) >= 3
