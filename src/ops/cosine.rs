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
            Device::Cuda(_) => {
                let (dev, [], [ap, bp], [op]) =
                    self.store.cuda_io([], [Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cuda::forward(&dev, ap, bp, op, a.dims()[0], a.dims()[1])?;
            }
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
            Device::Cuda(_) => {
                // As on the CPU: d/da from (a, b), then d/db from (b, a), one launch each.
                let (rows, c) = (self.a.dims()[0], self.a.dims()[1]);
                for (x, other) in [(self.a, self.b), (self.b, self.a)] {
                    if x.requires_grad {
                        let (dev, [], [xp, op, dyp], [dxp]) =
                            s.cuda_io([], [Slot::Val(x), Slot::Val(other), Slot::Grad(self.out)], [Slot::Grad(x)])?;
                        cuda::backward(&dev, xp, op, dyp, dxp, rows, c)?;
                    }
                }
            }
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

/// Launchers of kernels/cosine.cu; pointers are device addresses of f32 buffers. One block per row
/// (grid-stride over rows), its threads over channels, dot products by block sums.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda};
    use crate::error::Result;

    const FILE: &str = "cosine.cu";

    fn launch(dev: &Cuda, name: &'static str, ptrs: &[u64], rows: usize, c: usize) -> Result<()> {
        let grid = (rows.min(65535) as u32, 1, 1);
        // Whole warps (block_sum needs them), up to 256 threads.
        let block = (c.div_ceil(32).clamp(1, 8) as u32 * 32, 1, 1);
        let mut args: Vec<Arg> = ptrs.iter().map(|&p| Arg::Ptr(p)).collect();
        args.extend([Arg::U64(rows as u64), Arg::U64(c as u64)]);
        dev.launch(FILE, name, grid, block, 0, &args)
    }

    /// a, b (B, C) → out (B) = a·b / (max(‖a‖, eps) · max(‖b‖, eps)).
    pub fn forward(dev: &Cuda, a: u64, b: u64, out: u64, rows: usize, c: usize) -> Result<()> {
        launch(dev, "cosine_forward", &[a, b, out], rows, c)
    }

    /// dx (B, C) += dy (B) · d cos(x, y)/dx, for x, y (B, C).
    pub fn backward(dev: &Cuda, x: u64, y: u64, dy: u64, dx: u64, rows: usize, c: usize) -> Result<()> {
        launch(dev, "cosine_backward", &[x, y, dy, dx], rows, c)
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
