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

/// A comparison of setp/set (ISA “Comparison and Selection Instructions”, table "Floating-Point
/// Comparison Operators"): ordered ones are false when either operand is NaN, the `u` ones true.
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

// ---------------------------------------------------------------------------------------------
// The exact core. A finite value is (neg, mant, exp) = ±mant·2^exp with mant an integer; the
// operations build the exact result (or an exact truncation plus a sticky bit that stands for a
// nonzero remainder below its last bit) and `round_pack` rounds it once into the target format
// with the requested mode. This gives every rounding mode, overflow, subnormal and signed-zero
// case from one place, and f32/f64/bf16/tf32 results from the same code.
// ---------------------------------------------------------------------------------------------

/// An IEEE binary format: precision (with the hidden bit), exponent of the least normal, largest
/// exponent, exponent-field width.
#[derive(Clone, Copy)]
struct Fmt {
    prec: u32,
    emin: i32,
    emax: i32,
    ebits: u32,
}
const F32: Fmt = Fmt { prec: 24, emin: -126, emax: 127, ebits: 8 };
const F64: Fmt = Fmt { prec: 53, emin: -1022, emax: 1023, ebits: 11 };
const BF16: Fmt = Fmt { prec: 8, emin: -126, emax: 127, ebits: 8 };
/// tf32: f32's exponent, 10 fraction bits; packed here as a 19-bit pattern (shifted by 13 later).
const TF32: Fmt = Fmt { prec: 11, emin: -126, emax: 127, ebits: 8 };

/// The canonical NaN the GPU produces for f32 arithmetic (CUDA's CUDART_NAN_F, 0x7fffffff).
pub const NAN_F32: u32 = 0x7fff_ffff;
/// The NaN this emulator produces for f64 arithmetic on NaN operands or invalid operations:
/// all-ones payload, like the f32 one (a GPU run checks it).
pub const NAN_F64: u64 = 0x7fff_ffff_ffff_ffff;

fn cnan32() -> f32 {
    f32::from_bits(NAN_F32)
}
fn cnan64() -> f64 {
    f64::from_bits(NAN_F64)
}

#[derive(Clone, Copy, Debug)]
enum Val {
    Nan,
    Inf(bool),
    /// ±mant·2^exp (mant may be 0: a signed zero).
    Fin(bool, u128, i32),
}

fn unpack(bits: u64, f: Fmt) -> Val {
    let fbits = f.prec - 1;
    let neg = (bits >> (f.ebits + fbits)) & 1 == 1;
    let e = ((bits >> fbits) & ((1u64 << f.ebits) - 1)) as i32;
    let frac = (bits & ((1u64 << fbits) - 1)) as u128;
    let bias = f.emax;
    if e == (1 << f.ebits) - 1 {
        if frac == 0 { Val::Inf(neg) } else { Val::Nan }
    } else if e == 0 {
        Val::Fin(neg, frac, f.emin - fbits as i32)
    } else {
        Val::Fin(neg, frac | (1u128 << fbits), e - bias - fbits as i32)
    }
}
fn un32(a: f32) -> Val {
    unpack(a.to_bits() as u64, F32)
}
fn un64(a: f64) -> Val {
    unpack(a.to_bits(), F64)
}

fn bitlen(m: u128) -> i32 {
    128 - m.leading_zeros() as i32
}

fn pack_inf(neg: bool, f: Fmt) -> u64 {
    ((neg as u64) << (f.ebits + f.prec - 1)) | (((1u64 << f.ebits) - 1) << (f.prec - 1))
}
fn pack_max(neg: bool, f: Fmt) -> u64 {
    pack_inf(neg, f) - 1
}

/// Rounds ±(mant + sticky·ε)·2^exp (0 < ε < 1) to format `f` in mode `r`; returns the bit pattern.
fn round_pack(neg: bool, mant: u128, exp: i32, sticky: bool, r: Round, f: Fmt) -> u64 {
    let p = f.prec as i32;
    let sign = (neg as u64) << (f.ebits + f.prec - 1);
    // Exponent of the last bit the result can keep (its quantum).
    let qmin = f.emin - (p - 1);
    let q = if mant == 0 { qmin } else { (exp + bitlen(mant) - p).max(qmin) };
    let shift = q - exp;
    let (mut m, half, below) = if mant == 0 {
        (0u128, false, sticky)
    } else if shift <= 0 {
        // Exact in the target's precision (shift ≥ −(p−1)·2 keeps this in range).
        (mant << (-shift) as u32, false, sticky)
    } else if shift > 128 {
        (0u128, false, mant != 0 || sticky)
    } else {
        let m = if shift == 128 { 0 } else { mant >> shift };
        let rem = if shift == 128 { mant } else { mant & ((1u128 << shift) - 1) };
        let h = 1u128 << (shift - 1);
        (m, rem >= h, (rem & (h - 1)) != 0 || sticky)
    };
    let inexact = half || below;
    let up = match r {
        Round::Rn => half && (below || m & 1 == 1),
        Round::Rna => half,
        Round::Rz => false,
        Round::Rm => neg && inexact,
        Round::Rp => !neg && inexact,
    };
    let mut q = q;
    if up {
        m += 1;
        if m == 1u128 << p {
            m >>= 1;
            q += 1;
        }
    }
    let hidden = 1u128 << (p - 1);
    if m >= hidden && q + p - 1 > f.emax {
        // Overflow: the directed modes stop at the largest finite value on their side.
        let to_inf = match r {
            Round::Rn | Round::Rna => true,
            Round::Rz => false,
            Round::Rm => neg,
            Round::Rp => !neg,
        };
        return if to_inf { pack_inf(neg, f) } else { pack_max(neg, f) };
    }
    let biased = if m >= hidden { (q + p - 1 + f.emax) as u64 } else { 0 };
    sign | (biased << (f.prec - 1)) | (m & (hidden - 1)) as u64
}

/// Exact sum of two finite values: (neg, mant, exp, sticky). Mantissas must be < 2^120.
/// An exact zero comes back with mant 0 (the caller picks its sign).
fn add_exact(n1: bool, m1: u128, e1: i32, n2: bool, m2: u128, e2: i32) -> (bool, u128, i32, bool) {
    if m1 == 0 {
        return (n2, m2, e2, false);
    }
    if m2 == 0 {
        return (n1, m1, e1, false);
    }
    // X: the operand with the higher leading bit, normalised to a 125-bit mantissa.
    let (nx, mx, ex, ny, my, ey) =
        if e1 + bitlen(m1) >= e2 + bitlen(m2) { (n1, m1, e1, n2, m2, e2) } else { (n2, m2, e2, n1, m1, e1) };
    let sx = 125 - bitlen(mx);
    let (mx, ex) = (mx << sx, ex - sx);
    let d = ey - ex;
    let (my, lost) = if d >= 0 {
        (my << d, false)
    } else if -d >= 128 {
        (0, true)
    } else {
        let s = -d;
        (my >> s, my & ((1u128 << s) - 1) != 0)
    };
    if nx == ny {
        (nx, mx + my, ex, lost)
    } else if lost {
        // X − (Y' + f), 0 < f < 1 ulp: (X − Y' − 1) plus a remainder in (0, 1).
        (nx, mx - my - 1, ex, true)
    } else if mx >= my {
        (nx, mx - my, ex, false)
    } else {
        (ny, my - mx, ex, false)
    }
}

/// a·b + c exactly, rounded once (the shared body of add, mul and fma; `c = None` for mul).
fn fma_core(a: Val, b: Val, c: Option<Val>, r: Round, f: Fmt) -> Option<u64> {
    use Val::*;
    let (pn, pm, pe) = match (a, b) {
        (Nan, _) | (_, Nan) => return None,
        (Inf(_), Fin(_, 0, _)) | (Fin(_, 0, _), Inf(_)) => return None,
        (Inf(x), Inf(y)) | (Inf(x), Fin(y, _, _)) | (Fin(x, _, _), Inf(y)) => {
            return match c {
                Some(Nan) => None,
                Some(Inf(z)) if z != (x ^ y) => None,
                _ => Some(pack_inf(x ^ y, f)),
            };
        }
        (Fin(x, ma, ea), Fin(y, mb, eb)) => (x ^ y, ma * mb, ea + eb),
    };
    let (cn, cm, ce) = match c {
        None => return Some(round_pack(pn, pm, pe, false, r, f)),
        Some(Nan) => return None,
        Some(Inf(z)) => return Some(pack_inf(z, f)),
        Some(Fin(z, m, e)) => (z, m, e),
    };
    let (n, m, e, st) = add_exact(pn, pm, pe, cn, cm, ce);
    if m == 0 && !st {
        // Exact zero: IEEE 754 §6.3 — same-signed addends keep their sign, else +0 (−0 under .rm).
        let neg = if pn == cn { pn } else { r == Round::Rm };
        return Some(round_pack(neg, 0, 0, false, r, f));
    }
    Some(round_pack(n, m, e, st, r, f))
}

/// +1 exactly: add is fma(a, 1, b) in the core (a·1 is exact, so one rounding).
const ONE: Val = Val::Fin(false, 1, 0);

/// Normalises a nonzero mantissa to exactly `bits` bits (exact: only shifts left or drops zeros).
fn norm_to(m: u128, e: i32, bits: i32) -> (u128, i32) {
    let s = bits - bitlen(m);
    if s >= 0 { (m << s, e - s) } else { (m >> -s, e - s) }
}

fn div_core(a: Val, b: Val, r: Round, f: Fmt) -> Option<u64> {
    use Val::*;
    match (a, b) {
        (Nan, _) | (_, Nan) | (Inf(_), Inf(_)) | (Fin(_, 0, _), Fin(_, 0, _)) => None,
        (Inf(x), Fin(y, _, _)) => Some(pack_inf(x ^ y, f)),
        (Fin(x, _, _), Inf(y)) => Some(round_pack(x ^ y, 0, 0, false, r, f)),
        (Fin(x, 0, _), Fin(y, _, _)) => Some(round_pack(x ^ y, 0, 0, false, r, f)),
        (Fin(x, _, _), Fin(y, 0, _)) => Some(pack_inf(x ^ y, f)),
        (Fin(x, ma, ea), Fin(y, mb, eb)) => {
            // 53-bit operands; the quotient of (ma·2^73)/mb has ≥ 73 bits: enough for 53 + guard.
            let (ma, ea) = norm_to(ma, ea, 53);
            let (mb, eb) = norm_to(mb, eb, 53);
            let num = ma << 73;
            let qt = num / mb;
            let rem = num % mb;
            Some(round_pack(x ^ y, qt, ea - 73 - eb, rem != 0, r, f))
        }
    }
}

fn isqrt(n: u128) -> u128 {
    if n == 0 {
        return 0;
    }
    let mut x = (n as f64).sqrt() as u128;
    if x == 0 {
        x = 1;
    }
    x = (x + n / x) / 2;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

fn sqrt_core(a: Val, r: Round, f: Fmt) -> Option<u64> {
    use Val::*;
    match a {
        Nan | Inf(true) => None,
        Inf(false) => Some(pack_inf(false, f)),
        Fin(n, 0, _) => Some(round_pack(n, 0, 0, false, r, f)),
        Fin(true, _, _) => None,
        Fin(false, m, e) => {
            let (mut m, mut e) = norm_to(m, e, 53);
            if e & 1 != 0 {
                m <<= 1;
                e -= 1;
            }
            // Radicand of ≥ 125 bits: the root has ≥ 62 bits.
            let m = m << 72;
            let e = e - 72;
            let s = isqrt(m);
            Some(round_pack(false, s, e / 2, s * s != m, r, f))
        }
    }
}

fn out32(x: Option<u64>) -> f32 {
    match x {
        Some(b) => f32::from_bits(b as u32),
        None => cnan32(),
    }
}
fn out64(x: Option<u64>) -> f64 {
    match x {
        Some(b) => f64::from_bits(b),
        None => cnan64(),
    }
}
fn canon32(x: f32) -> f32 {
    if x.is_nan() { cnan32() } else { x }
}
fn canon64(x: f64) -> f64 {
    if x.is_nan() { cnan64() } else { x }
}

// ---------------------------------------------------------------------------------------------
// The contract. .rn uses the host's IEEE operations (correctly rounded, subnormals kept); the
// directed modes go through the exact core. A NaN result is a canonical NaN: the ISA promises no
// NaN payload propagation, and NVIDIA GPUs return 0x7fffffff (NAN_F32) for .f32 arithmetic with a
// NaN result; for .f64 this emulator likewise returns NAN_F64 (a GPU run checks that choice).
// ---------------------------------------------------------------------------------------------

/// add{.rnd}.f32 (ISA “Floating Point Instructions: add”). x + (−x) is +0, −0 under .rm (IEEE 754
/// §6.3).
pub fn add_f32(a: f32, b: f32, r: Round) -> f32 {
    match r {
        Round::Rn => canon32(a + b),
        _ => out32(fma_core(un32(a), ONE, Some(un32(b)), r, F32)),
    }
}
/// mul{.rnd}.f32 (ISA “Floating Point Instructions: mul”): the exact product rounded once.
pub fn mul_f32(a: f32, b: f32, r: Round) -> f32 {
    match r {
        Round::Rn => canon32(a * b),
        _ => out32(fma_core(un32(a), un32(b), None, r, F32)),
    }
}
/// a·b + c with one rounding (fma{.rnd}.f32, ISA “Floating Point Instructions: fma”).
pub fn fma_f32(a: f32, b: f32, c: f32, r: Round) -> f32 {
    match r {
        Round::Rn => canon32(a.mul_add(b, c)),
        _ => out32(fma_core(un32(a), un32(b), Some(un32(c)), r, F32)),
    }
}
/// div.{rn,rz,rm,rp}.f32 (IEEE division, ISA “Floating Point Instructions: div”): exact quotient
/// rounded once.
pub fn div_f32(a: f32, b: f32, r: Round) -> f32 {
    match r {
        Round::Rn => canon32(a / b),
        _ => out32(div_core(un32(a), un32(b), r, F32)),
    }
}
/// sqrt.{rn,..}.f32 (ISA “Floating Point Instructions: sqrt”): sqrt(−0) = −0, negative → NaN.
pub fn sqrt_f32(a: f32, r: Round) -> f32 {
    match r {
        Round::Rn => canon32(a.sqrt()),
        _ => out32(sqrt_core(un32(a), r, F32)),
    }
}
/// rcp.{rn,..}.f32: 1/a correctly rounded (ISA “Floating Point Instructions: rcp”).
pub fn rcp_f32(a: f32, r: Round) -> f32 {
    div_f32(1.0, a, r)
}
pub fn add_f64(a: f64, b: f64, r: Round) -> f64 {
    match r {
        Round::Rn => canon64(a + b),
        _ => out64(fma_core(un64(a), ONE, Some(un64(b)), r, F64)),
    }
}
pub fn mul_f64(a: f64, b: f64, r: Round) -> f64 {
    match r {
        Round::Rn => canon64(a * b),
        _ => out64(fma_core(un64(a), un64(b), None, r, F64)),
    }
}
pub fn fma_f64(a: f64, b: f64, c: f64, r: Round) -> f64 {
    match r {
        Round::Rn => canon64(a.mul_add(b, c)),
        _ => out64(fma_core(un64(a), un64(b), Some(un64(c)), r, F64)),
    }
}
pub fn div_f64(a: f64, b: f64, r: Round) -> f64 {
    match r {
        Round::Rn => canon64(a / b),
        _ => out64(div_core(un64(a), un64(b), r, F64)),
    }
}
pub fn sqrt_f64(a: f64, r: Round) -> f64 {
    match r {
        Round::Rn => canon64(a.sqrt()),
        _ => out64(sqrt_core(un64(a), r, F64)),
    }
}
pub fn rcp_f64(a: f64, r: Round) -> f64 {
    div_f64(1.0, a, r)
}
/// Flush a subnormal to a zero of the same sign (.ftz).
pub fn ftz_f32(a: f32) -> f32 {
    if a.is_subnormal() { f32::from_bits(a.to_bits() & 0x8000_0000) } else { a }
}
/// ex2.approx.ftz.f32 (ISA “Floating Point Instructions: ex2”; the ISA bounds its error at 2 ulp
/// over the full range): the emulator returns 2^a computed in f64 (libm exp2, < 1 f64 ulp) rounded
/// to nearest f32 — in practice the correctly rounded value — with ftz on input and output.
/// ex2(−inf) = +0, ex2(+inf) = +inf, NaN → canonical NaN.
pub fn ex2_approx_f32(a: f32) -> f32 {
    let a = ftz_f32(a);
    if a.is_nan() {
        return cnan32();
    }
    ftz_f32(f64_to_f32((a as f64).exp2(), Round::Rn))
}
/// rcp.approx.ftz.f32 (ISA “Floating Point Instructions: rcp”; max error 1 ulp): the emulator
/// returns 1/a correctly rounded to nearest, with ftz on input (so ±subnormal → ±inf) and output.
pub fn rcp_approx_f32(a: f32) -> f32 {
    ftz_f32(canon32(1.0 / ftz_f32(a)))
}
/// div.full.f32 (ISA “Floating Point Instructions: div”; max error 2 ulp over the full range): the
/// emulator returns a/b correctly rounded to nearest (subnormals kept, as div.full without .ftz).
pub fn div_full_f32(a: f32, b: f32) -> f32 {
    canon32(a / b)
}
/// min.f32 (ISA “Floating Point Instructions: min”): a NaN operand is ignored (the other operand is
/// the result); both NaN → canonical NaN; −0 is less than +0.
pub fn min_f32(a: f32, b: f32) -> f32 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => cnan32(),
        (true, false) => b,
        (false, true) => a,
        _ if a == b => f32::from_bits(a.to_bits() | b.to_bits()),
        _ => {
            if a < b {
                a
            } else {
                b
            }
        }
    }
}
/// max.f32 (ISA “Floating Point Instructions: max”): as min, with +0 greater than −0.
pub fn max_f32(a: f32, b: f32) -> f32 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => cnan32(),
        (true, false) => b,
        (false, true) => a,
        _ if a == b => f32::from_bits(a.to_bits() & b.to_bits()),
        _ => {
            if a > b {
                a
            } else {
                b
            }
        }
    }
}
pub fn min_f64(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => cnan64(),
        (true, false) => b,
        (false, true) => a,
        _ if a == b => f64::from_bits(a.to_bits() | b.to_bits()),
        _ => {
            if a < b {
                a
            } else {
                b
            }
        }
    }
}
pub fn max_f64(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => cnan64(),
        (true, false) => b,
        (false, true) => a,
        _ if a == b => f64::from_bits(a.to_bits() & b.to_bits()),
        _ => {
            if a > b {
                a
            } else {
                b
            }
        }
    }
}
/// setp/set comparisons (ISA “Comparison and Selection Instructions”, table "Floating-Point
/// Comparison Operators"): the ordered ones are false if either operand is NaN, the `u` ones true;
/// num = neither NaN, nan = either. −0 == +0.
pub fn cmp_f32(c: Cmp, a: f32, b: f32) -> bool {
    cmp_f64(c, a as f64, b as f64)
}
pub fn cmp_f64(c: Cmp, a: f64, b: f64) -> bool {
    let un = a.is_nan() || b.is_nan();
    match c {
        Cmp::Eq => !un && a == b,
        Cmp::Ne => !un && a != b,
        Cmp::Lt => !un && a < b,
        Cmp::Le => !un && a <= b,
        Cmp::Gt => !un && a > b,
        Cmp::Ge => !un && a >= b,
        Cmp::Equ => un || a == b,
        Cmp::Neu => un || a != b,
        Cmp::Ltu => un || a < b,
        Cmp::Leu => un || a <= b,
        Cmp::Gtu => un || a > b,
        Cmp::Geu => un || a >= b,
        Cmp::Num => !un,
        Cmp::Nan => un,
    }
}
/// The bf16 NaN this emulator produces: 0x7fff (CUDA's canonical bf16 NaN, what __float2bfloat16
/// returns for any NaN input).
pub const NAN_BF16: u16 = 0x7fff;
/// cvt.{rn,rz,rm,rp,rna}.bf16.f32 (ISA “Data Movement and Conversion Instructions: cvt”): the bf16
/// bit pattern. .rn is ties-to-even; bf16 keeps f32's exponent range, so subnormals round to bf16
/// subnormals (no ftz); overflow goes to ±inf under .rn (to the largest finite value where the
/// directed mode says); inf stays inf; NaN → NAN_BF16.
pub fn f32_to_bf16(a: f32, r: Round) -> u16 {
    match un32(a) {
        Val::Nan => NAN_BF16,
        Val::Inf(n) => pack_inf(n, BF16) as u16,
        Val::Fin(n, m, e) => round_pack(n, m, e, false, r, BF16) as u16,
    }
}
/// The tf32 NaN this emulator produces: 0x7fffe000 (f32's canonical NaN with the 13 low bits
/// cleared, as a tf32 value must have them).
pub const NAN_TF32: u32 = 0x7fff_e000;
/// cvt.rna.tf32.f32 (ISA “Data Movement and Conversion Instructions: cvt”; also .rn/.rz for newer
/// PTX): the tf32 value as an f32 bit pattern with the low 13 bits zero. .rna rounds ties away from
/// zero. A finite value that rounds past the largest tf32 (0x7f7fe000) becomes ±inf (0x7f800000)
/// under .rn/.rna; inf stays inf; NaN → NAN_TF32; subnormals round to tf32 subnormals.
pub fn f32_to_tf32(a: f32, r: Round) -> u32 {
    match un32(a) {
        Val::Nan => NAN_TF32,
        Val::Inf(n) => (pack_inf(n, TF32) as u32) << 13,
        Val::Fin(n, m, e) => (round_pack(n, m, e, false, r, TF32) as u32) << 13,
    }
}
/// cvt.{rn,rz,rm,rp}.f32.f64 (ISA “Data Movement and Conversion Instructions: cvt”): rounded once,
/// subnormals kept, NaN → canonical f32 NaN.
pub fn f64_to_f32(a: f64, r: Round) -> f32 {
    match un64(a) {
        Val::Nan => cnan32(),
        Val::Inf(n) => f32::from_bits(pack_inf(n, F32) as u32),
        Val::Fin(n, m, e) => f32::from_bits(round_pack(n, m, e, false, r, F32) as u32),
    }
}
fn int_val(v: u64, signed: bool) -> (bool, u128) {
    if signed && (v as i64) < 0 { (true, (v as i64).unsigned_abs() as u128) } else { (false, v as u128) }
}
/// cvt.{r}.f32.{s,u}{32,64}: `signed` says how to read `v` (sign-extended to i64 / zero-extended).
pub fn int_to_f32(v: u64, signed: bool, r: Round) -> f32 {
    let (n, m) = int_val(v, signed);
    f32::from_bits(round_pack(n, m, 0, false, r, F32) as u32)
}
pub fn int_to_f64(v: u64, signed: bool, r: Round) -> f64 {
    let (n, m) = int_val(v, signed);
    f64::from_bits(round_pack(n, m, 0, false, r, F64))
}
/// cvt.{rni,rzi,rmi,rpi}.{s,u}{bits}.f64 (f32 widened first): saturates, NaN → 0 (ISA “Data
/// Movement and Conversion Instructions: cvt”). Returns the bits zero-extended to 64. (`Rna` rounds
/// half away from zero.)
pub fn float_to_int(v: f64, signed: bool, bits: u32, r: Round) -> u64 {
    if v.is_nan() {
        return 0;
    }
    let x = match r {
        Round::Rn => v.round_ties_even(),
        Round::Rna => v.round(),
        Round::Rz => v.trunc(),
        Round::Rm => v.floor(),
        Round::Rp => v.ceil(),
    };
    let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
    if signed {
        let lim = 2f64.powi(bits as i32 - 1);
        let i = if x >= lim {
            (lim as i128 - 1) as i64
        } else if x < -lim {
            -(lim as i128) as i64
        } else {
            x as i64
        };
        i as u64 & mask
    } else {
        let lim = 2f64.powi(bits as i32);
        if x <= 0.0 {
            0
        } else if x >= lim {
            mask
        } else {
            x as u64
        }
    }
}
/// cvt.{rni,rzi,rmi,rpi}.f32.f32 (round to integral value in float; IEEE roundToIntegral, the
/// sign of zero kept: cvt.rpi of −0.5 is −0). NaN → canonical NaN.
pub fn round_int_f32(a: f32, r: Round) -> f32 {
    canon32(match r {
        Round::Rn => a.round_ties_even(),
        Round::Rna => a.round(),
        Round::Rz => a.trunc(),
        Round::Rm => a.floor(),
        Round::Rp => a.ceil(),
    })
}
/// .sat on f32 (ISA “Floating Point Instructions” (.sat): clamp to [0.0, 1.0], NaN → +0.0). −0
/// gives +0 (taken as max(+0, x) with −0 < +0; a GPU run checks it).
pub fn sat_f32(a: f32) -> f32 {
    if a.is_nan() || a <= 0.0 {
        0.0
    } else if a > 1.0 {
        1.0
    } else {
        a
    }
}
/// copysign.f32 d, a, b: b's magnitude with a's sign (ISA “Floating Point Instructions: copysign”:
/// "copy sign of a into b"; note the operand order). Bitwise: NaNs are passed through unchanged.
pub fn copysign_f32(a: f32, b: f32) -> f32 {
    f32::from_bits((b.to_bits() & 0x7fff_ffff) | (a.to_bits() & 0x8000_0000))
}
pub fn copysign_f64(a: f64, b: f64) -> f64 {
    f64::from_bits((b.to_bits() & !(1u64 << 63)) | (a.to_bits() & (1u64 << 63)))
}
/// prmt.b32 (default mode; ISA “Data Movement and Conversion Instructions: prmt”): bytes 0-3 of {b,
/// a} are a's, 4-7 b's. Nibble i of c (i < 4) selects result byte i: bits 0-2 pick a source byte;
/// bit 3 set replicates that byte's sign bit over the result byte.
pub fn prmt(a: u32, b: u32, c: u32) -> u32 {
    let src = ((b as u64) << 32) | a as u64;
    let mut d = 0u32;
    for i in 0..4 {
        let sel = (c >> (4 * i)) & 0xf;
        let byte = (src >> (8 * (sel & 7))) as u8;
        let out = if sel & 8 != 0 { if byte & 0x80 != 0 { 0xff } else { 0 } } else { byte };
        d |= (out as u32) << (8 * i);
    }
    d
}
/// bfi.b32 d, a, b, pos, len: insert the low `len` bits of a into b at `pos` (ISA “Integer
/// Arithmetic Instructions: bfi”: pos and len are taken from their low 8 bits; bits past the top
/// are dropped, len 0 or pos ≥ 32 gives b unchanged).
pub fn bfi32(a: u32, b: u32, pos: u32, len: u32) -> u32 {
    bfi_w(a as u64, b as u64, pos, len, 32) as u32
}
fn bfi_w(a: u64, b: u64, pos: u32, len: u32, w: u32) -> u64 {
    let (pos, len) = (pos & 0xff, len & 0xff);
    if pos >= w || len == 0 {
        return b;
    }
    let n = len.min(w - pos);
    let m = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 } << pos;
    (b & !m) | ((a << pos) & m)
}
pub fn bfi64(a: u64, b: u64, pos: u32, len: u32) -> u64 {
    bfi_w(a, b, pos, len, 64)
}
fn sext(a: u64, bits: u32) -> i128 {
    if bits >= 64 { a as i64 as i128 } else { ((a << (64 - bits)) as i64 >> (64 - bits)) as i128 }
}
fn mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}
/// Integer division (div.{u,s}{16,32,64}, ISA “Integer Arithmetic Instructions: div”) of
/// `bits`-wide values (zero-extended in u64). By zero the ISA leaves the result unspecified; this
/// returns all ones (u: 0xff..f, s: −1), what the GPU's division sequence gives for unsigned and
/// the common signed case. s: MIN / −1 wraps to MIN.
pub fn div_int(a: u64, b: u64, bits: u32, signed: bool) -> u64 {
    let m = mask(bits);
    let (a, b) = (a & m, b & m);
    if b == 0 {
        return m;
    }
    if signed { (sext(a, bits) / sext(b, bits)) as u64 & m } else { a / b }
}
/// rem.{u,s}: sign of the dividend (C semantics). By zero: a (unspecified in the ISA; the GPU's
/// sequence gives the dividend). s: MIN rem −1 = 0.
pub fn rem_int(a: u64, b: u64, bits: u32, signed: bool) -> u64 {
    let m = mask(bits);
    let (a, b) = (a & m, b & m);
    if b == 0 {
        return a;
    }
    if signed { (sext(a, bits) % sext(b, bits)) as u64 & m } else { a % b }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// f32 patterns biased toward interesting exponents (tiny, huge, near each other).
        fn f32(&mut self) -> f32 {
            let x = self.next();
            let bits = x as u32;
            match (x >> 40) % 6 {
                0 => f32::from_bits(bits & 0x807f_ffff),                 // subnormal/zero
                1 => f32::from_bits((bits & 0x80ff_ffff) | 0x7e00_0000), // huge
                2 => f32::from_bits((bits & 0x81ff_ffff) | 0x3f00_0000), // near 1
                3 => f32::from_bits((bits & 0x807f_0000) | 0x3f80_0000), // short mantissa
                _ => f32::from_bits(bits),
            }
        }
        fn f64(&mut self) -> f64 {
            let x = self.next();
            match (self.next() >> 40) % 6 {
                0 => f64::from_bits(x & 0x800f_ffff_ffff_ffff),
                1 => f64::from_bits((x & 0x801f_ffff_ffff_ffff) | 0x7fc0_0000_0000_0000),
                2 => f64::from_bits((x & 0x803f_ffff_ffff_ffff) | 0x3fe0_0000_0000_0000),
                3 => f64::from_bits((x & 0x800f_0000_0000_0000) | 0x3ff0_0000_0000_0000),
                _ => f64::from_bits(x),
            }
        }
    }
    fn same32(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }
    fn same64(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// The exact core under .rn must agree bit for bit with the host's IEEE operations.
    #[test]
    fn core_rn_matches_host() {
        let mut g = Rng(0x1234_5678_9abc_def1);
        for _ in 0..300_000 {
            let (a, b, c) = (g.f32(), g.f32(), g.f32());
            let r = Round::Rn;
            assert!(same32(out32(fma_core(un32(a), ONE, Some(un32(b)), r, F32)), a + b), "{a:e}+{b:e}");
            assert!(same32(out32(fma_core(un32(a), un32(b), None, r, F32)), a * b), "{a:e}*{b:e}");
            assert!(same32(out32(fma_core(un32(a), un32(b), Some(un32(c)), r, F32)), a.mul_add(b, c)));
            assert!(same32(out32(div_core(un32(a), un32(b), r, F32)), a / b), "{a:e}/{b:e}");
            assert!(same32(out32(sqrt_core(un32(a), r, F32)), a.sqrt()), "sqrt {a:e}");
            let (x, y, z) = (g.f64(), g.f64(), g.f64());
            assert!(same64(out64(fma_core(un64(x), ONE, Some(un64(y)), r, F64)), x + y), "{x:e}+{y:e}");
            assert!(same64(out64(fma_core(un64(x), un64(y), None, r, F64)), x * y), "{x:e}*{y:e}");
            assert!(same64(out64(fma_core(un64(x), un64(y), Some(un64(z)), r, F64)), x.mul_add(y, z)));
            assert!(same64(out64(div_core(un64(x), un64(y), r, F64)), x / y), "{x:e}/{y:e}");
            assert!(same64(out64(sqrt_core(un64(x), r, F64)), x.sqrt()), "sqrt {x:e}");
            assert!(same32(f64_to_f32(x, r), x as f32), "{x:e}");
            let v = g.next();
            assert_eq!(int_to_f32(v, true, r), v as i64 as f32);
            assert_eq!(int_to_f64(v, false, r), v as f64);
        }
    }

    /// Directed results bracket the .rn one: rm ≤ rn ≤ rp, rz is rm or rp by sign, and rm = rp
    /// exactly when the host says the result is exact (checked via f64 for f32 products).
    #[test]
    fn directed_bracket() {
        let mut g = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let (a, b) = (g.f32(), g.f32());
            let exact = a as f64 * b as f64;
            let (m, p, z) = (mul_f32(a, b, Round::Rm), mul_f32(a, b, Round::Rp), mul_f32(a, b, Round::Rz));
            if exact.is_nan() {
                continue;
            }
            assert!((m as f64) <= exact && exact <= p as f64, "{a:e}*{b:e}");
            if m as f64 == exact {
                assert_eq!(m, p);
            } else {
                assert_eq!(m.next_up(), p, "{a:e}*{b:e} m {m:e} p {p:e}");
            }
            assert_eq!(z, if exact > 0.0 { m } else { p });
        }
    }

    #[test]
    fn signed_zero_and_overflow() {
        assert_eq!(add_f32(1.0, -1.0, Round::Rm).to_bits(), 0x8000_0000);
        assert_eq!(add_f32(1.0, -1.0, Round::Rz).to_bits(), 0);
        assert_eq!(add_f32(-0.0, -0.0, Round::Rp).to_bits(), 0x8000_0000);
        assert_eq!(add_f32(f32::MAX, f32::MAX, Round::Rz), f32::MAX);
        assert_eq!(add_f32(-f32::MAX, -f32::MAX, Round::Rp), -f32::MAX);
        assert_eq!(add_f32(-f32::MAX, -f32::MAX, Round::Rm), f32::NEG_INFINITY);
        assert_eq!(mul_f64(1e300, 1e300, Round::Rz), f64::MAX);
        assert_eq!(add_f32(f32::NAN, 1.0, Round::Rz).to_bits(), NAN_F32);
        assert_eq!(fma_f32(f32::INFINITY, 0.0, 1.0, Round::Rm).to_bits(), NAN_F32);
    }

    #[test]
    fn ints() {
        assert_eq!(bfi32(0xff, 0, 28, 8), 0xf000_0000);
        assert_eq!(bfi32(0xff, 5, 32, 8), 5);
        assert_eq!(bfi32(0xff, 0, 0x104, 4), 0xf0);
        assert_eq!(div_int(0x8000_0000, 0xffff_ffff, 32, true), 0x8000_0000);
        assert_eq!(rem_int(0x8000_0000, 0xffff_ffff, 32, true), 0);
        assert_eq!(float_to_int(3e9, true, 32, Round::Rz), 0x7fff_ffff);
        assert_eq!(float_to_int(-3e9, true, 32, Round::Rz), 0x8000_0000);
        assert_eq!(float_to_int(-1.0, false, 32, Round::Rz), 0);
        assert_eq!(float_to_int(1e30, false, 64, Round::Rz), u64::MAX);
        assert_eq!(float_to_int(1e30, true, 64, Round::Rz), i64::MAX as u64);
        assert_eq!(float_to_int(-2.5, true, 32, Round::Rn), (-2i32) as u32 as u64);
    }
}
