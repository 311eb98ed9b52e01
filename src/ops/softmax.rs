//! The attention softmax: `p = softmax_j(scale · s_ij)` over keys that the padding mask keeps;
//! padded keys get probability exactly 0 (as Hugging Face's additive finfo.min mask gives).

use super::{Op, expect_rank};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::Tensor;

/// scores (B, NH, T, T), mask (B, T) of 0/1 over keys → probs (B, NH, T, T), saved for backward.
#[derive(Clone, Debug)]
pub struct AttentionSoftmax {
    pub scores: Tensor,
    pub probs: Tensor,
    pub scale: f64,
}

impl<F: Float> Tape<F> {
    pub fn attention_softmax(&mut self, scores: Tensor, mask: Tensor, scale: f64) -> Result<Tensor> {
        expect_rank("attention_softmax", "scores", scores, 4)?;
        let d = scores.dims();
        let (b, t) = (d[0], d[3]);
        if mask.dims() != [b, t] {
            return Err(Error::shape(
                "attention_softmax",
                format!("mask {} does not fit scores {} (needs [{b}, {t}])", mask.shape, scores.shape),
            ));
        }
        let probs = self.output(scores.shape, &[scores])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("softmax")),
            Device::Cpu => {
                let ([m], [s], [p]) = self.store.cpu_io([mask], [Slot::Val(scores)], [Slot::Val(probs)])?;
                cpu::forward(s, m, F::from_f64(scale), d[1] * d[2], t, p);
            }
        }
        Ok(self.push(probs, Op::Softmax(AttentionSoftmax { scores, probs, scale })))
    }
}

impl AttentionSoftmax {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.scores.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("softmax")),
            Device::Cpu => {
                let ([p, dp], [ds]) =
                    s.cpu_views([Slot::Val(self.probs), Slot::Grad(self.probs)], [Slot::Grad(self.scores)])?;
                cpu::backward(p, dp, F::from_f64(self.scale), self.scores.shape.last(), ds);
            }
        }
        Ok(())
    }
}

pub mod cpu {
    use crate::float::Float;

    /// `rows_per_batch` rows of `t` keys share batch item b's mask row.
    pub fn forward<F: Float>(s: &[F], mask: &[i32], scale: F, rows_per_batch: usize, t: usize, p: &mut [F]) {
        for (row, (sr, pr)) in s.chunks_exact(t).zip(p.chunks_exact_mut(t)).enumerate() {
            let mr = &mask[(row / rows_per_batch) * t..][..t];
            let mut max = None::<F>;
            for j in 0..t {
                if mr[j] != 0 {
                    let v = scale * sr[j];
                    max = Some(match max {
                        Some(m) if m >= v => m,
                        _ => v,
                    });
                }
            }
            let Some(max) = max else {
                pr.fill(F::ZERO); // every key padded: nothing to attend to
                continue;
            };
            let mut sum = F::ZERO;
            for j in 0..t {
                pr[j] = if mr[j] != 0 { (scale * sr[j] - max).exp() } else { F::ZERO };
                sum += pr[j];
            }
            pr.iter_mut().for_each(|v| *v /= sum);
        }
    }

    /// ds += scale · p ⊙ (dp − Σ_j dp·p).
    pub fn backward<F: Float>(p: &[F], dp: &[F], scale: F, t: usize, ds: &mut [F]) {
        for ((pr, dpr), dsr) in p.chunks_exact(t).zip(dp.chunks_exact(t)).zip(ds.chunks_exact_mut(t)) {
            let dot: F = pr.iter().zip(dpr).map(|(&a, &b)| a * b).sum();
            for j in 0..t {
                dsr[j] += scale * pr[j] * (dpr[j] - dot);
            }
        }
    }
}
