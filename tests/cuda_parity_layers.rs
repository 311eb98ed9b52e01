//! GPU suite: the layer kernels (embedding, pooling, cosine, concat, head permutes, losses) against
//! the CPU path. See tests/common for the method. Integer inputs (ids, masks, labels) and constant
//! targets are built inside each graph; float inputs are the harness's random parameters.

mod common;
use common::{Build, F32_TOL, gpu, parity};
use engine::model::mlm::MlmHead;
use engine::{Result, Tape, Tensor};

/// A small deterministic generator for ids and labels.
fn lcg(i: usize, salt: usize) -> usize {
    (i.wrapping_mul(2_654_435_761).wrapping_add(salt.wrapping_mul(40_503)) >> 7) % 1_000_003
}

#[test]
fn embedding() {
    let Some(g) = gpu() else { return };
    let (b, t, c, vocab) = (7, 37, 384, 1000);
    let n = b * t;
    // Every fifth token of the first 250 is id 42 (50 uses); the rest draw from 97 ids (many repeats,
    // none 42), with the first and last rows of the table among them.
    let ids: Vec<i32> = (0..n)
        .map(|i| match i {
            0 => 0,
            1 => vocab as i32 - 1,
            i if i % 5 == 2 && i < 250 => 42,
            i => (lcg(i, 1) % 97 * 10 + 1) as i32,
        })
        .collect();
    assert_eq!(ids.iter().filter(|&&id| id == 42).count(), 50);
    // Two segments per sequence (type 0 then type 1), split at a different place in each row.
    let types: Vec<i32> = (0..n).map(|i| i32::from(i % t >= 5 + 4 * (i / t))).collect();
    assert!(types.contains(&0) && types.contains(&1));
    parity(&g, "embedding", &[&[vocab, c], &[64, c], &[2, c]], F32_TOL, &|tp, x| {
        let ids = tp.ints(&ids, &[b, t])?;
        let types = tp.ints(&types, &[b, t])?;
        tp.embedding(ids, types, x[0], x[1], x[2])
    });
}

/// Masks of 6 sequences of 37 tokens: full, one token, a hole, all padding, and short ones.
fn pool_mask(b: usize, t: usize) -> Vec<i32> {
    let lens = [37, 1, 20, 0, 36, 5];
    (0..b * t).map(|i| i32::from(i % t < lens[i / t] && !(i / t == 2 && i % t == 7))).collect()
}

#[test]
fn mean_pool() {
    let Some(g) = gpu() else { return };
    let (b, t, c) = (6, 37, 200);
    let mask = pool_mask(b, t);
    parity(&g, "mean_pool", &[&[b, t, c]], F32_TOL, &|tp, x| {
        let m = tp.ints(&mask, &[b, t])?;
        tp.mean_pool(x[0], m)
    });
}

#[test]
fn first_token() {
    let Some(g) = gpu() else { return };
    // Only position 0 is read: the padded positions of x get no gradient.
    parity(&g, "first_token", &[&[6, 37, 384]], F32_TOL, &|tp, x| tp.first_token(x[0]));
}

#[test]
fn cosine() {
    let Some(g) = gpu() else { return };
    let (b, c) = (13, 768);
    // Row 3 of a is zero and row 5 of b is zero (the clamped norm); row 7 of a is tiny
    // (‖a‖ ≈ 3e-9 < eps: the clamped branch with a gradient that still reaches the input).
    let row_scale = |rows: &[(usize, f32)]| -> Vec<f32> {
        (0..b * c).map(|i| rows.iter().find(|(r, _)| *r == i / c).map_or(1.0, |&(_, s)| s)).collect()
    };
    let (sa, sb) = (row_scale(&[(3, 0.0), (7, 1e-10)]), row_scale(&[(5, 0.0)]));
    let scaled = |tp: &mut Tape<f32>, x: Tensor, s: &[f32]| -> Result<Tensor> {
        let s = tp.constant(s, &[b, c])?;
        tp.mul(x, s)
    };
    parity(&g, "cosine", &[&[b, c], &[b, c]], F32_TOL, &|tp, x| {
        let a = scaled(tp, x[0], &sa)?;
        let bb = scaled(tp, x[1], &sb)?;
        tp.cosine(a, bb)
    });
    parity(&g, "cosine plain", &[&[b, c], &[b, c]], F32_TOL, &|tp, x| tp.cosine(x[0], x[1]));
}

#[test]
fn gather_rows() {
    let Some(g) = gpu() else { return };
    let (r, c) = (157, 200);
    // 64 distinct rows in scattered order, the first and the last row among them; the rest of x
    // is never read and must get no gradient.
    let mut rows: Vec<i32> = (0..r as i32).filter(|i| i % 5 == 1 || i % 5 == 3 || *i == 0).collect();
    rows.sort_by_key(|&i| lcg(i as usize, 7));
    assert_eq!((rows.len(), rows.contains(&(r as i32 - 1))), (64, true));
    parity(&g, "gather_rows", &[&[r, c]], F32_TOL, &|tp, x| {
        let rows = tp.ints(&rows, &[rows.len()])?;
        tp.gather_rows(x[0], rows)
    });
    // From an activation (its gradient zeroed by the backward, not by the harness), and none.
    parity(&g, "gather_rows of an activation", &[&[r, c]], F32_TOL, &|tp, x| {
        let y = tp.scale(x[0], 1.5)?;
        let rows = tp.ints(&rows, &[rows.len()])?;
        tp.gather_rows(y, rows)
    });
}

/// The masked-LM head on a few rows of hidden states: gathered, dense, GELU, LayerNorm, the
/// decoder tied to the word table, cross-entropy over a vocabulary of 1000.
#[test]
fn masked_lm_head() {
    let (r, c, v) = (90, 48, 1000);
    let rows: Vec<i32> = (0..r as i32).filter(|i| i % 4 == 2).collect(); // 22 rows
    let labels: Vec<i32> = (0..rows.len()).map(|i| (lcg(i, 9) % v) as i32).collect();
    let shapes: [&[usize]; 7] = [&[r, c], &[v, c], &[c, c], &[c], &[c], &[c], &[v]];
    loss_parity("masked_lm_head", &shapes, &|tp, x| {
        let head = MlmHead { dense_w: x[2], dense_b: x[3], ln_g: x[4], ln_b: x[5], bias: x[6] };
        let (rows, labels) = (tp.ints(&rows, &[rows.len()])?, tp.ints(&labels, &[labels.len()])?);
        let h = tp.gather_rows(x[0], rows)?;
        let logits = head.logits(tp, h, x[1], 1e-12)?;
        tp.cross_entropy(logits, labels)
    });
}

#[test]
fn concat() {
    let Some(g) = gpu() else { return };
    parity(&g, "concat", &[&[5, 9, 7], &[5, 9, 129], &[5, 9, 1]], F32_TOL, &|tp, x| {
        tp.concat(&[x[0], x[1], x[0], x[2]])
    });
}

#[test]
fn split_heads() {
    let Some(g) = gpu() else { return };
    parity(&g, "split_heads", &[&[3, 37, 384]], F32_TOL, &|tp, x| tp.split_heads(x[0], 12));
}

#[test]
fn merge_heads() {
    let Some(g) = gpu() else { return };
    parity(&g, "merge_heads", &[&[3, 12, 37, 32]], F32_TOL, &|tp, x| tp.merge_heads(x[0]));
    // The round trip, which must give back x (and its gradient through both backward kernels).
    parity(&g, "split then merge", &[&[3, 37, 384]], F32_TOL, &|tp, x| {
        let h = tp.split_heads(x[0], 12)?;
        tp.merge_heads(h)
    });
}

/// `loss` as the output itself (upstream gradient 1), and as the pair (loss, loss), which the
/// harness weighs with random weights: the loss's upstream gradient is then their sum, read by the
/// backward kernel from device memory.
fn loss_parity(name: &str, shapes: &[&[usize]], build: &Build<'_>) {
    let Some(g) = gpu() else { return };
    parity(&g, name, shapes, F32_TOL, build);
    parity(&g, &format!("{name} weighted"), shapes, F32_TOL, &|tp, x| {
        let l = build(tp, x)?.reshape(&[1])?;
        tp.concat(&[l, l])
    });
}

#[test]
fn cross_entropy() {
    let (b, k) = (29, 5);
    let labels: Vec<i32> = (0..b).map(|i| (lcg(i, 3) % k) as i32).collect();
    assert!((0..k as i32).all(|c| labels.contains(&c)), "every class appears");
    loss_parity("cross_entropy", &[&[b, k]], &|tp, x| {
        let l = tp.ints(&labels, &[b])?;
        tp.cross_entropy(x[0], l)
    });
}

#[test]
fn bce_with_logits() {
    let b = 31;
    let y: Vec<f32> = (0..b).map(|i| [0.0, 1.0, 1.0, 0.0, 0.25][i % 5]).collect();
    loss_parity("bce_with_logits", &[&[b, 1]], &|tp, x| {
        let y = tp.constant(&y, &[b, 1])?;
        tp.bce_with_logits(x[0], y)
    });
}

#[test]
fn mse() {
    let b = 33;
    let y: Vec<f32> = (0..b).map(|i| (lcg(i, 5) % 51) as f32 / 10.0).collect();
    loss_parity("mse", &[&[b]], &|tp, x| {
        let y = tp.constant(&y, &[b])?;
        tp.mse(x[0], y)
    });
}

#[test]
fn symmetric_kl() {
    // Both sides take a gradient; rows more than a block's threads, so threads take several.
    loss_parity("symmetric_kl classes", &[&[300, 5], &[300, 5]], &|tp, x| tp.symmetric_kl(x[0], x[1]));
    loss_parity("symmetric_kl sigmoid", &[&[37, 1], &[37, 1]], &|tp, x| tp.symmetric_kl(x[0], x[1]));
}

#[test]
fn split_heads_from_a_fused_projection() {
    let Some(g) = gpu() else { return };
    // q, k and v as column ranges of one (B, T, 3C) tensor, C = 384, 12 heads.
    parity(&g, "split heads cols", &[&[3, 37, 1152]], F32_TOL, &|t, x| {
        let q = t.split_heads_cols(x[0], 0, 384, 12)?;
        let k = t.split_heads_cols(x[0], 384, 384, 12)?;
        let v = t.split_heads_cols(x[0], 768, 384, 12)?;
        let qk = t.add(q, k)?;
        let s = t.mul(qk, v)?;
        t.merge_heads(s)
    });
}
