//! Variable-length attention over a token-packed batch (issue 16, packed batches): the real tokens
//! of B sequences back to back, (N, C), with sequence offsets `cu` (B + 1 entries, cu[0] = 0,
//! cu[B] = N; sequence b is rows cu[b]..cu[b+1], length T_b). Each sequence attends over itself
//! only, per head, with no padding anywhere:
//!
//! ```text
//! P_b,h = softmax_j(scale · q_b,h · k_b,hᵀ)    (T_b, T_b), saved for backward
//! ctx_b,h = P_b,h · v_b,h                      (T_b, HS)
//! ```
//!
//! Layout: q, k, v and ctx are (N, C) with C = NH · HS and heads as column bands (head h of token
//! i is columns h·HS..(h+1)·HS of row i), which is what the QKV linear layers produce and the
//! output projection reads, so no head permute is needed. The saved probabilities are one flat
//! buffer of NH · Σ_b T_b² floats: sequence b's block starts at NH · Σ_{b'<b} T_b'², then head h
//! at + h · T_b², then query row i at + i · T_b.
//!
//! The offsets come as a [`CuSeqlens`], built once per batch ([`Tape::cu_seqlens`]) and shared by
//! every layer: its host copy sizes the probabilities and the grid without reading the device,
//! its integer tensor is what the kernels read.
//!
//! Attention dropout (training, p > 0): the mask M (1/(1 − p) or 0) of probability (query i, key
//! j) of head h in sequence b is drawn from (tape seed, stream, `rng::attention_index(b, h, i, j,
//! NH)`), the index the padded path's `Tape::attention_dropout` gives element (b, h, i, j) of its
//! (B, NH, T, T) probabilities, so a packed batch drops exactly what the padded one drops. The
//! probabilities are saved undropped and M is drawn again in backward, never stored:
//!
//! ```text
//! ctx_b,h = (P_b,h ⊙ M_b,h) · v_b,h
//! ```
//!
//! Backward (dctx given): dP = (dctx · vᵀ) ⊙ M, dS = scale · P ⊙ (dP − rowsum(dP ⊙ P)),
//! dq += dS · k, dk += dSᵀ · q, dv += (P ⊙ M)ᵀ · dctx, per sequence and head (M = 1 without
//! dropout).

use super::Op;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::rng::{MAX_KEYED_BATCH, MAX_KEYED_LEN, attention_index, hash_bits, hash_key, keep_threshold};
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};
use std::sync::Arc;

const OP: &str = "varlen_attention";

/// The sequence offsets of a packed batch: B + 1 nondecreasing offsets from 0 to N.
#[derive(Clone, Debug)]
pub struct CuSeqlens {
    /// (B + 1) i32 in the integer arena, read by the kernels.
    pub tensor: Tensor,
    /// The same offsets on the host.
    pub offsets: Arc<[usize]>,
}

impl CuSeqlens {
    /// B, the number of sequences.
    pub fn batch(&self) -> usize {
        self.offsets.len() - 1
    }
    /// N, the number of packed tokens.
    pub fn tokens(&self) -> usize {
        self.offsets[self.offsets.len() - 1]
    }
    /// The sequence lengths T_b.
    pub fn lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.offsets.windows(2).map(|w| w[1] - w[0])
    }
    /// The longest T_b.
    pub fn max_len(&self) -> usize {
        self.lens().max().unwrap_or(0)
    }
    /// Floats of saved probabilities for `nh` heads: NH · Σ_b T_b².
    pub fn probs_len(&self, nh: usize) -> usize {
        nh * self.lens().map(|t| t * t).sum::<usize>()
    }
}

/// The attention dropout's draw: probability (in (0, 1)), tape seed and stream.
#[derive(Clone, Copy, Debug)]
pub struct Draw {
    pub p: f64,
    pub seed: u64,
    pub stream: u64,
}

impl Draw {
    /// The mask in the integer form both paths use; the keep value is rounded once, here, for
    /// both (the kernels get this f32).
    pub fn mask<F: Float>(&self) -> Mask<F> {
        let p = self.p;
        Mask { key: hash_key(self.seed, self.stream), threshold: keep_threshold(p), keep: F::from_f64(1.0 / (1.0 - p)) }
    }
}

/// Probability (i, j) of head h in sequence b is kept, times `keep`, where
/// hash_bits(key, attention_index(b, h, i, j, NH)) ≥ `threshold`, else 0. `threshold` is 0
/// exactly when p is 0 (`keep_threshold`): the kernels' "no mask" ([`Mask::NONE`]).
#[derive(Clone, Copy, Debug)]
pub struct Mask<F> {
    pub key: u64,
    pub threshold: u64,
    pub keep: F,
}

impl Mask<f32> {
    /// No dropout: every probability kept as is.
    pub const NONE: Mask<f32> = Mask { key: 0, threshold: 0, keep: 1.0 };
}

impl<F: Float> Mask<F> {
    #[inline(always)]
    pub fn at(&self, b: usize, h: usize, i: usize, j: usize, nh: usize) -> F {
        if hash_bits(self.key, attention_index(b, h, i, j, nh)) >= self.threshold { self.keep } else { F::ZERO }
    }
}

/// q, k, v (N, C) → ctx (N, C); probs (NH · Σ T_b²) saved for backward, undropped.
#[derive(Clone, Debug)]
pub struct VarlenAttention {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub out: Tensor,
    pub probs: Tensor,
    pub cu: CuSeqlens,
    pub heads: usize,
    pub scale: f64,
    /// The attention dropout's draw; None outside training or with p = 0.
    pub dropout: Option<Draw>,
}

impl<F: Float> Tape<F> {
    /// Checks `offsets` (cu[0] = 0, nondecreasing, at least one sequence, N < 2³¹) and uploads
    /// them into the integer arena. Build it once per batch; it lives until the tape's reset.
    pub fn cu_seqlens(&mut self, offsets: &[usize]) -> Result<CuSeqlens> {
        let bad = |why: String| Error::shape("cu_seqlens", format!("offsets {offsets:?}: {why}"));
        if offsets.len() < 2 {
            return Err(bad("need at least 2 entries (one sequence)".into()));
        }
        if offsets[0] != 0 {
            return Err(bad("the first offset must be 0".into()));
        }
        if let Some(w) = offsets.windows(2).find(|w| w[1] < w[0]) {
            return Err(bad(format!("offsets decrease ({} then {})", w[0], w[1])));
        }
        let n = offsets[offsets.len() - 1];
        if n > i32::MAX as usize {
            return Err(bad(format!("{n} tokens exceed the kernels' 32-bit offsets")));
        }
        let ints: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
        let tensor = self.ints(&ints, &[offsets.len()])?;
        Ok(CuSeqlens { tensor, offsets: offsets.into() })
    }

    /// Attention of each packed sequence over itself, `heads` heads, scores scaled by `scale`
    /// (1/√HS for BERT), probabilities dropped with probability `dropout` in training; see the
    /// module doc. q, k, v (N, C) with N = `cu.tokens()`, C divisible by `heads`; returns ctx
    /// (N, C). Active dropout takes one stream of the tape, as [`Tape::dropout`] does.
    #[allow(clippy::too_many_arguments)]
    pub fn varlen_attention(
        &mut self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cu: &CuSeqlens,
        heads: usize,
        scale: f64,
        dropout: f64,
    ) -> Result<Tensor> {
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::value(OP, format!("attention dropout probability {dropout} is outside [0, 1)")));
        }
        let (n, b) = (cu.tokens(), cu.batch());
        if cu.tensor.dims() != [b + 1] {
            return Err(Error::shape(
                OP,
                format!("cu_seqlens tensor {} does not hold {} offsets", cu.tensor.shape, b + 1),
            ));
        }
        let c = q.shape.last();
        for (what, x) in [("q", q), ("k", k), ("v", v)] {
            if x.dims() != [n, c] {
                return Err(Error::shape(
                    OP,
                    format!("{what} {} must be (N, C) = [{n}, {c}] (N from cu_seqlens, C from q)", x.shape),
                ));
            }
        }
        if heads == 0 || !c.is_multiple_of(heads) {
            return Err(Error::shape(OP, format!("C = {c} (q {}) is not divisible into {heads} heads", q.shape)));
        }
        let hs = c / heads;
        let active = self.is_training() && dropout > 0.0;
        // The mask's index names sequences and positions in 15 and 16 bits (rng::token_key).
        if active && (b > MAX_KEYED_BATCH || cu.max_len() > MAX_KEYED_LEN) {
            return Err(Error::shape(
                OP,
                format!(
                    "attention dropout over {b} sequences (longest {}): the mask's keys name at most \
                     {MAX_KEYED_BATCH} sequences of at most {MAX_KEYED_LEN} tokens",
                    cu.max_len()
                ),
            ));
        }
        let dims = cuda::Dims { probs: cu.probs_len(heads), b, n, max_t: cu.max_len(), nh: heads, hs };
        if let Device::Cuda(_) = self.store.device {
            cuda::check(&dims, "varlen_attention_forward")?; // before allocating NH · Σ T_b² floats
        }
        let out = self.output(q.shape, &[q, k, v])?;
        let probs = self.store.alloc_act(Shape::new(&[dims.probs])?, false)?;
        // Drawn once every check has passed, so a failed call consumes no stream.
        let draw = active.then(|| Draw { p: dropout, seed: self.seed(), stream: self.next_stream() });
        match self.store.device {
            Device::Cuda(_) => {
                let (dev, [cp], [qp, kp, vp], [pp, op]) = self.store.cuda_io(
                    [cu.tensor],
                    [Slot::Val(q), Slot::Val(k), Slot::Val(v)],
                    [Slot::Val(probs), Slot::Val(out)],
                )?;
                let mask = draw.map_or(Mask::NONE, |d| d.mask());
                cuda::forward(&dev, &dims, qp, kp, vp, cp, scale as f32, mask, pp, op)?;
            }
            Device::Cpu => {
                let ([qv, kv, vv], [pv, ov]) = self
                    .store
                    .cpu_views([Slot::Val(q), Slot::Val(k), Slot::Val(v)], [Slot::Val(probs), Slot::Val(out)])?;
                let mask = draw.map(|d| d.mask());
                cpu::forward(qv, kv, vv, &cu.offsets, heads, hs, F::from_f64(scale), mask, pv, ov);
            }
        }
        let op = VarlenAttention { q, k, v, out, probs, cu: cu.clone(), heads, scale, dropout: draw };
        Ok(self.push(out, Op::VarlenAttention(op)))
    }
}

impl VarlenAttention {
    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (q, k, v) = (self.q, self.k, self.v);
        let (nh, hs) = (self.heads, self.out.shape.last() / self.heads);
        let need_ds = q.requires_grad || k.requires_grad;
        match s.device {
            Device::Cuda(_) => {
                let reads = [Slot::Val(q), Slot::Val(k), Slot::Val(v), Slot::Val(self.probs), Slot::Grad(self.out)];
                let ints = [self.cu.tensor];
                // Each gradient's address is checked against every read (q, k, v may be one tensor:
                // their gradients then accumulate into one buffer, one launch after the other).
                let grad = |x: Tensor| -> Result<u64> {
                    if !x.requires_grad {
                        return Ok(0);
                    }
                    let (_, _, _, [p]) = s.cuda_io(ints, reads, [Slot::Grad(x)])?;
                    Ok(p)
                };
                let (dq, dk, dv) = (grad(q)?, grad(k)?, grad(v)?);
                let (dev, [cp], [qp, kp, vp, pp, dop], []) = s.cuda_io(ints, reads, [])?;
                let dims = cuda::Dims {
                    probs: self.probs.numel(),
                    b: self.cu.batch(),
                    n: self.cu.tokens(),
                    max_t: self.cu.max_len(),
                    nh,
                    hs,
                };
                let p = cuda::Ptrs { q: qp, k: kp, v: vp, cu: cp, probs: pp, dout: dop, dq, dk, dv };
                let mask = self.dropout.map_or(Mask::NONE, |d| d.mask());
                cuda::backward(&dev, &dims, &p, self.scale as f32, mask)?;
            }
            Device::Cpu => {
                let cu = &self.cu.offsets;
                let mask = self.dropout.map(|d| d.mask());
                let mut ds = Vec::new();
                if need_ds {
                    ds = vec![F::ZERO; self.probs.numel()];
                    let ([vv, pv, dov], []) =
                        s.cpu_views([Slot::Val(v), Slot::Val(self.probs), Slot::Grad(self.out)], [])?;
                    cpu::scores_grad(vv, dov, pv, cu, nh, hs, F::from_f64(self.scale), mask, &mut ds);
                }
                // dS already holds M: the products of dq and dk take no mask.
                if q.requires_grad {
                    let ([kv], [dq]) = s.cpu_views([Slot::Val(k)], [Slot::Grad(q)])?;
                    cpu::product(&ds, kv, cu, nh, hs, false, None, dq);
                }
                if k.requires_grad {
                    let ([qv], [dk]) = s.cpu_views([Slot::Val(q)], [Slot::Grad(k)])?;
                    cpu::product(&ds, qv, cu, nh, hs, true, None, dk);
                }
                if v.requires_grad {
                    let ([pv, dov], [dv]) =
                        s.cpu_views([Slot::Val(self.probs), Slot::Grad(self.out)], [Slot::Grad(v)])?;
                    cpu::product(pv, dov, cu, nh, hs, true, mask, dv);
                }
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/varlen_attention.cu. One block of 128 threads per (row, head, sequence):
/// grid (max T_b, NH, B), blocks past their sequence's end return at once. Pointers are device
/// addresses of f32 buffers, cu's of i32.
pub mod cuda {
    use super::Mask;
    use crate::device::cuda::{Arg, Cuda};
    use crate::error::{Error, Result};

    const FILE: &str = "varlen_attention.cu";
    /// Threads per block (`THREADS` in the kernel).
    const THREADS: u32 = 128;
    /// Shared memory a block may use without opting in.
    const MAX_SHARED: usize = 48 * 1024;

    /// The problem: B sequences, N packed tokens, the longest T_b, NH heads of HS columns.
    #[derive(Clone, Copy, Debug)]
    pub struct Dims {
        /// NH · Σ_b T_b², the floats of the probabilities (and of dS in the scratch).
        pub probs: usize,
        pub b: usize,
        pub n: usize,
        pub max_t: usize,
        pub nh: usize,
        pub hs: usize,
    }

    impl std::fmt::Display for Dims {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let Dims { b, n, max_t, nh, hs, .. } = *self;
            write!(f, "(N, C) = ({n}, {}) in B = {b} sequences (longest {max_t}), NH = {nh}, HS = {hs}", nh * hs)
        }
    }

    /// Checks the limits; returns the grid and the dynamic shared memory (32 reduction floats, one
    /// row of HS, one row of max T_b scores).
    pub fn check(d: &Dims, kernel: &str) -> Result<((u32, u32, u32), u32)> {
        let err = |why: String| Error::Cuda(format!("varlen attention ({kernel}) of {d}: {why}"));
        if d.b > 65535 || d.nh > 65535 {
            return Err(err("B and NH must be at most 65535 (grid z and y)".into()));
        }
        if d.hs > u32::MAX as usize || d.max_t > i32::MAX as usize || d.n > i32::MAX as usize {
            return Err(err("sizes exceed the kernel's 32-bit sizes".into()));
        }
        let smem = (32 + d.hs + d.max_t) * 4;
        if smem > MAX_SHARED {
            return Err(err(format!(
                "{smem} bytes of shared memory (a row of HS and one of the longest T_b) exceed {MAX_SHARED}"
            )));
        }
        Ok(((d.max_t as u32, d.nh as u32, d.b as u32), smem as u32))
    }

    /// The mask's kernel arguments: the key, the threshold (0: no mask, no hashing) and the keep
    /// value, the very ones the CPU compares and multiplies by.
    fn mask_args(m: Mask<f32>) -> [Arg; 3] {
        [Arg::U64(m.key), Arg::U64(m.threshold), Arg::F32(m.keep)]
    }

    /// probs = softmax(scale · q kᵀ) per sequence and head, out = (probs ⊙ M) · v; see the module
    /// doc ([`Mask::NONE`]: no dropout).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        dev: &Cuda,
        d: &Dims,
        q: u64,
        k: u64,
        v: u64,
        cu: u64,
        scale: f32,
        mask: Mask<f32>,
        probs: u64,
        out: u64,
    ) -> Result<()> {
        const NAME: &str = "varlen_attention_forward";
        let (grid, smem) = check(d, NAME)?;
        if d.n == 0 || d.max_t == 0 || d.nh * d.hs == 0 {
            return Ok(());
        }
        let mut args = vec![
            Arg::Ptr(q),
            Arg::Ptr(k),
            Arg::Ptr(v),
            Arg::Ptr(cu),
            Arg::Ptr(probs),
            Arg::Ptr(out),
            Arg::F32(scale),
            Arg::U32(d.nh as u32),
            Arg::U32(d.hs as u32),
        ];
        args.extend(mask_args(mask));
        dev.launch(FILE, NAME, grid, (THREADS, 1, 1), smem, &args)
            .map_err(|e| Error::Cuda(format!("varlen attention ({NAME}) of {d}: {e}")))
    }

    /// The backward's device addresses; a gradient of 0 is not wanted.
    #[derive(Clone, Copy, Debug)]
    pub struct Ptrs {
        pub q: u64,
        pub k: u64,
        pub v: u64,
        pub cu: u64,
        pub probs: u64,
        pub dout: u64,
        pub dq: u64,
        pub dk: u64,
        pub dv: u64,
    }

    /// dq, dk, dv += the gradients from dout (each skipped when its address is 0), under the
    /// forward's mask drawn again. dS goes through the device's scratch (probs' size): a per-row
    /// pass writes dS and dq, then a per-key pass reads dS and P ⊙ M down their columns for dk
    /// and dv, with no atomics.
    pub fn backward(dev: &Cuda, d: &Dims, p: &Ptrs, scale: f32, mask: Mask<f32>) -> Result<()> {
        const ROWS: &str = "varlen_attention_backward_rows";
        const KEYS: &str = "varlen_attention_backward_keys";
        let (grid, smem) = check(d, ROWS)?;
        if d.n == 0 || d.max_t == 0 || d.nh * d.hs == 0 {
            return Ok(());
        }
        let err = |name: &str, e: Error| Error::Cuda(format!("varlen attention ({name}) of {d}: {e}"));
        let mut ds = 0;
        if p.dq != 0 || p.dk != 0 {
            ds = dev.scratch(d.probs * 4).map_err(|e| err(ROWS, e))?;
            let mut args = vec![
                Arg::Ptr(p.k),
                Arg::Ptr(p.v),
                Arg::Ptr(p.dout),
                Arg::Ptr(p.probs),
                Arg::Ptr(p.cu),
                Arg::Ptr(ds),
                Arg::Ptr(p.dq),
                Arg::F32(scale),
                Arg::U32(d.nh as u32),
                Arg::U32(d.hs as u32),
            ];
            args.extend(mask_args(mask));
            dev.launch(FILE, ROWS, grid, (THREADS, 1, 1), smem, &args).map_err(|e| err(ROWS, e))?;
        }
        if p.dk != 0 || p.dv != 0 {
            let mut args = vec![
                Arg::Ptr(p.q),
                Arg::Ptr(p.dout),
                Arg::Ptr(p.probs),
                Arg::Ptr(ds),
                Arg::Ptr(p.cu),
                Arg::Ptr(p.dk),
                Arg::Ptr(p.dv),
                Arg::U32(d.nh as u32),
                Arg::U32(d.hs as u32),
            ];
            args.extend(mask_args(mask));
            // One column of P ⊙ M (the longest T_b) in shared memory, within `check`'s bound.
            let smem = (d.max_t * 4) as u32;
            dev.launch(FILE, KEYS, grid, (THREADS, 1, 1), smem, &args).map_err(|e| err(KEYS, e))?;
        }
        Ok(())
    }
}

/// The specification: plain loops, sequences in parallel (each owns its rows of the (N, C)
/// outputs and its block of the probabilities).
pub mod cpu {
    use super::Mask;
    use crate::cpu_gemm::gemm;
    use crate::float::Float;
    use crate::ops::simd;
    use rayon::prelude::*;

    /// `buf` cut into consecutive parts of the given sizes.
    fn split<F>(mut buf: &mut [F], sizes: impl Iterator<Item = usize>) -> Vec<&mut [F]> {
        let mut parts = Vec::new();
        for n in sizes {
            let (part, rest) = std::mem::take(&mut buf).split_at_mut(n);
            parts.push(part);
            buf = rest;
        }
        parts
    }

    /// (first row, length, offset of its probabilities) of each sequence.
    fn seqs(cu: &[usize], nh: usize) -> Vec<(usize, usize, usize)> {
        let mut off = 0;
        cu.windows(2)
            .map(|w| {
                let t = w[1] - w[0];
                let s = (w[0], t, off);
                off += nh * t * t;
                s
            })
            .collect()
    }

    /// Σ a_i · b_i in 8 interleaved partial sums (lane i % 8), added pairwise at the end: the
    /// compiler keeps them in one vector register, where a single running sum is a chain of
    /// dependent scalar adds.
    #[inline(always)]
    fn dot<F: Float>(a: &[F], b: &[F]) -> F {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mut acc = [F::ZERO; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for l in 0..8 {
                acc[l] += x[l] * y[l];
            }
        }
        for (l, (&x, &y)) in ra.iter().zip(rb).enumerate() {
            acc[l] += x * y;
        }
        let q = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
        (q[0] + q[2]) + (q[1] + q[3])
    }

    /// row_j *= M_ij for j < t: the dropout draws of one row, in a loop of their own so that the
    /// hash vectorises (AVX-512's 64-bit multiplies under `simd`).
    #[inline(always)]
    fn mask_row<F: Float>(m: &Mask<F>, b: usize, h: usize, i: usize, nh: usize, row: &mut [F]) {
        for (j, x) in row.iter_mut().enumerate() {
            *x *= m.at(b, h, i, j, nh);
        }
    }

    /// probs (NH · Σ T_b²) = softmax_j(scale · q_i · k_j) and out (N, C) = (probs ⊙ M) · v, per
    /// sequence and head (no M when `mask` is None); q, k, v, out (N, C = nh · hs).
    #[allow(clippy::too_many_arguments)]
    pub fn forward<F: Float>(
        q: &[F],
        k: &[F],
        v: &[F],
        cu: &[usize],
        nh: usize,
        hs: usize,
        scale: F,
        mask: Option<Mask<F>>,
        probs: &mut [F],
        out: &mut [F],
    ) {
        let c = nh * hs;
        let s = seqs(cu, nh);
        let ps = split(probs, s.iter().map(|&(_, t, _)| nh * t * t));
        let os = split(out, s.iter().map(|&(_, t, _)| t * c));
        ps.into_par_iter()
            .zip(os)
            .zip(s)
            .enumerate()
            .for_each(|(b, ((p, o), (r0, t, _)))| simd(|| forward_seq(q, k, v, b, r0, t, nh, hs, scale, mask, p, o)));
    }

    /// One sequence, b (rows r0..r0 + t): p (NH, t, t), o (t, C).
    #[inline(always)]
    #[allow(clippy::too_many_arguments, clippy::neg_cmp_op_on_partial_ord)]
    fn forward_seq<F: Float>(
        q: &[F],
        k: &[F],
        v: &[F],
        b: usize,
        r0: usize,
        t: usize,
        nh: usize,
        hs: usize,
        scale: F,
        mask: Option<Mask<F>>,
        p: &mut [F],
        o: &mut [F],
    ) {
        if t == 0 {
            return; // (an empty sequence: nothing to compute, and chunks of 0 are not allowed)
        }
        let (c, ci) = (nh * hs, (nh * hs) as isize);
        let (mut dropped, mut oh) = (vec![F::ZERO; if mask.is_some() { t * t } else { 0 }], vec![F::ZERO; t * hs]);
        for h in 0..nh {
            let at = r0 * c + h * hs; // head h's band of the sequence's first row
            let ph = &mut p[h * t * t..][..t * t];
            // S (t, t) = Q_h (t, HS) · K_hᵀ, one small GEMM per sequence and head
            gemm(t, t, hs, ph, (&q[at..], (ci, 1)), (&k[at..], (1, ci)), false, 1);
            for pr in ph.chunks_exact_mut(t) {
                // `!(max >= s)` so that a NaN score becomes the max and the row comes out NaN.
                let mut max = F::from_f64(f64::NEG_INFINITY);
                for x in pr.iter_mut() {
                    *x = scale * *x;
                    if !(max >= *x) {
                        max = *x;
                    }
                }
                pr.iter_mut().for_each(|x| *x = (*x - max).exp());
                let sum = pr.iter().fold(F::ZERO, |a, &x| a + x);
                pr.iter_mut().for_each(|x| *x /= sum);
            }
            // The padded path's rounding: the dropped probability, then the product.
            let w = match &mask {
                Some(m) => {
                    dropped.copy_from_slice(ph);
                    for (i, row) in dropped.chunks_exact_mut(t).enumerate() {
                        mask_row(m, b, h, i, nh, row);
                    }
                    &dropped[..]
                }
                None => &ph[..],
            };
            // O_h (t, HS) = W (t, t) · V_h, then into head h's columns of o
            gemm(t, hs, t, &mut oh, (w, (t as isize, 1)), (&v[at..], (ci, 1)), false, 1);
            for (i, row) in oh.chunks_exact(hs).enumerate() {
                o[i * c + h * hs..][..hs].copy_from_slice(row);
            }
        }
    }

    /// ds (probs' layout) = scale · P ⊙ (dP − Σ_j dP ⊙ P), dP_ij = (dout_i · v_j) · M_ij, per
    /// sequence and head (overwrites ds; M = 1 when `mask` is None).
    #[allow(clippy::too_many_arguments)]
    pub fn scores_grad<F: Float>(
        v: &[F],
        dout: &[F],
        probs: &[F],
        cu: &[usize],
        nh: usize,
        hs: usize,
        scale: F,
        mask: Option<Mask<F>>,
        ds: &mut [F],
    ) {
        let s = seqs(cu, nh);
        let dss = split(ds, s.iter().map(|&(_, t, _)| nh * t * t));
        dss.into_par_iter().zip(s).enumerate().filter(|(_, (_, (_, t, _)))| *t > 0).for_each(
            |(b, (ds, (r0, t, off)))| {
                simd(|| {
                    let (c, ci) = (nh * hs, (nh * hs) as isize);
                    for h in 0..nh {
                        let at = r0 * c + h * hs;
                        let dsh = &mut ds[h * t * t..][..t * t];
                        // dP (t, t) = dO_h · V_hᵀ
                        gemm(t, t, hs, dsh, (&dout[at..], (ci, 1)), (&v[at..], (1, ci)), false, 1);
                        for (i, dsr) in dsh.chunks_exact_mut(t).enumerate() {
                            let pr = &probs[off + (h * t + i) * t..][..t];
                            if let Some(m) = &mask {
                                mask_row(m, b, h, i, nh, dsr);
                            }
                            let rowsum = dot(pr, dsr);
                            for j in 0..t {
                                dsr[j] = scale * pr[j] * (dsr[j] - rowsum);
                            }
                        }
                    }
                })
            },
        );
    }

    /// y += W · x (or Wᵀ · x when `transpose`) per sequence and head, W in probs' layout (NH,
    /// T_b, T_b) per sequence (times M when `mask` is Some), x and y (N, C): dq = dS · k,
    /// dk = dSᵀ · q, dv = (P ⊙ M)ᵀ · dout.
    #[allow(clippy::too_many_arguments)]
    pub fn product<F: Float>(
        w: &[F],
        x: &[F],
        cu: &[usize],
        nh: usize,
        hs: usize,
        transpose: bool,
        mask: Option<Mask<F>>,
        y: &mut [F],
    ) {
        let c = nh * hs;
        let s = seqs(cu, nh);
        let ys = split(y, s.iter().map(|&(_, t, _)| t * c));
        ys.into_par_iter().zip(s).enumerate().filter(|(_, (_, (_, t, _)))| *t > 0).for_each(
            |(b, (y, (r0, t, off)))| {
                simd(|| {
                    let mut masked = if mask.is_some() { vec![F::ZERO; t * t] } else { Vec::new() };
                    let mut yh = vec![F::ZERO; t * hs];
                    let ti = t as isize;
                    for h in 0..nh {
                        let mut wh = &w[off + h * t * t..][..t * t];
                        if let Some(m) = &mask {
                            masked.copy_from_slice(wh);
                            for (r, row) in masked.chunks_exact_mut(t).enumerate() {
                                mask_row(m, b, h, r, nh, row);
                            }
                            wh = &masked;
                        }
                        // Y_h (t, HS) = op(W) · X_h, then added into head h's columns of y
                        let op_w = if transpose { (1, ti) } else { (ti, 1) };
                        gemm(t, hs, t, &mut yh, (wh, op_w), (&x[r0 * c + h * hs..], (c as isize, 1)), false, 1);
                        for (i, row) in yh.chunks_exact(hs).enumerate() {
                            for (yd, &v) in y[i * c + h * hs..][..hs].iter_mut().zip(row) {
                                *yd += v;
                            }
                        }
                    }
                })
            },
        );
    }
}
