//! hakmem as Rust's `#[global_allocator]`: collections, every size and
//! alignment through `std::alloc`, cross-thread frees, blocks that outlive
//! their thread, thread churn, and large blocks going back to the OS.
//!
//! Tests that read process-wide counters (`pool_stats`, `live_heaps`) take
//! [`GATE`] exclusively; every other test takes it shared, so the counters
//! are not disturbed by a test running in parallel.

use std::alloc::{alloc, alloc_zeroed, dealloc, realloc, Layout};
use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::Duration;

#[global_allocator]
static A: hakmem::Hakmem = hakmem::Hakmem;

static GATE: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    GATE.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// helpers

/// Period of the fill pattern (prime, so shifted copies differ).
const PERIOD: usize = 251;

/// `len + PERIOD` bytes of a non-uniform pattern; `pat(seed, n)` is a window.
fn pattern(len: usize) -> Vec<u8> {
    (0..len + PERIOD)
        .map(|i| (i % PERIOD) as u8 ^ 0x5a)
        .collect()
}

fn window(pat: &[u8], seed: usize, n: usize) -> &[u8] {
    &pat[seed % PERIOD..seed % PERIOD + n]
}

/// Compares `n` bytes at `p` with `want`; memcmp-speed even in debug builds.
///
/// # Safety
/// `p` is valid for `want.len()` reads.
unsafe fn same(p: *const u8, want: &[u8]) -> bool {
    // SAFETY: per the contract.
    let got = unsafe { std::slice::from_raw_parts(p, want.len()) };
    got == want
}

/// True if `n` bytes at `p` are all zero.
///
/// # Safety
/// `p` is valid for `n` reads.
unsafe fn all_zero(p: *const u8, n: usize) -> bool {
    static ZERO: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut off = 0;
    while off < n {
        let k = (n - off).min(ZERO.len());
        // SAFETY: off + k <= n.
        if !unsafe { same(p.add(off), &ZERO[..k]) } {
            return false;
        }
        off += k;
    }
    true
}

/// Checks what every block handed out must satisfy.
///
/// # Safety
/// `p` is a live block of layout `l` from the global allocator.
unsafe fn check_block(p: *mut u8, l: Layout, what: &str) {
    assert!(!p.is_null(), "{what}: null for {l:?}");
    assert_eq!(
        p as usize % l.align(),
        0,
        "{what}: {p:p} misaligned for {l:?}"
    );
    assert_eq!(p as usize % 16, 0, "{what}: {p:p} not 16-aligned for {l:?}");
    assert!(hakmem::owns(p), "{what}: hakmem does not own {p:p} ({l:?})");
    // SAFETY: live block.
    let u = unsafe { hakmem::usable_size(p) };
    assert!(
        u >= l.size(),
        "{what}: usable_size {u} < {} ({l:?})",
        l.size()
    );
}

/// alloc / alloc_zeroed / realloc up and down / dealloc for one layout.
///
/// # Safety
/// `l.size() > 0`; `pat` holds at least `max(size, grow) + PERIOD` bytes.
unsafe fn exercise(l: Layout, grow: usize, pat: &[u8]) {
    let n = l.size();
    let seed = n.wrapping_mul(31) ^ l.align();

    // SAFETY: n > 0.
    let z = unsafe { alloc_zeroed(l) };
    // SAFETY: z is live with layout l (or null, which check_block rejects).
    unsafe { check_block(z, l, "alloc_zeroed") };
    // SAFETY: live block of n bytes.
    assert!(unsafe { all_zero(z, n) }, "alloc_zeroed: {l:?} not zeroed");
    // Dirty it so the next allocation of this class may see garbage.
    // SAFETY: live block of n bytes.
    unsafe { std::ptr::write_bytes(z, 0xa5, n) };
    // SAFETY: allocated above with l.
    unsafe { dealloc(z, l) };

    // SAFETY: n > 0.
    let p = unsafe { alloc(l) };
    // SAFETY: as above.
    unsafe { check_block(p, l, "alloc") };
    let w = window(pat, seed, n);
    // SAFETY: live block of n bytes; w has n bytes.
    unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), p, n) };

    // Grow: the whole old content survives, alignment is kept.
    // SAFETY: p is live with layout l; grow > 0.
    let q = unsafe { realloc(p, l, grow) };
    let lg = Layout::from_size_align(grow, l.align()).unwrap();
    // SAFETY: q is live with layout lg (or null).
    unsafe { check_block(q, lg, "realloc grow") };
    let keep = n.min(grow);
    assert!(
        // SAFETY: q has at least `keep` bytes.
        unsafe { same(q, &w[..keep]) },
        "realloc {l:?} -> {grow} lost contents"
    );
    let w2 = window(pat, seed + 7, grow);
    // SAFETY: q has `grow` bytes.
    unsafe { std::ptr::copy_nonoverlapping(w2.as_ptr(), q, grow) };

    // Shrink to a quarter (crosses class boundaries and out of large).
    let small = (grow / 4).max(1);
    // SAFETY: q is live with layout lg.
    let r = unsafe { realloc(q, lg, small) };
    let ls = Layout::from_size_align(small, l.align()).unwrap();
    // SAFETY: r is live with layout ls (or null).
    unsafe { check_block(r, ls, "realloc shrink") };
    assert!(
        // SAFETY: r has `small` bytes.
        unsafe { same(r, &w2[..small]) },
        "realloc {lg:?} -> {small} lost contents"
    );
    // SAFETY: live with layout ls.
    unsafe { dealloc(r, ls) };
}

const ALIGNS: [usize; 21] = {
    let mut a = [0; 21];
    let mut i = 0;
    while i < 21 {
        a[i] = 1 << i;
        i += 1;
    }
    a
};

// ---------------------------------------------------------------------------
// collections

#[test]
fn collections_churn() {
    let _g = shared();
    let mut v: Vec<u64> = Vec::new();
    let mut s = String::new();
    let mut h: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut b: BTreeMap<u32, String> = BTreeMap::new();
    for round in 0..4u32 {
        for i in 0..20_000u32 {
            v.push(u64::from(i) * 3 + u64::from(round));
            if i % 7 == 0 {
                s.push_str(&i.to_string());
            }
            let len = (i as usize * 13) % 600;
            h.insert(i, vec![(i % 251) as u8; len]);
            if i % 3 == 0 {
                b.insert(i, format!("v{i}-{round}"));
            }
            if i % 5 == 0 {
                h.remove(&(i / 2));
                b.remove(&(i / 3));
            }
        }
        for (i, x) in v.iter().enumerate() {
            let r = (i / 20_000) as u64;
            assert_eq!(*x, (i % 20_000) as u64 * 3 + r);
        }
        for (k, val) in &h {
            assert_eq!(val.len(), (*k as usize * 13) % 600);
            assert!(val.iter().all(|&c| c == (k % 251) as u8), "map value {k}");
        }
        for (k, val) in &b {
            assert!(val.starts_with(&format!("v{k}-")), "btree value {k}: {val}");
        }
        let expect: String = (0..20_000u32)
            .filter(|i| i % 7 == 0)
            .map(|i| i.to_string())
            .collect::<String>()
            .repeat(round as usize + 1);
        assert_eq!(s, expect);
        h.retain(|k, _| k % 2 == 0);
        b.retain(|k, _| k % 4 == 0);
        v.shrink_to(v.len());
    }
    drop((v, s, h, b));
    // Many small strings and vectors, freed in a shuffled order.
    let mut boxes: Vec<(usize, Box<[u8]>)> = (0..30_000usize)
        .map(|i| (i, vec![(i % 256) as u8; i % 300].into_boxed_slice()))
        .collect();
    let mut i = 0;
    while !boxes.is_empty() {
        i = (i + 7919) % boxes.len();
        let (k, x) = boxes.swap_remove(i);
        assert_eq!(x.len(), k % 300);
        assert!(x.iter().all(|&c| usize::from(c) == k % 256), "box {k}");
    }
}

// ---------------------------------------------------------------------------
// every size, every alignment

#[test]
fn every_size_small_and_medium() {
    let _g = shared();
    let pat = pattern(4 * 70_001 + 16);
    let mut i = 0usize;
    let mut size = 1usize;
    while size <= 70_000 {
        // Alignment 16 (the common case) for every size, and a rotating
        // alignment from 1 to 1 MiB.
        let rot = ALIGNS[i % ALIGNS.len()];
        for align in [16, rot] {
            let l = Layout::from_size_align(size, align).unwrap();
            let grow = size * 4 + (i % 5);
            // SAFETY: size > 0, pat long enough.
            unsafe { exercise(l, grow, &pat) };
        }
        i += 1;
        size += 7;
    }
}

#[test]
fn sampled_sizes_all_alignments() {
    let _g = shared();
    const SIZES: [usize; 20] = [
        1,
        15,
        16,
        17,
        128,
        129,
        1024,
        1025,
        8192,
        8193,
        131_071,
        131_072,
        131_073,
        200_000,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 1,
        4 * (1 << 20) + 3,
        16 << 20,
        64 << 20,
    ];
    let pat = pattern((64 << 20) + 64);
    for &size in &SIZES {
        for (k, &align) in ALIGNS.iter().enumerate() {
            // The 64 MiB size takes a few alignments only (time).
            if size == 64 << 20 && k % 5 != 0 {
                continue;
            }
            let l = Layout::from_size_align(size, align).unwrap();
            // Grow within 64 MiB: by half, or x3 for small sizes.
            let grow = if size >= 16 << 20 {
                size + size / 8
            } else {
                size * 3 + 1
            };
            // SAFETY: size > 0, pat long enough.
            unsafe { exercise(l, grow.min(64 << 20).max(size), &pat) };
        }
    }
}

#[test]
fn realloc_across_classes_keeps_alignment() {
    let _g = shared();
    let pat = pattern(1 << 21);
    for &align in &ALIGNS {
        let mut l = Layout::from_size_align(1, align).unwrap();
        // SAFETY: size 1 > 0.
        let mut p = unsafe { alloc(l) };
        // SAFETY: live.
        unsafe { check_block(p, l, "alloc") };
        // SAFETY: 1 byte.
        unsafe { *p = pat[0] };
        // Walk up through every class boundary into large and back down.
        let mut sizes: Vec<usize> = (0..=21).map(|s| (1usize << s) + 1).collect();
        let down: Vec<usize> = sizes.iter().rev().map(|s| s - 2).collect();
        sizes.extend(down);
        let mut filled = 1;
        for &n in &sizes {
            let n = n.max(1);
            // SAFETY: p live with layout l; n > 0.
            let q = unsafe { realloc(p, l, n) };
            let nl = Layout::from_size_align(n, align).unwrap();
            // SAFETY: q live with layout nl.
            unsafe { check_block(q, nl, "realloc walk") };
            let keep = filled.min(n);
            assert!(
                // SAFETY: q has >= keep bytes.
                unsafe { same(q, &pat[..keep]) },
                "realloc walk align {align} -> {n}: contents lost"
            );
            // SAFETY: q has n bytes; pat has >= n bytes.
            unsafe { std::ptr::copy_nonoverlapping(pat.as_ptr(), q, n) };
            filled = n;
            p = q;
            l = nl;
        }
        // SAFETY: live with layout l.
        unsafe { dealloc(p, l) };
    }
}

// ---------------------------------------------------------------------------
// threads

fn make_buf(tag: usize, seq: usize) -> Vec<u8> {
    let len = make_buf_len(tag, seq);
    let b = ((tag * 31 + seq) % 251) as u8;
    let mut v = vec![b; len];
    v[0] = b ^ 0xff;
    v
}

fn check_buf(tag: usize, seq: usize, v: &[u8]) {
    let want = make_buf_len(tag, seq);
    assert_eq!(v.len(), want, "buffer {tag}/{seq}: length");
    let b = ((tag * 31 + seq) % 251) as u8;
    assert_eq!(v[0], b ^ 0xff, "buffer {tag}/{seq}: first byte");
    // Uniform tail, checked at memcmp speed: v[1] == b and v[i] == v[i + 1].
    assert!(
        v.len() < 2 || (v[1] == b && v[1..v.len() - 1] == v[2..]),
        "buffer {tag}/{seq}: corrupted"
    );
    assert!(hakmem::owns(v.as_ptr()));
}

fn make_buf_len(tag: usize, seq: usize) -> usize {
    match seq % 16 {
        0 => 20_000 + seq % 9_000,
        1 => 150_000 + seq % 7,
        _ => 1 + (seq * 37 + tag) % 1_500,
    }
}

#[test]
fn cross_thread_frees_through_channels() {
    let _g = shared();
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 3;
    const PER_PRODUCER: usize = 6_000;
    let mut senders = Vec::new();
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        let (tx, rx) = mpsc::channel::<(usize, usize, Box<[u8]>)>();
        senders.push(tx);
        consumers.push(thread::spawn(move || {
            let mut n = 0usize;
            for (tag, seq, buf) in rx {
                check_buf(tag, seq, &buf);
                drop(buf); // remote free
                n += 1;
            }
            n
        }));
    }
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|tag| {
            let senders = senders.clone();
            thread::spawn(move || {
                let mut kept = Vec::new();
                for seq in 0..PER_PRODUCER {
                    let buf = make_buf(tag, seq).into_boxed_slice();
                    if seq % 10 == 9 {
                        kept.push((seq, buf)); // freed locally, later
                    } else {
                        senders[(seq + tag) % CONSUMERS]
                            .send((tag, seq, buf))
                            .unwrap();
                    }
                    if kept.len() > 50 {
                        for (s, b) in kept.drain(..) {
                            check_buf(tag, s, &b);
                        }
                    }
                }
                for (s, b) in kept {
                    check_buf(tag, s, &b);
                }
            })
        })
        .collect();
    drop(senders);
    for p in producers {
        p.join().unwrap();
    }
    let total: usize = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(
        total,
        PRODUCERS * PER_PRODUCER - PRODUCERS * (PER_PRODUCER / 10)
    );
}

type Blocks = Vec<(usize, usize, Box<[u8]>)>;

fn alloc_blocks(tag: usize, n: usize) -> Blocks {
    (0..n)
        .map(|seq| (tag, seq, make_buf(tag, seq).into_boxed_slice()))
        .collect()
}

#[test]
fn blocks_outlive_their_thread() {
    let _g = shared();
    // Freed by the main thread after the allocating threads have exited.
    let handles: Vec<_> = (0..6)
        .map(|tag| thread::spawn(move || alloc_blocks(tag, 3_000)))
        .collect();
    let mut all: Vec<Blocks> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    thread::sleep(Duration::from_millis(20));
    // Main allocates in between (may reuse orphaned slabs' free space).
    let mine = alloc_blocks(100, 3_000);
    for (t, s, b) in all.pop().unwrap().into_iter().chain(mine) {
        check_buf(t, s, &b);
    }
    // Free the others in an interleaved order.
    for i in 0..3_000 {
        for set in all.iter_mut() {
            if let Some((t, s, b)) = set.get(i) {
                check_buf(*t, *s, b);
            }
        }
    }
    for set in &mut all {
        set.reverse();
    }
    let third_party: Vec<Blocks> = all.split_off(2);
    drop(all);

    // Freed by a third thread, spawned long after the allocating ones exited.
    thread::sleep(Duration::from_millis(50));
    let later = thread::spawn(move || {
        for set in third_party {
            for (t, s, b) in set {
                check_buf(t, s, &b);
            }
        }
        // The third thread also allocates from what it just freed.
        alloc_blocks(200, 2_000)
    })
    .join()
    .unwrap();
    for (t, s, b) in later {
        check_buf(t, s, &b);
    }

    // A chain: A allocates, exits; B frees half and exits; C frees the rest.
    let set = thread::spawn(|| alloc_blocks(300, 4_000)).join().unwrap();
    let rest = thread::spawn(move || {
        let mut set = set;
        let rest = set.split_off(2_000);
        for (t, s, b) in set {
            check_buf(t, s, &b);
        }
        rest
    })
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(10));
    thread::spawn(move || {
        for (t, s, b) in rest {
            check_buf(t, s, &b);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn thread_churn_is_bounded() {
    let _g = exclusive();
    const THREADS: usize = 20_000;
    const WAVE: usize = 8;
    const WAVES: usize = THREADS / WAVE;
    let heaps_before = hakmem::live_heaps();
    let mut handed: Vec<(usize, usize, Box<[u8]>)> = Vec::new();
    let mut segs_at_100 = 0;
    let mut max_heaps = 0;
    for wave in 0..WAVES {
        let hs: Vec<_> = (0..WAVE)
            .map(|k| {
                let tag = wave * WAVE + k;
                thread::spawn(move || {
                    let mut local: Vec<Box<[u8]>> = Vec::with_capacity(64);
                    let mut out = Vec::new();
                    for i in 0..200usize {
                        let len = if i % 50 == 49 {
                            9_000 + (tag + i) % 20_000
                        } else {
                            1 + (tag * 7 + i * 13) % 700
                        };
                        let b = vec![(i % 251) as u8; len].into_boxed_slice();
                        if i % 3 == 0 {
                            local.push(b);
                        }
                        if local.len() == 64 {
                            local.clear();
                        }
                    }
                    for s in 0..3 {
                        out.push((tag, s, make_buf(tag, s).into_boxed_slice()));
                    }
                    out
                })
            })
            .collect();
        let mut got = Vec::new();
        for h in hs {
            got.extend(h.join().unwrap());
        }
        let live = hakmem::live_heaps();
        max_heaps = max_heaps.max(live);
        assert!(
            live < 64,
            "wave {wave}: {live} live heaps (before: {heaps_before})"
        );
        // Free the previous wave's hand-overs (their threads are gone) and
        // keep this wave's until the next one.
        for (t, s, b) in handed.drain(..) {
            check_buf(t, s, &b);
        }
        handed = got;
        if wave == 100 {
            segs_at_100 = hakmem::pool_stats().segments;
        }
    }
    for (t, s, b) in handed.drain(..) {
        check_buf(t, s, &b);
    }
    let segs_end = hakmem::pool_stats().segments;
    assert!(
        segs_end <= segs_at_100 * 2 + 8,
        "segments grew with thread count: {segs_at_100} after wave 100, \
         {segs_end} after wave {WAVES}"
    );
    eprintln!("thread churn: live heaps max {max_heaps}, segments {segs_at_100} -> {segs_end}");
}

#[test]
fn large_blocks_return_to_the_os() {
    let _g = exclusive();
    const N: usize = 8;
    const SIZE: usize = 16 << 20;
    let before = hakmem::pool_stats();
    let blocks: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let mut v = Vec::<u8>::with_capacity(SIZE);
            v.resize(SIZE, i as u8 + 1);
            v
        })
        .collect();
    let during = hakmem::pool_stats();
    assert!(
        during.large_bytes >= before.large_bytes + N * SIZE,
        "large_bytes {} -> {}: expected growth >= {}",
        before.large_bytes,
        during.large_bytes,
        N * SIZE
    );
    assert!(during.large_regions >= before.large_regions + N);
    for (i, v) in blocks.iter().enumerate() {
        assert!(hakmem::owns(v.as_ptr()));
        assert_eq!(v[SIZE / 2], i as u8 + 1);
        assert_eq!(v[SIZE - 1], i as u8 + 1);
    }
    drop(blocks);
    let after = hakmem::pool_stats();
    assert_eq!(
        after.large_bytes, before.large_bytes,
        "large bytes not returned: {} before, {} during, {} after",
        before.large_bytes, during.large_bytes, after.large_bytes
    );
    assert_eq!(after.large_regions, before.large_regions);
}
