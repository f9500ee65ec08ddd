//! Striped event counters that cost no atomic read-modify-write on the hot path.
//!
//! Every thread that touches a pool gets a small index (recycled when the thread exits). A
//! thread with an index below [`STRIPES`] owns that stripe alone, so it can bump its counters
//! with a relaxed load and store instead of a `lock xadd`; threads beyond that share one
//! overflow stripe updated with `fetch_add`. Readers sum all stripes: exact once the writers
//! are quiescent, and never torn.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

/// Stripes owned by one thread each; index `STRIPES` is the shared overflow stripe.
pub(crate) const STRIPES: usize = 32;

static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);
static FREE_INDICES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// A thread's stripe index; returned to the free list when the thread exits.
struct ThreadIndex(usize);

impl ThreadIndex {
    fn acquire() -> Self {
        if let Some(i) = FREE_INDICES.lock().pop() {
            return Self(i);
        }
        Self(NEXT_INDEX.fetch_add(1, Ordering::Relaxed))
    }
}

impl Drop for ThreadIndex {
    fn drop(&mut self) {
        // Later destructors on this thread must not write the stripe we hand back.
        let _ = CACHED.try_with(|c| c.set(STRIPES));
        // Only owned stripes are worth recycling; the overflow stripe is shared anyway.
        if self.0 < STRIPES {
            FREE_INDICES.lock().push(self.0);
        }
    }
}

thread_local! {
    static INDEX: ThreadIndex = ThreadIndex::acquire();
    static CACHED: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The calling thread's stripe, or `STRIPES` for the shared overflow stripe.
///
/// A value below `STRIPES` belongs to the calling thread alone for as long as it runs, so
/// other per-thread state (the object pool's slots) can be indexed by it too.
#[inline]
pub(crate) fn stripe() -> usize {
    let cached = CACHED.with(Cell::get);
    if cached != usize::MAX {
        return cached;
    }
    let i = INDEX.try_with(|t| t.0.min(STRIPES)).unwrap_or(STRIPES);
    // During thread teardown INDEX may be gone: use the shared stripe and do not cache it.
    if i < STRIPES {
        CACHED.with(|c| c.set(i));
    }
    i
}

/// `N` counters, striped per thread.
pub(crate) struct Counters<const N: usize> {
    stripes: Box<[CachePadded<[AtomicU64; N]>]>,
}

impl<const N: usize> Counters<N> {
    pub(crate) fn new() -> Self {
        let stripes = (0..=STRIPES)
            .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Self { stripes }
    }

    /// Adds one to counter `which`.
    #[inline]
    pub(crate) fn bump(&self, which: usize) {
        self.bump_in(stripe(), which);
    }

    /// Adds one to counter `which` of stripe `s`, which must come from [`stripe`] on the
    /// calling thread (saves a second thread-local lookup when the caller has it already).
    #[inline]
    pub(crate) fn bump_in(&self, s: usize, which: usize) {
        let cell = &self.stripes[s.min(STRIPES)][which];
        if s < STRIPES {
            // Sole writer of this stripe: a plain load and store suffices.
            cell.store(cell.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        } else {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sum of every counter over all stripes.
    pub(crate) fn snapshot(&self) -> [u64; N] {
        let mut out = [0; N];
        for stripe in self.stripes.iter() {
            for (o, c) in out.iter_mut().zip(stripe.iter()) {
                *o += c.load(Ordering::Relaxed);
            }
        }
        out
    }
}

impl<const N: usize> std::fmt::Debug for Counters<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counters").field(&self.snapshot()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sequential_threads_keep_owning_stripes() {
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen.push(std::thread::scope(|s| {
                s.spawn(stripe).join().unwrap_or(STRIPES)
            }));
        }
        let shared = seen.iter().filter(|&&i| i >= STRIPES).count();
        assert_eq!(shared, 0, "stripes seen: {seen:?}");
    }

    #[test]
    fn counts_from_many_threads_add_up() {
        let c = Arc::new(Counters::<2>::new());
        let handles: Vec<_> = (0..48)
            .map(|_| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.bump(0);
                    }
                    c.bump(1);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("counter thread panicked");
        }
        assert_eq!(c.snapshot(), [48_000, 48]);
    }
}
