//! GPU suite: the recurrence (kernels/recurrent.cu) against the CPU path, both cells, on packed
//! spans (with an empty and a one-row sequence) and padded spans (with padding rows, which the
//! harness's NaN poison must not reach), H = 37 (not a multiple of 32), 256 and, for the RNN, 300
//! (more units than a block's 256 threads). Output and the gradients of gx, w_hh and b_hh within
//! F32_TOL. See tests/common for the method. R stays small: the emulator is slow.

mod common;
use common::{F32_TOL, gpu, parity};
use engine::ops::recurrent::{Cell, Spans};
use engine::{Device, Result, Tape, Tensor};
use std::time::Instant;

/// Sequence lengths of the packed cases: an empty and a one-row sequence among them.
const PACKED: [usize; 5] = [9, 0, 1, 13, 4];
/// Lengths of the padded cases, T = 11: a full row, an empty one, one token, and padding.
const PADDED: [usize; 4] = [11, 0, 1, 6];
const T: usize = 11;

/// One parity case: gx (R, G·H), w_hh scaled by 1/√H (PyTorch's init range, keeping the cells
/// off saturation), b_hh, over the spans `layout` builds.
fn case(g: &Device, cell: Cell, h: usize, padded: bool) {
    let gh = cell.gates() * h;
    let rows = if padded { PADDED.len() * T } else { PACKED.iter().sum() };
    let name = format!("{cell:?} H = {h} {}", if padded { "padded" } else { "packed" });
    let started = Instant::now();
    let spans = |tp: &mut Tape<f32>| -> Result<Spans> {
        if padded {
            Spans::padded(tp, T, &PADDED)
        } else {
            let mut cu = vec![0];
            PACKED.iter().for_each(|&l| cu.push(cu.last().unwrap() + l));
            let cu = tp.cu_seqlens(&cu)?;
            Spans::packed(tp, &cu)
        }
    };
    parity(g, &name, &[&[rows, gh], &[gh, h], &[gh]], F32_TOL, &|tp, x: &[Tensor]| {
        let sp = spans(tp)?;
        let w = tp.scale(x[1], 1.0 / (h as f64).sqrt())?;
        tp.recurrent(cell, x[0], w, x[2], &sp)
    });
    println!("{name}: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn lstm_h37() {
    let Some(g) = gpu() else { return };
    case(&g, Cell::Lstm, 37, false);
    case(&g, Cell::Lstm, 37, true);
}

#[test]
fn lstm_h256() {
    let Some(g) = gpu() else { return };
    case(&g, Cell::Lstm, 256, false);
    case(&g, Cell::Lstm, 256, true);
}

#[test]
fn rnn_h37() {
    let Some(g) = gpu() else { return };
    case(&g, Cell::Rnn, 37, false);
    case(&g, Cell::Rnn, 37, true);
}

#[test]
fn rnn_h256_and_h300() {
    let Some(g) = gpu() else { return };
    case(&g, Cell::Rnn, 256, false);
    case(&g, Cell::Rnn, 256, true);
    case(&g, Cell::Rnn, 300, true);
}

#[test]
fn lstm_head_with_its_input_projection() {
    // gx = x · w_ihᵀ + b_ih on the GPU's GEMM, then the LSTM: the whole head, H = 37.
    let Some(g) = gpu() else { return };
    let (h, inp) = (37, 50);
    let gh = 4 * h;
    let rows = PADDED.len() * T;
    let started = Instant::now();
    parity(&g, "linear + lstm padded", &[&[rows, inp], &[gh, inp], &[gh], &[gh, h], &[gh]], F32_TOL, &|tp, x| {
        let sp = Spans::padded(tp, T, &PADDED)?;
        let w_ih = tp.scale(x[1], 1.0 / (inp as f64).sqrt())?;
        let gx = tp.linear(x[0], w_ih, x[2])?;
        let w_hh = tp.scale(x[3], 1.0 / (h as f64).sqrt())?;
        tp.recurrent(Cell::Lstm, gx, w_hh, x[4], &sp)
    });
    println!("linear + lstm padded: {:.1} s", started.elapsed().as_secs_f64());
}
