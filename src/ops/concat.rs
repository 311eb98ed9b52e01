//! Concatenation along the last dimension (the `[u, v, |u−v|, u·v]` of the paraphrase head).

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// xs[i] (…, C_i), equal leading dimensions → out (…, Σ C_i).
#[derive(Clone, Debug)]
pub struct Concat {
    pub xs: Vec<Tensor>,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn concat(&mut self, xs: &[Tensor]) -> Result<Tensor> {
        let first = *xs.first().ok_or_else(|| Error::shape("concat", "nothing to concatenate"))?;
        let lead = &first.dims()[..first.shape.rank().saturating_sub(1)];
        if first.shape.rank() == 0 {
            return Err(Error::shape("concat", "scalars cannot be concatenated along a last dimension"));
        }
        for x in xs {
            if x.shape.rank() != first.shape.rank() || &x.dims()[..lead.len()] != lead {
                return Err(Error::shape(
                    "concat",
                    format!("shapes {} and {} differ before the last dimension", first.shape, x.shape),
                ));
            }
        }
        let mut dims = lead.to_vec();
        dims.push(xs.iter().map(|x| x.shape.last()).sum());
        let out = self.output(Shape::new(&dims)?, xs)?;
        let total = out.shape.last();
        match self.store.device {
            Device::Cuda(_) => {
                let mut col = 0;
                for &x in xs {
                    let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                    cuda::forward(&dev, xp, op, out.shape.rows(), x.shape.last(), total, col)?;
                    col += x.shape.last();
                }
            }
            Device::Cpu => {
                let mut col = 0;
                for &x in xs {
                    let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                    cpu::copy_columns(xv, x.shape.last(), ov, total, col, false);
                    col += x.shape.last();
                }
            }
        }
        Ok(self.push(out, Op::Concat(Concat { xs: xs.to_vec(), out })))
    }
}

impl Concat {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let total = self.out.shape.last();
        match s.device {
            Device::Cuda(_) => {
                // One input at a time, as on the CPU: a repeated input accumulates launch after launch.
                let mut col = 0;
                for &x in &self.xs {
                    let w = x.shape.last();
                    if x.requires_grad {
                        let (dev, [], [dyp], [dxp]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(x)])?;
                        cuda::backward(&dev, dyp, dxp, self.out.shape.rows(), w, total, col)?;
                    }
                    col += w;
                }
            }
            Device::Cpu => {
                let mut col = 0;
                for &x in &self.xs {
                    let w = x.shape.last();
                    if x.requires_grad {
                        let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(x)])?;
                        cpu::copy_columns(dy, total, dx, w, col, true);
                    }
                    col += w;
                }
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/concat.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::{Error, Result};

    const FILE: &str = "concat.cu";

    fn launch(
        dev: &Cuda,
        name: &'static str,
        ptrs: [u64; 2],
        rows: usize,
        w: usize,
        total: usize,
        col: usize,
    ) -> Result<()> {
        if col + w > total {
            return Err(Error::Cuda(format!(
                "{FILE}:{name}: columns {col}..{} of ({rows}, {w}) lie outside the ({rows}, {total}) concatenation",
                col + w
            )));
        }
        let (grid, block) = grid_1d(rows * w);
        let args = [
            Arg::Ptr(ptrs[0]),
            Arg::Ptr(ptrs[1]),
            Arg::U64(rows as u64),
            Arg::U64(w as u64),
            Arg::U64(total as u64),
            Arg::U64(col as u64),
        ];
        dev.launch(FILE, name, grid, block, 0, &args)
    }

    /// src (rows, w) → columns col..col+w of dst (rows, total).
    pub fn forward(dev: &Cuda, src: u64, dst: u64, rows: usize, w: usize, total: usize, col: usize) -> Result<()> {
        launch(dev, "concat_forward", [src, dst], rows, w, total, col)
    }

    /// dx (rows, w) += columns col..col+w of dy (rows, total).
    pub fn backward(dev: &Cuda, dy: u64, dx: u64, rows: usize, w: usize, total: usize, col: usize) -> Result<()> {
        launch(dev, "concat_backward", [dy, dx], rows, w, total, col)
    }
}

pub mod cpu {
    use crate::float::Float;

    /// Forward (`backward = false`): src (rows, w) into columns col..col+w of dst (rows, total).
    /// Backward: columns col..col+w of src (rows, total) added into dst (rows, w).
    pub fn copy_columns<F: Float>(src: &[F], src_w: usize, dst: &mut [F], dst_w: usize, col: usize, backward: bool) {
        let rows = src.len() / src_w.max(1);
        for r in 0..rows {
            if backward {
                let (s, d) = (&src[r * src_w + col..][..dst_w], &mut dst[r * dst_w..][..dst_w]);
                d.iter_mut().zip(s).for_each(|(a, &b)| *a += b);
            } else {
                dst[r * dst_w + col..][..src_w].copy_from_slice(&src[r * src_w..][..src_w]);
            }
        }
    }
}
