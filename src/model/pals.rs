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

/// One layer's attention in d_s: its query, key and value weights (each (d_s, d_s), Hugging
/// Face's (out, in) layout) registered back to back, then their biases, so that the three
/// projections are one (3·d_s, d_s) GEMM.
#[derive(Clone, Copy, Debug)]
pub struct PalLayer {
    pub qkv_w: Tensor, // (3·d_s, d_s)
    pub qkv_b: Tensor, // (3·d_s)
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
            let ws = [p("query.weight"), p("key.weight"), p("value.weight")].map(|n| add(n, &[d, d], Weight));
            let bs = [p("query.bias"), p("key.bias"), p("value.bias")].map(|n| add(n, &[d], Bias));
            let (ws, bs) = (ws.into_iter().collect::<Result<Vec<_>>>()?, bs.into_iter().collect::<Result<Vec<_>>>()?);
            out.push(PalLayer { qkv_w: fused(&ws, &[3 * d, d])?, qkv_b: fused(&bs, &[3 * d])? });
        }
        Ok(TaskPals { enc_w, enc_b, dec_w, dec_b, layers: out, heads: cfg.heads })
    }

    /// The PALs with their parameters read as constants (SMART's ascent passes).
    pub fn detached(&self) -> TaskPals {
        let d = Tensor::detached;
        let layer = |l: &PalLayer| PalLayer { qkv_w: d(l.qkv_w), qkv_b: d(l.qkv_b) };
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
        let qkv = tape.linear(z, l.qkv_w, l.qkv_b)?; // (…, 3·d_s)
        let (d, heads) = (self.enc_w.dims()[0], self.heads);
        // Band i in attention's layout: (B, H, T, d_s/H) padded, the (N, d_s) columns packed.
        let mut band = |i: usize| match input.layout {
            Layout::Padded { .. } => tape.split_heads_cols(qkv, i * d, d, heads),
            Layout::Packed { .. } => tape.columns(qkv, i * d, d),
        };
        let (q, k, v) = (band(0)?, band(1)?, band(2)?);
        let scale = 1.0 / ((d / heads) as f64).sqrt();
        let ctx = attention(tape, q, k, v, input, heads, scale, 0.0)?; // (…, d_s)
        tape.linear(ctx, self.dec_w, self.dec_b) // (…, C)
    }
}

/// The tensors `parts`, registered back to back in one arena, seen as one of shape `dims`.
fn fused(parts: &[Tensor], dims: &[usize]) -> Result<Tensor> {
    let adjacent = parts.windows(2).all(|w| w[0].arena == w[1].arena && w[1].offset == w[0].offset + w[0].numel());
    if !adjacent {
        return Err(Error::Config("PALs: the query, key and value projections are not back to back".into()));
    }
    let shape = crate::tensor::Shape::new(dims)?;
    if shape.numel() != parts.iter().map(Tensor::numel).sum::<usize>() {
        return Err(Error::Config(format!("PALs: parts of {} values seen as {shape}", parts.len())));
    }
    Ok(Tensor { shape, ..parts[0] })
}
