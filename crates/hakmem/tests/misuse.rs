//! Misuse detection under LD_PRELOAD: a double free (same thread, another
//! thread, or after the allocating thread exited), a free of an interior
//! pointer, and an overflow into a free block's list link end the process
//! with SIGABRT and one line naming the fault and the address, for every size
//! class served from slabs.
//!
//! Needs the release library (`cargo build --release -p hakmem`), as the
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

fn expect_abort(exe: &Path, mode: &str, size: usize, message: &str) {
    let out = Command::new(exe)
        .arg(mode)
        .arg(size.to_string())
        .env("LD_PRELOAD", lib())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{mode} {size}: not aborted: {:?} stdout {} stderr {err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("hakmem: "))
        .unwrap_or_else(|| panic!("{mode} {size}: no hakmem line in {err:?}"));
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
