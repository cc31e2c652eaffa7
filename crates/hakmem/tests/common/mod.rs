//! Helpers shared by the integration tests that run programs under the
//! LD_PRELOAD library.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};

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
        "preload library {} ({origin}) does not exist: run `cargo build --release -p hakmem` first",
        path.display()
    );
    std::path::absolute(&path).expect("absolute preload library path")
}
