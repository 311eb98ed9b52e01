//! The CUDA device: a real GPU (a context and one stream through cudarc, driver loaded at run
//! time, the kernels compiled once per process through NVRTC and cached on disk) or the PTX
//! emulator (`emu.rs`: the same kernels as PTX, run on the CPU), and the launcher every op uses.
//! Ops see one `Cuda` either way: the backend only changes how memory and launches are carried out.

use super::emu::{Emu, EmuStats};
use super::kernels::KERNEL_SOURCES;
use super::nvrtc;
use crate::error::{Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// How float32 matmuls run on the GPU: plain float32 FMA (exact against the CPU path to ~1e-6),
/// or tensor cores with tf32 inputs and float32 accumulation (faster, ~1e-3 relative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPrecision {
    F32 = 0,
    Tf32 = 1,
}

/// The oldest architecture we run on: tensor-core `mma.sync` for tf32 and bf16 needs sm_80.
pub const MIN_ARCH: u32 = 80;

/// The architecture the emulator presents and compiles PTX for (an H100/H200).
pub const KERNEL_ARCH: u32 = 90;

/// The ordinal of an emulated device: no real GPU has it.
pub const EMULATED_ORDINAL: usize = usize::MAX;

/// SMs of the emulated device: an H100/H200's, so that tile choices match a real GPU's.
const EMULATED_SMS: usize = 132;

/// The environment variable that makes `--device cuda`/`auto` and the GPU tests use the emulator
/// even where a GPU exists (a GPU host compares the two this way).
pub const EMULATE_ENV: &str = "ENGINE_EMULATE_GPU";

/// Whether `ENGINE_EMULATE_GPU` asks for the emulator (set, and neither empty nor "0").
pub fn emulation_requested() -> bool {
    std::env::var_os(EMULATE_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

pub struct Cuda {
    pub ordinal: usize,
    pub name: String,
    /// Compute capability as 10·major + minor (90 for an H100).
    pub arch: u32,
    gemm_precision: AtomicU8,
    backend: Backend,
}

pub(super) enum Backend {
    Gpu(Gpu),
    Emu(Emu),
}

/// A real GPU: what benches that talk to the driver or cuBLAS directly need ([`Cuda::gpu`]).
pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    arch: u32,
    sms: usize,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<(&'static str, &'static str), CudaFunction>>,
    /// Device memory that launches borrow for the length of one queued op (the bf16 copies of
    /// matmul operands): reused in stream order, grown when too small.
    scratch: Mutex<Option<cudarc::driver::CudaSlice<u8>>>,
}

impl std::fmt::Debug for Cuda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.backend {
            Backend::Gpu(_) => write!(f, "cuda:{} ({}, sm_{})", self.ordinal, self.name, self.arch),
            Backend::Emu(_) => write!(f, "cuda:emu ({}, sm_{})", self.name, self.arch),
        }
    }
}

/// One kernel argument: device pointers are passed as plain 64-bit addresses.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    Ptr(u64),
    I32(i32),
    U32(u32),
    U64(u64),
    F32(f32),
    F64(f64),
}

fn driver_err(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

impl Cuda {
    /// Opens GPU `ordinal`, or says why not: no driver, no GPU, an unsupported architecture, no libnvrtc.
    pub fn open(ordinal: usize) -> Result<Arc<Cuda>> {
        // SAFETY: loading libcuda runs its initialisers, which is what using it means.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::Cuda("no CUDA driver: libcuda.so could not be loaded".into()));
        }
        let count = CudaContext::device_count().map_err(driver_err("cuInit/cuDeviceGetCount"))?;
        if count <= 0 {
            return Err(Error::Cuda("the CUDA driver sees no GPU".into()));
        }
        if ordinal >= count as usize {
            return Err(Error::Cuda(format!("GPU {ordinal} requested, but only {count} present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err("creating a context"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver_err("compute capability"))?;
        let arch = (major * 10 + minor) as u32;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        if arch < MIN_ARCH {
            return Err(Error::Cuda(format!(
                "{name} is sm_{arch}; the engine's kernels need sm_{MIN_ARCH} or newer (tensor-core mma.sync)"
            )));
        }
        nvrtc::ensure_loaded()?;
        let sms =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).unwrap_or(132).max(1) as usize;
        // One stream for everything: cudarc's cross-stream event tracking is not needed.
        // SAFETY: no other stream uses this context's allocations.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        Ok(Arc::new(Cuda {
            ordinal,
            name,
            arch,
            gemm_precision: AtomicU8::new(GemmPrecision::F32 as u8),
            backend: Backend::Gpu(Gpu {
                ctx,
                stream,
                arch,
                sms,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
                scratch: Mutex::new(None),
            }),
        }))
    }

    /// A new emulated sm_90 device with its own (empty) memory: the kernels run on the CPU
    /// through the PTX emulator. Needs libnvrtc (to make the PTX), not a driver.
    pub fn emulated() -> Result<Arc<Cuda>> {
        nvrtc::ensure_loaded()?;
        Ok(Arc::new(Cuda {
            ordinal: EMULATED_ORDINAL,
            name: "PTX emulator".into(),
            arch: KERNEL_ARCH,
            gemm_precision: AtomicU8::new(GemmPrecision::F32 as u8),
            backend: Backend::Emu(Emu::new()),
        }))
    }

    /// The GPU of `--device cuda`: the emulator when `ENGINE_EMULATE_GPU` asks for it, else GPU 0.
    pub fn open_default() -> Result<Arc<Cuda>> {
        if emulation_requested() { Cuda::emulated() } else { Cuda::open(0) }
    }

    pub(super) fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn is_emulated(&self) -> bool {
        matches!(self.backend, Backend::Emu(_))
    }

    /// The real GPU's context and stream (cuBLAS, events, raw copies: benches), or an error
    /// saying that this device is the emulator.
    pub fn gpu(&self) -> Result<&Gpu> {
        match &self.backend {
            Backend::Gpu(g) => Ok(g),
            Backend::Emu(_) => Err(Error::Cuda(format!(
                "{self:?} has no CUDA context or stream: this needs a real GPU (unset {EMULATE_ENV})"
            ))),
        }
    }

    /// What the emulator has executed (None on a real GPU).
    pub fn emu_stats(&self) -> Option<EmuStats> {
        match &self.backend {
            Backend::Gpu(_) => None,
            Backend::Emu(e) => Some(e.stats()),
        }
    }

    pub fn gemm_precision(&self) -> GemmPrecision {
        match self.gemm_precision.load(Ordering::Relaxed) {
            1 => GemmPrecision::Tf32,
            _ => GemmPrecision::F32,
        }
    }

    pub fn set_gemm_precision(&self, p: GemmPrecision) {
        self.gemm_precision.store(p as u8, Ordering::Relaxed);
    }

    /// Streaming multiprocessors (132 on the emulator, an H100/H200's): launchers size grids by it.
    pub fn sm_count(&self) -> usize {
        match &self.backend {
            Backend::Gpu(g) => g.sms,
            Backend::Emu(_) => EMULATED_SMS,
        }
    }

    /// Lets `file:name` use `bytes` of dynamic shared memory; past 48 KiB a kernel must opt in.
    pub fn allow_dynamic_shared(&self, file: &'static str, name: &'static str, bytes: u32) -> Result<()> {
        match &self.backend {
            Backend::Gpu(g) => {
                let f = g.function(file, name)?;
                g.ctx
                    .bind_to_thread()
                    .and_then(|_| {
                        f.set_attribute(
                            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                            bytes as i32,
                        )
                    })
                    .map_err(|e| Error::Cuda(format!("{file}:{name}: {e}")))
            }
            Backend::Emu(e) => e.allow_dynamic_shared(file, name, bytes),
        }
    }

    /// Launches `file:name` (on the stream; the emulator runs it to completion). Launchers
    /// compute grid and block and check limits; this checks the launch itself and names the
    /// kernel when it fails.
    pub fn launch(
        &self,
        file: &'static str,
        name: &'static str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(()); // empty problem
        }
        if grid.1 > 65535 || grid.2 > 65535 || block.0 * block.1 * block.2 > 1024 {
            return Err(Error::Cuda(format!("{name}: launch grid {grid:?} block {block:?} exceeds device limits")));
        }
        match &self.backend {
            Backend::Gpu(g) => g.launch(file, name, grid, block, shared_bytes, args),
            Backend::Emu(e) => e.launch(file, name, grid, block, shared_bytes, args),
        }
    }

    /// Time of the work `f` queues, in milliseconds (benches): GPU time between two CUDA events,
    /// or on the emulator the host's wall-clock time of running it (not a GPU's time).
    pub fn time_ms(&self, f: impl FnOnce() -> Result<()>) -> Result<f32> {
        match &self.backend {
            Backend::Gpu(g) => g.time_ms(f),
            Backend::Emu(_) => {
                let start = std::time::Instant::now();
                f()?;
                Ok(start.elapsed().as_secs_f32() * 1e3)
            }
        }
    }

    /// The address of `bytes` of scratch device memory (256-byte aligned). Work queued on this
    /// device's one stream before the next call may use it: later work runs after it in stream
    /// order, and a grown buffer frees the old one in stream order too.
    pub fn scratch(&self, bytes: usize) -> Result<u64> {
        match &self.backend {
            Backend::Gpu(g) => g.scratch(bytes),
            Backend::Emu(e) => e.scratch(bytes),
        }
    }

    /// Waits for all queued work; surfaces asynchronous kernel faults. (The emulator has none.)
    pub fn synchronize(&self) -> Result<()> {
        match &self.backend {
            Backend::Gpu(g) => g.stream.synchronize().map_err(driver_err("synchronize")),
            Backend::Emu(_) => Ok(()),
        }
    }

    /// Bytes of device memory in use on the whole GPU (total − free, after the queued work and
    /// its frees are done), or in the emulator's live allocations: benches take differences of it.
    pub fn memory_in_use(&self) -> Result<usize> {
        match &self.backend {
            Backend::Gpu(g) => {
                self.synchronize()?;
                let (free, total) = g.ctx.mem_get_info().map_err(driver_err("reading free memory"))?;
                Ok(total - free)
            }
            Backend::Emu(e) => Ok(e.in_use()),
        }
    }
}

impl Gpu {
    /// The module of kernel file `file`, compiled (or read from the disk cache) on first use.
    fn module(&self, file: &'static str) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().expect("module cache poisoned");
        if let Some(m) = modules.get(file) {
            return Ok(m.clone());
        }
        let arch = self.arch;
        let cubin = compiled_cubin(file, arch)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| Error::Cuda(format!("loading {file} for sm_{arch}: {e}")))?;
        modules.insert(file, module.clone());
        Ok(module)
    }

    pub fn function(&self, file: &'static str, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().expect("function cache poisoned").get(&(file, name)) {
            return Ok(f.clone());
        }
        let f = self
            .module(file)?
            .load_function(name)
            .map_err(|e| Error::Cuda(format!("kernel {name} not found in {file}: {e}")))?;
        self.functions.lock().expect("function cache poisoned").insert((file, name), f.clone());
        Ok(f)
    }

    fn launch(
        &self,
        file: &'static str,
        name: &'static str,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared_bytes: u32,
        args: &[Arg],
    ) -> Result<()> {
        let f = self.function(file, name)?;
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                Arg::Ptr(p) | Arg::U64(p) => b.arg(p),
                Arg::I32(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::F64(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: shared_bytes };
        // SAFETY: the launcher that called us matched `args` to the kernel's signature and sized
        // the grid to the buffers it passed.
        unsafe { b.launch(cfg) }
            .map_err(|e| Error::Cuda(format!("{file}:{name} grid {grid:?} block {block:?}: {e}")))?;
        Ok(())
    }

    fn time_ms(&self, f: impl FnOnce() -> Result<()>) -> Result<f32> {
        let timed = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(timed).map_err(driver_err("creating an event"))?;
        let end = self.ctx.new_event(timed).map_err(driver_err("creating an event"))?;
        start.record(&self.stream).map_err(driver_err("recording an event"))?;
        f()?;
        end.record(&self.stream).map_err(driver_err("recording an event"))?;
        end.synchronize().map_err(driver_err("waiting for an event"))?;
        start.elapsed_ms(&end).map_err(driver_err("reading an event"))
    }

    fn scratch(&self, bytes: usize) -> Result<u64> {
        let mut s = self.scratch.lock().expect("scratch poisoned");
        let held = s.as_ref().map_or(0, |b| b.len());
        if held < bytes {
            let size = bytes.max(2 * held).max(1 << 20);
            let fresh = self.stream.alloc_zeros::<u8>(size).map_err(driver_err("allocating scratch"))?;
            *s = Some(fresh);
        }
        let b = s.as_ref().expect("allocated above");
        Ok(b.device_ptr(&self.stream).0)
    }
}

/// Grid and block of a grid-stride loop over `n` elements: 256 threads a block, at most 8192
/// blocks (plenty to fill any GPU; the loop covers the rest).
pub fn grid_1d(n: usize) -> ((u32, u32, u32), (u32, u32, u32)) {
    let blocks = n.div_ceil(256).clamp(1, 8192) as u32;
    ((blocks, 1, 1), (256, 1, 1))
}

/// Every `.cuh` in kernels/, passed to NVRTC as in-memory headers.
pub fn headers() -> Vec<(&'static str, &'static str)> {
    KERNEL_SOURCES.iter().filter(|(n, _)| n.ends_with(".cuh")).copied().collect()
}

/// Every `.cu` in kernels/.
pub fn kernel_files() -> Vec<(&'static str, &'static str)> {
    KERNEL_SOURCES.iter().filter(|(n, _)| n.ends_with(".cu")).copied().collect()
}

/// The disk cache of compiled modules: $ENGINE_KERNEL_CACHE, else ~/.cache/engine/kernels.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ENGINE_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("engine").join("kernels"))
}

/// The cubin of `file` for `sm_{arch}`: from the disk cache, keyed by the sources' and options'
/// hash, the architecture and the NVRTC version, or compiled now and stored (atomically).
pub fn compiled_cubin(file: &'static str, arch: u32) -> Result<Vec<u8>> {
    cached(file, arch, "cubin", |source, hdrs| Ok(nvrtc::compile(file, source, hdrs, arch)?.cubin))
}

/// The PTX of `file` for `compute_{arch}` (what the emulator runs), cached on disk beside the
/// cubins under the same key, so that each process need not run NVRTC again.
pub fn compiled_ptx(file: &'static str, arch: u32) -> Result<String> {
    let bytes =
        cached(file, arch, "ptx", |source, hdrs| Ok(nvrtc::compile_ptx(file, source, hdrs, arch)?.into_bytes()))?;
    String::from_utf8(bytes).map_err(|_| Error::Cuda(format!("{file}: cached PTX is not UTF-8")))
}

/// The output of `compile` for `file`, read from the disk cache (`{stem}-{key}-sm{arch}-nvrtc{version}.{ext}`)
/// or compiled now and stored (atomically).
fn cached(
    file: &'static str,
    arch: u32,
    ext: &str,
    compile: impl FnOnce(&str, &[(&str, &str)]) -> Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let source = KERNEL_SOURCES
        .iter()
        .find(|(n, _)| *n == file)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::Cuda(format!("no kernel file {file} in kernels/")))?;
    let hdrs = headers();
    let (major, minor) = nvrtc::version()?;
    let mut parts: Vec<&[u8]> = vec![source.as_bytes()];
    for (n, s) in &hdrs {
        parts.push(n.as_bytes());
        parts.push(s.as_bytes());
    }
    // The options change the output too (--fmad): a cache entry of other options is not ours.
    parts.extend(nvrtc::OPTIONS.iter().map(|o| o.as_bytes()));
    let key = nvrtc::fnv1a(&parts);
    let stem = file.trim_end_matches(".cu");
    let path = cache_dir().map(|d| d.join(format!("{stem}-{key:016x}-sm{arch}-nvrtc{major}.{minor}.{ext}")));
    if let Some(p) = &path
        && let Ok(bytes) = std::fs::read(p)
    {
        return Ok(bytes);
    }
    let compiled = compile(source, &hdrs)?;
    if let Some(p) = &path {
        // A cache we cannot write is no error: the next run compiles again.
        let _ = crate::util::write_atomically(p, &compiled);
    }
    Ok(compiled)
}
