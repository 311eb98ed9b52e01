//! BERT's masked-LM corruption (Devlin et al. 2019, and `create_masked_lm_predictions` of its
//! code): of each sequence's real tokens other than the special ones ([CLS], [SEP]), choose
//! round(p · n) at random (at least one); of those, 80% become [MASK], 10% a random vocabulary id,
//! 10% stay as they are. The model predicts the original id at every chosen position.
//!
//! A sequence's draw is a function of (seed, epoch, sentence) alone: the same in every run, a new
//! one each epoch, and independent of which batch the sentence lands in.

use crate::error::{Error, Result};
use crate::rng::{Rng, mix64};

/// What the corruption needs to know of the tokenizer and the model.
#[derive(Clone, Debug)]
pub struct Masking {
    /// The share of maskable tokens chosen, in (0, 1) (BERT: 0.15).
    pub prob: f64,
    pub mask_id: i32,
    /// Random replacements are drawn from 0..vocab.
    pub vocab: usize,
    /// Ids never chosen: [CLS], [SEP] (and [PAD], which is never a real token anyway).
    pub special: Vec<i32>,
}

/// One sequence after corruption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Masked {
    /// The input ids, the chosen positions replaced.
    pub ids: Vec<i32>,
    /// The chosen positions (indices into the sequence), ascending.
    pub positions: Vec<usize>,
    /// The original ids at `positions`: what the model must predict.
    pub labels: Vec<i32>,
}

/// How a chosen token is corrupted, by a uniform draw u: [MASK] for u < 0.8, a random id for
/// u < 0.9, else kept.
const MASK_SHARE: f64 = 0.8;
const RANDOM_SHARE: f64 = 0.1;

impl Masking {
    pub fn new(prob: f64, mask_id: i32, vocab: usize, special: Vec<i32>) -> Result<Masking> {
        if !(prob > 0.0 && prob < 1.0) {
            return Err(Error::Config(format!("--mask-prob {prob}: a share of the tokens in (0, 1), e.g. 0.15")));
        }
        if vocab == 0 || mask_id < 0 || mask_id as usize >= vocab {
            return Err(Error::Config(format!("[MASK] id {mask_id} is outside the vocabulary 0..{vocab}")));
        }
        Ok(Masking { prob, mask_id, vocab, special })
    }

    /// Whether the token `id` may be chosen.
    pub fn maskable(&self, id: i32) -> bool {
        !self.special.contains(&id)
    }

    /// How many of `n` maskable tokens are chosen: round(p · n), at least one (none of none).
    pub fn count(&self, n: usize) -> usize {
        if n == 0 { 0 } else { ((self.prob * n as f64).round() as usize).clamp(1, n) }
    }

    /// Corrupts the real tokens `ids` of one sequence with draws from `rng`.
    pub fn apply(&self, ids: &[i32], rng: &mut Rng) -> Masked {
        let mut candidates: Vec<usize> = (0..ids.len()).filter(|&i| self.maskable(ids[i])).collect();
        let k = self.count(candidates.len());
        // A partial Fisher–Yates shuffle: the first k candidates are a uniform choice of k.
        for i in 0..k {
            let j = i + rng.below(candidates.len() - i);
            candidates.swap(i, j);
        }
        let mut positions = candidates[..k].to_vec();
        positions.sort_unstable();
        let mut out = ids.to_vec();
        let labels = positions.iter().map(|&p| ids[p]).collect();
        for &p in &positions {
            let u = rng.uniform();
            if u < MASK_SHARE {
                out[p] = self.mask_id;
            } else if u < MASK_SHARE + RANDOM_SHARE {
                out[p] = rng.below(self.vocab) as i32;
            }
        }
        Masked { ids: out, positions, labels }
    }
}

/// The generator of sentence `sentence`'s corruption in epoch `epoch` (0-based) of a run of `seed`.
pub fn sequence_rng(seed: u64, epoch: usize, sentence: usize) -> Rng {
    Rng::new(mix64(seed ^ mix64(0x6d61_736b_0000 + epoch as u64) ^ mix64(!(sentence as u64))))
}
