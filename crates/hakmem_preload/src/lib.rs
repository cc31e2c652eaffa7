//! `libhakmem.so`, the LD_PRELOAD build of hakmem.
//!
//! The drop-in symbol set (`malloc`, `free`, `operator new`, ...) is defined
//! by the `hakmem` crate's `c-abi` feature; this crate only links it into a
//! shared library of its own, so that link-time optimisation sees the whole
//! allocator and the exported C symbols are its only external ones.
#![no_std]

// The C symbols live in the facade's `c_abi` module; naming the crate links it.
pub use facade::VERSION;
