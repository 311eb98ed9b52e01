//! A tokenized batch on the tape, in one of two layouts (issue 16): padded (B, T), every row
//! padded to the longest, or token-packed (N), the real tokens of the B sequences back to back
//! with their offsets. The encoder's layers are the same on both (every linear, layernorm, GELU
//! and dropout works on rows); only the embedding's positions, the attention and the pooling
//! read the layout, through this type.
//!
//! Dropout draws from each token's key (sequence b, position t) rather than its row, so both
//! layouts drop the same elements of every real token (see `crate::rng::token_key`): a packed
//! and a padded run of one seed compute the same numbers on the real tokens.

use crate::data::Encoded;
use crate::error::{Error, Result};
use crate::float::Float;
use crate::ops::recurrent::Spans;
use crate::ops::varlen_attention::CuSeqlens;
use crate::rng::{MAX_KEYED_BATCH, MAX_KEYED_LEN, token_key};
use crate::tape::Tape;
use crate::tensor::Tensor;

/// Where the tokens of each sequence lie.
#[derive(Clone, Debug)]
pub enum Layout {
    /// (B, T) rows; `mask` (B, T) of 0/1 marks the real tokens. `lens`, each row's count of real
    /// tokens when they come first and the batch was built on the host (None otherwise), spares
    /// a reader of the lengths the mask's copy back from the device.
    Padded { mask: Tensor, lens: Option<Vec<usize>> },
    /// N rows; sequence b is rows cu[b]..cu[b+1], `positions` (N) each token's position in it.
    Packed { positions: Tensor, cu: CuSeqlens },
}

/// The encoder's input: token and type ids, each row's dropout key, and the layout.
#[derive(Clone, Debug)]
pub struct EncoderInput {
    /// (B, T) padded or (N) packed, i32.
    pub ids: Tensor,
    pub type_ids: Tensor,
    /// One `token_key(b, t)` per row of `ids` (B·T or N), i32: what dropout draws from.
    pub keys: Tensor,
    pub layout: Layout,
}

/// Which layout to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    Padded,
    Packed,
}

impl Packing {
    pub fn new(padded: bool) -> Packing {
        if padded { Packing::Padded } else { Packing::Packed }
    }
}

impl EncoderInput {
    /// Uploads `e` in the layout asked for.
    pub fn new<F: Float>(tape: &mut Tape<F>, e: &Encoded, packing: Packing) -> Result<EncoderInput> {
        match packing {
            Packing::Padded => {
                let dims = [e.batch, e.len];
                let (ids, types, mask) =
                    (tape.ints(&e.ids, &dims)?, tape.ints(&e.type_ids, &dims)?, tape.ints(&e.mask, &dims)?);
                EncoderInput::padded_with(tape, ids, types, mask, real_first_lens(e))
            }
            Packing::Packed => EncoderInput::packed(tape, e),
        }
    }

    /// The padded layout from tensors already on the tape: ids, type ids, mask (B, T).
    pub fn padded<F: Float>(tape: &mut Tape<F>, ids: Tensor, type_ids: Tensor, mask: Tensor) -> Result<EncoderInput> {
        EncoderInput::padded_with(tape, ids, type_ids, mask, None)
    }

    /// The padded layout, with each row's length when the host knows it.
    fn padded_with<F: Float>(
        tape: &mut Tape<F>,
        ids: Tensor,
        type_ids: Tensor,
        mask: Tensor,
        lens: Option<Vec<usize>>,
    ) -> Result<EncoderInput> {
        if ids.shape.rank() != 2 {
            return Err(Error::shape("encoder input", format!("ids {} must be (B, T)", ids.shape)));
        }
        let (b, t) = (ids.dims()[0], ids.dims()[1]);
        check_keyable(b, t)?;
        let keys: Vec<i32> = (0..b).flat_map(|s| (0..t).map(move |p| token_key(s, p) as i32)).collect();
        let keys = tape.ints(&keys, &[b * t])?;
        Ok(EncoderInput { ids, type_ids, keys, layout: Layout::Padded { mask, lens } })
    }

    /// The packed layout of `e`: each row's real tokens (its mask a prefix of ones, as the
    /// tokenizer pads) back to back. A mask with holes is refused: attention dropout keys each
    /// probability by the query's and key's places in the packed sequence, which are the padded
    /// positions only when the real tokens come first.
    pub fn packed<F: Float>(tape: &mut Tape<F>, e: &Encoded) -> Result<EncoderInput> {
        check_keyable(e.batch, e.len)?;
        if let Some(b) = (0..e.batch).find(|&b| has_holes(row_mask(e, b))) {
            return Err(Error::value(
                "encoder input",
                format!("row {b}'s mask has padding before a real token: packed batches need the real tokens first"),
            ));
        }
        let n: usize = e.mask.iter().filter(|&&m| m != 0).count();
        let (mut ids, mut types, mut positions, mut keys) =
            (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
        let mut cu = Vec::with_capacity(e.batch + 1);
        cu.push(0);
        for b in 0..e.batch {
            for t in 0..e.len {
                let i = b * e.len + t;
                if e.mask[i] != 0 {
                    ids.push(e.ids[i]);
                    types.push(e.type_ids[i]);
                    positions.push(t as i32);
                    keys.push(token_key(b, t) as i32);
                }
            }
            cu.push(ids.len());
        }
        let cu = tape.cu_seqlens(&cu)?;
        Ok(EncoderInput {
            ids: tape.ints(&ids, &[n])?,
            type_ids: tape.ints(&types, &[n])?,
            keys: tape.ints(&keys, &[n])?,
            layout: Layout::Packed { positions: tape.ints(&positions, &[n])?, cu },
        })
    }

    /// Where each sequence's rows lie, for an op over the encoder's rows (B·T padded, N packed)
    /// that walks each sequence's real tokens in order (the recurrent heads).
    pub fn spans<F: Float>(&self, tape: &mut Tape<F>) -> Result<Spans> {
        match &self.layout {
            Layout::Packed { cu, .. } => Spans::packed(tape, cu),
            Layout::Padded { mask, lens: Some(lens) } => Spans::padded(tape, mask.dims()[1], lens),
            // Built from device tensors: the lengths come back from the mask.
            Layout::Padded { mask, lens: None } => Spans::from_mask(tape, *mask),
        }
    }

    /// B, the number of sequences.
    pub fn sequences(&self) -> usize {
        match &self.layout {
            Layout::Padded { .. } => self.ids.dims()[0],
            Layout::Packed { cu, .. } => cu.batch(),
        }
    }

    /// The rows the encoder computes: B·T padded, N packed.
    pub fn rows(&self) -> usize {
        self.ids.numel()
    }
}

/// Dropout keys name sequences below 2¹⁵ and positions below 2¹⁶.
fn check_keyable(b: usize, t: usize) -> Result<()> {
    if b > MAX_KEYED_BATCH || t > MAX_KEYED_LEN {
        return Err(Error::value(
            "encoder input",
            format!("a batch of {b} sequences of {t} tokens: at most {MAX_KEYED_BATCH} sequences of {MAX_KEYED_LEN}"),
        ));
    }
    Ok(())
}

/// Row b's mask (T).
fn row_mask(e: &Encoded, b: usize) -> &[i32] {
    &e.mask[b * e.len..(b + 1) * e.len]
}

/// Whether a row's mask has padding before a real token.
fn has_holes(mask: &[i32]) -> bool {
    mask.windows(2).any(|w| w[0] == 0 && w[1] != 0)
}

/// Each row's count of real tokens, when every row's come first.
fn real_first_lens(e: &Encoded) -> Option<Vec<usize>> {
    let rows = (0..e.batch).map(|b| row_mask(e, b));
    rows.map(|m| (!has_holes(m)).then(|| m.iter().filter(|&&v| v != 0).count())).collect()
}
