//! CPU step time and peak memory of the four training methods on MiniLM (the default checkpoint),
//! through the trainer's own code (`MultiTaskModel::build`, `train_task`, PCGrad's combine, AdamW):
//! joint, PCGrad, LoRA r=8 (query,value), PCGrad + LoRA r=8. Batch 16 per task, 32 tokens, the
//! three tasks with pairs read separately (five encoder passes per step, as in `cpu_step`).
//! Median of 8 steps after 2 warm-up steps; peak heap of each method from model load to its last
//! step (a counting allocator: every weight, gradient, activation and moment lives on the heap).
//! Targets (PCGrad and LoRA issue): PCGrad / joint ≤ 1.10 (PyTorch 2.15 on a 2-core machine
//! like CI's: 1.69); LoRA / full ≤ 0.75; LoRA's peak memory below full.
//! `cargo bench --bench cpu_methods`

use engine::data::cs224n::{Label, Task};
use engine::data::{Encoded, Tokenizer};
use engine::model::Checkpoint;
use engine::model::checkpoint::default_model_dir;
use engine::model::lora::{LoraConfig, Target};
use engine::optim::{AdamW, AdamWConfig};
use engine::rng::Rng;
use engine::train::TrainOptions;
use engine::train::model::{Batch, MultiTaskModel};
use engine::train::options::PairEncoding;
use engine::train::pcgrad::{self, TaskGradients};
use engine::train::trainer::train_task;
use engine::{Device, Result, Tape};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

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
const STEPS: usize = 8;

/// A batch of random token ids, [CLS] … [SEP], no padding.
fn encoded(rng: &mut Rng, vocab: usize) -> Encoded {
    let mut ids: Vec<i32> = (0..B * T).map(|_| 1000 + rng.below(vocab - 1000) as i32).collect();
    for b in 0..B {
        ids[b * T] = 101;
        ids[b * T + T - 1] = 102;
    }
    Encoded { ids, type_ids: vec![0; B * T], mask: vec![1; B * T], batch: B, len: T }
}

fn batch(task: Task, rng: &mut Rng, vocab: usize) -> Batch {
    let (joint, sides, label) = match task {
        Task::Sst => (Some(encoded(rng, vocab)), None, Label::Class(2)),
        Task::Quora => (None, Some((encoded(rng, vocab), encoded(rng, vocab))), Label::Binary(1.0)),
        _ => (None, Some((encoded(rng, vocab), encoded(rng, vocab))), Label::Score(2.5)),
    };
    Batch { task, joint, sides, labels: vec![label; B], ids: (0..B).map(|i| i.to_string()).collect() }
}

struct Figures {
    median_ms: f64,
    peak_mb: f64,
    trainable: usize,
}

fn run(ckpt: &Checkpoint, opts: &TrainOptions) -> Result<Figures> {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let model = MultiTaskModel::build(&mut tape.store, ckpt, None, opts, true)?;
    let mut grads = match opts.pcgrad {
        true => Some(TaskGradients::new(&tape.store, 3, pcgrad::shared_len(&tape.store)?)?),
        false => None,
    };
    let mut opt = AdamW::new(&tape.store, AdamWConfig::default())?;
    tape.set_training(true);
    let mut rng = Rng::new(7);
    let vocab = ckpt.config.vocab_size;
    let mut times = Vec::new();
    for step in 0..WARMUP + STEPS {
        let batches: Vec<Batch> = opts.tasks.iter().map(|&t| batch(t, &mut rng, vocab)).collect();
        let start = Instant::now();
        if grads.is_none() {
            tape.store.zero_grads()?;
        }
        for (ti, b) in batches.iter().enumerate() {
            tape.set_seed((step * 3 + ti) as u64);
            train_task(&mut tape, &model, b, grads.as_mut().map(|g| (g, ti)), 1.0)?;
        }
        if let Some(g) = &mut grads {
            g.combine(&mut tape.store, opts.pcgrad_reduction, |k| pcgrad::visiting_orders(1, step, k))?;
        }
        opt.update(&mut tape.store, 1e-4)?;
        if step >= WARMUP {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let trainable = tape.store.num_trainable();
    Ok(Figures { median_ms: times[times.len() / 2], peak_mb: PEAK.load(Relaxed) as f64 / 1e6, trainable })
}

fn main() -> Result<()> {
    let Ok(dir) = default_model_dir() else {
        println!("skipped: the default checkpoint is not fetched (weights/fetch.sh)");
        return Ok(());
    };
    let ckpt = Checkpoint::open(&dir)?;
    let _ = Tokenizer::from_dir(&dir)?; // the checkpoint is complete
    let base = TrainOptions { pair_encoding: PairEncoding::Separate, ..TrainOptions::default() };
    let lora = Some(LoraConfig { rank: 8, alpha: 8.0, dropout: 0.0, targets: vec![Target::Query, Target::Value] });
    let methods = [
        ("joint", TrainOptions { ..base.clone() }),
        ("pcgrad", TrainOptions { pcgrad: true, ..base.clone() }),
        ("lora r=8", TrainOptions { lora: lora.clone(), ..base.clone() }),
        ("pcgrad + lora r=8", TrainOptions { pcgrad: true, lora, ..base.clone() }),
    ];
    println!(
        "MiniLM training step on the CPU, {} threads: batch {B} per task, {T} tokens, sst+quora+sts, pairs read separately",
        rayon::current_num_threads()
    );
    println!("{:<20} {:>12} {:>14} {:>14}", "method", "median ms", "peak heap MB", "trainable");
    let mut figures = Vec::new();
    for (name, opts) in &methods {
        PEAK.store(LIVE.load(Relaxed), Relaxed);
        let f = run(&ckpt, opts)?;
        println!("{name:<20} {:>12.1} {:>14.1} {:>14}", f.median_ms, f.peak_mb, f.trainable);
        figures.push(f);
    }
    let ratio = |a: usize, b: usize| figures[a].median_ms / figures[b].median_ms;
    println!("pcgrad / joint            {:.3}  (target ≤ 1.10; PyTorch 2.15: 1.69)", ratio(1, 0));
    println!("lora / full               {:.3}  (target ≤ 0.75)", ratio(2, 0));
    println!("pcgrad+lora / lora        {:.3}", ratio(3, 2));
    println!("lora peak / full peak     {:.3}  (target < 1)", figures[2].peak_mb / figures[0].peak_mb);
    Ok(())
}
