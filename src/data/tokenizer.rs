//! Tokenization with the `tokenizers` crate from the checkpoint's `tokenizer.json` (or, without
//! one, BERT's uncased WordPiece from `vocab.txt`): single sentences and pairs
//! (`[CLS] a [SEP] b [SEP]`, token types 0 then 1), truncation to a maximum length, padding to
//! the batch's longest with an attention mask.

use crate::error::{Error, Result};
use std::path::Path;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{TruncationDirection, TruncationParams, TruncationStrategy};

/// One example: a sentence, or a pair encoded jointly.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Single(&'a str),
    Pair(&'a str, &'a str),
}

/// A padded batch, row-major (batch, len).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i32>,
    pub type_ids: Vec<i32>,
    pub mask: Vec<i32>,
    pub batch: usize,
    pub len: usize,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pad_id: i32,
}

fn tok_err(what: String) -> impl Fn(tokenizers::Error) -> Error {
    move |e| Error::Config(format!("{what}: {e}"))
}

impl Tokenizer {
    /// The tokenizer of a checkpoint folder: tokenizer.json, else vocab.txt (uncased WordPiece).
    pub fn from_dir(dir: &Path) -> Result<Tokenizer> {
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let mut inner = if json.is_file() {
            tokenizers::Tokenizer::from_file(&json).map_err(tok_err(json.display().to_string()))?
        } else if vocab.is_file() {
            Self::wordpiece(&vocab)?
        } else {
            return Err(Error::Config(format!("{}: neither tokenizer.json nor vocab.txt", dir.display())));
        };
        // Padding is ours (to the batch's longest); truncation is set per call.
        inner.with_padding(None);
        let pad_id = inner.token_to_id("[PAD]").unwrap_or(0) as i32;
        Ok(Tokenizer { inner, pad_id })
    }

    /// The id of `token` (e.g. "[MASK]"), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<i32> {
        self.inner.token_to_id(token).map(|id| id as i32)
    }

    /// BERT's uncased WordPiece pipeline built from a vocab.txt.
    fn wordpiece(vocab: &Path) -> Result<tokenizers::Tokenizer> {
        let name = vocab.display().to_string();
        let path = vocab.to_str().ok_or_else(|| Error::Config(format!("{name}: path is not UTF-8")))?;
        let model = WordPiece::from_file(path).unk_token("[UNK]".into()).build().map_err(tok_err(name.clone()))?;
        let id = |t: &str| {
            tokenizers::Model::token_to_id(&model, t).ok_or_else(|| Error::Config(format!("{name}: no {t} token")))
        };
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        let mut tok = tokenizers::Tokenizer::new(model);
        tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).map_err(tok_err(name.clone()))?;
        tok.with_pre_tokenizer(Some(BertPreTokenizer));
        tok.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        Ok(tok)
    }

    /// Encodes a batch: special tokens added, each example truncated to `max_len` tokens
    /// (longest side first for pairs), padded to the longest example.
    pub fn encode(&mut self, inputs: &[Input<'_>], max_len: usize) -> Result<Encoded> {
        if inputs.is_empty() {
            return Err(Error::Config("tokenizer: an empty batch".into()));
        }
        if max_len < 3 {
            return Err(Error::Config(format!("--max-len {max_len} leaves no room for [CLS] a [SEP] b [SEP]")));
        }
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(tok_err("tokenizer truncation".into()))?;
        let mut encodings = Vec::with_capacity(inputs.len());
        for input in inputs {
            let e = match *input {
                Input::Single(a) => self.inner.encode(a, true),
                Input::Pair(a, b) => self.inner.encode((a, b), true),
            }
            .map_err(|e| Error::Config(format!("tokenizing {input:?}: {e}")))?;
            encodings.push(e);
        }
        let len = encodings.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let batch = encodings.len();
        let mut out = Encoded {
            ids: vec![self.pad_id; batch * len],
            type_ids: vec![0; batch * len],
            mask: vec![0; batch * len],
            batch,
            len,
        };
        for (row, e) in encodings.iter().enumerate() {
            for (j, ((&id, &ty), &m)) in
                e.get_ids().iter().zip(e.get_type_ids()).zip(e.get_attention_mask()).enumerate()
            {
                out.ids[row * len + j] = id as i32;
                out.type_ids[row * len + j] = ty as i32;
                out.mask[row * len + j] = m as i32;
            }
        }
        Ok(out)
    }
}
