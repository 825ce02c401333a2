"""``lamforge distill CONFIG``: distil a teacher into a fast student (resumable loop)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def _row_line(row) -> str:
    def show(value, unit):
        return "n/a" if value is None else f"{value:.2f} {unit}"

    return (
        f"iteration {row.iteration}: trained on {row.training_frames} frames, explored "
        f"{row.frames_explored}, added {row.frames_added}; accurate {row.accurate_fraction:.1%}, "
        f"candidate {row.candidate_fraction:.1%}, rejected {row.rejected_fraction:.1%}; "
        f"held-out vs teacher E {show(row.holdout_energy_rmse_teacher, 'meV/atom')}, "
        f"F {show(row.holdout_forces_rmse_teacher, 'meV/Å')}; vs reference "
        f"E {show(row.holdout_energy_rmse_reference, 'meV/atom')}, "
        f"F {show(row.holdout_forces_rmse_reference, 'meV/Å')} ({row.seconds:.0f} s)"
    )


def _distill(arguments: argparse.Namespace) -> int:
    import torch

    from lamforge.config import ConfigError, load_yaml
    from lamforge.distill.config import DistillConfig
    from lamforge.distill.loop import Distillation

    try:
        config = load_yaml(DistillConfig, arguments.config)
    except ConfigError as error:
        raise SystemExit(f"lamforge: invalid config: {error}") from None
    if arguments.output_dir is not None:
        config = config.with_output(arguments.output_dir)
    if arguments.max_iterations is not None:
        config = dataclasses.replace(
            config, loop=dataclasses.replace(config.loop, max_iterations=arguments.max_iterations)
        )
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    try:
        run = Distillation(config, progress=not arguments.quiet)
    except ValueError as error:
        raise SystemExit(f"lamforge distill: {error}") from None
    for row in run.state.rows:
        print(f"(done) {_row_line(row)}")
    state = run.run(on_row=lambda row: print(_row_line(row), flush=True))
    verdict = "converged" if state.converged else "stopped at max_iterations"
    print(
        f"{verdict} after {state.completed_iterations} iteration(s); student: "
        f"{Path(config.output_dir) / state.student if state.student else 'none'}"
    )
    print(f"report: {Path(config.output_dir) / 'report.csv'}")
    return 0


def _label(arguments: argparse.Namespace) -> int:
    import torch

    from lamforge.data.store import Store
    from lamforge.distill.teacher import (
        Teacher,
        frames_from_store,
        predict_frames,
        write_labelled_dataset,
    )

    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    try:
        store = Store.open(arguments.store)
        teacher = Teacher.load(arguments.teacher, arguments.head)
        frames = frames_from_store(store, arguments.dataset)
        labelled = predict_frames(
            teacher.model, frames, teacher.head, max_atoms=arguments.max_atoms
        )
        info = write_labelled_dataset(
            store,
            arguments.output,
            labelled,
            teacher,
            source=arguments.dataset,
            overwrite=arguments.overwrite,
        )
    except (ValueError, KeyError, FileExistsError) as error:
        raise SystemExit(f"lamforge label: {error}") from None
    print(
        f"labelled {info.num_frames} frames of {arguments.dataset!r} with "
        f"{arguments.teacher} (sha256 {teacher.sha256[:12]}...) into {arguments.output!r}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds ``distill`` and ``label``."""
    parser = subparsers.add_parser(
        "label", help="label a store dataset with a teacher model into a new dataset"
    )
    parser.add_argument("--teacher", type=Path, required=True, help="teacher model file")
    parser.add_argument("--head", help="teacher head (required with several heads)")
    parser.add_argument("--store", type=Path, required=True, help="lamforge store")
    parser.add_argument("--dataset", required=True, help="dataset whose frames are labelled")
    parser.add_argument("--output", required=True, help="name of the new dataset")
    parser.add_argument("--max-atoms", type=int, default=4096, help="atoms per inference batch")
    parser.add_argument("--overwrite", action="store_true", help="replace --output if present")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.set_defaults(handler=_label)

    parser = subparsers.add_parser(
        "distill", help="distil a teacher model into a fast student (rerun to continue)"
    )
    parser.add_argument("config", type=Path, help="distillation configuration (YAML)")
    parser.add_argument("--output-dir", type=Path, help="override output_dir")
    parser.add_argument("--max-iterations", type=int, help="override loop.max_iterations")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_distill)
