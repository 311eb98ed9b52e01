//! `engine finetune`, `eval` and `predict` end to end on a tiny BERT (random weights, a WordPiece
//! vocab.txt of its own) and tiny slices of the CS224N files: resume equals the uninterrupted
//! run bit for bit, the same seed gives the same metrics, prediction files have the course's
//! layout, and bad input gives one clear error with nothing half-written.

mod common;
use common::runs::{engine, eval_cpu, predict_cpu, records, scratch, tiny_data, tiny_model};
use std::path::Path;
use std::process::Output;

fn finetune(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let o = try_finetune(model, data, out, extra);
    assert!(o.status.success(), "finetune failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

/// `engine finetune` on the CPU at batch 4, logging every step, with `extra` flags.
fn try_finetune(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "finetune",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--log-every",
        "1",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    engine(&args)
}

/// Training records of metrics.jsonl: (step, task → loss).
fn losses(out: &Path) -> Vec<(u64, serde_json::Value)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].clone()))
        .collect()
}

fn evals(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect()
}

#[test]
fn resume_equals_the_uninterrupted_run_and_seeds_repeat() {
    let (model, data) = (tiny_model("resume"), tiny_data(24, "resume"));
    let steps = ["--max-steps", "8", "--eval-every", "4", "--lr", "1e-3"];
    let full = scratch("full");
    finetune(&model, &data, &full, &steps);
    let again = scratch("again");
    finetune(&model, &data, &again, &steps);
    assert_eq!(losses(&full), losses(&again), "same seed, same threads: same losses");
    assert_eq!(evals(&full), evals(&again), "same seed, same threads: same dev metrics");

    let part = scratch("part");
    let mut stop = steps.to_vec();
    stop.extend_from_slice(&["--stop-after", "3"]);
    let o = finetune(&model, &data, &part, &stop);
    assert!(String::from_utf8_lossy(&o.stdout).contains("stopped after step 3"));
    assert!(!part.join("predictions").exists());
    let last = part.join("last");
    finetune(&model, &data, &part, &["--resume", last.to_str().unwrap()]);
    let (a, b) = (losses(&full), losses(&part));
    assert_eq!(a.len(), 8);
    assert_eq!(a, b, "the resumed run's losses differ from the uninterrupted run's");
    assert_eq!(evals(&full), evals(&part));
    let weights = |d: &Path| std::fs::read(d.join("last/model.safetensors")).unwrap();
    assert!(weights(&full) == weights(&part), "final weights differ");
    for f in [
        "sst-dev-output.csv",
        "para-dev-output.csv",
        "sts-dev-output.csv",
        "sst-test-output.csv",
        "sts-test-output.csv",
    ] {
        assert_eq!(
            std::fs::read(full.join("predictions").join(f)).unwrap(),
            std::fs::read(part.join("predictions").join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn predictions_eval_and_predict_follow_the_course_layout() {
    let (model, data) = (tiny_model("layout"), tiny_data(12, "layout"));
    let out = scratch("layout");
    let o = finetune(&model, &data, &out, &["--max-steps", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("combined") && stdout.contains("sst"), "{stdout}");
    assert!(out.join("curves.svg").is_file() && out.join("best/model.safetensors").is_file());
    let headers = [
        ("sst-dev-output.csv", "Predicted_Sentiment"),
        ("para-dev-output.csv", "Predicted_Is_Paraphrase"),
        ("sts-dev-output.csv", "Predicted_Similiary"),
    ];
    for (file, column) in headers {
        let text = std::fs::read_to_string(out.join("predictions").join(file)).unwrap();
        let mut lines = text.split_inclusive('\n');
        assert_eq!(lines.next().unwrap(), format!("id \t {column} \n"));
        let rows: Vec<&str> = lines.collect();
        assert_eq!(rows.len(), 12, "{file}");
        for r in rows {
            let (id, rest) = r.split_once(" , ").unwrap_or_else(|| panic!("{file}: {r:?}"));
            assert_eq!(id.len(), 25, "{r:?}");
            assert!(rest.ends_with(" \n") && !rest.trim().is_empty(), "{r:?}");
            if file.starts_with("para") {
                assert!(rest == "0.0 \n" || rest == "1.0 \n", "{r:?}");
            }
            if file.starts_with("sst") {
                assert!(rest.trim().parse::<u32>().unwrap() < 5);
            }
        }
    }
    // eval on dev reproduces the run's prediction files; predict gives the same bytes for one task.
    let best = out.join("best");
    let evaluated = scratch("eval");
    let stdout = eval_cpu(&best, &data, &["--out", evaluated.to_str().unwrap()]);
    assert!(stdout.contains("combined"), "{stdout}");
    for (file, _) in headers {
        assert_eq!(
            std::fs::read(evaluated.join(file)).unwrap(),
            std::fs::read(out.join("predictions").join(file)).unwrap(),
            "{file}"
        );
    }
    let input = data.join("sts-dev.csv");
    let o = predict_cpu(&best, "sts", &input, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, std::fs::read(out.join("predictions/sts-dev-output.csv")).unwrap());
}

/// The confusion matrix of `task` in an analysis.txt: its rows (gold) of counts (predicted).
fn confusion(report: &str, task: &str) -> Vec<Vec<usize>> {
    let section = report.split(&format!("{task}: ")).nth(1).unwrap_or_else(|| panic!("no {task} table: {report}"));
    let mut lines = section.lines().skip_while(|l| !l.starts_with("gold\\pred"));
    let classes = lines.next().unwrap_or_else(|| panic!("no {task} matrix: {report}")).split_whitespace().count() - 1;
    let rows: Vec<Vec<usize>> =
        lines.take(classes).map(|l| l.split_whitespace().skip(1).map(|v| v.parse().unwrap()).collect()).collect();
    assert!(rows.len() == classes && rows.iter().all(|r| r.len() == classes), "{task}: {rows:?}");
    rows
}

#[test]
fn finetune_and_eval_write_the_dev_analysis() {
    let (model, data) = (tiny_model("analysis"), tiny_data(12, "analysis"));
    let out = scratch("analysis");
    let o = finetune(&model, &data, &out, &["--max-steps", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&format!("analysis in {}", out.join("analysis.txt").display())), "{stdout}");
    assert!(!stdout.contains("precision"), "the report goes to analysis.txt, not stdout: {stdout}");
    for f in ["analysis.txt", "confusion-sst.svg", "confusion-quora.svg", "sts-scatter.svg"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let report = std::fs::read_to_string(out.join("analysis.txt")).unwrap();
    // Every dev example is counted once: the counts sum to the rows of the dev prediction file.
    for (task, file, classes) in [("sst", "sst-dev-output.csv", 5), ("quora", "para-dev-output.csv", 2)] {
        let m = confusion(&report, task);
        assert_eq!(m.len(), classes, "{task}");
        let dev = std::fs::read_to_string(out.join("predictions").join(file)).unwrap().lines().count() - 1;
        assert_eq!(m.iter().flatten().sum::<usize>(), dev, "{task}: {report}");
        let svg = std::fs::read_to_string(out.join(format!("confusion-{task}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n") && svg.contains("predicted"), "{task}");
    }
    let dev = std::fs::read_to_string(out.join("predictions/sts-dev-output.csv")).unwrap().lines().count() - 1;
    assert!(report.contains(&format!("sts: {dev} examples, pearson")), "{report}");
    let svg = std::fs::read_to_string(out.join("sts-scatter.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), dev);

    // eval on dev prints the report and writes the same analysis beside its predictions.
    let best = out.join("best");
    let evaluated = scratch("analysis-eval");
    let eval = |split: &str, dir: &Path, extra: &[&str]| {
        let mut args = vec!["--split", split, "--out", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        eval_cpu(&best, &data, &args)
    };
    let stdout = eval("dev", &evaluated, &[]);
    assert!(stdout.contains("precision") && stdout.contains("recall") && stdout.contains("macro avg"), "{stdout}");
    assert_eq!(std::fs::read_to_string(evaluated.join("analysis.txt")).unwrap(), report);
    assert!(evaluated.join("confusion-sst.svg").is_file() && evaluated.join("sts-scatter.svg").is_file());
    // On test (no labels; the tiny data have no Quora test file, so its dev file stands in,
    // read without labels) nothing new is printed or written.
    let tested = scratch("analysis-test");
    let quora = data.join("quora-dev.csv");
    let stdout = eval("test", &tested, &["--quora-test", quora.to_str().unwrap()]);
    assert!(!stdout.contains("precision"), "{stdout}");
    assert!(tested.join("para-test-output.csv").is_file() && !tested.join("analysis.txt").exists());
}

/// Runs the engine expecting failure; returns its one `error:` line.
fn fails(args: &[&str]) -> String {
    let o = engine(args);
    assert!(!o.status.success(), "should fail: {args:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {err}");
    errors[0].to_string()
}

#[test]
fn bad_input_gives_one_clear_error_and_writes_nothing() {
    let (model, data) = (tiny_model("bad"), tiny_data(8, "bad"));
    let out = scratch("bad");
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            ["finetune", "--model", model.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--out"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        v.push(out.join("run").to_str().unwrap().to_string());
        v.extend(["--device", "cpu", "--quiet", "--max-steps", "1"].iter().map(|s| s.to_string()));
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str]| fails(&base(extra).iter().map(|s| s.as_str()).collect::<Vec<_>>());

    let e = run(&["--sst-train", "/nonexistent/sst.csv"]);
    assert!(e.contains("--sst-train /nonexistent/sst.csv: no such file"), "{e}");
    std::fs::write(out.join("empty.csv"), "").unwrap();
    let e = run(&["--sts-dev", out.join("empty.csv").to_str().unwrap()]);
    assert!(e.contains("--sts-dev") && e.contains("empty"), "{e}");
    let bad = out.join("bad-sst.csv");
    std::fs::write(&bad, "\tid\tsentence\tsentiment\n0\tabc\t a film\t3\n1\tdef\t another\t9\n").unwrap();
    let e = run(&["--sst-train", bad.to_str().unwrap(), "--strict"]);
    assert!(e.contains("bad-sst.csv:3") && e.contains("sentiment \"9\""), "{e}");
    let e = run(&["--tasks", "sst,imdb"]);
    assert!(e.contains("imdb"), "{e}");
    let e = run(&["--task-weights", "sst=x"]);
    assert!(e.contains("--task-weights"), "{e}");
    let e = run(&["--dropout", "1.5"]);
    assert!(e.contains("--dropout"), "{e}");
    // Float flags must be finite (NaN compares false with every bound), and --stop-after 0 would
    // stop before the first step (it was accepted and ignored).
    for (flag, value) in [("--weight-decay", "nan"), ("--grad-clip", "NaN"), ("--weight-decay", "inf")] {
        let e = run(&[flag, value]);
        assert!(e.contains(flag) && e.contains("finite"), "{flag} {value}: {e}");
    }
    let e = run(&["--stop-after", "0"]);
    assert!(e.contains("--stop-after 0"), "{e}");
    // A jointly encoded pair needs [CLS] a [SEP] b [SEP]; positions past the checkpoint's are
    // refused before training (they failed in the first step).
    let e = run(&["--max-len", "4"]);
    assert!(e.contains("--max-len 4") && e.contains("at least 5"), "{e}");
    let e = run(&["--max-len", "129"]);
    assert!(e.contains("--max-len 129 exceeds the checkpoint's 128 positions"), "{e}");
    let e =
        fails(&["finetune", "--model", "/nonexistent/model", "--data-dir", data.to_str().unwrap(), "--device", "cpu"]);
    assert!(e.contains("/nonexistent/model"), "{e}");
    let e = run(&["--pcgrad", "--tasks", "sst"]);
    assert!(e.contains("--pcgrad needs 2 to 8 tasks"), "{e}");
    let e = run(&["--lora", "0"]);
    assert!(e.contains("--lora") && e.contains("rank"), "{e}");
    let e = run(&["--lora", "4", "--lora-targets", "query,bias"]);
    assert!(e.contains("bias") && e.contains("--lora-targets"), "{e}");
    let e = run(&["--lora-alpha", "16"]);
    assert!(e.contains("required arguments were not provided"), "{e}"); // clap names --lora <R> below

    let e = run(&["--lora", "4", "--freeze-layers", "1"]);
    assert!(e.contains("--freeze-layers"), "{e}");
    let e = run(&["--resume", out.to_str().unwrap()]);
    assert!(e.contains("train.json") || e.contains("state"), "{e}");
    assert!(!out.join("run/best").exists() && !out.join("run/predictions").exists(), "nothing may be half-written");

    // Without --strict, the malformed record is named and skipped, and training goes on.
    let o = engine(&base(&["--sst-train", bad.to_str().unwrap()]).iter().map(|s| s.as_str()).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad-sst.csv:3") && err.contains("skipped 1 malformed record"), "{err}");
}

/// Records of one kind from metrics.jsonl.
/// Tensor names of a safetensors file (from its JSON header).
fn tensor_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header.keys().filter(|k| *k != "__metadata__").cloned().collect()
}

#[test]
fn pcgrad_with_lora_logs_its_statistics_and_resumes_exactly() {
    let (model, data) = (tiny_model("pcgrad"), tiny_data(24, "pcgrad"));
    let steps = ["--max-steps", "6", "--eval-every", "3", "--pcgrad", "--lora", "4"];
    let full = scratch("pcgrad-full");
    finetune(&model, &data, &full, &steps);
    let stats = records(&full, "pcgrad");
    assert_eq!(stats.len(), 6, "one record per step");
    for s in &stats {
        assert_eq!(s["cosine"].as_object().unwrap().len(), 3, "three task pairs: {s}");
        assert!(s["cosine"].as_object().unwrap().values().all(|c| c.as_f64().unwrap().abs() <= 1.0));
        let f = s["projected_fraction"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f) && (f * 6.0 - (f * 6.0).round()).abs() < 1e-9, "k(k−1) = 6 pairs: {f}");
        assert!(s["norm_ratio"].as_object().unwrap().values().all(|r| r.as_f64().unwrap() <= 1.0 + 1e-9));
    }
    assert_eq!(records(&full, "pcgrad_summary").len(), 2, "a summary at each evaluation");
    assert!(std::fs::read_to_string(full.join("pcgrad.svg")).unwrap().contains("<polyline"));

    let part = scratch("pcgrad-part");
    let mut stop = steps.to_vec();
    stop.extend_from_slice(&["--stop-after", "2"]);
    finetune(&model, &data, &part, &stop);
    finetune(&model, &data, &part, &["--resume", part.join("last").to_str().unwrap()]);
    assert_eq!(losses(&full), losses(&part), "the resumed run's losses differ");
    assert_eq!(records(&full, "pcgrad"), records(&part, "pcgrad"), "the resumed run's surgery differs");
    let adapters = |d: &Path| std::fs::read(d.join("last/adapter_model.safetensors")).unwrap();
    assert!(adapters(&full) == adapters(&part), "final adapters differ");

    // PCGrad on the whole encoder too, with accumulation: one surgery per optimizer step.
    let encoder = scratch("pcgrad-encoder");
    let args = ["--max-steps", "3", "--pcgrad", "--pcgrad-reduction", "mean", "--grad-accum", "2"];
    finetune(&model, &data, &encoder, &args);
    assert_eq!(records(&encoder, "pcgrad").len(), 3);
}

#[test]
fn lora_checkpoints_hold_adapters_and_heads_and_merge_into_a_plain_model() {
    let (model, data) = (tiny_model("lora"), tiny_data(12, "lora"));
    let out = scratch("lora");
    let targets = ["--lora", "4", "--lora-targets", "query,value,ffn_out", "--max-steps", "4", "--lr", "1e-2"];
    finetune(&model, &data, &out, &targets);
    let best = out.join("best");
    assert!(!best.join("model.safetensors").exists(), "a LoRA checkpoint holds no base weights");
    let names = tensor_names(&best.join("adapter_model.safetensors"));
    assert_eq!(names.iter().filter(|n| n.contains(".lora_A.")).count(), 2 * 3);
    assert!(names.iter().all(|n| n.contains(".lora_") || n.starts_with("head.")), "{names:?}");
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(size(&best.join("adapter_model.safetensors")) * 5 < size(&model.join("model.safetensors")));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(best.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["r"], 4);
    assert_eq!(config["base_model_name_or_path"], std::path::absolute(&model).unwrap().to_str().unwrap());

    let eval = |ckpt: &Path| eval_cpu(ckpt, &data, &[]);
    eval(&best);
    let merged = out.join("merged");
    let o = engine(&["merge", "--checkpoint", best.to_str().unwrap(), "--output", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("merged 6 adapters"));
    let names = tensor_names(&merged.join("model.safetensors"));
    assert!(names.iter().all(|n| !n.contains("lora_")) && names.iter().any(|n| n.starts_with("head.")));
    eval(&merged);
    // Same predictions from the merged model: classes equal, STS scores within 1e-5.
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join("predictions").join(f)).unwrap();
    assert_eq!(read(&best, "sst-dev-output.csv"), read(&merged, "sst-dev-output.csv"));
    let scores = |d: &Path| -> Vec<f64> {
        read(d, "sts-dev-output.csv")
            .lines()
            .skip(1)
            .map(|l| l.rsplit(',').next().unwrap().trim().parse().unwrap())
            .collect()
    };
    let (a, b) = (scores(&best), scores(&merged));
    assert_eq!(a.len(), b.len());
    let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(worst <= 1e-5, "merged STS predictions differ by {worst:e}");

    // Merging a checkpoint without adapters is refused, and writes nothing.
    let plain = scratch("lora-plain");
    finetune(&model, &data, &plain, &["--max-steps", "1"]);
    let err = fails(&["merge", "--checkpoint", plain.join("best").to_str().unwrap(), "--output", "/tmp/engine-never"]);
    assert!(err.contains("adapter_config.json"), "{err}");
    assert!(!Path::new("/tmp/engine-never").exists());
}

/// `--precision bf16`: recorded in train.json (so --resume keeps it), trains to finite losses that
/// differ from float32's from the first step (every matmul reads rounded operands), and resumes
/// exactly.
#[test]
fn bf16_precision_trains_resumes_and_is_recorded() {
    let (model, data) = (tiny_model("bf16"), tiny_data(24, "bf16"));
    let steps = ["--max-steps", "4", "--lr", "1e-3"];
    let (f32_run, bf16_run, part) = (scratch("f32-run"), scratch("bf16-run"), scratch("bf16-part"));
    finetune(&model, &data, &f32_run, &steps);
    let mut bf16 = steps.to_vec();
    bf16.extend_from_slice(&["--precision", "bf16"]);
    finetune(&model, &data, &bf16_run, &bf16);
    let options: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(bf16_run.join("last/train.json")).unwrap()).unwrap();
    assert_eq!(options["precision"], "bf16");
    let (a, b) = (losses(&f32_run), losses(&bf16_run));
    assert_eq!(a.len(), b.len());
    assert_ne!(a[0], b[0], "bf16 operands change the first step's losses");
    for (_, l) in &b {
        assert!(l.as_object().unwrap().values().all(|v| v.as_f64().unwrap().is_finite()), "{l}");
    }
    bf16.extend_from_slice(&["--stop-after", "2"]);
    finetune(&model, &data, &part, &bf16);
    let last = part.join("last");
    finetune(&model, &data, &part, &["--resume", last.to_str().unwrap()]);
    assert_eq!(losses(&part), b, "the resumed bf16 run differs");
}

/// A run whose loss turns non-finite stops with one error naming the task and the steps, before
/// any checkpoint is written.
#[test]
fn a_diverging_run_stops_before_writing_a_checkpoint() {
    let (model, data) = (tiny_model("diverge"), tiny_data(24, "diverge"));
    let out = scratch("diverge");
    let o = try_finetune(&model, &data, &out, &["--max-steps", "6", "--lr", "1e30"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a diverging run must fail");
    assert!(err.contains("loss became") && err.contains("lower --lr"), "{err}");
    assert!(!out.join("best").exists() && !out.join("last").exists(), "no checkpoint after a non-finite loss");
}

/// A fine-tuned checkpoint whose weights went NaN: `predict` refuses, naming the example, and
/// writes no prediction file (a NaN logit once still gave a class through argmax).
#[test]
fn non_finite_outputs_are_refused_by_predict() {
    let (model, data) = (tiny_model("nan-predict"), tiny_data(6, "nan-predict"));
    let out = scratch("nan-predict");
    finetune(&model, &data, &out, &["--max-steps", "1"]);
    let file = out.join("best/model.safetensors");
    common::runs::poison_word_embeddings(&file);
    let predictions = out.join("nan-sst.csv");
    let best = out.join("best");
    for task in ["sst", "sts"] {
        let input = data.join(if task == "sst" { "ids-sst-dev.csv" } else { "sts-dev.csv" });
        let o = predict_cpu(&best, task, &input, &["--output", predictions.to_str().unwrap()]);
        assert!(!o.status.success(), "{task}: predictions of NaN outputs were written");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("example") && err.contains("NaN"), "{task}: {err}");
        assert!(!predictions.exists());
    }
}
