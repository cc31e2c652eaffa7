//! Memory given back after a peak: issue 4's "1 GiB of small objects freed"
//! row.
//!
//! `rss_return [mib=1024] [size=256]`: allocates `mib` MiB of `size`-byte
//! blocks (writing into each, so every page is resident), frees them all, then
//! reads the process's resident memory right after the frees and again one
//! second later. The program calls nothing else (no `malloc_trim`): what comes
//! back is what the allocator returns by itself. The pointer table lives in
//! `bench_meta` memory and is subtracted, as is what was resident before the
//! first allocation, so the figures are the heap's own.
//!
//! Prints `heap_peak_kib`, `after_free_kib`, `after_1s_kib` and
//! `returned_pct` (the share of the peak no longer resident after one second;
//! higher is better).

use bench_meta::{rss_kib, MetaSlice};
use hakmem_benches::{atoi, free, malloc, print_allocator, print_peak_rss, usage_exit};
use std::time::Duration;

const USAGE: &str = "rss_return [mib=1024] [size=256]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 2 {
        usage_exit(USAGE, "at most 2 arguments");
    }
    let mut v = [1024i64, 256];
    for (i, a) in args.iter().enumerate() {
        v[i] = atoi(["mib", "size"][i], a).unwrap_or_else(|e| usage_exit(USAGE, &e));
    }
    if !(1..=65_536).contains(&v[0]) || !(16..=1 << 20).contains(&v[1]) {
        usage_exit(USAGE, "mib in 1..=65536, size in 16..=1048576");
    }
    print_allocator();
    let size = v[1] as usize;
    let n = ((v[0] as usize) << 20) / size;
    let mut table: MetaSlice<*mut u8> = MetaSlice::zeroed(n);
    // Make the whole table resident first, so it is part of the baseline.
    for p in table.iter_mut() {
        *p = std::ptr::null_mut();
    }
    let base = rss_kib();
    for (i, slot) in table.iter_mut().enumerate() {
        let p = malloc(size);
        if p.is_null() {
            eprintln!("rss_return: malloc({size}) returned NULL after {i} blocks");
            std::process::abort();
        }
        // SAFETY: a fresh block of `size` bytes.
        unsafe { p.write_bytes(i as u8, size) };
        *slot = p;
    }
    let peak = rss_kib().saturating_sub(base);
    for p in table.iter() {
        // SAFETY: each a live block from the loop above, freed once.
        unsafe { free(*p) };
    }
    let after_free = rss_kib().saturating_sub(base);
    std::thread::sleep(Duration::from_secs(1));
    let after_1s = rss_kib().saturating_sub(base);
    println!("heap_peak_kib: {peak}");
    println!("after_free_kib: {after_free}");
    println!("after_1s_kib: {after_1s}");
    let returned = if peak == 0 {
        0.0
    } else {
        100.0 * peak.saturating_sub(after_1s) as f64 / peak as f64
    };
    println!("returned_pct: {returned:.1}");
    print_peak_rss();
}
