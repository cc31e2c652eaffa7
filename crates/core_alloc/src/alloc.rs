//! The allocation paths: small and medium blocks from the heap's slabs, large
//! blocks mapped directly, plus realloc, aligned allocation and usable size.

use crate::heap::{self, empty_slab, CacheBin, Heap};
use core::ptr::{self, NonNull};
use registry::{Granule, Region};
use remote_queue::{Node, Push};
use superslab::canary;
use superslab::size_class::{stride, LUT_MAX};
use superslab::{
    class_of, region_kind, BlockPtr, LargeRegion, RegionKind, Segment, Slab, UserPtr, CLASSES,
    MEDIUM_MAX, NUM_CLASSES, SEGMENT_SIZE, TAG_LARGE,
};

/// Why a pointer given back to hakmem is not one hakmem handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FreeError {
    /// Points into a hakmem region but not at the start of a block.
    NotBlockStart,
    /// Points into a part of a region that holds no blocks.
    NoBlockHere,
    /// A block that is free already (its guard words say so).
    DoubleFree,
}

impl From<superslab::BadPointer> for FreeError {
    fn from(e: superslab::BadPointer) -> Self {
        match e {
            superslab::BadPointer::NotBlockStart => Self::NotBlockStart,
            superslab::BadPointer::SlabUnused => Self::NoBlockHere,
        }
    }
}

impl FreeError {
    /// A short fixed description, usable without allocating.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotBlockStart => "invalid free: pointer is inside a block, not at its start",
            Self::NoBlockHere => "invalid free: pointer is not in any allocated block",
            Self::DoubleFree => canary::DOUBLE_FREE,
        }
    }
}

/// The allocation fast path: a block from the calling thread's cache if
/// `size` is small and the cache has one; `None` otherwise (then call
/// [`malloc`]). No call, no stack frame: one TLS load and a list pop.
#[inline(always)]
pub fn malloc_fast(size: usize) -> Option<UserPtr> {
    if size <= LUT_MAX {
        let h = heap::current();
        // SAFETY: the calling thread's own cache; a sentinel's is empty.
        unsafe { cache_pop(h.small_bin(size)) }
    } else {
        None
    }
}

/// [`malloc`] after [`malloc_fast`] came back empty: the same result without
/// popping the cache bin that was just found empty again.
#[inline]
pub fn malloc_after_miss(size: usize) -> Option<UserPtr> {
    if size <= LUT_MAX {
        return alloc_slow(class_of(size));
    }
    malloc_big(size)
}

/// Allocates `size` bytes (16-aligned). `None` means out of memory.
#[inline(always)]
pub fn malloc(size: usize) -> Option<UserPtr> {
    if size <= LUT_MAX {
        return alloc_class(class_of(size));
    }
    malloc_big(size)
}

#[inline(never)]
fn malloc_big(size: usize) -> Option<UserPtr> {
    if size > isize::MAX as usize {
        return None;
    }
    if size <= MEDIUM_MAX {
        alloc_class(class_of(size))
    } else {
        large(size, 16)
    }
}

/// Pops a block of class `c` from the thread's cache. Fast path: one TLS
/// load, then a single-writer list pop in the heap (no atomics, no slab
/// metadata, one branch).
#[inline(always)]
fn alloc_class(c: usize) -> Option<UserPtr> {
    let h = heap::current();
    // SAFETY: the calling thread's own cache; a sentinel's is empty and the
    // miss path writes nothing.
    if let Some(p) = unsafe { cache_pop(h.cache_bin(c)) } {
        return Some(p);
    }
    alloc_slow(c)
}

/// Pops a block from a thread cache bin, clearing its free mark.
///
/// # Safety
/// `bin` is the calling thread's own bin (or the locked fallback heap's);
/// its nodes are free blocks of its class.
#[inline(always)]
unsafe fn cache_pop(bin: *mut CacheBin) -> Option<UserPtr> {
    // SAFETY: per the contract.
    unsafe {
        let b = (*bin).head;
        if !b.is_null() {
            let next = canary::next(b, (*bin).key());
            (*bin).head = next;
            prefetch(next);
            canary::on_alloc(b);
            return Some(UserPtr::from_non_null(NonNull::new_unchecked(b.cast())));
        }
    }
    None
}

/// Asks for the line of `p`, about to be freed, in a writable state before
/// `free` has validated it: the double-free check reads the block's guard
/// word some twenty instructions later, and the push writes both words. The
/// block was last written long ago, often by another core; without the hint
/// `free` waits for the whole miss at the check (in a Larson 2T profile, half
/// of `free`'s samples). A hint only: no fault for any address, even null.
#[inline(always)]
pub fn prefetch_for_free(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetchw` never faults and has no architectural effect.
    unsafe {
        core::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Starts loading the line of the block the next pop of this bin will hand
/// out (and read the guard words of), so that pop does not wait for it: a
/// bin's blocks were freed long before, often by another core. A hint only:
/// no fault, even for null.
#[inline(always)]
pub(crate) fn prefetch(p: *mut Node) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults and has no architectural effect.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Pushes a validated, checked free block onto a thread cache bin's freed
/// list.
///
/// # Safety
/// `bin` is the calling thread's own bin with room (`nfreed < limit`); `b`
/// is a validated block of the bin's class that `canary::is_free` passed;
/// `key` is the bin's secret copy.
#[inline(always)]
unsafe fn cache_push(bin: *mut CacheBin, b: BlockPtr, key: usize) {
    let n = b.into_user().as_ptr().cast::<Node>();
    // SAFETY: per the contract.
    unsafe {
        canary::link(n, (*bin).freed, key);
        (*bin).freed = n;
        (*bin).nfreed += 1;
    }
}

#[cold]
#[inline(never)]
fn alloc_slow(c: usize) -> Option<UserPtr> {
    let h = heap::current();
    if h.is_sentinel() {
        if heap::is_dead(h) {
            return heap::with_fallback(|f| refill_and_pop(f, c)).flatten();
        }
        return refill_and_pop(heap::thread_init()?, c);
    }
    refill_and_pop(h, c)
}

/// Refills class `c`'s cache, from its own freed list if it has blocks,
/// else from the heap's slabs (taking a new slab from the pool if need be),
/// and returns one block.
fn refill_and_pop(heap: &'static Heap, c: usize) -> Option<UserPtr> {
    let bin = heap.cache_bin(c);
    // SAFETY: `heap` is the caller's own (or the locked fallback heap).
    unsafe {
        if let Some(p) = cache_pop(bin) {
            return Some(p);
        }
        if !(*bin).freed.is_null() {
            (*bin).head = (*bin).freed;
            (*bin).freed = ptr::null_mut();
            (*bin).nfreed = 0;
            (*bin).swapped = true;
            return cache_pop(bin);
        }
    }
    // SAFETY: as above.
    let batch = (unsafe { (*bin).limit } / 2).max(1);
    loop {
        let s = heap.bin(c);
        if !ptr::eq(s, empty_slab()) {
            debug_assert!(
                s.remote.is_owned_by(heap.id()),
                "heap list holds a slab it does not own"
            );
            let tok = heap.token(s);
            let mut got = s.take(&tok, batch);
            if got.is_none() {
                if let Some(chain) = s.take_remote(&tok) {
                    // The slab's remote frees become the cache's `head`
                    // whole (both lists are empty here): no walk through
                    // blocks another core wrote; each pop verifies its link
                    // and prefetches the next block. The list may exceed
                    // `limit` (at most the slab's capacity).
                    // SAFETY: our own cache; the chain holds free blocks of
                    // this slab, so of class `c`, and is ours after the drain.
                    unsafe {
                        debug_assert!((*bin).head.is_null());
                        (*bin).head = chain.as_ptr();
                        return cache_pop(bin);
                    }
                }
                if s.refill(&tok) {
                    got = s.take(&tok, batch);
                }
            }
            if let Some((first, last, n)) = got {
                // SAFETY: the chain `first..=last` (n nodes) is ours now; the
                // rest after `first` goes into our cache.
                unsafe {
                    let key = (*bin).key();
                    let rest = canary::next(first.as_ptr(), key);
                    if n > 1 {
                        canary::link(last.as_ptr(), (*bin).head, key);
                        (*bin).head = rest;
                    }
                }
                // SAFETY: `first` is a free block of this class, now ours.
                unsafe { canary::on_alloc(first.as_ptr()) };
                return Some(UserPtr::from_non_null(first.cast()));
            }
            // Full: take it off the list and give ownership up until a free
            // wakes it (remote_queue's detach protocol).
            heap.unlink(c, s);
            if let Err(tok) = s.remote.detach(tok) {
                s.collect_remote(&tok);
                heap.push_front(c, s);
            }
            continue;
        }
        let (s, _) = match shared_pool::acquire(c, heap.id()) {
            Some(got) => got,
            // Out of memory: give back what is cached anywhere, then retry once.
            None => {
                trim_for(heap);
                shared_pool::acquire(c, heap.id())?
            }
        };
        heap.push_front(c, s);
    }
}

fn large(size: usize, align: usize) -> Option<UserPtr> {
    if let Some(r) = shared_pool::map_large(size, align) {
        return Some(r.user());
    }
    // Out of memory (or address space, under RLIMIT_AS): release what is
    // cached, then retry once.
    trim();
    shared_pool::map_large(size, align).map(|r| r.user())
}

fn trim_for(heap: &'static Heap) -> bool {
    let local = !heap.is_sentinel() && heap.trim_local();
    let parked = heap::drain_parked();
    shared_pool::trim() | local | parked
}

/// Allocates `n * size` zeroed bytes; `None` on overflow or out of memory.
pub fn calloc(n: usize, size: usize) -> Option<UserPtr> {
    let total = n.checked_mul(size)?;
    if total > MEDIUM_MAX {
        // Fresh from the OS: already zero (lesson 14), never memset.
        return large(total, 16);
    }
    let p = malloc(total)?;
    // SAFETY: `p` is a fresh block of at least `total` bytes.
    unsafe { ptr::write_bytes(p.as_ptr(), 0, total) };
    Some(p)
}

/// Allocates `size` bytes aligned to `align` (a power of two).
pub fn aligned(align: usize, size: usize) -> Option<UserPtr> {
    debug_assert!(align.is_power_of_two());
    if align <= 16 {
        return malloc(size);
    }
    if size <= MEDIUM_MAX && align <= MEDIUM_MAX {
        // A class whose stride is a multiple of `align` has only aligned block
        // starts, because slabs are aligned to their own size (>= MEDIUM_MAX
        // for medium slabs, 64 KiB for small ones, which hold strides <= 8 KiB).
        let mut c = class_of(size.max(align));
        while c < NUM_CLASSES {
            if stride(c).is_multiple_of(align) {
                return alloc_class(c);
            }
            c += 1;
        }
    }
    large(size, align)
}

/// Frees a block of a segment found through the segment granule map: the
/// free fast path. `p` is validated as a block start of the segment (reading
/// the segment's class map and the calling thread's bin for that class,
/// which holds the class's block-start row); if it is not one, nothing is
/// freed and the reason is returned.
#[inline(always)]
pub fn free_granule(g: Granule, p: UserPtr) -> Result<(), FreeError> {
    // SAFETY: the granule map records only live segments, tagged with their
    // slab shift, and `p` lies in the granule `g` was found for.
    unsafe { free_in_segment(g.base(), g.tag(), p) }
}

/// Frees a block. `region` is the registry's proof that `p` is in a hakmem
/// region; `p` itself is still validated as a block start.
pub fn free(region: Region, p: UserPtr) -> Result<(), FreeError> {
    let tag = region.tag();
    if tag == TAG_LARGE {
        return free_large(region, p);
    }
    // SAFETY: the registry only knows live regions created by superslab.
    debug_assert_eq!(unsafe { region_kind(region.base()) }, RegionKind::Segment);
    // SAFETY: the registry proves `p` lies in a live segment whose tag is
    // its slab shift.
    unsafe { free_in_segment(region.base(), tag, p) }
}

/// `free`'s segment path; see [`free_granule`].
///
/// # Safety
/// `base` is a live segment's base, `tag` its slab shift, and `p` lies in
/// the segment.
#[inline(always)]
unsafe fn free_in_segment(base: NonNull<u8>, tag: u8, p: UserPtr) -> Result<(), FreeError> {
    let heap = heap::current();
    // Validation reads the segment's class map and the bin's copy of the
    // class's block-start row: no slab metadata, no table. The closure also
    // hands back the bin, so its address is computed once.
    let mut bin = core::ptr::null_mut();
    // SAFETY: per the contract. The class map holds only classes and
    // NO_CLASS, so `v & 63` is `v` for a class (its bin holds `check_row(v)`)
    // and a bin past the last class, whose row accepts nothing, for NO_CLASS.
    let (b, v) = unsafe {
        Segment::block_at_with(base, p.addr(), |v| {
            bin = heap.cache_bin_of(v);
            &(*bin).check
        })
    }?;
    // `block_at_with` calls `row` exactly once before it returns.
    debug_assert!(!bin.is_null());
    // Masked as the bin index was (a no-op for the classes that pass).
    let c = v as usize & (heap::BINS - 1);
    // SAFETY: the calling thread's own cache (a sentinel's limit is 0, so it
    // is never written); `b` is a validated block of class `c`.
    unsafe {
        let n = b.addr() as *mut Node;
        // One load of the secret for the check and the push (the copy is an
        // atomic, so two reads would stay two loads).
        let key = (*bin).key();
        if canary::is_free(n, key) {
            // Reported by the caller, so that this path needs no frame.
            return Err(FreeError::DoubleFree);
        }
        if (*bin).nfreed < (*bin).limit {
            cache_push(bin, b, key);
            return Ok(());
        }
    }
    free_slow(heap, base, tag, b, c);
    Ok(())
}

/// The cache is full (or this thread has no heap): adapt the bin's limit
/// (halve it if this thread only frees the class, else double it back),
/// flush the freed list down to half of it, to the
/// blocks' slabs, then cache `b`.
#[cold]
#[inline(never)]
fn free_slow(heap: &'static Heap, base: NonNull<u8>, tag: u8, b: BlockPtr, c: usize) {
    if heap.is_sentinel() {
        // SAFETY: `b` was validated in the live segment at `base` (tag `tag`).
        let s = unsafe { Segment::slab_at(base, b.addr(), tag) };
        return free_to_slab(heap, s, b);
    }
    let bin = heap.cache_bin(c);
    // SAFETY: our own cache.
    unsafe {
        let max = heap::cache_limit(c);
        let limit = if (*bin).head.is_null() && !(*bin).swapped {
            // This thread only frees class `c` (it consumes blocks another
            // thread made): no malloc here will take them, so keep fewer
            // (tcmalloc shrinks such lists too). Memory, not speed: the
            // blocks go back to their slabs sooner.
            ((*bin).limit / 2).max(heap::FREE_ONLY_LIMIT.min(max))
        } else {
            ((*bin).limit * 2).min(max)
        };
        (*bin).limit = limit;
        (*bin).swapped = false;
        // Down to half the (new) limit.
        heap.flush(c, (*bin).nfreed.saturating_sub(limit / 2).max(1));
        // As in `free`; there is room now.
        cache_push(bin, b, (*bin).key());
    }
}

/// Blocks of one slab on their way back through its remote queue: a flush
/// gathers consecutive blocks of the same slab into one chain and pushes it
/// with one atomic operation (snmalloc's batched remote frees, in their
/// simplest form: runs, no sorting).
pub(crate) struct RemoteRun {
    slab: *const Slab,
    first: Option<BlockPtr>,
    /// `None` while the run has one block (`first`).
    last: Option<BlockPtr>,
}

impl RemoteRun {
    pub(crate) const fn new() -> Self {
        Self {
            slab: ptr::null(),
            first: None,
            last: None,
        }
    }

    /// Adds a validated block of foreign slab `s` that this thread gives back.
    fn add(&mut self, heap: &'static Heap, s: &'static Slab, b: BlockPtr) {
        if !ptr::eq(self.slab, s) {
            self.finish(heap);
            self.slab = s;
        } else if let Some(old) = self.first.take() {
            // SAFETY: `b` is ours to link (a validated block being given
            // back); it becomes the run's new first node.
            unsafe {
                canary::link(
                    b.addr() as *mut Node,
                    old.addr() as *mut Node,
                    canary::key(),
                )
            };
            if self.last.is_none() {
                self.last = Some(old);
            }
        }
        self.first = Some(b);
    }

    /// Pushes the run, if any, and starts over.
    pub(crate) fn finish(&mut self, heap: &'static Heap) {
        let Some(first) = self.first.take() else {
            return;
        };
        // SAFETY: the run's slab holds its blocks as used, so it is live.
        let s: &'static Slab = unsafe { &*self.slab };
        // SAFETY: validated blocks of `s` that this thread gave back, linked
        // first..last by `add`.
        let pushed = unsafe { s.push_remote_chain(first, self.last.take()) };
        self.slab = ptr::null();
        if pushed == Push::Woke {
            adopt_woken(heap, s);
        }
    }
}

/// Returns a cached block of class `c` to its slab: locally if this heap owns
/// the slab, else into `run` (pushed when a block of another slab comes, or
/// by the caller's `run.finish`). The block was validated when it was freed,
/// so its slab is found from its address alone.
pub(crate) fn free_to_slab_of_class(
    heap: &'static Heap,
    node: *mut Node,
    c: usize,
    run: &mut RemoteRun,
) {
    let addr = node as usize;
    let seg = addr & !(SEGMENT_SIZE - 1);
    // SAFETY: a validated block lies in a live segment (its slab holds it as
    // used, so neither slab nor segment can go away); classes of a kind live
    // only in segments of that kind, whose slab shift is the kind's.
    let s = unsafe {
        Segment::slab_at(
            NonNull::new_unchecked(seg as *mut u8),
            addr,
            CLASSES[c].kind.shift() as u8,
        )
    };
    // SAFETY: non-null node.
    let user = UserPtr::from_non_null(unsafe { NonNull::new_unchecked(node.cast()) });
    let b = match s.block_of(user) {
        Ok(b) => b,
        Err(_) => heap::fatal("corrupted thread cache entry", addr),
    };
    if s.remote.is_owned_by(heap.id()) {
        return free_to_slab(heap, s, b);
    }
    run.add(heap, s, b);
}

/// Gives a block back to its slab: onto the free list if this heap owns the
/// slab, else through the slab's remote queue.
fn free_to_slab(heap: &'static Heap, s: &'static Slab, b: BlockPtr) {
    if s.remote.is_owned_by(heap.id()) {
        let tok = heap.token(s);
        // An emptied slab at the head of its bin stays (it is the one being
        // allocated from); only others go back to the pool.
        if s.push_local(&tok, b) && !heap.is_head(s) {
            slab_emptied(heap, s, tok);
        }
    } else if s.push_remote(b) == Push::Woke {
        adopt_woken(heap, s);
    }
}

/// We brought a detached (full) slab back to life: it is on no list and has
/// no owner. The freeing thread adopts it itself (one CAS, no lock): it is
/// freeing into that slab, so its later frees there become local ones. A
/// thread without a heap publishes it to the pool instead.
#[cold]
#[inline(never)]
fn adopt_woken(heap: &'static Heap, s: &'static Slab) {
    if heap.is_sentinel() {
        shared_pool::publish_partial(s);
        return;
    }
    let c = s
        .class()
        .unwrap_or_else(|| heap::fatal("woke a classless slab", s as *const _ as usize));
    // Nobody else can claim it: only list poppers claim, and it is on no list.
    let tok = s
        .remote
        .claim(heap.id())
        .unwrap_or_else(|| heap::fatal("woken slab already owned", s as *const _ as usize));
    heap.push_second(c, s);
    // Take the woken block(s) onto the local free list now, so that `used`
    // is exact and the slab can be seen to empty as our frees come in.
    s.collect_remote(&tok);
    if s.used(&tok) == 0 && !heap.is_head(s) {
        slab_emptied(heap, s, tok);
    }
}

#[cold]
fn slab_emptied(heap: &Heap, s: &'static Slab, tok: remote_queue::OwnerToken<'static>) {
    let c = s
        .class()
        .unwrap_or_else(|| heap::fatal("emptied a classless slab", s as *const _ as usize));
    // Keep a class's last slab to avoid thrashing on alloc/free ping-pong.
    if !heap.is_alone(c, s) {
        heap.unlink(c, s);
        shared_pool::release_empty(s, tok);
    }
}

#[cold]
fn free_large(region: Region, p: UserPtr) -> Result<(), FreeError> {
    // SAFETY: a live large region's base, per the registry.
    let r = unsafe { &mut *(region.base().as_ptr().cast::<LargeRegion>()) };
    if !r.is_block(p) {
        return Err(FreeError::NotBlockStart);
    }
    // SAFETY: the program gave the block back; nothing else refers to it.
    unsafe { shared_pool::unmap_large(r) };
    Ok(())
}

/// Usable size of a block (>= what was requested).
pub fn usable_size(region: Region, p: UserPtr) -> Result<usize, FreeError> {
    // SAFETY: as in `free`.
    match unsafe { region_kind(region.base()) } {
        RegionKind::Segment => {
            // SAFETY: as in `free`.
            let s = unsafe { Segment::from_base(region.base()) }.slab_of(p.addr());
            s.block_of(p).map_err(FreeError::from)?;
            Ok(s.stride())
        }
        RegionKind::Large => {
            // SAFETY: as in `free_large`.
            let r = unsafe { LargeRegion::from_base(region.base()) };
            if r.is_block(p) {
                Ok(r.usable())
            } else {
                Err(FreeError::NotBlockStart)
            }
        }
    }
}

/// Resizes a block, in place where it can; `align` is the alignment the
/// block was allocated with (16 for plain malloc). `Ok(None)` means out of
/// memory, with the old block untouched.
pub fn realloc(
    region: Region,
    p: UserPtr,
    new: usize,
    align: usize,
) -> Result<Option<UserPtr>, FreeError> {
    let old = usable_size(region, p)?;
    if new <= old && (new >= old / 2 || old <= 128) {
        return Ok(Some(p));
    }
    // SAFETY: validated above.
    if unsafe { region_kind(region.base()) } == RegionKind::Large && new > MEDIUM_MAX {
        // SAFETY: a live large region whose block the caller owns.
        let r = unsafe { &mut *(region.base().as_ptr().cast::<LargeRegion>()) };
        // SAFETY: the caller owns the block being reallocated.
        if unsafe { shared_pool::resize_large(r, new) } {
            return Ok(Some(p));
        }
    }
    let Some(q) = aligned(align, new) else {
        return Ok(None);
    };
    // SAFETY: distinct blocks, each at least min(old, new) bytes.
    unsafe { ptr::copy_nonoverlapping(p.as_ptr(), q.as_ptr(), old.min(new)) };
    free(region, p)?;
    Ok(Some(q))
}

/// Returns cached memory to the OS (`malloc_trim`): the calling thread's
/// caches and empty slabs, drained partial slabs, empty slabs and idle
/// segments. True if any was released.
pub fn trim() -> bool {
    trim_for(heap::current())
}
