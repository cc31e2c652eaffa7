//! Tidy check: the box boundaries in the crate graph (docs/ARCHITECTURE.md).
//! Reads each crate's `[dependencies]` table, so a forbidden edge fails here
//! even before it would fail to compile.

use std::collections::BTreeMap;
use std::path::Path;

const BOXES: [&str; 8] = [
    "remote_queue",
    "registry",
    "superslab",
    "shared_pool",
    "core_alloc",
    "external_guard",
    "front_gate",
    "bench_meta",
];

fn deps_of(krate: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let toml = std::fs::read_to_string(root.join("crates").join(krate).join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    let mut out = vec![];
    for line in toml.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            // Only normal dependencies (also target-specific ones) count.
            in_deps = l == "[dependencies]"
                || (l.starts_with("[target.") && l.ends_with(".dependencies]"));
            continue;
        }
        if in_deps {
            if let Some(name) = l
                .split(['=', '.', ' '])
                .next()
                .filter(|n| !n.is_empty() && !n.starts_with('#'))
            {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn graph() -> BTreeMap<&'static str, Vec<String>> {
    BOXES
        .iter()
        .chain(["hakmem"].iter())
        .map(|&b| (b, deps_of(b)))
        .collect()
}

#[test]
fn no_box_depends_on_front_gate_or_the_facade() {
    for (b, deps) in graph() {
        if b != "hakmem" {
            assert!(
                !deps
                    .iter()
                    .any(|d| d == "front_gate" && b != "front_gate" || d == "hakmem"),
                "{b} depends on {deps:?}"
            );
        }
    }
}

#[test]
fn only_front_gate_knows_external_guard() {
    // Positive control: the parser does see real edges.
    assert!(graph()["front_gate"].iter().any(|d| d == "external_guard"));
    assert!(graph()["hakmem"].iter().any(|d| d == "front_gate"));
    for (b, deps) in graph() {
        if deps.iter().any(|d| d == "external_guard") {
            assert_eq!(b, "front_gate", "{b} depends on external_guard");
        }
    }
}

#[test]
fn no_allocator_box_depends_on_bench_meta() {
    for (b, deps) in graph() {
        assert!(
            !deps.iter().any(|d| d == "bench_meta"),
            "{b} depends on bench_meta"
        );
    }
}

#[test]
fn core_alloc_knows_nothing_of_foreign_pointers_and_leaves_are_leaves() {
    let g = graph();
    assert!(!g["core_alloc"]
        .iter()
        .any(|d| d == "external_guard" || d == "front_gate"));
    let boxes: Vec<&str> = BOXES.to_vec();
    for leaf in ["remote_queue", "registry", "external_guard", "bench_meta"] {
        let internal: Vec<&String> = g[leaf]
            .iter()
            .filter(|d| boxes.contains(&d.as_str()))
            .collect();
        assert!(
            internal.is_empty(),
            "{leaf} should depend on no other box, has {internal:?}"
        );
    }
}

#[test]
fn the_box_graph_is_acyclic() {
    let g = graph();
    fn visit(n: &str, g: &BTreeMap<&'static str, Vec<String>>, stack: &mut Vec<String>) {
        assert!(!stack.iter().any(|s| s == n), "cycle: {stack:?} -> {n}");
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            if g.contains_key(d.as_str()) {
                visit(d, g, stack);
            }
        }
        stack.pop();
    }
    for &b in g.keys() {
        visit(b, &g, &mut vec![]);
    }
}

#[test]
fn the_preload_library_links_only_the_facade() {
    // `crates/hakmem_preload` builds target/release/libhakmem.so from the
    // facade alone (its one dependency, renamed `facade`): no allocator logic
    // and no box reached around the facade.
    assert_eq!(deps_of("hakmem_preload"), ["facade"]);
    let toml = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("crates/hakmem_preload/Cargo.toml"),
    )
    .unwrap();
    assert!(toml.contains("package = \"hakmem\""), "{toml}");
}
