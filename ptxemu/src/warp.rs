//! The data movement of the warp collectives, for the 32 lanes of one warp together: shfl, vote,
//! ldmatrix and the mma.sync fragment layouts (PTX ISA 9.0: “Data Movement and Conversion
//! Instructions: shfl.sync”, “Warp Level Matrix Instructions: ldmatrix”, the mma fragment tables).
//! Pure functions over per-lane arrays; `exec` gathers the lanes' operands and scatters the
//! results.
//!
//! CONTRACT (helper "arith" fills the bodies; the signatures are used by exec.rs):

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

/// shfl.sync.{mode}.b32 d|p, a, b, c, membermask for all 32 lanes: `a[l]` each lane's value,
/// `b[l]` its lane/offset operand, `c[l]` its clamp/segment-mask operand. Returns (d, p) per lane:
/// the value read and whether the source lane was in range (ISA pseudocode).
pub fn shfl(mode: ShflMode, a: &[u32; 32], b: &[u32; 32], c: &[u32; 32]) -> ([u32; 32], [bool; 32]) {
    // ISA “Data Movement and Conversion Instructions: shfl.sync” pseudocode, per lane: bval =
    // b[4:0], cval = c[4:0], segmask = c[12:8]; maxLane = (lane & segmask) | (cval & ~segmask),
    // minLane = lane & segmask; out-of-range (pval false) lanes read their own a.
    let mut d = [0u32; 32];
    let mut p = [false; 32];
    for lane in 0..32i32 {
        let l = lane as usize;
        let bval = (b[l] & 0x1f) as i32;
        let cval = (c[l] & 0x1f) as i32;
        let seg = ((c[l] >> 8) & 0x1f) as i32;
        let max_lane = (lane & seg) | (cval & !seg);
        let min_lane = lane & seg;
        let (j, pval) = match mode {
            ShflMode::Up => {
                let j = lane - bval;
                (j, j >= max_lane)
            }
            ShflMode::Down => {
                let j = lane + bval;
                (j, j <= max_lane)
            }
            ShflMode::Bfly => {
                let j = lane ^ bval;
                (j, j <= max_lane)
            }
            ShflMode::Idx => {
                let j = min_lane | (bval & !seg);
                (j, j <= max_lane)
            }
        };
        let j = if pval { j } else { lane };
        d[l] = a[j as usize];
        p[l] = pval;
    }
    (d, p)
}

/// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the row addresses of
/// matrix i (`addr[l]`, shared-window offsets); `read_row(addr)` reads the 16 bytes of one row.
/// Returns the 4 registers each lane receives (register j from matrix j).
///
/// ISA “Warp Level Matrix Instructions: ldmatrix” ("Fragments of the 8x8 matrix"): without .trans
/// lane l holds row l/4, elements 2·(l%4) (low half) and 2·(l%4)+1 (high half); with .trans the
/// matrix is delivered transposed, so lane l holds column l/4, rows 2·(l%4) (low half) and
/// 2·(l%4)+1 (high half). Rows are read in lane order 0..31; the first error is returned.
pub fn ldmatrix_x4<E>(
    addr: &[u32; 32],
    trans: bool,
    mut read_row: impl FnMut(u32) -> std::result::Result<[u8; 16], E>,
) -> std::result::Result<[[u32; 4]; 32], E> {
    // m[i][r][k]: element k of row r of matrix i.
    let mut m = [[[0u16; 8]; 8]; 4];
    for (l, &ad) in addr.iter().enumerate() {
        let row = read_row(ad)?;
        for k in 0..8 {
            m[l / 8][l % 8][k] = u16::from_le_bytes([row[2 * k], row[2 * k + 1]]);
        }
    }
    let mut out = [[0u32; 4]; 32];
    for (l, regs) in out.iter_mut().enumerate() {
        let (g, t) = (l / 4, l % 4);
        for (i, reg) in regs.iter_mut().enumerate() {
            let (lo, hi) =
                if trans { (m[i][2 * t][g], m[i][2 * t + 1][g]) } else { (m[i][g][2 * t], m[i][g][2 * t + 1]) };
            *reg = lo as u32 | (hi as u32) << 16;
        }
    }
    Ok(out)
}

/// D[16][8] = A·B + C summed in f64 in k order starting from C, rounded once to f32 (nearest
/// even); a NaN result is the canonical 0x7fffffff. Every product of bf16 or tf32 values is exact
/// in f64 and the sum is exact while the terms' exponents stay within ~30 of each other, so for
/// ordinary data this is the exactly rounded D. Real tensor cores align the products to the
/// largest exponent and truncate, so a GPU comparison of mma is within a tolerance, not bit for
/// bit.
fn mma_f64<const K: usize>(a: &[[f32; K]; 16], b: &[[f32; 8]; K], c: &[[f32; 8]; 16]) -> [[f32; 8]; 16] {
    let mut d = [[0f32; 8]; 16];
    for i in 0..16 {
        for j in 0..8 {
            let mut acc = c[i][j] as f64;
            for k in 0..K {
                acc += a[i][k] as f64 * b[k][j] as f64;
            }
            let r = acc as f32;
            d[i][j] = if r.is_nan() { f32::from_bits(0x7fff_ffff) } else { r };
        }
    }
    d
}

/// The accumulator fragment of m16n8k* (ISA "Matrix Fragments for mma.m16n8k16 with
/// floating point type", C/D): groupID = lane>>2, threadID_in_group = lane%4;
/// c_i: row = groupID (i < 2) or groupID+8 (i ≥ 2), col = threadID_in_group·2 + (i&1).
fn cd_pos(lane: usize, i: usize) -> (usize, usize) {
    let (g, t) = (lane >> 2, lane % 4);
    (g + 8 * (i / 2), 2 * t + (i & 1))
}
fn gather_c(c: &[[f32; 4]; 32]) -> [[f32; 8]; 16] {
    let mut m = [[0f32; 8]; 16];
    for (l, regs) in c.iter().enumerate() {
        for (i, &v) in regs.iter().enumerate() {
            let (r, col) = cd_pos(l, i);
            m[r][col] = v;
        }
    }
    m
}
fn scatter_d(d: &[[f32; 8]; 16]) -> [[f32; 4]; 32] {
    let mut out = [[0f32; 4]; 32];
    for (l, regs) in out.iter_mut().enumerate() {
        for (i, v) in regs.iter_mut().enumerate() {
            let (r, col) = cd_pos(l, i);
            *v = d[r][col];
        }
    }
    out
}

fn bf16(h: u32) -> f32 {
    f32::from_bits((h & 0xffff) << 16)
}

/// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: per lane a (4 regs of bf16 pairs),
/// b (2 regs), c (4 floats); returns d (4 floats). Accumulation: see `mma_f64`.
///
/// Fragments (ISA "Matrix Fragments for mma.m16n8k16 with floating point type"),
/// g = lane>>2, t = lane%4, element a_i is half i&1 (low first) of register i/2:
/// A (16×16): row = g for a0,a1,a4,a5, g+8 for a2,a3,a6,a7; col = 2t + (i&1), +8 for i ≥ 4.
/// B (16×8, k×n): b_i row (k) = 2t + (i&1), +8 for i ≥ 2; col (n) = g.
pub fn mma_m16n8k16_bf16(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &[[f32; 4]; 32]) -> [[f32; 4]; 32] {
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    for l in 0..32 {
        let (g, t) = (l >> 2, l % 4);
        for i in 0..8 {
            let v = bf16(a[l][i / 2] >> (16 * (i & 1)));
            let row = if i % 4 < 2 { g } else { g + 8 };
            let col = 2 * t + (i & 1) + if i >= 4 { 8 } else { 0 };
            am[row][col] = v;
        }
        for i in 0..4 {
            let v = bf16(b[l][i / 2] >> (16 * (i & 1)));
            let k = 2 * t + (i & 1) + if i >= 2 { 8 } else { 0 };
            bm[k][g] = v;
        }
    }
    scatter_d(&mma_f64(&am, &bm, &gather_c(c)))
}

/// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: per lane a (4 tf32 regs), b (2), c (4).
/// A tf32 register's low 13 bits are ignored (the tensor core reads only the tf32 bits).
/// Accumulation: see `mma_f64`.
///
/// Fragments (ISA "Matrix Fragments for mma.m16n8k8" with .tf32), g = lane>>2,
/// t = lane%4: A (16×8): a_i row = g for a0,a2, g+8 for a1,a3; col = t for a0,a1, t+4 for a2,a3.
/// B (8×8, k×n): b_i row (k) = t for b0, t+4 for b1; col (n) = g.
pub fn mma_m16n8k8_tf32(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &[[f32; 4]; 32]) -> [[f32; 4]; 32] {
    let tf = |x: u32| f32::from_bits(x & 0xffff_e000);
    let mut am = [[0f32; 8]; 16];
    let mut bm = [[0f32; 8]; 8];
    for l in 0..32 {
        let (g, t) = (l >> 2, l % 4);
        for i in 0..4 {
            am[g + 8 * (i & 1)][t + 4 * (i / 2)] = tf(a[l][i]);
        }
        for i in 0..2 {
            bm[t + 4 * i][g] = tf(b[l][i]);
        }
    }
    scatter_d(&mma_f64(&am, &bm, &gather_c(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shfl_xor_full_warp() {
        let a: [u32; 32] = std::array::from_fn(|i| i as u32 * 10);
        let (d, p) = shfl(ShflMode::Bfly, &a, &[1; 32], &[0x1f; 32]);
        for l in 0..32 {
            assert_eq!(d[l], ((l ^ 1) * 10) as u32);
            assert!(p[l]);
        }
        let (d, p) = shfl(ShflMode::Down, &a, &[4; 32], &[0x1f; 32]);
        assert_eq!(d[27], 310);
        assert_eq!((d[28], p[28]), (280, false));
        let (d, p) = shfl(ShflMode::Up, &a, &[4; 32], &[0; 32]);
        assert_eq!((d[3], p[3]), (30, false));
        assert_eq!((d[4], p[4]), (0, true));
    }

    #[test]
    fn ldmatrix_identity() {
        // Row address = 16·(8·matrix + row); element k of a row = (matrix, row, k) coded.
        let addr: [u32; 32] = std::array::from_fn(|l| 16 * l as u32);
        let rd = |ad: u32| -> Result<[u8; 16], ()> {
            let r = ad / 16;
            let mut b = [0u8; 16];
            for k in 0..8 {
                b[2 * k..2 * k + 2].copy_from_slice(&((r * 8 + k as u32) as u16).to_le_bytes());
            }
            Ok(b)
        };
        let o = ldmatrix_x4(&addr, false, rd).unwrap();
        assert_eq!(o[5][2], (16 * 8 + 8 + 2) as u32 | (16 * 8 + 8 + 3) << 16);
        let o = ldmatrix_x4(&addr, true, rd).unwrap();
        // Lane 5: column 1, rows 2 and 3 of matrix 2.
        assert_eq!(o[5][2], (16 * 8 + 2 * 8 + 1) as u32 | (16 * 8 + 3 * 8 + 1) << 16);
    }
}
