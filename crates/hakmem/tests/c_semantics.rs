//! C semantics of the exported malloc family. In this test binary the hakmem
//! rlib defines `malloc`, `free`, ... (feature `c-abi`), so the `libc::`
//! functions resolve to hakmem; [`symbols_are_hakmem`] checks that first.
//! glibc's own allocator, reached through `dlsym` on `libc.so.6`, provides
//! the foreign pointers.

use libc::{c_int, c_void};
use std::collections::HashSet;
use std::ptr;

extern "C" {
    fn valloc(n: usize) -> *mut c_void;
    fn pvalloc(n: usize) -> *mut c_void;
}

const PAGE: usize = 4096;

// ---------------------------------------------------------------------------
// thin wrappers (each C call is safe for these arguments)

fn errno() -> c_int {
    // SAFETY: __errno_location returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as in errno().
    unsafe { *libc::__errno_location() = e };
}

// The results go through `black_box`: LLVM knows the malloc family and may
// otherwise fold `malloc(huge) == NULL` to false in an optimised build (the
// call's result escapes nowhere, so it may assume the allocation succeeded).
use std::hint::black_box;

fn malloc(n: usize) -> *mut u8 {
    // SAFETY: malloc accepts any size.
    black_box(unsafe { libc::malloc(black_box(n)) }).cast()
}

fn calloc(n: usize, s: usize) -> *mut u8 {
    // SAFETY: calloc accepts any sizes.
    black_box(unsafe { libc::calloc(black_box(n), black_box(s)) }).cast()
}

/// # Safety
/// `p` is NULL or a live block; it is consumed unless NULL is returned
/// for a non-zero size.
unsafe fn realloc(p: *mut u8, n: usize) -> *mut u8 {
    // SAFETY: per the contract.
    unsafe { libc::realloc(p.cast(), n) }.cast()
}

/// # Safety
/// `p` is NULL or a live block, which this consumes.
unsafe fn free(p: *mut u8) {
    // SAFETY: per the contract.
    unsafe { libc::free(p.cast()) }
}

/// # Safety
/// `p` is NULL or a live block.
unsafe fn usable(p: *mut u8) -> usize {
    // SAFETY: per the contract.
    unsafe { libc::malloc_usable_size(p.cast()) }
}

fn posix_memalign(align: usize, n: usize) -> (c_int, *mut u8) {
    let mut out: *mut c_void = ptr::dangling_mut::<c_void>(); // sentinel: must stay on error
                                                              // SAFETY: `out` is a valid pointer slot.
    let r = unsafe { libc::posix_memalign(&mut out, align, n) };
    (r, out.cast())
}

fn aligned_alloc(align: usize, n: usize) -> *mut u8 {
    // SAFETY: aligned_alloc accepts any arguments.
    black_box(unsafe { libc::aligned_alloc(black_box(align), black_box(n)) }).cast()
}

fn memalign(align: usize, n: usize) -> *mut u8 {
    // SAFETY: memalign accepts any arguments.
    black_box(unsafe { libc::memalign(black_box(align), black_box(n)) }).cast()
}

/// Fills `n` bytes at `p` with a pattern depending on `seed`.
///
/// # Safety
/// `p` is valid for `n` writes.
unsafe fn fill(p: *mut u8, n: usize, seed: usize) {
    for i in 0..n {
        // SAFETY: i < n.
        unsafe { *p.add(i) = (i.wrapping_mul(7).wrapping_add(seed) % 251) as u8 };
    }
}

/// Checks the first `n` bytes at `p` hold `fill(_, _, seed)`'s pattern.
///
/// # Safety
/// `p` is valid for `n` reads.
unsafe fn check(p: *const u8, n: usize, seed: usize) -> bool {
    // SAFETY: per the contract.
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    s.iter()
        .enumerate()
        .all(|(i, &c)| c == (i.wrapping_mul(7).wrapping_add(seed) % 251) as u8)
}

/// # Safety
/// `p` is valid for `n` reads.
unsafe fn is_zero(p: *const u8, n: usize) -> bool {
    // SAFETY: per the contract.
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    s.iter().all(|&c| c == 0)
}

fn sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (0..=1100).collect();
    let mut s = 1100;
    while s < 600_000 {
        s += s / 9 + 13;
        v.push(s);
    }
    for b in [
        2048,
        4096,
        8192,
        16384,
        32768,
        65536,
        131_072,
        262_144,
        1 << 20,
    ] {
        v.extend([b - 1, b, b + 1]);
    }
    v
}

// ---------------------------------------------------------------------------

#[test]
fn symbols_are_hakmem() {
    let p = malloc(8);
    assert!(!p.is_null());
    assert!(hakmem::owns(p), "libc::malloc is not hakmem's malloc");
    // SAFETY: live block.
    unsafe { free(p) };
    let q = calloc(3, 5);
    assert!(hakmem::owns(q), "libc::calloc is not hakmem's calloc");
    // SAFETY: live block.
    let r = unsafe { realloc(q, 1000) };
    assert!(hakmem::owns(r), "libc::realloc is not hakmem's realloc");
    // SAFETY: live block.
    unsafe { free(r) };
    let (e, a) = posix_memalign(64, 10);
    assert_eq!(e, 0);
    assert!(hakmem::owns(a), "libc::posix_memalign is not hakmem's");
    // SAFETY: live block.
    unsafe { free(a) };
    // SAFETY: valloc accepts any size.
    let v: *mut u8 = unsafe { valloc(10) }.cast();
    assert!(hakmem::owns(v), "valloc is not hakmem's");
    // SAFETY: live block.
    unsafe { free(v) };
}

#[test]
fn malloc_zero_is_unique_and_non_null() {
    let ps: Vec<*mut u8> = (0..2000).map(|_| malloc(0)).collect();
    let set: HashSet<usize> = ps.iter().map(|&p| p as usize).collect();
    assert!(ps.iter().all(|p| !p.is_null()), "malloc(0) returned NULL");
    assert_eq!(set.len(), ps.len(), "malloc(0) returned duplicates");
    for &p in &ps {
        assert_eq!(p as usize % 16, 0);
        assert!(hakmem::owns(p));
        // SAFETY: live block.
        unsafe { free(p) };
    }
    let c = calloc(0, 0);
    assert!(!c.is_null(), "calloc(0, 0) returned NULL");
    // SAFETY: live block.
    unsafe { free(c) };
}

#[test]
fn impossible_sizes_give_enomem() {
    for n in [
        usize::MAX,
        isize::MAX as usize + 1,
        usize::MAX - 4095,
        usize::MAX / 2 + 17,
    ] {
        set_errno(0);
        assert!(malloc(n).is_null(), "malloc({n:#x}) succeeded");
        assert_eq!(errno(), libc::ENOMEM, "malloc({n:#x}) errno");
        set_errno(0);
        assert!(calloc(1, n).is_null(), "calloc(1, {n:#x}) succeeded");
        assert_eq!(errno(), libc::ENOMEM, "calloc(1, {n:#x}) errno");
        set_errno(0);
        assert!(aligned_alloc(64, n).is_null(), "aligned_alloc(64, {n:#x})");
        assert_eq!(errno(), libc::ENOMEM);
        let (e, _) = posix_memalign(64, n);
        assert_eq!(e, libc::ENOMEM, "posix_memalign(64, {n:#x})");
    }
    // calloc overflow.
    for (n, s) in [
        (usize::MAX, 2),
        (2, usize::MAX),
        (1 << 33, 1 << 33),
        (usize::MAX / 3 + 1, 3),
        (1 << 32, 1 << 31), // exactly 2^63 > PTRDIFF_MAX
    ] {
        set_errno(0);
        assert!(calloc(n, s).is_null(), "calloc({n}, {s}) succeeded");
        assert_eq!(errno(), libc::ENOMEM, "calloc({n}, {s}) errno");
    }
    // reallocarray overflow keeps the old block.
    let p = malloc(32);
    // SAFETY: 32-byte block.
    unsafe { fill(p, 32, 9) };
    for (n, s) in [(usize::MAX, 2), (1 << 40, 1 << 40)] {
        set_errno(0);
        // SAFETY: p is live.
        let q = unsafe { libc::reallocarray(p.cast(), n, s) };
        assert!(q.is_null(), "reallocarray({n}, {s}) succeeded");
        assert_eq!(errno(), libc::ENOMEM, "reallocarray({n}, {s}) errno");
    }
    // realloc to an impossible size keeps the old block too.
    set_errno(0);
    // SAFETY: p is live.
    assert!(unsafe { realloc(p, usize::MAX) }.is_null());
    assert_eq!(errno(), libc::ENOMEM);
    // SAFETY: still live, still 32 bytes.
    assert!(unsafe { check(p, 32, 9) });
    // reallocarray that does not overflow works.
    // SAFETY: p is live.
    let q: *mut u8 = unsafe { libc::reallocarray(p.cast(), 100, 8) }.cast();
    assert!(!q.is_null());
    // SAFETY: q is live with >= 800 bytes, its first 32 from p.
    assert!(unsafe { check(q, 32, 9) } && unsafe { usable(q) } >= 800);
    // SAFETY: live block.
    unsafe { free(q) };
}

#[test]
fn calloc_zeroes_even_reused_memory() {
    for &n in &[
        1usize, 16, 24, 100, 128, 129, 1000, 1024, 1025, 5000, 8192, 8193, 60_000, 131_072,
        131_073, 300_000,
    ] {
        for _ in 0..40 {
            let p = malloc(n);
            assert!(!p.is_null());
            // SAFETY: n-byte block.
            unsafe { ptr::write_bytes(p, 0xff, n) };
            // SAFETY: live block.
            unsafe { free(p) };
            let c = calloc(1, n);
            assert!(!c.is_null());
            assert!(
                // SAFETY: calloc(1, n) is n bytes.
                unsafe { is_zero(c, n) },
                "calloc(1, {n}) returned dirty memory"
            );
            // SAFETY: live block.
            unsafe { ptr::write_bytes(c, 0xee, n) };
            // SAFETY: live block.
            unsafe { free(c) };
            let c = calloc(n, 1);
            assert!(
                // SAFETY: calloc(n, 1) is n bytes.
                unsafe { is_zero(c, n) },
                "calloc({n}, 1) returned dirty memory"
            );
            // SAFETY: live block.
            unsafe { free(c) };
        }
    }
    // Many live dirty blocks freed at once, then calloc'd back.
    let ps: Vec<*mut u8> = (0..500).map(|i| malloc(16 + i * 8)).collect();
    for (i, &p) in ps.iter().enumerate() {
        // SAFETY: 16 + i*8 bytes.
        unsafe { ptr::write_bytes(p, 0xff, 16 + i * 8) };
    }
    for &p in &ps {
        // SAFETY: live block.
        unsafe { free(p) };
    }
    let cs: Vec<*mut u8> = (0..500).map(|i| calloc(2 + i, 8)).collect();
    for (i, &c) in cs.iter().enumerate() {
        // SAFETY: (2 + i) * 8 bytes.
        assert!(unsafe { is_zero(c, (2 + i) * 8) });
    }
    for &c in &cs {
        // SAFETY: live block.
        unsafe { free(c) };
    }
}

#[test]
fn posix_memalign_alignment_rules() {
    for bad in [0usize, 1, 2, 3, 4, 12, 24, 48, 100, 4097, usize::MAX] {
        let (e, out) = posix_memalign(bad, 64);
        assert_eq!(e, libc::EINVAL, "posix_memalign({bad}) should be EINVAL");
        assert_eq!(
            out as usize, 1,
            "posix_memalign({bad}) wrote *memptr on error"
        );
    }
    let mut a = 8;
    while a <= 1 << 22 {
        for n in [0, 1, a - 1, a, a + 1, 3 * a + 5, 200_000] {
            let (e, p) = posix_memalign(a, n);
            assert_eq!(e, 0, "posix_memalign({a}, {n}) failed");
            assert!(!p.is_null());
            assert_eq!(p as usize % a, 0, "posix_memalign({a}, {n}) misaligned");
            assert_eq!(p as usize % 16, 0);
            // SAFETY: live block.
            assert!(unsafe { usable(p) } >= n);
            // SAFETY: live block of n bytes.
            unsafe { ptr::write_bytes(p, 0x33, n) };
            // SAFETY: live block.
            unsafe { free(p) };
        }
        a *= 2;
    }
    let (e, p) = posix_memalign(1 << 20, 100);
    assert_eq!(e, 0);
    assert_eq!(p as usize % (1 << 20), 0);
    // SAFETY: live block.
    unsafe { free(p) };
}

#[test]
fn aligned_alloc_and_memalign() {
    let mut a = 16;
    while a <= 1 << 20 {
        for n in [1, 16, a, a + 1, 100_000] {
            let p = aligned_alloc(a, n);
            assert!(!p.is_null(), "aligned_alloc({a}, {n})");
            assert_eq!(p as usize % a, 0, "aligned_alloc({a}, {n}) misaligned");
            // SAFETY: live block.
            assert!(unsafe { usable(p) } >= n);
            // SAFETY: n bytes.
            unsafe { ptr::write_bytes(p, 1, n) };
            // SAFETY: live block.
            unsafe { free(p) };
        }
        a *= 2;
    }
    // Small power-of-two alignments are fine too.
    for a in [1, 2, 4, 8] {
        let p = aligned_alloc(a, 10);
        assert!(!p.is_null() && (p as usize).is_multiple_of(16));
        // SAFETY: live block.
        unsafe { free(p) };
    }
    for bad in [3usize, 24, 48, 1000, 4097] {
        set_errno(0);
        assert!(
            aligned_alloc(bad, 64).is_null(),
            "aligned_alloc({bad}) succeeded"
        );
        assert_eq!(errno(), libc::EINVAL, "aligned_alloc({bad}) errno");
    }
    // memalign rounds a non-power-of-two alignment up.
    for (a, want) in [
        (3usize, 16usize),
        (24, 32),
        (48, 64),
        (100, 128),
        (3000, 4096),
        (70_000, 131_072),
        (600_000, 1 << 20),
    ] {
        let p = memalign(a, 100);
        assert!(!p.is_null(), "memalign({a})");
        assert_eq!(p as usize % want, 0, "memalign({a}) not {want}-aligned");
        // SAFETY: live block.
        unsafe { free(p) };
    }
    for a in [0, 1, 16, 64, 4096, 1 << 20] {
        let p = memalign(a, 5000);
        assert!(
            !p.is_null() && (p as usize).is_multiple_of(a.max(16)),
            "memalign({a})"
        );
        // SAFETY: live block.
        unsafe { free(p) };
    }
}

#[test]
fn valloc_and_pvalloc_are_page_aligned() {
    for n in [0usize, 1, 100, 4095, 4096, 4097, 100_000, 200_000] {
        // SAFETY: valloc accepts any size.
        let p: *mut u8 = unsafe { valloc(n) }.cast();
        assert!(!p.is_null(), "valloc({n})");
        assert_eq!(p as usize % PAGE, 0, "valloc({n}) not page-aligned");
        // SAFETY: live block.
        assert!(unsafe { usable(p) } >= n);
        // SAFETY: live block.
        unsafe { free(p) };
        // SAFETY: pvalloc accepts any size.
        let q: *mut u8 = unsafe { pvalloc(n) }.cast();
        assert!(!q.is_null(), "pvalloc({n})");
        assert_eq!(q as usize % PAGE, 0, "pvalloc({n}) not page-aligned");
        let whole = n.max(1).div_ceil(PAGE) * PAGE;
        assert!(
            // SAFETY: live block.
            unsafe { usable(q) } >= whole,
            "pvalloc({n}) not whole pages"
        );
        // SAFETY: pvalloc rounds up to whole pages: all of it is usable.
        unsafe { ptr::write_bytes(q, 7, whole) };
        // SAFETY: live block.
        unsafe { free(q) };
    }
}

#[test]
fn free_null_and_realloc_edges() {
    // SAFETY: free(NULL) is a no-op.
    unsafe { free(ptr::null_mut()) };
    // SAFETY: usable size of NULL is 0.
    assert_eq!(unsafe { usable(ptr::null_mut()) }, 0);
    // realloc(NULL, n) is malloc(n).
    for n in [0usize, 1, 100, 5000, 200_000] {
        // SAFETY: NULL is allowed.
        let p = unsafe { realloc(ptr::null_mut(), n) };
        assert!(!p.is_null(), "realloc(NULL, {n})");
        assert!(hakmem::owns(p));
        // SAFETY: live block.
        assert!(unsafe { usable(p) } >= n);
        // realloc(p, 0) frees and returns NULL.
        // SAFETY: live block.
        assert!(unsafe { realloc(p, 0) }.is_null(), "realloc(p, 0) != NULL");
    }
}

#[test]
fn realloc_preserves_contents_across_classes() {
    let steps = [
        1usize,
        8,
        16,
        17,
        100,
        128,
        129,
        500,
        1024,
        1025,
        4000,
        8192,
        8193,
        50_000,
        131_072,
        131_073,
        200_000,
        1 << 20,
        3 << 20,
        131_073,
        131_072,
        100_000,
        8193,
        8192,
        1025,
        1024,
        129,
        128,
        16,
        1,
        3 << 20,
        5,
    ];
    for start in [1usize, 129, 8193, 131_073] {
        let mut n = start;
        let mut p = malloc(n);
        let mut seed = 0;
        // SAFETY: n bytes.
        unsafe { fill(p, n, seed) };
        for &m in &steps {
            // SAFETY: p is live.
            let q = unsafe { realloc(p, m) };
            assert!(!q.is_null(), "realloc({n} -> {m})");
            assert_eq!(q as usize % 16, 0);
            // SAFETY: live block.
            assert!(unsafe { usable(q) } >= m, "realloc({n} -> {m}) too small");
            assert!(
                // SAFETY: q holds min(n, m) bytes of the old contents.
                unsafe { check(q, n.min(m), seed) },
                "realloc({n} -> {m}) lost contents"
            );
            seed += 1;
            // SAFETY: m bytes.
            unsafe { fill(q, m, seed) };
            p = q;
            n = m;
        }
        // SAFETY: live block.
        unsafe { free(p) };
    }
}

#[test]
fn usable_size_and_alignment_for_many_sizes() {
    let mut live = Vec::new();
    for n in sizes() {
        let p = malloc(n);
        assert!(!p.is_null(), "malloc({n})");
        assert_eq!(p as usize % 16, 0, "malloc({n}) not 16-aligned");
        // SAFETY: live block.
        let u = unsafe { usable(p) };
        assert!(u >= n, "malloc_usable_size = {u} < {n}");
        // The whole usable size may be written.
        // SAFETY: u usable bytes.
        unsafe { ptr::write_bytes(p, 0x44, u) };
        // SAFETY: live block.
        assert_eq!(unsafe { hakmem::usable_size(p) }, u);
        let c = calloc(1, n);
        assert_eq!(c as usize % 16, 0, "calloc({n}) not 16-aligned");
        // SAFETY: live block.
        assert!(unsafe { usable(c) } >= n);
        live.push(p);
        live.push(c);
        if live.len() > 200 {
            for p in live.drain(..) {
                // SAFETY: live block.
                unsafe { free(p) };
            }
        }
    }
    for p in live {
        // SAFETY: live block.
        unsafe { free(p) };
    }
}

// ---------------------------------------------------------------------------
// foreign (glibc) pointers

type MallocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type MemalignFn = unsafe extern "C" fn(usize, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;
type FreeFn = unsafe extern "C" fn(*mut c_void);

struct Glibc {
    malloc: MallocFn,
    memalign: MemalignFn,
    usable: UsableFn,
    free: FreeFn,
}

fn glibc() -> Glibc {
    // SAFETY: dlopen with RTLD_NOLOAD of an already loaded library.
    let h = unsafe { libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY) };
    assert!(!h.is_null(), "libc.so.6 not loaded");
    let sym = |name: &std::ffi::CStr| {
        // SAFETY: h is a valid handle; name is NUL-terminated.
        let s = unsafe { libc::dlsym(h, name.as_ptr()) };
        assert!(!s.is_null(), "dlsym({name:?})");
        s
    };
    let (m, a, u, f) = (
        sym(c"malloc"),
        sym(c"memalign"),
        sym(c"malloc_usable_size"),
        sym(c"free"),
    );
    assert_ne!(
        m as usize,
        libc::malloc as *const () as usize,
        "dlsym found hakmem's malloc"
    );
    // SAFETY: these are glibc's functions of the given C signatures.
    unsafe {
        Glibc {
            malloc: std::mem::transmute::<*mut c_void, MallocFn>(m),
            memalign: std::mem::transmute::<*mut c_void, MemalignFn>(a),
            usable: std::mem::transmute::<*mut c_void, UsableFn>(u),
            free: std::mem::transmute::<*mut c_void, FreeFn>(f),
        }
    }
}

#[test]
fn foreign_pointers_go_to_glibc() {
    let g = glibc();
    for &n in &[1usize, 24, 100, 1000, 5000, 70_000, 200_000, 1 << 20] {
        // free
        // SAFETY: glibc's malloc.
        let p: *mut u8 = unsafe { (g.malloc)(n) }.cast();
        assert!(!p.is_null());
        assert!(!hakmem::owns(p), "hakmem claims glibc's block {p:p}");
        // SAFETY: live glibc block; hakmem hands it to glibc.
        let u = unsafe { usable(p) };
        // SAFETY: as above, glibc's own answer.
        let theirs = unsafe { (g.usable)(p.cast()) };
        assert_eq!(u, theirs, "usable size of glibc block ({n})");
        assert!(u >= n);
        // SAFETY: live glibc block.
        unsafe { free(p) };

        // realloc, growing and shrinking, then free
        // SAFETY: glibc's malloc.
        let p: *mut u8 = unsafe { (g.malloc)(n) }.cast();
        // SAFETY: n bytes.
        unsafe { fill(p, n, 3) };
        // SAFETY: live glibc block.
        let q = unsafe { realloc(p, n * 2 + 10) };
        assert!(!q.is_null());
        assert!(
            // SAFETY: the first n bytes were kept.
            unsafe { check(q, n, 3) },
            "realloc of glibc block lost contents"
        );
        assert!(
            !hakmem::owns(q),
            "realloc of a glibc block moved it to hakmem"
        );
        // SAFETY: live glibc block.
        let r = unsafe { realloc(q, n / 2 + 1) };
        // SAFETY: n/2+1 <= n bytes kept.
        assert!(unsafe { check(r, n / 2 + 1, 3) });
        // SAFETY: live glibc block.
        unsafe { free(r) };

        // realloc(p, 0) of a foreign block frees it.
        // SAFETY: glibc's malloc.
        let p: *mut u8 = unsafe { (g.malloc)(n) }.cast();
        // SAFETY: live glibc block.
        assert!(unsafe { realloc(p, 0) }.is_null());
    }
    // Page-aligned and larger-aligned glibc blocks.
    for &a in &[16usize, 64, 4096, 65_536, 1 << 20] {
        for &n in &[1usize, 4096, 100_000] {
            // SAFETY: glibc's memalign.
            let p: *mut u8 = unsafe { (g.memalign)(a, n) }.cast();
            assert!(!p.is_null() && (p as usize).is_multiple_of(a));
            assert!(
                !hakmem::owns(p),
                "hakmem claims glibc's aligned block {p:p}"
            );
            // SAFETY: live glibc block.
            assert!(unsafe { usable(p) } >= n);
            if n == 4096 {
                // SAFETY: live glibc block.
                let q = unsafe { realloc(p, 3 * n) };
                assert!(!q.is_null());
                // SAFETY: live glibc block.
                unsafe { free(q) };
            } else {
                // SAFETY: live glibc block.
                unsafe { free(p) };
            }
        }
    }
    // And the other way round is not allowed, so only check glibc's free of
    // its own block still works after hakmem handled some.
    // SAFETY: glibc's malloc and free on its own block.
    unsafe { (g.free)((g.malloc)(10)) };
}
