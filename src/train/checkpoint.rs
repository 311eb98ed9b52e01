//! Fine-tuned checkpoints: a Hugging Face-layout folder (model.safetensors with the encoder under
//! its usual names and the heads as `head.*`, config.json, the tokenizer files) plus `train.json`
//! (the options), and for resuming, the training state (`optimizer.safetensors`, `state.json`).
//! Every folder is written beside its destination and renamed into place, so a crash never leaves
//! a half-written checkpoint.

use super::options::TrainOptions;
use crate::error::{Error, Result};
use crate::model::safetensors::{self, SafeTensors};
use crate::optim::AdamW;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a resumed run needs besides parameters and moments: every random draw and every batch is
/// a function of the seed and the step, so the step is the whole position.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// AdamW's own step count (its bias corrections).
    pub adam_step: u64,
    pub best_combined: Option<f64>,
    pub best_step: usize,
}

const TOKENIZER_FILES: [&str; 5] =
    ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "config.json"];

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.display().to_string(), source }
}

/// Writes into `dir` by filling a fresh sibling folder and swapping it into place.
fn write_folder(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "checkpoint".into());
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(".{name}.tmp{}", std::process::id()));
    let old = parent.join(format!(".{name}.old{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir).map_err(io(dir))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Every parameter (trainable and frozen) as (name, shape, values).
fn all_params(store: &Store<f32>) -> Result<Vec<safetensors::NamedTensor>> {
    store.params().map(|(n, t)| Ok((n.to_string(), t.dims().to_vec(), store.read(t)?))).collect()
}

/// Writes the model folder `dir`: weights, the base model's config and tokenizer files, the
/// options; with `state`, also the optimizer moments and the position, for `--resume`.
pub fn save(
    dir: &Path,
    store: &Store<f32>,
    base: &Path,
    opts: &TrainOptions,
    state: Option<(&AdamW<f32>, &TrainState)>,
) -> Result<()> {
    let tensors = all_params(store)?;
    let moments = match state {
        Some((opt, _)) => {
            let n = store.num_trainable();
            Some((opt.m.read(0..n)?, opt.v.read(0..n)?))
        }
        None => None,
    };
    write_folder(dir, |tmp| {
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        safetensors::write(&tmp.join("model.safetensors"), &tensors, &meta)?;
        for f in TOKENIZER_FILES {
            let src = base.join(f);
            if src.is_file() {
                std::fs::copy(&src, tmp.join(f)).map_err(io(&src))?;
            }
        }
        let json = serde_json::to_string_pretty(opts).expect("options serialise");
        std::fs::write(tmp.join("train.json"), json).map_err(io(tmp))?;
        if let (Some((m, v)), Some((_, st))) = (&moments, state) {
            let n = m.len();
            let t = vec![("adam.m".to_string(), vec![n], m.clone()), ("adam.v".to_string(), vec![n], v.clone())];
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
        Error::Config(format!(
            "{}: cannot read train.json ({e}): not a checkpoint written by engine finetune",
            dir.display()
        ))
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Restores the optimizer moments and returns the position of a `last/` checkpoint.
pub fn load_state(dir: &Path, opt: &mut AdamW<f32>) -> Result<TrainState> {
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

/// Overwrites every parameter of `store` with the values saved in `dir`/model.safetensors.
pub fn load_params(dir: &Path, store: &mut Store<f32>) -> Result<()> {
    let st = SafeTensors::open(&dir.join("model.safetensors"))?;
    let params: Vec<(String, crate::tensor::Tensor)> = store.params().map(|(n, t)| (n.to_string(), t)).collect();
    for (name, t) in params {
        let v = st.f32(&name)?;
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
