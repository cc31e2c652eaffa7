//! `external_guard`: everything about memory that is not hakmem's.
//!
//! Under `LD_PRELOAD`, a program can still hold blocks from glibc's own
//! allocator (allocated before hakmem was reachable, or by code that obtained
//! glibc's `malloc` directly). Freeing, reallocating or sizing one of those
//! through hakmem must go to glibc, exactly once, never crash and never leak
//! (lesson 1).
//!
//! glibc's functions are found once with `dlopen("libc.so.6", RTLD_NOLOAD)` and
//! `dlsym` on that handle, so they are glibc's own definitions even though
//! hakmem exports the same names. Resolution runs at library load
//! ([`init`]) and, should a foreign pointer arrive before that, on first use;
//! never on hakmem's own fast paths. `dlsym` may call `calloc`; that is safe
//! because hakmem's allocation paths never depend on this box.
#![no_std]

use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicUsize, Ordering};

type FreeFn = unsafe extern "C" fn(*mut c_void);
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;

static FREE: AtomicUsize = AtomicUsize::new(0);
static REALLOC: AtomicUsize = AtomicUsize::new(0);
static USABLE: AtomicUsize = AtomicUsize::new(0);

fn resolve(handle: *mut c_void, name: &CStr) -> usize {
    // SAFETY: valid handle and NUL-terminated name.
    unsafe { libc::dlsym(handle, name.as_ptr()) as usize }
}

/// Resolves glibc's `free`, `realloc` and `malloc_usable_size`. Idempotent.
/// Returns false if glibc could not be found (not a glibc process).
pub fn init() -> bool {
    if FREE.load(Ordering::Acquire) != 0 {
        return true;
    }
    // SAFETY: NUL-terminated name; RTLD_NOLOAD only looks libc up, and libc
    // is always loaded in a dynamically linked glibc process.
    let h = unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    if h.is_null() {
        return false;
    }
    let (f, r, u) = (
        resolve(h, c"free"),
        resolve(h, c"realloc"),
        resolve(h, c"malloc_usable_size"),
    );
    // SAFETY: `h` came from dlopen; libc stays loaded regardless.
    unsafe { libc::dlclose(h) };
    if f == 0 || r == 0 || u == 0 {
        return false;
    }
    REALLOC.store(r, Ordering::Relaxed);
    USABLE.store(u, Ordering::Relaxed);
    FREE.store(f, Ordering::Release);
    true
}

#[cold]
fn fn_addr(slot: &AtomicUsize) -> usize {
    let mut a = slot.load(Ordering::Acquire);
    if a == 0 {
        if !init() {
            missing();
        }
        a = slot.load(Ordering::Acquire);
    }
    a
}

#[cold]
fn missing() -> ! {
    const MSG: &[u8] =
        b"hakmem: a pointer hakmem does not own was passed to free/realloc/malloc_usable_size, and glibc's allocator cannot be found\n";
    // SAFETY: valid buffer; abort has no preconditions.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::abort()
    }
}

/// Frees a block that glibc's allocator owns.
///
/// # Safety
/// `p` must be a live block of glibc's allocator.
pub unsafe fn free(p: *mut c_void) {
    // SAFETY: the address was resolved as glibc's `free`.
    let f: FreeFn = unsafe { core::mem::transmute::<usize, FreeFn>(fn_addr(&FREE)) };
    // SAFETY: per the contract.
    unsafe { f(p) }
}

/// Reallocates a glibc block with glibc (the result is glibc's too).
///
/// # Safety
/// `p` must be a live block of glibc's allocator.
pub unsafe fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: the address was resolved as glibc's `realloc`.
    let f: ReallocFn = unsafe { core::mem::transmute::<usize, ReallocFn>(fn_addr(&REALLOC)) };
    // SAFETY: per the contract.
    unsafe { f(p, n) }
}

/// Usable size of a glibc block.
///
/// # Safety
/// `p` must be a live block of glibc's allocator.
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    // SAFETY: the address was resolved as glibc's `malloc_usable_size`.
    let f: UsableFn = unsafe { core::mem::transmute::<usize, UsableFn>(fn_addr(&USABLE)) };
    // SAFETY: per the contract.
    unsafe { f(p) }
}

#[cfg(test)]
mod tests {
    extern crate std;

    #[test]
    fn resolves_glibc_and_frees_its_blocks() {
        assert!(super::init());
        // In this test binary `malloc` is glibc's, so its blocks are foreign
        // to hakmem and must round-trip through the guard.
        // SAFETY: plain libc calls on blocks we own.
        unsafe {
            let p = libc::malloc(100);
            assert!(super::usable_size(p) >= 100);
            let q = super::realloc(p, 5000);
            assert!(!q.is_null());
            super::free(q);
        }
    }
}
