//! `engine pretrain --mlm`: further masked-language-model pre-training of a checkpoint's encoder
//! (BERT's objective, `data::masking`) on the tasks' own training sentences or the lines of a text
//! file, so that `engine finetune --model OUT` starts from an encoder that has read them.
//!
//! Each sentence is one sequence ([CLS] s [SEP]; a pair's sides each on their own), tokenized
//! once up front. A step takes a batch of sentences (reshuffled every pass, from the seed),
//! corrupts them (a draw per sentence and epoch), runs the encoder on the packed batch, and the
//! masked-LM head (`model::mlm`) on the chosen positions' rows only; AdamW at the linear-decay
//! schedule after a warmup, as finetune's. The pooler, which the objective does not read, stays
//! frozen and is written back unchanged.
//!
//! The output folder, written atomically after every epoch: model.safetensors (the encoder under
//! the names the input used, the pooler, and the head as `cls.predictions.*`), the input's
//! config.json and tokenizer files, and pretrain.json (options, losses, steps).

use super::checkpoint::{MODEL_FILE, copy_model_files, io, pt_metadata};
use super::loss_meter::LossMeter;
use super::options::{LrSchedule, TrainOptions};
use super::param_groups::is_norm_or_bias;
use super::report::Progress;
use super::schedule::{batch_indices, batches_per_pass, lr_factor};
use super::swap::write_folder;
use crate::data::cs224n::{self, Split, Task};
use crate::data::masking::{Masking, sequence_rng};
use crate::data::{Encoded, Input, Tokenizer};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::model::input::EncoderInput;
use crate::model::mlm::{HeadOrigin, MlmHead};
use crate::model::safetensors::{self, NamedTensor};
use crate::optim::{Group, Optimizer, OptimizerConfig};
use crate::rng::mix64;
use crate::store::Store;
use crate::tape::Tape;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What a pretraining run reads its sentences from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corpus {
    /// Every training sentence of the tasks (both sides of a pair, each on its own), from the
    /// CS224N training files under `data_dir`.
    Tasks { tasks: Vec<Task>, data_dir: PathBuf },
    /// The non-blank lines of a text file.
    Text(PathBuf),
}

/// The options of a run, saved in pretrain.json. The defaults are the CLI's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PretrainOptions {
    pub epochs: usize,
    /// Sentences per batch.
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    /// No weight decay on biases and LayerNorm weights (BERT's and Hugging Face's recipe).
    pub no_decay_norm_bias: bool,
    /// Clip the global gradient norm to this (0: no clipping).
    pub grad_clip: f64,
    pub max_len: usize,
    /// The share of each sequence's maskable tokens the objective chooses.
    pub mask_prob: f64,
    pub seed: u64,
    /// Stop after this many steps (0: all epochs); the schedule spans them.
    pub max_steps: usize,
    pub log_every: usize,
}

impl Default for PretrainOptions {
    fn default() -> Self {
        PretrainOptions {
            epochs: 1,
            batch_size: 32,
            lr: 5e-5,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            no_decay_norm_bias: false,
            grad_clip: 0.0,
            max_len: 128,
            mask_prob: 0.15,
            seed: 11711,
            max_steps: 0,
            log_every: 10,
        }
    }
}

impl PretrainOptions {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("--lr {} must be positive", self.lr));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!("--warmup-ratio {} is outside [0, 1]", self.warmup_ratio));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("--weight-decay {} must be a finite number, at least 0", self.weight_decay));
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad(format!("--grad-clip {} must be a finite number, at least 0 (0: off)", self.grad_clip));
        }
        if !(self.mask_prob > 0.0 && self.mask_prob < 1.0) {
            return bad(format!(
                "--mask-prob {} is outside (0, 1): give the share of tokens to mask, e.g. 0.15",
                self.mask_prob
            ));
        }
        if self.batch_size == 0 || self.epochs == 0 || self.log_every == 0 {
            return bad("--batch-size, --epochs and --log-every must be at least 1".into());
        }
        if self.max_len < 3 {
            return bad(format!("--max-len {} leaves no room for [CLS] a token [SEP]: at least 3", self.max_len));
        }
        Ok(())
    }
}

pub struct PretrainArgs {
    pub opts: PretrainOptions,
    /// The checkpoint to start from (a Hugging Face BERT folder, or a pretrain's output).
    pub model: PathBuf,
    pub corpus: Corpus,
    pub out: PathBuf,
    pub device: Device,
    pub quiet: bool,
    /// Replace a non-empty `out`; without, such a folder is refused before anything runs.
    pub overwrite: bool,
}

/// What a run reports when it ends.
#[derive(Clone, Debug)]
pub struct PretrainSummary {
    pub steps: usize,
    /// The sentences trained on, and those left out for want of a token to mask.
    pub sentences: usize,
    pub left_out: usize,
    /// Their real tokens ([CLS] and [SEP] included).
    pub tokens: usize,
    /// The mean loss of the last logging window.
    pub final_loss: f64,
    /// (step, mean loss since the previous entry) at every logging step.
    pub losses: Vec<(usize, f64)>,
    pub head: HeadOrigin,
    pub seconds: f64,
}

/// pretrain.json: how the folder's weights came about.
#[derive(Serialize)]
struct Record<'a> {
    objective: &'static str,
    model: &'a Path,
    corpus: &'a Corpus,
    options: &'a PretrainOptions,
    /// Where the masked-LM head started: "checkpoint" or "fresh".
    head: &'static str,
    sentences: usize,
    tokens: usize,
    steps: usize,
    planned_steps: usize,
    epochs_done: usize,
    final_loss: f64,
    losses: &'a [(usize, f64)],
}

/// The corpus's sentences, in file order.
pub fn read_corpus(corpus: &Corpus) -> Result<Vec<String>> {
    let mut out = Vec::new();
    match corpus {
        Corpus::Tasks { tasks, data_dir } => {
            for &task in tasks {
                let path = task.path(data_dir, Split::Train);
                let flag = format!("--tasks {task} (under --data-dir)");
                for e in cs224n::read(task, &path, Split::Train, &flag, false)?.examples {
                    out.push(e.a);
                    out.extend(e.b);
                }
            }
        }
        Corpus::Text(path) => {
            let at = format!("--text {}", path.display());
            let text = std::fs::read(path).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => Error::Data { at: at.clone(), detail: "no such file".into() },
                _ => Error::Io { path: at.clone(), source },
            })?;
            let text = String::from_utf8(text).map_err(|e| Error::Data {
                at: at.clone(),
                detail: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            })?;
            out.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
        }
    }
    Ok(out)
}

/// Each sentence's real token ids ([CLS] s [SEP], truncated to `max_len`).
fn tokenize(tok: &mut Tokenizer, sentences: &[String], max_len: usize) -> Result<Vec<Vec<i32>>> {
    let mut out = Vec::with_capacity(sentences.len());
    for chunk in sentences.chunks(512) {
        let inputs: Vec<Input<'_>> = chunk.iter().map(|s| Input::Single(s)).collect();
        let e = tok.encode(&inputs, max_len)?;
        for b in 0..e.batch {
            let row = b * e.len..(b + 1) * e.len;
            out.push(
                e.ids[row.clone()].iter().zip(&e.mask[row]).filter(|(_, m)| **m != 0).map(|(&id, _)| id).collect(),
            );
        }
    }
    Ok(out)
}

/// Refuses an `out` that exists and is not an empty folder, unless `overwrite`.
pub fn check_out(out: &Path, overwrite: bool) -> Result<()> {
    let empty = match std::fs::read_dir(out) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(_) => false, // a file, or unreadable: not a folder to fill
    };
    if !empty && !overwrite {
        return Err(Error::Config(format!(
            "--out {} exists and is not empty: pass --overwrite to replace it, or choose another --out",
            out.display()
        )));
    }
    Ok(())
}

/// One batch: the corrupted sentences packed on the tape, the packed rows of the chosen
/// positions (M) and their original ids (M).
struct MlmBatch {
    input: EncoderInput,
    rows: Tensor,
    labels: Tensor,
}

fn mlm_batch(
    tape: &mut Tape<f32>,
    seqs: &[Vec<i32>],
    idx: &[usize],
    masking: &Masking,
    (seed, epoch): (u64, usize),
    pad: i32,
) -> Result<MlmBatch> {
    let len = idx.iter().map(|&i| seqs[i].len()).max().unwrap_or(0);
    let b = idx.len();
    let mut e = Encoded { ids: vec![pad; b * len], type_ids: vec![0; b * len], mask: vec![0; b * len], batch: b, len };
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    let mut offset = 0; // the sequence's first row in the packed batch
    for (r, &i) in idx.iter().enumerate() {
        let m = masking.apply(&seqs[i], &mut sequence_rng(seed, epoch, i));
        e.ids[r * len..][..m.ids.len()].copy_from_slice(&m.ids);
        e.mask[r * len..][..m.ids.len()].fill(1);
        rows.extend(m.positions.iter().map(|&p| (offset + p) as i32));
        labels.extend(m.labels);
        offset += m.ids.len();
    }
    let input = EncoderInput::packed(tape, &e)?;
    let (rows, labels) = (tape.ints(&rows, &[rows.len()])?, tape.ints(&labels, &[labels.len()])?);
    Ok(MlmBatch { input, rows, labels })
}

/// The model's parameters as (name, shape, values), each under the name `ckpt` stores it under
/// (the `bert.` prefix and old LayerNorm names kept), new ones (a fresh head) under their own.
fn named_params(store: &Store<f32>, ckpt: &Checkpoint) -> Result<Vec<NamedTensor>> {
    store
        .params()
        .map(|(n, t)| Ok((ckpt.stored_name(n).unwrap_or_else(|| n.to_string()), t.dims().to_vec(), store.read(t)?)))
        .collect()
}

/// Pretrains; see the module doc.
pub fn pretrain(args: &PretrainArgs) -> Result<PretrainSummary> {
    let started = Instant::now();
    let opts = &args.opts;
    opts.validate()?;
    check_out(&args.out, args.overwrite)?;
    if let Corpus::Tasks { tasks, .. } = &args.corpus {
        if tasks.is_empty() {
            return Err(Error::Config("--tasks: no task given".into()));
        }
        if let Some((_, t)) = tasks.iter().enumerate().find(|(i, t)| tasks[..*i].contains(t)) {
            return Err(Error::Config(format!("--tasks: {t} given twice")));
        }
    }
    let ckpt = Checkpoint::open(&args.model)?;
    let config = &ckpt.config;
    if opts.max_len > config.max_position_embeddings {
        return Err(Error::Config(format!(
            "--max-len {} exceeds the checkpoint's {} positions (max_position_embeddings in {})",
            opts.max_len,
            config.max_position_embeddings,
            args.model.join("config.json").display()
        )));
    }
    // The encoder's part of a fine-tuning pass of one single-sentence task at this batch and
    // length, which is what a pass here needs besides its small (M, V) logits.
    let sized = TrainOptions {
        tasks: vec![Task::Sst],
        task_weights: vec![1.0],
        batch_size: opts.batch_size,
        max_len: opts.max_len,
        ..TrainOptions::default()
    };
    super::memory::check_fits(&sized, config, &args.device)?;
    let mut tok = Tokenizer::from_dir(&args.model)?;
    let id = |t: &str| tok.token_id(t);
    let mask_id = id("[MASK]").ok_or_else(|| {
        Error::Config(format!(
            "{}: the tokenizer has no [MASK] token, which masked-LM pretraining needs",
            args.model.display()
        ))
    })?;
    let pad = id("[PAD]").unwrap_or(0);
    let special: Vec<i32> = ["[CLS]", "[SEP]", "[PAD]"].iter().filter_map(|t| id(t)).collect();
    let masking = Masking::new(opts.mask_prob, mask_id, config.vocab_size, special)?;

    let sentences = read_corpus(&args.corpus)?;
    let mut seqs = tokenize(&mut tok, &sentences, opts.max_len)?;
    let read = seqs.len();
    // A sequence of special tokens alone ([CLS] [SEP]) has nothing to predict.
    seqs.retain(|s| s.iter().any(|&t| masking.maskable(t)));
    let left_out = read - seqs.len();
    if seqs.is_empty() {
        let from = match &args.corpus {
            Corpus::Text(p) => format!("--text {}", p.display()),
            Corpus::Tasks { tasks, data_dir } => format!(
                "the training files of {} under {}",
                tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
                data_dir.display()
            ),
        };
        return Err(Error::Config(format!("empty corpus: {from} holds no sentence with a token to mask")));
    }
    let tokens: usize = seqs.iter().map(Vec::len).sum();

    let mut tape = Tape::<f32>::new(args.device.clone());
    let bert = ckpt.load_bert(&mut tape.store, &|name| !name.starts_with("pooler."))?;
    let (head, origin) = MlmHead::load(&mut tape.store, &ckpt, mix64(opts.seed ^ 0x6d1e_4ead))?;
    let decay = |name: &str| if opts.no_decay_norm_bias && is_norm_or_bias(name) { 0.0 } else { opts.weight_decay };
    let groups = Group::runs(tape.store.trainable().map(|(n, t)| (t.offset, t.numel(), 1.0, decay(n))));
    let adam = OptimizerConfig { weight_decay: opts.weight_decay, ..OptimizerConfig::default() };
    let mut opt = Optimizer::with_groups(&tape.store, adam, groups)?;

    let per_epoch = batches_per_pass(seqs.len(), opts.batch_size);
    let planned = per_epoch * opts.epochs;
    let total = if opts.max_steps > 0 { opts.max_steps } else { planned };
    let warmup = (opts.warmup_ratio * total as f64).round() as usize;
    let progress = Progress::new(total, 0, args.quiet, opts.log_every);
    let corpus_name = match &args.corpus {
        Corpus::Tasks { tasks, .. } => tasks.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        Corpus::Text(p) => p.display().to_string(),
    };
    progress.note(&format!(
        "pretrain --mlm: {} sentences of {corpus_name} ({tokens} tokens{}) on {:?}, {total} steps ({per_epoch} per epoch), \
         {} trainable parameters; masked-LM head {}",
        seqs.len(),
        if left_out > 0 { format!(", {left_out} without a token to mask left out") } else { String::new() },
        args.device,
        tape.store.num_trainable(),
        match origin {
            HeadOrigin::Checkpoint => "from the checkpoint",
            HeadOrigin::Fresh => "initialised (the checkpoint has none)",
        }
    ));

    let mut meter = LossMeter::new(&tape.store.device, 1)?;
    let (mut losses, mut shown, mut logged) = (Vec::new(), Vec::new(), 0);
    let mut final_loss = f64::NAN;
    tape.set_training(true);
    for step in 0..total {
        let epoch = step / per_epoch;
        let idx = batch_indices(opts.seed, 0, seqs.len(), opts.batch_size, step);
        tape.reset();
        tape.set_seed(mix64(opts.seed ^ mix64(step as u64) ^ 0x6d6c_6d00));
        let batch = mlm_batch(&mut tape, &seqs, &idx, &masking, (opts.seed, epoch), pad)?;
        let hidden = bert.encode(&mut tape, &batch.input, bert.layers.len())?; // (N, C)
        let loss = head.loss(&mut tape, &bert, hidden, batch.rows, batch.labels)?;
        tape.store.zero_grads()?;
        tape.backward(loss)?;
        let lr = opts.lr * lr_factor(LrSchedule::Linear, step, warmup, total);
        opt.update_clipped(&mut tape.store, lr, opts.grad_clip)?;
        meter.add(&tape.store, loss, 0)?;
        let done = step + 1;
        let epoch_end = done.is_multiple_of(per_epoch) || done == total;
        if done.is_multiple_of(opts.log_every) || epoch_end {
            let mean = meter.take()?[0].unwrap_or(f64::NAN);
            if !mean.is_finite() {
                return Err(Error::Config(format!(
                    "the masked-LM loss became {mean} in steps {}..={done}: lower --lr or set --grad-clip",
                    logged + 1
                )));
            }
            losses.push((done, mean));
            shown = vec![("mlm".to_string(), mean)];
            final_loss = mean;
            logged = done;
        }
        progress.update(done, &shown);
        if epoch_end {
            let saving = Instant::now();
            let record = Record {
                objective: "mlm",
                model: &args.model,
                corpus: &args.corpus,
                options: opts,
                head: if origin == HeadOrigin::Checkpoint { "checkpoint" } else { "fresh" },
                sentences: seqs.len(),
                tokens,
                steps: done,
                planned_steps: total,
                epochs_done: done / per_epoch,
                final_loss,
                losses: &losses,
            };
            save(&args.out, &tape.store, &ckpt, &args.model, &record)?;
            progress.note(&format!(
                "step {done} (epoch {}): loss {final_loss:.4}; saved {} in {:.1} s",
                epoch + 1,
                args.out.display(),
                saving.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(PretrainSummary {
        steps: total,
        sentences: seqs.len(),
        left_out,
        tokens,
        final_loss,
        losses,
        head: origin,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the output folder `out` (replaced whole): weights, the config and tokenizer files of
/// `model`, pretrain.json.
fn save(out: &Path, store: &Store<f32>, ckpt: &Checkpoint, model: &Path, record: &Record<'_>) -> Result<()> {
    let tensors = named_params(store, ckpt)?;
    let json = serde_json::to_string_pretty(record).expect("the record serialises");
    write_folder(out, |tmp| {
        safetensors::write(&tmp.join(MODEL_FILE), &tensors, &pt_metadata())?;
        copy_model_files(model, tmp)?;
        let path = tmp.join("pretrain.json");
        std::fs::write(&path, json).map_err(io(&path))
    })
}
