//! Crashes and two runs in one folder: `engine finetune` killed (SIGKILL) at points held by
//! ENGINE_FAILPOINT — after an optimizer step, inside each step of a checkpoint swap of last/ and
//! of best/, between prediction files — then `--resume O/last` ends with predictions and weights
//! equal to an uninterrupted run's byte for byte, and no temporary file or folder left. A second
//! run into a folder in use refuses; a fresh run into a folder holding a run refuses unless
//! `--overwrite`, which clears it first.

mod common;
use common::runs::{scratch, tiny_data, tiny_model};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every run here: 8 steps, evaluated (and saved) every 2.
const RUN: [&str; 12] = [
    "--device",
    "cpu",
    "--batch-size",
    "4",
    "--max-steps",
    "8",
    "--eval-every",
    "2",
    "--lr",
    "3e-3",
    "--log-every",
    "1",
];

struct Setup {
    model: PathBuf,
    data: PathBuf,
}

impl Setup {
    fn new(tag: &str) -> Setup {
        Setup { model: tiny_model(tag), data: tiny_data(24, tag) }
    }

    fn command(&self, out: &Path, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_engine"));
        c.args(["finetune", "--model", self.model.to_str().unwrap(), "--data-dir", self.data.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap(), "--quiet"])
            .args(RUN)
            .args(extra)
            .env_remove("ENGINE_FAILPOINT");
        c
    }

    fn run(&self, out: &Path, extra: &[&str]) -> Output {
        self.command(out, extra).output().expect("run engine")
    }

    fn ok(&self, out: &Path, extra: &[&str]) {
        let o = self.run(out, extra);
        assert!(o.status.success(), "finetune {extra:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// Starts a run held at `failpoint`; returns once it is there.
    fn held(&self, out: &Path, failpoint: &str) -> std::process::Child {
        let mut child = self
            .command(out, &[])
            .env("ENGINE_FAILPOINT", failpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn engine");
        let name = failpoint.split('#').next().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let started = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains(&format!("failpoint {name} reached")) => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    panic!("{failpoint}: the run ended without reaching the failpoint");
                }
            }
            assert!(started.elapsed() < Duration::from_secs(300), "{failpoint}: not reached in 300 s");
        }
        child
    }

    /// Kills (SIGKILL) a run at `failpoint`.
    fn killed_at(&self, out: &Path, failpoint: &str) {
        let mut child = self.held(out, failpoint);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// The files that must come out identical: predictions and both checkpoints' weights and state.
fn results(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["predictions", "best", "last"] {
        let mut names: Vec<PathBuf> =
            std::fs::read_dir(out.join(dir)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        names.sort();
        for p in names {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name == "train.json" {
                continue; // holds no path or time, but is not a result
            }
            files.push((format!("{dir}/{name}"), std::fs::read(&p).unwrap()));
        }
    }
    files
}

/// Hidden entries (temporary files and folders, the lock) under the run folder.
fn leftovers(out: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [out.to_path_buf(), out.join("predictions")] {
        for e in std::fs::read_dir(&dir).into_iter().flatten() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                found.push(format!("{}/{name}", dir.display()));
            }
        }
    }
    found
}

/// How many times the uninterrupted run saved best/ (each dev improvement).
fn best_saves(out: &Path) -> usize {
    let mut best = f64::NEG_INFINITY;
    let mut saves = 0;
    for line in std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "eval" {
            let c = v["combined"].as_f64().unwrap();
            if c > best {
                best = c;
                saves += 1;
            }
        }
    }
    saves
}

#[test]
fn killed_anywhere_then_resumed_equals_the_uninterrupted_run() {
    let s = Setup::new("crash");
    let full = scratch("crash-full");
    s.ok(&full, &[]);
    let expected = results(&full);
    assert!(leftovers(&full).is_empty(), "an uninterrupted run left {:?}", leftovers(&full));
    // best/'s second save happens after a last/ exists: a kill there is resumable.
    assert!(best_saves(&full) >= 2, "the run must improve twice for the best/ swap points");

    let points = [
        "step#3",
        "swap:last:filled#2",
        "swap:last:old-moved#2",
        "swap:last:new-in-place#2",
        "swap:best:filled#2",
        "swap:best:old-moved#2",
        "swap:best:new-in-place#2",
        "predictions#2",
    ];
    for point in points {
        let out = scratch(&format!("crash-{}", point.replace([':', '#'], "-")));
        s.killed_at(&out, point);
        if point == "swap:last:old-moved#2" {
            assert!(!out.join("last").exists(), "the kill must fall between the two renames");
        }
        s.ok(&out, &["--resume", out.join("last").to_str().unwrap()]);
        let got = results(&out);
        assert_eq!(
            got.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            expected.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "{point}: different files"
        );
        for ((name, a), (_, b)) in got.iter().zip(&expected) {
            assert!(a == b, "{point}: {name} differs from the uninterrupted run's");
        }
        assert!(leftovers(&out).is_empty(), "{point}: left {:?}", leftovers(&out));
    }
}

#[test]
fn two_runs_in_one_folder_refuse_and_overwrite_replaces() {
    let s = Setup::new("two");
    let out = scratch("two-runs");
    // A run in progress keeps a second one out, and says who holds the folder.
    let mut first = s.held(&out, "step#1");
    let o = s.run(&out, &["--overwrite"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("another run is using this folder"), "{err}");
    assert!(err.contains(&format!("process {}", first.id())), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();

    // A killed run's lock goes with it; its folder now holds a run (metrics.jsonl).
    let o = s.run(&out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("holds a run") && err.contains("--overwrite"), "{err}");
    s.ok(&out, &["--overwrite"]);
    let finished = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let last = std::fs::read(out.join("last/model.safetensors")).unwrap();

    // A fresh run into a finished run's folder refuses and touches nothing.
    std::fs::write(out.join("predictions/stale-output.csv"), "left by an older run\n").unwrap();
    let o = s.run(&out, &["--seed", "6"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("holds a run") && err.contains("--resume"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(std::fs::read(out.join("metrics.jsonl")).unwrap() == finished, "metrics.jsonl was touched");
    assert!(std::fs::read(out.join("last/model.safetensors")).unwrap() == last, "last/ was touched");

    // --overwrite clears the old run first: nothing of it stays mixed in.
    s.ok(&out, &["--overwrite", "--seed", "6"]);
    assert!(!out.join("predictions/stale-output.csv").exists(), "an old prediction file survived --overwrite");
    assert!(std::fs::read(out.join("last/model.safetensors")).unwrap() != last, "the new run's weights differ");
    assert!(leftovers(&out).is_empty(), "left {:?}", leftovers(&out));
    let o = s.run(&out, &["--overwrite", "--resume", out.join("last").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be used with"), "--overwrite with --resume");
}

#[test]
fn a_failed_start_leaves_no_folder_behind() {
    let s = Setup::new("nofolder");
    let out = scratch("nofolder").join("run");
    let o = s.run(&out, &["--sst-train", "/nonexistent/sst.csv"]);
    assert!(!o.status.success());
    assert!(!out.exists(), "a run that failed before training created {}", out.display());
}
