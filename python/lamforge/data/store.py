"""``Store``: a collection of datasets in one Zarr v3 hierarchy (see ``lamforge.data.format``).

Example::

    store = Store.open("data.zarr", create=True)
    with store.writer(DatasetInfo(name="water"), overwrite=False) as writer:
        for frame in frames:
            writer.add(frame)
    batch = store.reader("water").read_frames([0, 5, 7])
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import polars as pl
import zarr

from lamforge.data.format import (
    INDEX_FILE,
    SCHEMA_VERSION,
    STORE_MARKER,
    ZSTD_LEVEL,
    DatasetInfo,
)
from lamforge.data.index import write_index
from lamforge.data.reader import DatasetReader
from lamforge.data.writer import PROGRESS_FILE, REPLACED_SUFFIX, DatasetWriter

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_dataset_name(name: str) -> str:
    """Returns ``name`` if it is a valid dataset name (letters, digits, ``_ . -``)."""
    if not _NAME.match(name):
        raise ValueError(
            f"invalid dataset name {name!r}: use letters, digits, '_', '.', '-' "
            "and start with a letter or digit"
        )
    return name


class Store:
    """A lamforge store on the local file system.

    Use ``Store.open``; ``path`` is the store's root directory.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: Path | str, *, create: bool = False) -> Store:
        """Opens a store, creating an empty one when ``create`` is true and it does not exist.

        Raises:
            FileNotFoundError: if there is no store at ``path`` and ``create`` is false.
            ValueError: if ``path`` holds something that is not a lamforge store.
        """
        path = Path(path)
        marker = path / "zarr.json"
        if not marker.is_file():
            if not create:
                raise FileNotFoundError(f"no lamforge store at {path}")
            if path.exists() and any(path.iterdir()):
                raise ValueError(f"{path} exists, is not empty and is not a lamforge store")
            zarr.open_group(
                path, mode="w", attributes={STORE_MARKER: {"schema_version": SCHEMA_VERSION}}
            )
        group = zarr.open_group(path, mode="r")
        store_attributes = dict(group.attrs).get(STORE_MARKER)
        if not store_attributes:
            raise ValueError(f"{path} is a zarr hierarchy but not a lamforge store")
        if store_attributes.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(
                f"{path} has lamforge-store schema version {store_attributes.get('schema_version')}"
                f"; this lamforge reads version {SCHEMA_VERSION}"
            )
        store = cls(path)
        store._recover()
        return store

    def _recover(self) -> None:
        """Finishes an overwrite that died between its two renames (see ``DatasetWriter``)."""
        if not self.staging_root.is_dir():
            return
        for retired in self.staging_root.glob(f"*{REPLACED_SUFFIX}"):
            original = self.path / retired.name.removesuffix(REPLACED_SUFFIX)
            if original.exists():
                shutil.rmtree(retired)  # the replacement is in place; the old copy is garbage
            else:
                os.replace(retired, original)  # the replacement never arrived: restore the old

    @property
    def staging_root(self) -> Path:
        """Where datasets are built before they are moved in (beside the store, same disk)."""
        return self.path.parent / f".{self.path.name}.staging"

    def datasets(self) -> list[str]:
        """Names of the complete datasets, sorted."""
        names = []
        for child in sorted(self.path.iterdir()):
            if (child / "zarr.json").is_file() and (child / INDEX_FILE).is_file():
                names.append(child.name)
        return names

    def __contains__(self, name: str) -> bool:
        return name in self.datasets()

    def reader(self, name: str) -> DatasetReader:
        """Opens dataset ``name`` for reading.

        Raises:
            KeyError: naming the datasets that exist, if ``name`` is not one of them.
        """
        if name not in self.datasets():
            raise KeyError(
                f"no dataset '{name}' in store {self.path}; it has {self.datasets() or 'none'}"
            )
        return DatasetReader(self.path / name)

    def info(self, name: str) -> DatasetInfo:
        """Attributes of dataset ``name``."""
        return self.reader(name).info

    def index(self, name: str) -> pl.DataFrame:
        """Frame index of dataset ``name``."""
        return self.reader(name).index()

    def write_index(self, name: str, index: pl.DataFrame) -> None:
        """Replaces the index of ``name`` atomically (e.g. with a ``split`` column filled)."""
        reader = self.reader(name)
        if index.height != reader.num_frames or not index["frame"].equals(reader.index()["frame"]):
            raise ValueError(f"new index of '{name}' does not list the dataset's frames in order")
        write_index(index, self.path / name / INDEX_FILE)

    def has_interrupted_write(self, name: str) -> bool:
        """True when an interrupted write of ``name`` can be resumed."""
        return (self.staging_root / name / PROGRESS_FILE).is_file()

    def writer(
        self,
        info: DatasetInfo,
        *,
        resume: bool = False,
        overwrite: bool = False,
        zstd_level: int = ZSTD_LEVEL,
    ) -> DatasetWriter:
        """A writer for a new dataset ``info.name`` (see ``DatasetWriter``).

        ``zstd_level=format.FAST_ZSTD_LEVEL`` writes a hot training store: faster random reads,
        about 5% larger.
        """
        check_dataset_name(info.name)
        return DatasetWriter(
            staging=self.staging_root / info.name,
            destination=self.path / info.name,
            info=info,
            resume=resume,
            overwrite=overwrite,
            zstd_level=zstd_level,
        )

    def delete(self, name: str) -> None:
        """Removes dataset ``name`` (first renamed out of the store, so never half-deleted)."""
        if name not in self.datasets():
            raise KeyError(f"no dataset '{name}' in store {self.path}")
        self.staging_root.mkdir(exist_ok=True)
        retired = self.staging_root / f"{name}.deleted"
        if retired.exists():
            shutil.rmtree(retired)
        os.replace(self.path / name, retired)
        shutil.rmtree(retired)
