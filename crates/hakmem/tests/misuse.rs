//! Misuse detection under LD_PRELOAD: a double free (same thread, another
//! thread, or after the allocating thread exited), a free of an interior
//! pointer, and an overflow into a free block's list link end the process
//! with SIGABRT and one line naming the fault and the address, for every size
//! class served from slabs; double frees do for large blocks too; so does a
//! free, realloc or malloc_usable_size of a stack address or of static data.
//! Blocks of glibc's own allocator still go to glibc.
//!
//! Needs the release library (`cargo build --release -p hakmem_preload`), as the
//! preload suite does.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::preload_lib as lib;

fn program() -> PathBuf {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    EXE.get_or_init(compile).clone()
}

fn compile() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("misuse");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("misuse");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/misuse/misuse.c");
    let st = Command::new("cc")
        .args(["-O1", "-pthread", "-fno-builtin", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc (Debian package gcc)");
    assert!(st.success(), "cc failed");
    exe
}

/// Every class stride: 16..=128 by 16, then four per doubling up to 128 KiB.
fn class_sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (1..=8).map(|i| i * 16).collect();
    let mut p = 128;
    while p < 128 * 1024 {
        v.extend([p * 5 / 4, p * 6 / 4, p * 7 / 4, p * 2]);
        p *= 2;
    }
    v
}

/// Large blocks (one mapping each): just above the slab classes, a 4 MiB
/// one (a whole segment's size), and a size that is not a page multiple.
const LARGE_SIZES: [usize; 3] = [200 << 10, 4 << 20, (1 << 20) + 12345];

/// One run of the misuse program in `mode` on blocks of `size` bytes, under
/// the preload.
fn run(exe: &Path, mode: &str, size: usize) -> std::process::Output {
    Command::new(exe)
        .arg(mode)
        .arg(size.to_string())
        .env("LD_PRELOAD", lib())
        .output()
        .unwrap()
}

fn expect_abort(exe: &Path, mode: &str, size: usize, message: &str) {
    let out = run(exe, mode, size);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{mode} {size}: not aborted: {:?} stdout {} stderr {err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("hakmem: ")).collect();
    assert_eq!(lines.len(), 1, "{mode} {size}: one hakmem line in {err:?}");
    let line = lines[0];
    assert!(
        line.contains(message) && line.contains(" at 0x"),
        "{mode} {size}: {line}"
    );
}

#[test]
fn double_free_same_thread_every_class() {
    let exe = program();
    for s in class_sizes() {
        expect_abort(&exe, "same", s, "double free");
    }
}

#[test]
fn double_free_from_another_thread_every_class() {
    let exe = program();
    for s in class_sizes() {
        expect_abort(&exe, "cross", s, "double free");
    }
}

#[test]
fn double_free_after_the_allocating_thread_exited() {
    let exe = program();
    for s in class_sizes().into_iter().step_by(3) {
        expect_abort(&exe, "late-cross", s, "double free");
    }
}

#[test]
fn interior_pointer_every_class() {
    let exe = program();
    for s in class_sizes() {
        expect_abort(&exe, "interior", s, "invalid free");
    }
}

#[test]
fn overflow_into_a_free_neighbours_link_every_class() {
    let exe = program();
    for s in class_sizes() {
        expect_abort(&exe, "overflow", s, "free list corrupted");
    }
}

#[test]
fn double_free_of_a_large_block() {
    let exe = program();
    for s in LARGE_SIZES {
        for mode in [
            "same",
            "cross",
            "late-cross",
            "aligned-same",
            "aligned-cross",
        ] {
            expect_abort(&exe, mode, s, "double free (large block)");
        }
    }
}

#[test]
fn realloc_or_usable_size_of_a_freed_large_block() {
    let exe = program();
    for s in LARGE_SIZES {
        expect_abort(
            &exe,
            "large-realloc",
            s,
            "realloc of a freed block (large block)",
        );
        expect_abort(
            &exe,
            "large-usable",
            s,
            "malloc_usable_size of a freed block (large block)",
        );
    }
}

#[test]
fn interior_pointer_of_a_large_block() {
    let exe = program();
    for s in LARGE_SIZES {
        expect_abort(&exe, "interior", s, "invalid free");
    }
}

#[test]
fn free_of_a_stack_address() {
    let exe = program();
    for mode in [
        "stack",
        "stack-thread",
        "stack-main-from-thread",
        "realloc-stack",
        "usable-stack",
    ] {
        expect_abort(&exe, mode, 64, "invalid free: pointer is on a thread stack");
    }
}

#[test]
fn free_of_static_data() {
    let exe = program();
    for mode in ["global", "global-bss", "global-rodata"] {
        expect_abort(
            &exe,
            mode,
            64,
            "invalid free: pointer into static data of a loaded object",
        );
    }
}

#[test]
fn glibc_blocks_still_go_to_glibc() {
    let out = run(&program(), "glibc", 64);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("glibc OK"),
        "{:?} stderr {err}",
        out.status
    );
    assert!(!err.contains("hakmem:"), "{err}");
}

#[test]
fn overflow_off_the_end_of_a_segment_faults_on_its_guard_page() {
    let exe = program();
    for size in [16usize, 64, 1024] {
        let out = run(&exe, "segment-end", size);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("last block"),
            "size {size}: no block ends a segment: {stdout}"
        );
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSEGV),
            "size {size}: {:?} stdout {stdout}",
            out.status
        );
    }
}
