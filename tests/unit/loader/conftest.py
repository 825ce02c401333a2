"""Fixtures of the loader tests: a session-wide store of three small datasets."""

from __future__ import annotations

import pytest
from loader_helpers import LoaderStore, random_frames, write_store

from lamforge.data.format import COMPACT_ZSTD_LEVEL


def three_datasets():
    """Three datasets: triclinic bulk, slabs periodic in x and y, molecules without a cell."""
    return {
        "bulk": random_frames(1, 60, (2, 24), (True, True, True)),
        "slab": random_frames(2, 25, (6, 30), (True, True, False)),
        "molecules": random_frames(3, 40, (1, 12), (False, False, False)),
    }


@pytest.fixture(scope="session")
def loader_store(tmp_path_factory: pytest.TempPathFactory) -> LoaderStore:
    """``three_datasets`` at the default zstd level."""
    frames = three_datasets()
    path = write_store(tmp_path_factory.mktemp("loader") / "store.zarr", frames)
    return LoaderStore(path=path, frames=frames)


@pytest.fixture(scope="session")
def compact_loader_store(tmp_path_factory: pytest.TempPathFactory) -> LoaderStore:
    """The same frames written at ``COMPACT_ZSTD_LEVEL`` (an archival store)."""
    frames = three_datasets()
    path = tmp_path_factory.mktemp("compact") / "store.zarr"
    path = write_store(path, frames, COMPACT_ZSTD_LEVEL)
    return LoaderStore(path=path, frames=frames)
