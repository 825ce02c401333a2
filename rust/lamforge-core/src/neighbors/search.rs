//! The per-centre kernel: collect the neighbours of one atom as sortable keys, order them, and
//! decode a key back into a pair.
//!
//! A key is one `u128`: the distance's bits (monotonic for non-negative floats) in the high 64
//! bits, the neighbour index in the next 32 and the image code in the low 32. Sorting keys sorts
//! by distance, then neighbour index, then image shift, which is the documented tie-break, and
//! moves 16 bytes per pair instead of a whole record.

use super::geometry::Geometry;
use super::grid::Grid;
use crate::error::{CoreError, Result};

/// One neighbour of a centre, decoded from a key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Index of the neighbour atom.
    pub neighbor: u32,
    /// Integer image indices: `vector = positions[neighbor] - positions[center] + shift @ cell`.
    pub shift: [i64; 3],
    /// `|vector|`.
    pub distance: f64,
    /// Cartesian vector from the centre to the neighbour image.
    pub vector: [f64; 3],
}

/// Searches one prepared frame at one cutoff.
#[derive(Debug)]
pub(crate) struct Searcher<'a> {
    geometry: &'a Geometry,
    grid: &'a Grid,
    cutoff: f64,
    /// Pre-filter on squared distances, a hair above `cutoff^2`; the exact test is on the
    /// distance itself so that every cutoff compares the same floats.
    loose_squared: f64,
    include_self_pair: bool,
    bias: [i32; 3],
    /// Bit width of each image digit in a code; digits are stored x, y, z from high to low so
    /// that codes order like shifts, lexicographically.
    bits: [u32; 3],
}

/// The smallest key whose distance is `distance`: keys below it are strictly closer.
#[inline]
pub(crate) fn distance_bound(distance: f64) -> u128 {
    (distance.to_bits() as u128) << 64
}

impl<'a> Searcher<'a> {
    pub fn new(
        geometry: &'a Geometry,
        grid: &'a Grid,
        cutoff: f64,
        include_self_pair: bool,
    ) -> Result<Self> {
        // Image shifts reachable through the wrap tables, per direction.
        let bias: [i32; 3] = std::array::from_fn(|k| {
            if geometry.periodic[k] {
                (grid.reach[k] / grid.counts[k]) as i32 + 1
            } else {
                0
            }
        });
        let bits = bias.map(|b| u32::BITS - (2 * b as u32).leading_zeros());
        if bits.iter().sum::<u32>() > 31 {
            return Err(CoreError::InvalidInput(format!(
                "cutoff {cutoff} needs too many periodic images (up to {bias:?} per direction)"
            )));
        }
        if geometry.num_atoms() > u32::MAX as usize {
            return Err(CoreError::InvalidInput(format!(
                "{} atoms in one frame; at most {} are supported",
                geometry.num_atoms(),
                u32::MAX
            )));
        }
        Ok(Self {
            geometry,
            grid,
            cutoff,
            loose_squared: cutoff * cutoff * (1.0 + 1e-12),
            include_self_pair,
            bias,
            bits,
        })
    }

    #[inline]
    fn code(&self, image: [i32; 3]) -> u32 {
        let digit = |k: usize| (image[k] + self.bias[k]) as u32;
        (((digit(0) << self.bits[1]) | digit(1)) << self.bits[2]) | digit(2)
    }

    #[inline]
    fn image(&self, code: u32) -> [i32; 3] {
        let mask = |k: usize| (1u32 << self.bits[k]) - 1;
        let z = code & mask(2);
        let y = (code >> self.bits[2]) & mask(1);
        let x = code >> (self.bits[1] + self.bits[2]);
        [
            x as i32 - self.bias[0],
            y as i32 - self.bias[1],
            z as i32 - self.bias[2],
        ]
    }

    /// Cartesian translation of bin image `image` (always computed this way, so that the search
    /// and the decoding produce identical floats).
    #[inline]
    fn translation(&self, image: [i32; 3]) -> [f64; 3] {
        let basis = &self.geometry.basis;
        std::array::from_fn(|axis| {
            image[0] as f64 * basis[0][axis]
                + image[1] as f64 * basis[1][axis]
                + image[2] as f64 * basis[2][axis]
        })
    }

    /// Resolves unwrapped bin index `t` along direction `k` to (bin, image), or `None` outside a
    /// non-periodic grid.
    #[inline]
    fn resolve(&self, k: usize, t: i64) -> Option<(usize, i32)> {
        if self.geometry.periodic[k] {
            let (bin, image) = self.grid.wrap[k][(t + self.grid.reach[k] as i64) as usize];
            Some((bin as usize, image))
        } else if t >= 0 && (t as usize) < self.grid.counts[k] {
            Some((t as usize, 0))
        } else {
            None
        }
    }

    /// Appends the keys of every neighbour of `center` within the cutoff to `keys` (unordered).
    pub fn collect(&self, center: usize, keys: &mut Vec<u128>) {
        let grid = self.grid;
        let home = grid.atom_bins[center].map(|b| b as i64);
        let position = self.geometry.wrapped[center];
        let [nx, _, _] = grid.counts;
        for row in &grid.rows {
            let Some((y, image_y)) = self.resolve(1, home[1] + row.dy as i64) else {
                continue;
            };
            let Some((z, image_z)) = self.resolve(2, home[2] + row.dz as i64) else {
                continue;
            };
            let mut t = home[0] + row.dx_lo as i64;
            let mut last = home[0] + row.dx_hi as i64;
            if !self.geometry.periodic[0] {
                t = t.max(0);
                last = last.min(nx as i64 - 1);
            }
            // Walk the x range in runs of consecutive bins that share one image.
            while t <= last {
                let (x_first, image_x) = self.resolve(0, t).unwrap_or((t as usize, 0));
                let run = ((last - t) as usize).min(nx - 1 - x_first);
                let start = grid.bin_start[grid.bin(x_first, y, z)] as usize;
                let end = grid.bin_start[grid.bin(x_first + run, y, z) + 1] as usize;
                t += run as i64 + 1;
                if start == end {
                    continue;
                }
                let image = [image_x, image_y, image_z];
                self.scan(position, image, start..end, keys);
            }
        }
        self.finish(center, keys);
    }

    /// Appends a key for every atom of the sorted run `sorted` seen through `image` whose squared
    /// distance passes the loose pre-filter. Keys hold the squared distance until [`finish`].
    ///
    /// Branch-free: every candidate is written and the length advances only for accepted ones,
    /// because acceptance is close to a coin flip and mispredicted branches cost more than the
    /// stores.
    #[inline]
    fn scan(
        &self,
        position: [f64; 3],
        image: [i32; 3],
        sorted: std::ops::Range<usize>,
        keys: &mut Vec<u128>,
    ) {
        let translation = self.translation(image);
        // p_j + T - p_i = p_j - (p_i - T): one subtraction per component in the loop.
        let origin = [
            position[0] - translation[0],
            position[1] - translation[1],
            position[2] - translation[2],
        ];
        let code = self.code(image) as u128;
        let positions = &self.grid.sorted_positions[sorted.clone()];
        let atoms = &self.grid.sorted_atoms[sorted];
        keys.reserve(positions.len());
        let spare = &mut keys.spare_capacity_mut()[..positions.len()];
        let mut accepted = 0;
        for ((p, &atom), slot) in positions.iter().zip(atoms).zip(0..spare.len()) {
            let dx = p[0] - origin[0];
            let dy = p[1] - origin[1];
            let dz = p[2] - origin[2];
            let squared = dx * dx + dy * dy + dz * dz;
            // `accepted <= slot`, so this never indexes past the spare slots.
            spare[accepted.min(slot)]
                .write(((squared.to_bits() as u128) << 64) | ((atom as u128) << 32) | code);
            accepted += (squared < self.loose_squared) as usize;
        }
        let filled = keys.len() + accepted;
        // SAFETY: the first `accepted` spare slots were written in the loop above (slot `k` is
        // written when `accepted == k`, before `accepted` can exceed `k`), and
        // `accepted <= positions.len()`, the capacity reserved beyond the length.
        unsafe { keys.set_len(filled) };
    }

    /// Turns the squared distances of `keys` (from [`Self::collect`]) into distances and applies
    /// the exact cutoff and the self-pair rule.
    fn finish(&self, center: usize, keys: &mut Vec<u128>) {
        let home = self.code([0, 0, 0]) as u128 | ((center as u128) << 32);
        let low_bits = (1u128 << 64) - 1;
        keys.retain_mut(|key| {
            let distance = f64::from_bits((*key >> 64) as u64).sqrt();
            *key = ((distance.to_bits() as u128) << 64) | (*key & low_bits);
            distance < self.cutoff && (self.include_self_pair || *key & low_bits != home)
        });
    }

    /// Decodes a key of `center` into the pair it stands for.
    #[inline]
    pub fn decode(&self, center: usize, key: u128) -> Pair {
        let distance = f64::from_bits((key >> 64) as u64);
        let neighbor = (key >> 32) as u32;
        let image = self.image(key as u32);
        let translation = self.translation(image);
        let wrapped = &self.geometry.wrapped;
        let (p_i, p_j) = (wrapped[center], wrapped[neighbor as usize]);
        let vector = std::array::from_fn(|axis| p_j[axis] - (p_i[axis] - translation[axis]));
        // wrapped = position - offset @ basis, so the shift on the original positions is the bin
        // image plus the centre's offset minus the neighbour's.
        let offsets = &self.geometry.offsets;
        let shift = std::array::from_fn(|k| {
            image[k] as i64 + offsets[center][k] as i64 - offsets[neighbor as usize][k] as i64
        });
        Pair {
            neighbor,
            shift,
            distance,
            vector,
        }
    }
}
