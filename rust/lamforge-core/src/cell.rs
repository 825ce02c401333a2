//! Geometry of a periodic cell given by its three lattice vectors (rows of a 3x3 matrix).

use crate::error::{CoreError, Result};

/// A 3x3 matrix stored row-major; row `k` is lattice vector `k`.
pub type Matrix3 = [[f64; 3]; 3];

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Signed volume `a . (b x c)` of the cell.
pub fn volume(cell: &Matrix3) -> f64 {
    dot(cell[0], cross(cell[1], cell[2]))
}

/// Perpendicular heights of the cell: the distance between the two faces spanned by the other two
/// lattice vectors, `h_a = |V| / |b x c|` and so on.
///
/// A sphere of radius `r` needs `ceil(r / h_k)` periodic images along lattice direction `k`. The
/// heights are what the neighbour search and the "cell too small for the cutoff" checks use.
///
/// # Errors
/// [`CoreError::InvalidInput`] when a value is not finite or the cell is singular (a face area or
/// the volume is zero).
pub fn heights(cell: &Matrix3) -> Result<[f64; 3]> {
    if cell.iter().flatten().any(|value| !value.is_finite()) {
        return Err(CoreError::InvalidInput(
            "cell contains NaN or infinite values".to_string(),
        ));
    }
    let volume = volume(cell).abs();
    let mut out = [0.0; 3];
    for (axis, height) in out.iter_mut().enumerate() {
        let face = cross(cell[(axis + 1) % 3], cell[(axis + 2) % 3]);
        let area = norm(face);
        if area == 0.0 || volume == 0.0 {
            return Err(CoreError::InvalidInput(format!(
                "cell is singular: lattice vectors span no volume (face {axis} has area {area:e}, volume {volume:e})"
            )));
        }
        *height = volume / area;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_heights_are_edges() {
        let cell = [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 4.0]];
        let h = heights(&cell).unwrap();
        assert!((h[0] - 2.0).abs() < 1e-14);
        assert!((h[1] - 3.0).abs() < 1e-14);
        assert!((h[2] - 4.0).abs() < 1e-14);
    }

    #[test]
    fn skewed_cell_heights_shrink() {
        // Shearing b along a keeps the volume but shortens the distance between the b-c faces.
        let cell = [[1.0, 0.0, 0.0], [5.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let h = heights(&cell).unwrap();
        assert!((volume(&cell) - 1.0).abs() < 1e-14);
        assert!((h[0] - 1.0 / 26f64.sqrt()).abs() < 1e-14);
        assert!((h[1] - 1.0).abs() < 1e-14);
    }

    #[test]
    fn singular_cell_is_rejected() {
        let cell = [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(matches!(heights(&cell), Err(CoreError::InvalidInput(_))));
        let cell = [[f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert!(matches!(heights(&cell), Err(CoreError::InvalidInput(_))));
    }
}
