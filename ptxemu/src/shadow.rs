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

/// No second reader recorded (`Cell::r2_thread`).
const NO_THREAD: u16 = u16::MAX;
/// `Cell::w_thread`'s flag: a cp.async by that thread to this byte has not landed yet.
const PENDING: u16 = 0x8000;
const THREAD_BITS: u16 = 0x7fff;
/// Thread ids must stay below this (they are stored in 15 bits; a block has at most 1024).
const MAX_THREAD: u32 = 0x7fff;
/// Epochs run up to here, then the state is rebased (see `SharedShadow::rebase`).
const LAST_EPOCH: u32 = u32::MAX - 2;

/// The state of one byte (28 bytes). An epoch 0 is never current: a zeroed cell is a byte that
/// was never written and never read.
///
/// - `w_*`: the last write (or cp.async issue, or landing): its epoch, the sync count of the
///   writer's warp at the time, the writer (bit 15: the cp.async is pending).
///   The byte was written in this block iff `w_epoch >= SharedShadow::base`.
/// - `r1_*`: the latest read since that write, in epoch `r1_epoch` (stale when not the current
///   epoch: then there are no readers). `r2_*`: a second reader of the same epoch, or none. Which
///   second reader is kept: when the readers span two warps or more, r1 and r2 are of different
///   warps (any writer then conflicts with one of them, whatever its warp); when all readers are
///   of one warp, r2 is the latest reader other than r1's thread (a writer of that warp conflicts
///   with one of them exactly when some reader other than itself has not been warp-synced since).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cell {
    w_epoch: u32,
    w_sync: u32,
    r1_epoch: u32,
    r1_sync: u32,
    r2_sync: u32,
    w_thread: u16,
    r1_thread: u16,
    r2_thread: u16,
}

/// The shared-memory shadow of a block: one `Cell` per byte, the current epoch, and each warp's
/// count of completed warp collectives.
///
/// Design:
/// - Epochs are never reset: `barrier()` and `reset()` both advance the current epoch, and
///   `reset()` also moves `base` (the first epoch of the current block) there, so that every
///   cell stamped before is "never written, never read" without touching it: `reset()` is O(1)
///   (plus the warps' counters). When the epoch counter nears `u32::MAX` all cells are rebased
///   once (O(bytes), every four billion barriers).
/// - Ordering: an earlier access by thread `u` (epoch `e`, `u`'s warp's sync count `s` at the
///   time) and the current one by thread `t` of warp `w` are unordered iff `e` is the current
///   epoch, `u != t`, and `u` is in another warp or warp `w` has completed no collective since
///   (`s == sync[w]`; the counters only grow, so equality means "none since").
/// - A write that is not a race is ordered after every access it displaces (the last write, the
///   readers), so the readers are dropped at a write and only the last write is kept: an access
///   unordered with a displaced one is unordered with the write that displaced it too. A
///   finding is reported at the first conflicting byte of an access and the executor stops;
///   the state after a finding is not meaningful.
/// - cp.async: `async_issue` is checked like a write (races with other threads' accesses of the
///   epoch; a byte still pending from an earlier issue is `AsyncPending`) and leaves the byte
///   written-but-pending by that thread. Any read of a pending byte, a plain write to it, or a
///   second issue to it is `AsyncPending`. `async_land` (called at the issuing thread's
///   wait_group) records the byte as written by the issuing thread *at the landing*: in the
///   current epoch with its warp's current sync count. So other threads' reads after a bar.sync
///   that follows the wait are ordered (the barrier starts a later epoch), whereas other threads
///   reading it in the same epoch without a barrier (or, same warp, without a warp sync) race
///   with the landing, as they do on a GPU (wait_group only waits for the thread's own copies).
///   The landing itself is not checked (the bytes were pending until then, so every access by
///   another thread in between was already reported).
#[derive(Clone)]
pub struct SharedShadow {
    cells: Vec<Cell>,
    /// The current epoch (>= 1).
    epoch: u32,
    /// The first epoch of the current block: cells written before it count as never written.
    base: u32,
    /// Per warp: warp collectives completed in this block.
    warp_syncs: Vec<u32>,
}

impl SharedShadow {
    /// The state of a block with `bytes` of shared memory (static + dynamic), nothing written.
    pub fn new(bytes: usize) -> SharedShadow {
        SharedShadow { cells: vec![Cell::default(); bytes], epoch: 1, base: 1, warp_syncs: vec![0; 32] }
    }
    /// Makes the state that of a fresh block (reused between blocks to save allocations).
    pub fn reset(&mut self) {
        self.next_epoch();
        self.base = self.epoch;
        self.warp_syncs.iter_mut().for_each(|s| *s = 0);
    }
    /// Thread `thread` (linear index; its warp is thread / 32) reads [offset, offset + len).
    pub fn read(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        debug_assert!(thread < MAX_THREAD, "thread id {thread} too large for the shared-memory shadow");
        let (cur, base) = (self.epoch, self.base);
        let warp = thread >> 5;
        let sync = self.sync_of(warp);
        let me = thread as u16;
        let range = self.range(offset, len);
        let start = range.start;
        let cells = &mut self.cells[range];
        // Fast path: the bytes were written in an earlier epoch of this block (or by this thread)
        // and this thread already read them with its warp at the same sync count: nothing to check
        // and nothing to record.
        for (i, c) in cells.iter_mut().enumerate() {
            if c.r1_epoch == cur && c.r1_thread == me && c.r1_sync == sync {
                // Recorded as the latest reader already; the write was checked then and was not
                // changed since (a write drops the readers).
                continue;
            }
            let at = (start + i) as u32;
            if c.w_epoch < base {
                return Err((at, Finding::Uninitialised));
            }
            if c.w_thread & PENDING != 0 {
                return Err((at, Finding::AsyncPending { issuing_thread: (c.w_thread & THREAD_BITS) as u32 }));
            }
            if c.w_epoch == cur && unordered(c.w_thread, c.w_sync, me, warp, sync) {
                return Err((at, race(Access::Write, Access::Read, c.w_thread)));
            }
            if c.r1_epoch != cur {
                c.r1_epoch = cur;
                c.r2_thread = NO_THREAD;
            } else if c.r1_thread != me {
                let r1_warp = (c.r1_thread >> 5) as u32;
                let keep_r2 = r1_warp == warp && c.r2_thread != NO_THREAD && (c.r2_thread >> 5) as u32 != r1_warp;
                if !keep_r2 {
                    c.r2_thread = c.r1_thread;
                    c.r2_sync = c.r1_sync;
                }
            }
            c.r1_thread = me;
            c.r1_sync = sync;
        }
        Ok(())
    }
    pub fn write(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        self.store(thread, offset, len, false)
    }
    /// Every thread of the block completed a bar.sync.
    pub fn barrier(&mut self) {
        self.next_epoch();
    }
    /// Every lane of warp `warp` completed a warp collective.
    pub fn warp_sync(&mut self, warp: u32) {
        let w = warp as usize;
        if w >= self.warp_syncs.len() {
            self.warp_syncs.resize(w + 1, 0);
        }
        self.warp_syncs[w] = self.warp_syncs[w].wrapping_add(1);
    }
    /// cp.async by `thread` to [offset, offset + len) issued: poisoned until `async_land`.
    /// (Checked as a write for races.)
    pub fn async_issue(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        self.store(thread, offset, len, true)
    }
    /// That copy lands at its wait_group: the bytes count as written by `thread`, no longer poisoned.
    pub fn async_land(&mut self, thread: u32, offset: u32, len: u32) {
        debug_assert!(thread < MAX_THREAD, "thread id {thread} too large for the shared-memory shadow");
        let cur = self.epoch;
        let sync = self.sync_of(thread >> 5);
        let range = self.range(offset, len);
        for c in &mut self.cells[range] {
            c.w_epoch = cur;
            c.w_sync = sync;
            c.w_thread = thread as u16;
            c.r1_epoch = 0;
        }
    }

    /// A write (`issue`: a cp.async issue, which leaves the bytes pending).
    fn store(&mut self, thread: u32, offset: u32, len: u32, issue: bool) -> std::result::Result<(), Flagged> {
        debug_assert!(thread < MAX_THREAD, "thread id {thread} too large for the shared-memory shadow");
        let (cur, base) = (self.epoch, self.base);
        let warp = thread >> 5;
        let sync = self.sync_of(warp);
        let me = thread as u16;
        let stamp = if issue { me | PENDING } else { me };
        let range = self.range(offset, len);
        let start = range.start;
        for (i, c) in self.cells[range].iter_mut().enumerate() {
            // Fast path: written last by this thread, no readers since, not pending.
            if c.w_thread == me && c.r1_epoch != cur && c.w_epoch >= base && !issue {
                c.w_epoch = cur;
                c.w_sync = sync;
                continue;
            }
            let at = (start + i) as u32;
            if c.w_epoch >= base {
                if c.w_thread & PENDING != 0 {
                    return Err((at, Finding::AsyncPending { issuing_thread: (c.w_thread & THREAD_BITS) as u32 }));
                }
                if c.w_epoch == cur && unordered(c.w_thread, c.w_sync, me, warp, sync) {
                    return Err((at, race(Access::Write, Access::Write, c.w_thread)));
                }
            }
            if c.r1_epoch == cur {
                if unordered(c.r1_thread, c.r1_sync, me, warp, sync) {
                    return Err((at, race(Access::Read, Access::Write, c.r1_thread)));
                }
                if c.r2_thread != NO_THREAD && unordered(c.r2_thread, c.r2_sync, me, warp, sync) {
                    return Err((at, race(Access::Read, Access::Write, c.r2_thread)));
                }
            }
            c.w_epoch = cur;
            c.w_sync = sync;
            c.w_thread = stamp;
            c.r1_epoch = 0;
        }
        Ok(())
    }

    fn sync_of(&self, warp: u32) -> u32 {
        self.warp_syncs.get(warp as usize).copied().unwrap_or(0)
    }

    /// The cells of [offset, offset + len), clipped to the shared memory (the executor checks the
    /// bounds before calling; a range past them is ignored rather than a panic).
    fn range(&self, offset: u32, len: u32) -> std::ops::Range<usize> {
        let n = self.cells.len();
        let start = (offset as usize).min(n);
        let end = (offset as usize).saturating_add(len as usize).min(n);
        start..end
    }

    fn next_epoch(&mut self) {
        if self.epoch >= LAST_EPOCH {
            self.rebase();
        }
        self.epoch += 1;
    }

    /// Renumbers the epochs from 1 before the counter overflows: the current block's written
    /// bytes keep "written before now" (epoch 1 with base 1, current epoch 2 after the caller's
    /// increment); readers and bytes of earlier blocks are dropped.
    fn rebase(&mut self) {
        let base = self.base;
        for c in &mut self.cells {
            let written = c.w_epoch >= base;
            *c = Cell { w_epoch: written as u32, w_thread: if written { c.w_thread } else { 0 }, ..Cell::default() };
        }
        self.base = 1;
        self.epoch = 1;
    }
}

/// Whether an earlier access by `other` (its warp's sync count then: `other_sync`) in the current
/// epoch is unordered with the current access by `me` of warp `warp` (sync count now: `sync`).
#[inline(always)]
fn unordered(other: u16, other_sync: u32, me: u16, warp: u32, sync: u32) -> bool {
    let other = other & THREAD_BITS;
    other != me && ((other >> 5) as u32 != warp || other_sync == sync)
}

fn race(earlier: Access, later: Access, other: u16) -> Finding {
    Finding::Race { earlier, later, other_thread: (other & THREAD_BITS) as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn race(earlier: Access, later: Access, other_thread: u32) -> Finding {
        Finding::Race { earlier, later, other_thread }
    }
    use Access::{Read as R, Write as W};

    /// A shadow of `bytes` bytes, all written by thread 0 before a barrier.
    fn initialised(bytes: u32) -> SharedShadow {
        let mut s = SharedShadow::new(bytes as usize);
        s.write(0, 0, bytes).unwrap();
        s.barrier();
        s
    }

    #[test]
    fn barrier_orders_write_then_read_by_another_thread() {
        let mut s = SharedShadow::new(64);
        s.write(3, 0, 16).unwrap();
        s.barrier();
        s.read(200, 0, 16).unwrap();
        s.read(40, 4, 4).unwrap();
    }

    #[test]
    fn same_thread_write_read_write_is_not_a_race() {
        let mut s = SharedShadow::new(64);
        s.write(5, 8, 8).unwrap();
        s.read(5, 8, 8).unwrap();
        s.write(5, 8, 8).unwrap();
        s.read(5, 10, 2).unwrap();
        s.write(5, 0, 16).unwrap();
        s.read(5, 0, 16).unwrap();
    }

    #[test]
    fn write_then_read_by_another_thread_without_barrier_races() {
        let mut s = SharedShadow::new(64);
        s.write(1, 0, 4).unwrap();
        assert_eq!(s.read(70, 2, 4), Err((2, race(W, R, 1))));
    }

    #[test]
    fn warp_sync_orders_lanes_of_that_warp() {
        let mut s = SharedShadow::new(64);
        s.write(33, 0, 8).unwrap();
        // Same warp (1), no sync yet: a race.
        assert_eq!(s.clone().read(40, 0, 4), Err((0, race(W, R, 33))));
        s.warp_sync(1);
        s.read(40, 0, 4).unwrap();
        s.read(63, 4, 4).unwrap();
        // Readers of warp 1 then a write by a lane of warp 1 after another sync: ordered.
        s.warp_sync(1);
        s.write(32, 0, 8).unwrap();
    }

    #[test]
    fn warp_sync_does_not_order_across_warps() {
        let mut s = SharedShadow::new(64);
        s.write(33, 0, 8).unwrap();
        s.warp_sync(1);
        s.warp_sync(0);
        assert_eq!(s.read(0, 4, 4), Err((4, race(W, R, 33))));
    }

    #[test]
    fn sync_of_another_warp_does_not_order_lanes() {
        let mut s = SharedShadow::new(64);
        s.write(33, 0, 8).unwrap();
        s.warp_sync(0);
        assert_eq!(s.read(34, 0, 1), Err((0, race(W, R, 33))));
    }

    #[test]
    fn many_readers_after_a_barrier() {
        let mut s = SharedShadow::new(256);
        for t in 0..64 {
            s.write(t, t * 4, 4).unwrap();
        }
        s.barrier();
        for t in 0..1024 {
            s.read(t, 0, 16).unwrap();
            s.read(t, (t % 16) * 16, 16).unwrap();
        }
        // Then a write without a barrier races with those reads.
        assert!(matches!(s.write(7, 0, 4), Err((0, Finding::Race { earlier: R, later: W, .. }))));
    }

    #[test]
    fn read_then_write_by_another_thread_races() {
        let mut s = initialised(64);
        s.read(10, 16, 4).unwrap();
        assert_eq!(s.write(11, 12, 8), Err((16, race(R, W, 10))));
        let mut s = initialised(64);
        s.read(10, 16, 4).unwrap();
        assert_eq!(s.write(100, 18, 1), Err((18, race(R, W, 10))));
    }

    #[test]
    fn read_then_write_ordered_by_barrier_or_warp_sync() {
        let mut s = initialised(64);
        s.read(10, 0, 4).unwrap();
        s.read(90, 0, 4).unwrap();
        s.barrier();
        s.write(11, 0, 4).unwrap();
        s.barrier();
        s.read(1, 0, 4).unwrap();
        s.read(2, 0, 4).unwrap();
        s.warp_sync(0);
        s.write(3, 0, 4).unwrap();
    }

    #[test]
    fn write_write_by_different_threads_races() {
        let mut s = SharedShadow::new(64);
        s.write(0, 0, 16).unwrap();
        assert_eq!(s.write(1, 8, 16), Err((8, race(W, W, 0))));
        // Also across an earlier barrier boundary only when in the same epoch.
        let mut s = SharedShadow::new(64);
        s.write(0, 0, 16).unwrap();
        s.barrier();
        s.write(1, 8, 16).unwrap();
        assert_eq!(s.write(2, 0, 12), Err((8, race(W, W, 1))));
    }

    #[test]
    fn uninitialised_read() {
        let mut s = SharedShadow::new(64);
        assert_eq!(s.read(0, 0, 4), Err((0, Finding::Uninitialised)));
        s.write(0, 0, 6).unwrap();
        s.barrier();
        assert_eq!(s.read(9, 0, 8), Err((6, Finding::Uninitialised)));
        s.read(9, 0, 6).unwrap();
    }

    #[test]
    fn second_reader_of_another_warp_is_kept() {
        // Readers: 40 (warp 1), then 1 and 2 (warp 0); warp 0 syncs; a write by lane 3 of warp 0
        // is ordered after 1 and 2 but not after 40.
        let mut s = initialised(8);
        s.read(40, 0, 1).unwrap();
        s.read(1, 0, 1).unwrap();
        s.read(2, 0, 1).unwrap();
        s.warp_sync(0);
        assert_eq!(s.write(3, 0, 1), Err((0, race(R, W, 40))));
        // A write by 40 itself races with 2 (another warp).
        let mut s = initialised(8);
        s.read(40, 0, 1).unwrap();
        s.read(1, 0, 1).unwrap();
        s.read(2, 0, 1).unwrap();
        assert_eq!(s.write(40, 0, 1), Err((0, race(R, W, 2))));
    }

    #[test]
    fn second_reader_of_the_same_warp_is_kept() {
        // Lanes 0 then 1 read, then lane 1 writes: races with lane 0's read.
        let mut s = initialised(8);
        s.read(0, 0, 1).unwrap();
        s.read(1, 0, 1).unwrap();
        s.read(1, 0, 1).unwrap();
        assert_eq!(s.write(1, 0, 1), Err((0, race(R, W, 0))));
        // Lane 0 reads, warp syncs, lane 1 reads then writes: ordered.
        let mut s = initialised(8);
        s.read(0, 0, 1).unwrap();
        s.warp_sync(0);
        s.read(1, 0, 1).unwrap();
        s.write(1, 0, 1).unwrap();
        // Lane 1 reads, warp syncs, lane 1 reads again, lane 0 read, then lane 1 writes: races with 0.
        let mut s = initialised(8);
        s.read(1, 0, 1).unwrap();
        s.warp_sync(0);
        s.read(1, 0, 1).unwrap();
        s.read(0, 0, 1).unwrap();
        s.read(1, 0, 1).unwrap();
        assert_eq!(s.write(1, 0, 1), Err((0, race(R, W, 0))));
    }

    #[test]
    fn async_pending_read_and_write() {
        let mut s = SharedShadow::new(64);
        s.async_issue(7, 16, 16).unwrap();
        // Even the issuing thread may not read before its wait.
        assert_eq!(s.read(7, 20, 4), Err((20, Finding::AsyncPending { issuing_thread: 7 })));
        assert_eq!(s.write(7, 31, 4), Err((31, Finding::AsyncPending { issuing_thread: 7 })));
        // Still pending after a barrier (the wait was not reached).
        s.barrier();
        assert_eq!(s.read(8, 16, 1), Err((16, Finding::AsyncPending { issuing_thread: 7 })));
        assert_eq!(s.async_issue(7, 24, 8), Err((24, Finding::AsyncPending { issuing_thread: 7 })));
    }

    #[test]
    fn async_issue_races_like_a_write() {
        let mut s = initialised(64);
        s.read(3, 0, 4).unwrap();
        assert_eq!(s.async_issue(4, 0, 16), Err((0, race(R, W, 3))));
        let mut s = SharedShadow::new(64);
        s.write(3, 8, 4).unwrap();
        assert_eq!(s.async_issue(40, 0, 16), Err((8, race(W, W, 3))));
    }

    #[test]
    fn async_land_then_read_after_barrier() {
        let mut s = SharedShadow::new(64);
        for t in 0..4 {
            s.async_issue(t, t * 16, 16).unwrap();
        }
        for t in 0..4 {
            s.async_land(t, t * 16, 16);
        }
        // The issuing thread reads its own copy right after its wait.
        s.read(2, 32, 16).unwrap();
        s.barrier();
        for t in 0..256 {
            s.read(t, 0, 64).unwrap();
        }
    }

    #[test]
    fn async_land_without_barrier_races_with_other_readers() {
        let mut s = SharedShadow::new(64);
        s.async_issue(40, 0, 16).unwrap();
        s.async_land(40, 0, 16);
        assert_eq!(s.read(0, 0, 4), Err((0, race(W, R, 40))));
        // Same warp: a warp sync after the wait orders the landing.
        let mut s = SharedShadow::new(64);
        s.async_issue(40, 0, 16).unwrap();
        s.async_land(40, 0, 16);
        s.warp_sync(1);
        s.read(41, 0, 4).unwrap();
    }

    #[test]
    fn async_issue_after_barrier_over_landed_copy() {
        // Double buffering: the same thread reissues to a buffer after the barrier that follows
        // the readers.
        let mut s = SharedShadow::new(32);
        for round in 0..4 {
            s.async_issue(0, 0, 16).unwrap();
            s.async_issue(1, 16, 16).unwrap();
            s.async_land(0, 0, 16);
            s.async_land(1, 16, 16);
            s.barrier();
            for t in 0..64 {
                s.read(t, 0, 32).unwrap();
            }
            s.barrier();
            let _ = round;
        }
    }

    #[test]
    fn reset_clears_everything() {
        let mut s = SharedShadow::new(64);
        s.write(1, 0, 16).unwrap();
        s.read(2, 32, 0).unwrap();
        s.async_issue(3, 16, 16).unwrap();
        s.warp_sync(0);
        s.reset();
        // Nothing written, nothing pending.
        assert_eq!(s.read(1, 0, 1), Err((0, Finding::Uninitialised)));
        assert_eq!(s.read(3, 16, 1), Err((16, Finding::Uninitialised)));
        // No writers or readers left to race with.
        s.write(9, 0, 32).unwrap();
        s.barrier();
        s.read(10, 0, 32).unwrap();
        s.reset();
        s.write(11, 0, 32).unwrap();
        // Warp counters restart: lanes of warp 0 unsynced in the new block.
        s.reset();
        s.write(0, 0, 4).unwrap();
        assert_eq!(s.read(1, 0, 4), Err((0, race(W, R, 0))));
    }

    #[test]
    fn out_of_range_does_not_panic() {
        let mut s = SharedShadow::new(16);
        s.write(0, 8, 16).unwrap();
        s.write(0, 100, 4).unwrap();
        s.read(0, u32::MAX, 16).unwrap();
        s.async_issue(0, 1 << 30, 16).unwrap();
        s.async_land(0, 12, 8);
        let mut z = SharedShadow::new(0);
        z.read(0, 0, 4).unwrap();
        z.reset();
    }

    #[test]
    fn epoch_counter_rebases() {
        let mut s = SharedShadow::new(16);
        s.reset();
        s.write(0, 0, 8).unwrap();
        s.async_issue(1, 8, 4).unwrap();
        s.epoch = LAST_EPOCH - 1;
        s.write(2, 12, 4).unwrap();
        s.barrier();
        s.barrier();
        assert!(s.epoch < 10);
        s.read(5, 0, 8).unwrap();
        assert_eq!(s.read(5, 8, 4), Err((8, Finding::AsyncPending { issuing_thread: 1 })));
        s.read(5, 12, 4).unwrap();
        s.barrier();
        s.write(2, 12, 4).unwrap();
        assert_eq!(s.write(6, 12, 1), Err((12, race(W, W, 2))));
        s.epoch = LAST_EPOCH;
        s.reset();
        assert_eq!(s.read(5, 0, 1), Err((0, Finding::Uninitialised)));
    }

    /// The definition, with every access kept: a reference for random sequences of operations.
    #[derive(Default)]
    struct Reference {
        history: Vec<Vec<(u32, bool, u32, u32)>>, // (thread, write, epoch, warp sync count)
        written: Vec<bool>,
        pending: Vec<Option<u32>>,
        epoch: u32,
        syncs: Vec<u32>,
    }

    /// A reference finding: offset, finding (with `other_thread` 0), the threads it may name.
    type RefFlag = (u32, Finding, Vec<u32>);

    impl Reference {
        fn new(bytes: usize) -> Reference {
            Reference {
                history: vec![Vec::new(); bytes],
                written: vec![false; bytes],
                pending: vec![None; bytes],
                epoch: 0,
                syncs: vec![0; 32],
            }
        }
        fn unordered(&self, t: u32, (u, _, e, s): (u32, bool, u32, u32)) -> bool {
            e == self.epoch && u != t && (u / 32 != t / 32 || s == self.syncs[(t / 32) as usize])
        }
        fn racing(&self, t: u32, byte: usize, writes: bool) -> Vec<u32> {
            self.history[byte].iter().filter(|a| a.1 == writes && self.unordered(t, **a)).map(|a| a.0).collect()
        }
        fn read(&mut self, t: u32, off: u32, len: u32) -> Result<(), RefFlag> {
            for b in off..off + len {
                let i = b as usize;
                if !self.written[i] {
                    return Err((b, Finding::Uninitialised, vec![]));
                }
                if let Some(p) = self.pending[i] {
                    return Err((b, Finding::AsyncPending { issuing_thread: p }, vec![]));
                }
                let w = self.racing(t, i, true);
                if !w.is_empty() {
                    return Err((b, race(W, R, 0), w));
                }
                let a = (t, false, self.epoch, self.syncs[(t / 32) as usize]);
                self.history[i].push(a);
            }
            Ok(())
        }
        fn store(&mut self, t: u32, off: u32, len: u32, issue: bool) -> Result<(), RefFlag> {
            for b in off..off + len {
                let i = b as usize;
                if let Some(p) = self.pending[i] {
                    return Err((b, Finding::AsyncPending { issuing_thread: p }, vec![]));
                }
                let w = self.racing(t, i, true);
                if !w.is_empty() {
                    return Err((b, race(W, W, 0), w));
                }
                let r = self.racing(t, i, false);
                if !r.is_empty() {
                    return Err((b, race(R, W, 0), r));
                }
                let a = (t, true, self.epoch, self.syncs[(t / 32) as usize]);
                self.history[i].push(a);
                self.written[i] = true;
                if issue {
                    self.pending[i] = Some(t);
                }
            }
            Ok(())
        }
        fn land(&mut self, t: u32, off: u32, len: u32) {
            for i in off as usize..(off + len) as usize {
                self.pending[i] = None;
                let a = (t, true, self.epoch, self.syncs[(t / 32) as usize]);
                self.history[i].push(a);
            }
        }
    }

    fn same(got: Result<(), Flagged>, want: Result<(), RefFlag>, step: usize, log: &[String]) {
        let ok = match (&got, &want) {
            (Ok(()), Ok(())) => true,
            (
                Err((o, Finding::Race { earlier, later, other_thread })),
                Err((p, Finding::Race { earlier: e, later: l, .. }, who)),
            ) => o == p && earlier == e && later == l && who.contains(other_thread),
            (Err((o, f)), Err((p, g, _))) => o == p && f == g,
            _ => false,
        };
        assert!(ok, "step {step}: got {got:?}, reference {want:?}\n{}", log.join("\n"));
    }

    #[test]
    fn random_sequences_match_the_reference() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move |n: u32| -> u32 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % n as u64) as u32
        };
        const THREADS: [u32; 6] = [0, 1, 2, 33, 34, 65];
        const BYTES: u32 = 6;
        let mut findings = [0usize; 5];
        let mut shadow = SharedShadow::new(BYTES as usize);
        for _ in 0..100_000 {
            shadow.reset();
            let mut reference = Reference::new(BYTES as usize);
            let mut issued: Vec<(u32, u32, u32)> = Vec::new();
            let mut log = Vec::new();
            if rand(4) != 0 {
                shadow.write(0, 0, BYTES).unwrap();
                reference.store(0, 0, BYTES, false).unwrap();
                if rand(2) == 0 {
                    shadow.barrier();
                    reference.epoch += 1;
                }
            }
            for step in 0..80 {
                let t = THREADS[rand(THREADS.len() as u32) as usize];
                let len = 1 + rand(3);
                let off = rand(BYTES - len + 1);
                let (got, want) = match rand(100) {
                    0..40 => {
                        log.push(format!("read {t} {off} {len}"));
                        (shadow.read(t, off, len), reference.read(t, off, len))
                    }
                    40..60 => {
                        log.push(format!("write {t} {off} {len}"));
                        (shadow.write(t, off, len), reference.store(t, off, len, false))
                    }
                    60..68 => {
                        log.push("barrier".into());
                        shadow.barrier();
                        reference.epoch += 1;
                        (Ok(()), Ok(()))
                    }
                    68..84 => {
                        let w = t / 32;
                        log.push(format!("warp_sync {w}"));
                        shadow.warp_sync(w);
                        reference.syncs[w as usize] += 1;
                        (Ok(()), Ok(()))
                    }
                    84..92 => {
                        log.push(format!("issue {t} {off} {len}"));
                        issued.push((t, off, len));
                        (shadow.async_issue(t, off, len), reference.store(t, off, len, true))
                    }
                    _ if !issued.is_empty() => {
                        let (t, off, len) = issued.swap_remove(rand(issued.len() as u32) as usize);
                        log.push(format!("land {t} {off} {len}"));
                        shadow.async_land(t, off, len);
                        reference.land(t, off, len);
                        (Ok(()), Ok(()))
                    }
                    _ => (Ok(()), Ok(())),
                };
                same(got.clone(), want, step, &log);
                if let Err((_, f)) = got {
                    findings[match f {
                        Finding::Race { earlier: R, .. } => 0,
                        Finding::Race { later: R, .. } => 1,
                        Finding::Race { .. } => 2,
                        Finding::Uninitialised => 3,
                        Finding::AsyncPending { .. } => 4,
                    }] += 1;
                    break;
                }
            }
        }
        // Every kind of finding occurred.
        assert!(findings.iter().all(|&n| n > 100), "{findings:?}");
    }

    /// ns per 16-byte access:
    /// `rustc --edition 2024 -O --test shadow.rs -o t && ./t --ignored --nocapture bench`.
    #[test]
    #[ignore]
    fn bench_16_byte_accesses() {
        let bytes_kib: u32 = std::env::var("SHADOW_BENCH_KIB").ok().and_then(|v| v.parse().ok()).unwrap_or(96);
        let bytes: u32 = bytes_kib * 1024;
        const THREADS: u32 = 256;
        const BLOCKS: u32 = 200;
        let per_thread = bytes / THREADS;
        let chunks = (THREADS * per_thread / 16) as f64 * BLOCKS as f64;
        let mut s = SharedShadow::new(bytes as usize);
        // Each thread fills its slice, a barrier, each reads its neighbour's slice twice (the
        // second time it is already the latest reader), a barrier.
        let mut phase = [std::time::Duration::ZERO; 3];
        for _ in 0..BLOCKS {
            s.reset();
            let t0 = std::time::Instant::now();
            for t in 0..THREADS {
                for k in (0..per_thread).step_by(16) {
                    s.write(t, t * per_thread + k, 16).unwrap();
                }
            }
            s.barrier();
            phase[0] += t0.elapsed();
            for elapsed in &mut phase[1..] {
                let t0 = std::time::Instant::now();
                for t in 0..THREADS {
                    let n = (t + 1) % THREADS;
                    for k in (0..per_thread).step_by(16) {
                        s.read(t, n * per_thread + k, 16).unwrap();
                    }
                }
                *elapsed += t0.elapsed();
            }
            s.barrier();
        }
        let ns = |d: std::time::Duration| d.as_nanos() as f64 / chunks;
        println!(
            "ns per 16-byte access ({BLOCKS} blocks of {bytes} bytes, {THREADS} threads): write {:.1}, first read {:.1}, repeated read {:.1}",
            ns(phase[0]),
            ns(phase[1]),
            ns(phase[2])
        );
    }
}
