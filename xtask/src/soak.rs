//! `cargo xtask soak`: the multi-threaded workloads, run many times under the
//! LD_PRELOAD library, counting every run that crashes, hangs, reports
//! corruption or is not served by hakmem. The target is zero (lesson 17:
//! 19 passes out of 20 is a failing allocator).

use crate::root;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const HELP: &str = "\
usage: cargo xtask soak [--rounds N] [--quick]

Runs, N times each (default 100), under LD_PRELOAD=target/release/libhakmem.so:
  larson 2T with thread churn, larson 4T standard, cross-thread
  producer/consumer with content checks (1 and 2 pairs), random-mixed,
  mid-large-mt 4T.
--quick: 5 rounds of shorter runs (what CI runs).
Exits non-zero if any run fails.
";

struct Job {
    name: &'static str,
    bin: &'static str,
    args: Vec<&'static str>,
}

pub fn soak(args: &[String]) -> Result<(), String> {
    let mut rounds = 100usize;
    let mut quick = false;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--rounds" => {
                i += 1;
                rounds = args
                    .get(i)
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n >= 1)
                    .ok_or("--rounds needs a whole number >= 1")?;
            }
            "--quick" => quick = true,
            "-h" | "--help" => return Err(HELP.into()),
            a => return Err(format!("unknown argument `{a}`\n\n{HELP}")),
        }
        i += 1;
    }
    if quick {
        rounds = rounds.min(5);
    }
    crate::bench::build_preload_and_programs()?;
    let n = |full: &'static str, short: &'static str| if quick { short } else { full };
    let jobs = [
        Job {
            name: "larson churn 2T",
            bin: "larson",
            args: vec!["1", "8", "128", "1024", "1", "12345", "2"],
        },
        Job {
            name: "larson 4T",
            bin: "larson",
            args: vec!["1", "8", "1000", "5000", "100", "4141", "4"],
        },
        Job {
            name: "xthread 1 pair",
            bin: "xthread",
            args: vec!["1", n("1000000", "200000"), "7"],
        },
        Job {
            name: "xthread 2 pairs",
            bin: "xthread",
            args: vec!["2", n("500000", "100000"), "9"],
        },
        Job {
            name: "random-mixed",
            bin: "random_mixed",
            args: vec![n("5000000", "1000000"), "400", "3"],
        },
        Job {
            name: "mid-large-mt 4T",
            bin: "mid_large_mt",
            args: vec!["4", n("30000", "10000"), "256", "5"],
        },
    ];
    let so = crate::preload_so();
    let t0 = Instant::now();
    let mut failures: Vec<String> = vec![];
    let mut runs = 0;
    for r in 0..rounds {
        for j in &jobs {
            runs += 1;
            crate::progress(&format!(
                "[round {}/{rounds}] {} ({runs} runs, {} failed, {:.0}s)",
                r + 1,
                j.name,
                failures.len(),
                t0.elapsed().as_secs_f64()
            ));
            if let Err(e) = run_job(j, &so) {
                failures.push(format!("round {} {}: {e}", r + 1, j.name));
            }
        }
    }
    eprintln!();
    println!(
        "soak: {runs} runs, {} failed, in {:.0}s",
        failures.len(),
        t0.elapsed().as_secs_f64()
    );
    for f in &failures {
        println!("  {f}");
    }
    println!(
        "{} passed, {} failed",
        runs - failures.len(),
        failures.len()
    );
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} of {runs} soak runs failed", failures.len()))
    }
}

fn run_job(j: &Job, so: &std::path::Path) -> Result<(), String> {
    let mut child = Command::new(root().join("target/release").join(j.bin))
        .args(&j.args)
        .env("LD_PRELOAD", so)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("hung for 120 s (killed)".into());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = crate::finished_output(&out)?;
    match text.lines().find_map(|l| l.strip_prefix("allocator:")) {
        Some(a) if a.trim_start().starts_with("hakmem") => {}
        other => return Err(format!("not served by hakmem: {other:?}")),
    }
    if !text.contains("Throughput =") {
        return Err("no result line".into());
    }
    Ok(())
}
