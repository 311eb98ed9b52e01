//! Pointwise ops: residual add, difference, product, bias add, scaling, sum, |x|, tanh.

use super::{Op, same_shape};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
}

/// `out = a ∘ b` for two tensors of one shape.
#[derive(Clone, Debug)]
pub struct Binary {
    pub kind: BinaryKind,
    pub a: Tensor,
    pub b: Tensor,
    pub out: Tensor,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    Abs,
    Tanh,
    /// atanh of x clamped to ±ATANH_BOUND (a cosine's logit, for BCE on (cos+1)/2): finite at
    /// ±1, with no gradient beyond the bound.
    Atanh,
}

/// Where [`UnaryKind::Atanh`] clamps its input: atanh(1 − 1e-6) ≈ 7.25.
pub const ATANH_BOUND: f64 = 1.0 - 1e-6;

#[derive(Clone, Debug)]
pub struct Unary {
    pub kind: UnaryKind,
    pub x: Tensor,
    pub out: Tensor,
}

/// `out (…, N) = x (…, N) + bias (N)`.
#[derive(Clone, Debug)]
pub struct BiasAdd {
    pub x: Tensor,
    pub bias: Tensor,
    pub out: Tensor,
}

/// `out = c · x`.
#[derive(Clone, Debug)]
pub struct Scale {
    pub x: Tensor,
    pub out: Tensor,
    pub c: f64,
}

/// `out () = Σ x`.
#[derive(Clone, Debug)]
pub struct Sum {
    pub x: Tensor,
    pub out: Tensor,
}

impl<F: Float> Tape<F> {
    fn binary(&mut self, kind: BinaryKind, op: &'static str, a: Tensor, b: Tensor) -> Result<Tensor> {
        same_shape(op, a, b)?;
        let out = self.output(a.shape, &[a, b])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [ap, bp], [op]) =
                    self.store.cuda_io([], [Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cuda::binary(&dev, kind, ap, bp, op, out.numel())?;
            }
            Device::Cpu => {
                let ([av, bv], [ov]) = self.store.cpu_views([Slot::Val(a), Slot::Val(b)], [Slot::Val(out)])?;
                cpu::binary(kind, av, bv, ov);
            }
        }
        Ok(self.push(out, Op::Binary(Binary { kind, a, b, out })))
    }

    /// Elementwise `a + b` (the residual connection).
    pub fn add(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Add, "add", a, b)
    }

    pub fn sub(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Sub, "sub", a, b)
    }

    /// Elementwise product.
    pub fn mul(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Mul, "mul", a, b)
    }

    fn unary(&mut self, kind: UnaryKind, x: Tensor) -> Result<Tensor> {
        let out = self.output(x.shape, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::unary(&dev, kind, xp, op, out.numel())?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::unary(kind, xv, ov);
            }
        }
        Ok(self.push(out, Op::Unary(Unary { kind, x, out })))
    }

    pub fn abs(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Abs, x)
    }

    pub fn tanh(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Tanh, x)
    }

    /// atanh(clamp(x, ±ATANH_BOUND)).
    pub fn atanh(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Atanh, x)
    }

    /// `x (…, N) + bias (N)`.
    pub fn bias_add(&mut self, x: Tensor, bias: Tensor) -> Result<Tensor> {
        if bias.shape.rank() != 1 || bias.numel() != x.shape.last() {
            return Err(Error::shape(
                "bias_add",
                format!("bias {} does not match the last dimension of x {}", bias.shape, x.shape),
            ));
        }
        let out = self.output(x.shape, &[x, bias])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp, bp], [op]) =
                    self.store.cuda_io([], [Slot::Val(x), Slot::Val(bias)], [Slot::Val(out)])?;
                cuda::bias_add(&dev, xp, bp, op, x.shape.rows(), x.shape.last())?;
            }
            Device::Cpu => {
                let ([xv, bv], [ov]) = self.store.cpu_views([Slot::Val(x), Slot::Val(bias)], [Slot::Val(out)])?;
                cpu::bias_add(xv, bv, ov);
            }
        }
        Ok(self.push(out, Op::BiasAdd(BiasAdd { x, bias, out })))
    }

    /// `c · x`.
    pub fn scale(&mut self, x: Tensor, c: f64) -> Result<Tensor> {
        let out = self.output(x.shape, &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::scale(&dev, c as f32, xp, op, out.numel())?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                cpu::scale(F::from_f64(c), xv, ov);
            }
        }
        Ok(self.push(out, Op::Scale(Scale { x, out, c })))
    }

    /// The sum of all elements, as a scalar.
    pub fn sum(&mut self, x: Tensor) -> Result<Tensor> {
        let out = self.output(Shape::scalar(), &[x])?;
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [], [xp], [op]) = self.store.cuda_io([], [Slot::Val(x)], [Slot::Val(out)])?;
                cuda::sum(&dev, xp, op, x.numel())?;
            }
            Device::Cpu => {
                let ([xv], [ov]) = self.store.cpu_views([Slot::Val(x)], [Slot::Val(out)])?;
                ov[0] = xv.iter().copied().sum();
            }
        }
        Ok(self.push(out, Op::Sum(Sum { x, out })))
    }
}

impl Binary {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (a, b, out) = (self.a, self.b, self.out);
        match s.device {
            Device::Cuda(_) => {
                // One operand at a time: a and b may be the same tensor (x + x, x · x).
                if a.requires_grad {
                    let (dev, [], [bp, dy], [da]) = s.cuda_io([], [Slot::Val(b), Slot::Grad(out)], [Slot::Grad(a)])?;
                    cuda::binary_backward(&dev, self.kind, false, bp, dy, da, out.numel())?;
                }
                if b.requires_grad {
                    let (dev, [], [ap, dy], [db]) = s.cuda_io([], [Slot::Val(a), Slot::Grad(out)], [Slot::Grad(b)])?;
                    cuda::binary_backward(&dev, self.kind, true, ap, dy, db, out.numel())?;
                }
            }
            Device::Cpu => {
                // One operand at a time: a and b may be the same tensor (x + x, x · x).
                if a.requires_grad {
                    let ([bv, dy], [da]) = s.cpu_views([Slot::Val(b), Slot::Grad(out)], [Slot::Grad(a)])?;
                    cpu::binary_backward(self.kind, false, bv, dy, da);
                }
                if b.requires_grad {
                    let ([av, dy], [db]) = s.cpu_views([Slot::Val(a), Slot::Grad(out)], [Slot::Grad(b)])?;
                    cpu::binary_backward(self.kind, true, av, dy, db);
                }
            }
        }
        Ok(())
    }
}

impl Unary {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [xp, yp, dy], [dx]) = s.cuda_io(
                    [],
                    [Slot::Val(self.x), Slot::Val(self.out), Slot::Grad(self.out)],
                    [Slot::Grad(self.x)],
                )?;
                cuda::unary_backward(&dev, self.kind, xp, yp, dy, dx, self.x.numel())?;
            }
            Device::Cpu => {
                let ([xv, yv, dy], [dx]) =
                    s.cpu_views([Slot::Val(self.x), Slot::Val(self.out), Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cpu::unary_backward(self.kind, xv, yv, dy, dx);
            }
        }
        Ok(())
    }
}

impl BiasAdd {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        match s.device {
            Device::Cuda(_) => {
                if self.x.requires_grad {
                    let (dev, [], [dy], [dx]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                    cuda::accumulate(&dev, 1.0, dy, dx, self.x.numel())?;
                }
                if self.bias.requires_grad {
                    let (dev, [], [dy], [db]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.bias)])?;
                    cuda::bias_backward(&dev, dy, db, self.out.shape.rows(), self.out.shape.last())?;
                }
            }
            Device::Cpu => {
                if self.x.requires_grad {
                    let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                    cpu::accumulate(dy, dx);
                }
                if self.bias.requires_grad {
                    let ([dy], [db]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.bias)])?;
                    cpu::bias_backward(dy, db);
                }
            }
        }
        Ok(())
    }
}

impl Scale {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [dy], [dx]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::accumulate(&dev, self.c as f32, dy, dx, self.x.numel())?;
            }
            Device::Cpu => {
                let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                let c = F::from_f64(self.c);
                dx.iter_mut().zip(dy).for_each(|(g, &d)| *g += c * d);
            }
        }
        Ok(())
    }
}

impl Sum {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        match s.device {
            Device::Cuda(_) => {
                let (dev, [], [dy], [dx]) = s.cuda_io([], [Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                cuda::sum_backward(&dev, dy, dx, self.x.numel())?;
            }
            Device::Cpu => {
                let ([dy], [dx]) = s.cpu_views([Slot::Grad(self.out)], [Slot::Grad(self.x)])?;
                dx.iter_mut().for_each(|g| *g += dy[0]);
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/elementwise.cu; pointers are device addresses of f32 buffers.
pub mod cuda {
    use super::{BinaryKind, UnaryKind};
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::{Error, Result};

    const FILE: &str = "elementwise.cu";
    /// Rows of threads per block of the column-sum kernel (`COL_ROW_LANES` in the kernel).
    pub const COL_ROW_LANES: u32 = 16;

    fn binary_id(kind: BinaryKind) -> i32 {
        match kind {
            BinaryKind::Add => 0,
            BinaryKind::Sub => 1,
            BinaryKind::Mul => 2,
        }
    }

    fn unary_id(kind: UnaryKind) -> i32 {
        match kind {
            UnaryKind::Abs => 0,
            UnaryKind::Tanh => 1,
            UnaryKind::Atanh => 2,
        }
    }

    /// out (n) = a (n) ∘ b (n); a and b may be the same buffer.
    pub fn binary(dev: &Cuda, kind: BinaryKind, a: u64, b: u64, out: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let args = [Arg::I32(binary_id(kind)), Arg::Ptr(a), Arg::Ptr(b), Arg::Ptr(out), Arg::U64(n as u64)];
        dev.launch(FILE, "binary_forward", grid, block, 0, &args)
    }

    /// The gradient of one operand, as [`super::cpu::binary_backward`]: dx (n) += ∂(a ∘ b)/∂operand · dy (n);
    /// `other` (n) is the other operand's value, `second` says the operand is b.
    pub fn binary_backward(
        dev: &Cuda,
        kind: BinaryKind,
        second: bool,
        other: u64,
        dy: u64,
        dx: u64,
        n: usize,
    ) -> Result<()> {
        match kind {
            BinaryKind::Add => accumulate(dev, 1.0, dy, dx, n),
            BinaryKind::Sub => accumulate(dev, if second { -1.0 } else { 1.0 }, dy, dx, n),
            BinaryKind::Mul => {
                let (grid, block) = grid_1d(n);
                let args = [Arg::Ptr(other), Arg::Ptr(dy), Arg::Ptr(dx), Arg::U64(n as u64)];
                dev.launch(FILE, "mul_backward", grid, block, 0, &args)
            }
        }
    }

    /// dst (n) += c · src (n).
    pub fn accumulate(dev: &Cuda, c: f32, src: u64, dst: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        dev.launch(FILE, "accumulate", grid, block, 0, &[Arg::F32(c), Arg::Ptr(src), Arg::Ptr(dst), Arg::U64(n as u64)])
    }

    /// out (n) = f(x (n)).
    pub fn unary(dev: &Cuda, kind: UnaryKind, x: u64, out: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let args = [Arg::I32(unary_id(kind)), Arg::Ptr(x), Arg::Ptr(out), Arg::U64(n as u64)];
        dev.launch(FILE, "unary_forward", grid, block, 0, &args)
    }

    /// dx (n) += dy (n) · f'(x (n)), with y (n) = f(x) as saved by the forward.
    pub fn unary_backward(dev: &Cuda, kind: UnaryKind, x: u64, y: u64, dy: u64, dx: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let args = [Arg::I32(unary_id(kind)), Arg::Ptr(x), Arg::Ptr(y), Arg::Ptr(dy), Arg::Ptr(dx), Arg::U64(n as u64)];
        dev.launch(FILE, "unary_backward", grid, block, 0, &args)
    }

    /// out (rows, cols) = x (rows, cols) + bias (cols). Blocks of 256 threads cover 256 columns of
    /// a row; gridDim.y blocks stride over the rows (at most 8192 blocks in all).
    pub fn bias_add(dev: &Cuda, x: u64, bias: u64, out: u64, rows: usize, cols: usize) -> Result<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let gx = cols.div_ceil(256).min(8192);
        let gy = rows.min((8192 / gx).max(1)).min(65535);
        let args = [Arg::Ptr(x), Arg::Ptr(bias), Arg::Ptr(out), Arg::U64(rows as u64), Arg::U64(cols as u64)];
        dev.launch(FILE, "bias_add_forward", (gx as u32, gy as u32, 1), (256, 1, 1), 0, &args)
    }

    /// db (cols) += Σ_rows dy (rows, cols), in a fixed order (no atomics). One block of
    /// 32 × [`COL_ROW_LANES`] threads per 32 columns, each looping over all rows.
    pub fn bias_backward(dev: &Cuda, dy: u64, db: u64, rows: usize, cols: usize) -> Result<()> {
        let blocks = cols.div_ceil(32);
        if blocks > i32::MAX as usize {
            return Err(Error::Cuda(format!("bias_backward: {cols} columns need more than 2³¹ blocks")));
        }
        let args = [Arg::Ptr(dy), Arg::Ptr(db), Arg::U64(rows as u64), Arg::U64(cols as u64)];
        dev.launch(FILE, "bias_backward", (blocks as u32, 1, 1), (32, COL_ROW_LANES, 1), 0, &args)
    }

    /// out (n) = c · x (n).
    pub fn scale(dev: &Cuda, c: f32, x: u64, out: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        dev.launch(
            FILE,
            "scale_forward",
            grid,
            block,
            0,
            &[Arg::F32(c), Arg::Ptr(x), Arg::Ptr(out), Arg::U64(n as u64)],
        )
    }

    /// out () = Σ x (n): one block of 1024 threads (deterministic; written even when n = 0).
    pub fn sum(dev: &Cuda, x: u64, out: u64, n: usize) -> Result<()> {
        dev.launch(FILE, "sum_forward", (1, 1, 1), (1024, 1, 1), 0, &[Arg::Ptr(x), Arg::Ptr(out), Arg::U64(n as u64)])
    }

    /// dx (n) += dy ().
    pub fn sum_backward(dev: &Cuda, dy: u64, dx: u64, n: usize) -> Result<()> {
        let (grid, block) = grid_1d(n);
        dev.launch(FILE, "sum_backward", grid, block, 0, &[Arg::Ptr(dy), Arg::Ptr(dx), Arg::U64(n as u64)])
    }
}

/// The CPU references; loops over large tensors run in parallel chunks (results do not depend on
/// the chunking: every element is computed on its own).
pub mod cpu {
    use super::{BinaryKind, UnaryKind};
    use crate::float::Float;
    use crate::ops::{PAR_CHUNK, rows_per_chunk};
    use rayon::prelude::*;

    /// `f(out chunk, a chunk, b chunk)` over aligned parallel chunks.
    fn zip3<F: Float>(out: &mut [F], a: &[F], b: &[F], f: impl Fn(&mut [F], &[F], &[F]) + Sync) {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(a.par_chunks(PAR_CHUNK))
            .zip(b.par_chunks(PAR_CHUNK))
            .for_each(|((o, a), b)| f(o, a, b));
    }

    pub fn binary<F: Float>(kind: BinaryKind, a: &[F], b: &[F], out: &mut [F]) {
        zip3(out, a, b, |out, a, b| {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = match kind {
                    BinaryKind::Add => x + y,
                    BinaryKind::Sub => x - y,
                    BinaryKind::Mul => x * y,
                };
            }
        });
    }

    /// The gradient of one operand: `other` is the other operand's value; `second` says whether
    /// the gradient is b's (which matters for the sign of a difference).
    pub fn binary_backward<F: Float>(kind: BinaryKind, second: bool, other: &[F], dy: &[F], dx: &mut [F]) {
        match kind {
            BinaryKind::Add => accumulate(dy, dx),
            BinaryKind::Sub if !second => accumulate(dy, dx),
            BinaryKind::Sub => dx.par_chunks_mut(PAR_CHUNK).zip(dy.par_chunks(PAR_CHUNK)).for_each(|(dx, dy)| {
                dx.iter_mut().zip(dy).for_each(|(g, &d)| *g -= d);
            }),
            BinaryKind::Mul => zip3(dx, dy, other, |dx, dy, other| {
                for ((g, &d), &o) in dx.iter_mut().zip(dy).zip(other) {
                    *g += d * o;
                }
            }),
        }
    }

    pub fn unary<F: Float>(kind: UnaryKind, x: &[F], out: &mut [F]) {
        out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).for_each(|(out, x)| {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = match kind {
                    UnaryKind::Abs => v.abs(),
                    UnaryKind::Tanh => v.tanh(),
                    UnaryKind::Atanh => atanh(v),
                };
            }
        });
    }

    pub fn unary_backward<F: Float>(kind: UnaryKind, x: &[F], y: &[F], dy: &[F], dx: &mut [F]) {
        for i in 0..dx.len() {
            dx[i] += dy[i]
                * match kind {
                    UnaryKind::Abs => x[i].signum0(),
                    UnaryKind::Tanh => F::ONE - y[i] * y[i],
                    UnaryKind::Atanh if x[i].abs() < F::from_f64(super::ATANH_BOUND) => {
                        F::ONE / ((F::ONE - x[i]) * (F::ONE + x[i]))
                    }
                    UnaryKind::Atanh => F::ZERO,
                };
        }
    }

    /// atanh(clamp(x, ±b)) = (ln(1 + x) − ln(1 − x)) / 2, as the kernel computes it.
    #[inline(always)]
    fn atanh<F: Float>(x: F) -> F {
        let b = F::from_f64(super::ATANH_BOUND);
        let x = if x > b {
            b
        } else if x < -b {
            -b
        } else {
            x
        };
        F::from_f64(0.5) * (x.ln_1p() - (-x).ln_1p())
    }

    pub fn accumulate<F: Float>(src: &[F], dst: &mut [F]) {
        dst.par_chunks_mut(PAR_CHUNK).zip(src.par_chunks(PAR_CHUNK)).for_each(|(dst, src)| {
            dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
        });
    }

    pub fn bias_add<F: Float>(x: &[F], bias: &[F], out: &mut [F]) {
        let n = bias.len();
        let chunk = rows_per_chunk(n) * n;
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(out, x)| {
            for (orow, xrow) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                for j in 0..n {
                    orow[j] = xrow[j] + bias[j];
                }
            }
        });
    }

    /// dbias (N) += Σ_rows dy (rows, N).
    /// Columns in parallel chunks, rows in order within each: the same sums as a plain loop.
    pub fn bias_backward<F: Float>(dy: &[F], db: &mut [F]) {
        let n = db.len();
        db.par_chunks_mut(COLUMN_CHUNK).enumerate().for_each(|(ci, db)| {
            let (c0, w) = (ci * COLUMN_CHUNK, db.len());
            for row in dy.chunks_exact(n) {
                for (d, &g) in db.iter_mut().zip(&row[c0..c0 + w]) {
                    *d += g;
                }
            }
        });
    }

    /// Columns per parallel chunk of a column reduction (bias and layernorm gradients).
    pub const COLUMN_CHUNK: usize = 64;

    pub fn scale<F: Float>(c: F, x: &[F], out: &mut [F]) {
        out.iter_mut().zip(x).for_each(|(o, &v)| *o = c * v);
    }
}
