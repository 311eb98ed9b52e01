//! The library's error type: every failure names what it concerns (op and shapes, file and line,
//! tensor name), so that the CLI can print one clear line.

use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Operands of an op that do not fit together; `detail` names both shapes.
    #[error("{op}: {detail}")]
    Shape { op: &'static str, detail: String },
    /// A value out of its allowed range (a token id past the vocabulary, a class label past K).
    #[error("{op}: {detail}")]
    Value { op: &'static str, detail: String },
    /// Misuse of the tape: backward on a non-scalar, a gradient asked of a frozen tensor.
    #[error("tape: {0}")]
    Tape(String),
    #[error("{0}")]
    Config(String),
    /// Bad input data: a missing or empty file, a wrong header, a malformed record. `at` says where:
    /// the file with the CLI flag that named it (`--sst-train data/ids-sst-train.csv`), or
    /// `file:line` for a record.
    #[error("{at}: {detail}")]
    Data { at: String, detail: String },
    /// No usable GPU, driver or libnvrtc; a failed launch or copy.
    #[error("cuda: {0}")]
    Cuda(String),
    /// A kernel that does not compile: the NVRTC log names file and line.
    #[error("kernel {file} does not compile for {arch}:\n{log}")]
    Kernel { file: String, arch: String, log: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn shape(op: &'static str, detail: impl fmt::Display) -> Self {
        Error::Shape { op, detail: detail.to_string() }
    }
    pub fn value(op: &'static str, detail: impl fmt::Display) -> Self {
        Error::Value { op, detail: detail.to_string() }
    }
}
