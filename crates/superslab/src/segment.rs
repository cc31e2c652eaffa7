//! Segments: 4 MiB, 4 MiB-aligned regions carved into equal slabs, with all
//! slab metadata in a header at the segment's start (none inside slabs), and
//! large regions: one directly mapped block with a small header.
//!
//! Both kinds start with a [`RegionKind`] word, so code that has proven an
//! address to be hakmem's (through the registry) can tell them apart.

use crate::os;
use crate::ptr::BlockPtr;
use crate::ptr::UserPtr;
use crate::size_class::SlabKind;
use crate::slab::{BadPointer, BlockCheck, Slab, CHECKS};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// log2 of the segment size; equals the registry granule.
pub const SEGMENT_SHIFT: u32 = 22;
/// Segment size and alignment (4 MiB).
pub const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// Slab slots in a segment of small slabs (slot 0 holds the header).
pub const MAX_SLABS: usize = SEGMENT_SIZE >> crate::size_class::SMALL_SLAB_SHIFT;

/// The first word of every hakmem region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum RegionKind {
    /// A [`Segment`] of slabs.
    Segment = 0x5e65_0001,
    /// A [`LargeRegion`]: one block.
    Large = 0x1a49_0002,
}

/// Registry tag of large regions. A segment's tag is its slab shift (16 or
/// 19), so a free finds its slab from the registry entry alone.
pub const TAG_LARGE: u8 = 1;

/// Reads the kind of a registered region.
///
/// # Safety
/// `base` must be the base of a live region created by this crate.
#[inline(always)]
pub unsafe fn region_kind(base: NonNull<u8>) -> RegionKind {
    // SAFETY: every region starts with a RegionKind written at creation.
    unsafe { *base.as_ptr().cast::<RegionKind>() }
}

/// Pool bookkeeping of a segment. Only the pool touches it, under its lock.
#[derive(Debug)]
pub struct SegmentPoolState {
    /// Slots whose slabs are empty and unowned (bit i = slot i).
    pub free_mask: u64,
    /// Free slots whose pages may be resident (not yet decommitted).
    pub dirty_mask: u64,
    /// Neighbours in the pool's list of segments with free slots.
    pub next: *mut Segment,
    /// See `next`.
    pub prev: *mut Segment,
    /// True while on that list.
    pub listed: bool,
}

/// A segment header.
#[repr(C, align(64))]
pub struct Segment {
    kind: RegionKind,
    slab_kind: SlabKind,
    slab_shift: u32,
    slab_count: u32,
    pool: UnsafeCell<SegmentPoolState>,
    /// Per 64 KiB of the segment (a small slab's size, whatever this
    /// segment's slab kind; only `set_slot_class` and `create` write it, so
    /// every entry is a class below `NUM_CLASSES` or [`NO_CLASS`]): the
    /// class of the slab there, or [`NO_CLASS`]
    /// while it has none. One read-mostly cache line that validates a free of
    /// any block in the segment without touching the slab's own metadata,
    /// indexed by a constant shift (no slab-kind lookup on the free path).
    classes: ClassMap,
    slabs: [Slab; MAX_SLABS],
}

#[repr(C, align(64))]
struct ClassMap([AtomicU8; MAX_SLABS]);

/// Class-map value of a slot whose slab has no class (fresh segments and the
/// header slot).
pub const NO_CLASS: u8 = 0xff;
static_assertions::const_assert!((NO_CLASS as usize) >= crate::size_class::NUM_CLASSES);

static_assertions::const_assert!(
    core::mem::size_of::<Segment>() <= 1 << crate::size_class::SMALL_SLAB_SHIFT
);

// SAFETY: slab metadata is Sync; the pool state is only touched under the
// pool's lock.
unsafe impl Sync for Segment {}

impl Segment {
    /// Maps a fresh segment of `kind` slabs. All slots except 0 are free and
    /// clean (fresh zero pages). Not registered: that is the caller's job.
    pub fn create(kind: SlabKind) -> Option<NonNull<Segment>> {
        // One guard page right after the segment: the last block of a
        // segment ends at (or just before) its end, and without the guard the
        // kernel may place another segment there, whose header an overflow off
        // that block would reach. With it, such an overflow faults instead.
        let base = os::map_aligned(SEGMENT_SIZE + os::PAGE, SEGMENT_SIZE)?;
        // SAFETY: the page after the segment is part of the fresh mapping.
        if !unsafe { os::guard(base.as_ptr().add(SEGMENT_SIZE), os::PAGE) } {
            // SAFETY: our own fresh mapping, seen by nobody.
            unsafe { os::unmap(base.as_ptr(), SEGMENT_SIZE + os::PAGE) };
            return None;
        }
        let seg = base.cast::<Segment>();
        let shift = kind.shift();
        let count = (SEGMENT_SIZE >> shift) as u32;
        // SAFETY: fresh zeroed mapping, large enough for the header (checked at
        // compile time); zero bytes are a valid Segment except for the fields
        // written here.
        unsafe {
            let s = seg.as_ptr();
            ptr::addr_of_mut!((*s).kind).write(RegionKind::Segment);
            ptr::addr_of_mut!((*s).slab_kind).write(kind);
            ptr::addr_of_mut!((*s).slab_shift).write(shift);
            ptr::addr_of_mut!((*s).slab_count).write(count);
            let full = if count == 64 {
                u64::MAX
            } else {
                (1u64 << count) - 1
            };
            (*(*s).pool.get()).free_mask = full & !1;
            for c in (*s).classes.0.iter() {
                c.store(NO_CLASS, Relaxed);
            }
            for i in 1..count as usize {
                (*s).slabs[i].set_base(base.as_ptr() as usize + (i << shift));
            }
        }
        Some(seg)
    }

    /// Unmaps a segment.
    ///
    /// # Safety
    /// The segment is unregistered, and no slab of it is owned, listed or holds
    /// blocks; nothing refers to it any more.
    pub unsafe fn destroy(seg: NonNull<Segment>) {
        // SAFETY: per the contract, the whole mapping is dead.
        unsafe { os::unmap(seg.as_ptr().cast(), SEGMENT_SIZE + os::PAGE) }
    }

    /// The segment containing `addr`, given the region base the registry gave.
    ///
    /// # Safety
    /// `base` must be a live segment's base.
    #[inline(always)]
    pub unsafe fn from_base<'a>(base: NonNull<u8>) -> &'a Segment {
        // SAFETY: per the contract.
        unsafe { base.cast::<Segment>().as_ref() }
    }

    /// The slab holding `addr` in the segment at `base` whose registry tag is
    /// `shift` (its slab shift): no read of the segment header.
    ///
    /// # Safety
    /// `base` is a live segment's base, `shift` its slab shift, and `addr` lies
    /// inside the segment.
    #[inline(always)]
    pub unsafe fn slab_at<'a>(base: NonNull<u8>, addr: usize, shift: u8) -> &'a Slab {
        let i = (addr - base.as_ptr() as usize) >> shift;
        // SAFETY: per the contract the header is live; the index is masked.
        unsafe { &(*base.as_ptr().cast::<Segment>()).slabs[i & (MAX_SLABS - 1)] }
    }

    /// Validates `addr` as a block start in the segment at `base`, reading
    /// only the segment's class map and the static [`CHECKS`] table. Returns
    /// the block and its class.
    ///
    /// # Safety
    /// `base` is a live segment's base and `addr` lies inside the segment.
    #[inline(always)]
    pub unsafe fn block_at(
        base: NonNull<u8>,
        addr: usize,
    ) -> Result<(BlockPtr, usize), BadPointer> {
        // SAFETY: per the contract; the rows are `CHECKS`' own.
        unsafe { Self::block_at_with(base, addr, |v| &CHECKS[v as usize]) }
            .map(|(b, c)| (b, c as usize))
    }

    /// [`block_at`](Self::block_at) with the block-start test's row for
    /// class-map value `v` supplied by `row(v)`, for a caller that keeps
    /// copies of [`CHECKS`]' rows where it reads them anyway. Returns the
    /// block and its class (below [`NUM_CLASSES`](crate::NUM_CLASSES)).
    ///
    /// `row` is called exactly once, before this returns, whatever the
    /// result. The class map holds only classes (below `NUM_CLASSES`) and
    /// [`NO_CLASS`], so `v` is one of those.
    ///
    /// # Safety
    /// As for [`block_at`](Self::block_at), and `row(v)` is equal to
    /// `CHECKS[v]` (a copy made with [`check_row`](crate::slab::check_row)),
    /// or accepts nothing.
    #[inline(always)]
    pub unsafe fn block_at_with<'r>(
        base: NonNull<u8>,
        addr: usize,
        row: impl FnOnce(u8) -> &'r BlockCheck,
    ) -> Result<(BlockPtr, u8), BadPointer> {
        // Segments are aligned to their size. (A mask, not `addr - base`:
        // the compiler turns the subtraction into a 64-bit mask constant.)
        let rel = addr & (SEGMENT_SIZE - 1);
        debug_assert_eq!(rel, addr - base.as_ptr() as usize);
        // SAFETY: per the contract the header is live.
        let seg = unsafe { &*base.as_ptr().cast::<Segment>() };
        let c = seg.classes.0[(rel >> crate::size_class::SMALL_SLAB_SHIFT) & (MAX_SLABS - 1)]
            .load(Relaxed);
        // One test per byte value: rows past the last class (NO_CLASS among
        // them) accept nothing.
        if !row(c).accepts(rel as u32) {
            return Err(if c == NO_CLASS {
                BadPointer::SlabUnused
            } else {
                BadPointer::NotBlockStart
            });
        }
        debug_assert!((c as usize) < crate::NUM_CLASSES);
        // SAFETY: non-null (inside a mapped segment).
        Ok((
            BlockPtr::from_raw(unsafe { NonNull::new_unchecked(addr as *mut u8) }),
            c,
        ))
    }

    /// Records slot `i`'s class (called when its slab is formatted).
    pub(crate) fn set_slot_class(&self, i: usize, class: usize) {
        let per = 1usize << (self.slab_shift - crate::size_class::SMALL_SLAB_SHIFT);
        for e in &self.classes.0[i * per..(i + 1) * per] {
            e.store(class as u8, Relaxed);
        }
    }

    /// The registry tag of this segment (its slab shift).
    pub fn tag(&self) -> u8 {
        self.slab_shift as u8
    }

    /// Slab kind of this segment.
    pub fn slab_kind(&self) -> SlabKind {
        self.slab_kind
    }

    /// Number of slab slots (including slot 0, which never holds blocks).
    pub fn slab_count(&self) -> usize {
        self.slab_count as usize
    }

    /// The slab whose address range holds `addr` (slot 0 for the header area:
    /// it never has a class, so every pointer there is rejected).
    #[inline(always)]
    pub fn slab_of(&self, addr: usize) -> &Slab {
        let i = (addr - self as *const _ as usize) >> self.slab_shift;
        &self.slabs[i & (MAX_SLABS - 1)]
    }

    /// Slab in slot `i`.
    pub fn slab(&self, i: usize) -> &Slab {
        &self.slabs[i]
    }

    /// Slot index of a slab of this segment.
    pub fn slot_of(&self, s: &Slab) -> usize {
        (s as *const Slab as usize - self.slabs.as_ptr() as usize) / core::mem::size_of::<Slab>()
    }

    /// The segment a slab's metadata lives in.
    pub fn of_slab(s: &Slab) -> &Segment {
        let base = s as *const Slab as usize & !(SEGMENT_SIZE - 1);
        // SAFETY: slab metadata lives only in segment headers, which sit at
        // the segment-aligned base of their mapping.
        unsafe { &*(base as *const Segment) }
    }

    /// Address and length of slot `i`'s memory.
    pub fn slot_range(&self, i: usize) -> (*mut u8, usize) {
        (
            (self as *const _ as usize + (i << self.slab_shift)) as *mut u8,
            1 << self.slab_shift,
        )
    }

    /// The pool's bookkeeping.
    ///
    /// # Safety
    /// The caller holds the pool lock (the only user of this state).
    #[allow(clippy::mut_from_ref)] // exclusive by the pool lock, not by borrow
    pub unsafe fn pool_state(&self) -> &mut SegmentPoolState {
        // SAFETY: per the contract, access is serialised by the pool lock.
        unsafe { &mut *self.pool.get() }
    }
}

/// Header of a directly mapped block.
#[repr(C)]
pub struct LargeRegion {
    kind: RegionKind,
    map_len: usize,
    user_off: usize,
}

/// Bytes before the user block in a large region when no alignment is asked.
pub const LARGE_HEADER: usize = 64;

impl LargeRegion {
    /// Maps a region for `size` bytes aligned to `align` (a power of two).
    /// The region base is aligned to at least [`SEGMENT_SIZE`]. Fresh memory is
    /// zero. Returns the header; not registered.
    pub fn create(size: usize, align: usize) -> Option<NonNull<LargeRegion>> {
        // A zero-byte block still needs an address inside the region, or the
        // registry would not recognise it (found by the preload stress test).
        let size = size.max(1);
        let user_off = align.max(LARGE_HEADER);
        let map_len = user_off.checked_add(size)?.checked_add(os::PAGE - 1)? & !(os::PAGE - 1);
        if map_len > isize::MAX as usize / 2 {
            return None;
        }
        let base = os::map_aligned(map_len, align.max(SEGMENT_SIZE))?;
        let h = base.cast::<LargeRegion>();
        // SAFETY: fresh mapping of at least one page.
        unsafe {
            h.as_ptr().write(LargeRegion {
                kind: RegionKind::Large,
                map_len,
                user_off,
            })
        };
        Some(h)
    }

    /// Unmaps the region.
    ///
    /// # Safety
    /// Unregistered and unreferenced.
    pub unsafe fn destroy(h: NonNull<LargeRegion>) {
        // SAFETY: per the contract.
        unsafe {
            let len = h.as_ref().map_len;
            os::unmap(h.as_ptr().cast(), len);
        }
    }

    /// The header of a registered large region.
    ///
    /// # Safety
    /// `base` is a live large region's base.
    #[inline]
    pub unsafe fn from_base<'a>(base: NonNull<u8>) -> &'a LargeRegion {
        // SAFETY: per the contract.
        unsafe { base.cast::<LargeRegion>().as_ref() }
    }

    /// The block handed to the program.
    pub fn user(&self) -> UserPtr {
        UserPtr::new((self as *const _ as usize + self.user_off) as *mut u8).expect("non-null")
    }

    /// Usable bytes of the block.
    pub fn usable(&self) -> usize {
        self.map_len - self.user_off
    }

    /// Length of the whole mapping.
    pub fn map_len(&self) -> usize {
        self.map_len
    }

    /// True if `p` is this region's block start.
    pub fn is_block(&self, p: UserPtr) -> bool {
        p.addr() == self as *const _ as usize + self.user_off
    }

    /// Tries to grow or shrink the mapping in place to hold `size` bytes.
    /// On success the caller must re-register the new extent.
    ///
    /// # Safety
    /// The region must be unregistered for the duration (so no lookup sees a
    /// stale end) and owned by the caller.
    pub unsafe fn resize_in_place(&mut self, size: usize) -> bool {
        let Some(new_len) = self
            .user_off
            .checked_add(size.max(1))
            .and_then(|n| n.checked_add(os::PAGE - 1))
            .map(|n| n & !(os::PAGE - 1))
        else {
            return false;
        };
        let base = self as *mut Self as *mut u8;
        if new_len == self.map_len {
            return true;
        }
        // SAFETY: the mapping is ours; remap never moves it.
        if unsafe { os::remap_in_place(base, self.map_len, new_len) } {
            self.map_len = new_len;
            true
        } else {
            false
        }
    }
}
