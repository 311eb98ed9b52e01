//! Issue 17, fuzz test: seeded, bounded byte mutations of the files the CLI reads, through the
//! readers the CLI uses.
//!
//! - CS224N task files: slices of the real files in data/, mutated (bits, bytes, quotes, tabs, line
//!   breaks, whitespace, digits, truncation), read by `cs224n::read` as the trainer reads them, both
//!   strictly and not. Each read returns, never panics; an accepted file holds exactly one record
//!   per line of the mutated input (no record spans lines), each record taken from its own line;
//!   strict reading refuses exactly the files the lenient one skips lines of, naming the first; an
//!   error is one line naming the file.
//! - safetensors files: the JSON header (and the length before it) of a small file written by the
//!   project's own writer, mutated, opened by `SafeTensors::open`; and the same for a tiny BERT
//!   folder through `Checkpoint::open` and `load_bert`, as the CLI loads a model. Each open returns,
//!   never panics; an accepted file yields the original's tensors bitwise (a tensor under an
//!   original name has its shape and values) or refuses to read them, and a header with whitespace
//!   inserted between JSON tokens and its length updated is a valid file that must load equal.
//!
//! Every case runs under `catch_unwind` (a panic names the section, case and mutations) and every
//! section in a worker thread with a deadline (a hang names the case it is stuck in). The whole
//! run is bounded: `CSV_CASES + TENSOR_CASES + CHECKPOINT_CASES` mutations in under `BUDGET`.

mod common;

use common::runs;
use engine::data::cs224n::{self, Dataset, Split, Task};
use engine::model::checkpoint::Checkpoint;
use engine::model::safetensors::{NamedTensor, SafeTensors, write};
use engine::rng::Rng;
use engine::{Device, Tape};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

const SEED: u64 = 0x17_05;
const CSV_CASES: usize = 1600;
const TENSOR_CASES: usize = 1200;
const CHECKPOINT_CASES: usize = 200;
/// The whole test, setup included, in a release build.
const BUDGET: Duration = Duration::from_secs(60);

/// What the worker of a section is doing now, for the hang report.
type Progress = Arc<Mutex<String>>;

/// Runs `section` in a worker thread, waiting at most `budget` for it.
fn guarded<T: Send + 'static>(name: &str, budget: Duration, section: impl FnOnce(Progress) -> T + Send + 'static) -> T {
    let progress: Progress = Arc::new(Mutex::new("starting".into()));
    let (tx, rx) = mpsc::channel();
    let p = progress.clone();
    std::thread::spawn(move || {
        let _ = tx.send(section(p));
    });
    match rx.recv_timeout(budget) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{name}: no answer within {budget:?} (a hang?), at {}", progress.lock().unwrap())
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{name}: the worker panicked outside a case, at {}", progress.lock().unwrap())
        }
    }
}

/// Runs one case, turning a panic into a failure that says where.
fn case<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("PANIC in {what}: {msg}")
    })
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-fuzz-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Bytes worth inserting: CSV and JSON syntax, whitespace, NUL, bytes that break UTF-8.
const SPECIAL: &[u8] = b"\"\"\"\t\t\n\n\r ,{}[]:\\\x00\xff\xc3";

/// Numbers worth writing over a run of digits: edges of the integer types, and what does not parse.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "5",
    "4294967296",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e3",
    "1.5",
    "NaN",
    "00",
];

/// One mutation of `b[lo..*hi]` (`*hi` follows insertions and deletions); says what it did.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>, lo: usize, hi: &mut usize) -> String {
    let span = *hi - lo;
    let at = |rng: &mut Rng| lo + rng.below(span);
    let insert_at = |rng: &mut Rng| lo + rng.below(span + 1);
    match rng.below(9) {
        0 if span > 0 => {
            let p = at(rng);
            b[p] ^= 1 << rng.below(8);
            format!("flip a bit of byte {p}")
        }
        1 if span > 0 => {
            let p = at(rng);
            b[p] = rng.below(256) as u8;
            format!("set byte {p} to {:#04x}", b[p])
        }
        2 | 3 => {
            let p = insert_at(rng);
            let c = SPECIAL[rng.below(SPECIAL.len())];
            b.insert(p, c);
            *hi += 1;
            format!("insert {:?} at {p}", c as char)
        }
        4 if span > 0 => {
            let p = at(rng);
            let n = (1 + rng.below(4)).min(*hi - p);
            b.drain(p..p + n);
            *hi -= n;
            format!("delete {n} bytes at {p}")
        }
        5 if span > 0 => {
            let p = at(rng);
            let n = (1 + rng.below(16)).min(*hi - p);
            let copy = b[p..p + n].to_vec();
            let q = insert_at(rng);
            b.splice(q..q, copy);
            *hi += n;
            format!("copy {n} bytes from {p} to {q}")
        }
        6 | 7 => {
            // A run of digits becomes an edge number, or itself plus 2^62 (which times 4 wraps
            // around a 64-bit product to the same value).
            let runs: Vec<(usize, usize)> =
                digit_runs(&b[lo..*hi]).into_iter().map(|(s, e)| (lo + s, lo + e)).collect();
            if runs.is_empty() {
                return "no digits to replace".into();
            }
            let (s, e) = runs[rng.below(runs.len())];
            let old = std::str::from_utf8(&b[s..e]).unwrap().to_string();
            let new = match old.parse::<u64>() {
                Ok(v) if rng.below(3) == 0 => (v as u128 + (1u128 << 62)).to_string(),
                _ => NUMBERS[rng.below(NUMBERS.len())].to_string(),
            };
            b.splice(s..e, new.bytes());
            *hi = *hi + new.len() - (e - s);
            format!("replace {old} at {s} by {new}")
        }
        _ => {
            let p = insert_at(rng);
            let ws = [b" ".as_slice(), b"\t", b"\n", b"\r\n", b"  "][rng.below(5)];
            b.splice(p..p, ws.iter().copied());
            *hi += ws.len();
            format!("insert whitespace {:?} at {p}", String::from_utf8_lossy(ws))
        }
    }
}

/// The (start, end) of every maximal run of ASCII digits.
fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// CS224N files

/// The lines of a file as the format defines them: split at `\n`, a trailing `\r` dropped, blank
/// lines left out, numbered from 1.
fn file_lines(b: &[u8]) -> Vec<(u64, &[u8])> {
    b.split(|&c| c == b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.is_empty())
        .collect()
}

fn without_quotes(b: &[u8]) -> Vec<u8> {
    b.iter().copied().filter(|&c| c != b'"').collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Checks an accepted dataset against the mutated bytes it was read from.
fn check_dataset(d: &Dataset, bytes: &[u8]) -> Result<(), String> {
    let lines = file_lines(bytes);
    let data = &lines[1.min(lines.len())..];
    if d.examples.len() + d.skipped.len() != data.len() {
        return Err(format!(
            "{} examples + {} skipped for {} record lines",
            d.examples.len(),
            d.skipped.len(),
            data.len()
        ));
    }
    let skipped: Vec<u64> = d.skipped.iter().map(|s| s.line).collect();
    if skipped.windows(2).any(|w| w[0] >= w[1]) || !skipped.iter().all(|l| data.iter().any(|(n, _)| n == l)) {
        return Err(format!("skipped lines {skipped:?} are not record lines in order"));
    }
    let kept = data.iter().filter(|(n, _)| !skipped.contains(n));
    for (e, (n, line)) in d.examples.iter().zip(kept) {
        let line = without_quotes(line);
        for f in [Some(&e.id), Some(&e.a), e.b.as_ref()].into_iter().flatten() {
            if f.contains('\n') || !contains(&line, &without_quotes(f.as_bytes())) {
                return Err(format!("example {:?} holds {f:?}, which is not on its line {n}", e.id));
            }
        }
    }
    Ok(())
}

/// Both reads of one mutated file, and the rules between them.
fn read_both(task: Task, split: Split, path: &Path, bytes: &[u8]) -> Result<bool, String> {
    let file = path.display().to_string();
    let one_line = |r: &engine::Error| {
        let msg = r.to_string();
        if msg.contains('\n') || !msg.contains(&file) {
            Err(format!("error {msg:?} is not one line naming {file}"))
        } else {
            Ok(msg)
        }
    };
    let lenient = cs224n::read(task, path, split, "--fuzz", false);
    let strict = cs224n::read(task, path, split, "--fuzz", true);
    match (&lenient, &strict) {
        (Ok(d), Ok(s)) => {
            check_dataset(d, bytes)?;
            if !d.skipped.is_empty() || s.examples != d.examples {
                return Err(format!("strict read accepted a file the lenient one skipped {:?} of", d.skipped));
            }
        }
        (Ok(d), Err(e)) => {
            check_dataset(d, bytes)?;
            let msg = one_line(e)?;
            let Some(first) = d.skipped.first() else {
                return Err(format!("strict read refused a clean file: {msg}"));
            };
            if !msg.starts_with(&format!("{file}:{}: ", first.line)) {
                return Err(format!("strict error {msg:?} does not name line {}", first.line));
            }
        }
        (Err(e), Ok(_)) => return Err(format!("strict read accepted a file the lenient one refused: {e}")),
        (Err(a), Err(b)) => {
            one_line(a)?;
            one_line(b)?;
        }
    }
    Ok(lenient.is_ok())
}

/// The first `n` lines of a real file (header included), plus `extra` lines of it (1-based).
fn slice(name: &str, n: usize, extra: &[usize]) -> Vec<u8> {
    // The repository's own files (not $ENGINE_TEST_DATA's slices): quora-train's line 1753 is needed.
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data").join(name)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<&str> = lines[..n].to_vec();
    out.extend(extra.iter().map(|&l| lines[l - 1]));
    (out.join("\n") + "\n").into_bytes()
}

struct Tally {
    cases: usize,
    accepted: usize,
    failures: Vec<String>,
}

fn fuzz_csv(progress: Progress) -> Tally {
    let dir = scratch("csv");
    // quora-train's line 1753 is one of its two malformed records; it comes along as line 41.
    let sources = [
        (Task::Sst, Split::Train, slice("ids-sst-train.csv", 51, &[]), 50),
        (Task::Quora, Split::Train, slice("quora-train.csv", 40, &[1753]), 39),
        (Task::Sts, Split::Train, slice("sts-train.csv", 51, &[]), 50),
        (Task::Sts, Split::Test, slice("sts-test-student.csv", 51, &[]), 50),
        (Task::Cfimdb, Split::Dev, slice("ids-cfimdb-dev.csv", 16, &[]), 15),
    ];
    let mut t = Tally { cases: 0, accepted: 0, failures: Vec::new() };
    // The sources themselves read whole: the checks below hold for good files too.
    for (i, (task, split, bytes, good)) in sources.iter().enumerate() {
        let path = dir.join(format!("source{i}.csv"));
        std::fs::write(&path, bytes).unwrap();
        let d = cs224n::read(*task, &path, *split, "", false).unwrap();
        assert_eq!(d.examples.len(), *good, "{}", path.display());
        check_dataset(&d, bytes).unwrap();
    }
    let mut rng = Rng::new(SEED);
    for n in 0..CSV_CASES {
        let (task, split, source, _) = &sources[rng.below(sources.len())];
        let mut b = source.clone();
        let mut hi = b.len();
        let mut done = Vec::new();
        for _ in 0..1 + rng.below(4) {
            if rng.below(12) == 0 {
                let p = rng.below(b.len() + 1);
                b.truncate(p);
                hi = p;
                done.push(format!("truncate at {p}"));
            } else {
                done.push(mutate(&mut rng, &mut b, 0, &mut hi));
            }
        }
        let what = format!("csv case {n} ({task} {split}: {})", done.join(", "));
        *progress.lock().unwrap() = what.clone();
        let path = dir.join("case.csv");
        std::fs::write(&path, &b).unwrap();
        t.cases += 1;
        match case(&what, || read_both(*task, *split, &path, &b)) {
            Ok(Ok(accepted)) => t.accepted += accepted as usize,
            Ok(Err(e)) => t.failures.push(format!("{what}: {e}")),
            Err(e) => t.failures.push(e),
        }
    }
    t
}

// ------------------------------------------------------------------------------------------------
// safetensors files

/// A few tensors of different sizes (so that no two could trade data ranges unnoticed), with
/// values that compare bitwise: -0.0, a subnormal, large and small magnitudes.
fn small_tensors() -> Vec<NamedTensor> {
    let mut rng = Rng::new(SEED ^ 0xfeed);
    let shapes: [(&str, Vec<usize>); 5] = [
        ("embeddings.word_embeddings.weight", vec![7, 5]),
        ("encoder.layer.0.output.dense.bias", vec![3]),
        ("encoder.layer.1.output.dense.bias", vec![4]),
        ("pooler.dense.weight", vec![2, 3, 2]),
        ("x", vec![1]),
    ];
    shapes
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let mut v: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 10f32.powi(rng.below(9) as i32 - 4)).collect();
            v[0] = -0.0;
            if n > 1 {
                v[1] = f32::from_bits(3); // a subnormal
            }
            (name.to_string(), shape, v)
        })
        .collect()
}

/// Positions in a JSON text, outside strings, next to a structural character: whitespace may be
/// inserted there and the JSON means the same.
fn token_boundaries(json: &[u8]) -> Vec<usize> {
    let (mut out, mut in_string, mut escaped) = (Vec::new(), false, false);
    for (i, &c) in json.iter().enumerate() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => {
                    in_string = false;
                    out.push(i + 1);
                }
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
            out.push(i);
        } else if b"{}[]:,".contains(&c) {
            out.push(i);
            out.push(i + 1);
        }
    }
    out
}

/// The header length a file declares, read back.
fn declared(b: &[u8]) -> usize {
    u64::from_le_bytes(b[..8].try_into().unwrap()) as usize
}

/// A mutated copy of a safetensors file, what was done, and whether the result is a valid file
/// with the same tensors (whitespace between tokens, the length updated).
fn mutate_safetensors(rng: &mut Rng, original: &[u8]) -> (Vec<u8>, String, bool) {
    let mut b = original.to_vec();
    let header = declared(&b);
    let mut hi = 8 + header;
    let set_len = |b: &mut Vec<u8>, v: u64| b[..8].copy_from_slice(&v.to_le_bytes());
    match rng.below(10) {
        0 => {
            let v: u64 = match rng.below(5) {
                0 => (header as u64).wrapping_add(rng.below(17) as u64).wrapping_sub(8),
                1 => rng.next_u64(),
                2 => u64::MAX - rng.below(16) as u64,
                3 => (b.len() - 8 + rng.below(3)) as u64,
                _ => rng.below(header + 1) as u64,
            };
            set_len(&mut b, v);
            (b, format!("declared header length {header} -> {v}"), false)
        }
        1 => {
            let p = rng.below(b.len());
            b.truncate(p);
            (b, format!("truncate at {p}"), false)
        }
        2 | 3 => {
            // The issue's case: whitespace between JSON tokens. With the length kept, the data
            // shift; with it updated, the file is valid and means the same.
            let json = &b[8..hi];
            let spots = token_boundaries(json);
            let p = 8 + spots[rng.below(spots.len())];
            let ws = [b" ".as_slice(), b"\n", b"\t", b"\r\n  ", b"        "][rng.below(5)];
            b.splice(p..p, ws.iter().copied());
            let update = rng.below(2) == 0;
            if update {
                set_len(&mut b, (header + ws.len()) as u64);
            }
            let how = if update { "length updated" } else { "length kept" };
            (b, format!("insert whitespace {:?} at {p} ({how})", String::from_utf8_lossy(ws)), update)
        }
        _ => {
            let mut done = Vec::new();
            for _ in 0..1 + rng.below(3) {
                done.push(mutate(rng, &mut b, 8, &mut hi));
            }
            if rng.below(2) == 0 {
                set_len(&mut b, (hi - 8) as u64);
                done.push("length updated".into());
            }
            (b, done.join(", "), false)
        }
    }
}

/// An accepted file against the original tensors: a tensor under an original name has the
/// original's shape and, when readable as f32, its values bit for bit. Returns whether every
/// original name is there (a renamed tensor is a valid file with other names: the checkpoint
/// level refuses it).
fn check_tensors(st: &SafeTensors, original: &[NamedTensor]) -> Result<bool, String> {
    let mut all = true;
    for (name, shape, values) in original {
        let Some(info) = st.info(name) else {
            all = false;
            continue;
        };
        if &info.shape != shape {
            return Err(format!("tensor {name} accepted with shape {:?}, written {shape:?}", info.shape));
        }
        if let Ok(v) = st.f32(name) {
            let same = v.len() == values.len() && v.iter().zip(values).all(|(a, b)| a.to_bits() == b.to_bits());
            if !same {
                return Err(format!("tensor {name} accepted with other values ({} of {})", v.len(), values.len()));
            }
        }
    }
    Ok(all && st.names().count() == original.len())
}

fn fuzz_tensors(progress: Progress) -> Tally {
    let dir = scratch("tensors");
    let tensors = small_tensors();
    let path = dir.join("small.safetensors");
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write(&path, &tensors, &meta).unwrap();
    let original = std::fs::read(&path).unwrap();
    assert!(check_tensors(&SafeTensors::open(&path).unwrap(), &tensors).unwrap(), "the written file reads back");
    let mut rng = Rng::new(SEED ^ 1);
    let mut t = Tally { cases: 0, accepted: 0, failures: Vec::new() };
    let case_path = dir.join("case.safetensors");
    let mut valid = 0;
    for n in 0..TENSOR_CASES {
        let (b, done, must_load) = mutate_safetensors(&mut rng, &original);
        let what = format!("safetensors case {n} ({done})");
        *progress.lock().unwrap() = what.clone();
        std::fs::write(&case_path, &b).unwrap();
        t.cases += 1;
        valid += must_load as usize;
        let run = || -> Result<bool, String> {
            match SafeTensors::open(&case_path) {
                Ok(st) => {
                    let all = check_tensors(&st, &tensors)?;
                    if must_load && !all {
                        return Err("a valid file lost tensors".into());
                    }
                    Ok(true)
                }
                Err(e) if must_load => Err(format!("a valid file is refused: {e}")),
                Err(e) => {
                    let msg = e.to_string();
                    if msg.contains(&case_path.display().to_string()) {
                        Ok(false)
                    } else {
                        Err(format!("error {msg:?} does not name the file"))
                    }
                }
            }
        };
        match case(&what, run) {
            Ok(Ok(accepted)) => t.accepted += accepted as usize,
            Ok(Err(e)) => t.failures.push(format!("{what}: {e}")),
            Err(e) => t.failures.push(e),
        }
    }
    assert!(valid > 50, "only {valid} valid whitespace cases: the mutations lost their positive control");
    t
}

/// The encoder parameters of the checkpoint in `dir`, as the CLI loads them.
fn load(dir: &Path) -> engine::Result<Vec<(String, Vec<f32>)>> {
    let ckpt = Checkpoint::open(dir)?;
    let mut tape = Tape::<f32>::new(Device::Cpu);
    ckpt.load_bert(&mut tape.store, &|_| true)?;
    tape.store.params().map(|(n, t)| Ok((n.to_string(), tape.store.read(t)?))).collect()
}

fn fuzz_checkpoint(progress: Progress) -> Tally {
    let model = runs::tiny_model("fuzz");
    let original_params = load(&model).unwrap();
    let original = std::fs::read(model.join("model.safetensors")).unwrap();
    let dir = scratch("checkpoint");
    for f in ["config.json", "vocab.txt"] {
        std::fs::copy(model.join(f), dir.join(f)).unwrap();
    }
    let mut rng = Rng::new(SEED ^ 2);
    let mut t = Tally { cases: 0, accepted: 0, failures: Vec::new() };
    for n in 0..CHECKPOINT_CASES {
        let (b, done, must_load) = mutate_safetensors(&mut rng, &original);
        let what = format!("checkpoint case {n} ({done})");
        *progress.lock().unwrap() = what.clone();
        std::fs::write(dir.join("model.safetensors"), &b).unwrap();
        t.cases += 1;
        let run = || -> Result<bool, String> {
            match load(&dir) {
                Ok(params) => {
                    let same = params.len() == original_params.len()
                        && params.iter().zip(&original_params).all(|((n, v), (m, w))| {
                            n == m && v.len() == w.len() && v.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits())
                        });
                    if same { Ok(true) } else { Err("the checkpoint loads other parameters".into()) }
                }
                Err(e) if must_load => Err(format!("a valid file is refused: {e}")),
                Err(_) => Ok(false),
            }
        };
        match case(&what, run) {
            Ok(Ok(accepted)) => t.accepted += accepted as usize,
            Ok(Err(e)) => t.failures.push(format!("{what}: {e}")),
            Err(e) => t.failures.push(e),
        }
    }
    t
}

#[test]
fn mutated_task_files_and_safetensors_headers_are_read_right_or_refused_never_a_panic_or_hang() {
    let start = Instant::now();
    let left = || BUDGET.saturating_sub(start.elapsed());
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for (name, section) in
        [("csv", fuzz_csv as fn(Progress) -> Tally), ("safetensors", fuzz_tensors), ("checkpoint", fuzz_checkpoint)]
    {
        let t0 = Instant::now();
        let t = guarded(name, left(), section);
        report.push(format!(
            "{name}: {} cases, {} accepted, {} failures, {:.1} s",
            t.cases,
            t.accepted,
            t.failures.len(),
            t0.elapsed().as_secs_f64()
        ));
        // Neither everything refused nor everything accepted: the mutations reach both sides.
        assert!(t.accepted > t.cases / 20 && t.accepted < t.cases, "{name}: {} of {} accepted", t.accepted, t.cases);
        failures.extend(t.failures);
    }
    let total = CSV_CASES + TENSOR_CASES + CHECKPOINT_CASES;
    println!("fuzz: {total} mutations in {:.1} s; {}", start.elapsed().as_secs_f64(), report.join("; "));
    assert!(
        failures.is_empty(),
        "{} failures, the first:\n{}",
        failures.len(),
        failures[..failures.len().min(8)].join("\n")
    );
    assert!(start.elapsed() < BUDGET, "{total} mutations took {:?}, over {BUDGET:?}", start.elapsed());
}

/// A safetensors file of `header` (JSON) and `data`, as the format lays them out.
fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn a_shape_whose_byte_size_wraps_around_is_refused_not_loaded_as_a_small_tensor() {
    // Found by the fuzz test above: (1 + 2^62) × 4 bytes wraps around to 4 in 64 bits, so a
    // one-element tensor whose shape was rewritten to [2^62 + 1] passed the size check and loaded
    // with that shape (and a debug build panicked on the overflow).
    let dir = scratch("wrap");
    let path = dir.join("wrap.safetensors");
    let data = 1.5f32.to_le_bytes();
    let good = r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    std::fs::write(&path, safetensors_bytes(good, &data)).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    assert_eq!((st.info("x").unwrap().shape.as_slice(), st.f32("x").unwrap()), ([1usize].as_slice(), vec![1.5]));
    drop(st);
    for (shape, offsets) in [("[4611686018427387905]", "[0,4]"), ("[4294967296,4294967296]", "[0,0]")] {
        let header = format!(r#"{{"x":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}"#);
        let data: &[u8] = if offsets == "[0,0]" { &[] } else { &data };
        std::fs::write(&path, safetensors_bytes(&header, data)).unwrap();
        let err = SafeTensors::open(&path).err().unwrap_or_else(|| panic!("shape {shape} accepted")).to_string();
        let shown = shape.replace(',', ", ");
        assert_eq!(
            err,
            format!("{}: tensor x: shape {shown} of F32 is too large (its byte size overflows)", path.display())
        );
    }
}
