//! CPU step time and peak memory of the training methods on MiniLM (the default checkpoint),
//! through the trainer's own code (`MultiTaskModel::build`, `train_task`, the method's combine,
//! AdamW): joint, PCGrad, LoRA r=8 (query,value), PCGrad + LoRA r=8, GradVac, SMART (K = 1), PALs (d_s 108, 12 heads). Batch 16 per task, 32 tokens, the
//! three tasks with pairs read separately (five encoder passes per step, as in `cpu_step`).
//! Median and fastest of 40 steps per method after 2 warm-up steps, the methods interleaved (20
//! rounds, each running them in order and then in reverse order) so that the VM's drifts of
//! ±10% hit them alike; ratios of both, and the
//! median and quartiles of the ratios within each round; peak heap of each method alone, from
//! model load through two steps (a counting allocator: every weight, gradient, activation and
//! moment lives on the heap).
//! Targets (PCGrad and LoRA issue): PCGrad / joint ≤ 1.10 (PyTorch 2.15 on a 2-core machine
//! like CI's: 1.69); LoRA / full ≤ 0.75; LoRA's peak memory below full; GradVac / joint ≤ 1.10,
//! SMART / joint ≤ 2.7, PALs / joint ≤ 1.15 (methods issue).
//! `cargo bench --bench cpu_methods`; with ENGINE_PROFILE=1 it then prints joint's and SMART's
//! time per op kind (the timing above is then not a clean measurement: profiling costs a little).

#[path = "common/step.rs"]
mod step;

use engine::model::Checkpoint;
use engine::model::checkpoint::default_model_dir;
use engine::model::lora::{LoraConfig, Target};
use engine::model::pals::PalsConfig;
use engine::train::TrainOptions;
use engine::train::options::PairEncoding;
use engine::train::smart::SmartConfig;
use engine::{Device, Result};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;
use step::Runner;

/// The system allocator, counting live and peak bytes.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let live = LIVE.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const B: usize = 16;
const T: usize = 32;
const WARMUP: usize = 2;
/// Timed steps: ROUNDS rounds of PER_ROUND steps of each method (one in order, one in reverse).
const ROUNDS: usize = 20;
const PER_ROUND: usize = 2;
/// Steps of joint and SMART profiled after the timing (with ENGINE_PROFILE=1).
const PROFILED: usize = 6;

/// One training step of `r` in ms (batch making excluded).
fn timed_step(r: &mut Runner) -> Result<f64> {
    let batches = r.batches();
    let start = Instant::now();
    r.step(&batches)?;
    Ok(start.elapsed().as_secs_f64() * 1e3)
}

/// (median, fastest) of step times.
fn median_min(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0])
}

fn main() -> Result<()> {
    // On a worker of the CPU pool, as `engine` runs (see engine::cpu_pool).
    engine::cpu_pool::run(bench)
}

fn bench() -> Result<()> {
    let Ok(dir) = default_model_dir() else {
        println!("skipped: the default checkpoint is not fetched (weights/fetch.sh)");
        return Ok(());
    };
    let ckpt = Checkpoint::open(&dir)?;
    let base = TrainOptions { pair_encoding: PairEncoding::Separate, ..TrainOptions::default() };
    let lora = Some(LoraConfig { rank: 8, alpha: 8.0, dropout: 0.0, targets: vec![Target::Query, Target::Value] });
    let methods = [
        ("joint", TrainOptions { ..base.clone() }),
        ("pcgrad", TrainOptions { pcgrad: true, ..base.clone() }),
        ("lora r=8", TrainOptions { lora: lora.clone(), ..base.clone() }),
        ("pcgrad + lora r=8", TrainOptions { pcgrad: true, lora, ..base.clone() }),
        ("gradvac", TrainOptions { gradvac: true, ..base.clone() }),
        ("smart", TrainOptions { smart: Some(SmartConfig::new(3)), ..base.clone() }),
        ("pals", TrainOptions { pals: Some(PalsConfig::default()), ..base.clone() }),
    ];
    println!(
        "MiniLM training step on the CPU, {} threads: batch {B} per task, {T} tokens, sst+quora+sts, pairs read separately",
        rayon::current_num_threads()
    );
    // Peak memory: each method alone, from model load through two steps.
    let mut peaks = Vec::new();
    for (_, opts) in &methods {
        PEAK.store(LIVE.load(Relaxed), Relaxed);
        let mut r = Runner::new(&Device::Cpu, &ckpt, opts, B, T)?;
        timed_step(&mut r)?;
        timed_step(&mut r)?;
        peaks.push((PEAK.load(Relaxed) as f64 / 1e6, r.tape.store.num_trainable()));
    }
    // Time: all four alive, in interleaved rounds, so that the VM's drifts hit every method alike.
    let mut runners: Vec<Runner> =
        methods.iter().map(|(_, o)| Runner::new(&Device::Cpu, &ckpt, o, B, T)).collect::<Result<_>>()?;
    for r in &mut runners {
        for _ in 0..WARMUP {
            timed_step(r)?;
        }
    }
    let mut times = vec![Vec::new(); runners.len()];
    // Each round runs the methods in order, then in reverse order (one step each way): every
    // method's two steps are centred on the round's middle, so a drift that is linear over the
    // round hits them all alike.
    for _ in 0..ROUNDS {
        for (r, t) in runners.iter_mut().zip(&mut times) {
            t.push(timed_step(r)?);
        }
        for (r, t) in runners.iter_mut().zip(&mut times).rev() {
            t.push(timed_step(r)?);
        }
    }
    // Ratios within each round (steps a few seconds apart), then their median: a drift of the
    // VM between rounds cancels out.
    let round_means: Vec<Vec<f64>> =
        times.iter().map(|t| t.chunks(PER_ROUND).map(|c| c.iter().sum::<f64>() / c.len() as f64).collect()).collect();
    // (lower quartile, median, upper quartile) of the per-round ratios a / b.
    let per_round = |a: usize, b: usize| {
        let mut r: Vec<f64> = round_means[a].iter().zip(&round_means[b]).map(|(x, y)| x / y).collect();
        r.sort_by(|x, y| x.total_cmp(y));
        (r[r.len() / 4], r[r.len() / 2], r[(3 * r.len()) / 4])
    };
    let t: Vec<(f64, f64)> = times.into_iter().map(median_min).collect();
    println!("{:<20} {:>12} {:>12} {:>14} {:>14}", "method", "median ms", "fastest ms", "peak heap MB", "trainable");
    for (((name, _), (med, min)), (peak, trainable)) in methods.iter().zip(&t).zip(&peaks) {
        println!("{name:<20} {med:>12.1} {min:>12.1} {peak:>14.1} {trainable:>14}");
    }
    let ratio = |a: usize, b: usize| {
        let (q1, q2, q3) = per_round(a, b);
        format!(
            "{:.3} (fastest: {:.3}, median per round: {q2:.3}, quartiles {q1:.3}–{q3:.3})",
            t[a].0 / t[b].0,
            t[a].1 / t[b].1
        )
    };
    println!("pcgrad / joint            {}  target ≤ 1.10; PyTorch 2.15: 1.69", ratio(1, 0));
    println!("lora / full               {}  target ≤ 0.75", ratio(2, 0));
    println!("pcgrad+lora / lora        {}", ratio(3, 2));
    println!("gradvac / joint           {}  target ≤ 1.10", ratio(4, 0));
    // Passes per task: joint F + B; SMART K = 1: clean F + B, ascent F + an input-only backward
    // (about B/2), perturbed F + B. With B = 2F that is 8/3; this engine's B is about 1.75F.
    println!("smart / joint             {}  target ≤ 2.7; pass floor 2.67 (B = 2F), 2.68 (B = 1.75F)", ratio(5, 0));
    println!("pals / joint              {}  target ≤ 1.15", ratio(6, 0));
    println!("lora peak / full peak     {:.3}  (target < 1)", peaks[2].0 / peaks[0].0);
    if engine::profile::enabled() {
        // Where SMART's time goes beside the joint step's, op kind by op kind.
        for i in [0, 5] {
            engine::profile::clear_ops();
            let mut wall = 0.0;
            for _ in 0..PROFILED {
                wall += timed_step(&mut runners[i])?;
            }
            println!("{} per step, by op ({PROFILED} steps, {:.1} ms a step):", methods[i].0, wall / PROFILED as f64);
            print!("{}", engine::profile::op_table(PROFILED as f64));
        }
    }
    Ok(())
}
