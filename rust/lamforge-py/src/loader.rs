//! Binding of the streaming loader (`lamforge_core::loader`): argument checks, GIL release while
//! waiting for a batch, and the batch handed over as NumPy arrays that own the Rust buffers (no
//! copy; `torch.from_numpy` then shares them too).

use std::path::PathBuf;

use lamforge_core::loader::{
    Batch, BatchSize, DatasetSelection, FrameRef, Loader, LoaderConfig, SamplerConfig,
};
use lamforge_core::neighbors::DenseSpec;
use numpy::ndarray::{Array1, Array2, Array3, ArrayD, IxDyn};
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::error::to_py;

fn shaped<T: numpy::Element>(
    py: Python<'_>,
    values: Vec<T>,
    shape: &[usize],
) -> PyResult<Py<PyAny>> {
    let array = ArrayD::from_shape_vec(IxDyn(shape), values)
        .map_err(|error| PyValueError::new_err(format!("internal batch layout error: {error}")))?;
    Ok(array.into_pyarray(py).into_any().unbind())
}

/// The batch as a dict of arrays; `lamforge.data.batch.Batch` gives it types and documentation.
fn batch_to_dict<'py>(py: Python<'py>, batch: Batch) -> PyResult<Bound<'py, PyDict>> {
    let (frames, atoms) = (batch.num_frames, batch.num_atoms);
    let dict = PyDict::new(py);
    dict.set_item("num_frames", frames)?;
    dict.set_item("num_atoms", atoms)?;
    dict.set_item(
        "dataset_id",
        Array1::from(batch.dataset_id).into_pyarray(py),
    )?;
    dict.set_item("frame_id", Array1::from(batch.frame_id).into_pyarray(py))?;
    dict.set_item(
        "atom_offsets",
        Array1::from(batch.atom_offsets).into_pyarray(py),
    )?;
    dict.set_item(
        "atom_frame",
        Array1::from(batch.atom_frame).into_pyarray(py),
    )?;
    dict.set_item(
        "atom_dataset_id",
        Array1::from(batch.atom_dataset_id).into_pyarray(py),
    )?;
    dict.set_item("positions", shaped(py, batch.positions, &[atoms, 3])?)?;
    dict.set_item(
        "atomic_numbers",
        Array1::from(batch.atomic_numbers).into_pyarray(py),
    )?;
    dict.set_item("cell", shaped(py, batch.cell, &[frames, 3, 3])?)?;
    dict.set_item("pbc", shaped(py, batch.pbc, &[frames, 3])?)?;
    dict.set_item("energy", Array1::from(batch.energy).into_pyarray(py))?;
    dict.set_item(
        "has_energy",
        Array1::from(batch.has_energy).into_pyarray(py),
    )?;
    dict.set_item("forces", shaped(py, batch.forces, &[atoms, 3])?)?;
    dict.set_item(
        "has_forces",
        Array1::from(batch.has_forces).into_pyarray(py),
    )?;
    dict.set_item("virial", shaped(py, batch.virial, &[frames, 3, 3])?)?;
    dict.set_item(
        "has_virial",
        Array1::from(batch.has_virial).into_pyarray(py),
    )?;
    let mut lists = Vec::with_capacity(batch.neighbors.len());
    for list in batch.neighbors {
        let width = list.max_neighbors;
        let index = Array2::from_shape_vec((atoms, width), list.index)
            .map_err(|error| PyValueError::new_err(error.to_string()))?;
        let shifts = Array3::from_shape_vec((atoms, width, 3), list.shifts)
            .map_err(|error| PyValueError::new_err(error.to_string()))?;
        lists.push((
            index.into_pyarray(py),
            shifts.into_pyarray(py),
            Array1::from(list.num_dropped).into_pyarray(py),
        ));
    }
    dict.set_item("neighbors", lists)?;
    Ok(dict)
}

/// Loader over a lamforge store (wrapped by `lamforge.data.loader.StoreLoader`).
#[pyclass(module = "lamforge._core", name = "Loader")]
pub struct PyLoader {
    inner: Loader,
}

#[pymethods]
impl PyLoader {
    #[new]
    #[pyo3(signature = (
        *, store, datasets, frames, seed, batch_size, max_atoms, shuffle, shuffle_buffer,
        weights, batches_per_epoch, mixed_batches, rank, world_size, cutoffs, max_neighbors,
        error_on_dropped, num_threads, prefetch, cache_bytes
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: PathBuf,
        datasets: Vec<String>,
        frames: Vec<Option<PyReadonlyArray1<'_, u32>>>,
        seed: u64,
        batch_size: Option<usize>,
        max_atoms: Option<usize>,
        shuffle: bool,
        shuffle_buffer: usize,
        weights: Option<Vec<f64>>,
        batches_per_epoch: Option<usize>,
        mixed_batches: bool,
        rank: usize,
        world_size: usize,
        cutoffs: Vec<f64>,
        max_neighbors: Vec<usize>,
        error_on_dropped: bool,
        num_threads: usize,
        prefetch: usize,
        cache_bytes: usize,
    ) -> PyResult<Self> {
        if frames.len() != datasets.len() {
            return Err(PyValueError::new_err(format!(
                "{} frame selections for {} datasets",
                frames.len(),
                datasets.len()
            )));
        }
        if cutoffs.len() != max_neighbors.len() {
            return Err(PyValueError::new_err(
                "cutoffs and max_neighbors differ in length",
            ));
        }
        let batch = match (batch_size, max_atoms) {
            (Some(size), None) => BatchSize::Frames(size),
            (None, Some(budget)) => BatchSize::Atoms(budget),
            _ => {
                return Err(PyValueError::new_err(
                    "give exactly one of batch_size (frames) and max_atoms (atom budget)",
                ))
            }
        };
        let datasets = datasets
            .into_iter()
            .zip(frames)
            .map(|(name, frames)| DatasetSelection {
                name,
                frames: frames.map(|frames| frames.as_array().to_vec()),
            })
            .collect();
        let config = LoaderConfig {
            store,
            datasets,
            sampler: SamplerConfig {
                seed,
                batch,
                shuffle,
                shuffle_buffer,
                weights,
                batches_per_epoch,
                mixed_batches,
                rank,
                world_size,
            },
            specs: cutoffs
                .into_iter()
                .zip(max_neighbors)
                .map(|(cutoff, max_neighbors)| DenseSpec {
                    cutoff,
                    max_neighbors,
                })
                .collect(),
            error_on_dropped,
            num_threads,
            prefetch,
            cache_bytes,
        };
        let inner = py.detach(|| Loader::new(config)).map_err(to_py)?;
        Ok(Self { inner })
    }

    /// The next batch of the current epoch as a dict of arrays, or None at its end (the loader
    /// then stands at the next epoch). Waits without holding the GIL.
    fn next<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let inner = &mut self.inner;
        match py.detach(|| inner.next_batch()).map_err(to_py)? {
            Some(batch) => Ok(Some(batch_to_dict(py, batch)?)),
            None => Ok(None),
        }
    }

    /// Collates frames `[k, 2]` (dataset, frame) now, outside the sample order.
    fn collate<'py>(
        &mut self,
        py: Python<'py>,
        frames: PyReadonlyArray2<'_, u32>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let view = frames.as_array();
        if view.ncols() != 2 {
            return Err(PyValueError::new_err(
                "frames must have shape (k, 2): dataset, frame",
            ));
        }
        let refs: Vec<FrameRef> = view
            .rows()
            .into_iter()
            .map(|row| (row[0], row[1]))
            .collect();
        let inner = &mut self.inner;
        let batch = py.detach(|| inner.collate(&refs)).map_err(to_py)?;
        batch_to_dict(py, batch)
    }

    /// Number of batches of epoch `epoch` on this rank.
    fn len(&mut self, py: Python<'_>, epoch: u64) -> PyResult<usize> {
        let inner = &mut self.inner;
        py.detach(|| inner.len(epoch)).map_err(to_py)
    }

    /// Batches of epoch `epoch` as `[k, 2]` arrays of (dataset, frame).
    fn plan<'py>(
        &mut self,
        py: Python<'py>,
        epoch: u64,
    ) -> PyResult<Vec<Bound<'py, PyArray2<u32>>>> {
        let inner = &mut self.inner;
        let plan = py.detach(|| inner.plan(epoch)).map_err(to_py)?;
        plan.iter()
            .map(|batch| {
                let flat: Vec<u32> = batch.iter().flat_map(|&(d, f)| [d, f]).collect();
                Array2::from_shape_vec((batch.len(), 2), flat)
                    .map(|array| array.into_pyarray(py))
                    .map_err(|error| PyValueError::new_err(error.to_string()))
            })
            .collect()
    }

    /// Moves to batch `position` of epoch `epoch`.
    fn set_position(&mut self, py: Python<'_>, epoch: u64, position: usize) {
        let inner = &mut self.inner;
        py.detach(|| inner.set_position(epoch, position));
    }

    /// Current epoch.
    #[getter]
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }

    /// Batches of the current epoch already returned.
    #[getter]
    fn position(&self) -> usize {
        self.inner.position()
    }

    /// (hits, misses, bytes held) of the decoded-chunk cache.
    fn cache_stats(&self) -> (u64, u64, usize) {
        let stats = self.inner.cache_stats();
        (stats.hits, stats.misses, stats.cost)
    }

    /// Stops the prefetch thread; the loader can continue later.
    fn close(&mut self, py: Python<'_>) {
        let inner = &mut self.inner;
        py.detach(|| inner.close());
    }
}

/// Adds the loader to the module.
pub fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<PyLoader>()?;
    Ok(())
}
