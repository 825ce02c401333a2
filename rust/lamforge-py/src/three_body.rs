//! Bindings of `lamforge_core::three_body`: the fused three-body embedding net of DPA-2's repinit.
//!
//! Python passes the net as `(table, first_weight, weights, biases, timesteps, skips)` and the rows
//! as `(cosine, weight, row_type, segment, num_segments)`, all C-contiguous NumPy arrays of one
//! float dtype (float64 or float32, chosen by `cosine`); results come back as new NumPy arrays.
//! The kernels run with the GIL released on an explicit thread pool.

use lamforge_core::parallel;
use lamforge_core::three_body::{self, Layer, Net, NetGrads, Real, Rows, Save, Skip};
use numpy::ndarray::{Array1, Array2};
use numpy::{
    Element, IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::error;

type NetTuple<'py, T> = (
    PyReadonlyArray2<'py, T>,
    PyReadonlyArray1<'py, T>,
    Vec<PyReadonlyArray2<'py, T>>,
    Vec<PyReadonlyArray1<'py, T>>,
    Vec<Option<PyReadonlyArray1<'py, T>>>,
    Vec<i64>,
);

type RowsTuple<'py, T> = (
    PyReadonlyArray1<'py, T>,
    PyReadonlyArray1<'py, T>,
    PyReadonlyArray1<'py, i64>,
    PyReadonlyArray1<'py, i64>,
    usize,
);

fn slice<'a, T: Element, D: numpy::ndarray::Dimension>(
    array: &'a numpy::PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("three-body {name} must be C-contiguous")))
}

fn skip_of(code: i64) -> PyResult<Skip> {
    match code {
        0 => Ok(Skip::None),
        1 => Ok(Skip::Identity),
        2 => Ok(Skip::Double),
        _ => Err(PyValueError::new_err(format!(
            "three-body skip code {code} (0 none, 1 identity, 2 double)"
        ))),
    }
}

fn net_of<'a, T: Real + Element>(arrays: &'a NetTuple<'_, T>) -> PyResult<Net<'a, T>> {
    let (table, first_weight, weights, biases, timesteps, skips) = arrays;
    if weights.len() != biases.len()
        || weights.len() != timesteps.len()
        || weights.len() != skips.len()
    {
        return Err(PyValueError::new_err(
            "three-body net: weights, biases, timesteps and skips differ in length",
        ));
    }
    let mut layers = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let shape = weight.shape();
        layers.push(Layer {
            weight: slice(weight, "weight")?,
            bias: slice(&biases[index], "bias")?,
            timestep: timesteps[index]
                .as_ref()
                .map(|t| slice(t, "timestep"))
                .transpose()?,
            skip: skip_of(skips[index])?,
            num_in: shape[0],
            num_out: shape[1],
        });
    }
    if table.shape()[1] != first_weight.shape()[0] {
        return Err(PyValueError::new_err(format!(
            "three-body table has width {}, first weight {}",
            table.shape()[1],
            first_weight.shape()[0]
        )));
    }
    Ok(Net {
        table: slice(table, "table")?,
        first_weight: slice(first_weight, "first_weight")?,
        layers,
    })
}

fn rows_of<'a, T: Real + Element>(arrays: &'a RowsTuple<'_, T>) -> PyResult<Rows<'a, T>> {
    let (cosine, weight, row_type, segment, num_segments) = arrays;
    Ok(Rows {
        cosine: slice(cosine, "cosine")?,
        weight: slice(weight, "weight")?,
        row_type: slice(row_type, "row_type")?,
        segment: slice(segment, "segment")?,
        num_segments: *num_segments,
    })
}

fn matrix<T: Element>(
    py: Python<'_>,
    values: Vec<T>,
    columns: usize,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    let rows = values.len().checked_div(columns).unwrap_or(0);
    let array = Array2::from_shape_vec((rows, columns), values)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(array.into_pyarray(py))
}

fn vector<T: Element>(py: Python<'_>, values: Vec<T>) -> Bound<'_, PyArray1<T>> {
    Array1::from(values).into_pyarray(py)
}

/// `(table, first_weight, [weights], [biases], [timesteps])` gradients as NumPy arrays.
fn grads_tuple<'py, T: Real + Element>(
    py: Python<'py>,
    grads: NetGrads<T>,
    net: &Net<'_, T>,
) -> PyResult<Bound<'py, PyTuple>> {
    let width = net.first_weight.len();
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    let mut timesteps = Vec::new();
    for (layer, layer_grads) in net.layers.iter().zip(grads.layers) {
        weights.push(matrix(py, layer_grads.weight, layer.num_out)?);
        biases.push(vector(py, layer_grads.bias));
        timesteps.push(vector(py, layer_grads.timestep));
    }
    (
        matrix(py, grads.table, width)?,
        vector(py, grads.first_weight),
        weights,
        biases,
        timesteps,
    )
        .into_pyobject(py)
}

fn is_f64(cosine: &Bound<'_, PyAny>) -> bool {
    cosine.extract::<PyReadonlyArray1<'_, f64>>().is_ok()
}

/// `$typed::<f64>(...)` or `$typed::<f32>(...)`, by the dtype of the rows' cosines.
macro_rules! by_dtype {
    ($rows:expr, $typed:ident($($arg:expr),*)) => {
        if is_f64(&$rows.get_item(0)?) {
            $typed::<f64>($($arg),*)
        } else {
            $typed::<f32>($($arg),*)
        }
    };
}

fn forward_typed<'py, T: Real + Element>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyAny>,
    save: Save,
    num_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let net_arrays: NetTuple<'py, T> = net.extract()?;
    let rows_arrays: RowsTuple<'py, T> = rows.extract()?;
    let (net, rows) = (net_of(&net_arrays)?, rows_of(&rows_arrays)?);
    let result = py
        .detach(|| parallel::install(num_threads, || three_body::forward(&net, &rows, save)))
        .and_then(|result| result)
        .map_err(error::to_py)?;
    let stride = match save {
        Save::CosineFactors => net.width_out(),
        _ => net.num_neurons() * three_body::BLOCK,
    };
    let saved = result
        .saved
        .map(|saved| matrix(py, saved, stride))
        .transpose()?;
    (matrix(py, result.out, net.width_out())?, saved)
        .into_pyobject(py)
        .map(|tuple| tuple.into_any())
}

/// `(out [num_segments, width_out], saved or None)`, where `out[segment] += weight · cosine ·
/// net(cosine, row_type)` and `save` is "nothing", "activations" (for `three_body_backward` and
/// `three_body_double_backward`) or "cosine_factors" (for one `three_body_cosine_gradient`).
#[pyfunction]
#[pyo3(signature = (net, rows, save, num_threads))]
pub fn three_body_forward<'py>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyTuple>,
    save: &str,
    num_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let save = match save {
        "nothing" => Save::Nothing,
        "activations" => Save::Activations,
        "cosine_factors" => Save::CosineFactors,
        other => {
            return Err(PyValueError::new_err(format!(
                "three-body save {other:?}: nothing, activations or cosine_factors"
            )))
        }
    };
    by_dtype!(
        rows,
        forward_typed(py, net, rows.as_any(), save, num_threads)
    )
}

fn backward_typed<'py, T: Real + Element>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyAny>,
    saved: &Bound<'py, PyAny>,
    grad_out: &Bound<'py, PyAny>,
    (with_params, with_cosine): (bool, bool),
    num_threads: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let net_arrays: NetTuple<'py, T> = net.extract()?;
    let rows_arrays: RowsTuple<'py, T> = rows.extract()?;
    let saved: PyReadonlyArray2<'py, T> = saved.extract()?;
    let grad_out: PyReadonlyArray2<'py, T> = grad_out.extract()?;
    let (net, rows) = (net_of(&net_arrays)?, rows_of(&rows_arrays)?);
    let (saved, grad_out) = (slice(&saved, "saved")?, slice(&grad_out, "grad_out")?);
    let result = py
        .detach(|| {
            parallel::install(num_threads, || {
                three_body::backward(&net, &rows, saved, grad_out, with_params, with_cosine)
            })
        })
        .and_then(|result| result)
        .map_err(error::to_py)?;
    let params = result
        .params
        .map(|grads| grads_tuple(py, grads, &net))
        .transpose()?;
    (vector(py, result.cosine), params).into_pyobject(py)
}

/// `(grad_cosine [rows], parameter gradients or None)` of `Σ grad_out ⊙ out`; with
/// `with_cosine=False` the cosines' gradient is left out (an empty array).
#[pyfunction]
#[pyo3(signature = (net, rows, saved, grad_out, with_params, num_threads, with_cosine=true))]
#[allow(clippy::too_many_arguments)]
pub fn three_body_backward<'py>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyTuple>,
    saved: &Bound<'py, PyAny>,
    grad_out: &Bound<'py, PyAny>,
    with_params: bool,
    num_threads: usize,
    with_cosine: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(
        rows,
        backward_typed(
            py,
            net,
            rows.as_any(),
            saved,
            grad_out,
            (with_params, with_cosine),
            num_threads
        )
    )
}

fn double_backward_typed<'py, T: Real + Element>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyAny>,
    saved: &Bound<'py, PyAny>,
    grad_out: &Bound<'py, PyAny>,
    grad_cosine_out: &Bound<'py, PyAny>,
    num_threads: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    let net_arrays: NetTuple<'py, T> = net.extract()?;
    let rows_arrays: RowsTuple<'py, T> = rows.extract()?;
    let saved: PyReadonlyArray2<'py, T> = saved.extract()?;
    let saved = slice(&saved, "saved")?;
    let grad_out: PyReadonlyArray2<'py, T> = grad_out.extract()?;
    let grad_cosine_out: PyReadonlyArray1<'py, T> = grad_cosine_out.extract()?;
    let (net, rows) = (net_of(&net_arrays)?, rows_of(&rows_arrays)?);
    let width_out = net.width_out();
    let (grad_out, grad_cosine_out) = (
        slice(&grad_out, "grad_out")?,
        slice(&grad_cosine_out, "grad_cosine_out")?,
    );
    let result = py
        .detach(|| {
            parallel::install(num_threads, || {
                three_body::double_backward(&net, &rows, saved, grad_out, grad_cosine_out)
            })
        })
        .and_then(|result| result)
        .map_err(error::to_py)?;
    (
        matrix(py, result.grad_out, width_out)?,
        vector(py, result.cosine),
        grads_tuple(py, result.params, &net)?,
    )
        .into_pyobject(py)
}

/// `(grad of grad_out, grad of cosine, parameter gradients)` of `Σ grad_cosine_out ⊙ grad_cosine`.
#[pyfunction]
#[pyo3(signature = (net, rows, saved, grad_out, grad_cosine_out, num_threads))]
pub fn three_body_double_backward<'py>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyTuple>,
    saved: &Bound<'py, PyAny>,
    grad_out: &Bound<'py, PyAny>,
    grad_cosine_out: &Bound<'py, PyAny>,
    num_threads: usize,
) -> PyResult<Bound<'py, PyTuple>> {
    by_dtype!(
        rows,
        double_backward_typed(
            py,
            net,
            rows.as_any(),
            saved,
            grad_out,
            grad_cosine_out,
            num_threads
        )
    )
}

fn cosine_gradient_typed<'py, T: Real + Element>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyAny>,
    factors: &Bound<'py, PyAny>,
    grad_out: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let net_arrays: NetTuple<'py, T> = net.extract()?;
    let rows_arrays: RowsTuple<'py, T> = rows.extract()?;
    let factors: PyReadonlyArray2<'py, T> = factors.extract()?;
    let grad_out: PyReadonlyArray2<'py, T> = grad_out.extract()?;
    let (net, rows) = (net_of(&net_arrays)?, rows_of(&rows_arrays)?);
    let (factors, grad_out) = (slice(&factors, "factors")?, slice(&grad_out, "grad_out")?);
    let grads = py
        .detach(|| three_body::cosine_gradient(&net, &rows, factors, grad_out))
        .map_err(error::to_py)?;
    Ok(vector(py, grads).into_any())
}

/// The cosines' gradient [rows] from the factors of a `three_body_forward(..., "cosine_factors")`.
#[pyfunction]
#[pyo3(signature = (net, rows, factors, grad_out))]
pub fn three_body_cosine_gradient<'py>(
    py: Python<'py>,
    net: &Bound<'py, PyAny>,
    rows: &Bound<'py, PyTuple>,
    factors: &Bound<'py, PyAny>,
    grad_out: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    by_dtype!(
        rows,
        cosine_gradient_typed(py, net, rows.as_any(), factors, grad_out)
    )
}

/// Registers the three-body functions on `module`.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(three_body_forward, module)?)?;
    module.add_function(wrap_pyfunction!(three_body_backward, module)?)?;
    module.add_function(wrap_pyfunction!(three_body_double_backward, module)?)?;
    module.add_function(wrap_pyfunction!(three_body_cosine_gradient, module)?)?;
    Ok(())
}
