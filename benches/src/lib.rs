//! Shared pieces of hakmem's benchmark programs.
//!
//! The programs allocate their payload through the C `malloc`/`free` symbols
//! (resolved at run time, so `LD_PRELOAD` picks the allocator), keep all their
//! bookkeeping in `bench_meta` memory, and print which allocator really served
//! them: the object that defines the `malloc` they call.

use std::ffi::{c_void, CStr};

/// The payload allocator: the process's C `malloc`.
#[inline(always)]
pub fn malloc(n: usize) -> *mut u8 {
    // SAFETY: plain C malloc.
    unsafe { libc::malloc(n).cast() }
}

/// The payload allocator's `free`.
///
/// # Safety
/// `p` is null or from [`malloc`] and not yet freed.
#[inline(always)]
pub unsafe fn free(p: *mut u8) {
    // SAFETY: per the contract.
    unsafe { libc::free(p.cast()) }
}

fn sym(name: &CStr) -> *mut c_void {
    // SAFETY: NUL-terminated name; RTLD_DEFAULT searches the global scope.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

fn object_of(p: *mut c_void) -> String {
    // SAFETY: zeroed Dl_info is a valid out-parameter.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads its address argument's mapping.
    if p.is_null() || unsafe { libc::dladdr(p, &mut info) } == 0 || info.dli_fname.is_null() {
        return "?".into();
    }
    // SAFETY: dladdr returned a NUL-terminated path.
    unsafe { CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned()
}

/// Names the allocator serving this process: `"<name> <version>"`, judged
/// by which object defines the `malloc` symbol this program calls.
pub fn identify() -> (String, String) {
    let malloc_obj = object_of(sym(c"malloc"));
    let hv = sym(c"hakmem_version");
    let base = malloc_obj.rsplit('/').next().unwrap_or("").to_string();
    let name = if let Some(v) = linked_hakmem(&malloc_obj) {
        v
    } else if !hv.is_null() && object_of(hv) == malloc_obj {
        type V = extern "C" fn() -> *const libc::c_char;
        // SAFETY: hakmem_version has this signature and returns a static string.
        let v = unsafe { CStr::from_ptr(std::mem::transmute::<*mut c_void, V>(hv)()) };
        v.to_string_lossy().into_owned()
    } else if base.contains("mimalloc") {
        let f = sym(c"mi_version");
        if f.is_null() {
            "mimalloc".into()
        } else {
            // SAFETY: mimalloc's `int mi_version(void)`.
            let v =
                unsafe { std::mem::transmute::<*mut c_void, extern "C" fn() -> libc::c_int>(f)() };
            // 2.0.9 reports 209; from 2.1 on: major, two digits minor, two patch.
            if v >= 10_000 {
                format!("mimalloc {}.{}.{}", v / 10_000, (v / 100) % 100, v % 100)
            } else {
                format!("mimalloc {}.{}.{}", v / 100, (v / 10) % 10, v % 10)
            }
        }
    } else if base.contains("snmalloc") {
        // snmalloc exports no version function; the harness builds 0.7.6.
        "snmalloc".into()
    } else if base.contains("jemalloc") {
        "jemalloc".into()
    } else if base.contains("tcmalloc") {
        let f = sym(c"tc_version");
        if f.is_null() {
            "tcmalloc".into()
        } else {
            type V = extern "C" fn(
                *mut libc::c_int,
                *mut libc::c_int,
                *mut *const libc::c_char,
            ) -> *const libc::c_char;
            // SAFETY: gperftools' `const char *tc_version(int*, int*, const char**)`.
            let s = unsafe {
                std::mem::transmute::<*mut c_void, V>(f)(
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
            // SAFETY: returns a static string.
            unsafe { CStr::from_ptr(s) }
                .to_string_lossy()
                .replace("gperftools", "tcmalloc")
        }
    } else if base.starts_with("libc.so") {
        // SAFETY: returns a static string.
        let v = unsafe { CStr::from_ptr(gnu_get_libc_version()) };
        format!("glibc {}", v.to_string_lossy())
    } else {
        format!("unknown ({base})")
    };
    (name, malloc_obj)
}

/// In the `linked` build: hakmem if `malloc` is defined by this executable and
/// hakmem owns what it returns.
#[cfg(feature = "linked")]
fn linked_hakmem(malloc_obj: &str) -> Option<String> {
    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let p = malloc(16);
    let ours = hakmem::owns(p);
    // SAFETY: from malloc above.
    unsafe { free(p) };
    (ours && exe.to_string_lossy() == malloc_obj).then(|| format!("{} (linked)", hakmem::VERSION))
}

#[cfg(not(feature = "linked"))]
fn linked_hakmem(_: &str) -> Option<String> {
    None
}

extern "C" {
    fn gnu_get_libc_version() -> *const libc::c_char;
}

/// Prints the identification line every benchmark starts its report with.
pub fn print_allocator() {
    let (name, obj) = identify();
    println!("allocator: {name} (malloc from {obj})");
}

/// Prints peak RSS in the form the harness reads.
pub fn print_peak_rss() {
    println!("peak_rss_kib: {}", bench_meta::peak_rss_kib());
}

/// The random generator of the original Larson benchmark (a shuffled linear
/// congruential generator with a 97-entry table), reproduced so that the
/// block-size and victim sequences match the C program's.
#[derive(Clone, Copy)]
pub struct Lran2 {
    x: i64,
    y: i64,
    v: [i64; 97],
}

const LRAN2_MAX: i64 = 714_025;
const IA: i64 = 1366;
const IC: i64 = 150_889;

impl Lran2 {
    /// Seeds the generator as the original does.
    pub fn new(seed: i64) -> Self {
        let mut x = (IC - seed) % LRAN2_MAX;
        if x < 0 {
            x = -x;
        }
        let mut v = [0i64; 97];
        for e in v.iter_mut() {
            x = (IA * x + IC) % LRAN2_MAX;
            *e = x;
        }
        x = (IA * x + IC) % LRAN2_MAX;
        Self { x, y: x, v }
    }

    /// Next value in `0..714025`.
    #[inline]
    pub fn next_value(&mut self) -> i64 {
        let j = (self.y % 97) as usize;
        self.y = self.v[j];
        self.x = (IA * self.x + IC) % LRAN2_MAX;
        self.v[j] = self.x;
        self.y
    }
}

// SAFETY: Lran2 is plain integers; all-zero is a valid (if degenerate) state.
unsafe impl bench_meta::Zeroable for Lran2 {}

/// A fast 64-bit generator (splitmix64) for the hakmem-specific benchmarks.
#[derive(Clone, Copy)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// Next value.
    #[inline(always)]
    pub fn next_value(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Parses a positional integer argument the way C's `atoi` does (leading
/// digits; `2.5` is 2), but rejects text with no leading number.
pub fn atoi(name: &str, s: &str) -> Result<i64, String> {
    let t = s.trim_start();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let n: String = digits.chars().take_while(|c| c.is_ascii_digit()).collect();
    if n.is_empty() {
        return Err(format!("{name}: expected an integer, got `{s}`"));
    }
    let v: i64 = n
        .parse()
        .map_err(|_| format!("{name}: `{s}` is out of range"))?;
    Ok(if neg { -v } else { v })
}

/// Prints a usage error and exits with status 2 (never a panic trace).
pub fn usage_exit(usage: &str, err: &str) -> ! {
    eprintln!("error: {err}\nusage: {usage}");
    std::process::exit(2)
}
