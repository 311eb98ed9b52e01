//! A flat, growable allocation on a device. Arenas are buffers; tensors are ranges of them.

use super::Device;
use super::cuda::{Backend, Cuda};
use super::emu::Emu;
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, DevicePtr, DeviceRepr, ValidAsZeroBits};
use std::ops::Range;
use std::sync::Arc;

/// What a buffer may hold: the floats of either path and the integer inputs. `Pod` gives the
/// byte views the emulator's memory copies take.
pub trait Element: Copy + Default + DeviceRepr + ValidAsZeroBits + bytemuck::Pod + Send + Sync + 'static {}
impl<T: Copy + Default + DeviceRepr + ValidAsZeroBits + bytemuck::Pod + Send + Sync + 'static> Element for T {}

pub enum Buffer<T> {
    Cpu(Vec<T>),
    Cuda(CudaBuffer<T>),
}

/// Device memory with room to grow: `len` elements in use out of the allocation's capacity.
pub struct CudaBuffer<T> {
    dev: Arc<Cuda>,
    data: Data<T>,
    len: usize,
}

/// The allocation behind a `CudaBuffer`.
enum Data<T> {
    None,
    Gpu(CudaSlice<T>),
    /// An allocation in the emulator's memory: address and capacity in elements (freed on drop).
    Emu {
        addr: u64,
        cap: usize,
    },
}

impl<T> Drop for CudaBuffer<T> {
    fn drop(&mut self) {
        if let (Data::Emu { addr, .. }, Backend::Emu(emu)) = (&self.data, self.dev.backend()) {
            // A failed free can only mean a bad address, which we never hand out; nothing to do.
            let _ = emu.memory().free(*addr);
        }
    }
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

fn emu_err(what: &'static str) -> impl Fn(ptxemu::EmuError) -> Error {
    move |e| Error::Cuda(format!("{what} (emulator): {e}"))
}

impl<T: Element> CudaBuffer<T> {
    /// The emulator's memory of this buffer's device, or an error when a GPU buffer meets an
    /// emulated device (which cannot happen: both come from the device).
    fn emu(&self) -> Result<&Emu> {
        match self.dev.backend() {
            Backend::Emu(e) => Ok(e),
            Backend::Gpu(_) => Err(Error::Cuda("an emulator allocation on a real GPU".into())),
        }
    }

    /// The emulator address of element `i`.
    fn emu_addr(addr: u64, i: usize) -> u64 {
        addr + (i * size_of::<T>()) as u64
    }
}

impl<T: Element> Buffer<T> {
    pub fn new(device: &Device) -> Self {
        match device {
            Device::Cpu => Buffer::Cpu(Vec::new()),
            Device::Cuda(dev) => Buffer::Cuda(CudaBuffer { dev: dev.clone(), data: Data::None, len: 0 }),
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
                    let extra = n - v.len();
                    check_host(extra, size_of::<T>(), "host memory")?;
                    // Amortised growth, or exactly what is asked when doubling does not fit.
                    if v.try_reserve(extra).is_err() {
                        v.try_reserve_exact(extra).map_err(|e| out_of_memory(n, size_of::<T>(), "host memory", e))?;
                    }
                    v.resize(n, T::default());
                }
            }
            Buffer::Cuda(b) => {
                if n <= b.len {
                    return Ok(());
                }
                // Refused before cudarc's and the emulator's size arithmetic could overflow.
                n.checked_mul(size_of::<T>()).filter(|&b| b <= isize::MAX as usize).ok_or_else(|| {
                    Error::Cuda(format!(
                        "allocating {n} elements of {} bytes: more than any device holds",
                        size_of::<T>()
                    ))
                })?;
                let cap = match &b.data {
                    Data::None => 0,
                    Data::Gpu(d) => d.len(),
                    Data::Emu { cap, .. } => *cap,
                };
                if n > cap {
                    // Doubling, unless twice the capacity would overflow the byte count.
                    let doubled = cap.saturating_mul(2).min(isize::MAX as usize / size_of::<T>());
                    let new_cap = n.max(doubled).max(1024);
                    match b.dev.backend() {
                        Backend::Gpu(g) => {
                            let mut fresh =
                                g.stream.alloc_zeros::<T>(new_cap).map_err(cuda_err("allocating device memory"))?;
                            if let Data::Gpu(old) = &b.data
                                && b.len > 0
                            {
                                g.stream
                                    .memcpy_dtod(&old.slice(0..b.len), &mut fresh.slice_mut(0..b.len))
                                    .map_err(cuda_err("growing a device buffer"))?;
                            }
                            b.data = Data::Gpu(fresh);
                        }
                        Backend::Emu(e) => {
                            // The emulator's memory is host memory, allocated infallibly by it:
                            // a size the host cannot give is refused here instead.
                            let new_cap = if check_host(new_cap, size_of::<T>(), "").is_ok() { new_cap } else { n };
                            check_host(new_cap, size_of::<T>(), "host memory for the emulator")?;
                            let mut mem = e.memory();
                            let bytes = new_cap * size_of::<T>();
                            let fresh = mem.alloc(bytes).map_err(emu_err("allocating device memory"))?;
                            if let Data::Emu { addr, .. } = b.data {
                                // The old allocation is freed here, so `Drop` must not see it.
                                b.data = Data::None;
                                let kept =
                                    if b.len > 0 { mem.copy(fresh, addr, b.len * size_of::<T>()) } else { Ok(()) };
                                if let Err(err) = kept.and(mem.free(addr)) {
                                    let _ = mem.free(fresh);
                                    b.len = 0;
                                    return Err(emu_err("growing a device buffer")(err));
                                }
                            }
                            b.data = Data::Emu { addr: fresh, cap: new_cap };
                        }
                    }
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
            Buffer::Cuda(_) if range.is_empty() => {}
            Buffer::Cuda(b) => match &mut b.data {
                Data::None => {}
                Data::Gpu(d) => {
                    b.dev
                        .gpu()?
                        .stream
                        .memset_zeros(&mut d.slice_mut(range))
                        .map_err(cuda_err("zeroing device memory"))?;
                }
                Data::Emu { addr, .. } => {
                    let at = CudaBuffer::<T>::emu_addr(*addr, range.start);
                    b.emu()?
                        .memory()
                        .fill(at, range.len() * size_of::<T>(), 0)
                        .map_err(emu_err("zeroing device memory"))?;
                }
            },
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
            Buffer::Cuda(_) if data.is_empty() => {}
            Buffer::Cuda(b) => match &mut b.data {
                Data::None => {}
                Data::Gpu(d) => b
                    .dev
                    .gpu()?
                    .stream
                    .memcpy_htod(data, &mut d.slice_mut(offset..offset + data.len()))
                    .map_err(cuda_err("copying to the device"))?,
                Data::Emu { addr, cap } => {
                    check_range(offset..offset + data.len(), *cap)?;
                    let at = CudaBuffer::<T>::emu_addr(*addr, offset);
                    b.emu()?
                        .memory()
                        .write(at, bytemuck::cast_slice(data))
                        .map_err(emu_err("copying to the device"))?;
                }
            },
        }
        Ok(())
    }

    pub fn read(&self, range: Range<usize>) -> Result<Vec<T>> {
        match self {
            Buffer::Cpu(v) => Ok(v[range].to_vec()),
            Buffer::Cuda(_) if range.is_empty() => Ok(Vec::new()),
            Buffer::Cuda(b) => match &b.data {
                Data::None => Ok(Vec::new()),
                Data::Gpu(d) => {
                    b.dev.gpu()?.stream.clone_dtoh(&d.slice(range)).map_err(cuda_err("copying from the device"))
                }
                Data::Emu { addr, cap } => {
                    check_range(range.clone(), *cap)?;
                    let mut out = vec![T::zeroed(); range.len()];
                    let at = CudaBuffer::<T>::emu_addr(*addr, range.start);
                    b.emu()?
                        .memory()
                        .read(at, bytemuck::cast_slice_mut(&mut out))
                        .map_err(emu_err("copying from the device"))?;
                    Ok(out)
                }
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
            Buffer::Cuda(b) => Some(match (&b.data, b.dev.backend()) {
                (Data::Gpu(d), Backend::Gpu(g)) => {
                    let (p, _guard) = d.device_ptr(&g.stream);
                    p
                }
                (Data::Emu { addr, .. }, _) => *addr,
                _ => 0,
            }),
        }
    }
}

/// Growth above this many bytes is first compared with the host memory available (reading
/// /proc costs a few microseconds; small growth is left to the allocator, which reports failure).
const CHECKED_GROWTH: usize = 1 << 30;

/// Refuses growth by `n` elements of `size` bytes when it exceeds the host memory this process
/// may still allocate (where overcommitting kernels would accept it and kill the process later).
fn check_host(n: usize, size: usize, what: &str) -> Result<()> {
    let bytes = n.saturating_mul(size);
    if bytes < CHECKED_GROWTH {
        return Ok(());
    }
    match crate::train::memory::host_available() {
        Some(avail) if bytes as f64 > avail => Err(Error::Config(format!(
            "out of memory: {} more of {what} asked, {} available",
            crate::train::memory::human(bytes as f64),
            crate::train::memory::human(avail)
        ))),
        _ => Ok(()),
    }
}

fn out_of_memory(n: usize, size: usize, what: &str, e: std::collections::TryReserveError) -> Error {
    let bytes = n as f64 * size as f64;
    Error::Config(format!("out of memory: {n} elements ({}) of {what}: {e}", crate::train::memory::human(bytes)))
}

/// An element range must lie in the allocation (the emulator would refuse the bytes anyway; this
/// names the elements).
fn check_range(range: Range<usize>, cap: usize) -> Result<()> {
    if range.start > range.end || range.end > cap {
        return Err(Error::Cuda(format!("device buffer range {range:?} out of bounds of {cap} elements")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The emulator's buffers: growing keeps the contents, ranges read back what was written,
    /// and dropping frees the allocation.
    #[test]
    fn emulated_buffer_round_trip() {
        let dev = Cuda::emulated().unwrap();
        let device = Device::Cuda(dev.clone());
        let base = dev.memory_in_use().unwrap();
        {
            let mut b: Buffer<f32> = Buffer::zeros(&device, 3).unwrap();
            b.write(0, &[1.0, 2.0, 3.0]).unwrap();
            b.grow_to(5000).unwrap(); // past the first capacity: a new allocation
            assert_eq!(b.read(0..4).unwrap(), [1.0, 2.0, 3.0, 0.0]);
            b.fill(1..3, -1.5).unwrap();
            b.fill_zero(0..1).unwrap();
            assert_eq!(b.read(0..4).unwrap(), [0.0, -1.5, -1.5, 0.0]);
            assert!(b.read(0..5001).is_err(), "a range past the capacity is refused");
            assert!(dev.memory_in_use().unwrap() >= base + 5000 * 4);
            let mut ints: Buffer<u16> = Buffer::new(&device);
            ints.grow_to(3).unwrap();
            ints.write(1, &[7, 9]).unwrap();
            assert_eq!(ints.read(0..3).unwrap(), [0, 7, 9]);
        }
        assert_eq!(dev.memory_in_use().unwrap(), base, "dropped buffers are freed");
    }
}
