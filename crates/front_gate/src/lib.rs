//! `front_gate`: the single entry point of hakmem.
//!
//! Every allocation call, from the C ABI or from `GlobalAlloc`, comes through
//! here. This box owns:
//!
//! - **C semantics**: `malloc(0)` returns a unique pointer; impossible sizes
//!   give NULL with `errno = ENOMEM`; `calloc` and `reallocarray` detect
//!   overflow; bad alignments give `EINVAL`; `free(NULL)` is a no-op; every
//!   pointer is at least 16-byte aligned.
//! - **Classification**: a pointer is hakmem's if and only if the registry
//!   says so. Ours go to `core_alloc`; all others to `external_guard` (glibc).
//!   Nothing is read at a pointer before that (lessons 1 and 2).
//! - **Misuse**: a pointer inside a hakmem region that is not a block start
//!   ends the process with a one-line message naming the fault and address;
//!   so does a foreign pointer that cannot be glibc's either (a large block
//!   hakmem already freed, a stack address, static data).
//! - **Start-up and re-entrancy**: everything works from the very first call,
//!   before any constructor (all state is const-initialised statics and a
//!   const-initialised thread-local). [`init`] runs at load time only to make
//!   the thread-exit key early, resolve glibc for foreign pointers, and
//!   register `fork` handlers. No hakmem path calls anything that can allocate
//!   while holding a lock, so a nested call (from `dlsym`, `pthread_atfork`)
//!   is just another call.
#![no_std]

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicBool, Ordering};
use superslab::{os, UserPtr};

/// Largest request hakmem will try to satisfy (C's `PTRDIFF_MAX`).
pub const MAX_REQUEST: usize = isize::MAX as usize;

#[inline]
fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

#[cold]
fn oom() -> *mut c_void {
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}

#[inline(always)]
fn out(p: Option<UserPtr>) -> *mut c_void {
    match p {
        Some(p) => p.as_ptr().cast(),
        None => oom(),
    }
}

#[cold]
fn invalid(e: core_alloc::FreeError, p: *mut c_void) -> ! {
    os::fatal(e.as_str(), p as usize)
}

/// [`invalid`] for `free`'s fast path. Declared to return, so that `free`
/// reaches it by a tail jump and needs no stack frame (a call to a `-> !`
/// function would need one, pushed on every free).
#[cold]
#[inline(never)]
fn free_invalid(e: core_alloc::FreeError, p: *mut c_void) {
    invalid(e, p)
}

/// `malloc`. The fast path (a small size, a block in the thread cache) has
/// no call and no stack frame; everything else is one tail call.
#[inline(always)]
pub fn malloc(size: usize) -> *mut c_void {
    match core_alloc::malloc_fast(size) {
        Some(p) => p.as_ptr().cast(),
        None => malloc_slow(size),
    }
}

#[cold]
#[inline(never)]
fn malloc_slow(size: usize) -> *mut c_void {
    // Impossible sizes fail in core_alloc's large path (the mapping is
    // refused); `out` says ENOMEM.
    out(core_alloc::malloc_after_miss(size))
}

/// `free`.
///
/// # Safety
/// `p` is NULL, a live block from this allocator, or a live block from glibc's.
#[inline(always)]
pub unsafe fn free(p: *mut c_void) {
    core_alloc::prefetch_for_free(p.cast());
    // Fast path: a segment block (NULL and everything else miss the map).
    if let Some(g) = shared_pool::find_segment(p as usize) {
        // SAFETY: inside a registered granule, so not null.
        let u = UserPtr::from_non_null(unsafe { core::ptr::NonNull::new_unchecked(p.cast()) });
        if let Err(e) = core_alloc::free_granule(g, u) {
            return free_invalid(e, p);
        }
        return;
    }
    // SAFETY: per the contract.
    unsafe { free_other(p) }
}

/// `free` of NULL, a large block, or a foreign pointer.
///
/// # Safety
/// As for [`free`].
#[cold]
#[inline(never)]
unsafe fn free_other(p: *mut c_void) {
    let Some(u) = UserPtr::new(p.cast()) else {
        return;
    };
    // `free` has asked the segment map already.
    match shared_pool::find_large(u.addr()) {
        Some(r) => {
            if let Err(e) = core_alloc::free(r, u) {
                invalid(e, p)
            }
        }
        // SAFETY: not hakmem's, so per the contract it is glibc's.
        None => unsafe { foreign_free(p) },
    }
}

/// A pointer hakmem does not own: aborts if it cannot be glibc's either (see
/// [`foreign_misuse`]), else hands it to glibc.
///
/// # Safety
/// As for [`free`], for a pointer the registry does not know.
#[cold]
#[inline(never)]
unsafe fn foreign_free(p: *mut c_void) {
    foreign_misuse(p, "double free (large block)");
    // SAFETY: per the contract, and not a misuse we can recognise.
    unsafe { external_guard::free(p) }
}

/// Aborts with a one-line message if `p`, which the registry does not know,
/// is certainly not a live glibc block: a large block hakmem already freed
/// (`freed`, the fault to name), or an address on a thread stack or in a
/// loaded object (`external_guard::check`). Costs nothing on hakmem's own
/// paths; see the boxes' pages for the cost per foreign pointer.
#[cold]
#[inline(never)]
fn foreign_misuse(p: *mut c_void, freed: &'static str) {
    if shared_pool::freed_large(p as usize) {
        os::fatal(freed, p as usize);
    }
    if let Some(f) = external_guard::check(p as usize) {
        os::fatal(f.as_str(), p as usize);
    }
}

/// `calloc`.
pub fn calloc(n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(t) if t <= MAX_REQUEST => out(core_alloc::calloc(n, size)),
        _ => oom(),
    }
}

/// `realloc`, with glibc's conventions: `realloc(NULL, n)` is `malloc(n)`;
/// `realloc(p, 0)` frees `p` and returns NULL; on failure the old block is
/// untouched and NULL is returned with `ENOMEM`.
///
/// # Safety
/// As for [`free`].
pub unsafe fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: per the contract.
    unsafe { realloc_aligned(p, n, 16) }
}

/// `realloc` that keeps `align` (a power of two) if the block moves.
///
/// # Safety
/// As for [`free`]; a foreign block is reallocated by glibc (alignment 16).
pub unsafe fn realloc_aligned(p: *mut c_void, n: usize, align: usize) -> *mut c_void {
    let Some(u) = UserPtr::new(p.cast()) else {
        return if align <= 16 {
            malloc(n)
        } else {
            memalign(align, n)
        };
    };
    if n == 0 {
        // SAFETY: per the contract.
        unsafe { free(p) };
        return core::ptr::null_mut();
    }
    if n > MAX_REQUEST {
        return oom();
    }
    match shared_pool::lookup(u.addr()) {
        Some(r) => match core_alloc::realloc(r, u, n, align) {
            Ok(q) => out(q),
            Err(e) => invalid(e, p),
        },
        None => {
            foreign_misuse(p, "realloc of a freed block (large block)");
            // SAFETY: not hakmem's, so glibc's.
            unsafe { external_guard::realloc(p, n) }
        }
    }
}

/// `reallocarray`.
///
/// # Safety
/// As for [`realloc`].
pub unsafe fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: per the contract.
        Some(t) => unsafe { realloc(p, t) },
        None => oom(),
    }
}

/// Aligned allocation for an alignment already known to be a power of two.
#[inline]
fn aligned(align: usize, size: usize) -> *mut c_void {
    if size > MAX_REQUEST || align > MAX_REQUEST / 2 + 1 {
        return oom();
    }
    out(core_alloc::aligned(align, size))
}

/// `posix_memalign`: `EINVAL` unless `align` is a power of two multiple of
/// `sizeof(void *)`; `ENOMEM` if out of memory. `*out` is untouched on error.
///
/// # Safety
/// `out` must be valid for a pointer write.
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align < core::mem::size_of::<usize>() {
        return libc::EINVAL;
    }
    let saved = errno();
    let p = aligned(align, size);
    if p.is_null() {
        set_errno(saved); // posix_memalign reports through its result, not errno
        return libc::ENOMEM;
    }
    // SAFETY: per the contract.
    unsafe { *out = p };
    0
}

fn errno() -> c_int {
    // SAFETY: as in set_errno.
    unsafe { *libc::__errno_location() }
}

/// `aligned_alloc`: `EINVAL` unless `align` is a power of two (as glibc).
pub fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    aligned(align, size)
}

/// `memalign`: like glibc, a non-power-of-two alignment is rounded up.
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    let a = if align <= 16 {
        16
    } else {
        match align.checked_next_power_of_two() {
            Some(a) => a,
            None => {
                set_errno(libc::EINVAL);
                return core::ptr::null_mut();
            }
        }
    };
    aligned(a, size)
}

/// `valloc`: page-aligned.
pub fn valloc(size: usize) -> *mut c_void {
    aligned(os::PAGE, size)
}

/// `pvalloc`: page-aligned, size rounded up to whole pages (at least one).
pub fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_add(os::PAGE - 1) {
        Some(s) => aligned(os::PAGE, s & !(os::PAGE - 1)),
        None => oom(),
    }
}

/// `malloc_usable_size` (0 for NULL).
///
/// # Safety
/// As for [`free`].
pub unsafe fn usable_size(p: *mut c_void) -> usize {
    let Some(u) = UserPtr::new(p.cast()) else {
        return 0;
    };
    match shared_pool::lookup(u.addr()) {
        Some(r) => core_alloc::usable_size(r, u).unwrap_or_else(|e| invalid(e, p)),
        None => {
            foreign_misuse(p, "malloc_usable_size of a freed block (large block)");
            // SAFETY: not hakmem's, so glibc's.
            unsafe { external_guard::usable_size(p) }
        }
    }
}

/// `malloc_trim`: returns 1 if memory was released.
pub fn trim() -> c_int {
    core_alloc::trim() as c_int
}

/// True if `p` points into memory hakmem manages.
pub fn owns(p: *const c_void) -> bool {
    shared_pool::lookup(p as usize).is_some()
}

static INIT: AtomicBool = AtomicBool::new(false);

/// Load-time set-up. Safe to call any number of times, from any thread, and
/// not required for correctness of the allocation calls themselves.
pub fn init() {
    if INIT.swap(true, Ordering::AcqRel) {
        return;
    }
    if !os::page_size_ok() {
        os::fatal("unsupported page size", os::PAGE);
    }
    core_alloc::init_canary();
    core_alloc::init_thread_key();
    core_alloc::register_fork_handlers();
    // Foreign pointers need glibc's functions; outside glibc there are none.
    external_guard::init();
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::ptr::null_mut;

    fn errno_is(e: c_int) -> bool {
        errno() == e
    }

    #[test]
    fn c_semantics_of_the_entry_points() {
        init();
        let (a, b) = (malloc(0), malloc(0));
        assert!(
            !a.is_null() && !b.is_null() && a != b,
            "malloc(0) is unique"
        );
        assert!(owns(a));
        set_errno(0);
        assert!(malloc(usize::MAX).is_null() && errno_is(libc::ENOMEM));
        set_errno(0);
        assert!(calloc(usize::MAX / 2, 3).is_null() && errno_is(libc::ENOMEM));
        let mut out: *mut c_void = null_mut();
        // SAFETY: valid out-pointer.
        unsafe {
            assert_eq!(posix_memalign(&mut out, 24, 8), libc::EINVAL);
            assert_eq!(posix_memalign(&mut out, 0, 8), libc::EINVAL);
            assert!(out.is_null(), "untouched on error");
            assert_eq!(posix_memalign(&mut out, 4096, 8), 0);
            assert_eq!(out as usize % 4096, 0);
            free(out);
        }
        set_errno(0);
        assert!(aligned_alloc(48, 96).is_null() && errno_is(libc::EINVAL));
        let m = memalign(48, 10); // rounded up to 64, as glibc does
        assert_eq!(m as usize % 64, 0);
        let v = pvalloc(1);
        assert_eq!(v as usize % 4096, 0);
        // SAFETY: live blocks from above.
        unsafe {
            assert!(usable_size(v) >= 4096);
            assert_eq!(usable_size(null_mut()), 0);
            free(null_mut());
            let r = realloc(null_mut(), 10);
            assert!(!r.is_null());
            assert!(realloc(r, 0).is_null(), "realloc(p, 0) frees, as glibc");
            set_errno(0);
            assert!(reallocarray(null_mut(), usize::MAX, 2).is_null() && errno_is(libc::ENOMEM));
            for p in [a, b, m, v] {
                free(p);
            }
        }
    }

    #[test]
    fn foreign_pointers_go_to_glibc() {
        init();
        // In this test binary `libc::malloc` is glibc's own.
        // SAFETY: plain libc allocation, handed to the guard through front_gate.
        unsafe {
            let p = libc::malloc(100);
            assert!(!owns(p));
            assert!(usable_size(p) >= 100);
            let q = realloc(p, 10_000);
            assert!(!q.is_null() && !owns(q));
            free(q);
        }
    }
}
