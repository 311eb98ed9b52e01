//! GPU GEMM throughput (`cargo bench --bench gpu_gemm`): the kernels of kernels/matmul.cu in
//! float32, tf32 and bf16 beside cuBLAS on the same problems in the same run, like against like:
//! cublasSgemm (default math: no tf32) for float32, cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32
//! for tf32, cublasGemmEx bf16 in, bf16 out, float32 compute for bf16 (ours: bf16 out too).
//! Problems: BERT-base's 12 training GEMMs at 4096 tokens (32 × 128) — forward y = x·Wᵀ, input
//! gradient dX = dY·W and weight gradient dW = dYᵀ·X of the QKV (768→2304), attention output
//! (768→768), FFN in (768→3072) and FFN out (3072→768) layers — and 8192³.
//! Method: fresh random inputs per problem, a warm-up, then CUDA events around each of many runs;
//! TFLOP/s of the median. Prints a table with ours/cuBLAS ratios, their geometric mean over the 12
//! BERT shapes and the 8192³ ratios, then every tile configuration of ours (the launcher's choice
//! starred), and checks each of our results against cuBLAS's. Exits non-zero when one of ours fails
//! or disagrees; without a GPU it says why and exits 0. cuBLAS is only a yardstick here.

use cudarc::cublas::{CudaBlas, result as blas, sys as bsys};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaSlice, DevicePtr};
use engine::device::Cuda;
use engine::device::cuda::Gpu;
use engine::ops::matmul::cuda::{Gemm, Kind, View, configs, gemm_with, pick};
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One problem: C (m×n) = op(A) (m×k) · op(B) (k×n), A stored transposed when `ta`, B when `tb`.
struct Problem {
    name: String,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
}

fn problems() -> Vec<Problem> {
    let tokens = 32 * 128;
    let layers = [("qkv", 768, 2304), ("attn.out", 768, 768), ("ffn.in", 768, 3072), ("ffn.out", 3072, 768)];
    let mut v = Vec::new();
    for (layer, inp, out) in layers {
        let p = |what: &str, m, n, k, ta, tb| Problem { name: format!("{layer} {what}"), m, n, k, ta, tb };
        v.push(p("fwd", tokens, out, inp, false, true)); // y = x · Wᵀ
        v.push(p("dX", tokens, inp, out, false, false)); // dX = dY · W
        v.push(p("dW", out, inp, tokens, true, false)); // dW = dYᵀ · X
    }
    v.push(Problem { name: "8192³".into(), m: 8192, n: 8192, k: 8192, ta: false, tb: false });
    v
}

const KINDS: [Kind; 3] = [Kind::F32, Kind::Tf32, Kind::Bf16 { out_bf16: true }];

fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::F32 => "f32",
        Kind::Tf32 => "tf32",
        Kind::Bf16 { .. } => "bf16",
        Kind::Bf16Rounded => "bf16 (f32 operands rounded)",
    }
}

/// Largest relative error (‖ours − cuBLAS‖ / ‖cuBLAS‖) we accept as agreement.
fn agreement(kind: Kind) -> f64 {
    match kind {
        Kind::F32 => 1e-4,
        Kind::Tf32 => 5e-3,
        Kind::Bf16 { .. } | Kind::Bf16Rounded => 2e-2,
    }
}

/// Uniform values in [-1, 1) from xorshift64*: fast enough for 8192² matrices.
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let r = s.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((r >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    ((u + 0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

fn from_bf16(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>().sqrt();
    let n: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum::<f64>().sqrt();
    if n == 0.0 { d } else { d / n }
}

type Res<T> = Result<T, String>;

/// The context and stream of `dev`, a real GPU (`Cuda::open`): cuBLAS and events need them.
fn gpu(dev: &Cuda) -> &Gpu {
    dev.gpu().expect("Cuda::open returns a real GPU")
}

fn err<E: std::fmt::Debug>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e:?}")
}

/// Median time (ms) of `f` over many runs after a warm-up, from CUDA events around each run.
fn time_ms(dev: &Cuda, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    let event = || gpu(dev).ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(err("event"));
    for _ in 0..3 {
        f()?;
    }
    let (s, e) = (event()?, event()?);
    s.record(&gpu(dev).stream).map_err(err("record"))?;
    f()?;
    e.record(&gpu(dev).stream).map_err(err("record"))?;
    let once = s.elapsed_ms(&e).map_err(err("elapsed"))? as f64;
    let reps = ((250.0 / once.max(1e-3)).ceil() as usize).clamp(7, 200);
    let events: Vec<_> = (0..reps).map(|_| Ok((event()?, event()?))).collect::<Res<_>>()?;
    for (s, e) in &events {
        s.record(&gpu(dev).stream).map_err(err("record"))?;
        f()?;
        e.record(&gpu(dev).stream).map_err(err("record"))?;
    }
    let mut t: Vec<f64> =
        events.iter().map(|(s, e)| s.elapsed_ms(e).map(|v| v as f64).map_err(err("elapsed"))).collect::<Res<_>>()?;
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

/// Device buffers of one problem: inputs in float32 and bf16, an output of each type for ours and
/// one for cuBLAS.
struct Buffers {
    a32: CudaSlice<f32>,
    b32: CudaSlice<f32>,
    a16: CudaSlice<u16>,
    b16: CudaSlice<u16>,
    c32: CudaSlice<f32>,
    c16: CudaSlice<u16>,
    r32: CudaSlice<f32>,
    r16: CudaSlice<u16>,
}

impl Buffers {
    fn new(dev: &Cuda, p: &Problem, seed: u64) -> Res<Buffers> {
        let s = &gpu(dev).stream;
        let a = random(p.m * p.k, seed);
        let b = random(p.k * p.n, seed + 1);
        let a16: Vec<u16> = a.iter().map(|&x| to_bf16(x)).collect();
        let b16: Vec<u16> = b.iter().map(|&x| to_bf16(x)).collect();
        let mn = p.m * p.n;
        Ok(Buffers {
            a32: s.clone_htod(&a).map_err(err("copy"))?,
            b32: s.clone_htod(&b).map_err(err("copy"))?,
            a16: s.clone_htod(&a16).map_err(err("copy"))?,
            b16: s.clone_htod(&b16).map_err(err("copy"))?,
            c32: s.alloc_zeros(mn).map_err(err("alloc"))?,
            c16: s.alloc_zeros(mn).map_err(err("alloc"))?,
            r32: s.alloc_zeros(mn).map_err(err("alloc"))?,
            r16: s.alloc_zeros(mn).map_err(err("alloc"))?,
        })
    }

    /// (a, b, ours, cuBLAS's) device addresses for `kind`.
    fn ptrs(&self, dev: &Cuda, kind: Kind) -> (u64, u64, u64, u64) {
        let s = &gpu(dev).stream;
        match kind {
            Kind::Bf16 { .. } => {
                (self.a16.device_ptr(s).0, self.b16.device_ptr(s).0, self.c16.device_ptr(s).0, self.r16.device_ptr(s).0)
            }
            _ => {
                (self.a32.device_ptr(s).0, self.b32.device_ptr(s).0, self.c32.device_ptr(s).0, self.r32.device_ptr(s).0)
            }
        }
    }

    /// ‖ours − cuBLAS‖ / ‖cuBLAS‖ of the outputs of `kind`.
    fn disagreement(&self, dev: &Cuda, kind: Kind) -> Res<f64> {
        let s = &gpu(dev).stream;
        let (ours, theirs) = match kind {
            Kind::Bf16 { .. } => {
                let f = |v: Vec<u16>| v.into_iter().map(from_bf16).collect::<Vec<f32>>();
                (f(s.clone_dtoh(&self.c16).map_err(err("copy"))?), f(s.clone_dtoh(&self.r16).map_err(err("copy"))?))
            }
            _ => (s.clone_dtoh(&self.c32).map_err(err("copy"))?, s.clone_dtoh(&self.r32).map_err(err("copy"))?),
        };
        Ok(rel(&ours, &theirs))
    }
}

fn our_gemm(p: &Problem, (a, b, c, _): (u64, u64, u64, u64)) -> Gemm {
    Gemm {
        batch: 1,
        m: p.m,
        n: p.n,
        k: p.k,
        a: if p.ta { View::col_major(a, p.m, p.k) } else { View::row_major(a, p.m, p.k) },
        b: if p.tb { View::col_major(b, p.k, p.n) } else { View::row_major(b, p.k, p.n) },
        c: View::row_major(c, p.m, p.n),
        accumulate: false,
    }
}

/// cuBLAS on the same problem. cuBLAS is column-major: our row-major C (m×n) is its C' (n×m) =
/// op(B)' · op(A)', where a row-major matrix read column-major is its transpose.
fn cublas_gemm(h: &CudaBlas, p: &Problem, kind: Kind, (a, b, _, r): (u64, u64, u64, u64)) -> Res<()> {
    use bsys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
    let (m, n, k) = (p.n as i32, p.m as i32, p.k as i32);
    let (op_b, ldb) = if p.tb { (CUBLAS_OP_T, p.k) } else { (CUBLAS_OP_N, p.n) };
    let (op_a, lda) = if p.ta { (CUBLAS_OP_T, p.m) } else { (CUBLAS_OP_N, p.k) };
    let (alpha, beta) = (1.0f32, 0.0f32);
    let handle = *h.handle();
    // SAFETY: the pointers are live device allocations of the sizes the problem implies, and the
    // handle runs on the stream that owns them.
    unsafe {
        match kind {
            Kind::F32 => blas::sgemm(
                handle,
                op_b,
                op_a,
                m,
                n,
                k,
                &alpha,
                b as *const f32,
                ldb as i32,
                a as *const f32,
                lda as i32,
                &beta,
                r as *mut f32,
                p.n as i32,
            ),
            _ => {
                let (ty, out, compute) = match kind {
                    Kind::Tf32 => (
                        bsys::cudaDataType::CUDA_R_32F,
                        bsys::cudaDataType::CUDA_R_32F,
                        bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                    ),
                    _ => (
                        bsys::cudaDataType::CUDA_R_16BF,
                        bsys::cudaDataType::CUDA_R_16BF,
                        bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    ),
                };
                blas::gemm_ex(
                    handle,
                    op_b,
                    op_a,
                    m,
                    n,
                    k,
                    &alpha as *const f32 as *const c_void,
                    b as *const c_void,
                    ty,
                    ldb as i32,
                    a as *const c_void,
                    ty,
                    lda as i32,
                    &beta as *const f32 as *const c_void,
                    r as *mut c_void,
                    out,
                    p.n as i32,
                    compute,
                    bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
        }
    }
    .map_err(err("cuBLAS"))
}

/// Loads libcublas (libcublasLt first) by path from the usual places when the loader does not find
/// it by name: $ENGINE_CUBLAS_DIR, the CUDA toolkit, beside libnvrtc, the PyPI wheels.
fn find_cublas() -> Res<()> {
    // SAFETY: loading a shared library runs its initialisers; cuBLAS's are benign.
    if unsafe { bsys::is_culib_present() } {
        return Ok(());
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    for var in ["ENGINE_CUBLAS_DIR", "ENGINE_NVRTC_DIR"] {
        if let Some(v) = std::env::var_os(var) {
            let d = PathBuf::from(v);
            dirs.push(d.join("../../cublas/lib"));
            dirs.push(d);
        }
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            dirs.push(Path::new(&v).join("lib64"));
        }
    }
    dirs.extend(
        ["/usr/local/cuda/lib64", "/usr/local/cuda-13.0/lib64", "/usr/lib/x86_64-linux-gnu"].map(PathBuf::from),
    );
    let py = "import glob, site\nfor b in site.getsitepackages() + [site.getusersitepackages()]:\n    for l in glob.glob(b + '/nvidia/**/libcublas.so.1[23]', recursive=True): print(l.rsplit('/', 1)[0])";
    if let Ok(out) = std::process::Command::new("python3").args(["-c", py]).output() {
        dirs.extend(String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from));
    }
    for dir in &dirs {
        for (lt, main) in [("libcublasLt.so.13", "libcublas.so.13"), ("libcublasLt.so.12", "libcublas.so.12")] {
            if !dir.join(main).is_file() {
                continue;
            }
            for lib in [lt, main] {
                // SAFETY: as above; the library stays loaded for the process.
                let l = unsafe {
                    libloading::os::unix::Library::open(
                        Some(dir.join(lib)),
                        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                    )
                };
                if let Ok(l) = l {
                    std::mem::forget(l);
                }
            }
            // SAFETY: as above.
            if unsafe { bsys::is_culib_present() } {
                return Ok(());
            }
        }
    }
    Err(format!("libcublas not found (looked on the loader path and in {} places; set ENGINE_CUBLAS_DIR)", dirs.len()))
}

/// Measurements of one problem: per kind, TFLOP/s of each of our configurations, the launcher's
/// choice, and cuBLAS's TFLOP/s and our disagreement with it (None without cuBLAS).
struct Row {
    ours: Vec<Vec<Res<f64>>>,
    picked: Vec<usize>,
    cublas: Vec<Option<Res<(f64, f64)>>>,
}

fn measure(dev: &Arc<Cuda>, h: Option<&CudaBlas>, p: &Problem, seed: u64) -> Res<Row> {
    let bufs = Buffers::new(dev, p, seed)?;
    let flops = 2.0 * (p.m * p.n * p.k) as f64;
    let tflops = |ms: f64| flops / (ms * 1e-3) / 1e12;
    let mut row = Row { ours: Vec::new(), picked: Vec::new(), cublas: Vec::new() };
    for kind in KINDS {
        let ptrs = bufs.ptrs(dev, kind);
        let g = our_gemm(p, ptrs);
        let picked = pick(dev, &g, kind);
        let mut ours = Vec::new();
        for ci in 0..configs(kind).len() {
            ours.push(
                time_ms(dev, || gemm_with(dev, &g, kind, ci).map_err(|e| e.to_string()))
                    .and_then(|ms| dev.synchronize().map(|_| tflops(ms)).map_err(|e| e.to_string())),
            );
        }
        let cublas = h.map(|h| {
            let ms = time_ms(dev, || cublas_gemm(h, p, kind, ptrs))?;
            // The last output of ours is the launcher's choice, compared with cuBLAS's.
            gemm_with(dev, &g, kind, picked).map_err(|e| e.to_string())?;
            dev.synchronize().map_err(|e| e.to_string())?;
            Ok((tflops(ms), bufs.disagreement(dev, kind)?))
        });
        row.ours.push(ours);
        row.picked.push(picked);
        row.cublas.push(cublas);
    }
    Ok(row)
}

fn fmt(v: &Res<f64>, width: usize) -> String {
    match v {
        Ok(x) => format!("{x:width$.1}"),
        Err(_) => format!("{:>width$}", "error"),
    }
}

fn geomean(v: &[f64]) -> f64 {
    if v.is_empty() { f64::NAN } else { (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp() }
}

fn main() {
    let dev = match Cuda::open(0) {
        Ok(d) => d,
        Err(e) => {
            println!("gpu_gemm: skipped: no usable GPU ({e})");
            return;
        }
    };
    let sms = dev.sm_count();
    let blas = match find_cublas().and_then(|_| CudaBlas::new(gpu(&dev).stream.clone()).map_err(err("cublasCreate"))) {
        Ok(h) => {
            // SAFETY: a live handle; default math keeps sgemm in float32 (no tf32).
            unsafe { bsys::cublasSetMathMode(*h.handle(), bsys::cublasMath_t::CUBLAS_DEFAULT_MATH) };
            let mut v = 0;
            // SAFETY: a live handle and an out-parameter.
            unsafe { bsys::cublasGetVersion_v2(*h.handle(), &mut v) };
            println!("gpu_gemm: {dev:?}, {sms} SMs; cuBLAS {v}");
            Some(h)
        }
        Err(e) => {
            println!("gpu_gemm: {dev:?}, {sms} SMs; no cuBLAS, ratios skipped: {e}");
            None
        }
    };
    println!("TFLOP/s (2·M·N·K / median time); ratio = ours / cuBLAS; layout: A then B, t = transposed in memory");
    let lay = |p: &Problem| format!("{}{}", if p.ta { "t" } else { "n" }, if p.tb { "t" } else { "n" });
    print!("{:<16} {:>5} {:>5} {:>5} {:>3}", "problem", "M", "N", "K", "");
    for kind in KINDS {
        print!(" | {:>9} {:>8} {:>6}", format!("{} ours", label(kind)), "cuBLAS", "ratio");
    }
    println!();
    let mut failed = Vec::new();
    let mut table = Vec::new();
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    let mut big: Vec<Option<f64>> = vec![None; KINDS.len()];
    let probs = problems();
    for (i, p) in probs.iter().enumerate() {
        let r = match measure(&dev, blas.as_ref(), p, 1000 + i as u64) {
            Ok(r) => r,
            Err(e) => {
                println!("{:<16} {e}", p.name);
                failed.push(format!("{}: {e}", p.name));
                continue;
            }
        };
        print!("{:<16} {:>5} {:>5} {:>5} {:>3}", p.name, p.m, p.n, p.k, lay(p));
        for (ki, kind) in KINDS.into_iter().enumerate() {
            let ours = &r.ours[ki][r.picked[ki]];
            for (ci, c) in configs(kind).iter().enumerate() {
                if let Err(e) = &r.ours[ki][ci] {
                    failed.push(format!("{} {}: {e}", p.name, c.name));
                }
            }
            match (&r.cublas[ki], ours) {
                (Some(Ok((theirs, dis))), Ok(o)) => {
                    let ratio = o / theirs;
                    print!(" | {} {theirs:8.1} {ratio:6.2}", fmt(ours, 9));
                    if *dis > agreement(kind) {
                        failed.push(format!("{} {}: ours differs from cuBLAS by {dis:.2e}", p.name, label(kind)));
                    }
                    if p.m == 8192 && p.n == 8192 && p.k == 8192 {
                        big[ki] = Some(ratio);
                    } else {
                        ratios[ki].push(ratio);
                    }
                }
                (Some(Err(e)), _) => {
                    print!(" | {} {:>8} {:>6}", fmt(ours, 9), "error", "");
                    failed.push(format!("{} {} cuBLAS: {e}", p.name, label(kind)));
                }
                _ => print!(" | {} {:>8} {:>6}", fmt(ours, 9), "-", ""),
            }
        }
        println!();
        table.push((p, r));
    }
    if blas.is_some() {
        print!("{:<38}", "ratio: geometric mean, 12 BERT GEMMs");
        for (ki, _) in KINDS.iter().enumerate() {
            print!(" | {:>25.2}", geomean(&ratios[ki]));
        }
        println!();
        print!("{:<38}", "ratio at 8192³");
        for b in &big {
            match b {
                Some(x) => print!(" | {x:>25.2}"),
                None => print!(" | {:>25}", "-"),
            }
        }
        println!();
    }

    println!("\nour tile configurations, TFLOP/s (* = the launcher's choice)");
    for (p, r) in &table {
        print!("{:<16}", p.name);
        for (ki, kind) in KINDS.into_iter().enumerate() {
            print!(" | {}", label(kind));
            for (ci, c) in configs(kind).iter().enumerate() {
                let star = if ci == r.picked[ki] { "*" } else { " " };
                print!(" {} {}{star}", c.name.rsplit('_').next().unwrap_or(c.name), fmt(&r.ours[ki][ci], 6));
            }
        }
        println!();
    }
    if !failed.is_empty() {
        println!("\ngpu_gemm: {} problem(s):", failed.len());
        for f in &failed {
            println!("  {f}");
        }
        std::process::exit(1);
    }
}
