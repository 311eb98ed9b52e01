//! Matrix products: `out = op(a) · op(b)`, op = identity or transpose.
//!
//! Two forms: a rank-2 `b` shared by every row of `a` (a linear layer: `a` (…, K) folded into
//! (M, K)), and matching batch dimensions (attention: (B, NH, T, HS) · (B, NH, T, HS)ᵀ).

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// The GEMM problem: `batch` products of (M, K) · (K, N), after transposes and folding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl MatDims {
    /// Checks operands and returns the problem and the output shape.
    pub fn infer(a: Shape, b: Shape, trans_a: bool, trans_b: bool) -> Result<(MatDims, Shape)> {
        let t = |x: bool| if x { "ᵀ" } else { "" };
        let err = |why: &str| Error::shape("matmul", format!("a{} {a} and b{} {b}: {why}", t(trans_a), t(trans_b)));
        if a.rank() < 2 || b.rank() < 2 {
            return Err(err("both operands need rank ≥ 2"));
        }
        let (bk, n) =
            if trans_b { (b.dim_from_end(0), b.dim_from_end(1)) } else { (b.dim_from_end(1), b.dim_from_end(0)) };
        let (batch, m, k) = if b.rank() == 2 {
            if trans_a && a.rank() != 2 {
                return Err(err("a transposed a needs rank 2 when b is a shared matrix"));
            }
            if trans_a { (1, a.dim_from_end(0), a.dim_from_end(1)) } else { (1, a.rows(), a.last()) }
        } else {
            if a.batch_dims() != b.batch_dims() {
                return Err(err("batch dimensions differ"));
            }
            let batch = a.batch_dims().iter().product();
            let (m, k) =
                if trans_a { (a.dim_from_end(0), a.dim_from_end(1)) } else { (a.dim_from_end(1), a.dim_from_end(0)) };
            (batch, m, k)
        };
        if k != bk {
            return Err(err(&format!("inner dimensions {k} and {bk} differ")));
        }
        let mut out: Vec<usize> = if b.rank() == 2 && !trans_a {
            a.dims()[..a.rank() - 1].to_vec()
        } else {
            let mut d = a.batch_dims().to_vec();
            d.push(m);
            d
        };
        out.push(n);
        Ok((MatDims { batch, m, n, k, trans_a, trans_b }, Shape::new(&out)?))
    }

    /// (row stride, column stride) of op(a) within one batch item.
    fn a_strides(&self) -> (isize, isize) {
        if self.trans_a { (1, self.m as isize) } else { (self.k as isize, 1) }
    }
    fn b_strides(&self) -> (isize, isize) {
        if self.trans_b { (1, self.k as isize) } else { (self.n as isize, 1) }
    }
    pub fn flops(&self) -> f64 {
        2.0 * (self.batch * self.m * self.n * self.k) as f64
    }
}

#[derive(Clone, Debug)]
pub struct Matmul {
    pub a: Tensor,
    pub b: Tensor,
    pub out: Tensor,
    pub dims: MatDims,
}

impl<F: Float> Tape<F> {
    /// `op(a) · op(b)`; see the module doc for the accepted shapes.
    pub fn matmul(&mut self, a: Tensor, b: Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let (dims, shape) = MatDims::infer(a.shape, b.shape, trans_a, trans_b)?;
        let out = self.output(shape, &[a, b])?;
        match self.store.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("matmul")),
            Device::Cpu => {
                let ([av, bv], [ov]) = self.store.cpu_views([Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cpu::forward(&dims, av, bv, ov);
            }
        }
        Ok(self.push(out, Op::Matmul(Matmul { a, b, out, dims })))
    }
}

impl Matmul {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (a, b, out, d) = (self.a, self.b, self.out, &self.dims);
        match s.device {
            Device::Cuda(_) => return Err(super::no_cuda_kernel("matmul")),
            Device::Cpu => {
                if a.requires_grad {
                    let ([bv, dy], [da]) = s.cpu_views([Slot::Val(b), Slot::Grad(out)], [Slot::Grad(a)])?;
                    cpu::backward_a(d, bv, dy, da);
                }
                if b.requires_grad {
                    let ([av, dy], [db]) = s.cpu_views([Slot::Val(a), Slot::Grad(out)], [Slot::Grad(b)])?;
                    cpu::backward_b(d, av, dy, db);
                }
            }
        }
        Ok(())
    }
}

pub mod cpu {
    use super::MatDims;
    use crate::float::Float;
    use rayon::prelude::*;

    /// A strided matrix operand: data, (row stride, column stride).
    type Operand<'a, F> = (&'a [F], (isize, isize));

    /// `dst (m×n, row-major) (+)= lhs (m×k) · rhs (k×n)`, multi-threaded for large products.
    pub fn gemm<F: Float>(
        m: usize,
        n: usize,
        k: usize,
        dst: &mut [F],
        lhs: Operand<F>,
        rhs: Operand<F>,
        accumulate: bool,
        threads: usize,
    ) {
        assert!(dst.len() >= m * n, "gemm: dst too small");
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !accumulate {
                dst[..m * n].fill(F::ZERO);
            }
            return;
        }
        let reach = |(rs, cs): (isize, isize), r: usize, c: usize| (r - 1) * rs as usize + (c - 1) * cs as usize + 1;
        assert!(lhs.0.len() >= reach(lhs.1, m, k) && rhs.0.len() >= reach(rhs.1, k, n), "gemm: operand too small");
        let par = if threads > 1 && m * n * k >= 48 * 48 * 48 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: the asserts above keep every strided access inside the slices.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                1,
                n as isize,
                accumulate,
                lhs.0.as_ptr(),
                lhs.1.1,
                lhs.1.0,
                rhs.0.as_ptr(),
                rhs.1.1,
                rhs.1.0,
                F::ONE,
                F::ONE,
                false,
                false,
                false,
                par,
            );
        }
    }

    fn t((rs, cs): (isize, isize)) -> (isize, isize) {
        (cs, rs)
    }

    /// Runs `f(item, dst_chunk)` over batch items: in parallel across items when there are many
    /// (attention), else one item with a multi-threaded GEMM.
    fn over_batch<F: Float>(batch: usize, dst: &mut [F], f: impl Fn(usize, &mut [F], usize) + Sync + Send) {
        let chunk = dst.len() / batch;
        if batch == 1 {
            f(0, dst, rayon::current_num_threads());
        } else {
            dst.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c, 1));
        }
    }

    /// out (batch, M, N) = op(a) · op(b).
    pub fn forward<F: Float>(d: &MatDims, a: &[F], b: &[F], out: &mut [F]) {
        let (sa, sb) = (d.m * d.k, if d.batch > 1 { d.k * d.n } else { 0 });
        over_batch(d.batch, out, |i, o, th| {
            gemm(d.m, d.n, d.k, o, (&a[i * sa..], d.a_strides()), (&b[i * sb..], d.b_strides()), false, th)
        });
    }

    /// da += dy · op(b)ᵀ (or its transpose when a is transposed).
    pub fn backward_a<F: Float>(d: &MatDims, b: &[F], dy: &[F], da: &mut [F]) {
        let (sb, sy) = (if d.batch > 1 { d.k * d.n } else { 0 }, d.m * d.n);
        let dy_s = (d.n as isize, 1);
        over_batch(d.batch, da, |i, g, th| {
            let (bi, yi) = (&b[i * sb..], &dy[i * sy..]);
            if d.trans_a {
                // a stored (K, M): da = op(b) · dyᵀ
                gemm(d.k, d.m, d.n, g, (bi, d.b_strides()), (yi, t(dy_s)), true, th)
            } else {
                gemm(d.m, d.k, d.n, g, (yi, dy_s), (bi, t(d.b_strides())), true, th)
            }
        });
    }

    /// db += op(a)ᵀ · dy (or its transpose when b is transposed); a shared b sums over all rows.
    pub fn backward_b<F: Float>(d: &MatDims, a: &[F], dy: &[F], db: &mut [F]) {
        let (sa, sy) = (d.m * d.k, d.m * d.n);
        let dy_s = (d.n as isize, 1);
        over_batch(d.batch, db, |i, g, th| {
            let (ai, yi) = (&a[i * sa..], &dy[i * sy..]);
            if d.trans_b {
                // b stored (N, K): db = dyᵀ · op(a)
                gemm(d.n, d.k, d.m, g, (yi, t(dy_s)), (ai, d.a_strides()), true, th)
            } else {
                gemm(d.k, d.n, d.m, g, (ai, t(d.a_strides())), (yi, dy_s), true, th)
            }
        });
    }
}
