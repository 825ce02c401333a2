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
//! holds for the last three.) The slots of a centre are either `N` padded ones per centre
//! ([`Layout::Padded`], `[n, N, ...]` pair arrays) or only its real pairs ([`Layout::Ragged`],
//! CSR offsets, `[P, ...]` pair arrays); an index of `None` lets slot `p` read node row `p` (a
//! per-pair tensor reduced per centre, such as the repformer's grrg moment of g2). All arrays are
//! row-major and contiguous. Centres run in chunks on
//! the current [`crate::parallel`] pool; the scatters give each chunk its own `[A, D]`
//! accumulator, summed in chunk order, so the result depends on the thread count only in the
//! last bits.

use crate::error::{CoreError, Result};
use crate::parallel;
use crate::simd::{dot, vector_dispatch};
use crate::three_body::Real;

/// Where each centre's slots lie in the pair arrays.
#[derive(Clone, Copy, Debug)]
pub enum Layout<'a> {
    /// `num_slots` slots per centre: centre `i` owns slots `i * num_slots ..` (empty slots hold
    /// any valid node row and zero pair/left values).
    Padded {
        /// Slots per centre (N).
        num_slots: usize,
    },
    /// Centre `i` owns slots `offsets[i]..offsets[i + 1]` (`[n + 1]`, from 0, non-decreasing):
    /// only real pairs, no padding.
    Ragged {
        /// `[n + 1]` slot offsets.
        offsets: &'a [i64],
    },
}

/// The neighbour slots of `n` centres and the node row each of them reads.
#[derive(Clone, Copy, Debug)]
pub struct Edges<'a> {
    /// `[num_pairs]` node rows, or `None`: slot `p` reads node row `p` (a pair tensor that is its
    /// own node table; then `num_nodes` is the number of slots).
    pub index: Option<&'a [i64]>,
    /// How the slots are grouped by centre.
    pub layout: Layout<'a>,
    /// Rows of the node table (A).
    pub num_nodes: usize,
}

impl Edges<'_> {
    /// Number of slots over all centres (P).
    pub fn num_pairs(&self) -> usize {
        self.index.map_or(self.num_nodes, <[i64]>::len)
    }

    /// Number of centres (n).
    pub fn num_centres(&self) -> usize {
        match self.layout {
            Layout::Padded { num_slots } => self.num_pairs().checked_div(num_slots).unwrap_or(0),
            Layout::Ragged { offsets } => offsets.len().saturating_sub(1),
        }
    }

    /// The first slot of centre `i` (`i = n` gives the number of slots).
    #[inline(always)]
    fn start(&self, i: usize) -> usize {
        match self.layout {
            Layout::Padded { num_slots } => i * num_slots,
            Layout::Ragged { offsets } => offsets[i] as usize,
        }
    }

    /// The node row that slot `p` reads.
    #[inline(always)]
    fn node(&self, p: usize) -> usize {
        match self.index {
            Some(index) => index[p] as usize,
            None => p,
        }
    }

    fn validate(&self) -> Result<()> {
        let pairs = self.num_pairs();
        match self.layout {
            Layout::Padded { num_slots } => {
                if num_slots == 0 && pairs > 0 {
                    return Err(CoreError::InvalidInput(
                        "aggregate: index has entries but zero slots per centre".into(),
                    ));
                }
                if num_slots > 0 && pairs % num_slots != 0 {
                    return Err(CoreError::InvalidInput(format!(
                        "aggregate: {pairs} slots are not a multiple of {num_slots} per centre"
                    )));
                }
            }
            Layout::Ragged { offsets } => crate::offsets::validate(offsets, pairs, "aggregate")?,
        }
        let nodes = self.num_nodes as i64;
        if let Some(index) = self.index {
            if let Some(position) = index.iter().position(|&row| row < 0 || row >= nodes) {
                return Err(CoreError::InvalidInput(format!(
                    "aggregate: index[{position}] = {} outside the node table's {} rows",
                    index[position], self.num_nodes
                )));
            }
        }
        Ok(())
    }
}

/// Runs `work` on chunks of centres in parallel, each writing its own piece of `out`: the
/// values from `bound(range.start)` to `bound(range.end)` (`bound` non-decreasing in the centre).
fn per_chunk<T: Real>(
    num_centres: usize,
    out: &mut [T],
    bound: impl Fn(usize) -> usize,
    work: impl Fn(std::ops::Range<usize>, &mut [T]) + Sync + Send,
) {
    let chunks = parallel::ranges(num_centres);
    let mut pieces = Vec::with_capacity(chunks.len());
    let mut rest = out;
    for range in chunks {
        let (head, tail) = rest.split_at_mut(bound(range.end) - bound(range.start));
        pieces.push((range, head));
        rest = tail;
    }
    parallel::map(pieces, |(range, piece)| work(range, piece));
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

/// `kernel` on the centres `centres`, writing their part of `out` (the per-centre and per-slot
/// kernels, and the scatters of an identity index) or adding into the whole `out` (the other
/// scatters).
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
    // Slot p's row of a per-slot output piece, and the scatters' first target row.
    let first_slot = edges.start(centres.start);
    let scatter_base = if edges.index.is_none() { first_slot } else { 0 };
    match kernel {
        Kernel::ProductSum => {
            let (pair, node) = (first, second);
            for (local, i) in centres.enumerate() {
                let target = &mut out[local * width..][..width];
                target.fill(T::zero());
                for p in edges.start(i)..edges.start(i + 1) {
                    let x = &node[edges.node(p) * width..][..width];
                    let y = &pair[p * width..][..width];
                    for ((o, &a), &b) in target.iter_mut().zip(y).zip(x) {
                        *o += a * b;
                    }
                }
            }
        }
        Kernel::GatherScale => {
            let (grad, node) = (first, second);
            for i in centres {
                let g = &grad[i * width..][..width];
                for p in edges.start(i)..edges.start(i + 1) {
                    let x = &node[edges.node(p) * width..][..width];
                    let target = &mut out[(p - first_slot) * width..][..width];
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
                for p in edges.start(i)..edges.start(i + 1) {
                    let target = &mut out[(edges.node(p) - scatter_base) * width..][..width];
                    let y = &pair[p * width..][..width];
                    for ((o, &a), &b) in target.iter_mut().zip(g).zip(y) {
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
                for p in edges.start(i)..edges.start(i + 1) {
                    let x = &node[edges.node(p) * width..][..width];
                    let l = &left[p * columns..][..columns];
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
            for i in centres {
                let g = &grad[i * columns * width..][..columns * width];
                for p in edges.start(i)..edges.start(i + 1) {
                    let x = &node[edges.node(p) * width..][..width];
                    let target = &mut out[(p - first_slot) * columns..][..columns];
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
                for p in edges.start(i)..edges.start(i + 1) {
                    let target = &mut out[(edges.node(p) - scatter_base) * width..][..width];
                    let l = &left[p * columns..][..columns];
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
    let (slots, nodes, per_centre_cd) = (edges.num_pairs(), edges.num_nodes * width, n * columns);
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
    let slot_bound = |stride: usize| move |i: usize| edges.start(i) * stride;
    match kernel {
        Kernel::ProductSum => per_chunk(n, out, |i| i * width, work),
        Kernel::OuterSum => per_chunk(n, out, |i| i * columns * width, work),
        Kernel::GatherScale => per_chunk(n, out, slot_bound(width), work),
        Kernel::PairDot => per_chunk(n, out, slot_bound(columns), work),
        Kernel::ScatterScale | Kernel::ScatterOuter if edges.index.is_none() => {
            // Every slot is its own target row: chunks write disjoint pieces.
            out.fill(T::zero());
            per_chunk(n, out, slot_bound(width), work);
        }
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

    fn padded(index: &[i64]) -> Edges<'_> {
        Edges {
            index: Some(index),
            layout: Layout::Padded { num_slots: N },
            num_nodes: A,
        }
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-13, "{x} vs {y}");
        }
    }

    /// A kernel, its two operands and its expected output.
    type Case<'a> = (Kernel, &'a [f64], &'a [f64], &'a [f64]);

    /// Every kernel on `edges` against a direct loop over its formula, with 1 and 3 threads.
    /// `centre_of[p]` is the centre owning slot `p`.
    fn check_formulas(edges: &Edges<'_>, centre_of: &[usize]) {
        let (slots, nodes, centres) = (edges.num_pairs(), edges.num_nodes, edges.num_centres());
        let pair = values(slots * D, 1);
        let node = values(nodes * D, 2);
        let grad = values(centres * D, 3);
        let left = values(slots * C, 4);
        let grad_cd = values(centres * C * D, 5);
        let mut expected_sum = vec![0.0; centres * D];
        let mut expected_gather = vec![0.0; slots * D];
        let mut expected_scatter = vec![0.0; nodes * D];
        let mut expected_outer = vec![0.0; centres * C * D];
        let mut expected_dot = vec![0.0; slots * C];
        let mut expected_scatter_outer = vec![0.0; nodes * D];
        for (p, &i) in centre_of.iter().enumerate() {
            let a = edges.node(p);
            for d in 0..D {
                let y = pair[p * D + d];
                expected_sum[i * D + d] += y * node[a * D + d];
                expected_gather[p * D + d] = grad[i * D + d] * node[a * D + d];
                expected_scatter[a * D + d] += grad[i * D + d] * y;
                for c in 0..C {
                    let l = left[p * C + c];
                    expected_outer[(i * C + c) * D + d] += l * node[a * D + d];
                    expected_dot[p * C + c] += grad_cd[(i * C + c) * D + d] * node[a * D + d];
                    expected_scatter_outer[a * D + d] += l * grad_cd[(i * C + c) * D + d];
                }
            }
        }
        let cases: [Case<'_>; 6] = [
            (Kernel::ProductSum, &pair, &node, &expected_sum),
            (Kernel::GatherScale, &grad, &node, &expected_gather),
            (Kernel::ScatterScale, &grad, &pair, &expected_scatter),
            (Kernel::OuterSum, &left, &node, &expected_outer),
            (Kernel::PairDot, &grad_cd, &node, &expected_dot),
            (
                Kernel::ScatterOuter,
                &left,
                &grad_cd,
                &expected_scatter_outer,
            ),
        ];
        for threads in [1, 3] {
            parallel::install(threads, || {
                for (kernel, first, second, expected) in cases {
                    let mut out = vec![9.0; expected.len()];
                    run(kernel, edges, first, second, C, D, &mut out).unwrap();
                    close(&out, expected);
                }
            })
            .unwrap();
        }
    }

    #[test]
    fn kernels_match_their_formulas() {
        let index = index();
        let centre_of: Vec<usize> = (0..CENTRES * N).map(|p| p / N).collect();
        check_formulas(&padded(&index), &centre_of);
    }

    /// Ragged slots (centres of 0 to 4 slots), with an index and with the identity index.
    #[test]
    fn ragged_layouts_match_their_formulas() {
        let counts = [3usize, 0, 4, 1, 2, 0, 4];
        let mut offsets = vec![0i64];
        let mut centre_of = vec![];
        for (i, &count) in counts.iter().enumerate() {
            offsets.push(offsets[i] + count as i64);
            centre_of.extend(std::iter::repeat_n(i, count));
        }
        let index: Vec<i64> = (0..centre_of.len())
            .map(|p| ((p * 3 + 1) % A) as i64)
            .collect();
        let layout = Layout::Ragged { offsets: &offsets };
        let edges = Edges {
            index: Some(&index),
            layout,
            num_nodes: A,
        };
        check_formulas(&edges, &centre_of);
        let identity = Edges {
            index: None,
            layout,
            num_nodes: centre_of.len(),
        };
        check_formulas(&identity, &centre_of);
    }

    /// ⟨product_sum(pair, node), g⟩ = ⟨pair, gather_scale(g, node)⟩ = ⟨node, scatter_scale(g, pair)⟩,
    /// and the same adjoint identities for the outer-product family, in f32.
    #[test]
    fn adjoint_identities_hold_in_f32() {
        let index = index();
        let edges = padded(&index);
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
        let message = |edges: &Edges<'_>, pair: &[f64]| {
            let mut out = vec![0.0; 3];
            run(Kernel::ProductSum, edges, pair, &[0.0; 21], 0, 3, &mut out)
                .unwrap_err()
                .to_string()
        };
        let padded = |index| Edges {
            index: Some(index),
            layout: Layout::Padded { num_slots: 2 },
            num_nodes: 7,
        };
        let error = message(&padded(&[0, 7]), &[0.0; 6]);
        assert!(error.contains("index[1] = 7 outside"), "{error}");
        let error = message(&padded(&[0, 1]), &[0.0; 5]);
        assert!(error.contains("pair has 5 values, expected 6"), "{error}");
        let ragged = |offsets| Edges {
            index: Some(&[0, 1]),
            layout: Layout::Ragged { offsets },
            num_nodes: 7,
        };
        let error = message(&ragged(&[0, 1]), &[0.0; 6]);
        assert!(
            error.contains("offsets run from 0 to 1, expected 0 to 2"),
            "{error}"
        );
        let error = message(&ragged(&[0, 2, 1, 2]), &[0.0; 6]);
        assert!(error.contains("offsets decrease at item 1"), "{error}");
        let error = message(&ragged(&[]), &[0.0; 6]);
        assert!(error.contains("offsets need n + 1 entries"), "{error}");
        let empty = Edges {
            index: Some(&[]),
            layout: Layout::Padded { num_slots: 0 },
            num_nodes: 7,
        };
        let mut none: Vec<f64> = vec![];
        run(Kernel::ProductSum, &empty, &[], &[0.0; 21], 0, 3, &mut none).unwrap();
        let mut table = vec![1.0; 21];
        run(Kernel::ScatterScale, &empty, &[], &[], 0, 3, &mut table).unwrap();
        assert!(table.iter().all(|&v| v == 0.0));
    }
}
