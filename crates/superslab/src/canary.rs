//! Double-free detection (feature `double-free-check`, on by default).
//!
//! A freed small or medium block carries, in its second word, a canary: its
//! own address mixed with a per-process secret (from the kernel's `AT_RANDOM`
//! bytes, read once with no system call). `free` checks the word before
//! writing it: finding the canary already there means the block is free
//! right now, in some thread's cache, a slab's free list or a remote queue,
//! so this is a double free, from whichever thread. `malloc` clears the word
//! when it hands the block out, and carving marks fresh blocks free, so a
//! free of a block start that was never handed out is caught as well.
//! Without the feature every function here is empty.
//!
//! Cost: one load, compare and store on a cache line that `free` writes
//! anyway (the link word), and one store on `malloc` to a line it has just
//! read. A live block whose program data happens to equal its canary would be
//! a false alarm: with a 64-bit secret that is a 2^-64 event unless the
//! program learns the secret. A block overwritten after its first free (use
//! after free) can hide a later double free: detection is for the plain case.

use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use remote_queue::Node;

static KEY: AtomicUsize = AtomicUsize::new(0);

/// Reads the secret once. Before that, canaries use a fixed key: blocks
/// freed then are still checked, only less secretly.
pub fn init() {
    if KEY.load(Relaxed) != 0 {
        return;
    }
    // SAFETY: getauxval has no preconditions; AT_RANDOM points at 16 bytes
    // the kernel placed on the initial stack for the life of the process.
    let k = unsafe {
        let p = libc::getauxval(libc::AT_RANDOM) as *const u8;
        if p.is_null() {
            0x9e37_79b9_7f4a_7c15
        } else {
            p.add(8).cast::<usize>().read_unaligned()
        }
    };
    KEY.store(k | 1, Relaxed);
}

/// The process's secret (a fixed value until [`init`] ran). Thread heaps keep
/// a copy next to their caches, so `free` reads it from a line it touches
/// anyway; every copy must equal this value.
#[inline(always)]
pub fn key() -> usize {
    KEY.load(Relaxed)
}

#[inline(always)]
fn canary(n: *mut Node) -> usize {
    n as usize ^ key()
}

/// Marks a block free without checking (carving).
///
/// # Safety
/// `n` is a block start of at least 16 bytes that nobody else uses.
#[inline(always)]
pub unsafe fn mark_free(n: *mut Node) {
    if cfg!(feature = "double-free-check") {
        // SAFETY: per the contract.
        unsafe { (n as *mut usize).add(1).write(canary(n)) };
    }
}

/// Marks a validated block free; aborts if it already was. `key` is the
/// process secret ([`key`], or a thread heap's copy of it).
///
/// # Safety
/// `n` is a validated block start of at least 16 bytes that the caller is
/// about to put on a free list.
#[inline(always)]
pub unsafe fn on_free(n: *mut Node, key: usize) {
    if !cfg!(feature = "double-free-check") {
        return;
    }
    // SAFETY: per the contract, the block has a second word.
    unsafe {
        let w = (n as *mut usize).add(1);
        let c = n as usize ^ key;
        if *w == c {
            double_free(n);
        }
        *w = c;
    }
}

/// Clears the mark of a block being handed to the program.
///
/// # Safety
/// `n` is a free block of at least 16 bytes that the caller owns.
#[inline(always)]
pub unsafe fn on_alloc(n: *mut Node) {
    if !cfg!(feature = "double-free-check") {
        return;
    }
    // SAFETY: per the contract.
    unsafe { (n as *mut usize).add(1).write(0) };
}

#[cold]
#[inline(never)]
fn double_free(n: *mut Node) -> ! {
    crate::os::fatal(
        "double free (or free of a block that is not allocated)",
        n as usize,
    )
}
