//! The BERT encoder and the task heads, built from the tape's ops.

pub mod bert;
pub mod checkpoint;
pub mod config;
pub mod heads;
pub mod input;
pub mod lora;
pub mod mlm;
pub mod pals;
pub mod peft;
pub mod safetensors;

pub use bert::{Bert, linear};
pub use checkpoint::Checkpoint;
pub use config::BertConfig;
pub use input::{EncoderInput, Layout, Packing};
