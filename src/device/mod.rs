//! Where tensors live and ops run. Only the CPU exists so far; the CUDA variant slots in beside it
//! (a `Cuda` arm in [`Device`] and [`Buffer`], and a launcher arm in each op's dispatch) without
//! touching model code, which only ever sees [`Tensor`](crate::tensor::Tensor) handles.

mod buffer;
pub mod kernels;

pub use buffer::Buffer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// The reference path: plain loops, GEMMs through the `gemm` crate on `threads` threads.
    Cpu,
}

impl Device {
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
        }
    }
}
