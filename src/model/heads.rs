//! The computations of the task heads, generic over the float type so that the parity tests'
//! f64 runs and training share them: linear heads, the features of a pair read one side at a
//! time, and a score read from a cosine. The reference training step (see the golden README) is
//! SST: linear(5) on a sentence vector, cross-entropy; Quora: linear(1) on [u, v, |u−v|, u·v],
//! BCE with logits; STS: 5 · cos(a, b), MSE against the 0–5 score. train/task_head.rs builds every
//! head the engine trains from the same pieces.

use crate::error::Result;
use crate::float::Float;
use crate::model::bert::linear;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// A linear head, weights in Hugging Face's (OUT, IN) layout.
#[derive(Clone, Copy, Debug)]
pub struct LinearHead {
    pub w: Tensor,
    pub b: Tensor,
}

/// What a feature head's linear reads from the sides' vectors u, v (B, C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Features {
    /// [u, v] (seeds 002, 004).
    Concat,
    /// [u, v, |u−v|, u·v] (the engine's separate Quora head since the reference recipe).
    Full,
    /// u·v, elementwise (seed 002).
    Product,
    /// |u−v| (seed 002).
    Difference,
}

impl Features {
    /// The features' width for C-wide sentence vectors.
    pub fn width(self, c: usize) -> usize {
        match self {
            Features::Concat => 2 * c,
            Features::Full => 4 * c,
            Features::Product | Features::Difference => c,
        }
    }
}

/// The features `f` (B, f.width(C)) of a pair's side vectors u, v (B, C).
pub fn pair_features<F: Float>(tape: &mut Tape<F>, f: Features, u: Tensor, v: Tensor) -> Result<Tensor> {
    let absdiff = |tape: &mut Tape<F>| {
        let diff = tape.sub(u, v)?;
        tape.abs(diff)
    };
    match f {
        Features::Concat => tape.concat(&[u, v]),
        Features::Product => tape.mul(u, v),
        Features::Difference => absdiff(tape),
        Features::Full => {
            let d = absdiff(tape)?;
            let prod = tape.mul(u, v)?;
            tape.concat(&[u, v, d, prod])
        }
    }
}

/// A score on the 0–5 scale from a cosine (B): 5·cos, or (cos+1)·2.5 when `shifted`.
pub fn score_from_cosine<F: Float>(tape: &mut Tape<F>, cos: Tensor, shifted: bool) -> Result<Tensor> {
    if !shifted {
        return tape.scale(cos, 5.0);
    }
    let x = tape.scale(cos, 2.5)?;
    add_constant(tape, x, 2.5)
}

/// x + c, elementwise.
pub fn add_constant<F: Float>(tape: &mut Tape<F>, x: Tensor, c: f64) -> Result<Tensor> {
    let k = tape.constant(&vec![F::from_f64(c); x.numel()], x.dims())?;
    tape.add(x, k)
}

/// Classification logits (B, K) from sentence vectors (B, C).
pub fn classify<F: Float>(tape: &mut Tape<F>, head: &LinearHead, x: Tensor) -> Result<Tensor> {
    linear(tape, x, head.w, head.b)
}

/// Paraphrase logits (B, 1) from the vectors of each side, u and v (B, C): linear on [u, v, |u−v|, u·v].
pub fn paraphrase_logits<F: Float>(tape: &mut Tape<F>, head: &LinearHead, u: Tensor, v: Tensor) -> Result<Tensor> {
    let features = pair_features(tape, Features::Full, u, v)?; // (B, 4C)
    linear(tape, features, head.w, head.b)
}

/// Similarity scores (B) on the 0–5 scale: 5 · cos(a, b).
pub fn similarity<F: Float>(tape: &mut Tape<F>, a: Tensor, b: Tensor) -> Result<Tensor> {
    let cos = tape.cosine(a, b)?;
    score_from_cosine(tape, cos, false)
}
