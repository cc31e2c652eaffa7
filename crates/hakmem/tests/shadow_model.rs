//! Random sequences of malloc / calloc / realloc / free / aligned allocation
//! checked against a shadow model of the live blocks: every block is
//! non-null, aligned, at least as large as requested, disjoint from every
//! other live block, and keeps its contents (each block is filled with its
//! own byte). Once through the C symbols (hakmem's in this binary), once
//! through `hakmem::Hakmem` as a `GlobalAlloc`.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::ptr;

#[derive(Clone, Debug)]
enum Op {
    Malloc(usize),
    /// `calloc(n, size / max(n, 1))`.
    Calloc(usize, usize),
    Realloc(Index, usize),
    Free(Index),
    /// `posix_memalign(1 << shift, size)`.
    Aligned(u32, usize),
}

const BOUNDARIES: [usize; 19] = [
    0, 1, 15, 16, 17, 127, 128, 129, 1023, 1024, 1025, 8191, 8192, 8193, 65_536, 131_071, 131_072,
    131_073, 300_000,
];

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        8 => 0usize..=256,
        4 => 0usize..=8_200,
        3 => proptest::sample::select(&BOUNDARIES[..]),
        1 => 0usize..=300_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => size().prop_map(Op::Malloc),
        2 => (0usize..=16, size()).prop_map(|(n, s)| Op::Calloc(n, s)),
        3 => (any::<Index>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
        5 => any::<Index>().prop_map(Op::Free),
        2 => (4u32..=16, size()).prop_map(|(a, s)| Op::Aligned(a, s)),
    ]
}

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// the model

struct Block {
    p: *mut u8,
    size: usize,
    /// Alignment the block must have (16 unless allocated aligned).
    align: usize,
    fill: u8,
}

#[derive(Default)]
struct Model {
    live: Vec<Block>,
    /// start -> end (exclusive) of each live block's usable extent.
    ranges: BTreeMap<usize, usize>,
    next_fill: u8,
}

/// True if `n` bytes at `p` all equal `b` (memcmp speed in debug builds).
///
/// # Safety
/// `p` is valid for `n` reads.
unsafe fn uniform(p: *const u8, n: usize, b: u8) -> bool {
    if n == 0 {
        return true;
    }
    // SAFETY: per the contract.
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    s[0] == b && s[..n - 1] == s[1..]
}

impl Model {
    fn fill_byte(&mut self) -> u8 {
        self.next_fill = self.next_fill.wrapping_add(37) | 1; // never 0
        self.next_fill
    }

    /// Checks a fresh block and adds it, filled with a new byte.
    fn add(&mut self, p: *mut u8, size: usize, align: usize, zeroed: bool, what: &str) {
        assert!(!p.is_null(), "{what}({size}): NULL");
        assert_eq!(
            p as usize % align,
            0,
            "{what}({size}): {p:p} not {align}-aligned"
        );
        assert_eq!(p as usize % 16, 0, "{what}({size}): {p:p} not 16-aligned");
        assert!(hakmem::owns(p), "{what}({size}): hakmem does not own {p:p}");
        // SAFETY: a live block.
        let usable = unsafe { hakmem::usable_size(p) };
        assert!(usable >= size, "{what}({size}): usable size {usable}");
        let (start, end) = (p as usize, p as usize + usable.max(1));
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            assert!(
                e <= start,
                "{what}({size}): [{start:#x}, {end:#x}) overlaps [{s:#x}, {e:#x})"
            );
        }
        if let Some((&s, &e)) = self.ranges.range(start..).next() {
            assert!(
                end <= s,
                "{what}({size}): [{start:#x}, {end:#x}) overlaps [{s:#x}, {e:#x})"
            );
        }
        if zeroed {
            // SAFETY: `size` bytes of a live block.
            assert!(unsafe { uniform(p, size, 0) }, "{what}({size}): not zeroed");
        }
        self.ranges.insert(start, end);
        let fill = self.fill_byte();
        // SAFETY: `size` bytes of a live block.
        unsafe { ptr::write_bytes(p, fill, size) };
        self.live.push(Block {
            p,
            size,
            align,
            fill,
        });
    }

    /// Removes block `i` after checking its contents; returns it.
    fn take(&mut self, i: usize, what: &str) -> Block {
        let b = self.live.swap_remove(i);
        assert!(
            // SAFETY: a live block of b.size bytes.
            unsafe { uniform(b.p, b.size, b.fill) },
            "{what}: block {:p} ({} bytes, fill {:#x}) corrupted",
            b.p,
            b.size,
            b.fill
        );
        self.ranges.remove(&(b.p as usize));
        b
    }

    /// After a realloc of `old` to `q` with `size` bytes: checks the kept
    /// prefix and re-adds the block.
    fn readd(&mut self, old: &Block, q: *mut u8, size: usize, align: usize, what: &str) {
        let keep = old.size.min(size);
        assert!(!q.is_null(), "{what}({} -> {size}): NULL", old.size);
        assert!(
            // SAFETY: q is live and holds at least `keep` bytes.
            unsafe { uniform(q, keep, old.fill) },
            "{what}({} -> {size}): contents lost (fill {:#x})",
            old.size,
            old.fill
        );
        self.add(q, size, align, false, what);
    }
}

// ---------------------------------------------------------------------------
// through the C symbols

fn run_c(ops: &[Op]) {
    let mut m = Model::default();
    for op in ops {
        match *op {
            Op::Malloc(n) => {
                // SAFETY: any size.
                let p = unsafe { libc::malloc(n) }.cast::<u8>();
                m.add(p, n, 16, false, "malloc");
            }
            Op::Calloc(n, s) => {
                let s = s / n.max(1);
                // SAFETY: any sizes.
                let p = unsafe { libc::calloc(n, s) }.cast::<u8>();
                m.add(p, n * s, 16, true, "calloc");
            }
            Op::Aligned(shift, n) => {
                let a = 1usize << shift;
                let mut p: *mut libc::c_void = ptr::null_mut();
                // SAFETY: `p` is a valid slot.
                let r = unsafe { libc::posix_memalign(&mut p, a, n) };
                assert_eq!(r, 0, "posix_memalign({a}, {n})");
                m.add(p.cast(), n, a, false, "posix_memalign");
            }
            Op::Free(i) => {
                if m.live.is_empty() {
                    continue;
                }
                let b = m.take(i.index(m.live.len()), "free");
                // SAFETY: live block, now removed from the model.
                unsafe { libc::free(b.p.cast()) };
            }
            Op::Realloc(i, n) => {
                if m.live.is_empty() {
                    continue;
                }
                let b = m.take(i.index(m.live.len()), "realloc");
                // SAFETY: live block, removed from the model.
                let q = unsafe { libc::realloc(b.p.cast(), n) }.cast::<u8>();
                if n == 0 {
                    assert!(q.is_null(), "realloc(p, 0) returned {q:p}");
                    continue;
                }
                // C's realloc guarantees only 16-byte alignment.
                m.readd(&b, q, n, 16, "realloc");
            }
        }
    }
    for i in (0..m.live.len()).rev() {
        let b = m.take(i, "final free");
        // SAFETY: live block.
        unsafe { libc::free(b.p.cast()) };
    }
    assert!(m.ranges.is_empty());
}

// ---------------------------------------------------------------------------
// through GlobalAlloc

static H: hakmem::Hakmem = hakmem::Hakmem;

fn run_global(ops: &[Op]) {
    let mut m = Model::default();
    // The model's `size` is the layout size (GlobalAlloc sizes are > 0).
    for op in ops {
        match *op {
            Op::Malloc(n) => {
                let l = Layout::from_size_align(n.max(1), 16).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { H.alloc(l) };
                m.add(p, l.size(), 16, false, "alloc");
            }
            Op::Calloc(n, s) => {
                let l = Layout::from_size_align((s / n.max(1) * n).max(1), 8).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { H.alloc_zeroed(l) };
                m.add(p, l.size(), 16, true, "alloc_zeroed");
            }
            Op::Aligned(shift, n) => {
                let l = Layout::from_size_align(n.max(1), 1 << shift).unwrap();
                // SAFETY: non-zero size.
                let p = unsafe { H.alloc(l) };
                m.add(p, l.size(), l.align(), false, "alloc aligned");
                // Half the time, zeroed with a large alignment.
                if n % 2 == 0 {
                    // SAFETY: non-zero size.
                    let z = unsafe { H.alloc_zeroed(l) };
                    m.add(z, l.size(), l.align(), true, "alloc_zeroed aligned");
                }
            }
            Op::Free(i) => {
                if m.live.is_empty() {
                    continue;
                }
                let b = m.take(i.index(m.live.len()), "dealloc");
                let l = Layout::from_size_align(b.size, b.align).unwrap();
                // SAFETY: live block of layout l.
                unsafe { H.dealloc(b.p, l) };
            }
            Op::Realloc(i, n) => {
                if m.live.is_empty() {
                    continue;
                }
                let b = m.take(i.index(m.live.len()), "realloc");
                let l = Layout::from_size_align(b.size, b.align).unwrap();
                let n = n.max(1);
                // SAFETY: live block of layout l; n > 0.
                let q = unsafe { H.realloc(b.p, l, n) };
                // GlobalAlloc's realloc keeps the layout's alignment.
                m.readd(&b, q, n, b.align, "GlobalAlloc::realloc");
            }
        }
    }
    for i in (0..m.live.len()).rev() {
        let b = m.take(i, "final dealloc");
        let l = Layout::from_size_align(b.size, b.align).unwrap();
        // SAFETY: live block of layout l.
        unsafe { H.dealloc(b.p, l) };
    }
    assert!(m.ranges.is_empty());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn c_symbols_match_the_shadow_model(ops in prop::collection::vec(op(), 0..300)) {
        run_c(&ops);
    }

    #[test]
    fn global_alloc_matches_the_shadow_model(ops in prop::collection::vec(op(), 0..300)) {
        run_global(&ops);
    }
}

#[test]
fn symbols_are_hakmem() {
    // SAFETY: any size.
    let p = unsafe { libc::malloc(8) };
    assert!(hakmem::owns(p.cast()), "libc::malloc is not hakmem's");
    // SAFETY: live block.
    unsafe { libc::free(p) };
}
