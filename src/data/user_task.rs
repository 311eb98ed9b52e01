//! Tasks the user defines (`--task-def nli:pair:classes=3`): a name, one sentence or a pair, and
//! what it predicts, read from files in the CS224N layout (`id`, `sentence` or `sentence1` and
//! `sentence2`, and a label column, `label` unless the definition names another) named
//! `{name}-train.csv`, `{name}-dev.csv` and `{name}-test.csv` under the data folder. A defined
//! task is a [`Task`] like the built-in ones: it trains, evaluates and predicts through every
//! command, and a checkpoint's train.json keeps its definition.
//!
//! Definitions are registered once per process and live as long as it (a few small leaked
//! records), so that [`Task`] stays a `Copy` value that every layer passes around.

use super::cs224n::{Kind, Task};
use crate::error::{Error, Result};
use std::sync::Mutex;

/// A user task's definition, as `--task-def` spells it and train.json keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TaskDef {
    pub name: String,
    /// Two sentences (`sentence1`, `sentence2`) rather than one (`sentence`).
    pub pair: bool,
    pub kind: Kind,
    /// The label column's header name.
    pub label_column: String,
}

/// A registered definition with the file names derived from it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct UserTask {
    pub def: TaskDef,
    /// Train, dev and test file names.
    pub files: [String; 3],
    /// Dev and test prediction file names.
    pub predictions: [String; 2],
}

static DEFINED: Mutex<Vec<&'static UserTask>> = Mutex::new(Vec::new());

impl TaskDef {
    /// Parses `NAME:single|pair:classes=N|binary|regression[:label=COLUMN]`.
    pub fn parse(spec: &str) -> Result<TaskDef> {
        let bad = |why: &str| {
            Err(Error::Config(format!(
                "--task-def {spec:?}: {why}; write NAME:single|pair:classes=N|binary|regression[:label=COLUMN], \
                 e.g. nli:pair:classes=3"
            )))
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (name, shape, kind) = match parts[..] {
            [name, shape, kind] | [name, shape, kind, _] => (name, shape, kind),
            _ => return bad("three or four parts"),
        };
        let pair = match shape {
            "pair" => true,
            "single" => false,
            _ => return bad(&format!("{shape:?} is neither single nor pair")),
        };
        let kind = match kind.split_once('=') {
            None if kind == "binary" => Kind::Binary,
            None if kind == "regression" => Kind::Regression,
            Some(("classes", n)) => match n.parse::<u32>() {
                Ok(n) if (2..=1_000_000).contains(&n) => Kind::Classes(n),
                _ => return bad(&format!("classes={n}: give a whole number of classes, at least 2")),
            },
            _ => return bad(&format!("{kind:?} is not classes=N, binary or regression")),
        };
        let label_column = match parts.get(3) {
            None => "label".to_string(),
            Some(l) => match l.strip_prefix("label=") {
                Some(c) if !c.is_empty() => c.to_string(),
                _ => return bad(&format!("{l:?} is not label=COLUMN")),
            },
        };
        let def = TaskDef { name: name.to_string(), pair, kind, label_column };
        def.check()?;
        Ok(def)
    }

    /// The name must be a plain lower-case word and not a built-in task's.
    fn check(&self) -> Result<()> {
        let n = &self.name;
        let plain = !n.is_empty()
            && n.len() <= 32
            && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && n.starts_with(|c: char| c.is_ascii_lowercase());
        if !plain {
            return Err(Error::Config(format!(
                "--task-def: task name {n:?} must be lower-case letters, digits and _, starting with a letter"
            )));
        }
        if Task::ALL.iter().any(|t| t.name() == n) {
            return Err(Error::Config(format!("--task-def: {n} is a built-in task")));
        }
        if let Kind::Classes(k) = self.kind
            && k < 2
        {
            return Err(Error::Config(format!("--task-def {n}: a classification task has at least 2 classes")));
        }
        Ok(())
    }

    /// Registers the definition (once: the same definition again gives the same task; another
    /// definition of a defined name is refused) and returns its task.
    pub fn register(self) -> Result<Task> {
        self.check()?;
        let mut defined = DEFINED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&u) = defined.iter().find(|u| u.def.name == self.name) {
            if u.def != self {
                return Err(Error::Config(format!(
                    "task {} is defined twice, differently ({:?} and {:?})",
                    self.name, u.def, self
                )));
            }
            return Ok(Task::User(u));
        }
        let n = &self.name;
        let files = [format!("{n}-train.csv"), format!("{n}-dev.csv"), format!("{n}-test.csv")];
        let predictions = [format!("{n}-dev-output.csv"), format!("{n}-test-output.csv")];
        let task: &'static UserTask = Box::leak(Box::new(UserTask { def: self, files, predictions }));
        defined.push(task);
        Ok(Task::User(task))
    }
}

/// The registered task named `name`, if any.
pub fn find(name: &str) -> Option<Task> {
    let defined = DEFINED.lock().unwrap_or_else(|e| e.into_inner());
    defined.iter().find(|u| u.def.name.eq_ignore_ascii_case(name)).map(|&u| Task::User(u))
}

/// Every registered task's name.
pub fn names() -> Vec<&'static str> {
    DEFINED.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|u| u.def.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_parse_and_register_once() {
        let d = TaskDef::parse("ut_nli:pair:classes=3").unwrap();
        assert_eq!(
            d,
            TaskDef { name: "ut_nli".into(), pair: true, kind: Kind::Classes(3), label_column: "label".into() }
        );
        let t = d.clone().register().unwrap();
        assert_eq!(t, d.register().unwrap(), "the same definition twice is one task");
        assert_eq!("ut_nli".parse::<Task>().unwrap(), t);
        assert_eq!(t.file_name(super::super::cs224n::Split::Dev), "ut_nli-dev.csv");
        let other = TaskDef::parse("ut_nli:single:binary").unwrap();
        assert!(other.register().unwrap_err().to_string().contains("defined twice"));
        let g = TaskDef::parse("ut_grade:single:regression:label=grade").unwrap();
        assert_eq!((g.kind, g.label_column.as_str(), g.pair), (Kind::Regression, "grade", false));
        for bad in [
            "nli",
            "nli:triple:binary",
            "nli:pair:classes=1",
            "nli:pair:classes=x",
            "Nli:pair:binary",
            "sst:single:binary",
            "nli:pair:binary:col=x",
        ] {
            assert!(TaskDef::parse(bad).is_err(), "{bad}");
        }
    }
}
