//! The scalar type of the CPU path: float32 for training, float64 for gradient checks. One generic
//! implementation of every op serves both; this trait is the little each op needs of a float.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

pub trait Float:
    Copy
    + Default
    + PartialOrd
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + crate::device::Element
{
    const NAME: &'static str;
    const ZERO: Self;
    const ONE: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn ln_1p(self) -> Self;
    fn sqrt(self) -> Self;
    fn tanh(self) -> Self;
    fn erf(self) -> Self;
    /// erf(self) given `e` = e^(−self²) (f32 saves its own exponential; f64 ignores `e`).
    fn erf_with_exp(self, e: Self) -> Self;
    fn abs(self) -> Self;
    fn max(self, other: Self) -> Self;
    /// -1, 0 or 1 (0 at 0, as PyTorch's `sgn`, so that |x| has gradient 0 there).
    fn signum0(self) -> Self;
    fn from_usize(n: usize) -> Self {
        Self::from_f64(n as f64)
    }
}

/// e^x in float32 without a library call, so that loops over it vectorise: Cody–Waite range
/// reduction x = n·ln2 + r, a degree-6 polynomial for e^r (Cephes' expf), then 2^n through the
/// exponent bits. Within 2 ulp of the correctly rounded value over the float range.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(-87.336_54, 88.722_83);
    // Round to nearest by adding and subtracting 1.5·2²³ (exact for |v| < 2²²): plain SSE2
    // arithmetic that vectorises, where round() and rint() are library calls on baseline x86-64.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // ln 2 split in two for an exact product
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let er = p * r * r + r + 1.0;
    // 2^n for n in [-126, 128]: build the exponent, split in two halves so that n = 128 and the
    // subnormal end stay representable. n as an integer comes from the bits of 1.5·2²³ + n (one
    // integer subtraction, where `n as i32`, a saturating conversion, stays scalar).
    let n = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let half = n >> 1;
    let two = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    er * two(half) * two(n - half)
}

/// erf in float32, branch-free so that loops over it vectorise: for |x| < 0.8 its Taylor series
/// to x¹⁹ (truncation < 3e-9, so accurate relative to erf's small values there); beyond,
/// Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7, the form PyTorch's CPU kernels use):
/// 1 − t·poly(t)·e^(−x²) with t = 1/(1 + p|x|), sign restored.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    erf_f32_with_exp(x, exp_f32(-x * x))
}

/// [`erf_f32`] given `e` = e^(−x²), for callers that need that exponential too (the GELU
/// derivative's density).
#[inline(always)]
pub fn erf_f32_with_exp(x: f32, e: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let r = (((1.061_405_4 * t - 1.453_152) * t + 1.421_413_7) * t - 0.284_496_74) * t + 0.254_829_6;
    let far = (1.0 - r * t * e).copysign(x);
    let z = x * x;
    // 2/√π · x · Σ_{n ≤ 9} (−1)ⁿ zⁿ / (n! (2n+1)), z = x², by Horner from the highest term
    let mut s = -1.0 / 6_894_720.0;
    for c in [
        1.0 / 685_440.0,
        -1.0 / 75_600.0,
        1.0 / 9_360.0,
        -1.0 / 1_320.0,
        1.0 / 216.0,
        -1.0 / 42.0,
        0.1,
        -1.0 / 3.0,
        1.0,
    ] {
        s = s * z + c;
    }
    let near = std::f32::consts::FRAC_2_SQRT_PI * x * s;
    if a < 0.8 { near } else { far }
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $erf:path, $erf_with_exp:expr, $exp:path) => {
        impl Float for $t {
            const NAME: &'static str = $name;
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn erf_with_exp(self, e: Self) -> Self {
                $erf_with_exp(self, e)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline]
            fn signum0(self) -> Self {
                if self > 0.0 {
                    1.0
                } else if self < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
        }
    };
}

// float32 trains, so its exp and erf are the fast vectorisable forms above (to float32 accuracy);
// float64 checks gradients, so it keeps libm's correctly rounded ones.
impl_float!(f32, "f32", erf_f32, erf_f32_with_exp, exp_f32);
impl_float!(f64, "f64", libm::erf, |x: f64, _e: f64| libm::erf(x), f64::exp);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            let ulp = (want as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((got - want).abs() / ulp.max(f64::MIN_POSITIVE));
            x += 0.001_3;
        }
        assert!(worst <= 2.0, "exp_f32 is {worst} ulp off");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-200.0) >= 0.0 && exp_f32(-200.0) < 1e-37);
        assert!(exp_f32(100.0).is_finite());
    }

    #[test]
    fn fast_erf_is_within_its_bound() {
        let (mut worst_abs, mut worst_rel) = (0.0f64, 0.0f64);
        let mut x = -6.0f32;
        while x < 6.0 {
            let (got, want) = (erf_f32(x) as f64, libm::erf(x as f64));
            if x.abs() < 0.8 {
                worst_rel = worst_rel.max((got - want).abs() / want.abs().max(1e-30));
            } else {
                worst_abs = worst_abs.max((got - want).abs());
            }
            x += 0.000_7;
        }
        assert!(worst_abs <= 2.5e-7, "erf_f32 is {worst_abs:e} off beyond 0.8");
        assert!(worst_rel <= 5e-7, "erf_f32 is {worst_rel:e} off (relative) below 0.8");
        assert!((erf_f32(1e-6) as f64 - libm::erf(1e-6)).abs() < 1e-12);
        assert_eq!(erf_f32(0.0), 0.0);
    }
}
