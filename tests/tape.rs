//! The tape itself: accumulation into gradients, fan-out, zeroing, recording, and the errors
//! that bad shapes and bad values give.

use engine::{Device, Error, Tape, Tensor};

fn tape_with(params: &[(&str, &[usize], &[f64])]) -> (Tape<f64>, Vec<Tensor>) {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let ts = params.iter().map(|(n, d, v)| tape.store.add_param(n, d, v, true).unwrap()).collect();
    (tape, ts)
}

/// L = Σ (x · wᵀ) for x (2, 3), w (1, 3): dL/dw = column sums of x = [5, 7, 9].
fn sum_of_linear(tape: &mut Tape<f64>, x: Tensor, w: Tensor) -> Tensor {
    let y = tape.matmul(x, w, false, true).unwrap();
    tape.sum(y).unwrap()
}

const X: [f64; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];

#[test]
fn weight_used_by_two_ops_accumulates_both() {
    let (mut tape, p) = tape_with(&[("w", &[1, 3], &[0.5, -1.0, 2.0])]);
    let x = tape.constant(&X, &[2, 3]).unwrap();
    let a = sum_of_linear(&mut tape, x, p[0]);
    let b = sum_of_linear(&mut tape, x, p[0]);
    let l = tape.add(a, b).unwrap();
    tape.backward(l).unwrap();
    assert_eq!(tape.store.read_grad(p[0]).unwrap(), vec![10.0, 14.0, 18.0]);
}

#[test]
fn value_feeding_two_ops_gets_both_gradients() {
    // h = x·wᵀ feeds sum(h) and sum(h ⊙ h): dL/dh = 1 + 2h.
    let (mut tape, p) = tape_with(&[("w", &[1, 3], &[1.0, 0.0, 0.0])]);
    let x = tape.constant(&X, &[2, 3]).unwrap();
    let h = tape.matmul(x, p[0], false, true).unwrap(); // [1, 4]
    let s1 = tape.sum(h).unwrap();
    let sq = tape.mul(h, h).unwrap();
    let s2 = tape.sum(sq).unwrap();
    let l = tape.add(s1, s2).unwrap();
    tape.backward(l).unwrap();
    assert_eq!(tape.store.read_grad(h).unwrap(), vec![3.0, 9.0]);
    // dL/dw = Σ_rows (1 + 2h_r) x_r = 3·[1, 2, 3] + 9·[4, 5, 6]
    assert_eq!(tape.store.read_grad(p[0]).unwrap(), vec![39.0, 51.0, 63.0]);
}

#[test]
fn passes_accumulate_until_zeroed() {
    let (mut tape, p) = tape_with(&[("w", &[1, 3], &[0.5, -1.0, 2.0])]);
    let once = vec![5.0, 7.0, 9.0];
    for pass in 1..=2 {
        tape.reset();
        let x = tape.constant(&X, &[2, 3]).unwrap();
        let l = sum_of_linear(&mut tape, x, p[0]);
        tape.backward(l).unwrap();
        let want: Vec<f64> = once.iter().map(|g| g * pass as f64).collect();
        assert_eq!(tape.store.read_grad(p[0]).unwrap(), want, "pass {pass}");
    }
    tape.store.zero_grads().unwrap();
    tape.reset();
    let x = tape.constant(&X, &[2, 3]).unwrap();
    let l = sum_of_linear(&mut tape, x, p[0]);
    tape.backward(l).unwrap();
    assert_eq!(tape.store.read_grad(p[0]).unwrap(), once);
}

#[test]
fn backward_scaled_weights_the_gradient() {
    let (mut tape, p) = tape_with(&[("w", &[1, 3], &[0.5, -1.0, 2.0])]);
    let x = tape.constant(&X, &[2, 3]).unwrap();
    let l = sum_of_linear(&mut tape, x, p[0]);
    tape.backward_scaled(l, 0.5).unwrap();
    assert_eq!(tape.store.read_grad(p[0]).unwrap(), vec![2.5, 3.5, 4.5]);
}

#[test]
fn only_ops_on_the_gradient_path_are_recorded() {
    let (mut tape, p) = tape_with(&[("w", &[1, 3], &[0.5, -1.0, 2.0])]);
    let x = tape.constant(&X, &[2, 3]).unwrap();
    let c = tape.tanh(x).unwrap(); // constant in, constant out: nothing to differentiate
    assert!(!c.requires_grad);
    let l = sum_of_linear(&mut tape, c, p[0]);
    let names: Vec<String> =
        tape.ops().iter().map(|o| format!("{o:?}").split('(').next().unwrap().to_string()).collect();
    assert_eq!(names, ["Matmul", "Sum"]);
    tape.backward(l).unwrap();
}

#[test]
fn frozen_parameters_get_no_gradient() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let w = tape.store.add_param("frozen", &[1, 3], &[1.0, 1.0, 1.0], false).unwrap();
    let v = tape.store.add_param("trainable", &[1, 3], &[1.0, 1.0, 1.0], true).unwrap();
    assert_eq!(tape.store.num_trainable(), 3);
    let x = tape.constant(&X, &[2, 3]).unwrap();
    let a = sum_of_linear(&mut tape, x, w);
    let b = sum_of_linear(&mut tape, x, v);
    let l = tape.add(a, b).unwrap();
    tape.backward(l).unwrap();
    assert_eq!(tape.store.read_grad(v).unwrap(), vec![5.0, 7.0, 9.0]);
    assert!(matches!(tape.store.read_grad(w), Err(Error::Tape(_))));
}

#[test]
fn backward_needs_a_scalar_that_depends_on_parameters() {
    let (mut tape, p) = tape_with(&[("w", &[1, 3], &[0.5, -1.0, 2.0])]);
    let x = tape.constant(&X, &[2, 3]).unwrap();
    let y = tape.matmul(x, p[0], false, true).unwrap();
    let err = tape.backward(y).unwrap_err().to_string();
    assert!(err.contains("scalar") && err.contains("[2, 1]"), "{err}");
    let c = tape.sum(x).unwrap();
    assert!(tape.backward(c).is_err());
}

#[test]
fn shape_mismatches_name_the_op_and_both_shapes() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let a = tape.constant(&[0.0; 6], &[2, 3]).unwrap();
    let b = tape.constant(&[0.0; 20], &[4, 5]).unwrap();
    let cases: Vec<(engine::Result<Tensor>, &str)> = vec![
        (tape.matmul(a, b, false, false), "matmul"),
        (tape.add(a, b), "add"),
        (tape.mul(a, b), "mul"),
        (tape.cosine(a, b), "cosine"),
        (tape.concat(&[a, b]), "concat"),
    ];
    for (r, op) in cases {
        let msg = r.unwrap_err().to_string();
        assert!(msg.starts_with(op) && msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
    }
    let g = tape.constant(&[1.0; 4], &[4]).unwrap();
    let msg = tape.layernorm(a, g, g, 1e-5).unwrap_err().to_string();
    assert!(msg.starts_with("layernorm") && msg.contains("[4]") && msg.contains("[2, 3]"), "{msg}");
    let msg = tape.bias_add(a, g).unwrap_err().to_string();
    assert!(msg.starts_with("bias_add") && msg.contains("[4]") && msg.contains("[2, 3]"), "{msg}");
    let x3 = tape_3d(&mut tape);
    let msg = tape.split_heads(x3, 4).unwrap_err().to_string();
    assert!(msg.starts_with("split_heads") && msg.contains("4 heads"), "{msg}");
}

fn tape_3d(tape: &mut Tape<f64>) -> Tensor {
    tape.constant(&[0.0; 30], &[2, 3, 5]).unwrap()
}

#[test]
fn bad_values_are_errors() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    let logits = tape.constant(&[0.0; 10], &[2, 5]).unwrap();
    let labels = tape.ints(&[1, 5], &[2]).unwrap();
    let msg = tape.cross_entropy(logits, labels).unwrap_err().to_string();
    assert!(msg.contains("label 5 of row 1"), "{msg}");
    let table = tape.constant(&[0.0; 12], &[4, 3]).unwrap();
    let ids = tape.ints(&[0, 7], &[1, 2]).unwrap();
    let types = tape.ints(&[0, 0], &[1, 2]).unwrap();
    let msg = tape.embedding(ids, types, table, table, table).unwrap_err().to_string();
    assert!(msg.contains("token id 7") && msg.contains("0..4"), "{msg}");
    assert!(tape.dropout(logits, 1.0).is_err());
}

#[test]
fn float32_and_float64_agree() {
    // The one generic implementation, run in both precisions on the same inputs.
    fn run<F: engine::Float>() -> Vec<f64> {
        let mut tape = Tape::<F>::new(Device::Cpu);
        let vals: Vec<F> = (0..35).map(|i| F::from_f64(((i * 37 % 11) as f64 - 5.0) / 7.0)).collect();
        let x = tape.store.add_param("x", &[5, 7], &vals, true).unwrap();
        let g = tape.store.add_param("g", &[7], &vals[..7], true).unwrap();
        let h = tape.layernorm(x, g, g, 1e-5).unwrap();
        let h = tape.gelu(h).unwrap();
        let s = tape.matmul(h, h, false, true).unwrap();
        let l = tape.sum(s).unwrap();
        tape.backward(l).unwrap();
        tape.store.read_grad(x).unwrap().iter().map(|v| v.to_f64()).collect()
    }
    let (a, b) = (run::<f32>(), run::<f64>());
    let diff: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    assert!(diff / norm < 1e-5, "f32 vs f64 relative difference {}", diff / norm);
}

/// Under `Precision::Bf16` a linear layer and a matmul read bf16-rounded operands, forward and
/// backward, and compute everything else in float32: the same bits as float32 ops on operands
/// rounded by hand (to nearest even, through `half`), and not the float32 result.
#[test]
fn bf16_precision_rounds_every_matmul_operand() {
    use engine::device::Precision;
    use engine::rng::Rng;
    let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect() };
    let mut rng = Rng::new(21);
    let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let (x0, w0, b0, v0, dy0) = (values(4 * 6), values(5 * 6), values(5), values(5 * 3), values(4 * 3));
    // out = (x·wᵀ + b) · v, its gradient seeded with dy: every matmul operand is rounded, the
    // bias add and the upstream gradients' other uses are not.
    let run = |precision: Precision, x: &[f32], w: &[f32], v: &[f32]| {
        let mut tape = Tape::<f32>::new(Device::Cpu);
        tape.store.precision = precision;
        let xt = tape.store.add_param("x", &[4, 6], x, true).unwrap();
        let wt = tape.store.add_param("w", &[5, 6], w, true).unwrap();
        let bt = tape.store.add_param("b", &[5], &b0, true).unwrap();
        let vt = tape.store.add_param("v", &[5, 3], v, true).unwrap();
        let h = tape.linear(xt, wt, bt).unwrap();
        let out = tape.matmul(h, vt, false, false).unwrap();
        let dy = tape.store.constant(&dy0, &[4, 3]).unwrap();
        let prod = tape.mul(out, dy).unwrap();
        let loss = tape.sum(prod).unwrap();
        tape.backward(loss).unwrap();
        let mut all = tape.store.read(out).unwrap();
        for t in [xt, wt, bt, vt] {
            all.extend(tape.store.read_grad(t).unwrap());
        }
        (all, tape.store.read(h).unwrap())
    };
    let (bf16, h16) = run(Precision::Bf16, &x0, &w0, &v0);
    let (f32_all, _) = run(Precision::F32, &x0, &w0, &v0);
    assert_ne!(bf16, f32_all, "bf16 must change the result");
    // By hand: the linear on rounded x, w; the matmul on rounded h (its float32 output), v.
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let (xr, wr, vr) = (round(&x0), round(&w0), round(&v0));
    let hr = round(&h16);
    let xt = tape.store.add_param("x", &[4, 6], &xr, true).unwrap();
    let wt = tape.store.add_param("w", &[5, 6], &wr, true).unwrap();
    let bt = tape.store.add_param("b", &[5], &b0, true).unwrap();
    let h = tape.linear(xt, wt, bt).unwrap();
    assert_eq!(tape.store.read(h).unwrap(), h16, "the linear's output");
    let ht = tape.store.add_param("h", &[4, 5], &hr, true).unwrap();
    let vt = tape.store.add_param("v", &[5, 3], &vr, true).unwrap();
    let out = tape.matmul(ht, vt, false, false).unwrap();
    assert_eq!(tape.store.read(out).unwrap(), bf16[..12].to_vec(), "the matmul's output");
    // Gradients by hand: dv = round(h)ᵀ·round(dy), dh = round(dy)·round(v)ᵀ, dx = round(dh)·round(w),
    // dw = round(dh)ᵀ·round(x), db = Σ dh (unrounded).
    let (dyr, mm) = (round(&dy0), |a: &[f32], b: &[f32], m: usize, k: usize, n: usize, ta: bool, tb: bool| {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f32;
                for l in 0..k {
                    let av = if ta { a[l * m + i] } else { a[i * k + l] };
                    let bv = if tb { b[j * k + l] } else { b[l * n + j] };
                    s += av * bv;
                }
                c[i * n + j] = s;
            }
        }
        c
    });
    let dv = mm(&hr, &dyr, 5, 4, 3, true, false);
    let dh = mm(&dyr, &vr, 4, 3, 5, false, true);
    let dhr = round(&dh);
    let dx = mm(&dhr, &wr, 4, 5, 6, false, false);
    let dw = mm(&dhr, &xr, 5, 4, 6, true, false);
    let db: Vec<f32> = (0..5).map(|j| (0..4).map(|i| dh[i * 5 + j]).sum()).collect();
    let close = |got: &[f32], want: &[f32], what: &str| {
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}: {got:?} vs {want:?}");
        }
    };
    close(&bf16[12..36], &dx, "dx");
    close(&bf16[36..66], &dw, "dw");
    close(&bf16[66..71], &db, "db");
    close(&bf16[71..86], &dv, "dv");
}
