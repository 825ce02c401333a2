//! Binding of `lamforge_core::thin`: batched products with one thin factor (the embedding nets'
//! contractions with the environment rows).
//!
//! One entry point, `thin(kernel, batch, rows, columns, width, inputs, out, num_threads,
//! offsets=None)`:
//! `kernel` names a `lamforge_core::thin::Kernel` (`combine`, `spread`, `dot`, `spread_slope`,
//! `spread_slope_second`), `inputs` are its operands in the order it lists them and `out` its
//! result, flat C-contiguous NumPy arrays of one float dtype (float64 or float32); `out` is
//! overwritten. With `offsets` (int64 `[B + 1]`) the batch items are ragged: item `b` owns rows
//! `offsets[b]..offsets[b + 1]` of the row-shaped operands (`batch` and `rows` are then unused).
//! The GIL is released while it runs.

use lamforge_core::parallel;
use lamforge_core::thin::{self as kernels, Kernel, Shape};
use lamforge_core::three_body::Real;
use numpy::{Element, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error;

fn run_typed<T: Real + Element>(
    py: Python<'_>,
    kernel: Kernel,
    shape: Shape,
    offsets: Option<&[i64]>,
    inputs: &[Bound<'_, PyAny>],
    out: &Bound<'_, PyAny>,
    num_threads: usize,
) -> PyResult<()> {
    let not_contiguous =
        |what: &str| PyValueError::new_err(format!("thin {what} must be C-contiguous"));
    let inputs: Vec<PyReadonlyArray1<'_, T>> = inputs
        .iter()
        .map(|x| x.extract())
        .collect::<PyResult<_>>()?;
    let mut out: PyReadwriteArray1<'_, T> = out.extract()?;
    let views: Vec<&[T]> = inputs
        .iter()
        .map(|x| x.as_slice().map_err(|_| not_contiguous("inputs")))
        .collect::<PyResult<_>>()?;
    let out = out.as_slice_mut().map_err(|_| not_contiguous("out"))?;
    let (columns, width) = (shape.columns, shape.width);
    py.detach(|| {
        parallel::install(num_threads, || match offsets {
            Some(offsets) => kernels::run_ragged(kernel, offsets, columns, width, &views, out),
            None => kernels::run(kernel, shape, &views, out),
        })
    })
    .and_then(|result| result)
    .map_err(error::to_py)
}

/// Runs one thin product (see the module docs for the arguments).
#[pyfunction]
#[pyo3(signature = (kernel, batch, rows, columns, width, inputs, out, num_threads, offsets = None))]
#[allow(clippy::too_many_arguments)]
pub fn thin(
    py: Python<'_>,
    kernel: &str,
    batch: usize,
    rows: usize,
    columns: usize,
    width: usize,
    inputs: Vec<Bound<'_, PyAny>>,
    out: &Bound<'_, PyAny>,
    num_threads: usize,
    offsets: Option<PyReadonlyArray1<'_, i64>>,
) -> PyResult<()> {
    let kernel = Kernel::from_name(kernel).ok_or_else(|| {
        PyValueError::new_err(format!(
            "thin kernel {kernel:?}: combine, spread, dot, spread_slope or spread_slope_second"
        ))
    })?;
    let shape = Shape {
        batch,
        rows,
        columns,
        width,
    };
    let offsets = offsets
        .as_ref()
        .map(|offsets| {
            offsets
                .as_slice()
                .map_err(|_| PyValueError::new_err("thin offsets must be C-contiguous"))
        })
        .transpose()?;
    if out.extract::<PyReadonlyArray1<'_, f64>>().is_ok() {
        run_typed::<f64>(py, kernel, shape, offsets, &inputs, out, num_threads)
    } else {
        run_typed::<f32>(py, kernel, shape, offsets, &inputs, out, num_threads)
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(thin, module)?)?;
    Ok(())
}
