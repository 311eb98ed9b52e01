//! Moving attention heads between the token-major and head-major layouts:
//! split (B, T, C) → (B, NH, T, HS) before the score matmuls, merge back after the context one.

use super::{Op, expect_rank};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// x (B, T, C) → out (B, NH, T, HS), out[b, h, t, d] = x[b, t, h·HS + d].
#[derive(Clone, Debug)]
pub struct SplitHeads {
    pub x: Tensor,
    pub out: Tensor,
}

/// x (B, NH, T, HS) → out (B, T, NH·HS), the inverse of [`SplitHeads`].
#[derive(Clone, Debug)]
pub struct MergeHeads {
    pub x: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    pub fn split_heads(&mut self, x: Tensor, heads: usize) -> Result<Tensor> {
        expect_rank("split_heads", "x", x, 3)?;
        let (b, t, c) = (x.dims()[0], x.dims()[1], x.dims()[2]);
        if heads == 0 || c % heads != 0 {
            return Err(Error::shape(
                "split_heads",
                format!("{c} channels of x {} do not split into {heads} heads", x.shape),
            ));
        }
        let out = self.output(Shape::new(&[b, heads, t, c / heads])?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::permute(&dev, xp, [b, t, heads, c / heads], Direction::Split, false, op)?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::permute(xv, [b, t, heads, c / heads], Direction::Split, false, ov);
            }
        }
        Ok(self.push(out, Op::SplitHeads(SplitHeads { x, out })))
    }

    pub fn merge_heads(&mut self, x: Tensor) -> Result<Tensor> {
        expect_rank("merge_heads", "x", x, 4)?;
        let d = x.dims();
        let (b, nh, t, hs) = (d[0], d[1], d[2], d[3]);
        let out = self.output(Shape::new(&[b, t, nh * hs])?, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::permute(&dev, xp, [b, t, nh, hs], Direction::Merge, false, op)?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::permute(xv, [b, t, nh, hs], Direction::Merge, false, ov);
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
        heads_backward(s, self.x, self.out, [d[0], d[2], d[1], d[3]], Direction::Merge)
    }
}

impl MergeHeads {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let d = self.x.dims();
        heads_backward(s, self.x, self.out, [d[0], d[2], d[1], d[3]], Direction::Split)
    }
}

/// The gradient of a permutation is the inverse permutation of the output gradient.
fn heads_backward<F: Float>(
    s: &mut Store<F>,
    x: Tensor,
    out: Tensor,
    btnh: [usize; 4],
    inverse: Direction,
) -> Result<()> {
    if !x.requires_grad {
        return Ok(());
    }
    match s.device {
        Device::Cuda(_) => {
            let (dev, [], [dyp], [dxp]) = s.cuda_io([], [Slot::Grad(out)], [Slot::Grad(x)])?;
            cuda::permute(&dev, dyp, btnh, inverse, true, dxp)?;
        }
        Device::Cpu => {
            let ([dy], [dx]) = s.cpu_views([Slot::Grad(out)], [Slot::Grad(x)])?;
            cpu::permute(dy, btnh, inverse, true, dx);
        }
    }
    Ok(())
}

/// Launchers of kernels/permute.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use super::Direction;
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::Result;

    const FILE: &str = "permute.cu";

    /// Split: src (B, T, NH, HS) → dst (B, NH, T, HS); merge: the reverse. `accumulate` adds into
    /// dst instead of writing it (backward). One thread per element of dst.
    pub fn permute(
        dev: &Cuda,
        src: u64,
        [b, t, nh, hs]: [usize; 4],
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
            Arg::I32(accumulate as i32),
        ];
        dev.launch(FILE, name, grid, block, 0, &args)
    }
}

pub mod cpu {
    use super::Direction;
    use crate::float::Float;

    /// Token-major (B, T, NH, HS) ↔ head-major (B, NH, T, HS); `accumulate` adds instead of writing.
    pub fn permute<F: Float>(src: &[F], [b, t, nh, hs]: [usize; 4], dir: Direction, accumulate: bool, dst: &mut [F]) {
        for bi in 0..b {
            for ti in 0..t {
                for h in 0..nh {
                    let tok = ((bi * t + ti) * nh + h) * hs;
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
