//! The one place where core errors become Python exceptions.

use lamforge_core::CoreError;
use pyo3::exceptions::{PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(
    _core,
    StoreError,
    PyRuntimeError,
    "Stored data is missing or damaged; the message names the dataset, array, frame and file."
);

/// Converts a core error to the Python exception users should see.
pub fn to_py(error: CoreError) -> PyErr {
    match error {
        CoreError::InvalidInput(message) => PyValueError::new_err(message),
        CoreError::TooLarge(message) => PyMemoryError::new_err(message),
        CoreError::Data(message) => StoreError::new_err(message),
    }
}
