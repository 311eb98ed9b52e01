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
            Device::Cuda(_) => {
                let (dev, [mp], [sp], [pp]) = self.store.cuda_io([mask], [Slot::Val(scores)], [Slot::Val(probs)])?;
                cuda::forward(&dev, sp, mp, scale as f32, d[0], d[1] * d[2], t, pp)?;
            }
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
            Device::Cuda(_) => {
                let (dev, [], [p, dp], [ds]) =
                    s.cuda_io([], [Slot::Val(self.probs), Slot::Grad(self.probs)], [Slot::Grad(self.scores)])?;
                let shape = self.scores.shape;
                cuda::backward(&dev, p, dp, self.scale as f32, shape.rows(), shape.last(), ds)?;
            }
            Device::Cpu => {
                let ([p, dp], [ds]) =
                    s.cpu_views([Slot::Val(self.probs), Slot::Grad(self.probs)], [Slot::Grad(self.scores)])?;
                cpu::backward(p, dp, F::from_f64(self.scale), self.scores.shape.last(), ds);
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/softmax.cu; pointers are device addresses of f32 buffers, the mask's of
/// i32. One warp per row of t keys, 8 rows a block; any t.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda};
    use crate::error::{Error, Result};

    const FILE: &str = "softmax.cu";
    /// Warps (rows) per block (`ROW_WARPS` in the kernel).
    const ROW_WARPS: usize = 8;

    fn row_blocks(rows: usize) -> u32 {
        rows.div_ceil(ROW_WARPS).clamp(1, 65535) as u32
    }

    /// p (b, rows_per_batch, t) = softmax over the keys that mask (b, t) keeps of scale · s (b,
    /// rows_per_batch, t); rows_per_batch = NH · T for scores (B, NH, T, T).
    pub fn forward(
        dev: &Cuda,
        s: u64,
        mask: u64,
        scale: f32,
        b: usize,
        rows_per_batch: usize,
        t: usize,
        p: u64,
    ) -> Result<()> {
        let rows = b * rows_per_batch;
        if rows == 0 || t == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(s),
            Arg::Ptr(mask),
            Arg::Ptr(p),
            Arg::F32(scale),
            Arg::U64(rows as u64),
            Arg::U64(rows_per_batch as u64),
            Arg::U64(t as u64),
        ];
        dev.launch(FILE, "softmax_forward", (row_blocks(rows), 1, 1), (32 * ROW_WARPS as u32, 1, 1), 0, &args)
            .map_err(|e| Error::Cuda(format!("attention softmax of ({b}, {rows_per_batch}, {t}): {e}")))
    }

    /// ds (rows, t) += scale · p ⊙ (dp − Σ_j dp · p), p and dp (rows, t).
    pub fn backward(dev: &Cuda, p: u64, dp: u64, scale: f32, rows: usize, t: usize, ds: u64) -> Result<()> {
        if rows == 0 || t == 0 {
            return Ok(());
        }
        let args =
            [Arg::Ptr(p), Arg::Ptr(dp), Arg::Ptr(ds), Arg::F32(scale), Arg::U64(rows as u64), Arg::U64(t as u64)];
        dev.launch(FILE, "softmax_backward", (row_blocks(rows), 1, 1), (32 * ROW_WARPS as u32, 1, 1), 0, &args)
            .map_err(|e| Error::Cuda(format!("attention softmax backward of ({rows}, {t}): {e}")))
    }
}

pub mod cpu {
    use crate::float::Float;
    use crate::ops::{rows_per_chunk, simd};
    use rayon::prelude::*;

    /// `rows_per_batch` rows of `t` keys share batch item b's mask row. Rows run in parallel chunks.
    pub fn forward<F: Float>(s: &[F], mask: &[i32], scale: F, rows_per_batch: usize, t: usize, p: &mut [F]) {
        let chunk = rows_per_chunk(t) * t;
        p.par_chunks_mut(chunk).zip(s.par_chunks(chunk)).enumerate().for_each(|(ci, (p, s))| {
            simd(|| forward_rows(s, mask, scale, rows_per_batch, t, ci * chunk / t.max(1), p))
        });
    }

    /// Rows first_row.. of the softmax (s and p hold just those rows). The max takes `!(max >= v)`
    /// rather than `max < v` so that a NaN score becomes the max and the row comes out NaN.
    #[inline(always)]
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn forward_rows<F: Float>(
        s: &[F],
        mask: &[i32],
        scale: F,
        rows_per_batch: usize,
        t: usize,
        first_row: usize,
        p: &mut [F],
    ) {
        for (r, (sr, pr)) in s.chunks_exact(t).zip(p.chunks_exact_mut(t)).enumerate() {
            let row = first_row + r;
            let mr = &mask[(row / rows_per_batch) * t..][..t];
            if mr.iter().all(|&m| m == 0) {
                pr.fill(F::ZERO); // every key padded: nothing to attend to
                continue;
            }
            // The max over the kept keys; the loops are split so that the exponentials vectorise
            // while the sum keeps its order.
            let mut max = F::from_f64(f64::NEG_INFINITY);
            for j in 0..t {
                let v = scale * sr[j];
                if mr[j] != 0 && !(max >= v) {
                    max = v;
                }
            }
            for j in 0..t {
                pr[j] = if mr[j] != 0 { (scale * sr[j] - max).exp() } else { F::ZERO };
            }
            let sum = pr.iter().fold(F::ZERO, |a, &v| a + v);
            pr.iter_mut().for_each(|v| *v /= sum);
        }
    }

    /// ds += scale · p ⊙ (dp − Σ_j dp·p), rows in parallel chunks.
    pub fn backward<F: Float>(p: &[F], dp: &[F], scale: F, t: usize, ds: &mut [F]) {
        let chunk = rows_per_chunk(t) * t;
        ds.par_chunks_mut(chunk).zip(p.par_chunks(chunk)).zip(dp.par_chunks(chunk)).for_each(|((ds, p), dp)| {
            for ((pr, dpr), dsr) in p.chunks_exact(t).zip(dp.chunks_exact(t)).zip(ds.chunks_exact_mut(t)) {
                let dot: F = pr.iter().zip(dpr).map(|(&a, &b)| a * b).sum();
                for j in 0..t {
                    dsr[j] += scale * pr[j] * (dpr[j] - dot);
                }
            }
        });
    }
}
