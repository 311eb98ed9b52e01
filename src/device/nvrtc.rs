//! Run-time compilation of kernels/*.cu through NVRTC, to cubin for one architecture.
//!
//! libnvrtc is loaded at run time. cudarc looks for it by name (LD_LIBRARY_PATH, the system);
//! where that fails we look in the usual places, the PyPI wheel `nvidia-cuda-nvrtc` among them,
//! and preload it by path so that cudarc's lookup by name then finds the loaded library.

use crate::error::{Error, Result};
use cudarc::nvrtc::sys;
use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The libnvrtc sonames we accept (CUDA 13, then 12).
const SONAMES: [&str; 2] = ["libnvrtc.so.13", "libnvrtc.so.12"];

/// Folders that may hold libnvrtc besides the loader's own search path.
fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["ENGINE_NVRTC_DIR"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.push(PathBuf::from(v));
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.push(Path::new(&v).join("lib64"));
            dirs.push(Path::new(&v).join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    // The wheel as .ci/run installs it (pip --target .cache/nvrtc), from the checkout or the cwd.
    let wheel_lib = Path::new(".cache/nvrtc/nvidia/cu13/lib");
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(wheel_lib));
    dirs.push(wheel_lib.to_path_buf());
    // Beside the executable (the GPU bundle ships libnvrtc there when it has one).
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.join("nvrtc"));
        dirs.push(dir.to_path_buf());
    }
    dirs
}

/// Makes libnvrtc loadable, or says where it was looked for and how to get it.
pub fn ensure_loaded() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: loading a shared library runs its initialisers; libnvrtc's are benign.
            if unsafe { sys::is_culib_present() } {
                return Ok(());
            }
            let dirs = candidate_dirs();
            for dir in &dirs {
                for name in SONAMES {
                    let path = dir.join(name);
                    if !path.is_file() {
                        continue;
                    }
                    // libnvrtc opens its builtins library by name at compile time: load the one
                    // beside it first, so that lookup finds it too.
                    if let Ok(entries) = std::fs::read_dir(dir) {
                        for e in entries.flatten() {
                            if e.file_name().to_string_lossy().starts_with("libnvrtc-builtins.so") {
                                preload(&e.path());
                            }
                        }
                    }
                    if preload(&path) && unsafe { sys::is_culib_present() } {
                        return Ok(());
                    }
                }
            }
            let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            Err(format!(
                "libnvrtc not found (looked on the loader path and in {}); install it with \
                 `pip install nvidia-cuda-nvrtc==13.0.*` and set ENGINE_NVRTC_DIR to its nvidia/cu13/lib folder",
                looked.join(", ")
            ))
        })
        .clone()
        .map_err(Error::Cuda)
}

/// Loads a library by path for the rest of the process, globally, so that a later lookup by its
/// soname finds it.
fn preload(path: &Path) -> bool {
    // SAFETY: loading a shared library runs its initialisers; NVRTC's are benign.
    let lib = unsafe {
        libloading::os::unix::Library::open(
            Some(path),
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
        )
    };
    match lib {
        Ok(lib) => {
            std::mem::forget(lib);
            true
        }
        Err(_) => false,
    }
}

/// The loaded libnvrtc's version (major, minor).
pub fn version() -> Result<(i32, i32)> {
    ensure_loaded()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    check(unsafe { sys::nvrtcVersion(&mut major, &mut minor) }, "nvrtcVersion")?;
    Ok((major, minor))
}

fn check(r: sys::nvrtcResult, what: &str) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvrtcGetErrorString returns a static C string.
    let msg = unsafe { CStr::from_ptr(sys::nvrtcGetErrorString(r)) }.to_string_lossy().into_owned();
    Err(Error::Cuda(format!("{what}: {msg}")))
}

/// A compiled kernel file: the cubin and NVRTC's log (ptxas's resource report included).
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
}

/// Compiles `source` (named `file`, with `headers` as (name, source) for `#include "name"`) to a
/// cubin for `sm_{arch}`. A compile error returns the log, which names file and line.
pub fn compile(file: &str, source: &str, headers: &[(&str, &str)], arch: u32) -> Result<Compiled> {
    let (cubin, log) = build(file, source, headers, arch, Output::Cubin)?;
    Ok(Compiled { cubin, log })
}

/// Compiles `source` to PTX for `compute_{arch}` with the same options as [`compile`] (the PTX
/// emulator runs it; ptxas would make the same cubin of it).
pub fn compile_ptx(file: &str, source: &str, headers: &[(&str, &str)], arch: u32) -> Result<String> {
    let (mut ptx, _log) = build(file, source, headers, arch, Output::Ptx)?;
    while ptx.last() == Some(&0) {
        ptx.pop();
    }
    String::from_utf8(ptx).map_err(|_| Error::Cuda(format!("{file}: NVRTC returned PTX that is not UTF-8")))
}

/// NVRTC options of every compilation besides the target. `--fmad=false`: no multiply-add is
/// contracted into an FMA, because every kernel's CPU twin rounds each product and sum (Rust never
/// contracts); kernels that want an FMA say `fmaf` (the SGEMM's inner product), which this
/// leaves fused. Part of the compiled-module cache keys.
pub const OPTIONS: &[&str] = &["--std=c++17", "-lineinfo", "--fmad=false"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Output {
    Cubin,
    Ptx,
}

/// One NVRTC compilation: the output's bytes and the log.
fn build(file: &str, source: &str, headers: &[(&str, &str)], arch: u32, output: Output) -> Result<(Vec<u8>, String)> {
    ensure_loaded()?;
    let cstr = |s: &str| CString::new(s).map_err(|_| Error::Cuda(format!("{file}: NUL byte in source")));
    let src = cstr(source)?;
    let name = cstr(file)?;
    let hdr_src: Vec<CString> = headers.iter().map(|(_, s)| cstr(s)).collect::<Result<_>>()?;
    let hdr_name: Vec<CString> = headers.iter().map(|(n, _)| cstr(n)).collect::<Result<_>>()?;
    let hdr_src_p: Vec<*const c_char> = hdr_src.iter().map(|s| s.as_ptr()).collect();
    let hdr_name_p: Vec<*const c_char> = hdr_name.iter().map(|s| s.as_ptr()).collect();
    let mut opts = vec![match output {
        Output::Cubin => format!("--gpu-architecture=sm_{arch}"),
        Output::Ptx => format!("--gpu-architecture=compute_{arch}"),
    }];
    opts.extend(OPTIONS.iter().map(|o| o.to_string()));
    if output == Output::Cubin {
        opts.push("--ptxas-options=-v".into());
    }
    let opts: Vec<CString> = opts.iter().map(|o| cstr(o)).collect::<Result<_>>()?;
    let opt_p: Vec<*const c_char> = opts.iter().map(|s| s.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer points into a CString that outlives the calls; the program is
    // destroyed on every path below.
    unsafe {
        check(
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                headers.len() as c_int,
                hdr_src_p.as_ptr(),
                hdr_name_p.as_ptr(),
            ),
            "nvrtcCreateProgram",
        )?;
        let compiled = sys::nvrtcCompileProgram(prog, opt_p.len() as c_int, opt_p.as_ptr());
        let log = program_log(prog);
        let result = if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
            let arch = match output {
                Output::Cubin => format!("sm_{arch}"),
                Output::Ptx => format!("compute_{arch}"),
            };
            Err(Error::Kernel { file: file.into(), arch, log })
        } else {
            match output {
                Output::Cubin => cubin(prog),
                Output::Ptx => ptx(prog),
            }
            .map(|bytes| (bytes, log))
        };
        sys::nvrtcDestroyProgram(&mut prog);
        result
    }
}

unsafe fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut size) } != sys::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    unsafe { sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) };
    String::from_utf8_lossy(&buf[..size.saturating_sub(1)]).into_owned()
}

unsafe fn ptx(prog: sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut size = 0usize;
    check(unsafe { sys::nvrtcGetPTXSize(prog, &mut size) }, "nvrtcGetPTXSize")?;
    let mut buf = vec![0u8; size];
    check(unsafe { sys::nvrtcGetPTX(prog, buf.as_mut_ptr() as *mut c_char) }, "nvrtcGetPTX")?;
    Ok(buf)
}

unsafe fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut size = 0usize;
    check(unsafe { sys::nvrtcGetCUBINSize(prog, &mut size) }, "nvrtcGetCUBINSize")?;
    let mut buf = vec![0u8; size];
    check(unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char) }, "nvrtcGetCUBIN")?;
    Ok(buf)
}

/// ptxas's report for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
    pub stack_bytes: u32,
}

/// Parses ptxas's `-v` report out of an NVRTC log, one entry per kernel.
pub fn parse_resources(log: &str) -> Vec<KernelResources> {
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let idx = line.find(word)?;
        line[..idx].split_whitespace().last()?.parse().ok()
    };
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(KernelResources { name, ..Default::default() });
        } else if let Some(k) = out.last_mut() {
            if line.contains("spill stores") {
                k.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("registers") {
                k.registers = number_before(line, "registers").unwrap_or(0);
            }
        }
    }
    out
}

/// FNV-1a: a stable hash for cache keys (std's hasher may change between Rust releases).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff; // separator, so ("ab", "c") and ("a", "bc") differ
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_report() {
        let log = "ptxas info    : 0 bytes gmem\n\
            ptxas info    : Compiling entry function 'gelu_forward' for 'sm_90'\n\
            ptxas info    : Function properties for gelu_forward\n\
            \x20   8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
            ptxas info    : Used 10 registers, 368 bytes cmem[0]\n\
            ptxas info    : Compiling entry function 'gelu_backward' for 'sm_90'\n\
            ptxas info    : Function properties for gelu_backward\n\
            \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
            ptxas info    : Used 16 registers, 368 bytes cmem[0]\n";
        let r = parse_resources(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                name: "gelu_forward".into(),
                registers: 10,
                spill_stores: 4,
                spill_loads: 12,
                stack_bytes: 8
            }
        );
        assert_eq!((r[1].registers, r[1].spill_stores), (16, 0));
    }
}
