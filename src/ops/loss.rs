//! The three task losses, each the mean over the batch: cross-entropy (SST, classes),
//! binary cross-entropy with logits (Quora), mean squared error (STS).

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// logits (B, K), labels (B) int in 0..K → out () = mean_b [logsumexp(x_b) − x_b,label];
/// softmax probabilities (B, K) saved for backward.
#[derive(Clone, Debug)]
pub struct CrossEntropy {
    pub logits: Tensor,
    pub labels: Tensor,
    pub probs: Tensor,
    pub out: Tensor,
}

/// logits (B) or (B, 1), targets of the same size in [0, 1] →
/// out () = mean [max(x, 0) − x·y + ln(1 + e^−|x|)].
#[derive(Clone, Debug)]
pub struct BceWithLogits {
    pub logits: Tensor,
    pub targets: Tensor,
    pub out: Tensor,
}

/// pred, target of one shape → out () = mean (pred − target)².
#[derive(Clone, Debug)]
pub struct Mse {
    pub pred: Tensor,
    pub target: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn cross_entropy(&mut self, logits: Tensor, labels: Tensor) -> Result<Tensor> {
        let op = "cross_entropy";
        if logits.shape.rank() != 2 || labels.dims() != [logits.dims()[0]] {
            return Err(Error::shape(
                op,
                format!("logits {} must be (B, K) and labels {} (B)", logits.shape, labels.shape),
            ));
        }
        let k = logits.dims()[1];
        let lv = self.store.read_ints(labels)?;
        if let Some((i, &l)) = lv.iter().enumerate().find(|&(_, &l)| l < 0 || l as usize >= k) {
            return Err(Error::value(op, format!("label {l} of row {i} is outside the {k} classes 0..{k}")));
        }
        let probs = self.store.alloc_act(logits.shape, false)?;
        let out = self.output(Shape::scalar(), &[logits])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("loss")),
            Device::Cpu => {
                let ([l], [x], [p, o]) =
                    self.store.cpu_io([labels], [Slot::Val(logits)], [Slot::Val(probs), Slot::Val(out)])?;
                o[0] = cpu::cross_entropy(x, l, p);
            }
        }
        Ok(self.push(out, Op::CrossEntropy(CrossEntropy { logits, labels, probs, out })))
    }

    pub fn bce_with_logits(&mut self, logits: Tensor, targets: Tensor) -> Result<Tensor> {
        check_pair("bce_with_logits", logits, targets)?;
        let out = self.output(Shape::scalar(), &[logits])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("loss")),
            Device::Cpu => {
                let ([x, y], [o]) = self.store.cpu_views([Slot::Val(logits), Slot::Val(targets)], [Slot::Val(out)])?;
                o[0] = cpu::bce(x, y);
            }
        }
        Ok(self.push(out, Op::BceWithLogits(BceWithLogits { logits, targets, out })))
    }

    pub fn mse(&mut self, pred: Tensor, target: Tensor) -> Result<Tensor> {
        check_pair("mse", pred, target)?;
        let out = self.output(Shape::scalar(), &[pred])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("loss")),
            Device::Cpu => {
                let ([p, y], [o]) = self.store.cpu_views([Slot::Val(pred), Slot::Val(target)], [Slot::Val(out)])?;
                o[0] = cpu::mse(p, y);
            }
        }
        Ok(self.push(out, Op::Mse(Mse { pred, target, out })))
    }
}

/// Predictions and targets: one element per example (B or (B, 1)), targets constant.
fn check_pair(op: &'static str, pred: Tensor, target: Tensor) -> Result<()> {
    let per_example = |t: Tensor| t.shape.rank() == 1 || (t.shape.rank() == 2 && t.dims()[1] == 1);
    if !per_example(pred) || pred.numel() != target.numel() {
        return Err(Error::shape(
            op,
            format!("predictions {} and targets {} must both hold one value per example", pred.shape, target.shape),
        ));
    }
    if target.requires_grad {
        return Err(Error::Tape(format!("{op}: targets must be constants (they take no gradient)")));
    }
    Ok(())
}

impl CrossEntropy {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.logits.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("loss")),
            Device::Cpu => {
                let ([l], [p, dl], [dx]) =
                    s.cpu_io([self.labels], [Slot::Val(self.probs), Slot::Grad(self.out)], [Slot::Grad(self.logits)])?;
                cpu::cross_entropy_backward(p, l, dl[0], dx);
            }
        }
        Ok(())
    }
}

impl BceWithLogits {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.logits.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("loss")),
            Device::Cpu => {
                let ([x, y, dl], [dx]) = s.cpu_views(
                    [Slot::Val(self.logits), Slot::Val(self.targets), Slot::Grad(self.out)],
                    [Slot::Grad(self.logits)],
                )?;
                cpu::bce_backward(x, y, dl[0], dx);
            }
        }
        Ok(())
    }
}

impl Mse {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.pred.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("loss")),
            Device::Cpu => {
                let ([p, y, dl], [dp]) = s.cpu_views(
                    [Slot::Val(self.pred), Slot::Val(self.target), Slot::Grad(self.out)],
                    [Slot::Grad(self.pred)],
                )?;
                cpu::mse_backward(p, y, dl[0], dp);
            }
        }
        Ok(())
    }
}

pub mod cpu {
    use crate::float::Float;

    /// Returns the mean loss; fills `probs` with the softmax of each row.
    pub fn cross_entropy<F: Float>(x: &[F], labels: &[i32], probs: &mut [F]) -> F {
        let k = x.len() / labels.len().max(1);
        let mut total = F::ZERO;
        for (b, (xr, pr)) in x.chunks_exact(k).zip(probs.chunks_exact_mut(k)).enumerate() {
            let max = xr.iter().copied().fold(xr[0], F::max);
            let mut sum = F::ZERO;
            for j in 0..k {
                pr[j] = (xr[j] - max).exp();
                sum += pr[j];
            }
            pr.iter_mut().for_each(|p| *p /= sum);
            total += sum.ln() + max - xr[labels[b] as usize];
        }
        total / F::from_usize(labels.len())
    }

    /// dx += dL · (softmax − onehot) / B.
    pub fn cross_entropy_backward<F: Float>(probs: &[F], labels: &[i32], dl: F, dx: &mut [F]) {
        let k = probs.len() / labels.len().max(1);
        let g = dl / F::from_usize(labels.len());
        for (b, (pr, dr)) in probs.chunks_exact(k).zip(dx.chunks_exact_mut(k)).enumerate() {
            for j in 0..k {
                let onehot = if j == labels[b] as usize { F::ONE } else { F::ZERO };
                dr[j] += g * (pr[j] - onehot);
            }
        }
    }

    fn sigmoid<F: Float>(x: F) -> F {
        F::ONE / (F::ONE + (-x).exp())
    }

    pub fn bce<F: Float>(x: &[F], y: &[F]) -> F {
        let total: F = x.iter().zip(y).map(|(&v, &t)| v.max(F::ZERO) - v * t + (-v.abs()).exp().ln_1p()).sum();
        total / F::from_usize(x.len())
    }

    /// dx += dL · (σ(x) − y) / B.
    pub fn bce_backward<F: Float>(x: &[F], y: &[F], dl: F, dx: &mut [F]) {
        let g = dl / F::from_usize(x.len());
        for i in 0..dx.len() {
            dx[i] += g * (sigmoid(x[i]) - y[i]);
        }
    }

    pub fn mse<F: Float>(p: &[F], y: &[F]) -> F {
        let total: F = p.iter().zip(y).map(|(&a, &b)| (a - b) * (a - b)).sum();
        total / F::from_usize(p.len())
    }

    /// dp += dL · 2 (p − y) / B.
    pub fn mse_backward<F: Float>(p: &[F], y: &[F], dl: F, dp: &mut [F]) {
        let g = F::from_f64(2.0) * dl / F::from_usize(p.len());
        for i in 0..dp.len() {
            dp[i] += g * (p[i] - y[i]);
        }
    }
}
