"""``lamforge quickstart``: the whole workflow on generated demo data."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(arguments: argparse.Namespace) -> int:
    from lamforge.data.demo import DemoConfig
    from lamforge.workflows.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig(
        workdir=arguments.workdir,
        demo=DemoConfig(frames_per_task=arguments.frames_per_task, seed=arguments.seed),
        progress=not arguments.quiet,
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
        "--frames-per-task", type=int, default=96, help="demo frames per task (default: 96)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo data (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_run)
