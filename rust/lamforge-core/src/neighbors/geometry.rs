//! Frame geometry for the search: validation, the binning basis and wrapped positions.
//!
//! Along periodic directions the basis is the lattice vector itself, so wrapping an atom into the
//! cell is `floor` of its fractional coordinate. Along non-periodic directions the given lattice
//! vector plays no role (it may be zero, as ASE writes clusters and slabs), so it is replaced by
//! unit vectors orthogonal to the periodic ones: the atoms' extent along those is then binned.

use crate::cell::{heights, Matrix3};
use crate::error::{CoreError, Result};

/// A periodic direction whose height is below this fraction of the longest lattice vector is
/// reported as "nearly flat": the number of images it would need is unbounded in practice.
const FLAT_RELATIVE_HEIGHT: f64 = 1e-8;

/// Atoms more than this many cells away from the origin cell are rejected: their integer image
/// offsets must fit an `i32` with room for the search range.
const MAX_CELL_OFFSET: f64 = 1e9;

/// One frame as the search sees it: positions, optional cell and per-direction periodicity.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// Cartesian positions, `[num_atoms]` rows of `[x, y, z]`.
    pub positions: &'a [[f64; 3]],
    /// Lattice vectors as rows; `None` means no cell, which is non-periodic in every direction.
    pub cell: Option<Matrix3>,
    /// Periodicity along each lattice vector. Ignored (all false) when `cell` is `None`.
    pub pbc: [bool; 3],
}

/// Frame data derived once per search.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    /// Effective periodicity (all false without a cell).
    pub periodic: [bool; 3],
    /// Rows: lattice vectors along periodic directions, orthonormal fill-ins elsewhere.
    pub basis: Matrix3,
    /// Perpendicular heights of `basis`.
    pub heights: [f64; 3],
    /// Positions wrapped into the cell along periodic directions, `[num_atoms]`.
    pub wrapped: Vec<[f64; 3]>,
    /// Fractional coordinates of `wrapped` (in `[0, 1)` along periodic directions).
    pub fractional: Vec<[f64; 3]>,
    /// Integer cell offsets removed by the wrapping: `wrapped = position - offset @ basis`.
    pub offsets: Vec<[i32; 3]>,
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn norm(a: [f64; 3]) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

fn unit(a: [f64; 3]) -> [f64; 3] {
    let length = norm(a);
    [a[0] / length, a[1] / length, a[2] / length]
}

/// A unit vector orthogonal to `a` (any one; `a` must be non-zero).
fn orthogonal_unit(a: [f64; 3]) -> [f64; 3] {
    // Cross with the coordinate axis least aligned with `a` to stay well conditioned.
    let magnitudes = [a[0].abs(), a[1].abs(), a[2].abs()];
    let axis = if magnitudes[0] <= magnitudes[1] && magnitudes[0] <= magnitudes[2] {
        [1.0, 0.0, 0.0]
    } else if magnitudes[1] <= magnitudes[2] {
        [0.0, 1.0, 0.0]
    } else {
        [0.0, 0.0, 1.0]
    };
    unit(cross(a, axis))
}

fn inverse(matrix: &Matrix3) -> Matrix3 {
    let [a, b, c] = *matrix;
    let determinant = a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
        + a[2] * (b[0] * c[1] - b[1] * c[0]);
    // Columns of the inverse are the reciprocal vectors (b x c, c x a, a x b) / det.
    let reciprocal = [cross(b, c), cross(c, a), cross(a, b)];
    let mut out = [[0.0; 3]; 3];
    for (column, vector) in reciprocal.iter().enumerate() {
        for (row, value) in vector.iter().enumerate() {
            out[row][column] = value / determinant;
        }
    }
    out
}

/// Rows of the binning basis: lattice vectors along periodic directions, orthonormal vectors
/// spanning the complement elsewhere.
fn binning_basis(cell: &Matrix3, periodic: [bool; 3]) -> Matrix3 {
    let directions: Vec<usize> = (0..3).filter(|&k| periodic[k]).collect();
    let mut basis = [[0.0; 3]; 3];
    match directions.as_slice() {
        [] => {
            basis = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        }
        [k] => {
            let along = unit(cell[*k]);
            let first = orthogonal_unit(along);
            let second = cross(along, first);
            basis[*k] = cell[*k];
            basis[(k + 1) % 3] = first;
            basis[(k + 2) % 3] = second;
        }
        [k, l] => {
            let other = 3 - k - l;
            basis[*k] = cell[*k];
            basis[*l] = cell[*l];
            basis[other] = unit(cross(cell[*k], cell[*l]));
        }
        _ => basis = *cell,
    }
    basis
}

fn check_periodic_cell(cell: &Matrix3, periodic: [bool; 3]) -> Result<()> {
    if cell.iter().flatten().any(|value| !value.is_finite()) {
        return Err(CoreError::InvalidInput(
            "cell contains NaN or infinite values".to_string(),
        ));
    }
    let longest = cell
        .iter()
        .enumerate()
        .filter(|(k, _)| periodic[*k])
        .map(|(_, row)| norm(*row))
        .fold(0.0, f64::max);
    for k in (0..3).filter(|&k| periodic[k]) {
        if norm(cell[k]) == 0.0 {
            return Err(CoreError::InvalidInput(format!(
                "cell vector {k} is zero but direction {k} is periodic"
            )));
        }
    }
    // Heights of the periodic directions are measured within the binning basis, whose
    // non-periodic rows are orthonormal: a slab with a zero c vector is fine.
    let basis = binning_basis(cell, periodic);
    let singular = |detail: String| {
        CoreError::InvalidInput(format!(
            "cell is singular or nearly flat along periodic direction(s): {detail}"
        ))
    };
    let basis_heights = heights(&basis).map_err(|error| singular(error.to_string()))?;
    for k in (0..3).filter(|&k| periodic[k]) {
        if basis_heights[k] <= FLAT_RELATIVE_HEIGHT * longest {
            return Err(singular(format!(
                "height along lattice vector {k} is {:e} for vectors up to {longest:e} long",
                basis_heights[k]
            )));
        }
    }
    Ok(())
}

fn check_positions(positions: &[[f64; 3]]) -> Result<()> {
    if let Some(atom) = positions
        .iter()
        .position(|row| row.iter().any(|value| !value.is_finite()))
    {
        return Err(CoreError::InvalidInput(format!(
            "positions contain NaN or infinite values (first at atom {atom}: {:?})",
            positions[atom]
        )));
    }
    Ok(())
}

impl Geometry {
    /// Validates `frame` and derives the binning basis, wrapped positions and offsets.
    pub fn new(frame: &Frame<'_>) -> Result<Self> {
        check_positions(frame.positions)?;
        let (cell, periodic) = match frame.cell {
            Some(cell) => (cell, frame.pbc),
            None => ([[0.0; 3]; 3], [false; 3]),
        };
        if periodic.iter().any(|&p| p) {
            check_periodic_cell(&cell, periodic)?;
        }
        let basis = binning_basis(&cell, periodic);
        let inverse = inverse(&basis);
        let heights = heights(&basis)?;
        let num_atoms = frame.positions.len();
        let mut wrapped = Vec::with_capacity(num_atoms);
        let mut fractional = Vec::with_capacity(num_atoms);
        let mut offsets = Vec::with_capacity(num_atoms);
        for (atom, position) in frame.positions.iter().enumerate() {
            let mut s = [0.0; 3];
            for (k, value) in s.iter_mut().enumerate() {
                *value = position[0] * inverse[0][k]
                    + position[1] * inverse[1][k]
                    + position[2] * inverse[2][k];
            }
            let mut offset = [0i32; 3];
            let mut p = *position;
            for k in (0..3).filter(|&k| periodic[k]) {
                let mut whole = s[k].floor();
                if whole.abs() > MAX_CELL_OFFSET {
                    return Err(CoreError::InvalidInput(format!(
                        "atom {atom} lies {whole:e} cells away along lattice vector {k}; wrap the positions first"
                    )));
                }
                let mut inside = s[k] - whole;
                // Rounding can leave a fraction of exactly 1 for coordinates just below 0.
                if inside >= 1.0 {
                    whole += 1.0;
                    inside = 0.0;
                }
                s[k] = inside;
                // Truncation is exact: |whole| <= MAX_CELL_OFFSET < i32::MAX.
                offset[k] = whole as i32;
                for (axis, value) in p.iter_mut().enumerate() {
                    *value -= whole * basis[k][axis];
                }
            }
            wrapped.push(p);
            fractional.push(s);
            offsets.push(offset);
        }
        Ok(Self {
            periodic,
            basis,
            heights,
            wrapped,
            fractional,
            offsets,
        })
    }

    /// Number of atoms of the frame.
    pub fn num_atoms(&self) -> usize {
        self.wrapped.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_with_zero_c_vector_is_accepted() {
        let positions = [[0.5, 0.5, 3.0], [1.5, 0.5, -2.0]];
        let frame = Frame {
            positions: &positions,
            cell: Some([[2.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]),
            pbc: [true, true, false],
        };
        let geometry = Geometry::new(&frame).unwrap();
        assert_eq!(geometry.basis[2], [0.0, 0.0, 1.0]);
        assert_eq!(geometry.wrapped[1], [1.5, 0.5, -2.0]);
    }

    #[test]
    fn wrapping_records_offsets() {
        let positions = [[-0.5, 4.5, 1.0]];
        let frame = Frame {
            positions: &positions,
            cell: Some([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]),
            pbc: [true; 3],
        };
        let geometry = Geometry::new(&frame).unwrap();
        assert_eq!(geometry.offsets[0], [-1, 2, 0]);
        assert_eq!(geometry.wrapped[0], [1.5, 0.5, 1.0]);
    }

    #[test]
    fn flat_and_nan_inputs_are_rejected() {
        let positions = [[0.0; 3]];
        let flat = Frame {
            positions: &positions,
            cell: Some([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1e-12]]),
            pbc: [true; 3],
        };
        let message = Geometry::new(&flat).unwrap_err().to_string();
        assert!(message.contains("nearly flat"), "{message}");
        let nan_positions = [[0.0, f64::NAN, 0.0]];
        let nan = Frame {
            positions: &nan_positions,
            cell: None,
            pbc: [false; 3],
        };
        let message = Geometry::new(&nan).unwrap_err().to_string();
        assert!(message.contains("atom 0"), "{message}");
    }
}
