//! Fine-tuned checkpoints: a Hugging Face-layout folder (model.safetensors with the encoder under
//! its usual names and the heads as `head.*`, config.json, the tokenizer files) plus `train.json`
//! (the options), and for resuming, the training state (`optimizer.safetensors`, `state.json`).
//! A LoRA run's folder holds only what it trained, as PEFT lays it out (`model::peft`):
//! `adapter_model.safetensors` (the adapters under PEFT's keys, which
//! `peft.PeftModel.from_pretrained(BertModel, dir)` loads, and the heads as `head.*`, which it
//! passes over) and `adapter_config.json`, which names the base model it adapts. Folders of the
//! engine's earlier layout (adapter keys without `base_model.model.`) are read as well.
//! Every folder is written beside its destination and renamed into place, so a crash never leaves
//! a half-written checkpoint.

use super::options::TrainOptions;
use super::swap::write_folder;
use crate::data::user_task::TaskDef;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::model::lora::legacy_name;
use crate::model::peft::{ADAPTER_CONFIG, ADAPTER_FILE, AdapterConfig};
use crate::model::safetensors::{self, SafeTensors};
use crate::optim::Optimizer;
use crate::store::Store;
use crate::tensor::Arena;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a resumed run needs besides parameters and moments: every random draw and every batch is
/// a function of the seed and the step, so the step is the whole position.
/// What `last/` keeps to resume besides the weights: the optimizer, the counters, and named
/// training-state tensors (SMART's teacher), which go beside the moments.
pub type Resumable<'a> = (&'a Optimizer<f32>, &'a TrainState, &'a [(String, Vec<f32>)]);

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// AdamW's own step count (its bias corrections).
    pub adam_step: u64,
    pub best_combined: Option<f64>,
    pub best_step: usize,
    /// The gradient-combining method's own state (GradVac's targets), when it keeps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<serde_json::Value>,
}

const TOKENIZER_FILES: [&str; 5] =
    ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"];

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

/// A full model's weights.
pub(crate) const MODEL_FILE: &str = "model.safetensors";

/// The number of encoder layers of the model in `store` (its `encoder.layer.{l}.` parameters).
fn num_layers(store: &Store<f32>) -> usize {
    let layer = |n: &str| n.strip_prefix("encoder.layer.")?.split('.').next()?.parse::<usize>().ok();
    store.params().filter_map(|(n, _)| layer(n)).max().map_or(0, |l| l + 1)
}

/// Parameters as (name, shape, values): every one, or only the trainable ones.
pub(crate) fn params(store: &Store<f32>, trainable_only: bool) -> Result<Vec<safetensors::NamedTensor>> {
    store
        .params()
        .filter(|(_, t)| !trainable_only || t.arena == Arena::Param)
        .map(|(n, t)| Ok((n.to_string(), t.dims().to_vec(), store.read(t)?)))
        .collect()
}

/// The safetensors metadata Hugging Face writes for PyTorch weights.
pub(crate) fn pt_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([("format".to_string(), "pt".to_string())])
}

pub(crate) fn copy_model_files(from: &Path, to: &Path) -> Result<()> {
    for f in TOKENIZER_FILES {
        let src = from.join(f);
        if src.is_file() {
            std::fs::copy(&src, to.join(f)).map_err(io(&src))?;
        }
    }
    Ok(())
}

/// Writes the model folder `dir`: weights (with LoRA: adapters and heads only, over `base_model`),
/// the config and tokenizer files of the folder `files`, the options; with `state`, also the
/// optimizer moments and the position, for `--resume`.
pub fn save(
    dir: &Path,
    store: &Store<f32>,
    files: &Path,
    base_model: &Path,
    opts: &TrainOptions,
    state: Option<Resumable<'_>>,
) -> Result<()> {
    let tensors = params(store, opts.lora.is_some())?;
    let adapter_config = match &opts.lora {
        Some(l) => Some(AdapterConfig::new(l, base_model, num_layers(store))?),
        None => None,
    };
    let moments = match state {
        Some((opt, _, _)) => {
            let n = store.num_trainable();
            Some((opt.m.read(0..n)?, opt.v.read(0..n)?))
        }
        None => None,
    };
    write_folder(dir, |tmp| {
        let weights = if adapter_config.is_some() { ADAPTER_FILE } else { MODEL_FILE };
        safetensors::write(&tmp.join(weights), &tensors, &pt_metadata())?;
        if let Some(c) = &adapter_config {
            c.write(tmp)?;
        }
        copy_model_files(files, tmp)?;
        let json = serde_json::to_string_pretty(opts).expect("options serialise");
        std::fs::write(tmp.join("train.json"), json).map_err(io(tmp))?;
        if let (Some((m, v)), Some((_, st, extra))) = (&moments, state) {
            let n = m.len();
            let mut t = vec![("adam.m".to_string(), vec![n], m.clone()), ("adam.v".to_string(), vec![n], v.clone())];
            t.extend(extra.iter().map(|(name, values)| (name.clone(), vec![values.len()], values.clone())));
            safetensors::write(&tmp.join("optimizer.safetensors"), &t, &BTreeMap::new())?;
            let json = serde_json::to_string_pretty(st).expect("state serialises");
            std::fs::write(tmp.join("state.json"), json).map_err(io(tmp))?;
        }
        Ok(())
    })
}

/// The options a checkpoint was trained with.
pub fn load_options(dir: &Path) -> Result<TrainOptions> {
    let path = dir.join("train.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        let what = if crate::model::peft::is_adapter_folder(dir) {
            "an adapter folder without the engine's task heads (a PEFT adapter?): `engine embed --model` reads it"
        } else {
            "not a checkpoint written by engine finetune"
        };
        Error::Config(format!("{}: cannot read train.json ({e}): {what}", dir.display()))
    })?;
    let bad = |e: String| Error::Config(format!("{}: {e}", path.display()));
    // The run's own task definitions first: its task list names them.
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if let Some(defs) = value.get("task_defs") {
        let defs: Vec<TaskDef> = serde_json::from_value(defs.clone()).map_err(|e| bad(e.to_string()))?;
        for d in defs {
            d.register().map_err(|e| bad(e.to_string()))?;
        }
    }
    serde_json::from_value(value).map_err(|e| bad(e.to_string()))
}

/// Restores the optimizer moments and returns the position of a `last/` checkpoint.
pub fn load_state(dir: &Path, opt: &mut Optimizer<f32>) -> Result<TrainState> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::Config(format!("--resume {}: no training state ({e}); resume from an out/last folder", dir.display()))
    })?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    let st = SafeTensors::open(&dir.join("optimizer.safetensors"))?;
    let (m, v) = (st.f32("adam.m")?, st.f32("adam.v")?);
    if m.len() != opt.m.len() || v.len() != opt.v.len() {
        return Err(Error::Config(format!("--resume {}: the optimizer state does not fit this model", dir.display())));
    }
    opt.m.write(0, &m)?;
    opt.v.write(0, &v)?;
    opt.step = state.adam_step;
    Ok(state)
}

/// Where a fine-tuned folder's weights come from: the encoder's checkpoint (the folder itself, or
/// for LoRA the base model it names) and the file with what was trained (heads, adapters).
/// A training-state tensor that `save` kept beside the optimizer's moments (SMART's teacher).
pub fn load_extra(dir: &Path, name: &str) -> Result<Vec<f32>> {
    let path = dir.join("optimizer.safetensors");
    let st = SafeTensors::open(&path)?;
    if st.info(name).is_none() {
        return Err(Error::Config(format!("--resume {}: {} holds no {name}", dir.display(), path.display())));
    }
    st.f32(name)
}

pub fn open_weights(dir: &Path) -> Result<(Checkpoint, SafeTensors)> {
    let config = dir.join(ADAPTER_CONFIG);
    if !config.is_file() {
        let ckpt = Checkpoint::open(dir)?;
        let trained = SafeTensors::open(&dir.join(MODEL_FILE))?;
        return Ok((ckpt, trained));
    }
    let c = AdapterConfig::read(dir)?;
    let ckpt = Checkpoint::open(c.base_dir()).map_err(|e| {
        Error::Config(format!("{}: the base model this LoRA checkpoint adapts is unusable: {e}", dir.display()))
    })?;
    Ok((ckpt, SafeTensors::open(&dir.join(ADAPTER_FILE))?))
}

/// Overwrites the parameters of `store` with the values saved in `dir`: every one from a full
/// model, the trainable ones (adapters, heads) from a LoRA folder.
pub fn load_params(dir: &Path, store: &mut Store<f32>) -> Result<()> {
    let lora = dir.join(ADAPTER_CONFIG).is_file();
    let st = SafeTensors::open(&dir.join(if lora { ADAPTER_FILE } else { MODEL_FILE }))?;
    let params: Vec<(String, crate::tensor::Tensor)> =
        store.params().filter(|(_, t)| !lora || t.arena == Arena::Param).map(|(n, t)| (n.to_string(), t)).collect();
    for (name, t) in params {
        // An adapter under its PEFT key, or in a folder of the old layout, its bare key.
        let stored = match legacy_name(&name) {
            Some(old) if st.info(&name).is_none() && st.info(old).is_some() => old,
            _ => &name,
        };
        let v = st.f32(stored)?;
        if v.len() != t.numel() {
            return Err(Error::Config(format!(
                "{}: {name} has {} values, the model {}",
                dir.display(),
                v.len(),
                t.numel()
            )));
        }
        store.write(t, &v)?;
    }
    Ok(())
}

/// `out/best`, `out/last`, `out/predictions`, `out/metrics.jsonl`, `out/curves.svg`.
pub fn out_paths(out: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (out.join("best"), out.join("last"), out.join("predictions"))
}
