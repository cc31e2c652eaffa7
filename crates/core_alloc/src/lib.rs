//! `core_alloc`: the allocator proper.
//!
//! - Size classes come from `superslab`'s layout table; requests up to
//!   [`superslab::MEDIUM_MAX`] (128 KiB) are served from per-thread heaps, larger
//!   ones are mapped directly and unmapped on free.
//! - Each thread has a heap: per class, a cache of free blocks and a list of
//!   slabs it owns. `malloc` pops the cache and `free` pushes onto it, whoever
//!   allocated the block. The cache refills in batches from the owned slabs
//!   and, past its limit, flushes down to half of it (a limit that shrinks
//!   for a class the thread only frees): onto a slab's free list if this
//!   heap owns it, else through the slab's remote queue.
//! - `realloc` stays in place when the block still fits (and for large blocks
//!   grows or shrinks the mapping in place when the OS allows); aligned
//!   allocation uses classes whose stride is a multiple of the alignment.
//!
//! API boundary: every entry point that takes a pointer also takes the
//! registry's [`registry::Region`] proof that the pointer is hakmem's. This box
//! knows nothing about foreign pointers: that is `front_gate`'s and
//! `external_guard`'s business.
#![deny(missing_docs)]

mod alloc;
mod heap;

pub use alloc::{
    aligned, calloc, free, free_granule, malloc, malloc_after_miss, malloc_fast, prefetch_for_free,
    realloc, trim, usable_size, FreeError,
};
pub use heap::{
    fork_child, fork_parent, fork_prepare, init_canary, init_thread_key, live_heaps,
    register_fork_handlers,
};

#[cfg(test)]
mod tests {
    use super::*;
    use superslab::{UserPtr, CLASSES};

    fn region(p: UserPtr) -> registry::Region {
        shared_pool::lookup(p.addr()).expect("hakmem owns its blocks")
    }

    fn free_all(ptrs: impl IntoIterator<Item = UserPtr>) {
        for p in ptrs {
            free(region(p), p).unwrap();
        }
    }

    /// One test at a time: some assert on the process-wide segment count,
    /// which another test's allocations would change.
    fn serial() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn every_class_round_trips_with_its_usable_size() {
        let _serial = serial();
        for l in CLASSES.iter() {
            let size = l.stride as usize;
            let p = malloc(size).expect("memory");
            assert_eq!(p.addr() % 16, 0);
            assert_eq!(usable_size(region(p), p), Ok(size));
            // SAFETY: a fresh block of `size` bytes.
            unsafe { core::ptr::write_bytes(p.as_ptr(), 0xab, size) };
            free(region(p), p).unwrap();
        }
    }

    #[test]
    fn interior_pointers_are_refused_not_freed() {
        let _serial = serial();
        let p = malloc(100).unwrap();
        let inner = UserPtr::new((p.addr() + 16) as *mut u8).unwrap();
        assert_eq!(free(region(inner), inner), Err(FreeError::NotBlockStart));
        let big = malloc(1 << 20).unwrap();
        let inner = UserPtr::new((big.addr() + 4096) as *mut u8).unwrap();
        assert_eq!(free(region(inner), inner), Err(FreeError::NotBlockStart));
        free(region(p), p).unwrap();
        free(region(big), big).unwrap();
    }

    #[test]
    fn realloc_keeps_contents_in_place_and_when_moving() {
        let _serial = serial();
        let p = malloc(100).unwrap();
        // SAFETY: 100 fresh bytes.
        unsafe { core::ptr::write_bytes(p.as_ptr(), 7, 100) };
        let same = realloc(region(p), p, 110, 16).unwrap().unwrap();
        assert_eq!(same, p, "fits the same 112-byte class");
        let moved = realloc(region(p), p, 5000, 16).unwrap().unwrap();
        // SAFETY: the first 100 bytes were copied.
        assert!(unsafe { core::slice::from_raw_parts(moved.as_ptr(), 100) }
            .iter()
            .all(|&b| b == 7));
        let large = realloc(region(moved), moved, 300_000, 16).unwrap().unwrap();
        // SAFETY: as above.
        assert!(unsafe { core::slice::from_raw_parts(large.as_ptr(), 100) }
            .iter()
            .all(|&b| b == 7));
        free(region(large), large).unwrap();
    }

    #[test]
    fn aligned_calloc_and_large_blocks() {
        let _serial = serial();
        for align in [32usize, 64, 4096, 65536, 1 << 20] {
            let p = aligned(align, 1000).unwrap();
            assert_eq!(p.addr() % align, 0, "align {align}");
            free(region(p), p).unwrap();
        }
        let z = calloc(1000, 3).unwrap();
        // SAFETY: 3000 zeroed bytes.
        assert!(unsafe { core::slice::from_raw_parts(z.as_ptr(), 3000) }
            .iter()
            .all(|&b| b == 0));
        free(region(z), z).unwrap();
        assert!(calloc(usize::MAX / 2, 3).is_none(), "overflow");
        let before = shared_pool::stats().large_regions;
        let big = malloc(10 << 20).unwrap();
        assert_eq!(shared_pool::stats().large_regions, before + 1);
        free(region(big), big).unwrap();
        assert_eq!(
            shared_pool::stats().large_regions,
            before,
            "large blocks go back to the OS"
        );
    }

    #[test]
    fn blocks_freed_by_another_thread_come_home() {
        let _serial = serial();
        let ptrs: std::vec::Vec<usize> = (0..10_000)
            .map(|i| malloc(16 + i % 500).unwrap().addr())
            .collect();
        std::thread::spawn(move || {
            for a in ptrs {
                let p = UserPtr::new(a as *mut u8).unwrap();
                free(region(p), p).unwrap();
            }
        })
        .join()
        .unwrap();
        // The owner reuses them: allocating again does not need new segments.
        let segs = shared_pool::stats().segments;
        let again: std::vec::Vec<UserPtr> =
            (0..10_000).map(|i| malloc(16 + i % 500).unwrap()).collect();
        assert!(shared_pool::stats().segments <= segs + 1);
        free_all(again);
    }

    #[test]
    fn medium_slabs_refuse_interior_pointers_in_every_64k_part() {
        let _serial = serial();
        // A 512 KiB medium slab spans eight class-map entries; blocks of a
        // 20 KiB class lie in all of them. Each block start is accepted (its
        // usable size is its class's) and each interior pointer refused.
        let size = 20_000;
        let ptrs: std::vec::Vec<UserPtr> = (0..60).map(|_| malloc(size).unwrap()).collect();
        let mut parts = std::collections::BTreeSet::new();
        for &p in &ptrs {
            parts.insert((p.addr() >> 16) & 7);
            assert!(usable_size(region(p), p).unwrap() >= size);
            for off in [16, 4096, size - 16] {
                let inner = UserPtr::new((p.addr() + off) as *mut u8).unwrap();
                assert_eq!(free(region(inner), inner), Err(FreeError::NotBlockStart));
            }
        }
        assert!(
            parts.len() >= 4,
            "blocks spread over the slab's parts: {parts:?}"
        );
        free_all(ptrs);
    }

    #[test]
    fn a_bin_its_thread_only_frees_shrinks_then_grows_back() {
        let _serial = serial();
        // Another thread makes the blocks; this one only frees them.
        let size = 64;
        let c = superslab::class_of(size);
        let max = heap::cache_limit(c);
        let ptrs: std::vec::Vec<usize> = std::thread::spawn(move || {
            (0..4 * max as usize)
                .map(|_| malloc(size).unwrap().addr())
                .collect()
        })
        .join()
        .unwrap();
        std::thread::spawn(move || {
            // A heap of its own first (a thread that never allocated frees
            // straight to the slabs).
            let other = malloc(4000).unwrap();
            free(region(other), other).unwrap();
            // The heap may be a parked one that served another test: start
            // this class's cache empty, with no swap recorded.
            let h = heap::current();
            h.flush_all(c);
            let bin = h.cache_bin(c);
            // SAFETY: this thread's own bin.
            unsafe { (*bin).swapped = false };
            for a in ptrs {
                let p = UserPtr::new(a as *mut u8).unwrap();
                free(region(p), p).unwrap();
            }
            // SAFETY: this thread's own bin, read only.
            let (limit, nfreed) = unsafe { ((*bin).limit, (*bin).nfreed) };
            assert_eq!(limit, heap::FREE_ONLY_LIMIT.min(max));
            assert!(nfreed <= limit);
            // Now it mallocs the class too: the next overflow doubles back.
            let mine: std::vec::Vec<UserPtr> = (0..40).map(|_| malloc(size).unwrap()).collect();
            free_all(mine);
            // SAFETY: as above.
            let limit = unsafe { (*bin).limit };
            assert!(limit > heap::FREE_ONLY_LIMIT.min(max), "limit {limit}");
            assert!(limit <= max);
        })
        .join()
        .unwrap();
    }
}
