//! `remote_queue`: the cross-thread edge through which blocks go home.
//!
//! A [`RemoteQueue`] belongs to one slab. Any thread may [`push`](RemoteQueue::push)
//! a freed block onto it with one compare-and-swap. Only the slab's *owner* may
//! [`drain`](RemoteQueue::drain) it, and draining takes an [`OwnerToken`], which
//! only [`claim`](RemoteQueue::claim) hands out (or an `unsafe` vouch by code that
//! already knows it owns the queue). Draining someone else's queue therefore does
//! not compile:
//!
//! ```compile_fail
//! let q = remote_queue::RemoteQueue::new();
//! let _ = q.drain(); // error: drain needs `&OwnerToken`
//! ```
//!
//! ```compile_fail
//! // Nor can a token be forged: its fields are private.
//! let q = remote_queue::RemoteQueue::new();
//! let t = remote_queue::OwnerToken { queue: &q, id: 7 };
//! ```
//!
//! The queue also carries the *detached* state used by `shared_pool`: an owner
//! that finds its slab full gives it up with [`detach`](RemoteQueue::detach), and
//! exactly one later pusher learns ([`Push::Woke`]) that it brought the slab back
//! to life and must publish it for adoption.
//!
//! Cost: `push` is one load plus one CAS (uncontended); `drain` is one swap.
#![cfg_attr(not(any(test, loom)), no_std)]

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

#[cfg(not(loom))]
use core::sync::atomic::{AtomicUsize, Ordering};
#[cfg(loom)]
use loom::sync::atomic::{AtomicUsize, Ordering};

/// Owner id meaning "nobody owns this queue".
pub const NO_OWNER: usize = 0;
/// Low bit of `head`: the owner gave the queue up while it was empty.
const DETACHED: usize = 1;

/// The intrusive link stored in the first word of every queued block.
///
/// Blocks must be at least 2-byte aligned (bit 0 of the head is a flag).
#[repr(C)]
pub struct Node {
    /// Next node, or null.
    pub next: *mut Node,
}

/// What a [`RemoteQueue::push`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a `Woke` push obliges the caller to publish the slab for adoption"]
pub enum Push {
    /// The block is queued; the owner (or a future adopter) will drain it.
    Queued,
    /// The block is queued *and* the queue was detached: this caller is the one
    /// thread that must now publish the slab (exactly one push sees this).
    Woke,
}

/// A multi-producer, single-consumer return queue with an ownership word.
///
/// Two words: `owner` (read on every free, written rarely) then `head`
/// (written by every remote free). A container can place the queue so that
/// the two fall on different cache lines (offset `64k - 8`), keeping the
/// owner word with other read-mostly data.
#[repr(C)]
pub struct RemoteQueue {
    owner: AtomicUsize,
    head: AtomicUsize,
}

// SAFETY: all shared state is atomic; nodes are only dereferenced by the pusher
// (before publication) or by the token-holding owner (after an Acquire swap).
unsafe impl Sync for RemoteQueue {}
// SAFETY: as above; the queue holds no thread-affine data.
unsafe impl Send for RemoteQueue {}

/// Proof that the holder owns a particular [`RemoteQueue`].
///
/// Not `Clone`/`Copy`: giving ownership up ([`RemoteQueue::release`],
/// [`RemoteQueue::detach`]) consumes it.
#[derive(Debug)]
pub struct OwnerToken<'q> {
    queue: *const RemoteQueue,
    id: usize,
    _q: PhantomData<&'q RemoteQueue>,
}

impl OwnerToken<'_> {
    /// True if this token was issued by `q` (for debug assertions: a token
    /// proves ownership of one particular queue).
    pub fn is_for(&self, q: &RemoteQueue) -> bool {
        ptr::eq(self.queue, q)
    }

    /// The owner id this token was issued for.
    pub fn id(&self) -> usize {
        self.id
    }
}

/// A drained list: a chain of [`Node`]s through `next`, ending in null.
#[derive(Debug)]
pub struct Drained {
    /// First node of the chain.
    pub head: NonNull<Node>,
}

impl Default for RemoteQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteQueue {
    /// An empty, unowned, attached queue.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
            owner: AtomicUsize::new(NO_OWNER),
        }
    }

    /// An empty, unowned, attached queue.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            head: AtomicUsize::new(0),
            owner: AtomicUsize::new(NO_OWNER),
        }
    }

    /// Returns a freed block to the queue's owner. Callable from any thread.
    ///
    /// # Safety
    /// `node` must point to writable memory of at least one pointer, aligned to
    /// at least 2 bytes, that nobody else uses until the owner drains it.
    #[inline]
    pub unsafe fn push(&self, node: NonNull<Node>) -> Push {
        // SAFETY: per the contract; the link writer writes only `next`.
        unsafe { self.push_with(node, |n, next| (*n).next = next) }
    }

    /// [`push`](Self::push) with the caller's link writer: `link(node, next)`
    /// must store `next` in `node.next` (and may write more of the block, such
    /// as a check word). It runs before every publish attempt, so whatever it
    /// writes is published with the node.
    ///
    /// # Safety
    /// As for [`push`](Self::push), and `link` writes only inside `node`'s
    /// block.
    #[inline]
    pub unsafe fn push_with(
        &self,
        node: NonNull<Node>,
        link: impl Fn(*mut Node, *mut Node),
    ) -> Push {
        // SAFETY: per the contract; a one-node chain.
        unsafe { self.push_chain_with(node, node, link) }
    }

    /// Returns a chain of freed blocks, `first` to `last` (already linked
    /// through `next`), with one publish: `link(last, next)` writes the
    /// chain's tail link before every attempt, as in
    /// [`push_with`](Self::push_with). A free batching the blocks of one slab
    /// pays one atomic operation for all of them.
    ///
    /// # Safety
    /// As for [`push_with`](Self::push_with), for every node of the chain;
    /// `first` reaches `last` through `next`.
    #[inline]
    pub unsafe fn push_chain_with(
        &self,
        first: NonNull<Node>,
        last: NonNull<Node>,
        link: impl Fn(*mut Node, *mut Node),
    ) -> Push {
        let n = first.as_ptr();
        let tail = last.as_ptr();
        debug_assert!(n as usize & DETACHED == 0, "remote_queue: misaligned node");
        let mut h = self.head.load(Ordering::Relaxed);
        loop {
            // The caller gave us the chain exclusively; it is not yet published.
            link(tail, (h & !DETACHED) as *mut Node);
            // Release publishes the `next` write (and the user's last writes to
            // the block) to the draining owner; Acquire pairs with the Release of
            // `detach`, so a waker sees everything the old owner wrote.
            match self.head.compare_exchange_weak(
                h,
                n as usize,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return if h & DETACHED != 0 {
                        Push::Woke
                    } else {
                        Push::Queued
                    }
                }
                Err(cur) => h = cur,
            }
        }
    }

    /// True if blocks are waiting to be drained. A hint: may change at once.
    #[inline]
    pub fn has_pending(&self) -> bool {
        self.head.load(Ordering::Relaxed) & !DETACHED != 0
    }

    /// True if the queue has been given up by a full owner and not yet woken.
    pub fn is_detached(&self) -> bool {
        self.head.load(Ordering::Acquire) & DETACHED != 0
    }

    /// The current owner id ([`NO_OWNER`] if none). Relaxed: a thread can only
    /// ever see *its own* id here if it wrote it itself.
    #[inline]
    pub fn owner(&self) -> usize {
        self.owner.load(Ordering::Relaxed)
    }

    /// True if `id` owns the queue. With `id == NO_OWNER` this asks "is it
    /// unowned?".
    #[inline(always)]
    pub fn is_owned_by(&self, id: usize) -> bool {
        self.owner.load(Ordering::Relaxed) == id
    }

    /// Becomes the owner if nobody is. `id` must be non-zero and unique among
    /// live owners.
    pub fn claim(&self, id: usize) -> Option<OwnerToken<'_>> {
        assert_ne!(id, NO_OWNER, "remote_queue: owner id 0 is reserved");
        self.owner
            .compare_exchange(NO_OWNER, id, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| OwnerToken {
                queue: self,
                id,
                _q: PhantomData,
            })
    }

    /// Re-creates the token of a queue the caller already owns.
    ///
    /// # Safety
    /// The caller must be the thread that claimed the queue as `id` and has not
    /// released or detached it since, and must not use two tokens at once.
    /// Not checked (it sits on allocation fast paths, where callers may vouch
    /// for an always-empty sentinel queue); callers debug-assert ownership on
    /// their slow paths.
    #[inline(always)]
    pub unsafe fn assume_owned(&self, id: usize) -> OwnerToken<'_> {
        OwnerToken {
            queue: self,
            id,
            _q: PhantomData,
        }
    }

    /// Takes every queued block. Owner only.
    #[inline]
    pub fn drain(&self, token: &OwnerToken<'_>) -> Option<Drained> {
        debug_assert!(
            ptr::eq(token.queue, self),
            "remote_queue: token of another queue"
        );
        if self.head.load(Ordering::Relaxed) & !DETACHED == 0 {
            return None;
        }
        let h = self.head.swap(0, Ordering::Acquire) & !DETACHED;
        NonNull::new(h as *mut Node).map(|head| Drained { head })
    }

    /// Gives ownership up; the queue stays attached (pushers will not wake it).
    /// Used when the slab goes to a pool list where adopters look for it.
    pub fn release(&self, token: OwnerToken<'_>) {
        debug_assert!(ptr::eq(token.queue, self));
        self.owner.store(NO_OWNER, Ordering::Release);
    }

    /// Gives ownership up and marks the queue detached, provided it is empty.
    ///
    /// On success no list holds the slab: the first later push gets
    /// [`Push::Woke`] and must publish it. If blocks are pending, ownership is
    /// kept and the token is handed back so that the caller drains them.
    pub fn detach<'q>(&'q self, token: OwnerToken<'q>) -> Result<(), OwnerToken<'q>> {
        debug_assert!(ptr::eq(token.queue, self));
        // Owner first: once DETACHED is visible a waker may publish the slab and
        // an adopter may claim it, which requires NO_OWNER.
        self.owner.store(NO_OWNER, Ordering::Release);
        match self
            .head
            .compare_exchange(0, DETACHED, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(_) => {
                // Nobody can claim in between: the slab is on no list.
                self.owner.store(token.id, Ordering::Relaxed);
                Err(token)
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::boxed::Box;
    use std::sync::Arc;
    use std::vec::Vec;

    fn node() -> NonNull<Node> {
        NonNull::from(Box::leak(Box::new(Node {
            next: ptr::null_mut(),
        })))
    }

    fn count(d: Option<Drained>) -> usize {
        let mut n = 0;
        let mut p = d.map_or(ptr::null_mut(), |d| d.head.as_ptr());
        while !p.is_null() {
            n += 1;
            // SAFETY: nodes come from `node()` and are leaked, so always valid.
            p = unsafe { (*p).next };
        }
        n
    }

    #[test]
    fn claim_is_exclusive_and_release_reopens() {
        let q = RemoteQueue::new();
        let t = q.claim(1).expect("free queue");
        assert!(q.claim(2).is_none());
        assert!(q.is_owned_by(1));
        q.release(t);
        assert_eq!(q.owner(), NO_OWNER);
        assert!(q.claim(2).is_some());
    }

    #[test]
    fn drain_returns_everything_pushed() {
        let q = RemoteQueue::new();
        let t = q.claim(9).unwrap();
        assert!(q.drain(&t).is_none());
        for _ in 0..10 {
            // SAFETY: fresh leaked node, exclusively ours.
            assert_eq!(unsafe { q.push(node()) }, Push::Queued);
        }
        assert!(q.has_pending());
        assert_eq!(count(q.drain(&t)), 10);
        assert!(!q.has_pending());
    }

    #[test]
    fn detach_fails_while_pending_and_first_push_wakes_once() {
        let q = RemoteQueue::new();
        let t = q.claim(3).unwrap();
        // SAFETY: fresh leaked node.
        let _ = unsafe { q.push(node()) };
        let t = q.detach(t).expect_err("pending blocks keep the owner");
        assert!(q.is_owned_by(3));
        assert_eq!(count(q.drain(&t)), 1);
        q.detach(t).expect("empty queue detaches");
        assert!(q.is_detached());
        assert_eq!(q.owner(), NO_OWNER);
        // SAFETY: fresh leaked nodes.
        assert_eq!(unsafe { q.push(node()) }, Push::Woke);
        // SAFETY: as above.
        assert_eq!(unsafe { q.push(node()) }, Push::Queued);
        assert!(!q.is_detached());
        let t = q.claim(4).unwrap();
        assert_eq!(count(q.drain(&t)), 2);
    }

    #[test]
    fn concurrent_pushers_lose_nothing_and_wake_exactly_once() {
        for _ in 0..20 {
            let q = Arc::new(RemoteQueue::new());
            let t = q.claim(1).unwrap();
            q.detach(t).unwrap();
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let q = q.clone();
                    std::thread::spawn(move || {
                        let mut woke = 0;
                        for _ in 0..1000 {
                            // SAFETY: fresh leaked node.
                            if unsafe { q.push(node()) } == Push::Woke {
                                woke += 1;
                            }
                        }
                        woke
                    })
                })
                .collect();
            let woke: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(woke, 1);
            let t = q.claim(2).unwrap();
            assert_eq!(count(q.drain(&t)), 4000);
        }
    }
}
