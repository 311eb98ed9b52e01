//! Multi-task fine-tuning: options, the plan of steps, the model with its heads, the loop,
//! evaluation, checkpoints and reports.

pub mod checkpoint;
pub mod evaluate;
pub mod loss_meter;
pub mod memory;
pub mod model;
pub mod options;
pub mod pcgrad;
pub mod report;
pub mod run_dir;
pub mod schedule;
pub mod swap;
pub mod trainer;

pub use options::TrainOptions;
pub use trainer::{DataFile, FinetuneArgs, Summary, finetune};
