//! The compact form of a parsed module: per kernel its parameters, shared and local memory, and
//! its instructions pre-decoded with operands resolved to register slots and labels to indices.
//! The executor's hot loop is one `match` over `Op`; nothing here is looked up by name at run time.

use crate::arith::{Cmp, Round};
use crate::error::Result;
use crate::warp::ShflMode;

pub struct Module {
    pub kernels: Vec<Kernel>,
}

/// One `.param` of a kernel's signature, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    /// Bytes (`.u64` 8, `.u32` 4, `.b8 x[16]` 16, …).
    pub size: u32,
    pub align: u32,
    /// Byte offset in the launch's parameter buffer (aligned to `align`).
    pub offset: u32,
}

pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    /// Bytes of the parameter buffer (all params at their offsets).
    pub param_bytes: u32,
    pub insts: Vec<Inst>,
    /// Per instruction (same index): where it came from, for error messages.
    pub lines: Vec<SrcLine>,
    /// The module's `.file` table: (id, name); `SrcLine::file` is an id.
    pub files: Vec<(u32, String)>,
    /// The constant slots and their values (immediates, symbol addresses).
    pub consts: Vec<(Reg, u64)>,
    /// Register slots per thread (the special registers first, see `SPECIAL_SLOTS`).
    pub nregs: u32,
    /// Bytes of static shared memory (kernel-local and referenced module-level `.shared`).
    pub static_shared: u32,
    /// Offset of the dynamic (`.extern .shared`) region: `static_shared` rounded up to its alignment.
    pub dynamic_shared_offset: u32,
    /// Bytes of `.local` memory per thread.
    pub local_bytes: u32,
    /// `.reqntid`/`.maxntid`, if given.
    pub max_threads: Option<u32>,
    /// The kernel has atomics, `membar`/`fence` or `.volatile` accesses: blocks may communicate,
    /// so they run one after the other in block order.
    pub communicates: bool,
}

/// PTX line (1-based) and the `.loc` in force: `file` is a `.file` id (0: no `.loc` yet).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SrcLine {
    pub ptx_line: u32,
    pub file: u32,
    pub line: u32,
}

pub type Reg = u32;

/// Special registers live in the first slots of every thread's register file; the executor fills
/// them at block start, so reading one is an ordinary register read.
pub const SR_TID: Reg = 0; // .x .y .z at 0, 1, 2
pub const SR_NTID: Reg = 3;
pub const SR_CTAID: Reg = 6;
pub const SR_NCTAID: Reg = 9;
pub const SR_LANEID: Reg = 12;
pub const SR_WARPID: Reg = 13;
pub const SR_NWARPID: Reg = 14;
pub const SPECIAL_SLOTS: u32 = 16;

/// A source operand: a register slot. Immediates and symbol addresses live in constant slots
/// (`Kernel::consts`) that every thread's register file holds from block start, so reading any
/// operand is one load with no branch on its kind.
pub type Src = Reg;

/// An address operand `[base+off]`: `base` a register slot or none (absolute, e.g. a symbol).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addr {
    pub base: Option<Reg>,
    pub off: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
    Local,
    Param,
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IOp {
    Add,
    Sub,
    MulLo,
    And,
    Or,
    Xor,
    Shl,
    ShrU,
    ShrS,
    MinS,
    MinU,
    MaxS,
    MaxU,
    DivS,
    DivU,
    RemS,
    RemU,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
    Copysign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FUn {
    Neg,
    Abs,
    Sqrt,
    Rcp,
    RcpApproxFtz,
    Ex2ApproxFtz,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ICmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// cvt's conversions (the forms NVRTC emits; others are parse errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CvtKind {
    /// Integer to integer: extend from `from` bits (signed or not), truncate to `to` bits.
    Int {
        from: u8,
        signed: bool,
        to: u8,
    },
    F32ToBf16(Round),
    F32ToTf32(Round),
    F32ToF64,
    F64ToF32(Round),
    /// cvt[.rni..][.sat].f32.f32
    F32Round {
        r: Option<Round>,
        sat: bool,
    },
    IntToF32 {
        bits: u8,
        signed: bool,
        r: Round,
    },
    IntToF64 {
        bits: u8,
        signed: bool,
        r: Round,
    },
    /// Float (f32 if `from64` false) to integer of `bits`.
    FToInt {
        from64: bool,
        bits: u8,
        signed: bool,
        r: Round,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomOp {
    AddU32,
    AddU64,
    AddF32,
    ExchB32,
    MaxS32,
    MaxU32,
    MinS32,
    MinU32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteMode {
    Any,
    All,
    Uni,
    Ballot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmaKind {
    Bf16M16n8k16,
    Tf32M16n8k8,
}

/// The operands of an mma.sync (boxed: rare and large).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mma {
    pub kind: MmaKind,
    pub d: [Reg; 4],
    pub a: [Reg; 4],
    pub b: [Reg; 2],
    pub c: [Reg; 4],
}

pub const NO_REG: Reg = u32::MAX;

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Nop,
    Mov {
        d: Reg,
        a: Src,
    },
    /// Integer binary op on `bits` (1 for predicates, 16, 32, 64).
    Int {
        op: IOp,
        bits: u8,
        d: Reg,
        a: Src,
        b: Src,
    },
    Not {
        bits: u8,
        d: Reg,
        a: Src,
    },
    NegI {
        bits: u8,
        d: Reg,
        a: Src,
    },
    MulWide {
        signed: bool,
        d: Reg,
        a: Src,
        b: Src,
    },
    MulHi {
        signed: bool,
        bits: u8,
        d: Reg,
        a: Src,
        b: Src,
    },
    Mad {
        bits: u8,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    F32 {
        op: FOp,
        r: Round,
        d: Reg,
        a: Src,
        b: Src,
    },
    F64 {
        op: FOp,
        r: Round,
        d: Reg,
        a: Src,
        b: Src,
    },
    Fma32 {
        r: Round,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Fma64 {
        r: Round,
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    F32Un {
        op: FUn,
        r: Round,
        d: Reg,
        a: Src,
    },
    F64Un {
        op: FUn,
        r: Round,
        d: Reg,
        a: Src,
    },
    SetpI {
        cmp: ICmp,
        signed: bool,
        bits: u8,
        d: Reg,
        a: Src,
        b: Src,
    },
    SetpF32 {
        cmp: Cmp,
        d: Reg,
        a: Src,
        b: Src,
    },
    SetpF64 {
        cmp: Cmp,
        d: Reg,
        a: Src,
        b: Src,
    },
    Selp {
        d: Reg,
        a: Src,
        b: Src,
        p: Src,
    },
    Cvt {
        k: CvtKind,
        d: Reg,
        a: Src,
    },
    Prmt {
        d: Reg,
        a: Src,
        b: Src,
        c: Src,
    },
    Bfi {
        bits: u8,
        d: Reg,
        a: Src,
        b: Src,
        pos: Src,
        len: Src,
    },
    /// `size` bytes per element, `vec` elements into `d[..vec]`; `signed` sign-extends.
    Ld {
        space: Space,
        size: u8,
        vec: u8,
        signed: bool,
        d: [Reg; 4],
        addr: Addr,
    },
    St {
        space: Space,
        size: u8,
        vec: u8,
        s: [Src; 4],
        addr: Addr,
    },
    Atom {
        space: Space,
        op: AtomOp,
        d: Reg,
        addr: Addr,
        b: Src,
    },
    /// cp.async: `size` bytes (4, 8, 16) from global `src` to shared `dst`; `src_size` bytes
    /// are read, the rest zero-filled.
    CpAsync {
        dst: Addr,
        src: Addr,
        size: u8,
        src_size: Option<Src>,
    },
    CpAsyncCommit,
    CpAsyncWait {
        n: u32,
    },
    Bar,
    /// `bar.warp.sync mask` (`__syncwarp`); `mask` must name all lanes at run time.
    WarpSync {
        mask: Src,
    },
    Bra {
        target: u32,
    },
    Exit,
    /// `p` is `NO_REG` without a `|%p` destination; `mask` must name all lanes at run time.
    Shfl {
        mode: ShflMode,
        d: Reg,
        p: Reg,
        a: Src,
        b: Src,
        c: Src,
        mask: Src,
    },
    Vote {
        mode: VoteMode,
        d: Reg,
        a: Src,
        mask: Src,
    },
    Ldmatrix {
        trans: bool,
        d: [Reg; 4],
        addr: Addr,
    },
    Mma(Box<Mma>),
    /// `mov.bN d, {a, b, ..}`: `n` parts of `w` bits each, the first in the low bits.
    Pack {
        d: Reg,
        a: [Src; 4],
        n: u8,
        w: u8,
    },
    /// `mov.bN {d0, d1, ..}, a`: the reverse.
    Unpack {
        d: [Reg; 4],
        a: Src,
        n: u8,
        w: u8,
    },
}

impl Op {
    /// Whether the instruction is a warp collective (executed for 32 lanes together).
    pub fn is_collective(&self) -> bool {
        matches!(self, Op::Shfl { .. } | Op::Vote { .. } | Op::Ldmatrix { .. } | Op::Mma(_) | Op::WarpSync { .. })
    }
}

/// One instruction: its operation and guard (`@%p` / `@!%p`).
#[derive(Clone, Debug, PartialEq)]
pub struct Inst {
    pub op: Op,
    /// Guard predicate slot, or `NO_REG` when unguarded.
    pub guard: Reg,
    /// The guard is negated (`@!%p`).
    pub guard_neg: bool,
}

impl Kernel {
    /// The value of constant slot `slot`, if it is one.
    pub fn constant(&self, slot: Reg) -> Option<u64> {
        self.consts.iter().find(|(s, _)| *s == slot).map(|&(_, v)| v)
    }

    /// The name of `.file` id `id`.
    pub fn file_name(&self, id: u32) -> Option<&str> {
        self.files.iter().find(|(i, _)| *i == id).map(|(_, n)| n.as_str())
    }
}

impl Module {
    /// Parses PTX text (as NVRTC emits it). A form the emulator does not know is an error
    /// naming the kernel, the PTX line and the instruction.
    pub fn parse(ptx: &str) -> Result<Module> {
        crate::parse::parse(ptx)
    }
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }
}
