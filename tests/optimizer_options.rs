//! The optimizer's options through `engine finetune`: `--head-lr` (the task parameters' own peak
//! rate), `--no-decay-norm-bias` (Hugging Face Trainer's exemption of biases and LayerNorm
//! weights from weight decay) and `--optimizer adamax|qhadam|lamb` (with `--qh-nu`): recorded in
//! train.json, changing the run as they should, resumed bit for bit, bad values refused, old
//! train.json files still read. The grouped update itself is
//! checked against the textbook algorithm in tests/optim.rs and on the device in
//! tests/cuda_parity_optim.rs.

mod common;
use common::runs::{
    assert_resumes_exactly, finetune_cpu as finetune, finetune_refused, scratch, step_losses, tiny_data, tiny_model,
};
use engine::model::safetensors::SafeTensors;
use std::path::Path;

/// Every tensor of `dir/last/model.safetensors`, by name.
fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let st = SafeTensors::open(&dir.join("last/model.safetensors")).unwrap();
    let mut names: Vec<String> = st.names().map(str::to_string).collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), st.f32(&n).unwrap())).collect()
}

fn changed(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)], pick: impl Fn(&str) -> bool) -> (usize, usize) {
    let picked: Vec<bool> = a.iter().zip(b).filter(|(x, _)| pick(&x.0)).map(|(x, y)| x.1 != y.1).collect();
    (picked.iter().filter(|&&c| c).count(), picked.len())
}

#[test]
fn head_lr_and_no_decay_change_what_they_should_and_resume_exactly() {
    let (model, data) = (tiny_model("optim-flags"), tiny_data(24, "optim-flags"));
    let base = ["--max-steps", "4", "--lr", "1e-3"];
    let plain = scratch("optim-plain");
    finetune(&model, &data, &plain, &base);

    // --head-lr: the heads' trajectory changes from the first step, the encoder's too (it sees
    // other heads' gradients), and the option is kept for --resume.
    let head = scratch("optim-head-lr");
    let mut flags = base.to_vec();
    flags.extend_from_slice(&["--head-lr", "1e-2"]);
    finetune(&model, &data, &head, &flags);
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(head.join("last/train.json")).unwrap()).unwrap();
    assert_eq!(opts["head_lr"], serde_json::json!(1e-2), "{opts}");
    let (p, h) = (weights(&plain), weights(&head));
    let (n, of) = changed(&p, &h, |n| n.starts_with("head."));
    assert_eq!(n, of, "every head tensor moves otherwise with --head-lr");
    let first = |d: &Path| step_losses(d)[0].clone();
    assert_eq!(first(&plain), first(&head), "the first step's losses come before any update");

    // --no-decay-norm-bias with --head-lr equal to --lr: only decay differs. Over a few steps
    // the biases and LayerNorm weights move otherwise; the run resumes bit for bit.
    let nodecay = ["--max-steps", "4", "--lr", "1e-3", "--weight-decay", "0.5", "--no-decay-norm-bias"];
    let full = scratch("optim-nodecay-full");
    finetune(&model, &data, &full, &nodecay);
    let decayed = scratch("optim-decay");
    finetune(&model, &data, &decayed, &nodecay[..6]);
    let (a, b) = (weights(&full), weights(&decayed));
    let norm_or_bias = |n: &str| n.ends_with(".bias") || n.contains("LayerNorm.");
    // (but the pooler's bias: mean pooling leaves the pooler unused, and its zeros decay to zeros)
    let (n, of) = changed(&a, &b, |n| norm_or_bias(n) && n != "pooler.dense.bias");
    assert!(of > 0 && n == of, "{n} of {of} biases and LayerNorm weights differ");
    let mut whole = nodecay.to_vec();
    whole.extend_from_slice(&["--head-lr", "1e-2"]);
    let both = scratch("optim-both-full");
    finetune(&model, &data, &both, &whole);
    assert_resumes_exactly(&model, &data, &both, "optim-nodecay-part", &whole);

    // A train.json from before these options (neither key) still loads, with both off.
    let mut old: serde_json::Value = opts.clone();
    old.as_object_mut().unwrap().remove("head_lr");
    old.as_object_mut().unwrap().remove("no_decay_norm_bias");
    let dir = scratch("optim-old-json");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train.json"), old.to_string()).unwrap();
    let loaded = engine::train::checkpoint::load_options(&dir).unwrap();
    assert_eq!((loaded.head_lr, loaded.no_decay_norm_bias), (None, false));
}

#[test]
fn bad_head_lr_is_refused_in_one_line() {
    let (model, data) = (tiny_model("optim-bad"), tiny_data(8, "optim-bad"));
    for v in ["0", "-1e-3", "nan", "inf"] {
        let e = finetune_refused(&model, &data, "optim-bad-run", &["--head-lr", v]);
        assert!(e.contains("--head-lr"), "{v}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{v}: {e}");
    }
}

#[test]
fn adamax_qhadam_and_lamb_train_and_resume_exactly() {
    let (model, data) = (tiny_model("optim-rules"), tiny_data(24, "optim-rules"));
    let plain = scratch("optim-rules-adamw");
    finetune(&model, &data, &plain, &["--max-steps", "4", "--lr", "1e-3"]);
    for (rule, extra) in [("adamax", None), ("qhadam", Some("0.5,0.9")), ("lamb", None)] {
        let mut steps = vec!["--max-steps", "4", "--lr", "1e-3", "--optimizer", rule];
        if let Some(nu) = extra {
            steps.extend_from_slice(&["--qh-nu", nu]);
        }
        let full = scratch(&format!("optim-{rule}-full"));
        finetune(&model, &data, &full, &steps);
        let opts: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(full.join("last/train.json")).unwrap()).unwrap();
        assert_eq!(opts["optimizer"], rule, "{opts}");
        assert!(weights(&full) != weights(&plain), "{rule} stepped as AdamW");
        assert_resumes_exactly(&model, &data, &full, &format!("optim-{rule}-part"), &steps);
    }
}

#[test]
fn bad_optimizer_values_are_refused() {
    let (model, data) = (tiny_model("optim-rule-bad"), tiny_data(8, "optim-rule-bad"));
    for nu in ["1.5,1", "0.7,-0.1"] {
        let e = finetune_refused(&model, &data, "optim-rule-bad-run", &["--optimizer", "qhadam", "--qh-nu", nu]);
        assert!(e.contains("--qh-nu") && e.trim().lines().count() == 1, "{nu}: {e}");
    }
    let e = finetune_refused(&model, &data, "optim-rule-bad-run", &["--qh-nu", "0.7"]);
    assert!(e.contains("--qh-nu takes two values"), "{e}");
    let e = finetune_refused(&model, &data, "optim-rule-bad-run", &["--optimizer", "sgd"]);
    assert!(e.contains("sgd") && e.contains("adamw"), "{e}");
}
