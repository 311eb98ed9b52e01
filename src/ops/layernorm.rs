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
            Device::Cuda(_) => {
                let (dev, [], [xp, gp, bp], [op, mp, rp]) = self.store.cuda_io(
                    [],
                    [Slot::Val(x), Slot::Val(gamma), Slot::Val(beta)],
                    [Slot::Val(out), Slot::Val(mean), Slot::Val(rstd)],
                )?;
                cuda::forward(&dev, xp, gp, bp, eps as f32, op, mp, rp, x.shape.rows(), c)?;
            }
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
            Device::Cuda(_) => {
                let (rows, c) = (self.x.shape.rows(), self.x.shape.last());
                if self.x.requires_grad {
                    let (dev, [], [x, g, m, r, dy], [dx]) = s.cuda_io([], saved, [Slot::Grad(self.x)])?;
                    cuda::backward_x(&dev, x, g, m, r, dy, dx, rows, c)?;
                }
                let params = [Slot::Val(self.x), Slot::Val(self.mean), Slot::Val(self.rstd), Slot::Grad(self.out)];
                match (self.gamma.requires_grad, self.beta.requires_grad) {
                    (true, true) => {
                        let (dev, [], [x, m, r, dy], [dg, db]) =
                            s.cuda_io([], params, [Slot::Grad(self.gamma), Slot::Grad(self.beta)])?;
                        cuda::backward_params(&dev, x, m, r, dy, dg, db, rows, c)?;
                    }
                    (true, false) => {
                        let (dev, [], [x, m, r, dy], [dg]) = s.cuda_io([], params, [Slot::Grad(self.gamma)])?;
                        cuda::backward_params(&dev, x, m, r, dy, dg, 0, rows, c)?;
                    }
                    (false, true) => {
                        let (dev, [], [dy], [db]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.beta)])?;
                        crate::ops::elementwise::cuda::bias_backward(&dev, dy, db, rows, c)?;
                    }
                    (false, false) => {}
                }
            }
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

/// Launchers of kernels/layernorm.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda};
    use crate::error::{Error, Result};

    const FILE: &str = "layernorm.cu";
    /// Warps (rows) per block of the row kernels (`ROW_WARPS` in the kernel).
    const ROW_WARPS: usize = 8;
    /// Rows of threads per block of the parameter-gradient kernel (`COL_ROW_LANES` in the kernel).
    const COL_ROW_LANES: u32 = 16;

    /// Blocks of the one-warp-per-row kernels: enough for every row, at most 65535 (warps then
    /// stride over the rows).
    fn row_blocks(rows: usize) -> u32 {
        rows.div_ceil(ROW_WARPS).clamp(1, 65535) as u32
    }

    /// out (rows, c) = (x − mean) · rstd · gamma (c) + beta (c), with mean (rows) and rstd (rows)
    /// saved. One warp per row; any c ≥ 1.
    pub fn forward(
        dev: &Cuda,
        x: u64,
        gamma: u64,
        beta: u64,
        eps: f32,
        out: u64,
        mean: u64,
        rstd: u64,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        if rows == 0 {
            return Ok(());
        }
        if c == 0 {
            return Err(Error::Cuda(format!("layernorm_forward: rows of 0 elements (x ({rows}, 0))")));
        }
        let args = [
            Arg::Ptr(x),
            Arg::Ptr(gamma),
            Arg::Ptr(beta),
            Arg::Ptr(out),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::F32(eps),
            Arg::U64(rows as u64),
            Arg::U64(c as u64),
        ];
        dev.launch(FILE, "layernorm_forward", (row_blocks(rows), 1, 1), (32 * ROW_WARPS as u32, 1, 1), 0, &args)
    }

    /// dx (rows, c) += rstd · (dn − mean(dn) − n̂ · mean(dn · n̂)), dn = dy · gamma (c),
    /// n̂ = (x − mean) · rstd. One warp per row.
    pub fn backward_x(
        dev: &Cuda,
        x: u64,
        gamma: u64,
        mean: u64,
        rstd: u64,
        dy: u64,
        dx: u64,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        if rows == 0 || c == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(x),
            Arg::Ptr(gamma),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::Ptr(dy),
            Arg::Ptr(dx),
            Arg::U64(rows as u64),
            Arg::U64(c as u64),
        ];
        dev.launch(FILE, "layernorm_backward_x", (row_blocks(rows), 1, 1), (32 * ROW_WARPS as u32, 1, 1), 0, &args)
    }

    /// dgamma (c) += Σ_rows dy · n̂ and dbeta (c) += Σ_rows dy, over x, dy (rows, c); either
    /// pointer may be 0 (that parameter takes no gradient). Fixed summation order, no atomics:
    /// one block of 32 × 16 threads per 32 columns, each looping over all rows.
    pub fn backward_params(
        dev: &Cuda,
        x: u64,
        mean: u64,
        rstd: u64,
        dy: u64,
        dgamma: u64,
        dbeta: u64,
        rows: usize,
        c: usize,
    ) -> Result<()> {
        let blocks = c.div_ceil(32);
        if blocks > i32::MAX as usize {
            return Err(Error::Cuda(format!("layernorm_backward_params: {c} columns need more than 2³¹ blocks")));
        }
        let args = [
            Arg::Ptr(x),
            Arg::Ptr(mean),
            Arg::Ptr(rstd),
            Arg::Ptr(dy),
            Arg::Ptr(dgamma),
            Arg::Ptr(dbeta),
            Arg::U64(rows as u64),
            Arg::U64(c as u64),
        ];
        dev.launch(FILE, "layernorm_backward_params", (blocks as u32, 1, 1), (32, COL_ROW_LANES, 1), 0, &args)
    }
}

pub mod cpu {
    use crate::float::Float;
    use crate::ops::rows_per_chunk;
    use rayon::prelude::*;

    /// Rows in parallel chunks.
    pub fn forward<F: Float>(x: &[F], g: &[F], b: &[F], eps: F, out: &mut [F], mean: &mut [F], rstd: &mut [F]) {
        let c = g.len();
        let rows = rows_per_chunk(c);
        out.par_chunks_mut(rows * c)
            .zip(x.par_chunks(rows * c))
            .zip(mean.par_chunks_mut(rows).zip(rstd.par_chunks_mut(rows)))
            .for_each(|((out, x), (mean, rstd))| forward_rows(x, g, b, eps, out, mean, rstd));
    }

    fn forward_rows<F: Float>(x: &[F], g: &[F], b: &[F], eps: F, out: &mut [F], mean: &mut [F], rstd: &mut [F]) {
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
    /// Rows in parallel chunks.
    pub fn backward_x<F: Float>(x: &[F], g: &[F], mean: &[F], rstd: &[F], dy: &[F], dx: &mut [F]) {
        let c = g.len();
        let rows = rows_per_chunk(c);
        dx.par_chunks_mut(rows * c)
            .zip(x.par_chunks(rows * c).zip(dy.par_chunks(rows * c)))
            .zip(mean.par_chunks(rows).zip(rstd.par_chunks(rows)))
            .for_each(|((dx, (x, dy)), (mean, rstd))| backward_x_rows(x, g, mean, rstd, dy, dx));
    }

    fn backward_x_rows<F: Float>(x: &[F], g: &[F], mean: &[F], rstd: &[F], dy: &[F], dx: &mut [F]) {
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
    /// Columns in parallel chunks, rows in order within each.
    pub fn backward_gamma<F: Float>(x: &[F], mean: &[F], rstd: &[F], dy: &[F], dg: &mut [F]) {
        use crate::ops::elementwise::cpu::COLUMN_CHUNK;
        let c = dg.len();
        dg.par_chunks_mut(COLUMN_CHUNK).enumerate().for_each(|(ci, dg)| {
            let c0 = ci * COLUMN_CHUNK;
            for row in 0..mean.len() {
                for (j, d) in dg.iter_mut().enumerate() {
                    let i = row * c + c0 + j;
                    *d += dy[i] * (x[i] - mean[row]) * rstd[row];
                }
            }
        });
    }
}
