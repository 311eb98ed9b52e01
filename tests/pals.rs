//! PALs (model/pals.rs): float64 gradient checks of the tiny BERT with a task's PALs, padded and
//! packed; the packed forward equal to the padded one on the real tokens; PALs whose decoder is
//! zero leave the model as it was, bit for bit, dropout masks included; `engine finetune --pals` end to end (saved with
//! the heads, read back by eval, resumed exactly, with LoRA and with the encoder frozen), and bad
//! values refused.

mod common;
use common::gradcheck::check_tape;
use common::runs::{
    eval_cpu, finetune_cpu as finetune, finetune_refused, records, scratch, step_losses, tiny_data, tiny_model,
};
use common::tiny_bert::{self, TinyModel};
use engine::model::bert::{ParallelBranch, ParamKind, init};
use engine::model::heads;
use engine::model::pals::{PalsConfig, TaskPals};
use engine::model::{EncoderInput, Packing};
use engine::rng::Rng;
use engine::{Device, Result, Tape, Tensor};

/// The tiny BERT's PALs (d_s 12, 3 heads), weights N(0, 0.3²) and biases N(0, 0.3²) so that every
/// gradient is far from zero; `zero_decoder` makes V_D and its bias 0.
fn register_pals<F: engine::Float>(tape: &mut Tape<F>, zero_decoder: bool) -> TaskPals {
    let mut rng = Rng::new(17);
    let cfg = PalsConfig { dim: 12, heads: 3 };
    let mut source = |name: &str, dims: &[usize], _: ParamKind| -> Result<Vec<F>> {
        let v = init::<F>(&mut rng, dims, ParamKind::Weight, 0.3);
        Ok(if zero_decoder && name.contains("decoder") { vec![F::ZERO; v.len()] } else { v })
    };
    TaskPals::register(&mut tape.store, "head.sst.pals", 32, 2, &cfg, &mut source).unwrap()
}

/// SST's logits of the batch: mean pooling, the tiny model's SST head, the layers with `pals`.
fn logits<F: engine::Float>(
    t: &mut Tape<F>,
    m: &TinyModel,
    pals: Option<&TaskPals>,
    packing: Packing,
) -> Result<Tensor> {
    let input = EncoderInput::new(t, &tiny_bert::ragged_batch(), packing)?;
    let x = m.bert.embed(t, &input)?;
    let h = m.bert.layers_with(t, x, &input, 2, pals.map(|p| p as &dyn ParallelBranch<F>))?;
    let pooled = engine::model::bert::mean_pool(t, h, &input)?;
    heads::classify(t, &m.sst, pooled)
}

#[test]
fn gradient_of_the_tiny_bert_with_pals() {
    for packing in [Packing::Padded, Packing::Packed] {
        let mut tape = Tape::<f64>::new(Device::Cpu);
        tape.set_training(true); // the encoder's dropout on
        tape.set_seed(77);
        let model = tiny_bert::build(&mut tape, 3);
        let pals = register_pals(&mut tape, false);
        // Every tensor but the word table (its gradient is the embeddings' output's).
        let params: Vec<Tensor> =
            tape.store.params().filter(|(n, _)| !n.contains("word_embeddings")).map(|(_, t)| t).collect();
        assert_eq!(tape.store.params().filter(|(n, _)| n.contains(".pals.")).count(), 4 + 2 * 6);
        let build = |t: &mut Tape<f64>, _: &[Tensor]| {
            let l = logits(t, &model, Some(&pals), packing)?;
            let y = t.ints(&[4, 0, 2, 1, 3], &[5])?;
            t.cross_entropy(l, y)
        };
        let worst = check_tape(&format!("tiny bert + PALs, {packing:?}"), &mut tape, &params, &build);
        println!("{packing:?}: worst relative error {worst:.3e}");
    }
}

#[test]
fn pals_give_the_same_numbers_packed_and_padded() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    tape.set_training(true);
    tape.set_seed(5);
    let model = tiny_bert::build(&mut tape, 3);
    let pals = register_pals(&mut tape, false);
    let run = |t: &mut Tape<f32>, packing| {
        t.reset();
        let l = logits(t, &model, Some(&pals), packing).unwrap();
        t.store.read(l).unwrap()
    };
    let (padded, packed) = (run(&mut tape, Packing::Padded), run(&mut tape, Packing::Packed));
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let diff: Vec<f32> = padded.iter().zip(&packed).map(|(a, b)| a - b).collect();
    let rel = norm(&diff) / norm(&padded);
    println!("packed vs padded logits: relative {rel:.2e}");
    assert!(rel <= 1e-5, "{rel:e}");
    // …and the PALs change the logits (so the comparison can fail).
    tape.reset();
    let plain = logits(&mut tape, &model, None, Packing::Packed).unwrap();
    assert_ne!(tape.store.read(plain).unwrap(), packed);
}

#[test]
fn pals_with_a_zero_decoder_leave_the_model_as_it_was() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    tape.set_training(true);
    tape.set_seed(6);
    let model = tiny_bert::build(&mut tape, 3);
    let pals = register_pals(&mut tape, true);
    let mut run = |p: Option<&TaskPals>| {
        tape.reset();
        let l = logits(&mut tape, &model, p, Packing::Packed).unwrap();
        tape.store.read(l).unwrap()
    };
    let (with, without) = (run(Some(&pals)), run(None));
    let differ = with.iter().zip(&without).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    assert_eq!(differ, 0, "{differ} logits differ");
}

#[test]
fn finetune_with_pals_saves_evaluates_and_resumes_exactly() {
    let (model, data) = (tiny_model("pals-run"), tiny_data(24, "pals-run"));
    let steps = ["--max-steps", "4", "--eval-every", "2", "--pals", "--pals-dim", "8", "--pals-heads", "2"];
    let full = scratch("pals-full");
    finetune(&model, &data, &full, &steps);
    let st = engine::model::safetensors::SafeTensors::open(&full.join("best/model.safetensors")).unwrap();
    // Three tasks × (V_E, V_D and their biases, 2 layers × query, key, value and their biases).
    assert_eq!(st.names().filter(|n| n.contains(".pals.")).count(), 3 * (4 + 2 * 6));
    assert_eq!(st.info("head.sts.pals.encoder.weight").unwrap().shape, [8, 32]);

    // eval reads the PALs back: the best checkpoint's dev scores again.
    let stdout = eval_cpu(&full.join("best"), &data, &[]);
    let best = records(&full, "eval")
        .into_iter()
        .max_by(|a, b| a["combined"].as_f64().partial_cmp(&b["combined"].as_f64()).unwrap())
        .unwrap();
    let combined = format!("{:.4}", best["combined"].as_f64().unwrap());
    assert!(stdout.contains(&combined), "eval printed {stdout}, the run's best combined was {combined}");

    let part = scratch("pals-part");
    let mut stop = steps.to_vec();
    stop.extend_from_slice(&["--stop-after", "1"]);
    finetune(&model, &data, &part, &stop);
    finetune(&model, &data, &part, &["--resume", part.join("last").to_str().unwrap()]);
    assert_eq!(step_losses(&full), step_losses(&part), "the resumed run's losses differ");
    let weights = |d: &std::path::Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert!(weights(&full) == weights(&part), "final weights differ");

    // With LoRA (the PALs train beside the adapters) and with the whole encoder frozen.
    for (tag, extra) in [("lora", ["--lora", "4"]), ("frozen", ["--freeze-layers", "2"])] {
        let out = scratch(&format!("pals-{tag}"));
        let mut args = vec!["--max-steps", "2", "--pals"];
        args.extend_from_slice(&extra);
        let log = finetune(&model, &data, &out, &args);
        assert!(records(&out, "train").len() == 2, "{tag}: {log}");
    }
}

#[test]
fn bad_pals_values_are_refused_in_one_line() {
    let (model, data) = (tiny_model("pals-bad"), tiny_data(8, "pals-bad"));
    let run = |extra: &[&str]| finetune_refused(&model, &data, "pals-bad-out", extra);
    assert!(run(&["--pals", "--pals-dim", "10", "--pals-heads", "4"]).contains("multiple of --pals-heads"));
    assert!(run(&["--pals", "--pals-dim", "0"]).contains("--pals-dim"));
    assert!(run(&["--pals", "--pals-heads", "0"]).contains("--pals-heads"));
    assert!(run(&["--pals-dim", "8"]).contains("--pals"), "a PALs flag without --pals");
}
