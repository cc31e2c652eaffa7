//! `core_alloc`: the allocator proper.
//!
//! - Size classes come from `superslab`'s layout table; requests up to
//!   [`superslab::MEDIUM_MAX`] (128 KiB) are served from per-thread heaps, larger
//!   ones are mapped directly and unmapped on free.
//! - Each thread has a heap: per class, a cache of free blocks and a list of
//!   slabs it owns. `malloc` pops the cache and `free` pushes onto it, whoever
//!   allocated the block. The cache refills in batches from the owned slabs
//!   and, past its limit, flushes half back: onto a slab's free list if this
//!   heap owns it, else through the slab's remote queue.
//! - `realloc` stays in place when the block still fits (and for large blocks
//!   grows or shrinks the mapping in place when the OS allows); aligned
//!   allocation uses classes whose stride is a multiple of the alignment.
//!
//! API boundary: every entry point that takes a pointer also takes the
//! registry's [`registry::Region`] proof that the pointer is hakmem's. This box
//! knows nothing about foreign pointers: that is `front_gate`'s and
//! `external_guard`'s business.
#![deny(missing_docs)]

mod alloc;
mod heap;

pub use superslab::canary::init as init_canary;

pub use alloc::{aligned, calloc, free, malloc, realloc, trim, usable_size, FreeError};
pub use heap::{
    fork_child, fork_parent, fork_prepare, init_thread_key, live_heaps, register_fork_handlers,
};
