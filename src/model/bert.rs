//! The BERT encoder on the tape: embeddings, N post-layernorm encoder layers, the pooler.
//! Parameters are registered under Hugging Face's names (without the `bert.` prefix), so a
//! checkpoint maps onto them one to one.

use super::config::BertConfig;
use super::input::{EncoderInput, Layout};
use super::lora::{Form, Lora, Target};
use crate::error::Result;
use crate::float::Float;
use crate::ops::lora_linear::Band;
use crate::rng::Rng;
use crate::store::Store;
use crate::tape::Tape;
use crate::tensor::Tensor;

pub struct Embeddings {
    pub word: Tensor,  // (V, C)
    pub pos: Tensor,   // (P, C)
    pub types: Tensor, // (TV, C)
    pub ln_g: Tensor,  // (C)
    pub ln_b: Tensor,  // (C)
}

pub struct Layer {
    pub q_w: Tensor, // (C, C), HF layout (out, in)
    pub q_b: Tensor,
    pub k_w: Tensor,
    pub k_b: Tensor,
    pub v_w: Tensor,
    pub v_b: Tensor,
    pub o_w: Tensor, // attention output projection (C, C)
    pub o_b: Tensor,
    pub ln1_g: Tensor,
    pub ln1_b: Tensor,
    pub ffn_in_w: Tensor, // (I, C)
    pub ffn_in_b: Tensor,
    pub ffn_out_w: Tensor, // (C, I)
    pub ffn_out_b: Tensor,
    pub ln2_g: Tensor,
    pub ln2_b: Tensor,
}

impl Layer {
    /// The query, key and value projections as one (3C, C) weight and (3C) bias, when they lie
    /// back to back in one arena (as `Bert::register` places them).
    pub fn fused_qkv(&self) -> Option<(Tensor, Tensor)> {
        let adjacent = |a: Tensor, b: Tensor| {
            a.arena == b.arena && a.requires_grad == b.requires_grad && b.offset == a.offset + a.numel()
        };
        if !(adjacent(self.q_w, self.k_w)
            && adjacent(self.k_w, self.v_w)
            && adjacent(self.q_b, self.k_b)
            && adjacent(self.k_b, self.v_b))
        {
            return None;
        }
        let (out, inp) = (self.q_w.dims()[0], self.q_w.dims()[1]);
        let w = Tensor { shape: crate::tensor::Shape::new(&[3 * out, inp]).ok()?, ..self.q_w };
        let b = Tensor { shape: crate::tensor::Shape::new(&[3 * out]).ok()?, ..self.q_b };
        Some((w, b))
    }
}

impl Layer {
    /// The base weight (OUT, IN) that `t` adapts.
    pub fn weight(&self, t: Target) -> Tensor {
        match t {
            Target::Query => self.q_w,
            Target::Key => self.k_w,
            Target::Value => self.v_w,
            Target::AttnOut => self.o_w,
            Target::FfnIn => self.ffn_in_w,
            Target::FfnOut => self.ffn_out_w,
        }
    }

    /// The layer with its parameters read as constants.
    fn detached(&self) -> Layer {
        let d = Tensor::detached;
        Layer {
            q_w: d(self.q_w),
            q_b: d(self.q_b),
            k_w: d(self.k_w),
            k_b: d(self.k_b),
            v_w: d(self.v_w),
            v_b: d(self.v_b),
            o_w: d(self.o_w),
            o_b: d(self.o_b),
            ln1_g: d(self.ln1_g),
            ln1_b: d(self.ln1_b),
            ffn_in_w: d(self.ffn_in_w),
            ffn_in_b: d(self.ffn_in_b),
            ffn_out_w: d(self.ffn_out_w),
            ffn_out_b: d(self.ffn_out_b),
            ln2_g: d(self.ln2_g),
            ln2_b: d(self.ln2_b),
        }
    }
}

pub struct Pooler {
    pub w: Tensor, // (C, C)
    pub b: Tensor,
}

pub struct Bert {
    pub config: BertConfig,
    pub emb: Embeddings,
    pub layers: Vec<Layer>,
    pub pooler: Option<Pooler>,
    /// Low-rank adapters on the encoder's linears, when attached.
    pub lora: Option<Lora>,
}

/// How token states (B, T, C) become one vector per sequence (B, C).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The [CLS] token's state.
    Cls,
    /// The mean over real (unpadded) tokens.
    Mean,
    /// BERT's pooler: tanh(W · h_[CLS] + b).
    Pooler,
}

/// Supplies a parameter's values from its name, dimensions and kind.
pub type ParamSource<'a, F> = dyn FnMut(&str, &[usize], ParamKind) -> Result<Vec<F>> + 'a;

/// What a parameter is, for initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Weight,
    Bias,
    NormGain,
    NormBias,
}

/// y (…, OUT) = x (…, IN) · wᵀ + b, with w in Hugging Face's (OUT, IN) layout.
pub fn linear<F: Float>(tape: &mut Tape<F>, x: Tensor, w: Tensor, b: Tensor) -> Result<Tensor> {
    tape.linear(x, w, b)
}

impl Bert {
    /// Registers every parameter in `store`, taking its values from `source(name, dims, kind)`
    /// (a checkpoint, or a random initialiser); `trainable(name)` decides its arena.
    pub fn register<F: Float>(
        store: &mut Store<F>,
        config: &BertConfig,
        with_pooler: bool,
        source: &mut ParamSource<'_, F>,
        trainable: &dyn Fn(&str) -> bool,
    ) -> Result<Bert> {
        config.validate()?;
        let (c, i) = (config.hidden_size, config.intermediate_size);
        let mut add = |name: String, dims: &[usize], kind: ParamKind| -> Result<Tensor> {
            let data = source(&name, dims, kind)?;
            store.add_param(&name, dims, &data, trainable(&name))
        };
        use ParamKind::*;
        let emb = Embeddings {
            word: add("embeddings.word_embeddings.weight".into(), &[config.vocab_size, c], Weight)?,
            pos: add("embeddings.position_embeddings.weight".into(), &[config.max_position_embeddings, c], Weight)?,
            types: add("embeddings.token_type_embeddings.weight".into(), &[config.type_vocab_size, c], Weight)?,
            ln_g: add("embeddings.LayerNorm.weight".into(), &[c], NormGain)?,
            ln_b: add("embeddings.LayerNorm.bias".into(), &[c], NormBias)?,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = |s: &str| format!("encoder.layer.{l}.{s}");
            // Query, key and value weights back to back, then their biases: together they are one
            // (3C, C) weight and one (3C) bias, so the three projections run as one GEMM.
            let q_w = add(p("attention.self.query.weight"), &[c, c], Weight)?;
            let k_w = add(p("attention.self.key.weight"), &[c, c], Weight)?;
            let v_w = add(p("attention.self.value.weight"), &[c, c], Weight)?;
            let q_b = add(p("attention.self.query.bias"), &[c], Bias)?;
            let k_b = add(p("attention.self.key.bias"), &[c], Bias)?;
            let v_b = add(p("attention.self.value.bias"), &[c], Bias)?;
            layers.push(Layer {
                q_w,
                q_b,
                k_w,
                k_b,
                v_w,
                v_b,
                o_w: add(p("attention.output.dense.weight"), &[c, c], Weight)?,
                o_b: add(p("attention.output.dense.bias"), &[c], Bias)?,
                ln1_g: add(p("attention.output.LayerNorm.weight"), &[c], NormGain)?,
                ln1_b: add(p("attention.output.LayerNorm.bias"), &[c], NormBias)?,
                ffn_in_w: add(p("intermediate.dense.weight"), &[i, c], Weight)?,
                ffn_in_b: add(p("intermediate.dense.bias"), &[i], Bias)?,
                ffn_out_w: add(p("output.dense.weight"), &[c, i], Weight)?,
                ffn_out_b: add(p("output.dense.bias"), &[c], Bias)?,
                ln2_g: add(p("output.LayerNorm.weight"), &[c], NormGain)?,
                ln2_b: add(p("output.LayerNorm.bias"), &[c], NormBias)?,
            });
        }
        let pooler = if with_pooler {
            Some(Pooler {
                w: add("pooler.dense.weight".into(), &[c, c], Weight)?,
                b: add("pooler.dense.bias".into(), &[c], Bias)?,
            })
        } else {
            None
        };
        Ok(Bert { config: config.clone(), emb, layers, pooler, lora: None })
    }

    /// A randomly initialised, fully trainable BERT (Hugging Face's init: N(0, std) weights,
    /// zero biases, unit layernorm gains).
    pub fn random<F: Float>(store: &mut Store<F>, config: &BertConfig, std: f64, seed: u64) -> Result<Bert> {
        let mut rng = Rng::new(seed);
        Bert::register(store, config, true, &mut |_, dims, kind| Ok(init(&mut rng, dims, kind, std)), &|_| true)
    }

    /// Each layer's adaptable weights, indexed by `Target as usize` (for `Lora::merge_into`).
    pub fn target_weights(&self) -> Vec<[Tensor; 6]> {
        self.layers.iter().map(|l| Target::ALL.map(|t| l.weight(t))).collect()
    }

    /// The (OUT, IN) of each layer's adaptable weights, indexed by `Target as usize` (for
    /// `Lora::register`).
    pub fn target_dims(&self) -> Vec<[(usize, usize); 6]> {
        self.target_weights().iter().map(|ws| ws.map(|w| (w.dims()[0], w.dims()[1]))).collect()
    }

    /// The same model with every parameter read as a constant: a pass on it takes the gradient
    /// of its inputs only, none of the parameters' (SMART's ascent pass).
    pub fn detached(&self) -> Bert {
        let (d, e) = (Tensor::detached, &self.emb);
        Bert {
            config: self.config.clone(),
            emb: Embeddings { word: d(e.word), pos: d(e.pos), types: d(e.types), ln_g: d(e.ln_g), ln_b: d(e.ln_b) },
            layers: self.layers.iter().map(Layer::detached).collect(),
            pooler: self.pooler.as_ref().map(|p| Pooler { w: d(p.w), b: d(p.b) }),
            lora: self.lora.as_ref().map(Lora::detached),
        }
    }

    /// The encoder on a padded batch: ids, type_ids, mask (B, T) ints → last hidden state (B, T, C).
    pub fn forward<F: Float>(&self, tape: &mut Tape<F>, ids: Tensor, type_ids: Tensor, mask: Tensor) -> Result<Tensor> {
        let input = EncoderInput::padded(tape, ids, type_ids, mask)?;
        self.encode(tape, &input, self.layers.len())
    }

    /// The hidden state after the first `n` encoder layers (0: the embeddings' output), in the
    /// input's layout: (B, T, C) padded, (N, C) packed. [`Bert::embed`] then [`Bert::layers`]:
    /// a method that perturbs or taps the embeddings' output (SMART) calls the two itself.
    pub fn encode<F: Float>(&self, tape: &mut Tape<F>, input: &EncoderInput, n: usize) -> Result<Tensor> {
        self.check_depth(n)?;
        let x = self.embed(tape, input)?;
        self.layers(tape, x, input, n)
    }

    fn check_depth(&self, n: usize) -> Result<()> {
        if n > self.layers.len() {
            return Err(crate::error::Error::Config(format!(
                "layer {n} asked of a model with {} layers",
                self.layers.len()
            )));
        }
        Ok(())
    }

    /// The embeddings' output (word + position + type, layernorm, dropout), in the input's layout.
    pub fn embed<F: Float>(&self, tape: &mut Tape<F>, input: &EncoderInput) -> Result<Tensor> {
        let e = &self.emb;
        let x = match &input.layout {
            Layout::Padded { .. } => tape.embedding(input.ids, input.type_ids, e.word, e.pos, e.types)?,
            Layout::Packed { positions, .. } => {
                tape.embedding_at(input.ids, input.type_ids, *positions, e.word, e.pos, e.types)?
            }
        };
        let x = tape.layernorm(x, e.ln_g, e.ln_b, self.config.layer_norm_eps)?;
        tape.dropout_rows(x, input.keys, self.config.hidden_dropout_prob)
    }

    /// The first `n` encoder layers on `x`, the embeddings' output (or a perturbation of it).
    pub fn layers<F: Float>(&self, tape: &mut Tape<F>, x: Tensor, input: &EncoderInput, n: usize) -> Result<Tensor> {
        self.layers_with(tape, x, input, n, None)
    }

    /// [`Bert::layers`] with a branch in parallel with each layer (a task's PALs), whose output
    /// on the layer's input joins the layer's last residual sum: LN(FFN(a) + a + branch(x)).
    pub fn layers_with<F: Float>(
        &self,
        tape: &mut Tape<F>,
        x: Tensor,
        input: &EncoderInput,
        n: usize,
        parallel: Option<&dyn ParallelBranch<F>>,
    ) -> Result<Tensor> {
        self.check_depth(n)?;
        let cfg = &self.config;
        let (eps, p_hidden, p_attn) = (cfg.layer_norm_eps, cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob);
        let keys = input.keys;
        let mut x = x;
        let scale = 1.0 / (cfg.head_size() as f64).sqrt();
        for (li, l) in self.layers[..n].iter().enumerate() {
            let (q, k, v) = self.qkv(tape, li, l, x, input)?;
            let ctx = attention(tape, q, k, v, input, cfg.num_attention_heads, scale, p_attn)?;
            let proj = |tape: &mut Tape<F>, x: Tensor, w: Tensor, b: Tensor, target: Target| -> Result<Tensor> {
                self.adapted_linear(tape, li, x, w, b, &[(0, target)], keys)
            };
            let a = proj(tape, ctx, l.o_w, l.o_b, Target::AttnOut)?;
            let a = tape.dropout_rows(a, keys, p_hidden)?;
            let a = tape.add(a, x)?;
            let h = tape.layernorm(a, l.ln1_g, l.ln1_b, eps)?;
            let f = proj(tape, h, l.ffn_in_w, l.ffn_in_b, Target::FfnIn)?; // (…, I)
            let f = tape.gelu(f)?;
            let f = proj(tape, f, l.ffn_out_w, l.ffn_out_b, Target::FfnOut)?; // (…, C)
            let f = tape.dropout_rows(f, keys, p_hidden)?;
            let mut f = tape.add(f, h)?;
            if let Some(p) = parallel {
                let t = p.branch(tape, li, x, input)?; // (…, C), from the layer's input
                f = tape.add(f, t)?;
            }
            x = tape.layernorm(f, l.ln2_g, l.ln2_b, eps)?;
        }
        Ok(x)
    }

    /// Layer `li`'s queries, keys and values of x in attention's layout: (B, NH, T, HS) each
    /// padded, the (N, C) rows packed (heads are column bands there).
    fn qkv<F: Float>(
        &self,
        tape: &mut Tape<F>,
        li: usize,
        l: &Layer,
        x: Tensor,
        input: &EncoderInput,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (c, heads, keys) = (self.config.hidden_size, self.config.num_attention_heads, input.keys);
        let packed = matches!(input.layout, Layout::Packed { .. });
        // Band i of a fused (…, 3C) projection, and a (…, C) projection, in attention's layout.
        let band = |tape: &mut Tape<F>, qkv: Tensor, i: usize| {
            if packed { tape.columns(qkv, i * c, c) } else { tape.split_heads_cols(qkv, i * c, c, heads) }
        };
        let to_heads = |tape: &mut Tape<F>, y: Tensor| if packed { Ok(y) } else { tape.split_heads(y, heads) };
        let targets = [Target::Query, Target::Key, Target::Value];
        let mut out = Vec::with_capacity(3);
        match l.fused_qkv() {
            // No adapters, or adapters folded into the fused weight: one op, then the bands.
            Some((w, b)) if self.lora.is_none() || self.folds_adapters() => {
                let bands = [(0, Target::Query), (c, Target::Key), (2 * c, Target::Value)];
                let qkv = self.adapted_linear(tape, li, x, w, b, &bands, keys)?; // (…, 3C)
                for i in 0..3 {
                    out.push(band(tape, qkv, i)?);
                }
            }
            // Adapters beside the fused projection: each one's delta added to its band.
            Some((w, b)) => {
                let qkv = linear(tape, x, w, b)?; // (…, 3C)
                for (i, target) in targets.into_iter().enumerate() {
                    let mut y = band(tape, qkv, i)?;
                    if let (Some(ad), Some(lora)) = (self.adapter(li, target), &self.lora) {
                        let d = lora.delta_keyed(tape, ad, x, Some(keys))?; // (…, C)
                        let d = to_heads(tape, d)?;
                        y = tape.add(y, d)?;
                    }
                    out.push(y);
                }
            }
            None => {
                let ws = [(l.q_w, l.q_b), (l.k_w, l.k_b), (l.v_w, l.v_b)];
                for ((w, b), target) in ws.into_iter().zip(targets) {
                    let y = self.adapted_linear(tape, li, x, w, b, &[(0, target)], keys)?;
                    out.push(to_heads(tape, y)?);
                }
            }
        }
        Ok((out[0], out[1], out[2]))
    }

    fn adapter(&self, layer: usize, target: Target) -> Option<super::lora::Adapter> {
        self.lora.as_ref().and_then(|l| l.adapter(layer, target))
    }

    /// Whether adapters run folded into their base weights (`Tape::lora_linear`), as decided
    /// when the model was built ([`Form::for_model`]).
    fn folds_adapters(&self) -> bool {
        self.lora.as_ref().is_some_and(|l| l.form == Form::Folded)
    }

    /// x·wᵀ + b with layer `layer`'s adapters on `targets`, each `(row, target)` adapting the rows
    /// of w from `row` on: folded into w, or as (α/R)·B(A x) added to the output (one target at
    /// row 0 only).
    #[allow(clippy::too_many_arguments)]
    fn adapted_linear<F: Float>(
        &self,
        tape: &mut Tape<F>,
        layer: usize,
        x: Tensor,
        w: Tensor,
        b: Tensor,
        targets: &[(usize, Target)],
        keys: Tensor,
    ) -> Result<Tensor> {
        let bands: Vec<Band> = targets
            .iter()
            .filter_map(|&(row, t)| self.adapter(layer, t).map(|ad| Band { row, a: ad.a, b: ad.b }))
            .collect();
        let Some(lora) = self.lora.as_ref().filter(|_| !bands.is_empty()) else {
            return linear(tape, x, w, b);
        };
        if self.folds_adapters() {
            return tape.lora_linear(x, w, b, &bands, lora.config.scale());
        }
        match bands[..] {
            [Band { row: 0, a, b: b_ }] if b_.dims()[0] == w.dims()[0] => {
                let y = linear(tape, x, w, b)?;
                let d = lora.delta_keyed(tape, super::lora::Adapter { a, b: b_ }, x, Some(keys))?;
                tape.add(y, d)
            }
            _ => Err(crate::error::Error::Config("adapters on bands of one weight run folded only".into())),
        }
    }

    /// The pooler on a padded hidden state (B, T, C): tanh(W · h[:, 0] + b) (B, C). Errors when
    /// the checkpoint has none.
    pub fn pool<F: Float>(&self, tape: &mut Tape<F>, hidden: Tensor) -> Result<Tensor> {
        let cls = tape.first_token(hidden)?;
        self.pooler_dense(tape, cls)
    }

    /// tanh(W · cls + b) on the [CLS] states (B, C).
    fn pooler_dense<F: Float>(&self, tape: &mut Tape<F>, cls: Tensor) -> Result<Tensor> {
        let p = self
            .pooler
            .as_ref()
            .ok_or_else(|| crate::error::Error::Config("this model has no pooler (pooler.dense.* missing)".into()))?;
        let y = linear(tape, cls, p.w, p.b)?;
        tape.tanh(y)
    }
}

impl Bert {
    /// One vector per sequence (B, C) from the hidden state in the input's layout.
    pub fn sentence_vector<F: Float>(
        &self,
        tape: &mut Tape<F>,
        hidden: Tensor,
        input: &EncoderInput,
        pooling: Pooling,
    ) -> Result<Tensor> {
        match pooling {
            Pooling::Cls => first_tokens(tape, hidden, input),
            Pooling::Mean => mean_pool(tape, hidden, input),
            Pooling::Pooler => {
                let cls = first_tokens(tape, hidden, input)?;
                self.pooler_dense(tape, cls)
            }
        }
    }
}

/// A task's branch in parallel with each encoder layer (PALs, model/pals.rs).
pub trait ParallelBranch<F: Float> {
    /// The branch of layer `layer` on the layer's input x (…, C), C wide, in x's layout.
    fn branch(&self, tape: &mut Tape<F>, layer: usize, x: Tensor, input: &EncoderInput) -> Result<Tensor>;
}

/// Multi-head self-attention's context from queries, keys and values in attention's layout:
/// (B, NH, T, HS) each padded, giving (B, T, C); the (N, C) rows packed (heads are column
/// bands), giving (N, C). Probabilities dropped with `p_attn` (training).
#[allow(clippy::too_many_arguments)]
pub fn attention<F: Float>(
    tape: &mut Tape<F>,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    input: &EncoderInput,
    heads: usize,
    scale: f64,
    p_attn: f64,
) -> Result<Tensor> {
    match &input.layout {
        Layout::Padded { mask, .. } => {
            let scores = tape.matmul(q, k, false, true)?; // (B, NH, T, T)
            let probs = tape.attention_softmax(scores, *mask, scale)?;
            let probs = tape.attention_dropout(probs, p_attn)?;
            let ctx = tape.matmul(probs, v, false, false)?; // (B, NH, T, HS)
            tape.merge_heads(ctx) // (B, T, C)
        }
        Layout::Packed { cu, .. } => tape.varlen_attention(q, k, v, cu, heads, scale, p_attn), // (N, C)
    }
}

/// Each sequence's first ([CLS]) token state (B, C).
pub fn first_tokens<F: Float>(tape: &mut Tape<F>, hidden: Tensor, input: &EncoderInput) -> Result<Tensor> {
    match &input.layout {
        Layout::Padded { .. } => tape.first_token(hidden),
        Layout::Packed { cu, .. } => tape.first_tokens(hidden, cu),
    }
}

/// Each sequence's mean over its real tokens (B, C).
pub fn mean_pool<F: Float>(tape: &mut Tape<F>, hidden: Tensor, input: &EncoderInput) -> Result<Tensor> {
    match &input.layout {
        Layout::Padded { mask, .. } => tape.mean_pool(hidden, *mask),
        Layout::Packed { cu, .. } => tape.mean_pool_packed(hidden, cu),
    }
}

/// Values for a fresh parameter of `kind`.
pub fn init<F: Float>(rng: &mut Rng, dims: &[usize], kind: ParamKind, std: f64) -> Vec<F> {
    let n = dims.iter().product();
    match kind {
        ParamKind::Weight => (0..n).map(|_| F::from_f64(rng.normal() * std)).collect(),
        ParamKind::Bias | ParamKind::NormBias => vec![F::ZERO; n],
        ParamKind::NormGain => vec![F::ONE; n],
    }
}
