//! The completion latch of a [`Scope`](crate::Scope): counts outstanding scoped jobs and wakes
//! the thread that waits for them.
//!
//! Soundness of the scope's lifetime erasure rests on one property, checked by the loom test
//! in `src/tests/loom_scope.rs`: when [`ScopeLatch::is_done`] returns `true`, every job counted
//! by [`ScopeLatch::increment`] has finished and dropped its closure, and all its writes are
//! visible to the waiter.

use std::any::Any;

use crossbeam_utils::sync::Unparker;

use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering, thread};

/// Who to wake when the count reaches zero.
pub(crate) enum Waiter {
    /// A thread outside the pool, blocked in `thread::park`.
    Thread(thread::Thread),
    /// A pool worker that keeps running other jobs while it waits.
    Worker(Unparker),
}

pub(crate) struct ScopeLatch {
    /// Outstanding jobs, plus one for the scope body itself.
    pending: AtomicUsize,
    waiter: Waiter,
    /// First panic of a scoped job, re-thrown by the scope.
    panic: Mutex<Option<Box<dyn Any + Send + 'static>>>,
    /// Set when a scoped job was dropped without running (pool shut down with discard).
    discarded: AtomicBool,
}

impl ScopeLatch {
    /// A latch with a count of one: the scope body.
    pub(crate) fn new(waiter: Waiter) -> Self {
        Self {
            pending: AtomicUsize::new(1),
            waiter,
            panic: Mutex::new(None),
            discarded: AtomicBool::new(false),
        }
    }

    pub(crate) fn increment(&self) {
        // Relaxed is enough: the caller holds a count already (the body's), so the counter
        // cannot reach zero concurrently.
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops one count; the last one wakes the waiter.
    ///
    /// The caller must keep the latch alive across this call (it holds an `Arc`).
    pub(crate) fn decrement(&self) {
        // Release publishes the job's writes; the waiter's Acquire load in `is_done` pairs.
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            match &self.waiter {
                Waiter::Thread(t) => t.unpark(),
                Waiter::Worker(u) => u.unpark(),
            }
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }

    /// Blocks the current (non-worker) thread until the count is zero.
    pub(crate) fn wait_parked(&self) {
        while !self.is_done() {
            thread::park();
        }
    }

    pub(crate) fn record_panic(&self, payload: Box<dyn Any + Send + 'static>) {
        let mut slot = match self.panic.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slot.is_none() {
            *slot = Some(payload);
        }
    }

    pub(crate) fn take_panic(&self) -> Option<Box<dyn Any + Send + 'static>> {
        match self.panic.lock() {
            Ok(mut g) => g.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
    }

    pub(crate) fn mark_discarded(&self) {
        self.discarded.store(true, Ordering::Relaxed);
    }

    pub(crate) fn was_discarded(&self) -> bool {
        self.discarded.load(Ordering::Relaxed)
    }
}
