//! Conformance of `ptxemu::warp` with the PTX ISA 9.0: shfl.sync, ldmatrix (Warp-level
//! matrix load instruction: ldmatrix) and the mma.sync fragment layouts ("Matrix Fragments for
//! mma.m16n8k16 with floating point type", "Matrix Fragments for mma.m16n8k8" .tf32). The expected
//! values come from the ISA's fragment tables written out here, and integer-valued matrices whose
//! product D = A·B + C is exact, computed by a plain triple loop in i64.

// Index loops mirror the ISA tables (row/col/lane/register indices) on purpose.
#![allow(clippy::needless_range_loop)]

use ptxemu::warp::*;

/// A deterministic, asymmetric small-integer matrix entry (so a transposed or swapped layout
/// shows).
fn val(seed: i64, r: usize, c: usize) -> i64 {
    ((seed + 7 * r as i64 + 3 * (c as i64) * (c as i64) + (r * c) as i64) % 13) - 6
}

fn bf16_bits(x: i64) -> u32 {
    let f = x as f32; // small integers: exact in bf16 (8-bit significand)
    f.to_bits() >> 16
}

// ------------------------------------------------------------------------------------------------
// mma.m16n8k16 .bf16, ISA tables (groupID = %laneid >> 2, threadID_in_group = %laneid % 4):
//   A (a0..a7, two per .b32 register, lower index in the low half):
//     row = groupID       for ai where 0 <= i < 2 || 4 <= i < 6
//           groupID + 8   otherwise
//     col = (threadID_in_group * 2) + (i & 0x1)       for ai where i < 4
//           (threadID_in_group * 2) + (i & 0x1) + 8   for ai where i >= 4
//   B (b0..b3):
//     row = (threadID_in_group * 2) + (i & 0x1)       for bi where i < 2
//           (threadID_in_group * 2) + (i & 0x1) + 8   for bi where i >= 2
//     col = groupID
//   C/D (c0..c3):
//     row = groupID for ci where i < 2, groupID + 8 for ci where i >= 2
//     col = (threadID_in_group * 2) + (i & 0x1)
// ------------------------------------------------------------------------------------------------

fn a_rc_k16(lane: usize, i: usize) -> (usize, usize) {
    let g = lane >> 2;
    let t = lane % 4;
    let row = if i < 2 || (4..6).contains(&i) { g } else { g + 8 };
    let col = if i < 4 { t * 2 + (i & 1) } else { t * 2 + (i & 1) + 8 };
    (row, col)
}
fn b_rc_k16(lane: usize, i: usize) -> (usize, usize) {
    let g = lane >> 2;
    let t = lane % 4;
    let row = if i < 2 { t * 2 + (i & 1) } else { t * 2 + (i & 1) + 8 };
    (row, g)
}
fn cd_rc(lane: usize, i: usize) -> (usize, usize) {
    let g = lane >> 2;
    let t = lane % 4;
    (if i < 2 { g } else { g + 8 }, t * 2 + (i & 1))
}

fn product(
    a: &dyn Fn(usize, usize) -> i64,
    b: &dyn Fn(usize, usize) -> i64,
    c: &dyn Fn(usize, usize) -> i64,
    k: usize,
) -> [[i64; 8]; 16] {
    let mut d = [[0i64; 8]; 16];
    for i in 0..16 {
        for j in 0..8 {
            let mut s = c(i, j);
            for kk in 0..k {
                s += a(i, kk) * b(kk, j);
            }
            d[i][j] = s;
        }
    }
    d
}

/// ISA "Matrix Fragments for mma.m16n8k16 with floating point type" (.bf16 A/B, .f32 C/D).
#[test]
fn mma_m16n8k16_bf16_every_lane_every_register() {
    for seed in 0..4i64 {
        let am = |r: usize, c: usize| val(seed, r, c);
        let bm = |r: usize, c: usize| val(seed + 5, c + 1, r); // B[k][n]
        let cm = |r: usize, c: usize| 100 * (r as i64) - 10 * (c as i64) + seed;
        let mut a = [[0u32; 4]; 32];
        let mut b = [[0u32; 2]; 32];
        let mut c = [[0f32; 4]; 32];
        for lane in 0..32 {
            for i in 0..8 {
                let (r, col) = a_rc_k16(lane, i);
                a[lane][i / 2] |= bf16_bits(am(r, col)) << (16 * (i % 2));
            }
            for i in 0..4 {
                let (r, col) = b_rc_k16(lane, i);
                b[lane][i / 2] |= bf16_bits(bm(r, col)) << (16 * (i % 2));
            }
            for i in 0..4 {
                let (r, col) = cd_rc(lane, i);
                c[lane][i] = cm(r, col) as f32;
            }
        }
        let d = mma_m16n8k16_bf16(&a, &b, &c);
        let want = product(&am, &bm, &cm, 16);
        for lane in 0..32 {
            for i in 0..4 {
                let (r, col) = cd_rc(lane, i);
                assert_eq!(d[lane][i], want[r][col] as f32, "seed {seed} lane {lane} d{i} (D[{r}][{col}])");
            }
        }
    }
}

// mma.m16n8k8 .tf32 (one element per .b32 register):
//   A: row = groupID for a0, a2; groupID + 8 for a1, a3
//      col = threadID_in_group for a0, a1; threadID_in_group + 4 for a2, a3
//   B: row = threadID_in_group for b0; threadID_in_group + 4 for b1; col = groupID
//   C/D: as for m16n8k16.
fn a_rc_tf32(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    let row = match i {
        0 | 2 => g,
        _ => g + 8,
    };
    let col = match i {
        0 | 1 => t,
        _ => t + 4,
    };
    (row, col)
}
fn b_rc_tf32(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (if i == 0 { t } else { t + 4 }, g)
}

/// ISA "Matrix Fragments for mma.m16n8k8" (.tf32 A/B, .f32 C/D). The low 13 bits of a tf32
/// register are ignored (set here to junk, which must not change D).
#[test]
fn mma_m16n8k8_tf32_every_lane_every_register() {
    for seed in 0..4i64 {
        let am = |r: usize, c: usize| val(seed, r, c) * 37; // 9-bit integers: exact in tf32
        let bm = |r: usize, c: usize| val(seed + 3, c, r + 2) * 5;
        let cm = |r: usize, c: usize| 1000 * (c as i64) - 3 * (r as i64) + seed;
        let mut a = [[0u32; 4]; 32];
        let mut b = [[0u32; 2]; 32];
        let mut c = [[0f32; 4]; 32];
        for lane in 0..32 {
            for i in 0..4 {
                let (r, col) = a_rc_tf32(lane, i);
                a[lane][i] = (am(r, col) as f32).to_bits() | (0x1fff & (lane as u32 * 0x9e3 + i as u32));
            }
            for i in 0..2 {
                let (r, col) = b_rc_tf32(lane, i);
                b[lane][i] = (bm(r, col) as f32).to_bits() | (0x0abc * (seed as u32 & 1));
            }
            for i in 0..4 {
                let (r, col) = cd_rc(lane, i);
                c[lane][i] = cm(r, col) as f32;
            }
        }
        let d = mma_m16n8k8_tf32(&a, &b, &c);
        let want = product(&am, &bm, &cm, 8);
        for lane in 0..32 {
            for i in 0..4 {
                let (r, col) = cd_rc(lane, i);
                assert_eq!(d[lane][i], want[r][col] as f32, "seed {seed} lane {lane} d{i} (D[{r}][{col}])");
            }
        }
    }
}

/// Shared memory for ldmatrix: rows of 16 bytes at arbitrary (scattered) offsets.
struct Smem(Vec<u8>);
impl Smem {
    fn row(&self, addr: u32) -> Result<[u8; 16], String> {
        let a = addr as usize;
        if !a.is_multiple_of(16) || a + 16 > self.0.len() {
            return Err(format!("bad row address {addr}"));
        }
        Ok(self.0[a..a + 16].try_into().unwrap())
    }
}

/// ISA ldmatrix: "addresses addr0–addr7 correspond to the rows of the first matrix, addr8–addr15
/// to the second, and so on"; "a group of four threads loads an entire row" (thread 4r+q holds
/// elements 2q, 2q+1 of row r, lower column in the low half) and with .trans the matrix is read in
/// column-major order (thread 4r+q holds column r, rows 2q and 2q+1).
#[test]
fn ldmatrix_x4_and_trans() {
    let code = |m: usize, r: usize, c: usize| (0x1000 * m + 0x100 * r + c * 7 + 1) as u16;
    // Row (m, r) lives at a scattered slot: slot = (m*8 + r)*5 % 32.
    let slot = |m: usize, r: usize| ((m * 8 + r) * 5) % 32;
    let mut mem = vec![0u8; 32 * 16];
    let mut addr = [0u32; 32];
    for m in 0..4 {
        for r in 0..8 {
            let s = slot(m, r);
            addr[8 * m + r] = (16 * s) as u32;
            for c in 0..8 {
                mem[16 * s + 2 * c..16 * s + 2 * c + 2].copy_from_slice(&code(m, r, c).to_le_bytes());
            }
        }
    }
    let smem = Smem(mem);
    let plain = ldmatrix_x4(&addr, false, |a| smem.row(a)).unwrap();
    let trans = ldmatrix_x4(&addr, true, |a| smem.row(a)).unwrap();
    for lane in 0..32 {
        let (r, q) = (lane / 4, lane % 4);
        for m in 0..4 {
            let want = code(m, r, 2 * q) as u32 | (code(m, r, 2 * q + 1) as u32) << 16;
            assert_eq!(plain[lane][m], want, "lane {lane} matrix {m}");
            let want = code(m, 2 * q, r) as u32 | (code(m, 2 * q + 1, r) as u32) << 16;
            assert_eq!(trans[lane][m], want, "trans lane {lane} matrix {m}");
        }
    }
    // An error from a row read is returned.
    let mut bad = addr;
    bad[9] = 3;
    assert!(ldmatrix_x4(&bad, false, |a| smem.row(a)).is_err());
}

/// ldmatrix feeding mma, as NVRTC-compiled GEMM kernels do: A (16×16 row-major bf16) through
/// ldmatrix.x4 with lane l pointing at row l%16, column 8·(l/16); B (16×16, k-major rows, i.e.
/// B[k][n] row-major) through ldmatrix.x4.trans with lane l pointing at row k = l%8 + 8·((l/8)%2),
/// column n = 8·(l/16) — registers 0,1 are the B fragment of n-tile 0 and 2,3 of n-tile 1.
#[test]
fn ldmatrix_feeds_mma_bf16() {
    let am = |r: usize, c: usize| val(11, r, c);
    let bm = |k: usize, n: usize| val(4, n + 3, k);
    let cm = |_r: usize, _c: usize| 0i64;
    // A at offset 0 (32 bytes per row), B at 1024 (32 bytes per row).
    let mut mem = vec![0u8; 2048];
    for r in 0..16 {
        for c in 0..16 {
            let o = 32 * r + 2 * c;
            mem[o..o + 2].copy_from_slice(&(bf16_bits(am(r, c)) as u16).to_le_bytes());
            let o = 1024 + 32 * r + 2 * c;
            mem[o..o + 2].copy_from_slice(&(bf16_bits(bm(r, c)) as u16).to_le_bytes());
        }
    }
    let smem = Smem(mem);
    let a_addr: [u32; 32] = std::array::from_fn(|l| (32 * (l % 16) + 16 * (l / 16)) as u32);
    let b_addr: [u32; 32] = std::array::from_fn(|l| (1024 + 32 * (l % 8 + 8 * ((l / 8) % 2)) + 16 * (l / 16)) as u32);
    let a = ldmatrix_x4(&a_addr, false, |x| smem.row(x)).unwrap();
    let bt = ldmatrix_x4(&b_addr, true, |x| smem.row(x)).unwrap();
    let c = [[0f32; 4]; 32];
    for nt in 0..2 {
        let b: [[u32; 2]; 32] = std::array::from_fn(|l| [bt[l][2 * nt], bt[l][2 * nt + 1]]);
        let d = mma_m16n8k16_bf16(&a, &b, &c);
        let bn = |k: usize, n: usize| bm(k, n + 8 * nt);
        let want = product(&am, &bn, &cm, 16);
        for lane in 0..32 {
            for i in 0..4 {
                let (r, col) = cd_rc(lane, i);
                assert_eq!(d[lane][i], want[r][col] as f32, "n-tile {nt} lane {lane} d{i}");
            }
        }
    }
}

/// mma accumulation (documented: summed in f64, rounded once to f32): 2^24 + 1 + 1 is exact in
/// f64 and rounds once to 2^24 + 2, where f32 step-by-step accumulation would give 2^24.
#[test]
fn mma_rounds_once() {
    let one = bf16_bits(1) | bf16_bits(1) << 16;
    let mut a = [[0u32; 4]; 32];
    let mut b = [[0u32; 2]; 32];
    // Row 0 of A: a0,a1 of lane 0 (cols 0, 1) = 1; column 0 of B: b0,b1 of lane 0 (rows 0, 1) = 1.
    a[0][0] = one;
    b[0][0] = one;
    let mut c = [[0f32; 4]; 32];
    c[0][0] = 16_777_216.0; // D[0][0] = 2^24 + 1·1 + 1·1
    let d = mma_m16n8k16_bf16(&a, &b, &c);
    assert_eq!(d[0][0], 16_777_218.0);
    assert_eq!(d[0][1], 0.0);
}

/// ISA “Data Movement and Conversion Instructions: shfl.sync”, for the operands NVRTC emits for
/// __shfl_*_sync(mask, v, x, width): c = ((32 − width) << 8) | 0x1f for idx/down/xor, c = (32 −
/// width) << 8 for up. Expected values from the CUDA semantics of those intrinsics (segments of
/// `width` lanes).
#[test]
fn shfl_all_modes() {
    let a: [u32; 32] = std::array::from_fn(|l| 0x100 + l as u32 * 3);
    for width in [32usize, 16, 8, 4] {
        let c_dn = [(((32 - width) << 8) | 0x1f) as u32; 32];
        let c_up = [((32 - width) << 8) as u32; 32];
        for x in [0usize, 1, 2, 3, 5, 8, 16, 31] {
            // bfly (xor): lane ^ x unless that is in a later segment (CUDA: "each group of width
            // threads can access elements from earlier groups ... from later groups their own
            // value is returned"; the ISA's pval = j <= maxLane says the same).
            let (d, p) = shfl(ShflMode::Bfly, &a, &[x as u32; 32], &c_dn);
            for l in 0..32 {
                let src = l ^ x;
                let inside = src / width <= l / width;
                assert_eq!(d[l], a[if inside { src } else { l }], "bfly w{width} x{x} lane {l}");
                assert_eq!(p[l], inside, "bfly p w{width} x{x} lane {l}");
            }
            // idx: lane (l / width)·width + x % width.
            let (d, p) = shfl(ShflMode::Idx, &a, &[x as u32; 32], &c_dn);
            for l in 0..32 {
                assert_eq!(d[l], a[(l / width) * width + x % width], "idx w{width} x{x} lane {l}");
                assert!(p[l]);
            }
            // down: l + x if within the segment, else own value (p false).
            let (d, p) = shfl(ShflMode::Down, &a, &[x as u32; 32], &c_dn);
            for l in 0..32 {
                let ok = l % width + x < width;
                assert_eq!(d[l], a[if ok { l + x } else { l }], "down w{width} x{x} lane {l}");
                assert_eq!(p[l], ok);
            }
            // up: l − x if within the segment.
            let (d, p) = shfl(ShflMode::Up, &a, &[x as u32; 32], &c_up);
            for l in 0..32 {
                let ok = l % width >= x;
                assert_eq!(d[l], a[if ok { l - x } else { l }], "up w{width} x{x} lane {l}");
                assert_eq!(p[l], ok);
            }
        }
    }
    // Only b[4:0] counts; each lane uses its own b.
    let b: [u32; 32] = std::array::from_fn(|l| (31 - l as u32) | 0xffe0);
    let (d, _) = shfl(ShflMode::Idx, &a, &b, &[0x1f; 32]);
    for l in 0..32 {
        assert_eq!(d[l], a[31 - l]);
    }
    // A butterfly reduction over the warp (as __shfl_xor_sync with c = 0x1f) sums every lane.
    let mut v: [u32; 32] = std::array::from_fn(|l| l as u32 + 1);
    for off in [16u32, 8, 4, 2, 1] {
        let (d, _) = shfl(ShflMode::Bfly, &v, &[off; 32], &[0x1f; 32]);
        for l in 0..32 {
            v[l] += d[l];
        }
    }
    assert!(v.iter().all(|&s| s == 528));
}
