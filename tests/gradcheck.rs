//! Gradient checks of every op, and of a whole tiny BERT with all three task losses, in float64.
//!
//! Norm: for each input tensor, relative error = ‖g_tape − g_fd‖₂ / max(‖g_fd‖₂, 1e-2), where
//! g_fd is the central difference (L(x + h) − L(x − h)) / 2h with h = 1e-5, and L projects the
//! op's output onto fixed random weights (L = Σ out ⊙ R) so that every output element counts.
//! Shapes avoid powers of two. Tolerance 1e-6. The floor of 1e-2 (every real gradient here has a norm ≥ 0.19) turns the check into an absolute
//! one (1e-8) for a gradient that is zero in exact arithmetic, such as the attention key bias's
//! (softmax ignores a constant added to a row of scores), where g_fd is rounding noise (~1e-9).

mod common;
use common::gradcheck::{check, check_tape};
use common::tiny_bert;
use engine::model::bert::{ParamKind, init};
use engine::model::input::EncoderInput;
use engine::model::lora::{Adapter, Form, Lora, LoraConfig, Target};
use engine::model::mlm::MlmHead;
use engine::ops::Op;
use engine::ops::lora_linear::Band;
use engine::ops::recurrent::{Cell, Spans};
use engine::rng::Rng;
use engine::{Device, Tape, Tensor};

#[test]
fn matmul_plain() {
    check("matmul", &[&[5, 7], &[7, 3]], &|t, x| t.matmul(x[0], x[1], false, false));
}

#[test]
fn matmul_linear_layout() {
    // (B, T, IN) · (OUT, IN)ᵀ, the weight shared by every row
    check("matmul bᵀ", &[&[2, 5, 7], &[3, 7]], &|t, x| t.matmul(x[0], x[1], false, true));
}

#[test]
fn matmul_transposed_a() {
    check("matmul aᵀ", &[&[7, 5], &[7, 3]], &|t, x| t.matmul(x[0], x[1], true, false));
    check("matmul aᵀbᵀ", &[&[7, 5], &[3, 7]], &|t, x| t.matmul(x[0], x[1], true, true));
}

#[test]
fn matmul_batched() {
    // attention scores (B, NH, T, HS) · (B, NH, T, HS)ᵀ and context (B, NH, T, T) · (B, NH, T, HS)
    check("bmm scores", &[&[2, 3, 5, 7], &[2, 3, 6, 7]], &|t, x| t.matmul(x[0], x[1], false, true));
    check("bmm context", &[&[2, 3, 5, 6], &[2, 3, 6, 7]], &|t, x| t.matmul(x[0], x[1], false, false));
    check("bmm aᵀ", &[&[3, 6, 5], &[3, 6, 7]], &|t, x| t.matmul(x[0], x[1], true, false));
}

#[test]
fn matmul_same_operand_twice() {
    check("x·xᵀ", &[&[5, 7]], &|t, x| t.matmul(x[0], x[0], false, true));
}

#[test]
fn linear_layer() {
    // x (B, T, IN) · w (OUT, IN)ᵀ + b, one op
    check("linear", &[&[2, 5, 7], &[3, 7], &[3]], &|t, x| t.linear(x[0], x[1], x[2]));
}

#[test]
fn bias_add() {
    check("bias_add", &[&[2, 3, 5], &[5]], &|t, x| t.bias_add(x[0], x[1]));
}

#[test]
fn residual_add_sub_mul() {
    check("add", &[&[3, 5], &[3, 5]], &|t, x| t.add(x[0], x[1]));
    check("sub", &[&[3, 5], &[3, 5]], &|t, x| t.sub(x[0], x[1]));
    check("mul", &[&[3, 5], &[3, 5]], &|t, x| t.mul(x[0], x[1]));
    check("x·x", &[&[3, 5]], &|t, x| t.mul(x[0], x[0]));
    check("x+x", &[&[3, 5]], &|t, x| t.add(x[0], x[0]));
}

#[test]
fn layernorm() {
    check("layernorm", &[&[3, 5, 7], &[7], &[7]], &|t, x| t.layernorm(x[0], x[1], x[2], 1e-5));
    check("layernorm bert eps", &[&[6, 11], &[11], &[11]], &|t, x| t.layernorm(x[0], x[1], x[2], 1e-12));
}

#[test]
fn gelu() {
    check("gelu", &[&[3, 7]], &|t, x| t.gelu(x[0]));
}

#[test]
fn tanh_abs_scale_sum() {
    check("tanh", &[&[3, 7]], &|t, x| t.tanh(x[0]));
    check("abs", &[&[3, 7]], &|t, x| t.abs(x[0]));
    // Inside the bound, and (×3) mostly clamped, where the gradient is zero.
    check("atanh", &[&[3, 7]], &|t, x| {
        let y = t.scale(x[0], 0.3)?;
        t.atanh(y)
    });
    check("atanh clamped", &[&[3, 7]], &|t, x| {
        let y = t.scale(x[0], 3.0)?;
        t.atanh(y)
    });
    check("scale", &[&[3, 7]], &|t, x| t.scale(x[0], -2.5));
    check("sum", &[&[3, 7]], &|t, x| t.sum(x[0]));
}

#[test]
fn attention_softmax_with_padding() {
    check("softmax", &[&[2, 3, 5, 5]], &|t, x| {
        let mask = t.ints(&[1, 1, 1, 0, 0, 1, 1, 1, 1, 1], &[2, 5])?;
        t.attention_softmax(x[0], mask, 0.37)
    });
}

#[test]
fn dropout_with_saved_mask() {
    check("dropout", &[&[4, 9]], &|t, x| t.dropout(x[0], 0.3));
}

#[test]
fn embedding_with_repeated_ids() {
    check("embedding", &[&[11, 6], &[7, 6], &[2, 6]], &|t, x| {
        let ids = t.ints(&[3, 5, 3, 0, 10, 5, 5, 2, 9, 3], &[2, 5])?;
        let types = t.ints(&[0, 0, 0, 1, 1, 0, 1, 1, 1, 1], &[2, 5])?;
        t.embedding(ids, types, x[0], x[1], x[2])
    });
}

#[test]
fn pooling() {
    check("mean_pool", &[&[3, 5, 7]], &|t, x| {
        let mask = t.ints(&[1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], &[3, 5])?;
        t.mean_pool(x[0], mask)
    });
    check("first_token", &[&[3, 5, 7]], &|t, x| t.first_token(x[0]));
}

#[test]
fn cosine() {
    check("cosine", &[&[4, 7], &[4, 7]], &|t, x| t.cosine(x[0], x[1]));
}

#[test]
fn gather_rows() {
    // Distinct rows out of order; rows 1, 3 and 5 are never read: their gradient is exactly zero.
    check("gather_rows", &[&[7, 5]], &|t, x| {
        let rows = t.ints(&[4, 0, 6, 2], &[4])?;
        t.gather_rows(x[0], rows)
    });
}

#[test]
fn concat() {
    check("concat", &[&[3, 2], &[3, 5], &[3, 1]], &|t, x| t.concat(&[x[0], x[1], x[2]]));
    check("concat self", &[&[3, 2]], &|t, x| t.concat(&[x[0], x[0]]));
}

#[test]
fn split_and_merge_heads() {
    check("split_heads", &[&[2, 5, 6]], &|t, x| t.split_heads(x[0], 3));
    check("merge_heads", &[&[2, 3, 5, 2]], &|t, x| t.merge_heads(x[0]));
    // q, k, v out of one fused projection: three column ranges of a (B, T, 3C) tensor
    check("split_heads_cols", &[&[2, 5, 18]], &|t, x| {
        let q = t.split_heads_cols(x[0], 0, 6, 3)?;
        let k = t.split_heads_cols(x[0], 6, 6, 3)?;
        let v = t.split_heads_cols(x[0], 12, 6, 3)?;
        let qk = t.mul(q, k)?;
        t.mul(qk, v)
    });
}

#[test]
fn losses() {
    check("cross_entropy", &[&[4, 5]], &|t, x| {
        let labels = t.ints(&[1, 4, 0, 1], &[4])?;
        t.cross_entropy(x[0], labels)
    });
    check("bce_with_logits", &[&[5, 1]], &|t, x| {
        let y = t.constant(&[1.0, 0.0, 0.0, 1.0, 0.3], &[5])?;
        t.bce_with_logits(x[0], y)
    });
    check("mse", &[&[6]], &|t, x| {
        let y = t.constant(&[0.0, 1.5, 5.0, 2.2, 3.1, 4.0], &[6])?;
        t.mse(x[0], y)
    });
}

#[test]
fn symmetric_kl() {
    // Both sides take a gradient (SMART's clean and perturbed passes), classes and sigmoid logits.
    check("symmetric_kl classes", &[&[4, 5], &[4, 5]], &|t, x| t.symmetric_kl(x[0], x[1]));
    check("symmetric_kl sigmoid (B, 1)", &[&[6, 1], &[6, 1]], &|t, x| t.symmetric_kl(x[0], x[1]));
    check("symmetric_kl sigmoid (B)", &[&[7], &[7]], &|t, x| t.symmetric_kl(x[0], x[1]));
    // A constant side (a teacher's outputs).
    check("symmetric_kl against a constant", &[&[3, 4]], &|t, x| {
        let q = t.constant(&[0.3, -1.2, 2.0, 0.1, 0.0, 0.5, -0.5, 1.5, 2.2, -3.0, 0.7, 0.9], &[3, 4])?;
        t.symmetric_kl(x[0], q)
    });
}

/// Sequences of 4, 0, 1, 6 and 2 rows in 17, out of row order, one in the middle of the rows,
/// rows 6, 7 and 14 in none.
const SPANS: [(usize, usize); 5] = [(8, 6), (4, 0), (5, 1), (0, 4), (15, 2)];

/// The recurrence on inputs scaled into the cells' unsaturated range (N(0, 1) pre-activations of
/// a few units would flatten σ and tanh), so that the gradients reach back over every step.
fn recurrent(t: &mut Tape<f64>, cell: Cell, gx: Tensor, w: Tensor, b: Tensor) -> engine::Result<Tensor> {
    let spans = Spans::new(t, &SPANS)?;
    let gx = t.scale(gx, 0.6)?;
    let w = t.scale(w, 0.5)?;
    t.recurrent(cell, gx, w, b, &spans)
}

#[test]
fn recurrent_cells() {
    // H = 5 over R = 17 rows: gx (R, G·H), w_hh (G·H, H), b_hh (G·H)
    check("lstm", &[&[17, 20], &[20, 5], &[20]], &|t, x| recurrent(t, Cell::Lstm, x[0], x[1], x[2]));
    check("rnn", &[&[17, 5], &[5, 5], &[5]], &|t, x| recurrent(t, Cell::Rnn, x[0], x[1], x[2]));
}

#[test]
fn recurrent_head_with_its_input_projection() {
    // The whole head: gx = x (R, IN) · w_ihᵀ + b_ih, then the recurrence; every weight checked.
    for (cell, name) in [(Cell::Lstm, "linear + lstm"), (Cell::Rnn, "linear + rnn")] {
        let gh = cell.gates() * 5;
        check(name, &[&[17, 7], &[gh, 7], &[gh], &[gh, 5], &[gh]], &|t, x| {
            let gx = t.linear(x[0], x[1], x[2])?;
            recurrent(t, cell, gx, x[3], x[4])
        });
    }
}

#[test]
fn lora_linear() {
    // x (B, T, IN) · wᵀ + b + (α/R)·B(A dropout(x)): R = 2, α = 3, dropout 0.2, every input checked
    // (the base weight too: the op is right whether or not it is frozen).
    let lora = Lora {
        config: LoraConfig { rank: 2, alpha: 3.0, dropout: 0.2, targets: vec![Target::Query] },
        layers: Vec::new(),
        form: Form::Beside,
    };
    check("lora linear", &[&[2, 5, 7], &[3, 7], &[3], &[2, 7], &[3, 2]], &|t, x| {
        let y = t.linear(x[0], x[1], x[2])?;
        let d = lora.delta(t, Adapter { a: x[3], b: x[4] }, x[0])?;
        t.add(y, d)
    });
}

#[test]
fn lora_linear_folded() {
    // x (B, T, IN) · (w + s·Σ B·A)ᵀ + b, two adapters on bands of a (9, 7) weight (rows 0..3 and
    // 6..9, as the query and value of a fused projection): every input checked, w too.
    check("lora linear folded", &[&[2, 5, 7], &[9, 7], &[9], &[2, 7], &[3, 2], &[2, 7], &[3, 2]], &|t, x| {
        let bands = [Band { row: 0, a: x[3], b: x[4] }, Band { row: 6, a: x[5], b: x[6] }];
        t.lora_linear(x[0], x[1], x[2], &bands, 1.5)
    });
}

/// With the adapters' dropout off, training runs them folded into the base weights.
#[test]
fn tiny_bert_with_folded_lora_on_every_linear() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    tape.set_training(true);
    tape.set_seed(78);
    let cfg = LoraConfig { rank: 3, alpha: 6.0, dropout: 0.0, targets: Target::ALL.to_vec() };
    let model = tiny_bert::build_with(&mut tape, 5, Some(&cfg));
    let params: Vec<Tensor> = tape.store.params().filter(|(_, t)| t.requires_grad).map(|(_, t)| t).collect();
    let build = |t: &mut Tape<f64>, _: &[Tensor]| tiny_bert::three_task_loss(t, &model);
    let worst = check_tape("tiny bert + folded lora", &mut tape, &params, &build);
    assert!(tape.ops().iter().any(|op| matches!(op, Op::LoraLinear(_))), "the adapters did not run folded");
    println!("tiny BERT with folded LoRA, {} trainable tensors: worst relative error {worst:.3e}", params.len());
}

#[test]
fn tiny_bert_with_lora_on_every_linear() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    tape.set_training(true);
    // Seed 77 fails on a few tensors at ~1e-3 and passes with the adapters' dropout off: its masks
    // put the loss within the step h of a kink (|u − v| in the Quora features is the only one).
    tape.set_seed(78);
    let targets = Target::ALL.to_vec();
    let cfg = LoraConfig { rank: 3, alpha: 6.0, dropout: 0.1, targets: targets.clone() };
    let model = tiny_bert::build_with(&mut tape, 5, Some(&cfg));
    // Trainable: 2 layers × 6 targets × (A, B), and the two heads; the encoder is frozen.
    let params: Vec<Tensor> = tape.store.params().filter(|(_, t)| t.requires_grad).map(|(_, t)| t).collect();
    assert_eq!(params.len(), 2 * targets.len() * 2 + 4);
    let build = |t: &mut Tape<f64>, _: &[Tensor]| tiny_bert::three_task_loss(t, &model);
    let worst = check_tape("tiny bert + lora", &mut tape, &params, &build);
    println!("tiny BERT with LoRA, {} trainable tensors: worst relative error {worst:.3e}", params.len());
}

#[test]
fn tiny_bert_three_losses_every_parameter() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    tape.set_training(true); // dropout on: its masks are fixed by the seed, so they are part of L
    tape.set_seed(1234);
    let model = tiny_bert::build(&mut tape, 3);
    let params: Vec<(String, Tensor)> = tape.store.params().map(|(n, t)| (n.to_string(), t)).collect();
    assert_eq!(params.len(), 5 + 16 * 2 + 2 + 4);
    // Every element of every parameter tensor (rows of the word table the batch never reads
    // must come out exactly zero on both sides).
    let inputs: Vec<Tensor> = params.iter().map(|(_, t)| *t).collect();
    let build = |t: &mut Tape<f64>, _: &[Tensor]| tiny_bert::three_task_loss(t, &model);
    let worst = check_tape("tiny bert", &mut tape, &inputs, &build);
    // The key bias's gradient is exactly zero in theory; the tape must find (almost) that.
    let key_bias = tape.store.param("encoder.layer.1.attention.self.key.bias").unwrap();
    let g: f64 = tape.store.read_grad(key_bias).unwrap().iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(g < 1e-12, "key bias gradient {g:e}");
    println!("tiny BERT, {} parameter tensors: worst relative error {worst:.3e}", inputs.len());
}

/// The masked-LM loss of the tiny BERT on a packed batch with [MASK]ed inputs, against the word
/// table, which both the embedding lookup and the tied decoder read (their two gradients must
/// add up in its one slot), and every parameter of the head.
#[test]
fn tiny_bert_masked_lm_with_the_tied_decoder() {
    let mut tape = Tape::<f64>::new(Device::Cpu);
    tape.set_training(true); // dropout on, its masks fixed by the seed
    tape.set_seed(4321);
    let model = tiny_bert::build(&mut tape, 7);
    let mut rng = Rng::new(8);
    let head = MlmHead::register(&mut tape.store, &tiny_bert::config(), &mut |_, dims, kind| {
        let mut v: Vec<f64> = init(&mut rng, dims, ParamKind::Weight, 0.3);
        if kind == ParamKind::NormGain {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(v)
    })
    .unwrap();
    // Sequences of 4, 9, 1, 6 and 3 tokens, packed: token t of sequence b is row cu[b] + t.
    let mut e = tiny_bert::ragged_batch();
    let cu = [0, 4, 13, 14, 20, 23];
    let chosen = [(0, 2), (1, 1), (1, 5), (1, 8), (3, 0), (3, 3), (4, 2)];
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for (i, &(b, t)) in chosen.iter().enumerate() {
        rows.push((cu[b] + t) as i32);
        labels.push(e.ids[b * e.len + t]);
        if i % 3 != 2 {
            e.ids[b * e.len + t] = 4; // [MASK]; every third chosen token is left as it was
        }
    }
    let word = model.bert.emb.word;
    let inputs = [word, head.dense_w, head.dense_b, head.ln_g, head.ln_b, head.bias];
    let build = |t: &mut Tape<f64>, _: &[Tensor]| {
        let input = EncoderInput::packed(t, &e)?;
        let hidden = model.bert.encode(t, &input, 2)?; // (23, 32)
        let (r, l) = (t.ints(&rows, &[rows.len()])?, t.ints(&labels, &[labels.len()])?);
        head.loss(t, &model.bert, hidden, r, l)
    };
    let worst = check_tape("tiny bert masked lm", &mut tape, &inputs, &build);
    assert!(tape.ops().iter().any(|op| matches!(op, Op::GatherRows(_))), "the head ran on every row");
    // The decoder reaches every row of the table; the lookup only the rows of the batch's ids.
    let g = tape.store.read_grad(word).unwrap();
    let row_norm = |id: usize| g[id * 32..(id + 1) * 32].iter().map(|v| v * v).sum::<f64>().sqrt();
    let unread = (0..100).find(|id| !e.ids.contains(&(*id as i32))).unwrap();
    assert!(row_norm(unread) > 0.0, "the tied decoder sent no gradient to word row {unread}");
    println!("tiny BERT masked-LM loss, word table and head: worst relative error {worst:.3e}");
}
