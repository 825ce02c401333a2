//! Bindings of `lamforge_core::neighbors`: shape checks with the GIL held, the search with it
//! released on an explicit thread pool, results moved (not copied) into NumPy arrays.

use lamforge_core::cell::Matrix3;
use lamforge_core::neighbors::{self, Batch, DenseList, DenseSpec, Frame, ListOptions, PairList};
use lamforge_core::parallel;
use numpy::ndarray::{Array2, Array3};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2,
    PyReadonlyArray3, PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error;

/// Sparse list as returned to Python: centers, neighbors, shifts, distances, vectors, dropped.
type PairArrays<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray2<f64>>,
    u64,
);

/// Dense list as returned to Python: index, shifts, distances, dropped.
type DenseArrays<'py> = (
    Bound<'py, PyArray2<i64>>,
    Bound<'py, PyArray3<i64>>,
    Bound<'py, PyArray2<f64>>,
    u64,
);

fn value_error(message: String) -> PyErr {
    PyValueError::new_err(message)
}

/// Views a C-contiguous `(n, 3)` float64 array as rows.
fn rows<'a>(array: &'a PyReadonlyArray2<'_, f64>, name: &str) -> PyResult<&'a [[f64; 3]]> {
    let shape = array.shape();
    if shape.len() != 2 || shape[1] != 3 {
        return Err(value_error(format!(
            "{name} must have shape (num_atoms, 3), got {shape:?}"
        )));
    }
    if shape[0] == 0 {
        return Ok(&[]);
    }
    let flat = array
        .as_slice()
        .map_err(|_| value_error(format!("{name} must be C-contiguous")))?;
    // SAFETY: `[f64; 3]` has the size of three `f64` and the alignment of one, and `flat` is a
    // contiguous, initialised slice of `3 * shape[0]` values that outlives the returned borrow.
    Ok(unsafe { std::slice::from_raw_parts(flat.as_ptr().cast::<[f64; 3]>(), shape[0]) })
}

fn matrix(cell: &PyReadonlyArray2<'_, f64>) -> PyResult<Matrix3> {
    let view = cell.as_array();
    if view.shape() != [3, 3] {
        return Err(value_error(format!(
            "cell must have shape (3, 3), got {:?}",
            view.shape()
        )));
    }
    Ok(std::array::from_fn(|row| {
        std::array::from_fn(|column| view[[row, column]])
    }))
}

fn specs_of(specs: Vec<(f64, usize)>) -> Vec<DenseSpec> {
    specs
        .into_iter()
        .map(|(cutoff, max_neighbors)| DenseSpec {
            cutoff,
            max_neighbors,
        })
        .collect()
}

fn pair_arrays(py: Python<'_>, list: PairList) -> PyResult<PairArrays<'_>> {
    let count = list.len();
    let shape_error = |e: numpy::ndarray::ShapeError| value_error(e.to_string());
    Ok((
        list.centers.into_pyarray(py),
        list.neighbors.into_pyarray(py),
        Array2::from_shape_vec((count, 3), list.shifts)
            .map_err(shape_error)?
            .into_pyarray(py),
        list.distances.into_pyarray(py),
        Array2::from_shape_vec((count, 3), list.vectors)
            .map_err(shape_error)?
            .into_pyarray(py),
        list.num_dropped,
    ))
}

fn dense_arrays(py: Python<'_>, list: DenseList, num_atoms: usize) -> PyResult<DenseArrays<'_>> {
    let width = list.max_neighbors;
    let shape_error = |e: numpy::ndarray::ShapeError| value_error(e.to_string());
    Ok((
        Array2::from_shape_vec((num_atoms, width), list.index)
            .map_err(shape_error)?
            .into_pyarray(py),
        Array3::from_shape_vec((num_atoms, width, 3), list.shifts)
            .map_err(shape_error)?
            .into_pyarray(py),
        Array2::from_shape_vec((num_atoms, width), list.distances)
            .map_err(shape_error)?
            .into_pyarray(py),
        list.num_dropped,
    ))
}

/// Full neighbour list of one frame, sorted per centre (see `lamforge.neighbors.neighbor_list`).
#[pyfunction]
#[pyo3(signature = (positions, cell, pbc, cutoff, max_neighbors, self_pair, num_threads, max_pairs))]
#[allow(clippy::too_many_arguments)]
pub fn neighbor_list<'py>(
    py: Python<'py>,
    positions: PyReadonlyArray2<'py, f64>,
    cell: Option<PyReadonlyArray2<'py, f64>>,
    pbc: [bool; 3],
    cutoff: f64,
    max_neighbors: Option<usize>,
    self_pair: bool,
    num_threads: usize,
    max_pairs: usize,
) -> PyResult<PairArrays<'py>> {
    let positions = rows(&positions, "positions")?;
    let cell = cell.as_ref().map(matrix).transpose()?;
    let frame = Frame {
        positions,
        cell,
        pbc,
    };
    let options = ListOptions {
        cutoff,
        max_neighbors,
        self_pair,
        max_pairs,
    };
    let list = py
        .detach(|| parallel::install(num_threads, || neighbors::neighbor_list(&frame, &options)))
        .and_then(|result| result)
        .map_err(error::to_py)?;
    pair_arrays(py, list)
}

/// Dense lists of one frame for several (cutoff, max_neighbors) specs from one search.
#[pyfunction]
#[pyo3(signature = (positions, cell, pbc, specs, num_threads, max_pairs))]
pub fn dense_neighbor_lists<'py>(
    py: Python<'py>,
    positions: PyReadonlyArray2<'py, f64>,
    cell: Option<PyReadonlyArray2<'py, f64>>,
    pbc: [bool; 3],
    specs: Vec<(f64, usize)>,
    num_threads: usize,
    max_pairs: usize,
) -> PyResult<Vec<DenseArrays<'py>>> {
    let positions = rows(&positions, "positions")?;
    let cell = cell.as_ref().map(matrix).transpose()?;
    let frame = Frame {
        positions,
        cell,
        pbc,
    };
    let specs = specs_of(specs);
    let lists = py
        .detach(|| {
            parallel::install(num_threads, || {
                neighbors::dense_neighbor_lists(&frame, &specs, max_pairs)
            })
        })
        .and_then(|result| result)
        .map_err(error::to_py)?;
    lists
        .into_iter()
        .map(|list| dense_arrays(py, list, positions.len()))
        .collect()
}

/// Dense lists over the flat atoms of a batch of frames, with global neighbour indices.
#[pyfunction]
#[pyo3(signature = (positions, atom_offsets, cells, pbcs, specs, num_threads, max_pairs))]
#[allow(clippy::too_many_arguments)]
pub fn batch_dense_neighbor_lists<'py>(
    py: Python<'py>,
    positions: PyReadonlyArray2<'py, f64>,
    atom_offsets: PyReadonlyArray1<'py, i64>,
    cells: PyReadonlyArray3<'py, f64>,
    pbcs: PyReadonlyArray2<'py, bool>,
    specs: Vec<(f64, usize)>,
    num_threads: usize,
    max_pairs: usize,
) -> PyResult<Vec<DenseArrays<'py>>> {
    let positions = rows(&positions, "positions")?;
    let offsets: Vec<usize> = atom_offsets
        .as_array()
        .iter()
        .map(|&offset| usize::try_from(offset))
        .collect::<Result<_, _>>()
        .map_err(|_| value_error("atom_offsets must not be negative".to_string()))?;
    let num_frames = offsets.len().saturating_sub(1);
    let cells_view = cells.as_array();
    let pbcs_view = pbcs.as_array();
    if cells_view.shape() != [num_frames, 3, 3] || pbcs_view.shape() != [num_frames, 3] {
        return Err(value_error(format!(
            "{num_frames} frames in atom_offsets need cells of shape ({num_frames}, 3, 3) and pbcs of \
             shape ({num_frames}, 3), got {:?} and {:?}",
            cells_view.shape(),
            pbcs_view.shape()
        )));
    }
    let cells: Vec<Matrix3> = (0..num_frames)
        .map(|f| std::array::from_fn(|r| std::array::from_fn(|c| cells_view[[f, r, c]])))
        .collect();
    let pbcs: Vec<[bool; 3]> = (0..num_frames)
        .map(|f| std::array::from_fn(|k| pbcs_view[[f, k]]))
        .collect();
    let batch = Batch {
        positions,
        atom_offsets: &offsets,
        cells: &cells,
        pbcs: &pbcs,
    };
    let specs = specs_of(specs);
    let lists = py
        .detach(|| {
            parallel::install(num_threads, || {
                neighbors::batch_dense_neighbor_lists(&batch, &specs, max_pairs)
            })
        })
        .and_then(|result| result)
        .map_err(error::to_py)?;
    lists
        .into_iter()
        .map(|list| dense_arrays(py, list, positions.len()))
        .collect()
}

/// Registers the neighbour functions on `module`.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(neighbor_list, module)?)?;
    module.add_function(wrap_pyfunction!(dense_neighbor_lists, module)?)?;
    module.add_function(wrap_pyfunction!(batch_dense_neighbor_lists, module)?)?;
    Ok(())
}
