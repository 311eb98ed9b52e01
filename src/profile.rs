//! `ENGINE_PROFILE=1`: where a run's time goes, for the benches and `engine finetune`.
//!
//! Two tallies, both off (one branch on a cached flag) unless the variable is set:
//! - the GEMMs' wall time ([`crate::cpu_gemm::gemm`] adds to it; calls made on one of rayon's
//!   workers count as their time over the pool's threads, as they run beside the others);
//! - the tape's time per op kind and phase: a backward is timed op by op, a forward is the time
//!   from the previous record (or reset) to this op's record, so glue between ops is charged to
//!   the op that follows it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Whether `ENGINE_PROFILE=1` (read once per process).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("ENGINE_PROFILE").is_ok_and(|v| v == "1"))
}

static GEMM_NANOS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn add_gemm(nanos: u64) {
    GEMM_NANOS.fetch_add(nanos, Ordering::Relaxed);
}

/// Seconds spent in GEMMs so far, or None unless profiling.
pub fn gemm_seconds() -> Option<f64> {
    enabled().then(|| GEMM_NANOS.load(Ordering::Relaxed) as f64 * 1e-9)
}

/// Whether an op's time is its forward or its backward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Forward,
    Backward,
}

/// (phase, op kind) → (seconds, calls).
type Tally = BTreeMap<(Phase, &'static str), (f64, u64)>;

fn tally() -> &'static Mutex<Tally> {
    static TALLY: OnceLock<Mutex<Tally>> = OnceLock::new();
    TALLY.get_or_init(|| Mutex::new(BTreeMap::new()))
}

pub(crate) fn add_op(phase: Phase, kind: &'static str, took: Duration) {
    let mut t = tally().lock().unwrap_or_else(|e| e.into_inner());
    let e = t.entry((phase, kind)).or_insert((0.0, 0));
    e.0 += took.as_secs_f64();
    e.1 += 1;
}

/// Forgets the per-op tally and the GEMMs' time (e.g. after warm-up steps).
pub fn clear_ops() {
    tally().lock().unwrap_or_else(|e| e.into_inner()).clear();
    GEMM_NANOS.store(0, Ordering::Relaxed);
}

/// The per-op tally as a table, the costliest first within each phase, each line's seconds
/// divided by `per` (e.g. the number of steps); empty unless profiling.
pub fn op_table(per: f64) -> String {
    let t = tally().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = String::new();
    for phase in [Phase::Forward, Phase::Backward] {
        let mut rows: Vec<_> = t.iter().filter(|((p, _), _)| *p == phase).collect();
        let total: f64 = rows.iter().map(|(_, (s, _))| s).sum();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        out += &format!("{phase:?}: {:.1} ms\n", total / per * 1e3);
        for ((_, kind), (s, n)) in rows {
            out += &format!(
                "  {kind:<16} {:>8.1} ms {:>5.1}% {:>7.0} calls\n",
                s / per * 1e3,
                100.0 * s / total,
                *n as f64 / per
            );
        }
    }
    if let Some(g) = gemm_seconds().filter(|_| !out.is_empty()) {
        out += &format!("GEMMs (inside the ops above): {:.1} ms\n", g / per * 1e3);
    }
    out
}
