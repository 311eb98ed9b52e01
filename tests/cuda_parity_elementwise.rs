//! GPU suite: the pointwise ops, dropout, layer norm and the attention softmax against the CPU
//! path (kernels/elementwise.cu, dropout.cu, layernorm.cu, softmax.cu). See tests/common for the
//! method. Sizes divide no block or tile size, and each op has a case of at least 1e5 elements.

mod common;
use common::{F32_TOL, gpu, parity};

#[test]
fn add() {
    let Some(g) = gpu() else { return };
    parity(&g, "add", &[&[301, 347], &[301, 347]], F32_TOL, &|t, x| t.add(x[0], x[1]));
    parity(&g, "add_small", &[&[3, 5, 7], &[3, 5, 7]], F32_TOL, &|t, x| t.add(x[0], x[1]));
}

#[test]
fn sub() {
    let Some(g) = gpu() else { return };
    parity(&g, "sub", &[&[347, 301], &[347, 301]], F32_TOL, &|t, x| t.sub(x[0], x[1]));
}

#[test]
fn mul() {
    let Some(g) = gpu() else { return };
    parity(&g, "mul", &[&[13, 8011], &[13, 8011]], F32_TOL, &|t, x| t.mul(x[0], x[1]));
}

/// Both operands are one tensor: the two backward contributions must both land (2x · dy).
#[test]
fn mul_same_operand() {
    let Some(g) = gpu() else { return };
    parity(&g, "mul_same", &[&[100_003]], F32_TOL, &|t, x| t.mul(x[0], x[0]));
    parity(&g, "sub_same_plus", &[&[1001]], F32_TOL, &|t, x| {
        let y = t.add(x[0], x[0])?;
        t.sub(y, x[0])
    });
}

#[test]
fn abs() {
    let Some(g) = gpu() else { return };
    parity(&g, "abs", &[&[7, 14_327]], F32_TOL, &|t, x| t.abs(x[0]));
    // Exact zeros: sgn(0) = 0, so |x − x| has gradient 0.
    parity(&g, "abs_zero", &[&[515]], F32_TOL, &|t, x| {
        let z = t.sub(x[0], x[0])?;
        let a = t.abs(z)?;
        t.add(a, x[0])
    });
}

#[test]
fn tanh() {
    let Some(g) = gpu() else { return };
    parity(&g, "tanh", &[&[3, 97, 401]], F32_TOL, &|t, x| {
        let y = t.scale(x[0], 3.0)?; // into the saturating range too
        t.tanh(y)
    });
}

#[test]
fn atanh() {
    let Some(g) = gpu() else { return };
    // |x| up to about 2: most inside the bound, some clamped (no gradient there).
    parity(&g, "atanh", &[&[3, 97, 401]], F32_TOL, &|t, x| {
        let y = t.scale(x[0], 0.45)?;
        t.atanh(y)
    });
}

#[test]
fn bias_add() {
    let Some(g) = gpu() else { return };
    parity(&g, "bias_add", &[&[397, 263], &[263]], F32_TOL, &|t, x| t.bias_add(x[0], x[1]));
    parity(&g, "bias_add_3d", &[&[3, 37, 769], &[769]], F32_TOL, &|t, x| t.bias_add(x[0], x[1]));
    // Narrow rows (a classifier head) and many of them.
    parity(&g, "bias_add_narrow", &[&[5003, 3], &[3]], F32_TOL, &|t, x| t.bias_add(x[0], x[1]));
}

#[test]
fn scale() {
    let Some(g) = gpu() else { return };
    parity(&g, "scale", &[&[100_019]], F32_TOL, &|t, x| t.scale(x[0], 0.37));
    parity(&g, "scale_neg", &[&[33, 5]], F32_TOL, &|t, x| t.scale(x[0], -5.0));
}

/// A full reduction against the CPU's sequential float32 sum. That loop's rounding error grows
/// like √n·ε·Σ|x|, so on zero-mean data of 1e5 elements (Σ|x| ≫ |Σx|) it alone exceeds F32_TOL
/// relative to the result (2e-5 for the inputs of a case named "sum" of 101617 elements), while
/// the kernel's blocked sum is ~100× closer to the exact value. The cases compared with the CPU at F32_TOL are therefore
/// short (37) or free of cancellation (|x|: the CPU's error for "sum_abs_large" is 1.3e-6);
/// `sum_matches_exact_sum` checks a long cancelling sum against float64 instead.
#[test]
fn sum() {
    let Some(g) = gpu() else { return };
    parity(&g, "sum_small", &[&[37]], F32_TOL, &|t, x| t.sum(x[0]));
    parity(&g, "sum_abs", &[&[1023]], F32_TOL, &|t, x| {
        let a = t.abs(x[0])?;
        t.sum(a)
    });
    parity(&g, "sum_abs_large", &[&[331, 307]], F32_TOL, &|t, x| {
        let a = t.abs(x[0])?;
        t.sum(a)
    });
}

/// The GPU sum of 1e6 + 3 zero-mean values against the float64 sum of the same float32 values:
/// the error must be within 1e-6 · Σ|x| (a blocked float32 sum of this length errs by < 1e-7 · Σ|x|).
#[test]
fn sum_matches_exact_sum() {
    let Some(g) = gpu() else { return };
    let mut rng = engine::rng::Rng::new(5);
    for n in [1_000_003usize, 1024, 1025, 8191, 1] {
        let data: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let exact: f64 = data.iter().map(|&v| v as f64).sum();
        let mag: f64 = data.iter().map(|&v| (v as f64).abs()).sum();
        let mut tape = engine::Tape::<f32>::new(g.clone());
        let x = tape.store.add_param("x", &[n], &data, true).unwrap();
        let s = tape.sum(x).unwrap();
        let got = tape.store.read(s).unwrap()[0] as f64;
        let err = (got - exact).abs();
        println!("sum of {n}: gpu {got} exact {exact} error {err:.3e} (Σ|x| {mag:.3e})");
        assert!(err <= 1e-6 * mag, "sum of {n}: gpu {got} vs exact {exact}: error {err:.3e} > 1e-6 · Σ|x|");
    }
}

#[test]
fn dropout() {
    let Some(g) = gpu() else { return };
    parity(&g, "dropout_p0.1", &[&[211, 499]], F32_TOL, &|t, x| t.dropout(x[0], 0.1));
    parity(&g, "dropout_p0.5", &[&[3, 41, 59]], F32_TOL, &|t, x| t.dropout(x[0], 0.5));
    // Two calls on one tape draw two different streams.
    parity(&g, "dropout_twice", &[&[7, 1001]], F32_TOL, &|t, x| {
        let y = t.dropout(x[0], 0.5)?;
        t.dropout(y, 0.1)
    });
}

#[test]
fn layernorm() {
    let Some(g) = gpu() else { return };
    let cases: [(&str, usize, usize, f64); 6] = [
        ("layernorm_384_eps12", 271, 384, 1e-12),
        ("layernorm_768_eps5", 13, 768, 1e-5),
        ("layernorm_768_eps12", 133, 768, 1e-12),
        ("layernorm_37_eps5", 2711, 37, 1e-5),
        ("layernorm_1000_eps12", 101, 1000, 1e-12),
        ("layernorm_4096_eps5", 29, 4096, 1e-5),
    ];
    for (name, rows, c, eps) in cases {
        parity(&g, name, &[&[rows, c], &[c], &[c]], F32_TOL, &|t, x| t.layernorm(x[0], x[1], x[2], eps));
    }
    // Rank 3 input, as BERT has it.
    parity(&g, "layernorm_3d", &[&[3, 41, 384], &[384], &[384]], F32_TOL, &|t, x| t.layernorm(x[0], x[1], x[2], 1e-12));
}

/// Only gamma (or only beta) takes a gradient: the other is a constant.
#[test]
fn layernorm_frozen_param() {
    let Some(g) = gpu() else { return };
    let fixed: Vec<f32> = (0..77).map(|j| 0.5 + 0.01 * j as f32).collect();
    parity(&g, "layernorm_frozen_beta", &[&[211, 77], &[77]], F32_TOL, &|t, x| {
        let b = t.constant(&fixed, &[77])?;
        t.layernorm(x[0], x[1], b, 1e-5)
    });
    parity(&g, "layernorm_frozen_gamma", &[&[211, 77], &[77]], F32_TOL, &|t, x| {
        let gm = t.constant(&fixed, &[77])?;
        t.layernorm(x[0], gm, x[1], 1e-5)
    });
}

/// Padding mask (b, t): batch item b keeps keys below lens[b], with a few holes; lens[b] = 0
/// masks every key of that item.
fn mask(lens: &[usize], t: usize) -> Vec<i32> {
    let mut m = Vec::with_capacity(lens.len() * t);
    for (b, &len) in lens.iter().enumerate() {
        m.extend((0..t).map(|j| i32::from(j < len && (j * 7 + b) % 11 != 3)));
    }
    m
}

#[test]
fn attention_softmax() {
    let Some(g) = gpu() else { return };
    // B = 3, NH = 5, T = 37: one full row, one padded, one with every key masked (all-zero rows).
    let m37 = mask(&[37, 23, 0], 37);
    parity(&g, "softmax_37", &[&[3, 5, 37, 37]], F32_TOL, &|t, x| {
        let m = t.ints(&m37, &[3, 37])?;
        t.attention_softmax(x[0], m, 0.17)
    });
    // B = 3, NH = 3, T = 128 (147456 elements), scale 1/√64.
    let m128 = mask(&[128, 97, 5], 128);
    parity(&g, "softmax_128", &[&[3, 3, 128, 128]], F32_TOL, &|t, x| {
        let m = t.ints(&m128, &[3, 128])?;
        t.attention_softmax(x[0], m, 0.125)
    });
    // Large logits (scale 8): the max subtraction must keep exp finite.
    let m19 = mask(&[19, 2], 19);
    parity(&g, "softmax_large", &[&[2, 2, 19, 19]], F32_TOL, &|t, x| {
        let m = t.ints(&m19, &[2, 19])?;
        t.attention_softmax(x[0], m, 8.0)
    });
}
