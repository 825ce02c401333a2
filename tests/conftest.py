"""Shared fixtures: the location of the real DFT data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` relative to the repository root; skips the test when it is absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"real DFT data not found at {SHARED_DATA} (the steering repo's shared/data)")
    return SHARED_DATA
