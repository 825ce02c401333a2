"""lamforge: large atomic models (DPA-2) with a Rust core.

Multi-task pre-training of one shared DPA-2 descriptor with a fitting head per dataset, fine-tuning
on downstream data and knowledge distillation into small fast students. See README.md for the CLI
and the Python API.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("lamforge")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
