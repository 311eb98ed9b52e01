//! EDA (data/eda.rs, `engine finetune --eda-tasks`): each operation on fixed sentences (how many
//! words change, what they change to), determinism, the synonym file's errors; then tiny runs:
//! the augmented data train (noted on stderr, kept in train.json, resumed bit for bit) and bad
//! flags are refused in one line.

mod common;
use common::runs::{
    assert_resumes_exactly, finetune_cpu as finetune, finetune_refused, scratch, step_losses, tiny_data, tiny_model,
};
use engine::data::cs224n::{Example, Label, Task};
use engine::data::eda::{Eda, Operation, STOP_WORDS, Synonyms, is_stop_word, random_deletion, random_swap};
use engine::rng::Rng;
use std::collections::HashSet;

const THESAURUS: &str = "# a test thesaurus\n\
                         quick\tfast,speedy\n\
                         \n\
                         Brown\tbrunette\n\
                         fox\tvixen,reynard\n\
                         jumps\tleaps,hops\n\
                         lazy\tidle,sluggish\n\
                         dog\thound,canine\n\
                         the\tthis\n\
                         over\tabove\n";

/// "The" and "over" are stop words (SR leaves them); the six others have synonyms.
const SENTENCE: &str = "The quick brown fox jumps over the lazy dog.";

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn eda(alpha: f64, num: usize) -> Eda {
    Eda::new(alpha, num, Some(Synonyms::parse(THESAURUS, "test.txt").unwrap()))
}

/// Every synonym the file lists.
fn all_synonyms() -> HashSet<String> {
    THESAURUS
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .flat_map(|(_, s)| s.split(',').map(String::from).collect::<Vec<_>>())
        .collect()
}

/// Whether `sub` is `of` with some words left out.
fn subsequence(sub: &[String], of: &[String]) -> bool {
    let mut it = of.iter();
    sub.iter().all(|w| it.any(|o| o == w))
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn changes_are_max_1_round_alpha_len() {
    let e = |a: f64| Eda::new(a, 4, None);
    assert_eq!([1, 4, 15, 25, 9].map(|l| e(0.1).changes(l)), [1, 1, 2, 3, 1]);
    assert_eq!(e(0.2).changes(9), 2);
    assert_eq!(e(1.0).changes(9), 9);
}

#[test]
fn stop_words_are_sorted_for_their_search() {
    assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    assert!(is_stop_word("the") && is_stop_word("not") && !is_stop_word("movie"));
}

#[test]
fn synonym_replacement_replaces_n_words_with_their_synonyms_and_no_stop_words() {
    let orig = words(SENTENCE);
    let syn = Synonyms::parse(THESAURUS, "test.txt").unwrap();
    for seed in 0..200 {
        // α = 0.2 of 9 words: n = 2 distinct words, each appearing once.
        let out = eda(0.2, 4).synonym_replacement(&orig, 2, &mut Rng::new(seed));
        let changed: Vec<usize> = (0..orig.len()).filter(|&i| out[i] != orig[i]).collect();
        assert_eq!(changed.len(), 2, "{out:?}");
        for &i in &changed {
            let (core, trail) = orig[i].split_at(orig[i].trim_end_matches('.').len());
            assert!(out[i].ends_with(trail), "{} lost its {trail:?}", out[i]);
            let new = out[i].strip_suffix(trail).unwrap();
            assert!(syn.of(core).iter().any(|s| s == new), "{new} is no synonym of {core}");
        }
        // α = 1: every word that has synonyms, but never a stop word.
        let out = eda(1.0, 4).synonym_replacement(&orig, 9, &mut Rng::new(seed));
        for (i, (o, w)) in orig.iter().zip(&out).enumerate() {
            let stop = is_stop_word(&o.to_lowercase());
            assert_eq!(o == w, stop, "word {i}: {o} → {w}");
        }
    }
    // Every occurrence of a word gets the same synonym; a sentence with no candidate stays as it is.
    let e = Eda::new(0.1, 4, Some(Synonyms::parse("good\tfine,great,nice\n", "t").unwrap()));
    let out = e.synonym_replacement(&words("Good , good and GOOD"), 1, &mut Rng::new(3));
    assert!(["fine", "great", "nice"].iter().any(|s| out == words(&format!("{s} , {s} and {s}"))), "{out:?}");
    assert_eq!(e.synonym_replacement(&words("the film"), 1, &mut Rng::new(3)), words("the film"));
}

#[test]
fn random_insertion_inserts_n_synonyms_from_the_file() {
    let orig = words(SENTENCE);
    let known = all_synonyms();
    for seed in 0..200 {
        let out = eda(0.2, 4).random_insertion(&orig, 2, &mut Rng::new(seed));
        assert_eq!(out.len(), orig.len() + 2, "{out:?}");
        assert!(subsequence(&orig, &out), "{out:?}");
        let mut extra = sorted(out.clone());
        for w in &orig {
            extra.remove(extra.iter().position(|x| x == w).unwrap());
        }
        assert!(extra.iter().all(|w| known.contains(w)), "{extra:?} not from the file");
    }
    let none = words("a film about nothing");
    assert_eq!(eda(0.5, 4).random_insertion(&none, 2, &mut Rng::new(1)), none);
}

#[test]
fn random_swap_keeps_the_words_and_moves_two_per_swap() {
    let orig = words(SENTENCE);
    for seed in 0..200 {
        let out = random_swap(&orig, 1, &mut Rng::new(seed));
        assert_eq!((0..orig.len()).filter(|&i| out[i] != orig[i]).count(), 2, "{out:?}");
        let out = random_swap(&orig, 5, &mut Rng::new(seed));
        assert_eq!(sorted(out), sorted(orig.clone()));
    }
    assert_eq!(random_swap(&words("alone"), 3, &mut Rng::new(0)), words("alone"));
}

#[test]
fn random_deletion_deletes_with_probability_alpha_and_never_empties() {
    let orig = words(SENTENCE);
    let mut kept = 0;
    for seed in 0..2000 {
        let out = random_deletion(&orig, 0.5, &mut Rng::new(seed));
        assert!(!out.is_empty() && subsequence(&out, &orig), "{out:?}");
        kept += out.len();
        let all = random_deletion(&orig, 1.0, &mut Rng::new(seed));
        assert!(all.len() == 1 && orig.contains(&all[0]), "{all:?}");
    }
    let share = kept as f64 / (2000 * orig.len()) as f64;
    assert!((share - 0.5).abs() < 0.02, "kept {share}");
    assert_eq!(random_deletion(&words("alone"), 1.0, &mut Rng::new(0)), words("alone"));
}

fn examples() -> Vec<Example> {
    let pair = |i: usize, a: &str, b: &str| Example {
        id: format!("p{i}"),
        a: a.into(),
        b: Some(b.into()),
        label: Some(Label::Binary((i % 2) as f32)),
    };
    vec![
        pair(0, SENTENCE, "A lazy dog sleeps all day long"),
        pair(1, "Is the quick fox brown or red ?", "What colour is a fox ?"),
        pair(2, "How fast does a dog run ?", "The dog jumps over a fence"),
    ]
}

#[test]
fn copies_take_the_operations_in_turn_on_both_sides_of_a_pair() {
    let e = eda(0.3, 8);
    assert_eq!(
        e.operations(),
        [Operation::SynonymReplacement, Operation::RandomInsertion, Operation::RandomSwap, Operation::RandomDeletion]
    );
    let mut data = examples();
    let done = e.augment(Task::Quora, 7, &mut data);
    assert_eq!((done.of, done.added + done.unchanged), (3, 24), "{done:?}");
    assert_eq!(data.len(), 3 + done.added);
    let originals = examples();
    let mut at = 0;
    for o in &originals {
        assert_eq!(data[at], *o, "the original comes first");
        at += 1;
        while at < data.len() && data[at].id.starts_with(&format!("{}-eda", o.id)) {
            let c = &data[at];
            let k: usize = c.id[o.id.len() + 4..].parse().unwrap();
            assert_eq!(c.label, o.label);
            let sides = [(&o.a, &c.a), (o.b.as_ref().unwrap(), c.b.as_ref().unwrap())];
            for (before, after) in sides {
                let (b, a) = (words(before), words(after));
                match (k - 1) % 4 {
                    0 => assert_eq!(a.len(), b.len(), "SR {after}"),
                    1 => assert!(a.len() > b.len() && subsequence(&b, &a) || a == b, "RI {after}"),
                    2 => assert_eq!(sorted(a), sorted(b), "RS {after}"),
                    _ => assert!(!a.is_empty() && subsequence(&a, &b), "RD {after}"),
                }
            }
            at += 1;
        }
    }
    assert_eq!(at, data.len(), "every copy follows its original");
    // Without a synonym file: swaps and deletions only.
    let plain = Eda::new(0.3, 4, None);
    assert_eq!(plain.operations(), [Operation::RandomSwap, Operation::RandomDeletion]);
    let mut data = examples();
    let done = plain.augment(Task::Quora, 7, &mut data);
    assert_eq!(done.added + done.unchanged, 12);
}

#[test]
fn augmentation_depends_on_the_seed_and_task_alone() {
    let run = |seed: u64, task: Task| {
        let mut data = examples();
        eda(0.2, 4).augment(task, seed, &mut data);
        data
    };
    assert_eq!(run(11711, Task::Quora), run(11711, Task::Quora));
    assert_ne!(run(11711, Task::Quora), run(11712, Task::Quora));
    assert_ne!(run(11711, Task::Quora), run(11711, Task::Sts));
    // A copy does not depend on how many there are.
    let mut more = examples();
    eda(0.2, 8).augment(Task::Quora, 11711, &mut more);
    let first = run(11711, Task::Quora);
    let ids: HashSet<&str> = first.iter().map(|e| e.id.as_str()).collect();
    let same: Vec<&Example> = more.iter().filter(|e| ids.contains(e.id.as_str())).collect();
    assert_eq!(same, first.iter().collect::<Vec<_>>());
}

#[test]
fn the_synonym_file_is_read_case_insensitively_and_malformed_lines_are_named() {
    let syn = Synonyms::parse(THESAURUS, "t").unwrap();
    assert_eq!(syn.of("BROWN"), ["brunette"]);
    assert_eq!(syn.of("Quick"), ["fast", "speedy"]);
    assert!(syn.of("red").is_empty());
    let merged = Synonyms::parse("good\tfine,Good\ngood\tgreat,fine\n", "t").unwrap();
    assert_eq!(merged.of("good"), ["fine", "great"], "the word itself and repeats are left out");
    for (text, line, what) in [
        ("good fine\n", 1, "no tab"),
        ("# c\ngood\tfine\n\nbad\t\n", 4, "an empty synonym"),
        ("good\tfine,,great\n", 1, "an empty synonym"),
        ("good\tfine\tgreat\n", 1, "more than one tab"),
        ("good\tfine\nvery good\tgreat\n", 2, "not one word"),
        ("\tfine\n", 1, "not one word"),
    ] {
        let e = Synonyms::parse(text, "syn.txt").unwrap_err().to_string();
        assert!(e.starts_with(&format!("syn.txt:{line}: ")) && e.contains(what), "{text:?}: {e}");
    }
    let e = Synonyms::parse("# nothing\n\n", "syn.txt").unwrap_err().to_string();
    assert!(e.contains("syn.txt") && e.contains("no synonym entries"), "{e}");
    let dir = scratch("eda-synonyms-read");
    let e = Synonyms::read(&dir.join("missing.txt")).unwrap_err().to_string();
    assert!(e.contains("missing.txt"), "{e}");
    std::fs::write(dir.join("bad.txt"), "good\tfine\nbad line\n").unwrap();
    let e = Synonyms::read(&dir.join("bad.txt")).unwrap_err().to_string();
    assert!(e.contains("bad.txt:2: no tab"), "{e}");
}

#[test]
fn a_train_json_from_before_eda_loads_with_eda_off() {
    use engine::train::TrainOptions;
    let mut old = serde_json::to_value(TrainOptions::default()).unwrap();
    for key in ["eda_tasks", "eda_alpha", "eda_num", "eda_synonyms"] {
        old.as_object_mut().unwrap().remove(key).unwrap();
    }
    let opts: TrainOptions = serde_json::from_value(old).unwrap();
    assert_eq!(opts, TrainOptions::default());
    assert!(opts.eda_tasks.is_empty() && opts.validate().is_ok());
}

/// A synonym file of `data`'s SST training words (not stop words), paired off as each other's
/// synonyms, so that SR and RI find words to work on in every sentence.
fn write_synonyms(data: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(data.join("ids-sst-train.csv")).unwrap();
    let mut seen = Vec::new();
    for line in text.lines().skip(1) {
        for w in line.split('\t').nth(2).unwrap().split_whitespace() {
            let w = w.to_lowercase();
            if w.len() > 2 && w.chars().all(|c| c.is_ascii_alphabetic()) && !is_stop_word(&w) && !seen.contains(&w) {
                seen.push(w);
            }
        }
    }
    let mut out = String::from("# the tiny data's SST words, in pairs\n\n");
    for p in seen.chunks_exact(2) {
        out.push_str(&format!("{}\t{}\n{}\t{}\n", p[0], p[1], p[1], p[0]));
    }
    let path = dir.join("synonyms.txt");
    std::fs::write(&path, out).unwrap();
    path
}

/// The numbers in `line`, in order.
fn numbers(line: &str) -> Vec<usize> {
    line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()
}

#[test]
fn eda_augments_the_training_data_and_resumes_exactly() {
    let (model, data) = (tiny_model("eda"), tiny_data(24, "eda"));
    let synonyms = write_synonyms(&data, &scratch("eda-files"));
    let steps = ["--max-steps", "4", "--eda-tasks", "sst", "--eda-synonyms", synonyms.to_str().unwrap()];
    let full = scratch("eda-full");
    let notes = finetune(&model, &data, &full, &steps);
    let line = notes.lines().find(|l| l.starts_with("--eda-tasks: added")).unwrap_or_else(|| panic!("{notes}"));
    assert!(line.contains(" sst ") && line.contains("SR, RI, RS, RD"), "{line}");
    assert_eq!(notes.lines().filter(|l| l.starts_with("--eda-tasks")).count(), 1, "{notes}");
    // "added X augmented sst training examples to 24 (4 copies each, …; U that came out the same …)"
    let n = numbers(line);
    let (added, of, unchanged) = (n[0], n[1], n[3]);
    assert_eq!((of, added + unchanged), (24, 96), "{line}");
    assert!(added > 80, "{line}");
    // SST is now the largest task: a round-robin epoch is its batches of 4.
    assert!(notes.contains(&format!("({} per epoch)", (24 + added).div_ceil(4))), "{notes}");
    let losses = step_losses(&full);
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|(_, l)| l["sst"].as_f64().is_some_and(f64::is_finite)), "{losses:?}");
    let opts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(full.join("last/train.json")).unwrap()).unwrap();
    assert_eq!(opts["eda_tasks"], serde_json::json!(["sst"]));
    assert_eq!((opts["eda_alpha"].as_f64(), opts["eda_num"].as_u64()), (Some(0.1), Some(4)));
    assert_eq!(opts["eda_synonyms"], serde_json::json!(std::path::absolute(&synonyms).unwrap()));
    // Dev predictions cover dev alone.
    let dev = std::fs::read_to_string(full.join("predictions/sst-dev-output.csv")).unwrap();
    assert_eq!(dev.lines().count(), 25);
    // Other data: other losses.
    let plain = scratch("eda-none");
    finetune(&model, &data, &plain, &steps[..2]);
    assert_ne!(step_losses(&full), step_losses(&plain));
    // Run again, stopped and resumed (the augmentation runs again, from the seed): the same run.
    assert_resumes_exactly(&model, &data, &full, "eda-part", &steps);
}

#[test]
fn eda_without_synonyms_swaps_and_deletes_pairs_too() {
    let (model, data) = (tiny_model("eda-plain"), tiny_data(8, "eda-plain"));
    let out = scratch("eda-plain-run");
    let notes = finetune(&model, &data, &out, &["--max-steps", "1", "--eda-tasks", "quora,sst", "--eda-num", "2"]);
    assert!(notes.contains("no --eda-synonyms file"), "{notes}");
    for task in ["sst", "quora"] {
        let line = notes
            .lines()
            .find(|l| l.starts_with("--eda-tasks: added") && l.contains(&format!(" {task} ")))
            .unwrap_or_else(|| panic!("no note for {task}: {notes}"));
        let n = numbers(line);
        assert_eq!((n[1], n[0] + n[3]), (8, 16), "{line}");
        assert!(line.contains("RS, RD in turn"), "{line}");
    }
    assert!(!notes.lines().any(|l| l.contains(" sts ") && l.starts_with("--eda")), "{notes}");
}

#[test]
fn bad_eda_options_are_refused_in_one_line() {
    let (model, data) = (tiny_model("eda-bad"), tiny_data(8, "eda-bad"));
    let files = scratch("eda-bad-files");
    let malformed = files.join("malformed.txt");
    std::fs::write(&malformed, "good\tfine\n# ok\nbad line\n").unwrap();
    let missing = files.join("missing.txt");
    let (malformed, missing, dir) = (malformed.to_str().unwrap(), missing.to_str().unwrap(), files.to_str().unwrap());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--eda-alpha", "0"], "--eda-alpha 0 is outside (0, 1]"),
        (vec!["--eda-alpha", "-0.1"], "--eda-alpha"),
        (vec!["--eda-alpha", "1.5"], "--eda-alpha"),
        (vec!["--eda-alpha", "nan"], "--eda-alpha"),
        (vec!["--eda-num", "0"], "--eda-num 0"),
        (vec!["--tasks", "sst,quora", "--eda-tasks", "sts"], "--eda-tasks: sts is not in --tasks"),
        (vec!["--eda-tasks", "sst"], "--eda-tasks: sst given twice"),
        (vec!["--eda-synonyms", missing], "missing.txt: No such file"),
        (vec!["--eda-synonyms", dir], "not a file"),
        (vec!["--eda-synonyms", malformed], "malformed.txt:3: no tab"),
    ];
    for (flags, want) in cases {
        let mut extra = vec!["--eda-tasks", "sst"];
        extra.extend(flags);
        let e = finetune_refused(&model, &data, "eda-bad-run", &extra);
        assert!(e.starts_with("error: ") && e.contains(want), "{extra:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "{extra:?}: {e}");
    }
    // EDA's settings need EDA.
    let e = finetune_refused(&model, &data, "eda-bad-run", &["--eda-num", "2"]);
    assert!(e.contains("--eda-tasks"), "{e}");
}
