//! Tiny fine-tuning runs: a tiny BERT folder (random weights, a WordPiece vocab.txt of its own,
//! so the tokenizer's vocab.txt path is exercised and no checkpoint is needed) and tiny slices of
//! the CS224N files, in scratch folders. The data come from the repository's data/, or from
//! $ENGINE_TEST_DATA (the GPU bundle ships slices there).

use engine::model::BertConfig;
use engine::model::bert::Bert;
use engine::{Device, Tape};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-finetune-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where the CS224N files are.
pub fn data_source() -> PathBuf {
    std::env::var_os("ENGINE_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data"))
}

/// An uncased WordPiece vocabulary of the words (split on whitespace and punctuation, as BERT's
/// pre-tokenizer does) of the first `n` records of every file, after BERT's special tokens.
fn vocabulary(src: &Path, n: usize) -> Vec<String> {
    let mut words = BTreeSet::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "csv") {
            for line in std::fs::read_to_string(&p).unwrap().lines().take(n + 1) {
                let lower = line.to_lowercase();
                for w in lower.split(|c: char| c.is_whitespace() || c.is_ascii_punctuation()).filter(|w| !w.is_empty())
                {
                    words.insert(w.to_string());
                }
                for c in lower.chars().filter(|c| c.is_ascii_punctuation()) {
                    words.insert(c.to_string());
                }
            }
        }
    }
    let special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from);
    special.into_iter().chain(words).collect()
}

/// A tiny BERT folder (hidden 32, 2 layers, 4 heads) with random weights and its own vocab.txt.
pub fn tiny_model(tag: &str) -> PathBuf {
    let dir = scratch(&format!("model-{tag}"));
    let vocab = vocabulary(&data_source(), 64);
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    let v = vocab.len();
    let cfg = BertConfig::tiny(v, 32, 2, 4, 37, 128);
    let json = serde_json::json!({"vocab_size": v, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 37, "max_position_embeddings": 128, "type_vocab_size": 2, "hidden_act": "gelu"});
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    let mut tape = Tape::<f32>::new(Device::Cpu);
    Bert::random(&mut tape.store, &cfg, 0.05, 9).unwrap();
    let tensors: Vec<_> =
        tape.store.params().map(|(n, t)| (n.to_string(), t.dims().to_vec(), tape.store.read(t).unwrap())).collect();
    engine::model::safetensors::write(&dir.join("model.safetensors"), &tensors, &BTreeMap::new()).unwrap();
    dir
}

/// The first `n` records of every CS224N file (the header kept).
pub fn tiny_data(n: usize, tag: &str) -> PathBuf {
    let dir = scratch(&format!("data{n}-{tag}"));
    for e in std::fs::read_dir(data_source()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "csv") {
            let text = std::fs::read_to_string(&p).unwrap();
            let head: Vec<&str> = text.lines().take(n + 1).collect();
            std::fs::write(dir.join(p.file_name().unwrap()), head.join("\n") + "\n").unwrap();
        }
    }
    dir
}

/// Rewrites the safetensors file `file` with every word-embedding value NaN (a checkpoint whose
/// weights went non-finite), the other tensors as they were.
pub fn poison_word_embeddings(file: &Path) {
    use engine::model::safetensors::{SafeTensors, write};
    let st = SafeTensors::open(file).unwrap();
    let names: Vec<String> = st.names().map(String::from).collect();
    let tensors: Vec<_> = names
        .iter()
        .map(|n| {
            let mut v = st.f32(n).unwrap();
            if n.contains("word_embeddings") {
                v.fill(f32::NAN);
            }
            (n.clone(), st.info(n).unwrap().shape.clone(), v)
        })
        .collect();
    drop(st);
    write(file, &tensors, &Default::default()).unwrap();
}

/// `engine finetune` on the CPU at batch 4 over `model` and `data`, logging every step, with
/// `extra` flags; panics with its stderr when it fails, else returns its stderr (the progress notes).
#[allow(dead_code)] // (each test binary compiles this module; not all of them call this)
pub fn finetune_cpu(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["finetune", "--model", model.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    args.extend(["--out", out.to_str().unwrap(), "--device", "cpu", "--batch-size", "4", "--log-every", "1"]);
    args.extend_from_slice(extra);
    let o = engine(&args);
    assert!(o.status.success(), "finetune failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `engine ARGS…` through the binary.
pub fn engine(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_engine")).args(args).output().expect("run engine")
}

/// `engine ARGS…`, which must succeed: its stdout.
#[allow(dead_code)]
pub fn engine_ok(args: &[&str]) -> String {
    let o = engine(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `engine eval --checkpoint CKPT --data-dir DATA --device cpu EXTRA…`, which must succeed: its stdout.
#[allow(dead_code)]
pub fn eval_cpu(ckpt: &Path, data: &Path, extra: &[&str]) -> String {
    let mut args = vec!["eval", "--checkpoint", ckpt.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    args.extend(["--device", "cpu"]);
    args.extend_from_slice(extra);
    engine_ok(&args)
}

/// `engine predict --checkpoint CKPT --task TASK --input INPUT --device cpu EXTRA…` (a caller
/// may expect it to fail).
#[allow(dead_code)]
pub fn predict_cpu(ckpt: &Path, task: &str, input: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["predict", "--checkpoint", ckpt.to_str().unwrap(), "--task", task];
    args.extend(["--input", input.to_str().unwrap(), "--device", "cpu"]);
    args.extend_from_slice(extra);
    engine(&args)
}

/// The records of metrics.jsonl in `out` of one kind ("train", "eval", "pcgrad", …).
#[allow(dead_code)]
pub fn records(out: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// (step, task → loss) of every training record of `out`: what two runs that should be the same
/// must share (elapsed times differ).
#[allow(dead_code)]
pub fn step_losses(out: &Path) -> Vec<(serde_json::Value, serde_json::Value)> {
    records(out, "train").iter().map(|r| (r["step"].clone(), r["loss"].clone())).collect()
}

/// `engine finetune` on the CPU with `extra` flags that it must refuse, for one step at most into
/// a fresh folder named `tag`: panics if it succeeds or leaves a checkpoint; returns its stderr.
#[allow(dead_code)]
pub fn finetune_refused(model: &Path, data: &Path, tag: &str, extra: &[&str]) -> String {
    let out = scratch(tag);
    let mut args = vec!["finetune", "--model", model.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    args.extend(["--out", out.to_str().unwrap(), "--device", "cpu", "--max-steps", "1"]);
    args.extend_from_slice(extra);
    let o = engine(&args);
    assert!(!o.status.success(), "{extra:?} was accepted");
    assert!(!out.join("last").exists(), "{extra:?} wrote a checkpoint");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `steps` in `full` (already done by the caller) and again in a fresh folder `tag`, stopped
/// after step 2 and resumed from its last/: panics unless the two runs' losses and final
/// weights are the same, bit for bit.
#[allow(dead_code)]
pub fn assert_resumes_exactly(model: &Path, data: &Path, full: &Path, tag: &str, steps: &[&str]) {
    let part = scratch(tag);
    let mut stop = steps.to_vec();
    stop.extend_from_slice(&["--stop-after", "2"]);
    finetune_cpu(model, data, &part, &stop);
    finetune_cpu(model, data, &part, &["--resume", part.join("last").to_str().unwrap()]);
    assert_eq!(step_losses(full), step_losses(&part), "{steps:?}: the resumed run's losses differ");
    let weights = |d: &Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert!(weights(full) == weights(&part), "{steps:?}: the resumed run's weights differ");
}

/// The embeddings of an `engine embed` output file (one JSON line per input line).
#[allow(dead_code)]
pub fn read_embeddings(path: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
        })
        .collect()
}
