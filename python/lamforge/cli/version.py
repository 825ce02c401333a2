"""``lamforge version``: versions of lamforge, its Rust core and torch, and accelerator support."""

from __future__ import annotations

import argparse
import importlib.util
import json


def collect() -> dict[str, object]:
    """Versions and capabilities of this installation."""
    import torch

    import lamforge
    from lamforge import _core

    cuda = torch.cuda.is_available()
    triton = importlib.util.find_spec("triton") is not None
    return {
        "lamforge": lamforge.__version__,
        "rust_core": _core.core_version(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda_devices": torch.cuda.device_count() if cuda else 0,
        "triton_installed": triton,
        # Triton kernels run only on a CUDA device (or under TRITON_INTERPRET=1 for testing).
        "triton_usable": triton and cuda,
    }


def _run(arguments: argparse.Namespace) -> int:
    info = collect()
    if arguments.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(key) for key in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the ``version`` subcommand."""
    parser = subparsers.add_parser("version", help="print versions and accelerator support")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=_run)
