//! Loom model of the remote-free protocol (run with `RUSTFLAGS="--cfg loom"`).
//!
//! **Blocks.** A model block's first word is the queue link. The freeing
//! thread writes the block's data just before pushing it, and the push's
//! link writer stores a copy of the link next to it (as hakmem's guard word
//! is written with the link); both are loom `UnsafeCell`s, so a drainer that
//! reads them without a happens-before edge from the push (the push's
//! Release CAS, the drain's Acquire swap, the link written before the
//! publish) is reported as a causality violation. The plain link alone would
//! not show it: loom does not track ordinary memory.
//!
//! **What is checked**, over every interleaving (up to loom's preemption
//! bound): (1) no pushed block is lost or drained twice, and every drained
//! block carries the data and link written before its push; (2) after a
//! detach exactly one pusher is told to wake the slab, and it sees what the
//! old owner wrote; (3) an adopter that claims the woken queue drains every
//! block pushed before it looked.
//!
//! **Outcomes checked.** Loom's exploration has a blind spot
//! (tokio-rs/loom#166, #392): a thread's relaxed load is never moved after
//! another thread's load-then-CAS on the same atomic. `drain`'s emptiness
//! check is such a load and `push` is such a CAS, so with the owner on
//! loom's main thread and the pushers spawned, the owner's first drain found
//! the queue empty in all 62 executions: the drain racing the pushes was
//! never tested. So each test records the outcomes it claims to cover,
//! counted outside loom, and [`model`] asserts after the run that each was
//! produced at least once; where one start order of the threads did not
//! produce them all, the roles run in every start order
//! ([`OWNER_AND_TWO_PUSHERS`]). Pushes go through `push_with` (which `push`
//! calls with the plain link writer) with a link writer that counts the
//! publish attempts, so that a push whose CAS failed, and that re-linked and
//! retried, is an outcome too.
//!
//! **Mutations checked** (each applied to `src/lib.rs`, the tests run with
//! `LOOM_MAX_PREEMPTIONS=3`, then reverted): see each test's comment.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use remote_queue::{Drained, Node, Push, RemoteQueue};
use std::collections::BTreeMap;
use std::ptr::{self, NonNull};
use std::sync::Mutex;

/// A freed block: the queue link in its first word, then the data its user
/// wrote last, then a copy of the link that the push's link writer stores
/// with it (as hakmem's guard word is written with the link).
#[repr(C)]
struct Block {
    link: Node,
    data: UnsafeCell<usize>,
    check: UnsafeCell<usize>,
}

/// What every freed block holds.
const DATA: usize = 0xb10c;

/// Model-only, outside loom: how many executions produced each outcome.
#[derive(Default)]
struct Seen(Mutex<BTreeMap<&'static str, usize>>);

impl Seen {
    fn saw(&self, what: &'static str) {
        *self.0.lock().unwrap().entry(what).or_default() += 1;
    }
}

/// Runs `f` under loom once for each start order in `orders` (for
/// [`play`]; a test that spawns its threads itself passes one empty order),
/// then checks that every outcome in `expected` was produced in some
/// execution. The counts, per order, are printed (see them with
/// `--nocapture`).
fn model<const N: usize>(
    name: &str,
    expected: &[&'static str],
    orders: &[[Role; N]],
    f: impl Fn(&std::sync::Arc<Seen>, [Role; N]) + Send + Sync + Clone + 'static,
) {
    let mut all = BTreeMap::<&str, usize>::new();
    for &order in orders {
        let (seen, f) = (std::sync::Arc::new(Seen::default()), f.clone());
        let s = seen.clone();
        loom::model(move || {
            f(&s, order);
            s.saw("executions");
        });
        let seen = seen.0.lock().unwrap();
        eprintln!("{name} {order:?}: {seen:?}");
        for (k, v) in seen.iter() {
            *all.entry(*k).or_default() += v;
        }
    }
    for e in expected {
        assert!(all.contains_key(e), "loom never produced {e:?}: {all:?}");
    }
}

/// The parties of a test.
#[derive(Clone, Copy, Debug)]
enum Role {
    /// The slab's owner: drains (or gives the slab up).
    Owner,
    /// Frees one block into the slab from another thread.
    Pusher,
    /// Takes a released slab from a pool list and claims it.
    Adopter,
}
use Role::{Adopter, Owner, Pusher};

/// The owner at each place in the start order (the two pushers are alike, so
/// these are all the orders that differ).
const OWNER_AND_TWO_PUSHERS: [[Role; 3]; 3] = [
    [Owner, Pusher, Pusher],
    [Pusher, Owner, Pusher],
    [Pusher, Pusher, Owner],
];

/// Runs `role` for each role of `order`: the first on loom's main thread,
/// the others on threads spawned in turn before it starts. Loom runs the
/// main thread first and derives the other schedules from that one, so the
/// order matters to what it explores (see the module comment). Returns the
/// results in `order`'s order.
fn play<T: Send + 'static, const N: usize>(
    order: [Role; N],
    role: impl Fn(Role) -> T + Send + Clone + 'static,
) -> Vec<T> {
    let hs: Vec<_> = order[1..]
        .iter()
        .map(|&r| {
            let role = role.clone();
            thread::spawn(move || role(r))
        })
        .collect();
    let mut out = vec![role(order[0])];
    out.extend(hs.into_iter().map(|h| h.join().unwrap()));
    out
}

/// Frees a fresh block into `q` as a program does: writes its data, then
/// pushes it. The link writer also stores the link's copy, and counts the
/// publish attempts: more than one means the CAS failed and the push
/// retried.
fn free(q: &RemoteQueue, seen: &Seen) -> Push {
    let b = Box::into_raw(Box::new(Block {
        link: Node {
            next: ptr::null_mut(),
        },
        data: UnsafeCell::new(0),
        check: UnsafeCell::new(0),
    }));
    // SAFETY: a fresh block, ours until pushed.
    unsafe { (*b).data.with_mut(|d| *d = DATA) };
    let tries = std::cell::Cell::new(0);
    // SAFETY: the block is fresh (leaked: model blocks are never freed),
    // pointer-aligned, and untouched by us once pushed; the link writer
    // writes only inside it.
    let p = unsafe {
        q.push_with(NonNull::new_unchecked(b.cast()), |n, next| {
            tries.set(tries.get() + 1);
            (*n).next = next;
            (*n.cast::<Block>()).check.with_mut(|c| *c = next as usize);
        })
    };
    if tries.get() > 1 {
        seen.saw("push: retried");
    }
    p
}

/// Walks a drained chain: counts its blocks and reads each one's data and
/// link copy (loom reports a read that nothing orders after the pusher's
/// write).
fn take(d: Option<Drained>) -> usize {
    let mut p = d.map_or(ptr::null_mut(), |d| d.head.as_ptr());
    let mut n = 0;
    while !p.is_null() {
        let b = p.cast::<Block>();
        // SAFETY: model blocks are leaked `Block`s (link first, `repr(C)`),
        // always valid; the drain handed this one to us.
        unsafe {
            assert_eq!((*b).data.with(|d| *d), DATA, "block data lost");
            let next = (*p).next;
            assert_eq!((*b).check.with(|c| *c), next as usize, "link copy differs");
            p = next;
        }
        n += 1;
    }
    n
}

const OWNER: usize = 1;

/// The owner drains while two threads push, then (after the joins) drains
/// the rest: both blocks arrive exactly once, with their data and links.
/// Run in every start order: with the owner first only, its first drain got
/// 0 blocks in all 62 executions. The first drain must be seen to get 0, 1
/// and 2 blocks, and a push to retry.
///
/// Mutations checked: `drain` swapping with `Relaxed` instead of `Acquire`,
/// `push_chain_with`'s CAS with `Acquire` instead of `AcqRel` (no Release),
/// and `push_chain_with` publishing the node before writing its link each
/// fail ("Causality violation: Concurrent read and write accesses" on a
/// drained block). With the owner first only, all three pass.
#[test]
fn owner_drains_while_two_threads_push() {
    const FIRST: [&str; 3] = ["first drain: 0", "first drain: 1", "first drain: 2"];
    let mut expected = FIRST.to_vec();
    expected.push("push: retried");
    model(
        "owner_drains_while_two_threads_push",
        &expected,
        &OWNER_AND_TWO_PUSHERS,
        |seen, order| {
            let q = Arc::new(RemoteQueue::new());
            let _ = q.claim(OWNER).unwrap(); // the owner role re-vouches
            let got = play(order, {
                let (q, seen) = (q.clone(), seen.clone());
                move |r| match r {
                    Owner => {
                        // SAFETY: claimed as OWNER above; only this role uses
                        // it until it has finished.
                        let tok = unsafe { q.assume_owned(OWNER) };
                        let n = take(q.drain(&tok));
                        seen.saw(FIRST[n]);
                        n
                    }
                    _ => {
                        assert_eq!(free(&q, &seen), Push::Queued);
                        0
                    }
                }
            });
            // SAFETY: the owner role has finished.
            let tok = unsafe { q.assume_owned(OWNER) };
            let rest = take(q.drain(&tok));
            assert_eq!(
                got.iter().sum::<usize>() + rest,
                2,
                "block lost or duplicated"
            );
        },
    );
}

/// Owner-only slab state (a slab's free list and counts): the owner writes
/// it before giving the slab up; whoever takes the slab on next reads it.
struct SlabState(UnsafeCell<usize>);

// SAFETY: touched only by the slab's current owner or its successor (the
// protocol under test); loom's cell reports accesses it does not order.
unsafe impl Sync for SlabState {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for SlabState {}

/// The owner writes its slab state and detaches while a thread pushes.
/// Either the block was already there (the owner keeps the slab and the
/// token, the push is `Queued`) or the detach came first (the push is the
/// one `Woke`, it sees the old owner's slab state, and an adopter that
/// claims afterwards finds the block). Both must be seen, and a push that
/// loaded the head before the detach and retried after it.
///
/// Mutations checked: `detach` taking the empty queue with a load and a
/// separate store instead of its CAS fails (the push slips in between and is
/// overwritten: it is `Queued` though the detach succeeded); `push_chain_with`
/// deciding `Woke` from its first load rather than the value its CAS
/// replaced fails the same way (the push that retried after the detach says
/// `Queued`); `detach`'s CAS with `Acquire` instead of `AcqRel`, or
/// `push_chain_with`'s with `Release`, fails ("Causality violation": the
/// waker reads the slab state without an edge from the old owner's write).
#[test]
fn detach_races_push_and_exactly_one_party_keeps_the_slab() {
    const STATE: usize = 0x51ab;
    let expected = ["detach: kept", "detach: woke", "push: retried"];
    model(
        "detach_races_push_and_exactly_one_party_keeps_the_slab",
        &expected,
        &[[Owner, Pusher]],
        |seen, order| {
            let q = Arc::new(RemoteQueue::new());
            let state = Arc::new(SlabState(UnsafeCell::new(0)));
            let _ = q.claim(OWNER).unwrap(); // the owner role re-vouches
            let r = play(order, {
                let (q, state, seen) = (q.clone(), state.clone(), seen.clone());
                move |r| match r {
                    Owner => {
                        // SAFETY: this role owns the slab.
                        state.0.with_mut(|s| unsafe { *s = STATE });
                        // SAFETY: claimed as OWNER above; only this role uses
                        // it.
                        let tok = unsafe { q.assume_owned(OWNER) };
                        (q.detach(tok).is_err(), None)
                    }
                    _ => {
                        let push = free(&q, &seen);
                        if push == Push::Woke {
                            // SAFETY: the wake hands the slab to this thread.
                            let s = state.0.with(|s| unsafe { *s });
                            assert_eq!(s, STATE, "the waker sees the old owner's state");
                        }
                        (false, Some(push))
                    }
                }
            });
            let (kept, push) = (r.iter().any(|x| x.0), r.iter().find_map(|x| x.1).unwrap());
            if kept {
                // The owner kept the slab because the block was already
                // there: the pusher must not also think it woke it.
                seen.saw("detach: kept");
                assert_eq!(push, Push::Queued);
                assert!(q.is_owned_by(OWNER));
                // SAFETY: the detach handed the token back; its role is done.
                let tok = unsafe { q.assume_owned(OWNER) };
                assert_eq!(take(q.drain(&tok)), 1);
            } else {
                // The owner detached first: the pusher is the one waker, and
                // an adopter that claims afterwards finds the block.
                seen.saw("detach: woke");
                assert_eq!(push, Push::Woke);
                let t = q.claim(2).expect("detached queue is unowned");
                assert_eq!(take(q.drain(&t)), 1);
            }
        },
    );
}

/// Two threads push into a detached queue: exactly one is told it woke it.
/// Either must be seen to be the one, and a push to retry.
///
/// Mutation checked: `push_chain_with` deciding `Woke` from its first load
/// rather than the value its CAS replaced fails (two wakers: the loser of
/// the CAS also saw the queue detached).
#[test]
fn two_pushers_after_detach_wake_once() {
    let expected = ["woke: pusher 0", "woke: pusher 1", "push: retried"];
    model(
        "two_pushers_after_detach_wake_once",
        &expected,
        &[[]],
        |seen, _| {
            let q = Arc::new(RemoteQueue::new());
            q.detach(q.claim(OWNER).unwrap()).unwrap();
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let (q, seen) = (q.clone(), seen.clone());
                    thread::spawn(move || free(&q, &seen))
                })
                .collect();
            let r: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            let wakers: Vec<_> = (0..2).filter(|&i| r[i] == Push::Woke).collect();
            assert_eq!(wakers.len(), 1, "exactly one waker");
            seen.saw(["woke: pusher 0", "woke: pusher 1"][wakers[0]]);
        },
    );
}

/// Orphan adoption (thread exit): the owner releases a partly used slab and
/// publishes it on a pool list; an adopter takes it from the list and claims
/// it, while another thread frees into it. The claim always succeeds
/// (nobody else can hold a listed slab), a release never wakes anyone, and no
/// block is lost. The free must be seen both drained by the adopter and left
/// for a later drain.
///
/// Mutations checked: `drain` swapping with `Relaxed`, `push_chain_with`'s
/// CAS without Release, and publishing before writing the link each fail
/// ("Causality violation" on the block the adopter drains).
#[test]
fn orphan_release_publish_and_adopt() {
    let expected = ["adopter drained the free", "free drained later"];
    model(
        "orphan_release_publish_and_adopt",
        &expected,
        &[[Owner, Pusher, Adopter]],
        |seen, order| {
            let q = Arc::new(RemoteQueue::new());
            let pool = Arc::new(loom::sync::Mutex::new(Vec::<usize>::new()));
            let _ = q.claim(OWNER).unwrap(); // the owner role re-vouches
            let r = play(order, {
                let (q, pool, seen) = (q.clone(), pool.clone(), seen.clone());
                move |r| match r {
                    Owner => {
                        // Owner exits: release, then publish.
                        // SAFETY: claimed as OWNER above; only this role
                        // uses it.
                        q.release(unsafe { q.assume_owned(OWNER) });
                        pool.lock().unwrap().push(1);
                        None
                    }
                    Pusher => {
                        assert_eq!(free(&q, &seen), Push::Queued);
                        None
                    }
                    Adopter => loop {
                        if pool.lock().unwrap().pop().is_some() {
                            let t = q.claim(2).expect("a listed slab has no owner");
                            return Some((t.id(), take(q.drain(&t))));
                        }
                        thread::yield_now();
                    },
                }
            });
            let (id, got) = r.into_iter().flatten().next().unwrap();
            assert_eq!(id, 2);
            seen.saw(["free drained later", "adopter drained the free"][got]);
            // SAFETY: the adopter owns it now (id 2) and has finished.
            let t = unsafe { q.assume_owned(2) };
            let rest = take(q.drain(&t));
            assert_eq!(got + rest, 1, "the remote free is drained exactly once");
        },
    );
}

/// Pool hand-off of a woken slab: after a detach, exactly one of two freeing
/// threads is told it woke the slab, and that thread's claim always succeeds
/// (a detached slab is on no list, so no adopter competes); the other block
/// is drained by the new owner. The waker's drain must be seen to get the
/// other block as well as to miss it, and a push to retry.
///
/// Mutations checked: `drain` swapping with `Relaxed`, `push_chain_with`'s
/// CAS without Release, and publishing before writing the link each fail
/// ("Causality violation" on the other pusher's block); deciding `Woke` from
/// the first load fails ("the waker's claim cannot fail": two wakers).
#[test]
fn woken_slab_is_claimed_by_its_waker() {
    let expected = ["waker drained 1", "waker drained 2", "push: retried"];
    model(
        "woken_slab_is_claimed_by_its_waker",
        &expected,
        &[[]],
        |seen, _| {
            let q = Arc::new(RemoteQueue::new());
            q.detach(q.claim(OWNER).unwrap()).unwrap();
            let hs: Vec<_> = (0..2usize)
                .map(|i| {
                    let (q, seen) = (q.clone(), seen.clone());
                    thread::spawn(move || {
                        if free(&q, &seen) == Push::Woke {
                            let t = q.claim(10 + i).expect("the waker's claim cannot fail");
                            Some(take(q.drain(&t)))
                        } else {
                            None
                        }
                    })
                })
                .collect();
            let r: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            let wakers: Vec<_> = r.iter().flatten().copied().collect();
            assert_eq!(wakers.len(), 1, "exactly one waker");
            seen.saw(["waker drained 0", "waker drained 1", "waker drained 2"][wakers[0]]);
            let owner = q.owner();
            // SAFETY: the waker owns the queue and has finished.
            let t = unsafe { q.assume_owned(owner) };
            let rest = take(q.drain(&t));
            assert_eq!(wakers[0] + rest, 2, "both frees reach the new owner");
        },
    );
}
