//! Helpers shared by the integration tests that run programs under the
//! LD_PRELOAD library.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root (CARGO_MANIFEST_DIR/../..) exists")
}

/// The library to preload, as an absolute path (ld.so searches bare names).
/// Fails (never skips) when it does not exist.
pub fn preload_lib() -> PathBuf {
    let (path, origin) = match std::env::var_os("HAKMEM_PRELOAD_SO") {
        Some(v) if !v.is_empty() => (PathBuf::from(v), "from $HAKMEM_PRELOAD_SO"),
        _ => (
            workspace_root().join("target/release/libhakmem.so"),
            "default; set $HAKMEM_PRELOAD_SO to override",
        ),
    };
    assert!(
        path.is_file(),
        "preload library {} ({origin}) does not exist: run `cargo build --release -p hakmem_preload` first",
        path.display()
    );
    std::path::absolute(&path).expect("absolute preload library path")
}

/// "exit N" or "killed by signal N", for failure messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!(
            "killed by signal {s}{}",
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        _ => format!("{status}"),
    }
}

/// Kills the child's whole process group (the child must lead its own group).
pub fn kill_group(child: &Child) {
    // The child leads its own process group (process_group(0)), so this also
    // reaches helpers it spawned (git's pack-objects, sort's workers, ...).
    let _ = Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .arg(format!("-{}", child.id()))
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `max` bytes of a program's output, as text.
pub fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() <= max {
        return s.into_owned();
    }
    let mut cut = s.len() - max;
    while !s.is_char_boundary(cut) {
        cut += 1;
    }
    format!("...{}", &s[cut..])
}

/// Reads a child's piped stdout and stderr on two threads (so neither pipe
/// can fill up and block it); join the handles for the bytes.
pub fn drain_output(child: &mut Child) -> (JoinHandle<Vec<u8>>, JoinHandle<Vec<u8>>) {
    fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            b
        })
    }
    (
        read_all(child.stdout.take().expect("piped stdout")),
        read_all(child.stderr.take().expect("piped stderr")),
    )
}
