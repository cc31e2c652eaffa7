//! Fuzz target: random allocation programs against a shadow model.
//!
//! The input is read as a program of operations (alloc / zeroed alloc /
//! realloc / free, sizes from 0 to 300 000 bytes and alignments from 1 to
//! 64 KiB) run through `hakmem::Hakmem`. Every live block is filled with its
//! own byte; each step checks alignment, usable size, that no two live blocks
//! overlap, that contents survive until free and across realloc, and that
//! zeroed memory is zero. Any violation panics (a finding).
//!
//! Run: `cargo +nightly fuzz run alloc_sequences -- -max_total_time=600`
#![no_main]

use hakmem::Hakmem;
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

struct Live {
    layout: Layout,
    fill: u8,
}

fn take(data: &mut &[u8], n: usize) -> u64 {
    let mut v = 0u64;
    for _ in 0..n {
        let Some((&b, rest)) = data.split_first() else {
            return v;
        };
        v = v << 8 | b as u64;
        *data = rest;
    }
    v
}

fn size_of_code(c: u64) -> usize {
    // Mostly small, with every class boundary and large blocks reachable.
    match c % 8 {
        0..=3 => (c >> 3) as usize % 1100,
        4..=5 => (c >> 3) as usize % 20_000,
        6 => [16, 128, 129, 1024, 1025, 8192, 8193, 131_072, 131_073][(c >> 3) as usize % 9],
        _ => (c >> 3) as usize % 300_000,
    }
}

fn check_fill(p: *mut u8, n: usize, fill: u8) {
    // SAFETY: p is a live block of at least n bytes.
    let s = unsafe { std::slice::from_raw_parts(p, n) };
    assert!(
        s.iter().all(|&b| b == fill),
        "block {p:p} lost its contents"
    );
}

fuzz_target!(|input: &[u8]| {
    let a = Hakmem;
    let mut data = input;
    let mut live: BTreeMap<usize, Live> = BTreeMap::new();
    let mut slots: Vec<usize> = Vec::new();
    let mut steps = 0;
    while !data.is_empty() && steps < 2000 {
        steps += 1;
        let op = take(&mut data, 1);
        let arg = take(&mut data, 3);
        match op % 4 {
            0 | 1 => {
                let size = size_of_code(arg).max(1);
                let align = 1usize << ((arg >> 20) % 17); // 1 .. 64 KiB
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                let zeroed = op % 4 == 1;
                // SAFETY: non-zero size.
                let p = unsafe {
                    if zeroed {
                        a.alloc_zeroed(layout)
                    } else {
                        a.alloc(layout)
                    }
                };
                assert!(!p.is_null(), "allocation of {size} failed");
                assert_eq!(p as usize % align, 0, "misaligned");
                // SAFETY: p is live.
                assert!(unsafe { hakmem::usable_size(p) } >= size);
                if zeroed {
                    check_fill(p, size, 0);
                }
                let start = p as usize;
                if let Some((&s, l)) = live.range(..start + size).next_back() {
                    assert!(s + l.layout.size() <= start, "overlap with a live block");
                }
                let fill = (steps % 251) as u8 + 1;
                // SAFETY: p is live with size bytes.
                unsafe { std::ptr::write_bytes(p, fill, size) };
                live.insert(start, Live { layout, fill });
                slots.push(start);
            }
            2 if !slots.is_empty() => {
                let i = (arg as usize) % slots.len();
                let start = slots.swap_remove(i);
                let l = live.remove(&start).unwrap();
                check_fill(start as *mut u8, l.layout.size(), l.fill);
                // SAFETY: live block with its layout.
                unsafe { a.dealloc(start as *mut u8, l.layout) };
            }
            3 if !slots.is_empty() => {
                let i = (arg as usize) % slots.len();
                let start = slots[i];
                let l = live.remove(&start).unwrap();
                let new = size_of_code(arg >> 4).max(1);
                // SAFETY: live block with its layout; new > 0.
                let q = unsafe { a.realloc(start as *mut u8, l.layout, new) };
                assert!(!q.is_null(), "realloc to {new} failed");
                assert_eq!(q as usize % l.layout.align(), 0, "realloc lost alignment");
                check_fill(q, l.layout.size().min(new), l.fill);
                // SAFETY: q is live with new bytes.
                unsafe { std::ptr::write_bytes(q, l.fill, new) };
                let layout = Layout::from_size_align(new, l.layout.align()).unwrap();
                if let Some((&s, o)) = live.range(..q as usize + new).next_back() {
                    assert!(
                        s + o.layout.size() <= q as usize,
                        "realloc overlaps a live block"
                    );
                }
                live.insert(
                    q as usize,
                    Live {
                        layout,
                        fill: l.fill,
                    },
                );
                slots[i] = q as usize;
            }
            _ => {}
        }
    }
    for (start, l) in live {
        check_fill(start as *mut u8, l.layout.size(), l.fill);
        // SAFETY: live block with its layout.
        unsafe { a.dealloc(start as *mut u8, l.layout) };
    }
});
