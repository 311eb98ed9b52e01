//! A flat, growable allocation on a device. Arenas are buffers; tensors are ranges of them.

use super::Device;

#[derive(Debug)]
pub enum Buffer<T> {
    Cpu(Vec<T>),
}

impl<T: Copy + Default> Buffer<T> {
    pub fn new(device: &Device) -> Self {
        match device {
            Device::Cpu => Buffer::Cpu(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Buffer::Cpu(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the buffer at least `n` long, keeping its contents (new elements are zero).
    pub fn grow_to(&mut self, n: usize) {
        match self {
            Buffer::Cpu(v) => {
                if v.len() < n {
                    v.resize(n, T::default());
                }
            }
        }
    }

    pub fn fill_zero(&mut self, range: std::ops::Range<usize>) {
        match self {
            Buffer::Cpu(v) => v[range].fill(T::default()),
        }
    }

    pub fn write(&mut self, offset: usize, data: &[T]) {
        match self {
            Buffer::Cpu(v) => v[offset..offset + data.len()].copy_from_slice(data),
        }
    }

    pub fn read(&self, range: std::ops::Range<usize>) -> Vec<T> {
        match self {
            Buffer::Cpu(v) => v[range].to_vec(),
        }
    }

    /// The host memory of a CPU buffer (None on a device that is not the CPU).
    pub fn cpu(&self) -> Option<&[T]> {
        match self {
            Buffer::Cpu(v) => Some(v),
        }
    }

    pub fn cpu_mut(&mut self) -> Option<&mut [T]> {
        match self {
            Buffer::Cpu(v) => Some(v),
        }
    }
}
