//! The one table of block layout (lessons 6 and 7): for every size class, its
//! stride (block size; hakmem keeps no per-block header, so stride == size),
//! the slab kind it lives in, and how many blocks a slab holds. Carving,
//! capacity and refill all read this table and nothing else.
//!
//! Classes: 16..=128 in steps of 16, then four classes per doubling
//! (×1.25, ×1.5, ×1.75, ×2) up to [`MEDIUM_MAX`]. Worst-case internal
//! fragmentation is 20% above 128 bytes. Every stride is a multiple of 16, so
//! every block is 16-aligned; a power-of-two stride `s` gives `s`-aligned
//! blocks (slabs are aligned to their own size), which aligned allocation uses.

use static_assertions::const_assert;

/// Largest request served by the class table; larger ones are mapped directly.
pub const MEDIUM_MAX: usize = 128 * 1024;
/// Largest stride placed in small (64 KiB) slabs; larger ones use medium slabs.
pub const SMALL_MAX: usize = 8 * 1024;
/// Number of size classes.
pub const NUM_CLASSES: usize = 48;
/// Requests up to this size are classed through a lookup table.
pub const LUT_MAX: usize = 1024;

/// log2 of a small slab (64 KiB).
pub const SMALL_SLAB_SHIFT: u32 = 16;
/// log2 of a medium slab (512 KiB).
pub const MEDIUM_SLAB_SHIFT: u32 = 19;

/// Which kind of segment (and so which slab size) a class lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SlabKind {
    /// 64 KiB slabs.
    Small = 0,
    /// 512 KiB slabs.
    Medium = 1,
}

impl SlabKind {
    /// log2 of this kind's slab size.
    pub const fn shift(self) -> u32 {
        match self {
            Self::Small => SMALL_SLAB_SHIFT,
            Self::Medium => MEDIUM_SLAB_SHIFT,
        }
    }
    /// Slab size in bytes.
    pub const fn slab_size(self) -> usize {
        1 << self.shift()
    }
}

/// One row of the layout table.
#[derive(Clone, Copy, Debug)]
pub struct ClassLayout {
    /// Bytes between consecutive blocks (== usable size).
    pub stride: u32,
    /// Blocks per slab.
    pub capacity: u32,
    /// Slab kind.
    pub kind: SlabKind,
}

const fn stride_of(c: usize) -> usize {
    if c < 8 {
        (c + 1) * 16
    } else {
        let k = (c - 8) / 4 + 7; // the doubling (2^k, 2^(k+1)]
        let sub = (c - 8) % 4;
        (1 << k) + (sub + 1) * (1 << (k - 2))
    }
}

const fn build() -> [ClassLayout; NUM_CLASSES] {
    let mut t = [ClassLayout {
        stride: 0,
        capacity: 0,
        kind: SlabKind::Small,
    }; NUM_CLASSES];
    let mut c = 0;
    while c < NUM_CLASSES {
        let s = stride_of(c);
        let kind = if s <= SMALL_MAX {
            SlabKind::Small
        } else {
            SlabKind::Medium
        };
        t[c] = ClassLayout {
            stride: s as u32,
            capacity: (kind.slab_size() / s) as u32,
            kind,
        };
        c += 1;
    }
    t
}

/// The layout table.
pub static CLASSES: [ClassLayout; NUM_CLASSES] = build();
/// The layout table, for constant evaluation.
pub const CLASSES_CONST: [ClassLayout; NUM_CLASSES] = build();
const TABLE: [ClassLayout; NUM_CLASSES] = build();

/// [`class_of`] for constant evaluation (tables built at compile time).
pub const fn class_of_const(size: usize) -> usize {
    class_of_slow(size)
}

const fn class_of_slow(size: usize) -> usize {
    if size <= 128 {
        if size == 0 {
            0
        } else {
            (size - 1) / 16
        }
    } else {
        let s = size - 1;
        let k = (usize::BITS - 1 - s.leading_zeros()) as usize;
        8 + (k - 7) * 4 + ((s >> (k - 2)) & 3)
    }
}

const fn build_lut() -> [u8; LUT_MAX / 16 + 1] {
    let mut t = [0u8; LUT_MAX / 16 + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = class_of_slow(i * 16) as u8;
        i += 1;
    }
    t
}

/// `LUT[(size + 15) / 16]` is the class of `size` for `size <= LUT_MAX`.
static LUT: [u8; LUT_MAX / 16 + 1] = build_lut();

/// The class serving `size` (`size <= MEDIUM_MAX`). A table load for small
/// sizes, a `lzcnt` and a few shifts above [`LUT_MAX`].
#[inline(always)]
pub fn class_of(size: usize) -> usize {
    debug_assert!(size <= MEDIUM_MAX);
    if size <= LUT_MAX {
        let c = LUT[(size + 15) >> 4] as usize;
        // Tell the compiler what the table guarantees, so callers index
        // per-class arrays without a bounds check.
        if c >= NUM_CLASSES {
            // SAFETY: unreachable: every LUT entry is class_of_slow(..) < NUM_CLASSES
            // (checked at compile time below).
            unsafe { core::hint::unreachable_unchecked() }
        }
        c
    } else {
        class_of_slow(size)
    }
}

/// Stride of class `c`.
#[inline(always)]
pub fn stride(c: usize) -> usize {
    CLASSES[c].stride as usize
}

// Compile-time checks of the table (lesson 7).
const_assert!(stride_of(NUM_CLASSES - 1) == MEDIUM_MAX);
const_assert!(class_of_slow(MEDIUM_MAX) == NUM_CLASSES - 1);
const_assert!(TABLE[0].stride as usize >= core::mem::size_of::<usize>()); // holds a link
const_assert!(TABLE[7].stride == 128 && TABLE[8].stride == 160);
const _: () = {
    let lut = build_lut();
    let mut i = 0;
    while i < lut.len() {
        assert!((lut[i] as usize) < NUM_CLASSES);
        i += 1;
    }
};
const _: () = {
    let mut c = 0;
    while c < NUM_CLASSES {
        let l = TABLE[c];
        assert!(
            l.stride.is_multiple_of(16),
            "every block must be 16-aligned"
        );
        assert!(l.capacity >= 4, "a slab holds at least four blocks");
        assert!(l.capacity as usize * l.stride as usize <= l.kind.slab_size());
        assert!(l.capacity <= u16::MAX as u32);
        if c > 0 {
            assert!(TABLE[c - 1].stride < l.stride, "strides strictly increase");
        }
        c += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_gets_the_smallest_fitting_class() {
        for size in 0..=MEDIUM_MAX {
            let c = class_of(size);
            assert!(stride(c) >= size.max(1), "size {size} class {c}");
            if c > 0 {
                assert!(
                    stride(c - 1) < size,
                    "size {size} could use class {}",
                    c - 1
                );
            }
        }
    }

    #[test]
    fn overhead_above_128_is_at_most_25_percent() {
        for size in 129..=MEDIUM_MAX {
            assert!(stride(class_of(size)) * 4 <= size * 5 + 16);
        }
    }
}
