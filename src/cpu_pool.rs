//! Where the CPU path's work runs: on a worker of rayon's pool, not on the caller's own thread.
//!
//! Every parallel piece of the CPU path (a GEMM split into blocks, an elementwise loop in chunks)
//! called from a thread outside the pool hands its work to the pool's `n` workers while the
//! caller computes a block itself or waits: `n + 1` threads on `n` cores, and workers that spin
//! for work between ops steal the cores from those computing. Run from a worker instead, the
//! caller is one of the `n`. Measured on the 2-core machine (`cargo bench --bench cpu_step`, 2
//! threads): 1215 ms a step and 25,000 involuntary context switches a step from the main thread,
//! 922 ms and under 50 on a worker; the GEMMs alone went from ~205 to ~280 GFLOP/s.
//!
//! The pool is rayon's usual one (RAYON_NUM_THREADS, else one thread per CPU), built once; the
//! thread count, hence every result, is the same as before.

use std::sync::OnceLock;

/// Runs `f` on a worker of the CPU path's pool (at once when already on one), and returns its
/// result. Panics in `f` propagate to the caller.
pub fn run<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    if rayon::current_thread_index().is_some() {
        return f();
    }
    match POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().thread_name(|i| format!("engine-cpu-{i}")).build().ok()) {
        Some(pool) => pool.install(f),
        // No threads could be started: the caller's thread is as good a place as any.
        None => f(),
    }
}
