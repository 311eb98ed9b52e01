//! CPU GEMM throughput for BERT's linear-layer shapes: out (M, N) = x (M, K) · W (N, K)ᵀ, the
//! layout of every forward linear, at M = 512 tokens and K, N over MiniLM's and BERT-base's widths.
//! Prints GFLOP/s (median of repeated runs after a warm-up). `cargo bench --bench cpu_gemm`.

use engine::ops::matmul::cpu::gemm;
use engine::rng::Rng;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let threads = rayon::current_num_threads();
    let m = 512;
    let dims = [384, 768, 1536, 3072];
    let mut rng = Rng::new(1);
    println!("CPU GEMM, f32, {threads} threads: out (M, N) = x (M, K) · W (N, K)ᵀ");
    println!("{:>6} {:>6} {:>6} {:>10} {:>10}", "M", "K", "N", "ms", "GFLOP/s");
    for &k in &dims {
        for &n in &dims {
            let x: Vec<f32> = (0..m * k).map(|_| rng.normal() as f32).collect();
            let w: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
            let mut out = vec![0f32; m * n];
            let flops = 2.0 * (m * n * k) as f64;
            let mut run = || {
                let t = Instant::now();
                gemm(m, n, k, &mut out, (&x, (k as isize, 1)), (&w, (1, k as isize)), false, threads);
                t.elapsed().as_secs_f64()
            };
            for _ in 0..3 {
                run();
            }
            // Enough repetitions for ~0.3 s per shape.
            let reps = ((0.3 / run()).ceil() as usize).clamp(5, 200);
            let secs = median((0..reps).map(|_| run()).collect());
            println!("{m:>6} {k:>6} {n:>6} {:>10.3} {:>10.1}", secs * 1e3, flops / secs / 1e9);
        }
    }
}
