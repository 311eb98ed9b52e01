//! CPU time of one multi-task training step of MiniLM (the default checkpoint, or a randomly
//! initialised model of its shape when it is not fetched) at batch 16 per task, 32 tokens: five
//! encoder passes of 16×32 (SST; Quora a and b; STS a and b), the three heads and losses, the
//! backward passes, and one AdamW step over every parameter. Median of 10 steps after 2 warm-up
//! steps, with the time split into forward, backward and optimizer.
//! PyTorch 2.15 takes a median 1234 ms for this step on a 2-core machine like CI's.
//! `cargo bench --bench cpu_step`

use engine::model::bert::{Bert, ParamKind, init};
use engine::model::checkpoint::default_model_dir;
use engine::model::heads::{self, LinearHead};
use engine::model::{BertConfig, Checkpoint};
use engine::optim::{AdamW, AdamWConfig};
use engine::rng::Rng;
use engine::{Device, Result, Tape, Tensor};
use std::time::Instant;

const B: usize = 16;
const T: usize = 32;

fn batch(tape: &mut Tape<f32>, rng: &mut Rng, vocab: usize) -> Result<[Tensor; 3]> {
    let mut ids: Vec<i32> = (0..B * T).map(|_| 1000 + rng.below(vocab - 1000) as i32).collect();
    for b in 0..B {
        ids[b * T] = 101; // [CLS]
        ids[b * T + T - 1] = 102; // [SEP]
    }
    Ok([tape.ints(&ids, &[B, T])?, tape.ints(&[0; B * T], &[B, T])?, tape.ints(&[1; B * T], &[B, T])?])
}

struct Model {
    bert: Bert,
    sst: LinearHead,
    para: LinearHead,
}

/// Forward of one task's loss (dropout on, as in training).
fn task_loss(tape: &mut Tape<f32>, m: &Model, task: usize, rng: &mut Rng) -> Result<Tensor> {
    let vocab = m.bert.config.vocab_size;
    let mut encode = |tape: &mut Tape<f32>| -> Result<(Tensor, Tensor)> {
        let [ids, types, mask] = batch(tape, rng, vocab)?;
        Ok((m.bert.forward(tape, ids, types, mask)?, mask))
    };
    match task {
        0 => {
            let (h, mask) = encode(tape)?;
            let pooled = tape.mean_pool(h, mask)?;
            let pooled = tape.dropout(pooled, 0.1)?;
            let logits = heads::classify(tape, &m.sst, pooled)?;
            let labels = tape.ints(&[2; B], &[B])?;
            tape.cross_entropy(logits, labels)
        }
        1 => {
            let (ha, ma) = encode(tape)?;
            let (hb, mb) = encode(tape)?;
            let (u, v) = (tape.mean_pool(ha, ma)?, tape.mean_pool(hb, mb)?);
            let logits = heads::paraphrase_logits(tape, &m.para, u, v)?;
            let y = tape.constant(&[1.0; B], &[B])?;
            tape.bce_with_logits(logits, y)
        }
        _ => {
            let (ha, ma) = encode(tape)?;
            let (hb, mb) = encode(tape)?;
            let (a, b) = (tape.mean_pool(ha, ma)?, tape.mean_pool(hb, mb)?);
            let s = heads::similarity(tape, a, b)?;
            let y = tape.constant(&[2.5; B], &[B])?;
            tape.mse(s, y)
        }
    }
}

fn main() -> Result<()> {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let mut rng = Rng::new(7);
    let (bert, source) = match default_model_dir() {
        Ok(dir) => (Checkpoint::open(&dir)?.load_bert(&mut tape.store, &|_| true)?, "the default checkpoint"),
        Err(_) => {
            let cfg = BertConfig::tiny(30522, 384, 6, 12, 1536, 512);
            (Bert::random(&mut tape.store, &cfg, 0.02, 1)?, "a random MiniLM-shaped model")
        }
    };
    let c = bert.config.hidden_size;
    let mut head = |name: &str, out: usize, inp: usize| -> Result<LinearHead> {
        Ok(LinearHead {
            w: tape.store.add_param(
                &format!("{name}.weight"),
                &[out, inp],
                &init(&mut rng, &[out, inp], ParamKind::Weight, 0.02),
                true,
            )?,
            b: tape.store.add_param(&format!("{name}.bias"), &[out], &vec![0.0; out], true)?,
        })
    };
    let (sst, para) = (head("head.sst", 5, c)?, head("head.para", 1, 4 * c)?);
    let model = Model { bert, sst, para };
    let mut opt = AdamW::new(&tape.store, AdamWConfig::default())?;
    tape.set_training(true);
    println!(
        "MiniLM ({source}) multi-task step on the CPU, {} threads: batch {B} per task, {T} tokens, 5 encoder passes",
        rayon::current_num_threads()
    );
    let mut steps = Vec::new();
    for step in 0..12 {
        let (mut fwd, mut bwd) = (0.0, 0.0);
        let start = Instant::now();
        tape.store.zero_grads()?;
        for task in 0..3 {
            tape.reset();
            tape.set_seed(step * 3 + task as u64);
            let t0 = Instant::now();
            let loss = task_loss(&mut tape, &model, task, &mut rng)?;
            let t1 = Instant::now();
            tape.backward(loss)?;
            fwd += (t1 - t0).as_secs_f64();
            bwd += t1.elapsed().as_secs_f64();
        }
        let t2 = Instant::now();
        opt.update(&mut tape.store, 1e-4)?;
        let adam = t2.elapsed().as_secs_f64();
        let total = start.elapsed().as_secs_f64();
        if step >= 2 {
            steps.push((total, fwd, bwd, adam));
        }
    }
    steps.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let (total, fwd, bwd, adam) = steps[steps.len() / 2];
    println!(
        "median step {:.1} ms: forward {:.1} ms, backward {:.1} ms, AdamW {:.1} ms",
        total * 1e3,
        fwd * 1e3,
        bwd * 1e3,
        adam * 1e3
    );
    println!("PyTorch 2.15 reference on a 2-core machine: 1234 ms; ratio {:.2}", total * 1e3 / 1234.0);
    Ok(())
}
