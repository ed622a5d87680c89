//! A branch-free `exp` that the compiler vectorises (SSE2 on plain x86-64), for the Sinkhorn kernels.
//!
//! `exp(x) = 2^k exp(r)` with `k = round(x / ln 2)` and `r = x - k ln 2` (Cody-Waite split of `ln 2`),
//! `|r| <= ln(2)/2`; `exp(r)` by its Taylor polynomial of degree 12, whose truncation error is below
//! `(ln 2 / 2)^13 / 13! < 2e-16` relative. `2^k` is built from the exponent bits. Rounding to an integer uses
//! the `1.5 * 2^52` shift, so no float-to-int instruction is needed. Inputs below `-708` give 0 (the true value
//! is below the smallest normal number), inputs above `709` are clamped to `exp(709)`.

const LOG2_E: f64 = std::f64::consts::LOG2_E;
// ln 2 split so that `k * LN2_HI` is exact for |k| < 2^11 (fdlibm's constants).
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const SHIFT: f64 = 6_755_399_441_055_744.0;

use crate::simd::madd;

/// Clamps `x` to `[-708, 709]` and splits it as `x = k ln 2 + r`; returns `(r, 2^k)`.
#[inline(always)]
fn reduce<const FMA: bool>(x: f64) -> (f64, f64) {
    let xc = if x > 709.0 { 709.0 } else { x };
    let xc = if xc < -708.0 { -708.0 } else { xc };
    let t = madd::<FMA>(xc, LOG2_E, SHIFT);
    let kf = t - SHIFT;
    let k = (t.to_bits() as i64).wrapping_sub(SHIFT.to_bits() as i64);
    let r = madd::<FMA>(-kf, LN2_LO, madd::<FMA>(-kf, LN2_HI, xc));
    (r, f64::from_bits(((k + 1023) as u64) << 52))
}

/// `exp(x)` to about 1 ulp for `x` in `[-708, 709]`; 0 below.
#[inline(always)]
pub(crate) fn exp(x: f64) -> f64 {
    exp_generic::<false>(x)
}

/// [`exp`], with fused multiply-adds when `FMA` (only in code compiled with the `fma` target feature).
#[inline(always)]
pub(crate) fn exp_generic<const FMA: bool>(x: f64) -> f64 {
    let (r, scale) = reduce::<FMA>(x);
    let mut p = 1.0 / 479_001_600.0;
    for coefficient in [
        1.0 / 39_916_800.0,
        1.0 / 3_628_800.0,
        1.0 / 362_880.0,
        1.0 / 40_320.0,
        1.0 / 5_040.0,
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = madd::<FMA>(p, r, coefficient);
    }
    if x < -708.0 { 0.0 } else { p * scale }
}

/// `exp(x)` to a relative `6e-9` (plus rounding) for `x` in `[-708, 709]`, 0 below: enough for a result
/// stored as `f32`.
#[inline(always)]
pub(crate) fn exp_for_f32<const FMA: bool>(x: f64) -> f64 {
    let (r, scale) = reduce::<FMA>(x);
    let mut p = 1.0 / 5_040.0;
    for coefficient in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<FMA>(p, r, coefficient);
    }
    if x < -708.0 { 0.0 } else { p * scale }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_std_exp() {
        let mut worst: f64 = 0.0;
        let mut x = -708.0;
        while x < 709.0 {
            let rel = (super::exp(x) - x.exp()).abs() / x.exp();
            worst = worst.max(rel);
            x += 0.0137;
        }
        assert!(worst < 4e-16, "worst relative error {worst}");
        assert_eq!(super::exp(-800.0), 0.0);
        assert_eq!(super::exp(0.0), 1.0);
    }

    #[test]
    fn exp_for_f32_is_within_a_tenth_of_an_f32_ulp() {
        for fused in [false, true] {
            let mut worst: f64 = 0.0;
            let mut x = -708.0;
            while x < 709.0 {
                let approx = if fused {
                    super::exp_for_f32::<true>(x)
                } else {
                    super::exp_for_f32::<false>(x)
                };
                worst = worst.max((approx - x.exp()).abs() / x.exp());
                x += 0.0137;
            }
            assert!(worst < 1e-8, "fused {fused}: worst relative error {worst}");
            assert_eq!(super::exp_for_f32::<false>(-800.0), 0.0);
        }
    }
}
