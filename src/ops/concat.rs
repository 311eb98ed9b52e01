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
            Device::Cuda(_) => return Err(super::no_cuda_kernel("concat")),
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
            Device::Cuda(_) => return Err(super::no_cuda_kernel("concat")),
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
