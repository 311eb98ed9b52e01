//! `engine embed`: sentence embeddings of a text file, one JSON line per input line.
//! An input line is a sentence, or two sentences separated by a tab (a pair, encoded jointly).
//! The model is a BERT folder, a full checkpoint of `engine finetune`, or an adapter folder (a
//! LoRA checkpoint of `engine finetune --lora`, or one saved by PEFT): its base model with the
//! adapters attached, unmerged, as PEFT runs it; task heads are not used.

use crate::data::{Input, Tokenizer};
use crate::device::Device;
use crate::error::{Error, Result};
use crate::model::Checkpoint;
use crate::model::input::{EncoderInput, Packing};
use crate::model::peft::{self, AdapterFolder};
use crate::tape::Tape;
use std::io::Write;
use std::path::PathBuf;

pub use crate::model::bert::Pooling;

pub struct EmbedOptions {
    pub model: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub pooling: Pooling,
    /// Hidden state after this many layers; None: the last.
    pub layer: Option<usize>,
    pub batch_size: usize,
    pub max_len: usize,
    pub device: Device,
    pub quiet: bool,
    /// Padded batches instead of packed ones (issue 16), for comparison.
    pub padded: bool,
}

/// Embeds every line of the input; writes the output atomically. Returns the number of lines.
pub fn embed(o: &EmbedOptions) -> Result<usize> {
    if o.batch_size == 0 {
        return Err(Error::Config("--batch-size must be at least 1".into()));
    }
    let text = if o.input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::Config(format!("--input -: reading stdin: {e}")))?
    } else {
        std::fs::read_to_string(&o.input).map_err(|e| Error::Config(format!("--input {}: {e}", o.input.display())))?
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut tape = Tape::<f32>::new(o.device.clone());
    let (bert, mut tok) = if peft::is_adapter_folder(&o.model) {
        let a = AdapterFolder::open(&o.model)?;
        (a.load_bert(&mut tape.store)?, Tokenizer::from_dir(a.tokenizer_dir())?)
    } else {
        let ckpt = Checkpoint::open(&o.model)?;
        (ckpt.load_bert(&mut tape.store, &|_| false)?, Tokenizer::from_dir(&o.model)?)
    };
    if o.pooling == Pooling::Pooler && bert.pooler.is_none() {
        return Err(Error::Config(format!("--pooling pooler: {} has no pooler weights", o.model.display())));
    }
    let layers = o.layer.unwrap_or(bert.layers.len());
    if layers > bert.layers.len() {
        return Err(Error::Config(format!("--layer {layers}: the model has {} layers", bert.layers.len())));
    }
    // One sentence, or a pair split by one tab: a second tab would silently join two sentences.
    if let Some(i) = lines.iter().position(|l| l.matches('\t').count() > 1) {
        return Err(Error::Config(format!(
            "--input {} line {}: {} tabs; a line holds one sentence or a pair split by one tab",
            o.input.display(),
            i + 1,
            lines[i].matches('\t').count()
        )));
    }
    let mut out = Vec::with_capacity(text.len() * 8);
    for (b, chunk) in lines.chunks(o.batch_size).enumerate() {
        let inputs: Vec<Input> = chunk
            .iter()
            .map(|l| match l.split_once('\t') {
                Some((a, b)) => Input::Pair(a, b),
                None => Input::Single(l),
            })
            .collect();
        let e = tok.encode(&inputs, o.max_len)?;
        tape.reset();
        let input = EncoderInput::new(&mut tape, &e, Packing::new(o.padded))?;
        let h = bert.encode(&mut tape, &input, layers)?;
        let v = bert.sentence_vector(&mut tape, h, &input, o.pooling)?;
        let values = tape.store.read(v)?;
        let c = v.shape.last();
        for (i, (line, row)) in chunk.iter().zip(values.chunks_exact(c)).enumerate() {
            // JSON has no NaN or infinity (serde writes null): refuse instead, naming the line,
            // before anything is written.
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(Error::value(
                    "embedding",
                    format!(
                        "input line {} ({line:?}): value {j} of its embedding is {} (non-finite weights in {}?); nothing written",
                        b * o.batch_size + i + 1,
                        row[j],
                        o.model.display()
                    ),
                ));
            }
            // Written field by field to keep "text" first, as documented.
            let text = serde_json::to_string(line).expect("a string serialises");
            let embedding = serde_json::to_string(row).expect("floats serialise");
            writeln!(out, "{{\"text\":{text},\"embedding\":{embedding}}}").expect("writing to memory");
        }
        if !o.quiet && (b + 1) % 20 == 0 {
            eprintln!("embed: {} of {} lines", ((b + 1) * o.batch_size).min(lines.len()), lines.len());
        }
    }
    crate::util::write_atomically(&o.output, &out)?;
    let _ = std::io::stderr().flush();
    Ok(lines.len())
}
