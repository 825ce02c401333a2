//! The bin grid in fractional coordinates and the stencil of bins a centre bin must visit.
//!
//! Bins are parallelepipeds of the binning basis, about `cutoff / BINS_PER_CUTOFF` thick. Along a
//! periodic direction the grid wraps: the bin at unwrapped index `t` is bin `t mod n` seen through
//! image `floor(t / n)`, which is how cells thinner than the cutoff get all their images. The
//! stencil keeps only the bin offsets whose closest points are within the cutoff (an exact
//! box-constrained minimum of the metric), stored as rows of consecutive x offsets so that the
//! search walks one contiguous run of atoms per row.

use super::geometry::Geometry;
use crate::cell::Matrix3;
use crate::error::{CoreError, Result};

/// Bins per cutoff length: 2 visits about 2.5 cutoff-cubes of candidates instead of 27 for
/// cutoff-sized bins, at the price of more, smaller runs.
const BINS_PER_CUTOFF: f64 = 1.0;

/// Relative safety margin on the cutoff when deciding which bins can hold neighbours, so that
/// rounding in the fractional coordinates never loses a pair.
const MARGIN: f64 = 1e-9;

/// The grid never has many more bins than atoms (a few atoms in a huge box would otherwise ask for
/// billions of empty bins).
const MAX_BINS_PER_ATOM: usize = 4;

/// The largest stencil (bin offsets) a search may use; a cutoff that needs more images than this
/// is reported as too large for the cell.
const MAX_STENCIL: usize = 50_000_000;

/// One row of the stencil: bin offsets `(dx_lo..=dx_hi, dy, dz)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StencilRow {
    pub dy: i32,
    pub dz: i32,
    pub dx_lo: i32,
    pub dx_hi: i32,
}

/// Bins with their atoms sorted by bin, plus the stencil.
#[derive(Debug)]
pub(crate) struct Grid {
    /// Bins per direction.
    pub counts: [usize; 3],
    /// Largest bin offset the stencil uses per direction.
    pub reach: [usize; 3],
    /// `bin_start[b]..bin_start[b + 1]` are the sorted atoms in bin `b` (x fastest).
    pub bin_start: Vec<u32>,
    /// Wrapped positions in bin order.
    pub sorted_positions: Vec<[f64; 3]>,
    /// Original atom index of each sorted atom.
    pub sorted_atoms: Vec<u32>,
    /// Bin coordinates of each atom, in original order.
    pub atom_bins: Vec<[u32; 3]>,
    /// Stencil rows.
    pub rows: Vec<StencilRow>,
    /// Per periodic direction: for unwrapped index `t + reach`, the wrapped bin and the image.
    pub wrap: [Vec<(u32, i32)>; 3],
}

/// Minimum of `x^T G x` over the box `lower <= x <= upper`, exactly: the minimiser is the
/// stationary point of some face (each coordinate at its lower bound, upper bound or free).
fn box_minimum(metric: &Matrix3, lower: [f64; 3], upper: [f64; 3]) -> f64 {
    if (0..3).all(|k| lower[k] <= 0.0 && upper[k] >= 0.0) {
        return 0.0;
    }
    let mut best = f64::INFINITY;
    for state in 0..26 {
        // 0: at lower bound, 1: at upper bound, 2: free (state 26, all free, is the origin case
        // handled above).
        let choice = [state % 3, (state / 3) % 3, state / 9];
        let mut x = [0.0; 3];
        let mut free = [0usize; 2];
        let mut num_free = 0;
        for k in 0..3 {
            match choice[k] {
                0 => x[k] = lower[k],
                1 => x[k] = upper[k],
                _ => {
                    free[num_free] = k;
                    num_free += 1;
                }
            }
        }
        // Free coordinates solve G_ff x_f = -G_fc x_c (x_f is still 0 in x here).
        let rhs = |f: usize| -(0..3).map(|c| metric[f][c] * x[c]).sum::<f64>();
        match num_free {
            0 => {}
            1 => {
                let f = free[0];
                x[f] = rhs(f) / metric[f][f];
            }
            _ => {
                let (a, b) = (free[0], free[1]);
                let (ra, rb) = (rhs(a), rhs(b));
                let det = metric[a][a] * metric[b][b] - metric[a][b] * metric[b][a];
                if det <= 0.0 {
                    continue;
                }
                x[a] = (ra * metric[b][b] - metric[a][b] * rb) / det;
                x[b] = (metric[a][a] * rb - metric[b][a] * ra) / det;
            }
        }
        let feasible = free[..num_free].iter().all(|&f| {
            let slack = 1e-12 * (upper[f] - lower[f]).abs().max(1.0);
            x[f] >= lower[f] - slack && x[f] <= upper[f] + slack
        });
        if !feasible {
            continue;
        }
        for &f in &free[..num_free] {
            x[f] = x[f].clamp(lower[f], upper[f]);
        }
        let mut value = 0.0;
        for a in 0..3 {
            for b in 0..3 {
                value += x[a] * metric[a][b] * x[b];
            }
        }
        best = best.min(value);
    }
    best.max(0.0)
}

fn metric_of(basis: &Matrix3) -> Matrix3 {
    let mut metric = [[0.0; 3]; 3];
    for a in 0..3 {
        for b in 0..3 {
            metric[a][b] = (0..3).map(|k| basis[a][k] * basis[b][k]).sum();
        }
    }
    metric
}

/// Bins per direction and fractional origin/width of the bins.
fn plan_bins(geometry: &Geometry, cutoff: f64) -> ([usize; 3], [f64; 3], [f64; 3]) {
    let num_atoms = geometry.num_atoms().max(1);
    let mut low = [0.0; 3];
    let mut extent = [1.0; 3];
    for k in 0..3 {
        if !geometry.periodic[k] {
            let (min, max) = geometry
                .fractional
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                    (lo.min(s[k]), hi.max(s[k]))
                });
            low[k] = if min.is_finite() { min } else { 0.0 };
            extent[k] = if max > min { max - min } else { 0.0 };
        }
    }
    let mut bin_length = cutoff / BINS_PER_CUTOFF;
    let counts = loop {
        let counts: [usize; 3] = std::array::from_fn(|k| {
            let length = extent[k] * geometry.heights[k];
            ((length / bin_length).floor() as usize).max(1)
        });
        let total = counts.iter().map(|&n| n as f64).product::<f64>();
        if total <= (MAX_BINS_PER_ATOM * num_atoms) as f64 {
            break counts;
        }
        bin_length *= (total / (MAX_BINS_PER_ATOM * num_atoms) as f64).cbrt() * 1.01;
    };
    let width: [f64; 3] = std::array::from_fn(|k| {
        if extent[k] > 0.0 {
            extent[k] / counts[k] as f64
        } else {
            1.0
        }
    });
    (counts, low, width)
}

impl Grid {
    /// Bins the atoms of `geometry` for a search at `cutoff`.
    pub fn new(geometry: &Geometry, cutoff: f64) -> Result<Self> {
        let (counts, low, width) = plan_bins(geometry, cutoff);
        let reach_cutoff = cutoff * (1.0 + MARGIN);
        let reach: [usize; 3] = std::array::from_fn(|k| {
            let bin_height = width[k] * geometry.heights[k];
            let needed = (reach_cutoff / bin_height).ceil() as usize;
            if geometry.periodic[k] {
                needed
            } else {
                needed.min(counts[k] - 1)
            }
        });
        let stencil_size: f64 = reach.iter().map(|&m| (2 * m + 1) as f64).product();
        if stencil_size > MAX_STENCIL as f64 {
            return Err(CoreError::InvalidInput(format!(
                "cutoff {cutoff} needs {stencil_size:e} periodic images of a cell with heights {:?}; the limit is {MAX_STENCIL:e}",
                geometry.heights
            )));
        }
        let rows = stencil(geometry, width, reach, reach_cutoff);
        let num_bins = counts[0] * counts[1] * counts[2];
        let atom_bins: Vec<[u32; 3]> = geometry
            .fractional
            .iter()
            .map(|s| {
                std::array::from_fn(|k| {
                    let index = ((s[k] - low[k]) / width[k]).floor();
                    (index.max(0.0) as usize).min(counts[k] - 1) as u32
                })
            })
            .collect();
        let linear =
            |b: [u32; 3]| (b[2] as usize * counts[1] + b[1] as usize) * counts[0] + b[0] as usize;
        // Counting sort of the atoms by bin.
        let mut bin_start = vec![0u32; num_bins + 1];
        for &b in &atom_bins {
            bin_start[linear(b) + 1] += 1;
        }
        for b in 0..num_bins {
            bin_start[b + 1] += bin_start[b];
        }
        let mut cursor = bin_start.clone();
        let mut sorted_atoms = vec![0u32; geometry.num_atoms()];
        for (atom, &b) in atom_bins.iter().enumerate() {
            let slot = &mut cursor[linear(b)];
            sorted_atoms[*slot as usize] = atom as u32;
            *slot += 1;
        }
        let sorted_positions = sorted_atoms
            .iter()
            .map(|&atom| geometry.wrapped[atom as usize])
            .collect();
        let wrap = std::array::from_fn(|k| {
            if !geometry.periodic[k] {
                return Vec::new();
            }
            let (n, m) = (counts[k] as i64, reach[k] as i64);
            (-m..n + m)
                .map(|t| (t.rem_euclid(n) as u32, t.div_euclid(n) as i32))
                .collect()
        });
        Ok(Self {
            counts,
            reach,
            bin_start,
            sorted_positions,
            sorted_atoms,
            atom_bins,
            rows,
            wrap,
        })
    }

    /// Linear index of bin `(x, y, z)`.
    #[inline]
    pub fn bin(&self, x: usize, y: usize, z: usize) -> usize {
        (z * self.counts[1] + y) * self.counts[0] + x
    }
}

/// Stencil rows: bin offsets whose bins can hold a pair closer than `cutoff`.
fn stencil(
    geometry: &Geometry,
    width: [f64; 3],
    reach: [usize; 3],
    cutoff: f64,
) -> Vec<StencilRow> {
    let metric = metric_of(&geometry.basis);
    let cutoff_squared = cutoff * cutoff;
    let [mx, my, mz] = reach.map(|m| m as i32);
    let mut rows = Vec::new();
    for dz in -mz..=mz {
        for dy in -my..=my {
            let close = |dx: i32| {
                // Two bins `d` apart hold points whose fractional difference lies in
                // [(d - 1) w, (d + 1) w] per direction.
                let d = [dx, dy, dz];
                let lower: [f64; 3] = std::array::from_fn(|k| (d[k] as f64 - 1.0) * width[k]);
                let upper: [f64; 3] = std::array::from_fn(|k| (d[k] as f64 + 1.0) * width[k]);
                // Cheap bounds first: a point's distance is at least its fractional coordinate
                // times the height along every direction, and at most that of any point of the
                // box (here the one with each coordinate closest to 0).
                let gap = |k: usize| (lower[k].max(0.0) - upper[k].min(0.0)).max(0.0);
                if (0..3).any(|k| gap(k) * geometry.heights[k] >= cutoff) {
                    return false;
                }
                let nearest: [f64; 3] = std::array::from_fn(|k| 0.0f64.clamp(lower[k], upper[k]));
                let mut value = 0.0;
                for a in 0..3 {
                    for b in 0..3 {
                        value += nearest[a] * metric[a][b] * nearest[b];
                    }
                }
                value < cutoff_squared || box_minimum(&metric, lower, upper) < cutoff_squared
            };
            // The set of close dx is an interval (the minimum is convex in the offset).
            let Some(dx_lo) = (-mx..=mx).find(|&dx| close(dx)) else {
                continue;
            };
            let dx_hi = (dx_lo..=mx).rev().find(|&dx| close(dx)).unwrap_or(dx_lo);
            rows.push(StencilRow {
                dy,
                dz,
                dx_lo,
                dx_hi,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_minimum_matches_sampling() {
        let basis = [[1.0, 0.0, 0.0], [0.7, 0.8, 0.0], [0.3, -0.4, 1.1]];
        let metric = metric_of(&basis);
        let lower = [0.2, -0.5, -0.1];
        let upper = [0.6, 0.3, 0.4];
        let exact = box_minimum(&metric, lower, upper);
        let mut sampled = f64::INFINITY;
        let steps = 40;
        for a in 0..=steps {
            for b in 0..=steps {
                for c in 0..=steps {
                    let t = [a, b, c].map(|v| v as f64 / steps as f64);
                    let x: [f64; 3] =
                        std::array::from_fn(|k| lower[k] + t[k] * (upper[k] - lower[k]));
                    let mut value = 0.0;
                    for i in 0..3 {
                        for j in 0..3 {
                            value += x[i] * metric[i][j] * x[j];
                        }
                    }
                    sampled = sampled.min(value);
                }
            }
        }
        assert!(exact <= sampled + 1e-12);
        assert!(sampled - exact < 1e-3, "{exact} vs {sampled}");
    }

    #[test]
    fn box_containing_origin_has_zero_minimum() {
        let metric = metric_of(&[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]);
        assert_eq!(box_minimum(&metric, [-1.0; 3], [1.0; 3]), 0.0);
    }
}
