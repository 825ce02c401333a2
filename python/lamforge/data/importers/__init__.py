"""Importers: every input format becomes a stream of checked ``Frame`` objects in eV and Å.

``iter_source`` picks the importer of one input path: a directory is searched for DeePMD systems
(``importers.deepmd``); a file is read with ASE (``importers.ase_formats``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lamforge.data.frames import Frame, FrameError
from lamforge.data.importers.ase_formats import read_ase
from lamforge.data.importers.deepmd import find_deepmd_systems, read_deepmd
from lamforge.data.importers.errors import DataImportError
from lamforge.data.units import InputUnits

__all__ = ["DataImportError", "expand_sources", "iter_source"]


def expand_sources(paths: list[Path]) -> list[Path]:
    """Resolves input paths; a directory becomes the DeePMD systems under it.

    Raises:
        DataImportError: for a path that does not exist or a directory without DeePMD systems.
    """
    sources: list[Path] = []
    for path in paths:
        path = Path(path).resolve()
        if path.is_dir():
            systems = find_deepmd_systems(path)
            if not systems:
                raise DataImportError(f"{path}: directory without DeePMD systems (no type.raw)")
            sources.extend(systems)
        elif path.is_file():
            sources.append(path)
        else:
            raise DataImportError(f"{path}: no such file or directory")
    return sources


def iter_source(
    source: Path,
    *,
    units: InputUnits | None = None,
    format: str | None = None,
    skip: int = 0,
) -> Iterator[Frame]:
    """Yields the checked frames of one source (as returned by ``expand_sources``).

    Args:
        source: A file ASE reads or a DeePMD system directory.
        units: Units of the input (default eV and Å).
        format: ``ase.io`` format for files, guessed when omitted.
        skip: Frames to skip at the start.

    Raises:
        DataImportError: naming the file, the frame and the field at fault.
    """
    units = units or InputUnits()
    if source.is_dir():
        frames = read_deepmd(source, units=units, skip=skip)
    else:
        frames = read_ase(source, units=units, format=format, skip=skip)
    for frame in frames:
        try:
            frame.check()
        except FrameError as error:
            raise DataImportError(f"{source}, frame {frame.source_index}, {error}") from error
        yield frame
