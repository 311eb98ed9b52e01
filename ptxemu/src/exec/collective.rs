//! Warp collectives: gather the 32 lanes' operands, compute through `warp`, scatter the results.
//! Lanes past the end of a partial last warp read as zero and receive nothing.

use super::block::{Block, finding};
use crate::error::Result;
use crate::ir::*;
use crate::shadow::Access;
use crate::warp;

impl Block<'_> {
    /// Refuses a member mask that does not name all lanes (partial masks are not supported).
    fn full_mask(&self, pc: u32, base: usize, lanes: usize, mask: Src, what: &str) -> Result<()> {
        let n = self.nregs;
        match (0..lanes).find(|&l| self.regs[(base + l) * n + mask as usize] as u32 != u32::MAX) {
            Some(l) => Err(self.err(pc, base + l, format!("{what} with a partial member mask (not supported)"))),
            None => Ok(()),
        }
    }

    /// Executes the collective at `pc` for warp `w` (every present lane waits at it).
    pub(super) fn collective(&mut self, w: usize, pc: u32) -> Result<()> {
        let k = self.mem.g.k;
        let base = w * 32;
        let lanes = (self.nthreads - base).min(32);
        let n = self.nregs;
        let get = |regs: &[u64], l: usize, s: Src| regs[(base + l) * n + s as usize];
        match &k.insts[pc as usize].op {
            &Op::Shfl { mode, d, p, a, b, c, mask } => {
                let (mut av, mut bv, mut cv) = ([0u32; 32], [0u32; 32], [0u32; 32]);
                self.full_mask(pc, base, lanes, mask, "shfl.sync")?;
                for l in 0..lanes {
                    av[l] = get(&self.regs, l, a) as u32;
                    bv[l] = get(&self.regs, l, b) as u32;
                    cv[l] = get(&self.regs, l, c) as u32;
                }
                let (dv, pv) = warp::shfl(mode, &av, &bv, &cv);
                for l in 0..lanes {
                    self.regs[(base + l) * n + d as usize] = dv[l] as u64;
                    if p != NO_REG {
                        self.regs[(base + l) * n + p as usize] = pv[l] as u64;
                    }
                }
            }
            &Op::WarpSync { mask } => {
                // Nothing to compute: reaching it together is the point (the caller then orders
                // the warp's shared-memory accesses).
                self.full_mask(pc, base, lanes, mask, "bar.warp.sync")?;
            }
            &Op::Vote { mode, d, a, mask } => {
                let mut ballot = 0u32;
                self.full_mask(pc, base, lanes, mask, "vote.sync")?;
                for l in 0..lanes {
                    ballot |= ((get(&self.regs, l, a) & 1) as u32) << l;
                }
                let all = if lanes == 32 { u32::MAX } else { (1u32 << lanes) - 1 };
                let v = match mode {
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::All => (ballot == all) as u64,
                    VoteMode::Uni => (ballot == 0 || ballot == all) as u64,
                    VoteMode::Ballot => ballot as u64,
                };
                for l in 0..lanes {
                    self.regs[(base + l) * n + d as usize] = v;
                }
            }
            Op::Ldmatrix { trans, d, addr } => {
                if lanes != 32 {
                    return Err(self.err(pc, base, "ldmatrix in a partial warp".into()));
                }
                let mut addrs = [0u32; 32];
                for (l, slot) in addrs.iter_mut().enumerate() {
                    let at = match addr.base {
                        Some(b) => self.regs[(base + l) * n + b as usize].wrapping_add(addr.off as u64),
                        None => addr.off as u64,
                    };
                    // Each lane's row: 16 bytes, 16-byte aligned, read by that lane.
                    match self.mem.resolve(Space::Shared, at, 16, 16, base + l) {
                        Ok(_) => {}
                        Err(m) => return Err(self.err(pc, base + l, format!("ldmatrix row: {m}"))),
                    }
                    if let Some(s) = &mut self.mem.shadow
                        && let Err(f) = s.read((base + l) as u32, at as u32, 16)
                    {
                        let m = finding(f, Access::Read, self.mem.g.cfg.block);
                        return Err(self.err(pc, base + l, m));
                    }
                    *slot = at as u32;
                }
                let shared = &self.mem.shared;
                let out = warp::ldmatrix_x4(&addrs, *trans, |a| {
                    let a = a as usize;
                    shared.get(a..a + 16).map(|s| <[u8; 16]>::try_from(s).unwrap()).ok_or(())
                });
                let out = out.map_err(|_| self.err(pc, base, "ldmatrix row outside shared memory".into()))?;
                for (l, regs) in out.iter().enumerate() {
                    for j in 0..4 {
                        self.regs[(base + l) * n + d[j] as usize] = regs[j] as u64;
                    }
                }
            }
            Op::Mma(m) => {
                if lanes != 32 {
                    return Err(self.err(pc, base, "mma in a partial warp".into()));
                }
                let (mut a, mut b, mut c) = ([[0u32; 4]; 32], [[0u32; 2]; 32], [[0f32; 4]; 32]);
                for l in 0..32 {
                    let r = &self.regs[(base + l) * n..(base + l + 1) * n];
                    for j in 0..4 {
                        a[l][j] = r[m.a[j] as usize] as u32;
                        c[l][j] = f32::from_bits(r[m.c[j] as usize] as u32);
                    }
                    for j in 0..2 {
                        b[l][j] = r[m.b[j] as usize] as u32;
                    }
                }
                let out = match m.kind {
                    MmaKind::Bf16M16n8k16 => warp::mma_m16n8k16_bf16(&a, &b, &c),
                    MmaKind::Tf32M16n8k8 => warp::mma_m16n8k8_tf32(&a, &b, &c),
                };
                for (l, v) in out.iter().enumerate() {
                    for (&d, x) in m.d.iter().zip(v) {
                        self.regs[(base + l) * n + d as usize] = x.to_bits() as u64;
                    }
                }
            }
            _ => unreachable!("collective() on a non-collective instruction"),
        }
        Ok(())
    }
}
