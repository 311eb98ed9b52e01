//! Every op of a BERT fine-tune, one file per layer. Each file holds the op's record (a variant of
//! [`Op`]), its forward as a method on [`Tape`](crate::tape::Tape) (check shapes, allocate the
//! output, dispatch to the device, record), its backward, and its CPU reference in plain loops
//! (`cpu` submodule), which is the specification its CUDA kernel is tested against.

pub mod concat;
pub mod cosine;
pub mod dropout;
pub mod elementwise;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod permute;
pub mod pooling;
pub mod softmax;

use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::Store;
use crate::tensor::Tensor;

/// One recorded op: the tensors it read and wrote, and what its backward needs besides.
#[derive(Clone, Debug)]
pub enum Op {
    Matmul(matmul::Matmul),
    Linear(linear::Linear),
    Binary(elementwise::Binary),
    Unary(elementwise::Unary),
    BiasAdd(elementwise::BiasAdd),
    Scale(elementwise::Scale),
    Sum(elementwise::Sum),
    Gelu(gelu::Gelu),
    LayerNorm(layernorm::LayerNorm),
    Softmax(softmax::AttentionSoftmax),
    Dropout(dropout::Dropout),
    Embedding(embedding::Embedding),
    MeanPool(pooling::MeanPool),
    FirstToken(pooling::FirstToken),
    Cosine(cosine::Cosine),
    Concat(concat::Concat),
    SplitHeads(permute::SplitHeads),
    MergeHeads(permute::MergeHeads),
    CrossEntropy(loss::CrossEntropy),
    BceWithLogits(loss::BceWithLogits),
    Mse(loss::Mse),
}

impl Op {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        match self {
            Op::Matmul(o) => o.backward(s),
            Op::Linear(o) => o.backward(s),
            Op::Binary(o) => o.backward(s),
            Op::Unary(o) => o.backward(s),
            Op::BiasAdd(o) => o.backward(s),
            Op::Scale(o) => o.backward(s),
            Op::Sum(o) => o.backward(s),
            Op::Gelu(o) => o.backward(s),
            Op::LayerNorm(o) => o.backward(s),
            Op::Softmax(o) => o.backward(s),
            Op::Dropout(o) => o.backward(s),
            Op::Embedding(o) => o.backward(s),
            Op::MeanPool(o) => o.backward(s),
            Op::FirstToken(o) => o.backward(s),
            Op::Cosine(o) => o.backward(s),
            Op::Concat(o) => o.backward(s),
            Op::SplitHeads(o) => o.backward(s),
            Op::MergeHeads(o) => o.backward(s),
            Op::CrossEntropy(o) => o.backward(s),
            Op::BceWithLogits(o) => o.backward(s),
            Op::Mse(o) => o.backward(s),
        }
    }
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
