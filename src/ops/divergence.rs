//! The symmetric KL divergence between two sets of class logits, the mean over rows of
//! KL(p‖q) + KL(q‖p) = Σ_j (p_j − q_j)(log p_j − log q_j), p = softmax(a), q = softmax(b):
//! SMART's smoothness loss for classification (Jiang et al. 2020). One logit per row (K = 1)
//! is a two-class sigmoid, the classes' logits (x, 0), as Quora's head reads it.
//!
//! Gradients, with d = log p − log q: ∂/∂a_k = p_k (d_k − Σ_j p_j d_j) + p_k − q_k, and the same
//! with the roles swapped for b (d → −d). Both sides may take a gradient (SMART's regulariser
//! flows into the clean and the perturbed pass alike); either may be a constant (a teacher).

use super::{Op, same_shape};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// a, b (B, K) logits (K = 1: sigmoid logits, (B) or (B, 1)) → out () the mean symmetric KL.
#[derive(Clone, Debug)]
pub struct SymmetricKl {
    pub a: Tensor,
    pub b: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn symmetric_kl(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        let op = "symmetric_kl";
        same_shape(op, a, b)?;
        if !matches!(a.shape.rank(), 1 | 2) || a.numel() == 0 {
            return Err(Error::shape(op, format!("logits {} must be (B, K), or (B) for sigmoid logits", a.shape)));
        }
        let (rows, k) = rows_classes(a);
        let out = self.output(Shape::scalar(), &[a, b])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [ap, bp], [op]) =
                    self.store.cuda_io([], [Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cuda::forward(&dev, ap, bp, op, rows, k)?;
            }
            Device::Cpu => {
                let ([av, bv], [o]) = self.store.cpu_views([Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                o[0] = cpu::forward(av, bv, k);
            }
        }
        Ok(self.push(out, Op::SymmetricKl(SymmetricKl { a, b, out })))
    }
}

/// (rows, logits per row) of a (B, K) or (B) tensor.
fn rows_classes(a: Tensor) -> (usize, usize) {
    let k = if a.shape.rank() == 2 { a.dims()[1] } else { 1 };
    (a.numel() / k, k)
}

impl SymmetricKl {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (rows, k) = rows_classes(self.a);
        // d/da from (a, b), then d/db from (b, a): the formula is symmetric in its operands.
        for (x, other) in [(self.a, self.b), (self.b, self.a)] {
            if !x.requires_grad {
                continue;
            }
            match s.device {
                Device::Cuda(_) => {
                    let (dev, [], [xp, op, dl], [dx]) =
                        s.cuda_io([], [Slot::Val(x), Slot::Val(other), Slot::Grad(self.out)], [Slot::Grad(x)])?;
                    cuda::backward(&dev, xp, op, dl, dx, rows, k)?;
                }
                Device::Cpu => {
                    let ([xv, ov, dl], [dx]) =
                        s.cpu_views([Slot::Val(x), Slot::Val(other), Slot::Grad(self.out)], [Slot::Grad(x)])?;
                    cpu::backward(xv, ov, dl[0], k, dx);
                }
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/divergence.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "divergence.cu";

    /// a, b (B, K) → out (1) = mean_b Σ_j (p_j − q_j)(log p_j − log q_j); one block (a
    /// deterministic block sum), as the losses' forwards.
    pub fn forward(dev: &Cuda, a: u64, b: u64, out: u64, rows: usize, k: usize) -> Result<()> {
        let args = [Arg::Ptr(a), Arg::Ptr(b), Arg::Ptr(out), Arg::U64(rows as u64), Arg::U64(k as u64)];
        dev.launch(FILE, "symmetric_kl_forward", (1, 1, 1), (256, 1, 1), 0, &args)
    }

    /// dx (B, K) += dl (1) · ∂/∂x of the mean symmetric KL of (x, y); one thread per row.
    pub fn backward(dev: &Cuda, x: u64, y: u64, dl: u64, dx: u64, rows: usize, k: usize) -> Result<()> {
        let (grid, block) = grid_1d(rows);
        let args = [Arg::Ptr(x), Arg::Ptr(y), Arg::Ptr(dl), Arg::Ptr(dx), Arg::U64(rows as u64), Arg::U64(k as u64)];
        dev.launch(FILE, "symmetric_kl_backward", grid, block, 0, &args)
    }
}

pub mod cpu {
    use crate::float::Float;

    /// Logit j of a row of `k` logits: with k = 1 the two classes (x, 0).
    fn logit<F: Float>(row: &[F], k: usize, j: usize) -> F {
        if k == 1 && j == 1 { F::ZERO } else { row[j] }
    }

    /// The row's log-sum-exp over its classes (max(k, 2) of them).
    fn log_sum_exp<F: Float>(row: &[F], k: usize) -> F {
        let classes = k.max(2);
        let max = (1..classes).fold(logit(row, k, 0), |m, j| m.max(logit(row, k, j)));
        let sum = (0..classes).fold(F::ZERO, |s, j| s + (logit(row, k, j) - max).exp());
        max + sum.ln()
    }

    /// The mean over rows of Σ_j (p_j − q_j)(log p_j − log q_j).
    pub fn forward<F: Float>(a: &[F], b: &[F], k: usize) -> F {
        let mut total = F::ZERO;
        for (ar, br) in a.chunks_exact(k).zip(b.chunks_exact(k)) {
            let (la, lb) = (log_sum_exp(ar, k), log_sum_exp(br, k));
            for j in 0..k.max(2) {
                let (lp, lq) = (logit(ar, k, j) - la, logit(br, k, j) - lb);
                total += (lp.exp() - lq.exp()) * (lp - lq);
            }
        }
        total / F::from_usize(a.len() / k)
    }

    /// dx += dl/B · [p_j (d_j − Σ_i p_i d_i) + p_j − q_j], p = softmax(x), q = softmax(y),
    /// d = log p − log q (for k = 1 the first class's entry: the sigmoid logit's gradient).
    pub fn backward<F: Float>(x: &[F], y: &[F], dl: F, k: usize, dx: &mut [F]) {
        let g = dl / F::from_usize(x.len() / k);
        for ((xr, yr), dr) in x.chunks_exact(k).zip(y.chunks_exact(k)).zip(dx.chunks_exact_mut(k)) {
            let (lx, ly) = (log_sum_exp(xr, k), log_sum_exp(yr, k));
            let mut pd = F::ZERO;
            for j in 0..k.max(2) {
                let (lp, lq) = (logit(xr, k, j) - lx, logit(yr, k, j) - ly);
                pd += lp.exp() * (lp - lq);
            }
            for (j, d) in dr.iter_mut().enumerate() {
                let (lp, lq) = (xr[j] - lx, logit(yr, k, j) - ly);
                let (p, q) = (lp.exp(), lq.exp());
                *d += g * (p * (lp - lq - pd) + p - q);
            }
        }
    }
}
