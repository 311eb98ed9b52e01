//! GPU suite: the keyed dropout kernels (kernels/dropout.cu: dropout_rows_*, dropout_attention_*)
//! against their CPU twins, forward and backward, through the parity harness of tests/common
//! (training mode, seed 17) at tolerance 0: a mask is a pure function of (seed, stream, index),
//! so the GPU must give the CPU's bits. Sizes divide no block (8 rows of 32 lanes) or warp size
//! except where noted, and each kernel has a case of at least 1e5 elements. tests/dropout_keys.rs
//! checks the CPU twin against the definition.

mod common;
use common::{gpu, parity};
use engine::Tape;
use engine::rng::token_key;

/// Bit-identical: the relative error of any differing element is > 0.
const EXACT: f64 = 0.0;

fn padded_keys(b: usize, t: usize) -> Vec<i32> {
    (0..b).flat_map(|s| (0..t).map(move |i| token_key(s, i) as i32)).collect()
}

fn packed_keys(lens: &[usize]) -> Vec<i32> {
    lens.iter().enumerate().flat_map(|(s, &n)| (0..n).map(move |i| token_key(s, i) as i32)).collect()
}

#[test]
fn dropout_rows() {
    let Some(g) = gpu() else { return };
    let rows = |name: &str, dims: &[usize], keys: &[i32], key_dims: &[usize], p: f64| {
        parity(&g, name, &[dims], EXACT, &|t, x| {
            let k = t.ints(keys, key_dims)?;
            t.dropout_rows(x[0], k, p)
        });
    };
    // padded (B, T, C) with (B, T) keys, C not a multiple of 32
    rows("rows_padded_3x37x45", &[3, 37, 45], &padded_keys(3, 37), &[3, 37], 0.1);
    // packed (N, C) with (N) keys, C = 771 (24 lane passes + 3), 139 rows: ≈ 1.07e5 elements
    let lens = [64, 5, 37, 33];
    rows("rows_packed_139x771", &[139, 771], &packed_keys(&lens), &[139], 0.5);
    // rows narrower than a warp, keys at the top of token_key's range (b < 2¹⁵, t < 2¹⁶), so
    // that key · W needs all 64 bits of the index arithmetic
    let top: Vec<i32> = (0..203).map(|r| token_key((1 << 15) - 1 - r % 3, (1 << 16) - 1 - r) as i32).collect();
    rows("rows_top_keys_203x5", &[203, 5], &top, &[203], 0.3);
    // rows a multiple of the block's 8 and W of the warp's 32
    rows("rows_aligned_2x8x64", &[2, 8, 64], &padded_keys(2, 8), &[2, 8], 0.2);
    // two calls on one tape draw two streams; the second on the first's output
    parity(&g, "rows_twice_7x13x29", &[&[7, 13, 29]], EXACT, &|t, x| {
        let k = t.ints(&padded_keys(7, 13), &[7, 13])?;
        let y = t.dropout_rows(x[0], k, 0.5)?;
        t.dropout_rows(y, k, 0.1)
    });
}

#[test]
fn attention_dropout() {
    let Some(g) = gpu() else { return };
    let cases: [(&str, [usize; 4], f64); 5] = [
        ("attn_2x3x37", [2, 3, 37, 37], 0.1),
        ("attn_1x2x70", [1, 2, 70, 70], 0.5),
        // T smaller than a warp: most lanes idle
        ("attn_3x4x5", [3, 4, 5, 5], 0.3),
        ("attn_2x4x32", [2, 4, 32, 32], 0.2),
        // ≈ 1.06e5 elements
        ("attn_2x4x115", [2, 4, 115, 115], 0.1),
    ];
    for (name, dims, p) in cases {
        parity(&g, name, &[&dims], EXACT, &|t, x| t.attention_dropout(x[0], p));
    }
    // keyed and flat calls mixed on one tape: each draws its own stream
    parity(&g, "attn_after_flat_2x3x19", &[&[2, 3, 19, 19]], EXACT, &|t, x| {
        let y = t.dropout(x[0], 0.2)?;
        t.attention_dropout(y, 0.3)
    });
}

/// The defining property on the device itself: a padded (B, T, C) batch and its packed (N, C)
/// twin keep the same elements of every real token, forward and backward.
#[test]
fn rows_padded_and_packed_agree_on_the_device() {
    let Some(g) = gpu() else { return };
    let (b, t, c, p, lens) = (3, 19, 45, 0.4, [19, 2, 11]);
    let n: usize = lens.iter().sum();
    let x: Vec<f32> = (0..b * t * c).map(|i| 1.0 + (i % 1021) as f32 / 1024.0).collect();
    let packed: Vec<f32> = (0..b).flat_map(|s| x[s * t * c..(s * t + lens[s]) * c].iter().copied()).collect();
    let run = |data: &[f32], dims: &[usize], keys: &[i32], key_dims: &[usize]| {
        let mut tape = Tape::<f32>::new(g.clone());
        tape.set_training(true);
        tape.set_seed(99);
        let xt = tape.store.add_param("x", dims, data, true).unwrap();
        let k = tape.ints(keys, key_dims).unwrap();
        let y = tape.dropout_rows(xt, k, p).unwrap();
        let loss = tape.sum(y).unwrap();
        tape.backward(loss).unwrap();
        (tape.store.read(y).unwrap(), tape.store.read_grad(xt).unwrap())
    };
    let (yp, gp) = run(&x, &[b, t, c], &padded_keys(b, t), &[b, t]);
    let (yk, gk) = run(&packed, &[n, c], &packed_keys(&lens), &[n]);
    let mut row = 0;
    for (s, &len) in lens.iter().enumerate() {
        for i in 0..len {
            let padded = (s * t + i) * c;
            for col in 0..c {
                let (e, f) = (padded + col, row * c + col);
                assert_eq!(yk[f].to_bits(), yp[e].to_bits(), "output of ({s}, {i}, {col})");
                assert_eq!(gk[f].to_bits(), gp[e].to_bits(), "gradient of ({s}, {i}, {col})");
            }
            row += 1;
        }
    }
    let dropped = gk.iter().filter(|&&m| m == 0.0).count();
    assert!(dropped > 0 && dropped < gk.len(), "{dropped} of {} dropped", gk.len());
}
