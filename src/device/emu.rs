//! The emulated GPU behind `Device::Cuda`: the same kernels, compiled by NVRTC to PTX for
//! compute_90 and run on the CPU by `ptxemu`, which also checks what a GPU run does not show
//! (shared-memory races, out-of-bounds accesses, uninitialised shared reads). It needs libnvrtc
//! but no driver, so the GPU suite runs on any machine.
//!
//! Every call is synchronous: a launch has finished when `launch` returns, so "stream order" is
//! program order and scratch or freed memory can never be in use by queued work.

use super::cuda::{Arg, KERNEL_ARCH, compiled_ptx};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Dynamic shared memory a kernel may use without opting in (as on a GPU).
const DEFAULT_DYNAMIC_SHARED: u32 = 48 * 1024;
/// The most a kernel may opt in to: an H100's 227 KiB per block.
const MAX_DYNAMIC_SHARED: u32 = 227 * 1024;

/// What the emulator has executed since the device was opened (benches report rates of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EmuStats {
    pub launches: u64,
    pub blocks: u64,
    /// Instructions executed, summed over threads.
    pub thread_instructions: u64,
}

/// One emulated device: its global memory, the kernels' opt-ins, scratch and statistics.
/// Parsed modules are shared by all emulated devices of the process.
pub struct Emu {
    memory: Mutex<ptxemu::Memory>,
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES per (file, kernel), as raised.
    dynamic_shared: Mutex<HashMap<(&'static str, &'static str), u32>>,
    /// (address, bytes) of the scratch allocation.
    scratch: Mutex<Option<(u64, usize)>>,
    launches: AtomicU64,
    blocks: AtomicU64,
    thread_instructions: AtomicU64,
}

/// Locks `m`, recovering from a panic in another thread: the emulator's state stays usable (a
/// launch that panicked has been reported as an error already).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn emu_err(what: &str) -> impl Fn(ptxemu::EmuError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

/// Runs `f`, turning a panic inside the emulator into an error that quotes its message, so that
/// an emulator bug fails one op instead of the process.
fn no_panic<R>(what: &str, f: impl FnOnce() -> Result<R>) -> Result<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(Error::Cuda(format!("{what}: the PTX emulator panicked: {msg}")))
        }
    }
}

/// The parsed module of kernel file `file`, from the process-wide cache, else from the PTX (disk
/// cache or NVRTC) parsed now. Parsing happens once per file and process.
fn module(file: &'static str) -> Result<Arc<ptxemu::Module>> {
    static MODULES: OnceLock<Mutex<HashMap<&'static str, Arc<ptxemu::Module>>>> = OnceLock::new();
    let mut modules = lock(MODULES.get_or_init(Default::default));
    if let Some(m) = modules.get(file) {
        return Ok(m.clone());
    }
    let ptx = compiled_ptx(file, KERNEL_ARCH)?;
    let parsed = no_panic(&format!("parsing the PTX of {file}"), || {
        ptxemu::Module::parse(&ptx).map_err(emu_err(&format!("parsing the PTX of {file}")))
    })?;
    let m = Arc::new(parsed);
    modules.insert(file, m.clone());
    Ok(m)
}

/// A kernel argument as the bytes of its `.param`: little-endian, 4 or 8 bytes.
fn arg_bytes(a: &Arg) -> Vec<u8> {
    match *a {
        Arg::Ptr(v) | Arg::U64(v) => v.to_le_bytes().to_vec(),
        Arg::I32(v) => v.to_le_bytes().to_vec(),
        Arg::U32(v) => v.to_le_bytes().to_vec(),
        Arg::F32(v) => v.to_le_bytes().to_vec(),
        Arg::F64(v) => v.to_le_bytes().to_vec(),
    }
}

impl Emu {
    pub fn new() -> Emu {
        Emu {
            memory: Mutex::new(ptxemu::Memory::new()),
            dynamic_shared: Mutex::new(HashMap::new()),
            scratch: Mutex::new(None),
            launches: AtomicU64::new(0),
            blocks: AtomicU64::new(0),
            thread_instructions: AtomicU64::new(0),
        }
    }

    /// The device memory, for buffers' allocations and copies.
    pub fn memory(&self) -> MutexGuard<'_, ptxemu::Memory> {
        lock(&self.memory)
    }

    /// Runs `file:name` to completion. The caller (`Cuda::launch`) has checked grid and block.
    pub fn launch(
        &self,
        file: &'static str,
        name: &'static str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        let what = format!("{file}:{name} grid {grid:?} block {block:?}");
        let module = module(file)?;
        if module.kernel(name).is_none() {
            return Err(Error::Cuda(format!("kernel {name} not found in {file}")));
        }
        let max_dynamic_shared =
            lock(&self.dynamic_shared).get(&(file, name)).copied().unwrap_or(DEFAULT_DYNAMIC_SHARED);
        let cfg = ptxemu::LaunchConfig { grid, block, dynamic_shared: shared_bytes, max_dynamic_shared };
        let bytes: Vec<Vec<u8>> = args.iter().map(arg_bytes).collect();
        let params: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let stats = no_panic(&what, || {
            let mut mem = self.memory();
            ptxemu::launch(&module, name, &mut mem, &cfg, &params).map_err(emu_err(&what))
        })?;
        self.launches.fetch_add(1, Ordering::Relaxed);
        self.blocks.fetch_add(stats.blocks, Ordering::Relaxed);
        self.thread_instructions.fetch_add(stats.thread_instructions, Ordering::Relaxed);
        Ok(())
    }

    /// Raises `file:name`'s dynamic shared memory limit to `bytes` (a GPU's function attribute).
    pub fn allow_dynamic_shared(&self, file: &'static str, name: &'static str, bytes: u32) -> Result<()> {
        if bytes > MAX_DYNAMIC_SHARED {
            return Err(Error::Cuda(format!(
                "{file}:{name}: {bytes} bytes of dynamic shared memory exceed the emulated sm_90's {MAX_DYNAMIC_SHARED}"
            )));
        }
        let module = module(file)?;
        if module.kernel(name).is_none() {
            return Err(Error::Cuda(format!("kernel {name} not found in {file}")));
        }
        lock(&self.dynamic_shared).insert((file, name), bytes);
        Ok(())
    }

    /// The address of at least `bytes` of scratch memory, grown like the GPU's (doubling, 1 MiB
    /// at least). Freeing the old allocation at once is safe: no queued work can still use it.
    pub fn scratch(&self, bytes: usize) -> Result<u64> {
        let mut s = lock(&self.scratch);
        match *s {
            Some((addr, held)) if held >= bytes => Ok(addr),
            old => {
                let held = old.map_or(0, |(_, h)| h);
                let size = bytes.max(2 * held).max(1 << 20);
                let mut mem = self.memory();
                let addr = mem.alloc(size).map_err(emu_err("allocating scratch"))?;
                if let Some((a, _)) = old {
                    mem.free(a).map_err(emu_err("freeing scratch"))?;
                }
                *s = Some((addr, size));
                Ok(addr)
            }
        }
    }

    /// Bytes in live allocations (buffers and scratch).
    pub fn in_use(&self) -> usize {
        self.memory().in_use()
    }

    pub fn stats(&self) -> EmuStats {
        EmuStats {
            launches: self.launches.load(Ordering::Relaxed),
            blocks: self.blocks.load(Ordering::Relaxed),
            thread_instructions: self.thread_instructions.load(Ordering::Relaxed),
        }
    }
}

impl Default for Emu {
    fn default() -> Self {
        Emu::new()
    }
}
