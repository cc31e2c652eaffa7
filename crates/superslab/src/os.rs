//! The only place in hakmem's allocator that asks the OS for memory or gives it
//! back (`mmap`, `munmap`, `madvise`, `mremap`), plus an allocation-free way to
//! die with a one-line message. Nothing here allocates or takes a lock.

use core::ptr::{self, NonNull};

/// The system page size hakmem assumes (checked once, see [`page_size_ok`]).
pub const PAGE: usize = 4096;

/// Maps `len` bytes of fresh, zeroed, read-write memory.
pub fn map(len: usize) -> Option<NonNull<u8>> {
    // SAFETY: anonymous private mapping at a kernel-chosen address; no existing
    // memory is affected.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Maps `len` bytes aligned to `align` (a power of two >= PAGE) by mapping
/// `len + align` and trimming both ends. Fresh memory is zero. `None` if the
/// OS refuses, including when trimming would exceed the process's mapping
/// count (`vm.max_map_count`): then the whole mapping is released instead.
pub fn map_aligned(len: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && align >= PAGE && len.is_multiple_of(PAGE));
    let over = len.checked_add(align)?;
    let raw = map(over)?.as_ptr() as usize;
    let start = (raw + align - 1) & !(align - 1);
    let head = start - raw;
    let tail = over - head - len;
    // SAFETY: both trimmed ranges lie inside the mapping we just created and
    // nobody else has seen them.
    unsafe {
        if head != 0 && !try_unmap(raw as *mut u8, head) {
            unmap(raw as *mut u8, over); // a whole mapping: never needs a split
            return None;
        }
        if tail != 0 && !try_unmap((start + len) as *mut u8, tail) {
            unmap(start as *mut u8, len + tail);
            return None;
        }
    }
    NonNull::new(start as *mut u8)
}

/// Makes `len` bytes at `p` inaccessible (`PROT_NONE`): a guard. False if
/// the kernel refused (out of mappings: the range keeps its protection).
///
/// # Safety
/// `p..p + len` is page-aligned, mapped by the caller, and unused.
pub unsafe fn guard(p: *mut u8, len: usize) -> bool {
    // SAFETY: per the caller's contract.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_NONE) == 0 }
}

/// `munmap` that reports failure instead of aborting.
///
/// # Safety
/// As for [`unmap`].
unsafe fn try_unmap(p: *mut u8, len: usize) -> bool {
    // SAFETY: per the caller's contract.
    unsafe { libc::munmap(p.cast(), len) == 0 }
}

/// Unmaps a range.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory mapped by this module that
/// nothing will touch again.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: per the caller's contract.
    let r = unsafe { libc::munmap(p.cast(), len) };
    if r != 0 {
        fatal("munmap failed", p as usize);
    }
}

/// Gives the physical pages of a range back to the OS; the range stays mapped
/// and reads back as zero afterwards.
///
/// # Safety
/// `[p, p + len)` must be page-aligned memory mapped by this module whose
/// contents are no longer needed.
pub unsafe fn decommit(p: *mut u8, len: usize) {
    // SAFETY: per the caller's contract; MADV_DONTNEED on private anonymous
    // memory only drops page contents.
    unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) };
}

/// Tries to resize a mapping in place (never moves it).
///
/// # Safety
/// `[p, p + old)` must be a mapping made by this module.
pub unsafe fn remap_in_place(p: *mut u8, old: usize, new: usize) -> bool {
    // SAFETY: flags 0 forbid moving; on failure nothing changes.
    let r = unsafe { libc::mremap(p.cast(), old, new, 0) };
    r != libc::MAP_FAILED
}

/// True if the page holding `addr` is mapped (by anyone). Used only to judge
/// a pointer hakmem does not own: an unmapped address cannot be anybody's
/// live block. One `mincore` system call.
/// `errno` is left as it was (this runs inside `free`).
pub fn is_mapped(addr: usize) -> bool {
    let mut vec = 0u8;
    // SAFETY: __errno_location returns the calling thread's errno slot.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    // SAFETY: mincore only inspects the page tables for the given page and
    // writes one byte to `vec`; it fails with ENOMEM if the page is unmapped.
    let r = unsafe { libc::mincore((addr & !(PAGE - 1)) as *mut libc::c_void, PAGE, &mut vec) };
    // SAFETY: as above.
    let unmapped = r != 0 && unsafe { *errno } == libc::ENOMEM;
    // SAFETY: as above.
    unsafe { *errno = saved };
    !unmapped
}

/// True if the running kernel's page size is the one hakmem was built for.
pub fn page_size_ok() -> bool {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) == PAGE as libc::c_long }
}

/// Writes raw bytes to stderr, ignoring errors. Does not allocate.
pub fn write_stderr(bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        // SAFETY: the slice is valid for reads of its length.
        let n = unsafe { libc::write(2, bytes[off..].as_ptr().cast(), bytes.len() - off) };
        if n <= 0 {
            return;
        }
        off += n as usize;
    }
}

/// Formats `v` as `0x…` hex into `buf`, returning the used tail.
pub fn fmt_hex(v: usize, buf: &mut [u8; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = buf.len();
    let mut v = v;
    loop {
        i -= 1;
        buf[i] = DIGITS[v & 15];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 1;
    buf[i] = b'x';
    i -= 1;
    buf[i] = b'0';
    &buf[i..]
}

/// Prints `hakmem: <msg> at <addr>` and aborts the process. Does not allocate,
/// so it is safe on any allocator path.
#[cold]
pub fn fatal(msg: &str, addr: usize) -> ! {
    let mut buf = [0u8; 18];
    write_stderr(b"hakmem: ");
    write_stderr(msg.as_bytes());
    write_stderr(b" at ");
    write_stderr(fmt_hex(addr, &mut buf));
    write_stderr(b"\n");
    // SAFETY: abort has no preconditions and does not return.
    unsafe { libc::abort() }
}
