//! The data movement of the warp collectives, for the 32 lanes of one warp together: shfl, vote,
//! ldmatrix and the mma.sync fragment layouts (PTX ISA 9.0 §9.7.8 shfl, §9.7.13.4 mma fragments,
//! §9.7.14.5.15 ldmatrix). Pure functions over per-lane arrays; `exec` gathers the lanes' operands
//! and scatters the results.
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
    let _ = (mode, a, b, c);
    unimplemented!("warp::shfl")
}

/// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: lanes 8i..8i+7 give the row addresses of
/// matrix i (`addr[l]`, shared-window offsets); `read_row(addr)` reads the 16 bytes of one row.
/// Returns the 4 registers each lane receives (register j from matrix j).
pub fn ldmatrix_x4<E>(
    addr: &[u32; 32],
    trans: bool,
    mut read_row: impl FnMut(u32) -> std::result::Result<[u8; 16], E>,
) -> std::result::Result<[[u32; 4]; 32], E> {
    let _ = (addr, trans, &mut read_row);
    unimplemented!("warp::ldmatrix_x4")
}

/// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: per lane a (4 regs of bf16 pairs),
/// b (2 regs), c (4 floats); returns d (4 floats). Products are exact; say in the doc how the
/// sum is rounded (the ISA leaves the accumulation order unspecified).
pub fn mma_m16n8k16_bf16(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &[[f32; 4]; 32]) -> [[f32; 4]; 32] {
    let _ = (a, b, c);
    unimplemented!("warp::mma_m16n8k16_bf16")
}

/// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: per lane a (4 tf32 regs), b (2), c (4).
pub fn mma_m16n8k8_tf32(a: &[[u32; 4]; 32], b: &[[u32; 2]; 32], c: &[[f32; 4]; 32]) -> [[f32; 4]; 32] {
    let _ = (a, b, c);
    unimplemented!("warp::mma_m16n8k8_tf32")
}
