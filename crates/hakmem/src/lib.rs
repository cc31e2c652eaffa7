//! hakmem: a general-purpose memory allocator.
//!
//! Use it as Rust's global allocator:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: hakmem::Hakmem = hakmem::Hakmem;
//! # fn main() { let v = vec![1u8; 100]; assert_eq!(v.len(), 100); }
//! ```
//!
//! or as the process's `malloc` through `LD_PRELOAD=target/release/libhakmem.so`
//! (the `c-abi` feature, on by default, exports the drop-in symbol set).
//!
//! This crate only assembles the boxes: every call goes through `front_gate`.
#![cfg_attr(not(test), no_std)]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

/// What a build without the `double-free-check` feature adds to its version.
#[cfg(feature = "double-free-check")]
macro_rules! checks_suffix {
    () => {
        ""
    };
}
#[cfg(not(feature = "double-free-check"))]
macro_rules! checks_suffix {
    () => {
        " unchecked"
    };
}

/// [`VERSION`] as a literal, so the C ABI can append its NUL with `concat!`.
macro_rules! version_str {
    ($($tail:expr)?) => {
        concat!("hakmem ", env!("CARGO_PKG_VERSION"), checks_suffix!() $(, $tail)?)
    };
}

#[cfg(feature = "c-abi")]
mod c_abi;

/// hakmem's version string, as exported to C by `hakmem_version()`. A build
/// without the `double-free-check` feature says so (`hakmem 0.1.0
/// unchecked`), so a benchmark can tell which of the two served it.
pub const VERSION: &str = version_str!();

/// The hakmem allocator, for `#[global_allocator]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hakmem;

// SAFETY: front_gate returns blocks of at least the requested size and
// alignment (or null), never hands one out twice while live, and frees only
// what it handed out; realloc preserves contents and alignment.
unsafe impl GlobalAlloc for Hakmem {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.align() <= 16 {
            front_gate::malloc(l.size()).cast()
        } else {
            front_gate::aligned_alloc(l.align(), l.size()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
        // SAFETY: the caller passes a live block from `alloc`.
        unsafe { front_gate::free(p.cast()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if l.align() <= 16 {
            return front_gate::calloc(1, l.size()).cast();
        }
        let p = front_gate::aligned_alloc(l.align(), l.size()).cast::<u8>();
        if !p.is_null() {
            // SAFETY: a fresh block of l.size() bytes.
            unsafe { core::ptr::write_bytes(p, 0, l.size()) };
        }
        p
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block of layout `l`; new_size > 0.
        unsafe {
            front_gate::realloc_aligned(p.cast::<c_void>(), new_size, l.align().max(16)).cast()
        }
    }
}

/// Usable size of a block returned by hakmem (or by glibc, under LD_PRELOAD).
///
/// # Safety
/// `p` is NULL or a live block.
pub unsafe fn usable_size(p: *const u8) -> usize {
    // SAFETY: per the contract.
    unsafe { front_gate::usable_size(p as *mut c_void) }
}

/// Returns cached free memory to the OS. True if anything was released.
pub fn trim() -> bool {
    front_gate::trim() != 0
}

/// True if `p` points into memory hakmem manages.
pub fn owns(p: *const u8) -> bool {
    front_gate::owns(p.cast())
}

/// Counters of the process-wide pool.
pub fn pool_stats() -> shared_pool::PoolStats {
    shared_pool::stats()
}

/// Heaps of live threads (tests use this to check thread churn is bounded).
pub fn live_heaps() -> usize {
    core_alloc::live_heaps()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_says_whether_the_double_free_check_is_built_in() {
        assert!(super::VERSION.starts_with(concat!("hakmem ", env!("CARGO_PKG_VERSION"))));
        assert_eq!(
            super::VERSION.ends_with(" unchecked"),
            !cfg!(feature = "double-free-check"),
            "{}",
            super::VERSION
        );
    }

    #[cfg(feature = "c-abi")]
    #[test]
    fn the_c_version_is_the_same_string() {
        // SAFETY: hakmem_version returns a static NUL-terminated string.
        let c = unsafe { core::ffi::CStr::from_ptr(super::c_abi::hakmem_version()) };
        assert_eq!(c.to_str().unwrap(), super::VERSION);
    }
}
