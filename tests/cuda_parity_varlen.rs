//! GPU suite: kernels/varlen_attention.cu (issue 16, packed batches) against the CPU twin, forward
//! and backward (the gradients of q, k and v), with the NaN-poisoned harness of tests/common: an
//! output or gradient element the kernels leave unwritten fails. Lengths do not divide the
//! kernels' 128 threads and include a single token, an empty sequence and lengths above 64 and
//! 128 (the key loop's stride); HS above 128 covers the column loop's stride. With attention
//! dropout (the harness trains both devices under one seed, so both draw stream 1 of it), the
//! kernels must drop what the CPU drops: their masks come from the same integer compare.

mod common;
use common::{F32_TOL, gpu, parity};
use engine::ops::varlen_attention::cuda;

fn offsets(lens: &[usize]) -> Vec<usize> {
    let mut cu = vec![0];
    for &t in lens {
        cu.push(cu.last().unwrap() + t);
    }
    cu
}

/// Parity of the op on sequences of `lens`, `nh` heads of `hs` columns, attention dropout `p`.
fn case(name: &str, lens: &[usize], nh: usize, hs: usize, p: f64) {
    let Some(g) = gpu() else { return };
    let cu = offsets(lens);
    let (n, c) = (cu[lens.len()], nh * hs);
    let scale = 1.0 / (hs as f64).sqrt();
    parity(&g, name, &[&[n, c], &[n, c], &[n, c]], F32_TOL, &|tp, x| {
        let cu = tp.cu_seqlens(&cu)?;
        tp.varlen_attention(x[0], x[1], x[2], &cu, nh, scale, p)
    });
}

#[test]
fn varlen_attention_mixed_lengths() {
    // 1 token, 67 (> 64), 13, an empty sequence, 130 (> 128 threads), 5; NH = 3, HS = 24.
    case("varlen mixed lengths", &[1, 67, 13, 0, 130, 5], 3, 24, 0.0);
}

#[test]
fn varlen_attention_dropout_mixed_lengths() {
    // The lengths above with attention dropout, forward and the three gradients; p = 0.1 as
    // BERT trains and a heavy p = 0.6.
    case("varlen dropout 0.1", &[1, 67, 13, 0, 130, 5], 3, 24, 0.1);
    case("varlen dropout 0.6", &[1, 67, 13, 0, 130, 5], 3, 24, 0.6);
}

#[test]
fn varlen_attention_dropout_wide_heads_and_one_tensor() {
    // HS = 131 > 128 threads; and dq, dk, dv accumulating into one buffer under a mask.
    case("varlen dropout wide heads", &[2, 33], 1, 131, 0.3);
    let Some(g) = gpu() else { return };
    let cu = offsets(&[1, 70, 9]);
    parity(&g, "varlen x, x, x dropout", &[&[80, 40]], F32_TOL, &|tp, x| {
        let cu = tp.cu_seqlens(&cu)?;
        tp.varlen_attention(x[0], x[0], x[0], &cu, 5, 0.3, 0.25)
    });
}

#[test]
fn varlen_attention_wide_heads() {
    // HS = 131 > 128 threads; one head.
    case("varlen wide heads", &[2, 33], 1, 131, 0.0);
}

#[test]
fn varlen_attention_one_tensor_as_q_k_v() {
    // dq, dk, dv accumulate into one buffer, launch after launch.
    let Some(g) = gpu() else { return };
    let cu = offsets(&[1, 70, 9]);
    parity(&g, "varlen x, x, x", &[&[80, 40]], F32_TOL, &|tp, x| {
        let cu = tp.cu_seqlens(&cu)?;
        tp.varlen_attention(x[0], x[0], x[0], &cu, 5, 0.3, 0.0)
    });
}

#[test]
fn launcher_names_the_kernel_and_shapes_at_its_limits() {
    let d = cuda::Dims { probs: 20_000 * 20_000, b: 1, n: 20_000, max_t: 20_000, nh: 1, hs: 64 };
    let e = cuda::check(&d, "varlen_attention_forward").unwrap_err().to_string();
    assert!(e.contains("varlen_attention_forward") && e.contains("(N, C) = (20000, 64)") && e.contains("20000"), "{e}");
    let d = cuda::Dims { probs: 70_000, b: 70_000, n: 70_000, max_t: 1, nh: 1, hs: 8 };
    let e = cuda::check(&d, "varlen_attention_forward").unwrap_err().to_string();
    assert!(e.contains("B = 70000") && e.contains("65535"), "{e}");
    let d = cuda::Dims { probs: 12 * 512 * 512, b: 1, n: 512, max_t: 512, nh: 12, hs: 64 };
    let (grid, smem) = cuda::check(&d, "varlen_attention_forward").unwrap();
    assert_eq!((grid, smem), ((512, 12, 1), (32 + 64 + 512) * 4));
}
