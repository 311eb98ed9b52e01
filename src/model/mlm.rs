//! BERT's masked-language-model head, as Hugging Face's `BertForMaskedLM` has it: on the states
//! of the chosen positions, h = LayerNorm(GELU(dense(x))), then the decoder tied to the word
//! embeddings E, logits = h · Eᵀ + bias. The tie is the same tensor read twice, by the embedding
//! lookup and by the decoder's linear: both backward passes add into its one gradient.
//! Its parameters keep Hugging Face's names (`cls.predictions.*`), so a checkpoint of
//! `BertForMaskedLM` (bert-base-uncased) loads its trained head and a pretrain's output loads in
//! Hugging Face; the encoder-only loaders pass over them (`cls.` is an ignored prefix).

use super::bert::{Bert, ParamKind, ParamSource, init, linear};
use super::checkpoint::Checkpoint;
use super::config::BertConfig;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::rng::Rng;
use crate::store::Store;
use crate::tape::Tape;
use crate::tensor::Tensor;

pub const DENSE_WEIGHT: &str = "cls.predictions.transform.dense.weight";
pub const DENSE_BIAS: &str = "cls.predictions.transform.dense.bias";
pub const NORM_WEIGHT: &str = "cls.predictions.transform.LayerNorm.weight";
pub const NORM_BIAS: &str = "cls.predictions.transform.LayerNorm.bias";
/// The decoder's own bias (V); its weight is the word-embedding table.
pub const DECODER_BIAS: &str = "cls.predictions.bias";

pub struct MlmHead {
    pub dense_w: Tensor, // (C, C), HF layout (out, in)
    pub dense_b: Tensor, // (C)
    pub ln_g: Tensor,    // (C)
    pub ln_b: Tensor,    // (C)
    pub bias: Tensor,    // (V)
}

/// Where the head's values came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadOrigin {
    Checkpoint,
    /// Initialised as Hugging Face initialises a new head, the checkpoint having none.
    Fresh,
}

impl MlmHead {
    /// Registers the head (trainable) in `store`, its values from `source(name, dims, kind)`.
    pub fn register<F: Float>(
        store: &mut Store<F>,
        config: &BertConfig,
        source: &mut ParamSource<'_, F>,
    ) -> Result<MlmHead> {
        let (c, v) = (config.hidden_size, config.vocab_size);
        let mut add = |name: &str, dims: &[usize], kind: ParamKind| -> Result<Tensor> {
            let data = source(name, dims, kind)?;
            store.add_param(name, dims, &data, true)
        };
        Ok(MlmHead {
            dense_w: add(DENSE_WEIGHT, &[c, c], ParamKind::Weight)?,
            dense_b: add(DENSE_BIAS, &[c], ParamKind::Bias)?,
            ln_g: add(NORM_WEIGHT, &[c], ParamKind::NormGain)?,
            ln_b: add(NORM_BIAS, &[c], ParamKind::NormBias)?,
            bias: add(DECODER_BIAS, &[v], ParamKind::Bias)?,
        })
    }

    /// The head of `ckpt` when it has one (every `cls.predictions.*` tensor but the tied
    /// decoder's), else a fresh one: N(0, initializer_range) weights, zero biases, LayerNorm 1/0.
    /// A file with part of a head is refused, naming the missing tensor.
    pub fn load<F: Float>(store: &mut Store<F>, ckpt: &Checkpoint, seed: u64) -> Result<(MlmHead, HeadOrigin)> {
        let names = [DENSE_WEIGHT, DENSE_BIAS, NORM_WEIGHT, NORM_BIAS, DECODER_BIAS];
        let found = names.iter().filter(|n| ckpt.stored_name(n).is_some()).count();
        if found == 0 {
            let (mut rng, std) = (Rng::new(seed), ckpt.config.initializer_range);
            let head =
                MlmHead::register(store, &ckpt.config, &mut |_, dims, kind| Ok(init(&mut rng, dims, kind, std)))?;
            return Ok((head, HeadOrigin::Fresh));
        }
        if let Some(missing) = names.iter().find(|n| ckpt.stored_name(n).is_none()) {
            return Err(Error::Config(format!(
                "{}: the masked-LM head is incomplete: {missing} is missing",
                ckpt.tensors.path().display()
            )));
        }
        let head = MlmHead::register(store, &ckpt.config, &mut |name, dims, _| Ok(ckpt.read_param(name, dims)?.1))?;
        Ok((head, HeadOrigin::Checkpoint))
    }

    /// Logits (M, V) over the vocabulary from the chosen positions' hidden states x (M, C), the
    /// decoder's weight the word table `word` (V, C), the LayerNorm's epsilon `eps`.
    pub fn logits<F: Float>(&self, tape: &mut Tape<F>, x: Tensor, word: Tensor, eps: f64) -> Result<Tensor> {
        let h = linear(tape, x, self.dense_w, self.dense_b)?; // (M, C)
        let h = tape.gelu(h)?;
        let h = tape.layernorm(h, self.ln_g, self.ln_b, eps)?;
        linear(tape, h, word, self.bias) // (M, V)
    }

    /// The masked-LM loss: cross-entropy of the logits at rows `rows` (M) of the encoder's output
    /// `hidden` (R, C) against the original ids `labels` (M), the mean over the M positions.
    pub fn loss<F: Float>(
        &self,
        tape: &mut Tape<F>,
        bert: &Bert,
        hidden: Tensor,
        rows: Tensor,
        labels: Tensor,
    ) -> Result<Tensor> {
        let x = tape.gather_rows(hidden, rows)?; // (M, C)
        let logits = self.logits(tape, x, bert.emb.word, bert.config.layer_norm_eps)?;
        tape.cross_entropy(logits, labels)
    }
}
