//! The task heads a run chooses per task (`--head sts=cosine,quora=full`): what each head reads
//! and computes, its spelling on the command line and in train.json, and which tasks it fits.
//! The head's parameters and forward live in train/task_head.rs; this file is the choice only.
//!
//! | spelling | reads | computes |
//! | --- | --- | --- |
//! | `linear` | the input (a pair jointly: [CLS] a [SEP] b [SEP]) | sentence vector → dropout → [hidden] → linear |
//! | `concat`, `full`, `product`, `difference` | each side of a pair alone, u and v | linear on [u, v], [u, v, \|u−v\|, u·v], u·v or \|u−v\| |
//! | `cosine[:shifted][:unit][:bce]` | each side of a pair alone | cos(mean u, mean v), no parameters |
//! | `lstm:H`, `rnn:H` | the input (a pair jointly) | [last state of an H-wide LSTM / tanh RNN over the token states, sentence vector] → dropout → [hidden] → linear |
//!
//! The cosine head (seeds 000, 001, 003): for a score, 5·cos or, `shifted`, (cos+1)·2.5, trained
//! with MSE on the 0–5 scale or, `unit`, with both sides divided by 5 (labels in [0, 1]); for a
//! yes/no task, p = cos (Sentence-BERT's CosineSimilarityLoss) or, `shifted`, p = (cos+1)/2,
//! trained with MSE against the label or, `bce`, with BCE; it predicts yes where p > 1/2. The recurrent heads are seed 004's "LSTM 256 + [CLS] embed." (with
//! `--pooling cls`) and its plain RNN.

use crate::data::cs224n::{Kind, Task};
use crate::error::{Error, Result};
use crate::model::heads::Features;
use crate::ops::recurrent::Cell;
use std::fmt;
use std::str::FromStr;

/// A task's head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum HeadKind {
    /// The input's sentence vector (a pair read jointly) → dropout → [GELU hidden] → linear.
    Linear,
    /// A pair read one side at a time, u and v its sentence vectors: linear on features of both.
    Features(Features),
    /// A pair read one side at a time: the cosine of the mean-pooled sides, no parameters.
    Cosine(CosineHead),
    /// A recurrent layer `width` wide over the input's token states (a pair read jointly); its
    /// last state beside the sentence vector → dropout → [GELU hidden] → linear.
    Recurrent { cell: Cell, width: usize },
}

/// The widest recurrent head (its W_hh is 4·W × W).
pub const MAX_RECURRENT_WIDTH: usize = 4096;

/// The cosine head's scale and loss (see the module's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CosineHead {
    /// A score as (cos+1)·2.5 rather than 5·cos; a yes/no probability (cos+1)/2 rather than cos.
    pub shifted: bool,
    /// A score's loss on labels divided by 5 (in [0, 1]).
    pub unit: bool,
    /// A yes/no task's BCE on (cos+1)/2 rather than MSE.
    pub bce: bool,
}

/// The feature heads' spellings.
const FEATURES: [(Features, &str); 4] = [
    (Features::Concat, "concat"),
    (Features::Full, "full"),
    (Features::Product, "product"),
    (Features::Difference, "difference"),
];

impl HeadKind {
    /// The head of `task` when --head does not name it: the linear head on a jointly read input;
    /// under `--pair-encoding separate`, pairs as before heads were chosen: a yes/no task linear
    /// on [u, v, |u−v|, u·v], a score 5·cos(mean u, mean v).
    pub fn default_for(task: Task, separate_pairs: bool) -> HeadKind {
        match (task.is_pair() && separate_pairs, task.kind()) {
            (false, _) => HeadKind::Linear,
            (true, Kind::Regression) => HeadKind::Cosine(CosineHead::default()),
            (true, _) => HeadKind::Features(Features::Full),
        }
    }

    /// Whether the head reads each side of a pair alone (else the input as one sequence).
    pub fn reads_sides(self) -> bool {
        matches!(self, HeadKind::Features(_) | HeadKind::Cosine(_))
    }

    /// Whether the head has a linear layer (and so a --head-hidden layer before it).
    pub fn has_linear(self) -> bool {
        !matches!(self, HeadKind::Cosine(_))
    }

    /// Refuses a head that does not fit `task`, naming both.
    pub fn check(self, task: Task) -> Result<()> {
        let bad = |why: &str| Err(Error::Config(format!("--head {task}={self}: {why}")));
        if self.reads_sides() && !task.is_pair() {
            return bad("reads the two sentences of a pair apart, and this task has one sentence");
        }
        if let HeadKind::Recurrent { width, .. } = self
            && !(1..=MAX_RECURRENT_WIDTH).contains(&width)
        {
            return bad(&format!("the width lies in 1..={MAX_RECURRENT_WIDTH}"));
        }
        if let HeadKind::Cosine(c) = self {
            match task.kind() {
                Kind::Classes(_) => return bad("a cosine gives one value; this task has several classes"),
                Kind::Binary if c.unit => return bad("unit applies to a score"),
                Kind::Regression if c.bce => return bad("bce applies to a yes/no task"),
                _ => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for HeadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadKind::Linear => f.write_str("linear"),
            HeadKind::Recurrent { cell, width } => write!(f, "{}:{width}", cell_name(*cell)),
            HeadKind::Features(x) => f.write_str(FEATURES.iter().find(|(k, _)| k == x).map_or("?", |(_, n)| n)),
            HeadKind::Cosine(c) => {
                f.write_str("cosine")?;
                for (on, name) in [(c.shifted, ":shifted"), (c.unit, ":unit"), (c.bce, ":bce")] {
                    if on {
                        f.write_str(name)?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl FromStr for HeadKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<HeadKind> {
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        let no_args = |kind: HeadKind| match args.is_empty() {
            true => Ok(kind),
            false => Err(Error::Config(format!("head {s:?}: {name} takes no options"))),
        };
        if name == "linear" {
            return no_args(HeadKind::Linear);
        }
        if let Some((f, _)) = FEATURES.iter().find(|(_, n)| *n == name) {
            return no_args(HeadKind::Features(*f));
        }
        if let Some(cell) = [Cell::Lstm, Cell::Rnn].into_iter().find(|&c| cell_name(c) == name) {
            let width = match args[..] {
                [w] => w.parse::<usize>().ok().filter(|w| (1..=MAX_RECURRENT_WIDTH).contains(w)),
                _ => None,
            };
            return match width {
                Some(width) => Ok(HeadKind::Recurrent { cell, width }),
                None => Err(Error::Config(format!(
                    "head {s:?}: give {name}'s width, 1 to {MAX_RECURRENT_WIDTH}, e.g. {name}:256"
                ))),
            };
        }
        if name == "cosine" {
            let mut c = CosineHead::default();
            for a in args {
                let flag = match a {
                    "shifted" => &mut c.shifted,
                    "unit" => &mut c.unit,
                    "bce" => &mut c.bce,
                    _ => return Err(Error::Config(format!("head {s:?}: cosine's options are shifted, unit and bce"))),
                };
                *flag = true;
            }
            return Ok(HeadKind::Cosine(c));
        }
        Err(Error::Config(format!(
            "head {s:?}: not a head; choose linear, concat, full, product, difference, cosine[:shifted][:unit][:bce], \
             lstm:H or rnn:H"
        )))
    }
}

fn cell_name(cell: Cell) -> &'static str {
    match cell {
        Cell::Lstm => "lstm",
        Cell::Rnn => "rnn",
    }
}

impl TryFrom<String> for HeadKind {
    type Error = Error;
    fn try_from(s: String) -> Result<HeadKind> {
        s.parse()
    }
}

impl From<HeadKind> for String {
    fn from(h: HeadKind) -> String {
        h.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in [
            "linear",
            "concat",
            "full",
            "product",
            "difference",
            "cosine",
            "cosine:shifted:unit",
            "cosine:bce",
            "lstm:256",
            "rnn:1",
        ] {
            assert_eq!(s.parse::<HeadKind>().unwrap().to_string(), s);
        }
        for bad in ["", "lin", "cosine:wide", "full:2", "linear:", "lstm", "lstm:0", "rnn:x", "lstm:2:3", "lstm:5000"] {
            assert!(bad.parse::<HeadKind>().is_err(), "{bad}");
        }
    }

    #[test]
    fn heads_fit_their_tasks() {
        let h = |s: &str| s.parse::<HeadKind>().unwrap();
        assert!(h("linear").check(Task::Sst).is_ok());
        assert!(h("cosine").check(Task::Sst).is_err());
        assert!(h("full").check(Task::Sst).is_err());
        assert!(h("cosine:bce").check(Task::Quora).is_ok());
        assert!(h("cosine:bce").check(Task::Sts).is_err());
        assert!(h("cosine:shifted:unit").check(Task::Sts).is_ok());
        assert!(h("cosine:unit").check(Task::Quora).is_err());
        assert!(h("cosine:shifted:bce").check(Task::Quora).is_ok());
        assert!(h("product").check(Task::Sts).is_ok());
        assert!(h("lstm:8").check(Task::Sst).is_ok() && h("rnn:8").check(Task::Quora).is_ok());
    }
}
