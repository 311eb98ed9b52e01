//! Inputs: the CS224N task files and prediction files, and tokenization into padded id batches.

pub mod cs224n;
pub mod drop_longest;
pub mod eda;
pub mod masking;
pub mod tokenizer;
pub mod user_task;

pub use cs224n::{
    Dataset, Example, Kind, Label, Prediction, Skipped, Split, Task, format_predictions, read, read_predictions,
    write_predictions,
};
pub use tokenizer::{Encoded, Input, Tokenizer};
