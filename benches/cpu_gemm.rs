//! CPU GEMM throughput for BERT's linear layers, per backend, beside PyTorch's: at M = 512 tokens
//! and K, N over MiniLM's widths (384; 1152, the fused QKV; 1536, the FFN), the three products of a
//! linear layer (W stored (N, K)):
//!   fwd    out (M, N)  = x (M, K) · Wᵀ
//!   bwd_x  dx (M, K)  += dy (M, N) · W
//!   bwd_w  dW (N, K)  += dyᵀ · x (M, K)
//! Backends: `builtin` (the `gemm` crate), `blas` (the BLAS found at run time, single-threaded,
//! split over rayon's threads: what the CPU path runs), `blas-own` (OpenBLAS with its own threads
//! instead, for comparison) and `torch` (torch.mm through benches/cpu_gemm_torch.py, run by
//! $ENGINE_TORCH_PYTHON, else python3; said clearly when PyTorch is absent). Each shape is timed in
//! rounds that alternate the backends, so that a noisy machine hurts them alike. GFLOP/s from the
//! least time of all calls (on a shared machine, the rate without contention; the median's ratios
//! are summed up at the end too: threaded libraries that synchronise suffer most from a busy
//! machine). `cargo bench --bench cpu_gemm` (K and N only from a list: `-- 384 1536`).

use engine::cpu_gemm::{self, Backend, blas, gemm_on};
use engine::rng::Rng;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The PyTorch helper process, when PyTorch is there.
struct Torch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Torch {
    fn start(threads: usize) -> Result<(Torch, String), String> {
        let python = std::env::var("ENGINE_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/cpu_gemm_torch.py");
        let mut child = Command::new(&python)
            .args([script, &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {python}: {e}"))?;
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim().to_string();
        if !line.starts_with("torch ") {
            let _ = child.wait();
            return Err(format!("{line} ({python}; set ENGINE_TORCH_PYTHON to a python with torch)"));
        }
        Ok((Torch { child, stdin, stdout }, line))
    }

    /// Median and least seconds of one product over `reps` calls.
    fn time(&mut self, c: &Case, reps: usize) -> (f64, f64) {
        writeln!(self.stdin, "{} {} {} {} {} {reps}", c.m, c.n, c.k, c.ta as u8, c.tb as u8).unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Vec<f64> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
        (v[0], v[1])
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Case {
    name: &'static str,
    m: usize,
    n: usize,
    k: usize,
    /// lhs stored (k, m), rhs stored (n, k).
    ta: bool,
    tb: bool,
}

fn main() {
    let threads = rayon::current_num_threads();
    // K and N from the arguments (`cargo bench --bench cpu_gemm -- 384 1536`), else all three.
    let mut dims: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    if dims.is_empty() {
        dims = vec![384, 1152, 1536];
    }
    let m = 512;
    let mut rng = Rng::new(1);
    println!("CPU GEMM, f32, {threads} threads, M = {m}; W stored (N, K)");
    println!("  path's backend: {}", cpu_gemm::describe());
    let blas = blas();
    if blas.is_none() {
        println!("  no BLAS found (scripts/install-blas.sh installs OpenBLAS; ENGINE_BLAS=path/to/libmkl_rt.so.3)");
    }
    let mut torch = match Torch::start(threads) {
        Ok((t, version)) => {
            println!("  PyTorch: {version}");
            Some(t)
        }
        Err(e) => {
            println!("  PyTorch absent: {e}");
            None
        }
    };
    let mut names = vec!["builtin"];
    if let Some(b) = blas {
        names.push("blas");
        if b.set_threads(1) {
            names.push("blas-own");
        }
    }
    if torch.is_some() {
        names.push("torch");
    }
    print!("{:>6} {:>5} {:>5} {:>5}", "op", "M", "N", "K");
    for name in &names {
        print!(" {name:>9}");
    }
    println!("  GFLOP/s{}", if torch.is_some() { "; path / torch" } else { "" });
    let (mut ratios, mut median_ratios) = (Vec::new(), Vec::new());
    for &kd in &dims {
        for &nd in &dims {
            let cases = [
                Case { name: "fwd", m, n: nd, k: kd, ta: false, tb: true },
                Case { name: "bwd_x", m, n: kd, k: nd, ta: false, tb: false },
                Case { name: "bwd_w", m: nd, n: kd, k: m, ta: true, tb: false },
            ];
            for c in &cases {
                let a: Vec<f32> = (0..c.m * c.k).map(|_| rng.normal() as f32).collect();
                let b: Vec<f32> = (0..c.k * c.n).map(|_| rng.normal() as f32).collect();
                let sa = if c.ta { (1, c.m as isize) } else { (c.k as isize, 1) };
                let sb = if c.tb { (1, c.k as isize) } else { (c.n as isize, 1) };
                let mut out = vec![0f32; c.m * c.n];
                let flops = 2.0 * (c.m * c.n * c.k) as f64;
                let mut run = |backend: Backend, own: bool| {
                    let t = Instant::now();
                    if own {
                        blas.unwrap().set_threads(threads);
                        gemm_on(backend, c.m, c.n, c.k, &mut out, (&a, sa), (&b, sb), false, 1);
                        blas.unwrap().set_threads(1);
                    } else {
                        gemm_on(backend, c.m, c.n, c.k, &mut out, (&a, sa), (&b, sb), false, threads);
                    }
                    t.elapsed().as_secs_f64()
                };
                for _ in 0..3 {
                    run(Backend::Builtin, false);
                }
                // ~0.06 s per backend and round, 5 rounds.
                let reps = ((0.06 / run(Backend::Builtin, false)).ceil() as usize).clamp(3, 100);
                let mut times: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
                let mut torch_least = f64::INFINITY;
                for _ in 0..5 {
                    for (i, name) in names.iter().enumerate() {
                        match *name {
                            "builtin" => times[i].extend((0..reps).map(|_| run(Backend::Builtin, false))),
                            "blas" => times[i].extend((0..reps).map(|_| run(Backend::Blas, false))),
                            "blas-own" => times[i].extend((0..reps).map(|_| run(Backend::Blas, true))),
                            _ => {
                                // Its median stands for its reps calls; its least time is kept aside.
                                let (med, least) = torch.as_mut().unwrap().time(c, reps);
                                times[i].extend(std::iter::repeat_n(med, reps));
                                torch_least = torch_least.min(least);
                            }
                        }
                    }
                }
                let medians: Vec<f64> = times.iter().map(|t| flops / median(t.clone()) / 1e9).collect();
                let mut rates: Vec<f64> =
                    times.iter().map(|t| flops / t.iter().cloned().fold(f64::INFINITY, f64::min) / 1e9).collect();
                if torch.is_some() {
                    *rates.last_mut().unwrap() = flops / torch_least / 1e9;
                }
                print!("{:>6} {:>5} {:>5} {:>5}", c.name, c.m, c.n, c.k);
                for r in &rates {
                    print!(" {r:>9.1}");
                }
                if torch.is_some() {
                    // The path's backend: blas when there is one, else builtin.
                    let ours = if cpu_gemm::backend() == Backend::Blas { 1 } else { 0 };
                    let ratio = rates[ours] / rates[rates.len() - 1];
                    ratios.push(ratio);
                    median_ratios.push(medians[ours] / medians[medians.len() - 1]);
                    print!("  {ratio:.2}");
                }
                println!();
            }
        }
    }
    if !ratios.is_empty() {
        let min = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("path's backend / torch, best times: median {:.2}, min {min:.2}", median(ratios.clone()));
        let min = median_ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        println!("path's backend / torch, median times: median {:.2}, min {min:.2}", median(median_ratios));
    }
}
