//! PALs (Stickland & Murray 2019, "BERT and PALs"): per task, a projected attention layer in
//! parallel with each encoder layer, TS(h) = V_D · MHA(V_E · h), added to the layer's last
//! residual sum: LN(FFN(a) + a + TS(h)), h the layer's input. V_E (d_s, C) and V_D (C, d_s) are
//! shared across the layers (the paper's sharing); each layer has its own attention (query, key
//! and value projections in d_s, `heads` heads, no output projection: V_D is one). Biases on every
//! projection. Weights start as N(0, 0.02), as BERT's, biases at 0. No dropout inside the PALs:
//! they draw no dropout stream, so the encoder's masks are the same with PALs as without.
//!
//! A task's PALs are task parameters like its head, registered after the shared ones and named
//! `head.{task}.pals.*`: methods never combine them, checkpoints keep them beside the heads, and
//! a base-model loader passes over them as it does over heads.

use super::bert::{ParallelBranch, ParamKind, ParamSource, attention};
use super::input::{EncoderInput, Layout};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::store::Store;
use crate::tape::Tape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// `--pals` settings (saved in train.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PalsConfig {
    /// d_s, the projected width; 0: the paper's, scaled to the model ([`PalsConfig::dim_for`]).
    pub dim: usize,
    /// Attention heads in d_s.
    pub heads: usize,
}

impl Default for PalsConfig {
    /// The paper's 12 heads and its d_s for the model at hand.
    fn default() -> Self {
        PalsConfig { dim: 0, heads: 12 }
    }
}

impl PalsConfig {
    /// d_s for a model `hidden` wide: the given one, or the paper's 204 for BERT-base's 768
    /// scaled to `hidden` and rounded to a multiple of the heads (108 for MiniLM's 384).
    pub fn dim_for(&self, hidden: usize) -> usize {
        if self.dim > 0 {
            return self.dim;
        }
        let h = self.heads.max(1);
        ((hidden as f64 * 204.0 / 768.0 / h as f64).round() as usize).max(1) * h
    }

    pub fn validate(&self) -> Result<()> {
        if self.heads == 0 || !self.dim.is_multiple_of(self.heads) {
            return Err(Error::Config(format!(
                "--pals-dim {} must be a positive multiple of --pals-heads {}",
                self.dim, self.heads
            )));
        }
        Ok(())
    }
}

/// One layer's attention in d_s: weights (d_s, d_s) in Hugging Face's (out, in) layout.
#[derive(Clone, Copy, Debug)]
pub struct PalLayer {
    pub q_w: Tensor,
    pub q_b: Tensor,
    pub k_w: Tensor,
    pub k_b: Tensor,
    pub v_w: Tensor,
    pub v_b: Tensor,
}

/// One task's PALs.
#[derive(Clone, Debug)]
pub struct TaskPals {
    pub enc_w: Tensor, // V_E (d_s, C)
    pub enc_b: Tensor, // (d_s)
    pub dec_w: Tensor, // V_D (C, d_s)
    pub dec_b: Tensor, // (C)
    pub layers: Vec<PalLayer>,
    pub heads: usize,
}

impl TaskPals {
    /// Registers the PALs of `layers` encoder layers of width `c` under `prefix`
    /// (`head.{task}.pals`), trainable, their values from `source`.
    pub fn register<F: Float>(
        store: &mut Store<F>,
        prefix: &str,
        c: usize,
        layers: usize,
        cfg: &PalsConfig,
        source: &mut ParamSource<'_, F>,
    ) -> Result<TaskPals> {
        cfg.validate()?;
        let d = cfg.dim_for(c);
        let mut add = |name: String, dims: &[usize], kind: ParamKind| -> Result<Tensor> {
            let data = source(&name, dims, kind)?;
            store.add_param(&name, dims, &data, true)
        };
        use ParamKind::{Bias, Weight};
        let enc_w = add(format!("{prefix}.encoder.weight"), &[d, c], Weight)?;
        let enc_b = add(format!("{prefix}.encoder.bias"), &[d], Bias)?;
        let dec_w = add(format!("{prefix}.decoder.weight"), &[c, d], Weight)?;
        let dec_b = add(format!("{prefix}.decoder.bias"), &[c], Bias)?;
        let mut out = Vec::with_capacity(layers);
        for l in 0..layers {
            let p = |s: &str| format!("{prefix}.layer.{l}.{s}");
            out.push(PalLayer {
                q_w: add(p("query.weight"), &[d, d], Weight)?,
                q_b: add(p("query.bias"), &[d], Bias)?,
                k_w: add(p("key.weight"), &[d, d], Weight)?,
                k_b: add(p("key.bias"), &[d], Bias)?,
                v_w: add(p("value.weight"), &[d, d], Weight)?,
                v_b: add(p("value.bias"), &[d], Bias)?,
            });
        }
        Ok(TaskPals { enc_w, enc_b, dec_w, dec_b, layers: out, heads: cfg.heads })
    }

    /// The PALs with their parameters read as constants (SMART's ascent passes).
    pub fn detached(&self) -> TaskPals {
        let d = Tensor::detached;
        let layer = |l: &PalLayer| PalLayer {
            q_w: d(l.q_w),
            q_b: d(l.q_b),
            k_w: d(l.k_w),
            k_b: d(l.k_b),
            v_w: d(l.v_w),
            v_b: d(l.v_b),
        };
        TaskPals {
            enc_w: d(self.enc_w),
            enc_b: d(self.enc_b),
            dec_w: d(self.dec_w),
            dec_b: d(self.dec_b),
            layers: self.layers.iter().map(layer).collect(),
            ..*self
        }
    }
}

impl<F: Float> ParallelBranch<F> for TaskPals {
    fn branch(&self, tape: &mut Tape<F>, layer: usize, x: Tensor, input: &EncoderInput) -> Result<Tensor> {
        let l = self
            .layers
            .get(layer)
            .ok_or_else(|| Error::Config(format!("PALs for {} layers asked for layer {layer}", self.layers.len())))?;
        let z = tape.linear(x, self.enc_w, self.enc_b)?; // (…, d_s)
        let heads = self.heads;
        let to_heads = |tape: &mut Tape<F>, y: Tensor| match input.layout {
            Layout::Padded { .. } => tape.split_heads(y, heads), // (B, H, T, d_s/H)
            Layout::Packed { .. } => Ok(y),
        };
        let q = tape.linear(z, l.q_w, l.q_b)?;
        let q = to_heads(tape, q)?;
        let k = tape.linear(z, l.k_w, l.k_b)?;
        let k = to_heads(tape, k)?;
        let v = tape.linear(z, l.v_w, l.v_b)?;
        let v = to_heads(tape, v)?;
        let scale = 1.0 / ((self.enc_w.dims()[0] / heads) as f64).sqrt();
        let ctx = attention(tape, q, k, v, input, heads, scale, 0.0)?; // (…, d_s)
        tape.linear(ctx, self.dec_w, self.dec_b) // (…, C)
    }
}
