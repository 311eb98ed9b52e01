//! Evaluation: predictions over a dataset with a loaded model or checkpoint, their metrics
//! (train/metrics.rs) and analysis, and the prediction files.

use super::analysis::{self, Analysis};
use super::metrics::{Score, score};
use super::model::MultiTaskModel;
use crate::data::Tokenizer;
use crate::data::cs224n::{self, Dataset, Example, Prediction, Task};
use crate::error::{Error, Result};
use crate::failpoint;
use crate::tape::Tape;
use std::path::Path;

/// Predictions by example id, in the examples' order.
pub type Predictions = Vec<(String, Prediction)>;

/// Predictions for every example, in order, with dropout off; and the metric when labelled.
pub fn predict(
    model: &MultiTaskModel,
    tape: &mut Tape<f32>,
    tok: &mut Tokenizer,
    task: Task,
    examples: &[Example],
    batch_size: usize,
) -> Result<(Predictions, Option<Score>)> {
    let was_training = tape.is_training();
    tape.set_training(false);
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size.max(1)) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let batch = model.batch(tok, task, &refs)?;
        tape.reset();
        let y = model.forward(tape, &batch)?;
        let values = tape.store.read(y)?;
        // A NaN logit would still give a class (argmax): refuse, naming the example, instead of
        // writing a prediction the model never made.
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            let e = &chunk[i * chunk.len() / values.len()];
            return Err(Error::value(
                "predictions",
                format!(
                    "{task} example {:?}: the model's output is {} (non-finite weights or input?)",
                    e.id, values[i]
                ),
            ));
        }
        let preds = MultiTaskModel::predictions(task, &values, chunk.len());
        out.extend(chunk.iter().map(|e| e.id.clone()).zip(preds));
    }
    tape.reset();
    tape.set_training(was_training);
    let preds: Vec<Prediction> = out.iter().map(|(_, p)| *p).collect();
    let s = score(task, examples, &preds);
    Ok((out, s))
}

/// A fine-tuned checkpoint ready to predict: the model, its tokenizer and a tape.
pub struct Loaded {
    pub model: MultiTaskModel,
    pub tok: Tokenizer,
    pub tape: Tape<f32>,
}

/// Loads a folder written by `engine finetune` (weights, heads, options, tokenizer).
pub fn load_checkpoint(dir: &std::path::Path, device: crate::device::Device) -> Result<Loaded> {
    load_checkpoint_with(dir, device, false)
}

/// [`load_checkpoint`]; `padded` runs it on padded batches whatever the run used (the same numbers).
pub fn load_checkpoint_with(dir: &std::path::Path, device: crate::device::Device, padded: bool) -> Result<Loaded> {
    let mut opts = super::checkpoint::load_options(dir)?;
    opts.padded |= padded;
    let (ckpt, trained) = super::checkpoint::open_weights(dir)?;
    let tok = Tokenizer::from_dir(dir)?;
    let mut tape = Tape::<f32>::new(device);
    let model = MultiTaskModel::build(&mut tape.store, &ckpt, Some(&trained), &opts, false)?;
    Ok(Loaded { model, tok, tape })
}

/// `engine eval`: predictions of `split` for every task of the checkpoint, written under `out`,
/// with the analysis (analysis.txt and the plots) on dev; returns the scores and analyses (dev
/// only: test files have no labels).
pub fn evaluate_checkpoint(
    dir: &std::path::Path,
    split: crate::data::cs224n::Split,
    files: &[crate::data::cs224n::DataFile],
    out: &std::path::Path,
    device: crate::device::Device,
    padded: bool,
) -> Result<(Vec<Score>, Vec<Analysis>)> {
    let mut l = load_checkpoint_with(dir, device, padded)?;
    let mut sets = Vec::new();
    for &task in &l.model.tasks.clone() {
        let f = files
            .iter()
            .find(|f| f.task == task && f.split == split)
            .ok_or_else(|| crate::Error::Config(format!("no {task} {} file", split.name())))?;
        sets.push((task, crate::data::cs224n::read(task, &f.path, split, &f.flag, false)?));
    }
    let refs: Vec<(Task, &crate::data::cs224n::Dataset)> = sets.iter().map(|(t, d)| (*t, d)).collect();
    let batch = l.model.opts.batch_size * 2;
    let (scores, analyses) = write_predictions(&l.model, &mut l.tape, &mut l.tok, &refs, out, batch)?;
    if !analyses.is_empty() {
        analysis::write(out, &analyses)?;
    }
    Ok((scores, analyses))
}

/// Writes dev and test predictions of every task under `dir`, in the CS224N layout; returns the
/// scores and analyses of the labelled sets.
pub fn write_predictions(
    model: &MultiTaskModel,
    tape: &mut Tape<f32>,
    tok: &mut Tokenizer,
    sets: &[(Task, &Dataset)],
    dir: &Path,
    batch: usize,
) -> Result<(Vec<Score>, Vec<Analysis>)> {
    let (mut scores, mut analyses) = (Vec::new(), Vec::new());
    for (task, d) in sets {
        let (preds, s) = predict(model, tape, tok, *task, &d.examples, batch)?;
        let name = task
            .prediction_file_name(d.split)
            .ok_or_else(|| Error::Config(format!("no prediction file for {task} {}", d.split.name())))?;
        cs224n::write_predictions(*task, &dir.join(name), &preds)?;
        failpoint::reach("predictions");
        scores.extend(s);
        analyses.extend(analysis::analyse(*task, &d.examples, &preds)?);
    }
    Ok((scores, analyses))
}

/// `engine predict`: the prediction file (CS224N layout) of `task` for a CS224N file.
pub fn predict_file(
    dir: &std::path::Path,
    task: Task,
    input: &std::path::Path,
    device: crate::device::Device,
    padded: bool,
) -> Result<String> {
    let mut l = load_checkpoint_with(dir, device, padded)?;
    let data = crate::data::cs224n::read(task, input, crate::data::cs224n::Split::Test, "--input", false)?;
    let batch = l.model.opts.batch_size * 2;
    let (preds, _) = predict(&l.model, &mut l.tape, &mut l.tok, task, &data.examples, batch)?;
    crate::data::cs224n::format_predictions(task, &preds)
}
