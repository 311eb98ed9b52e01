//! CPU throughput of the elementwise ops that dominate a training step outside the GEMMs: the
//! exact GELU forward and backward and the dropout mask (a 64-bit hash per element), on one
//! MiniLM FFN activation (batch 16 × 32 tokens × 1536). Prints ns per element (wall, all threads)
//! and the ms they would take over the ~23.6M FFN elements of one `cpu_methods` step (5 encoder
//! passes × 6 layers). `cargo bench --bench cpu_elementwise`.

use engine::ops::{dropout, gelu};
use engine::rng::Rng;
use std::time::Instant;

const N: usize = 16 * 32 * 1536;
const REPS: usize = 100;
const STEP_ELEMENTS: f64 = 5.0 * 6.0 * N as f64;

fn main() {
    let mut rng = Rng::new(3);
    let x: Vec<f32> = (0..N).map(|_| rng.normal() as f32 * 2.0).collect();
    let dy: Vec<f32> = (0..N).map(|_| rng.normal() as f32).collect();
    let (mut out, mut mask) = (vec![0f32; N], vec![0f32; N]);
    println!("CPU elementwise ops, f32, {} threads, {N} elements", rayon::current_num_threads());
    println!("{:<16} {:>10} {:>16}", "op", "ns/element", "ms per step");
    let mut time = |name: &str, f: &mut dyn FnMut(usize)| {
        f(0); // warm-up: pages touched, threads awake
        let t = Instant::now();
        for r in 0..REPS {
            f(r);
        }
        let ns = t.elapsed().as_secs_f64() * 1e9 / (REPS * N) as f64;
        println!("{name:<16} {ns:>10.3} {:>16.1}", ns * STEP_ELEMENTS / 1e6);
    };
    time("gelu forward", &mut |_| gelu::cpu::forward(&x, &mut out));
    time("gelu backward", &mut |_| gelu::cpu::backward(&x, &dy, &mut out));
    time("dropout forward", &mut |r| dropout::cpu::forward(&x, 0.1, 7, r as u64, &mut mask, &mut out));
}
