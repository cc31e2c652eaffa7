//! Loom model of the shared-pool hand-off (run with `RUSTFLAGS="--cfg loom"`).
//!
//! **What is real and what is a miniature.** The pool proper cannot run under
//! loom: it is a set of statics over `mmap`ped segments, and `superslab` does
//! not build with loom's atomics. So:
//! - real: [`shared_pool::SpinLock`] (under `--cfg loom` it is built on loom's
//!   `AtomicBool`, its spin is `loom::hint::spin_loop` and its `sched_yield`
//!   is `loom::thread::yield_now`; same code otherwise), and
//!   [`remote_queue::RemoteQueue`] with its whole protocol (`claim`,
//!   `release`, `detach`, `push` and `Push::Woke`, `drain`, `assume_owned`);
//! - miniature, ported step by step: the pool's lists (`acquire`'s partial
//!   list then free-slot path, `publish_partial`, `release_empty`: the same
//!   steps under the lock, with the segment bookkeeping reduced to a list of
//!   free slots), `core_alloc`'s `give_up` (collect, then release-empty /
//!   release-and-publish / detach, retrying on a failed detach) and
//!   `adopt_woken` for a thread without a heap (publish the woken slab), and a
//!   two-block `Slab` (owner-only free list and `used` count, a `RemoteQueue`,
//!   blocks whose first word is the queue link, `collect_remote`, `pop`,
//!   `format`).
//!
//! **What is checked**, over every interleaving (up to loom's preemption
//! bound):
//! - the lock gives mutual exclusion: a counter of threads inside it never
//!   exceeds one, and the lists live in a loom `UnsafeCell`, so an access not
//!   ordered after the previous holder's (unlock Release / lock Acquire) is
//!   reported;
//! - at most one owner at any time, exactly one (the adopter) at the end: a
//!   counter of threads acting as owner never exceeds one, every claim
//!   succeeds (a listed or woken slab is unowned), and the owner-only state
//!   is in a loom `UnsafeCell`, so an owner touching it without the
//!   release/claim (or detach/wake) edge from the previous owner is reported;
//! - the slab is never on a list while owned (checked at publish and when the
//!   adopter pops it), never listed twice, and published exactly once after a
//!   wake;
//! - no block is lost or duplicated: at the end every block is exactly once
//!   in the free list, the remote queue or a holder's hands, and `used`
//!   equals the number held.
//!
//! **Mutations checked** (each temporarily applied, the tests run with
//! `LOOM_MAX_PREEMPTIONS=3`, then reverted):
//! - `SpinLock::unlock` storing with `Relaxed` instead of `Release`: all
//!   three tests fail, loom reporting "Causality violation: Concurrent write
//!   accesses to `UnsafeCell`" on the lists;
//! - `SpinLock::lock` (fast and slow path) taking the lock with a load and
//!   a separate store instead of the CAS: all three fail the same way;
//! - `give_up` putting the slab on the partial list before releasing
//!   ownership: both hand-off tests fail, the adopter's claim finding the
//!   listed slab still owned ("pool: listed slab is owned");
//! - `RemoteQueue::detach` storing `NO_OWNER` after its CAS instead of
//!   before: `woken_slab_is_published_once_and_adopted` fails, the waker
//!   publishing a slab whose owner word still says A (`publish_partial`'s
//!   check).
//!
//! **Loom limits worked around.**
//! - Two threads waiting on a third at once make loom's scheduler bounce
//!   between the waiters for ever (tokio-rs/loom#53: "Model exceeded maximum
//!   number of branches"). So no model has two waiters: the lock model has
//!   two threads, and the adopter does not wait for the slab; like the real
//!   `acquire`, which would map a new segment, it takes what is there, and if
//!   the slab was not there yet, a later `acquire` (after the joins) must
//!   find it.
//! - Loom's exploration has a blind spot: a thread's relaxed load is never
//!   moved after another thread's load-then-CAS on the same atomic
//!   (tokio-rs/loom#166, #392). See [`ORDERS`].
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use loom::sync::Arc;
use loom::thread;
use remote_queue::{Node, OwnerToken, Push, RemoteQueue, NO_OWNER};
use shared_pool::SpinLock;
use std::collections::BTreeSet;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

const BLOCKS: usize = 2;
const A: usize = 1; // the exiting owner
const B: usize = 2; // the adopter
const SLAB: usize = 0; // the one slab's id on the lists

/// Owner-only slab state (`superslab::Slab`'s `free` and `used`).
struct Owned {
    free: Vec<usize>,
    used: usize,
}

/// Miniature `superslab::Slab`.
struct Slab {
    remote: RemoteQueue,
    owned: UnsafeCell<Owned>,
    /// The blocks' memory: a free block's first word is its queue link.
    blocks: [std::cell::UnsafeCell<Node>; BLOCKS],
}

// SAFETY: `owned` is touched only by the slab's owner (the protocol under
// test; loom's cell checks it), `blocks` only through `RemoteQueue::push`
// and `drain`, whose contract orders the link writes.
unsafe impl Sync for Slab {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for Slab {}

impl Slab {
    fn new(free: Vec<usize>, used: usize) -> Self {
        Self {
            remote: RemoteQueue::new(),
            owned: UnsafeCell::new(Owned { free, used }),
            blocks: std::array::from_fn(|_| {
                std::cell::UnsafeCell::new(Node {
                    next: ptr::null_mut(),
                })
            }),
        }
    }
    fn with<R>(&self, tok: &OwnerToken<'_>, f: impl FnOnce(&mut Owned) -> R) -> R {
        assert!(tok.is_for(&self.remote));
        // SAFETY: the token says we own the slab; loom's cell checks that no
        // other owner's access is concurrent with ours.
        self.owned.with_mut(|o| f(unsafe { &mut *o }))
    }
    fn index(&self, n: *mut Node) -> usize {
        (n as usize - self.blocks.as_ptr() as usize) / size_of::<Node>()
    }
    /// `Slab::push_remote`: any thread.
    fn push_remote(&self, i: usize) -> Push {
        let n = NonNull::new(self.blocks[i].get()).unwrap();
        // SAFETY: block `i` is being freed: writable, pointer-sized, and
        // untouched until drained.
        unsafe { self.remote.push(n) }
    }
    /// `Slab::collect_remote`: the queued blocks go onto the free list.
    fn collect_remote(&self, tok: &OwnerToken<'_>) -> bool {
        let Some(d) = self.remote.drain(tok) else {
            return false;
        };
        let mut got = vec![];
        let mut p = d.head.as_ptr();
        while !p.is_null() {
            got.push(self.index(p));
            // SAFETY: drained nodes are this slab's blocks; drain's Acquire
            // made their links visible.
            p = unsafe { (*p).next };
        }
        self.with(tok, |o| {
            assert!(o.used >= got.len(), "remote frees exceed used");
            o.used -= got.len();
            o.free.extend(got);
        });
        true
    }
    fn used(&self, tok: &OwnerToken<'_>) -> usize {
        self.with(tok, |o| o.used)
    }
    fn has_free(&self, tok: &OwnerToken<'_>) -> bool {
        self.with(tok, |o| !o.free.is_empty())
    }
    /// An allocation from the slab.
    fn pop(&self, tok: &OwnerToken<'_>) -> Option<usize> {
        self.with(tok, |o| {
            let b = o.free.pop()?;
            o.used += 1;
            Some(b)
        })
    }
    /// `Slab::format`: a fresh slab, every block free.
    fn format(&self, tok: &OwnerToken<'_>) {
        assert!(!self.remote.has_pending());
        self.with(tok, |o| {
            assert_eq!(o.used, 0, "format of a live slab");
            *o = Owned {
                free: (0..BLOCKS).collect(),
                used: 0,
            };
        });
    }
}

/// Miniature `shared_pool` lists (one class, one slab).
#[derive(Default)]
struct Lists {
    partial: Vec<usize>,
    free_slots: Vec<usize>,
    published: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Adopted,
    Fresh,
}

struct World {
    lock: SpinLock,
    lists: UnsafeCell<Lists>,
    slab: Slab,
    /// Model-only: threads inside the lock; threads acting as the owner.
    /// Relaxed read-modify-writes: they see the latest value without adding
    /// any happens-before edge that could hide a missing one.
    inside: AtomicUsize,
    holders: AtomicUsize,
    /// Model-only, outside loom: the paths taken, so that a test can check
    /// that loom explored every branch of the protocol.
    seen: std::sync::Arc<Seen>,
}

type Seen = Mutex<BTreeSet<&'static str>>;

/// The three parties of a hand-off.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// A: the exiting owner (`give_up`).
    Owner,
    /// C: frees block 0 remotely (a thread with no heap).
    Freer,
    /// B: `acquire`s a slab of the class.
    Adopter,
}

/// Every order of the three roles: the first runs on loom's main thread, the
/// others are spawned in turn. Loom runs the main thread first and derives
/// the other schedules from that one; its exploration has a known blind spot
/// (tokio-rs/loom#166, #392): a thread's relaxed load is never moved after
/// another thread's load-then-CAS on the same atomic. `drain`'s emptiness
/// check and `push` are exactly that, so with a single order loom never let
/// the owner's collect see the free. Running all six orders covers it, and
/// each test checks that every path of the protocol was taken.
const ORDERS: [[Role; 3]; 6] = {
    use Role::*;
    [
        [Owner, Freer, Adopter],
        [Owner, Adopter, Freer],
        [Freer, Owner, Adopter],
        [Freer, Adopter, Owner],
        [Adopter, Owner, Freer],
        [Adopter, Freer, Owner],
    ]
};

/// Runs `f` under loom for each order, then checks that every path in
/// `expected` was taken; returns the paths taken.
fn model<F>(expected: &[&'static str], orders: &[[Role; 3]], f: F) -> BTreeSet<&'static str>
where
    F: Fn(std::sync::Arc<Seen>, [Role; 3]) + Send + Sync + Clone + 'static,
{
    let seen = std::sync::Arc::new(Seen::default());
    for &order in orders {
        let (s, f) = (seen.clone(), f.clone());
        loom::model(move || f(s.clone(), order));
    }
    let seen = seen.lock().unwrap().clone();
    for e in expected {
        assert!(seen.contains(e), "loom never took the path {e:?}: {seen:?}");
    }
    seen
}

impl World {
    fn new(slab: Slab, seen: std::sync::Arc<Seen>) -> Arc<Self> {
        Arc::new(Self {
            lock: SpinLock::new(),
            lists: UnsafeCell::new(Lists::default()),
            slab,
            inside: AtomicUsize::new(0),
            holders: AtomicUsize::new(0),
            seen,
        })
    }
    fn saw(&self, what: &'static str) {
        self.seen.lock().unwrap().insert(what);
    }
    /// The pool's `Guard`: the lists, with the lock held.
    fn locked<R>(&self, f: impl FnOnce(&mut Lists) -> R) -> R {
        self.lock.lock();
        assert_eq!(
            self.inside.fetch_add(1, Relaxed),
            0,
            "two threads inside the lock"
        );
        // SAFETY: the lock is held; loom's cell checks it excludes the others.
        let r = self.lists.with_mut(|l| f(unsafe { &mut *l }));
        self.inside.fetch_sub(1, Relaxed);
        self.lock.unlock();
        r
    }
    fn own_begin(&self) {
        assert_eq!(self.holders.fetch_add(1, Relaxed), 0, "two owners at once");
    }
    /// Called *before* the release or detach that gives ownership away.
    fn own_end(&self) {
        self.holders.fetch_sub(1, Relaxed);
    }

    /// `shared_pool::acquire`: the partial list first, then a free slot
    /// (claimed and formatted). `None` stands for "map a new segment", which
    /// the model replaces by waiting.
    fn acquire(&self, owner: usize) -> Option<Source> {
        self.locked(|l| {
            if l.partial.pop().is_some() {
                self.saw("acquire: adopted");
                assert!(!l.partial.contains(&SLAB), "slab was listed twice");
                let tok = self
                    .slab
                    .remote
                    .claim(owner)
                    .expect("pool: listed slab is owned");
                self.own_begin();
                let _ = tok; // the caller re-vouches with `assume_owned`
                return Some(Source::Adopted);
            }
            if l.free_slots.pop().is_some() {
                self.saw("acquire: fresh");
                let tok = self
                    .slab
                    .remote
                    .claim(owner)
                    .expect("pool: free slab is owned");
                self.own_begin();
                self.slab.format(&tok);
                return Some(Source::Fresh);
            }
            None
        })
    }

    /// `shared_pool::publish_partial`: an unowned slab on no list.
    fn publish_partial(&self) {
        assert_eq!(self.slab.remote.owner(), NO_OWNER); // the real debug_assert
        self.locked(|l| {
            assert_eq!(self.holders.load(Relaxed), 0, "published while owned");
            assert!(!l.partial.contains(&SLAB), "published twice");
            l.partial.push(SLAB);
            l.published += 1;
        });
    }

    /// `shared_pool::release_empty`.
    fn release_empty(&self, tok: OwnerToken<'_>) {
        assert_eq!(self.slab.used(&tok), 0);
        self.own_end();
        self.slab.remote.release(tok);
        self.locked(|l| {
            assert!(!l.free_slots.contains(&SLAB), "slab released twice");
            l.free_slots.push(SLAB);
        });
    }

    /// `core_alloc::heap::give_up`: an owned, unlisted slab goes to the pool
    /// in whatever state it is.
    fn give_up(&self, tok: OwnerToken<'_>) {
        let s = &self.slab;
        s.collect_remote(&tok);
        if s.used(&tok) == 0 {
            self.saw("give_up: release_empty");
            self.release_empty(tok);
        } else if s.has_free(&tok) {
            self.saw("give_up: publish");
            self.own_end();
            s.remote.release(tok);
            self.publish_partial();
        } else {
            self.own_end();
            self.saw("give_up: detach");
            if let Err(tok) = s.remote.detach(tok) {
                // Frees arrived between the collect and the detach.
                self.saw("give_up: detach failed");
                self.own_begin();
                s.collect_remote(&tok);
                self.give_up(tok);
            }
        }
    }

    /// A free from a thread without a heap (`front_gate` on a sentinel
    /// heap): a remote push; a wake publishes the slab (`adopt_woken`).
    fn free_remote(&self, block: usize) -> Push {
        let p = self.slab.push_remote(block);
        if p == Push::Woke {
            self.saw("free: woke, publish");
            self.publish_partial();
        }
        p
    }

    /// The adopter: one `acquire` for the class. If the slab is not in the
    /// pool yet, the real `acquire` would map a new segment; the model then
    /// leaves the slab where it is (no waiting: see the module comment).
    /// If it got the slab, it collects the remote frees and allocates a block.
    fn adopt(&self) -> Option<(Source, Option<usize>)> {
        let src = self.acquire(B)?;
        // SAFETY: `acquire` claimed the slab for B.
        let tok = unsafe { self.slab.remote.assume_owned(B) };
        self.slab.collect_remote(&tok);
        Some((src, self.slab.pop(&tok)))
    }

    /// After the adopter has finished: if its `acquire` came too early, a
    /// later one (here, by the main thread for B) must find the slab.
    fn adopt_late(&self, early: Option<(Source, Option<usize>)>) -> (Source, Option<usize>) {
        early.unwrap_or_else(|| {
            self.saw("acquire: too early");
            self.adopt()
                .expect("a given-up slab is in the pool once its owner is done")
        })
    }

    /// One party's part.
    fn role(&self, r: Role) -> Option<(Source, Option<usize>)> {
        match r {
            Role::Owner => {
                // SAFETY: the test claimed the slab for A before spawning.
                let tok = unsafe { self.slab.remote.assume_owned(A) };
                self.give_up(tok);
                None
            }
            Role::Freer => {
                // Queued, or Woke (then published): the checks are on the pool.
                let _ = self.free_remote(0);
                None
            }
            Role::Adopter => self.adopt(),
        }
    }

    /// Plays the three roles in `order` (see [`ORDERS`]); returns what the
    /// adopter got.
    fn play(w: &Arc<Self>, order: [Role; 3]) -> Option<(Source, Option<usize>)> {
        let hs: Vec<_> = order[1..]
            .iter()
            .map(|&r| {
                let w = w.clone();
                thread::spawn(move || w.role(r))
            })
            .collect();
        let mut adopted = w.role(order[0]);
        for h in hs {
            if let Some(got) = h.join().unwrap() {
                adopted = Some(got);
            }
        }
        adopted
    }

    /// After every thread has finished: B owns the slab, the lists are
    /// empty, and each block is exactly once in the free list, the queue or
    /// `held`; `used` counts the held blocks.
    fn check_end(&self, held: &[usize]) -> usize {
        assert!(self.slab.remote.is_owned_by(B));
        assert_eq!(self.holders.load(Relaxed), 1);
        let published = self.locked(|l| {
            assert!(l.partial.is_empty() && l.free_slots.is_empty());
            l.published
        });
        // SAFETY: B owns the slab and has finished.
        let tok = unsafe { self.slab.remote.assume_owned(B) };
        self.slab.collect_remote(&tok);
        let mut all = self.slab.with(&tok, |o| {
            assert_eq!(o.used, held.len(), "used != blocks held");
            o.free.clone()
        });
        all.extend_from_slice(held);
        all.sort_unstable();
        assert_eq!(
            all,
            (0..BLOCKS).collect::<Vec<_>>(),
            "block lost or duplicated"
        );
        published
    }
}

/// The lock alone: two threads each bump a plain counter under it, twice.
#[test]
fn spin_lock_excludes_and_orders_critical_sections() {
    model(&[], &ORDERS[..1], |seen, _| {
        let w = World::new(Slab::new(vec![], 0), seen);
        let bump = |w: &World| {
            for _ in 0..2 {
                w.locked(|l| l.published += 1);
            }
        };
        let h = {
            let w = w.clone();
            thread::spawn(move || bump(&w))
        };
        bump(&w);
        h.join().unwrap();
        assert_eq!(w.locked(|l| l.published), 4);
    });
}

/// Orphan hand-off. A owns a two-block slab: block 0 is allocated (and handed
/// to C), block 1 is free. A exits (`give_up`) while C frees block 0
/// remotely and B calls `acquire` for the class. Depending on when C's free
/// lands, A either finds the slab empty and releases it (B gets it `Fresh`,
/// formatted) or releases and publishes it (B adopts it with its free list,
/// collecting block 0 if it is still queued). The slab is never detached, so
/// C's free never wakes it.
#[test]
fn orphan_give_up_and_acquire_with_a_remote_free() {
    let paths = [
        "give_up: release_empty",
        "give_up: publish",
        "acquire: adopted",
        "acquire: fresh",
        "acquire: too early",
    ];
    let seen = model(&paths, &ORDERS, |seen, order| {
        let w = World::new(Slab::new(vec![1], 1), seen);
        let _ = w.slab.remote.claim(A).unwrap(); // A's thread re-vouches
        w.own_begin();
        let (src, got) = w.adopt_late(World::play(&w, order));
        let got = got.expect("the adopted slab has a free block");
        let published = w.check_end(&[got]);
        assert_eq!(published, usize::from(src == Source::Adopted));
    });
    assert!(!seen.contains("free: woke, publish"), "{seen:?}");
}

/// Hand-off of a woken slab through the pool. A owns a full two-block slab:
/// block 0 is handed to C, block 1 stays allocated (it outlives A). A exits
/// while C, a thread with no heap, frees block 0 and B calls `acquire`.
/// Either A's collect sees the free and A publishes the slab, or A detaches
/// it (retrying if the free slipped in before the detach) and C's push wakes
/// it, and C publishes it. Exactly one of them publishes; B (at once or
/// later) adopts the slab and allocates block 0 again.
#[test]
fn woken_slab_is_published_once_and_adopted() {
    let paths = [
        "give_up: publish",
        "give_up: detach",
        "give_up: detach failed",
        "free: woke, publish",
        "acquire: adopted",
        "acquire: too early",
    ];
    let seen = model(&paths, &ORDERS, |seen, order| {
        let w = World::new(Slab::new(vec![], 2), seen);
        let _ = w.slab.remote.claim(A).unwrap(); // A's thread re-vouches
        w.own_begin();
        let (src, got) = w.adopt_late(World::play(&w, order));
        assert_eq!(src, Source::Adopted);
        assert_eq!(got, Some(0), "the freed block is allocatable again");
        assert_eq!(w.check_end(&[0, 1]), 1, "published exactly once");
    });
    assert!(!seen.contains("give_up: release_empty"), "{seen:?}");
}
