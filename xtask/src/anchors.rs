//! Builds the newest mimalloc releases into preloadable libraries, once
//! (cached under `target/anchors/`), for `cargo xtask bench`.
//!
//! The C sources come from the crates.io package `libmimalloc-sys`, which
//! vendors mimalloc 2.x and 3.x; `cargo vendor` unpacks it, and gcc compiles
//! `src/static.c` with `MI_MALLOC_OVERRIDE` into a shared library, as
//! mimalloc's own build does for its override library.

use crate::{cargo, root};
use std::path::PathBuf;
use std::process::Command;

const CRATE_VERSION: &str = "0.1.49";

/// (name in tables, vendored directory, identity prefix the run must report)
pub const MIMALLOC_NEWEST: [(&str, &str, &str); 2] = [
    ("mimalloc-3.3", "v3", "mimalloc 3.3."),
    ("mimalloc-2.3", "v2", "mimalloc 2.3."),
];

/// Paths of the built libraries, building what is missing. Errors say why a
/// library could not be built (the benchmark then runs without it).
pub fn mimalloc_newest() -> Vec<(&'static str, Result<PathBuf, String>, &'static str)> {
    let dir = root().join("target/anchors");
    MIMALLOC_NEWEST
        .iter()
        .map(|&(name, v, expect)| {
            let so = dir.join(format!("libmimalloc-{v}.so"));
            let r = if so.exists() {
                Ok(so)
            } else {
                build(&dir, v).map(|()| so)
            };
            (name, r, expect)
        })
        .collect()
}

fn build(dir: &std::path::Path, v: &str) -> Result<(), String> {
    let src = dir.join(format!("vendor/libmimalloc-sys/c_src/mimalloc/{v}"));
    if !src.exists() {
        vendor(
            dir,
            "fetch",
            "libmimalloc-sys",
            CRATE_VERSION,
            &dir.join("vendor"),
        )?;
    }
    eprintln!("==> building mimalloc ({v}) from libmimalloc-sys {CRATE_VERSION} into target/anchors (once)");
    let st = Command::new("cc")
        .args([
            "-O3",
            "-DNDEBUG",
            "-fPIC",
            "-shared",
            "-DMI_MALLOC_OVERRIDE",
            "-DMI_SHARED_LIB",
            "-DMI_SHARED_LIB_EXPORT",
        ])
        .args(["-ftls-model=initial-exec", "-fvisibility=hidden", "-I"])
        .arg(src.join("include"))
        .arg(src.join("src/static.c"))
        .arg("-o")
        .arg(dir.join(format!("libmimalloc-{v}.so")))
        .arg("-lpthread")
        .status()
        .map_err(|e| format!("cc: {e} (install gcc)"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("cc failed building mimalloc {v}"))
    }
}

/// snmalloc, from the crates.io package `snmalloc-sys` (which vendors its
/// C++ sources under `upstream/`).
const SNMALLOC_CRATE_VERSION: &str = "0.7.6";
/// snmalloc's table name and the identity prefix a run must report.
pub const SNMALLOC: (&str, &str) = ("snmalloc", "snmalloc");

/// Path of the preloadable snmalloc (its `snmallocshim` library: malloc.cc
/// and new.cc compiled as snmalloc's own CMake build does), building it once.
pub fn snmalloc() -> Result<PathBuf, String> {
    let dir = root().join("target/anchors");
    let so = dir.join("libsnmallocshim.so");
    if so.exists() {
        return Ok(so);
    }
    let vendor_dir = dir.join("vendor-snmalloc");
    let src = vendor_dir.join("snmalloc-sys/upstream");
    if !src.exists() {
        vendor(
            &dir,
            "fetch-snmalloc",
            "snmalloc-sys",
            SNMALLOC_CRATE_VERSION,
            &vendor_dir,
        )?;
    }
    eprintln!("==> building snmalloc from snmalloc-sys {SNMALLOC_CRATE_VERSION} into target/anchors (once)");
    let o = src.join("src/snmalloc/override");
    let st = Command::new("c++")
        .args([
            "-std=c++20",
            "-O3",
            "-DNDEBUG",
            "-fPIC",
            "-shared",
            "-mcx16",
            "-DSNMALLOC_USE_WAIT_ON_ADDRESS=1",
            "-ftls-model=initial-exec",
            "-I",
        ])
        .arg(src.join("src"))
        .arg(o.join("malloc.cc"))
        .arg(o.join("new.cc"))
        .arg("-o")
        .arg(&so)
        .args(["-lpthread", "-static-libstdc++"])
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("c++: {e} (install g++)"))?;
    if st.success() {
        Ok(so)
    } else {
        Err(format!(
            "c++ failed building snmalloc {SNMALLOC_CRATE_VERSION}"
        ))
    }
}

/// Unpacks crates.io package `krate` at exactly `version` (and its
/// dependencies) into `into`, with `cargo vendor` on a throw-away manifest
/// in `dir/fetch_dir`.
fn vendor(
    dir: &std::path::Path,
    fetch_dir: &str,
    krate: &str,
    version: &str,
    into: &std::path::Path,
) -> Result<(), String> {
    let fetch = dir.join(fetch_dir);
    std::fs::create_dir_all(fetch.join("src")).map_err(|e| e.to_string())?;
    std::fs::write(
        fetch.join("Cargo.toml"),
        format!("[package]\nname = \"anchor-{fetch_dir}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[dependencies]\n{krate} = \"={version}\"\n\n[workspace]\n"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(fetch.join("src/lib.rs"), "").map_err(|e| e.to_string())?;
    let st = cargo()
        .args(["vendor", "--quiet", "--manifest-path"])
        .arg(fetch.join("Cargo.toml"))
        .arg(into)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cargo vendor: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo vendor {krate} failed (no access to crates.io?)"
        ))
    }
}

/// Every anchor the harness builds itself: (name in tables, the library or
/// why it could not be built, identity prefix the run must report).
pub fn built() -> Vec<(&'static str, Result<PathBuf, String>, &'static str)> {
    let mut v = mimalloc_newest();
    v.push((SNMALLOC.0, snmalloc(), SNMALLOC.1));
    v
}
