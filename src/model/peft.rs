//! PEFT's layout for LoRA adapters over a BERT encoder, written and read: the folder
//! (`adapter_config.json` and `adapter_model.safetensors`), the tensor keys
//! `base_model.model.encoder.layer.{l}.{module}.lora_A.weight` (what `PeftModel.save_pretrained`
//! writes for a `BertModel`; see `lora::adapter_names`), and `target_modules` that PEFT matches to
//! exactly the modules the engine adapts.
//!
//! PEFT adapts a module when a target string is its full name or a `.`-suffix of it. In a
//! `BertModel`, `output.dense` is a suffix of both the feed-forward output
//! (`encoder.layer.{l}.output.dense`) and the attention output (`….attention.output.dense`), so
//! the feed-forward output is written once per layer by its full name; the other five targets are
//! suffixes of one module each and are written as such (`attention.self.query`, …).
//!
//! The engine's LoRA checkpoints keep the task heads (`head.*`) in the same file: PEFT passes keys
//! without `lora_` to `load_state_dict(strict=False)`, where a `BertModel` has no such module and
//! they are dropped without effect. A folder written by PEFT (adapters only, no heads, no
//! train.json) is read by `engine embed --model DIR` through [`AdapterFolder`]: the base model
//! that its `base_model_name_or_path` names (a local folder; a relative path is taken from the
//! current directory, as PEFT takes it) with the adapters attached.

use super::bert::Bert;
use super::checkpoint::Checkpoint;
use super::lora::{Lora, LoraConfig, PEFT_PREFIX, Target};
use super::safetensors::SafeTensors;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// The adapters' weights (and, in the engine's checkpoints, the heads').
pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
/// What the adapters adapt and how.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// Whether `dir` is an adapter folder (engine LoRA checkpoint or PEFT's).
pub fn is_adapter_folder(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// PEFT's rule (`check_target_module_exists`): `target` adapts the module named `module` when it
/// is the whole name or a suffix after a dot.
pub fn peft_matches(target: &str, module: &str) -> bool {
    module == target || module.strip_suffix(target).is_some_and(|head| head.ends_with('.'))
}

/// The full name of `t`'s module in layer `l` of a `BertModel`.
fn module_name(l: usize, t: Target) -> String {
    format!("encoder.layer.{l}.{}", t.module())
}

/// The modules of a `BertModel` outside the encoder layers that PEFT's LoRA can adapt (embeddings
/// and linears), which the engine's LoRA does not.
const OTHER_ADAPTABLE: [&str; 4] = [
    "embeddings.word_embeddings",
    "embeddings.position_embeddings",
    "embeddings.token_type_embeddings",
    "pooler.dense",
];

/// `target_modules` for adapters on `targets` in every one of `layers` layers, each string
/// matching (by PEFT's rule) only modules of the targets.
pub fn target_modules(targets: &[Target], layers: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for &t in Target::ALL.iter().filter(|t| targets.contains(t)) {
        let unique = (0..layers).all(|l| {
            Target::ALL.iter().filter(|&&u| peft_matches(t.module(), &module_name(l, u))).count() == 1
                && OTHER_ADAPTABLE.iter().all(|m| !peft_matches(t.module(), m))
        });
        if unique {
            out.push(t.module().to_string());
        } else {
            out.extend((0..layers).map(|l| module_name(l, t)));
        }
    }
    out
}

/// The targets PEFT adapts in a `BertModel` of `layers` layers for `target_modules`; an error when
/// they include a module the engine cannot adapt or differ between layers.
pub fn targets_of(target_modules: &[String], layers: usize) -> Result<Vec<Target>> {
    let bad = |m: String| Err(Error::Config(format!("target_modules: {m}")));
    for m in OTHER_ADAPTABLE {
        if let Some(s) = target_modules.iter().find(|s| peft_matches(s, m)) {
            return bad(format!("{s:?} adapts {m}; the engine adapts only the encoder layers' linears"));
        }
    }
    let in_layer = |l: usize| -> Vec<Target> {
        Target::ALL
            .into_iter()
            .filter(|&t| target_modules.iter().any(|s| peft_matches(s, &module_name(l, t))))
            .collect()
    };
    let first = in_layer(0);
    if first.is_empty() {
        return bad(format!("{target_modules:?} match no linear of a BERT encoder layer"));
    }
    if let Some(l) = (1..layers).find(|&l| in_layer(l) != first) {
        return bad(format!(
            "{target_modules:?} adapt different modules in layer 0 and layer {l}; the engine adapts the same ones in every layer"
        ));
    }
    Ok(first)
}

/// adapter_config.json, with PEFT's field names. PEFT features the engine does not implement
/// (DoRA, rsLoRA, per-module ranks, …) are read into `other` and refused by [`AdapterConfig::lora`].
#[derive(Debug, Serialize, Deserialize)]
pub struct AdapterConfig {
    pub peft_type: String,
    /// The base model folder (the engine writes it absolute).
    pub base_model_name_or_path: PathBuf,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    pub target_modules: serde_json::Value,
    #[serde(default = "no_bias")]
    pub bias: String,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

fn no_bias() -> String {
    "none".into()
}

/// Fields of PEFT's LoraConfig that change what the adapters compute or where they sit; the
/// engine reads a config only where each is unset (null, false, empty).
const UNSUPPORTED: [&str; 14] = [
    "use_dora",
    "use_rslora",
    "fan_in_fan_out",
    "lora_bias",
    "layers_to_transform",
    "layer_replication",
    "exclude_modules",
    "modules_to_save",
    "trainable_token_indices",
    "rank_pattern",
    "alpha_pattern",
    "target_parameters",
    "use_qalora",
    "use_bdlora",
];

impl AdapterConfig {
    /// The config of adapters `lora` over the base model folder `base` with `layers` layers.
    pub fn new(lora: &LoraConfig, base: &Path, layers: usize) -> Result<AdapterConfig> {
        let base =
            std::path::absolute(base).map_err(|source| Error::Io { path: base.display().to_string(), source })?;
        // Written out so that a reader sees what the adapters are not.
        let other = [("fan_in_fan_out", false), ("use_rslora", false), ("use_dora", false)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::Bool(v)))
            .chain([("modules_to_save".to_string(), serde_json::Value::Null)])
            .collect();
        Ok(AdapterConfig {
            peft_type: "LORA".into(),
            base_model_name_or_path: base,
            r: lora.rank,
            lora_alpha: lora.alpha,
            lora_dropout: lora.dropout,
            target_modules: serde_json::json!(target_modules(&lora.targets, layers)),
            bias: no_bias(),
            inference_mode: true,
            other,
        })
    }

    /// Reads `dir`/adapter_config.json.
    pub fn read(dir: &Path) -> Result<AdapterConfig> {
        let path = dir.join(ADAPTER_CONFIG);
        let text =
            std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Writes it as `dir`/adapter_config.json.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(ADAPTER_CONFIG);
        let json = serde_json::to_string_pretty(self).expect("adapter config serialises");
        std::fs::write(&path, json).map_err(|source| Error::Io { path: path.display().to_string(), source })
    }

    /// The engine's LoRA options for these adapters over a base model of `layers` layers (the
    /// scale α/R is PEFT's `lora_alpha / r`); an error naming the first PEFT feature the engine
    /// does not implement.
    pub fn lora(&self, layers: usize) -> Result<LoraConfig> {
        self.lora_with(layers, false)
    }

    /// `lora`, reading target_modules as the engine wrote them before it took PEFT's layout (the
    /// module path inside a layer, `output.dense` meaning the feed-forward output only) when `legacy`.
    fn lora_with(&self, layers: usize, legacy: bool) -> Result<LoraConfig> {
        let bad = |m: String| Err(Error::Config(format!("{ADAPTER_CONFIG}: {m}")));
        if self.peft_type != "LORA" {
            return bad(format!("peft_type {:?}: the engine reads LoRA adapters only", self.peft_type));
        }
        if self.bias != "none" {
            return bad(format!("bias {:?}: the engine's adapters train no biases (needs \"none\")", self.bias));
        }
        for key in UNSUPPORTED {
            let set = match self.other.get(key) {
                None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
                Some(serde_json::Value::Object(o)) => !o.is_empty(),
                Some(serde_json::Value::Array(a)) => !a.is_empty(),
                Some(_) => true,
            };
            if set {
                return bad(format!("{key} = {}: not supported by the engine's LoRA", self.other[key]));
            }
        }
        let modules: Vec<String> = serde_json::from_value(self.target_modules.clone()).map_err(|_| {
            Error::Config(format!(
                "{ADAPTER_CONFIG}: target_modules {}: the engine reads a list of module names, not a pattern",
                self.target_modules
            ))
        })?;
        let targets = match legacy {
            true => Target::ALL.into_iter().filter(|t| modules.iter().any(|m| m == t.module())).collect(),
            false => targets_of(&modules, layers).map_err(|e| Error::Config(format!("{ADAPTER_CONFIG}: {e}")))?,
        };
        let config = LoraConfig { rank: self.r, alpha: self.lora_alpha, dropout: self.lora_dropout, targets };
        config.validate().map_err(|e| Error::Config(format!("{ADAPTER_CONFIG}: {e}")))?;
        Ok(config)
    }

    /// The base model's folder, as written (PEFT takes a relative one from the current directory).
    pub fn base_dir(&self) -> &Path {
        &self.base_model_name_or_path
    }
}

/// An adapter folder opened for inference: its config, the base model it adapts, its tensors.
pub struct AdapterFolder {
    pub dir: PathBuf,
    pub config: AdapterConfig,
    pub lora: LoraConfig,
    pub base: Checkpoint,
    pub tensors: SafeTensors,
}

impl AdapterFolder {
    pub fn open(dir: &Path) -> Result<AdapterFolder> {
        let config = AdapterConfig::read(dir)?;
        let base = Checkpoint::open(config.base_dir()).map_err(|e| {
            Error::Config(format!(
                "{}: the base model its {ADAPTER_CONFIG} names ({}) is unusable: {e}",
                dir.display(),
                config.base_dir().display()
            ))
        })?;
        let tensors = SafeTensors::open(&dir.join(ADAPTER_FILE))?;
        // An engine checkpoint of the old layout: adapter keys without PEFT's prefix.
        let legacy =
            !tensors.names().any(|n| n.starts_with(PEFT_PREFIX)) && tensors.names().any(|n| n.contains(".lora_"));
        let lora = config
            .lora_with(base.config.num_hidden_layers, legacy)
            .map_err(|e| Error::Config(format!("{}/{e}", dir.display())))?;
        Ok(AdapterFolder { dir: dir.to_path_buf(), config, lora, base, tensors })
    }

    /// The folder to read the tokenizer from: this one when it has one, else the base model's.
    pub fn tokenizer_dir(&self) -> &Path {
        let own = ["tokenizer.json", "vocab.txt"].iter().any(|f| self.dir.join(f).is_file());
        if own { &self.dir } else { &self.base.dir }
    }

    /// The base encoder, frozen, with the adapters attached. Every adapter tensor of the file must
    /// be one the config asks for, with its shape; other tensors may only be task heads (`head.*`).
    pub fn load_bert<F: Float>(&self, store: &mut Store<F>) -> Result<Bert> {
        let mut bert = self.base.load_bert(store, &|_| false)?;
        let file = self.tensors.path().display().to_string();
        let mut used = HashSet::new();
        let mut source = |name: &str, dims: &[usize]| -> Result<Vec<F>> {
            let info = self.tensors.info(name).ok_or_else(|| Error::Config(format!("{file}: no tensor {name}")))?;
            if info.shape != dims {
                return Err(Error::Config(format!(
                    "{file}: tensor {name} has shape {:?}; rank {} over this base model needs {dims:?}",
                    info.shape, self.lora.rank
                )));
            }
            used.insert(name.to_string());
            Ok(self.tensors.f32(name)?.into_iter().map(|v| F::from_f64(v as f64)).collect())
        };
        bert.lora = Some(Lora::register(store, &bert.target_dims(), &self.lora, false, &mut source)?);
        if let Some(extra) = self.tensors.names().find(|n| !used.contains(*n) && !n.starts_with("head.")) {
            return Err(Error::Config(format!(
                "{file}: tensor {extra} is not an adapter that {ADAPTER_CONFIG} asks for (targets {:?}, r {})",
                self.lora.targets, self.lora.rank
            )));
        }
        Ok(bert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAYERS: usize = 12;

    /// The modules PEFT adapts for `strings` in a BertModel: (layer, target) pairs.
    fn adapted(strings: &[String]) -> Vec<(usize, Target)> {
        let mut out = Vec::new();
        for l in 0..LAYERS {
            for t in Target::ALL {
                if strings.iter().any(|s| peft_matches(s, &module_name(l, t))) {
                    out.push((l, t));
                }
            }
        }
        out
    }

    #[test]
    fn peft_matches_full_names_and_dotted_suffixes_only() {
        assert!(peft_matches("query", "encoder.layer.3.attention.self.query"));
        assert!(peft_matches("encoder.layer.3.output.dense", "encoder.layer.3.output.dense"));
        assert!(!peft_matches("uery", "encoder.layer.3.attention.self.query"));
        assert!(!peft_matches("encoder.layer.1.output.dense", "encoder.layer.11.output.dense"));
        // The trap the written names avoid: the bare path of the FFN output also names attention's.
        assert!(peft_matches("output.dense", "encoder.layer.0.attention.output.dense"));
    }

    /// Every subset of the six targets: the written strings adapt exactly those modules in every
    /// layer, and read back as the same targets.
    #[test]
    fn every_target_set_round_trips_through_target_modules() {
        for bits in 1..64u32 {
            let targets: Vec<Target> = Target::ALL.into_iter().filter(|&t| bits & (1 << t as u32) != 0).collect();
            let strings = target_modules(&targets, LAYERS);
            let want: Vec<(usize, Target)> = (0..LAYERS).flat_map(|l| targets.iter().map(move |&t| (l, t))).collect();
            let mut got = adapted(&strings);
            got.sort_by_key(|&(l, t)| (l, t as usize));
            assert_eq!(got, want, "{strings:?}");
            assert!(strings.iter().all(|s| OTHER_ADAPTABLE.iter().all(|m| !peft_matches(s, m))));
            assert_eq!(targets_of(&strings, LAYERS).unwrap(), targets);
        }
        let ffn_out = target_modules(&[Target::FfnOut], 2);
        assert_eq!(ffn_out, ["encoder.layer.0.output.dense", "encoder.layer.1.output.dense"]);
    }

    #[test]
    fn targets_beyond_the_engines_are_refused() {
        let refuse = |s: &[&str]| {
            let s: Vec<String> = s.iter().map(|s| s.to_string()).collect();
            targets_of(&s, LAYERS).unwrap_err().to_string()
        };
        assert!(refuse(&["dense"]).contains("pooler.dense"));
        assert!(refuse(&["word_embeddings", "query"]).contains("embeddings.word_embeddings"));
        assert!(refuse(&["encoder.layer.0.attention.self.query"]).contains("layer 1"));
        assert!(refuse(&["classifier"]).contains("match no linear"));
        // PEFT's usual short names are read.
        let s: Vec<String> = ["query", "value"].iter().map(|s| s.to_string()).collect();
        assert_eq!(targets_of(&s, LAYERS).unwrap(), [Target::Query, Target::Value]);
    }

    #[test]
    fn peft_features_the_engine_lacks_are_refused_by_name() {
        let read = |extra: &str| -> Result<LoraConfig> {
            let json = format!(
                r#"{{"peft_type":"LORA","base_model_name_or_path":"b","r":4,"lora_alpha":8,
                    "target_modules":["query","value"],"bias":"none","rank_pattern":{{}},
                    "layers_to_transform":null,"use_dora":false{extra}}}"#
            );
            serde_json::from_str::<AdapterConfig>(&json).unwrap().lora(LAYERS)
        };
        let ok = read("").unwrap();
        assert_eq!((ok.rank, ok.scale()), (4, 2.0));
        assert!(read(r#","use_rslora":true"#).unwrap_err().to_string().contains("use_rslora"));
        assert!(read(r#","alpha_pattern":{"query":4}"#).unwrap_err().to_string().contains("alpha_pattern"));
        assert!(read(r#","modules_to_save":["pooler"]"#).unwrap_err().to_string().contains("modules_to_save"));
    }
}
