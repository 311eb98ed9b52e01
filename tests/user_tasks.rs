//! A task of the user's own (`--task-def`): a 3-class pair task made from the STS files, each
//! pair's similarity cut into low [0, 5/3), medium [5/3, 10/3) and high [10/3, 5] (an NLI-like
//! 3-way label the data here can give), trains beside SST with PCGrad and with the annealed
//! schedule, evaluates and predicts through `engine eval` and `engine predict` in processes that
//! know it only from the checkpoint, resumes bit for bit, and is refused where it makes no sense.

mod common;
use common::runs::{
    assert_resumes_exactly, eval_cpu, finetune_cpu as finetune, finetune_refused, predict_cpu, records, scratch,
    tiny_data, tiny_model,
};
use std::path::Path;

/// The STS `split` file of `data` as a 3-class pair file `nli-{split}.csv` (labels in a column
/// `label`; the test file without it).
fn write_nli(data: &Path, split: &str, labelled: bool) {
    let text = std::fs::read_to_string(data.join(format!("sts-{split}.csv"))).unwrap();
    let mut out =
        String::from(if labelled { "id\tsentence1\tsentence2\tlabel\n" } else { "id\tsentence1\tsentence2\n" });
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (id, a, b) = (f[1], f[2], f[3]);
        if labelled {
            let score: f64 = f[4].parse().unwrap();
            let class = ((score * 3.0 / 5.0).floor() as u32).min(2);
            out.push_str(&format!("{id}\t{a}\t{b}\t{class}\n"));
        } else {
            out.push_str(&format!("{id}\t{a}\t{b}\n"));
        }
    }
    std::fs::write(data.join(format!("nli-{split}.csv")), out).unwrap();
}

fn nli_data(tag: &str) -> std::path::PathBuf {
    let data = tiny_data(24, tag);
    write_nli(&data, "train", true);
    write_nli(&data, "dev", true);
    write_nli(&data, "dev", false);
    std::fs::rename(data.join("nli-dev.csv"), data.join("nli-test.csv")).unwrap();
    write_nli(&data, "dev", true);
    data
}

const DEF: &str = "nli:pair:classes=3";

#[test]
fn a_user_task_trains_evaluates_and_predicts() {
    let (model, data) = (tiny_model("user-task"), nli_data("user-task"));
    let out = scratch("user-task-run");
    finetune(&model, &data, &out, &["--max-steps", "4", "--task-def", DEF, "--tasks", "sst,nli", "--pcgrad"]);
    let eval = records(&out, "eval");
    let scores = &eval.last().unwrap()["metrics"];
    assert!(scores["nli"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)), "{scores}");
    let preds = std::fs::read_to_string(out.join("predictions/nli-dev-output.csv")).unwrap();
    let mut lines = preds.lines();
    assert_eq!(lines.next(), Some("id \t Predicted_Label "));
    let classes: Vec<u32> = lines.map(|l| l.split(" , ").nth(1).unwrap().trim().parse().unwrap()).collect();
    assert_eq!(classes.len(), 24);
    assert!(classes.iter().all(|&c| c < 3));
    assert!(out.join("predictions/nli-test-output.csv").is_file());
    assert!(out.join("confusion-nli.svg").is_file(), "the analysis covers the user's task");
    let opts = std::fs::read_to_string(out.join("best/train.json")).unwrap();
    assert!(opts.contains("\"task_defs\"") && opts.contains("\"nli\""), "{opts}");

    // Other processes know the task from the checkpoint alone.
    let best = out.join("best");
    let stdout = eval_cpu(&best, &data, &[]);
    assert!(stdout.contains("nli"), "{stdout}");
    let p = scratch("user-task-predict").join("nli.csv");
    let o = predict_cpu(&best, "nli", &data.join("nli-test.csv"), &["--output", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let predicted = std::fs::read_to_string(&p).unwrap();
    assert_eq!(predicted, std::fs::read_to_string(out.join("predictions/nli-test-output.csv")).unwrap());
}

#[test]
fn a_user_task_resumes_exactly_under_the_annealed_schedule() {
    let (model, data) = (tiny_model("user-resume"), nli_data("user-resume"));
    let steps = ["--max-steps", "4", "--task-def", DEF, "--tasks", "nli,sts", "--schedule", "annealed", "--gradvac"];
    let full = scratch("user-resume-full");
    finetune(&model, &data, &full, &steps);
    assert_resumes_exactly(&model, &data, &full, "user-resume-part", &steps);
}

#[test]
fn bad_user_tasks_are_refused() {
    let (model, data) = (tiny_model("user-bad"), nli_data("user-bad"));
    for (i, (flags, says)) in [
        (&["--tasks", "sst,nli"][..], "unknown task \"nli\""),
        (&["--task-def", "sst:single:binary", "--tasks", "sst"][..], "built-in task"),
        (&["--task-def", "nli:pair", "--tasks", "nli"][..], "NAME:single|pair"),
        (&["--task-def", "nli:pair:classes=1", "--tasks", "nli"][..], "at least 2"),
        (&["--task-def", "other:pair:binary", "--tasks", "other"][..], "other-train.csv"),
        (&["--task-def", "nli:pair:classes=2", "--tasks", "nli"][..], "not a class in 0..=1"),
        (&["--task-def", "nli:single:classes=3", "--tasks", "nli"][..], "expected columns id, sentence, label"),
    ]
    .into_iter()
    .enumerate()
    {
        let err = finetune_refused(&model, &data, &format!("user-bad-{i}"), &[flags, &["--strict"][..]].concat());
        assert!(err.contains(says) && err.trim().lines().count() == 1, "{flags:?}: {err}");
    }
}
