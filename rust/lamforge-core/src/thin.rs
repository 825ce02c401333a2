//! Batched matrix products with one thin factor, for the embedding nets' contractions.
//!
//! The last layer of a DPA-1/DPA-2 embedding net is contracted with the environment rows at once:
//! per centre, `R [K, m]` (K neighbour slots, m = 4 columns of the environment matrix) against
//! the layer's `[K, n]` activations. Forces and their training derivative need three products,
//! each with the thin m-wide factor (`b` batch item, `k` < K row, `c` < m column, `d` < n):
//!
//! ```text
//! combine  out[b, c, d] = Σ_k R[b, k, c] · Y[b, k, d]      (Rᵀ Y, [B, m, n])
//! spread   out[b, k, d] = Σ_c R[b, k, c] · G[b, c, d]      (R G,  [B, K, n])
//! dot      out[b, k, c] = Σ_d G[b, c, d] · Y[b, k, d]      (Y Gᵀ, [B, K, m])
//! ```
//!
//! A general matrix multiply handles such shapes poorly (one of its three sizes is 4: BLAS
//! packing and per-item set-up dominate; PyTorch's CPU `bmm` reaches 8-15 GFLOP/s on them). Here
//! each batch item is one pass over its large operand with the thin one in registers. The three are
//! each other's partial derivatives (combine's gradient in Y is a spread, in R a dot; and so on),
//! so the callers' hand-written derivatives of any order use only these.
//!
//! Batch items have K rows each ([`run`]) or their own row counts ([`run_ragged`], CSR offsets
//! over `[P, ·]` row operands, the repinit block on real neighbours only). All arrays are
//! row-major and contiguous. Every output value is summed in a fixed order (k, c,
//! or d in eight interleaved partial sums), so all vector widths give the same bits. Batch items
//! run in chunks on the current [`crate::parallel`] pool.

use crate::error::{CoreError, Result};
use crate::parallel;
use crate::simd::{dot, vector_dispatch};
use crate::three_body::Real;

/// Columns of `combine`'s output held in registers at once.
const BLOCK: usize = 16;

/// One of the products of the module docs, two of them with the tanh derivative fused in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// `out[b, c, d] = Σ_k R[b, k, c] Y[b, k, d]`; inputs (R, Y), out `[B, m, n]`.
    Combine,
    /// `out[b, k, d] = Σ_c R[b, k, c] G[b, c, d]`; inputs (R, G), out `[B, K, n]`.
    Spread,
    /// `out[b, k, c] = Σ_d G[b, c, d] Y[b, k, d]`; inputs (G, Y), out `[B, K, m]`.
    Dot,
    /// `spread(R, G) ⊙ (1 - Y²)` (the gradient through a tanh); inputs (R, G, Y), out `[B, K, n]`.
    SpreadSlope,
    /// `(spread(U, G) - 2 Y ⊙ V ⊙ spread(R, G)) ⊙ (1 - Y²)` (the derivative of
    /// [`Kernel::SpreadSlope`] in Y, plus its part in R through U); inputs (R, U, G, Y, V),
    /// out `[B, K, n]`.
    SpreadSlopeSecond,
}

impl Kernel {
    /// The kernel called `name` (`combine`, `spread`, `dot`, `spread_slope`,
    /// `spread_slope_second`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "combine" => Self::Combine,
            "spread" => Self::Spread,
            "dot" => Self::Dot,
            "spread_slope" => Self::SpreadSlope,
            "spread_slope_second" => Self::SpreadSlopeSecond,
            _ => return None,
        })
    }

    /// Names and sizes of the inputs, and the size of the output: values per row of an item
    /// (the K-long operands) or per item (the `[m, n]` ones).
    fn operand_kinds(self, m: usize, n: usize) -> (Vec<(&'static str, Per)>, Per) {
        let (rows_m, rows_n, item) = (Per::Row(m), Per::Row(n), Per::Item(m * n));
        match self {
            Self::Combine => (vec![("R", rows_m), ("Y", rows_n)], item),
            Self::Spread => (vec![("R", rows_m), ("G", item)], rows_n),
            Self::Dot => (vec![("G", item), ("Y", rows_n)], rows_m),
            Self::SpreadSlope => (vec![("R", rows_m), ("G", item), ("Y", rows_n)], rows_n),
            Self::SpreadSlopeSecond => (
                vec![
                    ("R", rows_m),
                    ("U", rows_m),
                    ("G", item),
                    ("Y", rows_n),
                    ("V", rows_n),
                ],
                rows_n,
            ),
        }
    }
}

/// How many values an operand has: per row of a batch item, or per batch item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Per {
    Row(usize),
    Item(usize),
}

/// The batch items and their rows: `rows` each (padded), or item `b` owning rows
/// `offsets[b]..offsets[b + 1]` (ragged, CSR).
#[derive(Clone, Copy, Debug)]
enum Items<'a> {
    Fixed { batch: usize, rows: usize },
    Ragged(&'a [i64]),
}

impl Items<'_> {
    fn count(&self) -> usize {
        match *self {
            Items::Fixed { batch, .. } => batch,
            Items::Ragged(offsets) => offsets.len().saturating_sub(1),
        }
    }

    /// The first row of item `b` (`b = count` gives the number of rows).
    #[inline(always)]
    fn start(&self, b: usize) -> usize {
        match *self {
            Items::Fixed { rows, .. } => b * rows,
            Items::Ragged(offsets) => offsets[b] as usize,
        }
    }

    /// Where item `b`'s values of an operand of kind `per` start.
    #[inline(always)]
    fn bound(&self, per: Per, b: usize) -> usize {
        match per {
            Per::Row(width) => self.start(b) * width,
            Per::Item(size) => b * size,
        }
    }
}

/// The sizes of a call: `batch` items, each with `rows` (K) long rows, `columns` (m) thin
/// columns and `width` (n) wide columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// B.
    pub batch: usize,
    /// K.
    pub rows: usize,
    /// m.
    pub columns: usize,
    /// n.
    pub width: usize,
}

/// `combine` for one batch item: `r` [K, M], `y` [K, n] -> `out` [M, n].
///
/// Column block by column block, the block's M output rows held in registers over all K rows.
#[inline(always)]
fn combine_item<T: Real, const M: usize>(
    r: &[T],
    y: &[T],
    (rows, n): (usize, usize),
    out: &mut [T],
) {
    let full = n - n % BLOCK;
    for start in (0..full).step_by(BLOCK) {
        let mut acc = [[T::zero(); BLOCK]; M];
        for k in 0..rows {
            let y_block: &[T; BLOCK] = y[k * n + start..][..BLOCK].try_into().unwrap();
            let r_row: &[T; M] = r[k * M..][..M].try_into().unwrap();
            for c in 0..M {
                for d in 0..BLOCK {
                    acc[c][d] += r_row[c] * y_block[d];
                }
            }
        }
        for c in 0..M {
            out[c * n + start..][..BLOCK].copy_from_slice(&acc[c]);
        }
    }
    if full < n {
        let tail = n - full;
        for c in 0..M {
            out[c * n + full..][..tail].fill(T::zero());
        }
        for k in 0..rows {
            for d in full..n {
                for c in 0..M {
                    out[c * n + d] += r[k * M + c] * y[k * n + d];
                }
            }
        }
    }
}

/// `combine` for one batch item with any number of columns `m`.
#[inline(always)]
fn combine_item_any<T: Real>(r: &[T], y: &[T], (rows, m, n): (usize, usize, usize), out: &mut [T]) {
    out[..m * n].fill(T::zero());
    for k in 0..rows {
        let y_row = &y[k * n..][..n];
        for c in 0..m {
            let factor = r[k * m + c];
            for (o, &value) in out[c * n..][..n].iter_mut().zip(y_row) {
                *o += factor * value;
            }
        }
    }
}

/// What a `spread` does with its product before storing it.
#[derive(Clone, Copy)]
struct Epilogue<'a, T> {
    /// Nothing (0), ⊙ (1 - Y²) (1), or [`Kernel::SpreadSlopeSecond`]'s formula (2).
    kind: u8,
    /// U (kind 2), [K, m].
    second_rows: &'a [T],
    /// Y (kinds 1 and 2), [K, n].
    y: &'a [T],
    /// V (kind 2), [K, n].
    upstream: &'a [T],
}

/// `Σ_c rows[c] · g[c, start..start + BLOCK]` (c in order) for `M` columns of `g` ([M, n]).
#[inline(always)]
fn spread_block<T: Real, const M: usize>(
    row: &[T; M],
    g: &[T],
    n: usize,
    start: usize,
) -> [T; BLOCK] {
    let g0: &[T; BLOCK] = g[start..][..BLOCK].try_into().unwrap();
    let mut block = [T::zero(); BLOCK];
    for d in 0..BLOCK {
        block[d] = row[0] * g0[d];
    }
    for c in 1..M {
        let gc: &[T; BLOCK] = g[c * n + start..][..BLOCK].try_into().unwrap();
        for d in 0..BLOCK {
            block[d] += row[c] * gc[d];
        }
    }
    block
}

/// `spread` for one batch item with `M` columns: `r` [K, M], `g` [M, n] -> `out` [K, n], then
/// the epilogue `EPI` (see [`Epilogue`]).
///
/// Row by row, each output block computed in registers from the (L1-resident) `g` blocks: one
/// store per output value.
#[inline(always)]
fn spread_item<T: Real, const M: usize, const EPI: u8>(
    r: &[T],
    g: &[T],
    (rows, n): (usize, usize),
    epilogue: Epilogue<'_, T>,
    out: &mut [T],
) {
    let full = n - n % BLOCK;
    for k in 0..rows {
        let r_row: &[T; M] = r[k * M..][..M].try_into().unwrap();
        let target = &mut out[k * n..][..n];
        match EPI {
            0 => {
                for start in (0..full).step_by(BLOCK) {
                    let first = spread_block::<T, M>(r_row, g, n, start);
                    target[start..start + BLOCK].copy_from_slice(&first);
                }
            }
            1 => {
                let y_row = &epilogue.y[k * n..][..n];
                for start in (0..full).step_by(BLOCK) {
                    let first = spread_block::<T, M>(r_row, g, n, start);
                    let y: &[T; BLOCK] = y_row[start..][..BLOCK].try_into().unwrap();
                    let block: &mut [T; BLOCK] =
                        (&mut target[start..start + BLOCK]).try_into().unwrap();
                    for d in 0..BLOCK {
                        block[d] = first[d] * (T::one() - y[d] * y[d]);
                    }
                }
            }
            _ => {
                let u_row: &[T; M] = epilogue.second_rows[k * M..][..M].try_into().unwrap();
                let (y_row, v_row) = (&epilogue.y[k * n..][..n], &epilogue.upstream[k * n..][..n]);
                let two = T::one() + T::one();
                for start in (0..full).step_by(BLOCK) {
                    let first = spread_block::<T, M>(r_row, g, n, start);
                    let second = spread_block::<T, M>(u_row, g, n, start);
                    let y: &[T; BLOCK] = y_row[start..][..BLOCK].try_into().unwrap();
                    let v: &[T; BLOCK] = v_row[start..][..BLOCK].try_into().unwrap();
                    let block: &mut [T; BLOCK] =
                        (&mut target[start..start + BLOCK]).try_into().unwrap();
                    for d in 0..BLOCK {
                        block[d] =
                            (second[d] - two * y[d] * v[d] * first[d]) * (T::one() - y[d] * y[d]);
                    }
                }
            }
        }
    }
    if full < n {
        // The columns past the last whole block, by the general path.
        spread_columns(r, g, (rows, M, n), full, epilogue, out);
    }
}

/// `spread` and its epilogue for one batch item with any number of columns `m`, output columns
/// `from..n` only.
#[inline(always)]
fn spread_columns<T: Real>(
    r: &[T],
    g: &[T],
    (rows, m, n): (usize, usize, usize),
    from: usize,
    epilogue: Epilogue<'_, T>,
    out: &mut [T],
) {
    let two = T::one() + T::one();
    for k in 0..rows {
        for d in from..n {
            let (mut first, mut second) = (T::zero(), T::zero());
            for c in 0..m {
                first += r[k * m + c] * g[c * n + d];
                if epilogue.kind == 2 {
                    second += epilogue.second_rows[k * m + c] * g[c * n + d];
                }
            }
            let y = if epilogue.kind > 0 {
                epilogue.y[k * n + d]
            } else {
                T::zero()
            };
            out[k * n + d] = match epilogue.kind {
                0 => first,
                1 => first * (T::one() - y * y),
                _ => {
                    let v = epilogue.upstream[k * n + d];
                    (second - two * y * v * first) * (T::one() - y * y)
                }
            };
        }
    }
}

/// `dot` for one batch item with `M` columns: `g` [M, n], `y` [K, n] -> `out` [K, M].
#[inline(always)]
fn dot_item<T: Real, const M: usize>(g: &[T], y: &[T], rows: usize, n: usize, out: &mut [T]) {
    let full = n - n % 8;
    for k in 0..rows {
        let y_row = &y[k * n..][..n];
        let mut partial = [[T::zero(); 8]; M];
        for start in (0..full).step_by(8) {
            let y_chunk: &[T; 8] = y_row[start..][..8].try_into().unwrap();
            for c in 0..M {
                let g_chunk: &[T; 8] = g[c * n + start..][..8].try_into().unwrap();
                for lane in 0..8 {
                    partial[c][lane] += g_chunk[lane] * y_chunk[lane];
                }
            }
        }
        for c in 0..M {
            let mut rest = T::zero();
            for (&x, &value) in g[c * n + full..c * n + n].iter().zip(&y_row[full..]) {
                rest += x * value;
            }
            out[k * M + c] = partial[c].iter().fold(T::zero(), |sum, &value| sum + value) + rest;
        }
    }
}

/// `spread` with epilogue `EPI` on one batch item, specialised for 1, 3 and 4 columns.
#[inline(always)]
fn spread_one<T: Real, const EPI: u8>(
    r: &[T],
    g: &[T],
    (rows, m, n): (usize, usize, usize),
    epilogue: Epilogue<'_, T>,
    out: &mut [T],
) {
    match m {
        4 => spread_item::<T, 4, EPI>(r, g, (rows, n), epilogue, out),
        3 => spread_item::<T, 3, EPI>(r, g, (rows, n), epilogue, out),
        1 => spread_item::<T, 1, EPI>(r, g, (rows, n), epilogue, out),
        _ => spread_columns(r, g, (rows, m, n), 0, epilogue, out),
    }
}

// One batch item per call, one function per kernel: each compiled copy stays small enough for
// the compiler to keep the register blocks in vector registers.

#[inline(always)]
fn combine_one<T: Real>(r: &[T], y: &[T], (rows, m, n): (usize, usize, usize), out: &mut [T]) {
    match m {
        4 => combine_item::<T, 4>(r, y, (rows, n), out),
        3 => combine_item::<T, 3>(r, y, (rows, n), out),
        1 => combine_item::<T, 1>(r, y, (rows, n), out),
        _ => combine_item_any(r, y, (rows, m, n), out),
    }
}

#[inline(always)]
fn dot_one<T: Real>(g: &[T], y: &[T], (rows, m, n): (usize, usize, usize), out: &mut [T]) {
    match m {
        4 => dot_item::<T, 4>(g, y, rows, n, out),
        3 => dot_item::<T, 3>(g, y, rows, n, out),
        _ => {
            for k in 0..rows {
                for c in 0..m {
                    out[k * m + c] = dot(&g[c * n..][..n], &y[k * n..][..n]);
                }
            }
        }
    }
}

#[inline(always)]
fn spread_plain_one<T: Real>(r: &[T], g: &[T], sizes: (usize, usize, usize), out: &mut [T]) {
    let epilogue = Epilogue {
        kind: 0,
        second_rows: &[],
        y: &[],
        upstream: &[],
    };
    spread_one::<T, 0>(r, g, sizes, epilogue, out);
}

#[inline(always)]
fn spread_slope_one<T: Real>(
    r: &[T],
    g: &[T],
    y: &[T],
    sizes: (usize, usize, usize),
    out: &mut [T],
) {
    let epilogue = Epilogue {
        kind: 1,
        second_rows: &[],
        y,
        upstream: &[],
    };
    spread_one::<T, 1>(r, g, sizes, epilogue, out);
}

#[inline(always)]
fn spread_second_one<T: Real>(
    r: &[T],
    u: &[T],
    g: &[T],
    y: &[T],
    v: &[T],
    sizes: (usize, usize, usize),
    out: &mut [T],
) {
    let epilogue = Epilogue {
        kind: 2,
        second_rows: u,
        y,
        upstream: v,
    };
    spread_one::<T, 2>(r, g, sizes, epilogue, out);
}

vector_dispatch!(combine_run, combine_one, <'a>, Real,
    (r: &'a [T], y: &'a [T], sizes: (usize, usize, usize), out: &'a mut [T]) -> ());
vector_dispatch!(dot_run, dot_one, <'a>, Real,
    (g: &'a [T], y: &'a [T], sizes: (usize, usize, usize), out: &'a mut [T]) -> ());
vector_dispatch!(spread_plain_run, spread_plain_one, <'a>, Real,
    (r: &'a [T], g: &'a [T], sizes: (usize, usize, usize), out: &'a mut [T]) -> ());
vector_dispatch!(spread_slope_run, spread_slope_one, <'a>, Real,
    (r: &'a [T], g: &'a [T], y: &'a [T], sizes: (usize, usize, usize), out: &'a mut [T]) -> ());
vector_dispatch!(spread_second_run, spread_second_one, <'a>, Real,
    (r: &'a [T], u: &'a [T], g: &'a [T], y: &'a [T], v: &'a [T],
     sizes: (usize, usize, usize), out: &'a mut [T]) -> ());

/// `kernel` on the batch items `range` (their slices of the inputs), writing their part of the
/// output into `out`.
fn chunk<T: Real>(
    kernel: Kernel,
    items: Items<'_>,
    (columns, width): (usize, usize),
    inputs: &[&[T]],
    range: std::ops::Range<usize>,
    out: &mut [T],
) {
    let (kinds, out_kind) = kernel.operand_kinds(columns, width);
    let out_base = items.bound(out_kind, range.start);
    for b in range {
        let input = |index: usize| {
            let per = kinds[index].1;
            &inputs[index][items.bound(per, b)..items.bound(per, b + 1)]
        };
        let target =
            &mut out[items.bound(out_kind, b) - out_base..items.bound(out_kind, b + 1) - out_base];
        let sizes = (items.start(b + 1) - items.start(b), columns, width);
        match kernel {
            Kernel::Combine => combine_run(input(0), input(1), sizes, target),
            Kernel::Dot => dot_run(input(0), input(1), sizes, target),
            Kernel::Spread => spread_plain_run(input(0), input(1), sizes, target),
            Kernel::SpreadSlope => spread_slope_run(input(0), input(1), input(2), sizes, target),
            Kernel::SpreadSlopeSecond => {
                let (r, u, g) = (input(0), input(1), input(2));
                spread_second_run(r, u, g, input(3), input(4), sizes, target)
            }
        }
    }
}

/// Runs `kernel` of `shape` on `inputs` (as [`Kernel`] lists them) into `out` (overwritten).
///
/// # Errors
/// [`CoreError::InvalidInput`] on a wrong number of inputs or an operand whose length does not
/// fit the shape.
pub fn run<T: Real>(kernel: Kernel, shape: Shape, inputs: &[&[T]], out: &mut [T]) -> Result<()> {
    let items = Items::Fixed {
        batch: shape.batch,
        rows: shape.rows,
    };
    run_items(
        kernel,
        items,
        (shape.columns, shape.width),
        inputs,
        out,
        &shape,
    )
}

/// [`run`] on ragged batch items: item `b` owns rows `offsets[b]..offsets[b + 1]` of the
/// row-shaped operands (`[P, m]` and `[P, n]` over all P rows), the item-shaped ones (`G`, and
/// combine's output) are `[B, m, n]` as before.
///
/// # Errors
/// [`CoreError::InvalidInput`] on offsets that do not start at 0, decrease, or end elsewhere
/// than the operands' row count, and as [`run`].
pub fn run_ragged<T: Real>(
    kernel: Kernel,
    offsets: &[i64],
    columns: usize,
    width: usize,
    inputs: &[&[T]],
    out: &mut [T],
) -> Result<()> {
    let (kinds, _) = kernel.operand_kinds(columns, width);
    // The row count from the first row-shaped operand (every kernel has one).
    let num_rows = kinds
        .iter()
        .zip(inputs)
        .find_map(|((_, per), input)| match per {
            Per::Row(size) => Some(input.len().checked_div(*size).unwrap_or(0)),
            Per::Item(_) => None,
        })
        .unwrap_or(0);
    crate::offsets::validate(offsets, num_rows, "thin")?;
    let description = format!("{} ragged items of {num_rows} rows", offsets.len() - 1);
    run_items(
        kernel,
        Items::Ragged(offsets),
        (columns, width),
        inputs,
        out,
        &description,
    )
}

fn run_items<T: Real>(
    kernel: Kernel,
    items: Items<'_>,
    sizes: (usize, usize),
    inputs: &[&[T]],
    out: &mut [T],
    described: &dyn std::fmt::Debug,
) -> Result<()> {
    let (kinds, out_kind) = kernel.operand_kinds(sizes.0, sizes.1);
    if inputs.len() != kinds.len() {
        return Err(CoreError::InvalidInput(format!(
            "thin {kernel:?}: takes {} inputs, got {}",
            kinds.len(),
            inputs.len()
        )));
    }
    let count = items.count();
    let lengths = inputs.iter().map(|x| x.len()).chain([out.len()]);
    for ((name, per), got) in kinds.iter().chain(&[("out", out_kind)]).zip(lengths) {
        let wanted = items.bound(*per, count);
        if got != wanted {
            return Err(CoreError::InvalidInput(format!(
                "thin {kernel:?}: {name} has {got} values, expected {wanted} for {described:?}"
            )));
        }
    }
    if out.is_empty() {
        return Ok(());
    }
    let mut pieces = Vec::new();
    let mut rest = out;
    for range in parallel::ranges(count) {
        let size = items.bound(out_kind, range.end) - items.bound(out_kind, range.start);
        let (head, tail) = rest.split_at_mut(size);
        pieces.push((range, head));
        rest = tail;
    }
    parallel::map(pieces, |(range, piece)| {
        chunk(kernel, items, sizes, inputs, range, piece)
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::values;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-12, "{x} vs {y}");
        }
    }

    const ALL: [Kernel; 5] = [
        Kernel::Combine,
        Kernel::Spread,
        Kernel::Dot,
        Kernel::SpreadSlope,
        Kernel::SpreadSlopeSecond,
    ];

    /// Direct loops over the formulas of [`Kernel`]'s docs.
    fn reference(kernel: Kernel, s: Shape, inputs: &[Vec<f64>]) -> Vec<f64> {
        let (kk, m, n) = (s.rows, s.columns, s.width);
        let at = |b: usize, k: usize, d: usize| (b * kk + k) * n + d;
        let thin = |b: usize, k: usize, c: usize| (b * kk + k) * m + c;
        let wide = |b: usize, c: usize, d: usize| (b * m + c) * n + d;
        let spread = |rows: &[f64], g: &[f64]| {
            let mut out = vec![0.0; s.batch * kk * n];
            for b in 0..s.batch {
                for k in 0..kk {
                    for d in 0..n {
                        for c in 0..m {
                            out[at(b, k, d)] += rows[thin(b, k, c)] * g[wide(b, c, d)];
                        }
                    }
                }
            }
            out
        };
        let combine = |rows: &[f64], y: &[f64]| {
            let mut out = vec![0.0; s.batch * m * n];
            for b in 0..s.batch {
                for k in 0..kk {
                    for c in 0..m {
                        for d in 0..n {
                            out[wide(b, c, d)] += rows[thin(b, k, c)] * y[at(b, k, d)];
                        }
                    }
                }
            }
            out
        };
        match kernel {
            Kernel::Combine => combine(&inputs[0], &inputs[1]),
            Kernel::Spread => spread(&inputs[0], &inputs[1]),
            Kernel::SpreadSlope => {
                let product = spread(&inputs[0], &inputs[1]);
                let y = &inputs[2];
                product
                    .iter()
                    .zip(y)
                    .map(|(p, y)| p * (1.0 - y * y))
                    .collect()
            }
            Kernel::SpreadSlopeSecond => {
                let (first, second) = (
                    spread(&inputs[0], &inputs[2]),
                    spread(&inputs[1], &inputs[2]),
                );
                let (y, v) = (&inputs[3], &inputs[4]);
                (0..first.len())
                    .map(|i| (second[i] - 2.0 * y[i] * v[i] * first[i]) * (1.0 - y[i] * y[i]))
                    .collect()
            }
            Kernel::Dot => {
                let (g, y) = (&inputs[0], &inputs[1]);
                let mut out = vec![0.0; s.batch * kk * m];
                for b in 0..s.batch {
                    for k in 0..kk {
                        for c in 0..m {
                            for d in 0..n {
                                out[thin(b, k, c)] += g[wide(b, c, d)] * y[at(b, k, d)];
                            }
                        }
                    }
                }
                out
            }
        }
    }

    /// Values per batch item of each input and of the output, for a padded shape.
    fn per_item(kernel: Kernel, s: Shape) -> (Vec<usize>, usize) {
        let size = |per| match per {
            Per::Row(width) => s.rows * width,
            Per::Item(values) => values,
        };
        let (kinds, out) = kernel.operand_kinds(s.columns, s.width);
        (kinds.iter().map(|(_, per)| size(*per)).collect(), size(out))
    }

    fn call(kernel: Kernel, shape: Shape, inputs: &[Vec<f64>], threads: usize) -> Vec<f64> {
        let (_, out_size) = per_item(kernel, shape);
        let mut out = vec![f64::NAN; out_size * shape.batch];
        let views: Vec<&[f64]> = inputs.iter().map(Vec::as_slice).collect();
        parallel::install(threads, || run(kernel, shape, &views, &mut out))
            .unwrap()
            .unwrap();
        out
    }

    /// Every kernel and specialised column count against the formulas, widths with and without
    /// a remainder of the register block, 1 and 3 threads (same bits).
    #[test]
    fn kernels_match_their_formulas() {
        for columns in [1, 2, 3, 4, 5] {
            for width in [3, 16, 21, 50] {
                let shape = Shape {
                    batch: 5,
                    rows: 7,
                    columns,
                    width,
                };
                for kernel in ALL {
                    let (input_sizes, _) = per_item(kernel, shape);
                    let inputs: Vec<Vec<f64>> = input_sizes
                        .iter()
                        .enumerate()
                        .map(|(i, size)| values(size * shape.batch, i as u64 + 1))
                        .collect();
                    let expected = reference(kernel, shape, &inputs);
                    let one = call(kernel, shape, &inputs, 1);
                    close(&one, &expected);
                    assert_eq!(one, call(kernel, shape, &inputs, 3), "{kernel:?} {shape:?}");
                }
            }
        }
    }

    /// ⟨combine(R, Y), G⟩ = ⟨R, dot(G, Y)⟩ = ⟨Y, spread(R, G)⟩: the kernels are each other's
    /// adjoints (what the callers' derivatives rely on), in f32 too.
    #[test]
    fn kernels_are_adjoint() {
        let shape = Shape {
            batch: 3,
            rows: 9,
            columns: 4,
            width: 19,
        };
        let (b, k, m, n) = (shape.batch, shape.rows, shape.columns, shape.width);
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let (r, y, g) = (
            to32(values(b * k * m, 3)),
            to32(values(b * k * n, 4)),
            to32(values(b * m * n, 5)),
        );
        let mut combined = vec![0.0f32; b * m * n];
        let mut dotted = vec![0.0f32; b * k * m];
        let mut spread = vec![0.0f32; b * k * n];
        run(Kernel::Combine, shape, &[&r, &y], &mut combined).unwrap();
        run(Kernel::Dot, shape, &[&g, &y], &mut dotted).unwrap();
        run(Kernel::Spread, shape, &[&r, &g], &mut spread).unwrap();
        let inner = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let (first, second, third) = (inner(&combined, &g), inner(&r, &dotted), inner(&y, &spread));
        assert!((first - second).abs() <= 1e-4 * first.abs().max(1.0));
        assert!((first - third).abs() <= 1e-4 * first.abs().max(1.0));
    }

    /// Ragged items (0 to 9 rows) give, item by item, the bits of the padded kernel run on that
    /// item alone, with 1 and 3 threads.
    #[test]
    fn ragged_items_match_one_item_at_a_time() {
        let counts = [3usize, 0, 9, 1, 5, 0, 7];
        let mut offsets = vec![0i64];
        for &count in &counts {
            offsets.push(offsets.last().unwrap() + count as i64);
        }
        let total = *offsets.last().unwrap() as usize;
        for (columns, width) in [(4, 21), (3, 16), (2, 5)] {
            for kernel in ALL {
                let (kinds, out_kind) = kernel.operand_kinds(columns, width);
                let size = |per: Per| match per {
                    Per::Row(w) => total * w,
                    Per::Item(v) => counts.len() * v,
                };
                let inputs: Vec<Vec<f64>> = kinds
                    .iter()
                    .enumerate()
                    .map(|(i, (_, per))| values(size(*per), i as u64 + 11))
                    .collect();
                let items = Items::Ragged(&offsets);
                let mut expected = vec![];
                for (b, &rows) in counts.iter().enumerate() {
                    let shape = Shape {
                        batch: 1,
                        rows,
                        columns,
                        width,
                    };
                    let pieces: Vec<Vec<f64>> = kinds
                        .iter()
                        .zip(&inputs)
                        .map(|((_, per), x)| {
                            x[items.bound(*per, b)..items.bound(*per, b + 1)].to_vec()
                        })
                        .collect();
                    expected.extend(call(kernel, shape, &pieces, 1));
                }
                let views: Vec<&[f64]> = inputs.iter().map(Vec::as_slice).collect();
                for threads in [1, 3] {
                    let mut out = vec![f64::NAN; size(out_kind)];
                    parallel::install(threads, || {
                        run_ragged(kernel, &offsets, columns, width, &views, &mut out)
                    })
                    .unwrap()
                    .unwrap();
                    assert_eq!(
                        out, expected,
                        "{kernel:?} {columns}x{width} {threads} threads"
                    );
                }
            }
        }
        let r = values(total * 4, 1);
        let y = values(total * 5 - 1, 2);
        let mut out = vec![0.0; counts.len() * 20];
        let error = run_ragged(Kernel::Combine, &offsets, 4, 5, &[&r, &y], &mut out).unwrap_err();
        assert!(
            error.to_string().contains("Y has 124 values, expected 125"),
            "{error}"
        );
        let error =
            run_ragged(Kernel::Combine, &[0, 3, 2, 25], 4, 5, &[&r, &y], &mut out).unwrap_err();
        assert!(
            error.to_string().contains("offsets decrease at item 1"),
            "{error}"
        );
    }

    #[test]
    fn rejects_operands_that_do_not_fit() {
        let shape = Shape {
            batch: 2,
            rows: 3,
            columns: 4,
            width: 5,
        };
        let mut out = vec![0.0; 2 * 4 * 5];
        let error = run(Kernel::Combine, shape, &[&[0.0; 24], &[0.0; 29]], &mut out).unwrap_err();
        assert!(
            error.to_string().contains("Y has 29 values, expected 30"),
            "{error}"
        );
        let error = run(Kernel::SpreadSlope, shape, &[&[0.0; 24]], &mut out).unwrap_err();
        assert!(error.to_string().contains("takes 3 inputs"), "{error}");
    }
}
