//! The hot loop: one thread's instructions until it reaches a barrier, a warp collective or its
//! exit. Operands are register slots into the thread's part of the block's register file.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::block::{Block, Loc, Pending, TState, finding};
use crate::arith::{self, Round};
use crate::error::Result;
use crate::ir::*;
use crate::shadow::Access;

#[inline(always)]
fn mask(bits: u8) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

/// `v`'s low `bits` as a signed value.
#[inline(always)]
fn sext(v: u64, bits: u8) -> i64 {
    let s = 64 - bits as u32;
    ((v << s) as i64) >> s
}

#[inline(always)]
fn f32of(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

#[inline(always)]
fn f32bits(f: f32) -> u64 {
    f.to_bits() as u64
}

#[inline]
fn int_op(op: IOp, bits: u8, a: u64, b: u64) -> u64 {
    let m = mask(bits);
    let r = match op {
        IOp::Add => a.wrapping_add(b),
        IOp::Sub => a.wrapping_sub(b),
        IOp::MulLo => a.wrapping_mul(b),
        IOp::And => a & b,
        IOp::Or => a | b,
        IOp::Xor => a ^ b,
        // Shift amounts are unsigned 32-bit and clamp at the width (ISA 9.7.8.6).
        IOp::Shl => {
            let s = b as u32;
            if s >= bits as u32 { 0 } else { a << s }
        }
        IOp::ShrU => {
            let s = b as u32;
            if s >= bits as u32 { 0 } else { (a & m) >> s }
        }
        IOp::ShrS => (sext(a, bits) >> (b as u32).min(bits as u32 - 1)) as u64,
        IOp::MinS => sext(a, bits).min(sext(b, bits)) as u64,
        IOp::MaxS => sext(a, bits).max(sext(b, bits)) as u64,
        IOp::MinU => (a & m).min(b & m),
        IOp::MaxU => (a & m).max(b & m),
        IOp::DivS => arith::div_int(a & m, b & m, bits as u32, true),
        IOp::DivU => arith::div_int(a & m, b & m, bits as u32, false),
        IOp::RemS => arith::rem_int(a & m, b & m, bits as u32, true),
        IOp::RemU => arith::rem_int(a & m, b & m, bits as u32, false),
    };
    r & m
}

#[inline]
fn f32_op(op: FOp, r: Round, a: f32, b: f32) -> f32 {
    match op {
        FOp::Add => arith::add_f32(a, b, r),
        FOp::Sub => arith::add_f32(a, -b, r),
        FOp::Mul => arith::mul_f32(a, b, r),
        FOp::Div => arith::div_f32(a, b, r),
        FOp::Min => arith::min_f32(a, b),
        FOp::Max => arith::max_f32(a, b),
        FOp::Copysign => arith::copysign_f32(a, b),
    }
}

fn f64_op(op: FOp, r: Round, a: f64, b: f64) -> f64 {
    match op {
        FOp::Add => arith::add_f64(a, b, r),
        FOp::Sub => arith::add_f64(a, -b, r),
        FOp::Mul => arith::mul_f64(a, b, r),
        FOp::Div => arith::div_f64(a, b, r),
        FOp::Min => arith::min_f64(a, b),
        FOp::Max => arith::max_f64(a, b),
        FOp::Copysign => arith::copysign_f64(a, b),
    }
}

fn f32_un(op: FUn, r: Round, a: f32) -> f32 {
    match op {
        FUn::Neg => -a,
        FUn::Abs => a.abs(),
        FUn::Sqrt => arith::sqrt_f32(a, r),
        FUn::Rcp => arith::rcp_f32(a, r),
        FUn::RcpApproxFtz => arith::rcp_approx_f32(a),
        FUn::Ex2ApproxFtz => arith::ex2_approx_f32(a),
    }
}

fn f64_un(op: FUn, r: Round, a: f64) -> f64 {
    match op {
        FUn::Neg => -a,
        FUn::Abs => a.abs(),
        FUn::Sqrt => arith::sqrt_f64(a, r),
        FUn::Rcp => arith::rcp_f64(a, r),
        // Rejected by the parser for f64.
        FUn::RcpApproxFtz | FUn::Ex2ApproxFtz => f64::NAN,
    }
}

#[inline]
fn icmp(c: ICmp, signed: bool, bits: u8, a: u64, b: u64) -> bool {
    let ord = if signed {
        sext(a, bits).cmp(&sext(b, bits))
    } else {
        let m = mask(bits);
        (a & m).cmp(&(b & m))
    };
    match c {
        ICmp::Eq => ord.is_eq(),
        ICmp::Ne => ord.is_ne(),
        ICmp::Lt => ord.is_lt(),
        ICmp::Le => ord.is_le(),
        ICmp::Gt => ord.is_gt(),
        ICmp::Ge => ord.is_ge(),
    }
}

fn cvt(k: CvtKind, a: u64) -> u64 {
    match k {
        CvtKind::Int { from, signed, to } => {
            let v = if signed { sext(a, from) as u64 } else { a & mask(from) };
            v & mask(to)
        }
        CvtKind::F32ToBf16(r) => arith::f32_to_bf16(f32of(a), r) as u64,
        CvtKind::F32ToTf32(r) => arith::f32_to_tf32(f32of(a), r) as u64,
        CvtKind::F32ToF64 => (f32of(a) as f64).to_bits(),
        CvtKind::F64ToF32(r) => f32bits(arith::f64_to_f32(f64::from_bits(a), r)),
        CvtKind::F32Round { r, sat } => {
            let mut x = f32of(a);
            if let Some(r) = r {
                x = arith::round_int_f32(x, r);
            }
            if sat {
                x = arith::sat_f32(x);
            }
            f32bits(x)
        }
        CvtKind::IntToF32 { bits, signed, r } => {
            let v = if signed { sext(a, bits) as u64 } else { a & mask(bits) };
            f32bits(arith::int_to_f32(v, signed, r))
        }
        CvtKind::IntToF64 { bits, signed, r } => {
            let v = if signed { sext(a, bits) as u64 } else { a & mask(bits) };
            arith::int_to_f64(v, signed, r).to_bits()
        }
        CvtKind::FToInt { from64, bits, signed, r } => {
            let x = if from64 { f64::from_bits(a) } else { f32of(a) as f64 };
            arith::float_to_int(x, signed, bits as u32, r)
        }
    }
}

impl Block<'_> {
    /// Runs thread `t` from its pc until it stops; returns the instructions executed.
    pub(super) fn run_thread(&mut self, t: usize) -> Result<u64> {
        let n = self.nregs;
        let Block { mem, regs, pcs, state, .. } = self;
        let k = mem.g.k;
        let insts = &k.insts[..];
        let r = &mut regs[t * n..(t + 1) * n];
        let mut pc = pcs[t] as usize;
        let mut count = 0u64;
        // SAFETY (both macros): every slot in an instruction was allocated by the parser below
        // `nregs`, and `r` has exactly `nregs` slots.
        macro_rules! get {
            ($s:expr) => {
                unsafe { *r.get_unchecked($s as usize) }
            };
        }
        macro_rules! set {
            ($d:expr, $v:expr) => {{
                let v = $v;
                unsafe { *r.get_unchecked_mut($d as usize) = v }
            }};
        }
        macro_rules! fault {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(m) => {
                        pcs[t] = pc as u32;
                        return Err(mem.err(pc as u32, t, m));
                    }
                }
            };
        }
        macro_rules! addr {
            ($a:expr) => {
                match $a.base {
                    Some(b) => get!(b).wrapping_add($a.off as u64),
                    None => $a.off as u64,
                }
            };
        }
        loop {
            let inst = &insts[pc];
            count += 1;
            if inst.guard != NO_REG {
                let p = get!(inst.guard) & 1 != 0;
                if p == inst.guard_neg {
                    pc += 1;
                    continue;
                }
            }
            match &inst.op {
                &Op::Mov { d, a } => set!(d, get!(a)),
                &Op::Int { op, bits, d, a, b } => set!(d, int_op(op, bits, get!(a), get!(b))),
                &Op::F32 { op, r: rd, d, a, b } => set!(d, f32bits(f32_op(op, rd, f32of(get!(a)), f32of(get!(b))))),
                &Op::Fma32 { r: rd, d, a, b, c } => {
                    set!(d, f32bits(arith::fma_f32(f32of(get!(a)), f32of(get!(b)), f32of(get!(c)), rd)))
                }
                &Op::SetpI { cmp, signed, bits, d, a, b } => set!(d, icmp(cmp, signed, bits, get!(a), get!(b)) as u64),
                &Op::SetpF32 { cmp, d, a, b } => set!(d, arith::cmp_f32(cmp, f32of(get!(a)), f32of(get!(b))) as u64),
                &Op::Selp { d, a, b, p } => set!(d, if get!(p) & 1 != 0 { get!(a) } else { get!(b) }),
                &Op::Bra { target } => {
                    pc = target as usize;
                    continue;
                }
                &Op::Ld { space, size, vec, signed, d, addr } => {
                    let at = addr!(addr);
                    let len = size as u64 * vec as u64;
                    let loc = fault!(mem.resolve(space, at, len, len, t));
                    for (e, &dst) in d.iter().enumerate().take(vec as usize) {
                        let v = fault!(mem.read(loc, e * size as usize, size, t));
                        set!(dst, if signed { (sext(v, size * 8)) as u64 } else { v });
                    }
                }
                Op::St { space, size, vec, s, addr } => {
                    let (space, size, vec) = (*space, *size, *vec);
                    let at = addr!(addr);
                    let len = size as u64 * vec as u64;
                    let loc = fault!(mem.resolve(space, at, len, len, t));
                    for (e, src) in s.iter().enumerate().take(vec as usize) {
                        let v = get!(*src);
                        fault!(mem.write(loc, e * size as usize, size, v, t));
                    }
                }
                &Op::Cvt { k, d, a } => set!(d, cvt(k, get!(a))),
                &Op::MulWide { signed, d, a, b } => {
                    let (a, b) = (get!(a), get!(b));
                    let v =
                        if signed { (sext(a, 32) * sext(b, 32)) as u64 } else { (a & 0xffff_ffff) * (b & 0xffff_ffff) };
                    set!(d, v)
                }
                &Op::Mad { bits, d, a, b, c } => {
                    set!(d, get!(a).wrapping_mul(get!(b)).wrapping_add(get!(c)) & mask(bits))
                }
                &Op::MulHi { signed, bits, d, a, b } => {
                    let (a, b) = (get!(a), get!(b));
                    let v = if signed {
                        ((sext(a, bits) as i128 * sext(b, bits) as i128) >> bits) as u64
                    } else {
                        (((a & mask(bits)) as u128 * (b & mask(bits)) as u128) >> bits) as u64
                    };
                    set!(d, v & mask(bits))
                }
                &Op::Not { bits, d, a } => set!(d, !get!(a) & mask(bits)),
                &Op::NegI { bits, d, a } => set!(d, get!(a).wrapping_neg() & mask(bits)),
                &Op::F64 { op, r: rd, d, a, b } => {
                    set!(d, f64_op(op, rd, f64::from_bits(get!(a)), f64::from_bits(get!(b))).to_bits())
                }
                &Op::Fma64 { r: rd, d, a, b, c } => {
                    let (a, b, c) = (f64::from_bits(get!(a)), f64::from_bits(get!(b)), f64::from_bits(get!(c)));
                    set!(d, arith::fma_f64(a, b, c, rd).to_bits())
                }
                &Op::F32Un { op, r: rd, d, a } => set!(d, f32bits(f32_un(op, rd, f32of(get!(a))))),
                &Op::F64Un { op, r: rd, d, a } => set!(d, f64_un(op, rd, f64::from_bits(get!(a))).to_bits()),
                &Op::SetpF64 { cmp, d, a, b } => {
                    set!(d, arith::cmp_f64(cmp, f64::from_bits(get!(a)), f64::from_bits(get!(b))) as u64)
                }
                &Op::Prmt { d, a, b, c } => set!(d, arith::prmt(get!(a) as u32, get!(b) as u32, get!(c) as u32) as u64),
                &Op::Bfi { bits, d, a, b, pos, len } => {
                    let (p, l) = (get!(pos) as u32, get!(len) as u32);
                    let v = if bits == 32 {
                        arith::bfi32(get!(a) as u32, get!(b) as u32, p, l) as u64
                    } else {
                        arith::bfi64(get!(a), get!(b), p, l)
                    };
                    set!(d, v)
                }
                &Op::Atom { space, op, d, addr, b } => {
                    let at = addr!(addr);
                    let size = if op == AtomOp::AddU64 { 8 } else { 4 };
                    let loc = fault!(mem.resolve(space, at, size, size, t));
                    let Loc::Global(p) = loc else {
                        pcs[t] = pc as u32;
                        return Err(mem.err(pc as u32, t, "atomic outside global memory (not supported)".into()));
                    };
                    let v = get!(b);
                    // SAFETY: `resolve` checked the range lies in an allocation and is aligned to
                    // its size; the allocation's storage is 8-byte aligned.
                    let old = unsafe { atom(op, p, v) };
                    set!(d, old)
                }
                Op::CpAsync { dst, src, size, src_size } => {
                    let size = *size;
                    let (dv, sv) = (addr!(dst), addr!(src));
                    let n = src_size.map_or(size as u64, |s| get!(s) & 0xffff_ffff);
                    if n > size as u64 {
                        pcs[t] = pc as u32;
                        return Err(mem.err(pc as u32, t, format!("cp.async src-size {n} over its copy size {size}")));
                    }
                    let dloc = fault!(mem.resolve(Space::Shared, dv, size as u64, size as u64, t));
                    let Loc::Shared(doff) = dloc else { unreachable!() };
                    let mut data = [0u8; 16];
                    if n > 0 {
                        let sloc = fault!(mem.resolve(Space::Global, sv, n, size as u64, t));
                        let Loc::Global(p) = sloc else { unreachable!() };
                        // SAFETY: `resolve` checked [p, p + n) lies in one allocation.
                        unsafe { std::ptr::copy_nonoverlapping(p, data.as_mut_ptr(), n as usize) };
                    }
                    if let Some(s) = &mut mem.shadow {
                        fault!(s.async_issue(t as u32, doff, size as u32).map_err(|f| finding(
                            f,
                            Access::Write,
                            mem.g.cfg.block
                        )));
                    }
                    let group = mem.group[t];
                    mem.pending[t].push(Pending { group, dst: doff, len: size, data });
                }
                Op::CpAsyncCommit => mem.group[t] += 1,
                &Op::CpAsyncWait { n } => mem.land(t, Some(n)),
                Op::Nop => {}
                Op::Pack { d, a, n, w } => {
                    let mut v = 0u64;
                    for (k, s) in a.iter().enumerate().take(*n as usize) {
                        v |= (get!(*s) & mask(*w)) << (k as u32 * *w as u32);
                    }
                    set!(*d, v)
                }
                Op::Unpack { d, a, n, w } => {
                    let v = get!(*a);
                    for (k, dst) in d.iter().enumerate().take(*n as usize) {
                        set!(*dst, (v >> (k as u32 * *w as u32)) & mask(*w));
                    }
                }
                Op::Bar => {
                    pcs[t] = pc as u32;
                    state[t] = TState::Bar;
                    return Ok(count);
                }
                Op::Exit => {
                    mem.land(t, None);
                    pcs[t] = pc as u32;
                    state[t] = TState::Exit;
                    return Ok(count);
                }
                Op::Shfl { .. } | Op::Vote { .. } | Op::Ldmatrix { .. } | Op::Mma(_) | Op::WarpSync { .. } => {
                    pcs[t] = pc as u32;
                    state[t] = TState::Coll;
                    return Ok(count);
                }
            }
            pc += 1;
        }
    }
}

/// A global atomic as a host atomic; returns the old value.
///
/// # Safety
/// `p` must be valid and aligned for the operation's size.
unsafe fn atom(op: AtomOp, p: *mut u8, v: u64) -> u64 {
    let o = Ordering::SeqCst;
    unsafe {
        match op {
            AtomOp::AddU64 => AtomicU64::from_ptr(p as *mut u64).fetch_add(v, o),
            _ => {
                let a = AtomicU32::from_ptr(p as *mut u32);
                let v = v as u32;
                (match op {
                    AtomOp::AddU32 => a.fetch_add(v, o),
                    AtomOp::ExchB32 => a.swap(v, o),
                    AtomOp::MaxU32 => a.fetch_max(v, o),
                    AtomOp::MinU32 => a.fetch_min(v, o),
                    AtomOp::MaxS32 => {
                        std::sync::atomic::AtomicI32::from_ptr(p as *mut i32).fetch_max(v as i32, o) as u32
                    }
                    AtomOp::MinS32 => {
                        std::sync::atomic::AtomicI32::from_ptr(p as *mut i32).fetch_min(v as i32, o) as u32
                    }
                    AtomOp::AddF32 => {
                        a.fetch_update(o, o, |x| Some((f32::from_bits(x) + f32::from_bits(v)).to_bits())).unwrap_or(0)
                    }
                    AtomOp::AddU64 => unreachable!(),
                }) as u64
            }
        }
    }
}
