"""Typed config loading: round trips, and errors that name the key path."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from lamforge.config import ConfigError, from_dict, load_yaml, save_yaml, to_dict


@dataclass(frozen=True, kw_only=True)
class Inner:
    rate: float = 1.0
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    heads: dict[str, Inner] = field(default_factory=dict)
    output: Path | None = None
    pair: tuple[float, int] = (0.5, 1)
    flags: list[bool] = field(default_factory=list)

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be non-negative")


def test_round_trip(tmp_path):
    config = Outer(
        name="x", steps=3, inner=Inner(rate=2, mode="b", sizes=(4,)),
        heads={"water": Inner(rate=0.1)}, output=Path("out"), pair=(1.5, 2), flags=[True],
    )  # fmt: skip
    assert from_dict(Outer, to_dict(config)) == config
    save_yaml(config, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == config
    assert isinstance(from_dict(Outer, {"name": "x", "inner": {"rate": 2}}).inner.rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "stepz": 1}, r"config: unknown key\(s\) \['stepz'\]"),
        ({"name": "x", "inner": {"rte": 1}}, r"config.inner: unknown key\(s\) \['rte'\]"),
        ({"name": "x", "inner": {"mode": "c"}}, r"config.inner.mode: must be one of"),
        ({"name": "x", "steps": 1.5}, r"config.steps: expected an integer"),
        ({"name": "x", "steps": True}, r"config.steps: expected an integer"),
        ({"name": "x", "inner": {"sizes": [1, "2"]}}, r"config.inner.sizes\[1\]"),
        ({"name": "x", "heads": {"w": {"rate": "fast"}}}, r"config.heads.w.rate"),
        ({"name": "x", "pair": [1.0]}, r"config.pair: expected 2 items"),
        ({"steps": 1}, r"missing required key 'name'"),
        ({"name": "x", "steps": -1}, r"config: steps must be non-negative"),
        ({"name": "x", "inner": 3}, r"config.inner: expected a mapping"),
    ],
)
def test_errors_name_the_key_path(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ninner:\n  rate: [1\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_yaml(Outer, path)
    path.write_text("name: x\nsteps: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.steps: expected an integer"):
        load_yaml(Outer, path)
