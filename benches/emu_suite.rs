//! The PTX emulator's speed and the emulated GPU suite's wall time, on this machine (no GPU).
//!
//! 1. Thread-instructions per second of representative launches (a GEMM of each arithmetic, the
//!    memory-bound AdamW pass) on `Cuda::emulated()`, blocks spread over every core rayon has.
//! 2. The wall time of every GPU-suite test binary (tests/cuda_parity*.rs) run on the emulator
//!    (`ENGINE_EMULATE_GPU=1`), found beside this bench in target/release/deps: build them first
//!    with `cargo test --release --no-run` (scripts/test.sh has). `EMU_SUITE=0` skips part 2.
//!
//! `cargo bench --bench emu_suite`

use engine::device::cuda::GemmPrecision;
use engine::device::{Buffer, Cuda, Device};
use engine::ops::matmul::cuda::{Gemm, Kind, View, gemm};
use engine::rng::Rng;
use engine::{Error, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal() as f32).collect()
}

fn buffer(device: &Device, data: &[f32]) -> Result<Buffer<f32>> {
    let mut b = Buffer::new(device);
    b.grow_to(data.len())?;
    b.write(0, data)?;
    Ok(b)
}

/// Runs `f` once and prints thread-instructions, seconds and the rate.
fn measure(dev: &Arc<Cuda>, what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let before = dev.emu_stats().ok_or_else(|| Error::Cuda("not the emulator".into()))?;
    let t = Instant::now();
    f()?;
    let secs = t.elapsed().as_secs_f64();
    let after = dev.emu_stats().expect("emulated above");
    let n = after.thread_instructions - before.thread_instructions;
    println!("{what:<34} {:>14} {secs:>8.2} s {:>9.1} M/s", n, n as f64 / secs / 1e6);
    Ok(())
}

fn speed(dev: &Arc<Cuda>) -> Result<()> {
    let device = Device::Cuda(dev.clone());
    println!(
        "emulator speed, {} host threads (thread-instructions, seconds, per second):",
        rayon::current_num_threads()
    );
    let (m, n, k) = (384, 384, 384);
    let a = buffer(&device, &random(m * k, 1))?;
    let b = buffer(&device, &random(k * n, 2))?;
    let c = buffer(&device, &vec![0.0; m * n])?;
    let ptr = |x: &Buffer<f32>| x.device_ptr().expect("device buffer");
    let g = Gemm {
        batch: 1,
        m,
        n,
        k,
        a: View::row_major(ptr(&a), m, k),
        b: View::row_major(ptr(&b), k, n),
        c: View::row_major(ptr(&c), m, n),
        accumulate: false,
    };
    for (name, kind, precision) in [
        ("sgemm 384³ (float32 FMA)", Kind::F32, GemmPrecision::F32),
        ("tf32 GEMM 384³ (mma m16n8k8)", Kind::Tf32, GemmPrecision::Tf32),
        ("bf16 GEMM 384³ (rounded operands)", Kind::Bf16Rounded, GemmPrecision::F32),
    ] {
        dev.set_gemm_precision(precision);
        gemm(dev, &g, kind)?; // compiles (or reads) and parses the module first
        measure(dev, name, || gemm(dev, &g, kind))?;
    }
    dev.set_gemm_precision(GemmPrecision::F32);
    let len = 1 << 20;
    let (p, gr) = (buffer(&device, &random(len, 3))?, buffer(&device, &random(len, 4))?);
    let (mo, v) = (buffer(&device, &vec![0.0; len])?, buffer(&device, &vec![0.0; len])?);
    let args = [&p, &gr, &mo, &v].map(|x| engine::device::cuda::Arg::Ptr(ptr(x)));
    let (f, u) = (engine::device::cuda::Arg::F32, engine::device::cuda::Arg::U64);
    let (grid, block) = engine::device::cuda::grid_1d(len);
    measure(dev, "optimizer_step (AdamW) over 2^20 floats", || {
        let all = [
            args[0],
            args[1],
            args[2],
            args[3],
            u(len as u64),
            engine::device::cuda::Arg::U32(0),
            f(1e-3),
            f(0.9),
            f(0.999),
            f(1e-8),
            f(0.01),
            f(1e-3),
            f(1.0),
            f(0.1),
            f(1e-3),
            f(0.7),
            f(1.0),
            f(1.0),
        ];
        dev.launch("optim.cu", "optimizer_step", grid, block, 0, &all)
    })
}

/// The newest executable of each GPU-suite test in `deps`.
fn suite_binaries(deps: &std::path::Path) -> Vec<(String, PathBuf)> {
    use std::os::unix::fs::PermissionsExt;
    let mut newest: std::collections::BTreeMap<String, (std::time::SystemTime, PathBuf)> = Default::default();
    for e in std::fs::read_dir(deps).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((stem, hash)) = name.rsplit_once('-') else { continue };
        let meta = match e.metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        let executable = meta.is_file() && meta.permissions().mode() & 0o111 != 0 && !hash.contains('.');
        if !stem.starts_with("cuda_parity") || !executable {
            continue;
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        if newest.get(stem).is_none_or(|(t, _)| modified > *t) {
            newest.insert(stem.to_string(), (modified, e.path()));
        }
    }
    newest.into_iter().map(|(n, (_, p))| (n, p)).collect()
}

fn suite() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let deps = std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default();
    let bins = suite_binaries(&deps);
    if bins.is_empty() {
        println!("no GPU-suite test binaries in {}: run `cargo test --release --no-run` first", deps.display());
        return Ok(());
    }
    println!("\nthe GPU suite on the emulator (ENGINE_EMULATE_GPU=1), one binary at a time:");
    let start = Instant::now();
    let mut failed = 0;
    for (name, path) in &bins {
        let t = Instant::now();
        let out = std::process::Command::new(path)
            .env("ENGINE_EMULATE_GPU", "1")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text.lines().rfind(|l| l.starts_with("test result:")).unwrap_or("no summary");
        failed += usize::from(!out.status.success());
        println!("{name:<28} {:>7.1} s  {summary}", t.elapsed().as_secs_f64());
    }
    println!("{:<28} {:>7.1} s  ({failed} binaries failed)", "emulated GPU suite", start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dev = Cuda::emulated()?;
    speed(&dev)?;
    if std::env::var("EMU_SUITE").as_deref() != Ok("0") {
        suite()?;
    }
    Ok(())
}
