//! Single-thread malloc + free of one small block, in a loop.
//!
//! `st_pair [iterations=50000000] [size=32]`. Reports pairs/s.

use hakmem_benches::{atoi, free, malloc, print_allocator, print_peak_rss, usage_exit};
use std::time::Instant;

const USAGE: &str = "st_pair [iterations=50000000] [size=32]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 2 {
        usage_exit(USAGE, "at most 2 arguments");
    }
    let mut v = [50_000_000i64, 32];
    for (i, a) in args.iter().enumerate() {
        v[i] = atoi(["iterations", "size"][i], a).unwrap_or_else(|e| usage_exit(USAGE, &e));
    }
    if v[0] < 1 || !(1..=1 << 20).contains(&v[1]) {
        usage_exit(USAGE, "iterations >= 1, size in 1..=1048576");
    }
    print_allocator();
    let size = v[1] as usize;
    let t = Instant::now();
    let mut acc = 0usize;
    for _ in 0..v[0] {
        let p = std::hint::black_box(malloc(size));
        // SAFETY: a fresh block of at least one byte.
        unsafe {
            p.write_volatile(1);
            acc = acc.wrapping_add(p as usize & 0xff);
            free(p);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "Throughput = {:.0} operations per second, relative time: {secs:.3}s.",
        v[0] as f64 / secs
    );
    println!("checksum: {}", acc & 0xf);
    print_peak_rss();
}
