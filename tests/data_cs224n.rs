//! The CS224N data layer: the real task files the repository ships in data/ (counts, labels, the two malformed
//! Quora records), synthetic bad files (each fault with its message), and prediction files (the
//! starter's exact bytes, and a round trip).

use engine::data::cs224n::{Kind, Label, Prediction, Split, Task};
use engine::data::{Input, format_predictions, read, read_predictions, write_predictions};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data");

fn data() -> &'static Path {
    Path::new(DATA)
}

/// A fresh folder for this test's files.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-cs224n-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` as `name` under `dir` and returns its path.
fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The message of an error that must occur.
fn error_of<T: std::fmt::Debug>(r: engine::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn every_real_file_reads_with_the_readme_counts_and_labels_in_range() {
    let counts = [
        (Task::Sst, Split::Train, 8544),
        (Task::Sst, Split::Dev, 1101),
        (Task::Sst, Split::Test, 2210),
        (Task::Quora, Split::Train, 13998),
        (Task::Quora, Split::Dev, 4000),
        (Task::Sts, Split::Train, 6040),
        (Task::Sts, Split::Dev, 863),
        (Task::Sts, Split::Test, 1725),
        (Task::Cfimdb, Split::Train, 1707),
        (Task::Cfimdb, Split::Dev, 245),
        (Task::Cfimdb, Split::Test, 488),
    ];
    for (task, split, n) in counts {
        let path = task.path(data(), split);
        let d = read(task, &path, split, "", false).unwrap();
        let what = format!("{}", path.display());
        assert_eq!(d.examples.len(), n, "{what}");
        let skipped = if (task, split) == (Task::Quora, Split::Train) { 2 } else { 0 };
        assert_eq!(d.skipped.len(), skipped, "{what}: {:?}", d.skipped);
        let ids: HashSet<&str> = d.examples.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), n, "{what}: ids are unique");
        let mut classes = HashSet::new();
        for e in &d.examples {
            assert_eq!(e.id.len(), 25, "{what}: id {:?}", e.id);
            assert!(!e.a.is_empty() && e.a.trim() == e.a, "{what} {}: {:?}", e.id, e.a);
            assert_eq!(e.b.is_some(), task.is_pair(), "{what} {}", e.id);
            if let Some(b) = &e.b {
                assert!(!b.is_empty() && b.trim() == b, "{what} {}: {b:?}", e.id);
            }
            match (split, task.kind(), e.label) {
                (Split::Test, _, None) => {}
                (Split::Train | Split::Dev, Kind::Classes(k), Some(Label::Class(c))) => {
                    assert!(c < k, "{what} {}: class {c}", e.id);
                    classes.insert(c);
                }
                (Split::Train | Split::Dev, Kind::Binary, Some(Label::Binary(v))) => {
                    assert!(v == 0.0 || v == 1.0, "{what} {}: {v}", e.id);
                    classes.insert(v as u32);
                }
                (Split::Train | Split::Dev, Kind::Regression, Some(Label::Score(v))) => {
                    assert!((0.0..=5.0).contains(&v), "{what} {}: {v}", e.id);
                }
                other => panic!("{what} {}: label {other:?}", e.id),
            }
        }
        // Every class occurs in every labelled classification file.
        if let (true, Some(k)) = (split.is_labelled(), task.num_classes().or((task == Task::Quora).then_some(2))) {
            assert_eq!(classes.len() as u32, k, "{what}: classes {classes:?}");
        }
    }
}

#[test]
fn quora_train_skips_exactly_its_two_malformed_records_naming_their_lines() {
    let path = Task::Quora.path(data(), Split::Train);
    let d = read(Task::Quora, &path, Split::Train, "--quora-train", false).unwrap();
    assert_eq!(d.examples.len(), 13998);
    let lines: Vec<u64> = d.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [1753, 9850], "{:?}", d.skipped);
    assert_eq!(d.skipped[0].fault, "missing label (is_duplicate is empty)");
    assert_eq!(d.skipped[1].fault, "empty sentence2; missing label (is_duplicate is empty)");
    // The records beside the bad ones are read; the bad ones are not, not even in part.
    let ids: Vec<&str> = d.examples.iter().map(|e| e.id.as_str()).collect();
    let at = |id: &str| ids.iter().position(|&i| i == id);
    for bad in ["ad118c967d683c93883bf072d", "9054345d02cd6c5642a4904dc"] {
        assert_eq!(at(bad), None, "{bad}");
    }
    // Lines 1752, 9849 and 9851 hold records 1751, 9848 and 9850 (line 1 is the header), that is
    // examples 1750, 9846 and 9847 once the records before them that were skipped are left out.
    assert_eq!(at("ee53676c7cc2c48f96cd47128"), Some(1750));
    assert_eq!(at("bc8906a2dc36f4190c3c42ec1"), Some(9846));
    assert_eq!(at("3c34e28d9fbd4ef00a267f552"), Some(9847));
}

#[test]
fn strict_refuses_quora_train_naming_file_line_and_fault() {
    let path = Task::Quora.path(data(), Split::Train);
    let msg = error_of(read(Task::Quora, &path, Split::Train, "--quora-train", true));
    assert_eq!(
        msg,
        format!(
            "{}:1753: missing label (is_duplicate is empty) (reading strictly, the file is refused)",
            path.display()
        )
    );
    // Strict reading of a clean file is fine.
    let d = read(Task::Quora, &Task::Quora.path(data(), Split::Dev), Split::Dev, "--quora-dev", true).unwrap();
    assert_eq!((d.examples.len(), d.skipped.len()), (4000, 0));
}

#[test]
fn quoted_fields_read_as_the_starters_csv_reader_reads_them() {
    // quora-train's first record: `"""Which … Do I need """"the"""" here?"""` in the file. One level
    // of CSV unquoting (what Python's csv module and the starter give) keeps the text's own quoting.
    let d = read(Task::Quora, &Task::Quora.path(data(), Split::Train), Split::Train, "", false).unwrap();
    let e = &d.examples[0];
    assert_eq!(e.id, "318658e273ac78f3b1e957b8b");
    assert_eq!(
        e.a,
        "\"Which is correct grammar: I graduated from University of XXXX or I graduated from the University of \
         XXXX? Do I need \"\"the\"\" here?\""
    );
    assert!(e.a.contains("\"the\""));
    assert_eq!(
        e.b.as_deref(),
        Some("Grammar: What are the most common English language and grammatical errors made by people from India?")
    );
    assert_eq!(e.label, Some(Label::Binary(0.0)));
    assert!(matches!(e.input(), Input::Pair(a, _) if a == e.a));

    // CFIMDB's second training record: ` """ I vaguely …` after unquoting, trimmed.
    let d = read(Task::Cfimdb, &Task::Cfimdb.path(data(), Split::Train), Split::Train, "", false).unwrap();
    assert!(
        d.examples[1].a.starts_with("\"\"\" I vaguely remember Ben from my Sci - Fi fandom"),
        "{}",
        d.examples[1].a
    );
    assert_eq!(d.examples[1].id, "40c20f9a5a33fc7289518b5fb");
}

#[test]
fn first_and_last_records_are_trimmed_and_labelled() {
    let sst = read(Task::Sst, &Task::Sst.path(data(), Split::Dev), Split::Dev, "", false).unwrap();
    let e = &sst.examples[0];
    assert_eq!(e.id, "a7d575c9ed86ea9633660c67e");
    assert_eq!(e.a, "It 's a lovely film with lovely performances by Buy and Accorsi .");
    assert_eq!((e.b.as_deref(), e.label), (None, Some(Label::Class(3))));
    assert!(matches!(e.input(), Input::Single(a) if a == e.a));

    // The test-student layout: `0 \t \t id \t sentence`, rows `1 \t 0.0 \t id \t sentence`.
    let test = read(Task::Sst, &Task::Sst.path(data(), Split::Test), Split::Test, "", false).unwrap();
    let first = &test.examples[0];
    assert_eq!((first.id.as_str(), first.a.as_str()), ("b7573736a6ddf7be102b7fee0", "Effective but too-tepid biopic"));
    let last = test.examples.last().unwrap();
    assert_eq!(
        (last.id.as_str(), last.a.as_str()),
        ("95d5aedb8dbdfdcb4705f5e14", "-LRB- U -RRB- nrelentingly stupid .")
    );
    assert_eq!(last.label, None);

    let sts = read(Task::Sts, &Task::Sts.path(data(), Split::Dev), Split::Dev, "", false).unwrap();
    let e = &sts.examples[1];
    assert_eq!(e.id, "e8336dc096adaf2de4e8e9425");
    assert_eq!(e.a, "Two black dogs are playing on the grass.");
    assert_eq!(e.b.as_deref(), Some("Two black dogs are playing in a grassy plain."));
    assert_eq!(e.label, Some(Label::Score(4.6)));
}

#[test]
fn a_wrong_header_names_the_file_the_header_found_and_the_columns_expected() {
    let dir = scratch("header");
    let p = file(&dir, "sst.csv", "\tid\tsentence\n0\tabc\t hello\n");
    assert_eq!(
        error_of(read(Task::Sst, &p, Split::Train, "--sst-train", false)),
        format!(
            "--sst-train {}: header is [\"\", \"id\", \"sentence\"], expected columns id, sentence, sentiment (sst train file)",
            p.display()
        )
    );
    // The same file is a fine test file.
    let d = read(Task::Sst, &p, Split::Test, "--sst-test", false).unwrap();
    assert_eq!((d.examples[0].id.as_str(), d.examples[0].a.as_str()), ("abc", "hello"));
    // A pair task given a single-sentence file.
    let msg = error_of(read(Task::Sts, &p, Split::Test, "", false));
    assert!(msg.ends_with("expected columns id, sentence1, sentence2 (sts test file)"), "{msg}");
    // A column twice.
    let p = file(&dir, "twice.csv", "\tid\tid\tsentence\tsentiment\n0\ta\tb\tc\t1\n");
    let msg = error_of(read(Task::Sst, &p, Split::Dev, "", false));
    assert!(msg.ends_with(": column \"id\" appears more than once"), "{msg}");
    // A UTF-8 byte-order mark does not hide the first column's name.
    let p = file(&dir, "bom.csv", "\u{feff}id\tsentence\tsentiment\nabc\tfine\t4\n");
    let d = read(Task::Sst, &p, Split::Dev, "", true).unwrap();
    assert_eq!(d.examples[0].label, Some(Label::Class(4)));
}

#[test]
fn a_missing_or_out_of_range_label_skips_the_record_or_refuses_the_file_when_strict() {
    let dir = scratch("labels");
    let cases = [
        (
            Task::Sst,
            "\tid\tsentence\tsentiment\n",
            "0\tgood\t a b \t3\n",
            "1\tbad\tc d\t5\n",
            "sentiment \"5\" is not a class in 0..=4",
        ),
        (
            Task::Sst,
            "\tid\tsentence\tsentiment\n",
            "0\tgood\ta\t0\n",
            "1\tbad\tc\t2.0\n",
            "sentiment \"2.0\" is not a class in 0..=4",
        ),
        (
            Task::Sst,
            "\tid\tsentence\tsentiment\n",
            "0\tgood\ta\t4\n",
            "1\tbad\tc\t\n",
            "missing label (sentiment is empty)",
        ),
        (
            Task::Cfimdb,
            "\tid\tsentence\tsentiment\n",
            "0\tgood\ta\t1\n",
            "1\tbad\tc\t2\n",
            "sentiment \"2\" is not a class in 0..=1",
        ),
        (
            Task::Quora,
            "\tid\tsentence1\tsentence2\tis_duplicate\n",
            "0\tgood\ta\tb\t1.0\n",
            "1\tbad\tc\td\t2\n",
            "is_duplicate \"2\" is not 0 or 1",
        ),
        (
            Task::Quora,
            "\tid\tsentence1\tsentence2\tis_duplicate\n",
            "0\tgood\ta\tb\t0\n",
            "1\tbad\tc\td\t0.5\n",
            "is_duplicate \"0.5\" is not 0 or 1",
        ),
        (
            Task::Sts,
            "\tid\tsentence1\tsentence2\tsimilarity\n",
            "0\tgood\ta\tb\t5.0\n",
            "1\tbad\tc\td\t5.5\n",
            "similarity \"5.5\" is outside [0, 5]",
        ),
        (
            Task::Sts,
            "\tid\tsentence1\tsentence2\tsimilarity\n",
            "0\tgood\ta\tb\t0\n",
            "1\tbad\tc\td\t-0.1\n",
            "similarity \"-0.1\" is outside [0, 5]",
        ),
        (
            Task::Sts,
            "\tid\tsentence1\tsentence2\tsimilarity\n",
            "0\tgood\ta\tb\t2.5\n",
            "1\tbad\tc\td\tNaN\n",
            "similarity \"NaN\" is outside [0, 5]",
        ),
        (
            Task::Sts,
            "\tid\tsentence1\tsentence2\tsimilarity\n",
            "0\tgood\ta\tb\t2.5\n",
            "1\tbad\tc\td\thigh\n",
            "similarity \"high\" is not a number",
        ),
        (
            Task::Sts,
            "\tid\tsentence1\tsentence2\tsimilarity\n",
            "0\tgood\ta\tb\t2.5\n",
            "1\t \tc\t \t3\n",
            "empty id; empty sentence2",
        ),
    ];
    for (i, (task, header, good, bad, fault)) in cases.into_iter().enumerate() {
        // The bad record sits between two good ones, on line 3.
        let p = file(&dir, &format!("{i}.csv"), &format!("{header}{good}{bad}{good}"));
        let d = read(task, &p, Split::Train, "--x", false).unwrap();
        assert_eq!(d.examples.len(), 2, "{fault}");
        assert!(d.examples.iter().all(|e| e.id == "good"), "{fault}");
        assert_eq!(d.skipped.len(), 1, "{fault}");
        assert_eq!((d.skipped[0].line, d.skipped[0].fault.as_str()), (3, fault));
        let msg = error_of(read(task, &p, Split::Train, "--x", true));
        assert_eq!(msg, format!("{}:3: {fault} (reading strictly, the file is refused)", p.display()));
    }
    // Sentences are trimmed, and labels parsed as the starter parses them.
    let d = read(Task::Sst, &dir.join("0.csv"), Split::Train, "", false).unwrap();
    assert_eq!((d.examples[0].a.as_str(), d.examples[0].label), ("a b", Some(Label::Class(3))));
}

#[test]
fn a_short_or_long_row_is_reported_not_fatal() {
    let dir = scratch("short");
    let text = "\tid\tsentence\tsentiment\n0\ta\tfine\t1\n1\tb\tno label here\n2\tc\tx\t2\textra\n3\td\tfine too\t2\n";
    let p = file(&dir, "sst.csv", text);
    let d = read(Task::Sst, &p, Split::Dev, "--sst-dev", false).unwrap();
    let ids: Vec<&str> = d.examples.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "d"]);
    let skipped: Vec<(u64, &str)> = d.skipped.iter().map(|s| (s.line, s.fault.as_str())).collect();
    assert_eq!(skipped, [(3, "has 3 fields, expected 4"), (4, "has 5 fields, expected 4")]);
    assert_eq!(
        error_of(read(Task::Sst, &p, Split::Dev, "--sst-dev", true)),
        format!("{}:3: has 3 fields, expected 4 (reading strictly, the file is refused)", p.display())
    );
}

const UNCLOSED: &str =
    "unbalanced quote: a quoted field opens on this line and does not close on it (a record is one line)";

#[test]
fn a_stray_quote_costs_its_own_line_and_every_other_line_is_read() {
    // Issue 17, finding 5: line 4 opens its sentence with a stray `"` that no later line closes;
    // the csv reader used to run to the end of the file (lines 4-12 as one record, 2 records read).
    let dir = scratch("stray");
    let mut text = String::from("\tid\tsentence\tsentiment\n0\ta\tfine\t1\n1\tb\talso fine\t2\n");
    text.push_str("2\tstray\t\"A stray quote opens this sentence\t3\n");
    let good: Vec<String> = (5..=12).map(|l| format!("r{l}")).collect();
    for (i, id) in good.iter().enumerate() {
        text.push_str(&format!("{}\t{id}\tsentence {i} , plain\t{}\n", i + 3, i % 5));
    }
    let p = file(&dir, "sst.csv", &text);
    let d = read(Task::Sst, &p, Split::Train, "--sst-train", false).unwrap();
    let ids: Vec<&str> = d.examples.iter().map(|e| e.id.as_str()).collect();
    let mut expected = vec!["a", "b"];
    expected.extend(good.iter().map(String::as_str));
    assert_eq!(ids, expected);
    assert_eq!(d.examples[2].a, "sentence 0 , plain");
    assert_eq!(d.examples[9].label, Some(Label::Class(2)));
    let skipped: Vec<(u64, &str)> = d.skipped.iter().map(|s| (s.line, s.fault.as_str())).collect();
    assert_eq!(skipped, [(4, UNCLOSED)]);
    // The summary counts the lines lost.
    assert_eq!(d.skip_summary().unwrap(), format!("{}: skipped 1 malformed record: 1 of 11 lines lost", p.display()));
    assert_eq!(
        error_of(read(Task::Sst, &p, Split::Train, "--sst-train", true)),
        format!("{}:4: {UNCLOSED} (reading strictly, the file is refused)", p.display())
    );
}

#[test]
fn a_quote_closed_on_a_later_line_costs_only_the_line_that_opens_it() {
    let dir = scratch("quote");
    // Line 3 opens a quote that line 4's `close"` would close for a CSV reader reading across lines;
    // read a line at a time, line 3 is malformed and line 4 is a record whose sentence ends in a
    // literal quote (a quote inside an unquoted field is text, as for Python's csv module).
    let text = "\tid\tsentence\tsentiment\n0\ta\tfine\t1\n1\tb\t\"open\t2\n2\tc\tclose\"\t3\n3\td\tfine\t4\n";
    let p = file(&dir, "sst.csv", text);
    let d = read(Task::Sst, &p, Split::Train, "", false).unwrap();
    let ids: Vec<&str> = d.examples.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a", "c", "d"]);
    assert_eq!(d.examples[1].a, "close\"");
    let skipped: Vec<(u64, &str)> = d.skipped.iter().map(|s| (s.line, s.fault.as_str())).collect();
    assert_eq!(skipped, [(3, UNCLOSED)]);
    // `""` inside a quoted field is a quote, not a close: still unbalanced. A quote closed on its
    // own line is fine, CRLF line breaks and blank lines keep the numbering, and two unclosed
    // lines are two lines lost.
    let text =
        "\tid\tsentence\tsentiment\r\n0\ta\t\"x \"\"y\"\" z\"\t1\r\n\r\n1\tb\t\"x\"\"\t2\r\n2\tc\t\"\t3\r\n3\td\tok\t4";
    let p = file(&dir, "crlf.csv", text);
    let d = read(Task::Sst, &p, Split::Train, "", false).unwrap();
    let got: Vec<(&str, &str)> = d.examples.iter().map(|e| (e.id.as_str(), e.a.as_str())).collect();
    assert_eq!(got, [("a", "x \"y\" z"), ("d", "ok")]);
    assert_eq!(d.examples[1].label, Some(Label::Class(4)));
    let lines: Vec<u64> = d.skipped.iter().map(|s| s.line).collect();
    assert_eq!(lines, [4, 5]);
    assert_eq!(d.skip_summary().unwrap(), format!("{}: skipped 2 malformed records: 2 of 4 lines lost", p.display()));
    // A header whose quote does not close is refused, naming its line.
    let p = file(&dir, "header.csv", "\n\"\tid\tsentence\tsentiment\n0\ta\tfine\t1\n");
    assert_eq!(
        error_of(read(Task::Sst, &p, Split::Train, "", false)),
        format!("{}:2: header: {UNCLOSED}", p.display())
    );
    // A clean file has no summary.
    let d = read(Task::Sst, &Task::Sst.path(data(), Split::Dev), Split::Dev, "", false).unwrap();
    assert_eq!(d.skip_summary(), None);
}

#[test]
fn a_missing_empty_or_recordless_file_is_an_error_naming_the_flag() {
    let dir = scratch("missing");
    let p = dir.join("quora-train.csv");
    assert_eq!(
        error_of(read(Task::Quora, &p, Split::Train, "--quora-train", false)),
        format!("--quora-train {}: no such file", p.display())
    );
    assert_eq!(error_of(read(Task::Quora, &p, Split::Train, "", false)), format!("{}: no such file", p.display()));
    let p = file(&dir, "empty.csv", "");
    assert_eq!(
        error_of(read(Task::Sst, &p, Split::Train, "--sst-train", false)),
        format!("--sst-train {}: empty file (no header)", p.display())
    );
    let p = file(&dir, "header-only.csv", "\tid\tsentence\tsentiment\n");
    assert_eq!(
        error_of(read(Task::Sst, &p, Split::Train, "--sst-train", false)),
        format!("--sst-train {}: no records after the header", p.display())
    );
    let p = file(&dir, "all-bad.csv", "\tid\tsentence\tsentiment\n0\ta\tx\t7\n1\tb\ty\n");
    assert_eq!(
        error_of(read(Task::Sst, &p, Split::Train, "--sst-train", false)),
        format!("--sst-train {}: all 2 records are malformed", p.display())
    );
    let msg = error_of(read(Task::Sst, &dir, Split::Train, "--sst-train", false));
    assert!(msg.starts_with(&format!("--sst-train {}: ", dir.display())), "{msg}");
}

#[test]
fn tasks_splits_and_file_names_follow_the_course() {
    for (s, t) in [("sst", Task::Sst), ("quora", Task::Quora), ("sts", Task::Sts), ("cfimdb", Task::Cfimdb)] {
        assert_eq!(s.parse::<Task>().unwrap(), t);
        assert_eq!((t.name(), t.to_string()), (s, s.to_string()));
    }
    assert_eq!("SST".parse::<Task>().unwrap(), Task::Sst);
    assert_eq!(
        error_of("para".parse::<Task>()),
        "unknown task \"para\"; the tasks are sst, quora, sts, cfimdb (define others with --task-def)"
    );
    assert_eq!("dev".parse::<Split>().unwrap(), Split::Dev);
    assert!(error_of("valid".parse::<Split>()).contains("train, dev, test"));
    assert_eq!(Task::ALL.map(|t| t.is_pair()), [false, true, true, false]);
    assert_eq!(Task::ALL.map(|t| t.num_classes()), [Some(5), None, None, Some(2)]);
    assert_eq!(Task::ALL.map(|t| t.kind()), [Kind::Classes(5), Kind::Binary, Kind::Regression, Kind::Classes(2)]);
    let names: Vec<&str> = Task::ALL.iter().flat_map(|t| Split::ALL.map(|s| t.file_name(s))).collect();
    assert_eq!(
        names,
        [
            "ids-sst-train.csv",
            "ids-sst-dev.csv",
            "ids-sst-test-student.csv",
            "quora-train.csv",
            "quora-dev.csv",
            "quora-test-student.csv",
            "sts-train.csv",
            "sts-dev.csv",
            "sts-test-student.csv",
            "ids-cfimdb-train.csv",
            "ids-cfimdb-dev.csv",
            "ids-cfimdb-test-student.csv",
        ]
    );
    let outputs: Vec<Option<&str>> =
        Task::ALL.iter().flat_map(|t| Split::ALL.map(|s| t.prediction_file_name(s))).collect();
    assert_eq!(
        outputs,
        [
            None,
            Some("sst-dev-output.csv"),
            Some("sst-test-output.csv"),
            None,
            Some("para-dev-output.csv"),
            Some("para-test-output.csv"),
            None,
            Some("sts-dev-output.csv"),
            Some("sts-test-output.csv"),
            None,
            Some("cfimdb-dev-output.csv"),
            Some("cfimdb-test-output.csv"),
        ]
    );
    assert_eq!(Task::Sts.path(Path::new("data"), Split::Dev), Path::new("data/sts-dev.csv"));
}

fn preds(values: &[Prediction]) -> Vec<(String, Prediction)> {
    values.iter().enumerate().map(|(i, p)| (format!("id{i}"), *p)).collect()
}

#[test]
fn prediction_files_have_the_starters_exact_bytes_and_read_back() {
    let dir = scratch("preds");
    let cases = [
        (
            Task::Sst,
            preds(&[Prediction::Class(3), Prediction::Class(0), Prediction::Class(4)]),
            "id \t Predicted_Sentiment \nid0 , 3 \nid1 , 0 \nid2 , 4 \n",
        ),
        (
            Task::Quora,
            preds(&[Prediction::Binary(true), Prediction::Binary(false)]),
            "id \t Predicted_Is_Paraphrase \nid0 , 1.0 \nid1 , 0.0 \n",
        ),
        (
            Task::Sts,
            preds(&[Prediction::Score(3.2), Prediction::Score(4.0), Prediction::Score(0.123456789)]),
            "id \t Predicted_Similiary \nid0 , 3.2 \nid1 , 4.0 \nid2 , 0.123456789 \n",
        ),
        (
            Task::Cfimdb,
            preds(&[Prediction::Class(1), Prediction::Class(0)]),
            "id \t Predicted_Sentiment \nid0 , 1 \nid1 , 0 \n",
        ),
    ];
    for (task, p, expected) in cases {
        assert_eq!(format_predictions(task, &p).unwrap(), expected, "{task}");
        let path = dir.join(task.prediction_file_name(Split::Dev).unwrap());
        write_predictions(task, &path, &p).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected.as_bytes(), "{task}");
        assert_eq!(read_predictions(task, &path, "").unwrap(), p, "{task}");
    }
    // No temporary file is left beside them.
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["cfimdb-dev-output.csv", "para-dev-output.csv", "sst-dev-output.csv", "sts-dev-output.csv"]);
}

#[test]
fn scores_are_written_as_python_prints_floats_and_read_back_exactly() {
    // Expected strings are Python's repr() of the same values.
    let table: [(f64, &str); 21] = [
        (3.2, "3.2"),
        (4.0, "4.0"),
        (0.123456789, "0.123456789"),
        (0.0, "0.0"),
        (5.0, "5.0"),
        (-0.0, "-0.0"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (0.00012, "0.00012"),
        (1.5e16, "1.5e+16"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (123456789012345678.0, "1.2345678901234568e+17"),
        (2.5e-7, "2.5e-07"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1.0 / 3.0, "0.3333333333333333"),
        (4.999999999999999, "4.999999999999999"),
        (5e-324, "5e-324"),
        (-1.25, "-1.25"),
        (100.0, "100.0"),
        (1e22, "1e+22"),
    ];
    let p = preds(&table.map(|(v, _)| Prediction::Score(v)));
    let mut expected = String::from("id \t Predicted_Similiary \n");
    for (i, (_, s)) in table.iter().enumerate() {
        expected.push_str(&format!("id{i} , {s} \n"));
    }
    assert_eq!(format_predictions(Task::Sts, &p).unwrap(), expected);
    let path = scratch("scores").join("sts-test-output.csv");
    write_predictions(Task::Sts, &path, &p).unwrap();
    let back = read_predictions(Task::Sts, &path, "--sts-out").unwrap();
    for ((id, a), (id2, b)) in p.iter().zip(&back) {
        let (Prediction::Score(a), Prediction::Score(b)) = (a, b) else { panic!("{b:?}") };
        assert_eq!((id, a.to_bits()), (id2, b.to_bits()));
    }
    assert_eq!(back.len(), p.len());
}

#[test]
fn bad_predictions_are_refused_when_written_and_when_read() {
    let one = |id: &str, p: Prediction| vec![(id.to_string(), p)];
    for (task, p, fault) in [
        (Task::Sst, one("a", Prediction::Class(5)), "sst id \"a\": class 5 is not in 0..=4"),
        (Task::Cfimdb, one("a", Prediction::Class(2)), "cfimdb id \"a\": class 2 is not in 0..=1"),
        (Task::Sts, one("a", Prediction::Score(f64::NAN)), "sts id \"a\": score NaN is not finite"),
        (Task::Quora, one("a", Prediction::Score(1.0)), "quora id \"a\": Score(1.0) is not a quora prediction"),
        (Task::Sst, one("a b", Prediction::Class(1)), "id must be non-empty, without whitespace or commas"),
        (Task::Sst, one("", Prediction::Class(1)), "id must be non-empty, without whitespace or commas"),
    ] {
        let msg = error_of(format_predictions(task, &p));
        assert!(msg.contains(fault), "{msg}");
    }
    let twice = vec![("a".to_string(), Prediction::Class(1)), ("a".to_string(), Prediction::Class(2))];
    assert!(error_of(format_predictions(Task::Sst, &twice)).ends_with("id \"a\": appears more than once"));

    let dir = scratch("bad-preds");
    let p = file(&dir, "sts.csv", "id \t Predicted_Sentiment \na , 3 \n");
    assert_eq!(
        error_of(read_predictions(Task::Sts, &p, "")),
        format!("{}: header is \"id \\t Predicted_Sentiment \", expected \"id \\t Predicted_Similiary \"", p.display())
    );
    for (text, line, fault) in [
        ("id \t Predicted_Sentiment \na , 3 \nb , 7 \n", 3, "\"7\" is not a class in 0..=4"),
        ("id \t Predicted_Sentiment \na , 3 \nb 2 \n", 3, "\"b 2 \" is not `id , prediction`"),
        ("id \t Predicted_Sentiment \na , 3 \na , 2 \n", 3, "id \"a\" appears more than once"),
        ("id \t Predicted_Sentiment \n , 3 \n", 2, "empty id"),
    ] {
        let p = file(&dir, "sst.csv", text);
        assert_eq!(error_of(read_predictions(Task::Sst, &p, "")), format!("{}:{line}: {fault}", p.display()));
    }
    let p = file(&dir, "para.csv", "id \t Predicted_Is_Paraphrase \na , 0.5 \n");
    assert_eq!(
        error_of(read_predictions(Task::Quora, &p, "")),
        format!("{}:2: \"0.5\" is not 0.0 or 1.0", p.display())
    );
    let p = dir.join("nowhere.csv");
    assert_eq!(
        error_of(read_predictions(Task::Quora, &p, "--para-dev-out")),
        format!("--para-dev-out {}: no such file", p.display())
    );
}
