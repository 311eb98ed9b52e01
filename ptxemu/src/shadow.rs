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

/// The state of one byte, or of the four bytes of a word that all have the same state (28
/// bytes). An epoch 0 is never current: a zeroed cell is a byte that was never written and never
/// read.
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
/// - `split` (word cells only; it fits in the padding): the word's bytes do not all have the same
///   state; theirs are in `SharedShadow::bytes` and the rest of this cell is unused.
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
    split: bool,
}

/// The accessing thread and the clock, as the cell operations see them.
#[derive(Clone, Copy)]
struct Now {
    cur: u32,
    base: u32,
    me: u16,
    warp: u32,
    sync: u32,
}

impl Cell {
    /// A read by `k.me` (the per-byte rule; see `SharedShadow::read`).
    #[inline(always)]
    fn read(&mut self, k: &Now) -> std::result::Result<(), Finding> {
        // Fast path: already recorded as the latest reader with the warp at the same sync count;
        // the write was checked then and was not changed since (a write drops the readers).
        if self.r1_epoch == k.cur && self.r1_thread == k.me && self.r1_sync == k.sync {
            return Ok(());
        }
        if self.w_epoch < k.base {
            return Err(Finding::Uninitialised);
        }
        if self.w_thread & PENDING != 0 {
            return Err(Finding::AsyncPending { issuing_thread: (self.w_thread & THREAD_BITS) as u32 });
        }
        if self.w_epoch == k.cur && unordered(self.w_thread, self.w_sync, k.me, k.warp, k.sync) {
            return Err(race(Access::Write, Access::Read, self.w_thread));
        }
        if self.r1_epoch != k.cur {
            self.r1_epoch = k.cur;
            self.r2_thread = NO_THREAD;
        } else if self.r1_thread != k.me {
            let r1_warp = (self.r1_thread >> 5) as u32;
            let keep_r2 = r1_warp == k.warp && self.r2_thread != NO_THREAD && (self.r2_thread >> 5) as u32 != r1_warp;
            if !keep_r2 {
                self.r2_thread = self.r1_thread;
                self.r2_sync = self.r1_sync;
            }
        }
        self.r1_thread = k.me;
        self.r1_sync = k.sync;
        Ok(())
    }

    /// A write stamped `stamp` (`issue`: a cp.async issue, `stamp` has `PENDING`).
    #[inline(always)]
    fn store(&mut self, k: &Now, stamp: u16, issue: bool) -> std::result::Result<(), Finding> {
        // Fast path: written last by this thread, no readers since, not pending.
        if self.w_thread == k.me && self.r1_epoch != k.cur && self.w_epoch >= k.base && !issue {
            self.w_epoch = k.cur;
            self.w_sync = k.sync;
            return Ok(());
        }
        if self.w_epoch >= k.base {
            if self.w_thread & PENDING != 0 {
                return Err(Finding::AsyncPending { issuing_thread: (self.w_thread & THREAD_BITS) as u32 });
            }
            if self.w_epoch == k.cur && unordered(self.w_thread, self.w_sync, k.me, k.warp, k.sync) {
                return Err(race(Access::Write, Access::Write, self.w_thread));
            }
        }
        if self.r1_epoch == k.cur {
            if unordered(self.r1_thread, self.r1_sync, k.me, k.warp, k.sync) {
                return Err(race(Access::Read, Access::Write, self.r1_thread));
            }
            if self.r2_thread != NO_THREAD && unordered(self.r2_thread, self.r2_sync, k.me, k.warp, k.sync) {
                return Err(race(Access::Read, Access::Write, self.r2_thread));
            }
        }
        self.w_epoch = k.cur;
        self.w_sync = k.sync;
        self.w_thread = stamp;
        self.r1_epoch = 0;
        Ok(())
    }

    /// What the operations can still observe of this state from epoch `cur` of the block that
    /// began at `base` on (epochs only grow): two cells with the same key behave the same for every
    /// sequence of operations (same findings, same keys after), so a word whose bytes all have the
    /// same key can be kept as one cell.
    fn key(self, cur: u32, base: u32) -> Cell {
        let mut k = Cell::default();
        if self.w_epoch >= base {
            // Written in this block: when (now or before), by whom while it matters (now, or
            // while pending), the writer's sync count while it matters (now).
            k.w_epoch = if self.w_epoch == cur { 2 } else { 1 };
            if self.w_epoch == cur || self.w_thread & PENDING != 0 {
                k.w_thread = self.w_thread;
            }
            if self.w_epoch == cur {
                k.w_sync = self.w_sync;
            }
        }
        if self.r1_epoch == cur {
            // Readers of this epoch (stale readers are never looked at again).
            k.r1_epoch = 1;
            k.r1_thread = self.r1_thread;
            k.r1_sync = self.r1_sync;
            k.r2_thread = self.r2_thread;
            if self.r2_thread != NO_THREAD {
                k.r2_sync = self.r2_sync;
            }
        }
        k
    }
}

/// The shared-memory shadow of a block: per 4-byte word one `Cell` while its bytes have the same
/// state (per byte otherwise), the current epoch, and each warp's count of completed warp
/// collectives.
///
/// Design:
/// - The rules are per byte (a race is two accesses to the same byte), but most accesses are
///   4-byte words or vectors of them (`ld.shared.v4.f32` is four 4-byte reads; ldmatrix rows and
///   cp.async copies are 16 aligned bytes), and all the bytes of a word are then accessed alike.
///   So a word is one cell (`words`) as long as its four bytes have the same state (the same
///   `Cell::key`): an access covering the whole word updates that cell once, exactly as it would
///   update each byte. An access to part of a word (or the partial last word of a size that is
///   not a multiple of 4) splits the word: its four byte cells (`bytes`, allocated at the first
///   split) take the word's state and are checked and updated one by one, as before; after each
///   such access the word is merged back when its bytes have the same key again (e.g. two 2-byte
///   writes of one thread; or a word of an earlier block, untouched in this one). So sub-word
///   accesses by different threads to disjoint bytes are still no race, and every finding (byte,
///   kind, other thread) is the one the per-byte state reports.
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
    /// Per word (bytes 4i..4i+4; the last one may be partial, and is then always split).
    words: Vec<Cell>,
    /// Per byte, the state of the bytes of split words (empty until the first split).
    bytes: Vec<Cell>,
    /// Bytes of shared memory.
    len: usize,
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
        let mut s = SharedShadow {
            words: vec![Cell::default(); bytes.div_ceil(4)],
            bytes: Vec::new(),
            len: bytes,
            epoch: 1,
            base: 1,
            warp_syncs: vec![0; 32],
        };
        if !bytes.is_multiple_of(4) {
            s.split(bytes / 4);
        }
        s
    }
    /// Makes the state that of a fresh block (reused between blocks to save allocations).
    pub fn reset(&mut self) {
        self.next_epoch();
        self.base = self.epoch;
        self.warp_syncs.iter_mut().for_each(|s| *s = 0);
    }
    /// Thread `thread` (linear index; its warp is thread / 32) reads [offset, offset + len).
    #[inline]
    pub fn read(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        let k = self.now(thread);
        self.access(offset, len, |c| c.read(&k))
    }
    #[inline]
    pub fn write(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
        let k = self.now(thread);
        self.access(offset, len, |c| c.store(&k, k.me, false))
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
        let k = self.now(thread);
        self.access(offset, len, |c| c.store(&k, k.me | PENDING, true))
    }
    /// That copy lands at its wait_group: the bytes count as written by `thread`, no longer poisoned.
    pub fn async_land(&mut self, thread: u32, offset: u32, len: u32) {
        let k = self.now(thread);
        let _ = self.access(offset, len, |c| {
            c.w_epoch = k.cur;
            c.w_sync = k.sync;
            c.w_thread = k.me;
            c.r1_epoch = 0;
            Ok(())
        });
    }

    #[inline(always)]
    fn now(&self, thread: u32) -> Now {
        debug_assert!(thread < MAX_THREAD, "thread id {thread} too large for the shared-memory shadow");
        let warp = thread >> 5;
        let sync = self.warp_syncs.get(warp as usize).copied().unwrap_or(0);
        Now { cur: self.epoch, base: self.base, me: thread as u16, warp, sync }
    }

    /// Applies `op` to the state of each byte of [offset, offset + len) in order, clipped to the
    /// shared memory (the executor checks the bounds before calling; a range past them is
    /// ignored rather than a panic): once per whole unsplit word, else per byte. The first
    /// finding stops it, at its byte.
    #[inline(always)]
    fn access(
        &mut self,
        offset: u32,
        len: u32,
        mut op: impl FnMut(&mut Cell) -> std::result::Result<(), Finding>,
    ) -> std::result::Result<(), Flagged> {
        // The most frequent access: one aligned word (a partial last word is split).
        if len == 4
            && offset & 3 == 0
            && let Some(word) = self.words.get_mut((offset >> 2) as usize)
            && !word.split
        {
            return op(word).map_err(|f| (offset, f));
        }
        let start = (offset as usize).min(self.len);
        let end = (offset as usize).saturating_add(len as usize).min(self.len);
        let mut p = start;
        while p < end {
            let w = p >> 2;
            let at = w << 2;
            let to = (at + 4).min(end);
            // `p < len`, so `w < words.len()` (a partial last word is split: `to == at + 4` is
            // then never reached).
            let word = &mut self.words[w];
            if p == at && to == at + 4 && !word.split {
                op(word).map_err(|f| (at as u32, f))?;
            } else {
                self.bytewise(w, p, to, &mut op)?;
            }
            p = to;
        }
        Ok(())
    }

    /// `op` on bytes [from, to) of word `w`, one by one (splitting the word first), then merges
    /// the word back if its bytes have the same state again.
    #[inline(never)]
    fn bytewise(
        &mut self,
        w: usize,
        from: usize,
        to: usize,
        op: &mut impl FnMut(&mut Cell) -> std::result::Result<(), Finding>,
    ) -> std::result::Result<(), Flagged> {
        self.split(w);
        for (i, c) in self.bytes[from..to].iter_mut().enumerate() {
            op(c).map_err(|f| ((from + i) as u32, f))?;
        }
        if (w + 1) * 4 <= self.len {
            let (cur, base) = (self.epoch, self.base);
            let b = &self.bytes[w * 4..w * 4 + 4];
            let key = b[0].key(cur, base);
            if b[1..].iter().all(|c| c.key(cur, base) == key) {
                self.words[w] = b[0];
            }
        }
        Ok(())
    }

    /// Makes word `w` per byte (each byte takes the word's state).
    fn split(&mut self, w: usize) {
        if self.words[w].split {
            return;
        }
        if self.bytes.is_empty() {
            self.bytes = vec![Cell::default(); self.words.len() * 4];
        }
        let c = self.words[w];
        self.bytes[w * 4..w * 4 + 4].fill(c);
        self.words[w].split = true;
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
        for c in self.words.iter_mut().chain(self.bytes.iter_mut()) {
            let written = c.w_epoch >= base;
            *c = Cell {
                w_epoch: written as u32,
                w_thread: if written { c.w_thread } else { 0 },
                split: c.split,
                ..Cell::default()
            };
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

    /// The per-byte checker that the word cells replaced (one cell per byte, each checked and
    /// updated on its own), kept as the oracle: the word cells must report exactly what it reports.
    mod bytewise {
        use super::super::{Access, Finding, Flagged};

        const NO_THREAD: u16 = u16::MAX;
        const PENDING: u16 = 0x8000;
        const THREAD_BITS: u16 = 0x7fff;
        const MAX_THREAD: u32 = 0x7fff;
        const LAST_EPOCH: u32 = u32::MAX - 2;

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

        #[derive(Clone)]
        pub struct SharedShadow {
            cells: Vec<Cell>,
            pub epoch: u32,
            base: u32,
            warp_syncs: Vec<u32>,
        }

        impl SharedShadow {
            pub fn new(bytes: usize) -> SharedShadow {
                SharedShadow { cells: vec![Cell::default(); bytes], epoch: 1, base: 1, warp_syncs: vec![0; 32] }
            }
            pub fn reset(&mut self) {
                self.next_epoch();
                self.base = self.epoch;
                self.warp_syncs.iter_mut().for_each(|s| *s = 0);
            }
            pub fn read(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
                debug_assert!(thread < MAX_THREAD, "thread id {thread} too large for the shared-memory shadow");
                let (cur, base) = (self.epoch, self.base);
                let warp = thread >> 5;
                let sync = self.sync_of(warp);
                let me = thread as u16;
                let range = self.range(offset, len);
                let start = range.start;
                let cells = &mut self.cells[range];
                for (i, c) in cells.iter_mut().enumerate() {
                    if c.r1_epoch == cur && c.r1_thread == me && c.r1_sync == sync {
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
                        let keep_r2 =
                            r1_warp == warp && c.r2_thread != NO_THREAD && (c.r2_thread >> 5) as u32 != r1_warp;
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
            pub fn barrier(&mut self) {
                self.next_epoch();
            }
            pub fn warp_sync(&mut self, warp: u32) {
                let w = warp as usize;
                if w >= self.warp_syncs.len() {
                    self.warp_syncs.resize(w + 1, 0);
                }
                self.warp_syncs[w] = self.warp_syncs[w].wrapping_add(1);
            }
            pub fn async_issue(&mut self, thread: u32, offset: u32, len: u32) -> std::result::Result<(), Flagged> {
                self.store(thread, offset, len, true)
            }
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
                    if c.w_thread == me && c.r1_epoch != cur && c.w_epoch >= base && !issue {
                        c.w_epoch = cur;
                        c.w_sync = sync;
                        continue;
                    }
                    let at = (start + i) as u32;
                    if c.w_epoch >= base {
                        if c.w_thread & PENDING != 0 {
                            return Err((
                                at,
                                Finding::AsyncPending { issuing_thread: (c.w_thread & THREAD_BITS) as u32 },
                            ));
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

            fn rebase(&mut self) {
                let base = self.base;
                for c in &mut self.cells {
                    let written = c.w_epoch >= base;
                    *c = Cell {
                        w_epoch: written as u32,
                        w_thread: if written { c.w_thread } else { 0 },
                        ..Cell::default()
                    };
                }
                self.base = 1;
                self.epoch = 1;
            }
        }

        #[inline(always)]
        fn unordered(other: u16, other_sync: u32, me: u16, warp: u32, sync: u32) -> bool {
            let other = other & THREAD_BITS;
            other != me && ((other >> 5) as u32 != warp || other_sync == sync)
        }

        fn race(earlier: Access, later: Access, other: u16) -> Finding {
            Finding::Race { earlier, later, other_thread: (other & THREAD_BITS) as u32 }
        }
    }

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

    /// A pseudo-random generator: `rand(n)` is in 0..n.
    fn rng(mut seed: u64) -> impl FnMut(u32) -> u32 {
        move |n: u32| -> u32 {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((seed >> 33) % n as u64) as u32
        }
    }

    /// A random access (offset, length) in `bytes`: `mixed` false, 1 to 3 bytes anywhere; true,
    /// 1, 2, 3, 4, 8 or 16 bytes, mostly aligned to their size (to 4 for 3), else anywhere.
    fn pick(rand: &mut impl FnMut(u32) -> u32, bytes: u32, mixed: bool) -> (u32, u32) {
        if !mixed {
            let len = 1 + rand(3);
            return (rand(bytes - len + 1), len);
        }
        let len: u32 = [1, 2, 3, 4, 4, 4, 8, 16, 16][rand(9) as usize];
        let align = if rand(4) == 0 { 1 } else { len.next_power_of_two() };
        (rand((bytes - len) / align + 1) * align, len)
    }

    #[test]
    fn random_sequences_match_the_reference() {
        let mut rand = rng(0x9e37_79b9_7f4a_7c15);
        const THREADS: [u32; 6] = [0, 1, 2, 33, 34, 65];
        // 6 bytes, accesses of 1 to 3 bytes (sub-word accesses of all kinds); 38 bytes (a partial
        // last word), accesses of 1 to 16 bytes at various alignments.
        for (bytes, mixed) in [(6u32, false), (38, true)] {
            let mut findings = [0usize; 5];
            let mut shadow = SharedShadow::new(bytes as usize);
            for _ in 0..100_000 {
                shadow.reset();
                let mut reference = Reference::new(bytes as usize);
                let mut issued: Vec<(u32, u32, u32)> = Vec::new();
                let mut log = Vec::new();
                if rand(4) != 0 {
                    shadow.write(0, 0, bytes).unwrap();
                    reference.store(0, 0, bytes, false).unwrap();
                    if rand(2) == 0 {
                        shadow.barrier();
                        reference.epoch += 1;
                    }
                }
                for step in 0..80 {
                    let t = THREADS[rand(THREADS.len() as u32) as usize];
                    let (off, len) = pick(&mut rand, bytes, mixed);
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
            assert!(findings.iter().all(|&n| n > 100), "{bytes} bytes: {findings:?}");
        }
    }

    /// Random sequences give exactly the findings of the per-byte checker (byte, kind, and the
    /// other thread named): accesses of 1 to 16 bytes, aligned or not, some past the end; sizes
    /// with and without a partial last word; shadows reused across blocks (words left split by
    /// one block); barriers, warp syncs, cp.async, epoch rebases.
    #[test]
    fn random_sequences_match_the_per_byte_checker() {
        let mut rand = rng(0x2545_f491_4f6c_dd1d);
        const THREADS: [u32; 8] = [0, 1, 2, 3, 31, 33, 34, 65];
        for bytes in [64u32, 37, 3] {
            let mut findings = [0usize; 5];
            let mut words = SharedShadow::new(bytes as usize);
            let mut per_byte = bytewise::SharedShadow::new(bytes as usize);
            for _ in 0..30_000 {
                words.reset();
                per_byte.reset();
                let mut issued: Vec<(u32, u32, u32)> = Vec::new();
                let mut log = Vec::new();
                // Mostly: each word written by one of a few threads (whole words or halves), then
                // a barrier or not.
                if rand(4) != 0 {
                    let half = rand(3) == 0;
                    for w in (0..bytes).step_by(4) {
                        let t = THREADS[rand(3) as usize];
                        for (o, l) in if half { [(w, 2), (w + 2, 2)] } else { [(w, 4), (w + 4, 0)] } {
                            assert_eq!(words.write(t, o, l), per_byte.write(t, o, l));
                        }
                    }
                    if rand(3) != 0 {
                        words.barrier();
                        per_byte.barrier();
                    }
                }
                for step in 0..100 {
                    let t = THREADS[rand(THREADS.len() as u32) as usize];
                    let (off, len) = if rand(20) == 0 {
                        (bytes - rand(bytes.min(4)) + rand(3), 1 + rand(16))
                    } else {
                        pick(&mut rand, bytes, bytes >= 16)
                    };
                    let (got, want) = match rand(100) {
                        0..45 => {
                            log.push(format!("read {t} {off} {len}"));
                            (words.read(t, off, len), per_byte.read(t, off, len))
                        }
                        45..62 => {
                            log.push(format!("write {t} {off} {len}"));
                            (words.write(t, off, len), per_byte.write(t, off, len))
                        }
                        62..70 => {
                            log.push("barrier".into());
                            words.barrier();
                            per_byte.barrier();
                            (Ok(()), Ok(()))
                        }
                        70..84 => {
                            let w = t / 32;
                            log.push(format!("warp_sync {w}"));
                            words.warp_sync(w);
                            per_byte.warp_sync(w);
                            (Ok(()), Ok(()))
                        }
                        84..91 => {
                            log.push(format!("issue {t} {off} {len}"));
                            issued.push((t, off, len));
                            (words.async_issue(t, off, len), per_byte.async_issue(t, off, len))
                        }
                        91..92 => {
                            let e = LAST_EPOCH - rand(3);
                            log.push(format!("epoch {e}"));
                            words.epoch = e;
                            per_byte.epoch = e;
                            (Ok(()), Ok(()))
                        }
                        _ if !issued.is_empty() => {
                            let (t, off, len) = issued.swap_remove(rand(issued.len() as u32) as usize);
                            log.push(format!("land {t} {off} {len}"));
                            words.async_land(t, off, len);
                            per_byte.async_land(t, off, len);
                            (Ok(()), Ok(()))
                        }
                        _ => (Ok(()), Ok(())),
                    };
                    assert_eq!(got, want, "{bytes} bytes, step {step}:\n{}", log.join("\n"));
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
            assert!(findings.iter().all(|&n| n > 100), "{bytes} bytes: {findings:?}");
        }
    }

    /// The accesses the bench makes, on either checker.
    trait Bench {
        fn make(bytes: usize) -> Self;
        fn rd(&mut self, t: u32, off: u32, len: u32) -> Result<(), Flagged>;
        fn wr(&mut self, t: u32, off: u32, len: u32) -> Result<(), Flagged>;
        fn bar(&mut self);
        fn rst(&mut self);
    }

    macro_rules! bench_impl {
        ($t:ty) => {
            impl Bench for $t {
                fn make(bytes: usize) -> Self {
                    <$t>::new(bytes)
                }
                fn rd(&mut self, t: u32, off: u32, len: u32) -> Result<(), Flagged> {
                    self.read(t, off, len)
                }
                fn wr(&mut self, t: u32, off: u32, len: u32) -> Result<(), Flagged> {
                    self.write(t, off, len)
                }
                fn bar(&mut self) {
                    self.barrier()
                }
                fn rst(&mut self) {
                    self.reset()
                }
            }
        };
    }
    bench_impl!(SharedShadow);
    bench_impl!(bytewise::SharedShadow);

    /// Every word read by 16 threads, 4 bytes at a time.
    #[inline(never)]
    fn reads_by_16_threads<S: Bench>(s: &mut S, threads: u32, bytes: u32) {
        for t in 0..threads {
            for w in (t % 16..bytes / 4).step_by(16) {
                s.rd(t, w * 4, 4).unwrap();
            }
        }
    }

    /// ns per access in each phase (see `bench_accesses`).
    #[inline(never)]
    fn bench<S: Bench>(bytes: u32) -> [f64; 4] {
        const THREADS: u32 = 256;
        const BLOCKS: u32 = 200;
        let per_thread = bytes / THREADS;
        let chunks = (THREADS * per_thread / 16) as f64 * BLOCKS as f64;
        let words = (bytes / 4) as f64 * 16.0 * BLOCKS as f64;
        let mut s = S::make(bytes as usize);
        // Each thread fills its slice with 16-byte writes, a barrier, each reads its neighbour's
        // slice twice with 16-byte reads (the second time it is already the latest reader), then
        // (as the SGEMM kernels' ld.shared.v4.f32, four 4-byte reads) every word is read by 16
        // threads, 4 bytes at a time; a barrier.
        let mut phase = [std::time::Duration::ZERO; 4];
        for _ in 0..BLOCKS {
            s.rst();
            let t0 = std::time::Instant::now();
            for t in 0..THREADS {
                for k in (0..per_thread).step_by(16) {
                    s.wr(t, t * per_thread + k, 16).unwrap();
                }
            }
            s.bar();
            phase[0] += t0.elapsed();
            for elapsed in &mut phase[1..3] {
                let t0 = std::time::Instant::now();
                for t in 0..THREADS {
                    let n = (t + 1) % THREADS;
                    for k in (0..per_thread).step_by(16) {
                        s.rd(t, n * per_thread + k, 16).unwrap();
                    }
                }
                *elapsed += t0.elapsed();
            }
            s.bar();
            let t0 = std::time::Instant::now();
            reads_by_16_threads(&mut s, THREADS, bytes);
            phase[3] += t0.elapsed();
            s.bar();
        }
        let ns = |d: std::time::Duration, n: f64| d.as_nanos() as f64 / n;
        [ns(phase[0], chunks), ns(phase[1], chunks), ns(phase[2], chunks), ns(phase[3], words)]
    }

    /// ns per access, of this checker and of the per-byte one:
    /// `rustc --edition 2024 -O --test shadow.rs -o t && SHADOW_BENCH_KIB=96 ./t --ignored --nocapture bench`.
    #[test]
    #[ignore]
    fn bench_accesses() {
        let bytes_kib: u32 = std::env::var("SHADOW_BENCH_KIB").ok().and_then(|v| v.parse().ok()).unwrap_or(96);
        let bytes: u32 = bytes_kib * 1024;
        let only = std::env::var("SHADOW_BENCH_ONLY").unwrap_or_default();
        type Run = (&'static str, fn(u32) -> [f64; 4]);
        let runs: [Run; 2] = [("word cells", bench::<SharedShadow>), ("per byte", bench::<bytewise::SharedShadow>)];
        for (name, r) in runs.iter().filter(|r| r.0.contains(only.as_str())).map(|(name, f)| (name, f(bytes))) {
            println!(
                "{name}, ns per access (200 blocks of {bytes} bytes, 256 threads): 16-byte write {:.1}, \
                 16-byte first read {:.1}, repeated read {:.1}; 4-byte read, 16 readers a word {:.1}",
                r[0], r[1], r[2], r[3]
            );
        }
    }
}
