//! Periodic neighbour search: full neighbour lists, sorted per centre and optionally capped, in
//! the sparse pair form and in the dense `[num_atoms, max_neighbors]` form of DPA-2.
//!
//! # Convention
//! A pair `(center, neighbor, shift)` stands for the vector
//! `vector = positions[neighbor] - positions[center] + shift @ cell`, with `shift` the integer
//! image indices along the three lattice vectors (always 0 along non-periodic directions). Lists
//! are full (both `i -> j` and `j -> i`), contain periodic images of an atom itself (they are real
//! neighbours in cells thinner than the cutoff) but not the zero-shift self pair unless asked for,
//! and keep pairs with `distance < cutoff`. Centres ascend; the pairs of a centre are sorted by
//! distance, then neighbour index, then shift (lexicographic), so equal inputs give identical
//! outputs. A cap keeps the nearest `max_neighbors` of each centre in that order.
//!
//! Atoms may lie outside the cell: they give the same pairs as their wrapped copies, with shifts
//! that account for the difference.

mod geometry;
mod grid;
mod ordering;
mod search;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cell::Matrix3;
use crate::error::{CoreError, Result};
use crate::memory;
use crate::parallel;
pub use geometry::Frame;
use geometry::Geometry;
use grid::Grid;
use ordering::Ordering as NeighbourOrder;
pub use search::Pair;
use search::{distance_bound, Searcher};

/// Default budget on the number of pairs (or dense slots) one request may produce: about 3.6 GB
/// of sparse output.
pub const DEFAULT_MAX_PAIRS: usize = 50_000_000;

/// Centres per parallel task when more than one thread runs.
const TASKS_PER_THREAD: usize = 8;

/// Fewest centres per parallel task.
const MIN_CENTRES_PER_TASK: usize = 64;

/// Options of a sparse neighbour list.
#[derive(Debug, Clone, Copy)]
pub struct ListOptions {
    /// Pairs with `distance < cutoff` are listed.
    pub cutoff: f64,
    /// Keep only the nearest this many neighbours per centre.
    pub max_neighbors: Option<usize>,
    /// Also list the zero-shift self pair `(i, i, 0)` at distance 0 (ASE's `self_interaction`).
    pub self_pair: bool,
    /// Refuse requests that would produce more pairs than this.
    pub max_pairs: usize,
}

/// A sparse neighbour list, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairList {
    /// Centre atom of each pair, `[num_pairs]`, ascending.
    pub centers: Vec<i64>,
    /// Neighbour atom of each pair, `[num_pairs]`.
    pub neighbors: Vec<i64>,
    /// Integer image shifts, `[num_pairs * 3]` row-major.
    pub shifts: Vec<i64>,
    /// Pair distances, `[num_pairs]`.
    pub distances: Vec<f64>,
    /// Pair vectors, `[num_pairs * 3]` row-major.
    pub vectors: Vec<f64>,
    /// Pairs within the cutoff removed by `max_neighbors`.
    pub num_dropped: u64,
}

impl PairList {
    /// Number of pairs in the list.
    pub fn len(&self) -> usize {
        self.centers.len()
    }

    /// Whether the list has no pairs.
    pub fn is_empty(&self) -> bool {
        self.centers.is_empty()
    }

    fn with_capacity(capacity: usize) -> Self {
        Self {
            centers: memory::with_capacity(capacity),
            neighbors: memory::with_capacity(capacity),
            shifts: memory::with_capacity(3 * capacity),
            distances: memory::with_capacity(capacity),
            vectors: memory::with_capacity(3 * capacity),
            num_dropped: 0,
        }
    }

    fn push(&mut self, center: usize, pair: &Pair) {
        self.centers.push(center as i64);
        self.neighbors.push(pair.neighbor as i64);
        self.shifts.extend_from_slice(&pair.shift);
        self.distances.push(pair.distance);
        self.vectors.extend_from_slice(&pair.vector);
    }

    /// Concatenates `parts`, copying them in parallel into buffers allocated once.
    fn concatenate(parts: Vec<PairList>) -> Self {
        let total: usize = parts.iter().map(PairList::len).sum();
        let mut list = Self {
            centers: memory::zeroed(total),
            neighbors: memory::zeroed(total),
            shifts: memory::zeroed(3 * total),
            distances: memory::zeroed(total),
            vectors: memory::zeroed(3 * total),
            num_dropped: parts.iter().map(|part| part.num_dropped).sum(),
        };
        let mut tasks = Vec::with_capacity(parts.len());
        let (mut centers, mut neighbors, mut distances) = (
            list.centers.as_mut_slice(),
            list.neighbors.as_mut_slice(),
            list.distances.as_mut_slice(),
        );
        let (mut shifts, mut vectors) = (list.shifts.as_mut_slice(), list.vectors.as_mut_slice());
        for part in &parts {
            let count = part.len();
            let (c, rest_c) = std::mem::take(&mut centers).split_at_mut(count);
            let (n, rest_n) = std::mem::take(&mut neighbors).split_at_mut(count);
            let (d, rest_d) = std::mem::take(&mut distances).split_at_mut(count);
            let (s, rest_s) = std::mem::take(&mut shifts).split_at_mut(3 * count);
            let (v, rest_v) = std::mem::take(&mut vectors).split_at_mut(3 * count);
            (centers, neighbors, distances, shifts, vectors) =
                (rest_c, rest_n, rest_d, rest_s, rest_v);
            tasks.push((part, c, n, d, s, v));
        }
        parallel::map(tasks, |(part, c, n, d, s, v)| {
            c.copy_from_slice(&part.centers);
            n.copy_from_slice(&part.neighbors);
            d.copy_from_slice(&part.distances);
            s.copy_from_slice(&part.shifts);
            v.copy_from_slice(&part.vectors);
        });
        list
    }
}

/// One dense list to derive: neighbours closer than `cutoff`, the nearest `max_neighbors` kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DenseSpec {
    /// Cutoff of this list; at most the search cutoff.
    pub cutoff: f64,
    /// Columns of the dense matrices.
    pub max_neighbors: usize,
}

/// Dense neighbour matrices: row `i` holds the sorted neighbours of atom `i`, padded.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseList {
    /// Columns per row.
    pub max_neighbors: usize,
    /// Neighbour indices, `[num_atoms * max_neighbors]`, padding `-1`.
    pub index: Vec<i64>,
    /// Image shifts, `[num_atoms * max_neighbors * 3]`, padding 0.
    pub shifts: Vec<i64>,
    /// Distances, `[num_atoms * max_neighbors]`, padding `+inf`.
    pub distances: Vec<f64>,
    /// Neighbours within the cutoff that did not fit in `max_neighbors`.
    pub num_dropped: u64,
}

impl DenseList {
    fn empty(num_atoms: usize, max_neighbors: usize) -> Self {
        let slots = num_atoms * max_neighbors;
        Self {
            max_neighbors,
            index: memory::zeroed(slots),
            shifts: memory::zeroed(slots * 3),
            distances: memory::zeroed(slots),
            num_dropped: 0,
        }
    }
}

/// Frames of a batch laid out flat: frame `f` owns atoms `atom_offsets[f]..atom_offsets[f + 1]`.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Positions of all frames, `[total_atoms]`.
    pub positions: &'a [[f64; 3]],
    /// `[num_frames + 1]` ascending offsets, first 0, last `total_atoms`.
    pub atom_offsets: &'a [usize],
    /// Cell of each frame, `[num_frames]`; ignored for frames without periodic direction.
    pub cells: &'a [Matrix3],
    /// Periodicity of each frame, `[num_frames]`.
    pub pbcs: &'a [[bool; 3]],
}

fn check_cutoff(cutoff: f64, name: &str) -> Result<()> {
    if cutoff.is_finite() && cutoff > 0.0 {
        Ok(())
    } else {
        Err(CoreError::InvalidInput(format!(
            "{name} must be a positive finite number, got {cutoff}"
        )))
    }
}

/// Expected number of pairs from the atom density: the budget check before any allocation.
fn estimate_pairs(geometry: &Geometry, cutoff: f64) -> f64 {
    let num_atoms = geometry.num_atoms() as f64;
    let b = &geometry.basis;
    let mut volume = (b[0][0] * (b[1][1] * b[2][2] - b[1][2] * b[2][1])
        - b[0][1] * (b[1][0] * b[2][2] - b[1][2] * b[2][0])
        + b[0][2] * (b[1][0] * b[2][1] - b[1][1] * b[2][0]))
        .abs();
    for k in (0..3).filter(|&k| !geometry.periodic[k]) {
        let (low, high) = geometry
            .fractional
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                (lo.min(s[k]), hi.max(s[k]))
            });
        // Non-periodic basis rows are unit vectors: the span plus a cutoff on each side.
        volume *= (high - low).max(0.0) + cutoff;
    }
    let sphere = 4.0 / 3.0 * std::f64::consts::PI * cutoff.powi(3);
    num_atoms * num_atoms / volume * sphere
}

fn too_many_pairs(what: &str, pairs: f64, max_pairs: usize) -> CoreError {
    CoreError::InvalidInput(format!(
        "neighbour list would produce {what} {pairs:.3e} pairs, more than the budget of \
         {max_pairs:e} (max_pairs); lower the cutoff, cap max_neighbors or raise max_pairs"
    ))
}

/// Splits `0..num_atoms` into contiguous ranges, one when a single thread runs.
fn centre_ranges(num_atoms: usize) -> Vec<std::ops::Range<usize>> {
    let threads = parallel::current_threads();
    let tasks = if threads == 1 {
        1
    } else {
        // Small frames stay whole: a task per few centres costs more than it saves.
        (threads * TASKS_PER_THREAD)
            .min(num_atoms.div_ceil(MIN_CENTRES_PER_TASK))
            .max(1)
    };
    let size = num_atoms.div_ceil(tasks).max(1);
    (0..num_atoms)
        .step_by(size)
        .map(|start| start..(start + size).min(num_atoms))
        .collect()
}

/// Full neighbour list of one frame, sorted per centre, capped if asked.
///
/// Parallel over centres on the current rayon pool (see [`crate::parallel::install`]).
///
/// # Errors
/// [`CoreError::InvalidInput`] for NaN or infinite positions, a singular or nearly flat cell along
/// a periodic direction, a cutoff that is not positive and finite, or a request that would
/// produce more than `options.max_pairs` pairs.
pub fn neighbor_list(frame: &Frame<'_>, options: &ListOptions) -> Result<PairList> {
    check_cutoff(options.cutoff, "cutoff")?;
    let geometry = Geometry::new(frame)?;
    let num_atoms = geometry.num_atoms();
    let expected = estimate_pairs(&geometry, options.cutoff);
    let kept_expected = options
        .max_neighbors
        .map_or(expected, |cap| expected.min((cap * num_atoms) as f64));
    if kept_expected > options.max_pairs as f64 {
        return Err(too_many_pairs("about", kept_expected, options.max_pairs));
    }
    let grid = Grid::new(&geometry, options.cutoff)?;
    let searcher = Searcher::new(&geometry, &grid, options.cutoff, options.self_pair)?;
    let keep = options.max_neighbors.unwrap_or(usize::MAX);
    let produced = AtomicUsize::new(0);
    let reserve = (kept_expected / num_atoms.max(1) as f64 * 1.25) as usize + 1;
    let parts: Vec<Result<PairList>> = parallel::map(centre_ranges(num_atoms), |centres| {
        let capacity = (reserve * centres.len()).min(options.max_pairs);
        let mut part = PairList::with_capacity(capacity);
        let mut keys = Vec::new();
        let mut ordering = NeighbourOrder::default();
        for center in centres {
            keys.clear();
            searcher.collect(center, &mut keys);
            let kept = ordering.sort(&keys, keep);
            part.num_dropped += (keys.len() - kept) as u64;
            let total = produced.fetch_add(kept, Ordering::Relaxed) + kept;
            if total > options.max_pairs {
                return Err(too_many_pairs("more than", total as f64, options.max_pairs));
            }
            for rank in 0..kept {
                part.push(
                    center,
                    &searcher.decode(center, *ordering.ranked(&keys, rank)),
                );
            }
        }
        Ok(part)
    });
    let mut parts = parts.into_iter().collect::<Result<Vec<_>>>()?;
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    Ok(PairList::concatenate(parts))
}

fn check_specs(specs: &[DenseSpec]) -> Result<f64> {
    if specs.is_empty() {
        return Err(CoreError::InvalidInput(
            "specs is empty: give at least one (cutoff, max_neighbors)".to_string(),
        ));
    }
    for (position, spec) in specs.iter().enumerate() {
        check_cutoff(spec.cutoff, &format!("specs[{position}] cutoff"))?;
        if spec.max_neighbors == 0 {
            return Err(CoreError::InvalidInput(format!(
                "specs[{position}] max_neighbors must be at least 1"
            )));
        }
    }
    Ok(specs.iter().map(|spec| spec.cutoff).fold(0.0, f64::max))
}

/// Dense rows of one spec for a range of centres.
struct Rows<'a> {
    spec: DenseSpec,
    index: &'a mut [i64],
    shifts: &'a mut [i64],
    distances: &'a mut [f64],
}

/// Splits the rows of every spec into blocks of `block` rows: `result[b][s]` is block `b` of
/// spec `s`.
fn split_rows<'a>(specs: &[DenseSpec], lists: Vec<Rows<'a>>, block: usize) -> Vec<Vec<Rows<'a>>> {
    let mut blocks: Vec<Vec<Rows<'a>>> = Vec::new();
    for (spec, rows) in specs.iter().zip(lists) {
        let width = spec.max_neighbors;
        let chunks = rows
            .index
            .chunks_mut((block * width).max(1))
            .zip(rows.shifts.chunks_mut((3 * block * width).max(1)))
            .zip(rows.distances.chunks_mut((block * width).max(1)));
        for (number, ((index, shifts), distances)) in chunks.enumerate() {
            if blocks.len() <= number {
                blocks.push(Vec::new());
            }
            blocks[number].push(Rows {
                spec: *spec,
                index,
                shifts,
                distances,
            });
        }
    }
    blocks
}

/// Writes the dense rows of the centres `centres` (row 0 of `rows` is the first of them);
/// neighbour indices are offset by `index_offset`. Returns the dropped count per spec.
fn fill_rows(
    searcher: &Searcher<'_>,
    centres: std::ops::Range<usize>,
    rows: &mut [Rows<'_>],
    index_offset: i64,
    max_pairs: usize,
) -> Result<Vec<u64>> {
    let keep = rows.iter().map(|r| r.spec.max_neighbors).max().unwrap_or(0);
    let mut dropped = vec![0u64; rows.len()];
    let mut keys = Vec::new();
    let mut ordering = NeighbourOrder::default();
    for (row, center) in centres.enumerate() {
        keys.clear();
        searcher.collect(center, &mut keys);
        if keys.len() > max_pairs {
            return Err(too_many_pairs("more than", keys.len() as f64, max_pairs));
        }
        let kept = ordering.sort(&keys, keep);
        for (spec_rows, dropped) in rows.iter_mut().zip(dropped.iter_mut()) {
            let bound = distance_bound(spec_rows.spec.cutoff);
            let sorted_within = (0..kept)
                .position(|rank| *ordering.ranked(&keys, rank) >= bound)
                .unwrap_or(kept);
            let within = if sorted_within < kept {
                sorted_within
            } else {
                keys.iter().filter(|&&key| key < bound).count()
            };
            let width = spec_rows.spec.max_neighbors;
            let written = within.min(width);
            *dropped += (within - written) as u64;
            let start = row * width;
            for slot in 0..written {
                let at = start + slot;
                let pair = searcher.decode(center, *ordering.ranked(&keys, slot));
                spec_rows.index[at] = pair.neighbor as i64 + index_offset;
                spec_rows.shifts[3 * at..3 * at + 3].copy_from_slice(&pair.shift);
                spec_rows.distances[at] = pair.distance;
            }
            let padding = start + written..start + width;
            spec_rows.index[padding.clone()].fill(-1);
            spec_rows.shifts[3 * padding.start..3 * padding.end].fill(0);
            spec_rows.distances[padding].fill(f64::INFINITY);
        }
    }
    Ok(dropped)
}

/// Searches one frame at the largest cutoff of `specs` and writes every spec's rows.
fn dense_frame(
    frame: &Frame<'_>,
    specs: &[DenseSpec],
    search_cutoff: f64,
    rows: Vec<Rows<'_>>,
    index_offset: i64,
    max_pairs: usize,
) -> Result<Vec<u64>> {
    let geometry = Geometry::new(frame)?;
    let grid = Grid::new(&geometry, search_cutoff)?;
    let searcher = Searcher::new(&geometry, &grid, search_cutoff, false)?;
    let ranges = centre_ranges(geometry.num_atoms());
    let block = ranges.first().map_or(1, |range| range.len());
    let blocks = split_rows(specs, rows, block);
    let tasks: Vec<_> = ranges.into_iter().zip(blocks).collect();
    let dropped: Vec<Result<Vec<u64>>> = parallel::map(tasks, |(centres, mut block_rows)| {
        fill_rows(&searcher, centres, &mut block_rows, index_offset, max_pairs)
    });
    let mut total = vec![0u64; specs.len()];
    for counts in dropped {
        for (sum, count) in total.iter_mut().zip(counts?) {
            *sum += count;
        }
    }
    Ok(total)
}

fn check_dense_budget(num_atoms: usize, specs: &[DenseSpec], max_pairs: usize) -> Result<()> {
    let slots: f64 = specs
        .iter()
        .map(|spec| (num_atoms as f64) * spec.max_neighbors as f64)
        .sum();
    if slots > max_pairs as f64 {
        return Err(CoreError::InvalidInput(format!(
            "dense neighbour matrices would hold {slots:.3e} slots ({num_atoms} atoms x max_neighbors), \
             more than the budget of {max_pairs:e} (max_pairs)"
        )));
    }
    Ok(())
}

fn rows_of<'a>(lists: &'a mut [DenseList], specs: &[DenseSpec]) -> Vec<Rows<'a>> {
    lists
        .iter_mut()
        .zip(specs)
        .map(|(list, spec)| Rows {
            spec: *spec,
            index: &mut list.index,
            shifts: &mut list.shifts,
            distances: &mut list.distances,
        })
        .collect()
}

/// Dense lists of one frame for several cutoffs from one search at the largest cutoff.
///
/// Row `i` of each list holds the nearest `max_neighbors` neighbours of atom `i` closer than the
/// spec's cutoff, sorted as in [`neighbor_list`] (so each list equals a separate capped search),
/// padded with index `-1`, shift 0 and distance `+inf`. The zero-shift self pair is never listed.
///
/// # Errors
/// As [`neighbor_list`]; also an empty `specs`.
pub fn dense_neighbor_lists(
    frame: &Frame<'_>,
    specs: &[DenseSpec],
    max_pairs: usize,
) -> Result<Vec<DenseList>> {
    let search_cutoff = check_specs(specs)?;
    let num_atoms = frame.positions.len();
    check_dense_budget(num_atoms, specs, max_pairs)?;
    let mut lists: Vec<DenseList> = specs
        .iter()
        .map(|spec| DenseList::empty(num_atoms, spec.max_neighbors))
        .collect();
    let rows = rows_of(&mut lists, specs);
    let dropped = dense_frame(frame, specs, search_cutoff, rows, 0, max_pairs)?;
    for (list, count) in lists.iter_mut().zip(dropped) {
        list.num_dropped = count;
    }
    Ok(lists)
}

fn check_batch(batch: &Batch<'_>) -> Result<usize> {
    let offsets = batch.atom_offsets;
    let num_frames = offsets.len().saturating_sub(1);
    if offsets.first() != Some(&0) || offsets.last() != Some(&batch.positions.len()) {
        return Err(CoreError::InvalidInput(format!(
            "atom_offsets must start at 0 and end at the number of atoms ({}), got {:?}..{:?}",
            batch.positions.len(),
            offsets.first(),
            offsets.last()
        )));
    }
    if let Some(frame) = offsets.windows(2).position(|pair| pair[1] < pair[0]) {
        return Err(CoreError::InvalidInput(format!(
            "atom_offsets must not decrease (frame {frame}: {} then {})",
            offsets[frame],
            offsets[frame + 1]
        )));
    }
    if batch.cells.len() != num_frames || batch.pbcs.len() != num_frames {
        return Err(CoreError::InvalidInput(format!(
            "{num_frames} frames in atom_offsets but {} cells and {} pbcs",
            batch.cells.len(),
            batch.pbcs.len()
        )));
    }
    Ok(num_frames)
}

/// Dense lists over the flat atoms of a batch of frames, parallel over frames (and over centres
/// within large frames). Neighbour indices are global (into the flat atoms).
///
/// # Errors
/// As [`dense_neighbor_lists`], with the frame at fault named; also inconsistent batch layout.
pub fn batch_dense_neighbor_lists(
    batch: &Batch<'_>,
    specs: &[DenseSpec],
    max_pairs: usize,
) -> Result<Vec<DenseList>> {
    let search_cutoff = check_specs(specs)?;
    let num_frames = check_batch(batch)?;
    let total_atoms = batch.positions.len();
    check_dense_budget(total_atoms, specs, max_pairs)?;
    let mut lists: Vec<DenseList> = specs
        .iter()
        .map(|spec| DenseList::empty(total_atoms, spec.max_neighbors))
        .collect();
    // Cut every spec's matrices into per-frame row blocks.
    let mut per_frame: Vec<Vec<Rows<'_>>> = (0..num_frames).map(|_| Vec::new()).collect();
    for rows in rows_of(&mut lists, specs) {
        let width = rows.spec.max_neighbors;
        let (mut index, mut shifts, mut distances) = (rows.index, rows.shifts, rows.distances);
        for (frame, frame_rows) in per_frame.iter_mut().enumerate() {
            let count = batch.atom_offsets[frame + 1] - batch.atom_offsets[frame];
            let (head_index, rest_index) = index.split_at_mut(count * width);
            let (head_shifts, rest_shifts) = shifts.split_at_mut(3 * count * width);
            let (head_distances, rest_distances) = distances.split_at_mut(count * width);
            (index, shifts, distances) = (rest_index, rest_shifts, rest_distances);
            frame_rows.push(Rows {
                spec: rows.spec,
                index: head_index,
                shifts: head_shifts,
                distances: head_distances,
            });
        }
    }
    let tasks: Vec<_> = per_frame.into_iter().enumerate().collect();
    let dropped: Vec<Result<Vec<u64>>> = parallel::map(tasks, |(number, rows)| {
        let (start, end) = (batch.atom_offsets[number], batch.atom_offsets[number + 1]);
        let frame = Frame {
            positions: &batch.positions[start..end],
            cell: Some(batch.cells[number]),
            pbc: batch.pbcs[number],
        };
        dense_frame(&frame, specs, search_cutoff, rows, start as i64, max_pairs)
            .map_err(|error| CoreError::InvalidInput(format!("frame {number}: {error}")))
    });
    let mut totals = vec![0u64; specs.len()];
    for counts in dropped {
        for (sum, count) in totals.iter_mut().zip(counts?) {
            *sum += count;
        }
    }
    for (list, count) in lists.iter_mut().zip(totals) {
        list.num_dropped = count;
    }
    Ok(lists)
}

#[cfg(test)]
mod tests;
