"""``lamforge data ...``: import, inspect, validate, curate and export a lamforge store."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from lamforge.data.format import COMPACT_ZSTD_LEVEL, ZSTD_LEVEL

_EXPECTED_ERRORS = (ValueError, KeyError, FileExistsError, FileNotFoundError, RuntimeError)


def _fail(command: str, error: BaseException) -> int:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    print(f"lamforge data {command}: error: {message}", file=sys.stderr)
    return 2


def _import(arguments: argparse.Namespace) -> int:
    from lamforge.data.format import DatasetInfo, LevelOfTheory
    from lamforge.data.ingest import import_sources
    from lamforge.data.store import Store
    from lamforge.data.units import InputUnits

    store = Store.open(arguments.store, create=True)
    interrupted = store.has_interrupted_write(arguments.dataset)
    if interrupted and not (arguments.resume or arguments.restart):
        raise ValueError(
            f"an interrupted import of '{arguments.dataset}' exists; pass --resume to continue "
            "it or --restart to discard it"
        )
    info = DatasetInfo(
        name=arguments.dataset,
        level_of_theory=LevelOfTheory(
            code=arguments.code, functional=arguments.functional, basis=arguments.basis
        ),
        licence=arguments.licence,
        description=arguments.description,
    )
    info = import_sources(
        store,
        info,
        arguments.sources,
        units=InputUnits(energy=arguments.energy_unit, length=arguments.length_unit),
        format=arguments.format,
        resume=arguments.resume,
        overwrite=arguments.overwrite,
        progress=not arguments.quiet,
        zstd_level=arguments.zstd_level,
    )
    print(
        f"imported {info.num_frames} frames ({info.num_atoms} atoms, "
        f"{len(info.elements)} elements) into {arguments.store}/{info.name}; labels {info.labels}"
    )
    return 0


def _info(arguments: argparse.Namespace) -> int:
    from lamforge.data.store import Store

    store = Store.open(arguments.store)
    infos = [store.info(name) for name in store.datasets()]
    if arguments.json:
        print(json.dumps({"datasets": [info.to_json() for info in infos]}, indent=2))
        return 0
    print(
        f"{'dataset':16s} {'frames':>8s} {'atoms':>10s} {'elements':>8s}  level of theory; labels"
    )
    for info in infos:
        theory = info.level_of_theory
        labels = ", ".join(f"{k} {v}" for k, v in info.labels.items() if v)
        print(
            f"{info.name:16s} {info.num_frames:8d} {info.num_atoms:10d} {len(info.elements):8d}  "
            f"{theory.code or '?'}/{theory.functional or '?'}; {labels}"
        )
    return 0


def _stats(arguments: argparse.Namespace) -> int:
    from lamforge.data.plots import plot_dataset
    from lamforge.data.stats import dataset_stats
    from lamforge.data.store import Store

    store = Store.open(arguments.store)
    names = arguments.dataset or store.datasets()
    results = [dataset_stats(store.reader(name)) for name in names]
    if arguments.plots:
        for stats in results:
            for path in plot_dataset(stats, arguments.plots):
                print(f"wrote {path}", file=sys.stderr)
    if arguments.json:
        print(json.dumps({"datasets": [asdict(stats) for stats in results]}, indent=2))
        return 0
    for stats in results:
        print(_stats_text(stats, store.info(stats.name)))
    return 0


def _stats_text(stats, info) -> str:  # noqa: ANN001
    theory = info.level_of_theory
    energy, forces = stats.energy_per_atom, stats.force_magnitude
    lines = [
        f"dataset {stats.name}: {stats.num_frames} frames, {stats.num_atoms} atoms, "
        f"{len(stats.elements)} elements ({' '.join(stats.elements)})",
        f"  level of theory: {theory.code or '?'} {theory.functional or '?'}; "
        f"licence: {info.licence or '?'}",
        f"  labels: {stats.labels}; periodicity: {stats.periodicity}; splits: {stats.splits}; "
        f"duplicates: {stats.duplicates}",
        f"  atoms/frame: {stats.atoms_per_frame.minimum:.0f}..{stats.atoms_per_frame.maximum:.0f}"
        f" (median {stats.atoms_per_frame.percentiles.get('p50', float('nan')):.0f})",
        f"  energy/atom (eV): mean {energy.mean:.4g}, std {energy.std:.3g}, "
        f"range {energy.minimum:.4g}..{energy.maximum:.4g}",
        f"  |F| (eV/Å): median {forces.percentiles.get('p50', float('nan')):.3g}, "
        f"p99 {forces.percentiles.get('p99', float('nan')):.3g}, max {forces.maximum:.3g}",
    ]
    return "\n".join(lines)


def _validate(arguments: argparse.Namespace) -> int:
    from lamforge.data.store import Store
    from lamforge.data.validate import ValidationConfig, validate_dataset

    store = Store.open(arguments.store)
    config = ValidationConfig(min_distance=arguments.min_distance, outlier_z=arguments.outlier_z)
    findings = []
    for name in arguments.dataset or store.datasets():
        findings.extend(validate_dataset(store.reader(name), config))
    errors = sum(finding.severity == "error" for finding in findings)
    if arguments.json:
        summary = {"errors": errors, "warnings": len(findings) - errors}
        print(json.dumps({**summary, "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        for finding in findings[: arguments.max_print]:
            frame = "-" if finding.frame is None else finding.frame
            print(
                f"{finding.severity:7s} {finding.dataset} frame {frame}: "
                f"[{finding.check}] {finding.message}"
            )
        if len(findings) > arguments.max_print:
            print(f"... {len(findings) - arguments.max_print} more (use --json for all)")
        print(f"{errors} errors, {len(findings) - errors} warnings")
    return 1 if errors else 0


def _filter(arguments: argparse.Namespace) -> int:
    from dataclasses import replace

    from lamforge.data.curate import copy_frames, parse_expression, select_frames
    from lamforge.data.store import Store

    store = Store.open(arguments.store)
    expression = parse_expression(arguments.where)
    frame_ids = select_frames(store.index(arguments.dataset), expression)
    base = store.info(arguments.dataset)
    info = replace(
        base, name=arguments.output, description=f"{arguments.dataset} where {arguments.where}"
    )
    written = copy_frames(
        store,
        [(arguments.dataset, frame_ids)],
        info,
        overwrite=arguments.overwrite,
        progress=not arguments.quiet,
    )
    print(f"kept {written.num_frames} of {base.num_frames} frames as '{written.name}'")
    return 0


def _split(arguments: argparse.Namespace) -> int:
    from lamforge.data.curate import assign_splits
    from lamforge.data.store import Store

    store = Store.open(arguments.store)
    index = assign_splits(
        store.index(arguments.dataset),
        arguments.fractions,
        seed=arguments.seed,
        group_by=arguments.group_by,
    )
    store.write_index(arguments.dataset, index)
    counts = dict(index.group_by("split").len().sort("split").iter_rows())
    print(f"split '{arguments.dataset}' (seed {arguments.seed}): {counts}")
    return 0


def _merge(arguments: argparse.Namespace) -> int:
    from dataclasses import replace

    import numpy as np

    from lamforge.data.curate import copy_frames
    from lamforge.data.store import Store

    store = Store.open(arguments.store)
    infos = [store.info(name) for name in arguments.datasets]
    theories = {info.name: info.level_of_theory for info in infos}
    if len(set(theories.values())) > 1 and not arguments.allow_mixed_theory:
        described = {name: f"{t.code or '?'}/{t.functional or '?'}" for name, t in theories.items()}
        raise ValueError(
            f"the datasets have different levels of theory {described}; their energies must not "
            "be pooled (pass --allow-mixed-theory to merge anyway)"
        )
    parts = [(info.name, np.arange(info.num_frames)) for info in infos]
    licences = sorted({info.licence for info in infos if info.licence})
    info = replace(
        infos[0],
        name=arguments.output,
        licence=" AND ".join(licences),
        description=f"merge of {', '.join(arguments.datasets)}",
    )
    written = copy_frames(
        store, parts, info, overwrite=arguments.overwrite, progress=not arguments.quiet
    )
    print(f"merged {len(parts)} datasets into '{written.name}': {written.num_frames} frames")
    return 0


def _export(arguments: argparse.Namespace) -> int:
    from lamforge.data.export import export_deepmd, export_extxyz
    from lamforge.data.store import Store

    reader = Store.open(arguments.store).reader(arguments.dataset)
    if arguments.format == "extxyz":
        count = export_extxyz(reader, arguments.output)
        print(f"wrote {count} frames to {arguments.output}")
    else:
        count = export_deepmd(reader, arguments.output, set_size=arguments.set_size)
        print(f"wrote {reader.num_frames} frames as {count} DeePMD systems in {arguments.output}")
    return 0


def _guarded(command: str, function):  # noqa: ANN001, ANN202
    def run(arguments: argparse.Namespace) -> int:
        from lamforge.data.importers import DataImportError

        try:
            return function(arguments)
        except (DataImportError, *_EXPECTED_ERRORS) as error:
            if command == "import":
                print(
                    "the store is unchanged; fix the input, then rerun with --resume or --restart",
                    file=sys.stderr,
                )
            return _fail(command, error)

    return run


def _add_store(parser: argparse.ArgumentParser, *, dataset: str | None = None) -> None:
    parser.add_argument("store", type=Path, help="store directory")
    if dataset == "one":
        parser.add_argument("--dataset", required=True, help="dataset name")
    elif dataset == "many":
        parser.add_argument(
            "--dataset", action="append", help="dataset name (repeat; default: all)"
        )


def _register_import(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("import", help="import frames into a dataset of a store")
    parser.add_argument("sources", nargs="+", type=Path, help="files ASE reads, DeePMD dirs")
    parser.add_argument("--store", type=Path, required=True, help="store (created if missing)")
    parser.add_argument("--dataset", required=True, help="name of the new dataset")
    parser.add_argument("--format", help="ase.io format of the files (default: guessed)")
    parser.add_argument("--energy-unit", default="eV", help="energy unit of the input")
    parser.add_argument("--length-unit", default="Angstrom", help="length unit of the input")
    parser.add_argument("--code", default="", help="DFT code, e.g. VASP")
    parser.add_argument("--functional", default="", help="functional, e.g. PBE")
    parser.add_argument("--basis", default="", help="basis set or cutoff")
    parser.add_argument("--licence", default="", help="licence of the data")
    parser.add_argument("--description", default="", help="one line on the data")
    parser.add_argument(
        "--zstd-level",
        type=int,
        default=ZSTD_LEVEL,
        help=f"zstd level of the arrays (default {ZSTD_LEVEL}: fast random reads for training; "
        f"{COMPACT_ZSTD_LEVEL}: about 5%% smaller files)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted import")
    group.add_argument("--restart", action="store_true", help="discard an interrupted import")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_guarded("import", _import))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``data`` command group."""
    data = subparsers.add_parser("data", help="import, inspect, validate, curate, export data")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _register_import(commands)

    parser = commands.add_parser("info", help="list the datasets of a store (attributes only)")
    _add_store(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_guarded("info", _info))

    parser = commands.add_parser("stats", help="counts, elements and distributions")
    _add_store(parser, dataset="many")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--plots", type=Path, help="write PNG figures into this directory")
    parser.set_defaults(handler=_guarded("stats", _stats))

    parser = commands.add_parser("validate", help="find bad frames; exit 1 on errors")
    _add_store(parser, dataset="many")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--min-distance", type=float, default=0.5, help="Å (default 0.5)")
    parser.add_argument("--outlier-z", type=float, default=10.0, help="robust z (default 10)")
    parser.add_argument("--max-print", type=int, default=50, help="findings printed")
    parser.set_defaults(handler=_guarded("validate", _validate))

    parser = commands.add_parser("filter", help="copy the frames matching a polars expression")
    _add_store(parser, dataset="one")
    parser.add_argument("--where", required=True, help="e.g. 'pl.col(\"num_atoms\") < 50'")
    parser.add_argument("--output", required=True, help="name of the new dataset")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(handler=_guarded("filter", _filter))

    parser = commands.add_parser("split", help="seeded train/valid/test split in the index")
    _add_store(parser, dataset="one")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.8, 0.1, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--group-by", help="index column kept whole, e.g. reduced_formula")
    parser.set_defaults(handler=_guarded("split", _split))

    parser = commands.add_parser("merge", help="concatenate datasets into a new one")
    parser.add_argument("store", type=Path, help="store directory")
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--output", required=True, help="name of the new dataset")
    parser.add_argument("--allow-mixed-theory", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(handler=_guarded("merge", _merge))

    parser = commands.add_parser("export", help="write a dataset as extxyz or DeePMD npy")
    _add_store(parser, dataset="one")
    parser.add_argument("--format", choices=("extxyz", "deepmd"), required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--set-size", type=int, default=5000, help="DeePMD frames per set")
    parser.set_defaults(handler=_guarded("export", _export))
