//! GELU in the exact erf form BERT uses: `gelu(x) = x · Φ(x) = ½x(1 + erf(x/√2))`.

use super::Op;
use crate::device::Device;
use crate::error::Result;
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub struct Gelu {
    pub x: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn gelu(&mut self, x: Tensor) -> Result<Tensor> {
        let out = self.output(x.shape, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::forward(&dev, xp, op, x.numel())?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::forward(xv, ov);
            }
        }
        Ok(self.push(out, Op::Gelu(Gelu { x, out })))
    }
}

impl Gelu {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [xp, dyp], [dxp]) =
                    s.cuda_io([], [Slot::Val(self.x), Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::backward(&dev, xp, dyp, dxp, self.x.numel())?;
            }
            Device::Cpu => {
                let ([xv, dy], [dx]) = s.cpu_views([Slot::Val(self.x), Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cpu::backward(xv, dy, dx);
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/gelu.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "gelu.cu";

    /// out (n) = gelu(x (n)).
    pub fn forward(dev: &Cuda, x: u64, out: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        dev.launch(FILE, "gelu_forward", grid, block, 0, &[Arg::Ptr(x), Arg::Ptr(out), Arg::U64(n as u64)])
    }

    /// dx (n) += dy (n) · gelu'(x (n)).
    pub fn backward(dev: &Cuda, x: u64, dy: u64, dx: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        dev.launch(
            FILE,
            "gelu_backward",
            grid,
            block,
            0,
            &[Arg::Ptr(x), Arg::Ptr(dy), Arg::Ptr(dx), Arg::U64(n as u64)],
        )
    }
}

pub mod cpu {
    use crate::float::Float;
    use crate::ops::{PAR_CHUNK, simd};
    use rayon::prelude::*;

    const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
    /// 1/√(2π)
    const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

    /// out = ½x(1 + erf(x/√2)), in parallel chunks.
    pub fn forward<F: Float>(x: &[F], out: &mut [F]) {
        let (half, r2) = (F::from_f64(0.5), F::from_f64(FRAC_1_SQRT_2));
        out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(o, x)| {
            simd(|| {
                for i in 0..o.len() {
                    let v = x[i];
                    o[i] = half * v * (F::ONE + (v * r2).erf());
                }
            })
        });
    }

    /// dx += dy · (Φ(x) + x·φ(x)), in parallel chunks.
    pub fn backward<F: Float>(x: &[F], dy: &[F], dx: &mut [F]) {
        let (half, r2, c) = (F::from_f64(0.5), F::from_f64(FRAC_1_SQRT_2), F::from_f64(INV_SQRT_2PI));
        dx.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).zip(dy.par_chunks(PAR_CHUNK)).for_each(
            |((dx, x), dy)| {
                simd(|| {
                    for i in 0..dx.len() {
                        // e^(−x²/2) serves both Φ (through erf(x/√2)) and φ.
                        let (v, z) = (x[i], x[i] * r2);
                        let e = (-z * z).exp();
                        let cdf = half * (F::ONE + z.erf_with_exp(e));
                        let pdf = c * e;
                        dx[i] += dy[i] * (cdf + v * pdf);
                    }
                })
            },
        );
    }
}
