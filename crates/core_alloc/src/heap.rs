//! Per-thread heaps and their life cycle.
//!
//! Each thread's heap pointer (the `slot` module: an initial-exec TLS word) is
//! initialised to point at a static, all-empty sentinel heap (lesson 10):
//! every cache bin of the sentinel is empty with limit 0, so the allocation
//! fast path needs no "set up yet?" test; its first pop misses and the slow
//! path builds the real heap, and a free never writes the sentinel. The slot
//! is a plain word with no destructor, so nothing is registered through
//! `__cxa_thread_atexit_impl` (which would call our own `calloc`, see
//! runtime-pitfalls.md).
//!
//! A heap has, per class, a thread cache of free blocks (any slab's) that the
//! fast paths use, and a list of the slabs it owns that refills the cache.
//!
//! Thread exit goes through one process-wide pthread key whose destructor
//! flushes the caches and hands the thread's slabs back to the pool (empty ones freed, partly used
//! ones published for adoption, full ones detached until a free wakes them)
//! and recycles the heap. After that the thread-local points at a second
//! sentinel, `DEAD`; allocations from later destructors are served by a
//! locked fallback heap, and frees from such a thread are remote frees.
//!
//! Heaps live in memory from `shared_pool::meta_chunk`, never from malloc.

use crate::alloc::{free_to_slab_of_class, RemoteRun};
use core::cell::{Cell, UnsafeCell};
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use remote_queue::Node;
use remote_queue::OwnerToken;
use shared_pool::SpinLock;
use superslab::size_class::LUT_MAX;
use superslab::{check_row, os, BlockCheck, Slab, CLASSES, NUM_CLASSES};

/// A slab with no blocks that every empty bin points at. Never written: every
/// operation on it misses before writing.
pub(crate) struct EmptySlab(pub(crate) Slab);
// SAFETY: never written (all owner operations on it miss before writing).
unsafe impl Sync for EmptySlab {}
pub(crate) static EMPTY_SLAB: EmptySlab = EmptySlab(Slab::empty());

#[inline(always)]
pub(crate) fn empty_slab() -> *const Slab {
    &EMPTY_SLAB.0
}

/// A thread cache of free blocks of one class, from any slab.
///
/// `free` pushes here and `malloc` pops here, touching no slab metadata and
/// no shared cache line (the tcmalloc lesson: a free by a thread that did not
/// allocate the block is still a thread-local operation). Blocks reach slabs
/// only in batches: `refill` takes up to `limit / 2` from an owned slab, and a
/// push past `limit` flushes the freed list down to half the limit (which
/// adapts: see `swapped`) back to the blocks' slabs
/// (locally, or through their remote queues). Cached blocks count as used by
/// their slab (lesson 8: `used` = held by the program or by a cache).
///
/// Two lists (mimalloc's free-list sharding, applied to the thread cache):
/// `malloc` pops `head` and `free` pushes `freed`, so a malloc never waits on
/// the memory the previous free just wrote (no store-to-load chain through
/// one list head and the block's link), and only `free` keeps a count. When
/// `head` runs dry, the slow path takes `freed` over whole (one swap) before
/// it refills from a slab. At most `limit` blocks sit on each list, except
/// a `head` made of one slab's drained remote frees (`Slab::take_remote`),
/// which holds up to that slab's capacity.
#[repr(C, align(64))]
pub(crate) struct CacheBin {
    /// Blocks `malloc` pops; not counted.
    pub(crate) head: *mut Node,
    /// Blocks `free` pushes, `nfreed` of them.
    pub(crate) freed: *mut Node,
    pub(crate) nfreed: u32,
    /// 0 in the sentinels: every push goes to the slow path, so the static
    /// sentinels are never written.
    pub(crate) limit: u32,
    /// A copy of the free-block guard's secret (`superslab::canary::key`) on
    /// the bin's own line, so neither fast path reads another line (or the
    /// GOT) for it. Set when the heap is made; the sentinels' copies are set
    /// by [`init_canary`].
    pub(crate) key: AtomicUsize,
    /// This bin's row of the block-start test (`superslab::check_row`), on
    /// the line `free` reads anyway: validating a pointer touches no table.
    /// Bins past the last class carry rows that accept nothing.
    pub(crate) check: BlockCheck,
    /// Set when the slow path makes `freed` the new `head` (this thread
    /// mallocs what it frees); cleared at each overflow of `freed`. An
    /// overflow with `head` empty and no swap since the last one means the
    /// thread only frees this class (a consumer of another thread's blocks):
    /// `free_slow` then halves `limit` (down to [`FREE_ONLY_LIMIT`]), and
    /// doubles it back (up to `cache_limit`) otherwise.
    pub(crate) swapped: bool,
}

/// The smallest `limit` a free-only bin shrinks to (or the class's own
/// limit, if smaller): 32 blocks keep a consumer's remote pushes batched.
pub(crate) const FREE_ONLY_LIMIT: u32 = 32;

const _: () = assert!(core::mem::size_of::<CacheBin>() == 64);

/// Cache bins per heap: every class, then rows that accept nothing up to a
/// power of two, so that `free` indexes the bins with a class-map byte
/// masked to `BINS - 1` (no bounds test; `NO_CLASS` lands on a bin past the
/// last class).
pub(crate) const BINS: usize = 64;
const _: () = assert!(NUM_CLASSES < BINS);
const _: () = assert!((superslab::segment::NO_CLASS as usize) & (BINS - 1) >= NUM_CLASSES);

impl CacheBin {
    #[inline(always)]
    pub(crate) fn key(&self) -> usize {
        self.key.load(Ordering::Relaxed)
    }
}

pub(crate) const fn cache_limit(c: usize) -> u32 {
    // About 256 KiB per class, at least 4 and at most 512 blocks.
    let l = (256 * 1024) / CLASSES[c].stride;
    if l < 4 {
        4
    } else if l > 512 {
        512
    } else {
        l
    }
}

/// `BIN_OFFSETS[(size + 15) >> 4]` is the byte offset, in a heap's bin
/// array, of the cache bin of `class_of(size)` for `size <= LUT_MAX`: the
/// class table with the bin size already multiplied in, so `malloc`'s fast
/// path goes from the size to its bin with one load and no scaling.
static BIN_OFFSETS: [u16; LUT_MAX / 16 + 1] = {
    let mut t = [0u16; LUT_MAX / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        let c = superslab::size_class::class_of_const(i * 16);
        assert!(c < NUM_CLASSES);
        t[i] = (c * core::mem::size_of::<CacheBin>()) as u16;
        i += 1;
    }
    t
};

/// Bin `i` of a heap, empty. `limit` 0 (the sentinels) sends every push to
/// the slow path.
const fn empty_bin(i: usize, limit: u32, key: usize) -> CacheBin {
    CacheBin {
        head: ptr::null_mut(),
        freed: ptr::null_mut(),
        nfreed: 0,
        limit,
        key: AtomicUsize::new(key),
        check: check_row(i as u8),
        swapped: false,
    }
}

/// All bins of a heap, empty, with limit 0.
const fn empty_bins() -> [CacheBin; BINS] {
    let mut i = 0;
    // No `Copy` (the key is an atomic): build each by index.
    let mut bins = [const { empty_bin(0, 0, 0) }; BINS];
    while i < BINS {
        bins[i] = empty_bin(i, 0, 0);
        i += 1;
    }
    bins
}

/// A thread's heap. Only its thread touches it (or, for the fallback heap,
/// whoever holds `FALLBACK_LOCK`).
#[repr(C, align(64))]
pub struct Heap {
    /// Per class: the thread cache (the fast paths use only this).
    /// Bins past `NUM_CLASSES` stay empty with limit 0.
    cache: UnsafeCell<[CacheBin; BINS]>,
    /// Per class: the head of the list of owned slabs with (possibly) free
    /// blocks; cache refills take from the head. `EMPTY_SLAB` if none.
    bins: UnsafeCell<[*const Slab; NUM_CLASSES]>,
    /// 0 for a real heap; `NEW_STATE` / `DEAD_STATE` for the sentinels.
    state: usize,
    next_free: Cell<*mut Heap>,
}

#[repr(transparent)]
struct SyncHeap(Heap);
// SAFETY: the sentinels are never written except their bins' atomic `key`: their
// bins all point at EMPTY_SLAB and their cache limits are 0, so every
// allocation misses and switches heaps first, and no free pushes into them.
unsafe impl Sync for SyncHeap {}

const fn sentinel(state: usize) -> Heap {
    Heap {
        cache: UnsafeCell::new(empty_bins()),
        bins: UnsafeCell::new([&EMPTY_SLAB.0 as *const Slab; NUM_CLASSES]),
        state,
        next_free: Cell::new(ptr::null_mut()),
    }
}
const NEW_STATE: usize = 1;
const DEAD_STATE: usize = 2;
static NEW: SyncHeap = SyncHeap(sentinel(NEW_STATE));
static DEAD: SyncHeap = SyncHeap(sentinel(DEAD_STATE));

/// The thread's heap pointer lives in one 8-byte thread-local slot.
///
/// On x86-64 Linux the slot is declared in assembly in `.tdata` and read with
/// the initial-exec model: two instructions (`mov` from the GOT, `mov` from
/// `%fs`), where a Rust `thread_local!` in a cdylib costs a call to
/// `__tls_get_addr` (general-dynamic model; stable Rust has no switch). The
/// slot's initial value (in `.tdata`) is the `NEW` sentinel's address, so
/// the fast path needs no "set up yet?" test.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod slot {
    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        ".globl __hakmem_tls_heap",
        ".hidden __hakmem_tls_heap",
        ".type __hakmem_tls_heap,@object",
        ".size __hakmem_tls_heap,8",
        "__hakmem_tls_heap:",
        ".quad {new}",
        ".popsection",
        new = sym super::NEW,
    );

    #[inline(always)]
    pub(super) fn get() -> usize {
        let v: usize;
        // SAFETY: reads this thread's own 8-byte slot (initial-exec TLS); no
        // other memory is touched.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __hakmem_tls_heap@GOTTPOFF]",
                "mov {v}, qword ptr fs:[{t}]",
                t = out(reg) _,
                v = lateout(reg) v,
                options(nostack, readonly, preserves_flags, pure)
            )
        };
        v
    }

    #[inline(always)]
    pub(super) fn set(v: usize) {
        // SAFETY: writes this thread's own 8-byte slot.
        unsafe {
            core::arch::asm!(
                "mov {t}, qword ptr [rip + __hakmem_tls_heap@GOTTPOFF]",
                "mov qword ptr fs:[{t}], {v}",
                t = out(reg) _,
                v = in(reg) v,
                options(nostack, preserves_flags)
            )
        };
    }
}

/// Portable fallback: a const-initialised `thread_local!` without `Drop`.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod slot {
    use core::cell::Cell;
    std::thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(&super::NEW.0 as *const super::Heap as usize) };
    }
    #[inline(always)]
    pub(super) fn get() -> usize {
        SLOT.get()
    }
    #[inline(always)]
    pub(super) fn set(v: usize) {
        SLOT.set(v)
    }
}

/// The calling thread's heap (possibly a sentinel). One TLS load.
#[inline(always)]
pub(crate) fn current() -> &'static Heap {
    // SAFETY: the slot always holds a sentinel static or a live heap, and
    // heaps are never unmapped.
    unsafe { &*(slot::get() as *const Heap) }
}

fn set_current(h: &'static Heap) {
    slot::set(h as *const Heap as usize);
}

impl Heap {
    /// Class `c`'s thread cache. Only the heap's thread may use it (and never
    /// write it in a sentinel, whose limits are 0).
    #[inline(always)]
    pub(crate) fn cache_bin(&self, c: usize) -> *mut CacheBin {
        debug_assert!(c < BINS);
        // SAFETY: in bounds (callers pass class indices); raw pointer, no
        // reference is created.
        unsafe { (self.cache.get() as *mut CacheBin).add(c) }
    }

    /// The bin of `class_of(size)`, for `size <= LUT_MAX` (`malloc`'s fast
    /// path).
    #[inline(always)]
    pub(crate) fn small_bin(&self, size: usize) -> *mut CacheBin {
        debug_assert!(size <= LUT_MAX);
        let off = BIN_OFFSETS[(size + 15) >> 4] as usize;
        // SAFETY: every offset is a class's bin, inside the array; raw
        // pointer arithmetic, no reference is created.
        unsafe { (self.cache.get() as *mut u8).add(off).cast() }
    }

    /// The bin for class-map byte `v` (any value: bins past the last class
    /// hold rows that accept nothing). `free`'s fast path.
    #[inline(always)]
    pub(crate) fn cache_bin_of(&self, v: u8) -> *mut CacheBin {
        self.cache_bin(v as usize & (BINS - 1))
    }

    /// Returns up to `n` blocks of class `c`'s freed list to their slabs
    /// (runs of one foreign slab's blocks with one remote push each).
    pub(crate) fn flush(&'static self, c: usize, n: u32) {
        let bin = self.cache_bin(c);
        let mut run = RemoteRun::new();
        for _ in 0..n {
            // SAFETY: our own cache; its nodes are blocks of class `c` that
            // were validated when they were freed.
            let node = unsafe {
                let b = (*bin).freed;
                if b.is_null() {
                    break;
                }
                let next = superslab::canary::next(b, (*bin).key());
                (*bin).freed = next;
                (*bin).nfreed -= 1;
                // The walk is a chain of dependent loads through the
                // blocks: start the next one while this block's slab is
                // looked up.
                crate::alloc::prefetch(next);
                b
            };
            free_to_slab_of_class(self, node, c, &mut run);
        }
        run.finish(self);
    }

    /// Returns every block cached for class `c` (both lists) to its slab.
    pub(crate) fn flush_all(&'static self, c: usize) {
        let bin = self.cache_bin(c);
        // SAFETY: our own cache.
        self.flush(c, unsafe { (*bin).nfreed });
        let mut run = RemoteRun::new();
        loop {
            // SAFETY: as in `flush`.
            let node = unsafe {
                let b = (*bin).head;
                if b.is_null() {
                    break;
                }
                (*bin).head = superslab::canary::next(b, (*bin).key());
                b
            };
            free_to_slab_of_class(self, node, c, &mut run);
        }
        run.finish(self);
    }

    /// Empties every cache and gives back every owned slab that holds no
    /// blocks, including the ones kept to avoid thrashing (`malloc_trim`).
    pub(crate) fn trim_local(&'static self) -> bool {
        let mut released = false;
        for c in 0..NUM_CLASSES {
            self.flush_all(c);
            let mut s = self.bin(c) as *const Slab;
            while s != empty_slab() && !s.is_null() {
                // SAFETY: slabs on our list are live and ours.
                let slab: &'static Slab = unsafe { &*s };
                // SAFETY: we own the slab; read the link before unlinking.
                s = unsafe { *slab.heap_links().1.get() };
                let tok = self.token(slab);
                slab.collect_remote(&tok);
                if slab.used(&tok) == 0 {
                    self.unlink(c, slab);
                    shared_pool::release_empty(slab, tok);
                    released = true;
                }
            }
        }
        released
    }

    /// Slab at the head of class `c`'s list.
    #[inline(always)]
    pub(crate) fn bin(&self, c: usize) -> &'static Slab {
        // SAFETY: single-threaded access; bins hold EMPTY_SLAB or owned slabs
        // of live segments (slabs with an owner are never unmapped).
        unsafe { &*(*self.bins.get())[c] }
    }

    /// Owner id for the slabs' remote queues: the heap's address. Never
    /// `NO_OWNER` (0); a sentinel's address owns nothing, since sentinels
    /// never take slabs, so a sentinel thread never mistakes an unowned slab
    /// for its own. Using the address saves a load on every free.
    #[inline(always)]
    pub(crate) fn id(&self) -> usize {
        self as *const Self as usize
    }

    #[inline(always)]
    pub(crate) fn is_sentinel(&self) -> bool {
        self.state != 0
    }

    /// The owner token of a slab on this heap's lists (or EMPTY_SLAB).
    #[inline(always)]
    pub(crate) fn token<'s>(&self, s: &'s Slab) -> OwnerToken<'s> {
        // SAFETY: slabs on our lists are owned by `self.id()`; EMPTY_SLAB is
        // never mutated by any token operation (all of them miss on it).
        unsafe { s.remote.assume_owned(self.id()) }
    }

    fn set_bin(&self, c: usize, s: *const Slab) {
        // SAFETY: single-threaded access.
        unsafe { (*self.bins.get())[c] = s };
    }

    /// Links an owned slab at the head of class `c`.
    pub(crate) fn push_front(&self, c: usize, s: &Slab) {
        debug_assert!(s.remote.is_owned_by(self.id()));
        let head = self.bin(c) as *const Slab;
        let next = if head == empty_slab() {
            ptr::null_mut()
        } else {
            head as *mut Slab
        };
        // SAFETY: we own `s` and every slab on our list.
        unsafe {
            let (prev_l, next_l) = s.heap_links();
            *prev_l.get() = ptr::null_mut();
            *next_l.get() = next;
            if !next.is_null() {
                *(*next).heap_links().0.get() = s as *const Slab as *mut Slab;
            }
        }
        self.set_bin(c, s);
    }

    /// Links an owned slab right after the head of class `c` (at the head if
    /// the list is empty), so the slab allocation is popping from stays first.
    pub(crate) fn push_second(&self, c: usize, s: &Slab) {
        let head = self.bin(c);
        if ptr::eq(head, empty_slab()) {
            return self.push_front(c, s);
        }
        debug_assert!(s.remote.is_owned_by(self.id()));
        // SAFETY: we own `s`, `head` and head's successor.
        unsafe {
            let next = *head.heap_links().1.get();
            let (prev_l, next_l) = s.heap_links();
            *prev_l.get() = head as *const Slab as *mut Slab;
            *next_l.get() = next;
            if !next.is_null() {
                *(*next).heap_links().0.get() = s as *const Slab as *mut Slab;
            }
            *head.heap_links().1.get() = s as *const Slab as *mut Slab;
        }
    }

    /// Unlinks an owned slab from class `c`'s list.
    pub(crate) fn unlink(&self, c: usize, s: &Slab) {
        // SAFETY: we own `s` and its neighbours.
        unsafe {
            let (prev_l, next_l) = s.heap_links();
            let (prev, next) = (*prev_l.get(), *next_l.get());
            if prev.is_null() {
                debug_assert!(ptr::eq(self.bin(c), s));
                self.set_bin(c, if next.is_null() { empty_slab() } else { next });
            } else {
                *(*prev).heap_links().1.get() = next;
            }
            if !next.is_null() {
                *(*next).heap_links().0.get() = prev;
            }
            *prev_l.get() = ptr::null_mut();
            *next_l.get() = ptr::null_mut();
        }
    }

    /// True if `s` heads its class list (its `prev` link is null). Owner only.
    #[inline(always)]
    pub(crate) fn is_head(&self, s: &Slab) -> bool {
        // SAFETY: we own `s`.
        unsafe { (*s.heap_links().0.get()).is_null() }
    }

    /// True if `s` is the only slab on its class list.
    pub(crate) fn is_alone(&self, c: usize, s: &Slab) -> bool {
        // SAFETY: we own `s`.
        unsafe {
            let (p, n) = s.heap_links();
            ptr::eq(self.bin(c), s) && (*p.get()).is_null() && (*n.get()).is_null()
        }
    }

    /// Gives every slab back (thread exit, or heap recycling).
    fn release_all(&'static self) {
        for c in 0..NUM_CLASSES {
            self.flush_all(c);
        }
        for c in 0..NUM_CLASSES {
            loop {
                let s = self.bin(c);
                if ptr::eq(s, empty_slab()) {
                    break;
                }
                self.unlink(c, s);
                let tok = self.token(s);
                give_up(s, tok);
            }
        }
    }
}

/// Hands an owned, unlisted slab to the pool in whatever state it is.
pub(crate) fn give_up(s: &'static Slab, tok: OwnerToken<'static>) {
    s.collect_remote(&tok);
    if s.used(&tok) == 0 {
        shared_pool::release_empty(s, tok);
    } else if s.has_free(&tok) {
        s.remote.release(tok);
        shared_pool::publish_partial(s);
    } else if let Err(tok) = s.remote.detach(tok) {
        // Frees arrived between the collect and the detach: now it has room.
        s.collect_remote(&tok);
        give_up(s, tok);
    }
}

// ---- heap memory ----

static HEAPS_LOCK: SpinLock = SpinLock::new();
struct HeapList(Cell<*mut Heap>, Cell<usize>);
// SAFETY: accessed only with HEAPS_LOCK held.
unsafe impl Sync for HeapList {}
/// Recycled heaps; and the unused tail of the current chunk (address, bytes).
static FREE_HEAPS: HeapList = HeapList(Cell::new(ptr::null_mut()), Cell::new(0));
static CHUNK: HeapList = HeapList(Cell::new(ptr::null_mut()), Cell::new(0));
static LIVE_HEAPS: AtomicUsize = AtomicUsize::new(0);
const HEAP_CHUNK: usize = 64 * 1024;

/// Heaps of exited threads kept whole (caches and owned slabs) for the next
/// new thread: ownership is by heap address, so handing a heap over moves all
/// its slabs at once, with no per-slab work and no pool traffic. At most
/// `MAX_PARKED`; `malloc_trim` (and out-of-memory retries) drain them.
static PARKED: HeapList = HeapList(Cell::new(ptr::null_mut()), Cell::new(0));
const MAX_PARKED: usize = 8;

/// Parks an exited thread's heap; false if the park is full.
fn park_heap(h: &'static Heap) -> bool {
    HEAPS_LOCK.lock();
    let ok = PARKED.1.get() < MAX_PARKED;
    if ok {
        h.next_free.set(PARKED.0.get());
        PARKED.0.set(h as *const Heap as *mut Heap);
        PARKED.1.set(PARKED.1.get() + 1);
    }
    HEAPS_LOCK.unlock();
    if ok {
        LIVE_HEAPS.fetch_sub(1, Ordering::Relaxed);
    }
    ok
}

fn unpark_heap() -> Option<&'static Heap> {
    HEAPS_LOCK.lock();
    let h = PARKED.0.get();
    if !h.is_null() {
        // SAFETY: parked heaps are valid; lock held.
        PARKED.0.set(unsafe { (*h).next_free.get() });
        PARKED.1.set(PARKED.1.get() - 1);
    }
    HEAPS_LOCK.unlock();
    if h.is_null() {
        return None;
    }
    LIVE_HEAPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: a parked heap is valid and used by no thread.
    let heap = unsafe { &*h };
    heap.next_free.set(ptr::null_mut());
    Some(heap)
}

/// Gives every parked heap's memory back (thread caches flushed, slabs
/// returned or published) and recycles the heaps. True if any was parked.
pub(crate) fn drain_parked() -> bool {
    let mut any = false;
    while let Some(h) = unpark_heap() {
        h.release_all();
        recycle_heap(h);
        any = true;
    }
    any
}

fn alloc_heap() -> Option<&'static Heap> {
    HEAPS_LOCK.lock();
    let mut h = FREE_HEAPS.0.get();
    if !h.is_null() {
        // SAFETY: recycled heaps are valid; lock held.
        FREE_HEAPS.0.set(unsafe { (*h).next_free.get() });
    } else {
        let sz = core::mem::size_of::<Heap>();
        if CHUNK.1.get() < sz {
            let Some(m) = shared_pool::meta_chunk(HEAP_CHUNK) else {
                HEAPS_LOCK.unlock();
                return None;
            };
            CHUNK.0.set(m.as_ptr().cast());
            CHUNK.1.set(HEAP_CHUNK);
        }
        h = CHUNK.0.get();
        CHUNK.0.set((h as usize + sz) as *mut Heap);
        CHUNK.1.set(CHUNK.1.get() - sz);
        // SAFETY: fresh, aligned (chunk is page-aligned, Heap size is a multiple
        // of its alignment), exclusively ours.
        unsafe { h.write(sentinel(0)) };
    }
    HEAPS_LOCK.unlock();
    LIVE_HEAPS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `h` is a valid heap that no thread uses.
    let heap = unsafe { &mut *h };
    heap.next_free.set(ptr::null_mut());
    for c in 0..NUM_CLASSES {
        heap.set_bin(c, empty_slab());
        // SAFETY: nobody else uses this heap yet.
        unsafe { *heap.cache_bin(c) = empty_bin(c, cache_limit(c), superslab::canary::key()) };
    }
    Some(heap)
}

fn recycle_heap(h: &'static Heap) {
    LIVE_HEAPS.fetch_sub(1, Ordering::Relaxed);
    HEAPS_LOCK.lock();
    h.next_free.set(FREE_HEAPS.0.get());
    FREE_HEAPS.0.set(h as *const Heap as *mut Heap);
    HEAPS_LOCK.unlock();
}

/// Number of heaps in use by live threads (plus the fallback heap, if made).
pub fn live_heaps() -> usize {
    LIVE_HEAPS.load(Ordering::Relaxed)
}

// ---- thread life cycle ----

const KEY_UNSET: u32 = u32::MAX;
const KEY_BUSY: u32 = u32::MAX - 1;
static KEY: AtomicU32 = AtomicU32::new(KEY_UNSET);

/// Creates the thread-exit key. Called from the library constructor so the key
/// index is small (glibc keeps keys below 32 inline, without calling calloc),
/// and again lazily on a thread's first slow path.
pub fn init_thread_key() -> Option<libc::pthread_key_t> {
    loop {
        match KEY.load(Ordering::Acquire) {
            KEY_UNSET => {
                if KEY
                    .compare_exchange(KEY_UNSET, KEY_BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                let mut k: libc::pthread_key_t = 0;
                // SAFETY: valid out-pointer and a destructor with the C ABI.
                let r = unsafe { libc::pthread_key_create(&mut k, Some(thread_exit)) };
                if r != 0 {
                    KEY.store(KEY_UNSET, Ordering::Release);
                    return None;
                }
                KEY.store(k, Ordering::Release);
                return Some(k);
            }
            KEY_BUSY => core::hint::spin_loop(),
            k => return Some(k),
        }
    }
}

/// Sets up the calling thread's heap (first slow path of a thread).
#[cold]
pub(crate) fn thread_init() -> Option<&'static Heap> {
    init_canary();
    let key = init_thread_key()?;
    let heap = match unpark_heap() {
        Some(h) => h,
        None => alloc_heap()?,
    };
    set_current(heap);
    // SAFETY: valid key; the value is our heap, passed back to thread_exit.
    unsafe { libc::pthread_setspecific(key, heap as *const Heap as *const libc::c_void) };
    // After the slot is set: registering may call malloc, which now finds a heap.
    register_fork_handlers();
    Some(heap)
}

unsafe extern "C" fn thread_exit(arg: *mut libc::c_void) {
    // SAFETY: the key's value is always the heap set in thread_init.
    let heap: &'static Heap = unsafe { &*(arg as *const Heap) };
    // From here on this thread allocates through the fallback heap.
    set_current(&DEAD.0);
    if !park_heap(heap) {
        heap.release_all();
        recycle_heap(heap);
    }
}

/// Reads the canary secret (once per process) and copies it into the
/// sentinel heaps, whose `free`s check and write canaries too. Real heaps copy
/// it when they are made, which is always after this ran.
pub fn init_canary() {
    superslab::canary::init();
    let k = superslab::canary::key();
    for c in 0..BINS {
        for h in [&NEW.0, &DEAD.0] {
            // SAFETY: an in-bounds bin of a static heap; only its atomic key
            // is touched.
            unsafe { (*h.cache_bin(c)).key.store(k, Ordering::Relaxed) };
        }
    }
}

/// True if the thread's heap has been torn down.
#[inline]
pub(crate) fn is_dead(h: &Heap) -> bool {
    h.state == DEAD_STATE
}

// ---- the fallback heap, for threads past their teardown ----

static FALLBACK_LOCK: SpinLock = SpinLock::new();
static FALLBACK: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` with the fallback heap locked.
#[cold]
pub(crate) fn with_fallback<R>(f: impl FnOnce(&'static Heap) -> R) -> Option<R> {
    FALLBACK_LOCK.lock();
    let mut h = FALLBACK.load(Ordering::Relaxed);
    if h == 0 {
        match alloc_heap() {
            Some(heap) => {
                h = heap as *const Heap as usize;
                FALLBACK.store(h, Ordering::Relaxed);
            }
            None => {
                FALLBACK_LOCK.unlock();
                return None;
            }
        }
    }
    // SAFETY: the fallback heap is never recycled; the lock serialises it.
    let r = f(unsafe { &*(h as *const Heap) });
    FALLBACK_LOCK.unlock();
    Some(r)
}

static FORK_HANDLERS: AtomicU32 = AtomicU32::new(0);

/// Registers the `fork` handlers, once per process.
pub fn register_fork_handlers() {
    if FORK_HANDLERS.swap(1, Ordering::AcqRel) != 0 {
        return;
    }
    extern "C" fn prepare() {
        fork_prepare();
    }
    extern "C" fn parent() {
        fork_parent();
    }
    extern "C" fn child() {
        // SAFETY: glibc runs this in the child right after fork.
        unsafe { fork_child() };
    }
    // SAFETY: plain C callbacks that only take, release or reset our locks.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Takes core_alloc's locks before `fork` (first in hakmem's lock order:
/// fallback heap, heap list, then the pool).
pub fn fork_prepare() {
    FALLBACK_LOCK.lock();
    HEAPS_LOCK.lock();
    shared_pool::fork_prepare();
}
/// Releases them in the parent.
pub fn fork_parent() {
    shared_pool::fork_parent();
    HEAPS_LOCK.unlock();
    FALLBACK_LOCK.unlock();
}
/// Resets them in the child (only the forking thread exists there).
///
/// # Safety
/// Only in the child right after `fork`.
pub unsafe fn fork_child() {
    // SAFETY: per the contract.
    unsafe {
        shared_pool::fork_child();
        HEAPS_LOCK.reset_after_fork();
        FALLBACK_LOCK.reset_after_fork();
    }
}

/// Aborts with `msg`: for states that would otherwise corrupt memory.
#[cold]
pub(crate) fn fatal(msg: &str, addr: usize) -> ! {
    os::fatal(msg, addr)
}
