//! `engine merge`: a LoRA checkpoint's adapters folded into its base model, written as a plain
//! checkpoint folder. Apart from checkpoint.rs because it loads a whole fine-tuned model (as
//! evaluate.rs does), which checkpoint.rs, read by evaluate.rs, must not.

use super::checkpoint::{MODEL_FILE, copy_model_files, io, params, pt_metadata};
use super::evaluate::{Loaded, load_checkpoint};
use super::options::TrainOptions;
use super::swap::write_folder;
use crate::error::{Error, Result};
use crate::model::peft::ADAPTER_CONFIG;
use crate::model::safetensors;
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
    let (loaded, tensors) = folded(dir)?;
    let lora = loaded.model.bert.lora.as_ref().ok_or_else(|| Error::Config("the checkpoint has no adapters".into()))?;
    let count = lora.layers.iter().flatten().flatten().count();
    let opts = TrainOptions { lora: None, ..loaded.model.opts.clone() };
    write_folder(out, |tmp| {
        safetensors::write(&tmp.join(MODEL_FILE), &tensors, &pt_metadata())?;
        copy_model_files(dir, tmp)?;
        let json = serde_json::to_string_pretty(&opts).expect("options serialise");
        std::fs::write(tmp.join("train.json"), json).map_err(io(tmp))
    })?;
    Ok(count)
}

/// The fine-tuned checkpoint `dir` loaded on the CPU, and its parameters (encoder and heads)
/// with any LoRA adapters folded into the base weights and left out (for `merge` and `export`).
pub(crate) fn folded(dir: &Path) -> Result<(Loaded, Vec<safetensors::NamedTensor>)> {
    let mut loaded = load_checkpoint(dir, crate::device::Device::Cpu)?;
    let (model, store) = (&loaded.model, &mut loaded.tape.store);
    if let Some(lora) = &model.bert.lora {
        lora.merge_into(store, &model.bert.target_weights())?;
    }
    let adapter = |n: &str| n.contains(".lora_A.") || n.contains(".lora_B.");
    let tensors = params(store, false)?.into_iter().filter(|(n, ..)| !adapter(n)).collect();
    Ok((loaded, tensors))
}
