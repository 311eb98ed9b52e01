//! `engine pretrain --mlm`: BERT's masking (its proportions, the special tokens, at least one
//! choice per sequence, determinism), and end to end on the tiny BERT of tests/common: the output
//! folder and its tensor names, the loss going down on a repeated corpus, `finetune --model` and
//! `pretrain --model` from the output, and one-line refusals that write nothing.

mod common;
use common::runs::{engine, finetune_cpu, scratch, tiny_data, tiny_model};
use engine::data::masking::{Masking, sequence_rng};
use engine::model::Checkpoint;
use engine::model::mlm::{HeadOrigin, MlmHead};
use engine::model::safetensors::SafeTensors;
use engine::rng::Rng;
use engine::store::Store;
use engine::{Device, Tape};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const CLS: i32 = 2;
const SEP: i32 = 3;
const MASK: i32 = 4;
const VOCAB: usize = 1000;

fn masking() -> Masking {
    Masking::new(0.15, MASK, VOCAB, vec![CLS, SEP, 0]).unwrap()
}

/// `n` sequences [CLS] w… [SEP] of 1 to 58 words (ids 5..VOCAB), from `seed`.
fn sequences(n: usize, seed: u64) -> Vec<Vec<i32>> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let words = 1 + rng.below(58);
            let mut s = vec![CLS];
            s.extend((0..words).map(|_| 5 + rng.below(VOCAB - 5) as i32));
            s.push(SEP);
            s
        })
        .collect()
}

#[test]
fn masking_chooses_fifteen_percent_and_corrupts_eighty_ten_ten() {
    let m = masking();
    let (mut candidates, mut chosen, mut masked, mut random, mut kept) = (0, 0, 0, 0, 0);
    let mut replacements = Vec::new();
    for (i, s) in sequences(3000, 1).iter().enumerate() {
        let out = m.apply(s, &mut sequence_rng(5, 0, i));
        candidates += s.len() - 2;
        chosen += out.positions.len();
        for (&p, &label) in out.positions.iter().zip(&out.labels) {
            assert_eq!(label, s[p], "the label is the original id");
            match out.ids[p] {
                MASK => masked += 1,
                id if id == s[p] => kept += 1,
                id => {
                    random += 1;
                    replacements.push(id);
                }
            }
        }
    }
    let share = |n: usize, of: usize| n as f64 / of as f64;
    let (c, mk, r, k) = (share(chosen, candidates), share(masked, chosen), share(random, chosen), share(kept, chosen));
    println!("{chosen} of {candidates} tokens chosen ({c:.4}): [MASK] {mk:.4}, random {r:.4}, kept {k:.4}");
    assert!((c - 0.15).abs() < 0.005, "chosen {c}");
    assert!((mk - 0.8).abs() < 0.015, "[MASK] {mk}");
    assert!((r - 0.1).abs() < 0.01, "random {r}");
    assert!((k - 0.1).abs() < 0.01, "kept {k}");
    // Random replacements come from the whole vocabulary.
    let (lo, hi) = (replacements.iter().min().unwrap(), replacements.iter().max().unwrap());
    assert!(*lo < 50 && *hi > 950, "replacements in {lo}..={hi}");
}

#[test]
fn masking_skips_special_tokens_and_chooses_at_least_one() {
    let m = masking();
    let mut seqs = sequences(500, 2);
    seqs.push(vec![CLS, 77, SEP]); // one word: chosen, though 0.15 rounds to 0
    seqs.push(vec![CLS, SEP, 9, SEP]); // a pair-like sequence: only the word is maskable
    seqs.push(vec![CLS, SEP]); // nothing to choose
    for (i, s) in seqs.iter().enumerate() {
        let out = m.apply(s, &mut sequence_rng(3, 1, i));
        let words = s.iter().filter(|&&t| m.maskable(t)).count();
        assert_eq!(out.positions.len(), m.count(words), "sequence {i}");
        assert_eq!(out.positions.len(), ((0.15 * words as f64).round() as usize).clamp(words.min(1), words));
        assert!(words == 0 || !out.positions.is_empty(), "sequence {i}: none chosen of {words}");
        assert!(out.positions.windows(2).all(|w| w[0] < w[1]), "distinct, ascending");
        for (p, (&a, &b)) in s.iter().zip(&out.ids).enumerate() {
            if out.positions.contains(&p) {
                assert!(a != CLS && a != SEP, "sequence {i}: special token at {p} chosen");
            } else {
                assert_eq!(a, b, "sequence {i}: unchosen token {p} changed");
            }
        }
    }
    let one = m.apply(&[CLS, 77, SEP], &mut Rng::new(0));
    assert_eq!((one.positions, one.labels), (vec![1], vec![77]));
    for p in [0.0, 1.0, -0.1, f64::NAN] {
        let e = Masking::new(p, MASK, VOCAB, vec![]).expect_err("refused").to_string();
        assert!(e.contains("--mask-prob"), "{e}");
    }
}

#[test]
fn masking_is_a_function_of_seed_epoch_and_sentence() {
    let m = masking();
    let seqs = sequences(200, 3);
    let draw = |seed: u64, epoch: usize| -> Vec<Vec<i32>> {
        seqs.iter().enumerate().map(|(i, s)| m.apply(s, &mut sequence_rng(seed, epoch, i)).ids).collect()
    };
    assert_eq!(draw(11, 0), draw(11, 0), "the same seed and epoch: the same masks");
    let differ = |a: &[Vec<i32>], b: &[Vec<i32>]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    let (epoch, seed) = (differ(&draw(11, 0), &draw(11, 1)), differ(&draw(11, 0), &draw(12, 0)));
    println!("of 200 sequences, {epoch} differ in the next epoch and {seed} under another seed");
    assert!(epoch > 150 && seed > 150, "{epoch} {seed}");
}

/// `engine pretrain --mlm` on the CPU with `extra` flags; panics with its stderr when it fails.
fn pretrain(model: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec!["pretrain", "--mlm", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--device", "cpu", "--batch-size", "8", "--log-every", "1"]);
    args.extend_from_slice(extra);
    let o = engine(&args);
    assert!(o.status.success(), "pretrain failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The (step, loss) entries of an output's pretrain.json.
fn losses(out: &Path) -> Vec<(u64, f64)> {
    let j = json(&out.join("pretrain.json"));
    j["losses"].as_array().unwrap().iter().map(|e| (e[0].as_u64().unwrap(), e[1].as_f64().unwrap())).collect()
}

fn names(file: &Path) -> BTreeSet<String> {
    SafeTensors::open(file).unwrap().names().map(String::from).collect()
}

const HEAD: [&str; 5] = [
    "cls.predictions.bias",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.dense.weight",
];

#[test]
fn pretrain_writes_a_model_that_finetune_and_pretrain_start_from() {
    let (model, data) = (tiny_model("pretrain"), tiny_data(12, "pretrain"));
    let out = scratch("pretrain-out").join("mlm");
    let notes =
        pretrain(&model, &out, &["--data", data.to_str().unwrap(), "--max-steps", "3", "--lr", "1e-3", "--seed", "4"]);
    assert!(notes.contains("masked-LM head initialised"), "{notes}");
    for f in ["config.json", "vocab.txt", "model.safetensors", "pretrain.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The encoder (with its pooler) under the input's names, and the head.
    let (input, output) = (names(&model.join("model.safetensors")), names(&out.join("model.safetensors")));
    let want: BTreeSet<String> = input.iter().cloned().chain(HEAD.map(String::from)).collect();
    assert_eq!(output, want);
    // 12 SST sentences, and both sides of 12 Quora and 12 STS pairs.
    let record = json(&out.join("pretrain.json"));
    assert_eq!((record["sentences"].as_u64(), record["steps"].as_u64()), (Some(60), Some(3)), "{record}");
    assert_eq!(record["head"], "fresh");
    assert_eq!(record["corpus"]["tasks"]["tasks"], serde_json::json!(["sst", "quora", "sts"]));
    let (a, b) = (
        SafeTensors::open(&model.join("model.safetensors")).unwrap(),
        SafeTensors::open(&out.join("model.safetensors")).unwrap(),
    );
    let word = "embeddings.word_embeddings.weight";
    assert_ne!(a.f32(word).unwrap(), b.f32(word).unwrap(), "the encoder trained");
    assert_eq!(a.f32("pooler.dense.weight").unwrap(), b.f32("pooler.dense.weight").unwrap(), "the pooler is frozen");

    // The head loads back from the folder as it was written.
    let ckpt = Checkpoint::open(&out).unwrap();
    let mut store = Store::<f32>::new(Device::Cpu);
    let (head, origin) = MlmHead::load(&mut store, &ckpt, 0).unwrap();
    assert_eq!(origin, HeadOrigin::Checkpoint);
    assert_eq!(store.read(head.dense_w).unwrap(), b.f32(HEAD[4]).unwrap());
    assert_eq!(store.read(head.bias).unwrap(), b.f32(HEAD[0]).unwrap());

    // finetune reads the folder (passing over cls.*), and so does another pretrain.
    let run = scratch("pretrain-finetune");
    finetune_cpu(&out, &data, &run, &["--max-steps", "1", "--quiet"]);
    assert!(run.join("best/model.safetensors").is_file());
    assert!(names(&run.join("best/model.safetensors")).iter().all(|n| !n.starts_with("cls.")));
    let again = scratch("pretrain-again").join("mlm");
    let notes = pretrain(&out, &again, &["--data", data.to_str().unwrap(), "--tasks", "sst", "--max-steps", "2"]);
    assert!(notes.contains("masked-LM head from the checkpoint"), "{notes}");
    assert_eq!(json(&again.join("pretrain.json"))["sentences"], 12);
    assert_eq!(names(&again.join("model.safetensors")), want);
    // --overwrite replaces a folder that holds something.
    pretrain(&out, &again, &["--data", data.to_str().unwrap(), "--tasks", "sst", "--max-steps", "1", "--overwrite"]);
    assert_eq!(json(&again.join("pretrain.json"))["steps"], 1);
}

/// `n` first sentences of the SST training slice `data`, which the tiny model's vocabulary covers.
fn sst_sentences(data: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(data.join("ids-sst-train.csv")).unwrap();
    text.lines().skip(1).take(n).map(|l| l.split('\t').nth(2).unwrap().to_string()).collect()
}

#[test]
fn the_loss_goes_down_on_a_repeated_corpus_and_runs_repeat() {
    let (model, data) = (tiny_model("pretrain-loss"), tiny_data(8, "pretrain-loss"));
    let dir = scratch("pretrain-loss");
    let text = dir.join("corpus.txt");
    let lines: Vec<String> = sst_sentences(&data, 4).into_iter().cycle().take(16).collect();
    std::fs::write(&text, lines.join("\n\n") + "\n").unwrap(); // blank lines between: skipped
    let run = |tag: &str| -> PathBuf {
        let out = dir.join(tag);
        let t = text.to_str().unwrap();
        pretrain(&model, &out, &["--text", t, "--epochs", "30", "--lr", "1e-2", "--warmup-ratio", "0", "--quiet"]);
        out
    };
    let out = run("a");
    let l = losses(&out);
    assert_eq!(l.len(), 60, "16 sentences at 8 a batch, 30 epochs: {l:?}");
    assert_eq!(json(&out.join("pretrain.json"))["sentences"], 16);
    let mean = |s: &[(u64, f64)]| s.iter().map(|(_, v)| v).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&l[..4]), mean(&l[l.len() - 4..]));
    println!("masked-LM loss: first 4 steps {first:.3}, last 4 steps {last:.3}");
    assert!(last < 0.6 * first, "the loss did not go down: {first:.3} → {last:.3}");
    assert_eq!(losses(&run("b")), l, "the same seed: the same losses");
}

/// Rewrites the safetensors file `file` with every tensor renamed by `rename`.
fn rename_tensors(file: &Path, rename: &dyn Fn(&str) -> String) {
    let st = SafeTensors::open(file).unwrap();
    let tensors: Vec<_> =
        st.names().map(|n| (rename(n), st.info(n).unwrap().shape.clone(), st.f32(n).unwrap())).collect();
    drop(st);
    engine::model::safetensors::write(file, &tensors, &Default::default()).unwrap();
}

/// A name under the old LayerNorm names (`gamma`, `beta`), as bert-base-uncased's file has them.
fn old_norm(name: &str) -> String {
    name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
}

#[test]
fn the_output_keeps_the_input_tensor_names() {
    // The encoder under `bert.` and the old LayerNorm names: kept, the fresh head beside it.
    let (model, data) = (tiny_model("pretrain-names"), tiny_data(8, "pretrain-names"));
    rename_tensors(&model.join("model.safetensors"), &|n| old_norm(&format!("bert.{n}")));
    let d = data.to_str().unwrap();
    let out = scratch("pretrain-names").join("mlm");
    pretrain(&model, &out, &["--data", d, "--tasks", "sts", "--max-steps", "1", "--quiet"]);
    let input = names(&model.join("model.safetensors"));
    assert!(input.contains("bert.embeddings.LayerNorm.gamma"));
    let want: BTreeSet<String> = input.into_iter().chain(HEAD.map(String::from)).collect();
    assert_eq!(names(&out.join("model.safetensors")), want);
    // A head under the old names too: read as the checkpoint's, written back under them.
    rename_tensors(&out.join("model.safetensors"), &old_norm);
    let again = scratch("pretrain-names-again").join("mlm");
    let notes = pretrain(&out, &again, &["--data", d, "--tasks", "sts", "--max-steps", "1"]);
    assert!(notes.contains("head from the checkpoint"), "{notes}");
    let kept = names(&again.join("model.safetensors"));
    assert!(kept.contains("cls.predictions.transform.LayerNorm.gamma"), "{kept:?}");
    assert_eq!(kept, names(&out.join("model.safetensors")));
    let mut tape = Tape::<f32>::new(Device::Cpu);
    Checkpoint::open(&again).unwrap().load_bert(&mut tape.store, &|_| true).unwrap();
}

/// `engine pretrain` with `args` (after `pretrain`), which it must refuse in one `error:` line
/// writing no folder; returns the line.
fn refused(args: &[&str], out: &Path) -> String {
    let mut all = vec!["pretrain"];
    all.extend_from_slice(args);
    all.extend(["--device", "cpu"]);
    let o = engine(&all);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} was accepted: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(!out.join("model.safetensors").exists(), "{args:?} wrote a model");
    err
}

#[test]
fn bad_input_is_refused_in_one_line() {
    let (model, data) = (tiny_model("pretrain-bad"), tiny_data(8, "pretrain-bad"));
    let dir = scratch("pretrain-bad");
    let out = dir.join("out");
    let (m, d, o) = (model.to_str().unwrap(), data.to_str().unwrap(), out.to_str().unwrap());
    let (missing, blank) = (dir.join("missing.txt"), dir.join("blank.txt"));
    std::fs::write(&blank, "\n   \n\t\n").unwrap();
    let base = ["--model", m, "--data-dir", d, "--out", o];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    let text = |path: &Path| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(["--mlm".into(), "--text".into(), path.display().to_string()])
            .collect()
    };

    let e = refused(&with(&[]), &out);
    assert!(e.contains("--mlm"), "{e}");
    let e = refused(&with(&["--mlm", "--tasks", "sst,para"]), &out);
    assert!(e.contains("unknown task \"para\""), "{e}");
    let e = refused(&with(&["--mlm", "--tasks", "sst", "--text", "x.txt"]), &out);
    assert!(e.contains("--text and --tasks"), "{e}");
    let e = refused(&text(&missing).iter().map(String::as_str).collect::<Vec<_>>(), &out);
    assert!(e.contains("missing.txt") && e.contains("no such file"), "{e}");
    let e = refused(&text(&blank).iter().map(String::as_str).collect::<Vec<_>>(), &out);
    assert!(e.contains("empty corpus"), "{e}");
    for p in ["0", "1", "-0.1", "nan", "1.5"] {
        let e = refused(&with(&["--mlm", "--mask-prob", p]), &out);
        assert!(e.contains("--mask-prob"), "{p}: {e}");
    }
    // A folder that holds something is left as it was.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let e = refused(&with(&["--mlm", "--max-steps", "1"]), &out);
    assert!(e.contains("--overwrite"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    let e = refused(&["--mlm", "--model", m, "--data-dir", d], &out);
    assert!(e.contains("--out"), "{e}");
}
