//! Per-slab metadata and the owner's single-writer block operations.
//!
//! A slab is a run of blocks of one size class. Its hot fields (`free`,
//! `used`) are written only by the slab's owner, with plain loads and stores:
//! every mutating method takes the [`OwnerToken`] of the slab's
//! [`RemoteQueue`], so mutating a freelist without owning the slab does not
//! compile (lesson 4):
//!
//! ```compile_fail
//! fn steal(s: &superslab::Slab) -> Option<superslab::BlockPtr> {
//!     s.pop() // error: pop needs the owner's token
//! }
//! ```
//!
//! Other threads touch only `remote` (on its own cache line) and the read-only
//! read-mostly `stride`/`class`/`base` used to validate a pointer (with the
//! class's row of the static [`CHECKS`] table).
//!
//! Counters (lesson 8): `used` is the number of blocks outside the slab's own
//! free list: held by the program, sitting in a thread cache, or in flight
//! back through `remote`. `pop` adds one, `take` adds what it took,
//! `push_local` subtracts one, `collect_remote` subtracts what it drained
//! (`take_remote` subtracts nothing: it moves blocks from the remote queue
//! to the owner's cache, and both count as used). `used == 0` means empty.

use crate::ptr::{BlockPtr, UserPtr};
use crate::size_class::CLASSES;
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use remote_queue::{Node, OwnerToken, RemoteQueue};

/// Blocks carved from fresh slab memory per refill, at most. Carving lazily
/// keeps untouched pages untouched (low RSS for half-used slabs).
const CARVE_BATCH_BYTES: usize = 16 * 1024;

/// Metadata of one slab. Lives in its segment's header, never in the slab.
///
/// Three cache lines, by who writes them: the owner's hot fields; fields
/// written only when the slab is given a class or changes owner (read by every
/// free to validate the pointer and test ownership, so they must not share a
/// line with what the owner writes on every pop/push); and the remote queue's
/// head, written by other threads.
#[repr(C, align(64))]
pub struct Slab {
    // ---- line 0: owner-only, hot ----
    free: UnsafeCell<*mut Node>,
    used: UnsafeCell<u32>,
    bump: UnsafeCell<usize>,
    bump_end: UnsafeCell<usize>,
    heap_next: UnsafeCell<*mut Slab>,
    heap_prev: UnsafeCell<*mut Slab>,
    _pad0: [u64; 2],
    // ---- line 1: read-mostly (written when formatted) ----
    /// Block stride (0 while the slab has no class; gates `block_of`).
    stride: AtomicU32,
    /// Size class (meaningful only while `stride != 0`); validation reads
    /// the class's row of [`CHECKS`], the one block-start table.
    class: AtomicU32,
    /// First byte of the slab's blocks (set when the segment is created).
    base: AtomicUsize,
    _pad1: [u64; 5],
    /// Frees from other threads (its `head` word starts line 2), and the
    /// ownership word (the last word of this read-mostly line).
    pub remote: RemoteQueue,
    // ---- line 2: cross-thread: the queue's head, then the pool link ----
    pool_next: UnsafeCell<*mut Slab>,
}

static_assertions::const_assert_eq!(core::mem::offset_of!(Slab, stride), 64);
static_assertions::const_assert_eq!(core::mem::offset_of!(Slab, remote), 120);
static_assertions::const_assert!(core::mem::size_of::<Slab>() == 192);

/// What validating a block start of class `c` needs, from the class alone:
/// the slab-offset mask of the class's slab kind and the three parts of the
/// [`DivMagic`] test, whose limit is the slab's capacity (so one compare
/// rejects offsets that are not multiples of the stride and offsets past the
/// last block alike).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockCheck {
    /// Slab size - 1 for the class's slab kind: segment offset -> slab offset.
    pub slab_mask: u32,
    /// See [`DivMagic`].
    pub inv: u32,
    /// Blocks per slab; 0 for the rows that are not classes (nothing passes).
    pub count: u32,
    /// See [`DivMagic`].
    pub rot: u32,
}

impl BlockCheck {
    /// True if `rel` (bytes from the segment start) is a block start of a
    /// slab of this class: `rotr(off * inv, rot)` is `off / stride` when `off`
    /// is a multiple of the stride and at least `2^32 / stride` otherwise.
    #[inline(always)]
    pub fn accepts(&self, rel: u32) -> bool {
        (rel & self.slab_mask)
            .wrapping_mul(self.inv)
            .rotate_right(self.rot)
            < self.count
    }
}

const fn build_checks() -> [BlockCheck; 256] {
    let mut t = [BlockCheck {
        slab_mask: 0,
        inv: 0,
        count: 0,
        rot: 0,
    }; 256];
    let mut c = 0;
    while c < crate::size_class::NUM_CLASSES {
        let l = crate::size_class::CLASSES_CONST[c];
        let m = DivMagic::new(l.stride);
        // Exactness: every block index must be below the test's own limit.
        assert!(l.capacity - 1 <= m.limit);
        t[c] = BlockCheck {
            slab_mask: (l.kind.slab_size() - 1) as u32,
            inv: m.inv,
            count: l.capacity,
            rot: m.shift,
        };
        c += 1;
    }
    t
}

const CHECK_ROWS: [BlockCheck; 256] = build_checks();

/// Per class-map value (a class, or anything else for "no blocks here"): the
/// block-start test. A static table; indexed by a byte, so no bounds check.
pub static CHECKS: [BlockCheck; 256] = CHECK_ROWS;

/// Row `v` of [`CHECKS`], for a caller that keeps a copy next to its own
/// per-class data (a thread cache keeps its class's row on its own line, so
/// `free` reads one line fewer) and for constant initialisers.
pub const fn check_row(v: u8) -> BlockCheck {
    CHECK_ROWS[v as usize]
}

/// Exact "is `off` a multiple of `stride`?" for `off < 2^32` with one
/// multiply and a rotate: write `stride = odd << shift`; then `off` is a
/// multiple iff `rotr(off * odd⁻¹ mod 2^32, shift) <= (2^32 - 1) / stride`.
/// [`CHECKS`] compares against the slab's capacity instead, which also
/// rejects offsets past the last block.
#[derive(Clone, Copy, Debug)]
pub struct DivMagic {
    inv: u32,
    shift: u32,
    limit: u32,
}

impl DivMagic {
    /// The magic for `stride` (non-zero).
    pub const fn new(stride: u32) -> Self {
        let shift = stride.trailing_zeros();
        let odd = stride >> shift;
        // Newton's iteration doubles the correct low bits each step.
        let mut inv = odd; // correct to 3 bits for odd numbers
        let mut i = 0;
        while i < 5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(odd.wrapping_mul(inv)));
            i += 1;
        }
        Self {
            inv,
            shift,
            limit: u32::MAX / stride,
        }
    }
    /// True if `off` is a multiple of the stride.
    pub fn is_multiple(self, off: u32) -> bool {
        off.wrapping_mul(self.inv).rotate_right(self.shift) <= self.limit
    }
}

// SAFETY: owner-only fields are only touched through methods that demand the
// owner token (or, for the list links, by the owner or under the pool lock);
// everything shared is atomic.
unsafe impl Sync for Slab {}

/// Why a pointer is not a live block start of this slab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPointer {
    /// Inside the slab but not at a block start (an interior pointer).
    NotBlockStart,
    /// The slab holds no blocks of any class right now.
    SlabUnused,
}

impl Slab {
    /// A slab with no class and no memory: every pop misses. Used by the
    /// empty-heap sentinel, so the fast path needs no "initialised?" test.
    pub const fn empty() -> Slab {
        Slab {
            free: UnsafeCell::new(ptr::null_mut()),
            used: UnsafeCell::new(0),
            bump: UnsafeCell::new(0),
            bump_end: UnsafeCell::new(0),
            heap_next: UnsafeCell::new(ptr::null_mut()),
            heap_prev: UnsafeCell::new(ptr::null_mut()),
            _pad0: [0; 2],
            stride: AtomicU32::new(0),
            class: AtomicU32::new(0),
            base: AtomicUsize::new(0),
            _pad1: [0; 5],
            remote: RemoteQueue::new(),
            pool_next: UnsafeCell::new(ptr::null_mut()),
        }
    }

    pub(crate) fn set_base(&self, base: usize) {
        self.base.store(base, Relaxed);
    }

    /// The size class, if the slab has one.
    #[inline]
    pub fn class(&self) -> Option<usize> {
        match self.stride.load(Relaxed) {
            0 => None,
            _ => Some(self.class.load(Relaxed) as usize),
        }
    }

    /// Block stride (0 while classless).
    #[inline]
    pub fn stride(&self) -> usize {
        self.stride.load(Relaxed) as usize
    }

    /// Gives an empty slab a class. Its memory is carved lazily on refill.
    ///
    /// The caller owns the slab and it holds no blocks (`used == 0`, nothing in
    /// `remote`).
    pub fn format(&self, tok: &OwnerToken<'_>, class: usize) {
        debug_assert!(tok.is_for(&self.remote));
        let l = CLASSES[class];
        let base = self.base.load(Relaxed);
        debug_assert!(base != 0 && !self.remote.has_pending());
        // SAFETY: owner-only fields; the token proves we are the owner.
        unsafe {
            debug_assert_eq!(*self.used.get(), 0, "format of a live slab (lesson 5)");
            *self.free.get() = ptr::null_mut();
            *self.used.get() = 0;
            *self.bump.get() = base;
            *self.bump_end.get() = base + l.capacity as usize * l.stride as usize;
        }
        // The class before `stride`, which gates `block_of`.
        self.class.store(class as u32, Relaxed);
        self.stride.store(l.stride, Relaxed);
        let seg = crate::Segment::of_slab(self);
        seg.set_slot_class(seg.slot_of(self), class);
    }

    /// Pops a free block. The allocation fast path: load `free`, test, load
    /// the block's link, store it, increment `used`.
    #[inline(always)]
    pub fn pop(&self, tok: &OwnerToken<'_>) -> Option<BlockPtr> {
        debug_assert!(tok.is_for(&self.remote));
        // SAFETY: owner-only fields; `free` links only blocks of this slab.
        unsafe {
            let b = *self.free.get();
            if b.is_null() {
                return None;
            }
            *self.free.get() = crate::canary::next(b, crate::canary::key());
            *self.used.get() += 1;
            Some(BlockPtr::from_raw(NonNull::new_unchecked(b.cast())))
        }
    }

    /// Returns a block freed by the owner. Returns true if the slab is now
    /// empty (`used == 0`).
    #[inline(always)]
    pub fn push_local(&self, tok: &OwnerToken<'_>, b: BlockPtr) -> bool {
        debug_assert!(tok.is_for(&self.remote));
        let n = b.as_node().as_ptr();
        // SAFETY: owner-only fields; `b` is a block start of this slab that the
        // program gave back, so we may overwrite its first word.
        unsafe {
            crate::canary::link(n, *self.free.get(), crate::canary::key());
            *self.free.get() = n;
            debug_assert!(*self.used.get() > 0, "used underflow (lesson 8)");
            *self.used.get() -= 1;
            *self.used.get() == 0
        }
    }

    /// Refills an empty free list: first from remote frees, then by carving
    /// fresh blocks. Returns false if the slab is full.
    pub fn refill(&self, tok: &OwnerToken<'_>) -> bool {
        // SAFETY: owner-only fields.
        unsafe {
            debug_assert!((*self.free.get()).is_null());
            if self.collect_remote(tok) {
                return true;
            }
            let (bump, end) = (*self.bump.get(), *self.bump_end.get());
            if bump >= end {
                return false;
            }
            let stride = self.stride();
            let n = ((end - bump) / stride).min((CARVE_BATCH_BYTES / stride).max(1));
            // Link n blocks front to back; fresh memory needs no clearing.
            let key = crate::canary::key();
            let mut p = bump;
            for _ in 1..n {
                crate::canary::link(p as *mut Node, (p + stride) as *mut Node, key);
                p += stride;
            }
            crate::canary::link(p as *mut Node, ptr::null_mut(), key);
            *self.free.get() = bump as *mut Node;
            *self.bump.get() = bump + n * stride;
            true
        }
    }

    /// Takes up to `max` (>= 1) blocks off the free list for a thread cache,
    /// counting them as used. Returns the chain's first and last node and its
    /// length, or `None` if the free list is empty (call [`refill`](Self::refill)).
    #[inline]
    pub fn take(
        &self,
        tok: &OwnerToken<'_>,
        max: u32,
    ) -> Option<(NonNull<Node>, NonNull<Node>, u32)> {
        debug_assert!(tok.is_for(&self.remote) && max >= 1);
        // SAFETY: owner-only fields; `free` links only blocks of this slab.
        unsafe {
            let first = NonNull::new(*self.free.get())?;
            let key = crate::canary::key();
            let mut last = first.as_ptr();
            let mut after = crate::canary::next(last, key);
            let mut n = 1;
            while n < max && !after.is_null() {
                last = after;
                after = crate::canary::next(last, key);
                n += 1;
            }
            *self.free.get() = after;
            crate::canary::link(last, ptr::null_mut(), key);
            *self.used.get() += n;
            Some((first, NonNull::new_unchecked(last), n))
        }
    }

    /// Moves remote frees onto the local free list. True if any arrived.
    pub fn collect_remote(&self, tok: &OwnerToken<'_>) -> bool {
        let Some(d) = self.remote.drain(tok) else {
            return false;
        };
        // SAFETY: owner-only fields; drained nodes are blocks of this slab
        // that their freers gave up (Acquire in drain makes their links visible).
        unsafe {
            let key = crate::canary::key();
            let head = d.head.as_ptr();
            let mut tail = head;
            let mut n = 1u32;
            loop {
                let next = crate::canary::next(tail, key);
                if next.is_null() {
                    break;
                }
                tail = next;
                n += 1;
            }
            crate::canary::link(tail, *self.free.get(), key);
            *self.free.get() = head;
            debug_assert!(
                *self.used.get() >= n,
                "remote frees exceed used (double free?)"
            );
            *self.used.get() -= n;
        }
        true
    }

    /// Takes every remote free as one chain for the owner's thread cache,
    /// without walking it: queued and cached blocks both count as used, so
    /// nothing is counted, and the chain's links (null-terminated, written
    /// with [`canary::link`](crate::canary::link) by the freers) are verified
    /// one by one as the cache pops them. [`collect_remote`](Self::collect_remote)
    /// instead walks the whole chain at once, a dependent load per block, each
    /// block last written by another core. `None` if no remote free arrived.
    #[inline]
    pub fn take_remote(&self, tok: &OwnerToken<'_>) -> Option<NonNull<Node>> {
        self.remote.drain(tok).map(|d| d.head)
    }

    /// Blocks the program holds (plus any not yet collected from `remote`).
    #[inline]
    pub fn used(&self, tok: &OwnerToken<'_>) -> u32 {
        debug_assert!(tok.is_for(&self.remote));
        // SAFETY: owner-only field.
        unsafe { *self.used.get() }
    }

    /// True if the local free list has a block.
    #[inline]
    pub fn has_free(&self, tok: &OwnerToken<'_>) -> bool {
        debug_assert!(tok.is_for(&self.remote));
        // SAFETY: owner-only fields.
        unsafe { !(*self.free.get()).is_null() || *self.bump.get() < *self.bump_end.get() }
    }

    /// Validates `p` as a block start of this slab and converts it.
    ///
    /// Reads only this slab's metadata (never memory at `p`). `p` must lie in
    /// this slab's address range, which the caller established through the
    /// registry and the segment layout.
    #[inline]
    pub fn block_of(&self, p: UserPtr) -> Result<BlockPtr, BadPointer> {
        if self.stride.load(Relaxed) == 0 {
            return Err(BadPointer::SlabUnused);
        }
        let off = p.addr().wrapping_sub(self.base.load(Relaxed));
        let k = &CHECKS[self.class.load(Relaxed) as u8 as usize];
        // `accepts` masks to the slab size; reject what lies past it first.
        if off > k.slab_mask as usize || !k.accepts(off as u32) {
            return Err(BadPointer::NotBlockStart);
        }
        Ok(BlockPtr::from_raw(p.as_non_null()))
    }

    /// Pushes a chain of blocks of this slab, freed by a thread that does not
    /// own it, with one atomic operation: `first` reaches `last` (`None`: a
    /// one-block chain) through links written with [`crate::canary::link`];
    /// the tail's link is written here.
    ///
    /// # Safety
    /// Every block of the chain is a block start of this slab that the program
    /// gave back and that nobody else uses, and the chain's links are intact.
    #[inline]
    pub unsafe fn push_remote_chain(
        &self,
        first: BlockPtr,
        last: Option<BlockPtr>,
    ) -> remote_queue::Push {
        let key = crate::canary::key();
        let tail = last.as_ref().unwrap_or(&first).as_node();
        // SAFETY: per the contract; the link writer writes the tail's two
        // guard words.
        unsafe {
            self.remote
                .push_chain_with(first.as_node(), tail, |n, next| {
                    crate::canary::link(n, next, key)
                })
        }
    }

    /// Pushes a block freed by a thread that does not own the slab.
    #[inline]
    pub fn push_remote(&self, b: BlockPtr) -> remote_queue::Push {
        // SAFETY: `b` is a block start of this slab that the program gave back;
        // nobody else uses it until the owner drains it: a one-block chain.
        unsafe { self.push_remote_chain(b, None) }
    }

    // ---- intrusive list links: heap list (owner only) and pool list (pool lock) ----

    /// Owner's list link.
    ///
    /// # Safety
    /// Only the slab's owner may call this, and not concurrently with itself.
    #[inline]
    pub unsafe fn heap_links(&self) -> (&UnsafeCell<*mut Slab>, &UnsafeCell<*mut Slab>) {
        (&self.heap_prev, &self.heap_next)
    }

    /// Pool's list link.
    ///
    /// # Safety
    /// Only code holding the pool's lock may use this, and only while no thread
    /// owns the slab.
    #[inline]
    pub unsafe fn pool_link(&self) -> &UnsafeCell<*mut Slab> {
        &self.pool_next
    }
}

#[cfg(test)]
mod tests {
    use super::{DivMagic, CHECKS};
    use crate::size_class::{CLASSES, NUM_CLASSES};

    #[test]
    fn div_magic_is_exact_for_every_class_and_offset() {
        for l in CLASSES.iter() {
            let m = DivMagic::new(l.stride);
            for off in 0..l.capacity * l.stride + 64 {
                assert_eq!(
                    m.is_multiple(off),
                    off % l.stride == 0,
                    "stride {} off {off}",
                    l.stride
                );
            }
        }
    }

    #[test]
    fn checks_accept_exactly_the_block_starts_of_every_slab() {
        for (c, l) in CLASSES.iter().enumerate() {
            let slab = l.kind.slab_size() as u32;
            let span = l.capacity * l.stride;
            // Two slabs of the segment: slot 1 and slot 2 (segment offsets).
            for base in [slab, 2 * slab] {
                for off in 0..slab {
                    let want = off % l.stride == 0 && off < span;
                    assert_eq!(
                        CHECKS[c].accepts(base + off),
                        want,
                        "class {c} stride {} off {off}",
                        l.stride
                    );
                }
            }
        }
        for (c, k) in CHECKS.iter().enumerate().skip(NUM_CLASSES) {
            for rel in [0, 16, 65536, 1 << 20, u32::MAX] {
                assert!(!k.accepts(rel), "row {c} is not a class");
            }
        }
    }
}
