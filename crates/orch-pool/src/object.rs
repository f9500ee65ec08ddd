//! [`ObjectPool`]: a bounded, lock-free pool of reusable objects.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::stats::Counters;

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

/// A bounded pool of reusable `T` on a lock-free free list.
///
/// [`get`](Self::get) pops a free object or creates one with the factory; the returned
/// [`Pooled`] guard puts it back on drop. On the way back the validity check runs first (an
/// invalid object is dropped), then the reset hook, then the object is pushed if the free list
/// has room (otherwise dropped). So every object a caller receives has been reset, and at most
/// `max_size` objects are ever kept.
///
/// Share it by reference (`&ObjectPool`, [`Pooled`]) or through an `Arc`
/// ([`get_owned`](Self::get_owned), [`PooledOwned`]).
pub struct ObjectPool<T> {
    free: ArrayQueue<T>,
    factory: Factory<T>,
    reset: Option<Reset<T>>,
    validate: Option<Validate<T>>,
    counters: Counters<5>,
}

/// Counters of an [`ObjectPool`].
///
/// Once every guard is dropped, `hits + misses == returns + discards + detached + attached`
/// does not hold in general (objects can be [`attach`](ObjectPool::attach)ed from outside);
/// what always holds is that each guard ends as exactly one return, discard or detach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ObjectPoolStats {
    /// Gets served from the free list.
    pub hits: u64,
    /// Gets that had to create an object.
    pub misses: u64,
    /// Objects put back on the free list.
    pub returns: u64,
    /// Objects dropped on the way back: invalid, or the free list was full.
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
    /// Objects kept on the free list at most (default 200). Zero is raised to one.
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

    /// Creates the pool and its prewarmed objects.
    pub fn build(self) -> ObjectPool<T> {
        let free = ArrayQueue::new(self.max_size);
        for _ in 0..self.prewarm.min(self.max_size) {
            // Cannot fail: fewer pushes than capacity.
            let _ = free.push((self.factory)());
        }
        ObjectPool {
            free,
            factory: self.factory,
            reset: self.reset,
            validate: self.validate,
            counters: Counters::new(),
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

    #[inline(always)]
    fn take(&self) -> T {
        match self.free.pop() {
            Some(obj) => {
                self.counters.bump(HITS);
                obj
            }
            None => {
                self.counters.bump(MISSES);
                (self.factory)()
            }
        }
    }

    /// A free object, or a new one from the factory when the free list is empty.
    #[inline(always)]
    pub fn get(&self) -> Pooled<'_, T> {
        Pooled {
            obj: Some(self.take()),
            pool: self,
        }
    }

    /// A free object, or `None` when the free list is empty (never creates).
    #[inline]
    pub fn try_get(&self) -> Option<Pooled<'_, T>> {
        let obj = self.free.pop()?;
        self.counters.bump(HITS);
        Some(Pooled {
            obj: Some(obj),
            pool: self,
        })
    }

    /// Like [`get`](Self::get), with a guard that holds an `Arc` of the pool.
    #[inline]
    pub fn get_owned(self: &Arc<Self>) -> PooledOwned<T> {
        PooledOwned {
            obj: Some(self.take()),
            pool: Arc::clone(self),
        }
    }

    /// Offers an object created elsewhere to the pool, through the same validity check and
    /// reset as a returning guard. Counted as a return or a discard.
    pub fn attach(&self, obj: T) {
        self.put_back(obj);
    }

    /// Offers `obj` back: validity check, reset, push. Runs the hooks in place, so a guard's
    /// object is moved only once, into the free list.
    #[inline]
    fn put_back(&self, mut obj: T) {
        if self.prepare(&mut obj) {
            self.push(obj);
        }
    }

    /// Runs the validity check then the reset hook; `false` (counted as a discard) when the
    /// object must be dropped.
    #[inline(always)]
    fn prepare(&self, obj: &mut T) -> bool {
        if let Some(validate) = &self.validate
            && !validate(obj)
        {
            self.counters.bump(DISCARDS);
            return false;
        }
        if let Some(reset) = &self.reset {
            reset(obj);
        }
        true
    }

    #[inline(always)]
    fn push(&self, obj: T) {
        match self.free.push(obj) {
            Ok(()) => self.counters.bump(RETURNS),
            Err(_full) => self.counters.bump(DISCARDS),
        }
    }

    /// Objects currently on the free list.
    #[must_use]
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Objects the free list can hold.
    #[must_use]
    pub fn max_size(&self) -> usize {
        self.free.capacity()
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
                self.obj.take().expect("pooled object present until drop")
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
                self.obj.as_ref().expect("pooled object present until drop")
            }
        }

        impl<$($lt,)? T> DerefMut for $guard<$($lt,)? T> {
            #[inline]
            fn deref_mut(&mut self) -> &mut T {
                self.obj.as_mut().expect("pooled object present until drop")
            }
        }

        impl<$($lt,)? T> Drop for $guard<$($lt,)? T> {
            #[inline(always)]
            fn drop(&mut self) {
                let keep = match self.obj.as_mut() {
                    Some(obj) => self.pool.prepare(obj),
                    None => return,
                };
                match self.obj.take() {
                    Some(obj) if keep => self.pool.push(obj),
                    _ => {}
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
    obj: Option<T>,
    pool: &'a ObjectPool<T>,
}

/// An object borrowed from an `Arc<ObjectPool>`; returns it on drop.
#[must_use = "dropping the guard returns the object at once"]
pub struct PooledOwned<T> {
    obj: Option<T>,
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
