//! Run-time dispatch of the hot loops to AVX2 + FMA code where the CPU has them.
//!
//! The workspace builds for plain x86-64 (SSE2), where the Sinkhorn and auction loops run two `f64` (four
//! `f32`) lanes at a time and `a * b + c` is two rounded operations. Each hot loop is written once as an
//! `#[inline(always)]` generic function over `const FMA: bool` (see [`madd`]); a `#[target_feature]` wrapper
//! recompiles it with 256-bit vectors and fused multiply-adds, and [`avx2_fma`] picks that wrapper at run
//! time. The two builds sum in the same order; they differ only by the rounding that fusing removes, so
//! results on a CPU with FMA and one without agree to rounding, not bit for bit.
//!
//! Calling a `#[target_feature]` function is `unsafe` (the caller promises the features exist); that is the
//! only `unsafe` in this crate, each call guarded by [`avx2_fma`].

/// Whether this CPU has AVX2 and FMA (std caches the detection; one atomic load per call).
#[inline]
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `a * b + c`, fused (one rounding) when `FMA`, else two roundings. `FMA` must only be true in code compiled
/// with the `fma` target feature, where `mul_add` is one instruction (elsewhere it is a slow libm call).
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f64, b: f64, c: f64) -> f64 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}
