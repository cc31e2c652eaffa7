//! hakmem's task runner. `cargo xtask help` lists the tasks.
//!
//! Dependencies: std only, so that the runner builds fast and never depends on
//! the allocator under test.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};
use std::time::Instant;

mod anchors;
mod bench;
mod deps;
mod soak;

const HELP: &str = "\
usage: cargo xtask <task>

tasks:
  test        everything CI runs: format and lint checks, the release
              LD_PRELOAD library, every crate's tests (unit, integration,
              doctests incl. compile_fail), the LD_PRELOAD suite, loom models
  test --quick  the same without clippy and loom
  bench       benchmarks against glibc, mimalloc, jemalloc, tcmalloc
              (`cargo xtask bench --help` for details)
  soak        multi-threaded workloads many times under LD_PRELOAD,
              counting failures (`cargo xtask soak --help`)
  help        this text
";

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("bench") => bench::bench(&args[1..]),
        Some("soak") => soak::soak(&args[1..]),
        Some("help") | Some("-h") | Some("--help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(format!("unknown task `{other}`\n\n{HELP}")),
    };
    if let Err(e) = r {
        eprintln!("xtask: {e}");
        exit(1);
    }
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// A `cargo` command in the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command, echoing it, and fails with its description if it fails.
pub fn run(what: &str, c: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {what}");
    let t = Instant::now();
    let st = c
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    eprintln!(
        "<== {what}: {} in {:.1}s",
        if st.success() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if st.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({st})"))
    }
}

/// Shows a progress line on stderr: rewritten in place on a terminal, one
/// line per step otherwise (CI logs).
pub fn progress(msg: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K{msg}");
    } else {
        eprintln!("{msg}");
    }
}

/// The stdout of a finished workload process, or why it failed, in one line
/// (its status and the last line it wrote to stderr).
pub fn finished_output(out: &std::process::Output) -> Result<String, String> {
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{}: {}",
            out.status,
            err.lines().last().unwrap_or("").trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Path of the release LD_PRELOAD library.
pub fn preload_so() -> PathBuf {
    root().join("target/release/libhakmem.so")
}

/// Builds the LD_PRELOAD library (`crates/hakmem_preload`) in release mode,
/// with `extra` cargo arguments (features, target directory).
pub fn build_preload(extra: &[&str]) -> Result<(), String> {
    run(
        format!("build libhakmem.so (release) {}", extra.join(" ")).trim_end(),
        cargo()
            .args(["build", "--release", "-p", "hakmem_preload"])
            .args(extra),
    )
}

fn test(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let t = Instant::now();
    deps::ensure(&deps::TEST_TOOLS)?;
    run(
        "format check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    if !quick {
        run(
            "clippy (denies undocumented unsafe)",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    build_preload(&[])?;
    let so = preload_so();
    if !so.exists() {
        return Err(format!("{} was not produced", so.display()));
    }
    run(
        "tests: every crate, GlobalAlloc binaries, LD_PRELOAD suite, doctests",
        cargo()
            .args(["test", "--workspace"])
            .env("HAKMEM_PRELOAD_SO", &so),
    )?;
    run(
        "soak, short (5 rounds of each workload under LD_PRELOAD)",
        cargo().args(["xtask", "soak", "--quick"]),
    )?;
    if !quick {
        run(
            "loom models (remote free, registry publish and retire, pool hand-off)",
            cargo()
                .args([
                    "test",
                    "--release",
                    "--target-dir",
                    "target/loom",
                    "-p",
                    "remote_queue",
                    "-p",
                    "registry",
                    "-p",
                    "shared_pool",
                ])
                .args([
                    "--test",
                    "loom_remote_free",
                    "--test",
                    "loom_publish",
                    "--test",
                    "loom_retire",
                    "--test",
                    "loom_pool_handoff",
                ])
                .env("RUSTFLAGS", "--cfg loom")
                .env("LOOM_MAX_PREEMPTIONS", "3"),
        )?;
    }
    eprintln!(
        "\nxtask test: all passed in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
