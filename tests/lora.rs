//! LoRA on the tiny BERT: folding the adapters into the base weights changes no output (beyond
//! float32 rounding), and training leaves every base weight bit for bit as loaded.

mod common;
use common::tiny_bert;
use engine::model::lora::{LoraConfig, Target};
use engine::optim::{AdamW, AdamWConfig};
use engine::tensor::Arena;
use engine::{Device, Tape, Tensor};

fn config(targets: &[Target]) -> LoraConfig {
    LoraConfig { rank: 4, alpha: 8.0, dropout: 0.1, targets: targets.to_vec() }
}

/// The last hidden state of a fixed padded batch, dropout off.
fn hidden(tape: &mut Tape<f32>, m: &tiny_bert::TinyModel) -> Vec<f32> {
    tape.reset();
    let ids = tape.ints(&[2, 17, 45, 3, 0, 2, 8, 8, 91, 3], &[2, 5]).unwrap();
    let types = tape.ints(&[0, 0, 1, 1, 0, 0, 0, 0, 1, 1], &[2, 5]).unwrap();
    let mask = tape.ints(&[1, 1, 1, 1, 0, 1, 1, 1, 1, 1], &[2, 5]).unwrap();
    let h = m.bert.forward(tape, ids, types, mask).unwrap();
    tape.store.read(h).unwrap()
}

#[test]
fn merged_and_unmerged_outputs_agree() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let mut m = tiny_bert::build_with(&mut tape, 3, Some(&config(&Target::ALL)));
    let with_adapters = hidden(&mut tape, &m);
    let lora = m.bert.lora.take().unwrap();
    let base = hidden(&mut tape, &m);
    lora.merge_into(&mut tape.store, &m.bert).unwrap();
    let merged = hidden(&mut tape, &m);
    let rel = common::rel(&merged, &with_adapters);
    let moved = common::rel(&base, &with_adapters);
    println!("merged vs adapters: relative difference {rel:.2e} (the adapters move the output by {moved:.2e})");
    assert!(moved > 0.1, "the adapters should change the output");
    assert!(rel <= 1e-5, "merged output differs by {rel:e}");
}

/// With the adapters' dropout on (they run beside the base linears) and off (folded into them).
#[test]
fn training_leaves_the_base_weights_bit_identical() {
    for dropout in [0.1, 0.0] {
        training_leaves_the_base_weights_bit_identical_with(dropout);
    }
}

fn training_leaves_the_base_weights_bit_identical_with(dropout: f64) {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    tape.set_training(true);
    let cfg = LoraConfig { dropout, ..config(&[Target::Query, Target::Value, Target::FfnOut]) };
    let m = tiny_bert::build_with(&mut tape, 3, Some(&cfg));
    let snapshot = |tape: &Tape<f32>, arena: Arena| -> Vec<(String, Vec<f32>)> {
        let params: Vec<(String, Tensor)> =
            tape.store.params().filter(|(_, t)| t.arena == arena).map(|(n, t)| (n.to_string(), t)).collect();
        params.into_iter().map(|(n, t)| (n, tape.store.read(t).unwrap())).collect()
    };
    let (base, adapters) = (snapshot(&tape, Arena::Frozen), snapshot(&tape, Arena::Param));
    assert!(base.iter().all(|(n, _)| !n.contains("lora_")) && base.len() == 5 + 16 * 2 + 2);
    // Gradient slots and optimizer moments cover the adapters and heads only.
    let trainable: usize = adapters.iter().map(|(_, v)| v.len()).sum();
    assert_eq!(tape.store.num_trainable(), trainable);
    let mut opt = AdamW::new(&tape.store, AdamWConfig::default()).unwrap();
    assert_eq!(opt.m.len(), trainable);
    for step in 0..3 {
        tape.store.zero_grads().unwrap();
        tape.reset();
        tape.set_seed(step);
        let loss = tiny_bert::three_task_loss(&mut tape, &m).unwrap();
        tape.backward(loss).unwrap();
        opt.update(&mut tape.store, 1e-2).unwrap();
    }
    let folded = tape.ops().iter().any(|op| matches!(op, engine::ops::Op::LoraLinear(_)));
    assert_eq!(folded, dropout == 0.0, "adapters folded with dropout {dropout}");
    assert!(snapshot(&tape, Arena::Frozen) == base, "a base weight changed");
    let after = snapshot(&tape, Arena::Param);
    assert!(after.iter().zip(&adapters).all(|(a, b)| a.1 != b.1), "every adapter and head should have moved");
}

#[test]
fn fresh_adapters_leave_the_base_model_unchanged() {
    use engine::model::lora::{Lora, init_source};
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let mut m = tiny_bert::build_with(&mut tape, 3, None);
    let base = hidden(&mut tape, &m);
    let mut rng = engine::rng::Rng::new(1);
    let mut source = init_source::<f32>(&mut rng);
    let lora = Lora::register(&mut tape.store, &m.bert, &config(&Target::ALL), &mut source).unwrap();
    // A is drawn (U(±1/√IN), as PEFT's Kaiming-uniform with a = √5), B is zero.
    let a = tape.store.param("encoder.layer.0.intermediate.dense.lora_A.weight").unwrap();
    let bound = 1.0 / 32f32.sqrt();
    let av = tape.store.read(a).unwrap();
    assert!(av.iter().all(|v| v.abs() <= bound) && av.iter().any(|v| v.abs() > bound / 2.0));
    let b = tape.store.param("encoder.layer.0.intermediate.dense.lora_B.weight").unwrap();
    assert!(tape.store.read(b).unwrap().iter().all(|&v| v == 0.0));
    m.bert.lora = Some(lora);
    assert!(hidden(&mut tape, &m) == base, "step 0 must be the base model, bit for bit");
}

/// Folded into the base weight (`Tape::lora_linear`), an adapter computes what its own path
/// (`Lora::delta` added to the linear) computes: the output and the gradients of the input, the
/// bias, A and B agree to float64 rounding. The base weight is frozen, as under LoRA.
#[test]
fn folded_adapter_computes_what_the_unfolded_path_computes() {
    use engine::model::lora::{Adapter, Lora};
    use engine::ops::lora_linear::Band;
    let mut tape = Tape::<f64>::new(Device::Cpu);
    tape.set_training(true);
    let mut rng = engine::rng::Rng::new(5);
    let mut add = |tape: &mut Tape<f64>, name: &str, dims: &[usize], trainable: bool| {
        let v: Vec<f64> = (0..dims.iter().product()).map(|_| rng.normal()).collect();
        tape.store.add_param(name, dims, &v, trainable).unwrap()
    };
    let (x, w, b) =
        (add(&mut tape, "x", &[3, 4, 10], true), add(&mut tape, "w", &[6, 10], false), add(&mut tape, "b", &[6], true));
    let (a, bb) = (add(&mut tape, "a", &[4, 10], true), add(&mut tape, "bb", &[6, 4], true));
    let weights: Vec<f64> = (0..3 * 4 * 6).map(|i| ((i * 7 % 11) as f64 - 5.0) / 3.0).collect();
    let lora = Lora { config: LoraConfig { dropout: 0.0, ..config(&[Target::Query]) }, layers: Vec::new() };
    let scale = lora.config.scale();
    let run = |tape: &mut Tape<f64>, folded: bool| -> Vec<Vec<f64>> {
        tape.store.zero_grads().unwrap();
        tape.reset();
        let out = if folded {
            tape.lora_linear(x, w, b, &[Band { row: 0, a, b: bb }], scale).unwrap()
        } else {
            let y = tape.linear(x, w, b).unwrap();
            let d = lora.delta(tape, Adapter { a, b: bb }, x).unwrap();
            tape.add(y, d).unwrap()
        };
        let r = tape.constant(&weights, out.dims()).unwrap();
        let p = tape.mul(out, r).unwrap();
        let l = tape.sum(p).unwrap();
        tape.backward(l).unwrap();
        let mut v = vec![tape.store.read(out).unwrap()];
        v.extend([x, b, a, bb].map(|t| tape.store.read_grad(t).unwrap()));
        v
    };
    let (folded, unfolded) = (run(&mut tape, true), run(&mut tape, false));
    for (what, (f, u)) in ["output", "dx", "db", "dA", "dB"].iter().zip(folded.iter().zip(&unfolded)) {
        let d = f.iter().zip(u).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
        let n = u.iter().map(|q| q.abs()).fold(0.0, f64::max);
        println!("{what}: largest difference {d:.2e} (largest value {n:.2e})");
        assert!(d <= 1e-12 * n.max(1.0), "{what} differs by {d:e}");
    }
}
