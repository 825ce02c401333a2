"""``DatasetReader``: random and sequential access to the frames of one dataset.

A read that fails to decode (truncated shard, flipped bytes: the zstd and crc32c checksums catch
both) raises ``StoreCorruptionError`` naming the dataset, the array, the inner chunk and the shard
file at fault.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import zarr

from lamforge.data.format import (
    ARRAY_SPECS,
    DENSE_ARRAYS,
    INDEX_FILE,
    OPTIONAL_LABELS,
    DatasetInfo,
    stored_arrays,
)
from lamforge.data.frames import Frame, FrameBatch
from lamforge.data.index import read_index


class StoreCorruptionError(RuntimeError):
    """An array of a dataset cannot be decoded; the message names array, chunk and shard file."""


class DatasetReader:
    """Reads one complete dataset.

    Args:
        path: The dataset's group directory inside the store.

    Raises:
        ValueError: if the group is not a complete lamforge dataset of a readable schema version.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.group = zarr.open_group(self.path, mode="r")
        attributes = dict(self.group.attrs).get("lamforge")
        if not attributes or not attributes.get("complete"):
            raise ValueError(f"{self.path} is not a complete lamforge dataset")
        self.info = DatasetInfo.from_json(attributes)
        self.atom_offsets = self._read("atom_offsets", slice(None))
        self.labels = tuple(label for label in OPTIONAL_LABELS if label in stored_arrays(path))

    @property
    def num_frames(self) -> int:
        """Number of frames."""
        return self.info.num_frames

    @property
    def num_atoms(self) -> int:
        """Total number of atoms."""
        return self.info.num_atoms

    def index(self) -> pl.DataFrame:
        """The frame index (see ``lamforge.data.index``)."""
        return read_index(self.path / INDEX_FILE)

    def array_names(self) -> list[str]:
        """Names of the arrays this dataset stores."""
        return stored_arrays(self.path)

    def _read(self, name: str, selection: slice | np.ndarray) -> np.ndarray:
        array = self.group[name]
        try:
            if isinstance(selection, slice):
                return np.asarray(array[selection])
            return np.asarray(array.get_orthogonal_selection((selection,)))
        except Exception as error:
            raise self._locate_corruption(name, selection, error) from error

    def _locate_corruption(
        self, name: str, selection: slice | np.ndarray, error: Exception
    ) -> Exception:
        """Finds the first inner chunk of the selection that fails to decode."""
        array = self.group[name]
        chunk_rows, shard_rows = ARRAY_SPECS[name].chunks()[0][0], ARRAY_SPECS[name].chunks()[1][0]
        if isinstance(selection, slice):
            start, stop, _ = selection.indices(array.shape[0])
            chunks = np.arange(start // chunk_rows, -(-stop // chunk_rows))
        else:
            chunks = np.unique(np.asarray(selection) // chunk_rows)
        for chunk in chunks:
            start = int(chunk) * chunk_rows
            try:
                array[start : min(start + chunk_rows, array.shape[0])]
            except Exception as chunk_error:
                shard = start // shard_rows
                suffix = "/0" * (array.ndim - 1)
                return StoreCorruptionError(
                    f"dataset '{self.info.name}', array '{name}': inner chunk {int(chunk)} "
                    f"(rows {start}..{start + chunk_rows - 1}) in shard file "
                    f"{self.path / name / 'c'}/{shard}{suffix} cannot be decoded: {chunk_error}"
                )
        return StoreCorruptionError(f"dataset '{self.info.name}', array '{name}': {error}")

    def read_frames(self, frame_ids: Sequence[int] | np.ndarray) -> FrameBatch:
        """Reads frames by id, in the given order.

        Args:
            frame_ids: [F] frame ids (``0 <= id < num_frames``), any order, repeats allowed.

        Returns:
            The frames, atoms concatenated in the order of ``frame_ids``.
        """
        ids = np.asarray(frame_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_frames):
            raise IndexError(
                f"dataset '{self.info.name}' has {self.num_frames} frames; "
                f"asked for ids {ids.min()}..{ids.max()}"
            )
        starts, stops = self.atom_offsets[ids], self.atom_offsets[ids + 1]
        counts = stops - starts
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        atoms = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
        return self._batch(ids, offsets, atoms, ids)

    def iter_batches(self, frames_per_batch: int = 4096) -> Iterator[FrameBatch]:
        """Reads the whole dataset in order, ``frames_per_batch`` frames at a time."""
        for start in range(0, self.num_frames, frames_per_batch):
            stop = min(start + frames_per_batch, self.num_frames)
            first, last = int(self.atom_offsets[start]), int(self.atom_offsets[stop])
            offsets = self.atom_offsets[start : stop + 1] - first
            yield self._batch(
                np.arange(start, stop), offsets, slice(first, last), slice(start, stop)
            )

    def iter_frames(self, frames_per_batch: int = 4096) -> Iterator[Frame]:
        """Every frame in order."""
        for batch in self.iter_batches(frames_per_batch):
            yield from batch.frames()

    def _batch(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        atoms: slice | np.ndarray,
        frames: slice | np.ndarray,
    ) -> FrameBatch:
        def optional(name: str, selection: slice | np.ndarray) -> np.ndarray | None:
            return self._read(name, selection) if name in self.labels else None

        def mask(label: str) -> np.ndarray:
            if label in self.labels:
                return self._read(f"has_{label}", frames)
            return np.zeros(len(ids), dtype=bool)

        return FrameBatch(
            frame_ids=ids,
            atom_offsets=offsets,
            positions=self._read("positions", atoms),
            atomic_numbers=self._read("atomic_numbers", atoms),
            cell=self._read("cell", frames),
            pbc=self._read("pbc", frames),
            energy=self._read("energy", frames),
            has_energy=self._read("has_energy", frames),
            forces=optional("forces", atoms),
            has_forces=mask("forces"),
            virial=optional("virial", frames),
            has_virial=mask("virial"),
            charges=optional("charges", atoms),
            magnetic_moments=optional("magnetic_moments", atoms),
        )

    def missing_shards(self) -> list[str]:
        """Shard files of ``DENSE_ARRAYS`` that the shapes call for but that are absent (damage)."""
        missing = []
        for name in DENSE_ARRAYS:
            array = self.group[name]
            shard_rows = ARRAY_SPECS[name].chunks()[1][0]
            suffix = "/0" * (array.ndim - 1)
            for shard in range(-(-array.shape[0] // shard_rows)):
                relative = f"{name}/c/{shard}{suffix}"
                if not (self.path / relative).is_file():
                    missing.append(relative)
        return missing
