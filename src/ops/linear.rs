//! A linear layer in one op: `out (…, OUT) = x (…, IN) · wᵀ + b`, w in Hugging Face's (OUT, IN)
//! layout. One op instead of matmul + bias add saves a pass over the output and its gradient, and
//! an activation the size of the output (the bias is the GEMM's starting value on the CPU).

use super::Op;
use super::matmul::{self, MatDims};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

#[derive(Clone, Debug)]
pub struct Linear {
    pub x: Tensor,
    pub w: Tensor,
    pub b: Tensor,
    pub out: Tensor,
    pub dims: MatDims,
}

impl<F: Float> Tape<F> {
    /// x (…, IN) · w (OUT, IN)ᵀ + b (OUT) → (…, OUT).
    pub fn linear(&mut self, x: Tensor, w: Tensor, b: Tensor) -> Result<Tensor> {
        let (dims, shape) = check("linear", x, w, b)?;
        let out = self.output(shape, &[x, w, b])?;
        let op = Linear { x, w, b, out, dims };
        op.forward(&mut self.store)?;
        Ok(self.push(out, Op::Linear(op)))
    }
}

/// The GEMM problem and output shape of x (…, IN) · w (OUT, IN)ᵀ + b (OUT), or why they do not fit.
pub(crate) fn check(op: &'static str, x: Tensor, w: Tensor, b: Tensor) -> Result<(MatDims, Shape)> {
    if w.shape.rank() != 2 {
        return Err(Error::shape(op, format!("weight {} must be (OUT, IN) for x {}", w.shape, x.shape)));
    }
    let (dims, shape) = MatDims::infer(x.shape, w.shape, false, true).map_err(|e| Error::shape(op, e))?;
    if b.dims() != [dims.n] {
        return Err(Error::shape(
            op,
            format!("bias {} does not match weight {} (needs [{}])", b.shape, w.shape, dims.n),
        ));
    }
    Ok((dims, shape))
}

impl Linear {
    /// out = x · wᵀ + b on the store's device, the product in the store's matmul precision.
    pub(crate) fn forward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (x, w, b, out, d, p) = (self.x, self.w, self.b, self.out, &self.dims, s.precision);
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [xp, wp, bp], [op]) =
                    s.cuda_io([], [Slot::Val(x), Slot::Val(w), Slot::Val(b)], [Slot::Val(out)])?;
                matmul::cuda::forward(&dev, d, xp, wp, op, p)?;
                // In place: each element reads only itself.
                super::elementwise::cuda::bias_add(&dev, op, bp, op, d.m, d.n)?;
            }
            Device::Cpu => {
                let ([xv, wv, bv], [ov]) = s.cpu_views([Slot::Val(x), Slot::Val(w), Slot::Val(b)], [Slot::Val(out)])?;
                cpu::forward(d, xv, wv, bv, ov, p);
            }
        }
        Ok(())
    }

    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        self.backward_through(s, self.w)
    }

    /// The gradients, each for the inputs that take one: dx += dy · v (`v`: the weight's values in
    /// the forward, which may be other than w's own), dw += dyᵀ · x, db.
    pub(crate) fn backward_through<F: Float>(&self, s: &mut Store<F>, v: Tensor) -> Result<()> {
        let (x, w, b, out, d, p) = (self.x, self.w, self.b, self.out, &self.dims, s.precision);
        match s.device {
            Device::Cuda(_) => {
                if x.requires_grad {
                    let (dev, [], [vp, dy], [dx]) = s.cuda_io([], [Slot::Val(v), Slot::Grad(out)], [Slot::Grad(x)])?;
                    matmul::cuda::backward_a(&dev, d, vp, dy, dx, p)?;
                }
                if w.requires_grad {
                    let (dev, [], [xp, dy], [dw]) = s.cuda_io([], [Slot::Val(x), Slot::Grad(out)], [Slot::Grad(w)])?;
                    matmul::cuda::backward_b(&dev, d, xp, dy, dw, p)?;
                }
                if b.requires_grad {
                    let (dev, [], [dy], [db]) = s.cuda_io([], [Slot::Grad(out)], [Slot::Grad(b)])?;
                    super::elementwise::cuda::bias_backward(&dev, dy, db, d.m, d.n)?;
                }
            }
            Device::Cpu => {
                if x.requires_grad {
                    let ([vv, dy], [dx]) = s.cpu_views([Slot::Val(v), Slot::Grad(out)], [Slot::Grad(x)])?;
                    matmul::cpu::backward_a(d, vv, dy, dx, p);
                }
                if w.requires_grad {
                    let ([xv, dy], [dw]) = s.cpu_views([Slot::Val(x), Slot::Grad(out)], [Slot::Grad(w)])?;
                    matmul::cpu::backward_b(d, xv, dy, dw, p);
                }
                if b.requires_grad {
                    let ([dy], [db]) = s.cpu_views([Slot::Grad(out)], [Slot::Grad(b)])?;
                    super::elementwise::cpu::bias_backward(dy, db);
                }
            }
        }
        Ok(())
    }
}

pub mod cpu {
    use super::MatDims;
    use crate::device::Precision;
    use crate::float::Float;
    use crate::ops::matmul::cpu::{gemm, operand};

    /// out (M, N) = b (broadcast over rows), then out += x (M, K) · w (N, K)ᵀ, the product's
    /// operands read under `p`.
    pub fn forward<F: Float>(d: &MatDims, x: &[F], w: &[F], b: &[F], out: &mut [F], p: Precision) {
        let (x, w) = (&*operand(x, p), &*operand(w, p));
        for row in out.chunks_exact_mut(d.n) {
            row.copy_from_slice(b);
        }
        let (k, threads) = (d.k as isize, rayon::current_num_threads());
        gemm(d.m, d.n, d.k, out, (x, (k, 1)), (w, (1, k)), true, threads);
    }
}
