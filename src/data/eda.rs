//! `--eda-tasks` (Wei & Zou 2019, "EDA: Easy Data Augmentation Techniques for Boosting
//! Performance on Text Classification Tasks"): each training example of a task gains `num`
//! copies, each changed by one operation, the operations taken in turn as the paper's code does:
//! synonym replacement (SR), random insertion of a synonym (RI), random swap (RS), random
//! deletion (RD). SR, RI and RS make n = max(1, round(α·ℓ)) changes to a sentence of ℓ words; RD
//! deletes each word with probability α. No thesaurus ships: SR and RI read the user's synonym
//! file, and without one the copies take RS and RD only.
//!
//! Words are the sentence split on whitespace, kept as written (the tokenizer lower-cases);
//! synonyms are looked up lower-cased, with the punctuation around a word set aside (`movie,`
//! is looked up as `movie` and becomes `film,`). A copy depends only on (seed, task, example
//! index, copy index), so a run and its --resume see the same data.

use super::cs224n::{Example, Task};
use crate::error::{Error, Result};
use crate::rng::{Rng, hash_key};
use std::collections::HashMap;
use std::path::Path;

/// The paper's stop words (NLTK's English list), which SR never replaces; sorted, for binary search.
#[rustfmt::skip]
pub const STOP_WORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "did", "do", "does",
    "doing", "don", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having", "he",
    "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it", "its",
    "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once",
    "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "s", "same", "she", "should", "so",
    "some", "such", "t", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these",
    "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what",
    "when", "where", "which", "while", "who", "whom", "why", "will", "with", "you", "your", "yours", "yourself",
    "yourselves",
];

/// Whether `word` (lower-case) is one of [`STOP_WORDS`].
pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// One EDA operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// SR: n distinct non-stop words, each replaced (every occurrence) by one of its synonyms.
    SynonymReplacement,
    /// RI: n times, a synonym of a random word inserted at a random position.
    RandomInsertion,
    /// RS: n times, two random positions swapped.
    RandomSwap,
    /// RD: each word deleted with probability α (one kept if all would go).
    RandomDeletion,
}

impl Operation {
    /// The paper's abbreviation.
    pub fn abbrev(self) -> &'static str {
        match self {
            Operation::SynonymReplacement => "SR",
            Operation::RandomInsertion => "RI",
            Operation::RandomSwap => "RS",
            Operation::RandomDeletion => "RD",
        }
    }
}

/// The synonym file: lower-case word → its synonyms (none equal to the word, no repeats).
#[derive(Clone, Debug, Default)]
pub struct Synonyms {
    words: HashMap<String, Vec<String>>,
}

impl Synonyms {
    /// Reads a synonym file (see [`Synonyms::parse`]); errors name the file (and line).
    pub fn read(path: &Path) -> Result<Synonyms> {
        let file = path.display().to_string();
        let bytes =
            std::fs::read(path).map_err(|source| Error::Io { path: format!("--eda-synonyms {file}"), source })?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::Data { at: format!("--eda-synonyms {file}"), detail: "not valid UTF-8".into() })?;
        Synonyms::parse(&text, &file)
    }

    /// One entry a line, `word<TAB>syn1,syn2,…`; blank lines and lines starting with `#` are
    /// passed over. A word given twice gets the synonyms of both lines. A line without a tab, with
    /// more than one, with an empty word or synonym, or with whitespace inside the word (which a
    /// sentence's words never have) is an error naming `file:line`; so is a file with no entry.
    pub fn parse(text: &str, file: &str) -> Result<Synonyms> {
        let mut words: HashMap<String, Vec<String>> = HashMap::new();
        let mut entries = 0;
        for (i, line) in text.lines().enumerate() {
            let bad = |detail: &str| Error::Data {
                at: format!("{file}:{}", i + 1),
                detail: format!("{detail}; a line is `word<TAB>synonym,synonym,…`"),
            };
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((word, list)) = line.split_once('\t') else { return Err(bad("no tab")) };
            if list.contains('\t') {
                return Err(bad("more than one tab"));
            }
            let word = word.trim().to_lowercase();
            if word.is_empty() || word.contains(char::is_whitespace) {
                return Err(bad(&format!("{word:?} is not one word")));
            }
            let synonyms: Vec<&str> = list.split(',').map(str::trim).collect();
            if synonyms.iter().any(|s| s.is_empty()) {
                return Err(bad("an empty synonym"));
            }
            let known = words.entry(word.clone()).or_default();
            for s in synonyms {
                // The paper's get_synonyms leaves the word itself out: replacing it by itself is no change.
                if s.to_lowercase() != word && !known.iter().any(|k| k == s) {
                    known.push(s.to_string());
                }
            }
            entries += 1;
        }
        if entries == 0 {
            return Err(Error::Data { at: file.to_string(), detail: "no synonym entries".into() });
        }
        words.retain(|_, s| !s.is_empty());
        Ok(Synonyms { words })
    }

    /// The synonyms of `word`, looked up lower-cased (none: empty).
    pub fn of(&self, word: &str) -> &[String] {
        self.words.get(&word.to_lowercase()).map_or(&[], |s| s.as_slice())
    }

    /// The number of words with synonyms.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// `word` as (leading punctuation, the word proper, trailing punctuation).
fn affixes(word: &str) -> (&str, &str, &str) {
    let core = word.trim_start_matches(|c: char| c.is_ascii_punctuation());
    let lead = &word[..word.len() - core.len()];
    let core = core.trim_end_matches(|c: char| c.is_ascii_punctuation());
    let trail = &word[lead.len() + core.len()..];
    (lead, core, trail)
}

/// Shuffles `v` in place (Fisher–Yates).
fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
}

/// RS: `n` times, two distinct random positions swapped (a sentence of one word stays as it is).
pub fn random_swap(words: &[String], n: usize, rng: &mut Rng) -> Vec<String> {
    let mut out = words.to_vec();
    if out.len() < 2 {
        return out;
    }
    for _ in 0..n {
        let i = rng.below(out.len());
        let j = rng.below(out.len() - 1);
        out.swap(i, if j >= i { j + 1 } else { j });
    }
    out
}

/// RD: each word deleted with probability `p`; when all would go, one kept at random (a
/// sentence of one word stays as it is, as in the paper's code).
pub fn random_deletion(words: &[String], p: f64, rng: &mut Rng) -> Vec<String> {
    if words.len() < 2 {
        return words.to_vec();
    }
    let kept: Vec<String> = words.iter().filter(|_| rng.uniform() >= p).cloned().collect();
    match kept.is_empty() {
        true => vec![words[rng.below(words.len())].clone()],
        false => kept,
    }
}

/// What augmenting one task's examples did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Augmented {
    pub added: usize,
    pub of: usize,
    /// Copies that came out the same as their original (e.g. RD deleting nothing), left out.
    pub unchanged: usize,
}

/// EDA's settings and synonyms.
#[derive(Clone, Debug)]
pub struct Eda {
    pub alpha: f64,
    /// Copies per example.
    pub num: usize,
    pub synonyms: Option<Synonyms>,
}

impl Eda {
    pub fn new(alpha: f64, num: usize, synonyms: Option<Synonyms>) -> Eda {
        Eda { alpha, num, synonyms }
    }

    /// The operations the copies take in turn: SR, RI, RS, RD, or RS, RD without synonyms.
    pub fn operations(&self) -> &'static [Operation] {
        use Operation::*;
        match self.synonyms {
            Some(_) => &[SynonymReplacement, RandomInsertion, RandomSwap, RandomDeletion],
            None => &[RandomSwap, RandomDeletion],
        }
    }

    /// n = max(1, round(α·ℓ)): the changes SR, RI and RS make to a sentence of `len` words.
    pub fn changes(&self, len: usize) -> usize {
        ((self.alpha * len as f64).round() as usize).max(1)
    }

    /// SR: up to `n` distinct words that are not stop words and have synonyms (drawn at random),
    /// each replaced, every occurrence, by one of its synonyms drawn at random.
    pub fn synonym_replacement(&self, words: &[String], n: usize, rng: &mut Rng) -> Vec<String> {
        let Some(syn) = &self.synonyms else { return words.to_vec() };
        let keys: Vec<String> = words.iter().map(|w| affixes(w).1.to_lowercase()).collect();
        // In order of first appearance, so that the draw depends on the sentence alone.
        let mut candidates: Vec<&str> = Vec::new();
        for k in &keys {
            if !is_stop_word(k) && !syn.of(k).is_empty() && !candidates.contains(&k.as_str()) {
                candidates.push(k);
            }
        }
        shuffle(&mut candidates, rng);
        let mut out = words.to_vec();
        for &key in candidates.iter().take(n) {
            let options = syn.of(key);
            let pick = &options[rng.below(options.len())];
            // Matched against the original words: a synonym put in is never replaced again.
            for (i, w) in words.iter().enumerate() {
                if keys[i] == key {
                    let (lead, _, trail) = affixes(w);
                    out[i] = format!("{lead}{pick}{trail}");
                }
            }
        }
        out
    }

    /// RI: `n` times, a random synonym of a random word that has synonyms (the words put in so
    /// far included, as in the paper) inserted at a random position; none when no word has one.
    pub fn random_insertion(&self, words: &[String], n: usize, rng: &mut Rng) -> Vec<String> {
        let mut out = words.to_vec();
        let Some(syn) = &self.synonyms else { return out };
        for _ in 0..n {
            let have: Vec<usize> = (0..out.len()).filter(|&i| !syn.of(affixes(&out[i]).1).is_empty()).collect();
            if have.is_empty() {
                break;
            }
            let options = syn.of(affixes(&out[have[rng.below(have.len())]]).1);
            let pick = options[rng.below(options.len())].clone();
            out.insert(rng.below(out.len() + 1), pick);
        }
        out
    }

    /// `op` on `words`.
    pub fn apply(&self, op: Operation, words: &[String], rng: &mut Rng) -> Vec<String> {
        let n = self.changes(words.len());
        match op {
            Operation::SynonymReplacement => self.synonym_replacement(words, n, rng),
            Operation::RandomInsertion => self.random_insertion(words, n, rng),
            Operation::RandomSwap => random_swap(words, n, rng),
            Operation::RandomDeletion => random_deletion(words, self.alpha, rng),
        }
    }

    /// Copy `copy` (0-based) of `e`, example `index` of `task`'s training data: the cycle's
    /// operation `copy` (mod its length), on each side of a pair independently, the label
    /// unchanged; `None` when it comes out the same as `e`.
    pub fn copy(&self, e: &Example, task: Task, seed: u64, index: usize, copy: usize) -> Option<Example> {
        let ops = self.operations();
        let op = ops[copy % ops.len()];
        // Keyed by the task's place in Task::ALL (a user task's by its name), not in --tasks:
        // adding a task changes no other's copies.
        let task_no = match Task::ALL.iter().position(|&t| t == task) {
            Some(i) => i as u64,
            None => task
                .name()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)),
        };
        let key = hash_key(hash_key(hash_key(seed, 0xeda0_0000 + task_no), index as u64), copy as u64);
        let mut rng = Rng::new(key);
        let mut changed = false;
        let mut side = |s: &str| {
            let words: Vec<String> = s.split_whitespace().map(String::from).collect();
            let out = self.apply(op, &words, &mut rng);
            changed |= out != words;
            out.join(" ")
        };
        let a = side(&e.a);
        let b = e.b.as_deref().map(&mut side);
        changed.then(|| Example { id: format!("{}-eda{}", e.id, copy + 1), a, b, label: e.label })
    }

    /// Adds `num` copies of every example of `task` (those that change), each right after its
    /// original.
    pub fn augment(&self, task: Task, seed: u64, examples: &mut Vec<Example>) -> Augmented {
        let of = examples.len();
        let mut out = Vec::with_capacity(of * (self.num + 1));
        for (i, e) in std::mem::take(examples).into_iter().enumerate() {
            let copies: Vec<Example> = (0..self.num).filter_map(|k| self.copy(&e, task, seed, i, k)).collect();
            out.push(e);
            out.extend(copies);
        }
        let added = out.len() - of;
        *examples = out;
        Augmented { added, of, unchanged: of * self.num - added }
    }
}
