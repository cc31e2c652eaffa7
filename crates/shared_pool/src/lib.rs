//! `shared_pool`: the process-wide pool of segments and slabs.
//!
//! - Hands slabs to heaps: first a partially used slab of the class that
//!   another thread gave up (adoption), then a free slot of an existing segment
//!   (resident pages first), and only then a newly mapped segment.
//! - Takes back empty slabs, and the partly used slabs of exiting threads.
//! - Returns memory to the OS: at most [`DIRTY_BUDGET`] bytes of empty slabs
//!   stay resident; beyond that an emptied slab is decommitted at once, and a
//!   segment whose slabs are all empty is unmapped when another such segment
//!   is already cached. So memory goes back to the OS within the free that
//!   empties it, with no timer and no call from the program.
//! - Owns the process's [`Registry`] and registers every region it maps
//!   before anyone can see it, and unregisters before unmapping.
//!
//! Concurrency: one spin lock ([`SpinLock`]) guards the lists. It is taken on
//! slow paths only (a heap's slab refill or return, a thread's exit, a woken
//! slab, a large block), never while calling anything that could allocate.
//! Lock order, for `fork`: core_alloc's fallback-heap lock, then its heap-list
//! lock, then this pool lock.
//!
//! Under `--cfg loom` the crate is only its [`SpinLock`], on loom's atomics:
//! the pool proper lives in statics and `mmap`ped segments (and `superslab`
//! does not build under loom), so `tests/loom_pool_handoff.rs` models the
//! hand-off with this lock, the real `remote_queue` and a miniature of the
//! lists.
#![cfg_attr(not(any(test, loom)), no_std)]

#[cfg(not(loom))]
use core::cell::UnsafeCell;
#[cfg(not(loom))]
use core::ptr::{self, NonNull};
#[cfg(not(loom))]
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicBool, Ordering};
// Under loom a spin is a yield, so the model sees the waiting thread.
#[cfg(not(loom))]
use core::hint::spin_loop;
#[cfg(loom)]
use loom::{hint::spin_loop, thread::yield_now};
#[cfg(not(loom))]
use registry::{Granule, LeafSource, Region, Registry, LEAF_BYTES};
#[cfg(not(loom))]
use remote_queue::OwnerToken;
#[cfg(not(loom))]
use superslab::{os, LargeRegion, Segment, Slab, SlabKind, CLASSES, NUM_CLASSES};

// Segments are registry granules: one segment, one registry entry.
#[cfg(not(loom))]
const _: () = assert!(superslab::SEGMENT_SHIFT == registry::GRANULE_SHIFT);

/// Resident bytes of empty slabs kept for reuse before decommitting.
pub const DIRTY_BUDGET: usize = 4 << 20;

/// Gives the CPU away while the lock stays taken.
#[cfg(not(loom))]
#[inline(always)]
fn yield_now() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

/// A test-and-test-and-set lock that yields the CPU after a short spin.
/// Allocation-free and usable in a `static`.
pub struct SpinLock {
    locked: AtomicBool,
}

impl Default for SpinLock {
    fn default() -> Self {
        Self::new()
    }
}

impl SpinLock {
    /// An unlocked lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
        }
    }
    /// An unlocked lock (loom's atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
        }
    }
    /// Takes the lock.
    #[inline]
    pub fn lock(&self) {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        self.lock_slow();
    }
    #[cold]
    fn lock_slow(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 64 {
                    spin_loop();
                    spins += 1;
                } else {
                    yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
    /// Releases the lock.
    #[inline]
    pub fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
    /// Resets the lock in a forked child, where its holder no longer exists.
    ///
    /// # Safety
    /// Only in the child right after `fork`, with one thread running.
    pub unsafe fn reset_after_fork(&self) {
        self.locked.store(false, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
struct OsLeaves;
#[cfg(not(loom))]
// SAFETY: os::map returns zeroed, page-aligned memory that stays mapped; a
// leaf is unmapped only if it was never published.
unsafe impl LeafSource for OsLeaves {
    fn alloc_leaf(&self) -> Option<NonNull<u8>> {
        os::map(LEAF_BYTES)
    }
    unsafe fn free_leaf(&self, leaf: NonNull<u8>) {
        // SAFETY: from alloc_leaf, never published.
        unsafe { os::unmap(leaf.as_ptr(), LEAF_BYTES) }
    }
}

#[cfg(not(loom))]
static REGISTRY: Registry = Registry::new();
/// One byte per granule for segments (exactly one granule each), the only
/// record of them: a free's ownership test is a single load. Large regions
/// live in `REGISTRY`; foreign pointers miss both.
#[cfg(not(loom))]
static SEGMENT_MAP: registry::GranuleMap = registry::GranuleMap::new();

/// Looks `addr` up: the segment map first (one load), then the registry.
#[cfg(not(loom))]
#[inline(always)]
pub fn lookup(addr: usize) -> Option<Region> {
    match SEGMENT_MAP.lookup(addr) {
        Some(r) => Some(r),
        None => find_large(addr),
    }
}

/// The segment holding `addr`, if any: one load from the segment granule
/// map (the free fast path). Its tag is the segment's slab shift.
#[cfg(not(loom))]
#[inline(always)]
pub fn find_segment(addr: usize) -> Option<Granule> {
    SEGMENT_MAP.find(addr)
}

/// The large region holding `addr`, if any: the registry alone, for a caller
/// that has already asked [`find_segment`] (and [`lookup`]'s miss path).
#[cfg(not(loom))]
#[cold]
#[inline(never)]
pub fn find_large(addr: usize) -> Option<Region> {
    REGISTRY.lookup(addr)
}

#[cfg(not(loom))]
fn register(base: usize, len: usize, tag: u8) {
    if let Err(e) = REGISTRY.register_tagged(base, len, tag, &OsLeaves) {
        // Lesson 3: a region we cannot register must not exist silently.
        os::fatal(e.as_str(), base);
    }
}

#[cfg(not(loom))]
struct Lists {
    /// Per class: slabs with no owner that hold free or returning blocks.
    partial: [*mut Slab; NUM_CLASSES],
    /// Per slab kind: segments with at least one free slot.
    segs: [*mut Segment; 2],
    /// Per kind: segments whose every slot is free.
    idle_segs: [usize; 2],
    dirty_bytes: usize,
}

#[cfg(not(loom))]
struct Pool {
    lock: SpinLock,
    lists: UnsafeCell<Lists>,
}

#[cfg(not(loom))]
// SAFETY: `lists` is only accessed with `lock` held.
unsafe impl Sync for Pool {}

#[cfg(not(loom))]
static POOL: Pool = Pool {
    lock: SpinLock::new(),
    lists: UnsafeCell::new(Lists {
        partial: [ptr::null_mut(); NUM_CLASSES],
        segs: [ptr::null_mut(); 2],
        idle_segs: [0; 2],
        dirty_bytes: 0,
    }),
};

#[cfg(not(loom))]
static SEGMENTS: AtomicUsize = AtomicUsize::new(0);
#[cfg(not(loom))]
static LARGE_REGIONS: AtomicUsize = AtomicUsize::new(0);
#[cfg(not(loom))]
static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Counters for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Segments currently mapped.
    pub segments: usize,
    /// Large regions currently mapped.
    pub large_regions: usize,
    /// Bytes in large regions.
    pub large_bytes: usize,
    /// Resident bytes of empty slabs kept for reuse.
    pub dirty_bytes: usize,
}

/// Current counters.
#[cfg(not(loom))]
pub fn stats() -> PoolStats {
    let g = Guard::new();
    let dirty = g.lists().dirty_bytes;
    drop(g);
    PoolStats {
        segments: SEGMENTS.load(Ordering::Relaxed),
        large_regions: LARGE_REGIONS.load(Ordering::Relaxed),
        large_bytes: LARGE_BYTES.load(Ordering::Relaxed),
        dirty_bytes: dirty,
    }
}

#[cfg(not(loom))]
struct Guard;
#[cfg(not(loom))]
impl Guard {
    fn new() -> Self {
        POOL.lock.lock();
        Guard
    }
    #[allow(clippy::mut_from_ref)]
    fn lists(&self) -> &mut Lists {
        // SAFETY: the guard holds the pool lock.
        unsafe { &mut *POOL.lists.get() }
    }
}
#[cfg(not(loom))]
impl Drop for Guard {
    fn drop(&mut self) {
        POOL.lock.unlock();
    }
}

#[cfg(not(loom))]
fn kind_index(k: SlabKind) -> usize {
    k as usize
}

#[cfg(not(loom))]
fn full_mask(seg: &Segment) -> u64 {
    let n = seg.slab_count();
    (if n == 64 { u64::MAX } else { (1u64 << n) - 1 }) & !1
}

/// Links a segment into its kind's free-slot list. Lock held.
#[cfg(not(loom))]
fn list_segment(l: &mut Lists, seg: &Segment) {
    // SAFETY: lock held (we have `&mut Lists`).
    let st = unsafe { seg.pool_state() };
    if st.listed {
        return;
    }
    let k = kind_index(seg.slab_kind());
    let me = seg as *const Segment as *mut Segment;
    st.listed = true;
    st.prev = ptr::null_mut();
    st.next = l.segs[k];
    if !st.next.is_null() {
        // SAFETY: listed segments are live; lock held.
        unsafe { (*st.next).pool_state().prev = me };
    }
    l.segs[k] = me;
}

#[cfg(not(loom))]
fn unlist_segment(l: &mut Lists, seg: &Segment) {
    // SAFETY: lock held.
    let st = unsafe { seg.pool_state() };
    if !st.listed {
        return;
    }
    let k = kind_index(seg.slab_kind());
    // SAFETY: neighbours are live listed segments; lock held.
    unsafe {
        if st.prev.is_null() {
            l.segs[k] = st.next;
        } else {
            (*st.prev).pool_state().next = st.next;
        }
        if !st.next.is_null() {
            (*st.next).pool_state().prev = st.prev;
        }
    }
    st.listed = false;
    st.next = ptr::null_mut();
    st.prev = ptr::null_mut();
}

/// Where a slab handed out by [`acquire`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Someone else's partly used slab, now the caller's.
    Adopted,
    /// An empty slab, formatted for the class.
    Fresh,
}

/// Hands the caller (`owner`, a non-zero id) a slab of `class`, claimed for it.
/// Returns `None` only if the OS refuses memory.
#[cfg(not(loom))]
pub fn acquire(class: usize, owner: usize) -> Option<(&'static Slab, Source)> {
    let kind = CLASSES[class].kind;
    let k = kind_index(kind);
    loop {
        {
            let g = Guard::new();
            let l = g.lists();
            let s = l.partial[class];
            if !s.is_null() {
                // SAFETY: listed slabs are live and unowned; lock held.
                let slab = unsafe { &*s };
                // SAFETY: lock held and the slab is unowned.
                unsafe { l.partial[class] = *slab.pool_link().get() };
                let tok = slab
                    .remote
                    .claim(owner)
                    .unwrap_or_else(|| os::fatal("pool: listed slab is owned", s as usize));
                let _ = tok; // the claim is the point; the caller re-vouches later
                return Some((slab, Source::Adopted));
            }
            let seg = l.segs[k];
            if !seg.is_null() {
                // SAFETY: listed segments are live.
                let seg = unsafe { &*seg };
                // SAFETY: lock held.
                let st = unsafe { seg.pool_state() };
                let was_idle = st.free_mask == full_mask(seg);
                let prefer = st.free_mask & st.dirty_mask;
                let pick = if prefer != 0 { prefer } else { st.free_mask };
                let i = pick.trailing_zeros() as usize;
                st.free_mask &= !(1 << i);
                if st.dirty_mask & (1 << i) != 0 {
                    st.dirty_mask &= !(1 << i);
                    l.dirty_bytes -= kind.slab_size();
                }
                if was_idle {
                    l.idle_segs[k] -= 1;
                }
                if st.free_mask == 0 {
                    unlist_segment(l, seg);
                }
                let slab = seg.slab(i);
                let tok = slab
                    .remote
                    .claim(owner)
                    .unwrap_or_else(|| os::fatal("pool: free slab is owned", i));
                slab.format(&tok, class);
                return Some((slab, Source::Fresh));
            }
        }
        // No slot anywhere: map a segment outside the lock, then retry.
        let seg = Segment::create(kind)?;
        // SAFETY: freshly created; we only read its shift.
        let tag = unsafe { seg.as_ref() }.tag();
        // Segments live in the granule map only (one granule each); the
        // two-level registry holds large regions.
        if let Err(e) = SEGMENT_MAP.set(seg.as_ptr() as usize, tag) {
            os::fatal(e.as_str(), seg.as_ptr() as usize);
        }
        SEGMENTS.fetch_add(1, Ordering::Relaxed);
        let g = Guard::new();
        let l = g.lists();
        // SAFETY: freshly created and registered; only we know it.
        let s = unsafe { seg.as_ref() };
        l.idle_segs[k] += 1;
        list_segment(l, s);
    }
}

/// Puts a slab on its class's partial list for adoption. The slab must have
/// been released (no owner) by its former owner, or woken from detachment by
/// the caller's push ([`remote_queue::Push::Woke`]), and be on no list.
#[cfg(not(loom))]
pub fn publish_partial(slab: &'static Slab) {
    let class = slab.class().unwrap_or_else(|| {
        os::fatal(
            "pool: publishing a classless slab",
            slab as *const _ as usize,
        )
    });
    debug_assert_eq!(slab.remote.owner(), remote_queue::NO_OWNER);
    let g = Guard::new();
    let l = g.lists();
    // SAFETY: lock held; the slab is unowned and on no list.
    unsafe { *slab.pool_link().get() = l.partial[class] };
    l.partial[class] = slab as *const Slab as *mut Slab;
}

/// Gives back a slab that holds no blocks. Consumes the owner's token.
#[cfg(not(loom))]
pub fn release_empty(slab: &'static Slab, tok: OwnerToken<'static>) {
    debug_assert_eq!(slab.used(&tok), 0);
    slab.remote.release(tok);
    let seg = Segment::of_slab(slab);
    let kind = seg.slab_kind();
    let k = kind_index(kind);
    let i = seg.slot_of(slab);
    let g = Guard::new();
    let l = g.lists();
    // SAFETY: lock held.
    let st = unsafe { seg.pool_state() };
    debug_assert!(st.free_mask & (1 << i) == 0, "slab released twice");
    st.free_mask |= 1 << i;
    if l.dirty_bytes + kind.slab_size() <= DIRTY_BUDGET {
        st.dirty_mask |= 1 << i;
        l.dirty_bytes += kind.slab_size();
    } else {
        let (p, len) = seg.slot_range(i);
        // SAFETY: the slot is free and unowned; its contents are dead. The lock
        // keeps anyone from acquiring it before the pages are dropped.
        unsafe { os::decommit(p, len) };
    }
    list_segment(l, seg);
    if st.free_mask == full_mask(seg) {
        if l.idle_segs[k] >= 1 {
            // Another idle segment is cached: give this one back to the OS.
            unlist_segment(l, seg);
            l.dirty_bytes -= st.dirty_mask.count_ones() as usize * kind.slab_size();
            drop(g);
            let base = seg as *const Segment as usize;
            SEGMENT_MAP.clear(base);
            SEGMENTS.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: every slot is free (so unowned and blockless) and the
            // segment is off every list and unregistered.
            unsafe { Segment::destroy(NonNull::from(seg)) };
            return;
        }
        l.idle_segs[k] += 1;
    }
}

/// Drains the remote queues of every slab on the partial lists and frees
/// those that turn out empty. A slab published as partial (by an exiting
/// thread) whose blocks all come home through its remote queue would
/// otherwise hold its memory until some thread adopts it.
#[cfg(not(loom))]
fn trim_partials() -> bool {
    // Never a heap's address, so never a real owner.
    let trimmer = &POOL as *const Pool as usize;
    let mut released = false;
    for c in 0..NUM_CLASSES {
        let mut s = {
            let g = Guard::new();
            let l = g.lists();
            core::mem::replace(&mut l.partial[c], ptr::null_mut())
        };
        // The detached list is reachable by nobody else now.
        while !s.is_null() {
            // SAFETY: listed slabs are live; we own the detached list.
            let slab: &'static Slab = unsafe { &*s };
            // SAFETY: we own the detached list and nobody owns the slab.
            s = unsafe { *slab.pool_link().get() };
            let tok = slab.remote.claim(trimmer).unwrap_or_else(|| {
                os::fatal("pool: listed slab is owned", slab as *const Slab as usize)
            });
            slab.collect_remote(&tok);
            if slab.used(&tok) == 0 {
                release_empty(slab, tok);
                released = true;
            } else {
                slab.remote.release(tok);
                publish_partial(slab);
            }
        }
    }
    released
}

/// Drains partial slabs, decommits every resident empty slab and unmaps every
/// idle segment (`malloc_trim`). Returns true if anything was released.
#[cfg(not(loom))]
pub fn trim() -> bool {
    let mut released = trim_partials();
    loop {
        let g = Guard::new();
        let l = g.lists();
        let mut victim: *mut Segment = ptr::null_mut();
        for k in 0..2 {
            let mut s = l.segs[k];
            while !s.is_null() {
                // SAFETY: listed segments are live; lock held.
                let seg = unsafe { &*s };
                // SAFETY: lock held.
                let st = unsafe { seg.pool_state() };
                let next = st.next;
                if st.free_mask == full_mask(seg) {
                    victim = s;
                    break;
                }
                let slab_size = seg.slab_kind().slab_size();
                let mut d = st.dirty_mask;
                while d != 0 {
                    let i = d.trailing_zeros() as usize;
                    d &= d - 1;
                    let (p, len) = seg.slot_range(i);
                    // SAFETY: free slot, lock held.
                    unsafe { os::decommit(p, len) };
                    l.dirty_bytes -= slab_size;
                    released = true;
                }
                st.dirty_mask = 0;
                s = next;
            }
            if !victim.is_null() {
                break;
            }
        }
        if victim.is_null() {
            return released;
        }
        // SAFETY: found on a list under the lock.
        let seg = unsafe { &*victim };
        let k = kind_index(seg.slab_kind());
        unlist_segment(l, seg);
        l.idle_segs[k] -= 1;
        // SAFETY: lock held.
        l.dirty_bytes -= unsafe { seg.pool_state() }.dirty_mask.count_ones() as usize
            * seg.slab_kind().slab_size();
        drop(g);
        SEGMENT_MAP.clear(victim as usize);
        SEGMENTS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: idle (every slot free), unlisted, unregistered.
        unsafe { Segment::destroy(NonNull::new_unchecked(victim)) };
        released = true;
    }
}

/// Maps and registers a large region for `size` bytes aligned to `align`.
#[cfg(not(loom))]
pub fn map_large(size: usize, align: usize) -> Option<&'static mut LargeRegion> {
    let h = LargeRegion::create(size, align)?;
    // SAFETY: freshly created, ours alone.
    let r = unsafe { &mut *h.as_ptr() };
    register(h.as_ptr() as usize, r.map_len(), superslab::TAG_LARGE);
    LARGE_REGIONS.fetch_add(1, Ordering::Relaxed);
    LARGE_BYTES.fetch_add(r.map_len(), Ordering::Relaxed);
    Some(r)
}

/// Unregisters and unmaps a large region, and remembers its block's address
/// (see [`freed_large`]).
///
/// # Safety
/// The region's block was freed by the program; nothing refers to it.
#[cfg(not(loom))]
pub unsafe fn unmap_large(r: &'static mut LargeRegion) {
    let (base, len) = (r as *mut LargeRegion as usize, r.map_len());
    let user = r.user().addr();
    REGISTRY.unregister(base, len);
    LARGE_REGIONS.fetch_sub(1, Ordering::Relaxed);
    LARGE_BYTES.fetch_sub(len, Ordering::Relaxed);
    // SAFETY: unregistered and unreferenced per the contract.
    unsafe { LargeRegion::destroy(NonNull::from(r)) }
    bury(user);
}

/// How many recently freed large blocks [`freed_large`] remembers.
#[cfg(not(loom))]
pub const FREED_LARGE_MEMORY: usize = 64;

/// User addresses of the last [`FREED_LARGE_MEMORY`] large blocks freed, in a
/// ring. Entries are hints only: [`freed_large`] also requires the address to
/// be unmapped when it is asked, so a stale or overwritten entry can make it
/// miss a double free but never report one that is not.
#[cfg(not(loom))]
static GRAVEYARD: [AtomicUsize; FREED_LARGE_MEMORY] =
    [const { AtomicUsize::new(0) }; FREED_LARGE_MEMORY];
#[cfg(not(loom))]
static GRAVE_NEXT: AtomicUsize = AtomicUsize::new(0);

#[cfg(not(loom))]
fn bury(user: usize) {
    let i = GRAVE_NEXT.fetch_add(1, Ordering::Relaxed) % FREED_LARGE_MEMORY;
    GRAVEYARD[i].store(user, Ordering::Relaxed);
}

/// True if `addr`, which the registry does not know, is the block address of
/// one of the last [`FREED_LARGE_MEMORY`] large blocks hakmem freed and its
/// page is unmapped now: a second free (or use) of a large block.
///
/// Judging only unmapped addresses makes a false report impossible: a page
/// that is not mapped holds nobody's live block, so a pointer into it cannot
/// be a valid argument to `free` whoever allocated it. If the range was mapped
/// again (by hakmem, glibc or anyone), the answer is false and the caller
/// treats the pointer as it would any other foreign one. Lock-free; costs a
/// mask test for almost every foreign pointer (block addresses of large
/// regions sit at a power-of-two offset of at least 64 from a 4 MiB
/// boundary, or on one), a scan of the ring otherwise, and one `mincore` on a
/// match.
#[cfg(not(loom))]
#[cold]
#[inline(never)]
pub fn freed_large(addr: usize) -> bool {
    let off = addr & (superslab::SEGMENT_SIZE - 1);
    if !(off == 0 || (off.is_power_of_two() && off >= superslab::segment::LARGE_HEADER)) {
        return false;
    }
    GRAVEYARD.iter().any(|g| g.load(Ordering::Relaxed) == addr) && !os::is_mapped(addr)
}

/// Resizes a large region in place to hold `size` bytes, keeping it
/// registered with its new extent. False if it cannot be done in place.
///
/// # Safety
/// The caller owns the region's block (it is being reallocated).
#[cfg(not(loom))]
pub unsafe fn resize_large(r: &mut LargeRegion, size: usize) -> bool {
    let (base, old) = (r as *mut LargeRegion as usize, r.map_len());
    REGISTRY.unregister(base, old);
    // SAFETY: unregistered for the duration; owned by the caller.
    let ok = unsafe { r.resize_in_place(size) };
    register(base, r.map_len(), superslab::TAG_LARGE);
    if ok {
        let new = r.map_len();
        if new >= old {
            LARGE_BYTES.fetch_add(new - old, Ordering::Relaxed);
        } else {
            LARGE_BYTES.fetch_sub(old - new, Ordering::Relaxed);
        }
    }
    ok
}

/// Maps `len` bytes of zeroed metadata memory that is never returned (heap
/// structures). Keeps all OS calls behind this box and `superslab`.
#[cfg(not(loom))]
pub fn meta_chunk(len: usize) -> Option<NonNull<u8>> {
    os::map(len)
}

/// Takes the pool lock before `fork` (second in hakmem's lock order).
#[cfg(not(loom))]
pub fn fork_prepare() {
    POOL.lock.lock();
}
/// Releases the pool lock in the parent after `fork`.
#[cfg(not(loom))]
pub fn fork_parent() {
    POOL.lock.unlock();
}
/// Resets the pool lock in the child after `fork`.
///
/// # Safety
/// Only in the child right after `fork`.
#[cfg(not(loom))]
pub unsafe fn fork_child() {
    // SAFETY: per the contract.
    unsafe { POOL.lock.reset_after_fork() };
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use superslab::class_of;

    // The pool is process-global: run the scenarios in one test, in order.
    #[test]
    fn acquire_release_adopt_and_return_memory() {
        let c = class_of(64);
        let (a, src) = acquire(c, 11).unwrap();
        assert_eq!(src, Source::Fresh);
        assert!(a.remote.is_owned_by(11));
        assert!(
            lookup(a as *const Slab as usize).is_some(),
            "segment registered"
        );
        // A partly used slab published by its owner is adopted by the next caller.
        // SAFETY: we own `a`.
        let tok = unsafe { a.remote.assume_owned(11) };
        assert!(a.refill(&tok));
        let b = a.pop(&tok).unwrap();
        a.remote.release(tok);
        publish_partial(a);
        let (a2, src) = acquire(c, 12).unwrap();
        assert!(core::ptr::eq(a, a2));
        assert_eq!(src, Source::Adopted);
        // SAFETY: we own it now as 12.
        let tok = unsafe { a2.remote.assume_owned(12) };
        assert!(a2.push_local(&tok, a2.block_of(b.into_user()).unwrap()));
        release_empty(a2, tok);

        // Fill more than two segments, then give everything back: the pool
        // keeps at most one idle segment per kind and a bounded dirty set.
        let before = stats().segments;
        let mut held = std::vec::Vec::new();
        for _ in 0..150 {
            let (s, _) = acquire(c, 13).unwrap();
            held.push(s);
        }
        assert!(stats().segments >= before + 2);
        for s in held {
            // SAFETY: each was acquired for owner 13 above.
            let tok = unsafe { s.remote.assume_owned(13) };
            release_empty(s, tok);
        }
        let st = stats();
        assert!(st.dirty_bytes <= DIRTY_BUDGET);
        assert!(st.segments <= 2, "idle segments returned to the OS: {st:?}");
        trim();
        assert_eq!(stats().dirty_bytes, 0);

        // Large regions are registered exactly over their extent.
        let r = map_large(1 << 20, 16).unwrap();
        let user = r.user().addr();
        assert!(lookup(user + (1 << 20) - 1).is_some());
        // SAFETY: we own the region.
        assert!(unsafe { resize_large(r, 100_000) });
        assert!(lookup(user + 99_999).is_some());
        assert!(lookup(user + (1 << 20) - 1).is_none());
        // SAFETY: unreferenced.
        unsafe { unmap_large(r) };
        assert!(lookup(user).is_none());
        assert_eq!(stats().large_regions, 0);
        // Its address is remembered while it stays unmapped, and only then.
        assert!(freed_large(user));
        assert!(!freed_large(user + 16));
        let again = os::map(4096).unwrap();
        assert!(
            !freed_large(again.as_ptr() as usize),
            "never freed by hakmem"
        );
        let r = map_large(300_000, 1 << 16).unwrap();
        let aligned = r.user().addr();
        // SAFETY: unreferenced.
        unsafe { unmap_large(r) };
        assert!(freed_large(aligned));
        // SAFETY: the page was never mapped by hakmem; a fixed mapping puts
        // one over the freed block, as glibc or anyone else might.
        let over = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_eq!(over as usize, aligned);
        assert!(!freed_large(aligned), "mapped again: not judged");
        // SAFETY: our test mappings.
        unsafe {
            os::unmap(over.cast(), 4096);
            os::unmap(again.as_ptr(), 4096);
        }
    }
}
