"""Reference checkpoints trained by deepmd-kit, built once and cached for the parity tests.

Training and deepmd-kit's own inference run in a subprocess (``deepmd_reference.py``): deepmd-kit
imports raise deprecation warnings, which this test suite turns into errors, and it changes
torch's global thread settings. The results (checkpoints plus ``reference-*.npz`` predictions) go
into pytest's cache directory under a key that hashes the deepmd-kit version and the reference
scripts, so a second test run reuses them; ``--cache-clear`` (or running with ``-p
no:cacheprovider``, then a temporary directory) retrains.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import deepmd_reference  # noqa: E402

#: Cases trained by the default (not slow) parity tests, in one builder run.
DEFAULT_CASES = ("small", "paper", "options", "mptrj", "multitask")


def _deepmd_version() -> str | None:
    if importlib.util.find_spec("deepmd") is None:
        return None
    try:
        return importlib.metadata.version("deepmd-kit")
    except importlib.metadata.PackageNotFoundError:
        return None


class ReferenceModels:
    """Lazily trained deepmd-kit reference cases in one work directory."""

    def __init__(self, shared_data: Path, workdir: Path) -> None:
        self.shared_data = shared_data
        self.workdir = workdir

    def build(self, names: tuple[str, ...]) -> None:
        """Train and evaluate the cases not built yet (one subprocess for all of them)."""
        todo = [name for name in names if not (self.workdir / name / "done").is_file()]
        if not todo:
            return
        environment = {**os.environ, **deepmd_reference.SINGLE_THREAD_ENVIRONMENT}
        environment["PYTHONWARNINGS"] = "ignore"
        command = [sys.executable, str(HERE / "deepmd_reference.py")]
        command += [str(self.shared_data), str(self.workdir), *todo]
        result = subprocess.run(
            command, env=environment, capture_output=True, text=True, timeout=1800, check=False
        )
        if result.returncode != 0:
            pytest.fail(
                f"building deepmd-kit reference cases {todo} failed (exit {result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        for name in todo:
            (self.workdir / name / "done").touch()

    def case_directory(self, name: str) -> Path:
        """The directory with ``model.ckpt-2.pt`` and ``reference-*.npz`` of a case."""
        self.build(DEFAULT_CASES if name in DEFAULT_CASES else (name,))
        return self.workdir / name


@pytest.fixture(scope="session")
def deepmd_models(
    shared_data: Path, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ReferenceModels:
    """deepmd-kit reference models; skips when deepmd-kit or the shared data are missing."""
    version = _deepmd_version()
    if version is None:
        pytest.skip("deepmd-kit is not installed (pip install '.[test]'): no parity reference")
    sources = "".join(
        (HERE / name).read_text() for name in ("deepmd_cases.py", "deepmd_reference.py")
    )
    key = hashlib.sha256((version + sources).encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        workdir = cache.mkdir(f"deepmd-reference-{key}")
        for stale in workdir.parent.glob("deepmd-reference-*"):
            if stale != workdir:  # built by an older deepmd-kit or reference script
                shutil.rmtree(stale, ignore_errors=True)
    else:
        workdir = tmp_path_factory.mktemp("deepmd-reference")
    return ReferenceModels(shared_data, workdir)
