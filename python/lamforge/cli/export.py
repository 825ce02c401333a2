"""``lamforge export``: one head of a model as a single deployable file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

SUFFIXES = {"export": ".pt2", "torchscript": ".torchscript.pt"}


def _run(arguments: argparse.Namespace) -> int:
    from lamforge.export import export_model
    from lamforge.export.check import compare_with_model
    from lamforge.nn.loading import load_model

    try:
        model = load_model(arguments.model)
    except ValueError as error:
        raise SystemExit(f"lamforge export: {error}") from None
    if arguments.head is None and len(model.heads) > 1:
        raise SystemExit(
            f"lamforge export: the model has heads {list(model.heads)}; choose one with --head"
        )
    output = arguments.output or arguments.model.with_suffix(SUFFIXES[arguments.format])
    if output.resolve() == arguments.model.resolve():
        raise SystemExit("lamforge export: --output would overwrite the model file")
    start = time.perf_counter()
    try:
        metadata = export_model(
            model,
            output,
            head=arguments.head,
            program=arguments.format,
            precision=arguments.precision,
        )
    except ValueError as error:
        raise SystemExit(f"lamforge export: {error}") from None
    seconds = time.perf_counter() - start
    size = output.stat().st_size / 1e6
    blocks = ", ".join(f"{cutoff:g} Å x {cap}" for cutoff, cap in metadata.neighbor_blocks)
    print(
        f"exported head {metadata.head!r} of a {metadata.model_type} model ({metadata.precision}, "
        f"elements {' '.join(metadata.elements)}; neighbour blocks {blocks})"
    )
    print(f"wrote {output} ({arguments.format}, {size:.1f} MB) in {seconds:.1f} s")
    if arguments.check:
        differences = compare_with_model(model, output)
        print(
            "check against the source model: "
            f"energy {differences['energy']:.1e} (relative), forces {differences['forces']:.1e} "
            f"eV/Å, virial {differences['virial']:.1e} eV"
        )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``export``."""
    parser = subparsers.add_parser(
        "export",
        help="write one head of a model as a deployable file (torch.export or TorchScript)",
        description=(
            "Trace energy, forces and virials of one head into a single file that runs with "
            "torch alone (lamforge.deploy reads it). Inputs and metadata: lamforge.deploy.format."
        ),
    )
    parser.add_argument(
        "model", type=Path, help="model file (lamforge DPA-2 or se_e2_a, or deepmd-kit)"
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        help="file to write (default: MODEL with .pt2 or .torchscript.pt)",
    )
    parser.add_argument("--head", help="head to export (required when the model has several)")
    parser.add_argument(
        "--format",
        choices=("export", "torchscript"),
        default="export",
        help="torch.export archive (default) or TorchScript (deprecated upstream; for libtorch)",
    )
    parser.add_argument(
        "--precision",
        "--dtype",
        choices=("float64", "float32"),
        help="floating precision of the program (default: the model's)",
    )
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip comparing the written file with the model on two small structures",
    )
    parser.set_defaults(handler=_run)
