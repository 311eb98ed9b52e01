//! The engine's multi-task training step, timed: joint, PCGrad, LoRA r=8 (query,value) and
//! PCGrad + LoRA, through the trainer's own code (`benches/common/step.rs`), on random batches of
//! the three tasks (batch 32 per task, 128 tokens, pairs read jointly as in the reference recipe:
//! three encoder passes per step). Each step is timed on the host clock from its first launch
//! until the device is idle again, so host overhead and synchronisation count; median of
//! `--steps` after `--warmup`. Peak device memory of each method: the GPU's memory in use after
//! its steps less before its model was loaded (the engine's arenas only grow, so that is their
//! peak; it also counts the kernels' modules).
//!
//! One line per method, and with `--json FILE` one JSON record per method appended to FILE (every
//! step time included) for `benches/step_compare.py`, which sets them beside PyTorch's
//! (`benches/torch_step.py`); `scripts/gpu-step.sh` runs both, alternated, in one command.
//!
//! `cargo bench --bench gpu_step -- [--model DIR] [--device cuda|cpu] [--precision bf16|f32] …`;
//! `--device cpu` with a small `--batch`/`--len` is a smoke run of the same code.

#[path = "common/step.rs"]
mod step;

use clap::Parser;
use engine::device::cuda::GemmPrecision;
use engine::device::{DeviceChoice, Precision};
use engine::model::Checkpoint;
use engine::model::checkpoint::default_model_dir;
use engine::model::lora::{LoraConfig, Target};
use engine::train::TrainOptions;
use engine::train::options::PairEncoding;
use engine::{Device, Result};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;
use step::Runner;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    Joint,
    Pcgrad,
    Lora,
    PcgradLora,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Joint => "joint",
            Method::Pcgrad => "pcgrad",
            Method::Lora => "lora",
            Method::PcgradLora => "pcgrad-lora",
        }
    }

    fn options(self, base: &TrainOptions) -> TrainOptions {
        let lora = Some(LoraConfig { rank: 8, alpha: 8.0, dropout: 0.0, targets: vec![Target::Query, Target::Value] });
        match self {
            Method::Joint => base.clone(),
            Method::Pcgrad => TrainOptions { pcgrad: true, ..base.clone() },
            Method::Lora => TrainOptions { lora, ..base.clone() },
            Method::PcgradLora => TrainOptions { pcgrad: true, lora, ..base.clone() },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Gemm {
    F32,
    Tf32,
}

#[derive(Parser, Debug)]
#[command(about = "The engine's training step, timed (see the file's doc)")]
struct Args {
    /// A Hugging Face BERT folder (config.json + model.safetensors); default: the default checkpoint.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The model's name in the output (default: the folder's name).
    #[arg(long)]
    name: Option<String>,
    #[arg(long, value_enum, default_value = "cuda")]
    device: DeviceChoice,
    /// Sequences per task per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    len: usize,
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    #[arg(long, default_value_t = 100)]
    steps: usize,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "joint,pcgrad,lora,pcgrad-lora")]
    methods: Vec<Method>,
    /// The matmuls' operands (`--precision` of finetune): bf16 on the tensor cores (as PyTorch's
    /// bf16 autocast), or float32.
    #[arg(long, value_enum, default_value = "bf16")]
    precision: Precision,
    /// The arithmetic of float32 matmuls on a GPU: tf32 tensor cores or plain float32.
    #[arg(long, value_enum, default_value = "tf32")]
    gemm: Gemm,
    #[arg(long, value_enum, default_value = "joint")]
    pair_encoding: PairEncoding,
    /// Appends one JSON record per method here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn memory_in_use(device: &Device) -> Result<Option<usize>> {
    match device {
        Device::Cuda(c) => c.memory_in_use().map(Some),
        Device::Cpu => Ok(None),
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => default_model_dir()?,
    };
    let name =
        args.name.clone().unwrap_or_else(|| dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into()));
    let ckpt = Checkpoint::open(&dir)?;
    let device = Device::select(args.device)?;
    if let Device::Cuda(c) = &device {
        c.set_gemm_precision(match args.gemm {
            Gemm::F32 => GemmPrecision::F32,
            Gemm::Tf32 => GemmPrecision::Tf32,
        });
    }
    let base = TrainOptions { pair_encoding: args.pair_encoding, precision: args.precision, ..TrainOptions::default() };
    let precision = match (args.precision, &device, args.gemm) {
        (Precision::Bf16, _, _) => "bf16",
        (_, Device::Cpu, _) | (_, _, Gemm::F32) => "f32",
        (_, _, Gemm::Tf32) => "f32+tf32",
    };
    let passes = if args.pair_encoding == PairEncoding::Joint { 3 } else { 5 };
    println!(
        "engine training step: {name} on {}, {precision}, batch {} per task, {} tokens, 3 tasks ({passes} encoder passes), median of {} steps after {}",
        device.describe(),
        args.batch,
        args.len,
        args.steps,
        args.warmup
    );
    println!(
        "{:<14} {:>10} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "method", "median ms", "p10 ms", "p90 ms", "min ms", "tokens/s", "peak MB"
    );
    for &method in &args.methods {
        let before = memory_in_use(&device)?;
        let mut r = Runner::new(&device, &ckpt, &method.options(&base), args.batch, args.len)?;
        let sync = |device: &Device| match device {
            Device::Cuda(c) => c.synchronize(),
            Device::Cpu => Ok(()),
        };
        let mut times = Vec::with_capacity(args.steps);
        for i in 0..args.warmup + args.steps {
            let batches = r.batches();
            sync(&device)?;
            let start = Instant::now();
            r.step(&batches)?;
            sync(&device)?;
            if i >= args.warmup {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let peak_mb = match (before, memory_in_use(&device)?) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / 1e6),
            _ => None,
        };
        let trainable = r.tape.store.num_trainable();
        drop(r);
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let median = percentile(&sorted, 0.5);
        let tokens = (passes * args.batch * args.len) as f64;
        println!(
            "{:<14} {median:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.0} {:>12}",
            method.name(),
            percentile(&sorted, 0.1),
            percentile(&sorted, 0.9),
            sorted[0],
            tokens / (median * 1e-3),
            peak_mb.map_or("-".into(), |m| format!("{m:.0}"))
        );
        if let Some(path) = &args.json {
            let record = serde_json::json!({
                "framework": "engine",
                "mode": precision,
                "model": name,
                "method": method.name(),
                "device": device.describe(),
                "batch": args.batch,
                "len": args.len,
                "tasks": 3,
                "encoder_passes": passes,
                "layers": ckpt.config.num_hidden_layers,
                "hidden": ckpt.config.hidden_size,
                "intermediate": ckpt.config.intermediate_size,
                "trainable": trainable,
                "median_ms": median,
                "times_ms": times,
                "peak_mb": peak_mb,
            });
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            writeln!(f, "{record}")?;
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if args.steps == 0 {
        eprintln!("gpu_step: --steps must be at least 1");
        std::process::exit(2);
    }
    if let Err(e) = run(&args) {
        eprintln!("gpu_step: {e:#}");
        std::process::exit(1);
    }
}
