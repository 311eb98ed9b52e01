//! SMART (Jiang et al. 2020): smoothness-inducing adversarial regularisation of a task's loss,
//! with an optional Bregman proximal term against a momentum teacher.
//!
//! For a task batch x with embeddings' output e (one per sequence batch the task encodes:
//! two for a pair read separately), the objective is
//!   L(θ) + λ·ℓ_s(f(e + δ; θ), f(e; θ)) [+ μ·ℓ_s(f(e; θ), f(e; θ̃))]
//! where ℓ_s is the symmetric KL of the outputs for classification (SST's softmax, Quora's
//! two-class sigmoid) and the squared error for regression (STS), each a mean over the batch.
//! δ starts as N(0, σ²) noise and takes K ascent steps δ ← clamp(δ + η·g/‖g‖∞, ±ε), g = ∂ℓ_s/∂δ
//! with the clean outputs held fixed and ‖g‖∞ per token row (the paper's Algorithm 1), or, with
//! `SmartNorm::Normalize`, δ ← (δ + η·g)/(‖δ + η·g‖∞ + ε) as the reference implementations
//! (MT-DNN, the `smart-pytorch` package the CS224N reports use) do: there each token's δ has an
//! ∞-norm of 1, where the paper's ε = 1e-5 keeps ℓ_s below 1e-6 (no measurable effect). The ascent passes read every parameter as a constant (no parameter
//! gradient is computed), and are rewound off the tape; the final δ is a constant of the
//! objective, whose gradient flows into both passes (clean and perturbed) as in the paper's
//! R_s(θ). Every perturbed pass continues the clean pass's dropout streams, so it drops what
//! the clean pass dropped: ℓ_s measures the perturbation alone.
//!
//! The teacher θ̃ (with --smart-bregman) starts as θ, moves as θ̃ ← (1−β)θ + βθ̃ after each
//! optimizer step, runs on the clean pass's dropout masks, and is kept in `last/` for --resume.
//!
//! Cost per task pass: the clean pass (a forward F and a backward B), K ascents (F and an
//! input-only backward, about B/2 with its zeroing), the final perturbed pass (F and B): 2 + K·
//! (F + B/2)/(F + B) times a plain step, 2.67 at K = 1 if B = 2F; this engine's backward is
//! about 1.75F, which makes it 2.68 (the teacher adds F). Measured 2.60–2.73 per round, median
//! 2.65 over five runs (benches/RESULTS.md).

use super::model::{Batch, Embedded, Embeds, MultiTaskModel};
use crate::data::cs224n::{Kind, Task};
use crate::device::{Buffer, Device};
use crate::error::{Error, Result};
use crate::float::Float;
use crate::optim::weighted_sum;
use crate::rng::hash_key;
use crate::store::{Slot, Store};
use crate::tape::Tape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The name of the teacher's values in `last/optimizer.safetensors`.
pub const TEACHER: &str = "smart.teacher";

/// How an ascent step keeps δ small. `--smart` normalizes unless told otherwise; `Default` is
/// what a train.json written before the choice existed meant (projecting), so such runs resume
/// as they began.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmartNorm {
    /// The paper's Algorithm 1: δ ← clamp(δ + η·g/‖g‖∞, ±ε).
    #[default]
    Project,
    /// The reference implementations' (MT-DNN, smart-pytorch): δ ← (δ + η·g) / (‖δ + η·g‖∞ + ε),
    /// so each token's δ has an ∞-norm of 1 and ε only guards the division.
    Normalize,
}

/// SMART's settings (saved in train.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SmartConfig {
    /// λ per task, in --tasks order; 0 leaves a task unregularised (--smart-tasks).
    pub weights: Vec<f64>,
    /// ε: the bound of each element of δ.
    pub eps: f64,
    /// η: the ascent step.
    pub step: f64,
    /// σ: the standard deviation of δ's starting noise.
    pub noise: f64,
    /// K: ascent steps.
    pub steps: usize,
    /// How each ascent step bounds δ.
    #[serde(default)]
    pub norm: SmartNorm,
    /// μ: the weight of the Bregman proximal term (0: none, and no teacher).
    #[serde(default)]
    pub bregman: f64,
    /// β: the teacher's momentum.
    #[serde(default = "default_beta")]
    pub beta: f64,
}

fn default_beta() -> f64 {
    0.99
}

impl SmartConfig {
    /// The paper's defaults on every task: λ 1, ε 1e-5, η 1e-3, σ 1e-5, K 1, projecting, no
    /// Bregman term (the command line normalizes instead, see `SmartNorm`).
    pub fn new(tasks: usize) -> SmartConfig {
        SmartConfig {
            weights: vec![1.0; tasks],
            eps: 1e-5,
            step: 1e-3,
            noise: 1e-5,
            steps: 1,
            norm: SmartNorm::Project,
            bregman: 0.0,
            beta: 0.99,
        }
    }

    pub fn validate(&self, tasks: usize) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.weights.len() != tasks || self.weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return bad("--smart-weight: one finite weight ≥ 0 per task".into());
        }
        if self.weights.iter().all(|&w| w == 0.0) {
            return bad("--smart: every task's weight is 0 (see --smart-tasks, --smart-weight)".into());
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.eps) || !positive(self.step) {
            return bad(format!("--smart-eps {} and --smart-step {} must be positive", self.eps, self.step));
        }
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            return bad(format!("--smart-noise {} must be a finite number ≥ 0", self.noise));
        }
        if !(self.bregman.is_finite() && self.bregman >= 0.0) {
            return bad(format!("--smart-bregman {} must be a finite number ≥ 0", self.bregman));
        }
        if !(0.0..1.0).contains(&self.beta) {
            return bad(format!("--smart-beta {} is outside [0, 1)", self.beta));
        }
        if self.steps > 20 {
            return bad(format!("--smart-steps {}: at most 20 (each costs about two forward passes)", self.steps));
        }
        Ok(())
    }
}

/// One task pass's losses: the task's own, SMART's smoothness term ℓ_s (unweighted), and the
/// objective to take the gradient of.
pub struct Objective {
    pub task_loss: Tensor,
    pub smoothness: Tensor,
    pub total: Tensor,
}

/// SMART during a run: its settings and the teacher.
pub struct Smart {
    pub config: SmartConfig,
    /// θ̃, shaped like the trainable parameter arena (with --smart-bregman).
    teacher: Option<Buffer<f32>>,
}

impl Smart {
    /// SMART for the model in `store`; the teacher (if any) starts as the current parameters.
    pub fn new(config: SmartConfig, store: &mut Store<f32>) -> Result<Smart> {
        let teacher = if config.bregman > 0.0 {
            let n = store.num_trainable();
            let values = store.params_and_grads_mut().0.read(0..n)?;
            let mut t = Buffer::new(&store.device);
            t.grow_to(n)?;
            t.write(0, &values)?;
            Some(t)
        } else {
            None
        };
        Ok(Smart { config, teacher })
    }

    /// λ of task `t` (0: SMART leaves it alone).
    pub fn weight(&self, t: usize) -> f64 {
        self.config.weights.get(t).copied().unwrap_or(0.0)
    }

    /// The objective of task batch `batch` (task index `t`), recorded on `tape`;
    /// the ascent passes have run (and left the tape) by the time it returns.
    pub fn objective(
        &mut self,
        tape: &mut Tape<f32>,
        model: &MultiTaskModel,
        batch: &Batch,
        t: usize,
    ) -> Result<Objective> {
        let c = &self.config;
        let first_stream = tape.stream();
        let mut kept = Vec::new();
        let clean = model.forward_with(tape, batch, &mut Embeds::Keep(&mut kept))?;
        let task_loss = model.loss(tape, batch, clean)?;
        let deltas = noise(tape, &kept, c.noise)?;
        let frozen = model.detached();
        // The ascent passes read the embeddings' output as a constant: δ is all they differentiate.
        let constant: Vec<Embedded> = kept.iter().map(|k| Embedded { x: k.x.detached(), ..k.clone() }).collect();
        for _ in 0..c.steps {
            let mark = tape.mark();
            let out = frozen.forward_with(tape, batch, &mut Embeds::Perturbed(&constant, &deltas))?;
            let l = smoothness(tape, batch.task, out, clean.detached())?;
            tape.backward_since(mark, l, &deltas)?;
            for &d in &deltas {
                ascend(&mut tape.store, d, c.norm, c.step, c.eps)?;
            }
            tape.rewind(mark);
        }
        let fixed: Vec<Tensor> = deltas.iter().map(|d| d.detached()).collect();
        let out = model.forward_with(tape, batch, &mut Embeds::Perturbed(&kept, &fixed))?;
        let smooth = smoothness(tape, batch.task, out, clean)?;
        let weighted = tape.scale(smooth, self.weight(t))?;
        let mut total = tape.add(task_loss, weighted)?;
        if let Some(teacher) = &mut self.teacher {
            // The teacher's outputs on the clean pass's masks (its streams start where that one's did).
            tape.store.swap_params(teacher)?;
            tape.set_stream(first_stream);
            let taught = frozen.forward_with(tape, batch, &mut Embeds::Plain);
            tape.store.swap_params(teacher)?;
            let proximal = smoothness(tape, batch.task, clean, taught?)?;
            let proximal = tape.scale(proximal, c.bregman)?;
            total = tape.add(total, proximal)?;
        }
        Ok(Objective { task_loss, smoothness: smooth, total })
    }

    /// After an optimizer step: θ̃ ← (1−β)θ + βθ̃.
    pub fn after_step(&mut self, store: &mut Store<f32>) -> Result<()> {
        let Some(teacher) = &mut self.teacher else { return Ok(()) };
        let device = store.device.clone();
        let n = teacher.len();
        let params = &*store.params_and_grads_mut().0;
        weighted_sum(&device, teacher, &[params], &[self.config.beta, 1.0 - self.config.beta], 0..n)
    }

    /// The teacher's values to keep in a checkpoint, under [`TEACHER`].
    pub fn state(&self) -> Result<Option<Vec<f32>>> {
        self.teacher.as_ref().map(|t| t.read(0..t.len())).transpose()
    }

    /// Takes the teacher back from a checkpoint's values.
    pub fn restore(&mut self, values: &[f32]) -> Result<()> {
        let Some(teacher) = &mut self.teacher else { return Ok(()) };
        if values.len() != teacher.len() {
            return Err(Error::Config(format!(
                "SMART's teacher has {} values, the model {} trainable ones",
                values.len(),
                teacher.len()
            )));
        }
        teacher.write(0, values)
    }
}

/// ℓ_s(a, b): the symmetric KL of the outputs for classes and Quora's sigmoid, the mean squared
/// difference for a score.
pub fn smoothness<F: Float>(tape: &mut Tape<F>, task: Task, a: Tensor, b: Tensor) -> Result<Tensor> {
    match task.kind() {
        Kind::Classes(_) | Kind::Binary => tape.symmetric_kl(a, b),
        Kind::Regression => {
            let d = tape.sub(a, b)?;
            let zeros = tape.constant(&vec![F::ZERO; d.numel()], d.dims())?;
            tape.mse(d, zeros)
        }
    }
}

/// δ₀ ~ N(0, σ²) for each kept embeddings' output, drawn from the tape's seed: activations that
/// take a gradient (the ascent's).
fn noise(tape: &mut Tape<f32>, kept: &[Embedded], sigma: f64) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(kept.len());
    for (i, k) in kept.iter().enumerate() {
        let d = tape.store.alloc_act(k.x.shape, true)?;
        let key = hash_key(tape.seed(), NOISE_STREAM + i as u64);
        fill_noise(&mut tape.store, d, key, sigma)?;
        out.push(d);
    }
    Ok(out)
}

/// The random stream of the noise on a task pass's i-th embeddings' output is NOISE_STREAM + i,
/// far from the dropout streams (1, 2, … in call order).
const NOISE_STREAM: u64 = 0x5a_a27 << 40;

/// `delta` ← σ·z, z standard normal: pairs of [`crate::rng::hash_normal_pair`] keyed `key` (a pure function
/// of key and index, so the CPU and the device draw the same values bit for bit).
pub fn fill_noise<F: Float>(store: &mut Store<F>, delta: Tensor, key: u64, sigma: f64) -> Result<()> {
    match store.device {
        Device::Cuda(_) => {
            let (dev, [], [], [d]) = store.cuda_io([], [], [Slot::Val(delta)])?;
            cuda::noise(&dev, d, delta.numel(), key, sigma)
        }
        Device::Cpu => {
            let ([], [d]) = store.cpu_views([], [Slot::Val(delta)])?;
            cpu::noise(d, key, sigma);
            Ok(())
        }
    }
}

/// One ascent step on δ with g = δ's gradient, per row (the last dimension): under `Project`
/// δ ← clamp(δ + η·g/‖g‖∞, ±ε), under `Normalize` δ ← (δ + η·g) / (‖δ + η·g‖∞ + ε).
pub fn ascend<F: Float>(store: &mut Store<F>, delta: Tensor, norm: SmartNorm, eta: f64, eps: f64) -> Result<()> {
    let c = delta.shape.last();
    let normalize = norm == SmartNorm::Normalize;
    match store.device {
        Device::Cuda(_) => {
            let (dev, [], [g], [d]) = store.cuda_io([], [Slot::Grad(delta)], [Slot::Val(delta)])?;
            cuda::ascent(&dev, d, g, delta.shape.rows(), c, normalize, eta as f32, eps as f32)
        }
        Device::Cpu => {
            let ([g], [d]) = store.cpu_views([Slot::Grad(delta)], [Slot::Val(delta)])?;
            cpu::ascent(d, g, c, normalize, F::from_f64(eta), F::from_f64(eps));
            Ok(())
        }
    }
}

/// Launcher of kernels/smart.cu.
pub mod cuda {
    use crate::device::cuda::{Arg, Cuda};
    use crate::error::Result;

    /// delta, grad (rows, C): one ascent step per row (see [`super::ascend`]); one block of 128
    /// per row.
    #[allow(clippy::too_many_arguments)]
    pub fn ascent(
        dev: &Cuda,
        delta: u64,
        grad: u64,
        rows: usize,
        c: usize,
        normalize: bool,
        eta: f32,
        eps: f32,
    ) -> Result<()> {
        let args = [
            Arg::Ptr(delta),
            Arg::Ptr(grad),
            Arg::U64(rows as u64),
            Arg::U64(c as u64),
            Arg::U32(normalize as u32),
            Arg::F32(eta),
            Arg::F32(eps),
        ];
        dev.launch("smart.cu", "smart_ascent", (rows.clamp(1, 65535) as u32, 1, 1), (128, 1, 1), 0, &args)
    }

    /// delta (n): σ times standard normal draws keyed `key`; one thread per pair.
    pub fn noise(dev: &Cuda, delta: u64, n: usize, key: u64, sigma: f64) -> Result<()> {
        let args = [Arg::Ptr(delta), Arg::U64(n as u64), Arg::U64(key), Arg::F64(sigma)];
        let blocks = n.div_ceil(2 * 256).clamp(1, 65535) as u32;
        dev.launch("smart.cu", "smart_noise", (blocks, 1, 1), (256, 1, 1), 0, &args)
    }
}

pub mod cpu {
    use crate::float::Float;
    use crate::rng::hash_normal_pair;
    use rayon::prelude::*;

    /// Values per parallel chunk of [`noise`] (even: a chunk holds whole pairs).
    const CHUNK: usize = 1 << 14;

    /// out ← σ·z: element 2p and 2p + 1 are pair p of `hash_normal_pair(key, p)`.
    pub fn noise<F: Float>(out: &mut [F], key: u64, sigma: f64) {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let first = (c * CHUNK / 2) as u64;
            for (p, two) in chunk.chunks_mut(2).enumerate() {
                let (a, b) = hash_normal_pair(key, first + p as u64);
                two[0] = F::from_f64(a * sigma);
                if let Some(x) = two.get_mut(1) {
                    *x = F::from_f64(b * sigma);
                }
            }
        });
    }

    /// One ascent step per row of `c` (see [`super::ascend`]). Projecting, a row whose gradient
    /// is zero is only clamped.
    pub fn ascent<F: Float>(delta: &mut [F], grad: &[F], c: usize, normalize: bool, eta: F, eps: F) {
        for (d, g) in delta.chunks_exact_mut(c).zip(grad.chunks_exact(c)) {
            if normalize {
                let m = d.iter().zip(g).fold(F::ZERO, |m, (&x, &gj)| m.max((x + eta * gj).abs()));
                for (x, &gj) in d.iter_mut().zip(g) {
                    *x = (*x + eta * gj) / (m + eps);
                }
                continue;
            }
            let m = g.iter().fold(F::ZERO, |m, &v| m.max(v.abs()));
            for (x, &gj) in d.iter_mut().zip(g) {
                let step = if m > F::ZERO { eta * (gj / m) } else { F::ZERO };
                let v = (*x + step).max(-eps);
                *x = if v > eps { eps } else { v };
            }
        }
    }
}
