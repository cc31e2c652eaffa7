//! Adversarial lifecycle tests for the `LD_PRELOAD` library: allocation before
//! any constructor, after the allocator's own thread teardown, long after the
//! owning thread exited, across thread churn, across `fork` under load, at
//! `RLIMIT_AS` exhaustion, at every size-class boundary, and on a million
//! foreign (glibc) blocks.
//!
//! Each scenario is a C program in `tests/lifecycle/`, compiled with
//! `cc -O2 -pthread` into `$CARGO_TARGET_TMPDIR/lifecycle/<test>/` and run with
//! `LD_PRELOAD` set to `$HAKMEM_PRELOAD_SO`, or else
//! `<workspace>/target/release/libhakmem.so` (a missing library is a failure:
//! run `cargo build --release -p hakmem_preload`). A scenario passes when the program
//! exits 0 and prints `OK <scenario>`; it is killed after 60 s, so a deadlock
//! is a failure too (with all-thread backtraces from gdb when gdb exists).

mod common;
use common::{describe, drain_output, kill_group, preload_lib, tail};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A scenario still running after this long is killed and fails.
const TIMEOUT: Duration = Duration::from_secs(60);

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/lifecycle")
        .join(name)
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("lifecycle")
        .join(test);
    if dir.exists() {
        fs::remove_dir_all(&dir).expect("remove stale scratch dir");
    }
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Runs `cc` with `args`; panics with its output on failure.
fn cc(args: &[&std::ffi::OsStr]) {
    let out = Command::new("cc")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `cc` (install gcc): {e}"));
    assert!(
        out.status.success(),
        "cc {:?} failed:\n{}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `tests/lifecycle/<name>.c` into `<dir>/<name>` with `cc -O2 -pthread`
/// plus `extra` arguments (appended after the source).
fn compile(dir: &Path, name: &str, extra: &[&std::ffi::OsStr]) -> PathBuf {
    let exe = dir.join(name);
    let src = source(&format!("{name}.c"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "-O2".as_ref(),
        "-pthread".as_ref(),
        "-Wall".as_ref(),
        // keep every malloc/free call: gcc may otherwise delete unused pairs
        "-fno-builtin".as_ref(),
        "-o".as_ref(),
        exe.as_os_str(),
        src.as_os_str(),
    ];
    args.extend_from_slice(extra);
    args.push("-ldl".as_ref());
    cc(&args);
    exe
}

/// All-thread backtraces of a hung process, if gdb is installed.
fn backtraces(pid: u32) -> String {
    match Command::new("gdb")
        .args(["-batch", "-nx", "-p", &pid.to_string()])
        .args(["-ex", "thread apply all bt"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(no backtrace: cannot run gdb: {e})"),
    }
}

/// Runs `exe` under the preload and asserts exit 0 and the line `OK <test>`.
fn run_preloaded(test: &str, exe: &Path, dir: &Path) {
    let so = preload_lib();
    let start = Instant::now();
    let mut child = Command::new(exe)
        .current_dir(dir)
        .env("LD_PRELOAD", &so)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let (out_t, err_t) = drain_output(&mut child);
    let mut hang_bt = String::new();
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(st) => break describe(st),
            None if start.elapsed() > TIMEOUT => {
                hang_bt = backtraces(child.id());
                kill_group(&child);
                let _ = child.wait();
                break format!("TIMEOUT after {}s (killed; deadlock?)", TIMEOUT.as_secs());
            }
            None => thread::sleep(Duration::from_millis(5)),
        }
    };
    let elapsed = start.elapsed();
    let stdout = out_t.join().expect("stdout reader");
    let stderr = err_t.join().expect("stderr reader");
    let stdout_text = String::from_utf8_lossy(&stdout);
    let stderr_text = String::from_utf8_lossy(&stderr);
    eprintln!(
        "[{test}] {status} in {:.2}s (LD_PRELOAD={})\n{stdout_text}",
        elapsed.as_secs_f64(),
        so.display()
    );
    assert!(
        !stderr_text.contains("cannot be preloaded"),
        "ld.so refused to preload {}: {stderr_text}",
        so.display()
    );
    let ok_line = format!("OK {test}");
    let passed = status == "exit 0" && stdout_text.lines().any(|l| l == ok_line);
    assert!(
        passed,
        "[{test}] {status}, expected exit 0 and a line `{ok_line}`\n\
         --- stdout ---\n{}\n--- stderr ---\n{}\n{}\
         reproduce: LD_PRELOAD={} {}\n\
         backtrace: gdb -batch -ex 'set environment LD_PRELOAD={}' -ex run -ex bt --args {}",
        tail(&stdout, 4000),
        tail(&stderr, 4000),
        if hang_bt.is_empty() {
            String::new()
        } else {
            format!(
                "--- threads at timeout ---\n{}\n",
                tail(hang_bt.as_bytes(), 12000)
            )
        },
        so.display(),
        exe.display(),
        so.display(),
        exe.display()
    );
}

/// Builds and runs the single-file scenario `tests/lifecycle/<test>.c`.
fn scenario(test: &str) {
    let dir = scratch_dir(test);
    let exe = compile(&dir, test, &[]);
    run_preloaded(test, &exe, &dir);
}

/// malloc/calloc/realloc/free/free(NULL) from a `.preinit_array` entry (before
/// every shared library's constructor, the preload's included), from the
/// constructor of a DT_NEEDED library (initialised before the preload) and
/// from `constructor(101)`; main checks and frees the early blocks.
#[test]
fn first_op_before_constructors() {
    let test = "first_op_before_constructors";
    let dir = scratch_dir(test);
    let lib = dir.join("libfirstop.so");
    let lib_src = source("first_op_lib.c");
    cc(&[
        "-O2".as_ref(),
        "-pthread".as_ref(),
        "-Wall".as_ref(),
        "-fno-builtin".as_ref(),
        "-shared".as_ref(),
        "-fPIC".as_ref(),
        "-o".as_ref(),
        lib.as_os_str(),
        lib_src.as_os_str(),
    ]);
    let libdir = format!("-L{}", dir.display());
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let exe = compile(
        &dir,
        test,
        &[libdir.as_ref(), rpath.as_ref(), "-lfirstop".as_ref()],
    );
    run_preloaded(test, &exe, &dir);
}

/// pthread key destructors (keys below and above the allocator's own, some
/// with index 32 or more) that malloc/calloc/realloc/free, re-arm themselves
/// for later rounds, and hand blocks to main, over 200 threads (half of which
/// never allocated before their destructors ran).
#[test]
fn post_teardown_malloc() {
    scenario("post_teardown_malloc");
}

/// 100k mixed blocks allocated by a thread that exits; freed by another
/// thread 1 s later; 3 rounds; RSS after malloc_trim(0) back near baseline.
#[test]
fn free_long_after_thread_exit() {
    scenario("free_long_after_thread_exit");
}

/// 20,000 thread create/exit cycles (4 at a time) with cross-thread frees of
/// blocks whose owner has exited; RSS growth from cycle 2000 to the end
/// bounded by 32 MiB.
#[test]
fn thread_churn_bounded_rss() {
    scenario("thread_churn_bounded_rss");
}

/// 50 forks while 4 threads hammer malloc/free/realloc; each child allocates
/// (incl. > 128 KiB), frees inherited blocks, runs a thread, `_exit(0)`s.
#[test]
fn fork_under_load() {
    scenario("fork_under_load");
}

/// RLIMIT_AS = current size + 256 MiB: small and 8 MiB blocks until NULL with
/// ENOMEM, free all, then the memory is allocatable again.
#[test]
fn oom_under_ulimit() {
    scenario("oom_under_ulimit");
}

/// Every size-class boundary +-1, SIZE_MAX / PTRDIFF_MAX-ish requests (NULL +
/// ENOMEM), absurd and invalid alignments, memalign at every power of two
/// from 16 to 4 MiB.
#[test]
fn boundary_sizes() {
    scenario("boundary_sizes");
}

/// 1,000,000 free/realloc calls on glibc-allocated (foreign) blocks, incl.
/// page-aligned and large ones; RSS growth < 64 MiB.
#[test]
fn foreign_million() {
    scenario("foreign_million");
}

/// More large blocks than `vm.max_map_count` mappings: NULL + ENOMEM (or
/// success), never an abort; the allocator works again after the frees.
#[test]
fn map_count_exhaustion() {
    scenario("map_count_exhaustion");
}
