//! The tiny BERT of the core issue (2 layers, hidden 32, 4 heads, vocab 100) with the reference
//! training step's three losses, generic over the float type: float64 for gradient checks,
//! float32 for the CPU-vs-CUDA comparison.

use engine::model::bert::{Bert, ParamKind, init};
use engine::model::lora::{Lora, LoraConfig};
use engine::model::{BertConfig, heads};
use engine::rng::Rng;
use engine::{Float, Result, Tape, Tensor};

pub struct TinyModel {
    pub bert: Bert,
    pub sst: heads::LinearHead,
    pub para: heads::LinearHead,
}

pub fn config() -> BertConfig {
    BertConfig::tiny(100, 32, 2, 4, 37, 16)
}

/// Registers the model with random parameters (std 0.3, so that every nonlinearity is exercised
/// away from linear; layernorm gains around 1).
pub fn build<F: Float>(tape: &mut Tape<F>, seed: u64) -> TinyModel {
    build_with(tape, seed, None)
}

/// [`build`], or with `lora`: the encoder frozen and adapters on its linears, with A and B both
/// random (a trained state, so that every adapter gradient is non-zero).
#[allow(dead_code)]
pub fn build_with<F: Float>(tape: &mut Tape<F>, seed: u64, lora: Option<&LoraConfig>) -> TinyModel {
    let cfg = config();
    let mut rng = Rng::new(seed);
    let trainable = lora.is_none();
    let mut bert = Bert::register(
        &mut tape.store,
        &cfg,
        true,
        &mut |_, dims, kind| {
            let mut v: Vec<F> = init(&mut rng, dims, ParamKind::Weight, 0.3);
            if kind == ParamKind::NormGain {
                v.iter_mut().for_each(|x| *x += F::ONE);
            }
            Ok(v)
        },
        &|_| trainable,
    )
    .unwrap();
    if let Some(l) = lora {
        let mut source = |_: &str, dims: &[usize]| Ok(init::<F>(&mut rng, dims, ParamKind::Weight, 0.3));
        bert.lora = Some(Lora::register(&mut tape.store, &bert.target_dims(), l, true, &mut source).unwrap());
    }
    let c = cfg.hidden_size;
    let mut head = |name: &str, out: usize, inp: usize| heads::LinearHead {
        w: tape
            .store
            .add_param(
                &format!("{name}.weight"),
                &[out, inp],
                &init::<F>(&mut rng, &[out, inp], ParamKind::Weight, 0.3),
                true,
            )
            .unwrap(),
        b: tape
            .store
            .add_param(&format!("{name}.bias"), &[out], &init::<F>(&mut rng, &[out], ParamKind::Weight, 0.3), true)
            .unwrap(),
    };
    let sst = head("sst", 5, c);
    let para = head("para", 1, 4 * c);
    TinyModel { bert, sst, para }
}

/// The three losses, summed: SST cross-entropy on the pooler output, Quora BCE on
/// [u, v, |u−v|, u·v] of pooler outputs (each question encoded alone), STS MSE of 5·cos of
/// mean-pooled states. Batches have padding and both token types.
pub fn three_task_loss<F: Float>(t: &mut Tape<F>, m: &TinyModel) -> Result<Tensor> {
    let bert = &m.bert;
    let encode = |t: &mut Tape<F>, ids: &[i32], types: &[i32], mask: &[i32], b: usize| -> Result<(Tensor, Tensor)> {
        let tt = ids.len() / b;
        let (ids, types, mask) = (t.ints(ids, &[b, tt])?, t.ints(types, &[b, tt])?, t.ints(mask, &[b, tt])?);
        Ok((bert.forward(t, ids, types, mask)?, mask))
    };
    let f = |x: f64| F::from_f64(x);
    // SST: 3 sentences of 6 tokens, the last two padded.
    let (h, _) = encode(
        t,
        &[2, 17, 45, 3, 0, 0, 2, 8, 8, 91, 60, 3, 2, 33, 3, 0, 0, 0],
        &[0; 18],
        &[1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        3,
    )?;
    let pooled = bert.pool(t, h)?;
    let logits = heads::classify(t, &m.sst, pooled)?;
    let labels = t.ints(&[4, 0, 2], &[3])?;
    let l_sst = t.cross_entropy(logits, labels)?;
    // Quora: each question on its own, 2 pairs of 5 tokens.
    let (ha, _) = encode(t, &[2, 11, 12, 13, 3, 2, 70, 71, 3, 0], &[0; 10], &[1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 2)?;
    let (hb, _) = encode(t, &[2, 11, 99, 3, 0, 2, 70, 72, 73, 3], &[0; 10], &[1, 1, 1, 1, 0, 1, 1, 1, 1, 1], 2)?;
    let (u, v) = (bert.pool(t, ha)?, bert.pool(t, hb)?);
    let logits = heads::paraphrase_logits(t, &m.para, u, v)?;
    let y = t.constant(&[f(1.0), f(0.0)], &[2])?;
    let l_para = t.bce_with_logits(logits, y)?;
    // STS: mean pooling; token type 1 on the second segment of a joint pair.
    let (ha, ma) = encode(
        t,
        &[2, 40, 41, 42, 3, 2, 50, 3, 0, 0],
        &[0, 0, 0, 1, 1, 0, 0, 1, 0, 0],
        &[1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        2,
    )?;
    let (hb, mb) = encode(t, &[2, 40, 43, 3, 0, 2, 51, 52, 53, 3], &[0; 10], &[1, 1, 1, 1, 0, 1, 1, 1, 1, 1], 2)?;
    let (a, b) = (t.mean_pool(ha, ma)?, t.mean_pool(hb, mb)?);
    let score = heads::similarity(t, a, b)?;
    let y = t.constant(&[f(3.8), f(1.2)], &[2])?;
    let l_sts = t.mse(score, y)?;
    let sum = t.add(l_sst, l_para)?;
    t.add(sum, l_sts)
}

/// Five sequences of lengths 4, 9, 1, 6 and 3 for the tiny BERT, padded to 9, both token types
/// (the second half of each sequence is type 1).
#[allow(dead_code)]
pub fn ragged_batch() -> engine::data::Encoded {
    let (lens, t) = ([4usize, 9, 1, 6, 3], 9);
    let (mut ids, mut type_ids, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for (b, &len) in lens.iter().enumerate() {
        for p in 0..t {
            ids.push(if p < len { (7 + 13 * b + 5 * p) as i32 % 100 } else { 0 });
            type_ids.push(i32::from(p < len && p >= len / 2));
            mask.push(i32::from(p < len));
        }
    }
    engine::data::Encoded { ids, type_ids, mask, batch: lens.len(), len: t }
}
