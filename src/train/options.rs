//! Everything that defines a fine-tuning run. The defaults are the reference recipe (the PyTorch
//! run of the fine-tuning issue: mean pooling, joint pair encoding, round-robin, batch 16 per
//! task, AdamW lr 1e-4 with weight decay 0.01, 10% warmup then linear decay, dropout 0.1 before
//! each head, max length 128, seed 11711). Saved beside every checkpoint as `train.json`.

use super::heads::HeadKind;
use super::methods::pcgrad::Reduction;
use super::smart::SmartConfig;
use crate::data::cs224n::Task;
use crate::data::user_task::TaskDef;
use crate::device::Precision;
use crate::model::bert::Pooling;
use crate::model::lora::LoraConfig;
use crate::model::pals::PalsConfig;
use crate::optim::Rule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a pair task (Quora, STS) reads its two sentences when --head does not choose its head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PairEncoding {
    /// `[CLS] a [SEP] b [SEP]` → pooled → linear (the `linear` head).
    Joint,
    /// Each sentence alone: Quora linear on [u, v, |u−v|, u·v] (`full`); STS 5·cos(mean a, mean b) (`cosine`).
    Separate,
}

/// Which task each step trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// One batch of every task per step; an epoch ends when the largest task is used up.
    RoundRobin,
    /// One task per step, drawn with probability ∝ its size.
    Proportional,
    /// One task per step, p ∝ Nᵅ with α = 1 − 0.8(e−1)/(E−1) (Stickland & Murray 2019).
    Annealed,
    /// Task after task, each for all epochs, every task evaluated after each stage.
    Sequential,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    Linear,
    Cosine,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The definitions of the user's tasks among `tasks` (--task-def), registered when the
    /// options are read back (train/checkpoint.rs `load_options`).
    #[serde(default)]
    pub task_defs: Vec<TaskDef>,
    pub tasks: Vec<Task>,
    /// Loss weight per task (1 unless given), in `tasks` order.
    pub task_weights: Vec<f64>,
    pub pooling: Pooling,
    pub pair_encoding: PairEncoding,
    /// Per task, in `tasks` order, its head (--head); empty: each task's default
    /// ([`HeadKind::default_for`], which reads `pair_encoding`).
    #[serde(default)]
    pub heads: Vec<HeadKind>,
    /// A GELU hidden layer of this width in every head with a linear layer (0: none).
    pub head_hidden: usize,
    pub schedule: Schedule,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub warmup_ratio: f64,
    pub lr_schedule: LrSchedule,
    /// Global gradient-norm clip (0: none).
    pub grad_clip: f64,
    pub grad_accum: usize,
    pub epochs: usize,
    /// Examples per task per batch (each task's, unless `task_batch_sizes` says otherwise).
    pub batch_size: usize,
    /// Per task, in `tasks` order, its batch size (empty: `batch_size` for every task).
    #[serde(default)]
    pub task_batch_sizes: Vec<usize>,
    pub max_len: usize,
    /// Dropout before each head (the encoder uses the checkpoint's own rates).
    pub dropout: f64,
    pub seed: u64,
    /// Freeze the embeddings and the bottom N encoder layers.
    pub freeze_layers: usize,
    /// Stop after this many optimizer steps (0: run all epochs).
    pub max_steps: usize,
    /// Evaluate every N steps besides each epoch's end (0: only at epoch ends).
    pub eval_every: usize,
    /// Log running losses every N steps.
    pub log_every: usize,
    /// PCGrad surgery across the tasks' gradients of the shared parameters.
    #[serde(default)]
    pub pcgrad: bool,
    #[serde(default)]
    pub pcgrad_reduction: Reduction,
    /// Epochs of each task alone, in order, before the joint schedule (per-task warm start).
    #[serde(default)]
    pub individual_epochs: usize,
    /// GradVac (Wang et al. 2021) across the tasks' gradients of the shared parameters.
    #[serde(default)]
    pub gradvac: bool,
    /// GradVac's decay β of the target cosines' moving average.
    #[serde(default = "default_gradvac_beta")]
    pub gradvac_beta: f64,
    /// LoRA adapters on the encoder, whose own weights are then frozen.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// The matmuls' operands: float32, or rounded to bf16 (tensor cores on a GPU).
    #[serde(default)]
    pub precision: Precision,
    /// Batches padded to their longest sequence, as before packing (issue 16): for comparison.
    /// Packed batches (the default) compute only the real tokens, with the same numbers.
    #[serde(default)]
    pub padded: bool,
    /// SMART's adversarial smoothness regulariser (train/smart.rs), when on.
    #[serde(default)]
    pub smart: Option<SmartConfig>,
    /// PALs (model/pals.rs): per task, projected attention layers beside the encoder's.
    #[serde(default)]
    pub pals: Option<PalsConfig>,
    /// The task parameters' (heads', PALs') peak learning rate, when not `lr` (train/param_groups.rs).
    #[serde(default)]
    pub head_lr: Option<f64>,
    /// No weight decay on biases and LayerNorm weights (Hugging Face Trainer's default).
    #[serde(default)]
    pub no_decay_norm_bias: bool,
    /// The fraction of each task's longest training inputs left out (data/drop_longest.rs).
    #[serde(default)]
    pub drop_longest: f64,
    /// The update rule (--optimizer).
    #[serde(default)]
    pub optimizer: Rule,
    /// QHAdam's ν1, ν2 (--qh-nu).
    #[serde(default = "default_qh_nu")]
    pub qh_nu: [f64; 2],
    /// The tasks whose training examples EDA augments (data/eda.rs; empty: none).
    #[serde(default)]
    pub eda_tasks: Vec<Task>,
    /// EDA's α: SR, RI and RS change max(1, round(α·ℓ)) of ℓ words; RD deletes each with probability α.
    #[serde(default = "default_eda_alpha")]
    pub eda_alpha: f64,
    /// EDA's augmented copies per training example.
    #[serde(default = "default_eda_num")]
    pub eda_num: usize,
    /// EDA's synonym file (`word<TAB>syn1,syn2,…`); without one, no SR or RI.
    #[serde(default)]
    pub eda_synonyms: Option<PathBuf>,
}

fn default_qh_nu() -> [f64; 2] {
    [0.7, 1.0]
}

fn default_eda_alpha() -> f64 {
    0.1
}

fn default_eda_num() -> usize {
    4
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            task_defs: Vec::new(),
            tasks: vec![Task::Sst, Task::Quora, Task::Sts],
            task_weights: vec![1.0; 3],
            pooling: Pooling::Mean,
            pair_encoding: PairEncoding::Joint,
            heads: Vec::new(),
            head_hidden: 0,
            schedule: Schedule::RoundRobin,
            lr: 1e-4,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_ratio: 0.1,
            lr_schedule: LrSchedule::Linear,
            grad_clip: 0.0,
            grad_accum: 1,
            epochs: 1,
            batch_size: 16,
            task_batch_sizes: Vec::new(),
            max_len: 128,
            dropout: 0.1,
            seed: 11711,
            freeze_layers: 0,
            max_steps: 0,
            eval_every: 0,
            log_every: 10,
            pcgrad: false,
            pcgrad_reduction: Reduction::Sum,
            individual_epochs: 0,
            gradvac: false,
            gradvac_beta: default_gradvac_beta(),
            lora: None,
            precision: Precision::F32,
            padded: false,
            smart: None,
            pals: None,
            head_lr: None,
            no_decay_norm_bias: false,
            drop_longest: 0.0,
            optimizer: Rule::Adamw,
            qh_nu: default_qh_nu(),
            eda_tasks: Vec::new(),
            eda_alpha: default_eda_alpha(),
            eda_num: default_eda_num(),
            eda_synonyms: None,
        }
    }
}

fn default_gradvac_beta() -> f64 {
    0.01
}

impl TrainOptions {
    /// Whether a gradient-combining method (train/methods/) keeps each task's gradient apart.
    pub fn combines_gradients(&self) -> bool {
        self.pcgrad || self.gradvac
    }

    /// Each task's batch size, in `tasks` order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        match self.task_batch_sizes.len() == self.tasks.len() {
            true => self.task_batch_sizes.clone(),
            false => vec![self.batch_size; self.tasks.len()],
        }
    }

    /// The largest batch of any task (what bounds a task pass's memory).
    pub fn max_batch(&self) -> usize {
        self.batch_sizes().into_iter().max().unwrap_or(self.batch_size)
    }

    /// The head of `task`: the one --head gave, else the default.
    pub fn head(&self, task: Task) -> HeadKind {
        let given = self.tasks.iter().position(|&t| t == task).and_then(|i| self.heads.get(i));
        given.copied().unwrap_or_else(|| HeadKind::default_for(task, self.pair_encoding == PairEncoding::Separate))
    }

    /// The loss weight of `task`.
    pub fn weight(&self, task: Task) -> f64 {
        self.tasks.iter().position(|&t| t == task).map_or(1.0, |i| self.task_weights.get(i).copied().unwrap_or(1.0))
    }

    /// Checks ranges; the message names the flag.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if self.tasks.is_empty() {
            return bad("--tasks: no task given".into());
        }
        for (i, t) in self.tasks.iter().enumerate() {
            if self.tasks[..i].contains(t) {
                return bad(format!("--tasks: {t} given twice"));
            }
        }
        if self.task_weights.len() != self.tasks.len()
            || self.task_weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
        {
            return bad("--task-weights: one non-negative weight per task".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr {} must be positive", self.lr));
        }
        if !self.qh_nu.iter().all(|v| (0.0..=1.0).contains(v)) {
            return bad(format!("--qh-nu {},{}: each ν lies in [0, 1]", self.qh_nu[0], self.qh_nu[1]));
        }
        if !(0.0..1.0).contains(&self.drop_longest) {
            return bad(format!("--drop-longest {} is outside [0, 1)", self.drop_longest));
        }
        self.validate_eda()?;
        if let Some(h) = self.head_lr
            && !(h > 0.0 && h.is_finite())
        {
            return bad(format!("--head-lr {h} must be positive"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--dropout {} is outside [0, 1)", self.dropout));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!("--warmup-ratio {} is outside [0, 1]", self.warmup_ratio));
        }
        if self.batch_size == 0 || self.grad_accum == 0 || self.epochs == 0 || self.log_every == 0 {
            return bad("--batch-size, --grad-accum, --epochs and --log-every must be at least 1".into());
        }
        if !self.task_batch_sizes.is_empty()
            && (self.task_batch_sizes.len() != self.tasks.len() || self.task_batch_sizes.contains(&0))
        {
            return bad("--batch-size: one size of at least 1 per task".into());
        }
        if !self.heads.is_empty() && self.heads.len() != self.tasks.len() {
            return bad("--head: one head per task".into());
        }
        for &t in &self.tasks {
            self.head(t).check(t)?;
        }
        // [CLS] a [SEP] keeps one token of a sentence; a jointly encoded pair needs
        // [CLS] a [SEP] b [SEP] to keep one token of each.
        let joint_pair = self.tasks.iter().any(|&t| t.is_pair() && !self.head(t).reads_sides());
        let least = if joint_pair { 5 } else { 3 };
        if self.max_len < least {
            let what =
                if joint_pair { "a token of each sentence of a pair ([CLS] a [SEP] b [SEP])" } else { "a sentence" };
            return bad(format!("--max-len {} leaves no room for {what}: at least {least}", self.max_len));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("--betas must lie in [0, 1)".into());
        }
        // NaN compares false both ways: ask for what is valid, so NaN and infinity are refused too.
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad(format!("--grad-clip {} must be a finite number, at least 0 (0: off)", self.grad_clip));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("--weight-decay {} must be a finite number, at least 0", self.weight_decay));
        }
        if self.pcgrad && self.gradvac {
            return bad("--pcgrad and --gradvac: choose one gradient-combining method".into());
        }
        if self.pcgrad && !(2..=8).contains(&self.tasks.len()) {
            return bad(format!("--pcgrad needs 2 to 8 tasks, --tasks gives {}", self.tasks.len()));
        }
        if self.gradvac && !(2..=8).contains(&self.tasks.len()) {
            return bad(format!("--gradvac needs 2 to 8 tasks, --tasks gives {}", self.tasks.len()));
        }
        if !(self.gradvac_beta > 0.0 && self.gradvac_beta <= 1.0) {
            return bad(format!("--gradvac-beta {} is outside (0, 1]", self.gradvac_beta));
        }
        if let Some(pals) = &self.pals {
            pals.validate()?;
        }
        if let Some(smart) = &self.smart {
            smart.validate(self.tasks.len())?;
        }
        if let Some(lora) = &self.lora {
            lora.validate()?;
            if self.freeze_layers > 0 {
                return bad("--freeze-layers and --lora: with LoRA the whole encoder is frozen already".into());
            }
        }
        Ok(())
    }

    /// The EDA flags: α in (0, 1], at least one copy, tasks among --tasks, a readable synonym file.
    fn validate_eda(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::Config(m));
        if !(self.eda_alpha > 0.0 && self.eda_alpha <= 1.0) {
            return bad(format!("--eda-alpha {} is outside (0, 1]", self.eda_alpha));
        }
        for (i, t) in self.eda_tasks.iter().enumerate() {
            if !self.tasks.contains(t) {
                return bad(format!("--eda-tasks: {t} is not in --tasks"));
            }
            if self.eda_tasks[..i].contains(t) {
                return bad(format!("--eda-tasks: {t} given twice"));
            }
        }
        if self.eda_num == 0 && !self.eda_tasks.is_empty() {
            return bad("--eda-num 0: give at least 1 augmented copy per example (or no --eda-tasks)".into());
        }
        if let Some(p) = &self.eda_synonyms {
            // Read in full (and parsed) when the data are augmented; here only whether it opens.
            let opened = std::fs::File::open(p).and_then(|f| f.metadata());
            match opened {
                Ok(m) if m.is_file() => {}
                Ok(_) => return bad(format!("--eda-synonyms {}: not a file", p.display())),
                Err(e) => return bad(format!("--eda-synonyms {}: {e}", p.display())),
            }
        }
        Ok(())
    }
}
