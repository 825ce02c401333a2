//! Run-time choice of vector instructions for the compute kernels.
//!
//! Kernels are written once as `#[inline(always)]` generic functions whose inner loops the
//! compiler vectorises; [`vector_dispatch`] compiles extra copies of them for AVX-512 and AVX2 and
//! picks the widest the CPU has at run time. No FMA contraction happens (Rust never fuses a
//! multiply and an add on its own), so every copy gives the same bits.

use crate::three_body::Real;

/// The widest vector instructions of this CPU the chunk functions have a copy for.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Vectors {
    /// The build's baseline (SSE2 on x86-64).
    Baseline,
    /// 256-bit.
    Avx2,
    /// 512-bit.
    Avx512,
}

/// Detected once per call (the check is a cached CPUID read).
#[inline(always)]
pub(crate) fn vectors() -> Vectors {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return Vectors::Avx512;
        }
        if std::is_x86_feature_detected!("avx2") {
            return Vectors::Avx2;
        }
    }
    Vectors::Baseline
}

/// Defines `$dispatch`, which runs the `#[inline(always)]` function `$generic` through a copy
/// compiled for AVX-512 or AVX2 where the CPU has it (the block loops then use 512- or 256-bit
/// vectors over a block's rows). No FMA is enabled, so every copy gives the same bits.
macro_rules! vector_dispatch {
    ($dispatch:ident, $generic:ident, <$($life:lifetime),*>, $bound:path,
     ($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        fn $dispatch<$($life,)* T: $bound>($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512<$($life,)* T: $bound>($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2<$($life,)* T: $bound>($($arg: $ty),*) -> $ret {
                    $generic($($arg),*)
                }
                match $crate::simd::vectors() {
                    // SAFETY: the CPU supports AVX-512F, detected by `vectors`.
                    $crate::simd::Vectors::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: the CPU supports AVX2, detected by `vectors`.
                    $crate::simd::Vectors::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Vectors::Baseline => {}
                }
            }
            $generic($($arg),*)
        }
    };
}

pub(crate) use vector_dispatch;

/// Dot product in 8 interleaved partial sums (vectorises; fixed order, so the same bits for any
/// vector width).
#[inline(always)]
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let mut partial = [T::zero(); 8];
    let mut a_chunks = a.chunks_exact(8);
    let mut b_chunks = b.chunks_exact(8);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for k in 0..8 {
            partial[k] += x[k] * y[k];
        }
    }
    let mut total = T::zero();
    for (&x, &y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        total += x * y;
    }
    partial.iter().fold(T::zero(), |sum, &v| sum + v) + total
}
