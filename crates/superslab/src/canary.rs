//! Free-block guard words (feature `double-free-check`, on by default):
//! double-free detection and free-list link protection in one word.
//!
//! A free small or medium block holds its list link in its first word and,
//! in its second, a check word: `block address ^ link ^ secret`, where the
//! secret is per process (the kernel's `AT_RANDOM` bytes, read once, no
//! system call). Every list of free blocks (thread caches, slab free lists,
//! remote queues) is written through [`link`] and read through [`next`]:
//!
//! - **Corrupted links are detected, not followed.** [`next`] recomputes the
//!   check word before it returns the link; an overflow of a live block into
//!   a free neighbour (or any write to a freed block) that changes the link
//!   or the check word aborts with `hakmem: free list corrupted ...` instead
//!   of handing out an attacker-chosen address. Forging a pair that passes
//!   needs the secret.
//! - **Double frees are detected at the second free.** [`on_free`] finds a
//!   block whose two words already form a valid pair: the block is free right
//!   now (in some thread's cache, a slab's free list or a remote queue), so
//!   this is a double free, from whichever thread. `malloc` clears the check
//!   word when it hands the block out ([`on_alloc`]), and carving links fresh
//!   blocks through [`link`], so a free of a block start that was never handed
//!   out is caught too.
//!
//! Cost: on `free`, one more load from the line it writes anyway; on
//! `malloc`, a load and compare on the line it reads anyway. A live block whose
//! program data happens to form a valid pair would be a false alarm: a 2^-64
//! event unless the program knows the secret. Without the feature, links are
//! plain pointers and nothing is checked.

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

const ON: bool = cfg!(feature = "double-free-check");

/// The check word of a free block `n` whose link is `next`.
#[inline(always)]
fn check(n: *mut Node, next: *mut Node, key: usize) -> usize {
    n as usize ^ next as usize ^ key
}

/// Links `n` to `next` and marks it free (writes both guard words).
///
/// # Safety
/// `n` is a block start of at least 16 bytes that nobody else uses.
#[inline(always)]
pub unsafe fn link(n: *mut Node, next: *mut Node, key: usize) {
    // SAFETY: per the contract, the block has two words we may write.
    unsafe {
        (*n).next = next;
        if ON {
            (n as *mut usize).add(1).write(check(n, next, key));
        }
    }
}

/// The link of free block `n`, verified: aborts if the block's guard words
/// do not form a valid pair (corrupted list, or a block listed twice and
/// handed out in between).
///
/// # Safety
/// `n` is a block on a free list the caller owns.
#[inline(always)]
pub unsafe fn next(n: *mut Node, key: usize) -> *mut Node {
    // SAFETY: per the contract, both words are readable.
    unsafe {
        let next = (*n).next;
        if ON && (n as *const usize).add(1).read() != check(n, next, key) {
            corrupted(n);
        }
        next
    }
}

/// Checks that validated block `n`, being freed, is not free already;
/// aborts if it is. The caller then puts it on a list with [`link`].
///
/// # Safety
/// `n` is a validated block start of at least 16 bytes.
#[inline(always)]
pub unsafe fn on_free(n: *mut Node, key: usize) {
    if !ON {
        return;
    }
    // SAFETY: per the contract, the block has two readable words.
    unsafe {
        let w = n as *const usize;
        if w.add(1).read() == check(n, w.read() as *mut Node, key) {
            double_free(n);
        }
    }
}

/// Clears the mark of a block being handed to the program.
///
/// # Safety
/// `n` is a free block of at least 16 bytes that the caller owns.
#[inline(always)]
pub unsafe fn on_alloc(n: *mut Node) {
    if ON {
        // SAFETY: per the contract.
        unsafe { (n as *mut usize).add(1).write(0) };
    }
}

#[cold]
#[inline(never)]
fn double_free(n: *mut Node) -> ! {
    crate::os::fatal(
        "double free (or free of a block that is not allocated)",
        n as usize,
    )
}

#[cold]
#[inline(never)]
fn corrupted(n: *mut Node) -> ! {
    crate::os::fatal(
        "free list corrupted (a freed block was written, or freed twice and reused)",
        n as usize,
    )
}
