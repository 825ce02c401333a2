"""The on-disk format of a lamforge store (``lamforge-store`` schema version 1).

A store is one Zarr v3 hierarchy on the local file system (a directory), the collection; each
dataset is one group directly under the root. A dataset group holds the atoms of all its frames
concatenated, so frame ``i`` owns atoms ``atom_offsets[i]:atom_offsets[i + 1]``::

    STORE/
      zarr.json                  root group; attributes {"lamforge_store": {"schema_version": 1}}
      NAME/                      one group per dataset (only complete datasets ever appear here)
        zarr.json                group attributes: see ``DatasetInfo``
        frame_index.parquet      one row per frame (see ``lamforge.data.index``); not a zarr node
        atom_offsets             [num_frames + 1]      int64    first atom of each frame, then total
        positions                [num_atoms, 3]        float64  Å, Cartesian
        atomic_numbers           [num_atoms]           uint8    Z (1..118)
        forces                   [num_atoms, 3]        float64  eV/Å           (optional)
        charges                  [num_atoms]           float64  e              (optional)
        magnetic_moments         [num_atoms]           float64  Bohr magneton  (optional)
        cell                     [num_frames, 3, 3]    float64  Å, rows are lattice vectors
        pbc                      [num_frames, 3]       bool     periodic along each cell vector
        energy                   [num_frames]          float64  eV, total potential energy
        virial                   [num_frames, 3, 3]    float64  eV             (optional)
        has_energy, has_forces, has_virial, has_charges, has_magnetic_moments
                                 [num_frames]          bool     label present in that frame

Conventions:

* Units are always eV, Å, eV/Å; importers convert. Non-periodic frames store a zero cell.
* The one stored stress-like quantity is the virial in eV with DeePMD's sign,
  ``virial = -stress * volume`` where ``stress`` has ASE's sign (positive under tension, i.e.
  ``stress = (1 / volume) dE/dstrain``). Only frames periodic in all three directions can have one.
* A label missing from a frame is stored as NaN and its ``has_*`` mask is false. An optional
  array exists only when at least one frame has that label; its mask array exists with it
  (``has_energy`` always exists).
* ``atomic_numbers`` is ``uint8``: every element fits, and it is a quarter of an ``int32``.

Every array uses the sharding codec (``sharding_indexed``): a shard (one file) holds
``SHARD_ATOMS`` atoms or ``SHARD_FRAMES`` frames; inside it, inner chunks of ``CHUNK_ATOMS`` atoms
or ``CHUNK_FRAMES`` frames are compressed independently with zstd (with its content checksum), so
reading one frame decompresses about one inner chunk per array. The shard index carries a crc32c.
Chunk keys use the default ``c/i/j`` encoding. A missing shard file reads as fill values: NaN for
floats, -1 for ``atom_offsets``, 0 for ``atomic_numbers`` (never valid data, so ``lamforge data
validate`` reports the missing files of these arrays), false for masks and ``pbc``. zarr skips
writing a shard whose every value is the fill value, so only those four arrays always have all
their shard files.

``frame_index.parquet`` sits inside the group directory but is not a zarr node; zarr-python's
``Group.members()`` warns about it (harmless).

A write is atomic: a dataset is built in a staging directory next to the store
(``.<store name>.staging/NAME``), its ``complete`` attribute set last, and the directory renamed
into the store. Readers refuse groups whose ``complete`` attribute is not true. Overwriting moves
the old group to ``.<store name>.staging/NAME.replaced`` first; opening the store puts it back if
the new one never arrived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

#: Version of this layout, recorded in the root and in every dataset group.
SCHEMA_VERSION = 1
#: Name of the root group attribute that marks a directory as a lamforge store.
STORE_MARKER = "lamforge_store"
#: File name of the frame index inside a dataset group.
INDEX_FILE = "frame_index.parquet"

#: Atoms per inner chunk (compressed unit) of the per-atom arrays. Reading a random frame decodes
#: about one inner chunk per array, so smaller is faster for random access: 512 atoms read random
#: 20,000-frame batches 3.5x faster than 4,096 did, at the same store size (``benches/loader.py``);
#: smaller chunks gained nothing more and slowed writing.
CHUNK_ATOMS = 512
#: Atoms per shard file of the per-atom arrays.
SHARD_ATOMS = CHUNK_ATOMS * 256
#: Frames per inner chunk of the per-frame arrays.
CHUNK_FRAMES = 256
#: Frames per shard file of the per-frame arrays.
SHARD_FRAMES = CHUNK_FRAMES * 64
#: zstd level for compact (archival) stores: zstd's default, the smallest files of the two levels.
COMPACT_ZSTD_LEVEL = 3
#: zstd level for hot training stores: zstd's negative levels leave literals uncompressed (no
#: Huffman coding), so decoding an inner chunk is little more than a copy: uniformly random
#: batches of a 20,000-frame set read from a cold cache with about a third of the CPU time (13
#: against 35 µs per frame), for a store about 5% larger (MPtrj, water and random float64 data;
#: ``benches/loader.py``). The reader needs nothing to know: the level is the writer's choice.
FAST_ZSTD_LEVEL = -1
#: zstd level of every array by default: the fast one, because a lamforge store is read at random
#: by training far more often than it is copied; ``COMPACT_ZSTD_LEVEL`` (``lamforge data import
#: --zstd-level 3``) for archives.
ZSTD_LEVEL = FAST_ZSTD_LEVEL
#: Levels zstd accepts.
ZSTD_LEVELS = range(-(1 << 17), 23)

#: Units of the stored quantities.
UNITS: dict[str, str] = {
    "energy": "eV",
    "length": "Angstrom",
    "forces": "eV/Angstrom",
    "virial": "eV",
    "charges": "e",
    "magnetic_moments": "mu_B",
}


@dataclass(frozen=True)
class ArraySpec:
    """Layout of one stored array.

    Attributes:
        name: Array name inside the dataset group.
        per_atom: True for ``[num_atoms, ...]`` arrays, False for ``[num_frames, ...]`` ones.
        inner_shape: Shape of one atom's or one frame's entry (``()`` for scalars).
        dtype: NumPy dtype string.
        optional: False for arrays every dataset has.
        mask: Name of the ``has_*`` mask array that says which frames carry this label.
    """

    name: str
    per_atom: bool
    inner_shape: tuple[int, ...]
    dtype: str
    optional: bool = False
    mask: str | None = None

    @property
    def fill_value(self) -> Any:
        """NaN for floats (a missing label), -1 for ``atom_offsets``, zero or false otherwise."""
        if np.dtype(self.dtype).kind == "f":
            return float("nan")
        if self.name == "atom_offsets":
            return -1
        return np.zeros((), dtype=self.dtype).item()

    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The ``(inner chunk shape, shard shape)`` of the array."""
        leading = (CHUNK_ATOMS, SHARD_ATOMS) if self.per_atom else (CHUNK_FRAMES, SHARD_FRAMES)
        return (leading[0], *self.inner_shape), (leading[1], *self.inner_shape)


#: Every array a dataset group can hold (``atom_offsets`` is ``[num_frames + 1]``).
ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("atom_offsets", False, (), "int64"),
    ArraySpec("positions", True, (3,), "float64"),
    ArraySpec("atomic_numbers", True, (), "uint8"),
    ArraySpec("forces", True, (3,), "float64", optional=True, mask="has_forces"),
    ArraySpec("charges", True, (), "float64", optional=True, mask="has_charges"),
    ArraySpec("magnetic_moments", True, (), "float64", optional=True, mask="has_magnetic_moments"),
    ArraySpec("cell", False, (3, 3), "float64"),
    ArraySpec("pbc", False, (3,), "bool"),
    ArraySpec("energy", False, (), "float64", mask="has_energy"),
    ArraySpec("virial", False, (3, 3), "float64", optional=True, mask="has_virial"),
    ArraySpec("has_energy", False, (), "bool"),
    ArraySpec("has_forces", False, (), "bool", optional=True),
    ArraySpec("has_charges", False, (), "bool", optional=True),
    ArraySpec("has_magnetic_moments", False, (), "bool", optional=True),
    ArraySpec("has_virial", False, (), "bool", optional=True),
)
ARRAY_SPECS: dict[str, ArraySpec] = {spec.name: spec for spec in ARRAYS}
#: Optional labels: each is an array plus its ``has_*`` mask.
OPTIONAL_LABELS: tuple[str, ...] = ("forces", "charges", "magnetic_moments", "virial")
#: Arrays whose fill value is never valid data, so each of their shard files must exist.
DENSE_ARRAYS: tuple[str, ...] = ("atom_offsets", "positions", "atomic_numbers", "cell")


def stored_arrays(group_path: Path) -> list[str]:
    """Names of the ``ARRAYS`` present in a dataset group directory, in ``ARRAYS`` order.

    Looks at the file system rather than listing the zarr group, which warns about the
    non-zarr files (the frame index) kept beside the arrays.
    """
    return [spec.name for spec in ARRAYS if (Path(group_path) / spec.name / "zarr.json").is_file()]


@dataclass(frozen=True, kw_only=True)
class LevelOfTheory:
    """How the labels were computed.

    Attributes:
        code: Electronic-structure code (``VASP``, ``ORCA``, ...); empty when unknown.
        functional: Exchange-correlation functional or method (``PBE``, ``wB97X``, ...).
        basis: Basis set or plane-wave cutoff, free text.
    """

    code: str = ""
    functional: str = ""
    basis: str = ""


@dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """Attributes of a dataset group (stored as its zarr attributes under ``lamforge``).

    Attributes:
        name: Dataset name, the group's name.
        level_of_theory: How the labels were computed.
        source: Where the frames came from (input paths, or the datasets a curated one was made of).
        licence: Licence of the data (SPDX identifier or free text).
        description: One line on what the frames are.
        elements: Element symbols present, by increasing atomic number.
        num_frames: Number of frames.
        num_atoms: Total number of atoms over all frames.
        labels: Number of frames carrying each label (``energy``, ``forces``, ``virial``, ...).
        units: Units of the stored quantities (always ``UNITS``).
        schema_version: ``SCHEMA_VERSION`` of the writer.
        complete: Set true as the last step of a write; readers refuse groups without it.
    """

    name: str
    level_of_theory: LevelOfTheory = field(default_factory=LevelOfTheory)
    source: tuple[str, ...] = ()
    licence: str = ""
    description: str = ""
    elements: tuple[str, ...] = ()
    num_frames: int = 0
    num_atoms: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=lambda: dict(UNITS))
    schema_version: int = SCHEMA_VERSION
    complete: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored as the group's ``lamforge`` attribute."""
        data = asdict(self)
        data["source"] = list(self.source)
        data["elements"] = list(self.elements)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetInfo:
        """Parses the group's ``lamforge`` attribute; unknown keys are errors."""
        data = dict(data)
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"dataset '{data.get('name')}' has lamforge-store schema version {version}; "
                f"this lamforge reads version {SCHEMA_VERSION}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"dataset '{data.get('name')}' has unknown attributes {unknown}")
        data["level_of_theory"] = LevelOfTheory(**data.get("level_of_theory", {}))
        data["source"] = tuple(data.get("source", ()))
        data["elements"] = tuple(data.get("elements", ()))
        return cls(**data)
