//! `registry`: the authoritative map from any address to the hakmem region
//! that contains it.
//!
//! Ownership of a pointer is decided here and nowhere else (lesson 1): never by
//! reading bytes near the pointer (lesson 2). Regions start on a
//! [`GRANULE`]-aligned address (4 MiB) and may be any length; every granule a
//! region touches records `(base, end)`, so every address inside a region
//! resolves to it and addresses past `end` in its last granule do not.
//!
//! Shape: a static root of `2^ROOT_BITS` pointers to lazily created leaves of
//! `2^LEAF_BITS` entries, covering the 47-bit user address space. Lookup is two
//! dependent loads and two compares, with no lock. Registration and removal
//! happen on slow paths. Leaves are never freed, so a racing lookup never reads
//! freed memory. Leaf memory comes from the caller ([`LeafSource`]): this box
//! does not talk to the OS.
//!
//! A [`Region`] can only be obtained from [`Registry::lookup`], so code that
//! takes a `Region` knows the address was proven to be hakmem's:
//!
//! ```compile_fail
//! let forged = registry::Region { word: core::ptr::NonNull::dangling(), end: 0 };
//! ```
#![cfg_attr(not(any(test, loom)), no_std)]

use core::ptr::{self, NonNull};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};

/// log2 of the registration granule: regions are aligned to 4 MiB.
pub const GRANULE_SHIFT: u32 = 22;
/// Registration granule in bytes.
pub const GRANULE: usize = 1 << GRANULE_SHIFT;
#[cfg(not(loom))]
const ADDRESS_BITS: u32 = 47;
#[cfg(loom)]
const ADDRESS_BITS: u32 = GRANULE_SHIFT + 3; // tiny table for model checking
const INDEX_BITS: u32 = ADDRESS_BITS - GRANULE_SHIFT;
const LEAF_BITS: u32 = if INDEX_BITS > 13 { 13 } else { 2 };
const ROOT_BITS: u32 = INDEX_BITS - LEAF_BITS;
const ROOT_LEN: usize = 1 << ROOT_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;

/// One granule's record. `base == 0` means "not ours".
#[repr(C)]
struct Entry {
    base: AtomicUsize,
    end: AtomicUsize,
}

/// A leaf: `LEAF_LEN` entries. Zeroed memory is a valid, empty leaf.
#[repr(C)]
pub struct Leaf {
    entries: [Entry; LEAF_LEN],
}

/// Bytes a [`LeafSource`] must provide per leaf (128 KiB).
pub const LEAF_BYTES: usize = core::mem::size_of::<Leaf>();

/// Where leaf memory comes from.
///
/// # Safety
/// `alloc_leaf` must return zero-filled, writable memory of [`LEAF_BYTES`]
/// bytes aligned to 64, valid for the rest of the process unless it is handed
/// back through `free_leaf` (which the registry does only for a leaf it never
/// published).
pub unsafe trait LeafSource {
    /// A fresh zeroed leaf, or `None` if memory is exhausted.
    fn alloc_leaf(&self) -> Option<NonNull<u8>>;
    /// Returns a leaf that lost a publication race and was never visible.
    ///
    /// # Safety
    /// `leaf` came from `alloc_leaf` on this source and was never published.
    unsafe fn free_leaf(&self, leaf: NonNull<u8>);
}

/// Why a registration was refused. Callers treat every one as fatal: a region
/// that is mapped but not registered would be a silent ownership hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// `base` is null or not granule-aligned, or `len` is zero.
    Misaligned,
    /// The range reaches past the user address space.
    OutOfRange,
    /// A granule in the range is already registered.
    Overlap,
    /// The leaf source had no memory.
    NoLeafMemory,
}

impl RegisterError {
    /// A short fixed description, usable without allocating.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Misaligned => "region base not granule-aligned or empty",
            Self::OutOfRange => "region beyond the user address space",
            Self::Overlap => "region overlaps a registered region",
            Self::NoLeafMemory => "no memory for a registry leaf",
        }
    }
}

/// Proof that an address lay inside a one-granule region of a [`GranuleMap`]
/// when it was looked up: the granule's base and the region's tag, in one
/// word. Only [`GranuleMap::find`] makes one.
///
/// ```compile_fail
/// let forged = registry::Granule(core::ptr::NonNull::dangling()); // private field
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Granule(NonNull<u8>);

impl Granule {
    /// The region's first byte (granule-aligned, non-null).
    #[inline(always)]
    pub fn base(self) -> NonNull<u8> {
        let b = (self.0.as_ptr() as usize & !(GRANULE - 1)) as *mut u8;
        // SAFETY: registered bases are non-null granule multiples.
        unsafe { NonNull::new_unchecked(b) }
    }
    /// The tag the region was registered with (never 0).
    #[inline(always)]
    pub fn tag(self) -> u8 {
        self.0.as_ptr() as usize as u8
    }
    /// The same proof as a [`Region`] (one granule long).
    #[inline(always)]
    pub fn region(self) -> Region {
        Region {
            word: self.0,
            end: self.base().as_ptr() as usize + GRANULE,
        }
    }
}

/// Proof that an address lay inside a registered region when it was looked up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Base | tag (bases are granule-aligned). Two words, so a `Region` is
    /// passed in registers.
    word: NonNull<u8>,
    end: usize,
}

impl Region {
    /// The region's first byte (granule-aligned).
    #[inline]
    pub fn base(self) -> NonNull<u8> {
        let b = (self.word.as_ptr() as usize & !(GRANULE - 1)) as *mut u8;
        // SAFETY: registered bases are non-null granule multiples.
        unsafe { NonNull::new_unchecked(b) }
    }
    /// One past the region's last byte.
    #[inline]
    pub fn end(self) -> usize {
        self.end
    }
    /// The tag given at registration (0 for [`Registry::register`]). Lets the
    /// caller learn what kind of region it is without reading the region.
    #[inline(always)]
    pub fn tag(self) -> u8 {
        self.word.as_ptr() as usize as u8
    }
}

/// The address map. One per process in hakmem (held by `shared_pool`), but
/// nothing here is global, so another allocator can keep its own.
pub struct Registry {
    roots: [AtomicPtr<Leaf>; ROOT_LEN],
}

// SAFETY: all state is atomic; leaves are immutable in layout and never freed
// once published.
unsafe impl Sync for Registry {}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry (usable as a `static`).
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            roots: [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_LEN],
        }
    }

    /// An empty registry.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            roots: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    #[inline]
    fn entry(&self, addr: usize) -> Option<&Entry> {
        if addr >> ADDRESS_BITS != 0 {
            return None;
        }
        let g = addr >> GRANULE_SHIFT;
        let leaf = self.roots[g >> LEAF_BITS].load(Ordering::Acquire);
        if leaf.is_null() {
            return None;
        }
        // SAFETY: published leaves are valid forever; the index is masked.
        Some(unsafe { &(*leaf).entries[g & (LEAF_LEN - 1)] })
    }

    /// The region containing `addr`, if any. Lock-free; never reads `addr`.
    #[inline]
    pub fn lookup(&self, addr: usize) -> Option<Region> {
        let e = self.entry(addr)?;
        // Acquire pairs with the Release in `register`: `end` and the region's
        // header are visible once `base` is.
        let word = e.base.load(Ordering::Acquire);
        if word == 0 {
            return None;
        }

        let end = e.end.load(Ordering::Relaxed);
        if addr >= end {
            return None;
        }
        debug_assert!(addr >= word & !(GRANULE - 1));
        // SAFETY: `word != 0` checked above.
        let word = unsafe { NonNull::new_unchecked(word as *mut u8) };
        Some(Region { word, end })
    }

    fn leaf_for(&self, g: usize, src: &impl LeafSource) -> Result<*mut Leaf, RegisterError> {
        let slot = &self.roots[g >> LEAF_BITS];
        let cur = slot.load(Ordering::Acquire);
        if !cur.is_null() {
            return Ok(cur);
        }
        let fresh = src.alloc_leaf().ok_or(RegisterError::NoLeafMemory)?;
        debug_assert!((fresh.as_ptr() as usize).is_multiple_of(64));
        let fresh = fresh.as_ptr().cast::<Leaf>();
        // Zeroed memory is an empty leaf for core atomics, but loom's atomics
        // are handles into the model's state and must be constructed.
        #[cfg(loom)]
        // SAFETY: `fresh` is LEAF_BYTES of writable, aligned, unpublished memory.
        unsafe {
            fresh.write(Leaf {
                entries: core::array::from_fn(|_| Entry {
                    base: AtomicUsize::new(0),
                    end: AtomicUsize::new(0),
                }),
            })
        };
        match slot.compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Ok(fresh),
            Err(winner) => {
                // SAFETY: `fresh` came from `src` and was never published.
                unsafe { src.free_leaf(NonNull::new_unchecked(fresh.cast())) };
                Ok(winner)
            }
        }
    }

    /// Records `[base, base + len)` as one region. On error nothing is recorded.
    ///
    /// Concurrent registrations of disjoint ranges are fine; a range must not be
    /// registered while a lookup inside it expects "not ours".
    pub fn register(
        &self,
        base: usize,
        len: usize,
        src: &impl LeafSource,
    ) -> Result<(), RegisterError> {
        self.register_tagged(base, len, 0, src)
    }

    /// As [`register`](Self::register), recording a caller-defined `tag` that
    /// every lookup in the region returns with it.
    pub fn register_tagged(
        &self,
        base: usize,
        len: usize,
        tag: u8,
        src: &impl LeafSource,
    ) -> Result<(), RegisterError> {
        if base == 0 || !base.is_multiple_of(GRANULE) || len == 0 {
            return Err(RegisterError::Misaligned);
        }
        let end = base.checked_add(len).ok_or(RegisterError::OutOfRange)?;
        if (end - 1) >> ADDRESS_BITS != 0 {
            return Err(RegisterError::OutOfRange);
        }
        let (first, last) = (base >> GRANULE_SHIFT, (end - 1) >> GRANULE_SHIFT);
        for g in first..=last {
            let leaf = match self.leaf_for(g, src) {
                Ok(l) => l,
                Err(e) => {
                    self.clear(first, g);
                    return Err(e);
                }
            };
            // SAFETY: published leaf, masked index.
            let e = unsafe { &(*leaf).entries[g & (LEAF_LEN - 1)] };
            if e.base.load(Ordering::Relaxed) != 0 {
                self.clear(first, g);
                return Err(RegisterError::Overlap);
            }
            e.end.store(end, Ordering::Relaxed);
            e.base.store(base | tag as usize, Ordering::Release);
        }
        Ok(())
    }

    fn clear(&self, first: usize, stop: usize) {
        for g in first..stop {
            if let Some(e) = self.entry(g << GRANULE_SHIFT) {
                e.base.store(0, Ordering::Release);
                e.end.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Forgets a region registered with exactly `base` and `len`.
    /// Call before the memory is unmapped.
    pub fn unregister(&self, base: usize, len: usize) {
        debug_assert!(self
            .lookup(base)
            .is_some_and(|r| r.base().as_ptr() as usize == base && r.end == base + len));
        let last = (base + len - 1) >> GRANULE_SHIFT;
        self.clear(base >> GRANULE_SHIFT, last + 1);
    }
}

/// One byte per granule of the user address space for regions that are
/// exactly one granule long (hakmem's segments): 0 means "no such region
/// here", anything else is the tag it was registered with. Looking an
/// address up is a single load, where [`Registry::lookup`] is three
/// dependent ones; it is just as authoritative, because the byte is set only
/// after the region is mapped and cleared before it is unmapped.
///
/// The map is 32 MiB of zero-initialised static memory (`.bss`); only the
/// pages that hold bytes of registered granules are ever touched (one 4 KiB
/// page covers 16 GiB of address space). Under loom it shrinks with the
/// registry to 8 granules, on loom's atomics (`tests/loom_retire.rs`).
pub struct GranuleMap {
    tags: [AtomicU8; 1 << INDEX_BITS],
}

impl GranuleMap {
    /// An empty map (usable as a `static`; too large for a stack).
    #[cfg(not(loom))]
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Self {
            tags: [const { AtomicU8::new(0) }; 1 << INDEX_BITS],
        }
    }

    /// An empty map.
    #[cfg(loom)]
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            tags: core::array::from_fn(|_| AtomicU8::new(0)),
        }
    }

    /// The region at `addr` if a one-granule region is registered there.
    #[inline(always)]
    pub fn lookup(&self, addr: usize) -> Option<Region> {
        self.find(addr).map(Granule::region)
    }

    /// The one-granule region at `addr`, as a one-word [`Granule`]: a single
    /// load (and a bounds test) for the free fast path.
    #[inline(always)]
    pub fn find(&self, addr: usize) -> Option<Granule> {
        let t = self
            .tags
            .get(addr >> GRANULE_SHIFT)?
            .load(Ordering::Acquire);
        if t == 0 {
            return None;
        }
        let base = addr & !(GRANULE - 1);
        // SAFETY: a registered granule's base is non-null (granule 0 is never
        // registered: `set` refuses base 0).
        Some(Granule(unsafe {
            NonNull::new_unchecked((base | t as usize) as *mut u8)
        }))
    }

    /// Records a one-granule region at `base` with a non-zero `tag`.
    /// Call after the region is mapped and initialised.
    pub fn set(&self, base: usize, tag: u8) -> Result<(), RegisterError> {
        if base == 0 || !base.is_multiple_of(GRANULE) || tag == 0 {
            return Err(RegisterError::Misaligned);
        }
        let slot = self
            .tags
            .get(base >> GRANULE_SHIFT)
            .ok_or(RegisterError::OutOfRange)?;
        slot.compare_exchange(0, tag, Ordering::Release, Ordering::Relaxed)
            .map(|_| ())
            .map_err(|_| RegisterError::Overlap)
    }

    /// Forgets the region at `base`. Call before it is unmapped.
    pub fn clear(&self, base: usize) {
        if let Some(slot) = self.tags.get(base >> GRANULE_SHIFT) {
            slot.store(0, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::sync::atomic::AtomicUsize as Count;

    struct Heap(Count);
    const L: Layout = match Layout::from_size_align(LEAF_BYTES, 64) {
        Ok(l) => l,
        Err(_) => panic!(),
    };
    // SAFETY: returns zeroed, 64-aligned, LEAF_BYTES allocations that are only
    // freed when never published.
    unsafe impl LeafSource for Heap {
        fn alloc_leaf(&self) -> Option<NonNull<u8>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            // SAFETY: L has non-zero size.
            NonNull::new(unsafe { alloc_zeroed(L) })
        }
        unsafe fn free_leaf(&self, leaf: NonNull<u8>) {
            // SAFETY: allocated above with layout L.
            unsafe { dealloc(leaf.as_ptr(), L) }
        }
    }

    const G: usize = GRANULE;

    #[test]
    fn every_address_inside_resolves_and_nothing_outside_does() {
        let r = Registry::new();
        let src = Heap(Count::new(0));
        let base = 0x7f12_3440_0000usize & !(G - 1);
        let len = 3 * G + 12345;
        r.register(base, len, &src).unwrap();
        for a in [base, base + 1, base + G, base + 2 * G + 7, base + len - 1] {
            let reg = r.lookup(a).expect("inside");
            assert_eq!(reg.base().as_ptr() as usize, base);
            assert_eq!(reg.end(), base + len);
        }
        for a in [
            base - 1,
            base + len,
            base + 4 * G - 1,
            base + 4 * G,
            0,
            usize::MAX,
            1 << 47,
        ] {
            assert!(r.lookup(a).is_none(), "{a:#x}");
        }
        r.unregister(base, len);
        assert!(r.lookup(base).is_none());
        assert!(r.lookup(base + len - 1).is_none());
    }

    #[test]
    fn granule_map_answers_like_the_registry() {
        static M: GranuleMap = GranuleMap::new();
        let base = 0x7f12_3440_0000usize & !(G - 1);
        assert!(M.lookup(base).is_none());
        M.set(base, 16).unwrap();
        assert_eq!(M.set(base, 19), Err(RegisterError::Overlap));
        assert_eq!(M.set(G + 1, 16), Err(RegisterError::Misaligned));
        for a in [base, base + 1, base + G - 1] {
            let r = M.lookup(a).unwrap();
            assert_eq!(
                (r.base().as_ptr() as usize, r.end(), r.tag()),
                (base, base + G, 16)
            );
        }
        assert!(M.lookup(base - 1).is_none() && M.lookup(base + G).is_none());
        assert!(M.lookup(1 << 47).is_none() && M.lookup(usize::MAX).is_none());
        M.clear(base);
        assert!(M.lookup(base).is_none());
    }

    #[test]
    fn tags_come_back_with_every_lookup() {
        let r = Registry::new();
        let src = Heap(Count::new(0));
        r.register_tagged(40 * G, G + 10, 19, &src).unwrap();
        let reg = r.lookup(41 * G + 3).unwrap();
        assert_eq!(
            (reg.tag(), reg.base().as_ptr() as usize, reg.end()),
            (19, 40 * G, 41 * G + 10)
        );
        r.register(60 * G, G, &src).unwrap();
        assert_eq!(r.lookup(60 * G).unwrap().tag(), 0);
    }

    #[test]
    fn lookup_right_after_register_and_across_leaves() {
        let r = Registry::new();
        let src = Heap(Count::new(0));
        // Straddles a leaf boundary (LEAF_LEN granules per leaf).
        let base = (5 * LEAF_LEN - 1) * G;
        r.register(base, 2 * G, &src).unwrap();
        assert_eq!(src.0.load(Ordering::Relaxed), 2);
        assert!(r.lookup(base + G + 5).is_some());
        assert!(r.lookup(base + 2 * G).is_none());
    }

    #[test]
    fn refuses_bad_ranges_without_side_effects() {
        let r = Registry::new();
        let src = Heap(Count::new(0));
        assert_eq!(r.register(G + 1, G, &src), Err(RegisterError::Misaligned));
        assert_eq!(r.register(0, G, &src), Err(RegisterError::Misaligned));
        assert_eq!(r.register(G, 0, &src), Err(RegisterError::Misaligned));
        assert_eq!(r.register(1 << 47, G, &src), Err(RegisterError::OutOfRange));
        r.register(8 * G, 2 * G, &src).unwrap();
        assert_eq!(r.register(7 * G, 2 * G, &src), Err(RegisterError::Overlap));
        // The failed registration left granule 7 empty.
        assert!(r.lookup(7 * G).is_none());
        assert_eq!(r.lookup(9 * G).unwrap().base().as_ptr() as usize, 8 * G);
    }

    #[test]
    fn many_threads_register_disjoint_regions() {
        let r = std::sync::Arc::new(Registry::new());
        let src = std::sync::Arc::new(Heap(Count::new(0)));
        let hs: std::vec::Vec<_> = (0..4usize)
            .map(|t| {
                let (r, src) = (r.clone(), src.clone());
                std::thread::spawn(move || {
                    for i in 0..500usize {
                        let base = (1 + t * 1000 + i) * G * 3;
                        r.register(base, G + 1, &*src).unwrap();
                        assert!(r.lookup(base + G).is_some());
                        assert!(r.lookup(base + G + 1).is_none());
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
}
