//! `--head TASK=HEAD`: each head trains, evaluates and predicts through `engine finetune`, with
//! the parameters its kind has; `--pair-encoding separate` is the full and cosine heads, bit for
//! bit; the cosine heads' outputs and losses are the textbook ones; a run with chosen heads
//! resumes bit for bit; heads that do not fit their task, and misspelt ones, are refused.

mod common;
use common::runs::{
    assert_resumes_exactly, finetune_cpu as finetune, finetune_refused, records, scratch, step_losses, tiny_data,
    tiny_model,
};
use engine::data::cs224n::{Label, Task};
use engine::model::safetensors::SafeTensors;
use engine::train::heads::CosineHead;
use engine::train::task_head::{TaskHead, cosine_output};
use engine::{Device, Tape};
use std::path::Path;

/// The tiny model's hidden width (tests/common/runs.rs).
const C: usize = 32;

fn dims(dir: &Path, name: &str) -> Option<Vec<usize>> {
    let st = SafeTensors::open(&dir.join("last/model.safetensors")).unwrap();
    st.info(name).map(|i| i.shape.clone())
}

#[test]
fn separate_pair_encoding_is_the_full_and_cosine_heads() {
    let (model, data) = (tiny_model("heads-sep"), tiny_data(24, "heads-sep"));
    let a = scratch("heads-sep-encoding");
    finetune(&model, &data, &a, &["--max-steps", "3", "--pair-encoding", "separate"]);
    let b = scratch("heads-sep-named");
    finetune(&model, &data, &b, &["--max-steps", "3", "--head", "quora=full,sts=cosine"]);
    assert_eq!(step_losses(&a), step_losses(&b));
    let weights = |d: &Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "the same heads train the same weights");
    assert_eq!(dims(&a, "head.quora.weight"), Some(vec![1, 4 * C]));
    assert_eq!(dims(&a, "head.sts.weight"), None, "the cosine head has no parameters");
}

#[test]
fn every_head_trains_evaluates_and_predicts() {
    let (model, data) = (tiny_model("heads-all"), tiny_data(24, "heads-all"));
    // (flags, the Quora and STS output layers' input widths; None: no parameters)
    let cases: [(&[&str], Option<usize>, Option<usize>); 5] = [
        (&["--head", "quora=rnn:6,sts=lstm:5"], Some(C + 6), Some(C + 5)),
        (&["--head", "quora=concat,sts=product"], Some(2 * C), Some(C)),
        (&["--head", "quora=difference,sts=full"], Some(C), Some(4 * C)),
        (&["--head", "quora=cosine,sts=cosine:shifted:unit"], None, None),
        (&["--head", "quora=cosine:bce,sts=concat", "--head-hidden", "8"], None, Some(8)),
    ];
    for (i, (flags, quora, sts)) in cases.iter().enumerate() {
        let out = scratch(&format!("heads-all-{i}"));
        let mut args = vec!["--max-steps", "3", "--tasks", "sst,quora,sts"];
        args.extend_from_slice(flags);
        finetune(&model, &data, &out, &args);
        assert_eq!(dims(&out, "head.quora.weight").map(|d| d[1]), *quora, "{flags:?}");
        assert_eq!(dims(&out, "head.sts.weight").map(|d| d[1]), *sts, "{flags:?}");
        assert_eq!(dims(&out, "head.sst.weight").map(|d| d[0]), Some(5), "SST keeps its linear head");
        let losses = step_losses(&out);
        assert_eq!(losses.len(), 3);
        for (_, l) in &losses {
            for t in ["sst", "quora", "sts"] {
                assert!(l[t].as_f64().is_some_and(f64::is_finite), "{flags:?}: {l}");
            }
        }
        let eval = records(&out, "eval");
        let last = eval.last().unwrap_or_else(|| panic!("{flags:?}: no evaluation"));
        assert!(last["metrics"]["quora"].as_f64().is_some() && last["metrics"]["sts"].as_f64().is_some(), "{last}");
        for file in ["para-dev-output.csv", "sts-dev-output.csv"] {
            let text = std::fs::read_to_string(out.join("predictions").join(file)).unwrap();
            assert!(text.lines().count() > 2, "{flags:?}: {file}");
        }
        // train.json spells the heads as --head does.
        let opts: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("last/train.json")).unwrap()).unwrap();
        let spec = flags[1].split(',').map(|e| e.split_once('=').unwrap().1).collect::<Vec<_>>();
        if i == 0 {
            // PyTorch's layout: W_ih (G·H, C), W_hh (G·H, H), the LSTM's four gates.
            assert_eq!(dims(&out, "head.sts.lstm.weight_ih"), Some(vec![20, C]));
            assert_eq!(dims(&out, "head.sts.lstm.weight_hh"), Some(vec![20, 5]));
            assert_eq!(dims(&out, "head.quora.rnn.bias_hh"), Some(vec![6]));
        }
        assert_eq!(opts["heads"], serde_json::json!(["linear", spec[0], spec[1]]), "{opts}");
    }
}

#[test]
fn recurrent_heads_read_packed_and_padded_batches_alike() {
    let (model, data) = (tiny_model("heads-rnn"), tiny_data(24, "heads-rnn"));
    let flags = ["--max-steps", "3", "--head", "sst=lstm:7,quora=rnn:6,sts=lstm:5", "--head-hidden", "4"];
    let packed = scratch("heads-rnn-packed");
    finetune(&model, &data, &packed, &flags);
    let padded = scratch("heads-rnn-padded");
    finetune(&model, &data, &padded, &[&flags[..], &["--padded"]].concat());
    let (a, b) = (step_losses(&packed), step_losses(&padded));
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        for t in ["sst", "quora", "sts"] {
            let (x, y) = (x[t].as_f64().unwrap(), y[t].as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{t}: packed {x}, padded {y}");
        }
    }
    assert_eq!(a.len(), 3);
}

#[test]
fn chosen_heads_resume_exactly_and_old_options_load() {
    let (model, data) = (tiny_model("heads-resume"), tiny_data(24, "heads-resume"));
    let steps = ["--max-steps", "4", "--head", "sst=lstm:6,quora=cosine:bce,sts=concat", "--head-hidden", "8"];
    let full = scratch("heads-resume-full");
    finetune(&model, &data, &full, &steps);
    assert_resumes_exactly(&model, &data, &full, "heads-resume-part", &steps);

    // A train.json from before --head (no "heads") reads with every task's default head.
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("last/train.json")).unwrap()).unwrap();
    old.as_object_mut().unwrap().remove("heads");
    old["pair_encoding"] = serde_json::json!("separate");
    let dir = scratch("heads-old-json");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train.json"), old.to_string()).unwrap();
    let loaded = engine::train::checkpoint::load_options(&dir).unwrap();
    assert!(loaded.heads.is_empty());
    assert_eq!(loaded.head(Task::Quora).to_string(), "full");
    assert_eq!(loaded.head(Task::Sts).to_string(), "cosine");
    assert_eq!(loaded.head(Task::Sst).to_string(), "linear");
}

#[test]
fn heads_that_do_not_fit_are_refused() {
    let (model, data) = (tiny_model("heads-bad"), tiny_data(8, "heads-bad"));
    for (i, (flags, says)) in [
        (&["--head", "sst=cosine"][..], "one sentence"),
        (&["--head", "sst=full"][..], "one sentence"),
        (&["--head", "quora=cosine:unit"][..], "applies to a score"),
        (&["--head", "sts=cosine:bce"][..], "yes/no"),
        (&["--head", "sts=nope"][..], "not a head"),
        (&["--head", "sst=lstm"][..], "width"),
        (&["--head", "sst=rnn:0"][..], "width"),
        (&["--head", "quora"][..], "TASK=HEAD"),
        (&["--head", "cfimdb=linear"][..], "not in --tasks"),
        (&["--head", "quora=full,quora=concat"][..], "given twice"),
    ]
    .into_iter()
    .enumerate()
    {
        let err = finetune_refused(&model, &data, &format!("heads-bad-{i}"), flags);
        assert!(err.contains(says) && err.trim().lines().count() == 1, "{flags:?}: {err}");
        assert!(err.contains("--head"), "{flags:?}: the error names the flag: {err}");
    }
}

/// The loss of `head` on outputs `y` against `labels`, on the CPU.
fn loss(kind: &str, task: Task, outputs: &[f32], labels: &[Label]) -> f64 {
    let head = TaskHead { task, kind: kind.parse().unwrap(), hidden: None, out: None, recurrent: None };
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let y = tape.constant(outputs, &[outputs.len()]).unwrap();
    let l = head.loss(&mut tape, labels, y).unwrap();
    f64::from(tape.store.read(l).unwrap()[0])
}

#[test]
fn cosine_heads_compute_the_textbook_outputs_and_losses() {
    let cos = [0.9f32, -0.3, 0.0, 0.6];
    let mut tape = Tape::<f32>::new(Device::Cpu);
    let x = tape.constant(&cos, &[4]).unwrap();
    let out = |tape: &mut Tape<f32>, task: Task, c: CosineHead| {
        let y = cosine_output(tape, task, c, x).unwrap();
        tape.store.read(y).unwrap()
    };
    let plain = CosineHead::default();
    let shifted = CosineHead { shifted: true, ..plain };
    let close = |a: &[f32], b: &[f64]| a.iter().zip(b).all(|(&x, &y)| (f64::from(x) - y).abs() < 1e-6);
    let five: Vec<f64> = cos.iter().map(|&c| 5.0 * f64::from(c)).collect();
    let shift: Vec<f64> = cos.iter().map(|&c| 2.5 * (f64::from(c) + 1.0)).collect();
    let raw: Vec<f64> = cos.iter().map(|&c| f64::from(c)).collect();
    assert!(close(&out(&mut tape, Task::Sts, plain), &five));
    assert!(close(&out(&mut tape, Task::Sts, shifted), &shift));
    // Quora: o = p − 1/2, p = cos or (cos+1)/2; yes where o > 0.
    let o_plain: Vec<f64> = raw.iter().map(|c| c - 0.5).collect();
    let o_shift: Vec<f64> = raw.iter().map(|c| c / 2.0).collect();
    assert!(close(&out(&mut tape, Task::Quora, plain), &o_plain));
    assert!(close(&out(&mut tape, Task::Quora, shifted), &o_shift));

    // The loss of p against the label, squared or cross-entropy, from o.
    let yes = [1.0, 0.0, 1.0, 0.0].map(Label::Binary);
    let y = [1.0, 0.0, 1.0, 0.0];
    for o in [&o_plain, &o_shift] {
        let p: Vec<f64> = o.iter().map(|o| o + 0.5).collect();
        let mse = p.iter().zip(y).map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / 4.0;
        let of: Vec<f32> = o.iter().map(|&v| v as f32).collect();
        assert!((loss("cosine", Task::Quora, &of, &yes) - mse).abs() < 1e-6);
        // BCE where every p lies in (0, 1) (the plain p = cos = −0.3 does not: it is clamped).
        if p.iter().all(|&p| p > 0.0 && p < 1.0) {
            let bce = -p.iter().zip(y).map(|(p, y)| y * p.ln() + (1.0 - y) * (1.0 - p).ln()).sum::<f64>() / 4.0;
            assert!((loss("cosine:shifted:bce", Task::Quora, &of, &yes) - bce).abs() < 1e-5);
        }
    }
    // p of exactly 0 or 1 stays finite (atanh is clamped).
    assert!(loss("cosine:bce", Task::Quora, &[0.5, -0.5], &[Label::Binary(0.0), Label::Binary(1.0)]).is_finite());

    // STS: MSE on the 0–5 scale, or with both sides divided by 5.
    let scores = [4.2, 0.4, 2.5, 3.0].map(Label::Score);
    let pred: Vec<f32> = five.iter().map(|&v| v as f32).collect();
    let sq = five.iter().zip([4.2, 0.4, 2.5, 3.0]).map(|(p, y)| (p - y) * (p - y)).sum::<f64>() / 4.0;
    assert!((loss("cosine", Task::Sts, &pred, &scores) - sq).abs() < 1e-4);
    assert!((loss("cosine:unit", Task::Sts, &pred, &scores) - sq / 25.0).abs() < 1e-5);
}
