//! The repformer layer's neighbour aggregations on the CPU, without gathered copies.
//!
//! A repformer layer reads each neighbour's per-atom features `node[index[i, j]]` (`[A, D]` rows
//! gathered into `[n, N, D]`, the largest tensors of a layer) only to reduce them at once: the g1
//! convolution multiplies them with a pair tensor and sums over the neighbours, the drrd moment
//! takes their outer product with the 3-wide h2 and sums. Training on forces differentiates these
//! twice. The six kernels here read the node rows in place (the `[A, D]` table stays in cache)
//! and cover every derivative of both reductions, because the derivatives of each of them are
//! again among them (`i` centre, `j` slot, `a` node, `c` < C left columns, `d` < D features,
//! `Σ_(i,j)→a` over the slots whose index is `a`):
//!
//! ```text
//! product_sum   out[i, d]    = Σ_j pair[i, j, d] · node[index[i, j], d]
//! gather_scale  out[i, j, d] = grad[i, d] · node[index[i, j], d]
//! scatter_scale out[a, d]    = Σ_(i,j)→a grad[i, d] · pair[i, j, d]
//! outer_sum     out[i, c, d] = Σ_j left[i, j, c] · node[index[i, j], d]
//! pair_dot      out[i, j, c] = Σ_d grad[i, c, d] · node[index[i, j], d]
//! scatter_outer out[a, d]    = Σ_(i,j)→a Σ_c left[i, j, c] · grad[i, c, d]
//! ```
//!
//! (The first three are bilinear and each one's partial derivatives are the other two; the same
//! holds for the last three.) All arrays are row-major and contiguous. Centres run in chunks on
//! the current [`crate::parallel`] pool; the scatters give each chunk its own `[A, D]`
//! accumulator, summed in chunk order, so the result depends on the thread count only in the
//! last bits.

use crate::error::{CoreError, Result};
use crate::parallel;
use crate::simd::{dot, vector_dispatch};
use crate::three_body::Real;

/// The neighbour slots of `n` centres: `index[i * num_slots + j]` is a row of the node table.
#[derive(Clone, Copy, Debug)]
pub struct Edges<'a> {
    /// `[n * num_slots]` node rows (empty slots hold any valid row and zero pair/left values).
    pub index: &'a [i64],
    /// Slots per centre (N).
    pub num_slots: usize,
    /// Rows of the node table (A).
    pub num_nodes: usize,
}

impl Edges<'_> {
    /// Number of centres (n).
    pub fn num_centres(&self) -> usize {
        self.index.len().checked_div(self.num_slots).unwrap_or(0)
    }

    fn validate(&self) -> Result<()> {
        if self.num_slots == 0 && !self.index.is_empty() {
            return Err(CoreError::InvalidInput(
                "aggregate: index has entries but zero slots per centre".into(),
            ));
        }
        if self.num_slots > 0 && self.index.len() % self.num_slots != 0 {
            return Err(CoreError::InvalidInput(format!(
                "aggregate: index length {} is not a multiple of {} slots",
                self.index.len(),
                self.num_slots
            )));
        }
        let nodes = self.num_nodes as i64;
        if let Some(position) = self.index.iter().position(|&row| row < 0 || row >= nodes) {
            return Err(CoreError::InvalidInput(format!(
                "aggregate: index[{position}] = {} outside the node table's {} rows",
                self.index[position], self.num_nodes
            )));
        }
        Ok(())
    }
}

/// Splits `out` into the slices of `chunks` (each `stride` values per centre).
fn split_out<'a, T>(
    mut out: &'a mut [T],
    chunks: &[std::ops::Range<usize>],
    stride: usize,
) -> Vec<(std::ops::Range<usize>, &'a mut [T])> {
    let mut pieces = Vec::with_capacity(chunks.len());
    for range in chunks {
        let (head, tail) = out.split_at_mut(range.len() * stride);
        pieces.push((range.clone(), head));
        out = tail;
    }
    pieces
}

/// Runs a per-centre kernel that writes `stride` values per centre, chunk by chunk.
fn per_centre<T: Real>(
    num_centres: usize,
    out: &mut [T],
    stride: usize,
    work: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync + Send,
) {
    let chunks = parallel::ranges(num_centres);
    parallel::map(split_out(out, &chunks, stride), |(range, piece)| {
        work(range, piece)
    });
}

/// Runs a scatter kernel into `out` (`[A, D]`, overwritten): one accumulator per chunk.
fn scatter<T: Real>(
    num_centres: usize,
    out: &mut [T],
    work: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync + Send,
) {
    out.fill(T::zero());
    let chunks = parallel::ranges(num_centres);
    if chunks.len() <= 1 {
        if let Some(range) = chunks.into_iter().next() {
            work(range, out);
        }
        return;
    }
    let len = out.len();
    let parts = parallel::map(chunks, |range| {
        let mut part = vec![T::zero(); len];
        work(range, &mut part);
        part
    });
    for part in &parts {
        for (total, &value) in out.iter_mut().zip(part) {
            *total += value;
        }
    }
}

#[inline(always)]
fn row<T>(table: &[T], row: i64, width: usize) -> &[T] {
    &table[row as usize * width..][..width]
}

/// `kernel` on the centres `centres`, writing their part of `out` (the per-centre kernels) or
/// adding into the whole `out` (the scatters).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk<T: Real>(
    kernel: Kernel,
    edges: &Edges<'_>,
    first: &[T],
    second: &[T],
    shape: (usize, usize),
    centres: std::ops::Range<usize>,
    out: &mut [T],
) {
    let (columns, width) = shape;
    let slots = edges.num_slots;
    match kernel {
        Kernel::ProductSum => {
            let (pair, node) = (first, second);
            for (local, i) in centres.enumerate() {
                let target = &mut out[local * width..][..width];
                target.fill(T::zero());
                for j in 0..slots {
                    let edge = i * slots + j;
                    let x = row(node, edges.index[edge], width);
                    let p = &pair[edge * width..][..width];
                    for ((o, &a), &b) in target.iter_mut().zip(p).zip(x) {
                        *o += a * b;
                    }
                }
            }
        }
        Kernel::GatherScale => {
            let (grad, node) = (first, second);
            for (local, i) in centres.enumerate() {
                let g = &grad[i * width..][..width];
                for j in 0..slots {
                    let x = row(node, edges.index[i * slots + j], width);
                    let target = &mut out[(local * slots + j) * width..][..width];
                    for ((o, &a), &b) in target.iter_mut().zip(g).zip(x) {
                        *o = a * b;
                    }
                }
            }
        }
        Kernel::ScatterScale => {
            let (grad, pair) = (first, second);
            for i in centres {
                let g = &grad[i * width..][..width];
                for j in 0..slots {
                    let edge = i * slots + j;
                    let target = &mut out[edges.index[edge] as usize * width..][..width];
                    let p = &pair[edge * width..][..width];
                    for ((o, &a), &b) in target.iter_mut().zip(g).zip(p) {
                        *o += a * b;
                    }
                }
            }
        }
        Kernel::OuterSum => {
            let (left, node) = (first, second);
            for (local, i) in centres.enumerate() {
                let target = &mut out[local * columns * width..][..columns * width];
                target.fill(T::zero());
                for j in 0..slots {
                    let edge = i * slots + j;
                    let x = row(node, edges.index[edge], width);
                    let l = &left[edge * columns..][..columns];
                    for (c, &factor) in l.iter().enumerate() {
                        for (o, &b) in target[c * width..][..width].iter_mut().zip(x) {
                            *o += factor * b;
                        }
                    }
                }
            }
        }
        Kernel::PairDot => {
            let (grad, node) = (first, second);
            for (local, i) in centres.enumerate() {
                let g = &grad[i * columns * width..][..columns * width];
                for j in 0..slots {
                    let x = row(node, edges.index[i * slots + j], width);
                    let target = &mut out[(local * slots + j) * columns..][..columns];
                    for (c, value) in target.iter_mut().enumerate() {
                        *value = dot(&g[c * width..][..width], x);
                    }
                }
            }
        }
        Kernel::ScatterOuter => {
            let (left, grad) = (first, second);
            for i in centres {
                let g = &grad[i * columns * width..][..columns * width];
                for j in 0..slots {
                    let edge = i * slots + j;
                    let target = &mut out[edges.index[edge] as usize * width..][..width];
                    let l = &left[edge * columns..][..columns];
                    for (c, &factor) in l.iter().enumerate() {
                        for (o, &b) in target.iter_mut().zip(&g[c * width..][..width]) {
                            *o += factor * b;
                        }
                    }
                }
            }
        }
    }
}

vector_dispatch!(chunk_run, chunk, <'a, 'b>, Real,
    (kernel: Kernel, edges: &'a Edges<'b>, first: &'a [T], second: &'a [T],
     shape: (usize, usize), centres: std::ops::Range<usize>, out: &'a mut [T]) -> ());

/// One of the six reductions of the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `out[i, d] = Σ_j pair[i, j, d] · node[index[i, j], d]`; operands (pair, node), out `[n, D]`.
    ProductSum,
    /// `out[i, j, d] = grad[i, d] · node[index[i, j], d]`; (grad, node), out `[n, N, D]`.
    GatherScale,
    /// `out[a, d] = Σ_(i,j)→a grad[i, d] · pair[i, j, d]`; (grad, pair), out `[A, D]`.
    ScatterScale,
    /// `out[i, c, d] = Σ_j left[i, j, c] · node[index[i, j], d]`; (left, node), out `[n, C, D]`.
    OuterSum,
    /// `out[i, j, c] = Σ_d grad[i, c, d] · node[index[i, j], d]`; (grad, node), out `[n, N, C]`.
    PairDot,
    /// `out[a, d] = Σ_(i,j)→a Σ_c left[i, j, c] · grad[i, c, d]`; (left, grad), out `[A, D]`.
    ScatterOuter,
}

impl Kernel {
    /// The kernel called `name` (`product_sum`, `gather_scale`, ... as in the module docs).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "product_sum" => Self::ProductSum,
            "gather_scale" => Self::GatherScale,
            "scatter_scale" => Self::ScatterScale,
            "outer_sum" => Self::OuterSum,
            "pair_dot" => Self::PairDot,
            "scatter_outer" => Self::ScatterOuter,
            _ => return None,
        })
    }
}

/// Runs `kernel` on `edges` with its two operands into `out` (overwritten), all row-major:
/// `columns` is C (the outer-product kernels; ignored by the others) and `width` is D.
///
/// # Errors
/// [`CoreError::InvalidInput`] on an index outside the node table or an operand whose length does
/// not fit the shapes.
pub fn run<T: Real>(
    kernel: Kernel,
    edges: &Edges<'_>,
    first: &[T],
    second: &[T],
    columns: usize,
    width: usize,
    out: &mut [T],
) -> Result<()> {
    edges.validate()?;
    let n = edges.num_centres();
    let (slots, nodes, per_centre_cd) = (edges.index.len(), edges.num_nodes * width, n * columns);
    let expected = match kernel {
        Kernel::ProductSum => [("pair", slots * width), ("node", nodes), ("out", n * width)],
        Kernel::GatherScale => [("grad", n * width), ("node", nodes), ("out", slots * width)],
        Kernel::ScatterScale => [("grad", n * width), ("pair", slots * width), ("out", nodes)],
        Kernel::OuterSum => [
            ("left", slots * columns),
            ("node", nodes),
            ("out", per_centre_cd * width),
        ],
        Kernel::PairDot => [
            ("grad", per_centre_cd * width),
            ("node", nodes),
            ("out", slots * columns),
        ],
        Kernel::ScatterOuter => [
            ("left", slots * columns),
            ("grad", per_centre_cd * width),
            ("out", nodes),
        ],
    };
    for ((name, wanted), got) in expected
        .into_iter()
        .zip([first.len(), second.len(), out.len()])
    {
        if got != wanted {
            return Err(CoreError::InvalidInput(format!(
                "aggregate {kernel:?}: {name} has {got} values, expected {wanted}"
            )));
        }
    }
    let shape = (columns, width);
    let work =
        |range, piece: &mut [T]| chunk_run(kernel, edges, first, second, shape, range, piece);
    match kernel {
        Kernel::ProductSum => per_centre(n, out, width, work),
        Kernel::GatherScale => per_centre(n, out, edges.num_slots * width, work),
        Kernel::OuterSum => per_centre(n, out, columns * width, work),
        Kernel::PairDot => per_centre(n, out, edges.num_slots * columns, work),
        Kernel::ScatterScale | Kernel::ScatterOuter => scatter(n, out, work),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    const N: usize = 5; // slots
    const A: usize = 7; // nodes
    const D: usize = 19; // features (not a multiple of the vector width)
    const C: usize = 3; // left columns
    const CENTRES: usize = 4;

    fn index() -> Vec<i64> {
        (0..CENTRES * N).map(|k| ((k * 5 + 3) % A) as i64).collect()
    }

    fn at(index: &[i64], i: usize, j: usize) -> usize {
        index[i * N + j] as usize
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-13, "{x} vs {y}");
        }
    }

    /// Every kernel against a direct loop over its formula, with 1 and 3 threads.
    #[test]
    fn kernels_match_their_formulas() {
        let index = index();
        let edges = Edges {
            index: &index,
            num_slots: N,
            num_nodes: A,
        };
        let pair = values(CENTRES * N * D, 1);
        let node = values(A * D, 2);
        let grad = values(CENTRES * D, 3);
        let left = values(CENTRES * N * C, 4);
        let grad_cd = values(CENTRES * C * D, 5);
        let mut expected_sum = vec![0.0; CENTRES * D];
        let mut expected_gather = vec![0.0; CENTRES * N * D];
        let mut expected_scatter = vec![0.0; A * D];
        let mut expected_outer = vec![0.0; CENTRES * C * D];
        let mut expected_dot = vec![0.0; CENTRES * N * C];
        let mut expected_scatter_outer = vec![0.0; A * D];
        for i in 0..CENTRES {
            for j in 0..N {
                let a = at(&index, i, j);
                for d in 0..D {
                    let p = pair[(i * N + j) * D + d];
                    expected_sum[i * D + d] += p * node[a * D + d];
                    expected_gather[(i * N + j) * D + d] = grad[i * D + d] * node[a * D + d];
                    expected_scatter[a * D + d] += grad[i * D + d] * p;
                    for c in 0..C {
                        let l = left[(i * N + j) * C + c];
                        expected_outer[(i * C + c) * D + d] += l * node[a * D + d];
                        expected_dot[(i * N + j) * C + c] +=
                            grad_cd[(i * C + c) * D + d] * node[a * D + d];
                        expected_scatter_outer[a * D + d] += l * grad_cd[(i * C + c) * D + d];
                    }
                }
            }
        }
        for threads in [1, 3] {
            parallel::install(threads, || {
                let mut out = vec![9.0; CENTRES * D];
                run(Kernel::ProductSum, &edges, &pair, &node, 0, D, &mut out).unwrap();
                close(&out, &expected_sum);
                let mut out = vec![9.0; CENTRES * N * D];
                run(Kernel::GatherScale, &edges, &grad, &node, 0, D, &mut out).unwrap();
                close(&out, &expected_gather);
                let mut out = vec![9.0; A * D];
                run(Kernel::ScatterScale, &edges, &grad, &pair, 0, D, &mut out).unwrap();
                close(&out, &expected_scatter);
                let mut out = vec![9.0; CENTRES * C * D];
                run(Kernel::OuterSum, &edges, &left, &node, C, D, &mut out).unwrap();
                close(&out, &expected_outer);
                let mut out = vec![9.0; CENTRES * N * C];
                run(Kernel::PairDot, &edges, &grad_cd, &node, C, D, &mut out).unwrap();
                close(&out, &expected_dot);
                let mut out = vec![9.0; A * D];
                run(
                    Kernel::ScatterOuter,
                    &edges,
                    &left,
                    &grad_cd,
                    C,
                    D,
                    &mut out,
                )
                .unwrap();
                close(&out, &expected_scatter_outer);
            })
            .unwrap();
        }
    }

    /// ⟨product_sum(pair, node), g⟩ = ⟨pair, gather_scale(g, node)⟩ = ⟨node, scatter_scale(g, pair)⟩,
    /// and the same adjoint identities for the outer-product family, in f32.
    #[test]
    fn adjoint_identities_hold_in_f32() {
        let index = index();
        let edges = Edges {
            index: &index,
            num_slots: N,
            num_nodes: A,
        };
        let f32s = |count, seed| {
            values(count, seed)
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>()
        };
        let dot32 =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| f64::from(x * y)).sum::<f64>();
        let (pair, node, grad) = (
            f32s(CENTRES * N * D, 6),
            f32s(A * D, 7),
            f32s(CENTRES * D, 8),
        );
        let mut sum = vec![0.0f32; CENTRES * D];
        let mut gathered = vec![0.0f32; CENTRES * N * D];
        let mut scattered = vec![0.0f32; A * D];
        run(Kernel::ProductSum, &edges, &pair, &node, 0, D, &mut sum).unwrap();
        run(
            Kernel::GatherScale,
            &edges,
            &grad,
            &node,
            0,
            D,
            &mut gathered,
        )
        .unwrap();
        run(
            Kernel::ScatterScale,
            &edges,
            &grad,
            &pair,
            0,
            D,
            &mut scattered,
        )
        .unwrap();
        let reference = dot32(&sum, &grad);
        assert!((reference - dot32(&pair, &gathered)).abs() < 1e-4);
        assert!((reference - dot32(&node, &scattered)).abs() < 1e-4);
        let (left, grad_cd) = (f32s(CENTRES * N * C, 9), f32s(CENTRES * C * D, 10));
        let mut outer = vec![0.0f32; CENTRES * C * D];
        let mut dotted = vec![0.0f32; CENTRES * N * C];
        let mut scattered = vec![0.0f32; A * D];
        run(Kernel::OuterSum, &edges, &left, &node, C, D, &mut outer).unwrap();
        run(Kernel::PairDot, &edges, &grad_cd, &node, C, D, &mut dotted).unwrap();
        run(
            Kernel::ScatterOuter,
            &edges,
            &left,
            &grad_cd,
            C,
            D,
            &mut scattered,
        )
        .unwrap();
        let reference = dot32(&outer, &grad_cd);
        assert!((reference - dot32(&left, &dotted)).abs() < 1e-4);
        assert!((reference - dot32(&node, &scattered)).abs() < 1e-4);
    }

    #[test]
    fn bad_inputs_are_named() {
        let index = vec![0i64, 7];
        let edges = Edges {
            index: &index,
            num_slots: 2,
            num_nodes: 7,
        };
        let mut out = vec![0.0; 3];
        let error = run(
            Kernel::ProductSum,
            &edges,
            &[0.0; 6],
            &[0.0; 21],
            0,
            3,
            &mut out,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("index[1] = 7 outside"),
            "{error}"
        );
        let index = vec![0i64, 1];
        let edges = Edges {
            index: &index,
            num_slots: 2,
            num_nodes: 7,
        };
        let error = run(
            Kernel::ProductSum,
            &edges,
            &[0.0; 5],
            &[0.0; 21],
            0,
            3,
            &mut out,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("pair has 5 values, expected 6"),
            "{error}"
        );
        let empty = Edges {
            index: &[],
            num_slots: 0,
            num_nodes: 7,
        };
        let mut none: Vec<f64> = vec![];
        run(Kernel::ProductSum, &empty, &[], &[0.0; 21], 0, 3, &mut none).unwrap();
        let mut table = vec![1.0; 21];
        run(Kernel::ScatterScale, &empty, &[], &[], 0, 3, &mut table).unwrap();
        assert!(table.iter().all(|&v| v == 0.0));
    }
}
