//! Moving attention heads between the token-major and head-major layouts:
//! split (B, T, C) → (B, NH, T, HS) before the score matmuls, merge back after the context one.
//! A split may read a column range of a wider tensor: q, k and v straight out of one fused
//! (B, T, 3C) projection.

use super::{Op, expect_rank};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// x (B, T, W) → out (B, NH, T, HS), out[b, h, t, d] = x[b, t, col0 + h·HS + d].
#[derive(Clone, Debug)]
pub struct SplitHeads {
    pub x: Tensor,
    pub out: Tensor,
    pub col0: usize,
}

/// Where the token-major side lives: rows of `width` floats, the heads from column `col0` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Columns {
    pub width: usize,
    pub col0: usize,
}

/// x (B, NH, T, HS) → out (B, T, NH·HS), the inverse of [`SplitHeads`].
#[derive(Clone, Debug)]
pub struct MergeHeads {
    pub x: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    /// x (B, T, C) → (B, NH, T, C/NH).
    pub fn split_heads(&mut self, x: Tensor, heads: usize) -> Result<Tensor> {
        expect_rank("split_heads", "x", x, 3)?;
        self.split_heads_cols(x, 0, x.dims()[2], heads)
    }

    /// Columns col0..col0+c of x (B, T, W) → (B, NH, T, c/NH).
    pub fn split_heads_cols(&mut self, x: Tensor, col0: usize, c: usize, heads: usize) -> Result<Tensor> {
        expect_rank("split_heads", "x", x, 3)?;
        let (b, t, w) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        if heads == 0 || !c.is_multiple_of(heads) || col0 + c > w {
            return Err(Error::shape(
                "split_heads",
                format!("columns {col0}..{} of x {} do not split into {heads} heads", col0 + c, x.shape),
            ));
        }
        let out = self.output(Shape::new(&[b, heads, t, c / heads])?, &[x])?;
        let cols = Columns { width: w, col0 };
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::permute(&dev, xp, [b, t, heads, c / heads], cols, Direction::Split, false, op)?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::permute(xv, [b, t, heads, c / heads], cols, Direction::Split, false, ov);
            }
        }
        Ok(self.push(out, Op::SplitHeads(SplitHeads { x, out, col0 })))
    }

    pub fn merge_heads(&mut self, x: Tensor) -> Result<Tensor> {
        expect_rank("merge_heads", "x", x, 4)?;
        let d = x.dims();
        let (b, nh, t, hs) = (d[0], d[1], d[2], d[3]);
        let out = self.output(Shape::new(&[b, t, nh * hs])?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::permute(
                    &dev,
                    xp,
                    [b, t, nh, hs],
                    Columns { width: nh * hs, col0: 0 },
                    Direction::Merge,
                    false,
                    op,
                )?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::permute(xv, [b, t, nh, hs], Columns { width: nh * hs, col0: 0 }, Direction::Merge, false, ov);
            }
        }
        Ok(self.push(out, Op::MergeHeads(MergeHeads { x, out })))
    }
}

/// Which way a permutation runs: token-major → head-major (split) or back (merge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Split,
    Merge,
}

impl SplitHeads {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let d = self.out.dims();
        let cols = Columns { width: self.x.dims()[2], col0: self.col0 };
        heads_backward(s, self.x, self.out, [d[0], d[2], d[1], d[3]], cols, Direction::Merge)
    }
}

impl MergeHeads {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let d = self.x.dims();
        let cols = Columns { width: d[1] * d[3], col0: 0 };
        heads_backward(s, self.x, self.out, [d[0], d[2], d[1], d[3]], cols, Direction::Split)
    }
}

/// The gradient of a permutation is the inverse permutation of the output gradient.
fn heads_backward<F: Float>(
    s: &mut Store<F>,
    x: Tensor,
    out: Tensor,
    btnh: [usize; 4],
    cols: Columns,
    inverse: Direction,
) -> Result<()> {
    if !x.requires_grad {
        return Ok(());
    }
    match s.device {
        Device::Cuda(_) => {
            let (dev, [], [dyp], [dxp]) = s.cuda_io([], [Slot::Grad(out)], [Slot::Grad(x)])?;
            cuda::permute(&dev, dyp, btnh, cols, inverse, true, dxp)?;
        }
        Device::Cpu => {
            let ([dy], [dx]) = s.cpu_views([Slot::Grad(out)], [Slot::Grad(x)])?;
            cpu::permute(dy, btnh, cols, inverse, true, dx);
        }
    }
    Ok(())
}

/// Launchers of kernels/permute.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use super::{Columns, Direction};
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "permute.cu";

    /// Split: token-major src (rows of `cols.width`, heads from `cols.col0`) → dst (B, NH, T, HS);
    /// merge: the reverse. `accumulate` adds into dst instead of writing it (backward). One thread
    /// per element of the head-major side.
    pub fn permute(
        dev: &Cuda,
        src: u64,
        [b, t, nh, hs]: [usize; 4],
        cols: Columns,
        dir: Direction,
        accumulate: bool,
        dst: u64,
    ) -> Result<()> {
        let name = match dir {
            Direction::Split => "split_heads",
            Direction::Merge => "merge_heads",
        };
        let (grid, block) = grid_1d(b * t * nh * hs);
        let args = [
            Arg::Ptr(src),
            Arg::Ptr(dst),
            Arg::U64(b as u64),
            Arg::U64(t as u64),
            Arg::U64(nh as u64),
            Arg::U64(hs as u64),
            Arg::U64(cols.width as u64),
            Arg::U64(cols.col0 as u64),
            Arg::I32(accumulate as i32),
        ];
        dev.launch(FILE, name, grid, block, 0, &args)
    }
}

pub mod cpu {
    use super::{Columns, Direction};
    use crate::float::Float;

    /// Token-major (B, T, W) columns col0.. ↔ head-major (B, NH, T, HS); `accumulate` adds
    /// instead of writing.
    pub fn permute<F: Float>(
        src: &[F],
        [b, t, nh, hs]: [usize; 4],
        cols: Columns,
        dir: Direction,
        accumulate: bool,
        dst: &mut [F],
    ) {
        for bi in 0..b {
            for ti in 0..t {
                for h in 0..nh {
                    let tok = (bi * t + ti) * cols.width + cols.col0 + h * hs;
                    let head = ((bi * nh + h) * t + ti) * hs;
                    let (from, to) = match dir {
                        Direction::Split => (tok, head),
                        Direction::Merge => (head, tok),
                    };
                    let (sr, dr) = (&src[from..from + hs], &mut dst[to..to + hs]);
                    if accumulate {
                        dr.iter_mut().zip(sr).for_each(|(a, &v)| *a += v);
                    } else {
                        dr.copy_from_slice(sr);
                    }
                }
            }
        }
    }
}
