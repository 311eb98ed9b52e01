//! Cosine similarity of row pairs, as PyTorch's `cosine_similarity` (eps = 1e-8 clamps each norm).

use super::{Op, expect_rank, same_shape};
use crate::device::Device;
use crate::error::Result;
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

pub const EPS: f64 = 1e-8;

/// a, b (B, C) → out (B) = a·b / (max(‖a‖, eps) · max(‖b‖, eps)).
#[derive(Clone, Debug)]
pub struct Cosine {
    pub a: Tensor,
    pub b: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn cosine(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        same_shape("cosine", a, b)?;
        expect_rank("cosine", "a", a, 2)?;
        let out = self.output(Shape::new(&[a.dims()[0]])?, &[a, b])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("cosine")),
            Device::Cpu => {
                let ([av, bv], [o]) = self.store.cpu_views([Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cpu::forward(av, bv, o);
            }
        }
        Ok(self.push(out, Op::Cosine(Cosine { a, b, out })))
    }
}

impl Cosine {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("cosine")),
            Device::Cpu => {
                // d/da needs (a, b), d/db needs (b, a): one routine, operands swapped.
                for (x, other) in [(self.a, self.b), (self.b, self.a)] {
                    if x.requires_grad {
                        let ([xv, ov, dy], [dx]) =
                            s.cpu_views([Slot::Val(x), Slot::Val(other), Slot::Grad(self.out)], [Slot::Grad(x)])?;
                        cpu::backward(xv, ov, dy, dx);
                    }
                }
            }
        }
        Ok(())
    }
}

pub mod cpu {
    use super::EPS;
    use crate::float::Float;

    fn dot<F: Float>(a: &[F], b: &[F]) -> F {
        a.iter().zip(b).map(|(&x, &y)| x * y).sum()
    }

    pub fn forward<F: Float>(a: &[F], b: &[F], out: &mut [F]) {
        let c = a.len() / out.len().max(1);
        let eps = F::from_f64(EPS);
        for (i, o) in out.iter_mut().enumerate() {
            let (ar, br) = (&a[i * c..(i + 1) * c], &b[i * c..(i + 1) * c]);
            *o = dot(ar, br) / (dot(ar, ar).sqrt().max(eps) * dot(br, br).sqrt().max(eps));
        }
    }

    /// dx += dy · (y/(|x|'|y|') − cos · x/|x|²), the second term only where |x| > eps
    /// (below it the clamped norm is a constant).
    pub fn backward<F: Float>(x: &[F], y: &[F], dy: &[F], dx: &mut [F]) {
        let c = x.len() / dy.len().max(1);
        let eps = F::from_f64(EPS);
        for i in 0..dy.len() {
            let (xr, yr) = (&x[i * c..(i + 1) * c], &y[i * c..(i + 1) * c]);
            let (nx, ny) = (dot(xr, xr).sqrt(), dot(yr, yr).sqrt());
            let denom = nx.max(eps) * ny.max(eps);
            let cos = dot(xr, yr) / denom;
            let self_term = if nx > eps { cos / (nx * nx) } else { F::ZERO };
            let d = &mut dx[i * c..(i + 1) * c];
            for j in 0..c {
                d[j] += dy[i] * (yr[j] / denom - self_term * xr[j]);
            }
        }
    }
}
