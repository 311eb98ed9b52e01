//! The variable-length attention op on the CPU (issue 16, packed batches): a float64 gradient
//! check of every input, without and with attention dropout, and equality on every real token,
//! outputs and gradients, in float32, with the padded path (matmul → attention_softmax with the
//! key mask → attention_dropout → matmul) and with a float64 reference written by hand from
//! crate::rng alone; the streams the op takes; its errors.
//!
//! Gradient check: tests/common/gradcheck.rs, relative error ‖g_tape − g_fd‖₂ / max(‖g_fd‖₂, 1e-2),
//! central differences with h = 1e-5, the output projected on fixed random weights; tolerance 1e-6.
//! Padded-path and hand-reference equality: ‖packed − reference‖₂ / ‖reference‖₂ over the real
//! tokens, and the largest element difference over the largest reference magnitude, both within
//! 1e-5.

mod common;
use common::gradcheck::check;
use engine::ops::Op;
use engine::rng::{MAX_KEYED_BATCH, MAX_KEYED_LEN, Rng, attention_index, hash_bits, hash_key, keep_threshold};
use engine::{Device, Tape};

const PACKED_TOL: f64 = 1e-5;

/// Offsets of sequences of the given lengths.
fn offsets(lens: &[usize]) -> Vec<usize> {
    let mut cu = vec![0];
    for &t in lens {
        cu.push(cu.last().unwrap() + t);
    }
    cu
}

#[test]
fn gradcheck_q_k_v() {
    // B = 4 sequences (one of a single token, one empty), NH = 2, HS = 3: N = 9, C = 6.
    let cu = offsets(&[3, 1, 0, 5]);
    check("varlen q, k, v", &[&[9, 6], &[9, 6], &[9, 6]], &|t, x| {
        let cu = t.cu_seqlens(&cu)?;
        t.varlen_attention(x[0], x[1], x[2], &cu, 2, 0.7, 0.0)
    });
}

#[test]
fn gradcheck_q_k_v_with_dropout() {
    // The harness trains under seed 5 and resets the tape before every evaluation, so each
    // finite difference draws the same mask (stream 1): the loss is smooth in q, k, v.
    let cu = offsets(&[3, 1, 0, 5]);
    let p = 0.3;
    // The mask (seed 5, stream 1) drops some of the 2 · (9 + 1 + 25) probabilities and keeps some.
    let (key, threshold) = (hash_key(5, 1), keep_threshold(p));
    let dropped = (0..4)
        .flat_map(|b| {
            let t = cu[b + 1] - cu[b];
            (0..2).flat_map(move |h| (0..t * t).map(move |ij| attention_index(b, h, ij / t, ij % t, 2)))
        })
        .filter(|&index| hash_bits(key, index) < threshold)
        .count();
    assert!((5..65).contains(&dropped), "the mask drops {dropped} of 70");
    check("varlen q, k, v, dropout 0.3", &[&[9, 6], &[9, 6], &[9, 6]], &|t, x| {
        let cu = t.cu_seqlens(&cu)?;
        t.varlen_attention(x[0], x[1], x[2], &cu, 2, 0.7, p)
    });
}

#[test]
fn gradcheck_one_tensor_as_q_k_and_v() {
    // The three gradients accumulate into one buffer.
    let cu = offsets(&[4, 2]);
    check("varlen x, x, x", &[&[6, 4]], &|t, x| {
        let cu = t.cu_seqlens(&cu)?;
        t.varlen_attention(x[0], x[0], x[0], &cu, 2, 0.5, 0.0)
    });
    let cu = offsets(&[4, 2]);
    check("varlen x, x, x, dropout 0.5", &[&[6, 4]], &|t, x| {
        let cu = t.cu_seqlens(&cu)?;
        t.varlen_attention(x[0], x[0], x[0], &cu, 2, 0.5, 0.5)
    });
}

/// ‖a − b‖₂ / ‖b‖₂ and max |a − b| / max |b|.
fn errors(a: &[f32], b: &[f32]) -> (f64, f64) {
    let (mut d2, mut n2, mut dmax, mut nmax) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        d2 += (x - y) * (x - y);
        n2 += y * y;
        dmax = dmax.max((x - y).abs());
        nmax = nmax.max(y.abs());
    }
    (d2.sqrt() / n2.sqrt(), dmax / nmax)
}

/// A packed problem: sequences of `lens`, NH heads of HS, inputs and loss weights (N, C).
struct Problem {
    lens: Vec<usize>,
    cu: Vec<usize>,
    nh: usize,
    hs: usize,
    /// The padded length: the longest sequence.
    t: usize,
    scale: f64,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    w: Vec<f32>,
}

/// ctx (N, C) and the gradients of q, k, v (N, C each) of L = Σ ctx ⊙ w.
type Outputs = (Vec<f32>, Vec<Vec<f32>>);

impl Problem {
    fn new(lens: &[usize], nh: usize, hs: usize) -> Self {
        let cu = offsets(lens);
        let n = cu[lens.len()];
        let c = nh * hs;
        let mut rng = Rng::new(16);
        let mut packed = |scale: f64| -> Vec<f32> { (0..n * c).map(|_| (scale * rng.normal()) as f32).collect() };
        // Larger q and k than unit normals so that the softmax is far from uniform.
        let (q, k, v, w) = (packed(2.0), packed(2.0), packed(1.0), packed(1.0));
        let t = lens.iter().copied().max().unwrap();
        Problem { lens: lens.to_vec(), cu, nh, hs, t, scale: 1.0 / (hs as f64).sqrt(), q, k, v, w }
    }

    /// Packed (N, C) ↔ padded (B, NH, T, HS): token i of sequence s, head h, column d.
    fn pad_index(&self, s: usize, i: usize, h: usize, d: usize) -> usize {
        ((s * self.nh + h) * self.t + i) * self.hs + d
    }

    /// (packed index, padded index) of every real element.
    fn real(&self) -> Vec<(usize, usize)> {
        let c = self.nh * self.hs;
        let mut real = Vec::new();
        for (s, &len) in self.lens.iter().enumerate() {
            for i in 0..len {
                for h in 0..self.nh {
                    for d in 0..self.hs {
                        real.push(((self.cu[s] + i) * c + h * self.hs + d, self.pad_index(s, i, h, d)));
                    }
                }
            }
        }
        real
    }

    fn pad(&self, x: &[f32]) -> Vec<f32> {
        let mut p = vec![0.0f32; self.lens.len() * self.nh * self.t * self.hs];
        // Padded positions hold values the mask must hide (never 0, which would hide a mistake).
        p.iter_mut().enumerate().for_each(|(i, v)| *v = 3.0 + (i % 7) as f32);
        self.real().iter().for_each(|&(pk, pd)| p[pd] = x[pk]);
        p
    }

    fn unpad(&self, p: &[f32]) -> Vec<f32> {
        let mut x = vec![f32::NAN; self.q.len()];
        self.real().iter().for_each(|&(pk, pd)| x[pk] = p[pd]);
        x
    }

    /// The op on a tape in training mode under `seed`.
    fn packed(&self, dropout: f64, seed: u64) -> Outputs {
        let (n, c) = (self.cu[self.lens.len()], self.nh * self.hs);
        let mut tape = Tape::<f32>::new(Device::Cpu);
        tape.set_training(true);
        tape.set_seed(seed);
        let (qk, kk, vk) = (
            tape.store.add_param("q", &[n, c], &self.q, true).unwrap(),
            tape.store.add_param("k", &[n, c], &self.k, true).unwrap(),
            tape.store.add_param("v", &[n, c], &self.v, true).unwrap(),
        );
        let cus = tape.cu_seqlens(&self.cu).unwrap();
        let ctx = tape.varlen_attention(qk, kk, vk, &cus, self.nh, self.scale, dropout).unwrap();
        let r = tape.constant(&self.w, &[n, c]).unwrap();
        let prod = tape.mul(ctx, r).unwrap();
        let loss = tape.sum(prod).unwrap();
        tape.store.zero_grads().unwrap();
        tape.backward(loss).unwrap();
        let grads = [qk, kk, vk].iter().map(|&x| tape.store.read_grad(x).unwrap()).collect();
        (tape.store.read(ctx).unwrap(), grads)
    }

    /// The padded path, as bert.rs runs it, in training mode under `seed`: matmul →
    /// attention_softmax with the key mask → attention_dropout (when `dropout` > 0) → matmul;
    /// the loss weights are 0 on padded query rows. Results on the real tokens, packed.
    fn padded(&self, dropout: f64, seed: u64) -> Outputs {
        let (b, t, nh, hs) = (self.lens.len(), self.t, self.nh, self.hs);
        let mut tape = Tape::<f32>::new(Device::Cpu);
        tape.set_training(true);
        tape.set_seed(seed);
        let dims = [b, nh, t, hs];
        let (qp, kp, vp) = (
            tape.store.add_param("q", &dims, &self.pad(&self.q), true).unwrap(),
            tape.store.add_param("k", &dims, &self.pad(&self.k), true).unwrap(),
            tape.store.add_param("v", &dims, &self.pad(&self.v), true).unwrap(),
        );
        let mut wp = self.pad(&self.w);
        for (s, &len) in self.lens.iter().enumerate() {
            (len..t).for_each(|i| (0..nh).for_each(|h| (0..hs).for_each(|d| wp[self.pad_index(s, i, h, d)] = 0.0)));
        }
        let mask: Vec<i32> = (0..b * t).map(|i| i32::from(i % t < self.lens[i / t])).collect();
        let m = tape.ints(&mask, &[b, t]).unwrap();
        let scores = tape.matmul(qp, kp, false, true).unwrap();
        let mut probs = tape.attention_softmax(scores, m, self.scale).unwrap();
        if dropout > 0.0 {
            probs = tape.attention_dropout(probs, dropout).unwrap();
        }
        let ctx = tape.matmul(probs, vp, false, false).unwrap();
        let r = tape.constant(&wp, &dims).unwrap();
        let prod = tape.mul(ctx, r).unwrap();
        let loss = tape.sum(prod).unwrap();
        tape.store.zero_grads().unwrap();
        tape.backward(loss).unwrap();
        let grads = [qp, kp, vp].iter().map(|&x| self.unpad(&tape.store.read_grad(x).unwrap())).collect();
        (self.unpad(&tape.store.read(ctx).unwrap()), grads)
    }

    /// The specification by hand, in float64 plain loops over the padded (B, NH, T, T) layout,
    /// the mask drawn from crate::rng alone: S = scale · q kᵀ with padded keys at −∞, P =
    /// softmax(S), M = 1/(1 − p) where hash_bits(hash_key(seed, 1), attention_index(b, h, i, j,
    /// NH)) ≥ keep_threshold(p) (the first stream of a fresh tape) else 0, ctx = (P ⊙ M) · v;
    /// gradients of L = Σ ctx ⊙ w on real query rows. Also returns the fraction of real (i, j)
    /// that M drops.
    fn by_hand(&self, dropout: f64, seed: u64) -> (Outputs, f64) {
        let (b, t, nh, hs) = (self.lens.len(), self.t, self.nh, self.hs);
        let up = |x: &[f32]| -> Vec<f64> { self.pad(x).iter().map(|&a| a as f64).collect() };
        let (q, k, v, w) = (up(&self.q), up(&self.k), up(&self.v), up(&self.w));
        let (key, threshold) = (hash_key(seed, 1), keep_threshold(dropout));
        let keep = 1.0 / (1.0 - dropout);
        let row =
            |x: &[f64], s: usize, h: usize, i: usize| -> Vec<f64> { x[self.pad_index(s, i, h, 0)..][..hs].to_vec() };
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let n = b * nh * t * hs;
        let (mut ctx, mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        let (mut dropped, mut real) = (0usize, 0usize);
        for (s, &len) in self.lens.iter().enumerate() {
            for h in 0..nh {
                for i in 0..len {
                    let (qi, wi) = (row(&q, s, h, i), row(&w, s, h, i));
                    let scores: Vec<f64> = (0..t)
                        .map(|j| if j < len { self.scale * dot(&qi, &row(&k, s, h, j)) } else { f64::NEG_INFINITY })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|&x| (x - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    let p: Vec<f64> = e.iter().map(|x| x / sum).collect();
                    let m: Vec<f64> = (0..t)
                        .map(|j| {
                            let kept = hash_bits(key, attention_index(s, h, i, j, nh)) >= threshold;
                            if j < len {
                                real += 1;
                                dropped += usize::from(!kept);
                            }
                            if kept { keep } else { 0.0 }
                        })
                        .collect();
                    // Forward, and dP = (w_i · v_j) · M_ij, dS = P ⊙ (dP − Σ P ⊙ dP).
                    let mut dp = vec![0.0; t];
                    for j in 0..t {
                        let vj = row(&v, s, h, j);
                        for d in 0..hs {
                            ctx[self.pad_index(s, i, h, d)] += p[j] * m[j] * vj[d];
                            dv[self.pad_index(s, j, h, d)] += p[j] * m[j] * wi[d];
                        }
                        dp[j] = dot(&wi, &vj) * m[j];
                    }
                    let rowsum = dot(&p, &dp);
                    for j in 0..t {
                        let ds = self.scale * p[j] * (dp[j] - rowsum);
                        let kj = row(&k, s, h, j);
                        for d in 0..hs {
                            dq[self.pad_index(s, i, h, d)] += ds * kj[d];
                            dk[self.pad_index(s, j, h, d)] += ds * qi[d];
                        }
                    }
                }
            }
        }
        let down = |x: &[f64]| self.unpad(&x.iter().map(|&a| a as f32).collect::<Vec<_>>());
        ((down(&ctx), vec![down(&dq), down(&dk), down(&dv)]), dropped as f64 / real as f64)
    }
}

/// Asserts ctx and the three gradients of `a` within PACKED_TOL of `reference`'s (see the top).
fn assert_close(what: &str, a: &Outputs, reference: &Outputs) {
    let mut worst = 0.0f64;
    let names = ["ctx", "dq", "dk", "dv"];
    let pairs = std::iter::once((&a.0, &reference.0)).chain(a.1.iter().zip(&reference.1));
    for (name, (a, p)) in names.iter().zip(pairs) {
        assert!(a.iter().chain(p).all(|x| x.is_finite()), "{what} {name}: a non-finite value");
        let (norm, elem) = errors(a, p);
        println!("{what} {name}: relative {norm:.2e}, largest difference / largest value {elem:.2e}");
        worst = worst.max(norm).max(elem);
    }
    assert!(worst <= PACKED_TOL, "{what}: relative error {worst:.3e} > {PACKED_TOL:e}");
}

const LENS: [usize; 4] = [1, 7, 13, 32];

#[test]
fn packed_equals_padded_on_real_tokens() {
    let pb = Problem::new(&LENS, 3, 16);
    assert_close("packed vs padded", &pb.packed(0.0, 3), &pb.padded(0.0, 3));
}

#[test]
fn packed_equals_padded_with_attention_dropout() {
    // The same (seed, stream 1) on both tapes: the packed op drops what attention_dropout drops.
    let pb = Problem::new(&LENS, 3, 16);
    let packed = pb.packed(0.3, 41);
    assert_close("packed vs padded, p = 0.3", &packed, &pb.padded(0.3, 41));
    // The mask matters: without it the output is far from the padded dropped one.
    let (undropped, _) = pb.packed(0.0, 41);
    assert!(errors(&undropped, &packed.0).0 > 0.1, "dropout 0.3 left ctx (nearly) unchanged");
}

#[test]
fn packed_equals_hand_reference_with_attention_dropout() {
    let pb = Problem::new(&LENS, 3, 16);
    for (p, seed) in [(0.3, 41), (0.1, 7)] {
        let (reference, fraction) = pb.by_hand(p, seed);
        // 3 · Σ T_b² = 3729 draws: the fraction dropped is p within a few standard deviations.
        assert!((fraction - p).abs() < 0.05, "p = {p}: the mask drops {fraction:.3} of the probabilities");
        assert_close(&format!("packed vs by hand, p = {p}"), &pb.packed(p, seed), &reference);
    }
    // And without dropout the hand reference is the plain attention.
    assert_close("packed vs by hand, p = 0", &pb.packed(0.0, 41), &pb.by_hand(0.0, 41).0);
}

#[test]
fn zero_dropout_in_training_equals_eval_and_takes_no_stream() {
    let pb = Problem::new(&[3, 9, 1], 2, 4);
    let (n, c) = (pb.cu[3], 8);
    // Training with p = 0, eval with p = 0 and eval with p = 0.5: no mask, bit for bit.
    let runs: Vec<(Vec<f32>, Vec<Vec<f32>>)> = [(true, 0.0), (false, 0.0), (false, 0.5)]
        .iter()
        .map(|&(training, p)| {
            let mut tape = Tape::<f32>::new(Device::Cpu);
            tape.set_training(training);
            tape.set_seed(9);
            let q = tape.store.add_param("q", &[n, c], &pb.q, true).unwrap();
            let v = tape.store.add_param("v", &[n, c], &pb.v, true).unwrap();
            let cu = tape.cu_seqlens(&pb.cu).unwrap();
            let ctx = tape.varlen_attention(q, q, v, &cu, 2, 0.5, p).unwrap();
            let Some(Op::VarlenAttention(op)) = tape.ops().last() else { panic!("no varlen op recorded") };
            assert!(op.dropout.is_none(), "training {training}, p = {p}: a mask was drawn");
            // No stream taken: a dropout that follows (in training) still gets the first one.
            tape.set_training(true);
            tape.dropout(v, 0.5).unwrap();
            let Some(Op::Dropout(d)) = tape.ops().last() else { panic!("no dropout op recorded") };
            assert_eq!(d.stream, 1, "training {training}, p = {p}: the attention took a stream");
            let r = tape.constant(&pb.w, &[n, c]).unwrap();
            let prod = tape.mul(ctx, r).unwrap();
            let loss = tape.sum(prod).unwrap();
            tape.store.zero_grads().unwrap();
            tape.backward(loss).unwrap();
            let grads = [q, v].iter().map(|&x| tape.store.read_grad(x).unwrap()).collect();
            (tape.store.read(ctx).unwrap(), grads)
        })
        .collect();
    for r in &runs[1..] {
        assert_eq!(r, &runs[0], "no-dropout runs differ");
    }
}

#[test]
fn active_dropout_takes_exactly_one_stream() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    tape.set_training(true);
    tape.set_seed(3);
    let x = tape.store.add_param("x", &[5, 4], &[0.25f32; 20], true).unwrap();
    let cu = tape.cu_seqlens(&[0, 2, 5]).unwrap();
    for want in [1, 2] {
        tape.varlen_attention(x, x, x, &cu, 2, 0.5, 0.2).unwrap();
        let Some(Op::VarlenAttention(op)) = tape.ops().last() else { panic!("no varlen op recorded") };
        let d = op.dropout.expect("a mask in training with p = 0.2");
        assert_eq!((d.p, d.seed, d.stream), (0.2, 3, want));
    }
    tape.dropout(x, 0.2).unwrap();
    let Some(Op::Dropout(d)) = tape.ops().last() else { panic!("no dropout op recorded") };
    assert_eq!(d.stream, 3, "the next dropout call follows the two attention streams");
}

#[test]
fn a_single_token_attends_to_itself() {
    // softmax over one key is 1: ctx = v exactly, and q, k get no gradient.
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.37 - 1.0).collect();
    let q = tape.store.add_param("q", &[1, 8], &x, true).unwrap();
    let v = tape.store.add_param("v", &[1, 8], &x.iter().map(|a| a * 2.0).collect::<Vec<_>>(), true).unwrap();
    let cu = tape.cu_seqlens(&[0, 1]).unwrap();
    let out = tape.varlen_attention(q, q, v, &cu, 2, 0.5, 0.0).unwrap();
    let got = tape.store.read(out).unwrap();
    let want = tape.store.read(v).unwrap();
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff <= f32::EPSILON, "ctx of a single token differs from v by {diff:e}");
}

#[test]
fn errors_name_the_op_and_shapes() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let z = vec![0.0f32; 10 * 6];
    let q = tape.store.add_param("q", &[10, 6], &z, true).unwrap();
    let k = tape.store.add_param("k", &[9, 6], &z[..54], true).unwrap();
    let cu = tape.cu_seqlens(&[0, 4, 10]).unwrap();
    let e = tape.varlen_attention(q, k, q, &cu, 2, 1.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("varlen_attention") && e.contains("[9, 6]") && e.contains("[10, 6]"), "{e}");
    let e = tape.varlen_attention(q, q, q, &cu, 4, 1.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("varlen_attention") && e.contains("4 heads"), "{e}");
    let short = tape.cu_seqlens(&[0, 4, 9]).unwrap();
    let e = tape.varlen_attention(q, q, q, &short, 2, 1.0, 0.0).unwrap_err().to_string();
    assert!(e.contains("[9, 6]"), "{e}");
    for bad in [&[0usize][..], &[1, 4], &[0, 5, 3]] {
        let e = tape.cu_seqlens(bad).unwrap_err().to_string();
        assert!(e.contains("cu_seqlens") && e.contains(&format!("{bad:?}")), "{e}");
    }
}

#[test]
fn a_bad_dropout_probability_errors() {
    // In training and in eval alike, and before anything is drawn.
    for training in [true, false] {
        let mut tape = Tape::<f32>::new(Device::Cpu);
        tape.set_training(training);
        let q = tape.store.add_param("q", &[4, 6], &[0.5f32; 24], true).unwrap();
        let cu = tape.cu_seqlens(&[0, 4]).unwrap();
        for bad in [-0.1, 1.0, 1.5, f64::NAN] {
            let e = tape.varlen_attention(q, q, q, &cu, 2, 1.0, bad).unwrap_err().to_string();
            assert!(e.contains("varlen_attention") && e.contains(&format!("{bad}")) && e.contains("[0, 1)"), "{e}");
        }
        assert!(tape.ops().is_empty(), "a failed call recorded an op");
    }
}

#[test]
fn dropout_beyond_the_keyed_limits_errors() {
    // A sequence longer than a key can name, and more sequences than it can name; both fail
    // before the probabilities are allocated. Without dropout they are not limited.
    let mut tape = Tape::<f32>::new(Device::Cpu);
    tape.set_training(true);
    let long = MAX_KEYED_LEN + 1;
    let x = tape.store.add_param("x", &[long, 1], &vec![0.0f32; long], true).unwrap();
    let cu = tape.cu_seqlens(&[0, long]).unwrap();
    let e = tape.varlen_attention(x, x, x, &cu, 1, 1.0, 0.1).unwrap_err().to_string();
    assert!(e.contains("varlen_attention") && e.contains(&format!("{long}")) && e.contains("65536"), "{e}");
    let many = MAX_KEYED_BATCH + 1;
    let y = tape.store.add_param("y", &[many, 2], &vec![0.5f32; 2 * many], true).unwrap();
    let cu = tape.cu_seqlens(&(0..=many).collect::<Vec<_>>()).unwrap();
    let e = tape.varlen_attention(y, y, y, &cu, 1, 1.0, 0.1).unwrap_err().to_string();
    assert!(e.contains("varlen_attention") && e.contains(&format!("{many} sequences")) && e.contains("32768"), "{e}");
    tape.varlen_attention(y, y, y, &cu, 1, 1.0, 0.0).unwrap();
}
