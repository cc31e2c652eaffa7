//! hakmem's random-mixed benchmark (benchmarks.md).
//!
//! `random_mixed <cycles> <working_set_slots> <seed>`: each step draws `r`;
//! slot `r % slots` is freed if occupied, else filled with
//! `malloc(16 + (r & 0x3FF))` (16 to 1039 bytes). The slot table lives in
//! `bench_meta` memory.

use bench_meta::MetaSlice;
use hakmem_benches::{atoi, free, malloc, print_allocator, print_peak_rss, usage_exit, SplitMix};
use std::time::Instant;

const USAGE: &str = "random_mixed <cycles> <working_set_slots> <seed>";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        usage_exit(USAGE, &format!("expected 3 arguments, got {}", args.len()));
    }
    let cycles = atoi("cycles", &args[0]).unwrap_or_else(|e| usage_exit(USAGE, &e));
    let slots = atoi("working_set_slots", &args[1]).unwrap_or_else(|e| usage_exit(USAGE, &e));
    let seed = atoi("seed", &args[2]).unwrap_or_else(|e| usage_exit(USAGE, &e));
    if cycles < 1 || !(1..=100_000_000).contains(&slots) {
        usage_exit(
            USAGE,
            "cycles must be >= 1 and working_set_slots in 1..=100000000",
        );
    }
    print_allocator();
    let mut table: MetaSlice<*mut u8> = MetaSlice::zeroed(slots as usize);
    let mut rng = SplitMix(seed as u64);
    let t = Instant::now();
    for _ in 0..cycles {
        let r = rng.next_value();
        let i = (r % slots as u64) as usize;
        let p = table[i];
        if p.is_null() {
            let q = malloc(16 + (r & 0x3ff) as usize);
            if q.is_null() {
                eprintln!("random_mixed: malloc returned NULL");
                std::process::abort();
            }
            // SAFETY: at least 16 bytes.
            unsafe { *q = r as u8 };
            table[i] = q;
        } else {
            // SAFETY: a live block from this loop.
            unsafe { free(p) };
            table[i] = std::ptr::null_mut();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "Throughput = {:.0} operations per second, relative time: {secs:.3}s.",
        cycles as f64 / secs
    );
    print_peak_rss();
    for &p in table.iter() {
        // SAFETY: null or live.
        unsafe { free(p) };
    }
}
