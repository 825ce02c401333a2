"""Helpers of the data-engine tests (imported by the test modules of this folder)."""

from __future__ import annotations

from collections.abc import Iterable

from lamforge.data.format import DatasetInfo
from lamforge.data.frames import Frame, frame_from_atoms
from lamforge.data.store import Store


def frames_of(task) -> list[Frame]:
    return [
        frame_from_atoms(atoms, source=task.name, source_index=i)
        for i, atoms in enumerate(task.frames)
    ]


def write_dataset(
    store: Store, name: str, frames: Iterable[Frame], *, flush_atoms: int | None = None, **info
):
    frames = list(frames)
    sources = tuple(dict.fromkeys(frame.source for frame in frames))
    writer = store.writer(DatasetInfo(name=name, source=sources, **info))
    if flush_atoms is not None:
        writer.flush_atoms = flush_atoms
    for frame in frames:
        writer.add(frame)
    return writer.commit()
