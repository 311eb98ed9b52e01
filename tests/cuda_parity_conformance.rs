//! GPU suite: PTX instruction conformance. The micro-kernels of kernels/conformance.cu run single
//! PTX instructions over raw bit patterns (special values — ±0, ±inf, NaNs, subnormals, the
//! largest finite value, rounding ties, values one ulp around, overflow boundaries — and random
//! patterns from a fixed seed) on `common::gpu()`: the GPU where one is present, else the PTX
//! emulator. Every expected result is computed here from the PTX ISA 9.0 definition of the
//! instruction, independently of the emulator:
//! - directed rounding: on operands whose exact result can be compared exactly in f64 (sums of
//!   f32s with close exponents, products, fma with few significand bits, and for div/sqrt/rcp the
//!   comparisons y·b vs a, y² vs a, y·a vs 1, exact for an f32 or a midpoint of two), rounded by
//!   bit stepping in `round_exact`;
//! - bf16/tf32 conversions by integer arithmetic on the bits; mma on small integers, so that
//!   D = A·B + C is exact, with the fragment layouts written from the ISA's tables.
//!
//! Where the ISA leaves a result open (NaN payloads, the sign of a ±0 tie in min/max, integer
//! division by zero, approximate instructions' exact bits), the result is checked only for what
//! the ISA does say (a NaN, one of two zeros, within the stated error) or not at all. When both a
//! real GPU and the emulator are available, each test also runs on both and compares them bit for
//! bit wherever the ISA defines the result, and prints the open ones side by side: the first GPU
//! run checks the emulator itself.

mod common;

use engine::Device;
use engine::device::cuda::{Arg, grid_1d};
use engine::device::{Buffer, Cuda, Element};
use engine::rng::Rng;
use std::cmp::Ordering;
use std::sync::Arc;

const FILE: &str = "conformance.cu";

// ---------------------------------------------------------------------------------------------
// Expectations and the report
// ---------------------------------------------------------------------------------------------

/// The format of a result whose NaN-ness is checked.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fmt {
    F32,
    F64,
    Bf16,
}

impl Fmt {
    fn is_nan(self, v: u64) -> bool {
        match self {
            Fmt::F32 => v <= u32::MAX as u64 && f32::from_bits(v as u32).is_nan(),
            Fmt::F64 => f64::from_bits(v).is_nan(),
            Fmt::Bf16 => v <= 0xffff && (v & 0x7f80) == 0x7f80 && (v & 0x7f) != 0,
        }
    }
}

/// What the ISA says of one result.
#[derive(Clone, Debug, PartialEq)]
enum Want {
    /// Defined bit for bit.
    Bits(u64),
    /// Defined under `mask` only (the other bits are not specified).
    Masked(u64, u64),
    /// A NaN of this format; the ISA does not define its payload.
    Nan(Fmt),
    /// One of two values: the ISA leaves the choice open (e.g. the sign of a zero).
    Either(u64, u64),
    /// An approximate f32 result: within `ulps` of the correctly rounded `bits`; a result that
    /// .ftz flushes (the exact one is subnormal) may be the zero of its sign.
    Near { bits: u32, ulps: u32 },
    /// Not defined by the ISA: reported, never checked.
    Free,
}

/// Distance of two f32 patterns in ulps along the ordered line of floats (±0 are one point).
fn ulp_distance(a: u32, b: u32) -> u64 {
    let ord = |x: u32| if x & SIGN != 0 { -((x & !SIGN) as i64) } else { x as i64 };
    ord(a).abs_diff(ord(b))
}

impl Want {
    /// Whether `got` is what the ISA allows; None where it defines nothing.
    fn allows(&self, got: u64) -> Option<bool> {
        Some(match *self {
            Want::Bits(b) => got == b,
            Want::Masked(b, m) => got & m == b & m,
            Want::Nan(f) => f.is_nan(got),
            Want::Either(x, y) => got == x || got == y,
            Want::Near { bits, ulps } => {
                let g = got as u32;
                let flushed = g & !SIGN == 0 && g & SIGN == bits & SIGN && (bits & !SIGN) < MIN_NORMAL + ulps;
                got <= u32::MAX as u64 && (ulp_distance(g, bits) <= ulps as u64 || flushed)
            }
            Want::Free => return None,
        })
    }

    /// Whether a GPU result and an emulator result agree on everything the ISA defines
    /// (approximations: within twice the ISA's error of each other); None where the ISA leaves
    /// the result open, so that they are only reported.
    fn agree(&self, gpu: u64, emu: u64) -> Option<bool> {
        match *self {
            Want::Bits(_) => Some(gpu == emu),
            Want::Masked(_, m) => Some(gpu & m == emu & m),
            Want::Near { ulps, .. } => Some(ulp_distance(gpu as u32, emu as u32) <= 2 * ulps as u64),
            Want::Nan(_) | Want::Either(..) | Want::Free => None,
        }
    }
}

struct Case {
    label: String,
    want: Want,
}

fn case(label: String, want: Want) -> Case {
    Case { label, want }
}

/// The devices of one test: `main` (from `common::gpu()`: the GPU, else the emulator) runs every
/// check; `pair` is (a real GPU, the emulator) when both can be opened.
struct Devices {
    main: Arc<Cuda>,
    pair: Option<(Arc<Cuda>, Arc<Cuda>)>,
}

fn devices() -> Option<Devices> {
    let Device::Cuda(main) = common::gpu()? else { return None };
    let pair = match (Cuda::open(0), Cuda::emulated()) {
        (Ok(g), Ok(e)) => Some((g, e)),
        _ => None,
    };
    Some(Devices { main, pair })
}

/// Runs one kernel variant on a device: one result per case.
type Run<'a> = dyn Fn(&Arc<Cuda>) -> Vec<u64> + 'a;

/// Checks areas of one test and prints its table; `finish` fails the test on any mismatch.
struct Report {
    title: &'static str,
    rows: Vec<String>,
    failures: Vec<String>,
}

/// Mismatch lines kept per area (the count is always complete).
const SHOWN: usize = 12;
/// Open cases printed side by side per area even where GPU and emulator agree (all that differ
/// are printed).
const SAMPLES: usize = 3;

impl Report {
    fn new(title: &'static str) -> Report {
        Report { title, rows: Vec::new(), failures: Vec::new() }
    }

    /// Runs `run` on the main device and checks each case; with a GPU and the emulator both
    /// present, runs it on each and compares them.
    fn area(&mut self, dev: &Devices, name: &str, isa: &str, cases: &[Case], run: &Run<'_>) {
        let got = run(&dev.main);
        assert_eq!(
            got.len(),
            cases.len(),
            "{name}: the kernel returned {} results for {} cases",
            got.len(),
            cases.len()
        );
        let (mut checked, mut open, mut bad) = (0, 0, 0);
        for (c, &g) in cases.iter().zip(&got) {
            match c.want.allows(g) {
                None => open += 1,
                Some(true) => checked += 1,
                Some(false) => {
                    checked += 1;
                    bad += 1;
                    if bad <= SHOWN {
                        self.failures.push(format!("{name} [{isa}] {}: got {g:#x}, ISA says {:x?}", c.label, c.want));
                    }
                }
            }
        }
        if bad > SHOWN {
            self.failures.push(format!("{name}: … {} more mismatches", bad - SHOWN));
        }
        let mut cross = String::from("-");
        if let Some((gpu, emu)) = &dev.pair {
            let (g, e) = (run(gpu), run(emu));
            let (mut differ, mut reported, mut same) = (0, 0, 0);
            for ((c, &x), &y) in cases.iter().zip(&g).zip(&e) {
                match c.want.agree(x, y) {
                    Some(true) => {}
                    Some(false) => {
                        differ += 1;
                        if differ <= SHOWN {
                            self.failures.push(format!(
                                "{name} [{isa}] {}: GPU {x:#x} vs emulator {y:#x} (ISA says {:x?})",
                                c.label, c.want
                            ));
                        }
                    }
                    None => {
                        reported += 1;
                        same += (x == y) as usize;
                        if x != y || reported <= SAMPLES {
                            println!("  {name} {} (open in the ISA): GPU {x:#x}, emulator {y:#x}", c.label);
                        }
                    }
                }
            }
            cross = format!("{differ} differ; open: {same} of {reported} identical");
        }
        self.rows.push(format!(
            "{:<34} {:<44} {:>6} {:>7} {:>5} {:>10}   {}",
            name,
            isa,
            cases.len(),
            checked,
            open,
            bad,
            cross
        ));
    }

    fn finish(self, dev: &Devices) {
        let pair = if dev.pair.is_some() { "; GPU vs emulator compared" } else { "" };
        println!("{} — checked on {:?}{pair}", self.title, dev.main);
        let (area, isa, cases, checked, open, bad) = ("area", "PTX ISA 9.0", "cases", "checked", "open", "mismatches");
        println!("{area:<34} {isa:<44} {cases:>6} {checked:>7} {open:>5} {bad:>10}   GPU vs emulator");
        for r in &self.rows {
            println!("{r}");
        }
        assert!(self.failures.is_empty(), "{}: mismatches\n{}", self.title, self.failures.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Launching
// ---------------------------------------------------------------------------------------------

fn upload<T: Element>(dev: &Arc<Cuda>, data: &[T]) -> Buffer<T> {
    let mut b = Buffer::zeros(&Device::Cuda(dev.clone()), data.len().max(1)).expect("device allocation");
    b.write(0, data).expect("copy to the device");
    b
}

fn ptr<T: Element>(b: &Buffer<T>) -> Arg {
    Arg::Ptr(b.device_ptr().expect("a device buffer"))
}

/// An elementwise kernel `name(inputs…, out, n, op)` over u32 columns.
fn elementwise(dev: &Arc<Cuda>, name: &'static str, inputs: &[&[u32]], op: u32) -> Vec<u64> {
    let n = inputs[0].len();
    let bufs: Vec<Buffer<u32>> = inputs.iter().map(|c| upload(dev, c)).collect();
    let out = upload(dev, &vec![0u32; n]);
    let mut args: Vec<Arg> = bufs.iter().map(ptr).collect();
    args.extend([ptr(&out), Arg::U32(n as u32), Arg::U32(op)]);
    let (grid, block) = grid_1d(n);
    dev.launch(FILE, name, grid, block, 0, &args).expect("launch");
    out.read(0..n).expect("copy from the device").into_iter().map(u64::from).collect()
}

/// A one-warp kernel: 32 threads, one block.
fn warp(dev: &Arc<Cuda>, name: &'static str, args: &[Arg]) {
    dev.launch(FILE, name, (1, 1, 1), (32, 1, 1), 0, args).expect("launch");
}

// ---------------------------------------------------------------------------------------------
// f32 values and exact rounding
// ---------------------------------------------------------------------------------------------

const SIGN: u32 = 0x8000_0000;
const INF: u32 = 0x7f80_0000;
const MAX: u32 = 0x7f7f_ffff;
const MIN_NORMAL: u32 = 0x0080_0000;
const QNAN: u32 = 0x7fc0_0000;

fn f(bits: u32) -> f64 {
    f32::from_bits(bits) as f64
}

fn is_nan(bits: u32) -> bool {
    f32::from_bits(bits).is_nan()
}

fn neg(bits: u32) -> bool {
    bits & SIGN != 0
}

fn mag(bits: u32) -> u32 {
    bits & !SIGN
}

fn signed(negative: bool, m: u32) -> u32 {
    if negative { m | SIGN } else { m }
}

/// Special f32 patterns: zeros, ones, ulp neighbours, subnormals, the normal boundary, the
/// largest finite value, infinities, quiet/signalling/negative NaNs.
const SPECIALS: [u32; 24] = [
    0x0000_0000,
    0x8000_0000,
    0x3f80_0000, // 1
    0xbf80_0000,
    0x3f80_0001, // 1 + ulp
    0x3f7f_ffff, // 1 − ulp/2
    0x3fc0_0000, // 1.5
    0x4040_0000, // 3
    0x3dcc_cccd, // 0.1
    0xc0a0_0000, // −5
    0x0000_0001, // smallest subnormal
    0x8000_0001,
    0x007f_ffff, // largest subnormal
    0x0080_0000, // smallest normal
    0x80c0_0000,
    MAX,
    0xff7f_ffff,
    0x7f00_0000, // 2^127
    INF,
    0xff80_0000,
    QNAN,
    0x7fa0_0001, // signalling NaN
    0xffc0_0001, // negative NaN with a payload
    0x3400_0000, // 2^-23
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Rn,
    Rz,
    Rm,
    Rp,
}

const MODES: [Mode; 4] = [Mode::Rn, Mode::Rz, Mode::Rm, Mode::Rp];

impl Mode {
    fn name(self) -> &'static str {
        ["rn", "rz", "rm", "rp"][self as usize]
    }
}

/// The exact result of an operation, as rounding needs it.
enum Exact {
    Nan,
    Inf(bool),
    Zero(bool),
    /// A nonzero finite value: its sign, an approximation of its magnitude (to start the search),
    /// and an exact comparison of a candidate magnitude with it. The candidate is an f32 value,
    /// the midpoint of two adjacent ones, or 2^128.
    Value(bool, f64, Box<dyn Fn(f64) -> Ordering>),
}

/// An exact f64 value as an `Exact`.
fn exact_f64(v: f64) -> Exact {
    if v.is_nan() {
        Exact::Nan
    } else if v.is_infinite() {
        Exact::Inf(v < 0.0)
    } else if v == 0.0 {
        Exact::Zero(v.is_sign_negative())
    } else {
        let m = v.abs();
        Exact::Value(v < 0.0, m, Box::new(move |y: f64| y.partial_cmp(&m).unwrap()))
    }
}

/// The magnitude of an f32 pattern as f64, with the infinity pattern standing for 2^128 (the
/// next "float" past the largest finite one, for ties at the overflow boundary).
fn mag_value(m: u32) -> f64 {
    if m >= INF { 2f64.powi(128) } else { f(m) }
}

/// Rounds `e` to f32 under `mode` (IEEE 754: rn ties to even, overflow to ±inf under rn and
/// toward the infinity of the rounding direction, else to ±largest finite).
fn round_exact(e: &Exact, mode: Mode) -> Want {
    match e {
        Exact::Nan => Want::Nan(Fmt::F32),
        Exact::Inf(n) => Want::Bits(signed(*n, INF) as u64),
        Exact::Zero(n) => Want::Bits(signed(*n, 0) as u64),
        Exact::Value(n, approx, cmp) => {
            let toward_zero = match mode {
                Mode::Rn => None,
                Mode::Rz => Some(true),
                Mode::Rm => Some(!n),
                Mode::Rp => Some(*n),
            };
            // lo: the largest magnitude pattern ≤ |exact| (INF: |exact| ≥ 2^128).
            let mut lo = (*approx as f32).to_bits().min(INF);
            while lo > 0 && cmp(mag_value(lo)) == Ordering::Greater {
                lo -= 1;
            }
            while lo < INF && cmp(mag_value(lo + 1)) != Ordering::Greater {
                lo += 1;
            }
            let m = if lo == INF {
                if toward_zero == Some(true) { MAX } else { INF }
            } else if cmp(mag_value(lo)) == Ordering::Equal {
                lo
            } else {
                let hi = lo + 1;
                match toward_zero {
                    Some(true) => lo,
                    Some(false) => hi,
                    None => match cmp((mag_value(lo) + mag_value(hi)) / 2.0) {
                        Ordering::Less => hi,
                        Ordering::Greater => lo,
                        Ordering::Equal if lo & 1 == 0 => lo,
                        Ordering::Equal => hi,
                    },
                }
            };
            Want::Bits(signed(*n, m) as u64)
        }
    }
}

/// The sign of an exact zero sum of addends with signs `sa`, `sb` (IEEE 754 §6.3): their sign
/// when they agree, else +0, or −0 under rm.
fn zero_sum_sign(sa: bool, sb: bool, mode: Mode) -> bool {
    if sa == sb { sa } else { mode == Mode::Rm }
}

/// x + y for finite f64 values whose sum need not be representable: s = fl(x + y) and its
/// rounding error e (Knuth's two-sum, exact in f64), so x + y = s + e exactly. A candidate c near
/// |s| compares as c − |s| (exact by Sterbenz: the search only visits c within a few f32 ulps of
/// |s|) with e taken toward the magnitude. None when x + y = 0.
fn exact_sum(x: f64, y: f64) -> Option<Exact> {
    let s = x + y;
    let yy = s - x;
    let err = (x - (s - yy)) + (y - yy);
    if s == 0.0 {
        return None; // then err = 0 as well
    }
    let m = s.abs();
    let e = if s < 0.0 { -err } else { err };
    Some(Exact::Value(s < 0.0, m, Box::new(move |c: f64| (c - m).partial_cmp(&e).unwrap())))
}

/// a + b exactly.
fn exact_add(a: u32, b: u32, mode: Mode) -> Exact {
    if is_nan(a) || is_nan(b) {
        return Exact::Nan;
    }
    let (x, y) = (f(a), f(b));
    if x.is_infinite() || y.is_infinite() {
        return if x.is_infinite() && y.is_infinite() && neg(a) != neg(b) {
            Exact::Nan
        } else {
            Exact::Inf(if x.is_infinite() { neg(a) } else { neg(b) })
        };
    }
    exact_sum(x, y).unwrap_or(Exact::Zero(zero_sum_sign(neg(a), neg(b), mode)))
}

fn exact_mul(a: u32, b: u32) -> Exact {
    if is_nan(a) || is_nan(b) {
        return Exact::Nan;
    }
    let (x, y) = (f(a), f(b));
    let n = neg(a) != neg(b);
    if x.is_infinite() || y.is_infinite() {
        return if x == 0.0 || y == 0.0 { Exact::Nan } else { Exact::Inf(n) };
    }
    if x == 0.0 || y == 0.0 {
        return Exact::Zero(n);
    }
    exact_f64(x * y) // 24 × 24 significand bits: exact in f64
}

/// a·b + c with one rounding: the product is exact in f64, the sum exact as s + e.
fn exact_fma(a: u32, b: u32, c: u32, mode: Mode) -> Exact {
    if is_nan(a) || is_nan(b) || is_nan(c) {
        return Exact::Nan;
    }
    let (x, y, z) = (f(a), f(b), f(c));
    let pn = neg(a) != neg(b);
    if x.is_infinite() || y.is_infinite() {
        if x == 0.0 || y == 0.0 || (z.is_infinite() && neg(c) != pn) {
            return Exact::Nan;
        }
        return Exact::Inf(pn);
    }
    if z.is_infinite() {
        return Exact::Inf(neg(c));
    }
    exact_sum(x * y, z).unwrap_or(Exact::Zero(zero_sum_sign(pn, neg(c), mode)))
}

/// a / b: a candidate y compares with |a/b| as y·|b| with |a| (exact: ≤ 25 + 24 bits).
fn exact_div(a: u32, b: u32) -> Exact {
    if is_nan(a) || is_nan(b) {
        return Exact::Nan;
    }
    let (x, y) = (f(a).abs(), f(b).abs());
    let n = neg(a) != neg(b);
    match (x.is_infinite(), y.is_infinite(), x == 0.0, y == 0.0) {
        (true, true, _, _) | (_, _, true, true) => Exact::Nan,
        (true, _, _, _) | (_, _, _, true) => Exact::Inf(n),
        (_, true, _, _) | (_, _, true, _) => Exact::Zero(n),
        _ => Exact::Value(n, x / y, Box::new(move |q: f64| (q * y).partial_cmp(&x).unwrap())),
    }
}

/// √a: a candidate y compares with √a as y² with a (exact: ≤ 50 bits).
fn exact_sqrt(a: u32) -> Exact {
    let x = f(a);
    if is_nan(a) || (x < 0.0) {
        Exact::Nan
    } else if x == 0.0 {
        Exact::Zero(neg(a))
    } else if x.is_infinite() {
        Exact::Inf(false)
    } else {
        Exact::Value(false, x.sqrt(), Box::new(move |y: f64| (y * y).partial_cmp(&x).unwrap()))
    }
}

/// 1/a: a candidate y compares with 1/|a| as y·|a| with 1.
fn exact_rcp(a: u32) -> Exact {
    exact_div(0x3f80_0000, a)
}

/// A random f32 pattern with its biased exponent in `exp` (0 gives subnormals).
fn rand_f32(rng: &mut Rng, exp: std::ops::RangeInclusive<u32>) -> u32 {
    let bits = rng.next_u64();
    let (lo, hi) = (*exp.start(), *exp.end());
    let e = lo + (bits >> 40) as u32 % (hi - lo + 1);
    (bits as u32 & (SIGN | 0x007f_ffff)) | (e << 23)
}

fn exponent(bits: u32) -> u32 {
    (bits >> 23) & 0xff
}

/// A random pattern whose exponent is within `spread` of `near`'s, clamped to the finite range.
fn rand_near(rng: &mut Rng, near: u32, spread: i32) -> u32 {
    let e = (exponent(near) as i32 + rng.below(2 * spread as usize + 1) as i32 - spread).clamp(0, 254) as u32;
    rand_f32(rng, e..=e)
}

// ---------------------------------------------------------------------------------------------
// f32 arithmetic with rounding modifiers
// ---------------------------------------------------------------------------------------------

/// Operand pairs for add/sub: every pair of specials, boundary pairs, random pairs with close
/// exponents (rounding decided deep in the significand) and raw random pairs.
fn add_operands(rng: &mut Rng) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = SPECIALS.iter().flat_map(|&a| SPECIALS.iter().map(move |&b| (a, b))).collect();
    v.extend([
        (MAX, MAX),
        (MAX, 0x7300_0000),         // MAX + ulp(MAX)/2: the overflow tie
        (MAX, 0x7280_0000),         // MAX + ulp/4
        (0xff7f_ffff, 0xf300_0000), // −MAX − ulp/2
        (MAX, 0xf280_0000),         // MAX − ulp/4
        (0x3f80_0000, 0x3380_0000), // 1 + 2^-24: tie to even (down)
        (0x3f80_0001, 0x3380_0000), // tie to even (up)
        (0x3f80_0000, 0xb380_0000), // 1 − 2^-24: exact
        (0x3f80_0000, 0x3380_0001), // just above the tie
        (0x3f80_0000, 0x337f_ffff), // just below the tie
        (0x0080_0000, 0x8000_0001), // normal − subnormal → largest subnormal
        (0x007f_ffff, 0x0000_0001), // subnormal + subnormal → smallest normal
        (0x3f80_0000, 0xbf80_0000), // exact cancellation: +0 (−0 under rm)
        (0x8000_0000, 0x8000_0000), // −0 + −0
    ]);
    for _ in 0..3000 {
        let a = rand_f32(rng, 0..=254);
        let b = rand_near(rng, a, 26);
        v.push((a, b));
    }
    v.extend((0..1000).map(|_| (rng.next_u64() as u32, rng.next_u64() as u32)));
    v
}

fn fma_operands(rng: &mut Rng) -> Vec<(u32, u32, u32)> {
    let sp =
        [0x0000_0000, 0x8000_0000, 0x3f80_0000, 0xbf80_0000, 0x0000_0001, MAX, INF, 0xff80_0000, QNAN, 0x3f80_0001];
    let mut v = Vec::new();
    for &a in &sp {
        for &b in &sp {
            for &c in &sp {
                v.push((a, b, c));
            }
        }
    }
    // The fused product is not rounded: a·b has 48 bits, c = −RN(a·b) leaves its low part.
    for _ in 0..500 {
        let a = rand_f32(rng, 100..=154);
        let b = rand_f32(rng, 100..=154);
        let p = (f(a) * f(b)) as f32;
        v.push((a, b, (-p).to_bits()));
    }
    // c of an exponent near the product's, so that its bits and the product's overlap; over the
    // whole exponent range, so subnormal and overflowing results occur. Half with few
    // significand bits (12 + 12: the product fits f32, sums often exact or ties).
    for _ in 0..3000 {
        let few = if v.len() % 2 == 0 { 0xffff_f000 } else { u32::MAX };
        let a = rand_f32(rng, 0..=254) & few;
        let b = rand_f32(rng, 0..=254) & few;
        let pe = (exponent(a) as i32 + exponent(b) as i32 - 127).clamp(0, 254) as u32;
        let c = rand_near(rng, pe << 23, 20);
        v.push((a, b, c));
    }
    v.extend((0..1000).map(|_| (rng.next_u64() as u32, rng.next_u64() as u32, rng.next_u64() as u32)));
    // Products below the normal range (to subnormals or past the smallest one) plus ±0 or a
    // smallest subnormal: the sticky bits of a tiny product decide the directed roundings.
    for _ in 0..300 {
        let (a, b) = (rand_f32(rng, 0..=110), rand_f32(rng, 0..=110));
        let pick = rng.below(4);
        let c = [0, SIGN, 1, SIGN | 1][pick];
        v.push((a, b, c));
    }
    v
}

#[test]
fn f32_rounding_modifiers() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0001);
    let mut report = Report::new("f32 add/sub/mul/fma/div/sqrt/rcp with .rn/.rz/.rm/.rp");
    let adds = add_operands(&mut rng);
    let muls: Vec<(u32, u32)> =
        adds.iter().copied().chain((0..3000).map(|_| (rng.next_u64() as u32, rng.next_u64() as u32))).collect();
    let fmas = fma_operands(&mut rng);
    // Unary operands: specials, raw random patterns and subnormals (rcp of one overflows).
    let mut unary: Vec<u32> = SPECIALS.to_vec();
    unary.extend((0..4000).map(|_| rng.next_u64() as u32));
    unary.extend((0..300).map(|_| rand_f32(&mut rng, 0..=0)));
    let (ya, yb): (Vec<u32>, Vec<u32>) = adds.iter().copied().unzip();
    let yz = vec![0u32; ya.len()];
    let (fa, fb, fc): (Vec<u32>, Vec<u32>, Vec<u32>) =
        (fmas.iter().map(|t| t.0).collect(), fmas.iter().map(|t| t.1).collect(), fmas.iter().map(|t| t.2).collect());

    for mode in MODES {
        let m = mode as u32;
        let r = mode.name();
        // add and sub (kind 0, 1): sub is add of the negated operand, exactly (IEEE 754).
        for (kind, opc) in [(0u32, "add"), (1, "sub")] {
            let cases: Vec<Case> = adds
                .iter()
                .map(|&(a, b)| {
                    let e = exact_add(a, if kind == 1 { b ^ SIGN } else { b }, mode);
                    case(format!("{opc}.{r} {a:#010x} {b:#010x}"), round_exact(&e, mode))
                })
                .collect();
            report.area(&dev, &format!("{opc}.{r}.f32"), &format!("§9.7.3 {opc}"), &cases, &|d| {
                elementwise(d, "conf_f32_rounded", &[&ya, &yb, &yz], 4 * kind + m)
            });
        }
        // mul: every product of two f32s is exact in f64, so raw random pairs serve too.
        let cases: Vec<Case> = muls
            .iter()
            .map(|&(a, b)| case(format!("mul.{r} {a:#010x} {b:#010x}"), round_exact(&exact_mul(a, b), mode)))
            .collect();
        let (xa, xb): (Vec<u32>, Vec<u32>) = muls.iter().copied().unzip();
        let zeros = vec![0u32; xa.len()];
        report.area(&dev, &format!("mul.{r}.f32"), "§9.7.3 mul", &cases, &|d| {
            elementwise(d, "conf_f32_rounded", &[&xa, &xb, &zeros], 8 + m)
        });
        // fma
        let cases: Vec<Case> = fmas
            .iter()
            .map(|&(a, b, c)| {
                case(format!("fma.{r} {a:#010x} {b:#010x} {c:#010x}"), round_exact(&exact_fma(a, b, c, mode), mode))
            })
            .collect();
        report.area(&dev, &format!("fma.{r}.f32"), "§9.7.3 fma", &cases, &|d| {
            elementwise(d, "conf_f32_rounded", &[&fa, &fb, &fc], 12 + m)
        });
        // div: exact comparisons need no restriction on the operands.
        let cases: Vec<Case> = muls
            .iter()
            .map(|&(a, b)| case(format!("div.{r} {a:#010x} {b:#010x}"), round_exact(&exact_div(a, b), mode)))
            .collect();
        report.area(&dev, &format!("div.{r}.f32"), "§9.7.3 div (IEEE, not .approx/.full)", &cases, &|d| {
            elementwise(d, "conf_f32_rounded", &[&xa, &xb, &zeros], 16 + m)
        });
        // sqrt, rcp
        let zu = vec![0u32; unary.len()];
        for (kind, opc, ex) in [(5u32, "sqrt", exact_sqrt as fn(u32) -> Exact), (6, "rcp", exact_rcp)] {
            let cases: Vec<Case> =
                unary.iter().map(|&a| case(format!("{opc}.{r} {a:#010x}"), round_exact(&ex(a), mode))).collect();
            report.area(&dev, &format!("{opc}.{r}.f32"), &format!("§9.7.3 {opc} (IEEE)"), &cases, &|d| {
                elementwise(d, "conf_f32_rounded", &[&unary, &zu, &zu], 4 * kind + m)
            });
        }
    }
    report.finish(&dev);
}

/// ex2.approx.ftz.f32 (ISA: at most 2 ulp from the correctly rounded result) and
/// rcp.approx.ftz.f32 (at most 1 ulp). .ftz: subnormal inputs count as zeros of their sign and
/// subnormal results may be flushed to zero.
#[test]
fn f32_approximate() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0002);
    let mut report = Report::new("f32 approximate instructions (.approx.ftz)");
    let flush = |a: u32| if exponent(a) == 0 { a & SIGN } else { a };
    // ex2 over its interesting range (−160..130), plus specials.
    let mut xs: Vec<u32> = SPECIALS.to_vec();
    xs.extend([0x42fe_0000, 0x4300_0000, 0xc2fc_0000, 0xc2fe_0000, 0xc316_0000, 0x3f00_0000]); // 127, 128, −126, −127, −150, 0.5
    xs.extend((0..3000).map(|_| (rng.range(-160.0, 130.0) as f32).to_bits()));
    xs.extend((0..1000).map(|_| (rng.range(-1.0, 1.0) as f32).to_bits()));
    let cases: Vec<Case> = xs
        .iter()
        .map(|&a| {
            let x = f(flush(a));
            let want = if x.is_nan() {
                Want::Nan(Fmt::F32)
            } else if x == f64::NEG_INFINITY {
                Want::Bits(0)
            } else if x == f64::INFINITY {
                Want::Bits(INF as u64)
            } else {
                Want::Near { bits: ((x.exp2()) as f32).to_bits(), ulps: 2 }
            };
            case(format!("ex2 {a:#010x}"), want)
        })
        .collect();
    report.area(&dev, "ex2.approx.ftz.f32", "§9.7.3 ex2 (max 2 ulp)", &cases, &|d| {
        elementwise(d, "conf_f32_approx", &[&xs], 0)
    });

    let mut xs: Vec<u32> = SPECIALS.to_vec();
    xs.extend([0x7e80_0000, 0x7e80_0001, 0x7f00_0000, 0x0040_0000, 0x0100_0000]); // 2^126, 2^127, subnormal, 2^-125
    xs.extend((0..4000).map(|_| rng.next_u64() as u32));
    let cases: Vec<Case> = xs
        .iter()
        .map(|&a| {
            let x = f(flush(a));
            let want = if x.is_nan() {
                Want::Nan(Fmt::F32)
            } else if x == 0.0 {
                Want::Bits(signed(neg(a), INF) as u64)
            } else if x.is_infinite() {
                Want::Bits(signed(neg(a), 0) as u64)
            } else {
                Want::Near { bits: ((1.0 / x) as f32).to_bits(), ulps: 1 }
            };
            case(format!("rcp.approx {a:#010x}"), want)
        })
        .collect();
    report.area(&dev, "rcp.approx.ftz.f32", "§9.7.3 rcp (.approx: max 1 ulp)", &cases, &|d| {
        elementwise(d, "conf_f32_approx", &[&xs], 1)
    });
    report.finish(&dev);
}

// ---------------------------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------------------------

/// Round-to-nearest-even of an f32 pattern to its top 16 bits (bf16), by integer arithmetic.
fn bf16_rn(x: u32) -> Want {
    if is_nan(x) {
        return Want::Nan(Fmt::Bf16);
    }
    let (hi, lo) = (x >> 16, x & 0xffff);
    let up = lo > 0x8000 || (lo == 0x8000 && hi & 1 == 1);
    Want::Bits((hi + up as u32) as u64) // a carry moves into the exponent: up to inf
}

/// cvt.rna.tf32.f32: to nearest with ties away from zero at 10 fraction bits. Adding half of
/// the dropped range to the magnitude and truncating does exactly that (carries reach inf).
/// The ISA defines the tf32 value (the top 19 bits); the low 13 bits are checked only against
/// each other (GPU vs emulator) — they are zero on both by design, but not asserted here.
fn tf32_rna(x: u32) -> Want {
    if is_nan(x) {
        return Want::Nan(Fmt::F32);
    }
    Want::Masked(((x + 0x1000) & !0x1fff) as u64, 0xffff_e000)
}

/// cvt.{rni,rzi,rmi,rpi}.{s32,u32}.f32: rounded to an integer, then clamped to the
/// destination's range (float-to-integer cvt saturates); NaN converts to 0.
fn to_int(x: u32, mode: Mode, unsigned: bool) -> Want {
    let v = f32::from_bits(x);
    if v.is_nan() {
        return Want::Bits(0);
    }
    let r = match mode {
        Mode::Rn => v.round_ties_even(),
        Mode::Rz => v.trunc(),
        Mode::Rm => v.floor(),
        Mode::Rp => v.ceil(),
    } as f64;
    Want::Bits(if unsigned {
        r.clamp(0.0, u32::MAX as f64) as u32 as u64
    } else {
        r.clamp(i32::MIN as f64, i32::MAX as f64) as i32 as u32 as u64
    })
}

/// cvt.sat.f32.f32: clamped to [0.0, 1.0], NaN to +0.0. The sign of a −0.0 input's result is
/// not pinned by "clamp to [0, 1]": either zero.
fn sat(x: u32) -> Want {
    let v = f32::from_bits(x);
    if v.is_nan() {
        Want::Bits(0)
    } else if x == SIGN {
        Want::Either(0, SIGN as u64)
    } else if v < 0.0 {
        Want::Bits(0)
    } else if v > 1.0 {
        Want::Bits(0x3f80_0000)
    } else {
        Want::Bits(x as u64)
    }
}

#[test]
fn conversions_from_f32() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0003);
    let mut report = Report::new("cvt from f32");
    let mut xs: Vec<u32> = SPECIALS.to_vec();
    // bf16/tf32 ties and their neighbours (even and odd kept bit), at 1 and near the top.
    for base in [0x3f80_0000u32, 0x3f81_0000, 0x7f7f_0000, 0x0001_0000, 0x4000_0000] {
        for low in [0x8000u32, 0x7fff, 0x8001, 0x1000, 0x0fff, 0x1001, 0x3000, 0xffff] {
            xs.push(base | low);
            xs.push((base | low) ^ SIGN);
        }
    }
    // Integer conversions: halves, bounds of s32/u32 and just around them.
    for v in [0.5f32, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 2147483520.0, 2147483648.0, 4294967040.0, 4294967296.0] {
        xs.push(v.to_bits());
        xs.push((-v).to_bits());
    }
    xs.extend([0x4eff_ffff, 0x4f00_0000, 0xcf00_0000, 0xcf00_0001, 0x4f7f_ffff, 0x4f80_0000, 0x3f80_0001, 0x3f7f_ffff]);
    xs.extend((0..2000).map(|_| rng.next_u64() as u32));
    xs.extend((0..2000).map(|_| (rng.range(-3e9, 5e9) as f32).to_bits()));
    xs.extend((0..1000).map(|_| (rng.range(-4.0, 4.0) as f32).to_bits()));

    let xr: &[u32] = &xs;
    let run = move |op: u32| move |d: &Arc<Cuda>| elementwise(d, "conf_cvt_f32", &[xr], op);
    let cases: Vec<Case> = xs.iter().map(|&x| case(format!("bf16 {x:#010x}"), bf16_rn(x))).collect();
    report.area(&dev, "cvt.rn.bf16.f32", "§9.7.9 cvt (bf16: .rn, subnormals kept)", &cases, &run(0));
    let cases: Vec<Case> = xs.iter().map(|&x| case(format!("tf32 {x:#010x}"), tf32_rna(x))).collect();
    report.area(&dev, "cvt.rna.tf32.f32", "§9.7.9 cvt (tf32: .rna ties away)", &cases, &run(1));
    for (i, mode) in MODES.into_iter().enumerate() {
        let r = mode.name();
        let cases: Vec<Case> = xs.iter().map(|&x| case(format!("s32.{r} {x:#010x}"), to_int(x, mode, false))).collect();
        report.area(&dev, &format!("cvt.{r}i.s32.f32"), "§9.7.9 cvt (float→int saturates)", &cases, &run(2 + i as u32));
        let cases: Vec<Case> = xs.iter().map(|&x| case(format!("u32.{r} {x:#010x}"), to_int(x, mode, true))).collect();
        report.area(&dev, &format!("cvt.{r}i.u32.f32"), "§9.7.9 cvt (float→int saturates)", &cases, &run(6 + i as u32));
    }
    let cases: Vec<Case> = xs.iter().map(|&x| case(format!("sat {x:#010x}"), sat(x))).collect();
    report.area(&dev, "cvt.sat.f32.f32", "§9.7.9 cvt, §9.7.3 .sat", &cases, &run(10));
    report.finish(&dev);
}

#[test]
fn conversions_f64_f32() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0004);
    let mut report = Report::new("cvt between f64 and f32");
    let mut xs: Vec<u64> = [0.0f64, -0.0, 1.0, -1.0, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN_POSITIVE]
        .iter()
        .map(|v| v.to_bits())
        .collect();
    xs.extend([0x7ff8_0000_0000_0000, 0x7ff0_0000_0000_0001, 0xfff8_0000_dead_beef, 1, 0x8000_0000_0000_0001]);
    // Around f32 boundaries: ties at 1 (1 + 2^-24), the overflow tie (MAX + ulp/2), 2^128,
    // the smallest subnormal's half (2^-150) and subnormal ties; each ± one f64 ulp.
    for v in [
        1.0 + 2f64.powi(-24),
        1.0 + 3.0 * 2f64.powi(-24),
        f(MAX) + 2f64.powi(103),
        f(MAX),
        2f64.powi(128),
        2f64.powi(-150),
        3.0 * 2f64.powi(-150),
        2f64.powi(-149),
        2f64.powi(-126) - 2f64.powi(-150),
        0.1,
    ] {
        for b in [v.to_bits() - 1, v.to_bits(), v.to_bits() + 1] {
            xs.push(b);
            xs.push(b ^ (1 << 63));
        }
    }
    // Random values over f32's exponent range and a little beyond.
    xs.extend((0..3000).map(|_| {
        let e = 1023 - 160 + rng.below(300) as u64;
        (rng.next_u64() & 0x800f_ffff_ffff_ffff) | (e << 52)
    }));
    for (i, mode) in MODES.into_iter().enumerate() {
        let r = mode.name();
        let cases: Vec<Case> = xs
            .iter()
            .map(|&x| case(format!("f32.f64.{r} {x:#018x}"), round_exact(&exact_f64(f64::from_bits(x)), mode)))
            .collect();
        report
            .area(&dev, &format!("cvt.{r}.f32.f64"), "§9.7.9 cvt (f64→f32)", &cases, &|d| cvt_f64(d, &xs, i as u32));
    }
    // f32 → f64 is exact: the f32 patterns in the low halves.
    let ws: Vec<u64> =
        SPECIALS.iter().map(|&x| x as u64).chain((0..3000).map(|_| rng.next_u64() & 0xffff_ffff)).collect();
    let cases: Vec<Case> = ws
        .iter()
        .map(|&x| {
            let v = f32::from_bits(x as u32);
            let want = if v.is_nan() { Want::Nan(Fmt::F64) } else { Want::Bits((v as f64).to_bits()) };
            case(format!("f64.f32 {x:#010x}"), want)
        })
        .collect();
    report.area(&dev, "cvt.f64.f32", "§9.7.9 cvt (f32→f64, exact)", &cases, &|d| cvt_f64(d, &ws, 4));
    report.finish(&dev);
}

fn cvt_f64(dev: &Arc<Cuda>, xs: &[u64], op: u32) -> Vec<u64> {
    let n = xs.len();
    let a = upload(dev, xs);
    let out = upload(dev, &vec![0u64; n]);
    let (grid, block) = grid_1d(n);
    dev.launch(FILE, "conf_cvt_f64", grid, block, 0, &[ptr(&a), ptr(&out), Arg::U32(n as u32), Arg::U32(op)])
        .expect("launch");
    out.read(0..n).expect("copy from the device")
}

// ---------------------------------------------------------------------------------------------
// Comparisons, min/max, copysign
// ---------------------------------------------------------------------------------------------

/// min/max.f32: a NaN operand is ignored (both NaN: a NaN); the one of two zeros of different
/// signs is not pinned here (either zero).
fn min_max(a: u32, b: u32, max: bool) -> Want {
    let (x, y) = (f32::from_bits(a), f32::from_bits(b));
    match (x.is_nan(), y.is_nan()) {
        (true, true) => Want::Nan(Fmt::F32),
        (true, false) => Want::Bits(b as u64),
        (false, true) => Want::Bits(a as u64),
        _ if x == 0.0 && y == 0.0 && a != b => Want::Either(0, SIGN as u64),
        _ => Want::Bits(if (x < y) != max { a } else { b } as u64),
    }
}

/// The setp mask (bit order of conf_compare): ordered comparisons are false and unordered ones
/// true when either operand is NaN; num/nan test for that.
fn setp_mask(a: u32, b: u32) -> u32 {
    let (x, y) = (f32::from_bits(a), f32::from_bits(b));
    let un = x.is_nan() || y.is_nan();
    let bits = [
        !un && x == y,
        !un && x != y,
        !un && x < y,
        !un && x <= y,
        !un && x > y,
        !un && x >= y,
        un || x == y,
        un || x != y,
        un || x < y,
        un || x <= y,
        un || x > y,
        un || x >= y,
        !un,
        un,
    ];
    bits.iter().enumerate().map(|(k, &t)| (t as u32) << k).sum()
}

#[test]
fn comparisons() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0005);
    let mut report = Report::new("min/max, copysign, setp");
    let mut pairs: Vec<(u32, u32)> = SPECIALS.iter().flat_map(|&a| SPECIALS.iter().map(move |&b| (a, b))).collect();
    for _ in 0..2000 {
        let a = rng.next_u64() as u32;
        // Half the partners close by (equal, ulp neighbours, the negation), half random.
        let b = match rng.below(6) {
            0 => a,
            1 => a.wrapping_add(1),
            2 => a.wrapping_sub(1),
            3 => a ^ SIGN,
            _ => rng.next_u64() as u32,
        };
        pairs.push((a, b));
    }
    let (xa, xb): (Vec<u32>, Vec<u32>) = pairs.iter().copied().unzip();
    let (ra, rb): (&[u32], &[u32]) = (&xa, &xb);
    let run = move |op: u32| move |d: &Arc<Cuda>| elementwise(d, "conf_compare", &[ra, rb], op);
    let cases: Vec<Case> =
        pairs.iter().map(|&(a, b)| case(format!("min {a:#010x} {b:#010x}"), min_max(a, b, false))).collect();
    report.area(&dev, "min.f32", "§9.7.3 min", &cases, &run(0));
    let cases: Vec<Case> =
        pairs.iter().map(|&(a, b)| case(format!("max {a:#010x} {b:#010x}"), min_max(a, b, true))).collect();
    report.area(&dev, "max.f32", "§9.7.3 max", &cases, &run(1));
    // copysign.f32 d, a, b: b's magnitude with a's sign; a NaN b keeps its NaN-ness only.
    let cases: Vec<Case> = pairs
        .iter()
        .map(|&(a, b)| {
            let want = if is_nan(b) { Want::Nan(Fmt::F32) } else { Want::Bits((mag(b) | (a & SIGN)) as u64) };
            case(format!("copysign {a:#010x} {b:#010x}"), want)
        })
        .collect();
    report.area(&dev, "copysign.f32", "§9.7.3 copysign", &cases, &run(2));
    let cases: Vec<Case> = pairs
        .iter()
        .map(|&(a, b)| case(format!("setp {a:#010x} {b:#010x}"), Want::Bits(setp_mask(a, b) as u64)))
        .collect();
    report.area(&dev, "setp.{eq..nan}.f32 (14 ops)", "§9.7.1 floating-point comparison table, setp", &cases, &run(3));
    report.finish(&dev);
}

// ---------------------------------------------------------------------------------------------
// Integer and bit-field instructions
// ---------------------------------------------------------------------------------------------

/// prmt.b32 d, a, b, c (default mode): the bytes of {b, a} are numbered 0-3 (a) and 4-7 (b);
/// nibble i of c picks result byte i: its low 3 bits the source byte, its top bit (sign mode)
/// replicates the source byte's top bit over the result byte.
fn prmt(a: u32, b: u32, c: u32) -> u32 {
    let bytes = ((b as u64) << 32) | a as u64;
    (0..4)
        .map(|i| {
            let sel = (c >> (4 * i)) & 0xf;
            let byte = ((bytes >> (8 * (sel & 7))) & 0xff) as u32;
            let out = if sel & 8 == 0 {
                byte
            } else if byte & 0x80 != 0 {
                0xff
            } else {
                0
            };
            out << (8 * i)
        })
        .sum()
}

/// bfi.b32 d, a, b, c, e: pos = c & 0xff, len = e & 0xff; d = b with bits pos.. of it replaced
/// by the low len bits of a, as far as bit 31 (the ISA's loop over i < len, pos + i ≤ 31).
fn bfi(a: u32, b: u32, c: u32, e: u32) -> u32 {
    let (pos, len) = (c & 0xff, e & 0xff);
    let mut d = b;
    for i in 0..len {
        if pos + i > 31 {
            break;
        }
        d = (d & !(1 << (pos + i))) | (((a >> i) & 1) << (pos + i));
    }
    d
}

#[test]
fn integer_and_bitfield() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0006);
    let mut report = Report::new("prmt, bfi, div/rem");
    let n = 3000;
    let a: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
    let b: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
    // prmt selectors: random nibbles (sign mode included) and random upper bits (ignored).
    let c: Vec<u32> = (0..n).map(|_| rng.next_u64() as u32).collect();
    let cases: Vec<Case> = (0..n)
        .map(|i| case(format!("prmt {:#x} {:#x} {:#x}", a[i], b[i], c[i]), Want::Bits(prmt(a[i], b[i], c[i]) as u64)))
        .collect();
    report.area(&dev, "prmt.b32", "§9.7 prmt (default mode)", &cases, &|d| {
        elementwise(d, "conf_int", &[&a, &b, &c, &c], 0)
    });
    // bfi: pos and len mostly in 0..40 (past the top too), sometimes with high bits set.
    let pos: Vec<u32> =
        (0..n).map(|i| rng.below(40) as u32 | if i % 7 == 0 { rng.next_u64() as u32 & !0xff } else { 0 }).collect();
    let len: Vec<u32> =
        (0..n).map(|i| rng.below(40) as u32 | if i % 5 == 0 { rng.next_u64() as u32 & !0xff } else { 0 }).collect();
    let cases: Vec<Case> = (0..n)
        .map(|i| {
            case(
                format!("bfi {:#x} {:#x} {} {}", a[i], b[i], pos[i], len[i]),
                Want::Bits(bfi(a[i], b[i], pos[i], len[i]) as u64),
            )
        })
        .collect();
    report.area(&dev, "bfi.b32", "§9.7 bfi", &cases, &|d| elementwise(d, "conf_int", &[&a, &b, &pos, &len], 1));

    // div/rem: divisors of every size, zero, ±1, and the s32 overflow MIN / −1.
    let mut x: Vec<u32> = a.clone();
    let mut y: Vec<u32> = b.iter().map(|&v| v >> rng.below(32)).collect();
    for (p, q) in
        [(7, 0), (0, 0), (u32::MAX, 0), (0x8000_0000, u32::MAX), (0x8000_0000, 1), (5, u32::MAX), (u32::MAX, u32::MAX)]
    {
        x.push(p);
        y.push(q);
    }
    let m = x.len();
    for (op, name, unsigned, rem) in [
        (2, "div.u32", true, false),
        (3, "rem.u32", true, true),
        (4, "div.s32", false, false),
        (5, "rem.s32", false, true),
    ] {
        let cases: Vec<Case> = (0..m)
            .map(|i| {
                let (p, q) = (x[i], y[i]);
                let (sp, sq) = (p as i32, q as i32);
                // By zero the ISA gives "an unspecified, machine-specific value"; MIN / −1 has no
                // s32 result; rem of negative operands is machine-dependent (its sign follows
                // the division's rounding).
                let want = if q == 0
                    || (!unsigned && sp == i32::MIN && sq == -1)
                    || (rem && !unsigned && (sp < 0 || sq < 0))
                {
                    Want::Free
                } else if unsigned {
                    Want::Bits(if rem { p % q } else { p / q } as u64)
                } else {
                    Want::Bits(if rem { sp % sq } else { sp / sq } as u32 as u64) // truncating
                };
                case(format!("{name} {p:#x} {q:#x}"), want)
            })
            .collect();
        report.area(&dev, name, "§9.7.1 div/rem", &cases, &|d| elementwise(d, "conf_int", &[&x, &y, &y, &y], op));
    }
    report.finish(&dev);
}

// ---------------------------------------------------------------------------------------------
// Warp collectives
// ---------------------------------------------------------------------------------------------

/// shfl.sync per the ISA's pseudocode: bval = b[4:0], cval = c[4:0], segmask = c[12:8];
/// minLane = lane & segmask, maxLane = minLane | (cval & ~segmask); the source lane j and the
/// predicate by mode; an invalid j reads the lane's own value. Returns (value, predicate).
fn shfl(src: &[u32; 32], lane_b: &[u32; 32], c: u32, mode: u32, lane: usize) -> (u32, u32) {
    let l = lane as i32;
    let bval = (lane_b[lane] & 0x1f) as i32;
    let cval = (c & 0x1f) as i32;
    let seg = ((c >> 8) & 0x1f) as i32;
    let min_lane = l & seg;
    let max_lane = min_lane | (cval & !seg);
    let (j, ok) = match mode {
        0 => (l ^ bval, (l ^ bval) <= max_lane),
        1 => (l - bval, l - bval >= max_lane),
        2 => (l + bval, l + bval <= max_lane),
        _ => {
            let j = min_lane | (bval & !seg);
            (j, j <= max_lane)
        }
    };
    let j = if ok { j } else { l };
    (src[j as usize], ok as u32)
}

#[test]
fn warp_shuffle_and_vote() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0007);
    let mut report = Report::new("shfl.sync, vote.sync.any");
    let src: [u32; 32] = std::array::from_fn(|_| rng.next_u64() as u32);
    let uniform = |v: u32| [v; 32];
    let random_b = |rng: &mut Rng| -> [u32; 32] { std::array::from_fn(|_| rng.next_u64() as u32 & 0x3f) };
    // (mode, c, per-lane b): widths 32, 16 and 8 as __shfl*_sync encode them (segmask
    // (32 − width) << 8; clamp 0x1f, or 0 for up), and random c.
    let mut configs: Vec<(u32, u32, [u32; 32])> = Vec::new();
    for b in [1, 2, 4, 8, 16, 0] {
        configs.push((0, 0x1f, uniform(b)));
    }
    configs.push((0, 0x181f, uniform(4)));
    configs.push((0, 0x1f, random_b(&mut rng)));
    for b in [1, 3, 31] {
        configs.push((1, 0, uniform(b)));
        configs.push((2, 0x1f, uniform(b)));
    }
    configs.push((1, 0x1800, uniform(2)));
    configs.push((2, 0x101f, uniform(5)));
    configs.push((3, 0x1f, random_b(&mut rng)));
    configs.push((3, 0x181f, random_b(&mut rng)));
    configs.push((3, 0x1f, uniform(7)));
    for _ in 0..8 {
        let mode = rng.below(4) as u32;
        let c = rng.next_u64() as u32 & 0x1fff;
        configs.push((mode, c, random_b(&mut rng)));
    }
    let names = ["bfly", "up", "down", "idx"];
    let mut cases = Vec::new();
    for &(mode, c, ref lb) in &configs {
        let expected: Vec<(u32, u32)> = (0..32).map(|l| shfl(&src, lb, c, mode, l)).collect();
        for (l, &(v, _)) in expected.iter().enumerate() {
            case_push(&mut cases, format!("shfl.{} c={c:#x} b={} lane {l} value", names[mode as usize], lb[l]), v);
        }
        for (l, &(_, p)) in expected.iter().enumerate() {
            case_push(&mut cases, format!("shfl.{} c={c:#x} b={} lane {l} predicate", names[mode as usize], lb[l]), p);
        }
    }
    report.area(&dev, "shfl.sync.{bfly,up,down,idx}.b32", "§9.7 shfl.sync", &cases, &|d| {
        let s = upload(d, &src);
        let mut all = Vec::new();
        for &(mode, c, ref lb) in &configs {
            let b = upload(d, lb);
            let out = upload(d, &[0u32; 64]);
            warp(d, "conf_shfl", &[ptr(&s), ptr(&b), Arg::U32(c), ptr(&out), Arg::U32(mode)]);
            all.extend(out.read(0..64).expect("copy from the device").into_iter().map(u64::from));
        }
        all
    });

    let mut preds: Vec<[u32; 32]> = vec![[0; 32], [1; 32]];
    for lane in [0, 17, 31] {
        let mut p = [0; 32];
        p[lane] = rng.next_u64() as u32 | 1;
        preds.push(p);
    }
    preds.push(std::array::from_fn(|_| rng.next_u64() as u32 & 1));
    let mut cases = Vec::new();
    for (k, p) in preds.iter().enumerate() {
        let any = p.iter().any(|&v| v != 0) as u32;
        for l in 0..32 {
            case_push(&mut cases, format!("vote.any pattern {k} lane {l}"), any);
        }
    }
    report.area(&dev, "vote.sync.any.pred", "§9.7 vote.sync", &cases, &|d| {
        let mut all = Vec::new();
        for p in &preds {
            let pb = upload(d, p);
            let out = upload(d, &[0u32; 32]);
            warp(d, "conf_vote_any", &[ptr(&pb), ptr(&out)]);
            all.extend(out.read(0..32).expect("copy from the device").into_iter().map(u64::from));
        }
        all
    });
    report.finish(&dev);
}

fn case_push(cases: &mut Vec<Case>, label: String, bits: u32) {
    cases.push(case(label, Want::Bits(bits as u64)));
}

/// ldmatrix .x4: lanes 8i..8i+7 give the row addresses of matrix i, which lands in register i.
/// Without .trans lane l holds row l/4, columns 2(l%4) and 2(l%4)+1 (low half first); with
/// .trans it holds the same positions of the transposed matrix: rows 2(l%4), 2(l%4)+1 of
/// column l/4.
#[test]
fn warp_ldmatrix() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0008);
    let mut report = Report::new("ldmatrix");
    // 64 rows of 8 b16 in shared memory; h(r, k) is element k of row r.
    let tile: Vec<u32> = (0..256).map(|_| rng.next_u64() as u32).collect();
    let h = |r: u32, k: u32| (tile[(r * 4 + k / 2) as usize] >> (16 * (k % 2))) & 0xffff;
    // Row addresses: a random choice of distinct rows, in random order.
    let mut order: Vec<u32> = (0..64).collect();
    for i in (1..64).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let rows: Vec<u32> = order[..32].to_vec();
    for trans in [0u32, 1] {
        let mut cases = Vec::new();
        for l in 0..32u32 {
            let (g, t) = (l / 4, l % 4);
            for i in 0..4u32 {
                let row = |r: u32| rows[(8 * i + r) as usize];
                let v = if trans == 0 {
                    h(row(g), 2 * t) | h(row(g), 2 * t + 1) << 16
                } else {
                    h(row(2 * t), g) | h(row(2 * t + 1), g) << 16
                };
                case_push(&mut cases, format!("lane {l} register {i}"), v);
            }
        }
        let name = if trans == 0 { "ldmatrix.m8n8.x4.shared.b16" } else { "ldmatrix.m8n8.x4.trans.shared.b16" };
        report.area(&dev, name, "§9.7.14.5.15 ldmatrix", &cases, &|d| {
            let tb = upload(d, &tile);
            let rb = upload(d, &rows);
            let out = upload(d, &[0u32; 128]);
            warp(d, "conf_ldmatrix", &[ptr(&tb), ptr(&rb), ptr(&out), Arg::U32(trans)]);
            out.read(0..128).expect("copy from the device").into_iter().map(u64::from).collect()
        });
    }
    report.finish(&dev);
}

/// mma.sync on small integers (exact in bf16/tf32 and exact sums in f32), with the fragment
/// layouts of the ISA (§9.7.14.5.x, "Matrix Fragments for mma.m16n8k16 / m16n8k8"):
/// groupID g = lane/4, threadID_in_group t = lane%4.
/// - m16n8k16 .bf16 A (4 regs, 2 elements each, low half first): a0,a1: (g, 2t+{0,1}),
///   a2,a3: (g+8, 2t+{0,1}), a4,a5: (g, 2t+8+{0,1}), a6,a7: (g+8, 2t+8+{0,1}).
///   B (2 regs): b0,b1: (k = 2t+{0,1}, n = g), b2,b3: (k = 2t+8+{0,1}, n = g).
/// - m16n8k8 .tf32 A (4 regs): a0: (g, t), a1: (g+8, t), a2: (g, t+4), a3: (g+8, t+4).
///   B (2 regs): b0: (k = t, n = g), b1: (k = t+4, n = g).
/// - C/D .f32 (4 regs): c0,c1: (g, 2t+{0,1}), c2,c3: (g+8, 2t+{0,1}).
#[test]
fn warp_mma() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_0009);
    let mut report = Report::new("mma.sync");
    let small = |rng: &mut Rng, r: i64| rng.below((2 * r + 1) as usize) as i64 - r;
    let bf16 = |v: i64| (v as f32).to_bits() >> 16; // small integers are exact in bf16
    for (op, k_dim, name) in
        [(0u32, 16usize, "mma.m16n8k16.row.col.f32.bf16.bf16.f32"), (1, 8, "mma.m16n8k8.row.col.f32.tf32.tf32.f32")]
    {
        let mut cases = Vec::new();
        let mut launches = Vec::new();
        // tf32 has a fifth trial with random low 13 bits in the A and B registers: the ISA does
        // not say what the tensor core makes of them, so GPU and emulator are only compared.
        let trials = if op == 1 { 5 } else { 4 };
        for trial in 0..trials {
            let junk = trial == 4;
            let a: Vec<Vec<i64>> = (0..16).map(|_| (0..k_dim).map(|_| small(&mut rng, 8)).collect()).collect();
            let b: Vec<Vec<i64>> = (0..k_dim).map(|_| (0..8).map(|_| small(&mut rng, 8)).collect()).collect();
            let c: Vec<Vec<i64>> = (0..16).map(|_| (0..8).map(|_| small(&mut rng, 100)).collect()).collect();
            let (mut fa, mut fb, mut fc) = (Vec::new(), Vec::new(), Vec::new());
            for l in 0..32 {
                let (g, t) = (l / 4, l % 4);
                if op == 0 {
                    let pair = |r: usize, k: usize| bf16(a[r][k]) | bf16(a[r][k + 1]) << 16;
                    fa.extend([pair(g, 2 * t), pair(g + 8, 2 * t), pair(g, 2 * t + 8), pair(g + 8, 2 * t + 8)]);
                    let pair = |k: usize| bf16(b[k][g]) | bf16(b[k + 1][g]) << 16;
                    fb.extend([pair(2 * t), pair(2 * t + 8)]);
                } else {
                    let mut v = |x: i64| (x as f32).to_bits() | if junk { rng.next_u64() as u32 & 0x1fff } else { 0 };
                    fa.extend([v(a[g][t]), v(a[g + 8][t]), v(a[g][t + 4]), v(a[g + 8][t + 4])]);
                    fb.extend([v(b[t][g]), v(b[t + 4][g])]);
                }
                let positions = [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)];
                for (i, &(r, n)) in positions.iter().enumerate() {
                    fc.push((c[r][n] as f32).to_bits());
                    let d: i64 = c[r][n] + (0..k_dim).map(|k| a[r][k] * b[k][n]).sum::<i64>();
                    // An exactly zero sum: the sign of the zero is not pinned by the ISA.
                    let want = if junk {
                        Want::Free
                    } else if d == 0 {
                        Want::Either(0, SIGN as u64)
                    } else {
                        Want::Bits((d as f32).to_bits() as u64)
                    };
                    cases.push(case(format!("trial {trial} lane {l} d{i} (row {r}, col {n})"), want));
                }
            }
            launches.push((fa, fb, fc));
        }
        report.area(&dev, name, "§9.7.14 mma, §9.7.14.5 fragments", &cases, &|d| {
            let mut all = Vec::new();
            for (fa, fb, fc) in &launches {
                let (ab, bb, cb) = (upload(d, fa), upload(d, fb), upload(d, fc));
                let out = upload(d, &[0u32; 128]);
                warp(d, "conf_mma", &[ptr(&ab), ptr(&bb), ptr(&cb), ptr(&out), Arg::U32(op)]);
                all.extend(out.read(0..128).expect("copy from the device").into_iter().map(u64::from));
            }
            all
        });
    }
    report.finish(&dev);
}

/// cp.async.cg.shared.global of 16 bytes with src-size s copies s bytes and zero-fills the rest
/// of the 16; after commit_group, wait_group 0 and bar.sync the data is visible to the block.
#[test]
fn cp_async_zero_fill() {
    let Some(dev) = devices() else { return };
    let mut rng = Rng::new(0x5eed_000a);
    let mut report = Report::new("cp.async");
    let src: Vec<u32> = (0..384).map(|_| rng.next_u64() as u32).collect();
    for sizes in [[0u32, 4, 16], [16, 4, 0]] {
        let mut cases = Vec::new();
        for chunk in 0..96 {
            let s = sizes[chunk % 3];
            for w in 0..4u32 {
                let v = if 4 * w < s { src[chunk * 4 + w as usize] } else { 0 };
                case_push(&mut cases, format!("chunk {chunk} (src-size {s}) word {w}"), v);
            }
        }
        report.area(
            &dev,
            &format!("cp.async.cg 16, src-size {sizes:?}"),
            "§9.7.9 cp.async, cp.async.wait_group",
            &cases,
            &|d| {
                let sb = upload(d, &src);
                let zb = upload(d, &sizes);
                let out = upload(d, &[0u32; 384]);
                warp(d, "conf_cp_async", &[ptr(&sb), ptr(&zb), ptr(&out)]);
                out.read(0..384).expect("copy from the device").into_iter().map(u64::from).collect()
            },
        );
    }
    report.finish(&dev);
}
