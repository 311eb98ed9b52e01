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

#[test]
fn training_leaves_the_base_weights_bit_identical() {
    let mut tape = Tape::<f32>::new(Device::Cpu);
    tape.set_training(true);
    let m = tiny_bert::build_with(&mut tape, 3, Some(&config(&[Target::Query, Target::Value, Target::FfnOut])));
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
