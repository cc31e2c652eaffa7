//! Free-block guard words (feature `double-free-check`, on by default):
//! double-free detection and free-list link protection.
//!
//! A free small or medium block holds two words. The second is a canary,
//! `c = block address ^ secret`, where the secret is per process (the
//! kernel's `AT_RANDOM` bytes, read once, no system call). The first is the
//! list link, stored masked: `next ^ c`. Every list of free blocks (thread
//! caches, slab free lists, carving, remote queues) is written through
//! [`link`] and read through [`next`]:
//!
//! - **Double frees are detected at the second free.** [`is_free`] reads only
//!   the second word: finding the canary means the block is free right now
//!   (in some thread's cache, a slab's free list or a remote queue), so this
//!   is a double free, from whichever thread. `malloc` clears the canary when
//!   it hands the block out ([`on_alloc`]), and carving links fresh blocks
//!   through [`link`], so a free of a block start that was never handed out
//!   is caught too. Reading only the second word matters: a program that has
//!   just written the first bytes of a block and frees it would otherwise
//!   make `free` wait for a store that only partly covers the load (a
//!   store-forwarding stall, measured at 25% of a malloc+free pair).
//! - **Corrupted links are detected, not followed.** [`next`] checks the
//!   canary and that the unmasked link is a possible block address (16-byte
//!   aligned, below 2^47, or null) before it returns it: an overflow of a live
//!   block into a free neighbour (or any write to a freed block) aborts with
//!   `hakmem: free list corrupted ...` instead of handing out an address the
//!   writer chose. Without the secret, a rewritten link passes the address
//!   test with probability 2^-21 (21 bits must come out zero); a rewritten
//!   canary is caught outright.
//!
//! Cost: `free` loads and compares the canary (on a line it writes anyway);
//! `malloc` loads, compares and unmasks on the line it reads anyway. A live
//! block whose program data happens to equal its canary would be a false
//! alarm: a 2^-64 event unless the program knows the secret. Without the
//! feature, links are plain pointers and nothing is checked.

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

/// The canary of free block `n`.
#[inline(always)]
fn canary(n: *mut Node, key: usize) -> usize {
    n as usize ^ key
}

/// Bits that are zero in every possible link: block addresses are 16-byte
/// aligned and below 2^47 (user space, 4-level paging), null is zero.
const NOT_AN_ADDRESS: usize = 0xffff_8000_0000_000f;

/// Links `n` to `next` and marks it free (writes both guard words).
///
/// # Safety
/// `n` is a block start of at least 16 bytes that nobody else uses.
#[inline(always)]
pub unsafe fn link(n: *mut Node, next: *mut Node, key: usize) {
    // SAFETY: per the contract, the block has two words we may write.
    unsafe {
        if ON {
            let c = canary(n, key);
            (n as *mut usize).write(next as usize ^ c);
            (n as *mut usize).add(1).write(c);
        } else {
            (*n).next = next;
        }
    }
}

/// The link of free block `n`, verified: aborts if the block's canary is
/// gone or its unmasked link is not a possible block address (a corrupted
/// list, or a block listed twice and handed out in between).
///
/// # Safety
/// `n` is a block on a free list the caller owns.
#[inline(always)]
pub unsafe fn next(n: *mut Node, key: usize) -> *mut Node {
    // SAFETY: per the contract, both words are readable.
    unsafe {
        if !ON {
            return (*n).next;
        }
        let c = canary(n, key);
        let next = (n as *const usize).read() ^ c;
        if (n as *const usize).add(1).read() != c || next & NOT_AN_ADDRESS != 0 {
            corrupted(n);
        }
        next as *mut Node
    }
}

/// Whether validated block `n`, being freed, is free already (its guard
/// word holds its canary): a double free, which the caller reports with
/// [`DOUBLE_FREE`]. Otherwise the caller puts it on a list with [`link`].
/// Always `false` without the feature.
///
/// # Safety
/// `n` is a validated block start of at least 16 bytes.
#[inline(always)]
pub unsafe fn is_free(n: *mut Node, key: usize) -> bool {
    // SAFETY: per the contract, the block has a readable second word.
    ON && unsafe { (n as *const usize).add(1).read() } == canary(n, key)
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

/// The message for a block [`is_free`] found free.
pub const DOUBLE_FREE: &str = "double free (or free of a block that is not allocated)";

#[cold]
#[inline(never)]
fn corrupted(n: *mut Node) -> ! {
    crate::os::fatal(
        "free list corrupted (a freed block was written, or freed twice and reused)",
        n as usize,
    )
}
