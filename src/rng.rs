//! Deterministic randomness. `Rng` is a sequential generator (initialisation, shuffling);
//! `hash_uniform` is counter-based, so a dropout mask is a pure function of (seed, stream, index)
//! and the CPU and CUDA paths draw the very same mask.

/// SplitMix64's finaliser: a strong 64-bit mix.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform draw in [0, 1) for element `index` of stream `stream` under `seed`: SplitMix64's
/// output at position `index` of a sequence keyed by (seed, stream). The key is loop-invariant,
/// so a mask costs one mix per element.
#[inline]
pub fn hash_uniform(seed: u64, stream: u64, index: u64) -> f64 {
    hash_bits(hash_key(seed, stream), index) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The key of stream `stream` under `seed`, loop-invariant across a mask.
#[inline]
pub fn hash_key(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ mix64(stream.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// The 53 bits k of element `index`'s draw, which is k / 2⁵³.
#[inline(always)]
pub fn hash_bits(key: u64, index: u64) -> u64 {
    mix64(key.wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15))) >> 11
}

/// The least k with k / 2⁵³ ≥ p, for p in [0, 1): `hash_uniform(..) >= p` exactly when
/// `hash_bits(..) >= keep_threshold(p)` (p·2⁵³ is exact in f64), an integer compare that spares
/// the mask loop a u64 → f64 conversion per element.
pub fn keep_threshold(p: f64) -> u64 {
    (p * (1u64 << 53) as f64).ceil() as u64
}

/// The dropout key of token `t` of sequence `b`: the same whichever layout holds the token,
/// padded (B, T, C) or packed (N, C), so that both draw the same masks (issue 16). b < 2¹⁵ and
/// t < 2¹⁶, so that it fits the i32 of a key tensor.
#[inline(always)]
pub fn token_key(b: usize, t: usize) -> u64 {
    debug_assert!(b < 1 << 15 && t < 1 << 16);
    ((b as u64) << 16) | t as u64
}

/// The draw index of column `col` of a row of `width` columns keyed `key` (a [`token_key`]).
#[inline(always)]
pub fn row_index(key: u64, width: usize, col: usize) -> u64 {
    key.wrapping_mul(width as u64).wrapping_add(col as u64)
}

/// The draw index of attention probability (query i, key j) of head h (of nh) in sequence b,
/// in any layout: padded (B, NH, T, T) or a packed sequence's (NH, T_b, T_b) block.
#[inline(always)]
pub fn attention_index(b: usize, h: usize, i: usize, j: usize, nh: usize) -> u64 {
    ((token_key(b, i).wrapping_mul(nh as u64).wrapping_add(h as u64)) << 16) | j as u64
}

/// Attempts of [`hash_normal_pair`] before it gives up (each is rejected with probability
/// 1 − π/4, so all of them with about 10⁻⁴³).
pub const NORMAL_ATTEMPTS: u64 = 64;

/// Two independent standard normal draws, pair `pair` of the counter-based sequence keyed `key`
/// (a [`hash_key`]): Marsaglia's polar method, (v₁, v₂) uniform in the unit disc from the draws
/// at indices `pair`·128 + 2a and + 2a + 1 of attempt a, then v·√(−2 ln s / s), s = v₁² + v₂².
/// Only IEEE-exact f64 operations (no library ln), so that kernels/smart.cu draws the same bits.
#[inline]
pub fn hash_normal_pair(key: u64, pair: u64) -> (f64, f64) {
    polar_attempt(key, pair, 0).unwrap_or_else(|| hash_normal_retry(key, pair))
}

/// Attempts 1, 2, … of [`hash_normal_pair`] (a fifth of the pairs need one). Out of line, and
/// the attempt index opaque to the optimiser: it would otherwise compute all 64 attempts at once
/// (a vectorised early-exit loop), five times the cost of the whole draw.
#[cold]
#[inline(never)]
fn hash_normal_retry(key: u64, pair: u64) -> (f64, f64) {
    (1..NORMAL_ATTEMPTS).find_map(|a| polar_attempt(key, pair, std::hint::black_box(a))).unwrap_or((0.0, 0.0))
}

/// Attempt `a` of [`hash_normal_pair`]: the pair, or None when the point falls outside the disc.
#[inline(always)]
fn polar_attempt(key: u64, pair: u64, a: u64) -> Option<(f64, f64)> {
    let scale = 1.0 / (1u64 << 52) as f64;
    let at = pair.wrapping_mul(2 * NORMAL_ATTEMPTS).wrapping_add(2 * a);
    // v = 2u − 1 with u = k / 2⁵³: a multiple of 2⁻⁵² in [−1, 1), exactly.
    let v1 = hash_bits(key, at) as f64 * scale - 1.0;
    let v2 = hash_bits(key, at + 1) as f64 * scale - 1.0;
    let s = v1 * v1 + v2 * v2;
    (s > 0.0 && s < 1.0).then(|| {
        let f = (-2.0 * ln_unit(s) / s).sqrt();
        (v1 * f, v2 * f)
    })
}

/// 1/(2k + 1) for k = 1..=11, the series of atanh past its first term: decimal literals that
/// parse to the correctly rounded quotients, the same in kernels/smart.cu.
const ATANH_COEFFICIENTS: [f64; 11] = [
    0.3333333333333333,
    0.2,
    0.14285714285714285,
    0.1111111111111111,
    0.09090909090909091,
    0.07692307692307693,
    0.06666666666666667,
    0.058823529411764705,
    0.05263157894736842,
    0.047619047619047616,
    0.043478260869565216,
];

/// ln s for s in (0, 1), normal (not subnormal), from +, −, ×, ÷ alone: s = m·2ᵉ with m in
/// [√½, √2), ln m = 2·atanh t = 2(t + t³/3 + t⁵/5 + …), t = (m − 1)/(m + 1), |t| ≤ 0.172,
/// to t²³ (the next term is below 10⁻¹⁸ of the sum); e·ln 2 in two parts, so that the result is
/// within a few ulp of the true logarithm.
#[inline]
pub fn ln_unit(s: f64) -> f64 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8; // ln 2 rounded to 32 significant bits
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10; // ln 2 − LN2_HI
    let bits = s.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52)); // [1, 2)
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    // Horner's rule on 1/3 + t²/5 + … + t²⁰/23.
    let series = ATANH_COEFFICIENTS.iter().rev().fold(0.0, |acc, &c| c + t2 * acc);
    let ln_m = 2.0 * t + 2.0 * t * t2 * series;
    let e = e as f64;
    e * LN2_HI + (e * LN2_LO + ln_m)
}

/// Largest batch a key can name: sequences 0..MAX_KEYED_BATCH.
pub const MAX_KEYED_BATCH: usize = 1 << 15;
/// Longest sequence a key can name.
pub const MAX_KEYED_LEN: usize = 1 << 16;

#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln stays finite
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// An index in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_moments() {
        let mut r = Rng::new(7);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let h: f64 = (0..n).map(|i| hash_uniform(3, 1, i as u64)).sum::<f64>() / n as f64;
        assert!((h - 0.5).abs() < 0.01, "hash mean {h}");
    }

    #[test]
    fn keep_threshold_matches_the_float_compare() {
        for p in [0.0, 0.1, 0.25, 0.5, 1.0 / 3.0, 0.9, 1.0 - 1e-16] {
            let t = keep_threshold(p);
            let key = hash_key(5, 9);
            for i in 0..20_000 {
                assert_eq!(hash_uniform(5, 9, i) >= p, hash_bits(key, i) >= t, "p {p} index {i}");
            }
            // the boundary itself: k = t passes, k = t − 1 does not
            let scale = 1.0 / (1u64 << 53) as f64;
            assert!(t as f64 * scale >= p && (t == 0 || ((t - 1) as f64 * scale) < p), "p {p}");
        }
    }

    #[test]
    fn ln_unit_is_the_logarithm() {
        let mut r = Rng::new(3);
        let mut worst = 0.0f64;
        let mut xs: Vec<f64> = (0..200_000).map(|_| r.uniform().max(1e-300)).collect();
        xs.extend([
            0.5,
            0.25,
            1.0 - 1e-16,
            std::f64::consts::FRAC_1_SQRT_2,
            f64::from_bits(std::f64::consts::FRAC_1_SQRT_2.to_bits() + 1),
            2f64.powi(-104),
        ]);
        for x in xs {
            let (a, b) = (ln_unit(x), x.ln());
            worst = worst.max((a - b).abs() / b.abs().max(1e-300));
        }
        assert!(worst < 1e-15, "relative error {worst:e}");
        assert_eq!(ln_unit(0.5), -std::f64::consts::LN_2);
    }

    #[test]
    fn hash_normals_are_standard_normal() {
        let key = hash_key(9, 4);
        let n = 200_000u64;
        let xs: Vec<f64> = (0..n / 2).flat_map(|p| <[f64; 2]>::from(hash_normal_pair(key, p))).collect();
        let m = |k: i32| xs.iter().map(|x| x.powi(k)).sum::<f64>() / xs.len() as f64;
        let (mean, var, skew, kurt) = (m(1), m(2), m(3), m(4));
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "mean {mean} var {var}");
        assert!(skew.abs() < 0.03 && (kurt - 3.0).abs() < 0.06, "skew {skew} kurtosis {kurt}");
        // The two of a pair are uncorrelated, and the tail is there (P(|z| > 3) = 0.0027).
        let corr = (0..n as usize / 2).map(|p| xs[2 * p] * xs[2 * p + 1]).sum::<f64>() / (n / 2) as f64;
        let tail = xs.iter().filter(|x| x.abs() > 3.0).count() as f64 / xs.len() as f64;
        assert!(corr.abs() < 0.01 && (tail - 0.0027).abs() < 0.0006, "corr {corr} tail {tail}");
        // A pure function of (key, pair).
        assert_eq!(hash_normal_pair(key, 12_345), hash_normal_pair(key, 12_345));
        assert_ne!(hash_normal_pair(key, 1), hash_normal_pair(hash_key(9, 5), 1));
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(11);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
    }
}
