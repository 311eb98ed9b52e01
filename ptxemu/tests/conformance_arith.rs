//! Conformance of `ptxemu::arith` with the PTX ISA 9.0 (chapter 9.7). Each test names the section
//! it checks. Expected values are written out by hand (bit patterns) or come from an independent
//! exact reference in this file (dyadic rationals in a 2432-bit fixed-point integer), never from the
//! functions under test.

// Index loops mirror the ISA tables (row/col/lane/register indices) on purpose.
#![allow(clippy::needless_range_loop)]

use ptxemu::arith::*;
use std::cmp::Ordering;

// ------------------------------------------------------------------------------------------------
// Exact reference: a dyadic rational m·2^e as a 704-bit two's-complement integer in units of
// 2^-330 (704 bits), enough for every f32 product, quotient check (v·b) and square (v·v) of this
// file.
// ------------------------------------------------------------------------------------------------

const LIMBS: usize = 38;
const FRAC: i32 = 1200;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Big([u64; LIMBS]);

impl Big {
    /// m·2^e exactly (panics if it does not fit).
    fn dy(m: i128, e: i32) -> Big {
        let mut out = [0u64; LIMBS];
        let mag = m.unsigned_abs();
        let sh = e + FRAC;
        let len = 128 - mag.leading_zeros() as i32;
        assert!(sh >= 0 && sh + len < 64 * LIMBS as i32 - 1, "dyadic out of range: {m}·2^{e}");
        let (w, b) = ((sh / 64) as usize, (sh % 64) as u32);
        let parts = [mag as u64, (mag >> 64) as u64];
        for (k, &p) in parts.iter().enumerate() {
            let lo = p << b;
            let hi = if b == 0 { 0 } else { p >> (64 - b) };
            if w + k < LIMBS {
                out[w + k] |= lo;
            }
            if w + k + 1 < LIMBS {
                out[w + k + 1] |= hi;
            }
        }
        let x = Big(out);
        if m < 0 { x.neg() } else { x }
    }
    fn add(self, o: Big) -> Big {
        let mut out = [0u64; LIMBS];
        let mut carry = 0u64;
        for i in 0..LIMBS {
            let (s1, c1) = self.0[i].overflowing_add(o.0[i]);
            let (s2, c2) = s1.overflowing_add(carry);
            out[i] = s2;
            carry = (c1 as u64) + (c2 as u64);
        }
        Big(out)
    }
    fn neg(self) -> Big {
        let mut inv = [0u64; LIMBS];
        for i in 0..LIMBS {
            inv[i] = !self.0[i];
        }
        let mut one = [0u64; LIMBS];
        one[0] = 1;
        Big(inv).add(Big(one))
    }
    fn sub(self, o: Big) -> Big {
        self.add(o.neg())
    }
    fn sign(self) -> Ordering {
        if self.0[LIMBS - 1] >> 63 == 1 {
            Ordering::Less
        } else if self.0.iter().all(|&x| x == 0) {
            Ordering::Equal
        } else {
            Ordering::Greater
        }
    }
}

/// A finite f32 as a dyadic (m, e), m signed.
fn dy32(x: f32) -> (i128, i32) {
    assert!(x.is_finite());
    let b = x.to_bits();
    let e = ((b >> 23) & 0xff) as i32;
    let f = (b & 0x7f_ffff) as i128;
    let (m, e) = if e == 0 { (f, -149) } else { (f | 1 << 23, e - 150) };
    (if b >> 31 == 1 { -m } else { m }, e)
}
fn mul_dy(a: (i128, i32), b: (i128, i32)) -> (i128, i32) {
    (a.0 * b.0, a.1 + b.1)
}
/// f32::MAX + half its ulp = (2^25 − 1)·2^103: the .rn overflow threshold (IEEE 754 §4.3.1).
const OVF: (i128, i32) = ((1 << 25) - 1, 103);

/// The float formats the reference checks: decoding to a dyadic, neighbours, the .rn overflow
/// threshold MAX + ulp(MAX)/2 (IEEE 754 §4.3.1).
trait Fl: Copy + PartialOrd + std::fmt::LowerExp {
    const MAX: Self;
    const INF: Self;
    const ZERO: Self;
    /// MAX + ulp(MAX)/2 as a dyadic.
    const OVF: (i128, i32);
    fn dy(self) -> (i128, i32);
    fn up(self) -> Self;
    fn down(self) -> Self;
    fn neg(self) -> Self;
    fn fin(self) -> bool;
    fn nan(self) -> bool;
    fn sign_neg(self) -> bool;
    fn lsb(self) -> u64;
}
impl Fl for f32 {
    const MAX: f32 = f32::MAX;
    const INF: f32 = f32::INFINITY;
    const ZERO: f32 = 0.0;
    const OVF: (i128, i32) = OVF;
    fn dy(self) -> (i128, i32) {
        dy32(self)
    }
    fn up(self) -> f32 {
        self.next_up()
    }
    fn down(self) -> f32 {
        self.next_down()
    }
    fn neg(self) -> f32 {
        -self
    }
    fn fin(self) -> bool {
        self.is_finite()
    }
    fn nan(self) -> bool {
        self.is_nan()
    }
    fn sign_neg(self) -> bool {
        self.is_sign_negative()
    }
    fn lsb(self) -> u64 {
        self.to_bits() as u64
    }
}
impl Fl for f64 {
    const MAX: f64 = f64::MAX;
    const INF: f64 = f64::INFINITY;
    const ZERO: f64 = 0.0;
    /// (2^54 − 1)·2^970.
    const OVF: (i128, i32) = ((1 << 54) - 1, 970);
    fn dy(self) -> (i128, i32) {
        dy64(self)
    }
    fn up(self) -> f64 {
        self.next_up()
    }
    fn down(self) -> f64 {
        self.next_down()
    }
    fn neg(self) -> f64 {
        -self
    }
    fn fin(self) -> bool {
        self.is_finite()
    }
    fn nan(self) -> bool {
        self.is_nan()
    }
    fn sign_neg(self) -> bool {
        self.is_sign_negative()
    }
    fn lsb(self) -> u64 {
        self.to_bits()
    }
}

/// A finite f64 as a dyadic (m, e), m signed.
fn dy64(x: f64) -> (i128, i32) {
    assert!(x.is_finite());
    let b = x.to_bits();
    let e = ((b >> 52) & 0x7ff) as i32;
    let f = (b & ((1 << 52) - 1)) as i128;
    let (m, e) = if e == 0 { (f, -1074) } else { (f | 1 << 52, e - 1075) };
    (if b >> 63 == 1 { -m } else { m }, e)
}

/// (x + y)/2 for adjacent finite x, y.
fn midg<F: Fl>(x: F, y: F) -> (i128, i32) {
    let (a, b) = (x.dy(), y.dy());
    let e = a.1.min(b.1);
    ((a.0 << (a.1 - e)) + (b.0 << (b.1 - e)), e - 1)
}

/// Checks that `r` is the correct rounding in mode `m` of an exact value X that is only known
/// through `cmpx(v)` = sign(X − v) for dyadic v. Returns a description of the failure.
fn check_round<F: Fl>(r: F, m: Round, cmpx: &dyn Fn((i128, i32)) -> Ordering) -> Result<(), String> {
    use Ordering::*;
    let (max, inf, zero) = (F::MAX, F::INF, F::ZERO);
    let (ninf, nmax) = (inf.neg(), max.neg());
    let sx = cmpx((0, 0));
    if r.nan() {
        return Err("NaN for a finite exact value".into());
    }
    if r == zero && sx != Equal && r.sign_neg() != (sx == Less) {
        return Err("zero with the wrong sign".into());
    }
    let ge = |v: F| v == ninf || v.fin() && cmpx(v.dy()) != Less;
    let le = |v: F| v == inf || v.fin() && cmpx(v.dy()) != Greater;
    let lt = |v: F| v == inf || v.fin() && cmpx(v.dy()) == Less;
    let gt = |v: F| v == ninf || v.fin() && cmpx(v.dy()) == Greater;
    let novf = (-F::OVF.0, F::OVF.1);
    let ok = match m {
        // Rm: r ≤ X < next_up(r); −inf only below −MAX, +inf never.
        Round::Rm => r != inf && ge(r) && (r == max || lt(r.up())),
        Round::Rp => r != ninf && le(r) && (r == nmax || gt(r.down())),
        Round::Rz => {
            r.fin()
                && match sx {
                    Greater => r >= zero && ge(r) && (r == max || lt(r.up())),
                    Less => r <= zero && le(r) && (r == nmax || gt(r.down())),
                    Equal => r == zero,
                }
        }
        Round::Rn | Round::Rna => {
            if r == inf {
                cmpx(F::OVF) != Less
            } else if r == ninf {
                cmpx(novf) != Greater
            } else {
                let lo = if r == nmax { novf } else { midg(r.down(), r) };
                let hi = if r == max { F::OVF } else { midg(r, r.up()) };
                let (cl, ch) = (cmpx(lo), cmpx(hi));
                let tie = cl == Equal || ch == Equal;
                let even = r.lsb() & 1 == 0;
                // Rn: a tie goes to the even neighbour; Rna: to the one of larger magnitude.
                let away = ch == Equal && r < zero || cl == Equal && r > zero;
                cl != Less && ch != Greater && (!tie || if m == Round::Rn { even } else { away })
            }
        }
    };
    if ok { Ok(()) } else { Err(format!("{r:e} ({:#018x}) is not the {m:?} rounding", r.lsb())) }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Finite f32 from classes that reach subnormals, overflow, cancellation and exact ties.
    fn f32(&mut self) -> f32 {
        loop {
            let x = self.next();
            let bits = x as u32;
            let v = match (x >> 40) % 7 {
                0 => f32::from_bits(bits & 0x807f_ffff),                 // subnormal or zero
                1 => f32::from_bits((bits & 0x80ff_ffff) | 0x7e00_0000), // near overflow
                2 => f32::from_bits((bits & 0x81ff_ffff) | 0x3f00_0000), // around 1
                3 => f32::from_bits((bits & 0x807f_0000) | 0x3f80_0000), // short mantissa
                4 => f32::from_bits((bits & 0x80ff_c000) | 0x0080_0000), // tiny normal, short
                _ => f32::from_bits(bits),
            };
            if v.is_finite() {
                return v;
            }
        }
    }
}

const MODES: [Round; 4] = [Round::Rn, Round::Rz, Round::Rm, Round::Rp];

/// ISA “Floating Point Instructions: add”, “Floating Point Instructions: mul”, “Floating Point
/// Instructions: fma” (".rn .rz .rm .rp: IEEE 754 rounding, the result computed to infinite
/// precision and rounded once"): every mode against the exact value.
#[test]
fn random_add_mul_fma_all_roundings() {
    let mut g = Rng(0x2545_f491_4f6c_dd1d);
    for it in 0..150_000 {
        let (a, b) = (g.f32(), g.f32());
        // Every third c cancels a·b's leading bits, to reach exact zeros and long carries.
        let c = if it % 3 == 0 { -(a * b) + g.f32() * f32::EPSILON * (a * b) } else { g.f32() };
        let c = if c.is_finite() { c } else { 1.0 };
        let (da, db, dc) = (dy32(a), dy32(b), dy32(c));
        let big_ab = Big::dy(mul_dy(da, db).0, mul_dy(da, db).1);
        for m in MODES {
            let x_add = Big::dy(da.0, da.1).add(Big::dy(db.0, db.1));
            let r = add_f32(a, b, m);
            check_round(r, m, &|v| x_add.sub(Big::dy(v.0, v.1)).sign())
                .unwrap_or_else(|e| panic!("add.{m:?} {a:e} + {b:e}: {e}"));
            let r = mul_f32(a, b, m);
            check_round(r, m, &|v| big_ab.sub(Big::dy(v.0, v.1)).sign())
                .unwrap_or_else(|e| panic!("mul.{m:?} {a:e} * {b:e}: {e}"));
            let x_fma = big_ab.add(Big::dy(dc.0, dc.1));
            let r = fma_f32(a, b, c, m);
            check_round(r, m, &|v| x_fma.sub(Big::dy(v.0, v.1)).sign())
                .unwrap_or_else(|e| panic!("fma.{m:?} {a:e} * {b:e} + {c:e}: {e}"));
        }
    }
}

/// ISA “Floating Point Instructions: div” (div.{rn,rz,rm,rp}.f32: IEEE 754 division) and “Floating
/// Point Instructions: sqrt”: X = a/b is compared with v through sign(a − v·b)·sign(b), X = sqrt(a)
/// through sign(a − v²).
#[test]
fn random_div_sqrt_all_roundings() {
    let mut g = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..150_000 {
        let (a, b) = (g.f32(), g.f32());
        let (da, db) = (dy32(a), dy32(b));
        let ba = Big::dy(da.0, da.1);
        for m in MODES {
            if b != 0.0 {
                let r = div_f32(a, b, m);
                let cmpx = |v: (i128, i32)| {
                    let vb = mul_dy(v, db);
                    let s = ba.sub(Big::dy(vb.0, vb.1)).sign();
                    if b < 0.0 { s.reverse() } else { s }
                };
                check_round(r, m, &cmpx).unwrap_or_else(|e| panic!("div.{m:?} {a:e} / {b:e}: {e}"));
            }
            let a = a.abs();
            let ba = Big::dy(dy32(a).0, dy32(a).1);
            let r = sqrt_f32(a, m);
            let cmpx = |v: (i128, i32)| {
                if v.0 < 0 {
                    return Ordering::Greater;
                }
                let vv = mul_dy(v, v);
                ba.sub(Big::dy(vv.0, vv.1)).sign()
            };
            check_round(r, m, &cmpx).unwrap_or_else(|e| panic!("sqrt.{m:?} {a:e}: {e}"));
            if m != Round::Rn && a != 0.0 {
                // rcp.{rz,rm,rp}.f32 (ISA “Floating Point Instructions: rcp”): 1/a correctly
                // rounded.
                let r = rcp_f32(a, m);
                let cmpx = |v: (i128, i32)| {
                    let va = mul_dy(v, dy32(a));
                    Big::dy(1, 0).sub(Big::dy(va.0, va.1)).sign()
                };
                check_round(r, m, &cmpx).unwrap_or_else(|e| panic!("rcp.{m:?} {a:e}: {e}"));
            }
        }
    }
}

/// A finite f64 with exponent in [−300, 300] (so every exact value below fits the reference),
/// from classes that reach exact ties and long carries.
fn f64_mid(g: &mut Rng) -> f64 {
    let x = g.next();
    let e = (g.next() % 601) as i64 - 300 + 1023;
    let frac = match (x >> 60) % 3 {
        0 => x & 0x000f_0000_0000_0000,       // short mantissa
        1 => x & 0x000f_ffff_ffff_ffff | 0xf, // odd tail
        _ => x & 0x000f_ffff_ffff_ffff,
    };
    f64::from_bits((x & (1 << 63)) | (e as u64) << 52 | frac)
}

/// The same exact checks for .f64 add, mul, fma, div and sqrt in every mode (ISA “Floating Point
/// Instructions”: add, mul, fma, div, sqrt with .rn .rz .rm .rp).
#[test]
fn random_f64_all_roundings() {
    let mut g = Rng(0x0123_4567_89ab_cdef);
    for it in 0..40_000 {
        let (a, b) = (f64_mid(&mut g), f64_mid(&mut g));
        let c = if it % 3 == 0 { -(a * b) * (1.0 + f64::EPSILON * (it % 7) as f64) } else { f64_mid(&mut g) };
        let (da, db, dc) = (dy64(a), dy64(b), dy64(c));
        let ab = Big::dy(da.0 * db.0, da.1 + db.1);
        let (ba, bb, bc) = (Big::dy(da.0, da.1), Big::dy(db.0, db.1), Big::dy(dc.0, dc.1));
        for m in MODES {
            let x = ba.add(bb);
            check_round(add_f64(a, b, m), m, &|v| x.sub(Big::dy(v.0, v.1)).sign())
                .unwrap_or_else(|e| panic!("add.f64.{m:?} {a:e} + {b:e}: {e}"));
            check_round(mul_f64(a, b, m), m, &|v| ab.sub(Big::dy(v.0, v.1)).sign())
                .unwrap_or_else(|e| panic!("mul.f64.{m:?} {a:e} * {b:e}: {e}"));
            let x = ab.add(bc);
            check_round(fma_f64(a, b, c, m), m, &|v| x.sub(Big::dy(v.0, v.1)).sign())
                .unwrap_or_else(|e| panic!("fma.f64.{m:?} {a:e} * {b:e} + {c:e}: {e}"));
            let cmpx = |v: (i128, i32)| {
                let s = ba.sub(Big::dy(v.0 * db.0, v.1 + db.1)).sign();
                if b < 0.0 { s.reverse() } else { s }
            };
            check_round(div_f64(a, b, m), m, &cmpx).unwrap_or_else(|e| panic!("div.f64.{m:?} {a:e} / {b:e}: {e}"));
            let aa = a.abs();
            let daa = dy64(aa);
            let baa = Big::dy(daa.0, daa.1);
            let cmpx = |v: (i128, i32)| {
                if v.0 < 0 {
                    return Ordering::Greater;
                }
                baa.sub(Big::dy(v.0 * v.0, 2 * v.1)).sign()
            };
            check_round(sqrt_f64(aa, m), m, &cmpx).unwrap_or_else(|e| panic!("sqrt.f64.{m:?} {aa:e}: {e}"));
        }
    }
}

/// ISA “Floating Point Instructions: add”: .rz with signed zeros and overflow (IEEE 754 §6.3,
/// §7.4).
#[test]
fn add_rz_signed_zero_and_overflow() {
    let b = |x: f32| x.to_bits();
    assert_eq!(b(add_f32(1.5, -1.5, Round::Rz)), 0x0000_0000); // x + (−x) = +0 except under .rm
    assert_eq!(b(add_f32(1.5, -1.5, Round::Rm)), 0x8000_0000);
    assert_eq!(b(add_f32(1.5, -1.5, Round::Rp)), 0x0000_0000);
    assert_eq!(b(add_f32(-0.0, -0.0, Round::Rz)), 0x8000_0000);
    assert_eq!(b(add_f32(-0.0, 0.0, Round::Rz)), 0x0000_0000);
    assert_eq!(b(add_f32(-0.0, 0.0, Round::Rm)), 0x8000_0000);
    // MAX + MAX: .rz stops at MAX (0x7f7fffff), .rn goes to inf.
    assert_eq!(b(add_f32(f32::MAX, f32::MAX, Round::Rz)), 0x7f7f_ffff);
    assert_eq!(b(add_f32(-f32::MAX, -f32::MAX, Round::Rz)), 0xff7f_ffff);
    assert_eq!(b(add_f32(f32::MAX, f32::MAX, Round::Rn)), 0x7f80_0000);
    assert_eq!(b(add_f32(f32::MAX, f32::MAX, Round::Rm)), 0x7f7f_ffff);
    assert_eq!(b(add_f32(-f32::MAX, -f32::MAX, Round::Rm)), 0xff80_0000);
    // 1 + 2^-24·3 (1.5 ulp above 1): .rz → 1 + ulp (0x3f800001), not 1 + 2 ulp.
    assert_eq!(b(add_f32(1.0, f32::from_bits(0x3440_0000), Round::Rz)), 0x3f80_0001);
    // 1 − 2^-60: just below 1, .rz → 0x3f7fffff, .rn → 1.0.
    let tiny = f32::from_bits(0x2180_0000); // 2^-60
    assert_eq!(b(add_f32(1.0, -tiny, Round::Rz)), 0x3f7f_ffff);
    assert_eq!(b(add_f32(1.0, -tiny, Round::Rn)), 0x3f80_0000);
    // Subnormal sums are exact: min_sub + min_sub = 2·min_sub in every mode.
    assert_eq!(b(add_f32(f32::from_bits(1), f32::from_bits(1), Round::Rz)), 2);
    // inf + (−inf) → canonical NaN 0x7fffffff.
    assert_eq!(b(add_f32(f32::INFINITY, f32::NEG_INFINITY, Round::Rz)), 0x7fff_ffff);
    assert_eq!(b(add_f32(f32::from_bits(0xffc0_0001), 1.0, Round::Rn)), 0x7fff_ffff);
}

/// ISA “Floating Point Instructions: fma”: fma.rm (one rounding toward −inf), including cases where
/// a double-rounded f64 fma would be wrong.
#[test]
fn fma_rm_cases() {
    let b = |x: f32| x.to_bits();
    // (1 + 2^-23)(1 − 2^-23) = 1 − 2^-46, .rm → 0x3f7fffff (largest below 1), .rn → 1.0.
    let (p, q) = (f32::from_bits(0x3f80_0001), f32::from_bits(0x3f7f_fffe));
    assert_eq!(b(fma_f32(p, q, 0.0, Round::Rm)), 0x3f7f_ffff);
    assert_eq!(b(fma_f32(p, q, 0.0, Round::Rn)), 0x3f80_0000);
    assert_eq!(b(fma_f32(p, q, 0.0, Round::Rp)), 0x3f80_0000);
    // a·b − a·b exactly 0: +0, −0 under .rm.
    assert_eq!(b(fma_f32(3.0, 5.0, -15.0, Round::Rm)), 0x8000_0000);
    assert_eq!(b(fma_f32(3.0, 5.0, -15.0, Round::Rz)), 0x0000_0000);
    // 1·1 + 2^-149 (min subnormal): 1 + tiny, .rm → 1.0, .rp → 0x3f800001.
    let ms = f32::from_bits(1);
    assert_eq!(b(fma_f32(1.0, 1.0, ms, Round::Rm)), 0x3f80_0000);
    assert_eq!(b(fma_f32(1.0, 1.0, ms, Round::Rp)), 0x3f80_0001);
    assert_eq!(b(fma_f32(1.0, 1.0, -ms, Round::Rm)), 0x3f7f_ffff);
    // −1·1 − tiny: .rm → next below −1 (0xbf800001).
    assert_eq!(b(fma_f32(-1.0, 1.0, -ms, Round::Rm)), 0xbf80_0001);
    // Underflow: 2^-100 · 2^-100 = 2^-200 > 0: .rm → +0, .rp → min subnormal.
    let t = f32::from_bits(0x0d80_0000); // 2^-100
    assert_eq!(b(fma_f32(t, t, 0.0, Round::Rm)), 0x0000_0000);
    assert_eq!(b(fma_f32(t, t, 0.0, Round::Rp)), 0x0000_0001);
    assert_eq!(b(fma_f32(-t, t, 0.0, Round::Rm)), 0x8000_0001);
    // Overflow: MAX·2 − ... .rm of a positive overflow → MAX; of a negative one → −inf.
    assert_eq!(b(fma_f32(f32::MAX, 2.0, -1.0, Round::Rm)), 0x7f7f_ffff);
    assert_eq!(b(fma_f32(f32::MAX, -2.0, 1.0, Round::Rm)), 0xff80_0000);
    // inf·0 is invalid → canonical NaN.
    assert_eq!(b(fma_f32(f32::INFINITY, 0.0, 1.0, Round::Rm)), 0x7fff_ffff);
    // f64: (1 + 2^-52)(1 − 2^-52) − 1 = −2^-104 exactly; .rm keeps it.
    let (p, q) = (f64::from_bits(0x3ff0_0000_0000_0001), f64::from_bits(0x3fef_ffff_ffff_fffe));
    assert_eq!(fma_f64(p, q, -1.0, Round::Rm), -(2f64.powi(-104)));
    assert_eq!(fma_f64(p, q, 0.0, Round::Rm).to_bits(), 0x3fef_ffff_ffff_ffff);
    assert_eq!(fma_f64(p, q, 0.0, Round::Rp).to_bits(), 0x3ff0_0000_0000_0000);
}

/// ISA “Floating Point Instructions: div”, “Floating Point Instructions: sqrt”, “Floating Point
/// Instructions: rcp”, f64 directed cases by hand.
#[test]
fn div_sqrt_rcp_f64_cases() {
    // 1/3 = 0x3fd5555555555555 (.rn, .rz, .rm: below 1/3), .rp 0x3fd5555555555556.
    assert_eq!(div_f64(1.0, 3.0, Round::Rz).to_bits(), 0x3fd5_5555_5555_5555);
    assert_eq!(div_f64(1.0, 3.0, Round::Rp).to_bits(), 0x3fd5_5555_5555_5556);
    assert_eq!(div_f64(-1.0, 3.0, Round::Rm).to_bits(), 0xbfd5_5555_5555_5556);
    assert_eq!(rcp_f64(3.0, Round::Rm).to_bits(), 0x3fd5_5555_5555_5555);
    // 1/(1 + 2^-40) = 1 − 2^-40 + 2^-80 − …: just above 1 − 2^-40 (0x3fefffffffffe000), by less
    // than 2^-79 — only a remainder far below the last bit decides .rp.
    let b = 1.0 + 2f64.powi(-40);
    assert_eq!(div_f64(1.0, b, Round::Rp).to_bits(), 0x3fef_ffff_ffff_e001);
    assert_eq!(div_f64(1.0, b, Round::Rz).to_bits(), 0x3fef_ffff_ffff_e000);
    assert_eq!(div_f64(1.0, b, Round::Rn).to_bits(), 0x3fef_ffff_ffff_e000);
    assert_eq!(div_f64(-1.0, b, Round::Rm).to_bits(), 0xbfef_ffff_ffff_e001);
    // sqrt(2) = 1.41421356237309504880…: 0x3ff6a09e667f3bcc (.rn, below), .rp …bcd.
    assert_eq!(sqrt_f64(2.0, Round::Rn).to_bits(), 0x3ff6_a09e_667f_3bcd);
    assert_eq!(sqrt_f64(2.0, Round::Rz).to_bits(), 0x3ff6_a09e_667f_3bcc);
    assert_eq!(sqrt_f64(2.0, Round::Rp).to_bits(), 0x3ff6_a09e_667f_3bcd);
    assert_eq!(sqrt_f64(4.0, Round::Rp), 2.0);
    assert_eq!(sqrt_f32(-0.0, Round::Rz).to_bits(), 0x8000_0000);
    assert_eq!(sqrt_f32(-1.0, Round::Rz).to_bits(), 0x7fff_ffff);
    // f32: 1/3 = 0x3eaaaaab (.rn, above), .rz 0x3eaaaaaa.
    assert_eq!(div_f32(1.0, 3.0, Round::Rn).to_bits(), 0x3eaa_aaab);
    assert_eq!(div_f32(1.0, 3.0, Round::Rz).to_bits(), 0x3eaa_aaaa);
    assert_eq!(div_f32(1.0, 0.0, Round::Rz), f32::INFINITY);
    assert_eq!(div_f32(0.0, 0.0, Round::Rz).to_bits(), 0x7fff_ffff);
    assert_eq!(div_f32(-1.0, f32::INFINITY, Round::Rz).to_bits(), 0x8000_0000);
    // f64 products and sums in directed modes.
    assert_eq!(mul_f64(1e300, 1e300, Round::Rz), f64::MAX);
    assert_eq!(mul_f64(-1e300, 1e300, Round::Rp), -f64::MAX);
    assert_eq!(add_f64(1.0, 2f64.powi(-60), Round::Rp).to_bits(), 0x3ff0_0000_0000_0001);
    assert_eq!(add_f64(1.0, -1.0, Round::Rm).to_bits(), 0x8000_0000_0000_0000);
    assert_eq!(mul_f64(f64::from_bits(1), 0.5, Round::Rp).to_bits(), 1);
    assert_eq!(mul_f64(f64::from_bits(1), 0.5, Round::Rn).to_bits(), 0); // tie to even 0
    assert_eq!(mul_f64(f64::from_bits(3), 0.5, Round::Rn).to_bits(), 2); // 1.5 → 2
}

/// Independent .rn reference for bf16: the usual integer trick (add 0x7fff plus the lsb of the
/// result, shift), which carries into the exponent exactly when IEEE rounding does.
fn bf16_ref_rn(bits: u32) -> u16 {
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// ISA “Data Movement and Conversion Instructions: cvt”: cvt.rn.bf16.f32 (round to nearest even;
/// NaN → NaN; bf16 has f32's exponent range so f32 subnormals round to bf16 subnormals).
#[test]
fn cvt_rn_bf16_f32() {
    let c = |x: u32| f32_to_bf16(f32::from_bits(x), Round::Rn);
    assert_eq!(c(0x3f80_0000), 0x3f80); // 1.0
    assert_eq!(c(0x3f80_8000), 0x3f80); // tie, 0x3f80 even → down
    assert_eq!(c(0x3f81_8000), 0x3f82); // tie, 0x3f81 odd → up
    assert_eq!(c(0x3f80_8001), 0x3f81); // above the tie
    assert_eq!(c(0x3f80_7fff), 0x3f80); // below the tie
    assert_eq!(c(0xbf81_8000), 0xbf82); // negative tie
    assert_eq!(c(0x7f7f_0000), 0x7f7f); // largest finite bf16
    assert_eq!(c(0x7f7f_7fff), 0x7f7f);
    assert_eq!(c(0x7f7f_8000), 0x7f80); // tie at the top rounds to even = inf
    assert_eq!(c(0x7f7f_ffff), 0x7f80); // f32::MAX → inf
    assert_eq!(c(0xff7f_ffff), 0xff80);
    assert_eq!(c(0x7f80_0000), 0x7f80); // inf stays inf
    assert_eq!(c(0x0000_0001), 0x0000); // 2^-149 → 0 (bf16's least subnormal is 2^-133)
    assert_eq!(c(0x0000_8000), 0x0000); // 2^-134: tie, even → 0
    assert_eq!(c(0x0001_8000), 0x0002); // 1.5·2^-133: tie, odd → up
    assert_eq!(c(0x8001_8000), 0x8002);
    assert_eq!(c(0x0001_0000), 0x0001);
    assert_eq!(c(0x007f_ffff), 0x0080); // largest f32 subnormal rounds up to the least normal
    assert_eq!(c(0x8000_0000), 0x8000);
    // NaN (any payload, either sign) → 0x7fff.
    assert_eq!(c(0x7fc0_0000), 0x7fff);
    assert_eq!(c(0xff80_0001), 0x7fff);
    assert_eq!(c(0x7f80_0001), 0x7fff);
    // Directed modes at the top: .rz of f32::MAX → 0x7f7f, .rp of a value above 0x7f7f → inf.
    assert_eq!(f32_to_bf16(f32::MAX, Round::Rz), 0x7f7f);
    assert_eq!(f32_to_bf16(f32::MAX, Round::Rp), 0x7f80);
    assert_eq!(f32_to_bf16(-f32::MAX, Round::Rp), 0xff7f);
    assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_0001), Round::Rp), 0x3f81);
    assert_eq!(f32_to_bf16(f32::from_bits(0xbf80_0001), Round::Rp), 0xbf80);
    // Every non-NaN pattern of a sweep against the integer reference.
    let mut x = 0u32;
    loop {
        let f = f32::from_bits(x);
        if !f.is_nan() {
            assert_eq!(c(x), bf16_ref_rn(x), "{x:#010x}");
        }
        x = match x.checked_add(0x0000_1235) {
            Some(y) => y,
            None => break,
        };
    }
}

/// ISA “Data Movement and Conversion Instructions: cvt”: cvt.rna.tf32.f32 (nearest, ties away from
/// zero; the tf32 value in a 32-bit register, low 13 bits zero).
#[test]
fn cvt_rna_tf32_f32() {
    let c = |x: u32| f32_to_tf32(f32::from_bits(x), Round::Rna);
    assert_eq!(c(0x3f80_0000), 0x3f80_0000);
    assert_eq!(c(0x3f80_1000), 0x3f80_2000); // tie, away (the even choice would be the same)
    assert_eq!(c(0x3f80_3000), 0x3f80_4000); // tie above an odd tf32: away (even would also go up)
    assert_eq!(c(0x3f80_5000), 0x3f80_6000); // tie above an even tf32: away, not to even
    assert_eq!(c(0xbf80_5000), 0xbf80_6000); // negative: away from zero
    assert_eq!(c(0x3f80_0fff), 0x3f80_0000);
    assert_eq!(c(0x3f80_1001), 0x3f80_2000);
    assert_eq!(c(0x3fff_f000), 0x4000_0000); // carry into the exponent
    assert_eq!(c(0x7f7f_e000), 0x7f7f_e000); // largest finite tf32
    assert_eq!(c(0x7f7f_efff), 0x7f7f_e000);
    assert_eq!(c(0x7f7f_f000), 0x7f80_0000); // rounds past the largest → inf
    assert_eq!(c(0xff7f_ffff), 0xff80_0000);
    assert_eq!(c(0x7f80_0000), 0x7f80_0000);
    assert_eq!(c(0xff80_0000), 0xff80_0000);
    assert_eq!(c(0x7fc0_0000), 0x7fff_e000); // NaN → 0x7fffe000
    assert_eq!(c(0xff80_0001), 0x7fff_e000);
    assert_eq!(c(0x0000_1000), 0x0000_2000); // subnormal tie, away
    assert_eq!(c(0x0000_0fff), 0x0000_0000);
    assert_eq!(c(0x8000_1000), 0x8000_2000);
    assert_eq!(c(0x007f_f000), 0x0080_0000); // subnormal → least normal
    // Independent reference for finite inputs: add half the 2^13 quantum to the magnitude, clear.
    let mut x = 0u32;
    loop {
        let f = f32::from_bits(x);
        if f.is_finite() {
            let r = (x & 0x7fff_ffff) + 0x1000;
            let r = if r >= 0x7f80_0000 { 0x7f80_0000 } else { r & 0xffff_e000 };
            assert_eq!(c(x), r | (x & 0x8000_0000), "{x:#010x}");
        }
        x = match x.checked_add(0x0000_0fed) {
            Some(y) => y,
            None => break,
        };
    }
}

/// ISA “Data Movement and Conversion Instructions: cvt”: f64→f32 and int→float with rounding;
/// float→int rounding and saturation (NaN → 0); cvt.rni.f32.f32 round to integral; cvt.sat.f32.f32
/// clamp to [0, 1] with NaN → 0.
#[test]
fn cvt_misc() {
    // 1 + 2^-30 in f64 → f32: .rn/.rz/.rm 1.0, .rp 0x3f800001.
    let x = 1.0 + 2f64.powi(-30);
    assert_eq!(f64_to_f32(x, Round::Rn).to_bits(), 0x3f80_0000);
    assert_eq!(f64_to_f32(x, Round::Rp).to_bits(), 0x3f80_0001);
    assert_eq!(f64_to_f32(-x, Round::Rm).to_bits(), 0xbf80_0001);
    assert_eq!(f64_to_f32(1e300, Round::Rz).to_bits(), 0x7f7f_ffff);
    assert_eq!(f64_to_f32(1e300, Round::Rn).to_bits(), 0x7f80_0000);
    assert_eq!(f64_to_f32(1e-300, Round::Rp).to_bits(), 0x0000_0001);
    assert_eq!(f64_to_f32(1e-300, Round::Rn).to_bits(), 0x0000_0000);
    assert_eq!(f64_to_f32(f64::NAN, Round::Rn).to_bits(), 0x7fff_ffff);
    // 2^24 + 1 (u32 16777217) → f32: .rn tie → 2^24 (even), .rp → 2^24 + 2.
    assert_eq!(int_to_f32(16_777_217, false, Round::Rn).to_bits(), 0x4b80_0000);
    assert_eq!(int_to_f32(16_777_217, false, Round::Rp).to_bits(), 0x4b80_0001);
    assert_eq!(int_to_f32((-16_777_217i64) as u64, true, Round::Rz).to_bits(), 0xcb80_0000);
    assert_eq!(int_to_f32((-16_777_217i64) as u64, true, Round::Rm).to_bits(), 0xcb80_0001);
    assert_eq!(int_to_f32(u64::MAX, false, Round::Rz).to_bits(), 0x5f7f_ffff);
    assert_eq!(int_to_f32(u64::MAX, false, Round::Rn).to_bits(), 0x5f80_0000);
    assert_eq!(int_to_f64(u64::MAX, false, Round::Rz).to_bits(), 0x43ef_ffff_ffff_ffff);
    assert_eq!(int_to_f64(u64::MAX, true, Round::Rn), -1.0);
    // float → int.
    assert_eq!(float_to_int(2.5, true, 32, Round::Rn), 2);
    assert_eq!(float_to_int(3.5, true, 32, Round::Rn), 4);
    assert_eq!(float_to_int(-2.5, true, 32, Round::Rn), 0xffff_fffe);
    assert_eq!(float_to_int(-2.5, true, 32, Round::Rz), 0xffff_fffe);
    assert_eq!(float_to_int(-2.5, true, 32, Round::Rm), 0xffff_fffd);
    assert_eq!(float_to_int(-2.5, true, 32, Round::Rp), 0xffff_fffe);
    assert_eq!(float_to_int(f64::NAN, true, 32, Round::Rz), 0);
    assert_eq!(float_to_int(f64::NAN, false, 64, Round::Rz), 0);
    assert_eq!(float_to_int(1e10, true, 32, Round::Rz), 0x7fff_ffff);
    assert_eq!(float_to_int(-1e10, true, 32, Round::Rz), 0x8000_0000);
    assert_eq!(float_to_int(f64::INFINITY, false, 32, Round::Rz), 0xffff_ffff);
    assert_eq!(float_to_int(-5.0, false, 32, Round::Rz), 0);
    assert_eq!(float_to_int(4294967295.7, false, 32, Round::Rz), 0xffff_ffff);
    assert_eq!(float_to_int(4294967295.7, false, 32, Round::Rn), 0xffff_ffff);
    assert_eq!(float_to_int(-1e30, true, 64, Round::Rz), 0x8000_0000_0000_0000);
    assert_eq!(float_to_int(1e30, true, 64, Round::Rz), 0x7fff_ffff_ffff_ffff);
    assert_eq!(float_to_int(40000.0, true, 16, Round::Rz), 0x7fff);
    // round to integral in float.
    assert_eq!(round_int_f32(2.5, Round::Rn), 2.0);
    assert_eq!(round_int_f32(-0.5, Round::Rp).to_bits(), 0x8000_0000);
    assert_eq!(round_int_f32(-0.5, Round::Rn).to_bits(), 0x8000_0000);
    assert_eq!(round_int_f32(-1.5, Round::Rz), -1.0);
    assert_eq!(round_int_f32(-1.5, Round::Rm), -2.0);
    assert_eq!(round_int_f32(1.25, Round::Rp), 2.0);
    // .sat.
    assert_eq!(sat_f32(f32::NAN).to_bits(), 0);
    assert_eq!(sat_f32(-3.0).to_bits(), 0);
    assert_eq!(sat_f32(2.0), 1.0);
    assert_eq!(sat_f32(0.25), 0.25);
    assert_eq!(sat_f32(f32::INFINITY), 1.0);
}

/// ISA “Floating Point Instructions: min” / “Floating Point Instructions: max” (.f32, .f64): a NaN
/// operand is ignored, both NaN → canonical NaN; −0 compares less than +0.
#[test]
fn min_max_nan_and_signed_zero() {
    let nan = f32::from_bits(0x7fc0_0001);
    assert_eq!(min_f32(nan, 2.0), 2.0);
    assert_eq!(min_f32(2.0, nan), 2.0);
    assert_eq!(max_f32(nan, -2.0), -2.0);
    assert_eq!(max_f32(nan, nan).to_bits(), 0x7fff_ffff);
    assert_eq!(min_f32(nan, f32::from_bits(0xffc0_0000)).to_bits(), 0x7fff_ffff);
    assert_eq!(min_f32(0.0, -0.0).to_bits(), 0x8000_0000);
    assert_eq!(min_f32(-0.0, 0.0).to_bits(), 0x8000_0000);
    assert_eq!(max_f32(0.0, -0.0).to_bits(), 0x0000_0000);
    assert_eq!(max_f32(-0.0, 0.0).to_bits(), 0x0000_0000);
    assert_eq!(min_f32(-1.0, 1.0), -1.0);
    assert_eq!(max_f32(f32::NEG_INFINITY, -1.0), -1.0);
    assert_eq!(min_f64(f64::NAN, 3.0), 3.0);
    assert_eq!(max_f64(-0.0, 0.0).to_bits(), 0);
    assert_eq!(min_f64(0.0, -0.0).to_bits(), 1 << 63);
    assert!(max_f64(f64::NAN, f64::NAN).is_nan());
}

/// ISA “Comparison and Selection Instructions: setp” with the table "Floating-Point
/// Comparison Operators Accepting NaN": ordered false on NaN, unordered true.
#[test]
fn setp_unordered() {
    let n = f32::NAN;
    for (c, ord_nan) in [
        (Cmp::Eq, false),
        (Cmp::Ne, false),
        (Cmp::Lt, false),
        (Cmp::Le, false),
        (Cmp::Gt, false),
        (Cmp::Ge, false),
        (Cmp::Equ, true),
        (Cmp::Neu, true),
        (Cmp::Ltu, true),
        (Cmp::Leu, true),
        (Cmp::Gtu, true),
        (Cmp::Geu, true),
        (Cmp::Num, false),
        (Cmp::Nan, true),
    ] {
        assert_eq!(cmp_f32(c, n, 1.0), ord_nan, "{c:?}");
        assert_eq!(cmp_f32(c, 1.0, n), ord_nan, "{c:?}");
        assert_eq!(cmp_f64(c, f64::NAN, f64::NAN), ord_nan, "{c:?}");
    }
    // Non-NaN: the u forms equal the ordered ones.
    let t = |c, a: f32, b: f32| cmp_f32(c, a, b);
    assert!(t(Cmp::Equ, 0.0, -0.0) && t(Cmp::Eq, 0.0, -0.0) && !t(Cmp::Neu, 0.0, -0.0));
    assert!(t(Cmp::Ltu, 1.0, 2.0) && !t(Cmp::Ltu, 2.0, 1.0) && t(Cmp::Leu, 2.0, 2.0));
    assert!(t(Cmp::Gtu, 3.0, 2.0) && !t(Cmp::Geu, 1.0, 2.0) && t(Cmp::Ne, 1.0, 2.0));
    assert!(t(Cmp::Num, 1.0, f32::INFINITY) && !t(Cmp::Nan, 1.0, 2.0));
    assert!(t(Cmp::Lt, f32::NEG_INFINITY, -f32::MAX));
}

/// ISA “Data Movement and Conversion Instructions: prmt” (default mode): {b, a} bytes 0-7, selector
/// nibble bit 3 = sign-replicate.
#[test]
fn prmt_default_mode() {
    let (a, b) = (0x4433_2211u32, 0x88f7_6655u32);
    assert_eq!(prmt(a, b, 0x3210), 0x4433_2211); // identity
    assert_eq!(prmt(a, b, 0x7654), 0x88f7_6655); // b
    assert_eq!(prmt(a, b, 0x0123), 0x1122_3344); // byte reverse of a
    assert_eq!(prmt(a, b, 0x5140), 0x6622_5511);
    // Sign replication: byte 7 (0x88, negative) → 0xff; byte 6 (0xf7) → 0xff; byte 3 (0x44) → 0.
    assert_eq!(prmt(a, b, 0xf0e8), 0xff11_ff00);
    // Byte 6 (0xf7), byte 7 (0x88), byte 3 (0x44) sign-replicated → 0, byte 0 sign-replicated → 0.
    assert_eq!(prmt(a, b, 0x8b76), 0x0000_88f7);
    // Byte 5 (0x66) copied, byte 6 (0xf7) sign-replicated → 0xff.
    assert_eq!(prmt(a, b, 0x5e5e), 0x66ff_66ff);
    // Only the low 16 bits of c matter.
    assert_eq!(prmt(a, b, 0xabcd_3210), 0x4433_2211);
}

/// ISA “Floating Point Instructions: copysign”: copysign.f32 d, a, b → |b| with the sign of a.
#[test]
fn copysign_operand_order() {
    assert_eq!(copysign_f32(-1.0, 2.5), -2.5);
    assert_eq!(copysign_f32(1.0, -2.5), 2.5);
    assert_eq!(copysign_f32(-0.0, 0.0).to_bits(), 0x8000_0000);
    assert_eq!(copysign_f32(-1.0, f32::from_bits(0x7fc0_0123)).to_bits(), 0xffc0_0123);
    assert_eq!(copysign_f64(-3.0, 7.0), -7.0);
    assert_eq!(copysign_f64(3.0, -7.0), 7.0);
}

/// ISA “Integer Arithmetic Instructions: div / rem” (): by zero the ISA leaves the result
/// unspecified; the emulator's documented choice is all ones for div (u32 0xffffffff, s32 −1) and
/// the dividend for rem. MIN / −1 wraps.
#[test]
fn int_div_rem_by_zero() {
    assert_eq!(div_int(7, 0, 32, false), 0xffff_ffff);
    assert_eq!(rem_int(7, 0, 32, false), 7);
    assert_eq!(div_int(7, 0, 32, true), 0xffff_ffff);
    assert_eq!(div_int(0xffff_fff9, 0, 32, true), 0xffff_ffff); // −7 / 0 → −1
    assert_eq!(rem_int(0xffff_fff9, 0, 32, true), 0xffff_fff9);
    assert_eq!(div_int(7, 0, 64, false), u64::MAX);
    assert_eq!(div_int(0x8000_0000, 0xffff_ffff, 32, true), 0x8000_0000);
    assert_eq!(rem_int(0x8000_0000, 0xffff_ffff, 32, true), 0);
    assert_eq!(div_int(0xffff_fff9, 2, 32, true), 0xffff_fffd); // −7 / 2 = −3 (toward zero)
    assert_eq!(rem_int(0xffff_fff9, 2, 32, true), 0xffff_ffff); // −7 % 2 = −1
    assert_eq!(div_int(0xffff_fff9, 2, 32, false), 0x7fff_fffc);
    assert_eq!(div_int(1 << 63, u64::MAX, 64, true), 1 << 63);
}

/// ISA “Integer Arithmetic Instructions: bfi”: pos = c & 0xff, len = d & 0xff; bits past the msb
/// are dropped.
#[test]
fn bfi_clamps() {
    assert_eq!(bfi32(0xabcd, 0xffff_0000, 0, 16), 0xffff_abcd);
    assert_eq!(bfi32(0xff, 0, 28, 8), 0xf000_0000); // only 4 bits fit
    assert_eq!(bfi32(0xff, 0x1234, 32, 8), 0x1234); // pos beyond msb → b
    assert_eq!(bfi32(0xff, 0x1234, 4, 0), 0x1234); // len 0 → b
    assert_eq!(bfi32(0xf, 0, 0x104, 4), 0xf0); // pos & 0xff = 4
    assert_eq!(bfi32(0xffff_ffff, 0, 8, 0x102), 0x300); // len & 0xff = 2
    assert_eq!(bfi32(0xffff_ffff, 0, 0, 255), 0xffff_ffff);
    assert_eq!(bfi64(0xff, 0, 60, 8), 0xf000_0000_0000_0000);
    assert_eq!(bfi64(0x1, 0, 40, 1), 1 << 40);
}

/// ISA “Floating Point Instructions: ex2”, “Floating Point Instructions: rcp” (.approx.ftz.f32) and
/// “Floating Point Instructions: div.full”: the emulator's documented values (correctly rounded
/// from an exact/f64 computation, ftz on input and output).
#[test]
fn approx_documented_values() {
    assert_eq!(ex2_approx_f32(3.0), 8.0);
    assert_eq!(ex2_approx_f32(-1.0), 0.5);
    assert_eq!(ex2_approx_f32(0.5).to_bits(), 0x3fb5_04f3); // √2 rounded to nearest
    assert_eq!(ex2_approx_f32(f32::NEG_INFINITY).to_bits(), 0);
    assert_eq!(ex2_approx_f32(f32::INFINITY), f32::INFINITY);
    assert_eq!(ex2_approx_f32(-140.0).to_bits(), 0); // subnormal result flushed
    assert_eq!(ex2_approx_f32(f32::from_bits(1)), 1.0); // subnormal input flushed: 2^0
    assert_eq!(ex2_approx_f32(128.0), f32::INFINITY);
    assert_eq!(rcp_approx_f32(4.0), 0.25);
    assert_eq!(rcp_approx_f32(3.0).to_bits(), 0x3eaa_aaab);
    assert_eq!(rcp_approx_f32(f32::from_bits(0x8000_0001)), f32::NEG_INFINITY);
    assert_eq!(rcp_approx_f32(f32::from_bits(0x7f00_0000)).to_bits(), 0); // 2^-127 flushed
    assert_eq!(div_full_f32(1.0, 3.0).to_bits(), 0x3eaa_aaab);
    assert_eq!(ftz_f32(f32::from_bits(0x8000_0005)).to_bits(), 0x8000_0000);
    assert_eq!(ftz_f32(f32::MIN_POSITIVE), f32::MIN_POSITIVE);
}
