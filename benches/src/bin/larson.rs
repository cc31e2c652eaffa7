//! Larson & Krishnan's server benchmark, as in mimalloc-bench (see
//! ../shared/design/benchmarks.md for the exact semantics).
//!
//! `larson <seconds> <min_size> <max_size> <chunks_per_thread> <rounds> <seed> <threads>`
//!
//! Worker threads free and replace random blocks in their slice of a shared
//! table; when a worker has done `rounds * chunks_per_thread` steps it starts
//! a NEW thread on the same slice and exits, so most frees release blocks
//! that another, usually dead, thread allocated. Bookkeeping lives in
//! `bench_meta` memory, payload in the C `malloc` under test.

use bench_meta::{MetaSlice, Zeroable};
use hakmem_benches::{atoi, free, malloc, print_allocator, print_peak_rss, usage_exit, Lran2};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const USAGE: &str =
    "larson <seconds> <min_size> <max_size> <chunks_per_thread> <rounds> <seed> <threads>";

static STOP: AtomicBool = AtomicBool::new(false);

/// One slice of the table and the statistics of the threads that work on it.
/// Only one thread at a time works on an area (each starts its successor
/// just before it exits).
#[repr(C, align(64))]
struct Area {
    blocks: *mut *mut u8,
    sizes: *mut i64,
    asize: i64,
    steps: i64,
    min: i64,
    range: i64,
    rgen: Lran2,
    threads: AtomicU64,
    allocs: AtomicU64,
    frees: AtomicU64,
    finished: AtomicBool,
}
// SAFETY: pointers, integers, atomics and the generator are all valid at zero.
unsafe impl Zeroable for Area {}

extern "C" fn exercise(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is an Area in bench_meta memory that outlives every worker
    // (main waits for `finished`), and only this thread uses it now.
    let a = unsafe { &mut *(arg as *mut Area) };
    let (mut allocs, mut frees) = (0u64, 0u64);
    for _ in 0..a.steps {
        let victim = (a.rgen.next_value() % a.asize) as usize;
        // SAFETY: victim < asize; the slot holds a live block or null.
        unsafe {
            free(*a.blocks.add(victim));
            frees += 1;
            // C's `%` on a negative range gives 0..|range|, as here.
            let size = a.min + a.rgen.next_value() % a.range;
            let p = malloc(size as usize);
            if p.is_null() {
                eprintln!("larson: malloc({size}) returned NULL");
                std::process::abort();
            }
            *a.blocks.add(victim) = p;
            *a.sizes.add(victim) = size;
            // Touch the block, as the original does.
            if size > 0 {
                *p = b'a';
                *p.add(size as usize - 1) = b'b';
            }
        }
        allocs += 1;
        if STOP.load(Ordering::Relaxed) {
            break;
        }
    }
    a.allocs.fetch_add(allocs, Ordering::Relaxed);
    a.frees.fetch_add(frees, Ordering::Relaxed);
    a.threads.fetch_add(1, Ordering::Relaxed);
    if STOP.load(Ordering::Relaxed) || !spawn(arg) {
        a.finished.store(true, Ordering::Release);
    }
    std::ptr::null_mut()
}

/// Starts a detached worker on `area`. False if no thread could be created.
fn spawn(area: *mut c_void) -> bool {
    // SAFETY: standard pthread calls with valid out-pointers; the worker
    // function has the C ABI.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut t: libc::pthread_t = 0;
        let r = libc::pthread_create(&mut t, &attr, exercise, area);
        libc::pthread_attr_destroy(&mut attr);
        r == 0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 7 {
        usage_exit(USAGE, &format!("expected 7 arguments, got {}", args.len()));
    }
    let names = [
        "seconds",
        "min_size",
        "max_size",
        "chunks_per_thread",
        "rounds",
        "seed",
        "threads",
    ];
    let v: Vec<i64> = args
        .iter()
        .zip(names)
        .map(|(a, n)| atoi(n, a).unwrap_or_else(|e| usage_exit(USAGE, &e)))
        .collect();
    let (seconds, min, max, chunks, rounds, seed, threads) =
        (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    let range = max - min;
    let check = |ok: bool, msg: &str| {
        if !ok {
            usage_exit(USAGE, msg)
        }
    };
    check(seconds >= 0, "seconds must be >= 0");
    check(min >= 0 && max >= 0, "sizes must be >= 0");
    check(
        range != 0,
        "max_size must differ from min_size (the original divides by max - min)",
    );
    check(
        min + range.abs() - 1 <= 1 << 30,
        "block sizes must stay below 1 GiB",
    );
    check(
        (1..=10_000_000).contains(&chunks),
        "chunks_per_thread must be in 1..=10000000",
    );
    check(
        (1..=1_000_000).contains(&rounds),
        "rounds must be in 1..=1000000",
    );
    check((1..=4096).contains(&threads), "threads must be in 1..=4096");
    check(
        chunks * threads <= 50_000_000,
        "threads * chunks_per_thread must be <= 50000000",
    );

    print_allocator();
    let total = (chunks * threads) as usize;
    let mut blocks: MetaSlice<*mut u8> = MetaSlice::zeroed(total);
    let mut sizes: MetaSlice<i64> = MetaSlice::zeroed(total);
    let mut rgen = Lran2::new(seed);

    // Warm-up (main thread): fill, shuffle, then 4 * chunks random replacements.
    for i in 0..total {
        let s = min + rgen.next_value() % range;
        blocks[i] = malloc(s as usize);
        sizes[i] = s;
        assert!(!blocks[i].is_null(), "warm-up malloc failed");
    }
    for i in (1..=total).rev() {
        let victim = (rgen.next_value() % i as i64) as usize;
        blocks.swap(victim, i - 1);
        sizes.swap(victim, i - 1);
    }
    for _ in 0..4 * chunks {
        let victim = (rgen.next_value() % total as i64) as usize;
        // SAFETY: a live block from the warm-up.
        unsafe { free(blocks[victim]) };
        let s = min + rgen.next_value() % range;
        blocks[victim] = malloc(s as usize);
        sizes[victim] = s;
    }

    let mut areas: MetaSlice<Area> = MetaSlice::zeroed(threads as usize);
    for (i, a) in areas.iter_mut().enumerate() {
        // SAFETY: each area gets its own in-bounds slice of the tables.
        unsafe {
            a.blocks = blocks.as_mut_ptr().add(i * chunks as usize);
            a.sizes = sizes.as_mut_ptr().add(i * chunks as usize);
        }
        a.asize = chunks;
        a.steps = rounds * chunks;
        a.min = min;
        a.range = range;
        a.rgen = Lran2::new(rgen.next_value());
    }

    let start = Instant::now();
    for a in areas.iter_mut() {
        if !spawn((a as *mut Area).cast()) {
            eprintln!("larson: cannot create a thread");
            std::process::exit(1);
        }
    }
    std::thread::sleep(Duration::from_secs(seconds as u64));
    STOP.store(true, Ordering::Relaxed);
    for a in areas.iter() {
        while !a.finished.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allocs: u64 = areas.iter().map(|a| a.allocs.load(Ordering::Relaxed)).sum();
    let frees: u64 = areas.iter().map(|a| a.frees.load(Ordering::Relaxed)).sum();
    let nthreads: u64 = areas
        .iter()
        .map(|a| a.threads.load(Ordering::Relaxed))
        .sum();
    println!(
        "Throughput = {:.0} operations per second, relative time: {elapsed:.3}s.",
        allocs as f64 / elapsed
    );
    println!("allocs: {allocs} frees: {frees} threads: {nthreads}");
    print_peak_rss();
    for &b in blocks.iter() {
        // SAFETY: every slot holds a live block (workers are finished).
        unsafe { free(b) };
    }
}
