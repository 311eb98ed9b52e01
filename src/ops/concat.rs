//! Concatenation along the last dimension (the `[u, v, |u−v|, u·v]` of the paraphrase head), and
//! its inverse, a band of columns ([`Tape::columns`]).

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

/// x (…, W) → out (…, w) = columns col..col+w of every row.
#[derive(Clone, Debug)]
pub struct Columns {
    pub x: Tensor,
    pub out: Tensor,
    pub col: usize,
}

impl<F: Float> Tape<F> {
    /// x (…, W) → (…, w): columns col..col+w of every row (the inverse of [`Tape::concat`]).
    /// Backward adds dy into that band of dx, so several slices of one tensor each add theirs.
    pub fn columns(&mut self, x: Tensor, col: usize, w: usize) -> Result<Tensor> {
        if x.shape.rank() == 0 {
            return Err(Error::shape("columns", "a scalar has no columns"));
        }
        let big_w = x.shape.last();
        if col.checked_add(w).is_none_or(|end| end > big_w) {
            return Err(Error::shape(
                "columns",
                format!("columns {col}..{col}+{w} lie outside the {big_w} columns of x {}", x.shape),
            ));
        }
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = w;
        let out = self.output(Shape::new(&dims)?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::columns_forward(&dev, xp, op, x.shape.rows(), w, big_w, col)?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::columns(xv, big_w, ov, w, col);
            }
        }
        Ok(self.push(out, Op::Columns(Columns { x, out, col })))
    }

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

impl Columns {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        let (w, big_w) = (self.out.shape.last(), self.x.shape.last());
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [dyp], [dxp]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::columns_backward(&dev, dyp, dxp, self.x.shape.rows(), w, big_w, self.col)?;
            }
            Device::Cpu => {
                let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cpu::columns_backward(dy, w, dx, big_w, self.col);
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
                "{FILE}:{name}: columns {col}..{} of ({rows}, {w}) lie outside the ({rows}, {total}) concatenation or slice",
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

    /// out (rows, w) = columns col..col+w of x (rows, total) (written, not added).
    pub fn columns_forward(
        dev: &Cuda,
        x: u64,
        out: u64,
        rows: usize,
        w: usize,
        total: usize,
        col: usize,
    ) -> Result<()> {
        launch(dev, "columns_forward", [x, out], rows, w, total, col)
    }

    /// Columns col..col+w of dx (rows, total) += dy (rows, w).
    pub fn columns_backward(
        dev: &Cuda,
        dy: u64,
        dx: u64,
        rows: usize,
        w: usize,
        total: usize,
        col: usize,
    ) -> Result<()> {
        launch(dev, "columns_backward", [dy, dx], rows, w, total, col)
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

    /// x (rows, big_w) → out (rows, w): columns col..col+w of every row.
    pub fn columns<F: Float>(x: &[F], big_w: usize, out: &mut [F], w: usize, col: usize) {
        if w == 0 {
            return;
        }
        for (r, o) in out.chunks_exact_mut(w).enumerate() {
            o.copy_from_slice(&x[r * big_w + col..][..w]);
        }
    }

    /// dx (rows, big_w) columns col..col+w += dy (rows, w).
    pub fn columns_backward<F: Float>(dy: &[F], w: usize, dx: &mut [F], big_w: usize, col: usize) {
        if w == 0 {
            return;
        }
        for (r, g) in dy.chunks_exact(w).enumerate() {
            let d = &mut dx[r * big_w + col..][..w];
            d.iter_mut().zip(g).for_each(|(a, &b)| *a += b);
        }
    }
}
