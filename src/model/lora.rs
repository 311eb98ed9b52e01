//! LoRA (Hu et al. 2022): a targeted linear y = W x + b becomes W x + b + (α/R)·B(A dropout(x)),
//! with A (R, IN) drawn like PEFT's (Kaiming-uniform with a = √5, i.e. U(±1/√IN)) and B (OUT, R)
//! zero, so the model starts exactly as the base. The base weights sit in the frozen arena: no
//! gradient slots, no optimizer state. Adapters are named as PEFT saves them for a `BertModel`,
//! `base_model.model.encoder.layer.{l}.{module}.lora_A.weight` / `lora_B.weight`, in the store and
//! in checkpoints alike (see `model::peft`); checkpoints written before that (issue 17, finding 9)
//! named them without the `base_model.model.` prefix and are still read.

use crate::error::{Error, Result};
use crate::float::Float;
use crate::rng::Rng;
use crate::store::Store;
use crate::tape::Tape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// A linear of an encoder layer that can carry an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Target {
    Query,
    Key,
    Value,
    /// The attention output projection.
    AttnOut,
    /// The feed-forward input (intermediate) projection.
    FfnIn,
    /// The feed-forward output projection.
    FfnOut,
}

impl Target {
    pub const ALL: [Target; 6] =
        [Target::Query, Target::Key, Target::Value, Target::AttnOut, Target::FfnIn, Target::FfnOut];

    /// The Hugging Face module path inside `encoder.layer.{l}`.
    pub fn module(self) -> &'static str {
        match self {
            Target::Query => "attention.self.query",
            Target::Key => "attention.self.key",
            Target::Value => "attention.self.value",
            Target::AttnOut => "attention.output.dense",
            Target::FfnIn => "intermediate.dense",
            Target::FfnOut => "output.dense",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Dropout on the adapter's input (training only).
    pub dropout: f64,
    pub targets: Vec<Target>,
}

impl LoraConfig {
    /// α / R, the factor on B·A.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.rank == 0 {
            return bad("--lora: the rank must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return bad(format!("--lora-alpha {} must be positive", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--lora-dropout {} is outside [0, 1)", self.dropout));
        }
        if self.targets.is_empty() {
            return bad("--lora-targets: no target given".into());
        }
        Ok(())
    }
}

/// Supplies an adapter matrix's values from its name and dimensions.
pub type AdapterSource<'a, F> = dyn FnMut(&str, &[usize]) -> Result<Vec<F>> + 'a;

/// One adapter: A (R, IN), B (OUT, R).
#[derive(Clone, Copy, Debug)]
pub struct Adapter {
    pub a: Tensor,
    pub b: Tensor,
}

pub struct Lora {
    pub config: LoraConfig,
    /// Per encoder layer, per target (indexed by `Target as usize`).
    pub layers: Vec<[Option<Adapter>; 6]>,
    /// How every adapted projection computes, fixed when the model is built.
    pub form: Form,
}

/// How an adapted projection computes. Both are W x + b + (α/R)·B(A x); they differ in rounding
/// only, and in where the adapters' dropout can go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Folded into the base weight (`Tape::lora_linear`): one GEMM per projection, the fused
    /// query/key/value one included. Needs exact float32 matmuls (in bf16 or tf32 a small
    /// update would vanish into W) and no dropout on the adapters' input.
    Folded,
    /// Beside the base projection, as PEFT computes it: (α/R)·B(A dropout(x)) added to W x + b.
    Beside,
}

impl Form {
    /// The form of a model built on `store` with `config`: folded where the matmuls are exact
    /// float32 and the adapters drop nothing (no dropout, or a model built for inference only).
    /// A model built for training with adapter dropout stays beside in its dev evaluations too.
    pub fn for_model<F: Float>(store: &Store<F>, config: &LoraConfig, training: bool) -> Form {
        let drops = training && config.dropout > 0.0;
        if !drops && crate::ops::matmul::exact_f32(store) { Form::Folded } else { Form::Beside }
    }
}

impl Lora {
    /// The adapters read as constants (see [`Bert::detached`]).
    pub fn detached(&self) -> Lora {
        let adapter = |a: &Option<Adapter>| a.map(|a| Adapter { a: a.a.detached(), b: a.b.detached() });
        Lora {
            config: self.config.clone(),
            layers: self.layers.iter().map(|l| l.each_ref().map(adapter)).collect(),
            form: self.form,
        }
    }
}

/// What PEFT puts before a `BertModel`'s own parameter names in an adapter file.
pub const PEFT_PREFIX: &str = "base_model.model.";

/// The names of a target's two adapter matrices in layer `l`: PEFT's keys.
pub fn adapter_names(l: usize, t: Target) -> (String, String) {
    let p = format!("{PEFT_PREFIX}encoder.layer.{l}.{}", t.module());
    (format!("{p}.lora_A.weight"), format!("{p}.lora_B.weight"))
}

/// The name an adapter matrix had in the engine's checkpoints before they took PEFT's keys.
pub fn legacy_name(name: &str) -> Option<&str> {
    name.strip_prefix(PEFT_PREFIX)
}

/// Fresh adapter values: A ~ U(±1/√IN) as PEFT draws it, B = 0.
pub fn init_source<F: Float>(rng: &mut Rng) -> impl FnMut(&str, &[usize]) -> Result<Vec<F>> + '_ {
    move |name, dims| {
        let n: usize = dims.iter().product();
        Ok(if name.ends_with("lora_A.weight") {
            let bound = 1.0 / (dims[1] as f64).sqrt();
            (0..n).map(|_| F::from_f64(rng.range(-bound, bound))).collect()
        } else {
            vec![F::ZERO; n]
        })
    }
}

impl Lora {
    /// Registers trainable adapters on every targeted linear of an encoder whose layers' base
    /// weights have the (OUT, IN) `dims` (per layer, indexed by `Target as usize`: see
    /// `Bert::target_dims`), layer by layer, their values from `source(name, dims)`; where the
    /// source has no values for a name (a checkpoint of the old layout), from
    /// `source(legacy_name(name), dims)`, and if neither, the first error. `training`: whether
    /// the model trains (see [`Form::for_model`]).
    pub fn register<F: Float>(
        store: &mut Store<F>,
        dims: &[[(usize, usize); 6]],
        config: &LoraConfig,
        training: bool,
        source: &mut AdapterSource<'_, F>,
    ) -> Result<Lora> {
        config.validate()?;
        let r = config.rank;
        let mut layers = Vec::with_capacity(dims.len());
        for (l, layer) in dims.iter().enumerate() {
            let mut adapters = [None; 6];
            for &t in &config.targets {
                if adapters[t as usize].is_some() {
                    continue;
                }
                let (out, inp) = layer[t as usize];
                let (na, nb) = adapter_names(l, t);
                let mut values = |name: &str, dims: &[usize]| {
                    source(name, dims).or_else(|e| match legacy_name(name) {
                        Some(old) => source(old, dims).map_err(|_| e),
                        None => Err(e),
                    })
                };
                let a = store.add_param(&na, &[r, inp], &values(&na, &[r, inp])?, true)?;
                let b = store.add_param(&nb, &[out, r], &values(&nb, &[out, r])?, true)?;
                adapters[t as usize] = Some(Adapter { a, b });
            }
            layers.push(adapters);
        }
        Ok(Lora { config: config.clone(), layers, form: Form::for_model(store, config, training) })
    }

    pub fn adapter(&self, layer: usize, t: Target) -> Option<Adapter> {
        self.layers.get(layer).and_then(|a| a[t as usize])
    }

    /// (α/R)·B(A dropout(x)): x (…, IN) → (…, OUT). The scale is applied to the narrow (…, R)
    /// intermediate, where it costs least.
    pub fn delta<F: Float>(&self, tape: &mut Tape<F>, ad: Adapter, x: Tensor) -> Result<Tensor> {
        self.delta_keyed(tape, ad, x, None)
    }

    /// [`Lora::delta`] with its dropout drawn from each row's token key (`keys`, one per row of
    /// x), as the encoder's own dropouts are, so packed and padded batches drop alike.
    pub fn delta_keyed<F: Float>(
        &self,
        tape: &mut Tape<F>,
        ad: Adapter,
        x: Tensor,
        keys: Option<Tensor>,
    ) -> Result<Tensor> {
        let p = self.config.dropout;
        let x = match keys {
            Some(keys) => tape.dropout_rows(x, keys, p)?,
            None => tape.dropout(x, p)?,
        };
        let z = tape.matmul(x, ad.a, false, true)?; // (…, R)
        let z = tape.scale(z, self.config.scale())?;
        tape.matmul(z, ad.b, false, true) // (…, OUT)
    }

    /// W ← W + (α/R)·B·A for every adapter (accumulated in f64), in the store: the base model
    /// with the adapters folded in. `weights`: each layer's base weights, indexed by
    /// `Target as usize` (see `Bert::target_weights`).
    pub fn merge_into<F: Float>(&self, store: &mut Store<F>, weights: &[[Tensor; 6]]) -> Result<()> {
        let s = self.config.scale();
        for (layer, adapters) in weights.iter().zip(&self.layers) {
            for t in Target::ALL {
                let Some(ad) = adapters[t as usize] else { continue };
                let w = layer[t as usize];
                let (out, inp, r) = (w.dims()[0], w.dims()[1], ad.a.dims()[0]);
                let (mut wv, av, bv) = (store.read(w)?, store.read(ad.a)?, store.read(ad.b)?);
                for o in 0..out {
                    for i in 0..inp {
                        let d: f64 = (0..r).map(|k| bv[o * r + k].to_f64() * av[k * inp + i].to_f64()).sum();
                        wv[o * inp + i] = F::from_f64(wv[o * inp + i].to_f64() + s * d);
                    }
                }
                store.write(w, &wv)?;
            }
        }
        Ok(())
    }
}
