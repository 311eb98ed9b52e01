//! CPU time of one multi-task training step of MiniLM (the default checkpoint, or a randomly
//! initialised model of its shape when it is not fetched) at batch 16 per task, 32 tokens: five
//! encoder passes of 16×32 (SST; Quora a and b; STS a and b), the three heads and losses, the
//! backward passes, and one AdamW step over every parameter. Median of 10 steps after 2 warm-up
//! steps, with the time split into forward, backward and optimizer.
//!
//! Side by side with PyTorch: benches/cpu_step_torch.py runs the same step (transformers'
//! BertModel from the same checkpoint, SDPA attention, torch.optim.AdamW) on the same number of
//! threads (rayon's pool here, RAYON_NUM_THREADS; `--threads` there), in rounds alternated in the
//! same order, engine then PyTorch (ENGINE_CPU_STEP_ROUNDS rounds, default 2). Per-round figures,
//! the medians and the ratio engine / PyTorch against the target (≤ 0.80) are printed.
//! The python is ENGINE_TORCH_PYTHON if set (it must import torch and transformers, or the bench
//! stops), else the checkout's .cache/torch-venv/bin/python if it has them (benches/
//! real_data_compare.sh creates that venv; this bench installs nothing); without one, only the
//! engine is timed and a line says how to get the comparison.
//! ENGINE_CPU_STEP_STEPS sets the timed steps per round on both sides (default 10; smoke runs: 3).
//! The load average is printed before and after: figures taken on a busy machine (1-minute load
//! above 1.5 at the start) are indicative only, and flatter the engine (PyTorch's OpenMP threads
//! suffer more from sharing the cores).
//! ENGINE_PROFILE=1 adds the engine's time per op kind and phase after each round.
//! `cargo bench --bench cpu_step`

use engine::model::bert::{Bert, ParamKind, init};
use engine::model::checkpoint::default_model_dir;
use engine::model::heads::{self, LinearHead};
use engine::model::{BertConfig, Checkpoint};
use engine::optim::{Optimizer, OptimizerConfig};
use engine::rng::Rng;
use engine::{Device, Result, Tape, Tensor};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const B: usize = 16;
const T: usize = 32;
const WARMUP: usize = 2;
/// The target for engine / PyTorch on this step.
const TARGET: f64 = 0.80;

fn batch(tape: &mut Tape<f32>, rng: &mut Rng, vocab: usize) -> Result<[Tensor; 3]> {
    let mut ids: Vec<i32> = (0..B * T).map(|_| 1000 + rng.below(vocab - 1000) as i32).collect();
    for b in 0..B {
        ids[b * T] = 101; // [CLS]
        ids[b * T + T - 1] = 102; // [SEP]
    }
    Ok([tape.ints(&ids, &[B, T])?, tape.ints(&[0; B * T], &[B, T])?, tape.ints(&[1; B * T], &[B, T])?])
}

struct Model {
    bert: Bert,
    sst: LinearHead,
    para: LinearHead,
}

/// Forward of one task's loss (dropout on, as in training).
fn task_loss(tape: &mut Tape<f32>, m: &Model, task: usize, rng: &mut Rng) -> Result<Tensor> {
    let vocab = m.bert.config.vocab_size;
    let mut encode = |tape: &mut Tape<f32>| -> Result<(Tensor, Tensor)> {
        let [ids, types, mask] = batch(tape, rng, vocab)?;
        Ok((m.bert.forward(tape, ids, types, mask)?, mask))
    };
    match task {
        0 => {
            let (h, mask) = encode(tape)?;
            let pooled = tape.mean_pool(h, mask)?;
            let pooled = tape.dropout(pooled, 0.1)?;
            let logits = heads::classify(tape, &m.sst, pooled)?;
            let labels = tape.ints(&[2; B], &[B])?;
            tape.cross_entropy(logits, labels)
        }
        1 => {
            let (ha, ma) = encode(tape)?;
            let (hb, mb) = encode(tape)?;
            let (u, v) = (tape.mean_pool(ha, ma)?, tape.mean_pool(hb, mb)?);
            let logits = heads::paraphrase_logits(tape, &m.para, u, v)?;
            let y = tape.constant(&[1.0; B], &[B])?;
            tape.bce_with_logits(logits, y)
        }
        _ => {
            let (ha, ma) = encode(tape)?;
            let (hb, mb) = encode(tape)?;
            let (a, b) = (tape.mean_pool(ha, ma)?, tape.mean_pool(hb, mb)?);
            let s = heads::similarity(tape, a, b)?;
            let y = tape.constant(&[2.5; B], &[B])?;
            tape.mse(s, y)
        }
    }
}

/// One step's seconds: total, forward, backward, AdamW.
#[derive(Clone, Copy)]
struct Split {
    total: f64,
    fwd: f64,
    bwd: f64,
    adam: f64,
}

impl Split {
    fn line(&self) -> String {
        format!(
            "median step {:.1} ms: forward {:.1} ms, backward {:.1} ms, Optimizer {:.1} ms",
            self.total * 1e3,
            self.fwd * 1e3,
            self.bwd * 1e3,
            self.adam * 1e3
        )
    }
}

/// The engine's median step of `steps` after WARMUP warm-up steps (the upper median, with its split).
fn engine_round(
    tape: &mut Tape<f32>,
    model: &Model,
    opt: &mut Optimizer<f32>,
    rng: &mut Rng,
    steps: usize,
) -> Result<Split> {
    let mut timed = Vec::new();
    for step in 0..WARMUP + steps {
        let (mut fwd, mut bwd) = (0.0, 0.0);
        let start = Instant::now();
        tape.store.zero_grads()?;
        for task in 0..3 {
            tape.reset();
            tape.set_seed(step as u64 * 3 + task as u64);
            let t0 = Instant::now();
            let loss = task_loss(tape, model, task, rng)?;
            let t1 = Instant::now();
            tape.backward(loss)?;
            fwd += (t1 - t0).as_secs_f64();
            bwd += t1.elapsed().as_secs_f64();
        }
        let t2 = Instant::now();
        opt.update(&mut tape.store, 1e-4)?;
        let adam = t2.elapsed().as_secs_f64();
        let total = start.elapsed().as_secs_f64();
        if step >= WARMUP {
            timed.push(Split { total, fwd, bwd, adam });
        } else {
            engine::profile::clear_ops();
        }
    }
    timed.sort_by(|a, b| a.total.total_cmp(&b.total));
    Ok(timed[timed.len() / 2])
}

/// PyTorch's side, benches/cpu_step_torch.py in a child process: its median step and its own line.
fn torch_round(python: &str, model: Option<&Path>, threads: usize, steps: usize, round: usize) -> Split {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/cpu_step_torch.py");
    let json = std::env::temp_dir().join(format!("cpu_step_torch-{}-{round}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&json);
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--threads", &threads.to_string(), "--steps", &steps.to_string()])
        .args(["--warmup", &WARMUP.to_string()])
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null());
    match model {
        Some(dir) => cmd.arg("--model").arg(dir),
        None => cmd.arg("--random"),
    };
    let out = cmd.output().unwrap_or_else(|e| fail(&format!("cannot run {python} {script}: {e}")));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        fail(&format!("PyTorch's side failed ({}, {python} {script}):\n  {}", out.status, tail.join("\n  ")));
    }
    if round == 1 {
        // its own line: versions, attention implementation, checkpoint
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("  {line}");
        }
    }
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| fail(&format!("no record from PyTorch at {}: {e}", json.display())));
    let _ = std::fs::remove_file(&json);
    let rec: serde_json::Value = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| fail(&format!("PyTorch's record is not JSON: {text:?}")));
    let ms = |k: &str| {
        rec[k].as_f64().map(|v| v / 1e3).unwrap_or_else(|| fail(&format!("PyTorch's record lacks {k}: {rec}")))
    };
    Split { total: ms("median_ms"), fwd: ms("forward_ms"), bwd: ms("backward_ms"), adam: ms("adamw_ms") }
}

fn fail(msg: &str) -> ! {
    eprintln!("cpu_step: {msg}");
    std::process::exit(1)
}

/// Whether `python` imports torch and transformers; why not otherwise.
fn has_torch(python: &str) -> std::result::Result<(), String> {
    let out = Command::new(python)
        .args(["-c", "import torch, transformers"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(err.lines().last().unwrap_or("it exited with an error").trim().to_string())
}

/// The python for PyTorch's side: Ok(python) when found, Err(the reason) when there is none,
/// and the bench stops when ENGINE_TORCH_PYTHON names one that lacks torch or transformers.
fn find_torch() -> std::result::Result<String, String> {
    if let Some(py) = std::env::var("ENGINE_TORCH_PYTHON").ok().filter(|p| !p.is_empty()) {
        if let Err(why) = has_torch(&py) {
            fail(&format!(
                "ENGINE_TORCH_PYTHON={py} cannot import torch and transformers ({why}); point it at a python that has both, \
                 or unset it to time the engine alone"
            ));
        }
        return Ok(py);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/torch-venv/bin/python");
    if !venv.exists() {
        return Err("no ENGINE_TORCH_PYTHON and no .cache/torch-venv".into());
    }
    let py = venv.to_string_lossy().into_owned();
    has_torch(&py).map(|()| py.clone()).map_err(|why| format!("{py} lacks torch or transformers ({why})"))
}

/// A count from the environment, `default` when unset.
fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n| n >= 1)
            .unwrap_or_else(|| fail(&format!("{name}={v}: expected a whole number of at least 1"))),
    }
}

/// /proc/loadavg's three averages, and the 1-minute one.
fn load() -> (String, f64) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let three = text.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let one = three.split(' ').next().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    (if three.is_empty() { "unknown".into() } else { three }, one)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn main() -> Result<()> {
    let steps = env_count("ENGINE_CPU_STEP_STEPS", 10);
    let rounds = env_count("ENGINE_CPU_STEP_ROUNDS", 2);
    let torch = find_torch();
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let mut rng = Rng::new(7);
    let (bert, source, model_dir) = match default_model_dir() {
        Ok(dir) => {
            let bert = Checkpoint::open(&dir)?.load_bert(&mut tape.store, &|_| true)?;
            (bert, "the default checkpoint", Some(std::fs::canonicalize(&dir).unwrap_or(dir)))
        }
        Err(_) => {
            let cfg = BertConfig::tiny(30522, 384, 6, 12, 1536, 512);
            (Bert::random(&mut tape.store, &cfg, 0.02, 1)?, "a random MiniLM-shaped model", None)
        }
    };
    let c = bert.config.hidden_size;
    let mut head = |name: &str, out: usize, inp: usize| -> Result<LinearHead> {
        Ok(LinearHead {
            w: tape.store.add_param(
                &format!("{name}.weight"),
                &[out, inp],
                &init(&mut rng, &[out, inp], ParamKind::Weight, 0.02),
                true,
            )?,
            b: tape.store.add_param(&format!("{name}.bias"), &[out], &vec![0.0; out], true)?,
        })
    };
    let (sst, para) = (head("head.sst", 5, c)?, head("head.para", 1, 4 * c)?);
    let model = Model { bert, sst, para };
    let mut opt = Optimizer::new(&tape.store, OptimizerConfig::default())?;
    tape.set_training(true);
    let threads = rayon::current_num_threads();
    let (load0, load0_1m) = load();
    println!(
        "MiniLM ({source}) multi-task step on the CPU, {threads} threads: batch {B} per task, {T} tokens, 5 encoder passes; \
         median of {steps} steps after {WARMUP} warm-up, {rounds} round(s)"
    );
    match &torch {
        Ok(py) => println!("  side by side with PyTorch via {py}, alternated: engine, PyTorch, …"),
        Err(why) => println!("  engine only: {why}"),
    }
    println!("  load average before: {load0}");
    let (mut eng, mut pt) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let e = engine::cpu_pool::run(|| engine_round(&mut tape, &model, &mut opt, &mut rng, steps))?;
        println!("round {round} engine:  {}", e.line());
        // ENGINE_PROFILE=1: the engine's time per op kind, per step.
        print!("{}", engine::profile::op_table(steps as f64));
        engine::profile::clear_ops();
        eng.push(e);
        if let Ok(py) = &torch {
            let p = torch_round(py, model_dir.as_deref(), threads, steps, round);
            println!("round {round} PyTorch: {}; engine / PyTorch {:.3}", p.line(), e.total / p.total);
            pt.push(p);
        }
    }
    let (_, load1_1m) = load();
    let med = |v: &[Split], f: fn(&Split) -> f64| median(v.iter().map(f).collect());
    let summary = |v: &[Split]| Split {
        total: med(v, |s| s.total),
        fwd: med(v, |s| s.fwd),
        bwd: med(v, |s| s.bwd),
        adam: med(v, |s| s.adam),
    };
    let me = summary(&eng);
    println!("engine, median of {rounds} round(s):  {}", me.line());
    if pt.is_empty() {
        println!(
            "no PyTorch comparison: set ENGINE_TORCH_PYTHON to a python with torch and transformers, or run \
             benches/real_data_compare.sh once to create .cache/torch-venv (this bench installs nothing)"
        );
    } else {
        let mp = summary(&pt);
        println!("PyTorch, median of {rounds} round(s): {}", mp.line());
        let ratio = me.total / mp.total;
        println!(
            "target engine / PyTorch <= {TARGET:.2} (CPU, {threads} threads): {ratio:.3} -> {}",
            if ratio <= TARGET { "met" } else { "NOT met" }
        );
    }
    println!("load average (1 min): {load0_1m:.2} before, {load1_1m:.2} after (this bench adds about {threads})");
    if load0_1m > 1.5 {
        println!("WARNING: the machine was busy before the start (load > 1.5): these figures are indicative only");
        if !pt.is_empty() {
            println!(
                "  PyTorch's OpenMP threads suffer more from shared cores than rayon's pool: under load the ratio flatters the engine"
            );
        }
    }
    Ok(())
}
