//! The recurrent op (src/ops/recurrent.rs) on the CPU path: its forward against a plain float64
//! implementation of PyTorch's nn.LSTM / nn.RNN(tanh) equations written here per sequence; the
//! packed and padded layouts giving the same values and gradients; gradients only for what takes
//! one; and its refusals of bad input.

use engine::ops::recurrent::{Cell, Spans};
use engine::rng::Rng;
use engine::{Device, Error, Result, Tape, Tensor};

fn normal(n: usize, scale: f64, rng: &mut Rng) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * scale).collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// PyTorch's single-layer recurrence (h0 = c0 = 0) over each span of rows of x (R, IN):
/// the last hidden state of each sequence, (B, H).
#[allow(clippy::too_many_arguments)]
fn reference(
    cell: Cell,
    x: &[f64],
    w_ih: &[f64],
    b_ih: &[f64],
    w_hh: &[f64],
    b_hh: &[f64],
    spans: &[(usize, usize)],
    inp: usize,
    hid: usize,
) -> Vec<f64> {
    let gates = b_ih.len();
    let mut out = Vec::new();
    for &(start, len) in spans {
        let (mut h, mut c) = (vec![0.0; hid], vec![0.0; hid]);
        for t in 0..len {
            let xt = &x[(start + t) * inp..][..inp];
            // a_j = W_ih[j]·x_t + b_ih[j] + W_hh[j]·h_{t−1} + b_hh[j]
            let a: Vec<f64> = (0..gates)
                .map(|j| {
                    let mut v = b_ih[j] + b_hh[j];
                    for k in 0..inp {
                        v += w_ih[j * inp + k] * xt[k];
                    }
                    for k in 0..hid {
                        v += w_hh[j * hid + k] * h[k];
                    }
                    v
                })
                .collect();
            match cell {
                Cell::Lstm => {
                    for u in 0..hid {
                        let i = sigmoid(a[u]);
                        let f = sigmoid(a[hid + u]);
                        let g = a[2 * hid + u].tanh();
                        let o = sigmoid(a[3 * hid + u]);
                        c[u] = f * c[u] + i * g;
                        h[u] = o * c[u].tanh();
                    }
                }
                Cell::Rnn => h = a.iter().map(|v| v.tanh()).collect(),
            }
        }
        out.extend(h);
    }
    out
}

/// Sequences of 4, 0, 1, 6 and 2 rows, listed out of row order, in 17 rows with rows 6, 7 and 14
/// in no sequence.
const SPANS: [(usize, usize); 5] = [(8, 6), (4, 0), (5, 1), (0, 4), (15, 2)];

#[test]
fn forward_matches_pytorchs_equations_in_f64() {
    let (rows, inp, hid) = (17, 7, 5);
    for cell in [Cell::Lstm, Cell::Rnn] {
        let gh = cell.gates() * hid;
        let mut rng = Rng::new(3);
        let x = normal(rows * inp, 1.0, &mut rng);
        let (w_ih, b_ih) = (normal(gh * inp, 0.4, &mut rng), normal(gh, 0.5, &mut rng));
        let (w_hh, b_hh) = (normal(gh * hid, 0.5, &mut rng), normal(gh, 0.5, &mut rng));
        let want = reference(cell, &x, &w_ih, &b_ih, &w_hh, &b_hh, &SPANS, inp, hid);

        let mut tape = Tape::<f64>::new(Device::Cpu);
        let p =
            |t: &mut Tape<f64>, name: &str, dims: &[usize], v: &[f64]| t.store.add_param(name, dims, v, true).unwrap();
        let xs = tape.constant(&x, &[rows, inp]).unwrap();
        let (wi, bi) = (p(&mut tape, "w_ih", &[gh, inp], &w_ih), p(&mut tape, "b_ih", &[gh], &b_ih));
        let (wh, bh) = (p(&mut tape, "w_hh", &[gh, hid], &w_hh), p(&mut tape, "b_hh", &[gh], &b_hh));
        let spans = Spans::new(&mut tape, &SPANS).unwrap();
        let gx = tape.linear(xs, wi, bi).unwrap();
        let y = tape.recurrent(cell, gx, wh, bh, &spans).unwrap();
        assert_eq!(y.dims(), [SPANS.len(), hid]);
        let got = tape.store.read(y).unwrap();
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("{cell:?}: max |tape − reference| = {worst:.2e}");
        assert!(worst <= 1e-12, "{cell:?}: forward differs from the reference by {worst:e}");
        // the empty sequence gives h0 = 0, the others something else
        assert!(got[hid..2 * hid].iter().all(|&v| v == 0.0), "{cell:?}: empty sequence's output");
        assert!(got[..hid].iter().all(|&v| v != 0.0), "{cell:?}: first sequence's output");
    }
}

/// Output and gradients of one recurrence on `spans` over rows `x` (R, G·H), with w_hh, b_hh and
/// a projection weight for the loss.
struct Run {
    out: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
    db: Vec<f64>,
}

fn run(
    cell: Cell,
    x: &[f64],
    w: &[f64],
    b: &[f64],
    hid: usize,
    spans: &dyn Fn(&mut Tape<f64>) -> Result<Spans>,
) -> Run {
    let gh = cell.gates() * hid;
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let xs = tape.store.add_param("x", &[x.len() / gh, gh], x, true).unwrap();
    let ws = tape.store.add_param("w_hh", &[gh, hid], w, true).unwrap();
    let bs = tape.store.add_param("b_hh", &[gh], b, true).unwrap();
    let sp = spans(&mut tape).unwrap();
    let y = tape.recurrent(cell, xs, ws, bs, &sp).unwrap();
    let r: Vec<f64> = (0..y.numel()).map(|i| ((i * 7) % 11) as f64 / 5.0 - 1.0).collect();
    let r = tape.constant(&r, y.dims()).unwrap();
    let l = tape.mul(y, r).unwrap();
    let l = tape.sum(l).unwrap();
    tape.backward(l).unwrap();
    let s = &tape.store;
    Run {
        out: s.read(y).unwrap(),
        dx: s.read_grad(xs).unwrap(),
        dw: s.read_grad(ws).unwrap(),
        db: s.read_grad(bs).unwrap(),
    }
}

fn close(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    assert!(worst <= 1e-12, "{what}: differ by {worst:e}");
}

#[test]
fn packed_and_padded_spans_agree() {
    let (lens, t, hid) = ([4usize, 0, 1, 6], 6, 5);
    for cell in [Cell::Lstm, Cell::Rnn] {
        let gh = cell.gates() * hid;
        let mut rng = Rng::new(11);
        let (w, b) = (normal(gh * hid, 0.5, &mut rng), normal(gh, 0.5, &mut rng));
        // padded (B·T, G·H) with random padding rows; packed: the real rows back to back
        let padded = normal(lens.len() * t * gh, 1.0, &mut rng);
        let real: Vec<usize> = (0..lens.len()).flat_map(|s| (0..lens[s]).map(move |p| s * t + p)).collect();
        let packed: Vec<f64> = real.iter().flat_map(|&r| padded[r * gh..(r + 1) * gh].to_vec()).collect();
        let mut cu = vec![0];
        lens.iter().for_each(|&l| cu.push(cu.last().unwrap() + l));

        let mask: Vec<i32> = (0..lens.len() * t).map(|i| i32::from(i % t < lens[i / t])).collect();
        let a = run(cell, &packed, &w, &b, hid, &|tp| {
            let cu = tp.cu_seqlens(&cu)?;
            Spans::packed(tp, &cu)
        });
        let p = run(cell, &padded, &w, &b, hid, &|tp| Spans::padded(tp, t, &lens));
        let m = run(cell, &padded, &w, &b, hid, &|tp| {
            let mask = tp.ints(&mask, &[lens.len(), t])?;
            Spans::from_mask(tp, mask)
        });
        for (name, q) in [("padded", &p), ("from_mask", &m)] {
            close(&format!("{cell:?} {name} output"), &q.out, &a.out);
            let dx_real: Vec<f64> = real.iter().flat_map(|&r| q.dx[r * gh..(r + 1) * gh].to_vec()).collect();
            close(&format!("{cell:?} {name} dx"), &dx_real, &a.dx);
            close(&format!("{cell:?} {name} dw_hh"), &q.dw, &a.dw);
            close(&format!("{cell:?} {name} db_hh"), &q.db, &a.db);
            // the padding rows get no gradient
            let pad = (0..lens.len() * t).filter(|r| !real.contains(r));
            assert!(
                pad.flat_map(|r| q.dx[r * gh..(r + 1) * gh].to_vec()).all(|v| v == 0.0),
                "{cell:?} {name}: padding"
            );
        }
        assert!(a.dw.iter().any(|&v| v != 0.0) && a.dx.iter().any(|&v| v != 0.0));
    }
}

#[test]
fn only_inputs_that_take_a_gradient_get_one() {
    // gx a constant and w_hh frozen: only b_hh takes a gradient (and a frozen tensor has no slot
    // to write); the same b_hh gradient as with every input trainable.
    let (rows, hid) = (9, 4);
    for cell in [Cell::Lstm, Cell::Rnn] {
        let gh = cell.gates() * hid;
        let mut rng = Rng::new(5);
        let (x, w, b) = (normal(rows * gh, 1.0, &mut rng), normal(gh * hid, 0.5, &mut rng), normal(gh, 0.5, &mut rng));
        let full = run(cell, &x, &w, &b, hid, &|tp| Spans::new(tp, &[(0, 3), (5, 4)]));
        let mut tape = Tape::<f64>::new(Device::Cpu);
        let xs = tape.constant(&x, &[rows, gh]).unwrap();
        let ws = tape.store.add_param("w_hh", &[gh, hid], &w, false).unwrap();
        let bs = tape.store.add_param("b_hh", &[gh], &b, true).unwrap();
        let sp = Spans::new(&mut tape, &[(0, 3), (5, 4)]).unwrap();
        let y = tape.recurrent(cell, xs, ws, bs, &sp).unwrap();
        let r: Vec<f64> = (0..y.numel()).map(|i| ((i * 7) % 11) as f64 / 5.0 - 1.0).collect();
        let r = tape.constant(&r, y.dims()).unwrap();
        let l = tape.mul(y, r).unwrap();
        let l = tape.sum(l).unwrap();
        tape.backward(l).unwrap();
        close(&format!("{cell:?} db_hh"), &tape.store.read_grad(bs).unwrap(), &full.db);
        assert!(tape.store.read_grad(ws).is_err(), "a frozen w_hh has no gradient");
    }
}

fn message(r: Result<Tensor>) -> String {
    r.expect_err("the call must fail").to_string()
}

#[test]
fn refuses_bad_shapes_and_spans() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let p = |t: &mut Tape<f32>, name: &str, dims: &[usize]| {
        t.store.add_param(name, dims, &vec![0.1; dims.iter().product()], true).unwrap()
    };
    let (gx, w, b) = (p(&mut tape, "gx", &[10, 12]), p(&mut tape, "w", &[12, 3]), p(&mut tape, "b", &[12]));
    let (w_rnn, b_bad) = (p(&mut tape, "w_rnn", &[3, 3]), p(&mut tape, "b_bad", &[11]));
    let b3 = p(&mut tape, "b3", &[3]);
    let ok = Spans::new(&mut tape, &[(0, 4), (4, 6)]).unwrap();
    assert_eq!(tape.recurrent(Cell::Lstm, gx, w, b, &ok).unwrap().dims(), [2, 3]);

    let cases: [(Result<Tensor>, &str); 4] = [
        (tape.recurrent(Cell::Rnn, gx, w, b, &ok), "w_hh [12, 3] must be (G·H, H)"),
        (tape.recurrent(Cell::Lstm, gx, w, b_bad, &ok), "b_hh [11] does not match w_hh [12, 3] (needs [12])"),
        (tape.recurrent(Cell::Rnn, gx, w_rnn, b3, &ok), "gx [10, 12] must be (R, G·H) = (R, 3)"),
        (
            {
                let past = Spans::new(&mut tape, &[(0, 4), (8, 3)]).unwrap();
                tape.recurrent(Cell::Lstm, gx, w, b, &past)
            },
            "sequence 1 (rows 8..11) lies outside gx's 10 rows",
        ),
    ];
    for (r, want) in cases {
        let m = message(r);
        assert!(m.starts_with("recurrent: ") && m.contains(want), "{m}");
    }

    // Spans built by hand, past `Spans::new`'s checks: the op checks again.
    let forged = Spans { host: vec![(0, 4), (2, 3)].into(), ..ok.clone() };
    let m = message(tape.recurrent(Cell::Lstm, gx, w, b, &forged));
    assert_eq!(m, "recurrent: sequences 0 (rows 0..4) and 1 (rows 2..5) overlap");
    let overlap = Spans::new(&mut tape, &[(0, 4), (9, 0), (3, 2)]).unwrap_err();
    assert!(matches!(overlap, Error::Value { .. }), "{overlap}");
    assert!(overlap.to_string().contains("sequences 0 (rows 0..4) and 2 (rows 3..5) overlap"), "{overlap}");
    let long = Spans::padded(&mut tape, 5, &[5, 6]).unwrap_err().to_string();
    assert!(long.contains("sequence 1 has 6 tokens, more than the batch's T = 5"), "{long}");
    let mask = tape.ints(&[1, 1, 0, 1, 0, 1], &[2, 3]).unwrap();
    let holes = Spans::from_mask(&mut tape, mask).unwrap_err().to_string();
    assert!(holes.contains("row 1's mask has padding before a real token"), "{holes}");
}
