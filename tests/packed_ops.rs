//! The ops of token-packed batches (issue 16) on the CPU path: `embedding_at`, `first_tokens`,
//! `mean_pool_packed` and `columns`. A packed batch holds the real tokens of B sequences back to
//! back, (N, C), sequence b = rows cu[b]..cu[b+1]; each packed op must agree with its padded
//! counterpart on every real token, forward and backward. Also float64 gradient checks and the
//! errors of bad shapes and indices. (The CUDA kernels: tests/cuda_parity_packed.rs.)

mod common;
use common::Build;
use common::gradcheck::check;
use engine::rng::Rng;
use engine::{Device, Error, Result, Tape, Tensor};

/// Sequence lengths of the packed/padded comparisons: an empty sequence, a single token, and
/// lengths below the padded T.
const LENS: [usize; 5] = [5, 1, 0, 7, 3];
const T: usize = 7;

fn offsets(lens: &[usize]) -> Vec<usize> {
    let mut cu = vec![0];
    for &t in lens {
        cu.push(cu.last().unwrap() + t);
    }
    cu
}

fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() as f32).collect()
}

/// Padded index b·T + t of every packed row, in packed order.
fn real_tokens(lens: &[usize], t: usize) -> Vec<usize> {
    lens.iter().enumerate().flat_map(|(b, &n)| (0..n).map(move |i| b * t + i)).collect()
}

/// Forward and backward of `build` on the CPU in f32: `params` become trainable parameters (the
/// inputs of `build`), the loss is Σ out ⊙ `weights`. Returns the output and every gradient.
fn run(params: &[(&[usize], &[f32])], weights: &[f32], build: &Build<'_>) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let xs: Vec<Tensor> = params
        .iter()
        .enumerate()
        .map(|(i, (dims, data))| tape.store.add_param(&format!("p{i}"), dims, data, true).unwrap())
        .collect();
    let out = build(&mut tape, &xs).unwrap();
    assert_eq!(out.numel(), weights.len(), "weights for output {}", out.shape);
    let r = tape.constant(weights, out.dims()).unwrap();
    let p = tape.mul(out, r).unwrap();
    let loss = tape.sum(p).unwrap();
    tape.backward(loss).unwrap();
    let grads = xs.iter().map(|&x| tape.store.read_grad(x).unwrap()).collect();
    (tape.store.read(out).unwrap(), grads)
}

/// max |a − b| / max |b| (1 for a zero reference with a nonzero difference).
fn rel(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max);
    let n = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
    if n == 0.0 { d } else { d / n }
}

fn rows(v: &[f32], c: usize, which: &[usize]) -> Vec<f32> {
    which.iter().flat_map(|&r| v[r * c..(r + 1) * c].iter().copied()).collect()
}

// (a) embedding_at

#[test]
fn embedding_at_with_positions_0_to_t_equals_the_padded_embedding() {
    let (vocab, p_rows, c) = (9, 8, 6);
    let b = LENS.len();
    let real = real_tokens(&LENS, T);
    let n = real.len();
    // Padded ids: id 3 in every sequence (repeated across and within sequences), padding id 0.
    let ids_pad: Vec<i32> =
        (0..b * T).map(|i| if i.is_multiple_of(3) { 3 } else { ((i * 5 + 1) % vocab) as i32 }).collect();
    let types_pad: Vec<i32> = (0..b * T).map(|i| i32::from(i % T >= 2)).collect();
    let pick = |v: &[i32]| -> Vec<i32> { real.iter().map(|&i| v[i]).collect() };
    let (ids, types) = (pick(&ids_pad), pick(&types_pad));
    let positions: Vec<i32> = LENS.iter().flat_map(|&l| 0..l as i32).collect();
    assert!(ids.iter().filter(|&&id| id == 3).count() > 3 && positions.iter().filter(|&&p| p == 0).count() == 4);
    let tables = [normal(vocab * c, 1), normal(p_rows * c, 2), normal(2 * c, 3)];
    let shapes: [&[usize]; 3] = [&[vocab, c], &[p_rows, c], &[2, c]];
    let params: Vec<(&[usize], &[f32])> = shapes.iter().zip(&tables).map(|(s, d)| (*s, &d[..])).collect();
    // The padded tokens weigh zero in the loss: their (zero) gradients add nothing to the tables.
    let w_packed = normal(n * c, 4);
    let mut w_pad = vec![0.0; b * T * c];
    for (k, &i) in real.iter().enumerate() {
        w_pad[i * c..(i + 1) * c].copy_from_slice(&w_packed[k * c..(k + 1) * c]);
    }
    let (out_pad, g_pad) = run(&params, &w_pad, &|tp, x| {
        let (i, ty) = (tp.ints(&ids_pad, &[b, T])?, tp.ints(&types_pad, &[b, T])?);
        tp.embedding(i, ty, x[0], x[1], x[2])
    });
    let (out, g) = run(&params, &w_packed, &|tp, x| {
        let (i, ty, p) = (tp.ints(&ids, &[n])?, tp.ints(&types, &[n])?, tp.ints(&positions, &[n])?);
        tp.embedding_at(i, ty, p, x[0], x[1], x[2])
    });
    // Same sums in the same order: equal bits, forward and backward.
    assert_eq!(out, rows(&out_pad, c, &real), "output of the real tokens");
    for (k, name) in ["word", "position", "token type"].iter().enumerate() {
        assert_eq!(g[k], g_pad[k], "{name} table gradient");
        assert!(g[k].iter().any(|&v| v != 0.0), "{name} table gradient is all zero");
    }
    // Position rows past the longest sequence take no gradient.
    assert!(g[1][T * c..].iter().all(|&v| v == 0.0));
}

#[test]
fn embedding_at_takes_any_rank_and_arbitrary_positions() {
    let (vocab, p_rows, c) = (5, 6, 3);
    let tables = [normal(vocab * c, 5), normal(p_rows * c, 6), normal(2 * c, 7)];
    let shapes: [&[usize]; 3] = [&[vocab, c], &[p_rows, c], &[2, c]];
    let params: Vec<(&[usize], &[f32])> = shapes.iter().zip(&tables).map(|(s, d)| (*s, &d[..])).collect();
    // (2, 4) tokens, positions repeated and out of order.
    let ids = [4, 0, 4, 2, 1, 4, 3, 0];
    let types = [0, 1, 1, 0, 0, 0, 1, 1];
    let pos = [5, 2, 2, 0, 5, 5, 1, 3];
    let w = normal(8 * c, 8);
    let (out, g) = run(&params, &w, &|tp, x| {
        let (i, ty, p) = (tp.ints(&ids, &[2, 4])?, tp.ints(&types, &[2, 4])?, tp.ints(&pos, &[2, 4])?);
        let y = tp.embedding_at(i, ty, p, x[0], x[1], x[2])?;
        assert_eq!(y.dims(), [2, 4, c]);
        Ok(y)
    });
    let (word, ptab, ttab) = (&tables[0], &tables[1], &tables[2]);
    let (mut gw, mut gp, mut gt) = (vec![0.0f32; vocab * c], vec![0.0f32; p_rows * c], vec![0.0f32; 2 * c]);
    for k in 0..8 {
        let (i, p, ty) = (ids[k] as usize, pos[k] as usize, types[k] as usize);
        for j in 0..c {
            assert_eq!(out[k * c + j], word[i * c + j] + ptab[p * c + j] + ttab[ty * c + j], "token {k} channel {j}");
            gw[i * c + j] += w[k * c + j];
            gp[p * c + j] += w[k * c + j];
            gt[ty * c + j] += w[k * c + j];
        }
    }
    assert_eq!((&g[0], &g[1], &g[2]), (&gw, &gp, &gt));
    assert!(gp[4 * c..5 * c].iter().all(|&v| v == 0.0), "position 4 is not read");
}

// (b) packed pooling

/// x packed from the real rows of a padded (B, T, C) x; the mask is a prefix of ones.
struct Pooled {
    real: Vec<usize>,
    mask: Vec<i32>,
    cu: Vec<usize>,
    x_pad: Vec<f32>,
    x: Vec<f32>,
}

fn pooled(c: usize) -> Pooled {
    let b = LENS.len();
    let real = real_tokens(&LENS, T);
    let mask = (0..b * T).map(|i| i32::from(i % T < LENS[i / T])).collect();
    let x_pad = normal(b * T * c, 11);
    let x = rows(&x_pad, c, &real);
    Pooled { real, mask, cu: offsets(&LENS), x_pad, x }
}

#[test]
fn packed_pooling_equals_padded_pooling() {
    let c = 5;
    let b = LENS.len();
    let p = pooled(c);
    let n = p.real.len();
    let w = normal(b * c, 12);
    for mean in [true, false] {
        let (out_pad, g_pad) = run(&[(&[b, T, c], &p.x_pad)], &w, &|tp, x| {
            if mean {
                let m = tp.ints(&p.mask, &[b, T])?;
                tp.mean_pool(x[0], m)
            } else {
                tp.first_token(x[0])
            }
        });
        let (out, g) = run(&[(&[n, c], &p.x)], &w, &|tp, x| {
            let cu = tp.cu_seqlens(&p.cu)?;
            if mean { tp.mean_pool_packed(x[0], &cu) } else { tp.first_tokens(x[0], &cu) }
        });
        let what = if mean { "mean" } else { "first" };
        for (bi, &len) in LENS.iter().enumerate() {
            let (o, op) = (&out[bi * c..][..c], &out_pad[bi * c..][..c]);
            if len == 0 {
                // first_token reads the padding of an empty row; the packed op gives zeros.
                assert!(o.iter().all(|&v| v == 0.0), "{what}: empty sequence {bi} gives {o:?}");
            } else {
                assert!(rel(o, op) <= 1e-6, "{what}: sequence {bi}: {o:?} vs {op:?}");
            }
        }
        // Gradient: equal on every real row; the padded layout's padding, and for the first
        // token every row after position 0, get none.
        let (gx, gp) = (&g[0], &g_pad[0]);
        assert!(rel(gx, &rows(gp, c, &p.real)) <= 1e-6, "{what}: gradient of the real rows");
        for (i, &m) in p.mask.iter().enumerate() {
            if (mean && m == 0) || (!mean && i % T != 0) {
                assert!(gp[i * c..(i + 1) * c].iter().all(|&v| v == 0.0), "{what}: padded row {i} has a gradient");
            }
        }
        for (bi, w2) in p.cu.windows(2).enumerate() {
            for r in w2[0]..w2[1] {
                let got = &gx[r * c..(r + 1) * c];
                if mean || r == w2[0] {
                    let want: Vec<f32> = w[bi * c..(bi + 1) * c]
                        .iter()
                        .map(|&v| if mean { v / (w2[1] - w2[0]) as f32 } else { v })
                        .collect();
                    assert!(rel(got, &want) <= 1e-6, "{what}: row {r} of sequence {bi}: {got:?} vs {want:?}");
                } else {
                    assert!(got.iter().all(|&v| v == 0.0), "{what}: row {r} is not read, got gradient {got:?}");
                }
            }
        }
    }
}

#[test]
fn packed_pooling_gradients_accumulate() {
    // Both pools of one x, and x pooled twice: dx is the sum of every use's scatter.
    let c = 4;
    let p = pooled(c);
    let (n, b) = (p.real.len(), LENS.len());
    let w = normal(3 * b * c, 13);
    let (_, g) = run(&[(&[n, c], &p.x)], &w, &|tp, x| {
        let cu = tp.cu_seqlens(&p.cu)?;
        let f = tp.first_tokens(x[0], &cu)?;
        let m = tp.mean_pool_packed(x[0], &cu)?;
        let m2 = tp.mean_pool_packed(x[0], &cu)?;
        tp.concat(&[f, m, m2])
    });
    for (bi, w2) in p.cu.windows(2).enumerate() {
        let len = (w2[1] - w2[0]) as f32;
        for r in w2[0]..w2[1] {
            for j in 0..c {
                let wt = |k: usize| w[bi * 3 * c + k * c + j];
                let first = if r == w2[0] { wt(0) } else { 0.0 };
                let want = first + wt(1) / len + wt(2) / len;
                let got = g[0][r * c + j];
                assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "row {r} channel {j}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn packed_ops_take_an_empty_batch() {
    // No tokens at all: every output row is zeros (pools) or there is none (embedding).
    let c = 3;
    let (out, g) = run(&[(&[4, c], &normal(4 * c, 14))], &[], &|tp, x| {
        let none = tp.ints(&[], &[0])?;
        tp.embedding_at(none, none, none, x[0], x[0], x[0])
    });
    assert!(out.is_empty() && g[0].iter().all(|&v| v == 0.0));
    let w = normal(4 * c, 15);
    let (out, g) = run(&[(&[0, c], &[])], &w, &|tp, x| {
        let cu = tp.cu_seqlens(&[0, 0, 0])?;
        let f = tp.first_tokens(x[0], &cu)?;
        let m = tp.mean_pool_packed(x[0], &cu)?;
        tp.concat(&[f, m])
    });
    assert_eq!((out, g[0].len()), (vec![0.0; 4 * c], 0));
}

// (c) columns

#[test]
fn columns_slice_and_accumulate_their_bands() {
    let (rows_, big_w) = (6, 10); // x (2, 3, 10)
    let x: Vec<f32> = (0..rows_ * big_w).map(|i| i as f32).collect();
    // Two overlapping bands, 1..5 and 3..9, concatenated: out (2, 3, 4 + 6).
    let w = normal(rows_ * 10, 21);
    let (out, g) = run(&[(&[2, 3, big_w], &x)], &w, &|tp, v| {
        let a = tp.columns(v[0], 1, 4)?;
        let b = tp.columns(v[0], 3, 6)?;
        assert_eq!((a.dims(), b.dims()), (&[2, 3, 4][..], &[2, 3, 6][..]));
        tp.concat(&[a, b])
    });
    for r in 0..rows_ {
        let want: Vec<f32> = (1..5).chain(3..9).map(|j| (r * big_w + j) as f32).collect();
        assert_eq!(&out[r * 10..(r + 1) * 10], &want[..], "row {r}");
        for j in 0..big_w {
            let mut want = 0.0f32;
            if (1..5).contains(&j) {
                want += w[r * 10 + j - 1];
            }
            if (3..9).contains(&j) {
                want += w[r * 10 + 4 + j - 3];
            }
            assert_eq!(g[0][r * big_w + j], want, "gradient row {r} column {j}");
        }
    }
}

#[test]
fn concat_of_slices_gives_back_x() {
    let x = normal(4 * 9, 22);
    let w = normal(4 * 9, 23);
    let (out, g) = run(&[(&[4, 9], &x)], &w, &|tp, v| {
        let parts = [tp.columns(v[0], 0, 2)?, tp.columns(v[0], 2, 6)?, tp.columns(v[0], 8, 1)?];
        tp.concat(&parts)
    });
    assert_eq!(out, x);
    assert_eq!(g[0], w);
}

// (d) float64 gradient checks

#[test]
fn gradcheck_embedding_at() {
    check("embedding_at packed", &[&[11, 6], &[7, 6], &[2, 6]], &|t, x| {
        let ids = t.ints(&[3, 5, 3, 0, 10, 5, 5, 2, 9, 3, 3], &[11])?;
        let types = t.ints(&[0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1], &[11])?;
        let pos = t.ints(&[0, 1, 2, 3, 0, 0, 1, 2, 3, 4, 5], &[11])?;
        t.embedding_at(ids, types, pos, x[0], x[1], x[2])
    });
    check("embedding_at (3, 4)", &[&[5, 3], &[6, 3], &[2, 3]], &|t, x| {
        let ids = t.ints(&[4, 0, 4, 2, 1, 4, 3, 0, 1, 1, 2, 3], &[3, 4])?;
        let types = t.ints(&[0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 1], &[3, 4])?;
        let pos = t.ints(&[5, 2, 2, 0, 5, 5, 1, 3, 4, 0, 1, 2], &[3, 4])?;
        t.embedding_at(ids, types, pos, x[0], x[1], x[2])
    });
}

#[test]
fn gradcheck_packed_pooling() {
    // Lengths 4, 0, 1, 7.
    let cu = [0, 4, 4, 5, 12];
    check("first_tokens", &[&[12, 7]], &|t, x| {
        let cu = t.cu_seqlens(&cu)?;
        t.first_tokens(x[0], &cu)
    });
    check("mean_pool_packed", &[&[12, 7]], &|t, x| {
        let cu = t.cu_seqlens(&cu)?;
        t.mean_pool_packed(x[0], &cu)
    });
}

#[test]
fn gradcheck_columns() {
    check("columns", &[&[3, 2, 9]], &|t, x| t.columns(x[0], 2, 5));
    check("columns overlapping", &[&[4, 9]], &|t, x| {
        let a = t.columns(x[0], 0, 6)?;
        let b = t.columns(x[0], 4, 5)?;
        t.concat(&[a, b])
    });
}

// (e) errors

fn tape_with(tables: &[(&str, &[usize])]) -> (Tape<f32>, Vec<Tensor>) {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let ts = tables
        .iter()
        .map(|(name, dims)| {
            let n = dims.iter().product();
            tape.store.add_param(name, dims, &vec![0.5; n], true).unwrap()
        })
        .collect();
    (tape, ts)
}

fn message(r: Result<Tensor>) -> (String, Error) {
    let e = r.expect_err("the op should refuse");
    (e.to_string(), e)
}

#[test]
fn embedding_at_refuses_bad_shapes_and_positions() {
    let (mut tp, t) =
        tape_with(&[("word", &[9, 4]), ("pos", &[8, 4]), ("types", &[2, 4]), ("narrow", &[8, 3]), ("floats", &[5])]);
    let (word, pos, types, narrow) = (t[0], t[1], t[2], t[3]);
    let ids = tp.ints(&[1, 2, 3, 4, 5], &[5]).unwrap();
    let types5 = tp.ints(&[0; 5], &[5]).unwrap();
    let types4 = tp.ints(&[0; 4], &[4]).unwrap();
    let ok_pos = tp.ints(&[0, 1, 2, 0, 7], &[5]).unwrap();
    tp.embedding_at(ids, types5, ok_pos, word, pos, types).unwrap();

    let (m, e) = message(tp.embedding_at(ids, types4, ok_pos, word, pos, types));
    assert!(matches!(e, Error::Shape { .. }) && m.contains("[5]") && m.contains("[4]"), "{m}");
    let pos4 = tp.ints(&[0; 4], &[4]).unwrap();
    let (m, _) = message(tp.embedding_at(ids, types5, pos4, word, pos, types));
    assert!(m.contains("positions [4]") && m.contains("one shape"), "{m}");
    let ids4d = tp.ints(&[0; 4], &[1, 2, 2, 1]).unwrap();
    let (m, _) = message(tp.embedding_at(ids4d, ids4d, ids4d, word, pos, types));
    assert!(m.contains("rank 1 to 3"), "{m}");
    let (m, _) = message(tp.embedding_at(ids, types5, ok_pos, word, narrow, types));
    assert!(m.contains("position table [8, 3] must be (rows, 4)"), "{m}");

    let past = tp.ints(&[0, 1, 8, 0, 0], &[5]).unwrap();
    let (m, e) = message(tp.embedding_at(ids, types5, past, word, pos, types));
    assert!(matches!(e, Error::Value { .. }) && m.contains("position 8 at index 2 is outside 0..8"), "{m}");
    let negative = tp.ints(&[0, 1, 2, 3, -1], &[5]).unwrap();
    let (m, _) = message(tp.embedding_at(ids, types5, negative, word, pos, types));
    assert!(m.contains("position -1 at index 4"), "{m}");
    let bad_id = tp.ints(&[1, 2, 9, 4, 5], &[5]).unwrap();
    let (m, _) = message(tp.embedding_at(bad_id, types5, ok_pos, word, pos, types));
    assert!(m.contains("token id 9 at index 2 is outside 0..9"), "{m}");
    // A float tensor as positions.
    let (m, _) = message(tp.embedding_at(ids, types5, t[4], word, pos, types));
    assert!(m.contains("expected an integer tensor"), "{m}");
}

#[test]
fn packed_pooling_refuses_mismatched_shapes() {
    let (mut tp, t) = tape_with(&[("x", &[9, 4]), ("x3", &[1, 9, 4])]);
    let cu = tp.cu_seqlens(&[0, 4, 10]).unwrap();
    for mean in [false, true] {
        let pool =
            |tp: &mut Tape<f32>, x: Tensor| if mean { tp.mean_pool_packed(x, &cu) } else { tp.first_tokens(x, &cu) };
        let name = if mean { "mean_pool_packed" } else { "first_tokens" };
        let (m, e) = message(pool(&mut tp, t[0]));
        assert!(matches!(e, Error::Shape { .. }), "{m}");
        assert!(m.starts_with(name) && m.contains("x [9, 4]") && m.contains("N = 10"), "{m}");
        let (m, _) = message(pool(&mut tp, t[1]));
        assert!(m.starts_with(name) && m.contains("rank 2"), "{m}");
    }
    let ok = tp.cu_seqlens(&[0, 9]).unwrap();
    assert_eq!(tp.first_tokens(t[0], &ok).unwrap().dims(), [1, 4]);
}

#[test]
fn columns_refuses_a_band_outside_x() {
    let (mut tp, t) = tape_with(&[("x", &[3, 10])]);
    let (m, e) = message(tp.columns(t[0], 6, 5));
    assert!(matches!(e, Error::Shape { .. }) && m.contains("columns 6..6+5") && m.contains("10 columns"), "{m}");
    let (m, _) = message(tp.columns(t[0], usize::MAX, 2));
    assert!(m.contains("outside"), "{m}");
    let (m, _) = message(tp.columns(t[0], 11, 0));
    assert!(m.contains("outside"), "{m}");
    let scalar = tp.constant(&[1.0], &[]).unwrap();
    let (m, _) = message(tp.columns(scalar, 0, 1));
    assert!(m.contains("scalar"), "{m}");
    assert_eq!(tp.columns(t[0], 6, 4).unwrap().dims(), [3, 4]);
}
