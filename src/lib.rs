//! A BERT fine-tuning engine: tensors in flat arenas, a tape of ops with hand-written backward
//! passes, a CPU reference path (float32 for training, float64 for gradient checks).
//! See DESIGN.md in the shared folder for the picture.

// The CPU references mirror their kernels' index arithmetic and argument lists on purpose.
#![allow(clippy::needless_range_loop, clippy::too_many_arguments)]

pub mod cpu_gemm;
pub mod cpu_pool;
pub mod data;
pub mod device;
pub mod embed;
pub mod error;
pub mod failpoint;
pub mod float;
pub mod model;
pub mod ops;
pub mod optim;
pub mod profile;
pub mod rng;
pub mod store;
pub mod tape;
pub mod tensor;
pub mod train;
pub mod util;

pub use device::Device;
pub use error::{Error, Result};
pub use float::Float;
pub use tape::Tape;
pub use tensor::{Arena, Shape, Tensor};
