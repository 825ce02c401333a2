//! Collation: the frames of one batch read from the store and laid out flat, with both neighbour
//! lists, ready to become tensors without another copy.
//!
//! Layout (`F` frames, `N` atoms in all, `M_s` columns of neighbour spec `s`):
//! frame `f` owns flat atoms `atom_offsets[f]..atom_offsets[f + 1]`; neighbour indices are global
//! flat atom indices (`-1` pads a row), so that
//! `r_ij = positions[j] - positions[i] + shifts_ij @ cell[atom_frame[i]]`.
//! Missing labels are stored as 0 with their mask false, so that a masked loss never meets a NaN.

use rayon::prelude::*;

use super::sampler::FrameRef;
use crate::error::{CoreError, Result};
use crate::neighbors::{dense_neighbor_lists, DenseSpec, Frame};
use crate::store::{Dataset, Field};

/// Dense neighbour matrices of one spec over a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchNeighbors {
    /// Columns per atom.
    pub max_neighbors: usize,
    /// `[N * M]` global neighbour indices, `-1` padding; each row sorted by distance.
    pub index: Vec<i64>,
    /// `[N * M * 3]` integer image shifts, 0 in padding.
    pub shifts: Vec<i64>,
    /// `[F]` pairs within the cutoff that the cap dropped, per frame.
    pub num_dropped: Vec<i64>,
}

/// A collated batch; every vector is row-major, shapes in the field docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `F`.
    pub num_frames: usize,
    /// `N`.
    pub num_atoms: usize,
    /// `[F]` dataset (task) id of each frame.
    pub dataset_id: Vec<i64>,
    /// `[F]` frame id of each frame inside its dataset.
    pub frame_id: Vec<i64>,
    /// `[F + 1]` first flat atom of each frame, then `N`.
    pub atom_offsets: Vec<i64>,
    /// `[N]` frame of each atom.
    pub atom_frame: Vec<i64>,
    /// `[N]` dataset id of each atom.
    pub atom_dataset_id: Vec<i64>,
    /// `[N * 3]` Cartesian positions, Å.
    pub positions: Vec<f64>,
    /// `[N]` atomic numbers.
    pub atomic_numbers: Vec<i64>,
    /// `[F * 9]` cells, rows are lattice vectors (zero for non-periodic frames).
    pub cell: Vec<f64>,
    /// `[F * 3]` periodicity along each lattice vector.
    pub pbc: Vec<bool>,
    /// `[F]` energies, eV (0 where missing).
    pub energy: Vec<f64>,
    /// `[F]` energy present.
    pub has_energy: Vec<bool>,
    /// `[N * 3]` forces, eV/Å (0 where missing).
    pub forces: Vec<f64>,
    /// `[F]` forces present.
    pub has_forces: Vec<bool>,
    /// `[F * 9]` virials, eV (0 where missing).
    pub virial: Vec<f64>,
    /// `[F]` virial present.
    pub has_virial: Vec<bool>,
    /// One entry per neighbour spec, in the order of the specs.
    pub neighbors: Vec<BatchNeighbors>,
}

/// Collation options.
#[derive(Debug, Clone, PartialEq)]
pub struct CollateOptions {
    /// Neighbour lists to build (empty: arrays only).
    pub specs: Vec<DenseSpec>,
    /// Budget of dense slots per frame passed to the neighbour search.
    pub max_pairs: usize,
    /// Raise instead of reporting when a cap drops pairs.
    pub error_on_dropped: bool,
}

/// Per-frame values, written after the parallel part.
#[derive(Debug, Default)]
struct FrameValues {
    cell: [f64; 9],
    pbc: [bool; 3],
    energy: f64,
    has_energy: bool,
    has_forces: bool,
    virial: [f64; 9],
    has_virial: bool,
    dropped: Vec<i64>,
}

/// The per-atom outputs of one frame.
struct FrameRows<'a> {
    positions: &'a mut [f64],
    atomic_numbers: &'a mut [i64],
    forces: &'a mut [f64],
    index: Vec<&'a mut [i64]>,
    shifts: Vec<&'a mut [i64]>,
}

/// Cuts `values` into consecutive pieces of `counts[k] * width` elements.
fn split<'a, T>(mut values: &'a mut [T], counts: &[usize], width: usize) -> Vec<&'a mut [T]> {
    let mut pieces = Vec::with_capacity(counts.len());
    for &count in counts {
        let (head, rest) = values.split_at_mut(count * width);
        pieces.push(head);
        values = rest;
    }
    pieces
}

/// Reads a label of frame `frame` guarded by its mask; `Ok(false)` leaves `out` at 0.
fn masked(
    dataset: &Dataset,
    (label, mask): (Field, Field),
    rows: std::ops::Range<usize>,
    out: &mut [f64],
    frame: usize,
) -> Result<bool> {
    if dataset.meta(label).is_none() || dataset.meta(mask).is_none() {
        return Ok(false);
    }
    let mut present = [false];
    dataset.read_rows(mask, frame..frame + 1, &mut present, Some(frame))?;
    if present[0] {
        dataset.read_rows(label, rows, out, Some(frame))?;
    }
    Ok(present[0])
}

fn fill_frame(
    dataset: &Dataset,
    frame: usize,
    global_start: usize,
    rows: FrameRows<'_>,
    options: &CollateOptions,
    sequential: bool,
) -> Result<FrameValues> {
    let atoms = dataset.atoms(frame);
    let mut values = FrameValues::default();
    dataset.read_rows(Field::Positions, atoms.clone(), rows.positions, Some(frame))?;
    let mut numbers = vec![0u8; atoms.len()];
    dataset.read_rows(
        Field::AtomicNumbers,
        atoms.clone(),
        &mut numbers,
        Some(frame),
    )?;
    for (out, &z) in rows.atomic_numbers.iter_mut().zip(&numbers) {
        *out = i64::from(z);
    }
    dataset.read_rows(Field::Cell, frame..frame + 1, &mut values.cell, Some(frame))?;
    dataset.read_rows(Field::Pbc, frame..frame + 1, &mut values.pbc, Some(frame))?;
    let mut energy = [0.0];
    values.has_energy = masked(
        dataset,
        (Field::Energy, Field::HasEnergy),
        frame..frame + 1,
        &mut energy,
        frame,
    )?;
    values.energy = energy[0];
    values.has_forces = masked(
        dataset,
        (Field::Forces, Field::HasForces),
        atoms.clone(),
        rows.forces,
        frame,
    )?;
    values.has_virial = masked(
        dataset,
        (Field::Virial, Field::HasVirial),
        frame..frame + 1,
        &mut values.virial,
        frame,
    )?;
    if options.specs.is_empty() {
        return Ok(values);
    }
    let positions: Vec<[f64; 3]> = rows
        .positions
        .chunks_exact(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    let c = &values.cell;
    let cell = [[c[0], c[1], c[2]], [c[3], c[4], c[5]], [c[6], c[7], c[8]]];
    let geometry = Frame {
        positions: &positions,
        cell: values.pbc.iter().any(|&p| p).then_some(cell),
        pbc: values.pbc,
    };
    let search = || dense_neighbor_lists(&geometry, &options.specs, options.max_pairs);
    // With at least as many frames as threads the frames already keep every thread busy:
    // searching each frame on its own thread avoids splitting small frames into tasks.
    let lists = if sequential {
        crate::parallel::install(1, search).and_then(|lists| lists)
    } else {
        search()
    };
    let lists = lists.map_err(|error| {
        CoreError::InvalidInput(format!(
            "dataset '{}', frame {frame}: neighbour search: {error}",
            dataset.name
        ))
    })?;
    for ((list, index), shifts) in lists.iter().zip(rows.index).zip(rows.shifts) {
        for (out, &local) in index.iter_mut().zip(&list.index) {
            *out = if local < 0 {
                -1
            } else {
                local + global_start as i64
            };
        }
        shifts.copy_from_slice(&list.shifts);
        values.dropped.push(list.num_dropped as i64);
    }
    Ok(values)
}

/// Reads and collates the frames `frames` of `datasets`, in parallel over frames on the current
/// rayon pool.
///
/// # Errors
/// [`CoreError::Data`] naming dataset, array and frame when the store cannot be read;
/// [`CoreError::InvalidInput`] when the neighbour search fails (bad cell) or, with
/// `error_on_dropped`, when a cap drops pairs.
pub fn collate(
    datasets: &[Dataset],
    frames: &[FrameRef],
    options: &CollateOptions,
) -> Result<Batch> {
    let counts: Vec<usize> = frames
        .iter()
        .map(|&(d, f)| datasets[d as usize].atoms(f as usize).len())
        .collect();
    let num_frames = frames.len();
    let num_atoms: usize = counts.iter().sum();
    let mut batch = Batch {
        num_frames,
        num_atoms,
        dataset_id: frames.iter().map(|&(d, _)| i64::from(d)).collect(),
        frame_id: frames.iter().map(|&(_, f)| i64::from(f)).collect(),
        atom_offsets: std::iter::once(0)
            .chain(counts.iter().scan(0i64, |sum, &c| {
                *sum += c as i64;
                Some(*sum)
            }))
            .collect(),
        positions: vec![0.0; num_atoms * 3],
        atomic_numbers: vec![0; num_atoms],
        forces: vec![0.0; num_atoms * 3],
        neighbors: options
            .specs
            .iter()
            .map(|spec| BatchNeighbors {
                max_neighbors: spec.max_neighbors,
                index: vec![0; num_atoms * spec.max_neighbors],
                shifts: vec![0; num_atoms * spec.max_neighbors * 3],
                num_dropped: Vec::with_capacity(num_frames),
            })
            .collect(),
        ..Batch::default()
    };
    for (frame, (&count, &(dataset, _))) in counts.iter().zip(frames).enumerate() {
        batch
            .atom_frame
            .extend(std::iter::repeat(frame as i64).take(count));
        batch
            .atom_dataset_id
            .extend(std::iter::repeat(i64::from(dataset)).take(count));
    }
    let mut index_pieces: Vec<Vec<&mut [i64]>> = Vec::new();
    let mut shift_pieces: Vec<Vec<&mut [i64]>> = Vec::new();
    for list in batch.neighbors.iter_mut() {
        index_pieces.push(split(&mut list.index, &counts, list.max_neighbors));
        shift_pieces.push(split(&mut list.shifts, &counts, list.max_neighbors * 3));
    }
    let mut rows: Vec<FrameRows<'_>> = split(&mut batch.positions, &counts, 3)
        .into_iter()
        .zip(split(&mut batch.atomic_numbers, &counts, 1))
        .zip(split(&mut batch.forces, &counts, 3))
        .map(|((positions, atomic_numbers), forces)| FrameRows {
            positions,
            atomic_numbers,
            forces,
            index: Vec::new(),
            shifts: Vec::new(),
        })
        .collect();
    for (spec_index, spec_shifts) in index_pieces.into_iter().zip(shift_pieces) {
        for ((row, index), shifts) in rows.iter_mut().zip(spec_index).zip(spec_shifts) {
            row.index.push(index);
            row.shifts.push(shifts);
        }
    }
    let starts = batch.atom_offsets.clone();
    let sequential = num_frames >= rayon::current_num_threads();
    let values: Vec<Result<FrameValues>> = rows
        .into_par_iter()
        .zip(frames.par_iter())
        .zip(starts.par_iter())
        .map(|((rows, &(dataset, frame)), &start)| {
            fill_frame(
                &datasets[dataset as usize],
                frame as usize,
                start as usize,
                rows,
                options,
                sequential,
            )
        })
        .collect();
    for (position, values) in values.into_iter().enumerate() {
        let values = values?;
        batch.cell.extend_from_slice(&values.cell);
        batch.pbc.extend_from_slice(&values.pbc);
        batch.energy.push(values.energy);
        batch.has_energy.push(values.has_energy);
        batch.has_forces.push(values.has_forces);
        batch.virial.extend_from_slice(&values.virial);
        batch.has_virial.push(values.has_virial);
        for (spec, (list, &dropped)) in batch.neighbors.iter_mut().zip(&values.dropped).enumerate()
        {
            list.num_dropped.push(dropped);
            if dropped > 0 && options.error_on_dropped {
                let (dataset, frame) = frames[position];
                let dataset = &datasets[dataset as usize];
                return Err(CoreError::InvalidInput(format!(
                    "dataset '{}', frame {frame}: {dropped} neighbour pairs within {} Å exceed max_neighbors = {} (neighbour spec {spec}); raise the cap or allow dropping",
                    dataset.name, options.specs[spec].cutoff, options.specs[spec].max_neighbors
                )));
            }
        }
    }
    Ok(batch)
}
