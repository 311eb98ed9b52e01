//! IEEE semantics of PTX's scalar instructions as the PTX ISA states them (ISA 9.0, chapter 9.7).
//! Rust cannot set the FPU's rounding mode, so the directed roundings (.rz .rm .rp) are computed
//! exactly (from the round-to-nearest result and its exact error term). Approximate instructions
//! say in their doc which value they produce. Pure functions; `exec` calls them.
//!
//! CONTRACT (helper "arith" fills the bodies; the signatures are used by exec.rs):

/// A rounding modifier. `Rna` (nearest, ties away from zero) exists only for cvt to tf32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Round {
    Rn,
    Rz,
    Rm,
    Rp,
    Rna,
}

/// A comparison of setp/set (ISA 9.7.1 / 9.7.3 "Floating-point comparison operators"):
/// ordered ones are false when either operand is NaN, the `u` ones true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

pub fn add_f32(a: f32, b: f32, r: Round) -> f32 {
    let _ = (a, b, r);
    unimplemented!("arith::add_f32")
}
pub fn mul_f32(a: f32, b: f32, r: Round) -> f32 {
    let _ = (a, b, r);
    unimplemented!("arith::mul_f32")
}
/// a·b + c with one rounding.
pub fn fma_f32(a: f32, b: f32, c: f32, r: Round) -> f32 {
    let _ = (a, b, c, r);
    unimplemented!("arith::fma_f32")
}
/// div.{rn,rz,rm,rp}.f32 (IEEE division).
pub fn div_f32(a: f32, b: f32, r: Round) -> f32 {
    let _ = (a, b, r);
    unimplemented!("arith::div_f32")
}
pub fn sqrt_f32(a: f32, r: Round) -> f32 {
    let _ = (a, r);
    unimplemented!("arith::sqrt_f32")
}
/// rcp.{rn,..}.f32: 1/a correctly rounded.
pub fn rcp_f32(a: f32, r: Round) -> f32 {
    let _ = (a, r);
    unimplemented!("arith::rcp_f32")
}
pub fn add_f64(a: f64, b: f64, r: Round) -> f64 {
    let _ = (a, b, r);
    unimplemented!("arith::add_f64")
}
pub fn mul_f64(a: f64, b: f64, r: Round) -> f64 {
    let _ = (a, b, r);
    unimplemented!("arith::mul_f64")
}
pub fn fma_f64(a: f64, b: f64, c: f64, r: Round) -> f64 {
    let _ = (a, b, c, r);
    unimplemented!("arith::fma_f64")
}
pub fn div_f64(a: f64, b: f64, r: Round) -> f64 {
    let _ = (a, b, r);
    unimplemented!("arith::div_f64")
}
pub fn sqrt_f64(a: f64, r: Round) -> f64 {
    let _ = (a, r);
    unimplemented!("arith::sqrt_f64")
}
pub fn rcp_f64(a: f64, r: Round) -> f64 {
    let _ = (a, r);
    unimplemented!("arith::rcp_f64")
}
/// Flush a subnormal to a zero of the same sign (.ftz).
pub fn ftz_f32(a: f32) -> f32 {
    let _ = a;
    unimplemented!("arith::ftz_f32")
}
/// ex2.approx.ftz.f32: 2^a (say in the doc which value: e.g. correctly rounded from f64).
pub fn ex2_approx_f32(a: f32) -> f32 {
    let _ = a;
    unimplemented!("arith::ex2_approx_f32")
}
/// rcp.approx.ftz.f32.
pub fn rcp_approx_f32(a: f32) -> f32 {
    let _ = a;
    unimplemented!("arith::rcp_approx_f32")
}
/// div.approx / div.full.f32 if present: a/b within the ISA's bound.
pub fn div_full_f32(a: f32, b: f32) -> f32 {
    let _ = (a, b);
    unimplemented!("arith::div_full_f32")
}
/// min.f32 / max.f32: NaN operands are ignored (the other operand); both NaN → canonical NaN.
pub fn min_f32(a: f32, b: f32) -> f32 {
    let _ = (a, b);
    unimplemented!("arith::min_f32")
}
pub fn max_f32(a: f32, b: f32) -> f32 {
    let _ = (a, b);
    unimplemented!("arith::max_f32")
}
pub fn min_f64(a: f64, b: f64) -> f64 {
    let _ = (a, b);
    unimplemented!("arith::min_f64")
}
pub fn max_f64(a: f64, b: f64) -> f64 {
    let _ = (a, b);
    unimplemented!("arith::max_f64")
}
pub fn cmp_f32(c: Cmp, a: f32, b: f32) -> bool {
    let _ = (c, a, b);
    unimplemented!("arith::cmp_f32")
}
pub fn cmp_f64(c: Cmp, a: f64, b: f64) -> bool {
    let _ = (c, a, b);
    unimplemented!("arith::cmp_f64")
}
/// cvt.rn.bf16.f32: the bf16 bit pattern (NaN stays NaN, overflow → ±inf).
pub fn f32_to_bf16(a: f32, r: Round) -> u16 {
    let _ = (a, r);
    unimplemented!("arith::f32_to_bf16")
}
/// cvt.rna.tf32.f32: the tf32 value's 32-bit pattern (low 13 bits zero).
pub fn f32_to_tf32(a: f32, r: Round) -> u32 {
    let _ = (a, r);
    unimplemented!("arith::f32_to_tf32")
}
/// cvt.{rn,rz,rm,rp}.f32.f64.
pub fn f64_to_f32(a: f64, r: Round) -> f32 {
    let _ = (a, r);
    unimplemented!("arith::f64_to_f32")
}
/// cvt.{r}.f32.{s,u}{32,64}: `signed` says how to read `v` (sign-extended to i64 / zero-extended).
pub fn int_to_f32(v: u64, signed: bool, r: Round) -> f32 {
    let _ = (v, signed, r);
    unimplemented!("arith::int_to_f32")
}
pub fn int_to_f64(v: u64, signed: bool, r: Round) -> f64 {
    let _ = (v, signed, r);
    unimplemented!("arith::int_to_f64")
}
/// cvt.{rni,rzi,rmi,rpi}.{s,u}{bits}.f64 (f32 widened first): saturates, NaN → 0 (ISA 9.7.9.21).
/// Returns the bits zero-extended to 64.
pub fn float_to_int(v: f64, signed: bool, bits: u32, r: Round) -> u64 {
    let _ = (v, signed, bits, r);
    unimplemented!("arith::float_to_int")
}
/// cvt.{rni,..}.f32.f32 (round to integral value in float).
pub fn round_int_f32(a: f32, r: Round) -> f32 {
    let _ = (a, r);
    unimplemented!("arith::round_int_f32")
}
/// .sat on f32: clamp to [0, 1], NaN → +0.
pub fn sat_f32(a: f32) -> f32 {
    let _ = a;
    unimplemented!("arith::sat_f32")
}
/// copysign.f32 d, a, b: b's magnitude with a's sign (ISA 9.7.3.3: note the operand order).
pub fn copysign_f32(a: f32, b: f32) -> f32 {
    let _ = (a, b);
    unimplemented!("arith::copysign_f32")
}
pub fn copysign_f64(a: f64, b: f64) -> f64 {
    let _ = (a, b);
    unimplemented!("arith::copysign_f64")
}
/// prmt.b32 (default mode): byte permute of {b, a} under selector c.
pub fn prmt(a: u32, b: u32, c: u32) -> u32 {
    let _ = (a, b, c);
    unimplemented!("arith::prmt")
}
/// bfi.b32 d, a, b, pos, len: insert the low `len` bits of a into b at `pos`.
pub fn bfi32(a: u32, b: u32, pos: u32, len: u32) -> u32 {
    let _ = (a, b, pos, len);
    unimplemented!("arith::bfi32")
}
pub fn bfi64(a: u64, b: u64, pos: u32, len: u32) -> u64 {
    let _ = (a, b, pos, len);
    unimplemented!("arith::bfi64")
}
/// Integer division and remainder of `bits`-wide values (zero-extended in u64), signed or not.
/// By zero: the value the hardware gives (say which in the doc).
pub fn div_int(a: u64, b: u64, bits: u32, signed: bool) -> u64 {
    let _ = (a, b, bits, signed);
    unimplemented!("arith::div_int")
}
pub fn rem_int(a: u64, b: u64, bits: u32, signed: bool) -> u64 {
    let _ = (a, b, bits, signed);
    unimplemented!("arith::rem_int")
}
