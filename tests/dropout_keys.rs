//! Keyed dropout (issue 16): `dropout_rows` and `attention_dropout` draw each element's mask from
//! (seed, stream, token), so a padded batch (B, T, C) and its token-packed twin (N, C) drop the
//! same elements of every real token. Checked on the CPU path against the definition in
//! engine::rng (hash_uniform at row_index / attention_index), bit for bit; the CUDA kernels are
//! checked against this path in tests/cuda_parity_dropout_keys.rs.

mod common;
use common::gradcheck::check;
use engine::ops::Op;
use engine::ops::dropout::{DropKey, Dropout};
use engine::rng::{MAX_KEYED_BATCH, MAX_KEYED_LEN, Rng, attention_index, hash_uniform, row_index, token_key};
use engine::{Arena, Device, Shape, Tape, Tensor};
use std::collections::HashSet;

const SEED: u64 = 20_240_516;

fn training_tape() -> Tape<f32> {
    let mut tape = Tape::new(Device::Cpu);
    tape.set_training(true);
    tape.set_seed(SEED);
    tape
}

fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// The mask by definition: 1/(1 − p) (rounded to f32) where the draw of `stream` at `index` is ≥ p.
fn mask(p: f64, stream: u64, index: u64) -> f32 {
    if hash_uniform(SEED, stream, index) >= p { (1.0 / (1.0 - p)) as f32 } else { 0.0 }
}

fn same_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {i}: {g} vs {w}");
    }
}

/// token_key(b, t) of every position of a (B, T) batch, padding included.
fn padded_keys(b: usize, t: usize) -> Vec<i32> {
    (0..b).flat_map(|s| (0..t).map(move |i| token_key(s, i) as i32)).collect()
}

/// token_key(b, t) of the real tokens only, sequence after sequence.
fn packed_keys(lens: &[usize]) -> Vec<i32> {
    lens.iter().enumerate().flat_map(|(s, &n)| (0..n).map(move |i| token_key(s, i) as i32)).collect()
}

/// dropout_rows on a fresh tape after one flat dropout (so the keyed call draws stream 2);
/// returns the output and d(Σ out)/dx, which is the mask.
fn rows_on_tape(x: &[f32], dims: &[usize], keys: &[i32], key_dims: &[usize], p: f64) -> (Vec<f32>, Vec<f32>) {
    let mut tape = training_tape();
    let xt = tape.store.add_param("x", dims, x, true).unwrap();
    let other = tape.store.add_param("other", &[3], &[1.0; 3], true).unwrap();
    tape.dropout(other, 0.5).unwrap();
    let k = tape.ints(keys, key_dims).unwrap();
    let y = tape.dropout_rows(xt, k, p).unwrap();
    assert!(matches!(tape.ops().last(), Some(Op::Dropout(Dropout { key: DropKey::Rows(_), stream: 2, .. }))));
    let loss = tape.sum(y).unwrap();
    tape.backward(loss).unwrap();
    (tape.store.read(y).unwrap(), tape.store.read_grad(xt).unwrap())
}

#[test]
fn rows_padded_and_packed_drop_the_same_elements() {
    // C = 37 and 771: a narrow row and one wider than a parallel chunk's rows_per_chunk grouping.
    for (c, p) in [(37, 0.4), (771, 0.1)] {
        let (b, t, lens) = (3, 11, [11, 4, 7]);
        let x = normal(b * t * c, c as u64);
        let packed: Vec<f32> = (0..b).flat_map(|s| x[s * t * c..(s * t + lens[s]) * c].iter().copied()).collect();
        let n = lens.iter().sum::<usize>();
        let (yp, gp) = rows_on_tape(&x, &[b, t, c], &padded_keys(b, t), &[b, t], p);
        let (yk, gk) = rows_on_tape(&packed, &[n, c], &packed_keys(&lens), &[n], p);
        let mut row = 0;
        for (s, &len) in lens.iter().enumerate() {
            for i in 0..len {
                let what = format!("C {c}, sequence {s} token {i}");
                let padded = (s * t + i) * c..(s * t + i + 1) * c;
                same_bits(&yk[row * c..(row + 1) * c], &yp[padded.clone()], &format!("{what}: output"));
                same_bits(&gk[row * c..(row + 1) * c], &gp[padded.clone()], &format!("{what}: gradient"));
                let want: Vec<f32> = (0..c).map(|col| mask(p, 2, row_index(token_key(s, i), c, col))).collect();
                same_bits(&gk[row * c..(row + 1) * c], &want, &format!("{what}: mask"));
                let out: Vec<f32> = (0..c).map(|col| x[padded.start + col] * want[col]).collect();
                same_bits(&yk[row * c..(row + 1) * c], &out, &format!("{what}: x · mask"));
                row += 1;
            }
        }
        let dropped = gk.iter().filter(|&&m| m == 0.0).count();
        assert!(dropped > 0 && dropped < gk.len(), "C {c}: {dropped} of {} dropped", gk.len());
    }
}

/// attention_dropout of probs (B, NH, T, T) whose element (b, h, i, j) is v(b, h, i, j), on a
/// fresh tape (stream 1); returns the output and the mask (d(Σ out)/dprobs).
fn attention_on_tape(b: usize, nh: usize, t: usize, p: f64) -> (Vec<f32>, Vec<f32>) {
    let v: Vec<f32> =
        (0..b * nh * t * t).map(|e| value(e / (nh * t * t), e / (t * t) % nh, e / t % t, e % t)).collect();
    let mut tape = training_tape();
    let probs = tape.store.add_param("probs", &[b, nh, t, t], &v, true).unwrap();
    let y = tape.attention_dropout(probs, p).unwrap();
    assert!(matches!(tape.ops().last(), Some(Op::Dropout(Dropout { key: DropKey::Attention { .. }, .. }))));
    let loss = tape.sum(y).unwrap();
    tape.backward(loss).unwrap();
    (tape.store.read(y).unwrap(), tape.store.read_grad(probs).unwrap())
}

/// A value that names its element, the same in any padding.
fn value(b: usize, h: usize, i: usize, j: usize) -> f32 {
    1.0 + ((b * 7 + h) * 256 + i * 16 + j) as f32 / 4096.0
}

#[test]
fn attention_mask_depends_on_sequence_head_query_and_key_only() {
    let (b, nh, p, lens) = (3, 2, 0.3, [6, 2, 5]);
    // The same sequences padded to T = 6 and to T = 9: every element is the defined draw, so the
    // real part of each sequence's (NH, len, len) block is the same in both.
    let (y6, m6) = attention_on_tape(b, nh, 6, p);
    let (y9, m9) = attention_on_tape(b, nh, 9, p);
    for (t, y, m) in [(6, &y6, &m6), (9, &y9, &m9)] {
        for e in 0..b * nh * t * t {
            let (s, h, i, j) = (e / (nh * t * t), e / (t * t) % nh, e / t % t, e % t);
            let want = mask(p, 1, attention_index(s, h, i, j, nh));
            assert_eq!(m[e].to_bits(), want.to_bits(), "T {t}: mask of ({s}, {h}, {i}, {j})");
            assert_eq!(y[e].to_bits(), (value(s, h, i, j) * want).to_bits(), "T {t}: output of ({s}, {h}, {i}, {j})");
        }
    }
    let mut dropped = 0;
    for (s, &len) in lens.iter().enumerate() {
        for h in 0..nh {
            for i in 0..len {
                for j in 0..len {
                    let (e6, e9) = (((s * nh + h) * 6 + i) * 6 + j, ((s * nh + h) * 9 + i) * 9 + j);
                    assert_eq!(y6[e6].to_bits(), y9[e9].to_bits(), "({s}, {h}, {i}, {j}) differs between paddings");
                    dropped += (m6[e6] == 0.0) as usize;
                }
            }
        }
    }
    assert!(dropped > 0, "nothing dropped");
}

#[test]
fn keep_rate_is_one_minus_p() {
    // 2¹⁸ ones through each keyed mask: the kept share within 0.005 of 1 − p (5σ ≈ 0.0045 at
    // p = 0.3), every kept value exactly 1/(1 − p), and the rows' patterns not copies of each other.
    let p = 0.3;
    let keep = (1.0 / (1.0 - p)) as f32;
    let (b, t, c) = (8, 128, 256);
    let mut tape = training_tape();
    let ones = tape.constant(&vec![1.0; b * t * c], &[b, t, c]).unwrap();
    let keys = tape.ints(&padded_keys(b, t), &[b, t]).unwrap();
    // a constant needs no gradient, so nothing is recorded, but the mask is applied all the same
    let rows = tape.dropout_rows(ones, keys, p).unwrap();
    let probs = tape.constant(&vec![1.0; b * t * c], &[4, 4, 128, 128]).unwrap();
    let attn = tape.attention_dropout(probs, p).unwrap();
    for (what, y) in [("rows", rows), ("attention", attn)] {
        let y = tape.store.read(y).unwrap();
        assert!(y.iter().all(|&v| v == 0.0 || v == keep), "{what}: a value other than 0 and {keep}");
        let kept = y.iter().filter(|&&v| v == keep).count() as f64 / y.len() as f64;
        println!("{what}: kept {kept:.5} of {} (1 − p = {})", y.len(), 1.0 - p);
        assert!((kept - (1.0 - p)).abs() < 0.005, "{what}: kept share {kept}");
        let patterns: HashSet<Vec<bool>> = y.chunks(128).map(|r| r.iter().map(|&v| v != 0.0).collect()).collect();
        assert!(patterns.len() > y.len() / 128 - 4, "{what}: only {} distinct row patterns", patterns.len());
    }
}

#[test]
fn flat_dropout_is_unchanged() {
    // Element i draws at i itself, stream = call number: today's masks, bit for bit.
    let (r, c, p) = (37, 101, 0.25);
    let x = normal(r * c, 3);
    let mut tape = training_tape();
    let xt = tape.store.add_param("x", &[r, c], &x, true).unwrap();
    let y1 = tape.dropout(xt, p).unwrap();
    let y2 = tape.dropout(y1, 0.5).unwrap();
    assert!(matches!(tape.ops().last(), Some(Op::Dropout(Dropout { key: DropKey::Flat, stream: 2, .. }))));
    let loss = tape.sum(y2).unwrap();
    tape.backward(loss).unwrap();
    let m1: Vec<f32> = (0..r * c).map(|i| mask(p, 1, i as u64)).collect();
    let m2: Vec<f32> = (0..r * c).map(|i| mask(0.5, 2, i as u64)).collect();
    let want1: Vec<f32> = (0..r * c).map(|i| x[i] * m1[i]).collect();
    same_bits(&tape.store.read(y1).unwrap(), &want1, "first call");
    let want2: Vec<f32> = (0..r * c).map(|i| want1[i] * m2[i]).collect();
    same_bits(&tape.store.read(y2).unwrap(), &want2, "second call");
    let grad: Vec<f32> = (0..r * c).map(|i| m2[i] * m1[i]).collect();
    same_bits(&tape.store.read_grad(xt).unwrap(), &grad, "gradient");
}

#[test]
fn identity_outside_training_or_at_p_zero() {
    let mut tape = training_tape();
    let x = tape.store.add_param("x", &[2, 3, 5], &normal(30, 4), true).unwrap();
    let keys = tape.ints(&padded_keys(2, 3), &[2, 3]).unwrap();
    let probs = tape.store.add_param("probs", &[2, 3, 4, 4], &normal(96, 5), true).unwrap();
    assert_eq!(tape.dropout_rows(x, keys, 0.0).unwrap(), x);
    assert_eq!(tape.attention_dropout(probs, 0.0).unwrap(), probs);
    tape.set_training(false);
    assert_eq!(tape.dropout_rows(x, keys, 0.5).unwrap(), x);
    assert_eq!(tape.attention_dropout(probs, 0.5).unwrap(), probs);
    assert!(tape.ops().is_empty(), "an identity recorded an op");
}

#[test]
fn gradcheck_rows() {
    // x (2, 5, 7) with keys (2, 5), then the same through a product so that the gradient needs
    // the forward's mask and the backward's to agree.
    let keys = padded_keys(2, 5);
    check("dropout_rows", &[&[2, 5, 7]], &|t, x| {
        let k = t.ints(&keys, &[2, 5])?;
        t.dropout_rows(x[0], k, 0.3)
    });
    check("dropout_rows squared", &[&[2, 5, 7]], &|t, x| {
        let k = t.ints(&keys, &[2, 5])?;
        let y = t.dropout_rows(x[0], k, 0.3)?;
        t.mul(y, x[0])
    });
}

#[test]
fn gradcheck_attention() {
    check("attention_dropout", &[&[2, 3, 5, 5]], &|t, x| t.attention_dropout(x[0], 0.3));
    check("attention_dropout squared", &[&[2, 3, 5, 5]], &|t, x| {
        let y = t.attention_dropout(x[0], 0.3)?;
        t.mul(y, x[0])
    });
}

#[test]
fn bad_shapes_are_errors() {
    for training in [true, false] {
        let mut tape = training_tape();
        tape.set_training(training);
        let x = tape.store.add_param("x", &[2, 3, 5], &normal(30, 6), true).unwrap();
        let err = |r: engine::Result<Tensor>| r.expect_err("accepted a bad shape").to_string();
        // keys: one per row, as integers
        let short = tape.ints(&padded_keys(2, 2), &[2, 2]).unwrap();
        let msg = err(tape.dropout_rows(x, short, 0.1));
        assert!(msg.contains("one key per row") && msg.contains("6 rows"), "{msg}");
        let floats = tape.constant(&[0.0; 6], &[6]).unwrap();
        let msg = err(tape.dropout_rows(x, floats, 0.1));
        assert!(msg.contains("integer"), "{msg}");
        let keys = tape.ints(&padded_keys(2, 3), &[6]).unwrap();
        assert!(tape.dropout_rows(x, keys, 1.0).is_err() && tape.dropout_rows(x, keys, -0.1).is_err());
        // attention: (B, NH, T, T) only, B ≤ MAX_KEYED_BATCH, T ≤ MAX_KEYED_LEN
        let msg = err(tape.attention_dropout(x, 0.1));
        assert!(msg.contains("rank 4"), "{msg}");
        let wide = tape.store.add_param("wide", &[1, 2, 3, 4], &[0.5; 24], true).unwrap();
        let msg = err(tape.attention_dropout(wide, 0.1));
        assert!(msg.contains("(B, NH, T, T)"), "{msg}");
        let many = tape.store.add_param("many", &[MAX_KEYED_BATCH + 1, 1, 1, 1], &vec![0.5; MAX_KEYED_BATCH + 1], true);
        let msg = err(tape.attention_dropout(many.unwrap(), 0.1));
        assert!(msg.contains(&MAX_KEYED_BATCH.to_string()), "{msg}");
        // the largest batch a key can name is fine
        let most = tape.store.add_param("most", &[MAX_KEYED_BATCH, 1, 1, 1], &vec![0.5; MAX_KEYED_BATCH], true);
        tape.attention_dropout(most.unwrap(), 0.1).unwrap();
        // (1, 1, 2¹⁶ + 1, 2¹⁶ + 1) would take 17 GB: a handle that is never read, since the shape
        // check comes first
        let long = Tensor {
            arena: Arena::Act,
            offset: 0,
            shape: Shape::new(&[1, 1, MAX_KEYED_LEN + 1, MAX_KEYED_LEN + 1]).unwrap(),
            requires_grad: true,
        };
        let msg = err(tape.attention_dropout(long, 0.1));
        assert!(msg.contains(&MAX_KEYED_LEN.to_string()), "{msg}");
        let square = tape.store.add_param("square", &[1, 2, 3, 3], &[0.5; 18], true).unwrap();
        assert!(tape.attention_dropout(square, 1.5).is_err());
    }
}
