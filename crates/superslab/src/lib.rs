//! `superslab`: where hakmem's memory comes from and how it is laid out.
//!
//! - [`os`]: the only code that maps, unmaps or decommits memory.
//! - [`size_class`]: the one table of block layout per size class.
//! - [`Segment`]: a 4 MiB, 4 MiB-aligned region of equal slabs whose metadata
//!   sits in the segment header; [`LargeRegion`]: one directly mapped block.
//! - [`Slab`]: per-slab metadata and the owner's single-writer operations,
//!   gated by the ownership token of the slab's [`remote_queue::RemoteQueue`].
//! - [`UserPtr`] / [`BlockPtr`]: the two views of a block address.
//!
//! Architecture invariant: this crate never decides whether a pointer is
//! hakmem's (that is `registry`'s job) and never reads memory at a user
//! pointer. It keeps no global state.
#![cfg_attr(not(test), no_std)]

pub mod canary;
pub mod os;
pub mod ptr;
pub mod segment;
pub mod size_class;
pub mod slab;

pub use ptr::{BlockPtr, UserPtr};
pub use segment::{
    region_kind, LargeRegion, RegionKind, Segment, SegmentPoolState, SEGMENT_SHIFT, SEGMENT_SIZE,
    TAG_LARGE,
};
pub use size_class::{class_of, ClassLayout, SlabKind, CLASSES, MEDIUM_MAX, NUM_CLASSES};
pub use slab::{check_row, BadPointer, BlockCheck, Slab};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_layout_and_slab_lookup() {
        let seg = Segment::create(SlabKind::Small).expect("map");
        // SAFETY: just created.
        let s = unsafe { seg.as_ref() };
        let base = seg.as_ptr() as usize;
        assert_eq!(base % SEGMENT_SIZE, 0);
        assert_eq!(s.slab_count(), 64);
        assert!(core::ptr::eq(s.slab_of(base + 65536 * 3 + 100), s.slab(3)));
        assert_eq!(s.slot_of(s.slab(5)), 5);
        assert!(core::ptr::eq(Segment::of_slab(s.slab(9)), s));
        // Slot 0 (the header) never yields a block.
        let p = UserPtr::new((base + 128) as *mut u8).unwrap();
        assert_eq!(s.slab_of(p.addr()).block_of(p), Err(BadPointer::SlabUnused));
        // SAFETY: fresh, unregistered, unused.
        unsafe { Segment::destroy(seg) };
    }

    /// Slab `slot` of a fresh segment of `kind`, formatted for `class`, with
    /// its owner's token. The caller destroys the segment after its last use
    /// of the slab.
    fn formatted(
        kind: SlabKind,
        slot: usize,
        class: usize,
    ) -> (
        core::ptr::NonNull<Segment>,
        &'static Slab,
        remote_queue::OwnerToken<'static>,
    ) {
        canary::init();
        let seg = Segment::create(kind).expect("map");
        // SAFETY: just created; it lives until the caller destroys it.
        let slab: &'static Slab = unsafe { &*(seg.as_ref().slab(slot) as *const Slab) };
        let tok = slab.remote.claim(42).expect("a fresh slab has no owner");
        slab.format(&tok, class);
        (seg, slab, tok)
    }

    /// Up to `max` blocks popped off the slab (refilling it as the cache
    /// does), fewer if it runs out.
    fn pop_up_to(
        slab: &Slab,
        tok: &remote_queue::OwnerToken<'_>,
        max: usize,
    ) -> std::vec::Vec<BlockPtr> {
        let mut got = std::vec::Vec::new();
        while got.len() < max {
            match slab.pop(tok) {
                Some(b) => got.push(b),
                None if slab.refill(tok) => continue,
                None => break,
            }
        }
        got
    }

    #[test]
    fn owner_pops_pushes_and_collects_remote_frees() {
        let c = class_of(48);
        let (seg, slab, tok) = formatted(SlabKind::Small, 1, c);
        let cap = CLASSES[c].capacity as usize;
        let got = pop_up_to(slab, &tok, usize::MAX);
        assert_eq!(got.len(), cap);
        assert_eq!(slab.used(&tok), cap as u32);
        let mut addrs: std::vec::Vec<usize> = got.iter().map(|b| b.addr()).collect();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), cap, "no block handed out twice");
        for w in addrs.windows(2) {
            assert!(w[1] - w[0] >= 48, "blocks overlap");
        }
        // Interior pointers are rejected; block starts accepted.
        let first = UserPtr::new(addrs[0] as *mut u8).unwrap();
        let inner = UserPtr::new((addrs[0] + 16) as *mut u8).unwrap();
        assert_eq!(slab.block_of(inner), Err(BadPointer::NotBlockStart));
        assert!(slab.block_of(first).is_ok());
        // Half come back remotely, half locally.
        let half = got.len() / 2;
        for (i, b) in got.into_iter().enumerate() {
            if i < half {
                let _ = slab.push_remote(b);
            } else {
                slab.push_local(&tok, b);
            }
        }
        assert_eq!(slab.used(&tok), half as u32);
        assert!(slab.collect_remote(&tok));
        assert_eq!(slab.used(&tok), 0);
        slab.remote.release(tok);
        // SAFETY: no blocks live; nothing refers to the segment.
        unsafe { Segment::destroy(seg) };
    }

    #[test]
    fn take_remote_hands_over_every_remote_free_and_counts_nothing() {
        let (seg, slab, tok) = formatted(SlabKind::Small, 1, class_of(48));
        let blocks = pop_up_to(slab, &tok, 40);
        let mut want: std::vec::Vec<usize> = blocks.iter().map(|b| b.addr()).collect();
        assert_eq!(slab.used(&tok), 40);
        assert!(slab.take_remote(&tok).is_none(), "nothing queued yet");
        for b in blocks {
            let _woke = slab.push_remote(b);
        }
        // Queued blocks still count as used; so do blocks the owner takes.
        assert_eq!(slab.used(&tok), 40);
        let head = slab.take_remote(&tok).expect("the queued chain");
        assert_eq!(slab.used(&tok), 40);
        assert!(slab.take_remote(&tok).is_none(), "the queue is empty after");
        let key = canary::key();
        let mut got = std::vec::Vec::new();
        let mut n = head.as_ptr();
        while !n.is_null() {
            got.push(n as usize);
            // SAFETY: the chain's nodes are free blocks of this slab, linked
            // with guard words by the pushes.
            n = unsafe { canary::next(n, key) };
        }
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "every remote free, once");
        // SAFETY: no reference into the segment is used after this.
        unsafe { Segment::destroy(seg) };
    }

    #[test]
    fn a_medium_slab_is_found_from_any_of_its_64k_parts() {
        // A 512 KiB slab covers eight class-map entries; every block start
        // in it is accepted with its class, wherever it lies.
        let class = size_class::class_of_const(20_000);
        assert_eq!(CLASSES[class].kind, SlabKind::Medium);
        let (seg, slab, tok) = formatted(SlabKind::Medium, 1, class);
        let stride = CLASSES[class].stride as usize;
        let blocks = pop_up_to(slab, &tok, usize::MAX);
        assert_eq!(blocks.len(), CLASSES[class].capacity as usize);
        let base = seg.cast::<u8>();
        let mut parts = std::collections::BTreeSet::new();
        for b in &blocks {
            let a = b.addr();
            parts.insert((a >> 16) & 7);
            // SAFETY: `a` lies inside the live segment at `base`.
            let (got, c) = unsafe { Segment::block_at(base, a) }.unwrap();
            assert_eq!((got.addr(), c), (a, class));
            // SAFETY: as above.
            let inner = unsafe { Segment::block_at(base, a + stride / 2) };
            assert_eq!(inner.err(), Some(BadPointer::NotBlockStart));
        }
        assert_eq!(parts.len(), 8, "blocks in every 64 KiB part: {parts:?}");
        // Slot 0 (the header) has no class: nothing there is a block.
        // SAFETY: inside the segment.
        let hdr = unsafe { Segment::block_at(base, base.as_ptr() as usize + 4096) };
        assert_eq!(hdr.err(), Some(BadPointer::SlabUnused));
        // SAFETY: no reference into the segment is used after this.
        unsafe { Segment::destroy(seg) };
    }

    #[test]
    fn large_region_alignment_and_usable_size() {
        for align in [16usize, 4096, 1 << 20, 8 << 20] {
            let h = LargeRegion::create(300_000, align).expect("map");
            // SAFETY: just created.
            let r = unsafe { h.as_ref() };
            assert_eq!(r.user().addr() % align, 0);
            assert!(r.usable() >= 300_000);
            assert!(r.is_block(r.user()));
            assert_eq!(h.as_ptr() as usize % SEGMENT_SIZE, 0);
            // SAFETY: fresh and unreferenced.
            unsafe { LargeRegion::destroy(h) };
        }
        assert!(LargeRegion::create(usize::MAX - 100, 16).is_none());
        // Size 0 with a large alignment: the block must lie inside the region.
        let h = LargeRegion::create(0, 1 << 20).expect("map");
        // SAFETY: just created.
        let r = unsafe { h.as_ref() };
        assert!(r.user().addr() < h.as_ptr() as usize + r.map_len());
        // SAFETY: fresh and unreferenced.
        unsafe { LargeRegion::destroy(h) };
    }
}
