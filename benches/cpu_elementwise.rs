//! CPU throughput of the elementwise ops that dominate a training step outside the GEMMs: the
//! exact GELU forward and backward and the dropout mask (a 64-bit hash per element), on one
//! MiniLM FFN activation (batch 16 × 32 tokens × 1536), and the attention softmax on as many
//! elements (rows of 32 keys). Prints ns per element (wall, all threads)
//! and the ms they would take over one `cpu_methods` step (5 encoder passes × 6 layers: 23.6M FFN
//! elements, 5.9M attention probabilities). `cargo bench --bench cpu_elementwise`.

use engine::ops::{dropout, gelu, softmax};
use engine::rng::Rng;
use std::time::Instant;

const N: usize = 16 * 32 * 1536;
const REPS: usize = 100;
const FFN_PER_STEP: f64 = 5.0 * 6.0 * N as f64;
const PROBS_PER_STEP: f64 = 5.0 * 6.0 * (16 * 12 * 32 * 32) as f64;

fn main() {
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..N).map(|_| rng.normal() as f32 * 2.0).collect();
    let dy: Vec<f32> = (0..N).map(|_| rng.normal() as f32).collect();
    let mut out = vec![0f32; N];
    println!("CPU elementwise ops, f32, {} threads, {N} elements", rayon::current_num_threads());
    println!("{:<16} {:>10} {:>16}", "op", "ns/element", "ms per step");
    let time = |name: &str, per_step: f64, f: &mut dyn FnMut(usize)| {
        f(0); // warm-up: pages touched, threads awake
        let t = Instant::now();
        for r in 0..REPS {
            f(r);
        }
        let ns = t.elapsed().as_secs_f64() * 1e9 / (REPS * N) as f64;
        println!("{name:<16} {ns:>10.3} {:>16.1}", ns * per_step / 1e6);
    };
    time("gelu forward", FFN_PER_STEP, &mut |_| gelu::cpu::forward(&x, &mut out));
    time("gelu backward", FFN_PER_STEP, &mut |_| gelu::cpu::backward(&x, &dy, &mut out));
    time("dropout forward", FFN_PER_STEP, &mut |r| dropout::cpu::forward(&x, 0.1, 7, r as u64, &mut out));
    time("dropout backward", FFN_PER_STEP, &mut |r| dropout::cpu::backward(&dy, 0.1, 7, r as u64, &mut out));
    // (N / 32 rows of 32 keys, one mask row per 12 heads × 32 queries, two padded keys)
    let t = 32;
    let keys: Vec<i32> = (0..N / (12 * t)).flat_map(|_| (0..t).map(|j| (j < t - 2) as i32)).collect();
    time("softmax forward", PROBS_PER_STEP, &mut |_| softmax::cpu::forward(&x, &keys, 0.125, 12 * t, t, &mut out));
}
