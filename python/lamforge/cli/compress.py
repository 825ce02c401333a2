"""``lamforge compress``: an se_e2_a model with tabulated embedding nets (fast MD).

The counterpart of deepmd-kit's ``dp compress``: :meth:`lamforge.nn.se_e2_a.SeAModel.compress`
replaces each embedding net by piecewise quintic polynomials, and ``LAMCalculator`` then runs
the model with hand-written derivatives (optionally through ``torch.compile``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path


def _run(arguments: argparse.Namespace) -> int:
    from lamforge.nn.loading import load_model
    from lamforge.nn.se_e2_a import SeAModel, save_se_a

    try:
        model = load_model(arguments.model)
    except ValueError as error:
        raise SystemExit(f"lamforge compress: {error}") from None
    if not isinstance(model, SeAModel):
        raise SystemExit(
            f"lamforge compress: {arguments.model} is a {type(model).__name__}; only se_e2_a "
            "models (e.g. students of `lamforge distill`) have a tabulated form"
        )
    if model.config.table is not None:
        raise SystemExit(f"lamforge compress: {arguments.model} is already compressed")
    output = arguments.output or arguments.model.with_name(
        f"{arguments.model.stem}.compressed{arguments.model.suffix}"
    )
    if output.resolve() == arguments.model.resolve():
        raise SystemExit("lamforge compress: --output would overwrite the model file")
    if arguments.step <= 0 or arguments.min_distance <= 0:
        raise SystemExit("lamforge compress: --step and --min-distance must be positive")
    start = time.perf_counter()
    compressed = model.eval().compress(step=arguments.step, min_distance=arguments.min_distance)
    save_se_a(compressed, output)
    print(
        f"wrote {output} (table step {arguments.step:g}, pairs down to "
        f"{arguments.min_distance:g} Å) in {time.perf_counter() - start:.1f} s"
    )
    if arguments.check:
        energy, forces = compare(model, compressed)
        print(
            f"check against the nets: energy {energy:.1e} (relative), forces {forces:.1e} eV/Å "
            f"({model.config.precision})"
        )
    return 0


def compare(model, compressed) -> tuple[float, float]:
    """Largest relative energy and absolute force differences on two small random frames."""
    from lamforge.calculators import LAMCalculator
    from lamforge.export.build import sample_frames

    energy, forces = 0.0, 0.0
    for atoms in sample_frames(model.elements):
        results = []
        for candidate in (model, compressed):
            frame = atoms.copy()
            frame.calc = LAMCalculator(candidate)
            with warnings.catch_warnings():
                # The sample frames are dense; both models see the same capped neighbours.
                warnings.filterwarnings(
                    "ignore", "LAMCalculator: .* beyond max_neighbors", RuntimeWarning
                )
                results.append((frame.get_potential_energy(), frame.get_forces()))
        (e_nets, f_nets), (e_table, f_table) = results
        energy = max(energy, abs(e_table - e_nets) / max(abs(e_nets), 1.0))
        forces = max(forces, float(abs(f_table - f_nets).max()))
    return energy, forces


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``compress``."""
    parser = subparsers.add_parser(
        "compress",
        help="tabulate the embedding nets of an se_e2_a model (fast MD, like dp compress)",
        description=(
            "Write a copy of an se_e2_a model whose embedding nets are piecewise quintic "
            "tables; LAMCalculator runs it with hand-written derivatives. Compress after "
            "training: the table is fixed."
        ),
    )
    parser.add_argument("model", type=Path, help="se_e2_a model file (e.g. a distilled student)")
    parser.add_argument(
        "--output", "-o", type=Path, help="file to write (default: MODEL.compressed.pt)"
    )
    parser.add_argument(
        "--step", type=float, default=0.05, help="knot spacing in the normalised radial input"
    )
    parser.add_argument(
        "--min-distance",
        type=float,
        default=0.5,
        help="the table covers pairs down to this distance in Å (closer: last piece continued)",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare energies and forces with the nets"
    )
    parser.set_defaults(handler=_run)
