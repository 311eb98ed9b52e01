//! Decoding a kernel body: register scopes, symbols, labels and every instruction form into `Op`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::lex::{Lit, Stmt, literal, split_operands};
use super::{Var, align_up, parse_var, type_bytes};
use crate::arith::{Cmp, Round};
use crate::error::{EmuError, Result};
use crate::ir::*;
use crate::memory::{LOCAL_WINDOW, SHARED_WINDOW};
use crate::warp::ShflMode;

type R<T> = std::result::Result<T, String>;

/// A `.reg` declaration: `%r<123>` (prefix with a count) or one exact name.
struct RegDecl {
    name: String,
    count: Option<u32>,
    base: u32,
}

/// How an immediate is read for an operand.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imm {
    Bits(u8),
    F32,
    F64,
}

/// Constant slots: by value, and in allocation order.
type Consts = (HashMap<u64, Reg>, Vec<(Reg, u64)>);

pub(super) struct Decoder<'a> {
    pub module_globals: &'a [String],
    name: String,
    params: Vec<Param>,
    param_bytes: u32,
    max_threads: Option<u32>,
    labels: HashMap<&'a str, u32>,
    shared: Vec<(String, u32)>,
    local: Vec<(String, u32)>,
    static_shared: u32,
    dynamic_shared_offset: u32,
    local_bytes: u32,
    scopes: Vec<Vec<RegDecl>>,
    nregs: Cell<u32>,
    consts: RefCell<Consts>,
    loc: (u32, u32),
    communicates: bool,
}

fn is_instruction(t: &str) -> bool {
    !t.starts_with('.')
}

impl<'a> Decoder<'a> {
    /// Pass 1: labels, shared and local variables and their layout.
    pub(super) fn new(
        name: String,
        params: Vec<Param>,
        param_bytes: u32,
        max_threads: Option<u32>,
        module_shared: &[Var],
        stmts: &[(u32, Stmt<'a>)],
    ) -> Result<Decoder<'a>> {
        let mut labels = HashMap::new();
        let mut count = 0u32;
        let mut kshared: Vec<Var> = Vec::new();
        let mut klocal: Vec<Var> = Vec::new();
        for &(ln, s) in stmts {
            let perr = |m: String| EmuError::Parse { kernel: name.clone(), ptx_line: ln, message: m };
            match s {
                Stmt::Label(l) => {
                    labels.insert(l, count);
                }
                Stmt::Text(t) if is_instruction(t) => count += 1,
                Stmt::Text(t) if t.starts_with(".shared") || t.starts_with(".extern") => {
                    kshared.push(parse_var(t, ".shared").map_err(perr)?)
                }
                Stmt::Text(t) if t.starts_with(".local") => klocal.push(parse_var(t, ".local").map_err(perr)?),
                _ => {}
            }
        }
        // Module-level shared variables count for this kernel only when its body names them.
        let referenced = |v: &Var| {
            stmts.iter().any(|(_, s)| match s {
                Stmt::Text(t) => is_instruction(t) && t.contains(v.name.as_str()),
                _ => false,
            })
        };
        let mut shared = Vec::new();
        let mut off = 0u32;
        let mut ext_align = 1u32;
        let mut externs = Vec::new();
        for v in kshared.iter().chain(module_shared.iter().filter(|v| referenced(v))) {
            if v.is_extern {
                ext_align = ext_align.max(v.align);
                externs.push(v.name.clone());
                continue;
            }
            off = align_up(off, v.align);
            shared.push((v.name.clone(), off));
            off += v.size;
        }
        let static_shared = off;
        let dynamic_shared_offset = align_up(off, ext_align.max(16));
        for e in externs {
            shared.push((e, dynamic_shared_offset));
        }
        let mut local = Vec::new();
        let mut loff = 0u32;
        for v in &klocal {
            loff = align_up(loff, v.align);
            local.push((v.name.clone(), loff));
            loff += v.size;
        }
        Ok(Decoder {
            module_globals: &[],
            name,
            params,
            param_bytes,
            max_threads,
            labels,
            shared,
            local,
            static_shared,
            dynamic_shared_offset,
            local_bytes: loff,
            scopes: vec![Vec::new()],
            nregs: Cell::new(SPECIAL_SLOTS),
            consts: RefCell::new((HashMap::new(), Vec::new())),
            loc: (0, 0),
            communicates: false,
        })
    }

    /// Pass 2: directives and instructions.
    pub(super) fn run(&mut self, stmts: &[(u32, Stmt<'a>)]) -> Result<Kernel> {
        let mut insts = Vec::new();
        let mut lines = Vec::new();
        let kname = self.name.clone();
        for &(ln, s) in stmts {
            let perr = |m: String| EmuError::Parse { kernel: kname.clone(), ptx_line: ln, message: m };
            match s {
                Stmt::Open => self.scopes.push(Vec::new()),
                Stmt::Close => {
                    self.scopes.pop();
                    if self.scopes.is_empty() {
                        return Err(perr("unbalanced '}'".into()));
                    }
                }
                Stmt::Label(_) => {}
                Stmt::Text(t) if t.starts_with('.') => self.directive(t).map_err(perr)?,
                Stmt::Text(t) => {
                    let inst = self.instruction(t).map_err(|m| perr(format!("{m}: `{t}`")))?;
                    insts.push(inst);
                    lines.push(SrcLine { ptx_line: ln, file: self.loc.0, line: self.loc.1 });
                }
            }
        }
        // Falling off the end (or branching to a label after the last instruction) is an exit.
        insts.push(Inst { op: Op::Exit, guard: NO_REG, guard_neg: false });
        lines.push(lines.last().copied().unwrap_or_default());
        Ok(Kernel {
            name: self.name.clone(),
            params: std::mem::take(&mut self.params),
            param_bytes: self.param_bytes,
            insts,
            lines,
            files: Vec::new(),
            nregs: self.nregs.get(),
            consts: std::mem::take(&mut self.consts.borrow_mut().1),
            static_shared: self.static_shared,
            dynamic_shared_offset: self.dynamic_shared_offset,
            local_bytes: self.local_bytes,
            max_threads: self.max_threads,
            communicates: self.communicates,
        })
    }

    fn directive(&mut self, t: &str) -> R<()> {
        let first = t.split_whitespace().next().unwrap_or("");
        match first {
            ".reg" => self.declare_regs(t),
            ".loc" => {
                let mut it = t[4..].split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty());
                let f: u32 = it.next().and_then(|v| v.parse().ok()).ok_or("bad .loc")?;
                let l: u32 = it.next().and_then(|v| v.parse().ok()).ok_or("bad .loc")?;
                self.loc = (f, l);
                Ok(())
            }
            ".shared" | ".extern" | ".local" | ".pragma" => Ok(()),
            _ => Err(format!("unsupported directive in a kernel body: {t}")),
        }
    }

    fn declare_regs(&mut self, t: &str) -> R<()> {
        let toks: Vec<&str> = t.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()).collect();
        let scope = self.scopes.last_mut().ok_or("no scope")?;
        for tok in &toks[1..] {
            if tok.starts_with('.') {
                continue; // the type: every register lives in a u64 slot
            }
            if let Some(p) = tok.find('<') {
                let n: u32 =
                    tok[p + 1..].trim_end_matches('>').parse().map_err(|_| format!("bad register count in {t}"))?;
                scope.push(RegDecl { name: tok[..p].to_string(), count: Some(n), base: self.nregs.get() });
                self.nregs.set(self.nregs.get() + n);
            } else {
                scope.push(RegDecl { name: tok.to_string(), count: None, base: self.nregs.get() });
                self.nregs.set(self.nregs.get() + 1);
            }
        }
        Ok(())
    }

    fn lookup_reg(&self, tok: &str) -> Option<Reg> {
        let digits = tok.len() - tok.bytes().rev().take_while(|b| b.is_ascii_digit()).count();
        let (prefix, num) = tok.split_at(digits);
        for scope in self.scopes.iter().rev() {
            for d in scope.iter().rev() {
                match d.count {
                    None if d.name == tok => return Some(d.base),
                    Some(n) if d.name == prefix && !num.is_empty() => {
                        let k: u32 = num.parse().ok()?;
                        if k < n {
                            return Some(d.base + k);
                        }
                    }
                    _ => {}
                }
            }
        }
        special(tok)
    }

    fn reg(&self, tok: &str) -> R<Reg> {
        self.lookup_reg(tok.trim()).ok_or_else(|| format!("unknown register {tok}"))
    }

    /// A symbol's address in its own state space (shared: offset in the block's shared memory,
    /// local: offset in the thread's depot).
    fn symbol(&self, tok: &str) -> Option<u64> {
        self.shared.iter().chain(self.local.iter()).find(|(n, _)| n == tok).map(|&(_, o)| o as u64)
    }

    /// The constant slot holding `v` (one per distinct value).
    fn konst(&self, v: u64) -> Reg {
        let mut c = self.consts.borrow_mut();
        if let Some(&r) = c.0.get(&v) {
            return r;
        }
        let r = self.nregs.get();
        self.nregs.set(r + 1);
        c.0.insert(v, r);
        c.1.push((r, v));
        r
    }

    fn src(&self, tok: &str, imm: Imm) -> R<Src> {
        let tok = tok.trim();
        if let Some(l) = literal(tok) {
            return Ok(self.konst(imm_bits(l, imm)?));
        }
        if let Some(r) = self.lookup_reg(tok) {
            return Ok(r);
        }
        if let Some(a) = self.symbol(tok) {
            return Ok(self.konst(a));
        }
        Err(self.unknown(tok))
    }

    fn addr(&self, tok: &str) -> R<Addr> {
        let inner = tok
            .trim()
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .ok_or_else(|| format!("expected an address, got {tok}"))?
            .trim();
        let (base, off) = match inner.find('+') {
            Some(p) => {
                let o = match literal(inner[p + 1..].trim()) {
                    Some(Lit::Int(v)) => v as i64,
                    _ => return Err(format!("bad address offset in {tok}")),
                };
                (inner[..p].trim(), o)
            }
            None => (inner, 0),
        };
        if let Some(Lit::Int(v)) = literal(base) {
            return Ok(Addr { base: None, off: v as i64 + off });
        }
        if let Some(r) = self.lookup_reg(base) {
            return Ok(Addr { base: Some(r), off });
        }
        if let Some(a) = self.symbol(base) {
            return Ok(Addr { base: None, off: a as i64 + off });
        }
        if let Some(p) = self.params.iter().find(|p| p.name == base) {
            return Ok(Addr { base: None, off: p.offset as i64 + off });
        }
        Err(self.unknown(base))
    }

    fn unknown(&self, tok: &str) -> String {
        if self.module_globals.iter().any(|g| g == tok) {
            format!("module-level .global/.const variable {tok} (not supported)")
        } else {
            format!("unknown operand {tok}")
        }
    }

    fn vec_regs(&self, tok: &str, n: usize) -> R<[Reg; 4]> {
        let inner = tok.trim().strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or("expected {…}")?;
        let items = split_operands(inner);
        if items.len() != n {
            return Err(format!("expected {n} registers in {tok}"));
        }
        let mut out = [NO_REG; 4];
        for (k, it) in items.iter().enumerate() {
            out[k] = self.reg(it)?;
        }
        Ok(out)
    }

    fn instruction(&mut self, text: &str) -> R<Inst> {
        let (guard, guard_neg, rest) = match text.strip_prefix('@') {
            Some(g) => {
                let end = g.find(char::is_whitespace).ok_or("guard without an instruction")?;
                let (neg, p) = match g[..end].strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, &g[..end]),
                };
                (self.reg(p)?, neg, g[end..].trim())
            }
            None => (NO_REG, false, text),
        };
        let (opcode, ops_text) = match rest.find(char::is_whitespace) {
            Some(p) => (&rest[..p], rest[p..].trim()),
            None => (rest, ""),
        };
        let ops = split_operands(ops_text);
        let op = self.op(opcode, &ops)?;
        Ok(Inst { op, guard, guard_neg })
    }

    fn op(&mut self, opcode: &str, ops: &[&str]) -> R<Op> {
        let mut parts = opcode.split('.');
        let name = parts.next().unwrap_or("");
        let mut m = Mods::new(parts.collect());
        let need = |n: usize| if ops.len() == n { Ok(()) } else { Err(format!("expected {n} operands")) };
        let op = match name {
            "mov" if ops.iter().any(|o| o.starts_with('{')) => {
                let t = m.ty()?;
                need(2)?;
                let bits = int_bits(t)?;
                fn list(s: &str) -> R<Vec<&str>> {
                    let inner = s.trim().strip_prefix('{').and_then(|x| x.strip_suffix('}')).ok_or("expected {…}")?;
                    Ok(split_operands(inner))
                }
                if ops[1].starts_with('{') {
                    let items = list(ops[1])?;
                    let n = items.len();
                    if !matches!(n, 2 | 4) || !(bits as usize).is_multiple_of(n) {
                        return Err("unsupported vector mov".into());
                    }
                    let w = (bits as usize / n) as u8;
                    let mut a = [NO_REG; 4];
                    for (k, it) in items.iter().enumerate() {
                        a[k] = self.src(it, Imm::Bits(w))?;
                    }
                    Op::Pack { d: self.reg(ops[0])?, a, n: n as u8, w }
                } else {
                    let items = list(ops[0])?;
                    let n = items.len();
                    if !matches!(n, 2 | 4) || !(bits as usize).is_multiple_of(n) {
                        return Err("unsupported vector mov".into());
                    }
                    let d = self.vec_regs(ops[0], n)?;
                    Op::Unpack { d, a: self.src(ops[1], Imm::Bits(bits))?, n: n as u8, w: (bits as usize / n) as u8 }
                }
            }
            "mov" => {
                let t = m.ty()?;
                need(2)?;
                Op::Mov { d: self.reg(ops[0])?, a: self.src(ops[1], imm_of(t))? }
            }
            "add" | "sub" => {
                let t = m.ty()?;
                need(3)?;
                let (d, a, b) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?, self.src(ops[2], imm_of(t))?);
                if is_float(t) {
                    let r = m.rnd().unwrap_or(Round::Rn);
                    let op = if name == "add" { FOp::Add } else { FOp::Sub };
                    float_bin(t, op, r, d, a, b)?
                } else {
                    let op = if name == "add" { IOp::Add } else { IOp::Sub };
                    Op::Int { op, bits: int_bits(t)?, d, a, b }
                }
            }
            "mul" => {
                let mode = m.one_of(&["lo", "wide", "hi"]);
                let t = m.ty()?;
                need(3)?;
                let (d, a, b) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?, self.src(ops[2], imm_of(t))?);
                match (is_float(t), mode) {
                    (true, None) => float_bin(t, FOp::Mul, m.rnd().unwrap_or(Round::Rn), d, a, b)?,
                    (false, Some("lo")) => Op::Int { op: IOp::MulLo, bits: int_bits(t)?, d, a, b },
                    (false, Some("wide")) if int_bits(t)? == 32 => Op::MulWide { signed: is_signed(t), d, a, b },
                    (false, Some("hi")) => Op::MulHi { signed: is_signed(t), bits: int_bits(t)?, d, a, b },
                    _ => return Err("unsupported mul form".into()),
                }
            }
            "mad" | "fma" => {
                let lo = m.has("lo");
                let r = m.rnd();
                let t = m.ty()?;
                need(4)?;
                let i = imm_of(t);
                let (d, a, b, c) =
                    (self.reg(ops[0])?, self.src(ops[1], i)?, self.src(ops[2], i)?, self.src(ops[3], i)?);
                match (is_float(t), lo, r) {
                    (false, true, None) if name == "mad" => Op::Mad { bits: int_bits(t)?, d, a, b, c },
                    (true, false, Some(r)) if t == "f32" => Op::Fma32 { r, d, a, b, c },
                    (true, false, Some(r)) if t == "f64" => Op::Fma64 { r, d, a, b, c },
                    _ => return Err(format!("unsupported {name} form")),
                }
            }
            "div" | "rem" => {
                let r = m.rnd();
                let t = m.ty()?;
                need(3)?;
                let (d, a, b) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?, self.src(ops[2], imm_of(t))?);
                if is_float(t) && name == "div" {
                    float_bin(t, FOp::Div, r.ok_or("div.f32 without a rounding modifier")?, d, a, b)?
                } else if !is_float(t) && r.is_none() {
                    let s = is_signed(t);
                    let op = match (name, s) {
                        ("div", true) => IOp::DivS,
                        ("div", false) => IOp::DivU,
                        ("rem", true) => IOp::RemS,
                        _ => IOp::RemU,
                    };
                    Op::Int { op, bits: int_bits(t)?, d, a, b }
                } else {
                    return Err(format!("unsupported {name} form"));
                }
            }
            "and" | "or" | "xor" => {
                let t = m.ty()?;
                need(3)?;
                if !(t.starts_with('b') || t == "pred") {
                    return Err("logic op on a non-bit type".into());
                }
                let op = match name {
                    "and" => IOp::And,
                    "or" => IOp::Or,
                    _ => IOp::Xor,
                };
                Op::Int {
                    op,
                    bits: int_bits(t)?,
                    d: self.reg(ops[0])?,
                    a: self.src(ops[1], imm_of(t))?,
                    b: self.src(ops[2], imm_of(t))?,
                }
            }
            "not" => {
                let t = m.ty()?;
                need(2)?;
                Op::Not { bits: int_bits(t)?, d: self.reg(ops[0])?, a: self.src(ops[1], imm_of(t))? }
            }
            "neg" | "abs" => {
                let t = m.ty()?;
                need(2)?;
                let (d, a) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?);
                let op = if name == "neg" { FUn::Neg } else { FUn::Abs };
                match t {
                    "f32" => Op::F32Un { op, r: Round::Rn, d, a },
                    "f64" => Op::F64Un { op, r: Round::Rn, d, a },
                    "s16" | "s32" | "s64" if name == "neg" => Op::NegI { bits: int_bits(t)?, d, a },
                    _ => return Err(format!("unsupported {name} type")),
                }
            }
            "shl" | "shr" => {
                let t = m.ty()?;
                need(3)?;
                let op = match (name, t.starts_with('s')) {
                    ("shl", _) => IOp::Shl,
                    (_, true) => IOp::ShrS,
                    _ => IOp::ShrU,
                };
                if is_float(t) || t == "pred" {
                    return Err("shift of a non-integer type".into());
                }
                Op::Int {
                    op,
                    bits: int_bits(t)?,
                    d: self.reg(ops[0])?,
                    a: self.src(ops[1], imm_of(t))?,
                    b: self.src(ops[2], Imm::Bits(32))?,
                }
            }
            "min" | "max" => {
                let t = m.ty()?;
                need(3)?;
                let (d, a, b) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?, self.src(ops[2], imm_of(t))?);
                if is_float(t) {
                    float_bin(t, if name == "min" { FOp::Min } else { FOp::Max }, Round::Rn, d, a, b)?
                } else {
                    let op = match (name, is_signed(t)) {
                        ("min", true) => IOp::MinS,
                        ("min", false) => IOp::MinU,
                        ("max", true) => IOp::MaxS,
                        _ => IOp::MaxU,
                    };
                    Op::Int { op, bits: int_bits(t)?, d, a, b }
                }
            }
            "copysign" => {
                let t = m.ty()?;
                need(3)?;
                let (d, a, b) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?, self.src(ops[2], imm_of(t))?);
                float_bin(t, FOp::Copysign, Round::Rn, d, a, b)?
            }
            "sqrt" | "rcp" | "ex2" => {
                let approx = m.has("approx");
                let ftz = m.has("ftz");
                let r = m.rnd();
                let t = m.ty()?;
                need(2)?;
                let (d, a) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?);
                let op = match (name, approx, ftz, r) {
                    ("sqrt", false, false, Some(_)) => FUn::Sqrt,
                    ("rcp", false, false, Some(_)) => FUn::Rcp,
                    ("rcp", true, true, None) if t == "f32" => FUn::RcpApproxFtz,
                    ("ex2", true, true, None) if t == "f32" => FUn::Ex2ApproxFtz,
                    _ => return Err(format!("unsupported {name} form")),
                };
                let r = r.unwrap_or(Round::Rn);
                match t {
                    "f32" => Op::F32Un { op, r, d, a },
                    "f64" => Op::F64Un { op, r, d, a },
                    _ => return Err(format!("unsupported {name} type")),
                }
            }
            "setp" => {
                let c = m.one_of(&[
                    "eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu", "gtu",
                    "geu", "num", "nan",
                ]);
                let c = c.ok_or("setp without a comparison")?;
                let t = m.ty()?;
                need(3)?;
                if ops[0].contains('|') {
                    return Err("setp with two destinations".into());
                }
                let (d, a, b) = (self.reg(ops[0])?, self.src(ops[1], imm_of(t))?, self.src(ops[2], imm_of(t))?);
                if is_float(t) {
                    let cmp = float_cmp(c).ok_or("unsupported float comparison")?;
                    match t {
                        "f32" => Op::SetpF32 { cmp, d, a, b },
                        "f64" => Op::SetpF64 { cmp, d, a, b },
                        _ => return Err("unsupported setp type".into()),
                    }
                } else {
                    let (cmp, unsigned_only) = match c {
                        "eq" => (ICmp::Eq, false),
                        "ne" => (ICmp::Ne, false),
                        "lt" => (ICmp::Lt, false),
                        "le" => (ICmp::Le, false),
                        "gt" => (ICmp::Gt, false),
                        "ge" => (ICmp::Ge, false),
                        "lo" => (ICmp::Lt, true),
                        "ls" => (ICmp::Le, true),
                        "hi" => (ICmp::Gt, true),
                        "hs" => (ICmp::Ge, true),
                        _ => return Err("unsupported integer comparison".into()),
                    };
                    if t == "pred" {
                        return Err("setp on predicates".into());
                    }
                    Op::SetpI { cmp, signed: is_signed(t) && !unsigned_only, bits: int_bits(t)?, d, a, b }
                }
            }
            "selp" => {
                let t = m.ty()?;
                need(4)?;
                Op::Selp {
                    d: self.reg(ops[0])?,
                    a: self.src(ops[1], imm_of(t))?,
                    b: self.src(ops[2], imm_of(t))?,
                    p: self.src(ops[3], Imm::Bits(1))?,
                }
            }
            "cvt" => self.cvt(&mut m, ops)?,
            "cvta" => {
                let to = m.has("to");
                let space = m.one_of(&["global", "shared", "local"]).ok_or("cvta without a state space")?;
                let t = m.ty()?;
                need(2)?;
                if t != "u64" {
                    return Err("cvta on a 32-bit address".into());
                }
                let (d, a) = (self.reg(ops[0])?, self.src(ops[1], Imm::Bits(64))?);
                let base = match space {
                    "shared" => SHARED_WINDOW,
                    "local" => LOCAL_WINDOW,
                    _ => 0,
                };
                match (base, to) {
                    (0, _) => Op::Mov { d, a },
                    (_, false) => Op::Int { op: IOp::Add, bits: 64, d, a, b: self.konst(base) },
                    (_, true) => Op::Int { op: IOp::Sub, bits: 64, d, a, b: self.konst(base) },
                }
            }
            "prmt" => {
                let t = m.ty()?;
                need(4)?;
                if t != "b32" {
                    return Err("prmt on a non-b32 type".into());
                }
                let i = Imm::Bits(32);
                Op::Prmt {
                    d: self.reg(ops[0])?,
                    a: self.src(ops[1], i)?,
                    b: self.src(ops[2], i)?,
                    c: self.src(ops[3], i)?,
                }
            }
            "bfi" => {
                let t = m.ty()?;
                need(5)?;
                let bits = int_bits(t)?;
                if bits < 32 {
                    return Err("bfi on a narrow type".into());
                }
                let i = imm_of(t);
                Op::Bfi {
                    bits,
                    d: self.reg(ops[0])?,
                    a: self.src(ops[1], i)?,
                    b: self.src(ops[2], i)?,
                    pos: self.src(ops[3], Imm::Bits(32))?,
                    len: self.src(ops[4], Imm::Bits(32))?,
                }
            }
            "ld" | "st" => self.ld_st(name, &mut m, ops)?,
            "atom" => {
                let space = match m.one_of(&["global"]) {
                    Some(_) => Space::Global,
                    None => Space::Generic,
                };
                let aop = m.one_of(&["add", "exch", "max", "min"]).ok_or("unsupported atom operation")?;
                let t = m.ty()?;
                need(3)?;
                let op = match (aop, t) {
                    ("add", "u32" | "s32") => AtomOp::AddU32,
                    ("add", "u64") => AtomOp::AddU64,
                    ("add", "f32") => AtomOp::AddF32,
                    ("exch", "b32" | "u32" | "s32") => AtomOp::ExchB32,
                    ("max", "s32") => AtomOp::MaxS32,
                    ("max", "u32") => AtomOp::MaxU32,
                    ("min", "s32") => AtomOp::MinS32,
                    ("min", "u32") => AtomOp::MinU32,
                    _ => return Err("unsupported atom form".into()),
                };
                self.communicates = true;
                Op::Atom { space, op, d: self.reg(ops[0])?, addr: self.addr(ops[1])?, b: self.src(ops[2], imm_of(t))? }
            }
            "membar" => {
                m.one_of(&["gl", "cta", "sys"]).ok_or("unsupported membar level")?;
                self.communicates = true;
                Op::Nop
            }
            "bar" if m.has("warp") => {
                // bar.warp.sync membermask (__syncwarp): a warp collective that orders the lanes.
                if !m.has("sync") {
                    return Err("unsupported bar.warp form".into());
                }
                need(1)?;
                Op::WarpSync { mask: self.src(ops[0], Imm::Bits(32))? }
            }
            "bar" | "barrier" => {
                if !m.has("sync") {
                    return Err("unsupported barrier form".into());
                }
                m.has("aligned");
                need(1)?;
                if literal(ops[0]) != Some(Lit::Int(0)) {
                    return Err("only barrier 0 without a thread count is supported".into());
                }
                Op::Bar
            }
            "bra" => {
                m.has("uni");
                need(1)?;
                let target = *self.labels.get(ops[0]).ok_or_else(|| format!("unknown label {}", ops[0]))?;
                Op::Bra { target }
            }
            "ret" | "exit" => {
                need(0)?;
                Op::Exit
            }
            "shfl" => {
                if !m.has("sync") {
                    return Err("shfl without .sync".into());
                }
                let mode = match m.one_of(&["up", "down", "bfly", "idx"]) {
                    Some("up") => ShflMode::Up,
                    Some("down") => ShflMode::Down,
                    Some("bfly") => ShflMode::Bfly,
                    Some(_) => ShflMode::Idx,
                    None => return Err("shfl without a mode".into()),
                };
                if m.ty()? != "b32" {
                    return Err("shfl on a non-b32 type".into());
                }
                need(5)?;
                let (d, p) = match ops[0].split_once('|') {
                    Some((d, p)) => (self.reg(d)?, self.reg(p)?),
                    None => (self.reg(ops[0])?, NO_REG),
                };
                let i = Imm::Bits(32);
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(ops[1], i)?,
                    b: self.src(ops[2], i)?,
                    c: self.src(ops[3], i)?,
                    mask: self.src(ops[4], i)?,
                }
            }
            "vote" => {
                if !m.has("sync") {
                    return Err("vote without .sync".into());
                }
                let mode = match m.one_of(&["any", "all", "uni", "ballot"]) {
                    Some("any") => VoteMode::Any,
                    Some("all") => VoteMode::All,
                    Some("uni") => VoteMode::Uni,
                    Some(_) => VoteMode::Ballot,
                    None => return Err("vote without a mode".into()),
                };
                let t = m.ty()?;
                if (mode == VoteMode::Ballot) != (t == "b32") || (mode != VoteMode::Ballot && t != "pred") {
                    return Err("unsupported vote type".into());
                }
                need(3)?;
                if ops[1].starts_with('!') {
                    return Err("negated vote operand".into());
                }
                Op::Vote {
                    mode,
                    d: self.reg(ops[0])?,
                    a: self.src(ops[1], Imm::Bits(1))?,
                    mask: self.src(ops[2], Imm::Bits(32))?,
                }
            }
            "ldmatrix" => {
                for req in ["sync", "aligned", "m8n8", "x4", "b16"] {
                    if !m.has(req) {
                        return Err(format!("ldmatrix without .{req}"));
                    }
                }
                if m.one_of(&["shared", "shared::cta"]).is_none() {
                    return Err("ldmatrix outside shared memory".into());
                }
                let trans = m.has("trans");
                need(2)?;
                Op::Ldmatrix { trans, d: self.vec_regs(ops[0], 4)?, addr: self.addr(ops[1])? }
            }
            "mma" => {
                let kind = match opcode {
                    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32" => MmaKind::Bf16M16n8k16,
                    "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" => MmaKind::Tf32M16n8k8,
                    _ => return Err("unsupported mma form".into()),
                };
                m.all_used();
                need(4)?;
                let b = self.vec_regs(ops[2], 2)?;
                Op::Mma(Box::new(Mma {
                    kind,
                    d: self.vec_regs(ops[0], 4)?,
                    a: self.vec_regs(ops[1], 4)?,
                    b: [b[0], b[1]],
                    c: self.vec_regs(ops[3], 4)?,
                }))
            }
            "cp" => {
                if !m.has("async") {
                    return Err("unsupported cp form".into());
                }
                if m.has("commit_group") {
                    need(0)?;
                    Op::CpAsyncCommit
                } else if m.has("wait_group") {
                    need(1)?;
                    match literal(ops[0]) {
                        Some(Lit::Int(n)) if (0..=64).contains(&n) => Op::CpAsyncWait { n: n as u32 },
                        _ => return Err("bad cp.async.wait_group count".into()),
                    }
                } else {
                    let cache = m.one_of(&["ca", "cg"]).ok_or("cp.async without .ca/.cg")?;
                    m.one_of(&["shared", "shared::cta"]).ok_or("cp.async destination not shared")?;
                    m.one_of(&["global"]).ok_or("cp.async source not global")?;
                    if ops.len() != 3 && ops.len() != 4 {
                        return Err("expected 3 or 4 operands".into());
                    }
                    let size = match literal(ops[2]) {
                        Some(Lit::Int(s @ (4 | 8 | 16))) => s as u8,
                        _ => return Err("bad cp.async size".into()),
                    };
                    if cache == "cg" && size != 16 {
                        return Err("cp.async.cg with a size other than 16".into());
                    }
                    let src_size = match ops.get(3) {
                        Some(t) => Some(self.src(t, Imm::Bits(32))?),
                        None => None,
                    };
                    Op::CpAsync { dst: self.addr(ops[0])?, src: self.addr(ops[1])?, size, src_size }
                }
            }
            _ => return Err("unsupported opcode".into()),
        };
        m.done()?;
        Ok(op)
    }

    fn cvt(&self, m: &mut Mods, ops: &[&str]) -> R<Op> {
        let r = m.one_of(&["rn", "rz", "rm", "rp", "rna", "rni", "rzi", "rmi", "rpi"]);
        let sat = m.has("sat");
        let dt = m.ty()?;
        let st = m.ty()?;
        if ops.len() != 2 {
            return Err("expected 2 operands".into());
        }
        let d = self.reg(ops[0])?;
        let a = self.src(ops[1], imm_of(st))?;
        let round = |s: &str| match s {
            "rn" | "rni" => Round::Rn,
            "rz" | "rzi" => Round::Rz,
            "rm" | "rmi" => Round::Rm,
            "rp" | "rpi" => Round::Rp,
            _ => Round::Rna,
        };
        let int_r = r.is_some_and(|r| r.ends_with('i'));
        let k = match (dt, st) {
            _ if !is_float(dt) && !is_float(st) && dt != "pred" && st != "pred" => {
                if r.is_some() || sat {
                    return Err("integer cvt with rounding or saturation".into());
                }
                CvtKind::Int { from: int_bits(st)?, signed: is_signed(st), to: int_bits(dt)? }
            }
            ("bf16", "f32") if !sat && !int_r => CvtKind::F32ToBf16(round(r.ok_or("cvt.bf16 without rounding")?)),
            ("tf32", "f32") if !sat && !int_r => CvtKind::F32ToTf32(round(r.ok_or("cvt.tf32 without rounding")?)),
            ("f64", "f32") if r.is_none() && !sat => CvtKind::F32ToF64,
            ("f32", "f64") if !sat && !int_r => CvtKind::F64ToF32(round(r.ok_or("cvt.f32.f64 without rounding")?)),
            ("f32", "f32") if r.is_none() || int_r => CvtKind::F32Round { r: r.map(round), sat },
            ("f32", _) if !is_float(st) && !sat && !int_r => CvtKind::IntToF32 {
                bits: int_bits(st)?,
                signed: is_signed(st),
                r: round(r.ok_or("cvt.f32 without rounding")?),
            },
            ("f64", _) if !is_float(st) && !sat && !int_r => CvtKind::IntToF64 {
                bits: int_bits(st)?,
                signed: is_signed(st),
                r: round(r.ok_or("cvt.f64 without rounding")?),
            },
            (_, "f32" | "f64") if !is_float(dt) && int_r && !sat => CvtKind::FToInt {
                from64: st == "f64",
                bits: int_bits(dt)?,
                signed: is_signed(dt),
                r: round(r.unwrap_or("rzi")),
            },
            _ => return Err("unsupported cvt form".into()),
        };
        Ok(Op::Cvt { k, d, a })
    }

    fn ld_st(&mut self, name: &str, m: &mut Mods, ops: &[&str]) -> R<Op> {
        let space = match m.one_of(&["global", "shared", "shared::cta", "local", "param"]) {
            Some("global") => Space::Global,
            Some("shared" | "shared::cta") => Space::Shared,
            Some("local") => Space::Local,
            Some("param") => Space::Param,
            _ => Space::Generic,
        };
        let nc = m.has("nc");
        let volatile = m.has("volatile");
        if (nc && (name != "ld" || space != Space::Global)) || (volatile && space == Space::Param) {
            return Err("unsupported ld/st qualifier".into());
        }
        if name == "st" && space == Space::Param {
            return Err("st.param in a kernel".into());
        }
        if volatile {
            self.communicates = true;
        }
        let vec = match m.one_of(&["v2", "v4"]) {
            Some("v2") => 2,
            Some(_) => 4,
            None => 1,
        };
        let t = m.ty()?;
        let size = type_bytes(t).ok_or("unsupported ld/st type")? as u8;
        if ops.len() != 2 {
            return Err("expected 2 operands".into());
        }
        if name == "ld" {
            let d = if vec == 1 {
                [self.reg(ops[0])?, NO_REG, NO_REG, NO_REG]
            } else {
                self.vec_regs(ops[0], vec as usize)?
            };
            let signed = is_signed(t) && size < 8;
            Ok(Op::Ld { space, size, vec, signed, d, addr: self.addr(ops[1])? })
        } else {
            let mut s = [NO_REG; 4];
            if vec == 1 {
                s[0] = self.src(ops[1], imm_of(t))?;
            } else {
                let inner = ops[1].trim().strip_prefix('{').and_then(|x| x.strip_suffix('}')).ok_or("expected {…}")?;
                let items = split_operands(inner);
                if items.len() != vec as usize {
                    return Err("vector operand of the wrong length".into());
                }
                for (k, it) in items.iter().enumerate() {
                    s[k] = self.src(it, imm_of(t))?;
                }
            }
            Ok(Op::St { space, size, vec, s, addr: self.addr(ops[0])? })
        }
    }
}

/// Special registers in their fixed slots.
fn special(tok: &str) -> Option<Reg> {
    let (base, dim) = match tok.rsplit_once('.') {
        Some((b, d)) => (b, d),
        None => (tok, ""),
    };
    let axis = match dim {
        "x" => 0,
        "y" => 1,
        "z" => 2,
        _ => 3,
    };
    let with_axis = |slot: Reg| if axis < 3 { Some(slot + axis) } else { None };
    match base {
        "%tid" => with_axis(SR_TID),
        "%ntid" => with_axis(SR_NTID),
        "%ctaid" => with_axis(SR_CTAID),
        "%nctaid" => with_axis(SR_NCTAID),
        "%laneid" if dim.is_empty() => Some(SR_LANEID),
        "%warpid" if dim.is_empty() => Some(SR_WARPID),
        "%nwarpid" if dim.is_empty() => Some(SR_NWARPID),
        _ => None,
    }
}

/// The modifiers of an opcode; each must be consumed by the decoder, so unknown ones are errors.
struct Mods<'a> {
    parts: Vec<&'a str>,
    used: Vec<bool>,
}

const TYPES: &[&str] = &[
    "b8", "b16", "b32", "b64", "u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "f16", "f32", "f64", "bf16",
    "tf32", "pred",
];

impl<'a> Mods<'a> {
    fn new(parts: Vec<&'a str>) -> Mods<'a> {
        let used = vec![false; parts.len()];
        Mods { parts, used }
    }
    fn has(&mut self, s: &str) -> bool {
        self.one_of(&[s]).is_some()
    }
    fn one_of(&mut self, set: &[&str]) -> Option<&'a str> {
        for k in 0..self.parts.len() {
            if !self.used[k] && set.contains(&self.parts[k]) {
                self.used[k] = true;
                return Some(self.parts[k]);
            }
        }
        None
    }
    fn rnd(&mut self) -> Option<Round> {
        self.one_of(&["rn", "rz", "rm", "rp"]).map(|r| match r {
            "rn" => Round::Rn,
            "rz" => Round::Rz,
            "rm" => Round::Rm,
            _ => Round::Rp,
        })
    }
    /// The next type modifier (in order of appearance).
    fn ty(&mut self) -> R<&'a str> {
        self.one_of(TYPES).ok_or_else(|| "missing type".to_string())
    }
    fn all_used(&mut self) {
        self.used.iter_mut().for_each(|u| *u = true);
    }
    fn done(&self) -> R<()> {
        match self.parts.iter().zip(&self.used).find(|(_, u)| !**u) {
            Some((p, _)) => Err(format!("unsupported modifier .{p}")),
            None => Ok(()),
        }
    }
}

fn is_float(t: &str) -> bool {
    matches!(t, "f16" | "f32" | "f64" | "bf16" | "tf32")
}

fn is_signed(t: &str) -> bool {
    t.starts_with('s')
}

fn int_bits(t: &str) -> R<u8> {
    Ok(match t {
        "pred" => 1,
        "b8" | "u8" | "s8" => 8,
        "b16" | "u16" | "s16" => 16,
        "b32" | "u32" | "s32" => 32,
        "b64" | "u64" | "s64" => 64,
        _ => return Err(format!("not an integer type: {t}")),
    })
}

fn imm_of(t: &str) -> Imm {
    match t {
        "f32" => Imm::F32,
        "f64" => Imm::F64,
        _ => Imm::Bits(int_bits(t).unwrap_or(64)),
    }
}

fn imm_bits(l: Lit, imm: Imm) -> R<u64> {
    Ok(match (l, imm) {
        (Lit::Int(v), Imm::Bits(b)) => (v as u64) & mask(b),
        (Lit::Int(v), Imm::F32) => (v as f32).to_bits() as u64,
        (Lit::Int(v), Imm::F64) => (v as f64).to_bits(),
        (Lit::F32(b), Imm::F32 | Imm::Bits(_)) => b as u64,
        (Lit::F32(b), Imm::F64) => (f32::from_bits(b) as f64).to_bits(),
        (Lit::F64(b), Imm::F64 | Imm::Bits(64)) => b,
        (Lit::F64(_), _) => return Err("f64 literal in a 32-bit operand".into()),
    })
}

pub(crate) fn mask(bits: u8) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

fn float_cmp(c: &str) -> Option<Cmp> {
    Some(match c {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

fn float_bin(t: &str, op: FOp, r: Round, d: Reg, a: Src, b: Src) -> R<Op> {
    match t {
        "f32" => Ok(Op::F32 { op, r, d, a, b }),
        "f64" => Ok(Op::F64 { op, r, d, a, b }),
        _ => Err(format!("unsupported float type {t}")),
    }
}
