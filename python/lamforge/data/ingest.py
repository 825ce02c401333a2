"""``import_sources``: input files and directories into one new dataset of a store.

The one function behind ``lamforge data import`` and the quickstart's store stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from tqdm.auto import tqdm

from lamforge.data.format import ZSTD_LEVEL, DatasetInfo
from lamforge.data.importers import expand_sources, iter_source
from lamforge.data.store import Store
from lamforge.data.units import InputUnits


def import_sources(
    store: Store,
    info: DatasetInfo,
    paths: Sequence[Path],
    *,
    units: InputUnits | None = None,
    format: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    zstd_level: int = ZSTD_LEVEL,
) -> DatasetInfo:
    """Streams every frame of ``paths`` into the new dataset ``info.name``.

    Args:
        store: Destination store.
        info: Attributes of the dataset; ``source`` is set to the resolved input paths.
        paths: Files ASE reads and directories of DeePMD systems, imported in order.
        units: Units of the inputs (default eV and Å).
        format: ``ase.io`` format of the files (guessed when omitted).
        resume: Continue an interrupted import of the same inputs.
        overwrite: Replace an existing dataset of that name once the import is complete.
        progress: Show a progress bar.
        zstd_level: zstd level of the arrays (``format.ZSTD_LEVEL``: fast random reads;
            ``format.COMPACT_ZSTD_LEVEL``: about 5% smaller files).

    Returns:
        The attributes of the committed dataset.

    Raises:
        DataImportError: naming the file, frame and field of bad input; the store is unchanged
            and the partial import can be resumed.
    """
    sources = expand_sources(list(paths))
    info = replace(info, source=tuple(str(source) for source in sources))
    writer = store.writer(info, resume=resume, overwrite=overwrite, zstd_level=zstd_level)
    with tqdm(desc=f"import {info.name}", unit="frame", disable=not progress) as bar:
        bar.update(writer.num_frames)
        for source in sources:
            skip = writer.frames_done(str(source))
            for frame in iter_source(source, units=units, format=format, skip=skip):
                writer.add(frame, check=False)  # iter_source checked it
                bar.update()
    return writer.commit()
