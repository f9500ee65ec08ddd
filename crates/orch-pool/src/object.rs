//! [`ObjectPool`]: a bounded, lock-free pool of reusable objects.
//!
//! Two levels: one slot per thread (an [`AtomicCell`] holding a boxed object), in front of a
//! shared [`ArrayQueue`]. A thread that gets and returns objects in turn works on its own slot
//! and touches no shared cache line; the shared list serves the other patterns (objects
//! handed between threads, several held at once), and other threads take from a slot when
//! the shared list is empty. Objects are boxed so that a slot is one machine word and a
//! return moves a pointer, not the object.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;
use crossbeam_utils::CachePadded;
use crossbeam_utils::atomic::AtomicCell;

use crate::stats::{self, Counters, STRIPES};

/// Seed default: objects kept in the pool.
pub const DEFAULT_MAX_SIZE: usize = 200;
/// Seed default: objects created up front by [`ObjectPoolBuilder::build`].
pub const DEFAULT_PREWARM: usize = 50;

const HITS: usize = 0;
const MISSES: usize = 1;
const RETURNS: usize = 2;
const DISCARDS: usize = 3;
const DETACHED: usize = 4;

type Factory<T> = Box<dyn Fn() -> T + Send + Sync>;
type Reset<T> = Box<dyn Fn(&mut T) + Send + Sync>;
type Validate<T> = Box<dyn Fn(&T) -> bool + Send + Sync>;

/// Per-thread slots for a pool of `max_size` objects: up to one per stats stripe, and at most
/// half the pool, so the shared list keeps at least half (and at least one object).
fn slot_count(max_size: usize) -> usize {
    (max_size / 2).min(STRIPES)
}

const _: () = assert!(STRIPES < u64::BITS as usize, "one `parked` bit per slot");

/// The object cached for one thread (the owner of the stats stripe with the same index).
struct Slot<T> {
    obj: AtomicCell<Option<Box<T>>>,
    /// Whether the owner believes `obj` full. Read and written by the owner alone, so it
    /// stays in the owner's cache. A thread holding several objects skips its slot with it:
    /// further gets go straight to the shared list while the slot is empty, further returns
    /// while it is full. It is wrong only after another thread took from or put into the
    /// slot, and then costs one wasted swap or leaves the object for another thread to take.
    owner_full: AtomicBool,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            obj: AtomicCell::new(None),
            owner_full: AtomicBool::new(false),
        }
    }
}

/// A bounded pool of reusable `T` on a lock-free free list.
///
/// [`get`](Self::get) takes a free object or creates one with the factory; the returned
/// [`Pooled`] guard puts it back on drop. On the way back the validity check runs first (an
/// invalid object is dropped), then the reset hook, then the object is kept if the pool has
/// room (otherwise dropped). So every object a caller receives has been reset, and at most
/// `max_size` objects are ever kept.
///
/// The free list has two levels. A thread owns a slot for one object (threads get slots in
/// the order they first use one of this crate's pools, up to 32 running at once and up to
/// `max_size / 2` slots per pool); the rest of `max_size` is a shared lock-free queue. A
/// returning object goes to the thread's slot if it is empty, else to the queue; `get` tries
/// the thread's slot, then the queue, then every slot that holds an object, and only then
/// creates. So a thread that gets and returns one object at a time reuses the same object
/// without touching state shared with other threads, and no object is out of reach while
/// the pool has any: when the queue is full a returning object may take another thread's
/// empty slot, and a `get` that finds the queue empty takes from other threads' slots.
/// Objects are stored boxed: one extra allocation per object created, and a return moves a
/// pointer whatever the size of `T`.
///
/// Share it by reference (`&ObjectPool`, [`Pooled`]) or through an `Arc`
/// ([`get_owned`](Self::get_owned), [`PooledOwned`]).
pub struct ObjectPool<T> {
    /// The first level, indexed by the calling thread's stats stripe.
    slots: Box<[CachePadded<Slot<T>>]>,
    /// Bit `i`: slot `i` may hold an object. A hint for the cold paths (a `get` that finds
    /// the shared list empty, a return that finds it full), so that they swap only slots worth
    /// swapping. Set, if not already, after a put fills a slot; cleared by `steal` just before
    /// it takes from the slot; not written when a thread takes from its own slot, so a thread
    /// alternating get and return only reads it. Once threads are quiet, every slot holding
    /// an object has its bit set (a put that races a `steal` re-reads the bit after the
    /// `steal`'s take); a bit may be set for an empty slot (a wasted swap). The `AtomicCell`s
    /// alone decide who gets which object, and the counts never depend on this word.
    parked: CachePadded<AtomicU64>,
    /// The second level: `max_size - slots.len()` objects.
    free: ArrayQueue<Box<T>>,
    factory: Factory<T>,
    reset: Option<Reset<T>>,
    validate: Option<Validate<T>>,
    counters: Counters<5>,
    /// Objects created by `build`: with the counters, gives [`available`](Self::available).
    prewarmed: u64,
}

/// Counters of an [`ObjectPool`].
///
/// Each guard ends as exactly one return, discard or detach, and so does each object
/// [`attach`](ObjectPool::attach)ed from outside: once every guard is dropped,
/// `returns + discards + detached` equals `hits + misses` plus the number of attaches.
/// A return means the pool keeps one more object, so `prewarmed + returns - hits` is the
/// number of objects kept (what [`available`](ObjectPool::available) reports). Counting is
/// per thread (no shared cache line on the hot path) and summed when read: read while gets
/// and returns run, the counters can be a few events apart from one another; they are exact
/// once every thread is quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ObjectPoolStats {
    /// Gets served by a kept object (from any slot or the shared list).
    pub hits: u64,
    /// Gets that had to create an object.
    pub misses: u64,
    /// Objects kept on the way back.
    pub returns: u64,
    /// Objects dropped on the way back: invalid, discarded by the holder, or the pool was full.
    pub discards: u64,
    /// Guards turned into plain objects with `detach`.
    pub detached: u64,
}
impl ObjectPoolStats {
    /// `hits / (hits + misses)`, or 0 before the first get.
    #[must_use]
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

/// Builds an [`ObjectPool`]; see [`ObjectPool::builder`].
#[must_use]
pub struct ObjectPoolBuilder<T> {
    factory: Factory<T>,
    max_size: usize,
    prewarm: usize,
    reset: Option<Reset<T>>,
    validate: Option<Validate<T>>,
}

impl<T> fmt::Debug for ObjectPoolBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectPoolBuilder")
            .field("max_size", &self.max_size)
            .field("prewarm", &self.prewarm)
            .field("reset", &self.reset.is_some())
            .field("validate", &self.validate.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> ObjectPoolBuilder<T> {
    /// Objects kept at most (default 200), slots included. Zero is raised to one.
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size.max(1);
        self
    }

    /// Objects created by `build` (default 50, capped at `max_size`).
    pub fn prewarm(mut self, prewarm: usize) -> Self {
        self.prewarm = prewarm;
        self
    }

    /// Hook run on every object that goes back on the free list.
    pub fn reset(mut self, reset: impl Fn(&mut T) + Send + Sync + 'static) -> Self {
        self.reset = Some(Box::new(reset));
        self
    }

    /// Check run on every returning object; `false` drops it instead of pooling it.
    pub fn validate(mut self, validate: impl Fn(&T) -> bool + Send + Sync + 'static) -> Self {
        self.validate = Some(Box::new(validate));
        self
    }

    /// Creates the pool and its prewarmed objects (on the shared list first, then in slots).
    pub fn build(self) -> ObjectPool<T> {
        let slots: Box<[CachePadded<Slot<T>>]> = (0..slot_count(self.max_size))
            .map(|_| CachePadded::default())
            .collect();
        let free = ArrayQueue::new(self.max_size - slots.len());
        let prewarmed = self.prewarm.min(self.max_size);
        let mut parked = 0;
        for i in 0..prewarmed {
            if let Err(obj) = free.push(Box::new((self.factory)())) {
                // In range: `prewarmed <= max_size == free.capacity() + slots.len()`.
                let k = i - free.capacity();
                slots[k].obj.store(Some(obj));
                slots[k].owner_full.store(true, Ordering::Relaxed);
                parked |= 1 << k;
            }
        }
        ObjectPool {
            slots,
            parked: CachePadded::new(AtomicU64::new(parked)),
            free,
            factory: self.factory,
            reset: self.reset,
            validate: self.validate,
            counters: Counters::new(),
            prewarmed: prewarmed as u64,
        }
    }
}

impl<T> ObjectPool<T> {
    /// A builder with the seed defaults (200 objects, 50 prewarmed, no hooks).
    pub fn builder(factory: impl Fn() -> T + Send + Sync + 'static) -> ObjectPoolBuilder<T> {
        ObjectPoolBuilder {
            factory: Box::new(factory),
            max_size: DEFAULT_MAX_SIZE,
            prewarm: DEFAULT_PREWARM,
            reset: None,
            validate: None,
        }
    }

    /// A pool of at most `max_size` objects, none prewarmed, without hooks.
    pub fn new(max_size: usize, factory: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self::builder(factory).max_size(max_size).prewarm(0).build()
    }

    /// A kept object for the thread of stripe `s`, counted as a hit; `None` when the pool
    /// holds none.
    #[inline(always)]
    fn take(&self, s: usize) -> Option<Box<T>> {
        let own = self.slots.get(s).and_then(|slot| {
            if !slot.owner_full.load(Ordering::Relaxed) {
                return None;
            }
            slot.owner_full.store(false, Ordering::Relaxed);
            slot.obj.take()
        });
        let obj = match own {
            Some(obj) => obj,
            None => self.free.pop().or_else(|| self.steal())?,
        };
        self.counters.bump_in(s, HITS);
        Some(obj)
    }

    /// Takes an object from any slot marked in `parked`: the shared list was empty.
    #[cold]
    #[inline(never)]
    fn steal(&self) -> Option<Box<T>> {
        // The caller's own slot included: another thread may have filled it unbeknown to it.
        let mut candidates = self.parked.load(Ordering::Relaxed);
        while candidates != 0 {
            let i = candidates.trailing_zeros() as usize;
            let bit = 1 << i;
            candidates &= !bit;
            // Cleared before the take: an owner that refills the slot afterwards sees the bit
            // clear and sets it again.
            self.parked.fetch_and(!bit, Ordering::Relaxed);
            if let Some(obj) = self.slots[i].obj.take() {
                return Some(obj);
            }
        }
        None
    }

    /// Marks slot `i` as holding an object, writing the shared word only if needed.
    #[inline(always)]
    fn mark_parked(&self, i: usize) {
        let bit = 1 << i;
        if self.parked.load(Ordering::Relaxed) & bit == 0 {
            self.parked.fetch_or(bit, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn take_or_create(&self) -> Box<T> {
        let s = stats::stripe();
        self.take(s).unwrap_or_else(|| {
            self.counters.bump_in(s, MISSES);
            Box::new((self.factory)())
        })
    }

    /// A kept object, or a new one from the factory when the pool holds none.
    #[inline]
    pub fn get(&self) -> Pooled<'_, T> {
        Pooled {
            obj: Some(self.take_or_create()),
            pool: self,
        }
    }

    /// A kept object, or `None` when the pool holds none (never creates).
    #[inline]
    pub fn try_get(&self) -> Option<Pooled<'_, T>> {
        Some(Pooled {
            obj: Some(self.take(stats::stripe())?),
            pool: self,
        })
    }

    /// Like [`get`](Self::get), with a guard that holds an `Arc` of the pool.
    #[inline]
    pub fn get_owned(self: &Arc<Self>) -> PooledOwned<T> {
        PooledOwned {
            obj: Some(self.take_or_create()),
            pool: Arc::clone(self),
        }
    }

    /// Offers an object created elsewhere to the pool, through the same validity check and
    /// reset as a returning guard. Counted as a return or a discard.
    pub fn attach(&self, obj: T) {
        self.put_back(Box::new(obj));
    }

    /// Offers `obj` back: validity check, reset in place, then keep it if there is room.
    #[inline(always)]
    fn put_back(&self, mut obj: Box<T>) {
        let s = stats::stripe();
        if let Some(validate) = &self.validate
            && !validate(&obj)
        {
            self.counters.bump_in(s, DISCARDS);
            return;
        }
        if let Some(reset) = &self.reset {
            reset(&mut obj);
        }
        // Into the thread's slot if it is empty, else onto the shared list.
        let obj = match self.slots.get(s) {
            Some(slot) if !slot.owner_full.load(Ordering::Relaxed) => {
                slot.owner_full.store(true, Ordering::Relaxed);
                match slot.obj.swap(Some(obj)) {
                    None => {
                        self.mark_parked(s);
                        self.counters.bump_in(s, RETURNS);
                        return;
                    }
                    // Another thread had put an object here: that one moves on.
                    Some(other) => other,
                }
            }
            _ => obj,
        };
        match self.free.push(obj) {
            Ok(()) => self.counters.bump_in(s, RETURNS),
            Err(obj) => self.overflow(s, obj),
        }
    }

    /// The shared list is full: keeps `obj` in an empty slot of another thread, or drops it.
    #[cold]
    #[inline(never)]
    fn overflow(&self, s: usize, mut obj: Box<T>) {
        // `slots.len() <= STRIPES < 64`.
        let all = (1u64 << self.slots.len()) - 1;
        let mut candidates = !self.parked.load(Ordering::Relaxed) & all;
        while candidates != 0 {
            let i = candidates.trailing_zeros() as usize;
            candidates &= !(1 << i);
            let full = self.slots[i].obj.swap(Some(obj));
            self.mark_parked(i);
            match full {
                None => {
                    self.counters.bump_in(s, RETURNS);
                    return;
                }
                // The bit was stale: carry the slot's object on instead.
                Some(other) => obj = other,
            }
        }
        self.counters.bump_in(s, DISCARDS);
    }

    /// Objects the pool keeps now, ready for [`get`](Self::get): exact once every thread is
    /// quiet (derived from the counters, as `prewarmed + returns - hits`).
    #[must_use]
    pub fn available(&self) -> usize {
        let [hits, _, returns, ..] = self.counters.snapshot();
        let kept = (self.prewarmed + returns).saturating_sub(hits);
        usize::try_from(kept).map_or(self.max_size(), |k| k.min(self.max_size()))
    }

    /// Objects the pool can keep: the shared list and the per-thread slots.
    #[must_use]
    pub fn max_size(&self) -> usize {
        self.free.capacity() + self.slots.len()
    }

    /// A snapshot of the counters (exact when no guard is being taken or dropped).
    #[must_use]
    pub fn stats(&self) -> ObjectPoolStats {
        let [hits, misses, returns, discards, detached] = self.counters.snapshot();
        ObjectPoolStats {
            hits,
            misses,
            returns,
            discards,
            detached,
        }
    }
}

impl<T> fmt::Debug for ObjectPool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectPool")
            .field("available", &self.available())
            .field("max_size", &self.max_size())
            .field("slots", &self.slots.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

macro_rules! guard_impls {
    ($guard:ident $(<$lt:lifetime>)?) => {
        impl<$($lt,)? T> $guard<$($lt,)? T> {
            /// Takes the object out of the pool's care: it will not be returned.
            #[must_use]
            pub fn detach(mut self) -> T {
                self.pool.counters.bump(DETACHED);
                // Invariant: `obj` is `Some` until drop or detach.
                *self.obj.take().expect("pooled object present until drop")
            }

            /// Drops the object instead of returning it (counted as a discard).
            pub fn discard(mut self) {
                self.pool.counters.bump(DISCARDS);
                self.obj = None;
            }
        }

        impl<$($lt,)? T> Deref for $guard<$($lt,)? T> {
            type Target = T;
            #[inline]
            fn deref(&self) -> &T {
                self.obj.as_deref().expect("pooled object present until drop")
            }
        }

        impl<$($lt,)? T> DerefMut for $guard<$($lt,)? T> {
            #[inline]
            fn deref_mut(&mut self) -> &mut T {
                self.obj.as_deref_mut().expect("pooled object present until drop")
            }
        }

        impl<$($lt,)? T> Drop for $guard<$($lt,)? T> {
            #[inline]
            fn drop(&mut self) {
                if let Some(obj) = self.obj.take() {
                    self.pool.put_back(obj);
                }
            }
        }

        impl<$($lt,)? T: fmt::Debug> fmt::Debug for $guard<$($lt,)? T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($guard)).field(&self.obj).finish()
            }
        }
    };
}

/// An object borrowed from an [`ObjectPool`]; returns it on drop.
#[must_use = "dropping the guard returns the object at once"]
pub struct Pooled<'a, T> {
    obj: Option<Box<T>>,
    pool: &'a ObjectPool<T>,
}

/// An object borrowed from an `Arc<ObjectPool>`; returns it on drop.
#[must_use = "dropping the guard returns the object at once"]
pub struct PooledOwned<T> {
    obj: Option<Box<T>>,
    pool: Arc<ObjectPool<T>>,
}

guard_impls!(Pooled<'a>);
guard_impls!(PooledOwned);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prewarmed_objects_are_hits() {
        let pool = ObjectPool::builder(Vec::<u8>::new)
            .max_size(4)
            .prewarm(2)
            .build();
        assert_eq!(pool.available(), 2);
        let a = pool.get();
        let b = pool.get();
        let c = pool.get();
        drop((a, b, c));
        let s = pool.stats();
        assert_eq!((s.hits, s.misses, s.returns, s.discards), (2, 1, 3, 0));
        assert!((s.hit_rate() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn reset_runs_before_reuse_and_invalid_objects_are_dropped() {
        let pool = ObjectPool::builder(Vec::<u8>::new)
            .prewarm(0)
            .reset(Vec::clear)
            .validate(|v| v.capacity() <= 64)
            .build();
        let mut a = pool.get();
        a.extend_from_slice(b"hello");
        drop(a);
        assert!(pool.get().is_empty(), "reset hook must clear the vector");
        let mut big = pool.get();
        big.reserve(1024);
        drop(big);
        assert_eq!(pool.stats().discards, 1);
        assert_eq!(pool.available(), 0);
    }

    #[test]
    fn full_free_list_discards_and_detach_keeps() {
        let pool = ObjectPool::new(1, || 7u32);
        let a = pool.get();
        let b = pool.get();
        let c = pool.get();
        assert_eq!(c.detach(), 7);
        drop((a, b));
        let s = pool.stats();
        assert_eq!((s.returns, s.discards, s.detached), (1, 1, 1));
        assert_eq!(pool.available(), 1);
    }

    #[test]
    fn try_get_never_creates() {
        let pool = ObjectPool::new(2, || 1u8);
        assert!(pool.try_get().is_none());
        pool.attach(5);
        assert_eq!(pool.try_get().map(|g| *g), Some(5));
    }
}
