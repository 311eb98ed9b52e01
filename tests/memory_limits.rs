//! Oversized runs are refused before they allocate (issue 17, finding 2): `engine finetune` with
//! an adapter rank or a head width that cannot fit says so in one line naming the flag, within
//! seconds, and writes nothing; the estimate lets the normal recipes through; a buffer asked for
//! an absurd size returns an error instead of aborting the process.
//!
//! The CLI runs under `ulimit -v` (8 GiB of address space): the refusal is then certain on any
//! machine, and a regression cannot take the machine's memory (without the check the runs abort
//! or grow past the limit, and the assertions fail).

mod common;
use common::runs::{scratch, tiny_data, tiny_model};
use engine::data::cs224n::Task;
use engine::device::{Buffer, Cuda};
use engine::model::BertConfig;
use engine::model::lora::{LoraConfig, Target};
use engine::model::pals::PalsConfig;
use engine::train::TrainOptions;
use engine::train::memory::estimate;
use engine::train::smart::SmartConfig;
use engine::{Device, Error};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// `engine finetune` on the CPU with `extra` flags, its address space limited to 8 GiB; the output
/// and how long it took.
fn finetune_limited(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 8388608 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_engine"))
        .args(["finetune", "--model", model.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--out", out.to_str().unwrap(), "--device", "cpu", "--quiet"])
        .args(extra)
        .output()
        .expect("run engine");
    (o, started.elapsed())
}

/// The run is refused within seconds, with exit status 1 and one line naming `flag`, and `out`
/// holds only what it held before.
fn assert_refused(tag: &str, extra: &[&str], flag: &str) {
    let (model, data) = (tiny_model(tag), tiny_data(8, tag));
    let out = scratch(&format!("out-{tag}"));
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let (o, took) = finetune_limited(&model, &data, &out, extra);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{flag}: expected a refusal, got {:?}: {err}", o.status);
    assert_eq!(err.lines().count(), 1, "{flag}: one line, got: {err}");
    assert!(err.starts_with(&format!("error: {flag} needs about ")), "{flag} not named first: {err}");
    assert!(err.contains(&format!("lower {}", flag.split(' ').next().unwrap())), "no advice: {err}");
    assert!(took < Duration::from_secs(10), "{flag}: refused only after {took:?}");
    let left: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, ["notes.txt"], "{flag}: --out changed");
    println!("{flag}: refused in {took:?}: {err}");
}

/// The finding's rank: on the tiny model its adapters are small, but every adapted linear keeps
/// two (tokens, R) products per pass: about 20 GiB at batch 16 × 128 tokens.
#[test]
fn lora_rank_too_large_is_refused() {
    assert_refused("lora", &["--lora", "100000"], "--lora 100000");
}

/// Three heads of (10⁸, 32): 40 GiB of values, four times that with gradients and moments.
/// Without the check the head's initialisation aborts ("memory allocation of … failed").
#[test]
fn head_hidden_too_large_is_refused() {
    assert_refused("head", &["--head-hidden", "100000000"], "--head-hidden 100000000");
}

fn minilm() -> BertConfig {
    BertConfig::tiny(30522, 384, 6, 12, 1536, 512)
}

fn bert_base() -> BertConfig {
    BertConfig::tiny(30522, 768, 12, 12, 3072, 512)
}

/// The default recipe (all-MiniLM-L6-v2, batch 16, max-len 128, three tasks) fits a 24 GiB
/// machine with room to spare, and the estimate counts at least its parameters four times
/// (values, gradients, moments) and a training pass's attention tensors with their gradients.
#[test]
fn default_recipe_fits() {
    let opts = TrainOptions::default();
    let e = estimate(&opts, &minilm());
    let params = 22_713_216.0 * 4.0; // the checkpoint's 22.7 M values (pooler included)
    let attention = 6.0 * 16.0 * 12.0 * 128.0 * 128.0 * 4.0 * 3.0; // L·B·NH·T² · 3 tensors, f32
    println!("default recipe: {:.2} GiB ({e:?})", e.total() / GIB);
    assert!((e.encoder - params).abs() < 1e-6 * params, "encoder {} B, expected {params}", e.encoder);
    assert!(e.total() > 4.0 * params + 2.0 * attention, "{} B is too little", e.total());
    assert!(e.total() < 8.0 * GIB, "the default recipe needs {:.2} GiB", e.total() / GIB);
}

/// bert-base (hidden 768, 12 layers) at batch 32: at the recipe's 128 tokens it fits 24 GiB; at
/// 512 tokens its (B, NH, T, T) attention tensors alone, three per layer with their gradients,
/// exceed 24 GiB, so the estimate must say so.
#[test]
fn bert_base_sizes() {
    let mut opts = TrainOptions { batch_size: 32, ..TrainOptions::default() };
    let short = estimate(&opts, &bert_base());
    opts.max_len = 512;
    let long = estimate(&opts, &bert_base());
    println!("bert-base batch 32: {:.2} GiB at 128 tokens, {:.2} GiB at 512", short.total() / GIB, long.total() / GIB);
    assert!(short.total() < 24.0 * GIB, "bert-base at 32 × 128 needs {:.2} GiB", short.total() / GIB);
    let attention = 12.0 * 32.0 * 12.0 * 512.0 * 512.0 * 4.0 * 3.0 * 2.0;
    assert!(attention > 24.0 * GIB);
    assert!(long.total() > attention, "{:.2} GiB counts less than the attention tensors", long.total() / GIB);
}

/// The two parts the finding's flags drive grow with them: --lora 100000 on MiniLM holds
/// 3.4 GiB of adapters (12 of (R, 384) + (384, R)), --head-hidden 10⁸ three (10⁸, 384) heads.
#[test]
fn estimate_follows_the_flags() {
    let lora = TrainOptions {
        lora: Some(LoraConfig { rank: 100_000, alpha: 1.0, dropout: 0.0, targets: vec![Target::Query, Target::Value] }),
        ..TrainOptions::default()
    };
    let e = estimate(&lora, &minilm());
    assert_eq!(e.adapters, 6.0 * 2.0 * 2.0 * 100_000.0 * 384.0 * 4.0);
    assert_eq!(e.encoder_trainable, 0.0, "LoRA freezes the encoder");
    assert!(e.total() > 24.0 * GIB, "--lora 100000: {:.1} GiB", e.total() / GIB);
    let head = TrainOptions {
        head_hidden: 100_000_000,
        tasks: vec![Task::Sst],
        task_weights: vec![1.0],
        ..TrainOptions::default()
    };
    let e = estimate(&head, &minilm());
    let sst = 1e8 * 384.0 + 1e8 + 5.0 * 1e8 + 5.0;
    assert_eq!(e.heads, sst * 4.0);
    // PALs add their parameters to the heads': 885,996 on MiniLM with d_s 108 (the trainable
    // count cpu_methods printed: 23,602,674 against 22,716,678), and their activations.
    let plain = estimate(&TrainOptions::default(), &minilm());
    let pals = estimate(&TrainOptions { pals: Some(PalsConfig::default()), ..TrainOptions::default() }, &minilm());
    assert_eq!(pals.heads - plain.heads, 885_996.0 * 4.0);
    assert!(pals.activations > plain.activations);
    // SMART keeps a second pass (about twice the training activations), its teacher one more
    // copy of the trainable values.
    let smart = SmartConfig { bregman: 1.0, ..SmartConfig::new(3) };
    let smart = estimate(&TrainOptions { smart: Some(smart), ..TrainOptions::default() }, &minilm());
    assert!(smart.activations > 1.4 * plain.activations, "{} vs {}", smart.activations, plain.activations);
    assert_eq!(smart.optimizer, plain.optimizer * 4.0 / 3.0);
    // Values that would overflow usize arithmetic give a finite, huge figure.
    let absurd = TrainOptions { head_hidden: usize::MAX, batch_size: usize::MAX, ..TrainOptions::default() };
    assert!(estimate(&absurd, &minilm()).total() > 1e30);
}

/// Growing a buffer to an absurd size is an error, and the buffer stays usable: on the CPU, and
/// on the emulator (whose memory is host memory, allocated without a way to fail).
#[test]
fn absurd_buffer_sizes_are_errors() {
    let mut devices = vec![Device::Cpu];
    match Cuda::emulated() {
        Ok(c) => devices.push(Device::Cuda(c)),
        Err(e) => println!("no emulator ({e}): the CPU only"),
    }
    for device in devices {
        let mut b: Buffer<f32> = Buffer::zeros(&device, 3).unwrap();
        // Past isize::MAX bytes (a capacity overflow), the address space, and the host's memory.
        for n in [usize::MAX, usize::MAX / 2, usize::MAX / 8, 1 << 48, 1 << 42] {
            match b.grow_to(n) {
                Err(Error::Config(m) | Error::Cuda(m)) => assert!(!m.is_empty()),
                other => panic!("{device:?}: growing to {n} elements gave {other:?}"),
            }
            assert_eq!(b.len(), 3, "a failed growth keeps the buffer");
        }
        b.grow_to(5).unwrap();
        b.write(3, &[1.0, 2.0]).unwrap();
        assert_eq!(b.read(0..5).unwrap(), [0.0, 0.0, 0.0, 1.0, 2.0]);
    }
}
