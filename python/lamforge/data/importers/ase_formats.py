"""Frames from every format ASE reads (extxyz, traj, db, VASP OUTCAR/vasprun.xml, ...).

Frames are read one at a time with ``ase.io.iread``, so files larger than memory stream. Labels
come from the calculator results ASE attached to each frame (``lamforge.data.frames``): the
energy is ASE's ``energy`` (for VASP the sigma -> 0 extrapolation; ``free_energy`` when that is
all there is), forces of atoms fixed by a constraint keep their raw DFT values, and ASE's stress
(eV/Å^3) becomes the stored virial (eV).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ase.io import iread

from lamforge.data.frames import Frame, FrameError, frame_from_atoms
from lamforge.data.importers.errors import DataImportError
from lamforge.data.units import ENERGY_UNITS, LENGTH_UNITS, InputUnits

#: Formats guessed from the file name when ASE's own guess is not wanted.
_SUFFIX_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".traj": "traj", ".db": "db"}
#: Frame-info keys some extended-XYZ writers use to declare units (e.g. MPtrj).
_DECLARED_UNITS = {
    "energy_unit": lambda units: [units.energy],
    "forces_unit": lambda units: [f"{units.energy}/{units.length}"],
    "stress_unit": lambda units: [f"{units.energy}/{units.length}^3"],
}


def ase_format(path: Path, format: str | None = None) -> str | None:
    """The ``ase.io`` format name for ``path`` (None lets ASE guess from the content)."""
    if format:
        return format
    name = path.name.lower()
    if name.startswith("outcar"):
        return "vasp-out"
    if name.startswith("vasprun") and name.endswith(".xml"):
        return "vasp-xml"
    return _SUFFIX_FORMATS.get(path.suffix.lower())


def _normalise(unit: str) -> str:
    """One spelling of Å, so that ``eV/A``, ``eV/Ang`` and ``eV/Angstrom`` compare equal."""
    return re.sub(r"Å|\b(Angstrom|Ang|A)\b", "A", unit.replace(" ", ""))


def _check_declared_units(atoms_info: dict, units: InputUnits, path: Path, index: int) -> None:
    """Refuses frames whose declared units differ from the ones the import converts from."""
    for key, expected in _DECLARED_UNITS.items():
        declared = atoms_info.get(key)
        if declared is None:
            continue
        accepted = expected(units)
        if _normalise(str(declared)) not in [_normalise(unit) for unit in accepted]:
            raise DataImportError(
                f"{path}, frame {index}, field '{key}': the file declares {declared!r} but the "
                f"import assumes {accepted[0]!r}; pass the input units (energy units "
                f"{list(ENERGY_UNITS)}, length units {list(LENGTH_UNITS)})"
            )


def read_ase(
    path: Path,
    *,
    units: InputUnits,
    format: str | None = None,
    skip: int = 0,
) -> Iterator[Frame]:
    """Yields the frames of one file that ASE can read, converted to eV and Å.

    Args:
        path: Input file.
        units: Units of the file's values.
        format: ``ase.io`` format name; guessed from the name when omitted.
        skip: Frames at the start of the file to skip (already imported, when resuming).

    Raises:
        DataImportError: naming the file, the frame and the field at fault.
    """
    source = str(path)
    try:
        frames = iread(path, index=f"{skip}:", format=ase_format(path, format))
    except Exception as error:
        raise DataImportError(f"{path}: cannot open: {error}") from error
    index = skip
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as error:
            raise DataImportError(f"{path}, frame {index}: cannot parse: {error}") from error
        _check_declared_units(atoms.info, units, path, index)
        try:
            frame = frame_from_atoms(atoms, source=source, source_index=index)
        except FrameError as error:
            raise DataImportError(f"{path}, frame {index}, {error}") from error
        yield units.convert(frame)
        index += 1
