//! A linear layer with low-rank adapters folded into its weight, as one op:
//! `out (…, OUT) = x (…, IN) · W'ᵀ + b`, `W' = W + Σ s·B·A` over its adapters, each on a band of
//! W's rows (the query and value bands of a fused (3C, C) projection).
//!
//! The unfolded form, `x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ` per adapter, costs two skinny GEMMs, a scale, an
//! add (and a head split, in the fused projection) per adapter and pass, and as much again
//! backward. Folded, the base GEMM reads W' instead of W (formed once per call: R·OUT·IN
//! multiply-adds, against M·OUT·IN for the GEMM itself), and backward needs only what the
//! adapters' gradients take, through the narrow `Z = x·(s·A)ᵀ` (M, R) kept from the forward:
//! `dX = dY·W'`, `dB = dY_bandᵀ·Z`, `dA = s·(dY_band·B)ᵀ·x` — never a full (OUT, IN) product.
//!
//! W' holds W + s·B·A in the matmuls' arithmetic: the model uses this op only when that is float32
//! (`matmul::exact_f32`), where the adapters' update survives the sum. In bf16 or tf32 a small
//! s·B·A would round away against W, so there (and under adapter dropout, which acts on the
//! adapters' input alone) the adapters keep their own path (`Lora::delta`).

use super::Op;
use super::linear::Linear;
use super::matmul::{self, MatDims};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};

/// One adapter on rows `row..row + OUTᵦ` of a linear's weight: A (R, IN), B (OUTᵦ, R).
#[derive(Clone, Copy, Debug)]
pub struct Band {
    pub row: usize,
    pub a: Tensor,
    pub b: Tensor,
}

/// A band and the activations its backward uses.
#[derive(Clone, Copy, Debug)]
pub struct BandActs {
    pub band: Band,
    /// s·A (R, IN).
    pub scaled_a: Tensor,
    /// x·(s·A)ᵀ (M, R).
    pub z: Tensor,
    /// Room for dY_band·B (M, R), written in backward.
    pub g: Tensor,
}

#[derive(Clone, Debug)]
pub struct LoraLinear {
    pub x: Tensor,
    pub w: Tensor,
    pub b: Tensor,
    /// W' (OUT, IN).
    pub merged: Tensor,
    pub bands: Vec<BandActs>,
    pub scale: f64,
    pub out: Tensor,
    pub dims: MatDims,
}

impl<F: Float> Tape<F> {
    /// x (…, IN) · (w + Σ scale·B·A)ᵀ + b → (…, OUT), each band's B·A added to its rows of w.
    pub fn lora_linear(&mut self, x: Tensor, w: Tensor, b: Tensor, bands: &[Band], scale: f64) -> Result<Tensor> {
        let (dims, shape) = super::linear::check("lora_linear", x, w, b)?;
        for band in bands {
            let (a, bb) = (band.a.dims(), band.b.dims());
            if a.len() != 2 || bb.len() != 2 || a[1] != dims.k || bb[1] != a[0] || band.row + bb[0] > dims.n {
                return Err(Error::shape(
                    "lora_linear",
                    format!(
                        "adapter A {} and B {} at row {} do not fit weight {} (A must be (R, {}), B (rows, R) within its {} rows)",
                        band.a.shape, band.b.shape, band.row, w.shape, dims.k, dims.n
                    ),
                ));
            }
        }
        let mut inputs = vec![x, w, b];
        inputs.extend(bands.iter().flat_map(|band| [band.a, band.b]));
        let out = self.output(shape, &inputs)?;
        let merged = self.store.alloc_act(w.shape, false)?;
        let mut acts = Vec::with_capacity(bands.len());
        for &band in bands {
            let r = band.a.dims()[0];
            acts.push(BandActs {
                band,
                scaled_a: self.store.alloc_act(band.a.shape, false)?,
                z: self.store.alloc_act(Shape::new(&[dims.m, r])?, false)?,
                g: self.store.alloc_act(Shape::new(&[dims.m, r])?, false)?,
            });
        }
        let op = LoraLinear { x, w, b, merged, bands: acts, scale, out, dims };
        op.forward(&mut self.store)?;
        Ok(self.push(out, Op::LoraLinear(op)))
    }
}

/// `dst (m×n, row-major) (+)= lhs (m×k) · rhs (k×n)`, one of the op's GEMMs: each operand as
/// (element offset, (row stride, column stride)) into its tensor.
struct Product {
    m: usize,
    n: usize,
    k: usize,
    lhs: (usize, (usize, usize)),
    rhs: (usize, (usize, usize)),
    accumulate: bool,
}

impl Product {
    /// The product as the CUDA GEMM runs it: operands at device addresses `lhs` and `rhs` (each
    /// from its element offset), the output at `dst`, elements of `size` bytes.
    fn cuda(&self, lhs: u64, rhs: u64, dst: u64, size: u64) -> matmul::cuda::Gemm {
        use matmul::cuda::View;
        let view =
            |ptr: u64, (off, (rs, cs)): (usize, (usize, usize))| View { ptr: ptr + off as u64 * size, rs, cs, bs: 0 };
        matmul::cuda::Gemm {
            batch: 1,
            m: self.m,
            n: self.n,
            k: self.k,
            a: view(lhs, self.lhs),
            b: view(rhs, self.rhs),
            c: View { ptr: dst, rs: self.n, cs: 1, bs: 0 },
            accumulate: self.accumulate,
        }
    }
}

impl LoraLinear {
    /// The plain linear x · wᵀ + b on weight `w` (W or W').
    fn base(&self, w: Tensor) -> Linear {
        Linear { x: self.x, w, b: self.b, out: self.out, dims: self.dims }
    }

    fn forward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (d, inp) = (&self.dims, self.dims.k);
        // W' = W, then each band's rows += B·(s·A); Z = x·(s·A)ᵀ.
        copy(s, self.w, self.merged)?;
        for ba in &self.bands {
            let (r, rows) = (ba.band.a.dims()[0], ba.band.b.dims()[0]);
            scale(s, self.scale, ba.band.a, ba.scaled_a)?;
            let merge = Product { m: rows, n: inp, k: r, lhs: (0, (r, 1)), rhs: (0, (inp, 1)), accumulate: true };
            gemm(
                s,
                &merge,
                [Slot::Val(ba.band.b), Slot::Val(ba.scaled_a)],
                (Slot::Val(self.merged), ba.band.row * inp),
            )?;
            let z = Product { m: d.m, n: r, k: inp, lhs: (0, (inp, 1)), rhs: (0, (1, inp)), accumulate: false };
            gemm(s, &z, [Slot::Val(self.x), Slot::Val(ba.scaled_a)], (Slot::Val(ba.z), 0))?;
        }
        self.base(self.merged).forward(s)
    }

    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (d, out_dim, inp) = (&self.dims, self.dims.n, self.dims.k);
        // dX += dY·W', dW += dYᵀ·x (dW' is dW), db.
        self.base(self.w).backward_through(s, self.merged)?;
        for ba in &self.bands {
            let (band, r, rows) = (ba.band, ba.band.a.dims()[0], ba.band.b.dims()[0]);
            if band.b.requires_grad {
                // dB += dY_bandᵀ · Z
                let db = Product {
                    m: rows,
                    n: r,
                    k: d.m,
                    lhs: (band.row, (1, out_dim)),
                    rhs: (0, (r, 1)),
                    accumulate: true,
                };
                gemm(s, &db, [Slot::Grad(self.out), Slot::Val(ba.z)], (Slot::Grad(band.b), 0))?;
            }
            if band.a.requires_grad {
                // G = s · dY_band · B, then dA += Gᵀ · x
                let g = Product {
                    m: d.m,
                    n: r,
                    k: rows,
                    lhs: (band.row, (out_dim, 1)),
                    rhs: (0, (r, 1)),
                    accumulate: false,
                };
                gemm(s, &g, [Slot::Grad(self.out), Slot::Val(band.b)], (Slot::Val(ba.g), 0))?;
                scale_in_place(s, self.scale, ba.g)?;
                let da = Product { m: r, n: inp, k: d.m, lhs: (0, (1, r)), rhs: (0, (inp, 1)), accumulate: true };
                gemm(s, &da, [Slot::Val(ba.g), Slot::Val(self.x)], (Slot::Grad(band.a), 0))?;
            }
        }
        Ok(())
    }
}

/// Runs `g` on the store's device in its matmul arithmetic: operands `reads` (each from the
/// element offset in `g`), output `dst` from element offset `dst.1`.
fn gemm<F: Float>(s: &mut Store<F>, g: &Product, reads: [Slot; 2], dst: (Slot, usize)) -> Result<()> {
    let p = s.precision;
    match s.device {
        Device::Cuda(_) => {
            let (dev, [], [lp, rp], [op]) = s.cuda_io([], reads, [dst.0])?;
            let size = std::mem::size_of::<F>() as u64;
            let gemm = g.cuda(lp, rp, op + dst.1 as u64 * size, size);
            matmul::cuda::gemm(&dev, &gemm, matmul::cuda::Kind::of(&dev, p))
        }
        Device::Cpu => {
            let ([lv, rv], [ov]) = s.cpu_views(reads, [dst.0])?;
            let (lv, rv) = (matmul::cpu::operand(lv, p), matmul::cpu::operand(rv, p));
            let strides = |(rs, cs): (usize, usize)| (rs as isize, cs as isize);
            matmul::cpu::gemm(
                g.m,
                g.n,
                g.k,
                &mut ov[dst.1..],
                (&lv[g.lhs.0..], strides(g.lhs.1)),
                (&rv[g.rhs.0..], strides(g.rhs.1)),
                g.accumulate,
                rayon::current_num_threads(),
            );
            Ok(())
        }
    }
}

/// dst = src (1·v is v exactly).
fn copy<F: Float>(s: &mut Store<F>, src: Tensor, dst: Tensor) -> Result<()> {
    scale(s, 1.0, src, dst)
}

/// dst = c · src.
fn scale<F: Float>(s: &mut Store<F>, c: f64, src: Tensor, dst: Tensor) -> Result<()> {
    match s.device {
        Device::Cuda(_) => {
            let (dev, [], [sp], [dp]) = s.cuda_io([], [Slot::Val(src)], [Slot::Val(dst)])?;
            super::elementwise::cuda::scale(&dev, c as f32, sp, dp, src.numel())
        }
        Device::Cpu => {
            let ([sv], [dv]) = s.cpu_views([Slot::Val(src)], [Slot::Val(dst)])?;
            super::elementwise::cpu::scale(F::from_f64(c), sv, dv);
            Ok(())
        }
    }
}

/// t = c · t.
fn scale_in_place<F: Float>(s: &mut Store<F>, c: f64, t: Tensor) -> Result<()> {
    match s.device {
        Device::Cuda(_) => {
            let (dev, [], [], [tp]) = s.cuda_io([], [], [Slot::Val(t)])?;
            // Each element reads only itself.
            super::elementwise::cuda::scale(&dev, c as f32, tp, tp, t.numel())
        }
        Device::Cpu => {
            let ([], [tv]) = s.cpu_views([], [Slot::Val(t)])?;
            let c = F::from_f64(c);
            tv.iter_mut().for_each(|v| *v = c * *v);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Product;

    /// The CUDA GEMM descriptions of the op's products, run on the host over one flat "device
    /// memory" (an address is 8 × an element index), equal the CPU's strided GEMMs: the bands'
    /// row offsets, the column slices of dY read straight and transposed, the accumulation.
    #[test]
    fn cuda_descriptions_read_and_write_what_the_cpu_does() {
        let (m, out, inp, r, row, rows) = (5, 9, 7, 2, 6, 3);
        let products = [
            // merge: W'[row..] += B · sA
            (Product { m: rows, n: inp, k: r, lhs: (0, (r, 1)), rhs: (0, (inp, 1)), accumulate: true }, row * inp),
            // Z = x · sAᵀ
            (Product { m, n: r, k: inp, lhs: (0, (inp, 1)), rhs: (0, (1, inp)), accumulate: false }, 0),
            // dB += dY_bandᵀ · Z
            (Product { m: rows, n: r, k: m, lhs: (row, (1, out)), rhs: (0, (r, 1)), accumulate: true }, 0),
            // G = dY_band · B
            (Product { m, n: r, k: rows, lhs: (row, (out, 1)), rhs: (0, (r, 1)), accumulate: false }, 0),
            // dA += Gᵀ · x
            (Product { m: r, n: inp, k: m, lhs: (0, (1, r)), rhs: (0, (inp, 1)), accumulate: true }, 0),
        ];
        let value = |i: usize| ((i * 37 % 23) as f64 - 11.0) / 7.0;
        for (pi, (g, dst_off)) in products.iter().enumerate() {
            // lhs, rhs and dst each get 100 elements, at 0, 100 and 200 of the memory.
            let mut mem: Vec<f64> = (0..300).map(value).collect();
            let mut cpu_dst = mem[200..].to_vec();
            crate::ops::matmul::cpu::gemm(
                g.m,
                g.n,
                g.k,
                &mut cpu_dst[*dst_off..],
                (&mem[g.lhs.0..100], (g.lhs.1.0 as isize, g.lhs.1.1 as isize)),
                (&mem[100 + g.rhs.0..200], (g.rhs.1.0 as isize, g.rhs.1.1 as isize)),
                g.accumulate,
                1,
            );
            let d = g.cuda(0, 800, (200 + dst_off) as u64 * 8, 8);
            assert_eq!((d.batch, d.c.cs), (1, 1));
            let at = |v: crate::ops::matmul::cuda::View, i: usize, j: usize| v.ptr as usize / 8 + i * v.rs + j * v.cs;
            for i in 0..d.m {
                for j in 0..d.n {
                    let sum: f64 = (0..d.k).map(|k| mem[at(d.a, i, k)] * mem[at(d.b, k, j)]).sum();
                    let c = at(d.c, i, j);
                    mem[c] = if d.accumulate { mem[c] + sum } else { sum };
                }
            }
            for (e, (gpu, cpu)) in mem[200..].iter().zip(&cpu_dst).enumerate() {
                assert!(
                    (gpu - cpu).abs() <= 1e-12,
                    "product {pi}: element {e}: {gpu} on the GPU's reading, {cpu} on the CPU"
                );
            }
        }
    }
}
