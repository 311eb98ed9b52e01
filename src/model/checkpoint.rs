//! A Hugging Face BERT folder: `config.json`, `model.safetensors` (memory-mapped; F32, F16 or
//! BF16), and a tokenizer. Parameter names may carry the `bert.` prefix and the old
//! `gamma`/`beta` LayerNorm names. Missing, unexpected, mis-shaped and mis-typed tensors are
//! errors that name the tensor.

use super::bert::{Bert, ParamKind};
use super::config::BertConfig;
use super::safetensors::SafeTensors;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::Store;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where `weights/fetch.sh` puts the default checkpoint, relative to the repository.
pub const DEFAULT_MODEL: &str = "weights/all-MiniLM-L6-v2";

/// Tensors of heads other than the encoder's (ours are `head.*`, loaded by the fine-tuning code),
/// and buffers, that a BERT checkpoint may carry.
const IGNORED_PREFIXES: [&str; 7] =
    ["cls.", "classifier.", "qa_outputs.", "lm_head.", "embeddings.position_ids", "embeddings.token_type_ids", "head."];

/// The default checkpoint folder: ./weights/all-MiniLM-L6-v2, else the one in this source tree.
pub fn default_model_dir() -> Result<PathBuf> {
    let candidates = [PathBuf::from(DEFAULT_MODEL), Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_MODEL)];
    candidates.iter().find(|d| d.join("model.safetensors").is_file()).cloned().ok_or_else(|| {
        Error::Config(format!(
            "no --model given and the default checkpoint is not at {DEFAULT_MODEL}: fetch it with `weights/fetch.sh`"
        ))
    })
}

pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub tensors: SafeTensors,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        if !dir.is_dir() {
            return Err(Error::Config(format!("model folder {} does not exist", dir.display())));
        }
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Error::Config(format!(
                "{}: cannot read config.json ({e}); a Hugging Face BERT folder needs one",
                dir.display()
            ))
        })?;
        let config = BertConfig::from_json(&text).map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() && dir.join("adapter_config.json").is_file() {
            return Err(Error::Config(format!(
                "{}: a LoRA checkpoint (adapters only): `engine merge` it into a full model first",
                dir.display()
            )));
        }
        if !weights.is_file() {
            return Err(Error::Config(format!(
                "{}: no model.safetensors (only the safetensors format is read; convert pytorch_model.bin first)",
                dir.display()
            )));
        }
        let tensors = SafeTensors::open(&weights)?;
        Ok(Checkpoint { dir: dir.to_path_buf(), config, tensors })
    }

    /// The name under which the file stores canonical parameter `name`, if any: `name` itself,
    /// with the `bert.` prefix, or with the old `gamma`/`beta` LayerNorm names.
    pub fn stored_name(&self, name: &str) -> Option<String> {
        let old = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta");
        [name.to_string(), format!("bert.{name}"), old.clone(), format!("bert.{old}")]
            .into_iter()
            .find(|n| self.tensors.info(n).is_some())
    }

    /// The values of canonical parameter `name`, which must have shape `dims`, and the name the
    /// file stores it under.
    pub fn read_param<F: Float>(&self, name: &str, dims: &[usize]) -> Result<(String, Vec<F>)> {
        let file = self.tensors.path().display();
        let stored =
            self.stored_name(name).ok_or_else(|| Error::Config(format!("{file}: tensor {name} is missing")))?;
        let info = self.tensors.info(&stored).expect("found above");
        if info.shape != dims {
            return Err(Error::Config(format!(
                "{file}: tensor {stored} has shape {:?}, but config.json implies {dims:?}",
                info.shape
            )));
        }
        let values = self.tensors.f32(&stored)?;
        Ok((stored, values.into_iter().map(|v| F::from_f64(v as f64)).collect()))
    }

    /// Registers the encoder (and the pooler when the file has one) in `store`.
    pub fn load_bert<F: Float>(&self, store: &mut Store<F>, trainable: &dyn Fn(&str) -> bool) -> Result<Bert> {
        let with_pooler = self.stored_name("pooler.dense.weight").is_some();
        let mut used = HashSet::new();
        let file = self.tensors.path().display().to_string();
        let bert = Bert::register(
            store,
            &self.config,
            with_pooler,
            &mut |name: &str, dims: &[usize], _kind: ParamKind| -> Result<Vec<F>> {
                let (stored, values) = self.read_param(name, dims)?;
                used.insert(stored);
                Ok(values)
            },
            trainable,
        )?;
        for name in self.tensors.names() {
            let bare = name.strip_prefix("bert.").unwrap_or(name);
            if !used.contains(name) && !IGNORED_PREFIXES.iter().any(|p| bare.starts_with(p)) {
                return Err(Error::Config(format!("{file}: unexpected tensor {name} (not part of a BERT encoder)")));
            }
        }
        Ok(bert)
    }
}
