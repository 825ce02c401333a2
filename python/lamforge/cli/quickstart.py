"""``lamforge quickstart``: the whole workflow on generated demo data."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(arguments: argparse.Namespace) -> int:
    import dataclasses

    from lamforge.data.demo import DemoConfig
    from lamforge.workflows.quickstart import QuickstartConfig, run_quickstart, smoke_config

    if arguments.smoke:
        config = smoke_config(arguments.workdir, progress=not arguments.quiet)
    else:
        config = QuickstartConfig(workdir=arguments.workdir, progress=not arguments.quiet)
    frames = arguments.frames_per_task or config.demo.frames_per_task
    config = dataclasses.replace(
        config, demo=DemoConfig(frames_per_task=frames, seed=arguments.seed)
    )
    summary = run_quickstart(config)
    print(summary.table())
    print(f"\nwrote {Path(config.workdir) / 'summary.json'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``quickstart`` subcommand."""
    parser = subparsers.add_parser(
        "quickstart", help="run the whole workflow on generated demo data"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("lamforge-quickstart"),
        help="folder for every output (default: ./lamforge-quickstart)",
    )
    parser.add_argument(
        "--frames-per-task", type=int, default=None, help="demo frames per task (default: 96)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="seconds-long run of every stage with tiny sizes"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo data (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_run)
