//! Layer normalisation over the last dimension, saving each row's mean and 1/σ for backward.

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// `out (…, C) = (x − mean) · rstd · gamma + beta`, with mean and rstd (rows) saved.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub x: Tensor,
    pub gamma: Tensor,
    pub beta: Tensor,
    pub mean: Tensor,
    pub rstd: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn layernorm(&mut self, x: Tensor, gamma: Tensor, beta: Tensor, eps: f64) -> Result<Tensor> {
        let c = x.shape.last();
        if gamma.dims() != [c] || beta.dims() != [c] {
            return Err(Error::shape(
                "layernorm",
                format!("gamma {} and beta {} must both be [{c}] for x {}", gamma.shape, beta.shape, x.shape),
            ));
        }
        let rows = Shape::new(&[x.shape.rows()])?;
        let mean = self.store.alloc_act(rows, false)?;
        let rstd = self.store.alloc_act(rows, false)?;
        let out = self.output(x.shape, &[x, gamma, beta])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("layernorm")),
            Device::Cpu => {
                let ([xv, g, b], [o, m, r]) = self.store.cpu_views(
                    [Slot::Val(x), Slot::Val(gamma), Slot::Val(beta)],
                    [Slot::Val(out), Slot::Val(mean), Slot::Val(rstd)],
                )?;
                cpu::forward(xv, g, b, F::from_f64(eps), o, m, r);
            }
        }
        Ok(self.push(out, Op::LayerNorm(LayerNorm { x, gamma, beta, mean, rstd, out })))
    }
}

impl LayerNorm {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let saved = [
            Slot::Val(self.x),
            Slot::Val(self.gamma),
            Slot::Val(self.mean),
            Slot::Val(self.rstd),
            Slot::Grad(self.out),
        ];
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("layernorm")),
            Device::Cpu => {
                if self.x.requires_grad {
                    let ([x, g, m, r, dy], [dx]) = s.cpu_views(saved, [Slot::Grad(self.x)])?;
                    cpu::backward_x(x, g, m, r, dy, dx);
                }
                if self.gamma.requires_grad {
                    let ([x, _, m, r, dy], [dg]) = s.cpu_views(saved, [Slot::Grad(self.gamma)])?;
                    cpu::backward_gamma(x, m, r, dy, dg);
                }
                if self.beta.requires_grad {
                    let ([dy], [db]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.beta)])?;
                    crate::ops::elementwise::cpu::bias_backward(dy, db);
                }
            }
        }
        Ok(())
    }
}

pub mod cpu {
    use crate::float::Float;

    pub fn forward<F: Float>(x: &[F], g: &[F], b: &[F], eps: F, out: &mut [F], mean: &mut [F], rstd: &mut [F]) {
        let c = g.len();
        let n = F::from_usize(c);
        for (row, (xr, or)) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)).enumerate() {
            let m = xr.iter().copied().sum::<F>() / n;
            let var = xr.iter().map(|&v| (v - m) * (v - m)).sum::<F>() / n;
            let r = F::ONE / (var + eps).sqrt();
            for j in 0..c {
                or[j] = (xr[j] - m) * r * g[j] + b[j];
            }
            mean[row] = m;
            rstd[row] = r;
        }
    }

    /// dx += rstd · (dn − mean(dn) − n̂ · mean(dn · n̂)), with dn = dy · gamma, n̂ the normalised x.
    pub fn backward_x<F: Float>(x: &[F], g: &[F], mean: &[F], rstd: &[F], dy: &[F], dx: &mut [F]) {
        let c = g.len();
        let n = F::from_usize(c);
        for row in 0..mean.len() {
            let (xr, dyr) = (&x[row * c..(row + 1) * c], &dy[row * c..(row + 1) * c]);
            let (m, r) = (mean[row], rstd[row]);
            let (mut sum_dn, mut sum_dn_n) = (F::ZERO, F::ZERO);
            for j in 0..c {
                let dn = dyr[j] * g[j];
                sum_dn += dn;
                sum_dn_n += dn * (xr[j] - m) * r;
            }
            let (mdn, mdnn) = (sum_dn / n, sum_dn_n / n);
            let dxr = &mut dx[row * c..(row + 1) * c];
            for j in 0..c {
                let norm = (xr[j] - m) * r;
                dxr[j] += r * (dyr[j] * g[j] - mdn - norm * mdnn);
            }
        }
    }

    /// dgamma += Σ_rows dy · n̂.
    pub fn backward_gamma<F: Float>(x: &[F], mean: &[F], rstd: &[F], dy: &[F], dg: &mut [F]) {
        let c = dg.len();
        for row in 0..mean.len() {
            for j in 0..c {
                let i = row * c + j;
                dg[j] += dy[i] * (x[i] - mean[row]) * rstd[row];
            }
        }
    }
}
