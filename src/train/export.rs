//! `engine export --format sentence-transformers`: a fine-tuned checkpoint's encoder as a folder
//! that `sentence_transformers.SentenceTransformer(DIR)` loads, pooling as the run did, so that
//! its embeddings are `engine embed --pooling <the run's>`'s. LoRA adapters are folded into the
//! base weights first (as `engine merge`); task heads are left out.
//!
//! The folder: the BERT (config.json, model.safetensors under Hugging Face's names, tokenizer
//! files) as module 0 (`models.Transformer`), `1_Pooling` (`models.Pooling`: mean or [CLS]), and
//! for `--pooling pooler` a `2_Dense` (`models.Dense`, tanh) holding BERT's pooler, which
//! sentence-transformers has no pooling mode for.

use super::checkpoint::{MODEL_FILE, copy_model_files, io, pt_metadata};
use super::merge::folded;
use super::swap::write_folder;
use crate::error::{Error, Result};
use crate::model::bert::Pooling;
use crate::model::safetensors;
use serde_json::json;
use std::path::Path;

/// The formats `engine export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A sentence-transformers model folder.
    SentenceTransformers,
}

/// Writes the checkpoint `dir` as a `format` folder at `out` (replaced atomically). Returns the
/// modules written, e.g. "Transformer, Pooling (mean)".
pub fn export(dir: &Path, format: Format, out: &Path) -> Result<String> {
    let Format::SentenceTransformers = format;
    let (loaded, mut tensors) = folded(dir)?;
    tensors.retain(|(n, ..)| !n.starts_with("head."));
    let model = &loaded.model;
    let (pooling, max_len) = (model.opts.pooling, model.opts.max_len);
    let c = model.bert.config.hidden_size;
    let pooler: Option<Vec<safetensors::NamedTensor>> = match pooling {
        Pooling::Pooler => {
            let find = |name: &str, as_name: &str| {
                let t = tensors.iter().find(|(n, ..)| n == name).ok_or_else(|| {
                    Error::Config(format!("{}: pooling pooler, but the model has no {name}", dir.display()))
                })?;
                Ok::<_, Error>((as_name.to_string(), t.1.clone(), t.2.clone()))
            };
            Some(vec![find("pooler.dense.weight", "linear.weight")?, find("pooler.dense.bias", "linear.bias")?])
        }
        _ => None,
    };
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if pooler.is_some() {
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}));
    }
    let pooling_config = json!({
        "word_embedding_dimension": c,
        "pooling_mode_cls_token": pooling != Pooling::Mean,
        "pooling_mode_mean_tokens": pooling == Pooling::Mean,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false,
        "pooling_mode_weightedmean_tokens": false,
        "pooling_mode_lasttoken": false,
        "include_prompt": true
    });
    let meta = pt_metadata();
    let write_json = |path: &Path, v: &serde_json::Value| {
        std::fs::write(path, serde_json::to_string_pretty(v).expect("json")).map_err(io(path))
    };
    write_folder(out, |tmp| {
        safetensors::write(&tmp.join(MODEL_FILE), &tensors, &meta)?;
        copy_model_files(dir, tmp)?;
        write_json(&tmp.join("modules.json"), &json!(modules))?;
        write_json(
            &tmp.join("sentence_bert_config.json"),
            &json!({"max_seq_length": max_len, "do_lower_case": false}),
        )?;
        let pool_dir = tmp.join("1_Pooling");
        std::fs::create_dir_all(&pool_dir).map_err(io(&pool_dir))?;
        write_json(&pool_dir.join("config.json"), &pooling_config)?;
        if let Some(dense) = &pooler {
            let d = tmp.join("2_Dense");
            std::fs::create_dir_all(&d).map_err(io(&d))?;
            let config = json!({
                "in_features": c,
                "out_features": c,
                "bias": true,
                "activation_function": "torch.nn.modules.activation.Tanh"
            });
            write_json(&d.join("config.json"), &config)?;
            safetensors::write(&d.join(MODEL_FILE), dense, &meta)?;
        }
        Ok(())
    })?;
    let pooled = match pooling {
        Pooling::Mean => "Pooling (mean)",
        Pooling::Cls => "Pooling ([CLS])",
        Pooling::Pooler => "Pooling ([CLS]), Dense (BERT's pooler, tanh)",
    };
    Ok(format!("Transformer, {pooled}"))
}
