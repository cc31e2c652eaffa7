//! `bench_meta`: memory for benchmark bookkeeping that bypasses the allocator
//! under test.
//!
//! A benchmark that keeps its slot tables or per-thread counters in `malloc`
//! memory measures itself as much as the allocator (benchmarks.md). Everything
//! here comes from the benchmark's own anonymous mappings: [`MetaSlice`] is a
//! fixed-length, zero-initialised array of plain-old-data values, and
//! [`MetaBox`] a single value. No allocator box depends on this crate.
//!
//! Values must be valid when all-zero and need no drop ([`Zeroable`]).
#![no_std]

use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

/// Types for which the all-zero bit pattern is a valid value and that need no
/// drop.
///
/// # Safety
/// Implementors guarantee exactly that.
pub unsafe trait Zeroable: Sized {}
// SAFETY: integers, raw pointers, bools and atomics of them are valid at zero.
unsafe impl Zeroable for u8 {}
// SAFETY: as above.
unsafe impl Zeroable for u32 {}
// SAFETY: as above.
unsafe impl Zeroable for u64 {}
// SAFETY: as above.
unsafe impl Zeroable for i64 {}
// SAFETY: as above.
unsafe impl Zeroable for usize {}
// SAFETY: as above.
unsafe impl Zeroable for bool {}
// SAFETY: as above.
unsafe impl Zeroable for AtomicBool {}
// SAFETY: as above.
unsafe impl Zeroable for AtomicU64 {}
// SAFETY: as above.
unsafe impl Zeroable for AtomicUsize {}
// SAFETY: a null raw pointer is valid.
unsafe impl<T> Zeroable for *mut T {}
// SAFETY: arrays of zeroable values are zeroable.
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}

fn map(bytes: usize) -> NonNull<u8> {
    let len = bytes.max(1).next_multiple_of(4096);
    // SAFETY: anonymous private mapping at a kernel-chosen address.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        const MSG: &[u8] = b"bench_meta: mmap failed\n";
        // SAFETY: valid buffer; abort does not return.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::abort()
        }
    }
    NonNull::new(p.cast()).expect("mmap returned null")
}

fn unmap(p: NonNull<u8>, bytes: usize) {
    let len = bytes.max(1).next_multiple_of(4096);
    // SAFETY: the mapping was created by `map` with the same length.
    unsafe { libc::munmap(p.as_ptr().cast(), len) };
}

/// A fixed-length array in its own mapping, zero-initialised.
pub struct MetaSlice<T: Zeroable> {
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: owns its memory like a Box<[T]>.
unsafe impl<T: Zeroable + Send> Send for MetaSlice<T> {}
// SAFETY: shared access only hands out &T.
unsafe impl<T: Zeroable + Sync> Sync for MetaSlice<T> {}

impl<T: Zeroable> MetaSlice<T> {
    /// `len` zeroed values. Aborts if the OS refuses the mapping.
    pub fn zeroed(len: usize) -> Self {
        assert!(core::mem::align_of::<T>() <= 4096);
        let bytes = len
            .checked_mul(core::mem::size_of::<T>())
            .expect("bench_meta: size overflow");
        Self {
            ptr: map(bytes).cast(),
            len,
        }
    }
}

impl<T: Zeroable> Deref for MetaSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` zero-valid values live in the mapping.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> DerefMut for MetaSlice<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in deref, and we have exclusive access.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for MetaSlice<T> {
    fn drop(&mut self) {
        unmap(self.ptr.cast(), self.len * core::mem::size_of::<T>());
    }
}

/// One value in its own mapping, zero-initialised.
pub struct MetaBox<T: Zeroable>(MetaSlice<T>);

impl<T: Zeroable> MetaBox<T> {
    /// A zeroed value.
    pub fn zeroed() -> Self {
        Self(MetaSlice::zeroed(1))
    }
}

impl<T: Zeroable> Deref for MetaBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0[0]
    }
}

impl<T: Zeroable> DerefMut for MetaBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0[0]
    }
}

/// Peak resident set size of this process in KiB (`VmHWM`), read without
/// allocating. 0 if unavailable.
pub fn peak_rss_kib() -> u64 {
    status_field(b"VmHWM:")
}

/// Current resident set size in KiB (`VmRSS`). 0 if unavailable.
pub fn rss_kib() -> u64 {
    status_field(b"VmRSS:")
}

fn status_field(name: &[u8]) -> u64 {
    let mut buf = [0u8; 4096];
    // SAFETY: NUL-terminated path; the buffer is valid for its length.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return 0;
    }
    let text = &buf[..n as usize];
    let Some(at) = text.windows(name.len()).position(|w| w == name) else {
        return 0;
    };
    text[at + name.len()..]
        .iter()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .fold(0, |v, c| v * 10 + u64::from(c - b'0'))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn slices_are_zeroed_writable_and_outside_malloc() {
        let mut s: MetaSlice<u64> = MetaSlice::zeroed(100_000);
        assert!(s.iter().all(|&v| v == 0));
        s[99_999] = 7;
        assert_eq!(s[99_999], 7);
        let mut b: MetaBox<[usize; 4]> = MetaBox::zeroed();
        b[3] = 1;
        assert_eq!(b[3], 1);
        assert!(peak_rss_kib() > 0 && rss_kib() > 0);
    }
}
