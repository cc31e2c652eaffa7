//! `LD_PRELOAD` suite: real programs run once without and three times with the
//! preloaded allocator; stdout and exit status must be identical every time.
//!
//! The library is `$HAKMEM_PRELOAD_SO`, or else `<workspace>/target/release/libhakmem.so`
//! (build it with `cargo build --release -p hakmem_preload`). A missing library or a
//! missing program is a test failure, never a skip. Scratch files live under
//! cargo's target tmp dir and are kept when a test fails. See
//! `tests/preload/README.md` for what each program checks.

mod common;
use common::{describe, drain_output, kill_group, preload_lib, tail};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How many times each program runs under the preload (after one plain run).
const PRELOADED_RUNS: usize = 3;
/// Per-command limit; a hung allocator (deadlock) fails instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// locating things

/// Finds a program: absolute candidates are used as they are, bare names are
/// searched in $PATH. Fails with the Debian package to install.
fn find_tool(candidates: &[&str], package: &str) -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for cand in candidates {
        let c = Path::new(cand);
        if c.is_absolute() {
            if c.is_file() {
                return c.to_path_buf();
            }
            continue;
        }
        for dir in std::env::split_paths(&path_var) {
            let full = dir.join(c);
            if full.is_file() {
                return full;
            }
        }
    }
    panic!(
        "required program `{}` not found (PATH={}): install the Debian package `{package}` \
         (apt-get install -y {package})",
        candidates.last().copied().unwrap_or("?"),
        path_var.to_string_lossy()
    );
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/preload")
}

// ---------------------------------------------------------------------------
// scratch directories

/// A fresh directory per test under cargo's target tmp dir; removed when the
/// test passes, kept for inspection when it fails.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("preload")
            .join(format!("{test}-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove stale scratch dir");
        }
        fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("scratch files kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------
// running commands

struct Finished {
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

/// Runs `cmd` to completion (or until `STEP_TIMEOUT`), capturing stdout/stderr.
fn execute(mut cmd: Command, stdin: Option<&Path>) -> Finished {
    let stdin = match stdin {
        Some(p) => {
            Stdio::from(fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display())))
        }
        None => Stdio::null(),
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", cmd.get_program().to_string_lossy()));
    let (out_t, err_t) = drain_output(&mut child);
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(st) => break describe(st),
            None if start.elapsed() > STEP_TIMEOUT => {
                kill_group(&child);
                let _ = child.wait();
                break format!("TIMEOUT after {}s (killed)", STEP_TIMEOUT.as_secs());
            }
            None => thread::sleep(Duration::from_millis(5)),
        }
    };
    let elapsed = start.elapsed();
    Finished {
        status,
        stdout: out_t.join().expect("stdout reader"),
        stderr: err_t.join().expect("stderr reader"),
        elapsed,
    }
}

struct Record {
    label: String,
    status: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// One run of a scenario: every command gets the same controlled environment,
/// plus `LD_PRELOAD` when `preload` is set.
struct Session<'a> {
    preload: Option<&'a Path>,
    work: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    records: Vec<Record>,
    broken: bool,
}

impl Session<'_> {
    /// A command for `program` with a clean, fixed environment and cwd = work dir.
    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .current_dir(&self.work)
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            )
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .env("TZ", "UTC")
            .env("HOME", &self.home)
            .env("TMPDIR", &self.tmp)
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PERL_HASH_SEED", "0")
            .env("PERL_PERTURB_KEYS", "0");
        if let Some(so) = self.preload {
            c.env("LD_PRELOAD", so);
        }
        c
    }

    fn run(&mut self, label: &str, cmd: Command) {
        self.run_input(label, cmd, None);
    }

    fn run_input(&mut self, label: &str, cmd: Command, stdin: Option<&Path>) {
        if self.broken {
            // An earlier step crashed or hung under the preload; do not pile on.
            self.records.push(Record {
                label: label.to_string(),
                status: "skipped (earlier step failed)".into(),
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
            return;
        }
        let f = execute(cmd, stdin);
        let stderr_text = String::from_utf8_lossy(&f.stderr);
        if let Some(so) = self.preload {
            assert!(
                !stderr_text.contains("cannot be preloaded"),
                "ld.so refused to preload {}: {stderr_text}",
                so.display()
            );
        }
        if f.status != "exit 0" && self.preload.is_some() {
            self.broken = true;
        }
        eprintln!(
            "  {:<9} {label}: {} in {:.2}s",
            if self.preload.is_some() {
                "preloaded"
            } else {
                "plain"
            },
            f.status,
            f.elapsed.as_secs_f64()
        );
        self.records.push(Record {
            label: label.to_string(),
            status: f.status,
            stdout: f.stdout,
            stderr: f.stderr,
        });
    }
}

fn transcript(records: &[Record]) -> Vec<u8> {
    let mut t = Vec::new();
    for r in records {
        t.extend_from_slice(format!("$ {}\n", r.label).as_bytes());
        t.extend_from_slice(&r.stdout);
        t.extend_from_slice(format!("\n[{}]\n", r.status).as_bytes());
    }
    t
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    let (la, lb): (Vec<&[u8]>, Vec<&[u8]>) = (
        a.split(|&c| c == b'\n').collect(),
        b.split(|&c| c == b'\n').collect(),
    );
    for i in 0..la.len().max(lb.len()) {
        let x = la.get(i).copied();
        let y = lb.get(i).copied();
        if x != y {
            let show = |l: Option<&[u8]>| match l {
                Some(l) => format!("{:?}", tail(l, 300)),
                None => "<end of output>".to_string(),
            };
            return format!("line {}: plain {} vs preloaded {}", i + 1, show(x), show(y));
        }
    }
    "outputs identical".into()
}

/// Runs `scenario` once plainly and `PRELOADED_RUNS` times under the preload,
/// each time in a freshly emptied work dir at the same path, and asserts that
/// every command's stdout and exit status match the plain run.
fn compare_runs(test: &str, so: &Path, scratch: &Scratch, scenario: &dyn Fn(&mut Session)) {
    eprintln!("[{test}] preloading {}", so.display());
    let mut plain: Option<Vec<Record>> = None;
    for run in 0..=PRELOADED_RUNS {
        let preload = (run > 0).then_some(so);
        let work = scratch.path("work");
        let home = scratch.path("home");
        let tmp = scratch.path("tmp");
        for d in [&work, &home, &tmp] {
            if d.exists() {
                fs::remove_dir_all(d).expect("clear scratch subdir");
            }
            fs::create_dir_all(d).expect("create scratch subdir");
        }
        let mut s = Session {
            preload,
            work,
            home,
            tmp,
            records: Vec::new(),
            broken: false,
        };
        scenario(&mut s);
        let records = s.records;
        match &plain {
            None => {
                for r in &records {
                    assert!(
                        r.status == "exit 0",
                        "[{test}] step `{}` failed WITHOUT the preload ({}); the test environment is broken, \
                         not the allocator. stderr:\n{}",
                        r.label,
                        r.status,
                        tail(&r.stderr, 4000)
                    );
                }
                plain = Some(records);
            }
            Some(base) => {
                assert_eq!(
                    base.len(),
                    records.len(),
                    "[{test}] scenario ran a different number of steps"
                );
                for (b, r) in base.iter().zip(&records) {
                    if b.status == r.status && b.stdout == r.stdout {
                        continue;
                    }
                    let pf = scratch.path("plain.out");
                    let rf = scratch.path(&format!("preloaded-{run}.out"));
                    fs::write(&pf, transcript(base)).expect("write transcript");
                    fs::write(&rf, transcript(&records)).expect("write transcript");
                    let mut msg = String::new();
                    let _ = writeln!(
                        msg,
                        "[{test}] preloaded run {run}/{PRELOADED_RUNS} of `{}` differs from the plain run \
                         (LD_PRELOAD={})",
                        r.label,
                        so.display()
                    );
                    let _ = writeln!(
                        msg,
                        "  status: plain `{}`, preloaded `{}`",
                        b.status, r.status
                    );
                    if b.stdout != r.stdout {
                        let _ =
                            writeln!(msg, "  stdout: {}", first_difference(&b.stdout, &r.stdout));
                    }
                    let _ = writeln!(msg, "  preloaded stderr:\n{}", tail(&r.stderr, 4000));
                    let _ = writeln!(
                        msg,
                        "  full transcripts: {} and {}",
                        pf.display(),
                        rf.display()
                    );
                    panic!("{msg}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// compiling the test programs (always without the preload)

fn compile(scratch: &Scratch, compiler: &Path, src: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let exe = scratch.path(out);
    let mut c = Command::new(compiler);
    c.arg("-O2")
        .arg("-g")
        .arg("-pthread")
        .arg("-Wall")
        .arg("-Wextra")
        .args(extra)
        .arg("-o")
        .arg(&exe)
        .arg(src)
        .arg("-ldl")
        .env_remove("LD_PRELOAD");
    let f = execute(c, None);
    assert!(
        f.status == "exit 0",
        "compiling {} with {} failed ({}):\n{}",
        src.display(),
        compiler.display(),
        f.status,
        tail(&f.stderr, 6000)
    );
    exe
}

fn cc() -> PathBuf {
    find_tool(&["cc"], "gcc")
}

fn cxx() -> PathBuf {
    find_tool(&["c++"], "g++")
}

/// Deterministic pseudo-random numbers for generated inputs.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn word(&mut self) -> String {
        let len = 2 + self.below(10);
        (0..len)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz"[self.below(26) as usize]))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// the tests

#[test]
fn preload_is_active() {
    let so = preload_lib();
    eprintln!("[preload_is_active] preloading {}", so.display());
    let scratch = Scratch::new("active");
    let src = scratch.path("probe.c");
    fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
int main(void)
{
    const char *(*f)(void);
    void *sym = dlsym(RTLD_DEFAULT, "hakmem_version");
    if (sym == NULL) {
        printf("hakmem_version: not found\n");
        return 3;
    }
    *(void **)&f = sym;
    const char *v = f();
    printf("%s\n", v ? v : "(null)");
    void *p = malloc(100); /* and the allocator works at all */
    free(p);
    return 0;
}
"#,
    )
    .expect("write probe.c");
    let exe = compile(&scratch, &cc(), &src, "probe", &[]);

    let mut c = Command::new(&exe);
    c.env_remove("LD_PRELOAD");
    let plain = execute(c, None);
    assert_eq!(
        (
            plain.status.as_str(),
            String::from_utf8_lossy(&plain.stdout).trim()
        ),
        ("exit 3", "hakmem_version: not found"),
        "probe without preload should not find hakmem_version"
    );

    let mut c = Command::new(&exe);
    c.env("LD_PRELOAD", &so);
    let f = execute(c, None);
    let out = String::from_utf8_lossy(&f.stdout);
    let err = String::from_utf8_lossy(&f.stderr);
    assert!(
        !err.contains("cannot be preloaded"),
        "ld.so refused to preload {}: {err}",
        so.display()
    );
    assert!(
        f.status == "exit 0" && out.starts_with("hakmem "),
        "preloaded library {} is not hakmem: hakmem_version() {} (status {}, stdout {:?}, stderr {:?})",
        so.display(),
        if f.status == "exit 3" { "is not exported" } else { "did not return \"hakmem ...\"" },
        f.status,
        out.trim(),
        tail(&f.stderr, 2000)
    );
    eprintln!("[preload_is_active] hakmem_version() = {}", out.trim());
}

#[test]
fn c_stress() {
    let so = preload_lib();
    let scratch = Scratch::new("stress");
    let exe = compile(
        &scratch,
        &cc(),
        &source_dir().join("stress.c"),
        "stress",
        &["-fno-builtin"],
    );
    compare_runs("c_stress", &so, &scratch, &|s| {
        // threads, seed, ops per thread, blocks per producer, churn threads
        let mut c = s.command(&exe);
        c.args(["4", "12345", "150000", "40000", "2000"]);
        s.run("stress 4 12345 150000 40000 2000", c);
        let mut c = s.command(&exe);
        c.args(["1", "777", "50000", "5000", "200"]);
        s.run("stress 1 777 50000 5000 200", c);
    });
}

#[test]
fn c_foreign_pointers() {
    let so = preload_lib();
    let scratch = Scratch::new("foreign");
    let exe = compile(
        &scratch,
        &cc(),
        &source_dir().join("foreign.c"),
        "foreign",
        &["-fno-builtin"],
    );
    compare_runs("c_foreign_pointers", &so, &scratch, &|s| {
        let mut c = s.command(&exe);
        c.args(["1000000", "42"]);
        s.run("foreign 1000000 42", c);
    });
}

#[test]
fn cxx_new_delete_containers() {
    let so = preload_lib();
    let scratch = Scratch::new("cxx");
    let exe = compile(
        &scratch,
        &cxx(),
        &source_dir().join("cxx.cpp"),
        "cxx",
        &["-std=c++17"],
    );
    compare_runs("cxx_new_delete_containers", &so, &scratch, &|s| {
        let mut c = s.command(&exe);
        c.args(["4", "50000"]);
        s.run("cxx 4 50000", c);
    });
}

#[test]
fn gcc_compiles() {
    let so = preload_lib();
    // The compiler itself (cc1, as) as a large real program under the preload.
    let scratch = Scratch::new("gcc");
    let cc = cc();
    let src = source_dir().join("stress.c");
    compare_runs("gcc_compiles", &so, &scratch, &|s| {
        let mut c = s.command(&cc);
        c.args(["-O2", "-S", "-o", "-"]).arg(&src);
        s.run("cc -O2 -S -o - stress.c", c);
    });
}

const PYTHON_SCRIPT: &str = r#"
import collections, hashlib, json, re, threading

def work(i, out):
    d = {}
    lst = []
    for k in range(30000):
        key = "k%d_%d" % (i, (k * 7919) % 1009)
        d[key] = d.get(key, 0) + k
        lst.append(str(k) * (k % 9))
        if len(lst) > 400:
            del lst[:200]
    s = " ".join(sorted(d)).upper().replace("K", "key_")
    words = collections.Counter(re.split(r"[ _]", s))
    blob = json.dumps({"d": d, "l": lst[:50]}, sort_keys=True)
    big = [bytes(range(256)) * (j % 40) for j in range(3000)]
    out[i] = (sum(d.values()), len(s), words.most_common(3), len(blob),
              hashlib.sha256(blob.encode()).hexdigest()[:16], sum(map(len, big)))

out = {}
threads = [threading.Thread(target=work, args=(i, out)) for i in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
for i in sorted(out):
    print(i, out[i])
text = "".join(str(x) for x in range(300000))
print(len(text), text.count("12"), sorted(set(text[:1000]))[:5])
m = {str(i): [i] * (i % 13) for i in range(100000)}
print(len(m), sum(len(v) for v in m.values()))
"#;

#[test]
fn python3_threads() {
    let so = preload_lib();
    let scratch = Scratch::new("python");
    // Prefer the system interpreter over e.g. pyenv shims (shell scripts).
    let py = find_tool(&["/usr/bin/python3", "python3"], "python3");
    compare_runs("python3_threads", &so, &scratch, &|s| {
        for mode in ["malloc", "pymalloc"] {
            let mut c = s.command(&py);
            // PYTHONMALLOC=malloc sends every object allocation to malloc.
            c.env("PYTHONMALLOC", mode)
                .args(["-s", "-c", PYTHON_SCRIPT]);
            s.run(
                &format!("PYTHONMALLOC={mode} python3 -c <threads script>"),
                c,
            );
        }
    });
}

const PERL_SCRIPT: &str = r#"
use strict; use warnings;
my %h;
for my $i (1 .. 200000) { my $k = "key" . (($i * 7919) % 100003); $h{$k} .= chr(65 + $i % 26); }
my @keys = sort { length($h{$b}) <=> length($h{$a}) || $a cmp $b } keys %h;
print scalar(@keys), "\n";
print "$_ $h{$_}\n" for @keys[0 .. 9];
my $text = join(" ", map { "word$_" x ($_ % 5) } 1 .. 50000);
my @m = ($text =~ /(word\d*7)\b/g);
print scalar(@m), "\n";
(my $t2 = $text) =~ s/word(\d+)/W$1/g;
print length($t2), "\n";
my @sorted = sort { $a <=> $b } map { ($_ * 2654435761) % 1000003 } 1 .. 100000;
print "@sorted[0 .. 9]\n";
my %count; $count{$_ % 97}++ for @sorted;
print join(",", map { "$_=$count{$_}" } sort { $a <=> $b } keys %count), "\n";
my @aoa = map { [ split //, sprintf("%08d", $_) ] } 1 .. 20000;
my $s = 0; $s += $_->[7] for @aoa; print "$s\n";
"#;

#[test]
fn perl_script() {
    let so = preload_lib();
    let scratch = Scratch::new("perl");
    let perl = find_tool(&["perl"], "perl");
    compare_runs("perl_script", &so, &scratch, &|s| {
        let mut c = s.command(&perl);
        c.args(["-e", PERL_SCRIPT]);
        s.run("perl -e <hash/regex/sort script>", c);
    });
}

fn write_tree(root: &Path, rng: &mut Lcg, files: usize, tag: &str) {
    for i in 0..files {
        let dir = root.join(format!("dir{}", i % 17));
        fs::create_dir_all(&dir).expect("mkdir");
        let mut body = String::new();
        let lines = 5 + rng.below(200);
        for l in 0..lines {
            let _ = writeln!(
                body,
                "{tag} line {l} {} {} {}",
                rng.word(),
                rng.word(),
                rng.below(100_000)
            );
        }
        fs::write(dir.join(format!("file{i}.txt")), body).expect("write file");
    }
}

#[test]
fn git_repo() {
    let so = preload_lib();
    let scratch = Scratch::new("git");
    let git = find_tool(&["git"], "git");
    compare_runs("git_repo", &so, &scratch, &|s| {
        let repo = s.work.clone();
        let g = |s: &Session, args: &[&str]| {
            let mut c = s.command(&git);
            c.env("GIT_AUTHOR_NAME", "Preload Test")
                .env("GIT_AUTHOR_EMAIL", "preload@example.invalid")
                .env("GIT_COMMITTER_NAME", "Preload Test")
                .env("GIT_COMMITTER_EMAIL", "preload@example.invalid")
                .env("GIT_AUTHOR_DATE", "2020-01-02T03:04:05 +0000")
                .env("GIT_COMMITTER_DATE", "2020-01-02T03:04:05 +0000")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_TERMINAL_PROMPT", "0")
                .env("GIT_PAGER", "cat")
                .env("GIT_CONFIG_COUNT", "4")
                .env("GIT_CONFIG_KEY_0", "gc.autoDetach")
                .env("GIT_CONFIG_VALUE_0", "false")
                .env("GIT_CONFIG_KEY_1", "maintenance.autoDetach")
                .env("GIT_CONFIG_VALUE_1", "false")
                .env("GIT_CONFIG_KEY_2", "pack.threads")
                .env("GIT_CONFIG_VALUE_2", "2")
                .env("GIT_CONFIG_KEY_3", "core.autocrlf")
                .env("GIT_CONFIG_VALUE_3", "false")
                .args(args);
            c
        };
        let mut rng = Lcg(2024);
        let run = |s: &mut Session, args: &[&str]| {
            let c = g(s, args);
            s.run(&format!("git {}", args.join(" ")), c);
        };
        run(s, &["init", "-q", "-b", "main", "."]);
        write_tree(&repo, &mut rng, 300, "v1");
        run(s, &["add", "-A"]);
        run(s, &["commit", "-q", "-m", "initial import"]);
        write_tree(&repo, &mut rng, 120, "v2");
        fs::remove_file(repo.join("dir3/file3.txt")).expect("rm");
        run(s, &["add", "-A"]);
        run(s, &["commit", "-q", "-m", "second: rewrite some files"]);
        run(s, &["checkout", "-q", "-b", "feature"]);
        fs::write(repo.join("dir5/feature.txt"), "feature work\n".repeat(1000)).expect("write");
        write_tree(&repo.join("feature"), &mut rng, 40, "feat");
        run(s, &["add", "-A"]);
        run(s, &["commit", "-q", "-m", "feature branch"]);
        run(s, &["checkout", "-q", "main"]);
        write_tree(&repo.join("mainline"), &mut rng, 40, "main");
        run(s, &["add", "-A"]);
        run(s, &["commit", "-q", "-m", "mainline work"]);
        run(s, &["merge", "-q", "--no-edit", "feature"]);
        run(
            s,
            &[
                "log",
                "--format=%H %an <%ae> %ad %s",
                "--date=iso",
                "--graph",
            ],
        );
        run(s, &["log", "--stat", "--format=%h %s"]);
        run(s, &["diff", "--stat", "HEAD~2", "HEAD"]);
        run(s, &["grep", "-c", "line 1 ", "HEAD"]);
        run(s, &["gc", "-q"]);
        run(s, &["fsck", "--full", "--strict", "--no-progress"]);
        run(s, &["repack", "-a", "-d", "-f", "-q", "--window=50"]);
        run(s, &["fsck", "--full", "--strict", "--no-progress"]);
        run(s, &["cat-file", "--batch-all-objects", "--batch-check"]);
        run(s, &["rev-list", "--objects", "--all"]);
        run(s, &["log", "-p", "-2", "--format=%H"]);
        run(s, &["status", "--porcelain"]);
    });
}

fn sqlite_script() -> String {
    let mut rng = Lcg(7);
    let mut sql = String::new();
    sql.push_str(
        "PRAGMA journal_mode=DELETE;\n\
         CREATE TABLE items(id INTEGER PRIMARY KEY, grp INTEGER NOT NULL, name TEXT NOT NULL, \
         qty INTEGER NOT NULL, cents INTEGER NOT NULL);\n\
         BEGIN;\n",
    );
    for id in 1..=50_000u64 {
        let _ = writeln!(
            sql,
            "INSERT INTO items VALUES({id},{},'{}-{}',{},{});",
            rng.below(100),
            rng.word(),
            rng.word(),
            rng.below(1000),
            rng.below(1_000_000)
        );
    }
    sql.push_str(
        "COMMIT;\n\
         CREATE INDEX items_grp ON items(grp, qty);\n\
         CREATE INDEX items_name ON items(name);\n\
         SELECT count(*), sum(qty), sum(cents) FROM items;\n\
         SELECT grp, count(*), sum(qty), min(name), max(name) FROM items GROUP BY grp ORDER BY grp;\n\
         SELECT name, qty FROM items WHERE grp = 7 ORDER BY qty DESC, id LIMIT 20;\n\
         SELECT substr(name, 1, 3) AS p, count(*) FROM items GROUP BY p ORDER BY count(*) DESC, p LIMIT 20;\n\
         SELECT name, cents FROM items ORDER BY cents DESC, name LIMIT 5 OFFSET 1000;\n\
         CREATE TABLE groups AS SELECT grp, avg(qty) AS a FROM items GROUP BY grp;\n\
         SELECT i.grp, count(*) FROM items i JOIN groups g ON i.grp = g.grp WHERE i.qty > g.a \
         GROUP BY i.grp ORDER BY i.grp;\n\
         UPDATE items SET qty = qty + 1 WHERE id % 3 = 0;\n\
         DELETE FROM items WHERE id % 10 = 0;\n\
         SELECT count(*), sum(qty) FROM items;\n\
         SELECT group_concat(name, ',') FROM (SELECT name FROM items ORDER BY name LIMIT 30);\n\
         WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 20000) \
         SELECT count(*), sum(length(printf('%0100d', x))) FROM c;\n\
         VACUUM;\n\
         PRAGMA integrity_check;\n",
    );
    sql
}

#[test]
fn sqlite3_db() {
    let so = preload_lib();
    let scratch = Scratch::new("sqlite");
    let sqlite = find_tool(&["sqlite3"], "sqlite3");
    let script = scratch.path("script.sql");
    fs::write(&script, sqlite_script()).expect("write script.sql");
    compare_runs("sqlite3_db", &so, &scratch, &|s| {
        let mut c = s.command(&sqlite);
        c.args(["-batch", "-bail", "db.sqlite"]);
        s.run_input(
            "sqlite3 db.sqlite < script.sql (50k inserts, queries)",
            c,
            Some(&script),
        );
        let mut c = s.command(&sqlite);
        c.args([
            "-batch",
            "db.sqlite",
            "SELECT grp, count(*) FROM items WHERE name LIKE 'a%' GROUP BY grp ORDER BY 2 DESC, 1 LIMIT 10;",
        ]);
        s.run("sqlite3 db.sqlite <reopen and query>", c);
    });
}

#[test]
fn sort_file() {
    let so = preload_lib();
    let scratch = Scratch::new("sort");
    let sort = find_tool(&["sort"], "coreutils");
    let input = scratch.path("input.txt");
    {
        let mut rng = Lcg(99);
        let mut text = String::with_capacity(8 << 20);
        while text.len() < 6 << 20 {
            let _ = writeln!(
                text,
                "{} {} {} {}",
                rng.word(),
                rng.below(1_000_000),
                rng.word(),
                rng.word()
            );
        }
        fs::write(&input, text).expect("write input.txt");
    }
    compare_runs("sort_file", &so, &scratch, &|s| {
        let steps: &[&[&str]] = &[
            &[],
            &["--parallel=2", "-S", "10M"],
            &["-n", "-k2,2", "-t", " ", "--parallel=2", "-S", "1M"],
            &["-u", "-r", "-k3"],
        ];
        for args in steps {
            let mut c = s.command(&sort);
            c.args(*args).arg(&input);
            s.run(&format!("sort {} input.txt", args.join(" ")), c);
        }
    });
}
