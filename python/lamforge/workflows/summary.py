"""The quickstart's record of its stages: timed, with metrics, saved as ``summary.json``."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(kw_only=True)
class Stage:
    """One step of a workflow.

    Attributes:
        name: Stage name (``data``, ``store``, ``pretrain``, ``finetune``, ``scratch``,
            ``distill``, ``md``).
        seconds: Wall-clock duration.
        metrics: JSON-serialisable numbers and small tables describing the result.
    """

    name: str
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class Summary:
    """Stages of one workflow run, in order."""

    stages: list[Stage] = field(default_factory=list)

    @contextmanager
    def stage(self, name: str) -> Iterator[Stage]:
        """Times a block as a stage; the block fills ``stage.metrics``."""
        stage = Stage(name=name)
        start = time.perf_counter()
        try:
            yield stage
        finally:
            stage.seconds = time.perf_counter() - start
            self.stages.append(stage)

    def save(self, path: Path) -> None:
        """Writes the summary as JSON, atomically."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(json.dumps({"stages": [asdict(s) for s in self.stages]}, indent=2))
        os.replace(temporary, path)

    def table(self) -> str:
        """A plain-text table of the stages, their durations and their metrics."""
        rows = [("stage", "seconds", "metrics")]
        for stage in self.stages:
            metrics = ", ".join(f"{key}={_short(value)}" for key, value in stage.metrics.items())
            rows.append((stage.name, f"{stage.seconds:.1f}", metrics))
        widths = [max(len(row[column]) for row in rows) for column in range(2)]
        lines = [f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]}" for row in rows]
        lines.insert(1, "-" * max(len(line) for line in lines))
        return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)
