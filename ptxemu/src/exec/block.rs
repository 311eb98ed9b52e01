//! One block of a launch: its threads' registers, shared and local memory, the shared-memory
//! checker, and the scheduler that runs threads until barriers and warp collectives.

use super::Grid;
use crate::error::{EmuError, Result, Site};
use crate::ir::*;
use crate::memory::{LOCAL_WINDOW, SHARED_WINDOW, WINDOW_BYTES};
use crate::shadow::{Access, Finding, SharedShadow};

/// Where a thread stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TState {
    Run,
    /// At a bar.sync (its pc).
    Bar,
    /// At a warp collective (its pc).
    Coll,
    Exit,
}

/// A cp.async issued and not yet landed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pending {
    pub group: u32,
    pub dst: u32,
    pub len: u8,
    pub data: [u8; 16],
}

/// A resolved memory location.
#[derive(Clone, Copy, Debug)]
pub(super) enum Loc {
    Global(*mut u8),
    Shared(u32),
    /// Byte offset into the block-wide local array (thread's depot already added).
    Local(usize),
    Param(usize),
}

/// Everything but the registers (so the hot loop can borrow both).
pub(super) struct Mem<'g> {
    pub g: &'g Grid<'g>,
    pub shared: Vec<u8>,
    pub shadow: Option<SharedShadow>,
    pub local: Vec<u8>,
    pub hint: usize,
    pub pending: Vec<Vec<Pending>>,
    pub group: Vec<u32>,
    pub block: (u32, u32, u32),
}

pub(super) struct Block<'g> {
    pub mem: Mem<'g>,
    pub regs: Vec<u64>,
    pub pcs: Vec<u32>,
    pub state: Vec<TState>,
    pub nthreads: usize,
    pub nregs: usize,
}

impl<'g> Block<'g> {
    pub fn new(g: &'g Grid<'g>) -> Block<'g> {
        let b = g.cfg.block;
        let nthreads = (b.0 * b.1 * b.2) as usize;
        let nregs = g.k.nregs as usize;
        let shared_bytes = (g.k.dynamic_shared_offset + g.cfg.dynamic_shared) as usize;
        let shared_bytes = if g.cfg.dynamic_shared == 0 { g.k.static_shared as usize } else { shared_bytes };
        Block {
            mem: Mem {
                g,
                shared: vec![0; shared_bytes],
                shadow: g.opts.check_shared.then(|| SharedShadow::new(shared_bytes)),
                local: vec![0; nthreads * g.k.local_bytes as usize],
                hint: 0,
                pending: vec![Vec::new(); nthreads],
                group: vec![0; nthreads],
                block: (0, 0, 0),
            },
            regs: vec![0; nthreads * nregs],
            pcs: vec![0; nthreads],
            state: vec![TState::Run; nthreads],
            nthreads,
            nregs,
        }
    }

    fn reset(&mut self, block: (u32, u32, u32)) {
        let g = self.mem.g;
        let (bd, gd) = (g.cfg.block, g.cfg.grid);
        self.mem.block = block;
        self.mem.shared.fill(0);
        self.mem.local.fill(0);
        if let Some(s) = &mut self.mem.shadow {
            s.reset();
        }
        // Registers are not cleared between blocks: the big GEMMs have thousands of slots per
        // thread, and PTX from NVRTC never reads a register before writing it. (They start zeroed.)
        self.pcs.fill(0);
        self.state.fill(TState::Run);
        let nwarps = self.nthreads.div_ceil(32) as u64;
        for t in 0..self.nthreads {
            self.mem.pending[t].clear();
            self.mem.group[t] = 0;
            let r = &mut self.regs[t * self.nregs..];
            let tid = thread_coords(bd, t);
            let sp = [tid.0, tid.1, tid.2, bd.0, bd.1, bd.2, block.0, block.1, block.2, gd.0, gd.1, gd.2];
            for (k, v) in sp.iter().enumerate() {
                r[k] = *v as u64;
            }
            r[SR_LANEID as usize] = (t % 32) as u64;
            r[SR_WARPID as usize] = (t / 32) as u64;
            r[SR_NWARPID as usize] = nwarps;
            for &(slot, v) in &g.k.consts {
                r[slot as usize] = v;
            }
        }
    }

    /// Runs the block to completion; returns the thread-instructions it executed.
    pub fn run(&mut self, block: (u32, u32, u32)) -> Result<u64> {
        self.reset(block);
        let mut instrs = 0u64;
        let nwarps = self.nthreads.div_ceil(32);
        loop {
            for w in 0..nwarps {
                let lanes = w * 32..((w + 1) * 32).min(self.nthreads);
                loop {
                    for t in lanes.clone() {
                        if self.state[t] == TState::Run {
                            instrs += self.run_thread(t)?;
                        }
                    }
                    let first = lanes.start;
                    let coll = lanes.clone().find(|&t| self.state[t] == TState::Coll);
                    let Some(c) = coll else { break };
                    let pc = self.pcs[c];
                    if let Some(bad) = lanes.clone().find(|&t| self.state[t] != TState::Coll || self.pcs[t] != pc) {
                        let why = match self.state[bad] {
                            TState::Exit => "has exited".to_string(),
                            TState::Bar => format!("waits at a bar.sync (ptx line {})", self.ptx_line(self.pcs[bad])),
                            _ => format!("waits at another collective (ptx line {})", self.ptx_line(self.pcs[bad])),
                        };
                        return Err(self.err(
                            pc,
                            c,
                            format!(
                                "warp collective not reached by all 32 lanes (deadlock): lane {} {why}",
                                bad - first
                            ),
                        ));
                    }
                    self.collective(w, pc)?;
                    if let Some(s) = &mut self.mem.shadow {
                        s.warp_sync(w as u32);
                    }
                    for t in lanes.clone() {
                        self.pcs[t] += 1;
                        self.state[t] = TState::Run;
                    }
                }
            }
            let exited = (0..self.nthreads).find(|&t| self.state[t] == TState::Exit);
            let waiting = (0..self.nthreads).find(|&t| self.state[t] == TState::Bar);
            match (waiting, exited) {
                (None, _) => break,
                (Some(w), Some(e)) => {
                    let c = thread_coords(self.mem.g.cfg.block, e);
                    return Err(self.err(
                        self.pcs[w],
                        w,
                        format!(
                            "barrier not reached by all threads of the block: thread ({}, {}, {}) has exited",
                            c.0, c.1, c.2
                        ),
                    ));
                }
                (Some(_), None) => {
                    if let Some(s) = &mut self.mem.shadow {
                        s.barrier();
                    }
                    for t in 0..self.nthreads {
                        self.pcs[t] += 1;
                        self.state[t] = TState::Run;
                    }
                }
            }
        }
        Ok(instrs)
    }

    fn ptx_line(&self, pc: u32) -> u32 {
        self.mem.g.k.lines.get(pc as usize).map_or(0, |l| l.ptx_line)
    }

    pub fn err(&self, pc: u32, t: usize, m: String) -> EmuError {
        self.mem.err(pc, t, m)
    }
}

fn thread_coords(bd: (u32, u32, u32), t: usize) -> (u32, u32, u32) {
    let t = t as u32;
    (t % bd.0, (t / bd.0) % bd.1, t / (bd.0 * bd.1))
}

impl Mem<'_> {
    /// A launch error at instruction `pc` of thread `t`.
    pub fn err(&self, pc: u32, t: usize, message: String) -> EmuError {
        let k = self.g.k;
        let l = k.lines.get(pc as usize).copied().unwrap_or_default();
        let site = Site {
            kernel: k.name.clone(),
            file: k.file_name(l.file).map(str::to_string),
            line: (l.line != 0).then_some(l.line),
            ptx_line: Some(l.ptx_line),
            block: Some(self.block),
            thread: Some(thread_coords(self.g.cfg.block, t)),
        };
        EmuError::Launch { site, message }
    }

    /// Resolves `addr` of `len` bytes (aligned to `align`) in `space` for thread `t`.
    #[inline]
    pub fn resolve(
        &mut self,
        space: Space,
        addr: u64,
        len: u64,
        align: u64,
        t: usize,
    ) -> std::result::Result<Loc, String> {
        if addr & (align - 1) != 0 {
            return Err(format!("misaligned {len}-byte access at {addr:#x} (needs {align}-byte alignment)"));
        }
        let space = match space {
            Space::Generic if addr.wrapping_sub(SHARED_WINDOW) < WINDOW_BYTES => {
                return self.shared_loc(addr - SHARED_WINDOW, len);
            }
            Space::Generic if addr.wrapping_sub(LOCAL_WINDOW) < WINDOW_BYTES => {
                return self.local_loc(addr - LOCAL_WINDOW, len, t);
            }
            Space::Generic => Space::Global,
            s => s,
        };
        match space {
            Space::Global => match self.g.view.lookup(addr, len, &mut self.hint) {
                Some(p) => Ok(Loc::Global(p)),
                None => Err(format!("global access of {len} bytes at {addr:#x} outside every live allocation")),
            },
            Space::Shared => self.shared_loc(addr, len),
            Space::Local => self.local_loc(addr, len, t),
            _ => {
                if addr.checked_add(len).is_some_and(|e| e <= self.g.params.len() as u64) {
                    Ok(Loc::Param(addr as usize))
                } else {
                    Err(format!("parameter access of {len} bytes at offset {addr} outside the parameters"))
                }
            }
        }
    }

    fn shared_loc(&self, off: u64, len: u64) -> std::result::Result<Loc, String> {
        if off.checked_add(len).is_some_and(|e| e <= self.shared.len() as u64) {
            Ok(Loc::Shared(off as u32))
        } else {
            Err(format!(
                "shared-memory access of {len} bytes at offset {off} outside the block's {} bytes of shared memory",
                self.shared.len()
            ))
        }
    }

    fn local_loc(&self, off: u64, len: u64, t: usize) -> std::result::Result<Loc, String> {
        let depot = self.g.k.local_bytes as u64;
        if off.checked_add(len).is_some_and(|e| e <= depot) {
            Ok(Loc::Local(t * depot as usize + off as usize))
        } else {
            Err(format!("local-memory access of {len} bytes at offset {off} outside the thread's {depot} bytes"))
        }
    }

    /// Reads `size` bytes (1, 2, 4, 8) at `loc` + `off`, zero-extended.
    #[inline]
    pub fn read(&mut self, loc: Loc, off: usize, size: u8, t: usize) -> std::result::Result<u64, String> {
        let bd = self.g.cfg.block;
        let p: *const u8 = match loc {
            Loc::Global(p) => p.wrapping_add(off),
            Loc::Shared(o) => {
                let o = o as usize + off;
                if let Some(s) = &mut self.shadow {
                    s.read(t as u32, o as u32, size as u32).map_err(|f| finding(f, Access::Read, bd))?;
                }
                &self.shared[o]
            }
            Loc::Local(o) => &self.local[o + off],
            Loc::Param(o) => &self.g.params[o + off],
        };
        // SAFETY: `resolve` checked [p, p + len) lies in one allocation or buffer.
        Ok(unsafe { read_le(p, size) })
    }

    #[inline]
    pub fn write(&mut self, loc: Loc, off: usize, size: u8, v: u64, t: usize) -> std::result::Result<(), String> {
        let bd = self.g.cfg.block;
        let p: *mut u8 = match loc {
            Loc::Global(p) => p.wrapping_add(off),
            Loc::Shared(o) => {
                let o = o as usize + off;
                if let Some(s) = &mut self.shadow {
                    s.write(t as u32, o as u32, size as u32).map_err(|f| finding(f, Access::Write, bd))?;
                }
                &mut self.shared[o]
            }
            Loc::Local(o) => &mut self.local[o + off],
            Loc::Param(_) => return Err("store to the parameter space".into()),
        };
        // SAFETY: as in `read`.
        unsafe { write_le(p, size, v) };
        Ok(())
    }

    /// Lands thread `t`'s cp.async copies of groups older than `keep` most recent committed ones
    /// (`keep` = None: all, including uncommitted ones).
    pub fn land(&mut self, t: usize, keep: Option<u32>) {
        let limit = match keep {
            Some(n) => self.group[t].saturating_sub(n),
            None => u32::MAX,
        };
        let mut k = 0;
        while k < self.pending[t].len() {
            let p = self.pending[t][k];
            if p.group < limit {
                let d = p.dst as usize;
                self.shared[d..d + p.len as usize].copy_from_slice(&p.data[..p.len as usize]);
                if let Some(s) = &mut self.shadow {
                    s.async_land(t as u32, p.dst, p.len as u32);
                }
                self.pending[t].swap_remove(k);
            } else {
                k += 1;
            }
        }
    }
}

/// The message of a shared-memory checker finding.
pub(super) fn finding((off, f): (u32, Finding), _now: Access, bd: (u32, u32, u32)) -> String {
    let who = |t: u32| {
        let c = thread_coords(bd, t as usize);
        format!("thread ({}, {}, {})", c.0, c.1, c.2)
    };
    let name = |a: Access| match a {
        Access::Read => "read",
        Access::Write => "write",
    };
    match f {
        Finding::Race { earlier, later, other_thread } => format!(
            "shared-memory race at offset {off}: {} by {} then {} by this thread, no barrier between",
            name(earlier),
            who(other_thread),
            name(later)
        ),
        Finding::Uninitialised => format!("read of shared memory at offset {off} not written in this launch"),
        Finding::AsyncPending { issuing_thread } => format!(
            "access to shared memory at offset {off}, a cp.async destination (issued by {}), before its cp.async.wait_group",
            who(issuing_thread)
        ),
    }
}

/// # Safety
/// `p` must be valid for reading `size` bytes.
#[inline]
pub(super) unsafe fn read_le(p: *const u8, size: u8) -> u64 {
    unsafe {
        match size {
            1 => *p as u64,
            2 => (p as *const u16).read_unaligned() as u64,
            4 => (p as *const u32).read_unaligned() as u64,
            _ => (p as *const u64).read_unaligned(),
        }
    }
}

/// # Safety
/// `p` must be valid for writing `size` bytes.
#[inline]
pub(super) unsafe fn write_le(p: *mut u8, size: u8, v: u64) {
    unsafe {
        match size {
            1 => *p = v as u8,
            2 => (p as *mut u16).write_unaligned(v as u16),
            4 => (p as *mut u32).write_unaligned(v as u32),
            _ => (p as *mut u64).write_unaligned(v),
        }
    }
}
