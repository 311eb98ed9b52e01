//! The variable-length attention op on the CPU (issue 16, packed batches): a float64 gradient
//! check of every input, and equality with the padded path (matmul → attention_softmax with the
//! key mask → matmul) on every real token, outputs and gradients, in float32.
//!
//! Gradient check: tests/common/gradcheck.rs, relative error ‖g_tape − g_fd‖₂ / max(‖g_fd‖₂, 1e-2),
//! central differences with h = 1e-5, the output projected on fixed random weights; tolerance 1e-6.
//! Padded-path equality: ‖packed − padded‖₂ / ‖padded‖₂ over the real tokens, and the largest
//! element difference over the largest padded magnitude, both within 1e-5.

mod common;
use common::gradcheck::check;
use engine::rng::Rng;
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
        t.varlen_attention(x[0], x[1], x[2], &cu, 2, 0.7)
    });
}

#[test]
fn gradcheck_one_tensor_as_q_k_and_v() {
    // The three gradients accumulate into one buffer.
    let cu = offsets(&[4, 2]);
    check("varlen x, x, x", &[&[6, 4]], &|t, x| {
        let cu = t.cu_seqlens(&cu)?;
        t.varlen_attention(x[0], x[0], x[0], &cu, 2, 0.5)
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

#[test]
fn packed_equals_padded_on_real_tokens() {
    let lens = [1, 7, 13, 32];
    let (b, t, nh, hs) = (lens.len(), 32, 3, 16);
    let c = nh * hs;
    let cu = offsets(&lens);
    let n = cu[b];
    let scale = 1.0 / (hs as f64).sqrt();
    let mut rng = Rng::new(16);
    let mut packed = |scale: f64| -> Vec<f32> { (0..n * c).map(|_| (scale * rng.normal()) as f32).collect() };
    // Larger q and k than unit normals so that the softmax is far from uniform.
    let (q, k, v, w) = (packed(2.0), packed(2.0), packed(1.0), packed(1.0));
    // Packed (N, C) ↔ padded (B, NH, T, HS): token i of sequence s, head h.
    let pad_index = |s: usize, i: usize, h: usize, d: usize| ((s * nh + h) * t + i) * hs + d;
    let mut real = Vec::new(); // (packed index, padded index) of every real element
    for s in 0..b {
        for i in 0..lens[s] {
            for h in 0..nh {
                for d in 0..hs {
                    real.push(((cu[s] + i) * c + h * hs + d, pad_index(s, i, h, d)));
                }
            }
        }
    }
    let to_padded = |x: &[f32]| {
        let mut p = vec![0.0f32; b * nh * t * hs];
        // Padded positions hold values the mask must hide (never 0, which would hide a mistake).
        p.iter_mut().enumerate().for_each(|(i, v)| *v = 3.0 + (i % 7) as f32);
        real.iter().for_each(|&(pk, pd)| p[pd] = x[pk]);
        p
    };
    let from_padded = |p: &[f32]| {
        let mut x = vec![f32::NAN; n * c];
        real.iter().for_each(|&(pk, pd)| x[pk] = p[pd]);
        x
    };

    // The padded path, as bert.rs runs it; the loss weights are 0 on padded query rows.
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let dims = [b, nh, t, hs];
    let (qp, kp, vp) = (
        tape.store.add_param("q", &dims, &to_padded(&q), true).unwrap(),
        tape.store.add_param("k", &dims, &to_padded(&k), true).unwrap(),
        tape.store.add_param("v", &dims, &to_padded(&v), true).unwrap(),
    );
    let mut wp = to_padded(&w);
    (0..b).for_each(|s| {
        (lens[s]..t).for_each(|i| (0..nh).for_each(|h| (0..hs).for_each(|d| wp[pad_index(s, i, h, d)] = 0.0)))
    });
    let mask: Vec<i32> = (0..b * t).map(|i| i32::from(i % t < lens[i / t])).collect();
    let m = tape.ints(&mask, &[b, t]).unwrap();
    let scores = tape.matmul(qp, kp, false, true).unwrap();
    let probs = tape.attention_softmax(scores, m, scale).unwrap();
    let ctx = tape.matmul(probs, vp, false, false).unwrap();
    let r = tape.constant(&wp, &dims).unwrap();
    let prod = tape.mul(ctx, r).unwrap();
    let loss = tape.sum(prod).unwrap();
    tape.store.zero_grads().unwrap();
    tape.backward(loss).unwrap();
    let padded_out = from_padded(&tape.store.read(ctx).unwrap());
    let padded_grads: Vec<Vec<f32>> =
        [qp, kp, vp].iter().map(|&x| from_padded(&tape.store.read_grad(x).unwrap())).collect();

    // The packed path.
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let (qk, kk, vk) = (
        tape.store.add_param("q", &[n, c], &q, true).unwrap(),
        tape.store.add_param("k", &[n, c], &k, true).unwrap(),
        tape.store.add_param("v", &[n, c], &v, true).unwrap(),
    );
    let cus = tape.cu_seqlens(&cu).unwrap();
    let ctx = tape.varlen_attention(qk, kk, vk, &cus, nh, scale).unwrap();
    let r = tape.constant(&w, &[n, c]).unwrap();
    let prod = tape.mul(ctx, r).unwrap();
    let loss = tape.sum(prod).unwrap();
    tape.store.zero_grads().unwrap();
    tape.backward(loss).unwrap();
    let packed_out = tape.store.read(ctx).unwrap();
    let packed_grads: Vec<Vec<f32>> = [qk, kk, vk].iter().map(|&x| tape.store.read_grad(x).unwrap()).collect();

    let mut worst = 0.0f64;
    let names = ["ctx", "dq", "dk", "dv"];
    let pairs = std::iter::once((&packed_out, &padded_out)).chain(packed_grads.iter().zip(&padded_grads));
    for (name, (a, p)) in names.iter().zip(pairs) {
        assert!(a.iter().chain(p).all(|x| x.is_finite()), "{name}: a non-finite value");
        let (norm, elem) = errors(a, p);
        println!("packed vs padded {name}: relative {norm:.2e}, largest difference / largest value {elem:.2e}");
        worst = worst.max(norm).max(elem);
    }
    assert!(worst <= PACKED_TOL, "packed vs padded: relative error {worst:.3e} > {PACKED_TOL:e}");
}

#[test]
fn a_single_token_attends_to_itself() {
    // softmax over one key is 1: ctx = v exactly, and q, k get no gradient.
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.37 - 1.0).collect();
    let q = tape.store.add_param("q", &[1, 8], &x, true).unwrap();
    let v = tape.store.add_param("v", &[1, 8], &x.iter().map(|a| a * 2.0).collect::<Vec<_>>(), true).unwrap();
    let cu = tape.cu_seqlens(&[0, 1]).unwrap();
    let out = tape.varlen_attention(q, q, v, &cu, 2, 0.5).unwrap();
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
    let e = tape.varlen_attention(q, k, q, &cu, 2, 1.0).unwrap_err().to_string();
    assert!(e.contains("varlen_attention") && e.contains("[9, 6]") && e.contains("[10, 6]"), "{e}");
    let e = tape.varlen_attention(q, q, q, &cu, 4, 1.0).unwrap_err().to_string();
    assert!(e.contains("varlen_attention") && e.contains("4 heads"), "{e}");
    let short = tape.cu_seqlens(&[0, 4, 9]).unwrap();
    let e = tape.varlen_attention(q, q, q, &short, 2, 1.0).unwrap_err().to_string();
    assert!(e.contains("[9, 6]"), "{e}");
    for bad in [&[0usize][..], &[1, 4], &[0, 5, 3]] {
        let e = tape.cu_seqlens(bad).unwrap_err().to_string();
        assert!(e.contains("cu_seqlens") && e.contains(&format!("{bad:?}")), "{e}");
    }
}
