//! GPU suite: the kernels of token-packed batches (issue 16) against their CPU twins, forward and
//! backward, with the NaN-poisoned harness of tests/common (an output or gradient element a
//! kernel leaves unwritten fails): `embedding_forward_at` with the grouped backward into the
//! position table, the packed pools of kernels/pooling.cu, and the column slice of
//! kernels/concat.cu. Sequence lengths include an empty sequence, a single token and lengths that
//! do not divide the kernels' 256-thread blocks.

mod common;
use common::{F32_TOL, gpu, parity};
use engine::Device;
use engine::ops::concat::cuda as concat_cuda;

/// A small deterministic generator for ids and positions.
fn lcg(i: usize, salt: usize) -> usize {
    (i.wrapping_mul(2_654_435_761).wrapping_add(salt.wrapping_mul(40_503)) >> 7) % 1_000_003
}

fn offsets(lens: &[usize]) -> Vec<usize> {
    let mut cu = vec![0];
    for &t in lens {
        cu.push(cu.last().unwrap() + t);
    }
    cu
}

/// 1 token, 37, an empty sequence, 130 (> 128), 5, 64.
const LENS: [usize; 6] = [1, 37, 0, 130, 5, 64];

#[test]
fn embedding_at_packed() {
    let Some(g) = gpu() else { return };
    let (c, vocab, p_rows) = (200, 1000, 160);
    let n: usize = LENS.iter().sum();
    // Positions restart at 0 in every sequence: position 0 is read by 5 tokens, 36 by 3.
    let positions: Vec<i32> = LENS.iter().flat_map(|&t| 0..t as i32).collect();
    // Every fourth token is id 42; the rest draw from 97 ids, with the table's first and last rows.
    let ids: Vec<i32> = (0..n)
        .map(|i| match i {
            0 => 0,
            1 => vocab as i32 - 1,
            i if i % 4 == 2 => 42,
            i => (lcg(i, 1) % 97 * 10 + 1) as i32,
        })
        .collect();
    let types: Vec<i32> = (0..n).map(|i| i32::from(lcg(i, 2).is_multiple_of(3))).collect();
    assert!(types.contains(&0) && types.contains(&1));
    parity(&g, "embedding_at packed", &[&[vocab, c], &[p_rows, c], &[2, c]], F32_TOL, &|tp, x| {
        let ids = tp.ints(&ids, &[n])?;
        let types = tp.ints(&types, &[n])?;
        let pos = tp.ints(&positions, &[n])?;
        tp.embedding_at(ids, types, pos, x[0], x[1], x[2])
    });
}

#[test]
fn embedding_at_repeated_positions() {
    let Some(g) = gpu() else { return };
    // (3, 41) tokens, C = 300 (> 256 threads: the channel loop strides), positions out of order
    // with heavy repeats: half the tokens at position 3, the rest among 7 others; some rows unread.
    let (b, t, c, vocab, p_rows) = (3, 41, 300, 50, 20);
    let n: usize = b * t;
    let positions: Vec<i32> =
        (0..n).map(|i| if i.is_multiple_of(2) { 3 } else { (lcg(i, 3) % 7 * 2 + 5) as i32 }).collect();
    let ids: Vec<i32> = (0..n).map(|i| (lcg(i, 4) % vocab) as i32).collect();
    let types: Vec<i32> = (0..n).map(|i| i32::from(i % 3 == 1)).collect();
    parity(&g, "embedding_at repeated positions", &[&[vocab, c], &[p_rows, c], &[2, c]], F32_TOL, &|tp, x| {
        let ids = tp.ints(&ids, &[b, t])?;
        let types = tp.ints(&types, &[b, t])?;
        let pos = tp.ints(&positions, &[b, t])?;
        tp.embedding_at(ids, types, pos, x[0], x[1], x[2])
    });
}

#[test]
fn packed_ops_with_no_tokens() {
    let Some(g) = gpu() else { return };
    parity(&g, "embedding_at no tokens", &[&[4, 8], &[3, 8], &[2, 8]], F32_TOL, &|tp, x| {
        let none = tp.ints(&[], &[0])?;
        tp.embedding_at(none, none, none, x[0], x[1], x[2])
    });
    parity(&g, "packed pools no tokens", &[&[0, 8]], F32_TOL, &|tp, x| {
        let cu = tp.cu_seqlens(&[0, 0, 0])?;
        let f = tp.first_tokens(x[0], &cu)?;
        let m = tp.mean_pool_packed(x[0], &cu)?;
        tp.concat(&[f, m])
    });
}

#[test]
fn first_tokens_and_mean_pool_packed() {
    let Some(g) = gpu() else { return };
    let cu = offsets(&LENS);
    let (n, c) = (cu[LENS.len()], 200);
    parity(&g, "first_tokens", &[&[n, c]], F32_TOL, &|tp, x| {
        let cu = tp.cu_seqlens(&cu)?;
        tp.first_tokens(x[0], &cu)
    });
    parity(&g, "mean_pool_packed", &[&[n, c]], F32_TOL, &|tp, x| {
        let cu = tp.cu_seqlens(&cu)?;
        tp.mean_pool_packed(x[0], &cu)
    });
    // Both pools of one activation (its poisoned gradient zeroed by the tape): the two backward
    // kernels accumulate into one dx.
    parity(&g, "first_tokens + mean_pool_packed", &[&[n, c]], F32_TOL, &|tp, x| {
        let cu = tp.cu_seqlens(&cu)?;
        let h = tp.scale(x[0], 1.5)?;
        let f = tp.first_tokens(h, &cu)?;
        let m = tp.mean_pool_packed(h, &cu)?;
        tp.concat(&[f, m])
    });
}

#[test]
fn columns() {
    let Some(g) = gpu() else { return };
    // Three bands of x (5, 9, 137), two overlapping (3..67 and 60..137) and a single column:
    // the backward adds each band into dx, launch after launch.
    parity(&g, "columns", &[&[5, 9, 137]], F32_TOL, &|tp, x| {
        let a = tp.columns(x[0], 3, 64)?;
        let b = tp.columns(x[0], 60, 77)?;
        let one = tp.columns(x[0], 0, 1)?;
        tp.concat(&[a, b, one])
    });
    // A band of an activation, whose columns outside it get no gradient.
    parity(&g, "columns of an activation", &[&[37, 101]], F32_TOL, &|tp, x| {
        let h = tp.scale(x[0], -0.5)?;
        tp.columns(h, 17, 50)
    });
    // The concat of slices gives back x.
    parity(&g, "concat of columns", &[&[7, 130]], F32_TOL, &|tp, x| {
        let parts = [tp.columns(x[0], 0, 33)?, tp.columns(x[0], 33, 96)?, tp.columns(x[0], 129, 1)?];
        tp.concat(&parts)
    });
}

#[test]
fn columns_launcher_refuses_a_band_outside_x() {
    let Some(Device::Cuda(dev)) = gpu() else { return };
    for r in
        [concat_cuda::columns_forward(&dev, 0, 0, 2, 5, 4, 0), concat_cuda::columns_backward(&dev, 0, 0, 2, 3, 4, 2)]
    {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("concat.cu:columns_") && e.contains("outside"), "{e}");
    }
}
