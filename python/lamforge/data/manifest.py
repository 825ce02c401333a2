"""Datasets manifest: one TOML file per dataset, its schema and its validator.

Every dataset lamforge knows about is described by one file in ``datasets_manifest/``: the 18
pre-training datasets and the downstream sets of the DPA-2 paper (published counts and weights) and
the real data used by our tests and benchmarks (``../shared/data``, with SHA-256 checksums of every
file). The manifest is data, never code: it is read with :mod:`tomllib` into typed dataclasses, and
unknown keys, wrong types and inconsistent numbers are errors that name the file and the key.

A manifest file looks like::

    name = "H2O-PD"
    role = "pretrain"                      # pretrain | downstream | local
    description = "water and ice phase diagram"
    elements = ["H", "O"]                  # the known elements
    elements_complete = true               # false when the source gives only a count
    num_elements = 2
    weight = 1.0                           # multi-task sampling weight (pre-training sets)
    periodicity = "periodic"               # periodic | slab | none | mixed | unknown
    license = "unknown"
    references = ["Zhang et al., PRL 126, 236001 (2021)"]
    source = "AIS-Square H2O-PD_DPA_v1_0"
    notes = "..."

    [frames]                               # any of train, test, total
    train = 46077

    [level_of_theory]
    code = "VASP"
    functional = "SCAN"

    [[files]]                              # local datasets: every file with its checksum
    path = "deepmd/water/data_0/type.raw"  # relative to the data root (../shared/data)
    bytes = 384
    sha256 = "..."
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ase.data import chemical_symbols

#: The manifest shipped with the package (one TOML file per dataset).
PACKAGED_MANIFEST_DIR = Path(__file__).resolve().parents[1] / "datasets_manifest"

ROLES = ("pretrain", "downstream", "local")
PERIODICITIES = ("periodic", "slab", "none", "mixed", "unknown")
_KNOWN_ELEMENTS = frozenset(chemical_symbols[1:])


class ManifestError(ValueError):
    """A manifest file is malformed or inconsistent; the message names the file and the key."""


@dataclass(frozen=True, kw_only=True)
class FrameCounts:
    """Frame counts as published; ``None`` where the source gives none."""

    train: int | None = None
    test: int | None = None
    total: int | None = None


@dataclass(frozen=True, kw_only=True)
class LevelOfTheory:
    """Electronic-structure code and functional that produced the labels."""

    code: str = "unknown"
    functional: str = "unknown"


@dataclass(frozen=True, kw_only=True)
class FileChecksum:
    """One file of a local dataset, relative to the data root."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class DatasetManifest:
    """One dataset's description (see the module docstring for the file format)."""

    name: str
    role: str
    description: str
    elements: tuple[str, ...] = ()
    elements_complete: bool = True
    num_elements: int | None = None
    frames: FrameCounts = field(default_factory=FrameCounts)
    weight: float | None = None
    level_of_theory: LevelOfTheory = field(default_factory=LevelOfTheory)
    periodicity: str = "unknown"
    format: str | None = None
    license: str = "unknown"
    references: tuple[str, ...] = ()
    source: str = "unknown"
    notes: str = ""
    files: tuple[FileChecksum, ...] = ()
    path: Path | None = field(default=None, compare=False)


def _take(table: dict[str, Any], cls: type, where: str) -> dict[str, Any]:
    """Checks ``table`` against the fields of ``cls``: unknown keys and wrong types are errors."""
    # ``DatasetManifest.path`` is where the file was read from, not a key of the file.
    allowed = {f.name: f for f in fields(cls) if not (cls is DatasetManifest and f.name == "path")}
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    return dict(table)


def _expect(value: Any, types: type | tuple[type, ...], where: str) -> Any:
    # bool is an int in Python; counts and weights must not silently accept true/false.
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ManifestError(f"{where}: expected {types}, got a boolean")
    if not isinstance(value, types):
        raise ManifestError(f"{where}: expected {types}, got {type(value).__name__} {value!r}")
    return value


def _string_list(values: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    items = _expect(values.get(key, []), list, f"{where}: {key}")
    return tuple(_expect(item, str, f"{where}: {key}[{i}]") for i, item in enumerate(items))


def _sub_table(values: dict[str, Any], key: str, cls: type, types: type, where: str) -> Any:
    table = _take(_expect(values.get(key, {}), dict, f"{where}: {key}"), cls, f"{where}: {key}")
    for name, value in table.items():
        _expect(value, types, f"{where}: {key}.{name}")
    return cls(**table)


def _parse_files(values: dict[str, Any], where: str) -> tuple[FileChecksum, ...]:
    parsed = []
    for i, entry in enumerate(_expect(values.get("files", []), list, f"{where}: files")):
        place = f"{where}: files[{i}]"
        entry = _take(_expect(entry, dict, place), FileChecksum, place)
        for key, types in (("path", str), ("bytes", int), ("sha256", str)):
            if key not in entry:
                raise ManifestError(f"{place}: missing key '{key}'")
            _expect(entry[key], types, f"{place}.{key}")
        parsed.append(FileChecksum(**entry))
    return tuple(parsed)


_STRING_KEYS = (
    "name",
    "role",
    "description",
    "periodicity",
    "license",
    "source",
    "notes",
    "format",
)


def _parse(data: dict[str, Any], where: str) -> DatasetManifest:
    values = _take(data, DatasetManifest, where)
    for key in ("name", "role", "description"):
        if key not in values:
            raise ManifestError(f"{where}: missing required key '{key}'")
    for key in _STRING_KEYS:
        if key in values:
            _expect(values[key], str, f"{where}: {key}")
    if "elements_complete" in values:
        _expect(values["elements_complete"], bool, f"{where}: elements_complete")
    if "num_elements" in values:
        _expect(values["num_elements"], int, f"{where}: num_elements")
    if "weight" in values:
        values["weight"] = float(_expect(values["weight"], (int, float), f"{where}: weight"))
    values["elements"] = _string_list(values, "elements", where)
    values["references"] = _string_list(values, "references", where)
    values["frames"] = _sub_table(values, "frames", FrameCounts, int, where)
    values["level_of_theory"] = _sub_table(values, "level_of_theory", LevelOfTheory, str, where)
    values["files"] = _parse_files(values, where)
    return DatasetManifest(**values)


def _check_vocabulary(manifest: DatasetManifest, where: str) -> None:
    if manifest.role not in ROLES:
        raise ManifestError(f"{where}: role must be one of {ROLES}, got {manifest.role!r}")
    if manifest.periodicity not in PERIODICITIES:
        raise ManifestError(
            f"{where}: periodicity must be one of {PERIODICITIES}, got {manifest.periodicity!r}"
        )


def _check_elements(manifest: DatasetManifest, where: str) -> None:
    unknown = [symbol for symbol in manifest.elements if symbol not in _KNOWN_ELEMENTS]
    if unknown:
        raise ManifestError(f"{where}: elements: unknown chemical symbol(s) {unknown}")
    if len(set(manifest.elements)) != len(manifest.elements):
        raise ManifestError(f"{where}: elements: duplicated symbols")
    if manifest.num_elements is None:
        return
    if manifest.elements_complete and manifest.num_elements != len(manifest.elements):
        raise ManifestError(
            f"{where}: num_elements = {manifest.num_elements} but {len(manifest.elements)} "
            "elements are listed and elements_complete is true"
        )
    if manifest.num_elements < len(manifest.elements):
        raise ManifestError(f"{where}: num_elements is smaller than the listed elements")


def _check_counts(manifest: DatasetManifest, where: str) -> None:
    counts = manifest.frames
    for key in ("train", "test", "total"):
        value = getattr(counts, key)
        if value is not None and value < 0:
            raise ManifestError(f"{where}: frames.{key} is negative")
    if None not in (counts.train, counts.test, counts.total) and (
        counts.train + counts.test != counts.total
    ):
        raise ManifestError(f"{where}: frames.train + frames.test != frames.total")
    if manifest.weight is not None and manifest.weight <= 0:
        raise ManifestError(f"{where}: weight must be positive")
    if manifest.role == "pretrain" and manifest.weight is None:
        raise ManifestError(f"{where}: a pre-training dataset needs a weight")


def _check_files(manifest: DatasetManifest, where: str) -> None:
    if manifest.role == "local" and not manifest.files:
        raise ManifestError(f"{where}: a local dataset lists its files with checksums")
    for entry in manifest.files:
        if len(entry.sha256) != 64 or any(c not in "0123456789abcdef" for c in entry.sha256):
            raise ManifestError(f"{where}: files: {entry.path}: sha256 is not 64 hex digits")
        if Path(entry.path).is_absolute() or ".." in Path(entry.path).parts:
            raise ManifestError(f"{where}: files: {entry.path}: must be relative to the data root")


def check(manifest: DatasetManifest, where: str) -> None:
    """Checks the consistency of one manifest.

    Raises:
        ManifestError: naming ``where`` and the inconsistent key.
    """
    _check_vocabulary(manifest, where)
    _check_elements(manifest, where)
    _check_counts(manifest, where)
    _check_files(manifest, where)


def load_manifest(path: Path) -> DatasetManifest:
    """Reads and checks one manifest file.

    Raises:
        ManifestError: the file is not valid TOML or breaks the schema.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ManifestError(f"{path}: not valid TOML: {error}") from error
    manifest = _parse(data, str(path))
    check(manifest, str(path))
    return DatasetManifest(**{**manifest.__dict__, "path": path})


def load_manifests(directory: Path) -> list[DatasetManifest]:
    """Reads every ``*.toml`` manifest in ``directory``, sorted by role then name.

    Raises:
        ManifestError: a file is invalid, or two files describe datasets of the same name.
    """
    manifests = [load_manifest(path) for path in sorted(Path(directory).glob("*.toml"))]
    if not manifests:
        raise ManifestError(f"{directory}: no *.toml manifest files")
    seen: dict[str, Path | None] = {}
    for manifest in manifests:
        if manifest.name in seen:
            raise ManifestError(
                f"dataset name {manifest.name!r} appears in {seen[manifest.name]} and "
                f"{manifest.path}"
            )
        seen[manifest.name] = manifest.path
    return sorted(manifests, key=lambda m: (ROLES.index(m.role), m.name.lower()))


def element_union(manifests: Iterable[DatasetManifest]) -> list[str]:
    """Union of the listed elements, in periodic-table order."""
    union = {symbol for manifest in manifests for symbol in manifest.elements}
    return [symbol for symbol in chemical_symbols if symbol in union]


def sha256_of(path: Path, block_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class FileProblem:
    """A local file that is missing or differs from its manifest entry."""

    dataset: str
    path: str
    problem: str


def verify_files(manifest: DatasetManifest, data_root: Path) -> list[FileProblem]:
    """Compares every listed file under ``data_root`` with its size and checksum."""
    problems = []
    for entry in manifest.files:
        path = Path(data_root) / entry.path
        if not path.is_file():
            problems.append(FileProblem(dataset=manifest.name, path=entry.path, problem="missing"))
        elif path.stat().st_size != entry.bytes:
            problems.append(
                FileProblem(
                    dataset=manifest.name,
                    path=entry.path,
                    problem=f"size {path.stat().st_size} bytes, manifest says {entry.bytes}",
                )
            )
        elif sha256_of(path) != entry.sha256:
            problems.append(
                FileProblem(dataset=manifest.name, path=entry.path, problem="checksum differs")
            )
    return problems
