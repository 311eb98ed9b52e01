//! Tiny fine-tuning runs: a tiny BERT folder (random weights, the default checkpoint's tokenizer)
//! and tiny slices of the CS224N files, in scratch folders.

use engine::model::BertConfig;
use engine::model::bert::Bert;
use engine::model::checkpoint::default_model_dir;
use engine::{Device, Tape};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-finetune-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A tiny BERT folder: random weights, the default checkpoint's tokenizer (vocabulary 30522).
pub fn tiny_model(tag: &str) -> PathBuf {
    let dir = scratch(&format!("model-{tag}"));
    let base = default_model_dir().expect("the default checkpoint's tokenizer is needed: run weights/fetch.sh");
    for f in ["tokenizer.json", "vocab.txt"] {
        std::fs::copy(base.join(f), dir.join(f)).unwrap();
    }
    let cfg = BertConfig::tiny(30522, 32, 2, 4, 37, 128);
    let json = serde_json::json!({"vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
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
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "csv") {
            let text = std::fs::read_to_string(&p).unwrap();
            let head: Vec<&str> = text.lines().take(n + 1).collect();
            std::fs::write(dir.join(p.file_name().unwrap()), head.join("\n") + "\n").unwrap();
        }
    }
    dir
}
