"""The frame index: one parquet row per frame, so curation queries never touch the arrays.

Columns (``INDEX_SCHEMA``):

* ``frame`` (int64): frame id, the row of the frame in the dataset's per-frame arrays.
* ``num_atoms`` (int32).
* ``elements`` (list of str): element symbols present, by increasing atomic number.
* ``formula`` (str): Hill formula of the whole frame (``C2H6O``, ``H128O64``).
* ``reduced_formula`` (str): Hill formula divided by the greatest common divisor of the counts
  (``H2O`` for any number of water molecules): the composition used to group splits.
* ``energy`` (float64, eV; null when missing) and ``energy_per_atom`` (float64, eV).
* ``max_force`` (float64, eV/Å): largest per-atom force magnitude; null without forces.
* ``has_energy``, ``has_forces``, ``has_virial`` (bool).
* ``pbc`` (str): periodicity along the three cell vectors, e.g. ``TTT``, ``TTF``, ``FFF``.
* ``periodic_dimensions`` (int8): number of periodic directions.
* ``split`` (str): ``train``, ``valid``, ``test`` after ``lamforge data split``; null before.
* ``content_hash`` (str): hex digest of atomic numbers, positions and cell rounded to 1e-6 Å and
  pbc; equal hashes mean the same structure (labels are not hashed).
* ``source`` (str) and ``source_index`` (int64): provenance of the frame.
"""

from __future__ import annotations

import hashlib
import os
from math import gcd
from pathlib import Path

import numpy as np
import polars as pl
from ase.data import chemical_symbols

from lamforge.data.frames import Frame

INDEX_SCHEMA: dict[str, pl.DataType] = {
    "frame": pl.Int64(),
    "num_atoms": pl.Int32(),
    "elements": pl.List(pl.String()),
    "formula": pl.String(),
    "reduced_formula": pl.String(),
    "energy": pl.Float64(),
    "energy_per_atom": pl.Float64(),
    "max_force": pl.Float64(),
    "has_energy": pl.Boolean(),
    "has_forces": pl.Boolean(),
    "has_virial": pl.Boolean(),
    "pbc": pl.String(),
    "periodic_dimensions": pl.Int8(),
    "split": pl.String(),
    "content_hash": pl.String(),
    "source": pl.String(),
    "source_index": pl.Int64(),
}


def hill_formula(counts: dict[str, int]) -> str:
    """Hill order: C first, then H, then the rest alphabetically (alphabetical without C)."""
    if "C" in counts:
        order = ["C", "H"] + sorted(s for s in counts if s not in ("C", "H"))
    else:
        order = sorted(counts)
    return "".join(
        f"{symbol}{counts[symbol] if counts[symbol] > 1 else ''}"
        for symbol in order
        if symbol in counts
    )


def content_hash(frame: Frame) -> str:
    """Hash of the structure (numbers, positions and cell rounded to 1e-6 Å, pbc)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(frame.atomic_numbers, dtype=np.uint8).tobytes())
    # Rounding to integers of 1e-6 Å (not np.round) so that -0.0 and 0.0 hash alike.
    digest.update(np.rint(np.asarray(frame.positions) * 1e6).astype(np.int64).tobytes())
    digest.update(np.rint(np.asarray(frame.cell) * 1e6).astype(np.int64).tobytes())
    digest.update(np.asarray(frame.pbc, dtype=bool).tobytes())
    return digest.hexdigest()


def index_row(frame: Frame, frame_id: int) -> dict[str, object]:
    """The index row of one frame (see the module docstring for the columns)."""
    numbers, counts_array = np.unique(frame.atomic_numbers, return_counts=True)
    counts = {chemical_symbols[z]: int(c) for z, c in zip(numbers, counts_array, strict=True)}
    divisor = 0
    for count in counts.values():
        divisor = gcd(divisor, count)
    num_atoms = frame.num_atoms
    max_force = None
    if frame.forces is not None:
        max_force = float(np.sqrt((np.asarray(frame.forces) ** 2).sum(axis=1)).max())
    pbc = np.asarray(frame.pbc, dtype=bool)
    return {
        "frame": frame_id,
        "num_atoms": num_atoms,
        "elements": [chemical_symbols[z] for z in numbers],
        "formula": hill_formula(counts),
        "reduced_formula": hill_formula({s: c // divisor for s, c in counts.items()}),
        "energy": frame.energy,
        "energy_per_atom": None if frame.energy is None else frame.energy / num_atoms,
        "max_force": max_force,
        "has_energy": frame.energy is not None,
        "has_forces": frame.forces is not None,
        "has_virial": frame.virial is not None,
        "pbc": "".join("T" if p else "F" for p in pbc),
        "periodic_dimensions": int(pbc.sum()),
        "split": None,
        "content_hash": content_hash(frame),
        "source": frame.source,
        "source_index": frame.source_index,
    }


def index_frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    """Index rows as a data frame with the documented schema."""
    return pl.DataFrame(rows, schema=INDEX_SCHEMA, orient="row")


def write_index(index: pl.DataFrame, path: Path) -> None:
    """Writes an index atomically (temporary file, then rename)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    index.write_parquet(temporary)
    os.replace(temporary, path)


def read_index(path: Path) -> pl.DataFrame:
    """Reads an index and checks its columns.

    Raises:
        ValueError: if the file cannot be read or a documented column is missing.
    """
    try:
        index = pl.read_parquet(path)
    except Exception as error:
        raise ValueError(f"cannot read frame index {path}: {error}") from error
    missing = [column for column in INDEX_SCHEMA if column not in index.columns]
    if missing:
        raise ValueError(f"frame index {path} lacks columns {missing}")
    return index
