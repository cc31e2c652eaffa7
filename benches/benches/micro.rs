//! Criterion micro-benchmarks: `hakmem::Hakmem` against `std::alloc::System`
//! (glibc) in one binary, through the `GlobalAlloc` interface.
//!
//! `cargo bench -p hakmem-benches --bench micro`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::mpsc;

const SIZES: [usize; 9] = [16, 64, 256, 1024, 4096, 16384, 65536, 131072, 1 << 20];

fn pairs<A: GlobalAlloc>(c: &mut Criterion, name: &str, a: &A) {
    let mut g = c.benchmark_group(format!("malloc_free/{name}"));
    for size in SIZES {
        let l = Layout::from_size_align(size, 16).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(size), &l, |b, &l| {
            b.iter(|| {
                // SAFETY: non-zero layout; freed with the same allocator.
                unsafe {
                    let p = a.alloc(l);
                    assert!(!p.is_null());
                    black_box(p).write(1);
                    a.dealloc(p, l);
                }
            })
        });
    }
    g.finish();
}

fn realloc_growth<A: GlobalAlloc>(c: &mut Criterion, name: &str, a: &A) {
    c.bench_function(&format!("realloc_growth_16_to_1MiB/{name}"), |b| {
        b.iter(|| {
            // SAFETY: each realloc gets the block and layout of the previous step.
            unsafe {
                let mut l = Layout::from_size_align(16, 16).unwrap();
                let mut p = a.alloc(l);
                while l.size() < 1 << 20 {
                    let n = l.size() * 2;
                    p = a.realloc(p, l, n);
                    assert!(!p.is_null());
                    p.add(n - 1).write(1);
                    l = Layout::from_size_align(n, 16).unwrap();
                }
                a.dealloc(p, l);
            }
        })
    });
}

fn aligned<A: GlobalAlloc>(c: &mut Criterion, name: &str, a: &A) {
    let mut g = c.benchmark_group(format!("aligned/{name}"));
    for align in [64usize, 4096, 65536] {
        let l = Layout::from_size_align(100, align).unwrap();
        g.bench_with_input(BenchmarkId::from_parameter(align), &l, |b, &l| {
            b.iter(|| {
                // SAFETY: non-zero layout; freed with the same allocator.
                unsafe {
                    let p = a.alloc(l);
                    assert_eq!(p as usize % l.align(), 0);
                    a.dealloc(black_box(p), l);
                }
            })
        });
    }
    g.finish();
}

struct Batch(Vec<usize>);

/// 1000 blocks allocated here, freed by another thread.
fn cross_thread<A: GlobalAlloc + Sync>(c: &mut Criterion, name: &str, a: &'static A) {
    let l = Layout::from_size_align(64, 16).unwrap();
    let (tx, rx) = mpsc::sync_channel::<Batch>(4);
    let (done_tx, done_rx) = mpsc::sync_channel::<()>(4);
    let consumer = std::thread::spawn(move || {
        for b in rx {
            for p in b.0 {
                // SAFETY: blocks from `a` with layout `l`, sent to us once.
                unsafe { a.dealloc(p as *mut u8, l) };
            }
            done_tx.send(()).unwrap();
        }
    });
    c.bench_function(&format!("cross_thread_free_1000x64B/{name}"), |b| {
        b.iter(|| {
            // SAFETY: non-zero layout; the consumer frees each block once.
            let v: Vec<usize> = (0..1000).map(|_| unsafe { a.alloc(l) } as usize).collect();
            tx.send(Batch(v)).unwrap();
            done_rx.recv().unwrap();
        })
    });
    drop(tx);
    consumer.join().unwrap();
}

static HAKMEM: hakmem::Hakmem = hakmem::Hakmem;
static SYSTEM: System = System;

fn all(c: &mut Criterion) {
    pairs(c, "hakmem", &HAKMEM);
    pairs(c, "system", &SYSTEM);
    realloc_growth(c, "hakmem", &HAKMEM);
    realloc_growth(c, "system", &SYSTEM);
    aligned(c, "hakmem", &HAKMEM);
    aligned(c, "system", &SYSTEM);
    cross_thread(c, "hakmem", &HAKMEM);
    cross_thread(c, "system", &SYSTEM);
}

criterion_group!(benches, all);
criterion_main!(benches);
