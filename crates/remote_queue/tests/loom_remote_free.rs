//! Loom model of the remote-free protocol (run with `RUSTFLAGS="--cfg loom"`).
//!
//! Blocks are plain heap nodes; the model checks, over every interleaving, that
//! (1) no pushed block is lost or drained twice, (2) after a detach exactly one
//! pusher is told to wake the slab, and (3) an adopter that claims the woken
//! queue drains every block pushed before it looked.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use remote_queue::{Node, Push, RemoteQueue};
use std::ptr::{self, NonNull};

fn node() -> NonNull<Node> {
    NonNull::from(Box::leak(Box::new(Node {
        next: ptr::null_mut(),
    })))
}

fn len(mut p: *mut Node) -> usize {
    let mut n = 0;
    while !p.is_null() {
        n += 1;
        // SAFETY: model nodes are leaked boxes, always valid.
        p = unsafe { (*p).next };
    }
    n
}

#[test]
fn owner_drains_while_two_threads_push() {
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        let tok = q.claim(1).unwrap();
        let pushers: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                // SAFETY: fresh node per push.
                thread::spawn(move || assert_eq!(unsafe { q.push(node()) }, Push::Queued))
            })
            .collect();
        let mut got = q.drain(&tok).map_or(0, |d| len(d.head.as_ptr()));
        for p in pushers {
            p.join().unwrap();
        }
        got += q.drain(&tok).map_or(0, |d| len(d.head.as_ptr()));
        assert_eq!(got, 2);
    });
}

#[test]
fn detach_races_push_and_exactly_one_party_keeps_the_slab() {
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        let tok = q.claim(1).unwrap();
        let q2 = q.clone();
        // SAFETY: fresh node.
        let pusher = thread::spawn(move || unsafe { q2.push(node()) });
        let kept = q.detach(tok).err();
        let push = pusher.join().unwrap();
        match kept {
            // Owner kept the slab because the block was already there: the
            // pusher must not also think it woke it.
            Some(tok) => {
                assert_eq!(push, Push::Queued);
                assert_eq!(q.drain(&tok).map_or(0, |d| len(d.head.as_ptr())), 1);
            }
            // Owner detached first: the pusher is the one waker, and an adopter
            // that claims afterwards finds the block.
            None => {
                assert_eq!(push, Push::Woke);
                let t = q.claim(2).expect("detached queue is unowned");
                assert_eq!(q.drain(&t).map_or(0, |d| len(d.head.as_ptr())), 1);
            }
        }
    });
}

#[test]
fn two_pushers_after_detach_wake_once() {
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        q.detach(q.claim(1).unwrap()).unwrap();
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let q = q.clone();
                // SAFETY: fresh node.
                thread::spawn(move || unsafe { q.push(node()) })
            })
            .collect();
        let woke = hs
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap())
            .filter(|p| *p == Push::Woke)
            .count();
        assert_eq!(woke, 1);
    });
}

/// Orphan adoption (thread exit): the owner releases a partly used slab and
/// publishes it on a pool list; an adopter takes it from the list and claims
/// it, while another thread keeps freeing into it. The claim always succeeds
/// (nobody else can hold a listed slab), a release never wakes anyone, and no
/// block is lost.
#[test]
fn orphan_release_publish_and_adopt() {
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        let pool = Arc::new(loom::sync::Mutex::new(Vec::<usize>::new()));
        let tok = q.claim(1).unwrap();
        let pusher = {
            let q = q.clone();
            // SAFETY: fresh node.
            thread::spawn(move || assert_eq!(unsafe { q.push(node()) }, Push::Queued))
        };
        let adopter = {
            let (q, pool) = (q.clone(), pool.clone());
            thread::spawn(move || loop {
                if pool.lock().unwrap().pop().is_some() {
                    let t = q.claim(2).expect("a listed slab has no owner");
                    let got = q.drain(&t).map_or(0, |d| len(d.head.as_ptr()));
                    return (t.id(), got);
                }
                thread::yield_now();
            })
        };
        // Owner exits: release, then publish.
        q.release(tok);
        pool.lock().unwrap().push(1);
        pusher.join().unwrap();
        let (id, got) = adopter.join().unwrap();
        assert_eq!(id, 2);
        // SAFETY: the adopter owns it now (id 2) and has finished.
        let t = unsafe { q.assume_owned(2) };
        let rest = q.drain(&t).map_or(0, |d| len(d.head.as_ptr()));
        assert_eq!(got + rest, 1, "the remote free is drained exactly once");
    });
}

/// Pool hand-off of a woken slab: after a detach, exactly one of two freeing
/// threads is told it woke the slab, and that thread's claim always succeeds
/// (a detached slab is on no list, so no adopter competes); the other block
/// is drained by the new owner.
#[test]
fn woken_slab_is_claimed_by_its_waker() {
    loom::model(|| {
        let q = Arc::new(RemoteQueue::new());
        q.detach(q.claim(1).unwrap()).unwrap();
        let hs: Vec<_> = (0..2usize)
            .map(|i| {
                let q = q.clone();
                thread::spawn(move || {
                    // SAFETY: fresh node.
                    if unsafe { q.push(node()) } == Push::Woke {
                        let t = q.claim(10 + i).expect("the waker's claim cannot fail");
                        Some(q.drain(&t).map_or(0, |d| len(d.head.as_ptr())))
                    } else {
                        None
                    }
                })
            })
            .collect();
        let results: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let wakers: Vec<_> = results.iter().flatten().collect();
        assert_eq!(wakers.len(), 1, "exactly one waker");
        let owner = q.owner();
        // SAFETY: the waker owns the queue and has finished.
        let t = unsafe { q.assume_owned(owner) };
        let rest = q.drain(&t).map_or(0, |d| len(d.head.as_ptr()));
        assert_eq!(*wakers[0] + rest, 2, "both frees reach the new owner");
    });
}
