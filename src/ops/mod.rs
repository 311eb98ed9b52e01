//! Every op of a BERT fine-tune, one file per layer. Each file holds the op's record (a variant of
//! [`Op`]), its forward as a method on [`Tape`](crate::tape::Tape) (check shapes, allocate the
//! output, dispatch to the device, record), its backward, and its CPU reference in plain loops
//! (`cpu` submodule), which is the specification its CUDA kernel is tested against.

pub mod concat;
pub mod cosine;
pub mod divergence;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gather;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod lora_linear;
pub mod loss;
pub mod matmul;
pub mod permute;
pub mod pooling;
pub mod recurrent;
pub mod softmax;
pub mod varlen_attention;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::Store;
use crate::tensor::Tensor;

/// Declares [`Op`] from one line per op kind, and its two dispatches (backward, name), so that a
/// new op adds one line here.
macro_rules! ops {
    ($($(#[$doc:meta])* $kind:ident($record:ty),)*) => {
        /// One recorded op: the tensors it read and wrote, and what its backward needs besides.
        #[derive(Clone, Debug)]
        pub enum Op {
            $($(#[$doc])* $kind($record),)*
        }

        impl Op {
            pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
                match self {
                    $(Op::$kind(o) => o.backward(s),)*
                }
            }

            /// The op's kind, e.g. "Linear" (profiles are tallied by it).
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Op::$kind(_) => stringify!($kind),)*
                }
            }
        }
    };
}

ops! {
    Matmul(matmul::Matmul),
    Linear(linear::Linear),
    LoraLinear(lora_linear::LoraLinear),
    Binary(elementwise::Binary),
    Unary(elementwise::Unary),
    BiasAdd(elementwise::BiasAdd),
    Scale(elementwise::Scale),
    Sum(elementwise::Sum),
    Gelu(gelu::Gelu),
    LayerNorm(layernorm::LayerNorm),
    Softmax(softmax::AttentionSoftmax),
    VarlenAttention(varlen_attention::VarlenAttention),
    Dropout(dropout::Dropout),
    /// Boxed: eleven tensors (explicit positions and their CUDA groups) would size every op.
    Embedding(Box<embedding::Embedding>),
    MeanPool(pooling::MeanPool),
    FirstToken(pooling::FirstToken),
    PackedPool(pooling::PackedPool),
    Cosine(cosine::Cosine),
    GatherRows(gather::GatherRows),
    Concat(concat::Concat),
    Columns(concat::Columns),
    SplitHeads(permute::SplitHeads),
    MergeHeads(permute::MergeHeads),
    CrossEntropy(loss::CrossEntropy),
    BceWithLogits(loss::BceWithLogits),
    Mse(loss::Mse),
    SymmetricKl(divergence::SymmetricKl),
    /// Boxed: nine tensors (the spans' among them) would size every op.
    Recurrent(Box<recurrent::Recurrent>),
}

/// Errors unless `a` and `b` have the same shape.
pub(crate) fn same_shape(op: &'static str, a: Tensor, b: Tensor) -> Result<()> {
    if a.shape != b.shape {
        return Err(Error::shape(op, format!("shapes {} and {} differ", a.shape, b.shape)));
    }
    Ok(())
}

/// Errors unless `t` has rank `rank`; `what` names the operand.
pub(crate) fn expect_rank(op: &'static str, what: &str, t: Tensor, rank: usize) -> Result<()> {
    if t.shape.rank() != rank {
        return Err(Error::shape(op, format!("{what} must have rank {rank}, got shape {}", t.shape)));
    }
    Ok(())
}

/// Elements per parallel chunk in the CPU references' elementwise loops: large enough that each
/// chunk's work dwarfs rayon's scheduling, small enough to spread a layer's tensor over the cores.
pub(crate) const PAR_CHUNK: usize = 1 << 15;

/// Rows of `row_len` elements per parallel chunk (at least one).
pub(crate) fn rows_per_chunk(row_len: usize) -> usize {
    (PAR_CHUNK / row_len.max(1)).max(1)
}

/// Runs `f`, a loop of the CPU path's, compiled a second time for AVX-512 when the CPU has it:
/// the crate targets x86-64-v3 (AVX2), where loops vectorise 8 floats wide and 64-bit integer
/// multiplies (the dropout hash) not at all. `f` must be inlinable (`#[inline(always)]` on what
/// it calls). Neither build contracts a·b + c into an FMA, so both give the same bits.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
        fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if std::arch::is_x86_feature_detected!("avx512dq") && std::arch::is_x86_feature_detected!("avx512vl") {
            // SAFETY: the CPU has the features `avx512` is compiled for.
            return unsafe { avx512(f) };
        }
    }
    f()
}

#[cfg(test)]
mod simd_tests {
    //! The loops run through [`simd`] (AVX-512 where the CPU has it) give the same bits as plain
    //! loops of the same formulas compiled for the crate's baseline, and dropout keeps exactly
    //! the elements whose `hash_uniform` draw is ≥ p. (`Float::exp`, not f32's inherent `exp`,
    //! which is libm's.)
    use crate::float::Float;
    use crate::rng::{Rng, hash_uniform};

    fn inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
        let mut rng = Rng::new(17);
        // Wide enough to cover erf's two branches, exp's clamping and a NaN.
        let mut x: Vec<f32> = (0..n).map(|_| (rng.normal() * 4.0) as f32).collect();
        x[5] = 200.0;
        x[6] = -200.0;
        x[7] = f32::NAN;
        (x, (0..n).map(|_| rng.normal() as f32).collect())
    }

    fn same_bits(a: &[f32], b: &[f32], what: &str) {
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert_eq!(p.to_bits(), q.to_bits(), "{what}: element {i}: {p} vs {q}");
        }
    }

    #[test]
    fn gelu_matches_the_plain_loop() {
        let n = 3 * super::PAR_CHUNK + 123;
        let (x, dy) = inputs(n);
        let (half, r2, c) = (0.5f32, std::f32::consts::FRAC_1_SQRT_2, 0.398_942_3f32);
        let mut out = vec![0.0; n];
        super::gelu::cpu::forward(&x, &mut out);
        let want: Vec<f32> = x.iter().map(|&v| half * v * (1.0 + Float::erf(v * r2))).collect();
        same_bits(&out, &want, "gelu forward");
        let mut dx = vec![0.25; n];
        super::gelu::cpu::backward(&x, &dy, &mut dx);
        let want: Vec<f32> = (0..n)
            .map(|i| {
                let (v, z) = (x[i], x[i] * r2);
                let e = Float::exp(-z * z);
                0.25 + dy[i] * (half * (1.0 + z.erf_with_exp(e)) + v * (c * e))
            })
            .collect();
        same_bits(&dx, &want, "gelu backward");
    }

    #[test]
    fn dropout_keeps_what_hash_uniform_keeps() {
        let n = 2 * super::PAR_CHUNK + 77;
        let (x, dy) = inputs(n);
        for p in [0.1, 0.5] {
            let keep = (1.0 / (1.0 - p)) as f32;
            let mask: Vec<f32> = (0..n).map(|i| if hash_uniform(11, 3, i as u64) >= p { keep } else { 0.0 }).collect();
            let mut out = vec![0.0; n];
            super::dropout::cpu::forward(&x, p, 11, 3, &mut out);
            let want: Vec<f32> = (0..n).map(|i| x[i] * mask[i]).collect();
            same_bits(&out, &want, "dropout output");
            // the backward pass draws the same mask again
            let mut dx = vec![0.5; n];
            super::dropout::cpu::backward(&dy, p, 11, 3, &mut dx);
            let want: Vec<f32> = (0..n).map(|i| 0.5 + dy[i] * mask[i]).collect();
            same_bits(&dx, &want, "dropout gradient");
        }
    }

    #[test]
    fn softmax_matches_the_plain_loop() {
        let (t, heads) = (32, 4);
        let batch = 3;
        let (s, _) = inputs(batch * heads * t * t);
        let s: Vec<f32> = s.into_iter().map(|v| if v.is_nan() { 0.5 } else { v }).collect();
        // batch 0 keeps every key, batch 1 all but the last five, batch 2 none
        let mask: Vec<i32> =
            (0..batch).flat_map(|b| (0..t).map(move |j| (b == 0 || (b == 1 && j < t - 5)) as i32)).collect();
        let mut p = vec![0.0; s.len()];
        super::softmax::cpu::forward(&s, &mask, 0.125, heads * t, t, &mut p);
        for (r, (sr, pr)) in s.chunks(t).zip(p.chunks(t)).enumerate() {
            let mr = &mask[(r / (heads * t)) * t..][..t];
            let kept: Vec<usize> = (0..t).filter(|&j| mr[j] != 0).collect();
            let max = kept.iter().map(|&j| 0.125 * sr[j]).fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = (0..t).map(|j| if mr[j] != 0 { Float::exp(0.125 * sr[j] - max) } else { 0.0 }).collect();
            let sum = e.iter().fold(0.0f32, |a, &v| a + v);
            let want: Vec<f32> = e.iter().map(|&v| if kept.is_empty() { 0.0 } else { v / sum }).collect();
            same_bits(pr, &want, &format!("softmax row {r}"));
        }
    }
}
