//! Inverted dropout: in training, each element is kept with probability 1 − p and scaled by
//! 1/(1 − p). The mask is drawn from a counter-based hash of (tape seed, call number, index),
//! so it is reproducible and the same on every device, and it is saved for backward.

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Dropout {
    pub x: Tensor,
    /// 0 or 1/(1 − p) per element.
    pub mask: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    /// Identity outside training or when `p` is 0 (nothing is recorded then).
    pub fn dropout(&mut self, x: Tensor, p: f64) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::value("dropout", format!("probability {p} is outside [0, 1)")));
        }
        if !self.is_training() || p == 0.0 {
            return Ok(x);
        }
        let (seed, stream) = (self.seed(), self.next_stream());
        let mask = self.store.alloc_act(x.shape, false)?;
        let out = self.output(x.shape, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [mp, op]) =
                    self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(mask), Slot::Val(out)])?;
                cuda::forward(&dev, xp, p, seed, stream, mp, op, x.numel())?;
            }
            Device::Cpu => {
                let ([xv], [mv, ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(mask), Slot::Val(out)])?;
                cpu::forward(xv, p, seed, stream, mv, ov);
            }
        }
        Ok(self.push(out, Op::Dropout(Dropout { x, mask, out })))
    }
}

impl Dropout {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [mp, dy], [dx]) =
                    s.cuda_io([], [Slot::Val(self.mask), Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::backward(&dev, mp, dy, dx, self.x.numel())?;
            }
            Device::Cpu => {
                let ([m, dy], [dx]) =
                    s.cpu_views([Slot::Val(self.mask), Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                crate::ops::elementwise::cpu::binary_backward(
                    crate::ops::elementwise::BinaryKind::Mul,
                    false,
                    m,
                    dy,
                    dx,
                );
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/dropout.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "dropout.cu";

    /// mask (n) = 1/(1 − p) where hash_uniform(seed, stream, i) ≥ p, else 0; out (n) = x (n) · mask.
    /// The same mask as [`super::cpu::forward`]: p is compared in f64 (passed as its bits) and the
    /// kept value is rounded to f32 here, on the host, exactly as the CPU path rounds it.
    pub fn forward(dev: &Cuda, x: u64, p: f64, seed: u64, stream: u64, mask: u64, out: u64, n: usize) -> Result<()> {
        let keep = (1.0 / (1.0 - p)) as f32;
        let (grid, block) = grid_1d(n);
        let args = [
            Arg::Ptr(x),
            Arg::Ptr(mask),
            Arg::Ptr(out),
            Arg::U64(p.to_bits()),
            Arg::F32(keep),
            Arg::U64(seed),
            Arg::U64(stream),
            Arg::U64(n as u64),
        ];
        dev.launch(FILE, "dropout_forward", grid, block, 0, &args)
    }

    /// dx (n) += dy (n) · mask (n).
    pub fn backward(dev: &Cuda, mask: u64, dy: u64, dx: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        dev.launch(
            FILE,
            "dropout_backward",
            grid,
            block,
            0,
            &[Arg::Ptr(mask), Arg::Ptr(dy), Arg::Ptr(dx), Arg::U64(n as u64)],
        )
    }
}

pub mod cpu {
    use crate::float::Float;
    use crate::ops::{PAR_CHUNK, simd};
    use crate::rng::{hash_bits, hash_key, keep_threshold};
    use rayon::prelude::*;

    /// In parallel chunks; element i's draw depends on i only, so chunking changes nothing.
    /// Kept where hash_uniform(seed, stream, i) ≥ p, compared as integers (see `keep_threshold`).
    pub fn forward<F: Float>(x: &[F], p: f64, seed: u64, stream: u64, mask: &mut [F], out: &mut [F]) {
        let keep = F::from_f64(1.0 / (1.0 - p));
        let (key, threshold) = (hash_key(seed, stream), keep_threshold(p));
        mask.par_chunks_mut(PAR_CHUNK)
            .zip(out.par_chunks_mut(PAR_CHUNK))
            .zip(x.par_chunks(PAR_CHUNK))
            .enumerate()
            .for_each(|(ci, ((mask, out), x))| {
                let first = (ci * PAR_CHUNK) as u64;
                simd(|| chunk(x, key, threshold, keep, first, mask, out))
            });
    }

    #[inline(always)]
    fn chunk<F: Float>(x: &[F], key: u64, threshold: u64, keep: F, first: u64, mask: &mut [F], out: &mut [F]) {
        for i in 0..x.len() {
            mask[i] = if hash_bits(key, first + i as u64) >= threshold { keep } else { F::ZERO };
            out[i] = x[i] * mask[i];
        }
    }
}
