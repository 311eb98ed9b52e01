//! A recurrence over token rows: PyTorch's `nn.LSTM` (gates i, f, g, o) and `nn.RNN` (tanh), one
//! layer, one direction, h0 = c0 = 0, over B sequences of rows of a batch (the recurrent task heads
//! over the encoder's token states). G = 4 gates for the LSTM, 1 for the RNN:
//!
//! ```text
//! a_t = gx_t + b_hh + W_hh · h_{t−1}    (G·H; gx_t = x_t · W_ihᵀ + b_ih comes from a linear before the op)
//! LSTM: i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o);  c_t = f·c_{t−1} + i·g;  h_t = o·tanh(c_t)
//! RNN:  h_t = tanh(a_t)
//! out_b = h of sequence b's last row (0 for an empty sequence)  (B, H)
//! ```
//!
//! Sequence b is rows start_b, …, start_b + len_b − 1 ([`Spans`]), which covers both batch layouts:
//! packed (start_b = cu[b]) and padded (start_b = b·T, len_b = the mask's prefix length).
//!
//! Saved for backward, per row of a span: the activated gates (R, G·H) (for the RNN, h_t itself),
//! the LSTM's cell states c (R, H), and the hidden states shifted one row, h_prev (R, H) = h_{t−1}
//! (0 at a span's first row and at rows outside every span), which is what the W_hh gradient reads.
//!
//! Backward (BPTT), the same steps on both devices: (1) per sequence, in reverse over t,
//! dh_t = (t last ? dy_b : 0) + W_hhᵀ · da_{t+1} (the LSTM carrying dc), writing da_t, the gradient
//! of the pre-activations, into `da` (R, G·H); (2) gx.grad += da at the rows of every span;
//! (3) w_hh.grad += daᵀ · h_prev, one GEMM over all rows in the store's matmul precision;
//! (4) b_hh.grad += Σ_rows da. Rows outside every span hold da = 0, so (3) and (4) may run over
//! all rows.

use super::Op;
use super::matmul::{self, MatDims};
use super::varlen_attention::CuSeqlens;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::{Shape, Tensor};
use std::sync::Arc;

const OP: &str = "recurrent";

/// The recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `nn.LSTM`: four gates i, f, g, o, and a cell state.
    Lstm,
    /// `nn.RNN` with tanh.
    Rnn,
}

impl Cell {
    /// G, the gates per hidden unit: the rows of W_hh are G·H.
    pub fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Rnn => 1,
        }
    }
}

/// Where each sequence's rows lie: sequence b is rows start_b .. start_b + len_b (len_b may be 0).
/// Non-empty spans never overlap. Built once per batch; lives until the tape's reset.
#[derive(Clone, Debug)]
pub struct Spans {
    /// (B, 2) i32 [start, len] in the integer arena, read by the kernels.
    pub tensor: Tensor,
    /// The same on the host.
    pub host: Arc<[(usize, usize)]>,
}

impl Spans {
    /// Checks `spans` ((start, len) per sequence: 32-bit row numbers, no two non-empty spans
    /// sharing a row, in any order) and uploads them into the integer arena.
    pub fn new<F: Float>(tape: &mut Tape<F>, spans: &[(usize, usize)]) -> Result<Spans> {
        if let Some((b, &(s, l))) = spans.iter().enumerate().find(|&(_, &(s, l))| s + l > i32::MAX as usize) {
            let why = format!("sequence {b} (rows {s}..{}) lies past the kernels' 32-bit rows", s + l);
            return Err(Error::value("spans", why));
        }
        disjoint("spans", spans)?;
        let ints: Vec<i32> = spans.iter().flat_map(|&(s, l)| [s as i32, l as i32]).collect();
        let tensor = tape.ints(&ints, &[spans.len(), 2])?;
        Ok(Spans { tensor, host: spans.into() })
    }

    /// The sequences of a packed batch: start_b = cu[b], len_b = cu[b+1] − cu[b].
    pub fn packed<F: Float>(tape: &mut Tape<F>, cu: &CuSeqlens) -> Result<Spans> {
        let spans: Vec<(usize, usize)> = cu.offsets.windows(2).map(|w| (w[0], w[1] - w[0])).collect();
        Spans::new(tape, &spans)
    }

    /// The sequences of a padded (B, T) batch, B = `lens.len()`: start_b = b·T, len_b = lens[b] ≤ T.
    pub fn padded<F: Float>(tape: &mut Tape<F>, t: usize, lens: &[usize]) -> Result<Spans> {
        if let Some((b, &l)) = lens.iter().enumerate().find(|&(_, &l)| l > t) {
            return Err(Error::value("spans", format!("sequence {b} has {l} tokens, more than the batch's T = {t}")));
        }
        let spans: Vec<(usize, usize)> = lens.iter().enumerate().map(|(b, &l)| (b * t, l)).collect();
        Spans::new(tape, &spans)
    }

    /// The sequences of a padded batch from its mask (B, T) of 0/1, each row's real tokens first
    /// (as the tokenizer pads): len_b = the row's count of ones. A mask with holes is refused.
    pub fn from_mask<F: Float>(tape: &mut Tape<F>, mask: Tensor) -> Result<Spans> {
        if mask.shape.rank() != 2 {
            return Err(Error::shape("spans", format!("mask {} must be (B, T)", mask.shape)));
        }
        let t = mask.dims()[1];
        let m = tape.store.read_ints(mask)?;
        let rows: Vec<&[i32]> = if t == 0 { vec![&[]; mask.dims()[0]] } else { m.chunks_exact(t).collect() };
        if let Some(b) = rows.iter().position(|r| r.windows(2).any(|w| w[0] == 0 && w[1] != 0)) {
            return Err(Error::value(
                "spans",
                format!("row {b}'s mask has padding before a real token: a recurrence needs the real tokens first"),
            ));
        }
        let lens: Vec<usize> = rows.iter().map(|r| r.iter().filter(|&&v| v != 0).count()).collect();
        Spans::padded(tape, t, &lens)
    }

    /// B, the number of sequences.
    pub fn batch(&self) -> usize {
        self.host.len()
    }

    /// The rows in some span: Σ_b len_b.
    pub fn rows(&self) -> usize {
        self.host.iter().map(|&(_, l)| l).sum()
    }
}

/// Errors unless no two non-empty spans share a row (the kernels' blocks write their rows
/// unsynchronised).
fn disjoint(op: &'static str, spans: &[(usize, usize)]) -> Result<()> {
    let mut order: Vec<usize> = (0..spans.len()).filter(|&b| spans[b].1 > 0).collect();
    order.sort_by_key(|&b| spans[b].0);
    match order.windows(2).find(|w| spans[w[0]].0 + spans[w[0]].1 > spans[w[1]].0) {
        Some(w) => {
            let ((s0, l0), (s1, l1)) = (spans[w[0]], spans[w[1]]);
            let (e0, e1) = (s0 + l0, s1 + l1);
            Err(Error::value(
                op,
                format!("sequences {} (rows {s0}..{e0}) and {} (rows {s1}..{e1}) overlap", w[0], w[1]),
            ))
        }
        None => Ok(()),
    }
}

/// gx (R, G·H), w_hh (G·H, H), b_hh (G·H) over `spans` → out (B, H); see the module doc.
#[derive(Clone, Debug)]
pub struct Recurrent {
    pub cell: Cell,
    pub gx: Tensor,
    pub w_hh: Tensor,
    pub b_hh: Tensor,
    pub spans: Spans,
    pub out: Tensor,
    /// (R, G·H) the activated gates of each row of a span (the RNN's: h_t).
    pub gates: Tensor,
    /// (R, H) the LSTM's cell states; None for the RNN.
    pub c: Option<Tensor>,
    /// (R, H) h_{t−1} of each row of a span, zeros elsewhere.
    pub h_prev: Tensor,
    /// (R, G·H) the backward's pre-activation gradients, zeros outside every span.
    pub da: Tensor,
}

impl<F: Float> Tape<F> {
    /// PyTorch's single-layer LSTM or tanh RNN (h0 = c0 = 0) over each sequence of `spans`: gx
    /// (R, G·H) the rows' input projections (x · W_ihᵀ + b_ih), w_hh (G·H, H), b_hh (G·H) in
    /// PyTorch's layout (LSTM gates i, f, g, o) → (B, H), each sequence's last hidden state (zeros
    /// for an empty one).
    pub fn recurrent(&mut self, cell: Cell, gx: Tensor, w_hh: Tensor, b_hh: Tensor, spans: &Spans) -> Result<Tensor> {
        let g = cell.gates();
        if w_hh.shape.rank() != 2 || w_hh.dims()[1] == 0 || w_hh.dims()[0] != g * w_hh.dims()[1] {
            return Err(Error::shape(
                OP,
                format!("w_hh {} must be (G·H, H) with H ≥ 1 and G = {g} gates ({cell:?})", w_hh.shape),
            ));
        }
        let h = w_hh.dims()[1];
        if b_hh.dims() != [g * h] {
            return Err(Error::shape(
                OP,
                format!("b_hh {} does not match w_hh {} (needs [{}])", b_hh.shape, w_hh.shape, g * h),
            ));
        }
        if gx.shape.rank() != 2 || gx.dims()[1] != g * h {
            return Err(Error::shape(
                OP,
                format!("gx {} must be (R, G·H) = (R, {}) for w_hh {}", gx.shape, g * h, w_hh.shape),
            ));
        }
        let (rows, b) = (gx.dims()[0], spans.batch());
        if spans.tensor.dims() != [b, 2] {
            return Err(Error::shape(
                OP,
                format!("spans tensor {} does not hold {b} [start, len] pairs", spans.tensor.shape),
            ));
        }
        if let Some((i, &(s, l))) = spans.host.iter().enumerate().find(|&(_, &(s, l))| s + l > rows) {
            return Err(Error::shape(OP, format!("sequence {i} (rows {s}..{}) lies outside gx's {rows} rows", s + l)));
        }
        disjoint(OP, &spans.host)?; // again: the fields are public
        let out = self.output(Shape::new(&[b, h])?, &[gx, w_hh, b_hh])?;
        let gates = self.store.alloc_act(Shape::new(&[rows, g * h])?, false)?;
        let c = match cell {
            Cell::Lstm => Some(self.store.alloc_act(Shape::new(&[rows, h])?, false)?),
            Cell::Rnn => None,
        };
        let h_prev = self.store.alloc_act(Shape::new(&[rows, h])?, false)?;
        let da = self.store.alloc_act(Shape::new(&[rows, g * h])?, false)?;
        let op = Recurrent { cell, gx, w_hh, b_hh, spans: spans.clone(), out, gates, c, h_prev, da };
        op.forward(&mut self.store)?;
        Ok(self.push(out, Op::Recurrent(Box::new(op))))
    }
}

impl Recurrent {
    /// H, the hidden size.
    fn hidden(&self) -> usize {
        self.w_hh.dims()[1]
    }

    /// Whether some row lies outside every span (a padded batch's padding).
    fn gaps(&self) -> bool {
        self.spans.rows() < self.gx.dims()[0]
    }

    fn forward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (cell, spans, h, b) = (self.cell, &self.spans, self.hidden(), self.spans.batch());
        if self.gaps() {
            s.zero(self.h_prev)?; // the W_hh GEMM reads every row
        }
        let reads = [Slot::Val(self.gx), Slot::Val(self.w_hh), Slot::Val(self.b_hh)];
        let (gates, h_prev, out) = (Slot::Val(self.gates), Slot::Val(self.h_prev), Slot::Val(self.out));
        match (&s.device, self.c) {
            (Device::Cuda(_), Some(c)) => {
                let (dev, [sp], [x, w, bias], [gp, cp, hp, y]) =
                    s.cuda_io([spans.tensor], reads, [gates, Slot::Val(c), h_prev, out])?;
                cuda::forward(&dev, cell, [x, w, bias, sp], [gp, cp, hp, y], b, h)
            }
            (Device::Cuda(_), None) => {
                let (dev, [sp], [x, w, bias], [gp, hp, y]) = s.cuda_io([spans.tensor], reads, [gates, h_prev, out])?;
                cuda::forward(&dev, cell, [x, w, bias, sp], [gp, 0, hp, y], b, h)
            }
            (Device::Cpu, Some(c)) => {
                let ([x, w, bias], [gv, cv, hv, y]) = s.cpu_views(reads, [gates, Slot::Val(c), h_prev, out])?;
                cpu::forward(cell, x, w, bias, &spans.host, gv, cv, hv, y);
                Ok(())
            }
            (Device::Cpu, None) => {
                let ([x, w, bias], [gv, hv, y]) = s.cpu_views(reads, [gates, h_prev, out])?;
                cpu::forward(cell, x, w, bias, &spans.host, gv, &mut [], hv, y);
                Ok(())
            }
        }
    }

    pub(crate) fn backward<F: Float>(&self, s: &mut Store<F>) -> Result<()> {
        let (cell, spans, h, b) = (self.cell, &self.spans, self.hidden(), self.spans.batch());
        let (rows, gh) = (self.gx.dims()[0], cell.gates() * h);
        let params = self.w_hh.requires_grad || self.b_hh.requires_grad;
        if params && self.gaps() {
            s.zero(self.da)?; // (3) and (4) read every row
        }
        // (1) da, per sequence in reverse.
        let (w, gates, dy, da) =
            (Slot::Val(self.w_hh), Slot::Val(self.gates), Slot::Grad(self.out), Slot::Val(self.da));
        match (&s.device, self.c) {
            (Device::Cuda(_), Some(c)) => {
                let (dev, [sp], [wp, gp, cp, dyp], [dap]) =
                    s.cuda_io([spans.tensor], [w, gates, Slot::Val(c), dy], [da])?;
                cuda::backward(&dev, cell, [wp, sp, gp, cp, dyp], dap, b, h)?;
            }
            (Device::Cuda(_), None) => {
                let (dev, [sp], [wp, gp, dyp], [dap]) = s.cuda_io([spans.tensor], [w, gates, dy], [da])?;
                cuda::backward(&dev, cell, [wp, sp, gp, 0, dyp], dap, b, h)?;
            }
            (Device::Cpu, Some(c)) => {
                let ([wv, gv, cv, dyv], [dav]) = s.cpu_views([w, gates, Slot::Val(c), dy], [da])?;
                cpu::backward(cell, h, wv, &spans.host, gv, cv, dyv, dav);
            }
            (Device::Cpu, None) => {
                let ([wv, gv, dyv], [dav]) = s.cpu_views([w, gates, dy], [da])?;
                cpu::backward(cell, h, wv, &spans.host, gv, &[], dyv, dav);
            }
        }
        // (2) gx.grad += da at the spans' rows.
        if self.gx.requires_grad {
            match s.device {
                Device::Cuda(_) => {
                    let (dev, [sp], [dap], [dx]) = s.cuda_io([spans.tensor], [da], [Slot::Grad(self.gx)])?;
                    cuda::add_rows(&dev, sp, dap, dx, b, gh)?;
                }
                Device::Cpu => {
                    let ([dav], [dx]) = s.cpu_views([da], [Slot::Grad(self.gx)])?;
                    cpu::add_rows(&spans.host, dav, dx, gh);
                }
            }
        }
        // (3) w_hh.grad += daᵀ · h_prev: the weight gradient of h_prev (R, H) · w_hh (G·H, H)ᵀ.
        if self.w_hh.requires_grad {
            let dims = MatDims { batch: 1, m: rows, n: gh, k: h, trans_a: false, trans_b: true };
            let (p, reads, dw) = (s.precision, [Slot::Val(self.h_prev), da], [Slot::Grad(self.w_hh)]);
            match s.device {
                Device::Cuda(_) => {
                    let (dev, [], [hp, dap], [dwp]) = s.cuda_io([], reads, dw)?;
                    matmul::cuda::backward_b(&dev, &dims, hp, dap, dwp, p)?;
                }
                Device::Cpu => {
                    let ([hv, dav], [dwv]) = s.cpu_views(reads, dw)?;
                    matmul::cpu::backward_b(&dims, hv, dav, dwv, p);
                }
            }
        }
        // (4) b_hh.grad += Σ_rows da.
        if self.b_hh.requires_grad {
            match s.device {
                Device::Cuda(_) => {
                    let (dev, [], [dap], [db]) = s.cuda_io([], [da], [Slot::Grad(self.b_hh)])?;
                    super::elementwise::cuda::bias_backward(&dev, dap, db, rows, gh)?;
                }
                Device::Cpu => {
                    let ([dav], [db]) = s.cpu_views([da], [Slot::Grad(self.b_hh)])?;
                    super::elementwise::cpu::bias_backward(dav, db);
                }
            }
        }
        Ok(())
    }
}

/// Launchers of kernels/recurrent.cu; pointers are device addresses (f32 buffers, the spans'
/// i32). One block per sequence (grid-stride over sequences), its threads over hidden units.
pub mod cuda {
    use super::Cell;
    use crate::device::cuda::{Arg, Cuda};
    use crate::error::{Error, Result};

    const FILE: &str = "recurrent.cu";
    /// The most threads of a block; a larger H loops over its units.
    const MAX_THREADS: usize = 256;
    /// Dynamic shared memory a kernel may use without opting in.
    const DEFAULT_SHARED: usize = 48 * 1024;

    /// Runs `name` with one block per sequence and `floats` of dynamic shared memory.
    fn launch(dev: &Cuda, name: &'static str, args: &[Arg], b: usize, h: usize, floats: usize) -> Result<()> {
        let smem = floats * 4;
        if smem > DEFAULT_SHARED {
            dev.allow_dynamic_shared(FILE, name, smem as u32)
                .map_err(|e| Error::Cuda(format!("{FILE}:{name}: H = {h} needs {smem} bytes of shared memory: {e}")))?;
        }
        let threads = h.div_ceil(32).clamp(1, MAX_THREADS / 32) as u32 * 32;
        dev.launch(FILE, name, (b.min(65535) as u32, 1, 1), (threads, 1, 1), smem as u32, args)
    }

    /// [gx, w_hh, b_hh, spans] → [gates, c (0 for the RNN), h_prev, out] for B sequences of H
    /// units: gates (R, G·H) and c (R, H) at the rows of each span, h_prev (R, H) = h_{t−1} there,
    /// out (B, H) the last h. Shared memory: h (H), c (H, LSTM) and the pre-activations (G·H).
    pub fn forward(dev: &Cuda, cell: Cell, reads: [u64; 4], writes: [u64; 4], b: usize, h: usize) -> Result<()> {
        let (name, floats) = match cell {
            Cell::Lstm => ("lstm_forward", 6 * h),
            Cell::Rnn => ("rnn_forward", 2 * h),
        };
        let mut args: Vec<Arg> = reads.iter().chain(&writes).map(|&p| Arg::Ptr(p)).collect();
        args.extend([Arg::U64(b as u64), Arg::U64(h as u64)]);
        launch(dev, name, &args, b, h, floats)
    }

    /// [w_hh, spans, gates, c (0 for the RNN), dy] → da (R, G·H), the pre-activations' gradient
    /// at the rows of each span. Shared memory: da of two steps (2·G·H), dc (H, LSTM).
    pub fn backward(dev: &Cuda, cell: Cell, reads: [u64; 5], da: u64, b: usize, h: usize) -> Result<()> {
        let (name, floats) = match cell {
            Cell::Lstm => ("lstm_backward", 9 * h),
            Cell::Rnn => ("rnn_backward", 2 * h),
        };
        let mut args: Vec<Arg> = reads.iter().map(|&p| Arg::Ptr(p)).collect();
        args.extend([Arg::Ptr(da), Arg::U64(b as u64), Arg::U64(h as u64)]);
        launch(dev, name, &args, b, h, floats)
    }

    /// dx (R, width) += da (R, width) at the rows of each span; other rows untouched.
    pub fn add_rows(dev: &Cuda, spans: u64, da: u64, dx: u64, b: usize, width: usize) -> Result<()> {
        let args = [Arg::Ptr(spans), Arg::Ptr(da), Arg::Ptr(dx), Arg::U64(b as u64), Arg::U64(width as u64)];
        dev.launch(FILE, "recurrent_add_rows", (b.min(65535) as u32, 1, 1), (MAX_THREADS as u32, 1, 1), 0, &args)
    }
}

/// The specification: per sequence, the steps in order, every sum in the order the kernels take
/// (the backward's W_hhᵀ · da over gate rows j = 0, 1, …; the forward's W_hh · h over k in order,
/// where the kernel's warp sums differ in rounding only). Sequences run in parallel, each on its own
/// rows.
pub mod cpu {
    use super::Cell;
    use crate::float::Float;
    use rayon::prelude::*;

    #[inline]
    fn sigmoid<F: Float>(x: F) -> F {
        F::ONE / (F::ONE + (-x).exp())
    }

    /// `buf`'s rows (of `width`) of each span, as disjoint slices in the spans' order (empty for an
    /// empty span, or when `width` is 0). Spans are disjoint ([`super::Spans::new`]).
    fn span_rows<'a, F>(buf: &'a mut [F], width: usize, spans: &[(usize, usize)]) -> Vec<&'a mut [F]> {
        let mut order: Vec<usize> = (0..spans.len()).filter(|&b| spans[b].1 > 0).collect();
        order.sort_by_key(|&b| spans[b].0);
        let mut parts: Vec<&'a mut [F]> = spans.iter().map(|_| Default::default()).collect();
        let (mut rest, mut at) = (buf, 0);
        for b in order {
            let (start, len) = spans[b];
            let tail = std::mem::take(&mut rest).split_at_mut((start - at) * width).1;
            let (mine, tail) = tail.split_at_mut(len * width);
            (parts[b], rest, at) = (mine, tail, start + len);
        }
        parts
    }

    /// gx (R, G·H), w (G·H, H), bias (G·H) over `spans` → gates (R, G·H), c (R, H; empty for the
    /// RNN) and h_prev (R, H) at the spans' rows, out (B, H).
    #[allow(clippy::too_many_arguments)]
    pub fn forward<F: Float>(
        cell: Cell,
        gx: &[F],
        w: &[F],
        bias: &[F],
        spans: &[(usize, usize)],
        gates: &mut [F],
        c: &mut [F],
        h_prev: &mut [F],
        out: &mut [F],
    ) {
        let gh = bias.len();
        let h = gh / cell.gates();
        let cw = if c.is_empty() { 0 } else { h };
        let seqs: Vec<_> = spans
            .iter()
            .zip(span_rows(gates, gh, spans))
            .zip(span_rows(c, cw, spans))
            .zip(span_rows(h_prev, h, spans))
            .zip(out.chunks_exact_mut(h))
            .map(|((((&(start, len), g), c), hp), y)| (start, len, g, c, hp, y))
            .collect();
        seqs.into_par_iter().for_each(|(start, len, gr, cr, hpr, y)| {
            let (mut hs, mut cs, mut a) = (vec![F::ZERO; h], vec![F::ZERO; h], vec![F::ZERO; gh]);
            for t in 0..len {
                let x = &gx[(start + t) * gh..][..gh];
                for (j, aj) in a.iter_mut().enumerate() {
                    let dot = w[j * h..][..h].iter().zip(&hs).fold(F::ZERO, |s, (&wk, &hk)| s + wk * hk);
                    *aj = x[j] + bias[j] + dot;
                }
                hpr[t * h..][..h].copy_from_slice(&hs);
                let g = &mut gr[t * gh..][..gh];
                match cell {
                    Cell::Lstm => {
                        for u in 0..h {
                            let (i, f) = (sigmoid(a[u]), sigmoid(a[h + u]));
                            let (gg, o) = (a[2 * h + u].tanh(), sigmoid(a[3 * h + u]));
                            let cn = f * cs[u] + i * gg;
                            (g[u], g[h + u], g[2 * h + u], g[3 * h + u]) = (i, f, gg, o);
                            cr[t * h + u] = cn;
                            cs[u] = cn;
                            hs[u] = o * cn.tanh();
                        }
                    }
                    Cell::Rnn => {
                        for u in 0..h {
                            hs[u] = a[u].tanh();
                            g[u] = hs[u];
                        }
                    }
                }
            }
            y.copy_from_slice(&hs);
        });
    }

    /// w (G·H, H), the saved gates (R, G·H) and c (R, H; empty for the RNN), dy (B, H) → da
    /// (R, G·H) at the spans' rows, per sequence from its last row to its first.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<F: Float>(
        cell: Cell,
        h: usize,
        w: &[F],
        spans: &[(usize, usize)],
        gates: &[F],
        c: &[F],
        dy: &[F],
        da: &mut [F],
    ) {
        let gh = cell.gates() * h;
        let seqs: Vec<_> = spans.iter().enumerate().zip(span_rows(da, gh, spans)).collect();
        seqs.into_par_iter().for_each(|((b, &(start, len)), dar)| {
            let (mut dc, mut s) = (vec![F::ZERO; h], vec![F::ZERO; h]);
            let (mut cur, mut next) = (vec![F::ZERO; gh], vec![F::ZERO; gh]);
            for t in (0..len).rev() {
                let r = start + t;
                // W_hhᵀ · da_{t+1}, each unit's sum over j in order (as each thread of the kernel).
                s.fill(F::ZERO);
                if t + 1 < len {
                    for (j, &n) in next.iter().enumerate() {
                        s.iter_mut().zip(&w[j * h..][..h]).for_each(|(sv, &wv)| *sv += wv * n);
                    }
                }
                for u in 0..h {
                    let mut dh = if t + 1 == len { dy[b * h + u] } else { F::ZERO };
                    if t + 1 < len {
                        dh += s[u];
                    }
                    match cell {
                        Cell::Lstm => {
                            let g = &gates[r * gh..][..gh];
                            let (i, f, gg, o) = (g[u], g[h + u], g[2 * h + u], g[3 * h + u]);
                            let tc = c[r * h + u].tanh();
                            let cp = if t > 0 { c[(r - 1) * h + u] } else { F::ZERO };
                            let d = dc[u] + dh * o * (F::ONE - tc * tc); // dL/dc_t
                            cur[u] = d * gg * i * (F::ONE - i);
                            cur[h + u] = d * cp * f * (F::ONE - f);
                            cur[2 * h + u] = d * i * (F::ONE - gg * gg);
                            cur[3 * h + u] = dh * tc * o * (F::ONE - o);
                            dc[u] = d * f;
                        }
                        Cell::Rnn => {
                            let hh = gates[r * h + u];
                            cur[u] = dh * (F::ONE - hh * hh);
                        }
                    }
                }
                dar[t * gh..][..gh].copy_from_slice(&cur);
                std::mem::swap(&mut cur, &mut next);
            }
        });
    }

    /// dx (R, width) += da (R, width) at the spans' rows.
    pub fn add_rows<F: Float>(spans: &[(usize, usize)], da: &[F], dx: &mut [F], width: usize) {
        for &(start, len) in spans {
            let r = start * width..(start + len) * width;
            dx[r.clone()].iter_mut().zip(&da[r]).for_each(|(d, &v)| *d += v);
        }
    }
}
