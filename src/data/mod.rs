//! Inputs: tokenization into padded id batches (and, with fine-tuning, the CS224N readers).

pub mod tokenizer;

pub use tokenizer::{Encoded, Input, Tokenizer};
