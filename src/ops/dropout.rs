//! Inverted dropout: in training, each element is kept with probability 1 − p and scaled by
//! 1/(1 − p). The mask is drawn from a counter-based hash of (tape seed, call number, index), so
//! it is reproducible and the same on every device, and it is never stored: the backward pass
//! draws it again (a hash per element costs less than writing and reading a mask).

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
    pub out: Tensor,
    /// The mask's draw: probability, tape seed and stream.
    pub p: f64,
    pub seed: u64,
    pub stream: u64,
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
        let out = self.output(x.shape, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::forward(&dev, xp, p, seed, stream, op, x.numel())?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::forward(xv, p, seed, stream, ov);
            }
        }
        Ok(self.push(out, Op::Dropout(Dropout { x, out, p, seed, stream })))
    }
}

impl Dropout {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        let (p, seed, stream) = (self.p, self.seed, self.stream);
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [dy], [dx]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::backward(&dev, dy, p, seed, stream, dx, self.x.numel())?;
            }
            Device::Cpu => {
                let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cpu::backward(dy, p, seed, stream, dx);
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

    /// The arguments after the buffers: p is compared in f64 (passed as its bits) and the kept
    /// value is rounded to f32 here, on the host, exactly as the CPU path rounds it.
    fn draw(p: f64, seed: u64, stream: u64, n: usize) -> [Arg; 5] {
        [
            Arg::U64(p.to_bits()),
            Arg::F32((1.0 / (1.0 - p)) as f32),
            Arg::U64(seed),
            Arg::U64(stream),
            Arg::U64(n as u64),
        ]
    }

    /// out (n) = x (n) · 1/(1 − p) where hash_uniform(seed, stream, i) ≥ p, else 0: the mask of
    /// [`super::cpu::forward`].
    pub fn forward(dev: &Cuda, x: u64, p: f64, seed: u64, stream: u64, out: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let mut args = vec![Arg::Ptr(x), Arg::Ptr(out)];
        args.extend(draw(p, seed, stream, n));
        dev.launch(FILE, "dropout_forward", grid, block, 0, &args)
    }

    /// dx (n) += dy (n) · the same mask, drawn again.
    pub fn backward(dev: &Cuda, dy: u64, p: f64, seed: u64, stream: u64, dx: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let mut args = vec![Arg::Ptr(dy), Arg::Ptr(dx)];
        args.extend(draw(p, seed, stream, n));
        dev.launch(FILE, "dropout_backward", grid, block, 0, &args)
    }
}

pub mod cpu {
    use crate::float::Float;
    use crate::ops::{PAR_CHUNK, simd};
    use crate::rng::{hash_bits, hash_key, keep_threshold};
    use rayon::prelude::*;

    /// The mask's value at element `index`: 1/(1 − p) where hash_uniform(seed, stream, index) ≥ p,
    /// else 0, compared as integers (see `keep_threshold`).
    #[derive(Clone, Copy)]
    struct Mask<F> {
        key: u64,
        threshold: u64,
        keep: F,
    }

    impl<F: Float> Mask<F> {
        fn new(p: f64, seed: u64, stream: u64) -> Self {
            Mask { key: hash_key(seed, stream), threshold: keep_threshold(p), keep: F::from_f64(1.0 / (1.0 - p)) }
        }
        #[inline(always)]
        fn at(self, index: u64) -> F {
            if hash_bits(self.key, index) >= self.threshold { self.keep } else { F::ZERO }
        }
    }

    /// out = x · mask, in parallel chunks; element i's draw depends on i only, so chunking
    /// changes nothing.
    pub fn forward<F: Float>(x: &[F], p: f64, seed: u64, stream: u64, out: &mut [F]) {
        let mask = Mask::new(p, seed, stream);
        out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).enumerate().for_each(|(ci, (out, x))| {
            let first = (ci * PAR_CHUNK) as u64;
            simd(|| {
                for i in 0..x.len() {
                    out[i] = x[i] * mask.at(first + i as u64);
                }
            })
        });
    }

    /// dx += dy · mask, the forward's mask drawn again.
    pub fn backward<F: Float>(dy: &[F], p: f64, seed: u64, stream: u64, dx: &mut [F]) {
        let mask = Mask::new(p, seed, stream);
        dx.par_chunks_mut(PAR_CHUNK).zip(dy.par_chunks(PAR_CHUNK)).enumerate().for_each(|(ci, (dx, dy))| {
            let first = (ci * PAR_CHUNK) as u64;
            simd(|| {
                for i in 0..dy.len() {
                    dx[i] += dy[i] * mask.at(first + i as u64);
                }
            })
        });
    }
}
