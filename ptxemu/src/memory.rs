//! Global memory of the emulated device: allocations at fake device addresses (256-byte aligned,
//! with unmapped gaps between them so that an access past one end hits no allocation), and the
//! generic address space's windows for shared and local memory.
//!
//! During a launch the allocation map is frozen into a `GlobalView` (sorted ranges with host
//! pointers) that the host threads running blocks share; they write through raw pointers, as the
//! blocks of a real grid write one memory without locks.

use crate::error::{EmuError, Result};

/// Generic addresses in [SHARED_WINDOW, SHARED_WINDOW + WINDOW_BYTES) are the block's shared
/// memory (cvta.shared adds the base); likewise for local memory. Far above any allocation.
pub const SHARED_WINDOW: u64 = 0x7000_0000_0000;
pub const LOCAL_WINDOW: u64 = 0x7100_0000_0000;
pub const WINDOW_BYTES: u64 = 1 << 32;
/// The first allocation's address; 0 and the low range stay unmapped so null pointers fault.
const GLOBAL_BASE: u64 = 0x1_0000_0000;
/// Unmapped bytes between allocations (an overrun by up to this much hits nothing).
const GUARD: u64 = 4096;

struct Alloc {
    base: u64,
    len: usize,
    /// u64 storage so that 8-byte host atomics on aligned device addresses are aligned too.
    data: Box<[u64]>,
}

pub struct Memory {
    /// Sorted by `base`.
    allocs: Vec<Alloc>,
    next: u64,
}

impl Default for Memory {
    fn default() -> Self {
        Memory::new()
    }
}

impl Memory {
    pub fn new() -> Memory {
        Memory { allocs: Vec::new(), next: GLOBAL_BASE }
    }
    /// `bytes` of zeroed device memory; its address (never 0, 256-byte aligned).
    pub fn alloc(&mut self, bytes: usize) -> Result<u64> {
        let base = self.next;
        let span = (bytes as u64).max(1).div_ceil(256) * 256;
        if base + span >= SHARED_WINDOW {
            return Err(EmuError::Api(format!("out of device address space allocating {bytes} bytes")));
        }
        self.next = base + span + GUARD;
        let data = vec![0u64; bytes.div_ceil(8)].into_boxed_slice();
        self.allocs.push(Alloc { base, len: bytes, data });
        Ok(base)
    }
    /// Frees the allocation that starts at `addr` (an error names an address that starts none).
    pub fn free(&mut self, addr: u64) -> Result<()> {
        match self.allocs.binary_search_by_key(&addr, |a| a.base) {
            Ok(k) => {
                self.allocs.remove(k);
                Ok(())
            }
            Err(_) => Err(EmuError::Api(format!("free of {addr:#x}, which starts no allocation"))),
        }
    }
    fn find(&self, addr: u64, len: usize) -> Result<(usize, usize)> {
        let k = self.allocs.partition_point(|a| a.base <= addr);
        if k > 0 {
            let a = &self.allocs[k - 1];
            let off = (addr - a.base) as usize;
            if off.checked_add(len).is_some_and(|e| e <= a.len) {
                return Ok((k - 1, off));
            }
        }
        Err(EmuError::Api(format!("range {addr:#x}+{len} is not inside one live allocation")))
    }
    fn bytes(&self, k: usize) -> &[u8] {
        let a = &self.allocs[k];
        // SAFETY: u64 storage viewed as its bytes (len ≤ 8 · data.len()).
        unsafe { std::slice::from_raw_parts(a.data.as_ptr() as *const u8, a.len) }
    }
    fn bytes_mut(&mut self, k: usize) -> &mut [u8] {
        let a = &mut self.allocs[k];
        // SAFETY: as in `bytes`, exclusively borrowed.
        unsafe { std::slice::from_raw_parts_mut(a.data.as_mut_ptr() as *mut u8, a.len) }
    }
    /// Copies `data` to [addr, addr + len): the range must lie in one live allocation.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<()> {
        let (k, off) = self.find(addr, data.len())?;
        self.bytes_mut(k)[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<()> {
        let (k, off) = self.find(addr, out.len())?;
        out.copy_from_slice(&self.bytes(k)[off..off + out.len()]);
        Ok(())
    }
    pub fn fill(&mut self, addr: u64, len: usize, byte: u8) -> Result<()> {
        let (k, off) = self.find(addr, len)?;
        self.bytes_mut(k)[off..off + len].fill(byte);
        Ok(())
    }
    /// Device-to-device copy (the ranges may lie in different allocations).
    pub fn copy(&mut self, dst: u64, src: u64, len: usize) -> Result<()> {
        let (ks, os) = self.find(src, len)?;
        let (kd, od) = self.find(dst, len)?;
        if ks == kd {
            self.bytes_mut(kd).copy_within(os..os + len, od);
        } else {
            let tmp = self.bytes(ks)[os..os + len].to_vec();
            self.bytes_mut(kd)[od..od + len].copy_from_slice(&tmp);
        }
        Ok(())
    }
    /// Bytes in live allocations.
    pub fn in_use(&self) -> usize {
        self.allocs.iter().map(|a| a.len).sum()
    }
    /// The frozen map for a launch (borrows `self` mutably: nothing else touches memory meanwhile).
    pub fn view(&mut self) -> GlobalView<'_> {
        let ranges = self
            .allocs
            .iter_mut()
            .map(|a| Range { base: a.base, end: a.base + a.len as u64, ptr: a.data.as_mut_ptr() as *mut u8 })
            .collect();
        GlobalView { ranges, _mem: std::marker::PhantomData }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Range {
    pub base: u64,
    pub end: u64,
    pub ptr: *mut u8,
}

/// The allocation map of one launch, shared by the host threads running its blocks.
pub struct GlobalView<'m> {
    ranges: Vec<Range>,
    _mem: std::marker::PhantomData<&'m mut Memory>,
}

// SAFETY: the view holds the memory's exclusive borrow for the launch; concurrent accesses through
// it are the emulated kernel's own (blocks writing disjoint data, atomics through host atomics).
unsafe impl Send for GlobalView<'_> {}
unsafe impl Sync for GlobalView<'_> {}

impl GlobalView<'_> {
    /// The host pointer of [addr, addr + len) if it lies in one allocation; `hint` is the caller's
    /// last hit (an index into the ranges), checked first and updated.
    #[inline]
    pub fn lookup(&self, addr: u64, len: u64, hint: &mut usize) -> Option<*mut u8> {
        if let Some(r) = self.ranges.get(*hint)
            && addr >= r.base
            && addr.wrapping_add(len) <= r.end
            && addr.wrapping_add(len) >= addr
        {
            // SAFETY: in bounds of the allocation.
            return Some(unsafe { r.ptr.add((addr - r.base) as usize) });
        }
        let k = self.ranges.partition_point(|r| r.base <= addr);
        if k == 0 {
            return None;
        }
        let r = &self.ranges[k - 1];
        let end = addr.checked_add(len)?;
        if end <= r.end {
            *hint = k - 1;
            // SAFETY: in bounds of the allocation.
            Some(unsafe { r.ptr.add((addr - r.base) as usize) })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_read_write_guard() {
        let mut m = Memory::new();
        let a = m.alloc(100).unwrap();
        let b = m.alloc(8).unwrap();
        assert_eq!(a % 256, 0);
        assert!(b >= a + 100 + GUARD);
        m.write(a + 96, &[1, 2, 3, 4]).unwrap();
        let mut out = [0u8; 4];
        m.read(a + 96, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
        assert!(m.read(a + 98, &mut out).is_err());
        m.copy(b, a + 96, 4).unwrap();
        m.read(b, &mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(m.in_use(), 108);
        let v = m.view();
        let mut hint = 0;
        assert!(v.lookup(a + 100, 1, &mut hint).is_none());
        assert!(v.lookup(b + 4, 4, &mut hint).is_some());
        drop(v);
        m.free(a).unwrap();
        assert!(m.free(a).is_err());
    }
}
