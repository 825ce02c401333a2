"""``DatasetWriter``: streams frames into a staging group, then moves it into the store atomically.

Frames are buffered until about one shard of atoms is pending, then appended to the arrays, so
memory stays bounded whatever the input size. After every flush ``progress.json`` records how many
frames (and how many from each source) are safely written; an interrupted import resumes from
there (``resume=True``) or restarts from nothing. ``commit`` writes the frame index and the group
attributes (``complete`` last) and renames the staging directory into the store: until then the
store itself is never modified.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import zarr
from ase.data import atomic_numbers, chemical_symbols
from zarr.codecs import ZstdCodec

from lamforge.data.format import (
    ARRAY_SPECS,
    COMPACT_ZSTD_LEVEL,
    INDEX_FILE,
    OPTIONAL_LABELS,
    SHARD_ATOMS,
    ZSTD_LEVEL,
    ZSTD_LEVELS,
    DatasetInfo,
    stored_arrays,
)
from lamforge.data.frames import Frame
from lamforge.data.index import index_frame, index_row, write_index

PROGRESS_FILE = "progress.json"
#: Suffix of a dataset moved aside while an overwrite puts its replacement in place.
REPLACED_SUFFIX = ".replaced"
_INDEX_PARTS = "index_parts"
_REQUIRED = ("atom_offsets", "positions", "atomic_numbers", "cell", "pbc", "energy", "has_energy")


def create_array(
    group: zarr.Group, name: str, length: int, zstd_level: int = ZSTD_LEVEL
) -> zarr.Array:
    """Creates array ``name`` of ``ARRAY_SPECS`` with ``length`` rows in ``group``."""
    spec = ARRAY_SPECS[name]
    chunks, shards = spec.chunks()
    return group.create_array(
        name,
        shape=(length, *spec.inner_shape),
        chunks=chunks,
        shards=shards,
        dtype=spec.dtype,
        compressors=ZstdCodec(level=zstd_level, checksum=True),
        fill_value=spec.fill_value,
        # Every shard file exists, even an all-NaN one, so a missing file means damage.
        config={"write_empty_chunks": True},
    )


class DatasetWriter:
    """Appends frames to a new dataset; use as a context manager or call ``commit``.

    Args:
        staging: Directory the dataset is built in (same file system as ``destination``).
        destination: Final group directory inside the store.
        info: Dataset attributes; counts, elements and labels are filled in at commit.
        resume: Continue the staged write left by an interrupted run instead of starting over.
        overwrite: Replace an existing dataset of the same name at commit.
        flush_atoms: Atoms buffered before they are written (one shard by default).
        zstd_level: zstd level of every array; ``format.FAST_ZSTD_LEVEL`` for hot training
            stores (faster random reads, about 5% larger). Readers need not know it.
    """

    def __init__(
        self,
        *,
        staging: Path,
        destination: Path,
        info: DatasetInfo,
        resume: bool = False,
        overwrite: bool = False,
        flush_atoms: int = SHARD_ATOMS,
        zstd_level: int = ZSTD_LEVEL,
    ) -> None:
        if zstd_level not in ZSTD_LEVELS:
            raise ValueError(
                f"zstd_level must be in {ZSTD_LEVELS.start}..{ZSTD_LEVELS.stop - 1}, "
                f"got {zstd_level}"
            )
        self.zstd_level = zstd_level
        self.staging = Path(staging)
        self.destination = Path(destination)
        self.info = info
        self.overwrite = overwrite
        self.flush_atoms = flush_atoms
        if self.destination.exists() and not overwrite:
            raise FileExistsError(
                f"dataset '{info.name}' already exists in {self.destination.parent} "
                "(overwrite it explicitly, or choose another name)"
            )
        self._buffer: list[Frame] = []
        self._buffered_atoms = 0
        if resume and (self.staging / PROGRESS_FILE).is_file():
            self._resume()
        else:
            self._start()

    # -- setup -----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.parent.mkdir(parents=True, exist_ok=True)
        self.group = zarr.open_group(self.staging, mode="w", attributes={"lamforge": {}})
        for name in _REQUIRED:
            create_array(self.group, name, 1 if name == "atom_offsets" else 0, self.zstd_level)
        self.group["atom_offsets"][0] = 0
        (self.staging / _INDEX_PARTS).mkdir()
        self.num_frames = 0
        self.num_atoms = 0
        self.frames_per_source: dict[str, int] = {}
        self._save_progress()

    def _resume(self) -> None:
        progress = json.loads((self.staging / PROGRESS_FILE).read_text())
        if progress["sources"] != list(self.info.source):
            raise ValueError(
                f"cannot resume dataset '{self.info.name}': the interrupted import read "
                f"{progress['sources']}, this one reads {list(self.info.source)}"
            )
        # Imports interrupted before the level was recorded were written at the compact level.
        written = progress.get("zstd_level", COMPACT_ZSTD_LEVEL)
        if written != self.zstd_level:
            raise ValueError(
                f"cannot resume dataset '{self.info.name}': the interrupted import wrote zstd "
                f"level {written}, this one asks for {self.zstd_level}"
            )
        self.group = zarr.open_group(self.staging, mode="r+")
        self.num_frames = int(progress["num_frames"])
        self.num_atoms = int(progress["num_atoms"])
        self.frames_per_source = dict(progress["frames_per_source"])
        # Drop whatever an interrupted flush wrote beyond the last recorded state.
        for name in stored_arrays(self.staging):
            spec = ARRAY_SPECS[name]
            length = self.num_atoms if spec.per_atom else self.num_frames
            length += name == "atom_offsets"
            self.group[name].resize((length, *spec.inner_shape))
        parts = sorted((self.staging / _INDEX_PARTS).glob("*.parquet"))
        for part in parts[progress["num_parts"] :]:
            part.unlink()

    def _save_progress(self) -> None:
        progress = {
            "sources": list(self.info.source),
            "num_frames": self.num_frames,
            "num_atoms": self.num_atoms,
            "frames_per_source": self.frames_per_source,
            "num_parts": len(list((self.staging / _INDEX_PARTS).glob("*.parquet"))),
            "zstd_level": self.zstd_level,
        }
        temporary = self.staging / f".{PROGRESS_FILE}.partial"
        temporary.write_text(json.dumps(progress))
        os.replace(temporary, self.staging / PROGRESS_FILE)

    # -- writing ---------------------------------------------------------------------------------

    def frames_done(self, source: str) -> int:
        """Frames of ``source`` already written (to skip when resuming)."""
        return self.frames_per_source.get(source, 0)

    def add(self, frame: Frame, *, check: bool = True) -> None:
        """Buffers one frame; writes when about a shard of atoms is pending.

        Args:
            frame: The frame.
            check: Run ``Frame.check`` first (False when the caller already did).

        Raises:
            FrameError: if a field has the wrong shape or a non-finite value.
        """
        if check:
            frame.check()
        self._buffer.append(frame)
        self._buffered_atoms += frame.num_atoms
        if self._buffered_atoms >= self.flush_atoms:
            self.flush()

    def flush(self) -> None:
        """Appends the buffered frames to the arrays and records the progress."""
        if not self._buffer:
            return
        frames, self._buffer, self._buffered_atoms = self._buffer, [], 0
        columns = _columns(frames)
        for label in OPTIONAL_LABELS:
            if columns[f"has_{label}"].any() and label not in stored_arrays(self.staging):
                self._add_optional(label)
        num_new = len(frames)
        counts = np.array([frame.num_atoms for frame in frames], dtype=np.int64)
        columns["atom_offsets"] = self.num_atoms + np.cumsum(counts)
        for name in stored_arrays(self.staging):
            array = self.group[name]
            spec = ARRAY_SPECS[name]
            start = self.num_atoms if spec.per_atom else self.num_frames
            start += name == "atom_offsets"
            stop = start + (int(counts.sum()) if spec.per_atom else num_new)
            array.resize((stop, *spec.inner_shape))
            array[start:stop] = columns[name]
        rows = [index_row(frame, self.num_frames + i) for i, frame in enumerate(frames)]
        part = len(list((self.staging / _INDEX_PARTS).glob("*.parquet")))
        index_frame(rows).write_parquet(self.staging / _INDEX_PARTS / f"{part:08d}.parquet")
        self.num_frames += num_new
        self.num_atoms += int(counts.sum())
        for frame in frames:
            self.frames_per_source[frame.source] = frame.source_index + 1
        self._save_progress()

    def _add_optional(self, label: str) -> None:
        """Creates an optional label's array and mask, filled as missing for earlier frames."""
        spec = ARRAY_SPECS[label]
        length = self.num_atoms if spec.per_atom else self.num_frames
        array = create_array(self.group, label, length, self.zstd_level)
        mask = create_array(self.group, f"has_{label}", self.num_frames, self.zstd_level)
        step = spec.chunks()[1][0]
        for start in range(0, length, step):
            stop = min(start + step, length)
            array[start:stop] = np.full((stop - start, *spec.inner_shape), np.nan)
        if self.num_frames:
            mask[:] = False

    # -- commit ----------------------------------------------------------------------------------

    def commit(self) -> DatasetInfo:
        """Writes the index and attributes and moves the dataset into the store.

        Returns:
            The attributes of the committed dataset.
        """
        self.flush()
        parts = sorted((self.staging / _INDEX_PARTS).glob("*.parquet"))
        index = pl.concat([pl.read_parquet(part) for part in parts]) if parts else index_frame([])
        write_index(index, self.staging / INDEX_FILE)
        # From the index, not the atomic_numbers array, which may not fit in memory.
        symbols = index["elements"].explode().drop_nulls().unique().to_list()
        numbers = sorted(atomic_numbers[symbol] for symbol in symbols)
        labels = {"energy": int(np.count_nonzero(self.group["has_energy"][:]))}
        for label in OPTIONAL_LABELS:
            present = f"has_{label}" in stored_arrays(self.staging)
            labels[label] = int(np.count_nonzero(self.group[f"has_{label}"][:])) if present else 0
        info = _replace(
            self.info,
            elements=tuple(chemical_symbols[z] for z in numbers),
            num_frames=self.num_frames,
            num_atoms=self.num_atoms,
            labels=labels,
            complete=False,
        )
        self.group.attrs["lamforge"] = info.to_json()
        shutil.rmtree(self.staging / _INDEX_PARTS)
        (self.staging / PROGRESS_FILE).unlink()
        info = _replace(info, complete=True)
        # The completeness marker is written last; the rename below publishes the dataset.
        self.group.attrs["lamforge"] = info.to_json()
        self._publish()
        return info

    def _publish(self) -> None:
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        if self.destination.exists():
            if not self.overwrite:
                raise FileExistsError(f"dataset '{self.info.name}' appeared while writing it")
            # Two renames, not one: between them the old dataset waits in the staging area, and
            # ``Store.open`` puts it back if the process died right there.
            retired = self.staging.with_name(f"{self.staging.name}{REPLACED_SUFFIX}")
            os.replace(self.destination, retired)
            os.replace(self.staging, self.destination)
            shutil.rmtree(retired)
        else:
            os.replace(self.staging, self.destination)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        # On error the staging directory stays for ``resume``; the store is untouched.
        if kind is None:
            self.commit()


def _replace(info: DatasetInfo, **changes: Any) -> DatasetInfo:
    from dataclasses import replace

    return replace(info, **changes)


def _columns(frames: list[Frame]) -> dict[str, np.ndarray]:
    """The buffered frames as one array per stored array (missing labels as NaN)."""
    columns: dict[str, np.ndarray] = {
        "positions": np.concatenate([f.positions for f in frames]).astype(np.float64),
        "atomic_numbers": np.concatenate([f.atomic_numbers for f in frames]).astype(np.uint8),
        "cell": np.stack([f.cell for f in frames]).astype(np.float64),
        "pbc": np.stack([f.pbc for f in frames]).astype(bool),
        "energy": np.array([np.nan if f.energy is None else f.energy for f in frames]),
        "has_energy": np.array([f.energy is not None for f in frames]),
    }
    for label in OPTIONAL_LABELS:
        spec = ARRAY_SPECS[label]
        values = []
        for frame in frames:
            value = getattr(frame, label)
            shape = ((frame.num_atoms,) if spec.per_atom else ()) + spec.inner_shape
            values.append(np.full(shape, np.nan) if value is None else np.asarray(value, float))
        columns[label] = np.concatenate(values) if spec.per_atom else np.stack(values)
        columns[f"has_{label}"] = np.array([getattr(f, label) is not None for f in frames])
    return columns
