//! Where tensors live and ops run: the CPU (the reference path) or a CUDA GPU (real, or the PTX
//! emulator, which runs the same kernels on the CPU). Model code only sees
//! [`Tensor`](crate::tensor::Tensor) handles; each op dispatches on the device it finds.

mod buffer;
pub mod cuda;
mod emu;
pub mod kernels;
pub mod nvrtc;

pub use buffer::{Buffer, Element};
pub use cuda::Cuda;
pub use emu::EmuStats;

use crate::error::Result;
use std::sync::Arc;

#[derive(Clone)]
pub enum Device {
    /// The reference path: plain loops, GEMMs through the `gemm` crate on all cores.
    Cpu,
    /// A GPU, or the PTX emulator standing in for one.
    Cuda(Arc<Cuda>),
}

/// The arithmetic of matrix products (linear layers, attention scores and mixing): float32
/// operands, or operands rounded to bf16 (to nearest even) with float32 accumulation and output.
/// On a GPU bf16 runs on the tensor cores; the CPU rounds the operands the same way before its
/// float32 GEMM, as the reference. Every other op, the master weights, the optimizer's moments
/// and the reductions stay float32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

/// What the user asked for with `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// CUDA when a usable GPU is present, else the CPU (with a notice).
    Auto,
    Cpu,
    Cuda,
    /// The PTX emulator: the CUDA kernels run on the CPU (slow; for tests without a GPU).
    #[value(hide = true)]
    Emu,
}

impl Device {
    /// Resolves `--device`: `cuda` fails with the reason when no usable GPU is present;
    /// `auto` then falls back to the CPU and says why on stderr. With `ENGINE_EMULATE_GPU=1`
    /// both take the PTX emulator instead of a GPU.
    pub fn select(choice: DeviceChoice) -> Result<Device> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Emu => Ok(Device::Cuda(Cuda::emulated()?)),
            DeviceChoice::Cuda => Ok(Device::Cuda(Cuda::open_default()?)),
            DeviceChoice::Auto => match Cuda::open_default() {
                Ok(c) => Ok(Device::Cuda(c)),
                Err(e) => {
                    eprintln!("note: running on the CPU ({e})");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            Device::Cuda(c) => format!("{c:?}"),
        }
    }

    pub fn is_cuda(&self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            // Each emulated device has its own memory; GPUs are the same device by ordinal.
            (Device::Cuda(a), Device::Cuda(b)) if a.is_emulated() || b.is_emulated() => Arc::ptr_eq(a, b),
            (Device::Cuda(a), Device::Cuda(b)) => a.ordinal == b.ordinal,
            _ => false,
        }
    }
}
