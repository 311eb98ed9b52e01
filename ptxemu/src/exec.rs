//! Runs a launch: the grid's blocks (in parallel over host threads where the kernel has no
//! inter-block communication), each block's threads one after the other until the next barrier
//! or warp collective; a warp collective executes for its 32 lanes together.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{EmuError, Result, Site};
use crate::ir::{Kernel, Module};
use crate::memory::{GlobalView, Memory};

mod block;
mod collective;
mod step;

use block::Block;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchConfig {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Bytes of dynamic shared memory (`extern .shared`).
    pub dynamic_shared: u32,
    /// The kernel's opt-in limit for dynamic shared memory (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES):
    /// 48 KiB unless raised. A launch asking for more is an error.
    pub max_dynamic_shared: u32,
}

/// What a launch executed (benches report thread-instructions per second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaunchStats {
    pub thread_instructions: u64,
    pub blocks: u64,
}

/// Options beyond the launch configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchOptions {
    /// Run the shared-memory checker (races, uninitialised reads, cp.async before its wait).
    /// On by default; off only to measure what it costs.
    pub check_shared: bool,
    /// Run blocks on several host threads where the kernel allows it.
    pub parallel: bool,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions { check_shared: true, parallel: true }
    }
}

/// The most threads a block may have.
const MAX_BLOCK_THREADS: u64 = 1024;
/// Shared memory a block may use at most (sm_90: 227 KiB with the opt-in).
const MAX_SHARED: u64 = 227 * 1024;

/// Runs kernel `kernel` of `module` over `mem`. `params` holds each `.param`'s bytes in order; their
/// count and sizes must match the kernel's signature (an error names the kernel and the parameter).
pub fn launch(
    module: &Module,
    kernel: &str,
    mem: &mut Memory,
    cfg: &LaunchConfig,
    params: &[&[u8]],
) -> Result<LaunchStats> {
    launch_with(module, kernel, mem, cfg, params, &LaunchOptions::default())
}

/// `launch` with options (see `LaunchOptions`).
pub fn launch_with(
    module: &Module,
    kernel: &str,
    mem: &mut Memory,
    cfg: &LaunchConfig,
    params: &[&[u8]],
    opts: &LaunchOptions,
) -> Result<LaunchStats> {
    let k = module.kernel(kernel).ok_or_else(|| EmuError::Api(format!("no kernel named {kernel} in the module")))?;
    let fail = |m: String| EmuError::Launch { site: Site { kernel: k.name.clone(), ..Site::default() }, message: m };
    let buf = param_buffer(k, params).map_err(fail)?;
    check_config(k, cfg).map_err(fail)?;
    let nblocks = cfg.grid.0 as u64 * cfg.grid.1 as u64 * cfg.grid.2 as u64;
    let view = mem.view();
    let run = Grid { k, cfg, view: &view, params: &buf, opts };
    let instrs = if k.communicates || !opts.parallel || nblocks == 1 {
        // Blocks may communicate through global memory (atomics, fences, volatile): run them in
        // block order so that patterns like "the last block to finish reduces" behave.
        let mut b = Block::new(&run);
        let mut n = 0;
        for idx in 0..nblocks {
            n += b.run(run.block_coords(idx))?;
        }
        n
    } else {
        run_parallel(&run, nblocks)?
    };
    Ok(LaunchStats { thread_instructions: instrs, blocks: nblocks })
}

/// The parallel grid: one worker per host thread, each with one block state (a block's register
/// file can be megabytes), taking block indices from a shared counter. On failure the error of
/// the lowest failing block is reported: no worker takes a block past a failed one, and every
/// block below it was taken and finished, so a failing launch reports the same finding every time.
fn run_parallel(run: &Grid, nblocks: u64) -> Result<u64> {
    let next = AtomicU64::new(0);
    let failed = AtomicU64::new(u64::MAX);
    let workers = rayon::current_num_threads().min(nblocks as usize).max(1);
    let results: Vec<(u64, Option<(u64, EmuError)>)> = (0..workers)
        .into_par_iter()
        .map(|_| {
            let mut b = Block::new(run);
            let mut instrs = 0;
            loop {
                let idx = next.fetch_add(1, Ordering::Relaxed);
                if idx >= nblocks || idx > failed.load(Ordering::Relaxed) {
                    return (instrs, None);
                }
                match b.run(run.block_coords(idx)) {
                    Ok(n) => instrs += n,
                    Err(e) => {
                        failed.fetch_min(idx, Ordering::Relaxed);
                        return (instrs, Some((idx, e)));
                    }
                }
            }
        })
        .collect();
    let mut total = 0;
    let mut first: Option<(u64, EmuError)> = None;
    for (n, e) in results {
        total += n;
        if let Some((idx, e)) = e
            && first.as_ref().is_none_or(|f| idx < f.0)
        {
            first = Some((idx, e));
        }
    }
    match first {
        Some((_, e)) => Err(e),
        None => Ok(total),
    }
}

/// What every block of a launch shares.
pub(crate) struct Grid<'a> {
    pub k: &'a Kernel,
    pub cfg: &'a LaunchConfig,
    pub view: &'a GlobalView<'a>,
    pub params: &'a [u8],
    pub opts: &'a LaunchOptions,
}

impl Grid<'_> {
    fn block_coords(&self, idx: u64) -> (u32, u32, u32) {
        let (gx, gy) = (self.cfg.grid.0 as u64, self.cfg.grid.1 as u64);
        ((idx % gx) as u32, ((idx / gx) % gy) as u32, (idx / (gx * gy)) as u32)
    }
}

/// The parameter buffer: each parameter's bytes at its offset, after checking count and sizes.
fn param_buffer(k: &Kernel, params: &[&[u8]]) -> std::result::Result<Vec<u8>, String> {
    if params.len() != k.params.len() {
        return Err(format!("{} parameters given, the kernel takes {}", params.len(), k.params.len()));
    }
    let mut buf = vec![0u8; k.param_bytes as usize];
    for (i, (p, bytes)) in k.params.iter().zip(params).enumerate() {
        if bytes.len() != p.size as usize {
            return Err(format!("parameter {i} ({}) has {} bytes, the kernel takes {}", p.name, bytes.len(), p.size));
        }
        buf[p.offset as usize..(p.offset + p.size) as usize].copy_from_slice(bytes);
    }
    Ok(buf)
}

fn check_config(k: &Kernel, cfg: &LaunchConfig) -> std::result::Result<(), String> {
    let (b, g) = (cfg.block, cfg.grid);
    let threads = b.0 as u64 * b.1 as u64 * b.2 as u64;
    if threads == 0 || g.0 == 0 || g.1 == 0 || g.2 == 0 {
        return Err(format!("empty launch: grid {g:?}, block {b:?}"));
    }
    if threads > MAX_BLOCK_THREADS || b.2 > 64 {
        return Err(format!("block of {threads} threads {b:?}: more than the device's 1024"));
    }
    if let Some(m) = k.max_threads
        && threads > m as u64
    {
        return Err(format!("block of {threads} threads, the kernel's .maxntid/.reqntid allows {m}"));
    }
    if g.1 > 65535 || g.2 > 65535 {
        return Err(format!("grid {g:?}: y and z are limited to 65535"));
    }
    if cfg.dynamic_shared > cfg.max_dynamic_shared {
        let what = if cfg.max_dynamic_shared <= 48 * 1024 {
            "dynamic shared memory over 48 KiB without the opt-in attribute".to_string()
        } else {
            format!("dynamic shared memory over the kernel's opt-in limit of {} bytes", cfg.max_dynamic_shared)
        };
        return Err(format!("{what}: {} bytes asked", cfg.dynamic_shared));
    }
    let total = k.dynamic_shared_offset as u64 + cfg.dynamic_shared as u64;
    if total > MAX_SHARED {
        return Err(format!("{total} bytes of shared memory per block: more than the device's {MAX_SHARED}"));
    }
    Ok(())
}
