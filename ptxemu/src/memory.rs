//! Global memory of the emulated device: allocations at fake device addresses (256-byte aligned,
//! with unmapped gaps between them so that an access past one end hits no allocation), and the
//! generic address space's windows for shared and local memory.
//!
//! CONTRACT (helper "core" fills the bodies and may add to the API; the engine uses these):

use crate::error::Result;

pub struct Memory {
    _private: (),
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl Memory {
    pub fn new() -> Memory {
        unimplemented!("memory::new")
    }
    /// `bytes` of zeroed device memory; its address (never 0, 256-byte aligned).
    pub fn alloc(&mut self, bytes: usize) -> Result<u64> {
        let _ = bytes;
        unimplemented!("memory::alloc")
    }
    /// Frees the allocation that starts at `addr` (an error names an address that starts none).
    pub fn free(&mut self, addr: u64) -> Result<()> {
        let _ = addr;
        unimplemented!("memory::free")
    }
    /// Copies `data` to [addr, addr + len): the range must lie in one live allocation.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        let _ = (addr, data);
        unimplemented!("memory::write")
    }
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        let _ = (addr, out);
        unimplemented!("memory::read")
    }
    pub fn fill(&mut self, addr: u64, len: usize, byte: u8) -> Result<()> {
        let _ = (addr, len, byte);
        unimplemented!("memory::fill")
    }
    /// Device-to-device copy (the ranges may lie in different allocations).
    pub fn copy(&mut self, dst: u64, src: u64, len: usize) -> Result<()> {
        let _ = (dst, src, len);
        unimplemented!("memory::copy")
    }
    /// Bytes in live allocations.
    pub fn in_use(&self) -> usize {
        unimplemented!("memory::in_use")
    }
}
