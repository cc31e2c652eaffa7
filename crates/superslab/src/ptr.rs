//! Distinct pointer types for the two views of one address.
//!
//! hakmem keeps no per-block header, so a block and the pointer the program
//! holds share an address, but they are not interchangeable: a [`UserPtr`] is
//! untrusted input (it may be foreign, interior, or already freed), while a
//! [`BlockPtr`] is a block proven to be a block start inside one of our slabs.
//! The only way from one to the other is [`crate::Slab::block_of`], which
//! validates. Passing a block where a user pointer is required does not compile:
//!
//! ```compile_fail
//! use superslab::{BlockPtr, UserPtr};
//! fn give_to_program(_: UserPtr) {}
//! fn f(b: BlockPtr) { give_to_program(b) }
//! ```
//!
//! ```compile_fail
//! use superslab::{BlockPtr, UserPtr};
//! fn f(u: UserPtr) -> BlockPtr { BlockPtr(u.as_non_null()) } // private field
//! ```

use core::ptr::NonNull;

/// A pointer as the program holds it. Untrusted.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserPtr(NonNull<u8>);

impl UserPtr {
    /// Wraps a program pointer; `None` for null.
    #[inline(always)]
    pub fn new(p: *mut u8) -> Option<Self> {
        NonNull::new(p).map(Self)
    }
    /// Wraps a non-null program pointer.
    #[inline(always)]
    pub fn from_non_null(p: NonNull<u8>) -> Self {
        Self(p)
    }
    /// The raw pointer.
    #[inline(always)]
    pub fn as_ptr(self) -> *mut u8 {
        self.0.as_ptr()
    }
    /// The non-null pointer.
    #[inline(always)]
    pub fn as_non_null(self) -> NonNull<u8> {
        self.0
    }
    /// The address.
    #[inline(always)]
    pub fn addr(self) -> usize {
        self.0.as_ptr() as usize
    }
}

/// A block start inside a hakmem slab, owned by the allocator until handed out.
#[repr(transparent)]
#[derive(Debug, PartialEq, Eq)]
pub struct BlockPtr(NonNull<u8>);

impl BlockPtr {
    /// Hands the block to the program.
    #[inline(always)]
    pub fn into_user(self) -> UserPtr {
        UserPtr(self.0)
    }
    /// The address.
    #[inline(always)]
    pub fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
    #[inline(always)]
    pub(crate) fn from_raw(p: NonNull<u8>) -> Self {
        Self(p)
    }
    #[inline(always)]
    pub(crate) fn as_node(&self) -> NonNull<remote_queue::Node> {
        self.0.cast()
    }
}
