//! DPA-2's three-body embedding net, fused per neighbour pair (forward, backward, double backward).
//!
//! The repinit three-body branch evaluates a small tanh embedding net (deepmd-kit
//! `three_body_neuron`, e.g. 2 -> 4 -> 8) on every neighbour pair (j, k) of every centre i and
//! sums the outputs, weighted by the pair's cosine, into the centre's descriptor:
//!
//! ```text
//! z_0 = table[row_type] + c · first_weight           (first layer; c = the pair's cosine)
//! y_0 = tanh(z_0)
//! y_l = timestep_l ⊙ tanh(y_{l-1} W_l + b_l) + skip_l(y_{l-1})        (l = 1 .. L-1)
//! out[segment] += weight · c · y_{L-1}                (weight = multiplicity / cap²)
//! ```
//!
//! where `skip_l` is nothing, the identity, or `[x, x]` (deepmd-kit's doubling skip). The net's
//! input is one scalar per row, so the derivative with respect to it is a forward-mode tangent
//! that costs one more pass through these tiny layers. Training on forces differentiates the
//! forces (`∂out/∂c` contracted with the upstream gradient) once more; [`double_backward`] does that
//! by reverse mode over the (value, tangent) pair. Everything stays in registers per row, instead
//! of a dozen full passes over `[rows, width]` tensors per derivative order. [`forward`] can save
//! every neuron's tanh output, so that the derivatives evaluate no tanh at all.
//!
//! Rows run in blocks of [`BLOCK`], each quantity of a neuron held as one array over the block's
//! rows (structure of arrays), so that the arithmetic, including an inlined exponential for tanh,
//! vectorises across rows; on x86-64 CPUs with AVX-512 or AVX2 the block loops run as a copy
//! compiled for it (same bits: no FMA). Blocks are split into chunks that run in parallel on the current
//! [`crate::parallel`] pool, each with its own accumulators, summed at the end.

// Lane loops `for b in 0..BLOCK` index several arrays of one block in step: clearer than
// zipped iterators, and what the vectoriser wants.
#![allow(clippy::needless_range_loop)]

use std::ops::AddAssign;

use num_traits::Float;

use crate::error::{CoreError, Result};
use crate::parallel;
use crate::simd::vector_dispatch;

/// How a layer adds its input to its output (deepmd-kit's resnet rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// No skip.
    None,
    /// `y += x` (`num_out == num_in`).
    Identity,
    /// `y += [x, x]` (`num_out == 2 num_in`).
    Double,
}

/// One layer after the first: `y = timestep ⊙ tanh(x W + b) + skip(x)`.
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a, T> {
    /// [num_in, num_out], row-major.
    pub weight: &'a [T],
    /// [num_out].
    pub bias: &'a [T],
    /// [num_out], or None for ones.
    pub timestep: Option<&'a [T]>,
    /// The input added to the output.
    pub skip: Skip,
    /// Input width.
    pub num_in: usize,
    /// Output width.
    pub num_out: usize,
}

/// The whole net.
#[derive(Clone, Debug)]
pub struct Net<'a, T> {
    /// [num_row_types, width_0]: the first layer's pre-activation without the cosine term (the
    /// type-embedding part of the input times its weight rows, plus the bias), per row type.
    pub table: &'a [T],
    /// [width_0]: the first layer's weight row of the cosine.
    pub first_weight: &'a [T],
    /// The layers after the first.
    pub layers: Vec<Layer<'a, T>>,
}

/// The rows the net runs on.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a, T> {
    /// [rows] the net's scalar input (the pair's cosine).
    pub cosine: &'a [T],
    /// [rows] the constant factor of each row's contribution.
    pub weight: &'a [T],
    /// [rows] row of `Net::table`.
    pub row_type: &'a [i64],
    /// [rows] output segment (centre) of each row.
    pub segment: &'a [i64],
    /// Number of segments.
    pub num_segments: usize,
}

/// Gradients with respect to the net's parameters, shaped as the parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct NetGrads<T> {
    /// [num_row_types, width_0].
    pub table: Vec<T>,
    /// [width_0].
    pub first_weight: Vec<T>,
    /// Per layer after the first: (weight [num_in, num_out], bias, timestep) gradients.
    pub layers: Vec<LayerGrads<T>>,
}

/// Gradients of one layer's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerGrads<T> {
    /// [num_in, num_out].
    pub weight: Vec<T>,
    /// [num_out].
    pub bias: Vec<T>,
    /// [num_out] (zeros-shaped even when the layer has no timestep).
    pub timestep: Vec<T>,
}

/// Output of [`backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct Backward<T> {
    /// [rows] gradient with respect to the cosines.
    pub cosine: Vec<T>,
    /// Parameter gradients, when asked for.
    pub params: Option<NetGrads<T>>,
}

/// Output of [`double_backward`].
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleBackward<T> {
    /// [num_segments, width_out] gradient with respect to [`backward`]'s `grad_out`.
    pub grad_out: Vec<T>,
    /// [rows] gradient with respect to the cosines.
    pub cosine: Vec<T>,
    /// Parameter gradients.
    pub params: NetGrads<T>,
}

/// Rows per block (the vectorised dimension).
pub const BLOCK: usize = 16;

type Lane<T> = [T; BLOCK];

/// Floating-point element type of the kernels (f32 or f64).
pub trait Real: Float + AddAssign + Default + Send + Sync + std::fmt::Debug + 'static {
    /// exp(x) for |x| <= [`Real::EXP_LIMIT`] (x is clamped there) without a libm call:
    /// x = k ln2 + r with |r| <= ln2/2 (Cody-Waite), a Taylor polynomial accurate to the type's
    /// rounding, and 2^k from the exponent bits. Vectorises.
    fn exp_inline(self) -> Self;
    /// Beyond this |x| tanh(x / 2) rounds to ±1.
    const EXP_LIMIT: f64;
}

/// `Real` for one float type: `$magic` = 1.5 · 2^mantissa (adding it rounds to an integer and
/// leaves k + 2^(mantissa-1) in the low bits), ln2 split in two (Cody-Waite), the Taylor
/// coefficients 1/n! from the highest degree down, and the exponent's bias and shift for 2^k.
macro_rules! real_impl {
    ($t:ty, limit: $limit:expr, magic: $magic:expr, ln2: ($high:expr, $low:expr),
     taylor: [$first:expr $(, $c:expr)*], bias: $bias:expr, shift: $shift:expr) => {
        impl Real for $t {
            const EXP_LIMIT: f64 = $limit;

            #[inline(always)]
            fn exp_inline(self) -> $t {
                const MAGIC: $t = $magic;
                let x = self.clamp(-$limit as $t, $limit as $t);
                let shifted = x * (std::f64::consts::LOG2_E as $t) + MAGIC;
                let k = shifted - MAGIC;
                let r = (x - k * $high) - k * $low;
                let mut p: $t = $first;
                $(p = p * r + $c;)*
                let exponent = shifted.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add($bias);
                p * <$t>::from_bits(exponent << $shift)
            }
        }
    };
}

// Degree 13 (f64) and 8 (f32): the Taylor remainder on |r| <= 0.347 is below 1e-17 and 1e-9.
real_impl!(f64, limit: 40.0, magic: 6_755_399_441_055_744.0,
    ln2: (0.693_147_180_369_123_8, 1.908_214_929_270_587_7e-10),
    taylor: [1.0 / 6_227_020_800.0, 1.0 / 479_001_600.0, 1.0 / 39_916_800.0,
        1.0 / 3_628_800.0, 1.0 / 362_880.0, 1.0 / 40_320.0, 1.0 / 5_040.0, 1.0 / 720.0,
        1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0],
    bias: 1023, shift: 52);
real_impl!(f32, limit: 20.0, magic: 12_582_912.0, ln2: (0.693_145_75, 1.428_606_8e-6),
    taylor: [1.0 / 40_320.0, 1.0 / 5_040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0,
        0.5, 1.0, 1.0],
    bias: 127, shift: 23);

/// tanh(x) = 1 - 2 / (exp(2x) + 1), within a few 1e-16 (absolute, f64) of libm's `tanh`.
#[inline(always)]
fn tanh<T: Real>(x: T) -> T {
    let two = T::one() + T::one();
    T::one() - two / ((two * x).exp_inline() + T::one())
}

#[inline(always)]
fn lane_sum<T: Real>(values: &Lane<T>) -> T {
    values.iter().fold(T::zero(), |sum, &v| sum + v)
}

impl<T: Real> Net<'_, T> {
    fn widths(&self) -> Vec<usize> {
        let mut widths = vec![self.first_weight.len()];
        widths.extend(self.layers.iter().map(|layer| layer.num_out));
        widths
    }

    /// Number of neurons (the per-row values [`forward`] saves).
    pub fn num_neurons(&self) -> usize {
        self.widths().iter().sum()
    }

    /// Output width.
    pub fn width_out(&self) -> usize {
        self.layers
            .last()
            .map_or(self.first_weight.len(), |layer| layer.num_out)
    }

    fn num_row_types(&self) -> usize {
        self.table.len() / self.first_weight.len().max(1)
    }

    fn validate(&self, rows: &Rows<'_, T>) -> Result<()> {
        let invalid = |message: String| Err(CoreError::InvalidInput(message));
        let width = self.first_weight.len();
        if width == 0 || self.table.len() % width != 0 {
            return invalid(format!(
                "three-body table has {} values, not a multiple of the first width {width}",
                self.table.len()
            ));
        }
        let mut num_in = width;
        for (index, layer) in self.layers.iter().enumerate() {
            let expected_skip = match layer.skip {
                Skip::None => true,
                Skip::Identity => layer.num_out == layer.num_in,
                Skip::Double => layer.num_out == 2 * layer.num_in,
            };
            if layer.num_in != num_in
                || layer.weight.len() != layer.num_in * layer.num_out
                || layer.bias.len() != layer.num_out
                || layer.timestep.is_some_and(|t| t.len() != layer.num_out)
                || !expected_skip
            {
                return invalid(format!(
                    "three-body layer {}: inconsistent shapes (input {num_in}, layer {}x{}, \
                     skip {:?})",
                    index + 1,
                    layer.num_in,
                    layer.num_out,
                    layer.skip
                ));
            }
            num_in = layer.num_out;
        }
        let count = rows.cosine.len();
        if rows.weight.len() != count || rows.row_type.len() != count || rows.segment.len() != count
        {
            return invalid(format!(
                "three-body rows: cosine {}, weight {}, row_type {}, segment {} differ in length",
                count,
                rows.weight.len(),
                rows.row_type.len(),
                rows.segment.len()
            ));
        }
        let types = self.num_row_types() as i64;
        if let Some(bad) = rows.row_type.iter().position(|&t| t < 0 || t >= types) {
            return invalid(format!(
                "three-body row {bad}: row type {} outside [0, {types})",
                rows.row_type[bad]
            ));
        }
        let segments = rows.num_segments as i64;
        if let Some(bad) = rows.segment.iter().position(|&s| s < 0 || s >= segments) {
            return invalid(format!(
                "three-body row {bad}: segment {} outside [0, {segments})",
                rows.segment[bad]
            ));
        }
        Ok(())
    }

    fn zero_grads(&self) -> NetGrads<T> {
        NetGrads {
            table: vec![T::zero(); self.table.len()],
            first_weight: vec![T::zero(); self.first_weight.len()],
            layers: self
                .layers
                .iter()
                .map(|layer| LayerGrads {
                    weight: vec![T::zero(); layer.weight.len()],
                    bias: vec![T::zero(); layer.num_out],
                    timestep: vec![T::zero(); layer.num_out],
                })
                .collect(),
        }
    }
}

impl<T: Real> NetGrads<T> {
    fn add(&mut self, other: &NetGrads<T>) {
        add_into(&mut self.table, &other.table);
        add_into(&mut self.first_weight, &other.first_weight);
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            add_into(&mut mine.weight, &theirs.weight);
            add_into(&mut mine.bias, &theirs.bias);
            add_into(&mut mine.timestep, &theirs.timestep);
        }
    }
}

/// Parameter gradients with one accumulator per block lane (summed over lanes at the end), so
/// that accumulating is vectorised too. The table's are scattered by row type directly.
struct LaneGrads<T> {
    table: Vec<T>,
    first_weight: Vec<Lane<T>>,
    weight: Vec<Vec<Lane<T>>>,
    bias: Vec<Vec<Lane<T>>>,
    timestep: Vec<Vec<Lane<T>>>,
}

impl<T: Real> LaneGrads<T> {
    fn new(net: &Net<'_, T>) -> Self {
        let lanes = |count: usize| vec![[T::zero(); BLOCK]; count];
        Self {
            table: vec![T::zero(); net.table.len()],
            first_weight: lanes(net.first_weight.len()),
            weight: net.layers.iter().map(|l| lanes(l.weight.len())).collect(),
            bias: net.layers.iter().map(|l| lanes(l.num_out)).collect(),
            timestep: net.layers.iter().map(|l| lanes(l.num_out)).collect(),
        }
    }

    fn finish(self) -> NetGrads<T> {
        let sums = |lanes: &[Lane<T>]| lanes.iter().map(lane_sum).collect::<Vec<_>>();
        NetGrads {
            table: self.table,
            first_weight: sums(&self.first_weight),
            layers: (0..self.weight.len())
                .map(|index| LayerGrads {
                    weight: sums(&self.weight[index]),
                    bias: sums(&self.bias[index]),
                    timestep: sums(&self.timestep[index]),
                })
                .collect(),
        }
    }
}

/// One block of rows; lanes past `len` are padding with weight 0 (they add nothing anywhere).
struct BlockRows<T> {
    len: usize,
    cosine: Lane<T>,
    weight: Lane<T>,
    row_type: [usize; BLOCK],
    segment: [usize; BLOCK],
}

impl<T: Real> BlockRows<T> {
    #[inline(always)]
    fn load(rows: &Rows<'_, T>, block: usize) -> Self {
        let start = block * BLOCK;
        let len = (rows.cosine.len() - start).min(BLOCK);
        let mut out = Self {
            len,
            cosine: [T::zero(); BLOCK],
            weight: [T::zero(); BLOCK],
            row_type: [0; BLOCK],
            segment: [0; BLOCK],
        };
        for b in 0..len {
            out.cosine[b] = rows.cosine[start + b];
            out.weight[b] = rows.weight[start + b];
            out.row_type[b] = rows.row_type[start + b] as usize;
            out.segment[b] = rows.segment[start + b] as usize;
        }
        out
    }
}

/// Per-block state of every neuron (index = the layer's offset + its output index): tanh
/// outputs, tangents of the pre-activations, outputs and their tangents (derivatives with
/// respect to the cosine), and the reverse-mode adjoints of outputs and tangents.
struct Workspace<T> {
    offsets: Vec<usize>,
    activated: Vec<Lane<T>>,
    pre_tangent: Vec<Lane<T>>,
    output: Vec<Lane<T>>,
    tangent: Vec<Lane<T>>,
    adjoint: Vec<Lane<T>>,
    tangent_adjoint: Vec<Lane<T>>,
}

#[inline(always)]
fn skip_source(skip: Skip, input: usize, num_in: usize, j: usize) -> Option<usize> {
    match skip {
        Skip::None => None,
        Skip::Identity => Some(input + j),
        Skip::Double => Some(input + j % num_in),
    }
}

impl<T: Real> Workspace<T> {
    fn new(net: &Net<'_, T>) -> Self {
        let mut offsets = vec![0];
        for width in net.widths() {
            offsets.push(offsets.last().copied().unwrap_or(0) + width);
        }
        let count = *offsets.last().unwrap_or(&0);
        let lanes = || vec![[T::zero(); BLOCK]; count];
        Self {
            offsets,
            activated: lanes(),
            pre_tangent: lanes(),
            output: lanes(),
            tangent: lanes(),
            adjoint: lanes(),
            tangent_adjoint: lanes(),
        }
    }

    /// Values (and, with `with_tangent`, derivatives with respect to the cosine) of every
    /// neuron for one block. `saved`: the block's tanh outputs from an earlier [`forward`]; then
    /// no tanh is evaluated. Without it they are computed and left in `activated`.
    #[inline(always)]
    fn evaluate(
        &mut self,
        net: &Net<'_, T>,
        rows: &BlockRows<T>,
        with_tangent: bool,
        saved: Option<&[T]>,
    ) {
        let width = net.first_weight.len();
        for j in 0..width {
            let w = net.first_weight[j];
            let activated = match saved {
                Some(saved) => saved_lane(saved, j),
                None => {
                    let mut z = [T::zero(); BLOCK];
                    for b in 0..BLOCK {
                        z[b] = tanh(net.table[rows.row_type[b] * width + j] + rows.cosine[b] * w);
                    }
                    z
                }
            };
            self.activated[j] = activated;
            self.output[j] = activated;
            if with_tangent {
                self.pre_tangent[j] = [w; BLOCK];
                for b in 0..BLOCK {
                    self.tangent[j][b] = (T::one() - activated[b] * activated[b]) * w;
                }
            }
        }
        for (index, layer) in net.layers.iter().enumerate() {
            let (input, base) = (self.offsets[index], self.offsets[index + 1]);
            let (num_in, num_out) = (layer.num_in, layer.num_out);
            for j in 0..num_out {
                let n = base + j;
                let activated = match saved {
                    Some(saved) => saved_lane(saved, n),
                    None => {
                        let mut z = [layer.bias[j]; BLOCK];
                        for k in 0..num_in {
                            let (w, x) = (layer.weight[k * num_out + j], &self.output[input + k]);
                            for b in 0..BLOCK {
                                z[b] += x[b] * w;
                            }
                        }
                        for value in z.iter_mut() {
                            *value = tanh(*value);
                        }
                        z
                    }
                };
                self.activated[n] = activated;
                let scale = layer.timestep.map_or(T::one(), |s| s[j]);
                let source = skip_source(layer.skip, input, num_in, j);
                let mut y = [T::zero(); BLOCK];
                for b in 0..BLOCK {
                    y[b] = scale * activated[b];
                }
                if let Some(source) = source {
                    let x = &self.output[source];
                    for b in 0..BLOCK {
                        y[b] += x[b];
                    }
                }
                self.output[n] = y;
                if with_tangent {
                    let mut z_dot = [T::zero(); BLOCK];
                    for k in 0..num_in {
                        let (w, x_dot) = (layer.weight[k * num_out + j], &self.tangent[input + k]);
                        for b in 0..BLOCK {
                            z_dot[b] += x_dot[b] * w;
                        }
                    }
                    self.pre_tangent[n] = z_dot;
                    let mut y_dot = [T::zero(); BLOCK];
                    for b in 0..BLOCK {
                        y_dot[b] = scale * (T::one() - activated[b] * activated[b]) * z_dot[b];
                    }
                    if let Some(source) = source {
                        let x_dot = &self.tangent[source];
                        for b in 0..BLOCK {
                            y_dot[b] += x_dot[b];
                        }
                    }
                    self.tangent[n] = y_dot;
                }
            }
        }
    }

    /// Reverse mode over [`Self::evaluate`] (with tangents): `adjoint`/`tangent_adjoint` of the
    /// last layer hold the incoming adjoints of its values and tangents (the tangents' may be
    /// skipped with `with_tangent_adjoint = false` when zero). Adds parameter gradients into
    /// `grads` and returns the adjoints of the cosines. Clobbers the other adjoints.
    #[inline(always)]
    fn reverse(
        &mut self,
        net: &Net<'_, T>,
        rows: &BlockRows<T>,
        with_tangent_adjoint: bool,
        grads: &mut LaneGrads<T>,
    ) -> Lane<T> {
        let two = T::one() + T::one();
        for (index, layer) in net.layers.iter().enumerate().rev() {
            let (input, base) = (self.offsets[index], self.offsets[index + 1]);
            let (num_in, num_out) = (layer.num_in, layer.num_out);
            for k in 0..num_in {
                self.adjoint[input + k] = [T::zero(); BLOCK];
                self.tangent_adjoint[input + k] = [T::zero(); BLOCK];
            }
            for j in 0..num_out {
                let n = base + j;
                if let Some(source) = skip_source(layer.skip, input, num_in, j) {
                    let (y_bar, y_dot_bar) = (self.adjoint[n], self.tangent_adjoint[n]);
                    for b in 0..BLOCK {
                        self.adjoint[source][b] += y_bar[b];
                    }
                    if with_tangent_adjoint {
                        for b in 0..BLOCK {
                            self.tangent_adjoint[source][b] += y_dot_bar[b];
                        }
                    }
                }
                // adjoint[n] becomes the pre-activation's adjoint, tangent_adjoint[n] its
                // tangent's.
                let scale = layer.timestep.map_or(T::one(), |s| s[j]);
                let t = self.activated[n];
                let y_bar = self.adjoint[n];
                let timestep_grads = &mut grads.timestep[index][j];
                let bias_grads = &mut grads.bias[index][j];
                let mut z_bar = [T::zero(); BLOCK];
                if with_tangent_adjoint {
                    let z_dot = self.pre_tangent[n];
                    let y_dot_bar = self.tangent_adjoint[n];
                    let mut z_dot_bar = [T::zero(); BLOCK];
                    for b in 0..BLOCK {
                        let derivative = T::one() - t[b] * t[b];
                        let t_dot_bar = scale * y_dot_bar[b];
                        timestep_grads[b] += y_bar[b] * t[b] + y_dot_bar[b] * derivative * z_dot[b];
                        let t_bar = scale * y_bar[b] - two * t[b] * z_dot[b] * t_dot_bar;
                        z_dot_bar[b] = derivative * t_dot_bar;
                        z_bar[b] = derivative * t_bar;
                        bias_grads[b] += z_bar[b];
                    }
                    self.tangent_adjoint[n] = z_dot_bar;
                } else {
                    for b in 0..BLOCK {
                        let derivative = T::one() - t[b] * t[b];
                        timestep_grads[b] += y_bar[b] * t[b];
                        z_bar[b] = derivative * scale * y_bar[b];
                        bias_grads[b] += z_bar[b];
                    }
                }
                self.adjoint[n] = z_bar;
            }
            for k in 0..num_in {
                let (x, x_dot) = (self.output[input + k], self.tangent[input + k]);
                let mut x_bar = self.adjoint[input + k];
                let mut x_dot_bar = self.tangent_adjoint[input + k];
                for j in 0..num_out {
                    let n = base + j;
                    let w = layer.weight[k * num_out + j];
                    let weight_grads = &mut grads.weight[index][k * num_out + j];
                    let z_bar = &self.adjoint[n];
                    for b in 0..BLOCK {
                        weight_grads[b] += x[b] * z_bar[b];
                        x_bar[b] += w * z_bar[b];
                    }
                    if with_tangent_adjoint {
                        let z_dot_bar = &self.tangent_adjoint[n];
                        for b in 0..BLOCK {
                            weight_grads[b] += x_dot[b] * z_dot_bar[b];
                            x_dot_bar[b] += w * z_dot_bar[b];
                        }
                    }
                }
                self.adjoint[input + k] = x_bar;
                self.tangent_adjoint[input + k] = x_dot_bar;
            }
        }
        let width = net.first_weight.len();
        let mut cosine_bar = [T::zero(); BLOCK];
        for j in 0..width {
            let w = net.first_weight[j];
            let t = self.activated[j];
            let mut t_bar = self.adjoint[j];
            if with_tangent_adjoint {
                // y_dot = (1 - t²) w: adjoints into w directly and into t.
                let y_dot_bar = self.tangent_adjoint[j];
                for b in 0..BLOCK {
                    grads.first_weight[j][b] += (T::one() - t[b] * t[b]) * y_dot_bar[b];
                    t_bar[b] += -two * t[b] * w * y_dot_bar[b];
                }
            }
            let mut z_bar = [T::zero(); BLOCK];
            for b in 0..BLOCK {
                z_bar[b] = (T::one() - t[b] * t[b]) * t_bar[b];
                grads.first_weight[j][b] += rows.cosine[b] * z_bar[b];
                cosine_bar[b] += w * z_bar[b];
            }
            // Kept for the scatter below (the first layer's adjoints are not read again).
            self.adjoint[j] = z_bar;
        }
        // Row by row, the row's channels inner (rows share row types: no chain on one address).
        for b in 0..rows.len {
            let target = &mut grads.table[rows.row_type[b] * width..][..width];
            for (j, value) in target.iter_mut().enumerate() {
                *value += self.adjoint[j][b];
            }
        }
        cosine_bar
    }
}

/// Block ranges, one or a few per thread of the current pool.
fn chunks(num_rows: usize) -> Vec<std::ops::Range<usize>> {
    parallel::ranges(num_rows.div_ceil(BLOCK))
}

fn add_into<T: Real>(into: &mut [T], from: &[T]) {
    for (a, &b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

fn sum_parts<T: Real>(mut parts: Vec<Vec<T>>, len: usize) -> Vec<T> {
    let mut total = parts.pop().unwrap_or_else(|| vec![T::zero(); len]);
    for part in &parts {
        add_into(&mut total, part);
    }
    total
}

vector_dispatch!(forward_blocks, forward_chunk, <'a, 'b, 'c>, Real,
    (net: &'a Net<'b, T>, rows: &'a Rows<'c, T>, blocks: std::ops::Range<usize>,
     piece: &'a mut [T], save: Save) -> Vec<T>);
vector_dispatch!(backward_blocks, backward_chunk, <'a, 'b, 'c>, Real,
    (net: &'a Net<'b, T>, rows: &'a Rows<'c, T>, saved: &'a [T], grad_out: &'a [T],
     blocks: std::ops::Range<usize>, wanted: (bool, bool)) -> (Vec<T>, Option<NetGrads<T>>));
vector_dispatch!(double_backward_blocks, double_backward_chunk,
    <'a, 'b, 'c>, Real,
    (net: &'a Net<'b, T>, rows: &'a Rows<'c, T>, saved: &'a [T], grad_out: &'a [T],
     grad_cosine_out: &'a [T], blocks: std::ops::Range<usize>) -> (Vec<T>, Vec<T>, NetGrads<T>));

/// [`forward`] on a range of blocks: their segment sums; what `save` asks for into `piece`.
#[inline(always)]
fn forward_chunk<T: Real>(
    net: &Net<'_, T>,
    rows: &Rows<'_, T>,
    blocks: std::ops::Range<usize>,
    piece: &mut [T],
    save: Save,
) -> Vec<T> {
    let width_out = net.width_out();
    let neurons = net.num_neurons();
    let (last, stride) = (neurons - width_out, block_stride(net, save));
    let mut out = vec![T::zero(); rows.num_segments * width_out];
    let mut work = Workspace::new(net);
    let first = blocks.start;
    for block in blocks {
        let block_rows = BlockRows::load(rows, block);
        work.evaluate(net, &block_rows, save == Save::CosineFactors, None);
        let target = &mut piece[(block - first) * stride..(block - first + 1) * stride];
        match save {
            Save::Nothing => {}
            Save::Activations => {
                for (lane, values) in work.activated.iter().zip(target.chunks_exact_mut(BLOCK)) {
                    values.copy_from_slice(lane);
                }
            }
            Save::CosineFactors => {
                // d/dc [w c y(c)] = w (y + c y'), row-major.
                for j in 0..width_out {
                    let (y, y_dot) = (&work.output[last + j], &work.tangent[last + j]);
                    for b in 0..BLOCK {
                        target[b * width_out + j] =
                            block_rows.weight[b] * (y[b] + block_rows.cosine[b] * y_dot[b]);
                    }
                }
            }
        }
        for b in 0..block_rows.len {
            let factor = block_rows.weight[b] * block_rows.cosine[b];
            let segment = block_rows.segment[b];
            let target = &mut out[segment * width_out..(segment + 1) * width_out];
            for (j, value) in target.iter_mut().enumerate() {
                *value += factor * work.output[last + j][b];
            }
        }
    }
    out
}

/// [`backward`] on a range of blocks: their cosine gradients and parameter gradients.
#[inline(always)]
fn backward_chunk<T: Real>(
    net: &Net<'_, T>,
    rows: &Rows<'_, T>,
    saved: &[T],
    grad_out: &[T],
    blocks: std::ops::Range<usize>,
    (with_params, with_cosine): (bool, bool),
) -> (Vec<T>, Option<NetGrads<T>>) {
    let width_out = net.width_out();
    let neurons = net.num_neurons();
    let last = neurons - width_out;
    let mut cosine_grads = Vec::with_capacity(if with_cosine { blocks.len() * BLOCK } else { 0 });
    let mut grads = with_params.then(|| LaneGrads::new(net));
    let mut work = Workspace::new(net);
    for block in blocks {
        let block_rows = BlockRows::load(rows, block);
        let block_saved = &saved[block * neurons * BLOCK..(block + 1) * neurons * BLOCK];
        // The tangents (derivatives in the cosine) only for the cosines' gradient.
        work.evaluate(net, &block_rows, with_cosine, Some(block_saved));
        let mut sum = [T::zero(); BLOCK];
        for j in 0..width_out {
            let g = gather(grad_out, &block_rows, width_out, j);
            let adjoint = &mut work.adjoint[last + j];
            for b in 0..BLOCK {
                adjoint[b] = block_rows.weight[b] * block_rows.cosine[b] * g[b];
            }
            if with_cosine {
                // d/dc [w c y(c)] = w (y + c y').
                let (y, y_dot) = (&work.output[last + j], &work.tangent[last + j]);
                for b in 0..BLOCK {
                    sum[b] += g[b] * (y[b] + block_rows.cosine[b] * y_dot[b]);
                }
            }
        }
        if with_cosine {
            for b in 0..block_rows.len {
                cosine_grads.push(block_rows.weight[b] * sum[b]);
            }
        }
        if let Some(grads) = grads.as_mut() {
            work.reverse(net, &block_rows, false, grads);
        }
    }
    (cosine_grads, grads.map(LaneGrads::finish))
}

/// [`double_backward`] on a range of blocks.
#[inline(always)]
fn double_backward_chunk<T: Real>(
    net: &Net<'_, T>,
    rows: &Rows<'_, T>,
    saved: &[T],
    grad_out: &[T],
    grad_cosine_out: &[T],
    blocks: std::ops::Range<usize>,
) -> (Vec<T>, Vec<T>, NetGrads<T>) {
    let width_out = net.width_out();
    let neurons = net.num_neurons();
    let last = neurons - width_out;
    let mut grad_grad_out = vec![T::zero(); rows.num_segments * width_out];
    let mut cosine_grads = Vec::with_capacity(blocks.len() * BLOCK);
    let mut grads = LaneGrads::new(net);
    let mut contributions = vec![[T::zero(); BLOCK]; width_out];
    let mut work = Workspace::new(net);
    for block in blocks {
        let block_rows = BlockRows::load(rows, block);
        let mut factor = [T::zero(); BLOCK];
        for b in 0..block_rows.len {
            factor[b] = grad_cosine_out[block * BLOCK + b] * block_rows.weight[b];
        }
        let block_saved = &saved[block * neurons * BLOCK..(block + 1) * neurons * BLOCK];
        work.evaluate(net, &block_rows, true, Some(block_saved));
        // φ = w g·(y + c y'): ∂φ/∂g = w (y + c y'), the explicit c gives w g·y', and the
        // adjoints w g (of y) and w c g (of y') go back through the net (which adds
        // w g·(y' + c y'') to the cosine's).
        let mut explicit = [T::zero(); BLOCK];
        for j in 0..width_out {
            let g = gather(grad_out, &block_rows, width_out, j);
            let (y, y_dot) = (work.output[last + j], work.tangent[last + j]);
            for b in 0..BLOCK {
                contributions[j][b] = factor[b] * (y[b] + block_rows.cosine[b] * y_dot[b]);
            }
            let (adjoint, tangent_adjoint) = (
                &mut work.adjoint[last + j],
                &mut work.tangent_adjoint[last + j],
            );
            for b in 0..BLOCK {
                explicit[b] += g[b] * y_dot[b];
                adjoint[b] = factor[b] * g[b];
                tangent_adjoint[b] = factor[b] * block_rows.cosine[b] * g[b];
            }
        }
        // Row by row, the row's channels inner: rows of a block mostly share a segment, and
        // channel-inner adds to different addresses instead of a chain on one.
        for b in 0..block_rows.len {
            let target = &mut grad_grad_out[block_rows.segment[b] * width_out..][..width_out];
            for (j, value) in target.iter_mut().enumerate() {
                *value += contributions[j][b];
            }
        }
        let through_net = work.reverse(net, &block_rows, true, &mut grads);
        for b in 0..block_rows.len {
            cosine_grads.push(factor[b] * explicit[b] + through_net[b]);
        }
    }
    (grad_grad_out, cosine_grads, grads.finish())
}

/// What [`forward`] keeps for the derivatives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Save {
    /// Nothing (no derivative will be taken).
    Nothing,
    /// Every neuron's tanh output, for [`backward`] and [`double_backward`].
    Activations,
    /// Each row's `weight · (y + c y')` [rows, width_out], the factor of the upstream gradient in
    /// the cosine's gradient: for exactly one first-order backward with respect to the cosines
    /// ([`cosine_gradient`]), as forces at inference need. Costs the tangent, no tanh.
    CosineFactors,
}

/// Output of [`forward`].
#[derive(Clone, Debug, PartialEq)]
pub struct Forward<T> {
    /// [num_segments, width_out].
    pub out: Vec<T>,
    /// What `save` asked for: every neuron's tanh output in the kernels' block layout
    /// [ceil(rows / BLOCK), num_neurons, BLOCK], or the cosine factors [rows padded to whole
    /// blocks, width_out].
    pub saved: Option<Vec<T>>,
}

/// `out[segment, :] = Σ_rows weight · cosine · net(cosine, row_type)`, and what `save` asks for.
pub fn forward<T: Real>(net: &Net<'_, T>, rows: &Rows<'_, T>, save: Save) -> Result<Forward<T>> {
    net.validate(rows)?;
    let width_out = net.width_out();
    // One buffer for what is saved, cut into the chunks' disjoint block ranges. (Huge pages were
    // tried: with THP defrag on madvise their faults cost more than 4 KiB ones.)
    let stride = block_stride(net, save);
    let mut saved = vec![T::zero(); rows.cosine.len().div_ceil(BLOCK) * stride];
    let mut pieces = Vec::new();
    let mut rest: &mut [T] = &mut saved;
    for blocks in chunks(rows.cosine.len()) {
        let (piece, tail) = rest.split_at_mut(blocks.len() * stride);
        pieces.push((blocks, piece));
        rest = tail;
    }
    let parts = parallel::map(pieces, |(blocks, piece)| {
        forward_blocks(net, rows, blocks, piece, save)
    });
    Ok(Forward {
        out: sum_parts(parts, rows.num_segments * width_out),
        saved: (save != Save::Nothing).then_some(saved),
    })
}

/// Values saved per block of rows.
fn block_stride<T: Real>(net: &Net<'_, T>, save: Save) -> usize {
    match save {
        Save::Nothing => 0,
        Save::Activations => net.num_neurons() * BLOCK,
        Save::CosineFactors => net.width_out() * BLOCK,
    }
}

/// `grad_cosine[row] = Σ_j factors[row, j] · grad_out[segment[row], j]`: the cosines' gradient
/// from the factors of a [`forward`] with [`Save::CosineFactors`].
pub fn cosine_gradient<T: Real>(
    net: &Net<'_, T>,
    rows: &Rows<'_, T>,
    factors: &[T],
    grad_out: &[T],
) -> Result<Vec<T>> {
    net.validate(rows)?;
    let width_out = net.width_out();
    check_grad_out(grad_out, rows, width_out)?;
    let expected = rows.cosine.len().div_ceil(BLOCK) * BLOCK * width_out;
    if factors.len() != expected {
        return Err(CoreError::InvalidInput(format!(
            "three-body cosine factors have {} values, expected {expected} for {} rows",
            factors.len(),
            rows.cosine.len()
        )));
    }
    let mut grads = Vec::with_capacity(rows.cosine.len());
    for (row, &segment) in rows.segment.iter().enumerate() {
        let factor = &factors[row * width_out..(row + 1) * width_out];
        let upstream = &grad_out[segment as usize * width_out..(segment as usize + 1) * width_out];
        grads.push(
            factor
                .iter()
                .zip(upstream)
                .fold(T::zero(), |sum, (&a, &b)| sum + a * b),
        );
    }
    Ok(grads)
}

/// The chunks' per-row vectors joined in order (the only one moved, not copied).
fn concat<T: Clone>(mut parts: Vec<Vec<T>>) -> Vec<T> {
    if parts.len() == 1 {
        return parts.swap_remove(0);
    }
    parts.concat()
}

/// Checks `saved` against the rows.
fn check_saved<T: Real>(net: &Net<'_, T>, rows: &Rows<'_, T>, saved: &[T]) -> Result<()> {
    let expected = rows.cosine.len().div_ceil(BLOCK) * net.num_neurons() * BLOCK;
    if saved.len() != expected {
        return Err(CoreError::InvalidInput(format!(
            "three-body saved activations have {} values, expected {expected} for {} rows",
            saved.len(),
            rows.cosine.len()
        )));
    }
    Ok(())
}

/// Lane `index` of a block's saved activations.
#[inline(always)]
fn saved_lane<T: Real>(saved: &[T], index: usize) -> Lane<T> {
    let mut lane = [T::zero(); BLOCK];
    lane.copy_from_slice(&saved[index * BLOCK..(index + 1) * BLOCK]);
    lane
}

fn check_grad_out<T>(grad_out: &[T], rows: &Rows<'_, T>, width_out: usize) -> Result<()> {
    if grad_out.len() != rows.num_segments * width_out {
        return Err(CoreError::InvalidInput(format!(
            "three-body grad_out has {} values, expected {} segments x {width_out}",
            grad_out.len(),
            rows.num_segments
        )));
    }
    Ok(())
}

/// `grad_out[segment[b], j]` for each lane b.
#[inline(always)]
fn gather<T: Real>(grad_out: &[T], rows: &BlockRows<T>, width_out: usize, j: usize) -> Lane<T> {
    let mut g = [T::zero(); BLOCK];
    for b in 0..rows.len {
        g[b] = grad_out[rows.segment[b] * width_out + j];
    }
    g
}

/// Gradients of `Σ grad_out ⊙ forward(...)` with respect to the cosines (with `with_cosine`;
/// else [`Backward::cosine`] is empty and the forward-mode tangents are not computed) and, with
/// `with_params`, the net's parameters. `grad_out`: [num_segments, width_out]; `saved`: the
/// activations from [`forward`].
pub fn backward<T: Real>(
    net: &Net<'_, T>,
    rows: &Rows<'_, T>,
    saved: &[T],
    grad_out: &[T],
    with_params: bool,
    with_cosine: bool,
) -> Result<Backward<T>> {
    net.validate(rows)?;
    check_saved(net, rows, saved)?;
    let width_out = net.width_out();
    check_grad_out(grad_out, rows, width_out)?;
    let parts = parallel::map(chunks(rows.cosine.len()), |blocks| {
        backward_blocks(
            net,
            rows,
            saved,
            grad_out,
            blocks,
            (with_params, with_cosine),
        )
    });
    let mut cosine_parts = Vec::with_capacity(parts.len());
    let mut params: Option<NetGrads<T>> = None;
    for (part_cosine, part_grads) in parts {
        cosine_parts.push(part_cosine);
        if let Some(part) = part_grads {
            match params.as_mut() {
                Some(total) => total.add(&part),
                None => params = Some(part),
            }
        }
    }
    if with_params && params.is_none() {
        params = Some(net.zero_grads());
    }
    Ok(Backward {
        cosine: concat(cosine_parts),
        params,
    })
}

/// Gradients of `Σ_rows grad_cosine_out ⊙ backward(grad_out).cosine` with respect to `grad_out`,
/// the cosines and the net's parameters (the derivative of the force path, for training on
/// forces). `grad_cosine_out`: [rows]; `saved`: the activations from [`forward`].
pub fn double_backward<T: Real>(
    net: &Net<'_, T>,
    rows: &Rows<'_, T>,
    saved: &[T],
    grad_out: &[T],
    grad_cosine_out: &[T],
) -> Result<DoubleBackward<T>> {
    net.validate(rows)?;
    check_saved(net, rows, saved)?;
    let width_out = net.width_out();
    check_grad_out(grad_out, rows, width_out)?;
    if grad_cosine_out.len() != rows.cosine.len() {
        return Err(CoreError::InvalidInput(format!(
            "three-body grad of the cosine gradient has {} values, expected {} rows",
            grad_cosine_out.len(),
            rows.cosine.len()
        )));
    }
    let parts = parallel::map(chunks(rows.cosine.len()), |blocks| {
        double_backward_blocks(net, rows, saved, grad_out, grad_cosine_out, blocks)
    });
    let mut outs = Vec::with_capacity(parts.len());
    let mut cosine_parts = Vec::with_capacity(parts.len());
    let mut params = net.zero_grads();
    for (part_out, part_cosine, part_grads) in parts {
        outs.push(part_out);
        cosine_parts.push(part_cosine);
        params.add(&part_grads);
    }
    Ok(DoubleBackward {
        grad_out: sum_parts(outs, rows.num_segments * width_out),
        cosine: concat(cosine_parts),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of the test case: two full blocks and a partial one.
    const ROWS: usize = 2 * BLOCK + 5;

    /// A 2 -> 4 -> 8 net with doubling skips and timesteps, 3 row types, ROWS rows, 2 segments.
    struct Case {
        table: Vec<f64>,
        first_weight: Vec<f64>,
        weights: Vec<Vec<f64>>,
        biases: Vec<Vec<f64>>,
        timesteps: Vec<Vec<f64>>,
        cosine: Vec<f64>,
        weight: Vec<f64>,
        row_type: Vec<i64>,
        segment: Vec<i64>,
    }

    fn values(count: usize, seed: f64) -> Vec<f64> {
        (0..count)
            .map(|i| ((i as f64 + 1.0) * seed).sin() * 0.8)
            .collect()
    }

    fn case() -> Case {
        Case {
            table: values(6, 0.7),
            first_weight: values(2, 1.3),
            weights: vec![values(8, 0.37), values(32, 0.21)],
            biases: vec![values(4, 0.9), values(8, 1.7)],
            timesteps: vec![values(4, 2.3), values(8, 0.5)],
            cosine: values(ROWS, 0.61),
            weight: (0..ROWS).map(|i| 0.5 + (i % 4) as f64 * 0.5).collect(),
            row_type: (0..ROWS).map(|i| (i * 5 % 3) as i64).collect(),
            segment: (0..ROWS).map(|i| (i * 7 % 2) as i64).collect(),
        }
    }

    fn net(case: &Case) -> Net<'_, f64> {
        Net {
            table: &case.table,
            first_weight: &case.first_weight,
            layers: (0..2)
                .map(|l| Layer {
                    weight: &case.weights[l],
                    bias: &case.biases[l],
                    timestep: Some(&case.timesteps[l]),
                    skip: Skip::Double,
                    num_in: [2, 4][l],
                    num_out: [4, 8][l],
                })
                .collect(),
        }
    }

    fn rows<'a>(case: &'a Case, cosine: &'a [f64]) -> Rows<'a, f64> {
        Rows {
            cosine,
            weight: &case.weight,
            row_type: &case.row_type,
            segment: &case.segment,
            num_segments: 2,
        }
    }

    fn saved(case: &Case, cosine: &[f64]) -> Vec<f64> {
        forward(&net(case), &rows(case, cosine), Save::Activations)
            .unwrap()
            .saved
            .unwrap()
    }

    fn grad_out() -> Vec<f64> {
        values(16, 0.43)
    }

    /// Σ grad_out ⊙ forward at the given cosines.
    fn loss(case: &Case, cosine: &[f64]) -> f64 {
        let out = forward(&net(case), &rows(case, cosine), Save::Nothing)
            .unwrap()
            .out;
        out.iter().zip(grad_out()).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn tanh_matches_libm_in_f32() {
        for i in -400..=400 {
            let x = i as f32 * 0.05;
            assert!((tanh(x) - x.tanh()).abs() < 4e-7, "{x}");
        }
        assert_eq!(tanh(1e4_f32), 1.0);
    }

    #[test]
    fn tanh_matches_libm() {
        for i in -400..=400 {
            let x = i as f64 * 0.05;
            assert!((tanh(x) - x.tanh()).abs() < 4e-16, "{x}");
        }
        assert_eq!(tanh(1e4_f64), 1.0);
        assert_eq!(tanh(-1e4_f64), -1.0);
    }

    #[test]
    fn cosine_gradient_matches_finite_differences() {
        let case = case();
        let saved = saved(&case, &case.cosine);
        let analytic = backward(
            &net(&case),
            &rows(&case, &case.cosine),
            &saved,
            &grad_out(),
            false,
            true,
        )
        .unwrap()
        .cosine;
        for row in 0..case.cosine.len() {
            let h = 1e-6;
            let mut plus = case.cosine.clone();
            plus[row] += h;
            let mut minus = case.cosine.clone();
            minus[row] -= h;
            let numeric = (loss(&case, &plus) - loss(&case, &minus)) / (2.0 * h);
            assert!((numeric - analytic[row]).abs() < 1e-8, "row {row}");
        }
    }

    #[test]
    fn parameter_gradients_match_finite_differences() {
        let case = case();
        let saved = saved(&case, &case.cosine);
        let run = |with_cosine| {
            let net = net(&case);
            let rows = rows(&case, &case.cosine);
            backward(&net, &rows, &saved, &grad_out(), true, with_cosine).unwrap()
        };
        let (both, params_only) = (run(true), run(false));
        // Without the cosines' gradient (no tangents): the same parameter gradients, no cosines.
        assert!(params_only.cosine.is_empty());
        assert_eq!(both.params, params_only.params);
        let grads = params_only.params.unwrap();
        let h = 1e-6;
        let check = |perturb: &dyn Fn(&mut Case, f64), analytic: f64| {
            let mut plus = case_clone(&case);
            perturb(&mut plus, h);
            let mut minus = case_clone(&case);
            perturb(&mut minus, -h);
            let numeric = (loss(&plus, &plus.cosine.clone()) - loss(&minus, &minus.cosine.clone()))
                / (2.0 * h);
            assert!((numeric - analytic).abs() < 1e-8, "{numeric} vs {analytic}");
        };
        check(&|c, h| c.table[3] += h, grads.table[3]);
        check(&|c, h| c.first_weight[1] += h, grads.first_weight[1]);
        check(&|c, h| c.weights[0][5] += h, grads.layers[0].weight[5]);
        check(&|c, h| c.weights[1][17] += h, grads.layers[1].weight[17]);
        check(&|c, h| c.biases[1][2] += h, grads.layers[1].bias[2]);
        check(&|c, h| c.timesteps[0][3] += h, grads.layers[0].timestep[3]);
    }

    fn case_clone(case: &Case) -> Case {
        Case {
            table: case.table.clone(),
            first_weight: case.first_weight.clone(),
            weights: case.weights.clone(),
            biases: case.biases.clone(),
            timesteps: case.timesteps.clone(),
            cosine: case.cosine.clone(),
            weight: case.weight.clone(),
            row_type: case.row_type.clone(),
            segment: case.segment.clone(),
        }
    }

    /// Σ v ⊙ backward(grad_out).cosine at perturbed inputs.
    fn force_loss(case: &Case, grad_out: &[f64], v: &[f64]) -> f64 {
        let cosine = case.cosine.clone();
        let saved = saved(case, &cosine);
        let back = backward(
            &net(case),
            &rows(case, &cosine),
            &saved,
            grad_out,
            false,
            true,
        )
        .unwrap();
        back.cosine.iter().zip(v).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn double_backward_matches_finite_differences() {
        let case = case();
        let upstream = grad_out();
        let v = values(ROWS, 1.9);
        let analytic = double_backward(
            &net(&case),
            &rows(&case, &case.cosine),
            &saved(&case, &case.cosine),
            &upstream,
            &v,
        )
        .unwrap();
        let h = 1e-6;
        for row in 0..ROWS {
            let mut plus = case_clone(&case);
            plus.cosine[row] += h;
            let mut minus = case_clone(&case);
            minus.cosine[row] -= h;
            let numeric =
                (force_loss(&plus, &upstream, &v) - force_loss(&minus, &upstream, &v)) / (2.0 * h);
            assert!(
                (numeric - analytic.cosine[row]).abs() < 1e-7,
                "cosine {row}"
            );
        }
        for index in [0, 7, 15] {
            let mut plus = upstream.clone();
            plus[index] += h;
            let mut minus = upstream.clone();
            minus[index] -= h;
            let numeric =
                (force_loss(&case, &plus, &v) - force_loss(&case, &minus, &v)) / (2.0 * h);
            assert!(
                (numeric - analytic.grad_out[index]).abs() < 1e-7,
                "grad_out {index}"
            );
        }
        let check = |perturb: &dyn Fn(&mut Case, f64), exact: f64| {
            let mut plus = case_clone(&case);
            perturb(&mut plus, h);
            let mut minus = case_clone(&case);
            perturb(&mut minus, -h);
            let numeric =
                (force_loss(&plus, &upstream, &v) - force_loss(&minus, &upstream, &v)) / (2.0 * h);
            assert!((numeric - exact).abs() < 1e-7, "{numeric} vs {exact}");
        };
        let grads = &analytic.params;
        check(&|c, h| c.table[4] += h, grads.table[4]);
        check(&|c, h| c.first_weight[0] += h, grads.first_weight[0]);
        check(&|c, h| c.weights[0][2] += h, grads.layers[0].weight[2]);
        check(&|c, h| c.weights[1][30] += h, grads.layers[1].weight[30]);
        check(&|c, h| c.biases[0][1] += h, grads.layers[0].bias[1]);
        check(&|c, h| c.timesteps[1][6] += h, grads.layers[1].timestep[6]);
    }

    #[test]
    fn cosine_factors_give_the_backward_cosine_gradient() {
        let case = case();
        let (net, rows) = (net(&case), rows(&case, &case.cosine));
        let factors = forward(&net, &rows, Save::CosineFactors)
            .unwrap()
            .saved
            .unwrap();
        let from_factors = cosine_gradient(&net, &rows, &factors, &grad_out()).unwrap();
        let saved = saved(&case, &case.cosine);
        let expected = backward(&net, &rows, &saved, &grad_out(), false, true)
            .unwrap()
            .cosine;
        for (a, b) in from_factors.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
        }
    }

    #[test]
    fn saved_activations_are_the_tanh_outputs() {
        let case = case();
        let saved = saved(&case, &case.cosine);
        assert_eq!(saved.len(), 3 * (2 + 4 + 8) * BLOCK);
        let first = (case.table[0] + case.cosine[0] * case.first_weight[0]).tanh();
        assert!((saved[0] - first).abs() < 1e-15);
    }

    #[test]
    fn vector_copies_give_the_same_bits_as_the_baseline() {
        // The dispatched copy (AVX-512 or AVX2 where this CPU has them) against the baseline
        // build of the same function: no FMA, so bit for bit.
        let case = case();
        let (net, rows) = (net(&case), rows(&case, &case.cosine));
        let blocks = 0..ROWS.div_ceil(BLOCK);
        let neurons = net.num_neurons();
        let mut piece = vec![0.0; blocks.len() * neurons * BLOCK];
        let mut piece_baseline = piece.clone();
        let out = forward_blocks(&net, &rows, blocks.clone(), &mut piece, Save::Activations);
        let baseline = forward_chunk(
            &net,
            &rows,
            blocks.clone(),
            &mut piece_baseline,
            Save::Activations,
        );
        assert_eq!(out, baseline);
        assert_eq!(piece, piece_baseline);
        let upstream = grad_out();
        let v = values(ROWS, 1.9);
        assert_eq!(
            double_backward_blocks(&net, &rows, &piece, &upstream, &v, blocks.clone()),
            double_backward_chunk(&net, &rows, &piece, &upstream, &v, blocks.clone())
        );
        assert_eq!(
            backward_blocks(&net, &rows, &piece, &upstream, blocks.clone(), (true, true)),
            backward_chunk(&net, &rows, &piece, &upstream, blocks, (true, true))
        );
    }

    #[test]
    fn rejects_out_of_range_rows() {
        let case = case();
        let mut bad = case_clone(&case);
        bad.segment[2] = 7;
        let error = forward(&net(&bad), &rows(&bad, &bad.cosine), Save::Nothing).unwrap_err();
        assert!(error.to_string().contains("row 2"), "{error}");
    }
}
