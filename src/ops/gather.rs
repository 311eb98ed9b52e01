//! Chosen rows of a matrix: the masked-LM head runs on the masked positions' states only, so its
//! (M, V) logits stay small next to the (N, V) of every token.

use super::{Op, expect_rank};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// x (R, C), rows (M) int, distinct, in 0..R → out (M, C) = x[rows[m]].
#[derive(Clone, Debug)]
pub struct GatherRows {
    pub x: Tensor,
    pub rows: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    /// x (R, C) → (M, C): row rows[m] of x for each m. The rows must be distinct, so that the
    /// backward's scatter dx[rows[m]] += dy[m] has one writer per row.
    pub fn gather_rows(&mut self, x: Tensor, rows: Tensor) -> Result<Tensor> {
        let op = "gather_rows";
        expect_rank(op, "x", x, 2)?;
        expect_rank(op, "rows", rows, 1)?;
        let (r, c, m) = (x.dims()[0], x.dims()[1], rows.dims()[0]);
        check_rows(&self.store.read_ints(rows)?, r)?;
        let out = self.output(Shape::new(&[m, c])?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [rp], [xp], [op]) = self.store.cuda_io([rows], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::forward(&dev, xp, rp, op, m, c)?;
            }
            Device::Cpu => {
                let ([rv], [xv], [o]) = self.store.cpu_io([rows], [Slot::Val(x)], [Slot::Val(out)])?;
                cpu::forward(xv, rv, o);
            }
        }
        Ok(self.push(out, Op::GatherRows(GatherRows { x, rows, out })))
    }
}

/// Errors unless every row lies in 0..r and none repeats.
fn check_rows(rows: &[i32], r: usize) -> Result<()> {
    if let Some((i, &row)) = rows.iter().enumerate().find(|&(_, &v)| v < 0 || v as usize >= r) {
        return Err(Error::value("gather_rows", format!("row {row} at index {i} is outside 0..{r}")));
    }
    let mut seen = vec![false; r];
    for (i, &row) in rows.iter().enumerate() {
        if std::mem::replace(&mut seen[row as usize], true) {
            return Err(Error::value("gather_rows", format!("row {row} at index {i} repeats: rows must be distinct")));
        }
    }
    Ok(())
}

impl GatherRows {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        let (m, c) = (self.out.dims()[0], self.out.dims()[1]);
        match s.device {
            Device::Cuda(_) => {
                let (dev, [rp], [dyp], [dxp]) = s.cuda_io([self.rows], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::backward(&dev, dyp, rp, dxp, m, c)?;
            }
            Device::Cpu => {
                let ([rv], [dy], [dx]) = s.cpu_io([self.rows], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cpu::backward(dy, rv, dx);
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/gather.cu; pointers are device addresses (f32 buffers, i32 rows). One
/// thread per element of the gathered (M, C).
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "gather.cu";

    fn launch(dev: &Cuda, name: &'static str, ptrs: [u64; 3], m: usize, c: usize) -> Result<()> {
        let (grid, block) = grid_1d(m * c);
        let mut args: Vec<Arg> = ptrs.iter().map(|&p| Arg::Ptr(p)).collect();
        args.extend([Arg::U64(m as u64), Arg::U64(c as u64)]);
        dev.launch(FILE, name, grid, block, 0, &args)
    }

    /// x (R, C), rows (M) int → out (M, C) = x[rows[m]].
    pub fn forward(dev: &Cuda, x: u64, rows: u64, out: u64, m: usize, c: usize) -> Result<()> {
        launch(dev, "gather_rows_forward", [x, rows, out], m, c)
    }

    /// dx[rows[m]] (of (R, C)) += dy[m] (M, C); the rows distinct.
    pub fn backward(dev: &Cuda, dy: u64, rows: u64, dx: u64, m: usize, c: usize) -> Result<()> {
        launch(dev, "gather_rows_backward", [dy, rows, dx], m, c)
    }
}

pub mod cpu {
    use crate::float::Float;

    /// out (M, C) = x[rows[m]], C = out.len() / M.
    pub fn forward<F: Float>(x: &[F], rows: &[i32], out: &mut [F]) {
        let c = out.len() / rows.len().max(1);
        if c == 0 {
            return;
        }
        for (o, &r) in out.chunks_exact_mut(c).zip(rows) {
            o.copy_from_slice(&x[r as usize * c..][..c]);
        }
    }

    /// dx[rows[m]] += dy[m].
    pub fn backward<F: Float>(dy: &[F], rows: &[i32], dx: &mut [F]) {
        let c = dy.len() / rows.len().max(1);
        if c == 0 {
            return;
        }
        for (g, &r) in dy.chunks_exact(c).zip(rows) {
            dx[r as usize * c..][..c].iter_mut().zip(g).for_each(|(a, &v)| *a += v);
        }
    }
}
