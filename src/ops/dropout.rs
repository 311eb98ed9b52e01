//! Inverted dropout: in training, each element is kept with probability 1 − p and scaled by
//! 1/(1 − p). The mask is drawn from a counter-based hash of (tape seed, call number, index), so
//! it is reproducible and the same on every device, and it is never stored: the backward pass
//! draws it again (a hash per element costs less than writing and reading a mask).
//!
//! Where an element's draw index comes from is the op's [`DropKey`]: its flat position, or
//! (issue 16) a layout-free index built from the token it belongs to (`crate::rng::token_key`),
//! so that a padded batch (B, T, C) and its token-packed twin (N, C) drop exactly the same
//! elements of every real token.

use super::{Op, expect_rank};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::rng::{MAX_KEYED_BATCH, MAX_KEYED_LEN};
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Arena, Tensor};

/// How an element's draw index is formed.
#[derive(Clone, Debug)]
pub enum DropKey {
    /// Element i of x draws at index i (depends on the layout).
    Flat,
    /// x viewed as (R, W), keys (R elements) of i32 token keys (`token_key(b, t)`): element
    /// (r, col) draws at `row_index(keys[r], W, col)`.
    Rows(Tensor),
    /// probs (B, NH, T, T): element (b, h, i, j) draws at `attention_index(b, h, i, j, NH)`.
    Attention { nh: usize, t: usize },
}

#[derive(Clone, Debug)]
pub struct Dropout {
    pub x: Tensor,
    pub out: Tensor,
    /// The mask's draw: probability, tape seed, stream, and what indexes it.
    pub p: f64,
    pub seed: u64,
    pub stream: u64,
    pub key: DropKey,
}

impl<F: Float> Tape<F> {
    /// Identity outside training or when `p` is 0 (nothing is recorded then).
    pub fn dropout(&mut self, x: Tensor, p: f64) -> Result<Tensor> {
        self.keyed_dropout(x, p, DropKey::Flat)
    }

    /// Dropout whose mask follows tokens, not positions: x (…, W) viewed as (R, W), keys an
    /// integer tensor of R token keys (`crate::rng::token_key(b, t)`, any shape, e.g. (B, T) for
    /// x (B, T, W) or (N) for a packed x (N, W)). A token's row draws the same mask whichever
    /// row holds it. Identity outside training or when `p` is 0, like [`Tape::dropout`].
    pub fn dropout_rows(&mut self, x: Tensor, keys: Tensor, p: f64) -> Result<Tensor> {
        if keys.arena != Arena::Int {
            return Err(Error::shape("dropout_rows", format!("keys {} must be an integer tensor", keys.shape)));
        }
        let rows = x.shape.rows();
        if keys.numel() != rows {
            return Err(Error::shape(
                "dropout_rows",
                format!("keys {} must hold one key per row of x {} ({rows} rows)", keys.shape, x.shape),
            ));
        }
        self.keyed_dropout(x, p, DropKey::Rows(keys))
    }

    /// Dropout of attention probabilities (B, NH, T, T) whose mask depends on (sequence, head,
    /// query, key) only, so a packed sequence's (NH, T_b, T_b) block can draw the same one.
    /// Identity outside training or when `p` is 0.
    pub fn attention_dropout(&mut self, probs: Tensor, p: f64) -> Result<Tensor> {
        const OP: &str = "attention_dropout";
        expect_rank(OP, "probs", probs, 4)?;
        let &[b, nh, t, tk] = probs.dims() else { unreachable!("rank checked") };
        if t != tk {
            return Err(Error::shape(OP, format!("probs {} must be (B, NH, T, T)", probs.shape)));
        }
        if b > MAX_KEYED_BATCH || t > MAX_KEYED_LEN {
            return Err(Error::shape(
                OP,
                format!(
                    "probs {}: keyed masks name at most {MAX_KEYED_BATCH} sequences of {MAX_KEYED_LEN}",
                    probs.shape
                ),
            ));
        }
        self.keyed_dropout(probs, p, DropKey::Attention { nh, t })
    }

    fn keyed_dropout(&mut self, x: Tensor, p: f64, key: DropKey) -> Result<Tensor> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::value("dropout", format!("probability {p} is outside [0, 1)")));
        }
        if !self.is_training() || p == 0.0 {
            return Ok(x);
        }
        let (seed, stream) = (self.seed(), self.next_stream());
        let out = self.output(x.shape, &[x])?;
        let op = Dropout { x, out, p, seed, stream, key };
        op.apply::<F, false>(&mut self.store, Slot::Val(x), Slot::Val(out))?;
        Ok(self.push(out, Op::Dropout(op)))
    }
}

impl Dropout {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        if !self.x.requires_grad {
            return Ok(());
        }
        self.apply::<F, true>(s, Slot::Grad(self.out), Slot::Grad(self.x))
    }

    /// dst = src · mask, or dst += src · mask when ACC (the backward pass, the same mask drawn
    /// again); src and dst have x's shape.
    fn apply<F: Float, const ACC: bool>(&self, s: &mut Store<F>, src: Slot, dst: Slot) -> Result<()> {
        let (p, seed, stream) = (self.p, self.seed, self.stream);
        let (n, w) = (self.x.numel(), self.x.shape.last());
        let rows = n / w.max(1);
        let on_gpu = matches!(s.device, Device::Cuda(_));
        match (on_gpu, &self.key) {
            (true, DropKey::Flat) => {
                let (dev, [], [sp], [dp]) = s.cuda_io([], [src], [dst])?;
                let launch = if ACC { cuda::backward } else { cuda::forward };
                launch(&dev, sp, p, seed, stream, dp, n)
            }
            (true, &DropKey::Rows(keys)) => {
                let (dev, [kp], [sp], [dp]) = s.cuda_io([keys], [src], [dst])?;
                let launch = if ACC { cuda::rows_backward } else { cuda::rows_forward };
                launch(&dev, sp, kp, p, seed, stream, dp, rows, w)
            }
            (true, &DropKey::Attention { nh, t }) => {
                let (dev, [], [sp], [dp]) = s.cuda_io([], [src], [dst])?;
                let launch = if ACC { cuda::attention_backward } else { cuda::attention_forward };
                launch(&dev, sp, p, seed, stream, dp, rows, nh, t)
            }
            (false, DropKey::Flat) => {
                let ([sv], [dv]) = s.cpu_views([src], [dst])?;
                if ACC {
                    cpu::backward(sv, p, seed, stream, dv)
                } else {
                    cpu::forward(sv, p, seed, stream, dv)
                }
                Ok(())
            }
            (false, &DropKey::Rows(keys)) => {
                let ([kv], [sv], [dv]) = s.cpu_io([keys], [src], [dst])?;
                if ACC {
                    cpu::backward_rows(sv, kv, p, seed, stream, dv)
                } else {
                    cpu::forward_rows(sv, kv, p, seed, stream, dv)
                }
                Ok(())
            }
            (false, &DropKey::Attention { nh, t }) => {
                let ([sv], [dv]) = s.cpu_views([src], [dst])?;
                if ACC {
                    cpu::backward_attention(sv, nh, t, p, seed, stream, dv)
                } else {
                    cpu::forward_attention(sv, nh, t, p, seed, stream, dv)
                }
                Ok(())
            }
        }
    }
}

/// Launchers of kernels/dropout.cu; pointers are device addresses of f32 buffers (keys: i32).
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda, grid_1d};
    use crate::error::{Error, Result};

    const FILE: &str = "dropout.cu";
    /// Warps (rows) per block of the keyed kernels (`ROW_WARPS` in the kernel).
    const ROW_WARPS: usize = 8;

    /// The arguments after the buffers: p is compared in f64 (passed as its bits) and the kept
    /// value is rounded to f32 here, on the host, exactly as the CPU path rounds it.
    fn draw(p: f64, seed: u64, stream: u64) -> [Arg; 4] {
        [Arg::U64(p.to_bits()), Arg::F32((1.0 / (1.0 - p)) as f32), Arg::U64(seed), Arg::U64(stream)]
    }

    /// out (n) = x (n) · 1/(1 − p) where hash_uniform(seed, stream, i) ≥ p, else 0: the mask of
    /// [`super::cpu::forward`].
    pub fn forward(dev: &Cuda, x: u64, p: f64, seed: u64, stream: u64, out: u64, n: usize) -> Result<()> {
        flat(dev, "dropout_forward", x, p, seed, stream, out, n)
    }

    /// dx (n) += dy (n) · the same mask, drawn again.
    pub fn backward(dev: &Cuda, dy: u64, p: f64, seed: u64, stream: u64, dx: u64, n: usize) -> Result<()> {
        flat(dev, "dropout_backward", dy, p, seed, stream, dx, n)
    }

    fn flat(
        dev: &Cuda,
        name: &'static str,
        src: u64,
        p: f64,
        seed: u64,
        stream: u64,
        dst: u64,
        n: usize,
    ) -> Result<()> {
        let (grid, block) = grid_1d(n);
        let mut args = vec![Arg::Ptr(src), Arg::Ptr(dst)];
        args.extend(draw(p, seed, stream));
        args.push(Arg::U64(n as u64));
        dev.launch(FILE, name, grid, block, 0, &args)
    }

    /// out (rows, w) = x (rows, w) · the mask of [`super::cpu::forward_rows`]: element (r, col)
    /// draws at row_index(keys[r], w, col), keys (rows) i32.
    pub fn rows_forward(
        dev: &Cuda,
        x: u64,
        keys: u64,
        p: f64,
        seed: u64,
        stream: u64,
        out: u64,
        rows: usize,
        w: usize,
    ) -> Result<()> {
        by_rows(dev, "dropout_rows_forward", Some(keys), x, p, seed, stream, out, rows, [w as u64])
    }

    /// dx (rows, w) += dy (rows, w) · the same mask, drawn again.
    pub fn rows_backward(
        dev: &Cuda,
        dy: u64,
        keys: u64,
        p: f64,
        seed: u64,
        stream: u64,
        dx: u64,
        rows: usize,
        w: usize,
    ) -> Result<()> {
        by_rows(dev, "dropout_rows_backward", Some(keys), dy, p, seed, stream, dx, rows, [w as u64])
    }

    /// out (B·NH·T, T) = probs · the mask of [`super::cpu::forward_attention`]: element
    /// (b, h, i, j) draws at attention_index(b, h, i, j, nh); rows = B·NH·T.
    pub fn attention_forward(
        dev: &Cuda,
        x: u64,
        p: f64,
        seed: u64,
        stream: u64,
        out: u64,
        rows: usize,
        nh: usize,
        t: usize,
    ) -> Result<()> {
        by_rows(dev, "dropout_attention_forward", None, x, p, seed, stream, out, rows, [nh as u64, t as u64])
    }

    /// dx (B·NH·T, T) += dy · the same mask, drawn again.
    pub fn attention_backward(
        dev: &Cuda,
        dy: u64,
        p: f64,
        seed: u64,
        stream: u64,
        dx: u64,
        rows: usize,
        nh: usize,
        t: usize,
    ) -> Result<()> {
        by_rows(dev, "dropout_attention_backward", None, dy, p, seed, stream, dx, rows, [nh as u64, t as u64])
    }

    /// One warp per row, warps striding over rows: `dims` are the kernel's trailing sizes after
    /// `rows` ([w] or [nh, t]), `keys` its key buffer when it has one.
    fn by_rows<const D: usize>(
        dev: &Cuda,
        name: &'static str,
        keys: Option<u64>,
        src: u64,
        p: f64,
        seed: u64,
        stream: u64,
        dst: u64,
        rows: usize,
        dims: [u64; D],
    ) -> Result<()> {
        if rows == 0 || dims.contains(&0) {
            return Ok(());
        }
        let mut args = vec![Arg::Ptr(src)];
        args.extend(keys.map(Arg::Ptr));
        args.push(Arg::Ptr(dst));
        args.extend(draw(p, seed, stream));
        args.push(Arg::U64(rows as u64));
        args.extend(dims.map(Arg::U64));
        let blocks = rows.div_ceil(ROW_WARPS).clamp(1, 65535) as u32;
        dev.launch(FILE, name, (blocks, 1, 1), (32 * ROW_WARPS as u32, 1, 1), 0, &args)
            .map_err(|e| Error::Cuda(format!("{name} of {rows} rows {dims:?}: {e}")))
    }
}

pub mod cpu {
    use crate::float::Float;
    use crate::ops::{PAR_CHUNK, rows_per_chunk, simd};
    use crate::rng::{attention_index, hash_bits, hash_key, keep_threshold, row_index};
    use rayon::prelude::*;

    /// The mask's value at element `index`: 1/(1 − p) where hash_uniform(seed, stream, index) ≥ p,
    /// else 0, compared as integers (see `keep_threshold`).
    #[derive(Clone, Copy)]
    struct Mask<F> {
        key: u64,
        threshold: u64,
        keep: F,
    }

    impl<F: Float> Mask<F> {
        fn new(p: f64, seed: u64, stream: u64) -> Self {
            Mask { key: hash_key(seed, stream), threshold: keep_threshold(p), keep: F::from_f64(1.0 / (1.0 - p)) }
        }
        #[inline(always)]
        fn at(self, index: u64) -> F {
            if hash_bits(self.key, index) >= self.threshold { self.keep } else { F::ZERO }
        }
    }

    /// out = x · mask, in parallel chunks; element i's draw depends on i only, so chunking
    /// changes nothing.
    pub fn forward<F: Float>(x: &[F], p: f64, seed: u64, stream: u64, out: &mut [F]) {
        let mask = Mask::new(p, seed, stream);
        out.par_chunks_mut(PAR_CHUNK).zip(x.par_chunks(PAR_CHUNK)).enumerate().for_each(|(ci, (out, x))| {
            let first = (ci * PAR_CHUNK) as u64;
            simd(|| {
                for i in 0..x.len() {
                    out[i] = x[i] * mask.at(first + i as u64);
                }
            })
        });
    }

    /// dx += dy · mask, the forward's mask drawn again.
    pub fn backward<F: Float>(dy: &[F], p: f64, seed: u64, stream: u64, dx: &mut [F]) {
        let mask = Mask::new(p, seed, stream);
        dx.par_chunks_mut(PAR_CHUNK).zip(dy.par_chunks(PAR_CHUNK)).enumerate().for_each(|(ci, (dx, dy))| {
            let first = (ci * PAR_CHUNK) as u64;
            simd(|| {
                for i in 0..dy.len() {
                    dx[i] += dy[i] * mask.at(first + i as u64);
                }
            })
        });
    }

    /// out (R, W) = x (R, W) · mask, element (r, col) drawn at row_index(keys[r], W, col); R is
    /// keys.len(). Keys are taken as i32 → u64 (sign-extended), as the kernel takes them.
    pub fn forward_rows<F: Float>(x: &[F], keys: &[i32], p: f64, seed: u64, stream: u64, out: &mut [F]) {
        let w = x.len() / keys.len().max(1);
        by_rows::<F, false>(x, w, |r| row_index(keys[r] as u64, w, 0), Mask::new(p, seed, stream), out);
    }

    /// dx (R, W) += dy (R, W) · the mask of [`forward_rows`], drawn again.
    pub fn backward_rows<F: Float>(dy: &[F], keys: &[i32], p: f64, seed: u64, stream: u64, dx: &mut [F]) {
        let w = dy.len() / keys.len().max(1);
        by_rows::<F, true>(dy, w, |r| row_index(keys[r] as u64, w, 0), Mask::new(p, seed, stream), dx);
    }

    /// out (B, NH, T, T) = probs · mask, element (b, h, i, j) drawn at attention_index(b, h, i, j,
    /// nh).
    pub fn forward_attention<F: Float>(x: &[F], nh: usize, t: usize, p: f64, seed: u64, stream: u64, out: &mut [F]) {
        by_rows::<F, false>(x, t, |r| attention_base(r, nh, t), Mask::new(p, seed, stream), out);
    }

    /// dx (B, NH, T, T) += dy · the mask of [`forward_attention`], drawn again.
    pub fn backward_attention<F: Float>(dy: &[F], nh: usize, t: usize, p: f64, seed: u64, stream: u64, dx: &mut [F]) {
        by_rows::<F, true>(dy, t, |r| attention_base(r, nh, t), Mask::new(p, seed, stream), dx);
    }

    /// Row r = (b·NH + h)·T + i of (B·NH·T, T) probabilities: attention_index(b, h, i, 0, nh),
    /// which the key j (< 2¹⁶) fills the low 16 bits of.
    #[inline(always)]
    fn attention_base(r: usize, nh: usize, t: usize) -> u64 {
        let (bh, i) = (r / t, r % t);
        attention_index(bh / nh, bh % nh, i, 0, nh)
    }

    /// dst = src · mask (dst += with ACC) over rows of `w`, element (r, col) drawn at
    /// base(r) + col: row_index is affine in col and attention_index's col bits are free, so the
    /// base is computed once a row and each element costs one hash. Rows in parallel chunks.
    #[inline(always)]
    fn by_rows<F: Float, const ACC: bool>(
        src: &[F],
        w: usize,
        base: impl Fn(usize) -> u64 + Sync,
        mask: Mask<F>,
        dst: &mut [F],
    ) {
        if w == 0 {
            return;
        }
        let rows = rows_per_chunk(w);
        dst.par_chunks_mut(rows * w).zip(src.par_chunks(rows * w)).enumerate().for_each(|(ci, (dst, src))| {
            simd(|| {
                for (r, (d, s)) in dst.chunks_exact_mut(w).zip(src.chunks_exact(w)).enumerate() {
                    let b = base(ci * rows + r);
                    for col in 0..w {
                        let v = s[col] * mask.at(b.wrapping_add(col as u64));
                        if ACC { d[col] += v } else { d[col] = v }
                    }
                }
            })
        });
    }
}
