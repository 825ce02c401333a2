"""``lamforge datasets``: list, validate and verify the datasets manifest.

The manifest ships inside the package (``lamforge/datasets_manifest/``; the repository's top-level
``datasets_manifest`` is a link to it); ``--manifest-dir`` or the ``LAMFORGE_MANIFEST_DIR``
environment variable point elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from lamforge.data.manifest import (
    PACKAGED_MANIFEST_DIR,
    DatasetManifest,
    ManifestError,
    element_union,
    load_manifests,
    verify_files,
)


def _manifest_dir(arguments: argparse.Namespace) -> Path:
    if arguments.manifest_dir is not None:
        return arguments.manifest_dir
    return Path(os.environ.get("LAMFORGE_MANIFEST_DIR", PACKAGED_MANIFEST_DIR))


def _load(arguments: argparse.Namespace) -> list[DatasetManifest]:
    try:
        manifests = load_manifests(_manifest_dir(arguments))
    except ManifestError as error:
        raise SystemExit(f"lamforge datasets: invalid manifest: {error}") from None
    role = getattr(arguments, "role", None)
    return [m for m in manifests if role is None or m.role == role]


def _frames(manifest) -> str:
    counts = manifest.frames
    value = counts.total if counts.total is not None else counts.train
    return "?" if value is None else f"{value:,}"


def _list(arguments: argparse.Namespace) -> int:
    manifests = _load(arguments)
    if arguments.json:
        rows = [{**asdict(m), "path": str(m.path)} for m in manifests]
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'role':<10} {'name':<24} {'frames':>12} {'weight':>6} {'elements':>8}  description")
    for m in manifests:
        count = m.num_elements if m.num_elements is not None else len(m.elements) or "?"
        weight = "" if m.weight is None else f"{m.weight:g}"
        print(
            f"{m.role:<10} {m.name:<24} {_frames(m):>12} {weight:>6} {count!s:>8}  {m.description}"
        )
    return 0


def _elements(arguments: argparse.Namespace) -> int:
    manifests = _load(arguments)
    union = element_union(manifests)
    incomplete = [m.name for m in manifests if not m.elements_complete]
    if arguments.json:
        print(json.dumps({"elements": union, "incomplete": incomplete}, indent=2))
        return 0
    print(f"{len(union)} elements: {' '.join(union)}")
    if incomplete:
        print(f"element lists not published for: {', '.join(incomplete)}")
    return 0


def _validate(arguments: argparse.Namespace) -> int:
    directory = _manifest_dir(arguments)
    try:
        manifests = load_manifests(directory)
    except ManifestError as error:
        print(f"invalid: {error}", file=sys.stderr)
        return 1
    print(f"{len(manifests)} manifest files in {directory} are valid")
    return 0


def _verify(arguments: argparse.Namespace) -> int:
    manifests = [m for m in _load(arguments) if m.files]
    if not arguments.data_root.is_dir():
        print(f"data root {arguments.data_root} does not exist", file=sys.stderr)
        return 2
    problems = [p for m in manifests for p in verify_files(m, arguments.data_root)]
    for problem in problems:
        print(f"{problem.dataset}: {problem.path}: {problem.problem}", file=sys.stderr)
    checked = sum(len(m.files) for m in manifests)
    print(f"{checked - len(problems)} of {checked} files match their checksums")
    return 1 if problems else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``datasets`` command group."""
    parser = subparsers.add_parser("datasets", help="the datasets manifest: list, validate, verify")
    parser.add_argument(
        "--manifest-dir",
        type=Path,
        default=None,
        help="manifest folder (default: $LAMFORGE_MANIFEST_DIR or the packaged manifest)",
    )
    commands = parser.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND", required=True)
    for name, handler, help_text in (
        ("list", _list, "one line per dataset"),
        ("elements", _elements, "the union of the listed elements"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--role", choices=("pretrain", "downstream", "local"))
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=handler)
    sub = commands.add_parser("validate", help="check every manifest file against the schema")
    sub.set_defaults(handler=_validate)
    sub = commands.add_parser("verify", help="check local data files against their checksums")
    sub.add_argument(
        "--data-root",
        type=Path,
        default=Path("../shared/data"),
        help="folder the files' paths are relative to (default: ../shared/data)",
    )
    sub.set_defaults(handler=_verify)
