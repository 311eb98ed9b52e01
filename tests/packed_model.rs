//! Packed batches compute the padded batches' numbers (issue 16): the encoder on token-packed rows
//! (N, C) equals the padded encoder (B, T, C) on every real token within 1e-5 (relative, float32),
//! and so do the sentence vectors and every parameter's gradient — in training, with dropout on.
//!
//! How dropout is compared exactly: every dropout of the encoder draws its mask from each token's
//! key (sequence b, position t) rather than its row (`engine::rng::token_key`, `row_index`,
//! `attention_index`), so a packed and a padded pass of one seed drop the same elements of every
//! real token; the tape's stream counter advances identically in both (one stream per dropout).
//! Only the summation order differs (padded GEMMs also sum the padding rows' zero gradients).

mod common;
use common::{golden, rel, tiny_bert};
use engine::data::{Encoded, Tokenizer};
use engine::model::Bert;
use engine::model::bert::Pooling;
use engine::model::lora::{LoraConfig, Target};
use engine::model::{EncoderInput, Packing};
use engine::rng::Rng;
use engine::{Device, Tape, Tensor};

const TOL: f64 = 1e-5;
/// Each parameter's gradient on its own (see `compare`).
const PARAM_TOL: f64 = 2e-5;

/// What one pass gives: the real tokens' hidden states in batch order, the sentence vectors,
/// and every trainable parameter's gradient.
struct Pass {
    tokens: Vec<f32>,
    pooled: Vec<f32>,
    grads: Vec<(String, Vec<f32>)>,
}

/// Encoder → sentence vector → loss Σ v ⊙ w (w fixed and random), backward, in one layout.
fn pass(tape: &mut Tape<f32>, bert: &Bert, e: &Encoded, packing: Packing, pooling: Pooling, training: bool) -> Pass {
    tape.reset();
    tape.store.zero_grads().unwrap();
    tape.set_training(training);
    tape.set_seed(0x5eed);
    let input = EncoderInput::new(tape, e, packing).unwrap();
    let h = bert.encode(tape, &input, bert.layers.len()).unwrap();
    let v = bert.sentence_vector(tape, h, &input, pooling).unwrap();
    let c = v.shape.last();
    let mut rng = Rng::new(7);
    let w: Vec<f32> = (0..e.batch * c).map(|_| rng.normal() as f32).collect();
    let w = tape.constant(&w, &[e.batch, c]).unwrap();
    let y = tape.mul(v, w).unwrap();
    let loss = tape.sum(y).unwrap();
    tape.backward(loss).unwrap();
    let all = tape.store.read(h).unwrap();
    let tokens = match packing {
        Packing::Packed => all,
        // The real rows, in order: what packing keeps.
        Packing::Padded => all
            .chunks_exact(c)
            .zip(&e.mask)
            .filter(|(_, m)| **m != 0)
            .flat_map(|(row, _)| row.iter().copied())
            .collect(),
    };
    let params: Vec<(String, Tensor)> =
        tape.store.params().filter(|(_, t)| t.requires_grad).map(|(n, t)| (n.to_string(), t)).collect();
    let grads = params.into_iter().map(|(n, t)| (n, tape.store.read_grad(t).unwrap())).collect();
    Pass { tokens, pooled: tape.store.read(v).unwrap(), grads }
}

/// Packed against padded on `e`, every pooling, in training (dropout on) and not.
fn compare(tape: &mut Tape<f32>, bert: &Bert, e: &Encoded, what: &str) {
    let real = e.mask.iter().filter(|&&m| m != 0).count();
    println!(
        "{what}: {real} real tokens of {} computed padded ({:.2})",
        e.mask.len(),
        real as f64 / e.mask.len() as f64
    );
    for training in [false, true] {
        for pooling in [Pooling::Mean, Pooling::Cls, Pooling::Pooler] {
            let packed = pass(tape, bert, e, Packing::Packed, pooling, training);
            let padded = pass(tape, bert, e, Packing::Padded, pooling, training);
            let case = format!("{what}, {pooling:?} pooling, training {training}");
            assert_eq!(packed.tokens.len(), padded.tokens.len(), "{case}: real token count");
            let r = rel(&packed.tokens, &padded.tokens);
            assert!(r <= TOL, "{case}: hidden states differ by {r:e}");
            let r = rel(&packed.pooled, &padded.pooled);
            assert!(r <= TOL, "{case}: sentence vectors differ by {r:e}");
            // The whole gradient (every parameter's, end to end) within TOL; each parameter within
            // PARAM_TOL of the larger of its own norm and 1e-2 of the whole's: the key biases'
            // exact gradient is 0 (softmax ignores a score shift shared by a row), so theirs is
            // rounding noise in both layouts, comparable only against the scale of the rest; and a
            // parameter whose gradient sums many cancelling terms (LoRA's B on the tiny model's
            // large activations) shows the two summation orders at up to ~1.3e-5.
            let flat = |p: &Pass| p.grads.iter().flat_map(|(_, g)| g.iter().copied()).collect::<Vec<f32>>();
            let (fp, fd) = (flat(&packed), flat(&padded));
            let r = rel(&fp, &fd);
            assert!(r <= TOL, "{case}: the whole gradient differs by {r:e}");
            let whole = norm(&fd);
            let mut worst = 0.0f64;
            for ((name, gp), (_, gd)) in packed.grads.iter().zip(&padded.grads) {
                let diff: Vec<f32> = gp.iter().zip(gd).map(|(a, b)| a - b).collect();
                let r = norm(&diff) / norm(gd).max(1e-2 * whole);
                assert!(
                    r <= PARAM_TOL,
                    "{case}: gradient of {name} differs by {r:e} (its norm {:e}, the whole's {whole:e})",
                    norm(gd)
                );
                worst = worst.max(r);
            }
            println!("{case}: worst gradient difference {worst:.2e}");
        }
    }
}

fn norm(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt()
}

/// Random sequences of the given lengths padded to the longest: ids, both token types, and a
/// prefix mask (as the tokenizer makes).
fn random_batch(rng: &mut Rng, lens: &[usize], vocab: usize) -> Encoded {
    let t = *lens.iter().max().unwrap();
    let (mut ids, mut type_ids, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for &len in lens {
        let split = len / 2;
        for p in 0..t {
            let real = p < len;
            ids.push(if real { 1 + (rng.next_u64() % (vocab as u64 - 1)) as i32 } else { 0 });
            type_ids.push(i32::from(real && p >= split));
            mask.push(i32::from(real));
        }
    }
    Encoded { ids, type_ids, mask, batch: lens.len(), len: t }
}

#[test]
fn packed_equals_padded_on_random_batches() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let m = tiny_bert::build(&mut tape, 5);
    let mut rng = Rng::new(11);
    // One token, the longest row, repeated lengths, a row of 13 (no multiple of anything).
    for lens in [vec![1, 7, 3, 7, 13, 2], vec![16, 4], vec![5]] {
        let e = random_batch(&mut rng, &lens, 100);
        compare(&mut tape, &m.bert, &e, &format!("tiny BERT, lengths {lens:?}"));
    }
}

/// LoRA adapters beside the linears (dropout on them) and folded into them (no dropout).
#[test]
fn packed_equals_padded_with_lora() {
    for dropout in [0.1, 0.0] {
        let mut tape = Tape::<f32>::new(Device::Cpu);
        let cfg = LoraConfig { rank: 4, alpha: 8.0, dropout, targets: Target::ALL.to_vec() };
        let m = tiny_bert::build_with(&mut tape, 5, Some(&cfg));
        let e = random_batch(&mut Rng::new(3), &[9, 2, 14, 6], 100);
        compare(&mut tape, &m.bert, &e, &format!("tiny BERT with LoRA (dropout {dropout})"));
    }
}

/// A mask that is not a prefix (no tokenizer makes one) is refused by the packed layout, whose
/// attention dropout keys are places in the packed sequence; the padded layout takes it.
#[test]
fn holes_in_the_mask_are_refused_when_packing() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let mut e = random_batch(&mut Rng::new(4), &[8, 8, 5], 100);
    e.mask[8 + 6] = 0;
    let err = EncoderInput::new(&mut tape, &e, Packing::Packed).unwrap_err().to_string();
    assert!(err.contains("row 1's mask has padding before a real token"), "{err}");
    EncoderInput::new(&mut tape, &e, Packing::Padded).unwrap();
}

/// The default checkpoint on the golden sentences and pairs (the golden parity tests run the
/// padded layout against Hugging Face; this ties the packed one to it).
#[test]
fn packed_equals_padded_on_the_golden_sentences() {
    let g = golden::golden();
    let dir = golden::model_dir();
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let ckpt = engine::model::Checkpoint::open(&dir).unwrap();
    let bert = ckpt.load_bert(&mut tape.store, &|_| true).unwrap();
    let mut tok = Tokenizer::from_dir(&dir).unwrap();
    let singles = golden::encode_singles(&mut tok, &g.strings("/singles"));
    compare(&mut tape, &bert, &singles, "MiniLM, golden sentences");
    let pairs = golden::encode_pairs(&mut tok, &g.pairs());
    compare(&mut tape, &bert, &pairs, "MiniLM, golden pairs");
}

/// A batch whose sequences a dropout key cannot name is refused, not silently aliased.
#[test]
fn too_many_sequences_for_the_dropout_keys_are_refused() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let n = engine::rng::MAX_KEYED_BATCH + 1;
    let e = Encoded { ids: vec![2; n], type_ids: vec![0; n], mask: vec![1; n], batch: n, len: 1 };
    for packing in [Packing::Packed, Packing::Padded] {
        let err = EncoderInput::new(&mut tape, &e, packing).unwrap_err().to_string();
        assert!(err.contains("at most 32768 sequences"), "{err}");
    }
}
