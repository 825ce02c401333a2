//! Binding of `lamforge_core::aggregate`: the repformer's neighbour reductions on the CPU.
//!
//! One entry point, `aggregate(kernel, index, num_slots, num_nodes, first, second, left_width,
//! width, out, num_threads, offsets=None)`: `kernel` names one of the six core kernels, `index`
//! holds each slot's node row (or is None: slot `p` reads row `p`), `offsets` (int64, `[n + 1]`)
//! gives each centre's slots in the ragged layout (None: `num_slots` padded slots per centre), `first` and `second`
//! are its two operands as `lamforge_core::aggregate::Kernel` lists them, `out` is a C-contiguous NumPy array of
//! the same float dtype (float64 or float32) that the kernel overwrites. The GIL is released
//! while it runs.

use lamforge_core::aggregate::{self as kernels, Edges, Kernel, Layout};
use lamforge_core::parallel;
use lamforge_core::three_body::Real;
use numpy::{Element, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error;

fn contiguous<'a, T: Element>(array: &'a PyReadonlyArray1<'_, T>, name: &str) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("aggregate {name} must be C-contiguous")))
}

#[allow(clippy::too_many_arguments)]
fn run_typed<T: Real + Element>(
    py: Python<'_>,
    kernel: Kernel,
    edges: &Edges<'_>,
    first: &Bound<'_, PyAny>,
    second: &Bound<'_, PyAny>,
    shape: (usize, usize),
    out: &Bound<'_, PyAny>,
    num_threads: usize,
) -> PyResult<()> {
    let first: PyReadonlyArray1<'_, T> = first.extract()?;
    let second: PyReadonlyArray1<'_, T> = second.extract()?;
    let mut out: PyReadwriteArray1<'_, T> = out.extract()?;
    let (a, b) = (contiguous(&first, "first")?, contiguous(&second, "second")?);
    let out = out
        .as_slice_mut()
        .map_err(|_| PyValueError::new_err("aggregate out must be C-contiguous"))?;
    let (columns, width) = shape;
    py.detach(|| {
        parallel::install(num_threads, || {
            kernels::run(kernel, edges, a, b, columns, width, out)
        })
    })
    .and_then(|result| result)
    .map_err(error::to_py)
}

/// Runs one aggregation kernel into `out` (see the module docs for the arguments).
#[pyfunction]
#[pyo3(signature = (
    kernel, index, num_slots, num_nodes, first, second, left_width, width, out, num_threads,
    offsets = None
))]
#[allow(clippy::too_many_arguments)]
pub fn aggregate(
    py: Python<'_>,
    kernel: &str,
    index: Option<PyReadonlyArray1<'_, i64>>,
    num_slots: usize,
    num_nodes: usize,
    first: &Bound<'_, PyAny>,
    second: &Bound<'_, PyAny>,
    left_width: usize,
    width: usize,
    out: &Bound<'_, PyAny>,
    num_threads: usize,
    offsets: Option<PyReadonlyArray1<'_, i64>>,
) -> PyResult<()> {
    let kernel = Kernel::from_name(kernel).ok_or_else(|| {
        PyValueError::new_err(format!(
            "aggregate kernel {kernel:?}: product_sum, gather_scale, scatter_scale, outer_sum, \
             pair_dot or scatter_outer"
        ))
    })?;
    let index = index
        .as_ref()
        .map(|index| contiguous(index, "index"))
        .transpose()?;
    let layout = match &offsets {
        Some(offsets) => Layout::Ragged {
            offsets: contiguous(offsets, "offsets")?,
        },
        None => Layout::Padded { num_slots },
    };
    let edges = Edges {
        index,
        layout,
        num_nodes,
    };
    let shape = (left_width, width);
    if out.extract::<PyReadonlyArray1<'_, f64>>().is_ok() {
        run_typed::<f64>(py, kernel, &edges, first, second, shape, out, num_threads)
    } else {
        run_typed::<f32>(py, kernel, &edges, first, second, shape, out, num_threads)
    }
}

pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(aggregate, module)?)?;
    Ok(())
}
