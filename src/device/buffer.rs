//! A flat, growable allocation on a device. Arenas are buffers; tensors are ranges of them.

use super::Device;
use super::cuda::Cuda;
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};
use std::ops::Range;
use std::sync::Arc;

/// What a buffer may hold: the floats of either path and the integer inputs.
pub trait Element: Copy + Default + DeviceRepr + ValidAsZeroBits + Send + Sync + 'static {}
impl<T: Copy + Default + DeviceRepr + ValidAsZeroBits + Send + Sync + 'static> Element for T {}

pub enum Buffer<T> {
    Cpu(Vec<T>),
    Cuda(CudaBuffer<T>),
}

/// Device memory with room to grow: `len` elements in use out of the allocation's capacity.
pub struct CudaBuffer<T> {
    dev: Arc<Cuda>,
    data: Option<CudaSlice<T>>,
    len: usize,
}

impl<T> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Buffer::Cpu(v) => write!(f, "Buffer::Cpu({} elements)", v.len()),
            Buffer::Cuda(b) => write!(f, "Buffer::Cuda({} elements)", b.len),
        }
    }
}

fn cuda_err(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::Cuda(format!("{what}: {e}"))
}

impl<T: Element> Buffer<T> {
    pub fn new(device: &Device) -> Self {
        match device {
            Device::Cpu => Buffer::Cpu(Vec::new()),
            Device::Cuda(dev) => Buffer::Cuda(CudaBuffer { dev: dev.clone(), data: None, len: 0 }),
        }
    }

    /// `n` zeros on `device`.
    pub fn zeros(device: &Device, n: usize) -> Result<Self> {
        let mut b = Buffer::new(device);
        b.grow_to(n)?;
        b.fill_zero(0..n)?;
        Ok(b)
    }

    pub fn len(&self) -> usize {
        match self {
            Buffer::Cpu(v) => v.len(),
            Buffer::Cuda(b) => b.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the buffer at least `n` long, keeping its contents (freshly allocated elements are
    /// zero; reused capacity keeps whatever it held).
    /// Device memory grows by doubling, so a pass of many small allocations reallocates rarely.
    pub fn grow_to(&mut self, n: usize) -> Result<()> {
        match self {
            Buffer::Cpu(v) => {
                if v.len() < n {
                    v.resize(n, T::default());
                }
            }
            Buffer::Cuda(b) => {
                if n <= b.len {
                    return Ok(());
                }
                let cap = b.data.as_ref().map_or(0, |d| d.len());
                if n > cap {
                    let new_cap = n.max(cap * 2).max(1024);
                    let mut fresh =
                        b.dev.stream.alloc_zeros::<T>(new_cap).map_err(cuda_err("allocating device memory"))?;
                    if let Some(old) = &b.data
                        && b.len > 0
                    {
                        b.dev
                            .stream
                            .memcpy_dtod(&old.slice(0..b.len), &mut fresh.slice_mut(0..b.len))
                            .map_err(cuda_err("growing a device buffer"))?;
                    }
                    b.data = Some(fresh);
                }
                b.len = n;
            }
        }
        Ok(())
    }

    pub fn fill_zero(&mut self, range: Range<usize>) -> Result<()> {
        match self {
            // In parallel chunks: a pass's activation gradients are hundreds of megabytes.
            Buffer::Cpu(v) => {
                use rayon::prelude::*;
                v[range].par_chunks_mut(1 << 18).for_each(|c| c.fill(T::default()));
            }
            Buffer::Cuda(b) => {
                if let Some(d) = &mut b.data
                    && !range.is_empty()
                {
                    b.dev.stream.memset_zeros(&mut d.slice_mut(range)).map_err(cuda_err("zeroing device memory"))?;
                }
            }
        }
        Ok(())
    }

    /// Sets every element in `range` to `value` (tests poison outputs with NaN this way).
    pub fn fill(&mut self, range: Range<usize>, value: T) -> Result<()> {
        match self {
            Buffer::Cpu(v) => {
                v[range].fill(value);
                Ok(())
            }
            Buffer::Cuda(_) => {
                let n = range.len();
                self.write(range.start, &vec![value; n])
            }
        }
    }

    pub fn write(&mut self, offset: usize, data: &[T]) -> Result<()> {
        match self {
            Buffer::Cpu(v) => v[offset..offset + data.len()].copy_from_slice(data),
            Buffer::Cuda(b) => {
                if let Some(d) = &mut b.data
                    && !data.is_empty()
                {
                    b.dev
                        .stream
                        .memcpy_htod(data, &mut d.slice_mut(offset..offset + data.len()))
                        .map_err(cuda_err("copying to the device"))?;
                }
            }
        }
        Ok(())
    }

    pub fn read(&self, range: Range<usize>) -> Result<Vec<T>> {
        match self {
            Buffer::Cpu(v) => Ok(v[range].to_vec()),
            Buffer::Cuda(b) => match &b.data {
                Some(d) if !range.is_empty() => {
                    b.dev.stream.clone_dtoh(&d.slice(range)).map_err(cuda_err("copying from the device"))
                }
                _ => Ok(Vec::new()),
            },
        }
    }

    /// The host memory of a CPU buffer (None on a device that is not the CPU).
    pub fn cpu(&self) -> Option<&[T]> {
        match self {
            Buffer::Cpu(v) => Some(v),
            Buffer::Cuda(_) => None,
        }
    }

    pub fn cpu_mut(&mut self) -> Option<&mut [T]> {
        match self {
            Buffer::Cpu(v) => Some(v),
            Buffer::Cuda(_) => None,
        }
    }

    /// The device address of element 0 of a CUDA buffer (0 when nothing is allocated yet).
    pub fn device_ptr(&self) -> Option<u64> {
        match self {
            Buffer::Cpu(_) => None,
            Buffer::Cuda(b) => Some(b.data.as_ref().map_or(0, |d| {
                let (p, _guard) = d.device_ptr(&b.dev.stream);
                p
            })),
        }
    }
}
