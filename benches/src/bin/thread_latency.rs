//! Thread start -> first malloc -> exit, repeated: the cost an allocator adds
//! to a short-lived thread (heap set-up and teardown).
//!
//! `thread_latency [threads=20000]`: threads run one after another; each
//! mallocs and frees a few blocks and exits. Reports threads/s.

use hakmem_benches::{atoi, free, malloc, print_allocator, print_peak_rss, usage_exit};
use std::ffi::c_void;
use std::time::Instant;

const USAGE: &str = "thread_latency [threads=20000]";

extern "C" fn body(_: *mut c_void) -> *mut c_void {
    let mut p = [std::ptr::null_mut(); 4];
    for (i, s) in [24usize, 100, 1000, 5000].into_iter().enumerate() {
        p[i] = malloc(s);
        // SAFETY: at least one byte.
        unsafe { *p[i] = 1 };
    }
    for q in p {
        // SAFETY: live blocks from above.
        unsafe { free(q) };
    }
    std::ptr::null_mut()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() > 1 {
        usage_exit(USAGE, "at most 1 argument");
    }
    let n = args
        .first()
        .map(|a| atoi("threads", a).unwrap_or_else(|e| usage_exit(USAGE, &e)))
        .unwrap_or(20_000);
    if n < 1 {
        usage_exit(USAGE, "threads >= 1");
    }
    print_allocator();
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: standard pthread create/join with a C-ABI body.
        unsafe {
            let mut th: libc::pthread_t = 0;
            if libc::pthread_create(&mut th, std::ptr::null(), body, std::ptr::null_mut()) != 0 {
                eprintln!("thread_latency: cannot create a thread");
                std::process::exit(1);
            }
            libc::pthread_join(th, std::ptr::null_mut());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "Throughput = {:.0} operations per second, relative time: {secs:.3}s.",
        n as f64 / secs
    );
    print_peak_rss();
}
