"""The shipped-example presets equal deepmd-kit's example inputs (translated by the interop)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamforge.interop.deepmd_config import model_config
from lamforge.nn import dpa2_large, dpa2_medium, dpa2_small

REFERENCE = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "deepmd-configs"
CASES = {
    "input_torch_small.json": dpa2_small,
    "input_torch_medium.json": dpa2_medium,
    "input_torch_large.json": dpa2_large,
    # deepmd-kit's own normalisation of the small input: every default written out.
    "out_small_normalized_by_dp.json": dpa2_small,
}


def without_comments(value):
    """deepmd-kit ignores keys starting with an underscore (``_comment``) in its inputs."""
    if isinstance(value, dict):
        return {k: without_comments(v) for k, v in value.items() if not k.startswith("_")}
    return value


@pytest.mark.parametrize("name", list(CASES))
def test_preset_equals_deepmd_example(name):
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"deepmd-kit example configs not found at {REFERENCE}")
    params = without_comments(json.loads(path.read_text())["model"])
    translated = model_config({"default": params})
    assert translated == CASES[name](tuple(params["type_map"]))
