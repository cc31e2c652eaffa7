//! Cross-thread producer/consumer: every block is freed by a thread that did
//! not allocate it.
//!
//! `xthread [pairs=1] [blocks_per_producer=2000000] [seed=1]`: each producer
//! allocates blocks of 16..=512 bytes, writes a pattern and hands them through
//! a single-producer/single-consumer ring (in `bench_meta` memory) to its
//! consumer, which checks the pattern and frees them. Reports blocks/s.

use bench_meta::MetaSlice;
use hakmem_benches::{atoi, free, malloc, print_allocator, print_peak_rss, usage_exit, SplitMix};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

const USAGE: &str = "xthread [pairs=1] [blocks_per_producer=2000000] [seed=1]";
const RING: usize = 4096;

struct Ring {
    slots: MetaSlice<AtomicUsize>,
    head: MetaSlice<AtomicUsize>, // [0]: written by the producer
    tail: MetaSlice<AtomicUsize>, // [0]: written by the consumer
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 3 {
        usage_exit(USAGE, "at most 3 arguments");
    }
    let mut v = [1i64, 2_000_000, 1];
    for (i, a) in args.iter().enumerate() {
        v[i] = atoi(["pairs", "blocks_per_producer", "seed"][i], a)
            .unwrap_or_else(|e| usage_exit(USAGE, &e));
    }
    let (pairs, blocks, seed) = (v[0], v[1], v[2]);
    if !(1..=64).contains(&pairs) || blocks < 1 {
        usage_exit(USAGE, "pairs in 1..=64, blocks_per_producer >= 1");
    }
    print_allocator();
    let rings: Vec<Ring> = (0..pairs)
        .map(|_| Ring {
            slots: MetaSlice::zeroed(RING),
            head: MetaSlice::zeroed(16),
            tail: MetaSlice::zeroed(16),
        })
        .collect();
    let t = Instant::now();
    std::thread::scope(|s| {
        for (pi, r) in rings.iter().enumerate() {
            s.spawn(move || {
                let mut rng = SplitMix(seed as u64 ^ ((pi as u64 + 1) << 40));
                for i in 0..blocks as usize {
                    let n = 16 + (rng.next_value() % 497) as usize;
                    let p = malloc(n);
                    if p.is_null() {
                        eprintln!("xthread: malloc returned NULL");
                        std::process::abort();
                    }
                    // SAFETY: n >= 16 bytes.
                    unsafe {
                        *p = n as u8;
                        *p.add(n - 1) = 0xa5;
                        (p.add(8) as *mut u32).write_unaligned(n as u32);
                    }
                    while i - r.tail[0].load(Ordering::Acquire) >= RING {
                        std::thread::yield_now(); // 2 cores: spinning would starve the peer
                    }
                    r.slots[i % RING].store(p as usize, Ordering::Relaxed);
                    r.head[0].store(i + 1, Ordering::Release);
                }
            });
            s.spawn(move || {
                for i in 0..blocks as usize {
                    while r.head[0].load(Ordering::Acquire) <= i {
                        std::thread::yield_now(); // 2 cores: spinning would starve the peer
                    }
                    let p = r.slots[i % RING].load(Ordering::Relaxed) as *mut u8;
                    r.tail[0].store(i + 1, Ordering::Release);
                    // SAFETY: a live block written by the producer as above.
                    unsafe {
                        let n = (p.add(8) as *const u32).read_unaligned() as usize;
                        if *p != n as u8 || *p.add(n - 1) != 0xa5 {
                            eprintln!("xthread: block content corrupted");
                            std::process::abort();
                        }
                        free(p);
                    }
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "Throughput = {:.0} operations per second, relative time: {secs:.3}s.",
        (pairs * blocks) as f64 / secs
    );
    print_peak_rss();
}
