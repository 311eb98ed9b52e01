//! `engine merge`: a LoRA checkpoint's adapters folded into its base model, written as a plain
//! checkpoint folder. Apart from checkpoint.rs because it loads a whole fine-tuned model (as
//! evaluate.rs does), which checkpoint.rs, read by evaluate.rs, must not.

use super::checkpoint::{MODEL_FILE, copy_model_files, io, params};
use super::evaluate::load_checkpoint;
use super::options::TrainOptions;
use super::swap::write_folder;
use crate::error::{Error, Result};
use crate::model::peft::ADAPTER_CONFIG;
use crate::model::safetensors;
use std::collections::BTreeMap;
use std::path::Path;

/// `engine merge`: folds the adapters of the LoRA checkpoint `dir` into its base model and writes
/// a full checkpoint folder `out` (the encoder, the heads, config, tokenizer, train.json without
/// LoRA). Returns the number of adapters merged.
pub fn merge(dir: &Path, out: &Path) -> Result<usize> {
    if !dir.join(ADAPTER_CONFIG).is_file() {
        return Err(Error::Config(format!(
            "{}: no {ADAPTER_CONFIG}; only a LoRA checkpoint (engine finetune --lora) has adapters to merge",
            dir.display()
        )));
    }
    let mut loaded = load_checkpoint(dir, crate::device::Device::Cpu)?;
    let (model, store) = (&loaded.model, &mut loaded.tape.store);
    let lora = model.bert.lora.as_ref().ok_or_else(|| Error::Config("the checkpoint has no adapters".into()))?;
    lora.merge_into(store, &model.bert.target_weights())?;
    let count = lora.layers.iter().flatten().flatten().count();
    let adapter = |n: &str| n.contains(".lora_A.") || n.contains(".lora_B.");
    let tensors: Vec<safetensors::NamedTensor> =
        params(store, false)?.into_iter().filter(|(n, _, _)| !adapter(n)).collect();
    let opts = TrainOptions { lora: None, ..model.opts.clone() };
    write_folder(out, |tmp| {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        safetensors::write(&tmp.join(MODEL_FILE), &tensors, &meta)?;
        copy_model_files(dir, tmp)?;
        let json = serde_json::to_string_pretty(&opts).expect("options serialise");
        std::fs::write(tmp.join("train.json"), json).map_err(io(tmp))
    })?;
    Ok(count)
}
