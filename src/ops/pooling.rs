//! Sentence representations from token states: the masked mean over tokens, and the first ([CLS])
//! token, of a padded (B, T, C) batch or of a token-packed (N, C) one (issue 16, packed batches;
//! see [`CuSeqlens`]), where sequence b is rows cu[b]..cu[b+1].

use super::varlen_attention::CuSeqlens;
use super::{Op, expect_rank};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// x (B, T, C), mask (B, T) of 0/1 → out (B, C) = Σ_t mask·x / max(Σ_t mask, 1e-9)
/// (the clamp of sentence-transformers, so an all-padding row gives zeros, not NaN).
#[derive(Clone, Debug)]
pub struct MeanPool {
    pub x: Tensor,
    pub mask: Tensor,
    pub out: Tensor,
}

/// x (B, T, C) → out (B, C) = x[:, 0, :].
#[derive(Clone, Debug)]
pub struct FirstToken {
    pub x: Tensor,
    pub out: Tensor,
}

/// Which pooling of a packed batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// Row cu[b] (zeros for an empty sequence).
    First,
    /// Σ rows cu[b]..cu[b+1] / max(T_b, 1e-9), summed in token order as [`MeanPool`].
    Mean,
}

/// x (N, C) of a packed batch → out (B, C), pooled per sequence as `kind` says.
#[derive(Clone, Debug)]
pub struct PackedPool {
    pub x: Tensor,
    pub cu: CuSeqlens,
    pub out: Tensor,
    pub kind: Pool,
}

impl Pool {
    fn name(self) -> &'static str {
        match self {
            Pool::First => "first_tokens",
            Pool::Mean => "mean_pool_packed",
        }
    }
}

impl<F: Float> Tape<F> {
    /// x (N, C) of a packed batch → (B, C): row cu[b] of each sequence, zeros for an empty one.
    /// The packed [`Tape::first_token`].
    pub fn first_tokens(&mut self, x: Tensor, cu: &CuSeqlens) -> Result<Tensor> {
        self.packed_pool(x, cu, Pool::First)
    }

    /// x (N, C) of a packed batch → (B, C): the mean of rows cu[b]..cu[b+1], zeros for an empty
    /// sequence. The packed [`Tape::mean_pool`], with the same arithmetic: equal to it on a padded
    /// batch whose mask is a prefix of ones.
    pub fn mean_pool_packed(&mut self, x: Tensor, cu: &CuSeqlens) -> Result<Tensor> {
        self.packed_pool(x, cu, Pool::Mean)
    }

    fn packed_pool(&mut self, x: Tensor, cu: &CuSeqlens, kind: Pool) -> Result<Tensor> {
        let op = kind.name();
        expect_rank(op, "x", x, 2)?;
        let (b, n, c) = (cu.batch(), cu.tokens(), x.dims()[1]);
        if cu.tensor.dims() != [b + 1] {
            return Err(Error::shape(
                op,
                format!("cu_seqlens tensor {} does not hold {} offsets", cu.tensor.shape, b + 1),
            ));
        }
        if x.dims()[0] != n {
            return Err(Error::shape(
                op,
                format!("x {} must be (N, C) with N = {n}, the tokens of cu_seqlens", x.shape),
            ));
        }
        let out = self.output(Shape::new(&[b, c])?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [cp], [xp], [op]) = self.store.cuda_io([cu.tensor], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::packed_forward(&dev, kind, xp, cp, op, b, c)?;
            }
            Device::Cpu => {
                let ([xv], [o]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::packed_forward(kind, xv, &cu.offsets, c, o);
            }
        }
        Ok(self.push(out, Op::PackedPool(PackedPool { x, cu: cu.clone(), out, kind })))
    }

    pub fn mean_pool(&mut self, x: Tensor, mask: Tensor) -> Result<Tensor> {
        expect_rank("mean_pool", "x", x, 3)?;
        let (b, t, c) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        if mask.dims() != [b, t] {
            return Err(Error::shape(
                "mean_pool",
                format!("mask {} does not fit x {} (needs [{b}, {t}])", mask.shape, x.shape),
            ));
        }
        let out = self.output(Shape::new(&[b, c])?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [mp], [xp], [op]) = self.store.cuda_io([mask], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::mean_pool_forward(&dev, xp, mp, op, [b, t, c])?;
            }
            Device::Cpu => {
                let ([m], [xv], [o]) = self.store.cpu_io([mask], [Slot::Val(x)], [Slot::Val(out)])?;
                cpu::mean_pool(xv, m, t, o);
            }
        }
        Ok(self.push(out, Op::MeanPool(MeanPool { x, mask, out })))
    }

    pub fn first_token(&mut self, x: Tensor) -> Result<Tensor> {
        expect_rank("first_token", "x", x, 3)?;
        let (b, c) = (x.dims()[0], x.dims()[2]);
        let out = self.output(Shape::new(&[b, c])?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::first_token_forward(&dev, xp, op, [b, x.dims()[1], c])?;
            }
            Device::Cpu => {
                let ([xv], [o]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                let tc = x.dims()[1] * c;
                for (i, orow) in o.chunks_exact_mut(c).enumerate() {
                    orow.copy_from_slice(&xv[i * tc..i * tc + c]);
                }
            }
        }
        Ok(self.push(out, Op::FirstToken(FirstToken { x, out })))
    }
}

impl MeanPool {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        let (b, t, c) = (self.x.dims()[0], self.x.dims()[1], self.x.dims()[2]);
        match s.device {
            Device::Cuda(_) => {
                let (dev, [mp], [dyp], [dxp]) = s.cuda_io([self.mask], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::mean_pool_backward(&dev, dyp, mp, dxp, [b, t, c])?;
            }
            Device::Cpu => {
                let ([m], [dy], [dx]) = s.cpu_io([self.mask], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cpu::mean_pool_backward(dy, m, t, dx);
            }
        }
        Ok(())
    }
}

impl FirstToken {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        let (t, c) = (self.x.dims()[1], self.x.dims()[2]);
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [dyp], [dxp]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::first_token_backward(&dev, dyp, dxp, [self.x.dims()[0], t, c])?;
            }
            Device::Cpu => {
                let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                for (i, g) in dy.chunks_exact(c).enumerate() {
                    let d = &mut dx[i * t * c..i * t * c + c];
                    d.iter_mut().zip(g).for_each(|(a, &b)| *a += b);
                }
            }
        }
        Ok(())
    }
}

impl PackedPool {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        let c = self.x.dims()[1];
        match s.device {
            Device::Cuda(_) => {
                let (dev, [cp], [dyp], [dxp]) =
                    s.cuda_io([self.cu.tensor], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::packed_backward(&dev, self.kind, dyp, cp, dxp, self.cu.batch(), c)?;
            }
            Device::Cpu => {
                let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cpu::packed_backward(self.kind, dy, &self.cu.offsets, c, dx);
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/pooling.cu; pointers are device addresses (f32 buffers, i32 mask).
/// Every kernel runs one thread per (b, channel) of the pooled (B, C).
pub mod cuda {
    use super::Pool;
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::{Error, Result};

    const FILE: &str = "pooling.cu";

    /// One thread per (b, channel) of the pooled (B, C): the buffers, then the sizes, as u64.
    fn launch(dev: &Cuda, name: &'static str, ptrs: &[u64], sizes: &[usize], [b, c]: [usize; 2]) -> Result<()> {
        let (grid, block) = grid_1d(b * c);
        let args: Vec<Arg> =
            ptrs.iter().map(|&p| Arg::Ptr(p)).chain(sizes.iter().map(|&s| Arg::U64(s as u64))).collect();
        dev.launch(FILE, name, grid, block, 0, &args)
    }

    /// The padded kernels take (B, T, C); the first-token ones need T ≥ 1.
    fn launch_padded(dev: &Cuda, name: &'static str, ptrs: &[u64], [b, t, c]: [usize; 3]) -> Result<()> {
        if ptrs.len() == 2 && b * c > 0 && t == 0 {
            return Err(Error::Cuda(format!("{FILE}:{name}: x ({b}, {t}, {c}) has no first token")));
        }
        launch(dev, name, ptrs, &[b, t, c], [b, c])
    }

    /// x (B, T, C), mask (B, T) int → out (B, C) = Σ_t mask·x / max(Σ_t mask, 1e-9).
    pub fn mean_pool_forward(dev: &Cuda, x: u64, mask: u64, out: u64, btc: [usize; 3]) -> Result<()> {
        launch_padded(dev, "mean_pool_forward", &[x, mask, out], btc)
    }

    /// dx (B, T, C) += dy (B, C) / max(Σ_t mask, 1e-9) at the tokens where mask (B, T) ≠ 0.
    pub fn mean_pool_backward(dev: &Cuda, dy: u64, mask: u64, dx: u64, btc: [usize; 3]) -> Result<()> {
        launch_padded(dev, "mean_pool_backward", &[dy, mask, dx], btc)
    }

    /// x (B, T, C) → out (B, C) = x[:, 0, :]; T ≥ 1.
    pub fn first_token_forward(dev: &Cuda, x: u64, out: u64, btc: [usize; 3]) -> Result<()> {
        launch_padded(dev, "first_token_forward", &[x, out], btc)
    }

    /// dx[:, 0, :] (of (B, T, C)) += dy (B, C); T ≥ 1.
    pub fn first_token_backward(dev: &Cuda, dy: u64, dx: u64, btc: [usize; 3]) -> Result<()> {
        launch_padded(dev, "first_token_backward", &[dy, dx], btc)
    }

    /// x (N, C) packed, cu (B + 1) int → out (B, C): row cu[b] (`First`) or the mean of rows
    /// cu[b]..cu[b+1] (`Mean`); zeros for an empty sequence.
    pub fn packed_forward(dev: &Cuda, kind: Pool, x: u64, cu: u64, out: u64, b: usize, c: usize) -> Result<()> {
        let name = match kind {
            Pool::First => "first_tokens_forward",
            Pool::Mean => "mean_pool_packed_forward",
        };
        launch(dev, name, &[x, cu, out], &[b, c], [b, c])
    }

    /// dx (N, C) += dy (B, C) at row cu[b] (`First`), or dy / max(T_b, 1e-9) at rows
    /// cu[b]..cu[b+1] (`Mean`).
    pub fn packed_backward(dev: &Cuda, kind: Pool, dy: u64, cu: u64, dx: u64, b: usize, c: usize) -> Result<()> {
        let name = match kind {
            Pool::First => "first_tokens_backward",
            Pool::Mean => "mean_pool_packed_backward",
        };
        launch(dev, name, &[dy, cu, dx], &[b, c], [b, c])
    }
}

pub mod cpu {
    use super::Pool;
    use crate::float::Float;

    fn count<F: Float>(mask: &[i32]) -> F {
        F::from_usize(mask.iter().filter(|&&m| m != 0).count()).max(F::from_f64(1e-9))
    }

    pub fn mean_pool<F: Float>(x: &[F], mask: &[i32], t: usize, out: &mut [F]) {
        let c = out.len() / (mask.len() / t).max(1);
        for (b, o) in out.chunks_exact_mut(c).enumerate() {
            let m = &mask[b * t..(b + 1) * t];
            o.fill(F::ZERO);
            for (tok, _) in m.iter().enumerate().filter(|&(_, &v)| v != 0) {
                let xr = &x[(b * t + tok) * c..][..c];
                o.iter_mut().zip(xr).for_each(|(a, &v)| *a += v);
            }
            let n: F = count(m);
            o.iter_mut().for_each(|v| *v /= n);
        }
    }

    pub fn mean_pool_backward<F: Float>(dy: &[F], mask: &[i32], t: usize, dx: &mut [F]) {
        let c = dy.len() / (mask.len() / t).max(1);
        for (b, g) in dy.chunks_exact(c).enumerate() {
            let m = &mask[b * t..(b + 1) * t];
            let n: F = count(m);
            for (tok, _) in m.iter().enumerate().filter(|&(_, &v)| v != 0) {
                let d = &mut dx[(b * t + tok) * c..][..c];
                d.iter_mut().zip(g).for_each(|(a, &v)| *a += v / n);
            }
        }
    }

    /// x (N, C) packed, offsets cu (B + 1) → out (B, C), as [`Pool`] says; the mean adds rows in
    /// token order from zero and then divides, as [`mean_pool`] does.
    pub fn packed_forward<F: Float>(kind: Pool, x: &[F], cu: &[usize], c: usize, out: &mut [F]) {
        if c == 0 {
            return;
        }
        for (o, w) in out.chunks_exact_mut(c).zip(cu.windows(2)) {
            o.fill(F::ZERO);
            match kind {
                Pool::First if w[1] > w[0] => o.copy_from_slice(&x[w[0] * c..][..c]),
                Pool::First => {}
                Pool::Mean => {
                    for xr in x[w[0] * c..w[1] * c].chunks_exact(c) {
                        o.iter_mut().zip(xr).for_each(|(a, &v)| *a += v);
                    }
                    let n = F::from_usize(w[1] - w[0]).max(F::from_f64(1e-9));
                    o.iter_mut().for_each(|v| *v /= n);
                }
            }
        }
    }

    /// dx (N, C) += dy (B, C) at the rows [`packed_forward`] read, over T_b for the mean.
    pub fn packed_backward<F: Float>(kind: Pool, dy: &[F], cu: &[usize], c: usize, dx: &mut [F]) {
        if c == 0 {
            return;
        }
        for (g, w) in dy.chunks_exact(c).zip(cu.windows(2)) {
            match kind {
                Pool::First if w[1] > w[0] => {
                    dx[w[0] * c..][..c].iter_mut().zip(g).for_each(|(a, &v)| *a += v);
                }
                Pool::First => {}
                Pool::Mean => {
                    let n = F::from_usize(w[1] - w[0]).max(F::from_f64(1e-9));
                    for d in dx[w[0] * c..w[1] * c].chunks_exact_mut(c) {
                        d.iter_mut().zip(g).for_each(|(a, &v)| *a += v / n);
                    }
                }
            }
        }
    }
}
