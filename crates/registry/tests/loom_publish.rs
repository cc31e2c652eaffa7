//! Loom model of registry publish / lookup (run with `RUSTFLAGS="--cfg loom"`).
//!
//! Two registrars race to create the same leaf while a reader looks up; the
//! model checks that exactly one leaf survives (the loser's is handed back),
//! that a reader that sees a region sees its correct bounds, and that a lookup
//! after registration (in program order) always succeeds.
#![cfg(loom)]

mod common;
use common::Src;
use loom::sync::atomic::Ordering;
use loom::sync::Arc;
use loom::thread;
use registry::{Registry, GRANULE};

#[test]
fn racing_registrars_and_a_reader() {
    loom::model(|| {
        let r = Arc::new(Registry::new());
        let src = Arc::new(Src::new());
        let (a, b) = (GRANULE, 2 * GRANULE); // same leaf
        let t = {
            let (r, src) = (r.clone(), src.clone());
            thread::spawn(move || {
                r.register(b, GRANULE / 2, &*src).unwrap();
                assert!(r.lookup(b + 1).is_some());
            })
        };
        let reader = {
            let r = r.clone();
            thread::spawn(move || {
                if let Some(reg) = r.lookup(a + 10) {
                    assert_eq!(reg.base().as_ptr() as usize, a);
                    assert_eq!(reg.end(), a + GRANULE);
                }
                assert!(r.lookup(b + GRANULE / 2).is_none());
            })
        };
        r.register(a, GRANULE, &*src).unwrap();
        assert!(r.lookup(a + GRANULE - 1).is_some());
        t.join().unwrap();
        reader.join().unwrap();
        assert_eq!(src.live.load(Ordering::Relaxed), 1, "one leaf survives");
        assert!(r.lookup(b).is_some() && r.lookup(a).is_some());
    });
}
