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

mod dense;
mod geometry;
mod grid;
mod ordering;
mod search;

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{CoreError, Result};
use crate::memory;
use crate::parallel;
pub use dense::{batch_dense_neighbor_lists, dense_neighbor_lists, Batch, DenseList, DenseSpec};
pub use geometry::Frame;
use geometry::Geometry;
use grid::Grid;
use ordering::Ordering as NeighbourOrder;
pub use search::Pair;
use search::Searcher;

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

pub(crate) fn check_cutoff(cutoff: f64, name: &str) -> Result<()> {
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

pub(crate) fn too_many_pairs(what: &str, pairs: f64, max_pairs: usize) -> CoreError {
    CoreError::InvalidInput(format!(
        "neighbour list would produce {what} {pairs:.3e} pairs, more than the budget of \
         {max_pairs:e} (max_pairs); lower the cutoff, cap max_neighbors or raise max_pairs"
    ))
}

/// Splits `0..num_atoms` into contiguous ranges, one when a single thread runs.
pub(crate) fn centre_ranges(num_atoms: usize) -> Vec<std::ops::Range<usize>> {
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

#[cfg(test)]
mod tests;
