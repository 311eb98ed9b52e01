//! `engine export --format sentence-transformers`: the folder's layout for each pooling (mean,
//! [CLS], BERT's pooler as a tanh Dense module), its weights (the encoder only; a LoRA
//! checkpoint's adapters folded in), and that the engine reading the exported BERT embeds as it
//! reads the checkpoint. `scripts/check-st-export.py` checks the same folder against
//! sentence-transformers itself where PyTorch is installed.

mod common;
use common::runs::{engine, engine_ok, finetune_cpu as finetune, read_embeddings, scratch, tiny_data, tiny_model};
use engine::model::safetensors::SafeTensors;
use std::path::Path;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// `engine embed` of a few lines with `model` and `pooling`: one vector per line.
fn embed(model: &Path, pooling: &str, tag: &str) -> Vec<Vec<f64>> {
    let dir = scratch(tag);
    let input = dir.join("in.txt");
    std::fs::write(&input, "a fine film\nthe plot is thin but the acting is good\nno\n").unwrap();
    let out = dir.join("out.jsonl");
    let (m, i, o) = (model.to_str().unwrap(), input.to_str().unwrap(), out.to_str().unwrap());
    engine_ok(&[
        "embed",
        "--model",
        m,
        "--pooling",
        pooling,
        "--input",
        i,
        "--output",
        o,
        "--device",
        "cpu",
        "--quiet",
    ]);
    read_embeddings(&out)
}

fn worst(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn export_writes_a_sentence_transformers_folder_for_each_pooling() {
    let (model, data) = (tiny_model("export"), tiny_data(12, "export"));
    for pooling in ["mean", "cls", "pooler"] {
        let run = scratch(&format!("export-run-{pooling}"));
        finetune(&model, &data, &run, &["--max-steps", "2", "--pooling", pooling, "--lr", "1e-2"]);
        let best = run.join("best");
        let out = scratch(&format!("export-{pooling}")).join("st");
        let said = engine_ok(&["export", "--checkpoint", best.to_str().unwrap(), "--output", out.to_str().unwrap()]);
        assert!(said.contains("Transformer, Pooling"), "{said}");
        let modules = json(&out.join("modules.json"));
        let types: Vec<&str> = modules.as_array().unwrap().iter().map(|m| m["type"].as_str().unwrap()).collect();
        let pool = json(&out.join("1_Pooling/config.json"));
        assert_eq!(pool["word_embedding_dimension"], 32);
        assert_eq!(pool["pooling_mode_mean_tokens"], pooling == "mean", "{pool}");
        assert_eq!(pool["pooling_mode_cls_token"], pooling != "mean", "{pool}");
        assert_eq!(json(&out.join("sentence_bert_config.json"))["max_seq_length"], 128);
        for f in ["config.json", "vocab.txt", "model.safetensors"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        // The encoder's tensors only, as the checkpoint holds them.
        let (ours, theirs) = (
            SafeTensors::open(&out.join("model.safetensors")).unwrap(),
            SafeTensors::open(&best.join("model.safetensors")).unwrap(),
        );
        assert!(ours.names().all(|n| !n.starts_with("head.")));
        let encoder: Vec<&str> = theirs.names().filter(|n| !n.starts_with("head.")).collect();
        assert_eq!(ours.names().count(), encoder.len());
        for n in encoder {
            assert_eq!(ours.f32(n).unwrap(), theirs.f32(n).unwrap(), "{n}");
        }
        if pooling == "pooler" {
            assert_eq!(types.last(), Some(&"sentence_transformers.models.Dense"), "{types:?}");
            let dense = json(&out.join("2_Dense/config.json"));
            assert_eq!(dense["activation_function"], "torch.nn.modules.activation.Tanh");
            let d = SafeTensors::open(&out.join("2_Dense/model.safetensors")).unwrap();
            assert_eq!(d.f32("linear.weight").unwrap(), theirs.f32("pooler.dense.weight").unwrap());
            assert_eq!(d.f32("linear.bias").unwrap(), theirs.f32("pooler.dense.bias").unwrap());
        } else {
            assert_eq!(types.len(), 2, "{types:?}");
        }
        // The exported BERT, read by the engine as any BERT folder, embeds as the checkpoint does.
        let (a, b) = (
            embed(&best, pooling, &format!("export-embed-a-{pooling}")),
            embed(&out, pooling, &format!("export-embed-b-{pooling}")),
        );
        assert_eq!(worst(&a, &b), 0.0, "{pooling}");
    }
}

#[test]
fn a_lora_checkpoint_is_exported_with_its_adapters_folded_in() {
    let (model, data) = (tiny_model("export-lora"), tiny_data(12, "export-lora"));
    let run = scratch("export-lora-run");
    finetune(
        &model,
        &data,
        &run,
        &["--max-steps", "3", "--lora", "4", "--lora-targets", "query,value,ffn_out", "--lr", "1e-2"],
    );
    let best = run.join("best");
    let out = scratch("export-lora").join("st");
    engine_ok(&["export", "--checkpoint", best.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    let st = SafeTensors::open(&out.join("model.safetensors")).unwrap();
    assert!(st.names().all(|n| !n.contains("lora_") && !n.starts_with("head.")));
    // Folded weights, unfolded adapters: the same embeddings up to float32 rounding.
    let (a, b) = (embed(&best, "mean", "export-lora-a"), embed(&out, "mean", "export-lora-b"));
    let d = worst(&a, &b);
    assert!(d > 0.0 && d <= 1e-5, "max |Δ| {d:e}");
    assert!(worst(&b, &embed(&model, "mean", "export-lora-base")) > 1e-4, "the adapters changed nothing");
}

#[test]
fn export_refuses_what_it_cannot_read_and_writes_nothing() {
    let dir = scratch("export-bad");
    let out = dir.join("st");
    let o = engine(&["export", "--checkpoint", dir.to_str().unwrap(), "--output", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("train.json") && e.trim().lines().count() == 1, "{e}");
    assert!(!out.exists());
    let o = engine(&[
        "export",
        "--format",
        "onnx",
        "--checkpoint",
        dir.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("sentence-transformers"));
}
