//! Multi-task fine-tuning: options, the plan of steps, the model with its heads, the loop,
//! evaluation, checkpoints and reports.

pub mod analysis;
pub mod checkpoint;
pub mod evaluate;
pub mod export;
pub mod heads;
pub mod loss_meter;
pub mod memory;
pub mod merge;
pub mod methods;
pub mod metrics;
pub mod model;
pub mod options;
pub mod param_groups;
pub mod pretrain;
pub mod records;
pub mod report;
pub mod run_dir;
pub mod schedule;
pub mod smart;
pub mod swap;
pub mod task_grads;
pub mod task_head;
pub mod trainer;

/// PCGrad's path before the methods had their own module.
pub use methods::pcgrad;

pub use crate::data::cs224n::DataFile;
pub use options::TrainOptions;
pub use trainer::{FinetuneArgs, Summary, finetune};
