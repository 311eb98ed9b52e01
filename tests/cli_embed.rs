//! `engine embed` through the binary: the golden sentences' mean-pooled and pooler embeddings
//! (max |Δ| ≤ 1e-4 against Hugging Face), pairs encoded jointly, and one clear error line for
//! bad input with nothing written.

mod common;
use common::golden::{golden, model_dir};
use common::runs::engine;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Embeds `lines` with `pooling`; returns (text, embedding) per output line.
fn embed(lines: &[String], pooling: &str, tag: &str) -> Vec<(String, Vec<f32>)> {
    let (input, output) = (tmp(&format!("{tag}.txt")), tmp(&format!("{tag}.jsonl")));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let model = model_dir();
    let out = engine(&[
        "embed",
        "--model",
        model.to_str().unwrap(),
        "--pooling",
        pooling,
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--device",
        "cpu",
        "--batch-size",
        "4",
    ]);
    assert!(out.status.success(), "engine embed failed: {}", String::from_utf8_lossy(&out.stderr));
    read_jsonl(&output)
}

fn read_jsonl(path: &Path) -> Vec<(String, Vec<f32>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let e = v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            (v["text"].as_str().unwrap().to_string(), e)
        })
        .collect()
}

fn assert_close(got: &[(String, Vec<f32>)], want: &[f32], what: &str) {
    let flat: Vec<f32> = got.iter().flat_map(|(_, e)| e.iter().copied()).collect();
    assert_eq!(flat.len(), want.len(), "{what}: size");
    let d = flat.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("{what}: max |Δ| {d:.2e}");
    assert!(d <= 1e-4, "{what}: max |Δ| {d:e}");
}

#[test]
fn embed_reproduces_the_golden_singles() {
    let g = golden();
    let singles = g.strings("/singles"); // includes the empty sentence and a non-ASCII one
    let mean = embed(&singles, "mean", "singles-mean");
    assert_eq!(mean.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>(), singles, "texts in input order");
    assert_close(&mean, &g.f32("single.mean_pooled"), "single.mean_pooled");
    let pooler = embed(&singles, "pooler", "singles-pooler");
    assert_close(&pooler, &g.f32("single.pooler_output"), "single.pooler_output");
}

#[test]
fn embed_encodes_tab_separated_pairs_jointly() {
    let g = golden();
    let pairs: Vec<String> = g.pairs().iter().map(|(a, b)| format!("{a}\t{b}")).collect();
    let mean = embed(&pairs, "mean", "pairs-mean");
    assert_close(&mean, &g.f32("pair.mean_pooled"), "pair.mean_pooled");
    let pooler = embed(&pairs, "pooler", "pairs-pooler");
    assert_close(&pooler, &g.f32("pair.pooler_output"), "pair.pooler_output");
}

#[test]
fn bad_input_is_one_clear_line_and_writes_nothing() {
    let output = tmp("never.jsonl");
    let out =
        engine(&["embed", "--input", "/nonexistent/in.txt", "--output", output.to_str().unwrap(), "--device", "cpu"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: --input /nonexistent/in.txt"), "{err}");
    assert!(!output.exists());

    let input = tmp("ok.txt");
    std::fs::write(&input, "a sentence\n").unwrap();
    let out = engine(&[
        "embed",
        "--model",
        "/nonexistent/model",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model does not exist"));
    assert!(!output.exists());

    let out = engine(&[
        "embed",
        "--pooling",
        "max",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'max'"));

    // An OS error is said once ("… (os error 2)", not "…: … (os error 2): … (os error 2)").
    let under_a_file = input.join("out.jsonl"); // input is a file: not a directory
    let out = engine(&["embed", "--input", input.to_str().unwrap(), "--output", under_a_file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("(os error").count(), 1, "{err}");

    let tabs = tmp("tabs.txt");
    std::fs::write(&tabs, "one\ta pair\nthree\tparts\there\n").unwrap();
    let out = engine(&["embed", "--input", tabs.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    assert!(!out.status.success(), "a line with two tabs was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2: 2 tabs"), "{err}");
    assert!(!output.exists());
}

/// A checkpoint with NaN word embeddings: `embed` refuses, naming the first line, and writes
/// nothing (it once wrote `null` for every value and exited 0).
#[test]
fn non_finite_embeddings_are_refused_not_written() {
    let model = common::runs::tiny_model("nan-embed");
    let file = model.join("model.safetensors");
    common::runs::poison_word_embeddings(&file);
    let (input, output) = (tmp("nan-in.txt"), tmp("nan-out.jsonl"));
    std::fs::write(&input, "a sentence\nanother one\n").unwrap();
    let args = ["embed", "--model", model.to_str().unwrap(), "--input", input.to_str().unwrap()];
    let out = engine(&[&args[..], &["--output", output.to_str().unwrap(), "--device", "cpu"]].concat());
    assert!(!out.status.success(), "NaN embeddings were written");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input line 1") && err.contains("NaN") && err.contains("nothing written"), "{err}");
    assert!(!output.exists());
}

/// A full disk (here: a file-size limit, `ulimit -f`, with SIGXFSZ ignored so the write fails
/// with EFBIG as on a full disk) fails the write in one line and leaves no temp file behind (it
/// left a 0-byte one) and the previous output as it was.
#[test]
fn a_full_disk_leaves_no_temp_file_and_the_old_output_intact() {
    let dir = tmp("full-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in.txt"), dir.join("out.jsonl"));
    let lines: Vec<String> = (0..40).map(|i| format!("sentence number {i} for a disk that fills up")).collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    std::fs::write(&output, "the previous output\n").unwrap();
    let model = model_dir();
    let script = format!(
        "trap '' XFSZ; ulimit -f 4; exec '{}' embed --model '{}' --input '{}' --output '{}' --device cpu --quiet",
        env!("CARGO_BIN_EXE_engine"),
        model.display(),
        input.display(),
        output.display()
    );
    let o = Command::new("bash").args(["-c", &script]).output().expect("run bash");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the write must fail past 4 KiB: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("out.jsonl"), "the error names the file: {err}");
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "the previous output\n");
}
