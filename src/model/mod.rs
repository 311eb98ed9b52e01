//! The BERT encoder and the task heads, built from the tape's ops.

pub mod bert;
pub mod config;
pub mod heads;

pub use bert::{Bert, linear};
pub use config::BertConfig;
