//! `cargo xtask bench`: hakmem against glibc, mimalloc, jemalloc and tcmalloc,
//! side by side, interleaved, with every run's allocator proven.

use crate::{deps, root, run};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub const HELP: &str = "\
usage: cargo xtask bench <benchmark> [options] [-- <benchmark arguments>]

benchmarks:
  larson         Larson server benchmark; default set: `<s> 8 1000 5000 100 4141 <t>`
                 at 1, 2 and 4 threads. With `-- <7 arguments>` runs exactly those.
  random-mixed   20M cycles over 400 slots, 16..1039-byte blocks (single thread)
  mid-large-mt   8..32 KiB blocks, per-thread tables, 2 and 4 threads
  larson-churn   Larson `<s> 8 128 1024 1 12345 <t>`: a new thread every 1024 steps, 2 threads
  xthread        producer/consumer pairs: every block freed by another thread, 1 and 2 pairs
  st-pair        single-thread malloc(32)+free loop
  thread-latency thread start -> first malloc -> exit, 20000 times
  rss-return     1 GiB of 256-byte blocks allocated, all freed: the share of the
                 peak no longer resident one second later (no malloc_trim call)
  all            every benchmark above

options:
  --runs N        interleaved runs per allocator and row (default 3)
  --seconds S     Larson run length in whole seconds (default 3)
  --threads LIST  comma-separated thread counts (default per benchmark)
  --only LIST     allocators to run, e.g. hakmem,mimalloc (default: all found)
  --no-install    do not apt-get missing competitor libraries

Allocators: hakmem (LD_PRELOAD), hakmem-linked, glibc, Debian's mimalloc
2.0.9, jemalloc 5.3 and tcmalloc (gperftools 2.10), and the newest mimalloc
3.3 and 2.3, built once from the crates.io package libmimalloc-sys into
target/anchors/, and snmalloc 0.7.6, built once from snmalloc-sys (needs
g++). Each run prints the allocator that served it.
On request only (--only ...,hakmem-unchecked): hakmem built without its
double-free check (--no-default-features, into target/bench-unchecked), to
measure what the check costs. Like hakmem-linked, it is never an anchor.
";

const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";

/// An allocator under test and how to make a benchmark use it.
#[derive(Clone)]
struct Alloc {
    name: &'static str,
    /// LD_PRELOAD library, if any.
    preload: Option<PathBuf>,
    /// Use the binaries that link hakmem directly.
    linked: bool,
    /// What the benchmark's identification line must start with.
    expect: &'static str,
}

/// The opt-in allocator: hakmem without its double-free check.
const UNCHECKED: &str = "hakmem-unchecked";
/// Where `UNCHECKED` is built.
const UNCHECKED_DIR: &str = "target/bench-unchecked";
/// What an unchecked build's version says (`hakmem::VERSION`).
const UNCHECKED_MARK: &str = " unchecked";

/// What a row measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Operations per second (`Throughput = ...`).
    Ops,
    /// Share of a heap peak returned to the OS within a second
    /// (`returned_pct: ...`), in percent.
    ReturnedPct,
}

struct Row {
    /// Binary to run.
    bench: &'static str,
    unit: Unit,
    /// Name in the table (the binary, or a named parameter set).
    label: &'static str,
    threads: u32,
    args: Vec<String>,
}

#[derive(Default, Clone)]
struct Cell {
    ops: Vec<f64>,
    /// Per interleaving round: the run's figure, `None` if it was invalid.
    /// Runs of one round are minutes apart at most, so ratios within a
    /// round see the same machine (the "paired" column).
    by_run: Vec<Option<f64>>,
    rss_kib: Vec<u64>,
    identity: String,
    invalid: Vec<String>,
}

struct Opts {
    runs: usize,
    seconds: u32,
    threads: Option<Vec<u32>>,
    only: Option<Vec<String>>,
    install: bool,
    extra: Vec<String>,
}

fn parse(args: &[String]) -> Result<(String, Opts), String> {
    let mut o = Opts {
        runs: 3,
        seconds: 3,
        threads: None,
        only: None,
        install: true,
        extra: vec![],
    };
    let mut bench = None;
    let mut i = 0;
    let num = |v: Option<&String>, what: &str| -> Result<u64, String> {
        let v = v.ok_or(format!("{what} needs a value"))?;
        v.parse::<u64>()
            .map_err(|_| format!("{what}: `{v}` is not a whole number"))
    };
    while i < args.len() {
        match args[i].as_str() {
            "--" => {
                o.extra = args[i + 1..].to_vec();
                break;
            }
            "--runs" => {
                i += 1;
                o.runs = num(args.get(i), "--runs")?.clamp(1, 100) as usize;
            }
            "--seconds" => {
                i += 1;
                o.seconds = num(args.get(i), "--seconds")?.clamp(1, 600) as u32;
            }
            "--threads" => {
                i += 1;
                let v = args.get(i).ok_or("--threads needs a value")?;
                let t: Result<Vec<u32>, _> =
                    v.split(',').map(|s| s.trim().parse::<u32>()).collect();
                let t = t.map_err(|_| format!("--threads: `{v}` is not a list of numbers"))?;
                if t.is_empty() || t.iter().any(|&n| n == 0 || n > 1024) {
                    return Err("--threads: counts must be in 1..=1024".into());
                }
                o.threads = Some(t);
            }
            "--only" => {
                i += 1;
                let v = args.get(i).ok_or("--only needs a value")?;
                o.only = Some(v.split(',').map(|s| s.trim().to_string()).collect());
            }
            "--no-install" => o.install = false,
            "-h" | "--help" => return Err(HELP.into()),
            a if a.starts_with('-') => return Err(format!("unknown option `{a}`\n\n{HELP}")),
            a => {
                if bench.replace(a.to_string()).is_some() {
                    return Err(format!(
                        "one benchmark at a time (got a second: `{a}`)\n\n{HELP}"
                    ));
                }
            }
        }
        i += 1;
    }
    let bench = bench.ok_or(format!("which benchmark?\n\n{HELP}"))?;
    Ok((bench, o))
}

fn rows(bench: &str, o: &Opts) -> Result<Vec<Row>, String> {
    let secs = o.seconds.to_string();
    let larson = |o: &Opts| -> Result<Vec<Row>, String> {
        if !o.extra.is_empty() {
            if o.extra.len() != 7 {
                return Err(format!(
                    "larson takes exactly 7 arguments after `--`: <seconds> <min_size> <max_size> <chunks_per_thread> <rounds> <seed> <threads> (got {})",
                    o.extra.len()
                ));
            }
            let t = o.extra[6]
                .trim()
                .parse::<u32>()
                .map_err(|_| format!("larson: threads `{}` is not a number", o.extra[6]))?;
            return Ok(vec![Row {
                bench: "larson",
                unit: Unit::Ops,
                label: "larson",
                threads: t,
                args: o.extra.clone(),
            }]);
        }
        let ts = o.threads.clone().unwrap_or(vec![1, 2, 4]);
        Ok(ts
            .into_iter()
            .map(|t| Row {
                bench: "larson",
                unit: Unit::Ops,
                label: "larson",
                threads: t,
                args: [
                    secs.as_str(),
                    "8",
                    "1000",
                    "5000",
                    "100",
                    "4141",
                    &t.to_string(),
                ]
                .map(String::from)
                .to_vec(),
            })
            .collect())
    };
    let rm = |o: &Opts| -> Vec<Row> {
        let args = if o.extra.is_empty() {
            vec!["20000000".into(), "400".into(), "1".into()]
        } else {
            o.extra.clone()
        };
        vec![Row {
            bench: "random_mixed",
            unit: Unit::Ops,
            label: "random_mixed",
            threads: 1,
            args,
        }]
    };
    let ml = |o: &Opts| -> Vec<Row> {
        o.threads
            .clone()
            .unwrap_or(vec![2, 4])
            .into_iter()
            .map(|t| Row {
                bench: "mid_large_mt",
                unit: Unit::Ops,
                label: "mid_large_mt",
                threads: t,
                args: vec![t.to_string(), "60000".into(), "256".into(), "1".into()],
            })
            .collect()
    };
    let simple = |name: &'static str, threads: u32, args: &[&str]| Row {
        bench: name,
        unit: Unit::Ops,
        label: name,
        threads,
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    let churn = |o: &Opts| -> Vec<Row> {
        o.threads
            .clone()
            .unwrap_or(vec![2])
            .into_iter()
            .map(|t| Row {
                bench: "larson",
                unit: Unit::Ops,
                label: "larson-churn",
                threads: t,
                args: [
                    secs.as_str(),
                    "8",
                    "128",
                    "1024",
                    "1",
                    "12345",
                    &t.to_string(),
                ]
                .map(String::from)
                .to_vec(),
            })
            .collect()
    };
    let xthread = || {
        vec![
            simple("xthread", 2, &["1", "2000000", "1"]),
            simple("xthread", 4, &["2", "1000000", "1"]),
        ]
    };
    let st = || vec![simple("st_pair", 1, &["50000000", "32"])];
    let tl = || vec![simple("thread_latency", 1, &["20000"])];
    let rss = || {
        vec![Row {
            unit: Unit::ReturnedPct,
            ..simple("rss_return", 1, &["1024", "256"])
        }]
    };
    match bench {
        "larson" => larson(o),
        "larson-churn" => Ok(churn(o)),
        "xthread" => Ok(xthread()),
        "st-pair" => Ok(st()),
        "thread-latency" => Ok(tl()),
        "rss-return" => Ok(rss()),
        "random-mixed" => Ok(rm(o)),
        "mid-large-mt" => Ok(ml(o)),
        "all" => {
            if !o.extra.is_empty() {
                return Err("`all` takes no benchmark arguments after `--`".into());
            }
            let mut r = larson(o)?;
            r.extend(churn(o));
            r.extend(rm(o));
            r.extend(ml(o));
            r.extend(xthread());
            r.extend(st());
            r.extend(tl());
            r.extend(rss());
            Ok(r)
        }
        other => Err(format!("unknown benchmark `{other}`\n\n{HELP}")),
    }
}

fn allocators(o: &Opts) -> (Vec<Alloc>, Vec<String>) {
    let so = crate::preload_so();
    let mut all = vec![
        Alloc {
            name: "hakmem",
            preload: Some(so),
            linked: false,
            expect: "hakmem",
        },
        Alloc {
            name: "hakmem-linked",
            preload: None,
            linked: true,
            expect: "hakmem",
        },
        Alloc {
            name: "glibc",
            preload: None,
            linked: false,
            expect: "glibc",
        },
    ];
    let named = |n: &str| o.only.as_ref().is_some_and(|l| l.iter().any(|x| x == n));
    let wanted = |n: &str| o.only.is_none() || named(n);
    if named(UNCHECKED) {
        all.push(Alloc {
            name: UNCHECKED,
            preload: Some(root().join(UNCHECKED_DIR).join("release/libhakmem.so")),
            linked: false,
            expect: "hakmem",
        });
    }
    let competitors = [
        ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0"), // Debian's 2.0.9
        ("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
        (
            "tcmalloc",
            "libtcmalloc_minimal.so.4",
            "libtcmalloc-minimal4",
        ),
    ];
    let missing: Vec<&str> = competitors
        .iter()
        .filter(|(n, lib, _)| wanted(n) && !Path::new(LIBDIR).join(lib).exists())
        .map(|c| c.2)
        .collect();
    let mut notes = vec![];
    if !missing.is_empty() && o.install {
        if let Err(e) = deps::apt_install(&missing) {
            notes.push(format!("could not install {}: {e}", missing.join(" ")));
        }
    }
    for (name, lib, pkg) in competitors {
        let p = Path::new(LIBDIR).join(lib);
        if p.exists() {
            all.push(Alloc {
                name,
                preload: Some(p),
                linked: false,
                // Debian's is 2.0.x; the newest builds must not pass for it.
                expect: if name == "mimalloc" {
                    "mimalloc 2.0."
                } else {
                    name
                },
            });
        } else if wanted(name) {
            notes.push(format!(
                "{name} not measured: not installed (apt-get install {pkg})"
            ));
        }
    }
    for (name, built, expect) in crate::anchors::built() {
        if !wanted(name) {
            continue;
        }
        match built {
            Ok(p) => all.push(Alloc {
                name,
                preload: Some(p),
                linked: false,
                expect,
            }),
            Err(e) => notes.push(format!("{name} not measured: {e}")),
        }
    }
    all.retain(|a| wanted(a.name));
    (all, notes)
}

/// Builds the LD_PRELOAD library and the benchmark programs (release).
pub fn build_preload_and_programs() -> Result<(), String> {
    crate::build_preload(&[])?;
    run(
        "build benchmark programs (release)",
        crate::cargo().args(["build", "--release", "-p", "hakmem-benches", "--bins"]),
    )
}

fn build(allocs: &[Alloc]) -> Result<(), String> {
    let cargo = crate::cargo;
    build_preload_and_programs()?;
    if allocs.iter().any(|a| a.name == UNCHECKED) {
        crate::build_preload(&["--no-default-features", "--target-dir", UNCHECKED_DIR])?;
    }
    run(
        "build benchmarks linked to hakmem (release)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "hakmem-benches",
            "--bins",
            "--features",
            "linked",
            "--target-dir",
            "target/bench-linked",
        ]),
    )
}

fn binary(bench: &str, a: &Alloc) -> PathBuf {
    if a.linked {
        root().join("target/bench-linked/release").join(bench)
    } else {
        root().join("target/release").join(bench)
    }
}

/// Runs one benchmark process; returns (ops/s, peak RSS KiB, identity line).
fn run_one(row: &Row, a: &Alloc) -> Result<(f64, u64, String), String> {
    let mut c = Command::new(binary(row.bench, a));
    c.args(&row.args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped());
    c.env_remove("LD_PRELOAD");
    if let Some(p) = &a.preload {
        c.env("LD_PRELOAD", p);
    }
    let out = c
        .output()
        .map_err(|e| format!("cannot start {}: {e}", row.bench))?;
    let text = crate::finished_output(&out)?;
    let field = |p: &str| text.lines().find_map(|l| l.strip_prefix(p)).map(str::trim);
    let ident = field("allocator:")
        .ok_or("no `allocator:` line")?
        .to_string();
    if !ident.starts_with(a.expect) {
        return Err(format!(
            "expected {} but the run was served by `{ident}`",
            a.expect
        ));
    }
    // The two hakmem libraries say which they are: neither may stand in for
    // the other.
    if a.name.starts_with("hakmem") && ident.contains(UNCHECKED_MARK) != (a.name == UNCHECKED) {
        return Err(format!(
            "expected {} but the run was served by `{ident}`",
            a.name
        ));
    }
    if a.linked && !ident.contains(&binary(row.bench, a).display().to_string()) {
        return Err(format!(
            "expected malloc from the benchmark binary itself, got `{ident}`"
        ));
    }
    let key = match row.unit {
        Unit::Ops => "Throughput =",
        Unit::ReturnedPct => "returned_pct:",
    };
    let ops = field(key)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or(format!("no `{key}` line"))?;
    let rss = field("peak_rss_kib:")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((ops, rss, ident))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    }
}

fn human(ops: f64) -> String {
    if ops >= 1e6 {
        format!("{:.2}M", ops / 1e6)
    } else {
        format!("{:.0}k", ops / 1e3)
    }
}

pub fn bench(args: &[String]) -> Result<(), String> {
    let (name, o) = parse(args)?;
    let rows = rows(&name, &o)?;
    let (allocs, notes) = allocators(&o);
    if allocs.is_empty() {
        return Err("no allocator selected".into());
    }
    build(&allocs)?;
    // Reject bad benchmark arguments up front, with the program's own message,
    // instead of reporting a table of invalid runs. A zero-second Larson run is
    // cheap; the other programs validate before doing any work.
    if let Some(row) = rows.iter().find(|r| r.bench == "larson") {
        let mut args = row.args.clone();
        args[0] = "0".into();
        let out = Command::new(root().join("target/release/larson"))
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot start larson: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "larson rejected its arguments: {}",
                err.lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ")
            ));
        }
    }
    let total = rows.len() * allocs.len() * o.runs;
    let mut cells = vec![vec![Cell::default(); allocs.len()]; rows.len()];
    let t0 = Instant::now();
    let mut k = 0;
    for run_i in 0..o.runs {
        for (ri, row) in rows.iter().enumerate() {
            // Interleave, rotating who goes first, so drift hits everyone alike.
            for j in 0..allocs.len() {
                let ai = (j + run_i + ri) % allocs.len();
                let a = &allocs[ai];
                k += 1;
                crate::progress(&format!(
                    "[{k}/{total}] {} {}T {:<14} run {}/{} ({:.0}s elapsed)",
                    row.label,
                    row.threads,
                    a.name,
                    run_i + 1,
                    o.runs,
                    t0.elapsed().as_secs_f64()
                ));
                let cell = &mut cells[ri][ai];
                match run_one(row, a) {
                    Ok((ops, rss, ident)) => {
                        cell.ops.push(ops);
                        cell.by_run.push(Some(ops));
                        cell.rss_kib.push(rss);
                        cell.identity = ident;
                    }
                    Err(e) => {
                        cell.by_run.push(None);
                        cell.invalid.push(e);
                    }
                }
            }
        }
    }
    eprintln!(
        "\r\x1b[2Kdone: {total} runs in {:.0}s",
        t0.elapsed().as_secs_f64()
    );
    if cells.iter().flatten().all(|c| c.ops.is_empty()) {
        let first = cells
            .iter()
            .flatten()
            .flat_map(|c| c.invalid.first())
            .next()
            .cloned()
            .unwrap_or_default();
        return Err(format!("no valid run at all; first failure: {first}"));
    }
    let report = table(&rows, &allocs, &cells, &o);
    println!("{report}");
    for n in &notes {
        println!("note: {n}");
    }
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let json = dir.join(format!("{name}-{stamp}.json"));
    let svg = dir.join(format!("{name}-{stamp}.svg"));
    let tbl = dir.join(format!("{name}-{stamp}.txt"));
    write(&json, &to_json(&name, &rows, &allocs, &cells, &o))?;
    write(&svg, &to_svg(&name, &rows, &allocs, &cells))?;
    write(&tbl, &report)?;
    println!(
        "results: {}\nchart:   {}\ntable:   {}",
        json.display(),
        svg.display(),
        tbl.display()
    );
    Ok(())
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    std::fs::write(p, s).map_err(|e| format!("{}: {e}", p.display()))
}

fn table(rows: &[Row], allocs: &[Alloc], cells: &[Vec<Cell>], o: &Opts) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nMedian throughput of {} interleaved runs (ops/s), [min-max], and median peak RSS.",
        o.runs
    );
    if rows.iter().any(|r| r.unit == Unit::ReturnedPct) {
        let _ = writeln!(
            s,
            "rss_return: % of a 1 GiB peak of 256-byte blocks no longer resident 1 s after\nfreeing them all, with no call (higher is better); RSS column: process peak."
        );
    }
    let _ = writeln!(s, "Allocators measured (as each run reported itself):");
    for (ai, a) in allocs.iter().enumerate() {
        let id = cells
            .iter()
            .map(|r| &r[ai].identity)
            .find(|i| !i.is_empty())
            .cloned()
            .unwrap_or_else(|| "no valid run".into());
        let _ = writeln!(s, "  {:<14} {id}", a.name);
    }
    let _ = writeln!(s);
    let hak = allocs.iter().position(|a| a.name == "hakmem");
    let mim = allocs.iter().position(|a| a.name == "mimalloc");
    let _ = write!(s, "{:<22}", "benchmark");
    for a in allocs {
        let _ = write!(s, " | {:>26}", a.name);
    }
    let _ = writeln!(s, " | hakmem/mimalloc | hakmem/best other | paired");
    let _ = writeln!(s, "{}", "-".repeat(22 + allocs.len() * 29 + 60));
    for (ri, row) in rows.iter().enumerate() {
        let _ = write!(s, "{:<22}", format!("{} {}T", row.label, row.threads));
        for c in &cells[ri] {
            if c.ops.is_empty() {
                let _ = write!(s, " | {:>26}", "INVALID");
                continue;
            }
            let mn = c.ops.iter().cloned().fold(f64::MAX, f64::min);
            let mx = c.ops.iter().cloned().fold(0.0, f64::max);
            let rss = median(&c.rss_kib.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let fmt = |v: f64| match row.unit {
                Unit::Ops => human(v),
                Unit::ReturnedPct => format!("{v:.1}%"),
            };
            let _ = write!(
                s,
                " | {:>26}",
                format!(
                    "{} [{}-{}] {:.1}M",
                    fmt(median(&c.ops)),
                    fmt(mn),
                    fmt(mx),
                    rss / 1024.0
                )
            );
        }
        let med = |ai: usize| (!cells[ri][ai].ops.is_empty()).then(|| median(&cells[ri][ai].ops));
        let ratio = |other: Option<f64>| match (hak.and_then(med), other) {
            (Some(h), Some(x)) if x > 0.0 => format!("{:.2}x", h / x),
            _ => "-".into(),
        };
        let best = (0..allocs.len())
            .filter(|&i| !allocs[i].name.starts_with("hakmem"))
            .filter_map(|i| med(i).map(|m| (m, i)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        // The same ratio taken within each interleaving round, then the
        // median: steadier than a ratio of medians when the machine's speed
        // drifts between rounds.
        let paired = match (hak, best) {
            (Some(h), Some((m, b))) if m > 0.0 => {
                let r: Vec<f64> = cells[ri][h]
                    .by_run
                    .iter()
                    .zip(&cells[ri][b].by_run)
                    .filter_map(|(x, y)| match (x, y) {
                        (Some(x), Some(y)) if *y > 0.0 => Some(x / y),
                        _ => None,
                    })
                    .collect();
                if r.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2}x (n={})", median(&r), r.len())
                }
            }
            _ => "-".into(),
        };
        let vs = match best {
            Some((m, b)) if m > 0.0 => format!("{} (vs {})", ratio(Some(m)), allocs[b].name),
            Some(_) => "- (every other allocator: 0)".into(),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            " | {:>15} | {:<27} | {}",
            ratio(mim.and_then(med)),
            vs,
            paired
        );
    }
    let invalid: Vec<String> = rows
        .iter()
        .enumerate()
        .flat_map(|(ri, row)| {
            allocs.iter().enumerate().flat_map(move |(ai, a)| {
                cells[ri][ai]
                    .invalid
                    .iter()
                    .map(move |e| format!("  {} {}T {}: {e}", row.label, row.threads, a.name))
            })
        })
        .collect();
    if !invalid.is_empty() {
        let _ = writeln!(s, "\nInvalid runs (not counted):");
        for l in invalid {
            let _ = writeln!(s, "{l}");
        }
    }
    s
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn to_json(name: &str, rows: &[Row], allocs: &[Alloc], cells: &[Vec<Cell>], o: &Opts) -> String {
    let mut s = format!(
        "{{\n  \"benchmark\": \"{}\",\n  \"runs\": {},\n  \"rows\": [\n",
        esc(name),
        o.runs
    );
    for (ri, row) in rows.iter().enumerate() {
        let _ = write!(
            s,
            "    {{\"bench\": \"{}\", \"unit\": \"{}\", \"threads\": {}, \"args\": [{}], \"results\": [",
            row.label,
            match row.unit {
                Unit::Ops => "ops_per_s",
                Unit::ReturnedPct => "returned_pct",
            },
            row.threads,
            row.args
                .iter()
                .map(|a| format!("\"{}\"", esc(a)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (ai, a) in allocs.iter().enumerate() {
            let c = &cells[ri][ai];
            let _ = write!(
                s,
                "{}\n      {{\"allocator\": \"{}\", \"identity\": \"{}\", \"ops_per_s\": [{}], \"median_ops_per_s\": {:.0}, \"peak_rss_kib\": [{}], \"invalid\": [{}]}}",
                if ai == 0 { "" } else { "," },
                a.name,
                esc(&c.identity),
                c.ops.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(", "),
                median(&c.ops),
                c.rss_kib.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
                c.invalid.iter().map(|e| format!("\"{}\"", esc(e))).collect::<Vec<_>>().join(", ")
            );
        }
        let _ = write!(
            s,
            "\n    ]}}{}\n",
            if ri + 1 < rows.len() { "," } else { "" }
        );
    }
    s.push_str("  ]\n}\n");
    s
}

fn to_svg(name: &str, rows: &[Row], allocs: &[Alloc], cells: &[Vec<Cell>]) -> String {
    let color = |a: &Alloc| match a.name {
        "hakmem" => "#d62728",
        "hakmem-linked" => "#ff9896",
        UNCHECKED => "#ffbb78",
        "glibc" => "#7f7f7f",
        "mimalloc" => "#1f77b4",
        "jemalloc" => "#2ca02c",
        "mimalloc-3.3" => "#17becf",
        "mimalloc-2.3" => "#aec7e8",
        _ => "#9467bd",
    };
    let (w, h, left, top, bottom) = (960.0, 440.0, 60.0, 40.0, 96.0);
    let plot_h = h - top - bottom;
    let group_w = (w - left - 20.0) / rows.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / allocs.len() as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"14\">{}: median throughput relative to the fastest allocator of each row (higher is better)</text>\n",
        esc(name)
    );
    for i in 0..=4 {
        let v = i as f64 / 4.0;
        let y = top + plot_h - plot_h * v;
        let _ = writeln!(s, "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}x</text>", w - 20.0, left - 6.0, y + 4.0);
    }
    for (ri, row) in rows.iter().enumerate() {
        let gx = left + group_w * ri as f64 + group_w * 0.1;
        let best = cells[ri]
            .iter()
            .map(|c| median(&c.ops))
            .fold(0.0, f64::max)
            .max(1e-9);
        for (ai, a) in allocs.iter().enumerate() {
            let m = median(&cells[ri][ai].ops);
            let bh = plot_h * m / best;
            let x = gx + bar_w * ai as f64;
            let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"><title>{} ops/s ({:.2}x best)</title></rect>", top + plot_h - bh, bar_w * 0.9, color(a), human(m), m / best);
        }
        // Stagger the labels so that neighbours never overlap.
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} {}T</text>",
            gx + group_w * 0.4,
            top + plot_h + 16.0 + 14.0 * (ri % 2) as f64,
            row.label,
            row.threads
        );
    }
    for (ai, a) in allocs.iter().enumerate() {
        let x = left + 130.0 * ai as f64;
        let y = h - 20.0;
        let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{y:.1}\">{}</text>", y - 10.0, color(a), x + 16.0, a.name);
    }
    s.push_str("</svg>\n");
    s
}
