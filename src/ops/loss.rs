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
            Device::Cuda(_) => {
                let (dev, [lp], [xp], [pp, op]) =
                    self.store.cuda_io([labels], [Slot::Val(logits)], [Slot::Val(probs), Slot::Val(out)])?;
                cuda::cross_entropy_forward(&dev, xp, lp, pp, op, logits.dims()[0], k)?;
            }
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
            Device::Cuda(_) => {
                let (dev, [], [xp, yp], [op]) =
                    self.store.cuda_io([], [Slot::Val(logits), Slot::Val(targets)], [Slot::Val(out)])?;
                cuda::bce_forward(&dev, xp, yp, op, logits.numel())?;
            }
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
            Device::Cuda(_) => {
                let (dev, [], [pp, yp], [op]) =
                    self.store.cuda_io([], [Slot::Val(pred), Slot::Val(target)], [Slot::Val(out)])?;
                cuda::mse_forward(&dev, pp, yp, op, pred.numel())?;
            }
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
            Device::Cuda(_) => {
                let (dev, [lp], [pp, dlp], [dxp]) =
                    s.cuda_io([self.labels], [Slot::Val(self.probs), Slot::Grad(self.out)], [Slot::Grad(self.logits)])?;
                let (b, k) = (self.logits.dims()[0], self.logits.dims()[1]);
                cuda::cross_entropy_backward(&dev, pp, lp, dlp, dxp, b, k)?;
            }
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
            Device::Cuda(_) => {
                let (dev, [], [xp, yp, dlp], [dxp]) = s.cuda_io(
                    [],
                    [Slot::Val(self.logits), Slot::Val(self.targets), Slot::Grad(self.out)],
                    [Slot::Grad(self.logits)],
                )?;
                cuda::bce_backward(&dev, xp, yp, dlp, dxp, self.logits.numel())?;
            }
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
            Device::Cuda(_) => {
                let (dev, [], [pp, yp, dlp], [dpp]) = s.cuda_io(
                    [],
                    [Slot::Val(self.pred), Slot::Val(self.target), Slot::Grad(self.out)],
                    [Slot::Grad(self.pred)],
                )?;
                cuda::mse_backward(&dev, pp, yp, dlp, dpp, self.pred.numel())?;
            }
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

/// Launchers of kernels/loss.cu; pointers are device addresses (f32 buffers, i32 labels). A forward
/// runs one block that writes the scalar mean loss (a block sum: deterministic); a backward reads
/// the scalar upstream gradient dl (1) on the device and accumulates, one thread per element.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::{Error, Result};

    const FILE: &str = "loss.cu";
    /// Threads of the one block of a forward (whole warps, for block_sum).
    const FORWARD_THREADS: u32 = 256;

    fn forward(dev: &Cuda, name: &'static str, args: &[Arg]) -> Result<()> {
        dev.launch(FILE, name, (1, 1, 1), (FORWARD_THREADS, 1, 1), 0, args)
    }

    /// sums (f64) [t] += loss (1), on the device.
    pub fn accumulate(dev: &Cuda, loss: u64, sums: u64, t: u32) -> Result<()> {
        dev.launch(FILE, "accumulate_loss", (1, 1, 1), (32, 1, 1), 0, &[Arg::Ptr(loss), Arg::Ptr(sums), Arg::U32(t)])
    }

    /// logits (B, K), labels (B) int in 0..K → probs (B, K) softmax rows, out (1) mean loss.
    pub fn cross_entropy_forward(
        dev: &Cuda,
        x: u64,
        labels: u64,
        probs: u64,
        out: u64,
        b: usize,
        k: usize,
    ) -> Result<()> {
        let name = "cross_entropy_forward";
        if k == 0 {
            return Err(Error::Cuda(format!("{FILE}:{name}: logits ({b}, {k}) have no classes")));
        }
        let args =
            [Arg::Ptr(x), Arg::Ptr(labels), Arg::Ptr(probs), Arg::Ptr(out), Arg::U64(b as u64), Arg::U64(k as u64)];
        forward(dev, name, &args)
    }

    /// dx (B, K) += dl (1) · (probs (B, K) − onehot(labels (B))) / B.
    pub fn cross_entropy_backward(
        dev: &Cuda,
        probs: u64,
        labels: u64,
        dl: u64,
        dx: u64,
        b: usize,
        k: usize,
    ) -> Result<()> {
        let (grid, block) = grid_1d(b * k);
        let args =
            [Arg::Ptr(probs), Arg::Ptr(labels), Arg::Ptr(dl), Arg::Ptr(dx), Arg::U64(b as u64), Arg::U64(k as u64)];
        dev.launch(FILE, "cross_entropy_backward", grid, block, 0, &args)
    }

    /// logits, targets (n) → out (1) = mean [max(x, 0) − x·y + ln(1 + e^−|x|)].
    pub fn bce_forward(dev: &Cuda, x: u64, y: u64, out: u64, n: usize) -> Result<()> {
        forward(dev, "bce_forward", &[Arg::Ptr(x), Arg::Ptr(y), Arg::Ptr(out), Arg::U64(n as u64)])
    }

    /// dx (n) += dl (1) · (σ(x) − y) / n.
    pub fn bce_backward(dev: &Cuda, x: u64, y: u64, dl: u64, dx: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let args = [Arg::Ptr(x), Arg::Ptr(y), Arg::Ptr(dl), Arg::Ptr(dx), Arg::U64(n as u64)];
        dev.launch(FILE, "bce_backward", grid, block, 0, &args)
    }

    /// pred, target (n) → out (1) = mean (pred − target)².
    pub fn mse_forward(dev: &Cuda, p: u64, y: u64, out: u64, n: usize) -> Result<()> {
        forward(dev, "mse_forward", &[Arg::Ptr(p), Arg::Ptr(y), Arg::Ptr(out), Arg::U64(n as u64)])
    }

    /// dp (n) += dl (1) · 2 (p − y) / n.
    pub fn mse_backward(dev: &Cuda, p: u64, y: u64, dl: u64, dp: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let args = [Arg::Ptr(p), Arg::Ptr(y), Arg::Ptr(dl), Arg::Ptr(dp), Arg::U64(n as u64)];
        dev.launch(FILE, "mse_backward", grid, block, 0, &args)
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
