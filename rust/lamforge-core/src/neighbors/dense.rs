//! Dense neighbour matrices (the DPA-2 layout) for several cutoffs from one search, for one
//! frame or for a batch of frames.

use super::geometry::Geometry;
use super::grid::Grid;
use super::ordering::Ordering as NeighbourOrder;
use super::search::{distance_bound, Searcher};
use super::{centre_ranges, check_cutoff, too_many_pairs, Frame};
use crate::cell::Matrix3;
use crate::error::{CoreError, Result};
use crate::memory;
use crate::parallel;

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
/// spec's cutoff, sorted as in [`super::neighbor_list`] (so each list equals a separate capped search),
/// padded with index `-1`, shift 0 and distance `+inf`. The zero-shift self pair is never listed.
///
/// # Errors
/// As [`super::neighbor_list`]; also an empty `specs`.
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
