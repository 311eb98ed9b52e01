//! LoRA on the tiny BERT: folding the adapters into the base weights changes no output (beyond
//! float32 rounding), and training leaves every base weight bit for bit as loaded. Checkpoints
//! are in PEFT's layout (issue 17, finding 9): PEFT's keys and target_modules, old-layout folders
//! still load, and an adapter folder written as PEFT writes one loads in `engine embed`.

mod common;
use common::tiny_bert;
use engine::model::lora::{Form, LoraConfig, Target};
use engine::optim::{Optimizer, OptimizerConfig};
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
    lora.merge_into(&mut tape.store, &m.bert.target_weights()).unwrap();
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
    let mut opt = Optimizer::new(&tape.store, OptimizerConfig::default()).unwrap();
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

/// The adapters' form is fixed when the model is built, not by the tape's mode: a model built
/// to train with adapter dropout runs them beside its linears in its dev evaluations too; one
/// built for inference (eval, predict, embed) folds them.
#[test]
fn the_adapters_form_is_decided_when_the_model_is_built() {
    use engine::model::lora::{Lora, init_source};
    let folded_ops =
        |tape: &Tape<f32>| tape.ops().iter().filter(|op| matches!(op, engine::ops::Op::LoraLinear(_))).count();
    for (training, want) in [(true, Form::Beside), (false, Form::Folded)] {
        let mut tape = Tape::<f32>::new(Device::Cpu);
        let mut m = tiny_bert::build_with(&mut tape, 3, None);
        let mut rng = engine::rng::Rng::new(1);
        let mut source = init_source::<f32>(&mut rng);
        let cfg = config(&[Target::Query, Target::FfnOut]); // dropout 0.1
        let lora = Lora::register(&mut tape.store, &m.bert.target_dims(), &cfg, training, &mut source).unwrap();
        assert_eq!(lora.form, want, "built for training: {training}");
        m.bert.lora = Some(lora);
        for mode in [true, false] {
            tape.set_training(mode);
            hidden(&mut tape, &m);
            assert_eq!(
                folded_ops(&tape) > 0,
                want == Form::Folded,
                "built for training {training}, run in training {mode}"
            );
        }
    }
}

#[test]
fn fresh_adapters_leave_the_base_model_unchanged() {
    use engine::model::lora::{Lora, init_source};
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let mut m = tiny_bert::build_with(&mut tape, 3, None);
    let base = hidden(&mut tape, &m);
    let mut rng = engine::rng::Rng::new(1);
    let mut source = init_source::<f32>(&mut rng);
    let lora =
        Lora::register(&mut tape.store, &m.bert.target_dims(), &config(&Target::ALL), true, &mut source).unwrap();
    // A is drawn (U(±1/√IN), as PEFT's Kaiming-uniform with a = √5), B is zero.
    let (na, nb) = engine::model::lora::adapter_names(0, Target::FfnIn);
    let a = tape.store.param(&na).unwrap();
    let bound = 1.0 / 32f32.sqrt();
    let av = tape.store.read(a).unwrap();
    assert!(av.iter().all(|v| v.abs() <= bound) && av.iter().any(|v| v.abs() > bound / 2.0));
    let b = tape.store.param(&nb).unwrap();
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
    let lora = Lora {
        config: LoraConfig { dropout: 0.0, ..config(&[Target::Query]) },
        layers: Vec::new(),
        form: Form::Beside,
    };
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

mod peft_layout {
    use super::common::runs::{scratch, tiny_model};
    use engine::model::lora::{LoraConfig, Target, adapter_names};
    use engine::model::peft::{ADAPTER_CONFIG, ADAPTER_FILE, targets_of};
    use engine::model::safetensors::{SafeTensors, write};
    use engine::model::{Checkpoint, peft::AdapterFolder};
    use engine::rng::Rng;
    use engine::tensor::Arena;
    use engine::train::checkpoint;
    use engine::train::model::MultiTaskModel;
    use engine::train::{TrainOptions, evaluate};
    use engine::{Device, Tape, Tensor};
    use std::collections::BTreeMap;
    use std::path::Path;

    const LAYERS: usize = 2; // the tiny model's

    /// Every target, so that the attention and feed-forward outputs are both adapted.
    fn opts() -> TrainOptions {
        let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets: Target::ALL.to_vec() };
        TrainOptions { lora: Some(lora), ..Default::default() }
    }

    /// The trainable parameters (adapters, heads) of `store` with their values.
    fn trainable(store: &engine::store::Store<f32>) -> Vec<(String, Vec<f32>)> {
        let t: Vec<(String, Tensor)> =
            store.params().filter(|(_, t)| t.arena == Arena::Param).map(|(n, t)| (n.to_string(), t)).collect();
        t.into_iter().map(|(n, t)| (n, store.read(t).unwrap())).collect()
    }

    /// Builds the LoRA model over the tiny BERT folder `base`, gives every adapter and head value
    /// its own non-zero number (B starts at zero) and saves it as the checkpoint `dir`; returns
    /// the trainable parameters.
    fn saved_run(base: &Path, dir: &Path) -> Vec<(String, Vec<f32>)> {
        let mut tape = Tape::<f32>::new(Device::Cpu);
        let ckpt = Checkpoint::open(base).unwrap();
        MultiTaskModel::build(&mut tape.store, &ckpt, None, &opts(), true).unwrap();
        let mut rng = Rng::new(11);
        let params: Vec<Tensor> =
            tape.store.params().filter(|(_, t)| t.arena == Arena::Param).map(|(_, t)| t).collect();
        for t in params {
            let v: Vec<f32> = (0..t.numel()).map(|_| 0.1 * rng.normal() as f32).collect();
            tape.store.write(t, &v).unwrap();
        }
        checkpoint::save(dir, &tape.store, base, base, &opts(), None).unwrap();
        trainable(&tape.store)
    }

    fn json(path: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn lora_checkpoints_carry_pefts_keys_and_target_modules() {
        let base = tiny_model("peft-keys");
        let dir = scratch("peft-keys").join("best");
        let saved = saved_run(&base, &dir);
        let st = SafeTensors::open(&dir.join(ADAPTER_FILE)).unwrap();
        let mut adapters: Vec<String> = st.names().filter(|n| !n.starts_with("head.")).map(String::from).collect();
        adapters.sort();
        let mut want: Vec<String> = (0..LAYERS)
            .flat_map(|l| Target::ALL.into_iter().flat_map(move |t| <[String; 2]>::from(adapter_names(l, t))))
            .collect();
        want.sort();
        assert_eq!(adapters, want);
        assert!(want.contains(&"base_model.model.encoder.layer.1.output.dense.lora_B.weight".to_string()));
        // The file holds the model's values under those keys, heads included.
        for (name, values) in &saved {
            assert!(st.f32(name).unwrap() == *values, "{name} saved wrong");
        }
        let config = json(&dir.join(ADAPTER_CONFIG));
        assert_eq!(
            (config["peft_type"].as_str(), config["r"].as_u64(), config["lora_alpha"].as_f64()),
            (Some("LORA"), Some(4), Some(8.0))
        );
        let modules: Vec<String> = serde_json::from_value(config["target_modules"].clone()).unwrap();
        // By PEFT's matching rule, exactly the six targets in both layers.
        assert_eq!(targets_of(&modules, LAYERS).unwrap(), Target::ALL);
        assert!(!modules.contains(&"output.dense".to_string()), "{modules:?} would adapt attention.output.dense twice");

        // And it loads back as it was.
        let loaded = evaluate::load_checkpoint(&dir, Device::Cpu).unwrap();
        assert!(trainable(&loaded.tape.store) == saved, "the reloaded adapters or heads differ");
    }

    /// A checkpoint as the engine wrote them before: adapter keys without `base_model.model.`, and
    /// target_modules as module paths inside a layer (`output.dense` for the feed-forward output).
    #[test]
    fn old_layout_checkpoints_still_load_evaluate_and_merge() {
        let base = tiny_model("peft-old");
        let scratch = scratch("peft-old");
        let dir = scratch.join("best");
        let saved = saved_run(&base, &dir);
        let st = SafeTensors::open(&dir.join(ADAPTER_FILE)).unwrap();
        let old: Vec<_> = st
            .names()
            .map(|n| {
                (
                    n.strip_prefix("base_model.model.").unwrap_or(n).to_string(),
                    st.info(n).unwrap().shape.clone(),
                    st.f32(n).unwrap(),
                )
            })
            .collect();
        drop(st);
        assert!(old.iter().any(|(n, _, _)| n == "encoder.layer.0.output.dense.lora_A.weight"));
        write(&dir.join(ADAPTER_FILE), &old, &BTreeMap::new()).unwrap();
        let config = serde_json::json!({"peft_type": "LORA", "base_model_name_or_path": std::path::absolute(&base).unwrap(),
            "r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0,
            "target_modules": Target::ALL.map(|t| t.module())});
        std::fs::write(dir.join(ADAPTER_CONFIG), config.to_string()).unwrap();

        let mut loaded = evaluate::load_checkpoint(&dir, Device::Cpu).unwrap();
        assert!(trainable(&loaded.tape.store) == saved, "the old layout loads different values");
        // The reload after training (load_params) reads it too.
        let store = &mut loaded.tape.store;
        let params: Vec<Tensor> = store.params().filter(|(_, t)| t.arena == Arena::Param).map(|(_, t)| t).collect();
        for t in params {
            store.write(t, &vec![0.0; t.numel()]).unwrap();
        }
        checkpoint::load_params(&dir, store).unwrap();
        assert!(trainable(store) == saved, "load_params reads the old layout wrong");
        assert_eq!(engine::train::merge::merge(&dir, &scratch.join("merged")).unwrap(), 6 * LAYERS);
        // Its adapters embed too (target_modules read in the old sense: six targets, not seven).
        let folder = AdapterFolder::open(&dir).unwrap();
        assert_eq!(folder.lora.targets, Target::ALL);
        let mut tape = Tape::<f32>::new(Device::Cpu);
        folder.load_bert(&mut tape.store).unwrap();
        let read = trainable(&tape.store);
        assert!(read.iter().all(|(n, v)| saved.iter().any(|(m, w)| m == n && w == v)) && read.len() == 12 * LAYERS);
    }

    fn engine_run(args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_engine")).args(args).output().expect("run engine")
    }

    /// The mean-pooled embeddings `engine embed` gives for `model`.
    fn embeddings(model: &Path, input: &Path, out: &Path) -> Vec<Vec<f64>> {
        let args = ["embed", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
        let o = engine_run(&[&args[..], &["--output", out.to_str().unwrap(), "--device", "cpu", "--quiet"]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        crate::common::runs::read_embeddings(out)
    }

    /// An adapter folder as `PeftModel.save_pretrained` writes one for a BertModel (its config's
    /// fields, PEFT's keys, no heads, no tokenizer, no train.json) loads in the engine with the
    /// values written, and `engine embed` of it equals `engine embed` of the base model with the
    /// adapters folded into its weights by hand (in float64).
    #[test]
    fn a_peft_adapter_folder_loads_and_embeds_as_its_merged_model() {
        let base = tiny_model("peft-hand");
        let scratch = scratch("peft-hand");
        let dir = scratch.join("adapter");
        std::fs::create_dir_all(&dir).unwrap();
        let (r, alpha) = (2usize, 6.0);
        let targets = [Target::Query, Target::Value, Target::AttnOut];
        let config = serde_json::json!({"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": base,
            "bias": "none", "exclude_modules": null, "fan_in_fan_out": false, "inference_mode": true,
            "init_lora_weights": true, "layer_replication": null, "layers_pattern": null, "layers_to_transform": null,
            "loftq_config": {}, "lora_alpha": alpha, "lora_bias": false, "lora_dropout": 0.1, "modules_to_save": null,
            "peft_type": "LORA", "peft_version": "0.21.2", "r": r, "rank_pattern": {}, "revision": null,
            "target_modules": ["value", "attention.output.dense", "query"], "target_parameters": null, "task_type": null,
            "trainable_token_indices": null, "use_dora": false, "use_rslora": false});
        std::fs::write(dir.join(ADAPTER_CONFIG), config.to_string()).unwrap();
        let base_st = SafeTensors::open(&base.join("model.safetensors")).unwrap();
        let mut rng = Rng::new(5);
        let mut adapters = Vec::new();
        let mut merged: BTreeMap<String, Vec<f32>> =
            base_st.names().map(|n| (n.to_string(), base_st.f32(n).unwrap())).collect();
        for l in 0..LAYERS {
            for t in targets {
                let w = format!("encoder.layer.{l}.{}.weight", t.module());
                let shape = &base_st.info(&w).unwrap().shape;
                let (out, inp) = (shape[0], shape[1]);
                let a: Vec<f32> = (0..r * inp).map(|_| 0.3 * rng.normal() as f32).collect();
                let b: Vec<f32> = (0..out * r).map(|_| 0.3 * rng.normal() as f32).collect();
                let wv = merged.get_mut(&w).unwrap();
                for o in 0..out {
                    for i in 0..inp {
                        let d: f64 = (0..r).map(|k| b[o * r + k] as f64 * a[k * inp + i] as f64).sum();
                        wv[o * inp + i] = (wv[o * inp + i] as f64 + alpha / r as f64 * d) as f32;
                    }
                }
                let (na, nb) = adapter_names(l, t);
                adapters.push((na, vec![r, inp], a));
                adapters.push((nb, vec![out, r], b));
            }
        }
        write(&dir.join(ADAPTER_FILE), &adapters, &BTreeMap::new()).unwrap();

        // The engine reads the values written, under the keys written.
        let folder = AdapterFolder::open(&dir).unwrap();
        assert_eq!((folder.lora.targets.as_slice(), folder.lora.scale()), (&targets[..], 3.0));
        let mut tape = Tape::<f32>::new(Device::Cpu);
        folder.load_bert(&mut tape.store).unwrap();
        for (name, _, values) in &adapters {
            assert!(tape.store.read(tape.store.param(name).unwrap()).unwrap() == *values, "{name} read wrong");
        }

        // The base model with the adapters folded in, as a plain BERT folder.
        let folded = scratch.join("folded");
        std::fs::create_dir_all(&folded).unwrap();
        for f in ["config.json", "vocab.txt"] {
            std::fs::copy(base.join(f), folded.join(f)).unwrap();
        }
        let tensors: Vec<_> =
            merged.into_iter().map(|(n, v)| (n.clone(), base_st.info(&n).unwrap().shape.clone(), v)).collect();
        write(&folded.join("model.safetensors"), &tensors, &BTreeMap::new()).unwrap();
        let input = scratch.join("input.txt");
        std::fs::write(&input, "the movie was good .\nit is not a film\tthe film is bad\nwhat ?\n").unwrap();
        let (got, want) =
            (embeddings(&dir, &input, &scratch.join("a.jsonl")), embeddings(&folded, &input, &scratch.join("b.jsonl")));
        let base_emb = embeddings(&base, &input, &scratch.join("c.jsonl"));
        let diff = |x: &[Vec<f64>], y: &[Vec<f64>]| {
            x.iter().flatten().zip(y.iter().flatten()).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max)
        };
        let (d, moved) = (diff(&got, &want), diff(&got, &base_emb));
        println!(
            "PEFT folder vs folded by hand: largest difference {d:.2e} (the adapters move the embeddings by {moved:.2e})"
        );
        assert_eq!((got.len(), got[0].len()), (3, 32));
        assert!(moved > 1e-2, "the adapters should move the embeddings");
        assert!(d <= 1e-5, "embeddings differ by {d:e}");

        // A PEFT folder is not an engine checkpoint: eval says what reads it.
        let err = evaluate::load_checkpoint(&dir, Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("engine embed --model"), "{err}");
        // An adapter the config does not ask for, and one it asks for but the file lacks, are named.
        let mut extra = adapters.clone();
        let (ka, _) = adapter_names(0, Target::Key);
        extra.push((ka.clone(), vec![r, 32], vec![0.0; r * 32]));
        write(&dir.join(ADAPTER_FILE), &extra, &BTreeMap::new()).unwrap();
        let err = AdapterFolder::open(&dir).unwrap().load_bert(&mut Tape::<f32>::new(Device::Cpu).store).err().unwrap();
        assert!(err.to_string().contains(&ka), "{err}");
        write(&dir.join(ADAPTER_FILE), &adapters[1..], &BTreeMap::new()).unwrap();
        let err = AdapterFolder::open(&dir).unwrap().load_bert(&mut Tape::<f32>::new(Device::Cpu).store).err().unwrap();
        assert!(err.to_string().contains(&adapters[0].0), "{err}");
    }
}
