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
    fn normal_moments() {
        let mut r = Rng::new(11);
        let n = 100_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
    }
}
