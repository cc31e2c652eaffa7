//! hakmem's mid/large multi-threaded benchmark (benchmarks.md).
//!
//! `mid_large_mt [threads=4] [cycles_per_thread=60000] [working_set=256] [seed=1]`:
//! each thread runs the random-mixed loop over its own slot table with block
//! sizes of 8 to 32 KiB. Tables live in `bench_meta` memory.

use bench_meta::MetaSlice;
use hakmem_benches::{atoi, free, malloc, print_allocator, print_peak_rss, usage_exit, SplitMix};
use std::time::Instant;

const USAGE: &str = "mid_large_mt [threads=4] [cycles_per_thread=60000] [working_set=256] [seed=1]";

struct Table(MetaSlice<*mut u8>);
// SAFETY: each table is used by exactly one thread at a time.
unsafe impl Send for Table {}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 4 {
        usage_exit(USAGE, "at most 4 arguments");
    }
    let defaults = [4i64, 60_000, 256, 1];
    let names = ["threads", "cycles_per_thread", "working_set", "seed"];
    let mut v = defaults;
    for (i, a) in args.iter().enumerate() {
        v[i] = atoi(names[i], a).unwrap_or_else(|e| usage_exit(USAGE, &e));
    }
    let (threads, cycles, ws, seed) = (v[0], v[1], v[2], v[3]);
    if !(1..=1024).contains(&threads) || cycles < 1 || !(1..=10_000_000).contains(&ws) {
        usage_exit(
            USAGE,
            "threads in 1..=1024, cycles_per_thread >= 1, working_set in 1..=10000000",
        );
    }
    print_allocator();
    let tables: Vec<Table> = (0..threads)
        .map(|_| Table(MetaSlice::zeroed(ws as usize)))
        .collect();
    let t = Instant::now();
    let tables: Vec<Table> = std::thread::scope(|s| {
        let hs: Vec<_> = tables
            .into_iter()
            .enumerate()
            .map(|(ti, mut tab)| {
                s.spawn(move || {
                    let mut rng = SplitMix((seed as u64) ^ ((ti as u64 + 1) << 32));
                    for _ in 0..cycles {
                        let r = rng.next_value();
                        let i = (r % ws as u64) as usize;
                        let p = tab.0[i];
                        if p.is_null() {
                            let size = 8192 + (r >> 20) as usize % (32 * 1024 - 8192 + 1);
                            let q = malloc(size);
                            if q.is_null() {
                                eprintln!("mid_large_mt: malloc returned NULL");
                                std::process::abort();
                            }
                            // SAFETY: at least 8 KiB.
                            unsafe {
                                *q = 1;
                                *q.add(size - 1) = 2;
                            }
                            tab.0[i] = q;
                        } else {
                            // SAFETY: a live block from this thread.
                            unsafe { free(p) };
                            tab.0[i] = std::ptr::null_mut();
                        }
                    }
                    tab
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker")).collect()
    });
    let secs = t.elapsed().as_secs_f64();
    println!(
        "Throughput = {:.0} operations per second, relative time: {secs:.3}s.",
        (threads * cycles) as f64 / secs
    );
    print_peak_rss();
    for tab in tables {
        for &p in tab.0.iter() {
            // SAFETY: null or live.
            unsafe { free(p) };
        }
    }
}
