//! The multi-task model: one BERT encoder shared by every task, and a head per task
//! (train/heads.rs chooses it, train/task_head.rs computes it). The encoder reads each input as
//! the task's head asks: one sequence (a pair jointly, `[CLS] a [SEP] b [SEP]`) or each side of
//! a pair alone.

use super::options::TrainOptions;
pub use super::task_head::HeadSource;
use super::task_head::{HeadSettings, States, TaskHead};
use crate::data::cs224n::{Example, Kind, Label, Prediction, Task};
use crate::data::{Encoded, Input, Tokenizer};
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::model::bert::{Bert, ParallelBranch, ParamKind, init};
use crate::model::input::{EncoderInput, Packing};
use crate::model::lora::{self, Lora};
use crate::model::pals::TaskPals;
use crate::model::safetensors::SafeTensors;
use crate::rng::Rng;
use crate::store::Store;
use crate::tape::Tape;
use crate::tensor::Tensor;

pub struct MultiTaskModel {
    pub bert: Bert,
    pub tasks: Vec<Task>,
    pub heads: Vec<TaskHead>,
    /// Each task's PALs (--pals), in `tasks` order.
    pub pals: Vec<Option<TaskPals>>,
    pub opts: TrainOptions,
}

/// One batch of one task, tokenized.
pub struct Batch {
    pub task: Task,
    /// Single sentences, or joint pairs.
    pub joint: Option<Encoded>,
    /// Each side of a pair, read separately.
    pub sides: Option<(Encoded, Encoded)>,
    pub labels: Vec<Label>,
    pub ids: Vec<String>,
}

/// One sequence batch's embeddings output, kept by a forward for perturbed passes over it.
#[derive(Clone, Debug)]
pub struct Embedded {
    pub input: EncoderInput,
    /// (N, C) packed or (B, T, C) padded.
    pub x: Tensor,
    /// The dropout stream after the embeddings: a perturbed pass continues from it, so that its
    /// encoder layers and head drop what the kept pass dropped.
    pub stream: u64,
}

/// What a forward's encoder layers read (SMART perturbs the embeddings' output, x + δ).
pub enum Embeds<'a> {
    /// The embeddings' output.
    Plain,
    /// The embeddings' output, kept (one entry per sequence batch encoded, in order).
    Keep(&'a mut Vec<Embedded>),
    /// The kept outputs plus one perturbation each, on the kept dropout streams.
    Perturbed(&'a [Embedded], &'a [Tensor]),
}

impl MultiTaskModel {
    /// The model of `opts` on `store` (which takes the run's matmul precision), registered in
    /// this order (PCGrad relies on it): the encoder
    /// from `ckpt` (frozen under LoRA, below --freeze-layers, or when not `training`), the LoRA
    /// adapters if asked, the heads. Adapters and heads come from `trained` (a saved run) when
    /// given, else are drawn from the run's seed.
    pub fn build(
        store: &mut Store<f32>,
        ckpt: &Checkpoint,
        trained: Option<&SafeTensors>,
        opts: &TrainOptions,
        training: bool,
    ) -> Result<MultiTaskModel> {
        store.precision = opts.precision;
        let layers = ckpt.config.num_hidden_layers;
        let frozen = opts.freeze_layers;
        if frozen > layers {
            return Err(Error::Config(format!("--freeze-layers {frozen}: the model has {layers} layers")));
        }
        let trainable = |name: &str| {
            if !training || opts.lora.is_some() {
                return false;
            }
            if frozen == 0 {
                return true;
            }
            if name.starts_with("embeddings.") {
                return false;
            }
            let layer = name
                .strip_prefix("encoder.layer.")
                .and_then(|r| r.split('.').next())
                .and_then(|l| l.parse::<usize>().ok());
            layer.is_none_or(|l| l >= frozen)
        };
        let mut bert = ckpt.load_bert(store, &trainable)?;
        if let Some(cfg) = &opts.lora {
            let mut rng = Rng::new(crate::rng::mix64(opts.seed ^ 0x1042a));
            let mut init = lora::init_source::<f32>(&mut rng);
            let mut saved =
                |name: &str, _: &[usize]| -> Result<Vec<f32>> { trained.expect("saved adapters").f32(name) };
            let source: &mut lora::AdapterSource<'_, f32> = if trained.is_some() { &mut saved } else { &mut init };
            bert.lora = Some(Lora::register(store, &bert.target_dims(), cfg, training, source)?);
        }
        let mut rng = Rng::new(crate::rng::mix64(opts.seed ^ 0x4ead));
        let heads = match trained {
            Some(st) => HeadSource::Saved(st),
            None => HeadSource::Init(&mut rng),
        };
        MultiTaskModel::new(bert, store, opts, heads)
    }

    /// Registers the heads of `opts.tasks` on top of `bert`.
    pub fn new(
        bert: Bert,
        store: &mut Store<f32>,
        opts: &TrainOptions,
        mut source: HeadSource<'_>,
    ) -> Result<MultiTaskModel> {
        let c = bert.config.hidden_size;
        let mut heads = Vec::new();
        for &task in &opts.tasks {
            heads.push(TaskHead::register(store, &mut source, task, opts.head(task), c, opts.head_hidden)?);
        }
        // After every head: the heads draw their initial values as before PALs existed.
        let mut pals = Vec::new();
        for &task in &opts.tasks {
            let Some(cfg) = &opts.pals else {
                pals.push(None);
                continue;
            };
            let mut values = |name: &str, dims: &[usize], kind: ParamKind| -> Result<Vec<f32>> {
                match &mut source {
                    HeadSource::Init(rng) => Ok(init(rng, dims, kind, 0.02)),
                    HeadSource::Saved(st) => {
                        let v = st.f32(name)?;
                        if v.len() != dims.iter().product::<usize>() {
                            return Err(Error::Config(format!(
                                "{name}: saved PALs have the wrong size for these options"
                            )));
                        }
                        Ok(v)
                    }
                }
            };
            let prefix = format!("head.{}.pals", task.name());
            pals.push(Some(TaskPals::register(store, &prefix, c, bert.layers.len(), cfg, &mut values)?));
        }
        Ok(MultiTaskModel { bert, tasks: opts.tasks.clone(), heads, pals, opts: opts.clone() })
    }

    fn task_index(&self, task: Task) -> Result<usize> {
        self.tasks.iter().position(|&t| t == task).ok_or_else(|| Error::Config(format!("the model has no {task} head")))
    }

    /// Tokenizes examples into a batch for `task` (labels kept when present).
    pub fn batch(&self, tok: &mut Tokenizer, task: Task, examples: &[&Example]) -> Result<Batch> {
        let max_len = self.opts.max_len;
        let (joint, sides) = if task.is_pair() && self.opts.head(task).reads_sides() {
            let a: Vec<Input> = examples.iter().map(|e| Input::Single(&e.a)).collect();
            let b: Vec<Input> = examples.iter().map(|e| Input::Single(e.b.as_deref().unwrap_or(""))).collect();
            (None, Some((tok.encode(&a, max_len)?, tok.encode(&b, max_len)?)))
        } else {
            let x: Vec<Input> = examples.iter().map(|e| e.input()).collect();
            (Some(tok.encode(&x, max_len)?), None)
        };
        let labels = examples.iter().filter_map(|e| e.label).collect();
        let ids = examples.iter().map(|e| e.id.clone()).collect();
        Ok(Batch { task, joint, sides, labels, ids })
    }

    /// The last hidden state of the `i`-th sequence batch the forward encodes (`e`), in the run's
    /// layout (packed unless --padded), with its input; `embeds` says what the encoder layers
    /// read: the embeddings' output, kept or not, or a kept one plus a perturbation; `pals`, the
    /// task's PALs beside each layer.
    fn encode(
        &self,
        tape: &mut Tape<f32>,
        e: &Encoded,
        embeds: &mut Embeds<'_>,
        i: usize,
        pals: Option<&TaskPals>,
    ) -> Result<(Tensor, EncoderInput)> {
        let (x, input) = match embeds {
            Embeds::Perturbed(kept, deltas) => {
                let (k, delta) = kept.get(i).zip(deltas.get(i)).ok_or_else(|| {
                    Error::Config(format!("a perturbed pass encodes sequence batch {i}, {} were kept", kept.len()))
                })?;
                tape.set_stream(k.stream);
                (tape.add(k.x, *delta)?, k.input.clone())
            }
            Embeds::Plain | Embeds::Keep(_) => {
                let input = EncoderInput::new(tape, e, Packing::new(self.opts.padded))?;
                let x = self.bert.embed(tape, &input)?;
                if let Embeds::Keep(kept) = embeds {
                    kept.push(Embedded { input: input.clone(), x, stream: tape.stream() });
                }
                (x, input)
            }
        };
        let branch = pals.map(|p| p as &dyn ParallelBranch<f32>);
        Ok((self.bert.layers_with(tape, x, &input, self.bert.layers.len(), branch)?, input))
    }

    /// The task's outputs: logits (B, K) for classes, logits (B, 1) for Quora, scores for STS.
    pub fn forward(&self, tape: &mut Tape<f32>, b: &Batch) -> Result<Tensor> {
        self.forward_with(tape, b, &mut Embeds::Plain)
    }

    /// [`MultiTaskModel::forward`] with the embeddings' outputs kept or perturbed (SMART).
    pub fn forward_with(&self, tape: &mut Tape<f32>, b: &Batch, embeds: &mut Embeds<'_>) -> Result<Tensor> {
        let t = self.task_index(b.task)?;
        let (head, pals) = (self.heads[t], self.pals.get(t).and_then(|p| p.as_ref()));
        let settings = HeadSettings { pooling: self.opts.pooling, dropout: self.opts.dropout };
        match (&b.joint, &b.sides) {
            (Some(e), _) => {
                let (h, input) = self.encode(tape, e, embeds, 0, pals)?;
                head.forward(tape, &self.bert, settings, States::Whole(h, &input))
            }
            (None, Some((ea, eb))) => {
                let (ha, ia) = self.encode(tape, ea, embeds, 0, pals)?;
                let (hb, ib) = self.encode(tape, eb, embeds, 1, pals)?;
                head.forward(tape, &self.bert, settings, States::Sides([(ha, &ia), (hb, &ib)]))
            }
            (None, None) => Err(Error::Config("an empty batch".into())),
        }
    }

    /// The same model with every parameter read as a constant: its passes take the gradient of
    /// their inputs only (SMART's ascent pass).
    pub fn detached(&self) -> MultiTaskModel {
        MultiTaskModel {
            bert: self.bert.detached(),
            tasks: self.tasks.clone(),
            heads: self.heads.iter().map(TaskHead::detached).collect(),
            pals: self.pals.iter().map(|p| p.as_ref().map(TaskPals::detached)).collect(),
            opts: self.opts.clone(),
        }
    }

    /// The task's loss on `outputs` (mean over the batch).
    pub fn loss(&self, tape: &mut Tape<f32>, b: &Batch, outputs: Tensor) -> Result<Tensor> {
        if b.labels.len() != b.ids.len() {
            return Err(Error::Config(format!("{}: a batch without labels cannot be trained on", b.task)));
        }
        let t = self.task_index(b.task)?;
        self.heads[t].loss(tape, &b.labels, outputs)
    }

    /// Predictions from output values (as read from the tape).
    pub fn predictions(task: Task, outputs: &[f32], batch: usize) -> Vec<Prediction> {
        match task.kind() {
            Kind::Classes(k) => outputs
                .chunks_exact(k as usize)
                .map(|row| {
                    let best = row.iter().enumerate().fold(0, |b, (i, &v)| if v > row[b] { i } else { b });
                    Prediction::Class(best as u32)
                })
                .collect(),
            Kind::Binary => outputs[..batch].iter().map(|&x| Prediction::Binary(x > 0.0)).collect(),
            // The float32 score's shortest decimal, as the starter's numpy float32 prints it (3.2, not 3.200000047683716).
            Kind::Regression => {
                outputs[..batch].iter().map(|&x| Prediction::Score(x.to_string().parse().unwrap_or(x as f64))).collect()
            }
        }
    }
}
