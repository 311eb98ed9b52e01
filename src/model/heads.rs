//! The task heads of the reference training step (see the golden README):
//! SST: linear(5) on a sentence vector, cross-entropy; Quora: linear(1) on [u, v, |u−v|, u·v],
//! BCE with logits; STS: 5 · cos(a, b), MSE against the 0–5 score.

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

/// Classification logits (B, K) from sentence vectors (B, C).
pub fn classify<F: Float>(tape: &mut Tape<F>, head: &LinearHead, x: Tensor) -> Result<Tensor> {
    linear(tape, x, head.w, head.b)
}

/// Paraphrase logits (B, 1) from the vectors of each side, u and v (B, C): linear on [u, v, |u−v|, u·v].
pub fn paraphrase_logits<F: Float>(tape: &mut Tape<F>, head: &LinearHead, u: Tensor, v: Tensor) -> Result<Tensor> {
    let diff = tape.sub(u, v)?;
    let absdiff = tape.abs(diff)?;
    let prod = tape.mul(u, v)?;
    let features = tape.concat(&[u, v, absdiff, prod])?; // (B, 4C)
    linear(tape, features, head.w, head.b)
}

/// Similarity scores (B) on the 0–5 scale: 5 · cos(a, b).
pub fn similarity<F: Float>(tape: &mut Tape<F>, a: Tensor, b: Tensor) -> Result<Tensor> {
    let cos = tape.cosine(a, b)?;
    tape.scale(cos, 5.0)
}
