//! SMART (train/smart.rs): float64 gradient checks of the tiny BERT's SMART objective (all three
//! smoothness losses, perturbed passes on the clean pass's dropout masks) and of the ascent step
//! (the gradient of δ, no parameter gradient, the update, and that it raises ℓ_s); the engine's
//! objective at δ = 0 against the plain one bit for bit; `engine finetune --smart` end to end
//! (its records, the Bregman teacher across --resume, bad values refused).

mod common;
use common::gradcheck::{H, check_tape};
use common::runs::{finetune_cpu as finetune, finetune_refused, records, scratch, step_losses, tiny_data, tiny_model};
use common::tiny_bert::{self, TinyModel};
use engine::data::Tokenizer;
use engine::data::cs224n::{self, Split, Task};
use engine::model::Checkpoint;
use engine::model::heads;
use engine::model::input::EncoderInput;
use engine::rng::Rng;
use engine::train::TrainOptions;
use engine::train::model::MultiTaskModel;
use engine::train::smart::{self, Smart, SmartConfig, SmartNorm};
use engine::train::trainer::train_task;
use engine::{Device, Result, Tape, Tensor};

/// One sequence batch of the tiny BERT, kept after its embeddings: what a perturbed pass reuses.
struct Kept {
    input: EncoderInput,
    x: Tensor,
    stream: u64,
}

fn embed(t: &mut Tape<f64>, m: &TinyModel, ids: &[i32], mask: &[i32], b: usize) -> Result<Kept> {
    let n = ids.len() / b;
    let (i, ty, ma) = (t.ints(ids, &[b, n])?, t.ints(&vec![0; ids.len()], &[b, n])?, t.ints(mask, &[b, n])?);
    let input = EncoderInput::padded(t, i, ty, ma)?;
    let x = m.bert.embed(t, &input)?;
    Ok(Kept { input, x, stream: t.stream() })
}

/// The encoder on kept embeddings, plus δ when given, on the kept dropout streams.
fn encode(t: &mut Tape<f64>, m: &TinyModel, k: &Kept, delta: Option<Tensor>) -> Result<Tensor> {
    // Both passes continue from the kept stream (the engine runs each batch's layers right after
    // its embeddings; here every batch is embedded first).
    t.set_stream(k.stream);
    let x = match delta {
        Some(d) => t.add(k.x, d)?,
        None => k.x,
    };
    m.bert.layers(t, x, &k.input, m.bert.layers.len())
}

/// The three tasks' outputs (SST logits (3, 5), Quora logits (2, 1) of each side alone, STS
/// scores (2)) from the kept batches, each perturbed by its δ when `deltas` are given.
fn outputs(t: &mut Tape<f64>, m: &TinyModel, kept: &[Kept], deltas: Option<&[Tensor]>) -> Result<[Tensor; 3]> {
    let mut h = Vec::new();
    for (i, k) in kept.iter().enumerate() {
        h.push(encode(t, m, k, deltas.map(|d| d[i]))?);
    }
    let pooled = m.bert.pool(t, h[0])?;
    let sst = heads::classify(t, &m.sst, pooled)?;
    let (u, v) = (m.bert.pool(t, h[1])?, m.bert.pool(t, h[2])?);
    let quora = heads::paraphrase_logits(t, &m.para, u, v)?;
    let mask = |k: &Kept| match k.input.layout {
        engine::model::input::Layout::Padded { mask, .. } => mask,
        _ => unreachable!("padded"),
    };
    let (a, b) = (t.mean_pool(h[3], mask(&kept[3]))?, t.mean_pool(h[4], mask(&kept[4]))?);
    let sts = heads::similarity(t, a, b)?;
    Ok([sst, quora, sts])
}

/// The five sequence batches (SST; Quora's two sides; STS's two sides), padded.
fn keep_all(t: &mut Tape<f64>, m: &TinyModel) -> Result<Vec<Kept>> {
    Ok(vec![
        embed(
            t,
            m,
            &[2, 17, 45, 3, 0, 0, 2, 8, 8, 91, 60, 3, 2, 33, 3, 0, 0, 0],
            &[1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
            3,
        )?,
        embed(t, m, &[2, 11, 12, 13, 3, 2, 70, 71, 3, 0], &[1, 1, 1, 1, 1, 1, 1, 1, 1, 0], 2)?,
        embed(t, m, &[2, 11, 99, 3, 0, 2, 70, 72, 73, 3], &[1, 1, 1, 1, 0, 1, 1, 1, 1, 1], 2)?,
        embed(t, m, &[2, 40, 41, 42, 3, 2, 50, 3, 0, 0], &[1, 1, 1, 1, 1, 1, 1, 1, 0, 0], 2)?,
        embed(t, m, &[2, 40, 43, 3, 0, 2, 51, 52, 53, 3], &[1, 1, 1, 1, 0, 1, 1, 1, 1, 1], 2)?,
    ])
}

const TASKS: [Task; 3] = [Task::Sst, Task::Quora, Task::Sts];

/// Σ over tasks of λ·ℓ_s(perturbed, clean) (+ the task losses when `with_task`).
fn smart_objective(t: &mut Tape<f64>, m: &TinyModel, deltas: &[Tensor], with_task: bool) -> Result<Tensor> {
    let kept = keep_all(t, m)?;
    let clean = outputs(t, m, &kept, None)?;
    let pert = outputs(t, m, &kept, Some(deltas))?;
    let mut total = None;
    for (i, task) in TASKS.into_iter().enumerate() {
        let s = smart::smoothness(t, task, pert[i], clean[i])?;
        let mut term = t.scale(s, 3.0)?;
        if with_task {
            let l = match task {
                Task::Sst => {
                    let y = t.ints(&[4, 0, 2], &[3])?;
                    t.cross_entropy(clean[i], y)?
                }
                Task::Quora => {
                    let y = t.constant(&[1.0, 0.0], &[2, 1])?;
                    t.bce_with_logits(clean[i], y)?
                }
                _ => {
                    let y = t.constant(&[3.8, 1.2], &[2])?;
                    t.mse(clean[i], y)?
                }
            };
            term = t.add(term, l)?;
        }
        total = Some(match total {
            None => term,
            Some(s) => t.add(s, term)?,
        });
    }
    Ok(total.expect("three tasks"))
}

/// Fixed perturbations (constants) of the five kept batches' shapes, N(0, σ²).
fn fixed_deltas(t: &mut Tape<f64>, sigma: f64) -> Vec<Tensor> {
    let mut rng = Rng::new(41);
    [[3, 6, 32], [2, 5, 32], [2, 5, 32], [2, 5, 32], [2, 5, 32]]
        .iter()
        .map(|dims| {
            let v: Vec<f64> = (0..dims.iter().product()).map(|_| rng.normal() * sigma).collect();
            t.constant(&v, dims).unwrap()
        })
        .collect()
}

#[test]
fn gradient_of_the_smart_objective_on_the_tiny_bert() {
    // δ large enough (σ 0.3, λ 3) that ℓ_s counts in every parameter's gradient; dropout on.
    // Every tensor but the word table, whose FD sweep would be most of the test's time (its
    // gradient is the embeddings' output's, which the position and type tables check as well).
    for with_task in [true, false] {
        let mut tape = Tape::<f64>::new(Device::Cpu);
        tape.set_training(true);
        tape.set_seed(2024);
        let model = tiny_bert::build(&mut tape, 3);
        let params: Vec<Tensor> =
            tape.store.params().filter(|(n, _)| !n.contains("word_embeddings")).map(|(_, t)| t).collect();
        let build = |t: &mut Tape<f64>, _: &[Tensor]| {
            let deltas = fixed_deltas(t, 0.3);
            smart_objective(t, &model, &deltas, with_task)
        };
        let name = if with_task { "tiny bert: task losses + 3·ℓ_s" } else { "tiny bert: 3·ℓ_s alone" };
        let worst = check_tape(name, &mut tape, &params, &build);
        println!("{name}: worst relative error {worst:.3e}");
    }
}

#[test]
fn perturbed_passes_drop_what_the_clean_pass_dropped() {
    // δ = 0 on the kept streams: every output equals the clean pass's bit for bit, so ℓ_s = 0.
    let mut t = Tape::<f64>::new(Device::Cpu);
    t.set_training(true);
    t.set_seed(7);
    let m = tiny_bert::build(&mut t, 3);
    let kept = keep_all(&mut t, &m).unwrap();
    let clean = outputs(&mut t, &m, &kept, None).unwrap();
    let zeros = fixed_deltas(&mut t, 0.0);
    let pert = outputs(&mut t, &m, &kept, Some(&zeros)).unwrap();
    for (c, p) in clean.iter().zip(&pert) {
        assert_eq!(t.store.read(*c).unwrap(), t.store.read(*p).unwrap());
    }
    // …and on other streams the masks differ (so the test can fail).
    let shifted = Kept { input: kept[0].input.clone(), x: kept[0].x, stream: kept[0].stream + 5 };
    let (a, b) = (encode(&mut t, &m, &kept[0], None).unwrap(), encode(&mut t, &m, &kept[0], None).unwrap());
    let other = encode(&mut t, &m, &shifted, None).unwrap();
    assert_eq!(t.store.read(a).unwrap(), t.store.read(b).unwrap());
    assert_ne!(t.store.read(a).unwrap(), t.store.read(other).unwrap());
}

#[test]
fn the_ascent_step_follows_the_gradient_of_delta_and_raises_the_smoothness_loss() {
    let mut t = Tape::<f64>::new(Device::Cpu);
    t.set_training(true);
    t.set_seed(99);
    let model = tiny_bert::build(&mut t, 3);
    let frozen = TinyModel { bert: model.bert.detached(), sst: detach(model.sst), para: detach(model.para) };
    // ℓ_s of the SST batch as a function of δ, the clean logits and the parameters constants.
    let kept = keep_all(&mut t, &model).unwrap();
    let clean = outputs(&mut t, &model, &kept, None).unwrap()[0].detached();
    let loss_at = |t: &mut Tape<f64>, delta: Tensor| -> f64 {
        let mark = t.mark();
        let h = encode(t, &frozen, &kept[0], Some(delta)).unwrap();
        let pooled = frozen.bert.pool(t, h).unwrap();
        let logits = heads::classify(t, &frozen.sst, pooled).unwrap();
        let l = smart::smoothness(t, Task::Sst, logits, clean).unwrap();
        let v = t.store.read(l).unwrap()[0];
        t.rewind(mark);
        v
    };
    let mut rng = Rng::new(5);
    let d0: Vec<f64> = (0..3 * 6 * 32).map(|_| rng.normal() * 0.01).collect();
    let delta = t.store.alloc_act(engine::tensor::Shape::new(&[3, 6, 32]).unwrap(), true).unwrap();
    t.store.write(delta, &d0).unwrap();

    // The ascent pass: gradient of δ only, from the ops since the mark.
    t.store.zero_grads().unwrap();
    let mark = t.mark();
    let h = encode(&mut t, &frozen, &kept[0], Some(delta)).unwrap();
    let pooled = frozen.bert.pool(&mut t, h).unwrap();
    let logits = heads::classify(&mut t, &frozen.sst, pooled).unwrap();
    let l = smart::smoothness(&mut t, Task::Sst, logits, clean).unwrap();
    t.backward_since(mark, l, &[delta]).unwrap();
    let g = t.store.read_grad(delta).unwrap();
    t.rewind(mark);
    let param_grads = t.store.grads().read(0..t.store.num_trainable()).unwrap();
    assert!(param_grads.iter().all(|&v| v == 0.0), "the ascent pass wrote a parameter gradient");

    // Against central differences over every element of δ.
    let (mut diff, mut norm) = (0.0, 0.0);
    let mut values = d0.clone();
    for j in 0..values.len() {
        values[j] = d0[j] + H;
        t.store.write(delta, &values).unwrap();
        let lp = loss_at(&mut t, delta.detached());
        values[j] = d0[j] - H;
        t.store.write(delta, &values).unwrap();
        let lm = loss_at(&mut t, delta.detached());
        values[j] = d0[j];
        let fd = (lp - lm) / (2.0 * H);
        diff += (g[j] - fd).powi(2);
        norm += fd * fd;
    }
    t.store.write(delta, &d0).unwrap();
    let rel = diff.sqrt() / norm.sqrt().max(1e-12);
    println!("∂ℓ_s/∂δ: ‖g‖ {:.3e}, relative error {rel:.3e}", norm.sqrt());
    assert!(norm.sqrt() > 1e-6 && rel <= 1e-6, "δ's gradient: relative error {rel:e}");
    // Padded positions never reach a real token: their gradient is exactly zero.
    assert!(g[4 * 32..6 * 32].iter().all(|&v| v == 0.0), "sequence 0, positions 4 and 5");

    // The update, against the formula.
    let (eta, eps) = (0.05, 0.03);
    smart::ascend(&mut t.store, delta, SmartNorm::Project, eta, eps).unwrap();
    let d1 = t.store.read(delta).unwrap();
    for (r, (row, grow)) in d0.chunks(32).zip(g.chunks(32)).enumerate() {
        let m = grow.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for j in 0..32 {
            let step = if m > 0.0 { eta * (grow[j] / m) } else { 0.0 };
            let want = (row[j] + step).clamp(-eps, eps);
            assert_eq!(d1[r * 32 + j], want, "row {r} element {j}");
        }
    }
    // The ascent raises ℓ_s, and more than a random step of the same size does.
    let l_ascent = loss_at(&mut t, delta.detached());
    t.store.write(delta, &d0).unwrap();
    let l_start = loss_at(&mut t, delta.detached());
    let random: Vec<f64> =
        d0.iter().map(|&v| (v + eta * if rng.uniform() < 0.5 { -1.0 } else { 1.0 }).clamp(-eps, eps)).collect();
    t.store.write(delta, &random).unwrap();
    let l_random = loss_at(&mut t, delta.detached());
    println!("ℓ_s: at δ₀ {l_start:.3e}, after the ascent {l_ascent:.3e}, after a random step {l_random:.3e}");
    assert!(l_ascent > 1.5 * l_start && l_ascent > l_random, "the ascent did not raise ℓ_s");
    // Normalizing instead (the reference implementations): δ ← (δ + η·g)/(‖δ + η·g‖∞ + ε) per row.
    t.store.write(delta, &d0).unwrap();
    t.store.write_grad(delta, &g).unwrap();
    smart::ascend(&mut t.store, delta, SmartNorm::Normalize, eta, 1e-6).unwrap();
    let d2 = t.store.read(delta).unwrap();
    for (r, (row, grow)) in d0.chunks(32).zip(g.chunks(32)).enumerate() {
        let v: Vec<f64> = row.iter().zip(grow).map(|(d, g)| d + eta * g).collect();
        let m = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        for j in 0..32 {
            assert_eq!(d2[r * 32 + j], v[j] / (m + 1e-6), "normalized row {r} element {j}");
        }
    }
}

fn detach(h: heads::LinearHead) -> heads::LinearHead {
    heads::LinearHead { w: h.w.detached(), b: h.b.detached() }
}

/// The engine's tiny model and one batch per task from the tiny data.
fn engine_model(tag: &str, opts: &TrainOptions) -> (Tape<f32>, MultiTaskModel, Vec<engine::train::model::Batch>) {
    let (dir, data) = (tiny_model(tag), tiny_data(8, tag));
    let ckpt = Checkpoint::open(&dir).unwrap();
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let model = MultiTaskModel::build(&mut tape.store, &ckpt, None, opts, true).unwrap();
    let mut tok = Tokenizer::from_dir(&dir).unwrap();
    let batches = opts
        .tasks
        .iter()
        .map(|&task| {
            let d = cs224n::read(task, &task.path(&data, Split::Train), Split::Train, "", false).unwrap();
            let refs: Vec<_> = d.examples.iter().take(6).collect();
            model.batch(&mut tok, task, &refs).unwrap()
        })
        .collect();
    tape.set_training(true);
    (tape, model, batches)
}

#[test]
fn smart_at_zero_perturbation_is_the_plain_objective_bit_for_bit() {
    // σ = 0 and no ascent: δ = 0, so ℓ_s and its gradient are exactly 0 (the perturbed pass
    // repeats the clean one's masks), and the parameter gradient is the plain one's bits.
    for pair in ["joint", "separate"] {
        let mut opts = TrainOptions::default();
        if pair == "separate" {
            opts.pair_encoding = engine::train::options::PairEncoding::Separate;
        }
        let (mut tape, model, batches) = engine_model(&format!("smart-zero-{pair}"), &opts);
        let mut config = SmartConfig::new(3);
        config.noise = 0.0;
        config.steps = 0;
        let mut smart = Smart::new(config, &mut tape.store).unwrap();
        let run = |tape: &mut Tape<f32>, s: Option<&mut Smart>, t: usize| {
            tape.store.zero_grads().unwrap();
            tape.set_seed(31 + t as u64);
            let losses = train_task(tape, &model, &batches[t], t, None, s, 1.0).unwrap();
            let l = tape.store.read(losses.loss).unwrap()[0];
            let reg = losses.smoothness.map(|r| tape.store.read(r).unwrap()[0]);
            (l, reg, tape.store.grads().read(0..tape.store.num_trainable()).unwrap())
        };
        for t in 0..3 {
            let (l_plain, none, g_plain) = run(&mut tape, None, t);
            let (l_smart, reg, g_smart) = run(&mut tape, Some(&mut smart), t);
            assert!(none.is_none());
            assert_eq!(reg, Some(0.0), "{pair} task {t}: ℓ_s at δ = 0");
            assert_eq!(l_plain.to_bits(), l_smart.to_bits(), "{pair} task {t}: loss");
            let differ = g_plain.iter().zip(&g_smart).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{pair} task {t}: {differ} gradient values differ");
        }
        // With the defaults the ascent runs, ℓ_s is positive and the gradient moves.
        let mut smart = Smart::new(SmartConfig::new(3), &mut tape.store).unwrap();
        let (_, _, g_plain) = run(&mut tape, None, 0);
        let (_, reg, g_smart) = run(&mut tape, Some(&mut smart), 0);
        assert!(reg.unwrap() > 0.0 && reg.unwrap().is_finite(), "{reg:?}");
        assert_ne!(g_plain, g_smart);
    }
}

#[test]
fn the_teacher_follows_its_momentum_and_starts_at_no_distance() {
    let opts = TrainOptions::default();
    let (mut tape, model, batches) = engine_model("smart-teacher", &opts);
    let config = SmartConfig { bregman: 2.0, beta: 0.75, noise: 0.0, steps: 0, ..SmartConfig::new(3) };
    let mut smart = Smart::new(config, &mut tape.store).unwrap();
    let n = tape.store.num_trainable();
    let theta0 = tape.store.params_and_grads_mut().0.read(0..n).unwrap();
    assert_eq!(smart.state().unwrap().unwrap(), theta0, "the teacher starts as θ");
    // θ̃ = θ and δ = 0: the proximal term is 0 and the objective is the task loss.
    tape.set_seed(3);
    let o = smart.objective(&mut tape, &model, &batches[0], 0).unwrap();
    let (l, total) = (tape.store.read(o.task_loss).unwrap()[0], tape.store.read(o.total).unwrap()[0]);
    assert_eq!(l, total);
    // Move θ, then θ̃ ← (1−β)θ + βθ̃.
    let theta1: Vec<f32> = theta0.iter().enumerate().map(|(i, v)| v + 0.01 * ((i % 7) as f32 - 3.0)).collect();
    tape.store.params_and_grads_mut().0.write(0, &theta1).unwrap();
    smart.after_step(&mut tape.store).unwrap();
    let teacher = smart.state().unwrap().unwrap();
    for i in (0..n).step_by(997) {
        let want = 0.75 * theta0[i] + 0.25 * theta1[i];
        assert!((teacher[i] - want).abs() <= 1e-6 * (1.0 + want.abs()), "{i}: {} vs {want}", teacher[i]);
    }
    // Now θ̃ ≠ θ: the proximal term is positive.
    tape.reset();
    let o = smart.objective(&mut tape, &model, &batches[0], 0).unwrap();
    let (l, total) = (tape.store.read(o.task_loss).unwrap()[0], tape.store.read(o.total).unwrap()[0]);
    assert!(total > l, "{total} vs {l}");
}

#[test]
fn finetune_with_smart_logs_its_terms_and_resumes_exactly() {
    let (model, data) = (tiny_model("smart-run"), tiny_data(24, "smart-run"));
    let steps = [
        "--max-steps",
        "5",
        "--eval-every",
        "3",
        "--smart",
        "--smart-weight",
        "2,sts=10",
        "--smart-bregman",
        "1",
        "--smart-beta",
        "0.5",
        "--smart-eps",
        "0.1",
        "--smart-step",
        "0.05",
        "--smart-noise",
        "0.01",
    ];
    let full = scratch("smart-full");
    finetune(&model, &data, &full, &steps);
    let terms = records(&full, "smart");
    assert_eq!(terms.len(), 5, "one record per logged step");
    for r in &terms {
        let m = r["smoothness"].as_object().unwrap();
        assert_eq!(m.len(), 3, "{r}");
        assert!(m.values().all(|v| v.as_f64().unwrap() > 0.0), "{r}");
    }
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("last/train.json")).unwrap()).unwrap();
    assert_eq!(opts["smart"]["weights"], serde_json::json!([2.0, 2.0, 10.0]), "{opts}");
    assert_eq!(opts["smart"]["norm"], "normalize", "--smart normalizes unless told otherwise");
    // A train.json from before --smart-norm resumes as it began: projecting.
    let mut old = opts["smart"].clone();
    old.as_object_mut().unwrap().remove("norm");
    let old: SmartConfig = serde_json::from_value(old).unwrap();
    assert_eq!(old.norm, SmartNorm::Project);
    let st = engine::model::safetensors::SafeTensors::open(&full.join("last/optimizer.safetensors")).unwrap();
    assert!(st.info(smart::TEACHER).is_some(), "the teacher is kept in last/");

    let part = scratch("smart-part");
    let mut stop = steps.to_vec();
    stop.extend_from_slice(&["--stop-after", "2"]);
    finetune(&model, &data, &part, &stop);
    finetune(&model, &data, &part, &["--resume", part.join("last").to_str().unwrap()]);
    assert_eq!(step_losses(&full), step_losses(&part), "the resumed run's losses differ");
    assert_eq!(records(&full, "smart"), records(&part, "smart"), "the resumed run's smoothness terms differ");
    let weights = |d: &std::path::Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert!(weights(&full) == weights(&part), "final weights differ");

    // --smart-tasks: only the named task gets a term.
    let only = scratch("smart-only-sts");
    finetune(&model, &data, &only, &["--max-steps", "2", "--smart", "--smart-tasks", "sts"]);
    for r in records(&only, "smart") {
        assert_eq!(r["smoothness"].as_object().unwrap().keys().collect::<Vec<_>>(), ["sts"], "{r}");
    }
}

#[test]
fn bad_smart_values_are_refused_in_one_line() {
    let (model, data) = (tiny_model("smart-bad"), tiny_data(8, "smart-bad"));
    let run = |extra: &[&str]| finetune_refused(&model, &data, "smart-bad-out", extra);
    assert!(run(&["--smart", "--smart-weight", "sts=x"]).contains("--smart-weight"));
    assert!(run(&["--smart", "--smart-weight", "cfimdb=2"]).contains("cfimdb is not in --tasks"));
    assert!(run(&["--smart", "--smart-tasks", "cfimdb"]).contains("--smart-tasks"));
    assert!(run(&["--smart", "--smart-eps", "0"]).contains("--smart-eps"));
    assert!(run(&["--smart", "--smart-beta", "1"]).contains("--smart-beta"));
    assert!(run(&["--smart", "--smart-weight", "0"]).contains("every task's weight is 0"));
    assert!(run(&["--smart-weight", "2"]).contains("--smart"), "a SMART flag without --smart");
}
