# Type stubs of the Rust extension module `lamforge._core` (rust/lamforge-py).
# tests/unit/test_core_stubs.py checks that every function of the module is declared here.
import numpy as np
import numpy.typing as npt

def core_version() -> str:
    """Version of the Rust core crate."""

def cell_heights(cell: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """Perpendicular heights of a (3, 3) cell whose rows are lattice vectors.

    Raises:
        ValueError: wrong shape, non-finite values or a singular cell.
    """
