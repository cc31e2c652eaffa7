//! The drop-in C symbol set (runtime-pitfalls.md): the malloc family, the
//! glibc `__libc_*` aliases, and C++ `operator new`/`delete`.
//!
//! Every function is a thin call into `front_gate`. `operator new` cannot
//! throw from Rust: when hakmem is out of memory it hands the request to the
//! next definition (libstdc++'s), which calls `malloc` again (hakmem) and runs
//! the new-handler / throws `std::bad_alloc` exactly as the C++ standard
//! requires.
#![allow(clippy::missing_safety_doc)] // C ABI: the C standard is the contract
#![allow(non_snake_case)]

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use front_gate as fg;

/// `const char *hakmem_version(void)`: lets a program (or a benchmark) prove
/// that hakmem is the allocator actually serving it.
#[no_mangle]
pub extern "C" fn hakmem_version() -> *const c_char {
    version_str!("\0").as_ptr().cast()
}

extern "C" fn hakmem_init() {
    fg::init();
}

/// Runs at load, before the program's own constructors (the preload is first
/// in the search order, and its initialisers run before the executable's).
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = hakmem_init;

#[no_mangle]
pub extern "C" fn malloc(n: usize) -> *mut c_void {
    fg::malloc(n)
}
#[no_mangle]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: C's contract for free.
    unsafe { fg::free(p) }
}
#[no_mangle]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: as free.
    unsafe { fg::free(p) }
}
#[no_mangle]
pub extern "C" fn calloc(n: usize, s: usize) -> *mut c_void {
    fg::calloc(n, s)
}
#[no_mangle]
pub unsafe extern "C" fn realloc(p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: C's contract for realloc.
    unsafe { fg::realloc(p, n) }
}
#[no_mangle]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, s: usize) -> *mut c_void {
    // SAFETY: C's contract for reallocarray.
    unsafe { fg::reallocarray(p, n, s) }
}
#[no_mangle]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, a: usize, n: usize) -> c_int {
    // SAFETY: C's contract: `out` is writable.
    unsafe { fg::posix_memalign(out, a, n) }
}
#[no_mangle]
pub extern "C" fn aligned_alloc(a: usize, n: usize) -> *mut c_void {
    fg::aligned_alloc(a, n)
}
#[no_mangle]
pub extern "C" fn memalign(a: usize, n: usize) -> *mut c_void {
    fg::memalign(a, n)
}
#[no_mangle]
pub extern "C" fn valloc(n: usize) -> *mut c_void {
    fg::valloc(n)
}
#[no_mangle]
pub extern "C" fn pvalloc(n: usize) -> *mut c_void {
    fg::pvalloc(n)
}
#[no_mangle]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: C's contract: p is NULL or live.
    unsafe { fg::usable_size(p) }
}
#[no_mangle]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    fg::trim()
}

// glibc's internal aliases: code that calls them directly must get hakmem too,
// or its blocks would be foreign to the rest of the program.
#[no_mangle]
pub extern "C" fn __libc_malloc(n: usize) -> *mut c_void {
    fg::malloc(n)
}
#[no_mangle]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: as free.
    unsafe { fg::free(p) }
}
#[no_mangle]
pub extern "C" fn __libc_calloc(n: usize, s: usize) -> *mut c_void {
    fg::calloc(n, s)
}
#[no_mangle]
pub unsafe extern "C" fn __libc_realloc(p: *mut c_void, n: usize) -> *mut c_void {
    // SAFETY: as realloc.
    unsafe { fg::realloc(p, n) }
}
#[no_mangle]
pub extern "C" fn __libc_memalign(a: usize, n: usize) -> *mut c_void {
    fg::memalign(a, n)
}
#[no_mangle]
pub extern "C" fn __libc_valloc(n: usize) -> *mut c_void {
    fg::valloc(n)
}
#[no_mangle]
pub extern "C" fn __libc_pvalloc(n: usize) -> *mut c_void {
    fg::pvalloc(n)
}

// ---- C++ ----

static NEXT_NEW: AtomicUsize = AtomicUsize::new(0);
static NEXT_NEW_ALIGNED: AtomicUsize = AtomicUsize::new(0);

/// Out of memory in a throwing `operator new`: defer to the next definition
/// (libstdc++), which retries through `malloc` and throws `std::bad_alloc`.
#[cold]
fn next_new(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
    let mut f = slot.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: RTLD_NEXT lookup of a NUL-terminated name.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        if f == 0 {
            superslab_fatal(
                b"hakmem: out of memory in operator new (no libstdc++ to throw bad_alloc)\n",
            );
        }
        slot.store(f, Ordering::Release);
    }
    f
}

fn superslab_fatal(msg: &[u8]) -> ! {
    // SAFETY: valid buffer; abort does not return.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::abort()
    }
}

#[cold]
fn new_oom(n: usize) -> *mut c_void {
    let f = next_new(&NEXT_NEW, c"_Znwm");
    // SAFETY: the address is libstdc++'s `operator new(size_t)`.
    unsafe { core::mem::transmute::<usize, extern "C" fn(usize) -> *mut c_void>(f)(n) }
}

#[cold]
fn new_aligned_oom(n: usize, a: usize) -> *mut c_void {
    let f = next_new(&NEXT_NEW_ALIGNED, c"_ZnwmSt11align_val_t");
    // SAFETY: the address is libstdc++'s `operator new(size_t, align_val_t)`.
    unsafe { core::mem::transmute::<usize, extern "C" fn(usize, usize) -> *mut c_void>(f)(n, a) }
}

#[inline(always)]
fn cxx_new(n: usize) -> *mut c_void {
    let p = fg::malloc(n);
    if p.is_null() {
        new_oom(n)
    } else {
        p
    }
}

#[inline(always)]
fn cxx_new_aligned(n: usize, a: usize) -> *mut c_void {
    let p = if a.is_power_of_two() {
        fg::aligned_alloc(a, n)
    } else {
        core::ptr::null_mut()
    };
    if p.is_null() {
        new_aligned_oom(n, a)
    } else {
        p
    }
}

fn cxx_new_aligned_nothrow(n: usize, a: usize) -> *mut c_void {
    if a.is_power_of_two() {
        fg::aligned_alloc(a, n)
    } else {
        core::ptr::null_mut()
    }
}

/// `operator new(size_t)`
#[no_mangle]
pub extern "C" fn _Znwm(n: usize) -> *mut c_void {
    cxx_new(n)
}
/// `operator new[](size_t)`
#[no_mangle]
pub extern "C" fn _Znam(n: usize) -> *mut c_void {
    cxx_new(n)
}
/// `operator new(size_t, const nothrow_t&)`
#[no_mangle]
pub extern "C" fn _ZnwmRKSt9nothrow_t(n: usize, _: *const c_void) -> *mut c_void {
    fg::malloc(n)
}
/// `operator new[](size_t, const nothrow_t&)`
#[no_mangle]
pub extern "C" fn _ZnamRKSt9nothrow_t(n: usize, _: *const c_void) -> *mut c_void {
    fg::malloc(n)
}
/// `operator new(size_t, align_val_t)`
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_t(n: usize, a: usize) -> *mut c_void {
    cxx_new_aligned(n, a)
}
/// `operator new[](size_t, align_val_t)`
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_t(n: usize, a: usize) -> *mut c_void {
    cxx_new_aligned(n, a)
}
/// `operator new(size_t, align_val_t, const nothrow_t&)`
#[no_mangle]
pub extern "C" fn _ZnwmSt11align_val_tRKSt9nothrow_t(
    n: usize,
    a: usize,
    _: *const c_void,
) -> *mut c_void {
    cxx_new_aligned_nothrow(n, a)
}
/// `operator new[](size_t, align_val_t, const nothrow_t&)`
#[no_mangle]
pub extern "C" fn _ZnamSt11align_val_tRKSt9nothrow_t(
    n: usize,
    a: usize,
    _: *const c_void,
) -> *mut c_void {
    cxx_new_aligned_nothrow(n, a)
}

macro_rules! cxx_delete {
    ($($name:ident ( $($arg:ident : $ty:ty),* ) ;)*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name(p: *mut c_void $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            // SAFETY: C++'s contract: p is null or from the matching new.
            unsafe { fg::free(p) }
        }
    )*};
}

cxx_delete! {
    _ZdlPv();
    _ZdaPv();
    _ZdlPvm(n: usize);
    _ZdaPvm(n: usize);
    _ZdlPvRKSt9nothrow_t(t: *const c_void);
    _ZdaPvRKSt9nothrow_t(t: *const c_void);
    _ZdlPvSt11align_val_t(a: usize);
    _ZdaPvSt11align_val_t(a: usize);
    _ZdlPvmSt11align_val_t(n: usize, a: usize);
    _ZdaPvmSt11align_val_t(n: usize, a: usize);
    _ZdlPvSt11align_val_tRKSt9nothrow_t(a: usize, t: *const c_void);
    _ZdaPvSt11align_val_tRKSt9nothrow_t(a: usize, t: *const c_void);
}
