//! pyo3 binding of `lamforge-core`, compiled by maturin into the private module `lamforge._core`.
//!
//! Only argument conversion, GIL handling and error mapping live here; the computations are in the
//! core crate. Public Python APIs wrap these functions in `python/lamforge/`.

mod aggregate;
mod error;
mod loader;
mod neighbors;
mod thin;
mod three_body;

use numpy::PyReadonlyArray2;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Version of the Rust core crate.
#[pyfunction]
fn core_version() -> &'static str {
    lamforge_core::VERSION
}

/// Perpendicular heights of a periodic cell (rows are lattice vectors), in the cell's length unit.
#[pyfunction]
fn cell_heights(cell: PyReadonlyArray2<'_, f64>) -> PyResult<[f64; 3]> {
    let view = cell.as_array();
    if view.shape() != [3, 3] {
        return Err(PyValueError::new_err(format!(
            "cell must have shape (3, 3), got {:?}",
            view.shape()
        )));
    }
    let mut matrix = [[0.0; 3]; 3];
    for (row, values) in matrix.iter_mut().enumerate() {
        for (column, value) in values.iter_mut().enumerate() {
            *value = view[[row, column]];
        }
    }
    lamforge_core::cell::heights(&matrix).map_err(error::to_py)
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(core_version, module)?)?;
    module.add_function(wrap_pyfunction!(cell_heights, module)?)?;
    neighbors::register(module)?;
    module.add("StoreError", module.py().get_type::<error::StoreError>())?;
    loader::register(module)?;
    three_body::register(module)?;
    aggregate::register(module)?;
    thin::register(module)?;
    Ok(())
}
