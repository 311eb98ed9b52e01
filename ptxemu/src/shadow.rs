//! The shared-memory checker state of one block (compute-sanitizer's racecheck and initcheck for
//! shared memory, and a cp.async destination read before its wait): per byte, who last wrote it
//! and in which synchronisation epoch, who read it since, whether this launch wrote it at all,
//! whether an asynchronous copy to it is still pending.
//!
//! Happens-before: `barrier()` (bar.sync completed by the whole block) orders every access
//! before it with every access after it; `warp_sync(w)` (a warp collective of warp w completed)
//! orders the accesses of warp w's lanes among themselves. Two accesses to the same byte by
//! different threads, at least one a write, not so ordered, are a race.
//!
//! CONTRACT (helper "shadow" fills the bodies; the signatures are used by exec.rs):

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// `earlier` by `other_thread` (linear index in the block), then the current access `later`.
    Race { earlier: Access, later: Access, other_thread: u32 },
    /// A read of a byte that no thread of this block has written in this launch.
    Uninitialised,
    /// A read (or a plain write) of a cp.async destination before the copy's wait_group.
    AsyncPending { issuing_thread: u32 },
}

/// A finding at byte `offset` of the block's shared memory.
pub type Flagged = (u32, Finding);

pub struct SharedShadow {
    _private: (),
}

impl SharedShadow {
    /// The state of a block with `bytes` of shared memory (static + dynamic), nothing written.
    pub fn new(bytes: usize) -> SharedShadow {
        let _ = bytes;
        unimplemented!("shadow::new")
    }
    /// Makes the state that of a fresh block (reused between blocks to save allocations).
    pub fn reset(&mut self) {
        unimplemented!("shadow::reset")
    }
    /// Thread `thread` (linear index; its warp is thread / 32) reads [offset, offset + len).
    pub fn read(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        let _ = (thread, offset, len);
        unimplemented!("shadow::read")
    }
    pub fn write(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        let _ = (thread, offset, len);
        unimplemented!("shadow::write")
    }
    /// Every thread of the block completed a bar.sync.
    pub fn barrier(&mut self) {
        unimplemented!("shadow::barrier")
    }
    /// Every lane of warp `warp` completed a warp collective.
    pub fn warp_sync(&mut self, warp: u32) {
        let _ = warp;
        unimplemented!("shadow::warp_sync")
    }
    /// cp.async by `thread` to [offset, offset + len) issued: poisoned until `async_land`.
    /// (Checked as a write for races.)
    pub fn async_issue(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        let _ = (thread, offset, len);
        unimplemented!("shadow::async_issue")
    }
    /// That copy lands at its wait_group: the bytes count as written by `thread`, no longer poisoned.
    pub fn async_land(&mut self, thread: u32, offset: u32, len: u32) {
        let _ = (thread, offset, len);
        unimplemented!("shadow::async_land")
    }
}
