//! The CS224N minBERT default-project data: the four tasks, their file names, a reader of the
//! tab-separated task files and a writer (and reader) of the course's prediction files.
//!
//! Task files are read with a real CSV reader (tab delimiter, `""` for a quote inside a quoted
//! field), like the starter's `csv.DictReader(delimiter='\t')`: columns are found by header name
//! (`id`, `sentence` or `sentence1`/`sentence2`, and the label), other columns (the unnamed index,
//! the test files' extra `0` column) are ignored. Every record is one line, and each line is read
//! on its own: a malformed record (wrong number of fields, empty id or sentence, missing or
//! out-of-range label, a quote that does not close on its line) is skipped with a warning naming
//! file and line, or refused when reading strictly; a record is never half read, and a stray quote
//! never swallows the lines after it.
//!
//! Prediction files follow the starter's byte layout exactly (`id \t Predicted_Sentiment \n`, then
//! `{id} , {prediction} \n`), so that they can be handed in as they are.

use super::user_task::UserTask;
use crate::data::Input;
use crate::error::{Error, Result};
use crate::util::write_atomically;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One of the default project's tasks, or one the user defined (data/user_task.rs).
/// Serialised as its name; a user task's name reads back once its definition is registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Task {
    /// SST-5 sentiment: one sentence, classes 0 (negative) … 4 (positive).
    Sst,
    /// Quora question pairs: two sentences, paraphrase or not.
    Quora,
    /// STS-B similarity: two sentences, a score in [0, 5].
    Sts,
    /// CFIMDB movie reviews: one text, 0 negative or 1 positive.
    Cfimdb,
    /// A task defined with --task-def.
    User(&'static UserTask),
}

/// What a task predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One of `n` classes (`Label::Class`).
    Classes(u32),
    /// Yes or no (`Label::Binary`).
    Binary,
    /// A real score (`Label::Score`).
    Regression,
}

/// A split of a task's data; `Test` files carry no labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    Dev,
    Test,
}

impl Task {
    /// The built-in tasks.
    pub const ALL: [Task; 4] = [Task::Sst, Task::Quora, Task::Sts, Task::Cfimdb];

    /// The built-in tasks and those defined so far.
    pub fn all() -> Vec<Task> {
        let mut all = Task::ALL.to_vec();
        all.extend(super::user_task::names().into_iter().filter_map(super::user_task::find));
        all
    }

    pub fn name(self) -> &'static str {
        match self {
            Task::Sst => "sst",
            Task::Quora => "quora",
            Task::Sts => "sts",
            Task::Cfimdb => "cfimdb",
            Task::User(u) => &u.def.name,
        }
    }

    /// Whether an example is a pair of sentences (Quora, STS) rather than one (SST, CFIMDB).
    pub fn is_pair(self) -> bool {
        match self {
            Task::User(u) => u.def.pair,
            t => matches!(t, Task::Quora | Task::Sts),
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Task::Sst => Kind::Classes(5),
            Task::Cfimdb => Kind::Classes(2),
            Task::Quora => Kind::Binary,
            Task::Sts => Kind::Regression,
            Task::User(u) => u.def.kind,
        }
    }

    /// The range a score label must lie in (STS: [0, 5]; a user's regression: any number).
    fn score_range(self) -> Option<(f64, f64)> {
        (self == Task::Sts).then_some((0.0, 5.0))
    }

    /// The number of classes of a classification task (SST 5, CFIMDB 2); `None` for Quora (binary,
    /// one logit) and STS (regression).
    pub fn num_classes(self) -> Option<u32> {
        match self.kind() {
            Kind::Classes(n) => Some(n),
            Kind::Binary | Kind::Regression => None,
        }
    }

    /// The header names of the sentence columns.
    pub fn sentence_columns(self) -> &'static [&'static str] {
        if self.is_pair() { &["sentence1", "sentence2"] } else { &["sentence"] }
    }

    /// The header name of the label column in train and dev files.
    pub fn label_column(self) -> &'static str {
        match self {
            Task::Sst | Task::Cfimdb => "sentiment",
            Task::Quora => "is_duplicate",
            Task::Sts => "similarity",
            Task::User(u) => &u.def.label_column,
        }
    }

    /// The course's file name of a split, e.g. `ids-sst-train.csv`, `quora-test-student.csv`.
    pub fn file_name(self, split: Split) -> &'static str {
        match (self, split) {
            (Task::Sst, Split::Train) => "ids-sst-train.csv",
            (Task::Sst, Split::Dev) => "ids-sst-dev.csv",
            (Task::Sst, Split::Test) => "ids-sst-test-student.csv",
            (Task::Quora, Split::Train) => "quora-train.csv",
            (Task::Quora, Split::Dev) => "quora-dev.csv",
            (Task::Quora, Split::Test) => "quora-test-student.csv",
            (Task::Sts, Split::Train) => "sts-train.csv",
            (Task::Sts, Split::Dev) => "sts-dev.csv",
            (Task::Sts, Split::Test) => "sts-test-student.csv",
            (Task::Cfimdb, Split::Train) => "ids-cfimdb-train.csv",
            (Task::Cfimdb, Split::Dev) => "ids-cfimdb-dev.csv",
            (Task::Cfimdb, Split::Test) => "ids-cfimdb-test-student.csv",
            (Task::User(u), Split::Train) => &u.files[0],
            (Task::User(u), Split::Dev) => &u.files[1],
            (Task::User(u), Split::Test) => &u.files[2],
        }
    }

    /// The default path of a split under a data folder.
    pub fn path(self, dir: &Path, split: Split) -> PathBuf {
        dir.join(self.file_name(split))
    }

    /// The course's prediction file name for dev or test (`sst-dev-output.csv`,
    /// `para-test-output.csv`, …); `None` for train, which has none.
    pub fn prediction_file_name(self, split: Split) -> Option<&'static str> {
        Some(match (self, split) {
            (_, Split::Train) => return None,
            (Task::Sst, Split::Dev) => "sst-dev-output.csv",
            (Task::Sst, Split::Test) => "sst-test-output.csv",
            (Task::Quora, Split::Dev) => "para-dev-output.csv",
            (Task::Quora, Split::Test) => "para-test-output.csv",
            (Task::Sts, Split::Dev) => "sts-dev-output.csv",
            (Task::Sts, Split::Test) => "sts-test-output.csv",
            (Task::Cfimdb, Split::Dev) => "cfimdb-dev-output.csv",
            (Task::Cfimdb, Split::Test) => "cfimdb-test-output.csv",
            (Task::User(u), Split::Dev) => &u.predictions[0],
            (Task::User(u), Split::Test) => &u.predictions[1],
        })
    }

    /// The second header field of a prediction file, spelled as the starter spells it
    /// (`Predicted_Similiary` included).
    pub fn prediction_column(self) -> &'static str {
        match self {
            Task::Sst | Task::Cfimdb => "Predicted_Sentiment",
            Task::Quora => "Predicted_Is_Paraphrase",
            Task::Sts => "Predicted_Similiary",
            Task::User(_) => "Predicted_Label",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Task> {
        let builtin = Task::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s));
        builtin.or_else(|| super::user_task::find(s)).ok_or_else(|| {
            let mut names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
            names.extend(super::user_task::names());
            Error::Config(format!(
                "unknown task {s:?}; the tasks are {} (define others with --task-def)",
                names.join(", ")
            ))
        })
    }
}

impl TryFrom<String> for Task {
    type Error = Error;
    fn try_from(s: String) -> Result<Task> {
        s.parse()
    }
}

impl From<Task> for String {
    fn from(t: Task) -> String {
        t.name().to_string()
    }
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Dev, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }

    /// Whether the split's files carry labels (train and dev do; the course's test files do not).
    pub fn is_labelled(self) -> bool {
        self != Split::Test
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Split> {
        Split::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| Error::Config(format!("unknown split {s:?}; the splits are train, dev, test")))
    }
}

/// A gold label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Label {
    /// SST (0..=4) and CFIMDB (0..=1).
    Class(u32),
    /// Quora: 0.0 or 1.0, the target of a binary cross-entropy.
    Binary(f32),
    /// STS: a similarity in [0, 5].
    Score(f32),
}

impl Label {
    /// The label as a number (the class index for a class).
    pub fn as_f32(self) -> f32 {
        match self {
            Label::Class(c) => c as f32,
            Label::Binary(v) | Label::Score(v) => v,
        }
    }
}

/// One record of a task file, sentences trimmed of surrounding whitespace.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub id: String,
    /// The sentence (SST, CFIMDB) or the first sentence of a pair (Quora, STS).
    pub a: String,
    /// The second sentence of a pair.
    pub b: Option<String>,
    /// `None` in test files.
    pub label: Option<Label>,
}

impl Example {
    /// The tokenizer's input: one sentence or a pair.
    pub fn input(&self) -> Input<'_> {
        match &self.b {
            Some(b) => Input::Pair(&self.a, b),
            None => Input::Single(&self.a),
        }
    }
}

/// A record left out of a dataset: its line (1-based, the header is line 1) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub line: u64,
    pub fault: String,
}

/// The examples of one task file and the records it left out.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub task: Task,
    pub split: Split,
    pub path: PathBuf,
    pub examples: Vec<Example>,
    pub skipped: Vec<Skipped>,
}

/// Where an error about a whole file is: the CLI flag that named it, if any, and the path.
fn whole_file(flag: &str, path: &Path) -> String {
    if flag.is_empty() { path.display().to_string() } else { format!("{flag} {}", path.display()) }
}

/// Opens `path` for reading; a missing file is named by the flag that set it.
fn open(flag: &str, path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| {
        let at = whole_file(flag, path);
        match source.kind() {
            std::io::ErrorKind::NotFound => Error::Data { at, detail: "no such file".into() },
            _ => Error::Io { path: at, source },
        }
    })
}

/// The positions of the columns a task file needs, found by header name.
struct Columns {
    id: usize,
    sentences: Vec<usize>,
    label: Option<usize>,
    /// The number of fields of the header, which every record must have.
    width: usize,
    names: Vec<String>,
}

impl Columns {
    fn find(task: Task, split: Split, header: &[String]) -> std::result::Result<Columns, String> {
        let mut wanted: Vec<&str> = vec!["id"];
        wanted.extend(task.sentence_columns());
        if split.is_labelled() {
            wanted.push(task.label_column());
        }
        let mut at = Vec::with_capacity(wanted.len());
        for name in &wanted {
            let found: Vec<usize> = (0..header.len()).filter(|&i| header[i] == *name).collect();
            match found[..] {
                [i] => at.push(i),
                [] => {
                    return Err(format!(
                        "header is {header:?}, expected columns {} ({} {} file)",
                        wanted.join(", "),
                        task,
                        split
                    ));
                }
                _ => return Err(format!("header is {header:?}: column {name:?} appears more than once")),
            }
        }
        Ok(Columns {
            id: at[0],
            sentences: at[1..1 + task.sentence_columns().len()].to_vec(),
            label: split.is_labelled().then(|| at[at.len() - 1]),
            width: header.len(),
            names: header.to_vec(),
        })
    }
}

/// A field of a record as text; `None` when it is not valid UTF-8 or absent.
fn field(record: &csv::ByteRecord, i: usize) -> Option<&str> {
    record.get(i).and_then(|b| std::str::from_utf8(b).ok())
}

/// Parses the label of `task` from its field; the error says what is wrong with it.
fn parse_label(task: Task, column: &str, text: &str) -> std::result::Result<Label, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("missing label ({column} is empty)"));
    }
    match task.kind() {
        Kind::Classes(n) => match text.parse::<u32>() {
            Ok(c) if c < n => Ok(Label::Class(c)),
            _ => Err(format!("{column} {text:?} is not a class in 0..={}", n - 1)),
        },
        // The starter reads `int(float(x))`, so `0`, `1`, `0.0` and `1.0` are all fine.
        Kind::Binary => match text.parse::<f64>() {
            Ok(v) if v == 0.0 || v == 1.0 => Ok(Label::Binary(v as f32)),
            _ => Err(format!("{column} {text:?} is not 0 or 1")),
        },
        Kind::Regression => match (text.parse::<f64>(), task.score_range()) {
            (Ok(v), Some((lo, hi))) if !(lo..=hi).contains(&v) => {
                Err(format!("{column} {text:?} is outside [{lo}, {hi}]"))
            }
            (Ok(v), _) if v.is_finite() && (v as f32).is_finite() => Ok(Label::Score(v as f32)),
            (Ok(_), _) => Err(format!("{column} {text:?} is not a finite number")),
            (Err(_), _) => Err(format!("{column} {text:?} is not a number")),
        },
    }
}

/// One record as an example, or everything that is wrong with it (joined by "; ").
fn parse_record(task: Task, cols: &Columns, record: &csv::ByteRecord) -> std::result::Result<Example, String> {
    let mut faults = Vec::new();
    if record.len() != cols.width {
        return Err(format!("has {} fields, expected {}", record.len(), cols.width));
    }
    let mut text = |i: usize| match field(record, i) {
        Some(s) => s.trim(),
        None => {
            faults.push(format!("{} is not valid UTF-8", cols.names[i]));
            ""
        }
    };
    let id = text(cols.id);
    let sentences: Vec<&str> = cols.sentences.iter().map(|&i| text(i)).collect();
    let label = cols.label.map(|i| (i, text(i)));
    if id.is_empty() {
        faults.push("empty id".into());
    }
    for (&i, s) in cols.sentences.iter().zip(&sentences) {
        if s.is_empty() && field(record, i).is_some() {
            faults.push(format!("empty {}", cols.names[i]));
        }
    }
    let label = match label {
        Some((i, s)) if field(record, i).is_some() => match parse_label(task, &cols.names[i], s) {
            Ok(l) => Some(l),
            Err(e) => {
                faults.push(e);
                None
            }
        },
        _ => None,
    };
    if !faults.is_empty() {
        return Err(faults.join("; "));
    }
    Ok(Example { id: id.to_string(), a: sentences[0].to_string(), b: sentences.get(1).map(|s| s.to_string()), label })
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("{n} {word}") } else { format!("{n} {word}s") }
}

/// The fault of a line whose quoted field does not close on it.
const UNCLOSED_QUOTE: &str = "unbalanced quote: a quoted field opens on this line and does not close on it \
                              (a record is one line)";

/// The physical lines of a file, numbered from 1, without their `\n` or `\r\n`; blank lines are
/// left out (as the csv reader leaves them out), their numbers kept.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .filter(|(_, l)| !l.is_empty())
}

/// One line (without its line break) as one CSV record, or `Err` when a quoted field opened on the
/// line does not close on it. Quoting is the csv reader's (tab delimiter, `""` for a quote inside
/// a quoted field); the line is fed to it with a `\n` after it, which only an unclosed quote makes
/// part of a field.
fn parse_line(line: &[u8], record: &mut csv::ByteRecord) -> std::result::Result<(), &'static str> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .terminator(csv::Terminator::Any(b'\n'))
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(line.len() + 2)
        .from_reader(std::io::Read::chain(line, &b"\n"[..]));
    // Reading bytes from memory, flexibly, into a ByteRecord cannot fail; and the line is not empty.
    match reader.read_byte_record(record) {
        Ok(true) if !record.iter().flatten().any(|&b| b == b'\n') => Ok(()),
        _ => Err(UNCLOSED_QUOTE),
    }
}

/// The line `read` prints after its warnings when it skipped records: how many lines were lost of
/// how many (every record is one line, so a skipped record is one line lost).
fn skip_summary(file: &str, lost: usize, lines: usize) -> String {
    format!("{file}: skipped {}: {lost} of {} lost", plural(lost, "malformed record"), plural(lines, "line"))
}

impl Dataset {
    /// What `read` printed after its warnings, if it skipped records:
    /// `FILE: skipped 2 malformed records: 2 of 14000 lines lost`.
    pub fn skip_summary(&self) -> Option<String> {
        let n = self.skipped.len();
        (n > 0).then(|| skip_summary(&self.path.display().to_string(), n, n + self.examples.len()))
    }
}

/// Reads one task file. `flag` is the CLI flag that set `path` (`--quora-train`; may be empty) and
/// names it in whole-file errors: `--quora-train data/quora-train.csv: no such file`.
///
/// Every record is one line (blank lines are passed over): each line is parsed on its own as a
/// CSV record, so a stray quote costs its own line and never the lines after it.
/// Header: the columns `id`, the sentence column(s) and, for train and dev, the label column must
/// each appear once; a record must have as many fields as the header. A malformed record (wrong
/// number of fields, empty id or sentence, missing or out-of-range label, a quote not closed on its
/// line) is skipped with `warning: FILE:LINE: what is wrong` on stderr and listed in
/// `Dataset::skipped`, with `FILE: skipped N malformed records: N of M lines lost` at the end; with
/// `strict` it is an error instead. A missing file, an empty one, one with no records or with no
/// good record is an error.
pub fn read(task: Task, path: &Path, split: Split, flag: &str, strict: bool) -> Result<Dataset> {
    let at = whole_file(flag, path);
    let file = path.display().to_string();
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open(flag, path)?, &mut bytes)
        .map_err(|source| Error::Io { path: at.clone(), source })?;
    let mut lines = lines(&bytes);
    let mut record = csv::ByteRecord::new();
    let Some((line, text)) = lines.next() else {
        return Err(Error::Data { at, detail: "empty file (no header)".into() });
    };
    parse_line(text, &mut record)
        .map_err(|fault| Error::Data { at: format!("{file}:{line}"), detail: format!("header: {fault}") })?;
    let mut header = Vec::with_capacity(record.len());
    for (i, f) in record.iter().enumerate() {
        let f = if i == 0 { f.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(f) } else { f };
        let f = std::str::from_utf8(f).map_err(|_| Error::Data {
            at: at.clone(),
            detail: format!("header field {} is not valid UTF-8", i + 1),
        })?;
        header.push(f.trim().to_string());
    }
    let cols = Columns::find(task, split, &header).map_err(|detail| Error::Data { at: at.clone(), detail })?;

    let (mut examples, mut skipped, mut records) = (Vec::new(), Vec::new(), 0usize);
    for (line, text) in lines {
        records += 1;
        let parsed =
            parse_line(text, &mut record).map_err(String::from).and_then(|()| parse_record(task, &cols, &record));
        match parsed {
            Ok(example) => examples.push(example),
            Err(fault) if strict => {
                return Err(Error::Data {
                    at: format!("{file}:{line}"),
                    detail: format!("{fault} (reading strictly, the file is refused)"),
                });
            }
            Err(fault) => {
                eprintln!("warning: {file}:{line}: {fault}");
                skipped.push(Skipped { line, fault });
            }
        }
    }
    if !skipped.is_empty() {
        eprintln!("{}", skip_summary(&file, skipped.len(), records));
    }
    if records == 0 {
        return Err(Error::Data { at, detail: "no records after the header".into() });
    }
    if examples.is_empty() {
        return Err(Error::Data { at, detail: format!("all {} are malformed", plural(records, "record")) });
    }
    Ok(Dataset { task, split, path: path.to_path_buf(), examples, skipped })
}

/// A model's prediction for one example.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Prediction {
    /// SST and CFIMDB: the predicted class, written as an integer (`3`).
    Class(u32),
    /// Quora: paraphrase or not, written `1.0` or `0.0`.
    Binary(bool),
    /// STS: the predicted similarity, written as Python prints a float (`3.2`, `4.0`, `1e-05`).
    Score(f64),
}

/// `x` as Python's `repr(float)` (and `str`) prints it: the shortest digits that read back to `x`,
/// in fixed notation with at least one decimal (`4.0`) for decimal exponents -4..=15, else as
/// `d.ddde±XX` (`1e-05`, `1.5e+16`).
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    // Rust's `{:e}` prints the shortest round-trip digits too: `3.2e0`, `1.2345e-5`, `0e0`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let n = digits.len() as i32;
    let body = if (-4..16).contains(&exp) {
        if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if n <= exp + 1 {
            format!("{digits}{}.0", "0".repeat((exp + 1 - n) as usize))
        } else {
            let (int, frac) = digits.split_at(exp as usize + 1);
            format!("{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        format!("{first}{dot}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    };
    format!("{sign}{body}")
}

/// The text of one prediction for `task`, or what is wrong with it.
fn prediction_text(task: Task, p: Prediction) -> std::result::Result<String, String> {
    match (task.kind(), p) {
        (Kind::Classes(n), Prediction::Class(c)) if c < n => Ok(c.to_string()),
        (Kind::Classes(n), Prediction::Class(c)) => Err(format!("class {c} is not in 0..={}", n - 1)),
        (Kind::Binary, Prediction::Binary(b)) => Ok(if b { "1.0" } else { "0.0" }.into()),
        (Kind::Regression, Prediction::Score(s)) if s.is_finite() => Ok(python_float(s)),
        (Kind::Regression, Prediction::Score(s)) => Err(format!("score {s} is not finite")),
        (_, p) => Err(format!("{p:?} is not a {task} prediction")),
    }
}

/// The bytes of a prediction file: `id \t {prediction_column} \n`, then `{id} , {prediction} \n`
/// per example, as the CS224N starter writes them. Ids must be non-empty, unique, and free of
/// whitespace and commas (so that the file reads back).
pub fn format_predictions(task: Task, predictions: &[(String, Prediction)]) -> Result<String> {
    let mut out = format!("id \t {} \n", task.prediction_column());
    let mut seen = HashSet::with_capacity(predictions.len());
    for (id, p) in predictions {
        let bad = |detail: String| Error::value("predictions", format!("{task} id {id:?}: {detail}"));
        if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c == ',') {
            return Err(bad("an id must be non-empty, without whitespace or commas".into()));
        }
        if !seen.insert(id.as_str()) {
            return Err(bad("appears more than once".into()));
        }
        let text = prediction_text(task, *p).map_err(bad)?;
        out.push_str(&format!("{id} , {text} \n"));
    }
    Ok(out)
}

/// Writes a prediction file (see `format_predictions`) atomically: a temporary file, then a rename.
pub fn write_predictions(task: Task, path: &Path, predictions: &[(String, Prediction)]) -> Result<()> {
    let text = format_predictions(task, predictions)?;
    write_atomically(path, text.as_bytes())
}

/// Reads a prediction file of `task` back, in file order: the header must name the task's
/// prediction column, every line must be `{id} , {prediction}` with a unique id and a prediction
/// of the task's kind. Any bad line is an error naming file and line. `flag` as in `read`.
pub fn read_predictions(task: Task, path: &Path, flag: &str) -> Result<Vec<(String, Prediction)>> {
    let at = whole_file(flag, path);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut open(flag, path)?, &mut bytes)
        .map_err(|source| Error::Io { path: at.clone(), source })?;
    let text =
        String::from_utf8(bytes).map_err(|_| Error::Data { at: at.clone(), detail: "not valid UTF-8".into() })?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i as u64 + 1, l));
    let Some((_, header)) = lines.next() else {
        return Err(Error::Data { at, detail: "empty file (no header)".into() });
    };
    let fields: Vec<&str> = header.split('\t').map(str::trim).collect();
    if fields != ["id", task.prediction_column()] {
        return Err(Error::Data {
            at,
            detail: format!("header is {header:?}, expected \"id \\t {} \"", task.prediction_column()),
        });
    }
    let file = path.display().to_string();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (line, l) in lines {
        let bad = |detail: String| Error::Data { at: format!("{file}:{line}"), detail };
        let Some((id, value)) = l.split_once(',') else {
            return Err(bad(format!("{l:?} is not `id , prediction`")));
        };
        let (id, value) = (id.trim(), value.trim());
        if id.is_empty() {
            return Err(bad("empty id".into()));
        }
        let p = match task.kind() {
            Kind::Classes(n) => match value.parse::<u32>() {
                Ok(c) if c < n => Prediction::Class(c),
                _ => return Err(bad(format!("{value:?} is not a class in 0..={}", n - 1))),
            },
            Kind::Binary => match value.parse::<f64>() {
                Ok(v) if v == 0.0 || v == 1.0 => Prediction::Binary(v == 1.0),
                _ => return Err(bad(format!("{value:?} is not 0.0 or 1.0"))),
            },
            Kind::Regression => match value.parse::<f64>() {
                Ok(v) if v.is_finite() => Prediction::Score(v),
                _ => return Err(bad(format!("{value:?} is not a finite number"))),
            },
        };
        if !seen.insert(id.to_string()) {
            return Err(bad(format!("id {id:?} appears more than once")));
        }
        out.push((id.to_string(), p));
    }
    Ok(out)
}

/// One data file: its task, split, path, and the flag that sets it (for error messages).
#[derive(Clone, Debug)]
pub struct DataFile {
    pub task: Task,
    pub split: Split,
    pub path: PathBuf,
    pub flag: String,
}
