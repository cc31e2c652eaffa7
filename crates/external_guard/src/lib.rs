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
//!
//! [`check`] tells apart the foreign pointers that cannot be glibc's either:
//! an address on a thread stack or inside a loaded object's segments (static
//! data, constants, code). The caller (`front_gate`) aborts on those instead of
//! letting glibc fail with its own message. It never allocates itself and runs
//! only for pointers hakmem does not own.
#![no_std]

use core::ffi::{c_int, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

type FreeFn = unsafe extern "C" fn(*mut c_void);
type ReallocFn = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
type UsableFn = unsafe extern "C" fn(*mut c_void) -> usize;

static FREE: AtomicUsize = AtomicUsize::new(0);
static REALLOC: AtomicUsize = AtomicUsize::new(0);
static USABLE: AtomicUsize = AtomicUsize::new(0);
/// glibc's `_dl_find_object` (2.35 and later), or 0.
static FIND_OBJECT: AtomicUsize = AtomicUsize::new(0);

fn resolve(handle: *mut c_void, name: &CStr) -> usize {
    // SAFETY: valid handle and NUL-terminated name.
    unsafe { libc::dlsym(handle, name.as_ptr()) as usize }
}

/// Resolves glibc's `free`, `realloc` and `malloc_usable_size`, and computes
/// the ranges [`check`] uses. Idempotent. Returns false if glibc could not be
/// found (not a glibc process).
pub fn init() -> bool {
    // At load time, before the program can change its stack limit.
    bounds();
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
    FIND_OBJECT.store(resolve(h, c"_dl_find_object"), Ordering::Release);
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

/// Why a pointer that hakmem does not own cannot be a block of glibc's
/// either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// On a thread's stack: anywhere on the main thread's, or on the calling
    /// thread's own.
    Stack,
    /// Inside a PT_LOAD segment of a loaded ELF object: static data, constants
    /// or code.
    Static,
}

impl Fault {
    /// A short fixed description, usable without allocating.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stack => "invalid free: pointer is on a thread stack",
            Self::Static => "invalid free: pointer into static data of a loaded object",
        }
    }
}

/// Address ranges found once ([`bounds`]): the main thread's stack and the
/// program break at that time. Zero-width until computed.
static MAIN_STACK_LO: AtomicUsize = AtomicUsize::new(0);
static MAIN_STACK_HI: AtomicUsize = AtomicUsize::new(0);
static BRK_AT_INIT: AtomicUsize = AtomicUsize::new(usize::MAX);
static BOUNDS: AtomicBool = AtomicBool::new(false);

/// Most of the address space below the main stack's top that is treated as
/// that stack, when `RLIMIT_STACK` is larger or unlimited.
const MAIN_STACK_MAX: usize = 1 << 30;

extern "C" {
    /// The main thread's stack pointer at process start (glibc's ld.so).
    static __libc_stack_end: *mut c_void;
}

/// Computes the main thread's stack range and the program break, once.
/// Nothing here allocates or reads a file:
///
/// - The top of the main stack is the end of the `AT_EXECFN` string: the
///   kernel copies the executable's name last, at the very top of the new
///   stack (checked against `[stack]` in `/proc/self/maps` by a test).
/// - Its lowest possible address is `top - RLIMIT_STACK` (at most 1 GiB):
///   the kernel keeps at least that much (plus a guard gap) free below the
///   stack when it places `mmap`s, so no other mapping can be there.
/// - The range must contain `__libc_stack_end`, the main thread's initial
///   stack pointer; otherwise (an unusual exec layout) the main stack is not
///   recognised at all rather than guessed.
/// - The program break (`sbrk(0)`): every address from there to the current
///   break is glibc's main heap, where no stack and no object can lie.
fn compute_bounds() {
    // SAFETY: getauxval, getrlimit and sbrk(0) have no preconditions and do
    // not allocate; __libc_stack_end is a plain word set by ld.so at start-up.
    let (execfn, rl, brk, stack_end) = unsafe {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_STACK, &mut rl) != 0 {
            rl.rlim_cur = 0;
        }
        (
            libc::getauxval(libc::AT_EXECFN) as usize,
            rl.rlim_cur,
            libc::sbrk(0) as usize,
            __libc_stack_end as usize,
        )
    };
    if execfn != 0 {
        // SAFETY: AT_EXECFN points at a NUL-terminated string on the stack.
        let len = unsafe { libc::strlen(execfn as *const libc::c_char) };
        let hi = (execfn + len + 1 + PAGE - 1) & !(PAGE - 1);
        // RLIM_INFINITY is the largest value, so it is capped too.
        let size = if rl > MAIN_STACK_MAX as libc::rlim_t {
            MAIN_STACK_MAX
        } else {
            rl as usize
        };
        let lo = hi.saturating_sub(size);
        if stack_end >= lo && stack_end < hi {
            MAIN_STACK_LO.store(lo, Ordering::Relaxed);
            MAIN_STACK_HI.store(hi, Ordering::Relaxed);
        }
    }
    if brk != usize::MAX {
        BRK_AT_INIT.store(brk, Ordering::Relaxed);
    }
    BOUNDS.store(true, Ordering::Release);
}

const PAGE: usize = 4096;

#[inline]
fn bounds() {
    if !BOUNDS.load(Ordering::Acquire) {
        compute_bounds();
    }
}

/// The main thread's stack as recognised by [`check`]: `(lo, hi)`, empty if
/// it could not be established.
pub fn main_stack() -> (usize, usize) {
    bounds();
    (
        MAIN_STACK_LO.load(Ordering::Relaxed),
        MAIN_STACK_HI.load(Ordering::Relaxed),
    )
}

/// Classifies a pointer that hakmem does not own: `Some` if it is certainly
/// not a glibc block (so passing it to glibc would be a misuse), `None` if it
/// may be one. In order:
///
/// 1. between the program break seen at [`init`] and the current one: glibc's
///    main heap, `None` at once (the common foreign block);
/// 2. in the main thread's stack range: [`Fault::Stack`], from any thread;
/// 3. on the calling thread's own stack: [`Fault::Stack`];
/// 4. in a loaded object's segments: [`Fault::Static`].
///
/// Another thread's stack (other than the main one's) is not recognised.
/// Allocates only to confirm step 3 for a pointer near the stack pointer
/// (`pthread_getattr_np`), and those blocks are hakmem's own, never foreign;
/// takes no lock of hakmem's.
#[cold]
#[inline(never)]
pub fn check(p: usize) -> Option<Fault> {
    bounds();
    // glibc's main heap (brk) since start-up: by far the most common foreign
    // block, and nothing else can be mapped there. One load and a compare.
    if p >= BRK_AT_INIT.load(Ordering::Relaxed) {
        // SAFETY: sbrk(0) only reads the current break.
        let brk = unsafe { libc::sbrk(0) } as usize;
        if p < brk && brk != usize::MAX {
            return None;
        }
    }
    let (lo, hi) = (
        MAIN_STACK_LO.load(Ordering::Relaxed),
        MAIN_STACK_HI.load(Ordering::Relaxed),
    );
    if p >= lo && p < hi {
        return Some(Fault::Stack);
    }
    if on_own_stack(p, lo, hi) {
        return Some(Fault::Stack);
    }
    if in_loaded_object(p) {
        return Some(Fault::Static);
    }
    None
}

/// True if `p` is on the calling thread's stack (a thread other than the
/// main one, whose whole stack range [`check`] tests first).
///
/// glibc keeps a thread's descriptor (`pthread_self()`) and static TLS at the
/// top of its stack block, so the thread's live frames lie between the stack
/// pointer and it. That window is only a filter: a pointer in it is confirmed
/// with the exact stack bounds from `pthread_getattr_np`, because the stack
/// pointer may be on another stack (a coroutine's or a signal stack) with
/// glibc blocks in between. `pthread_getattr_np` allocates (its CPU set, with
/// `realloc`/`free`): those are hakmem's own blocks, never foreign, so this
/// cannot recurse, and no hakmem lock is held here.
fn on_own_stack(p: usize, main_lo: usize, main_hi: usize) -> bool {
    /// Dead frames below the stack pointer that still count.
    const BELOW_SP: usize = 64 << 10;
    /// Descriptor and alignment above `pthread_self()`.
    const ABOVE_SELF: usize = 8 << 10;
    /// A sane distance between a thread's stack pointer and its descriptor.
    const MAX_DEPTH: usize = 1 << 30;
    let marker = 0u8;
    let sp = core::hint::black_box(&marker) as *const u8 as usize;
    if sp >= main_lo && sp < main_hi {
        return false; // the main thread: already tested against its range
    }
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let top = me as usize;
    if top <= sp || top - sp > MAX_DEPTH || p < sp.saturating_sub(BELOW_SP) || p >= top + ABOVE_SELF
    {
        return false;
    }
    let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `me` is the calling thread; `attr` is written before use.
    if unsafe { libc::pthread_getattr_np(me, attr.as_mut_ptr()) } != 0 {
        return false;
    }
    let (mut addr, mut size): (*mut c_void, usize) = (core::ptr::null_mut(), 0);
    // SAFETY: `attr` was initialised by pthread_getattr_np and is destroyed
    // exactly once.
    let ok = unsafe {
        let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        ok
    };
    ok && p >= addr as usize && p - (addr as usize) < size
}

type FindObjectFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;

/// True if `p` lies in a PT_LOAD segment of an object loaded in the calling
/// code's namespace.
///
/// First `_dl_find_object` (glibc 2.35 and later, resolved by [`init`]): a
/// lock-free search of the loaded objects' address spans that neither
/// allocates nor locks. Only an address inside a span (a misuse, or a hole
/// between two segments of the executable) goes on to the exact test,
/// [`in_load_segment`]; without `_dl_find_object` every address does.
fn in_loaded_object(p: usize) -> bool {
    let f = FIND_OBJECT.load(Ordering::Acquire);
    if f != 0 {
        // SAFETY: the address was resolved as glibc's `_dl_find_object`.
        let find: FindObjectFn = unsafe { core::mem::transmute::<usize, FindObjectFn>(f) };
        // `struct dl_find_object` is 96 bytes on x86-64; the result is only
        // written, never read, so any larger, aligned buffer will do.
        let mut out = [0u64; 32];
        // SAFETY: `out` is writable and larger than the structure.
        if unsafe { find(p as *mut c_void, out.as_mut_ptr().cast()) } != 0 {
            return false;
        }
    }
    in_load_segment(p)
}

/// The exact test behind [`in_loaded_object`], with `dl_iterate_phdr`. It does
/// not allocate and holds ld.so's `dl_load_write_lock` (recursive) only for
/// the walk. `dladdr` would take `dl_load_lock` instead, which `dlopen` holds
/// while it runs the new library's constructors: a free in a thread such a
/// constructor waits for would then deadlock.
fn in_load_segment(p: usize) -> bool {
    unsafe extern "C" fn visit(
        info: *mut libc::dl_phdr_info,
        _: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid `info` whose `dlpi_phdr` has
        // `dlpi_phnum` entries; `data` is the `usize` passed below.
        unsafe {
            let p = *(data as *const usize);
            let info = &*info;
            let base = info.dlpi_addr as usize;
            for i in 0..info.dlpi_phnum as usize {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type == libc::PT_LOAD {
                    let start = base.wrapping_add(ph.p_vaddr as usize);
                    if p.wrapping_sub(start) < ph.p_memsz as usize {
                        return 1;
                    }
                }
            }
        }
        0
    }
    let mut addr = p;
    // SAFETY: the callback only reads what it is given; `addr` outlives the
    // call.
    unsafe { libc::dl_iterate_phdr(Some(visit), (&mut addr as *mut usize).cast()) != 0 }
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

    #[test]
    fn main_stack_top_is_the_stack_mapping_end() {
        let (lo, hi) = super::main_stack();
        assert!(lo < hi, "main stack not recognised");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.ends_with("[stack]")).unwrap();
        let (range, _) = line.split_once(' ').unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        assert_eq!(hi, end, "{line}");
        assert!(lo <= start, "{lo:#x} {line}");
    }

    #[test]
    fn stacks_and_static_data_are_not_glibc_blocks() {
        use super::{check, Fault};
        static DATA: [u8; 64] = [1; 64];
        static mut BSS: [u8; 4096] = [0; 4096];
        assert!(super::init());
        assert_ne!(
            super::FIND_OBJECT.load(core::sync::atomic::Ordering::Relaxed),
            0,
            "glibc 2.35 or later"
        );
        // The exact test alone agrees (used without _dl_find_object).
        let data = &DATA as *const _ as usize;
        assert!(super::in_load_segment(data) && super::in_load_segment(data + 63));
        assert!(super::in_load_segment(check as *const () as usize));
        let heap = std::boxed::Box::new(5u64);
        assert!(!super::in_load_segment(&*heap as *const u64 as usize));
        let local = [0u8; 32];
        let addr = core::hint::black_box(&local) as *const _ as usize;
        // libtest runs each test on a thread of its own: its own stack.
        assert_eq!(check(addr), Some(Fault::Stack));
        assert_eq!(check(&DATA as *const _ as usize + 8), Some(Fault::Static));
        assert_eq!(
            check(core::ptr::addr_of!(BSS) as usize + 4000),
            Some(Fault::Static)
        );
        assert_eq!(
            check(check as *const () as usize),
            Some(Fault::Static),
            "code"
        );
        let (lo, hi) = super::main_stack();
        assert_eq!(check(hi - 64), Some(Fault::Stack), "main stack, any thread");
        assert_eq!(check(lo), Some(Fault::Stack));
        assert_eq!(check(hi), None);
        // glibc blocks (this binary's malloc is glibc's): main heap, a thread
        // arena, mmapped chunks.
        let blocks = std::thread::spawn(|| {
            // SAFETY: plain glibc allocations, freed below.
            unsafe { [libc::malloc(40), libc::malloc(4000), libc::malloc(1 << 20)] }
                .map(|p| p as usize)
        })
        .join()
        .unwrap();
        // SAFETY: as above.
        let here = unsafe { [libc::malloc(40), libc::malloc(300_000)] }.map(|p| p as usize);
        for p in blocks.into_iter().chain(here) {
            assert_eq!(check(p), None, "{p:#x}");
            // SAFETY: live glibc blocks.
            unsafe { super::free(p as *mut _) };
        }
    }
}
