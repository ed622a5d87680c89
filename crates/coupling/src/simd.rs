//! Run-time dispatch of the hot loops to AVX2 + FMA code where the CPU has them.
//!
//! The workspace builds for plain x86-64 (SSE2), where the Sinkhorn and auction loops run two `f64` (four
//! `f32`) lanes at a time and `a * b + c` is two rounded operations. Each hot loop is written once as an
//! `#[inline(always)]` generic function over `const FMA: bool` (see [`madd`]); a `#[target_feature]` wrapper
//! recompiles it with 256-bit vectors and fused multiply-adds, and [`avx2_fma`] picks that wrapper at run
//! time. The two builds sum in the same order; they differ only by the rounding that fusing removes, so
//! results on a CPU with FMA and one without agree to rounding, not bit for bit.
//!
//! Where the CPU has AVX-512F ([`avx512`]) the same loops are compiled once more for 512-bit vectors. The
//! shortest-path step of the JV solver is written with explicit AVX2 and AVX-512 intrinsics instead, because
//! its masked updates of two arrays did not vectorise from plain code; its unaligned loads and stores are
//! `unsafe`, each in-bounds by an assertion at the top of its function.
//!
//! Calling a `#[target_feature]` function is `unsafe` (the caller promises the features exist); every such
//! call is guarded by [`avx2_fma`] or [`avx512`], and those calls and the intrinsics' loads and stores are the
//! only `unsafe` in this crate.

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

/// Whether this CPU has AVX-512F besides AVX2 and FMA.
#[inline]
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx2_fma() && std::is_x86_feature_detected!("avx512f")
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
