//! Shared by the registry's loom models: a leaf source on the test heap that
//! counts live leaves and remembers whether a registrar lost a leaf race.
#![cfg(loom)]

use loom::sync::atomic::{AtomicUsize, Ordering};
use registry::{LeafSource, LEAF_BYTES};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

pub struct Src {
    pub live: AtomicUsize,
    /// Model-only, outside loom: a registrar lost the race for a leaf.
    pub lost: std::sync::atomic::AtomicBool,
}

impl Src {
    pub fn new() -> Self {
        Self {
            live: AtomicUsize::new(0),
            lost: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

fn layout() -> Layout {
    Layout::from_size_align(LEAF_BYTES, 64).unwrap()
}

// SAFETY: zeroed, aligned, sized as required; freed only when unpublished.
unsafe impl LeafSource for Src {
    fn alloc_leaf(&self) -> Option<NonNull<u8>> {
        self.live.fetch_add(1, Ordering::Relaxed);
        // SAFETY: non-zero layout.
        NonNull::new(unsafe { alloc_zeroed(layout()) })
    }
    unsafe fn free_leaf(&self, leaf: NonNull<u8>) {
        self.live.fetch_sub(1, Ordering::Relaxed);
        self.lost.store(true, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: allocated above with the same layout.
        unsafe { dealloc(leaf.as_ptr(), layout()) }
    }
}
