//! Loom model of the scope protocol that the lifetime erasure in `scope.rs` relies on:
//! once the waiter sees the latch done, every scoped job has finished (or been dropped) and
//! its writes to the borrowed environment are visible; the waiter is never left parked.
//!
//! Both waiters are modelled: a thread outside the pool that parks (`Waiter::Thread`) and a
//! pool worker that polls `is_done` between other jobs (`Waiter::Worker`). The second model is
//! needed because loom's `unpark` joins the unparker's clock into the target thread at once,
//! so a parked waiter is synchronised even if `is_done`'s Acquire were weakened to Relaxed.
//!
//! Run (bounded, separate target dir; see the crate README for timings):
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom
//! cargo test -p orch-queue --lib --release --locked -- tests::loom_`
#![allow(unsafe_code)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use crate::latch::{ScopeLatch, Waiter};
use crate::scope::erase;

#[test]
fn waiter_sees_every_scoped_write_after_the_latch_is_done() {
    loom::model(|| {
        // Borrowed environment: lives on this (the scope owner's) stack.
        let env = [AtomicUsize::new(0), AtomicUsize::new(0)];
        let latch = Arc::new(ScopeLatch::new(Waiter::Thread(thread::current())));
        let mut handles = Vec::new();
        for (i, slot) in env.iter().enumerate() {
            latch.increment();
            let task = move || slot.store(i + 1, Ordering::Relaxed);
            // SAFETY: this model waits for the latch before `env` goes out of scope.
            let job = unsafe { erase(task, Arc::clone(&latch)) };
            handles.push(thread::spawn(job));
        }
        latch.decrement(); // the scope body's count
        latch.wait_parked();
        // Relaxed loads: only the latch's release/acquire makes the writes visible.
        assert_eq!(env[0].load(Ordering::Relaxed), 1);
        assert_eq!(env[1].load(Ordering::Relaxed), 2);
        assert!(!latch.was_discarded());
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn worker_waiter_polling_is_done_sees_every_scoped_write() {
    loom::model(|| {
        let env = [AtomicUsize::new(0), AtomicUsize::new(0)];
        // crossbeam's parker is invisible to loom: unparking it synchronises nothing, as
        // `run_until` does not rely on it either (it re-checks `is_done` after every job).
        let parker = crossbeam_utils::sync::Parker::new();
        let latch = Arc::new(ScopeLatch::new(Waiter::Worker(parker.unparker().clone())));
        let mut handles = Vec::new();
        for (i, slot) in env.iter().enumerate() {
            latch.increment();
            let task = move || slot.store(i + 1, Ordering::Relaxed);
            // SAFETY: this model waits for the latch before `env` goes out of scope.
            let job = unsafe { erase(task, Arc::clone(&latch)) };
            handles.push(thread::spawn(job));
        }
        latch.decrement(); // the scope body's count
        while !latch.is_done() {
            thread::yield_now(); // a worker's `run_until` spins, yields and re-checks
        }
        // Only `is_done`'s Acquire load orders the scoped writes before these reads.
        assert_eq!(env[0].load(Ordering::Relaxed), 1);
        assert_eq!(env[1].load(Ordering::Relaxed), 2);
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn a_job_dropped_unrun_releases_the_latch_and_marks_the_discard() {
    loom::model(|| {
        let env = AtomicUsize::new(0);
        let latch = Arc::new(ScopeLatch::new(Waiter::Thread(thread::current())));
        latch.increment();
        let task = || env.store(1, Ordering::Relaxed);
        // SAFETY: this model waits for the latch before `env` goes out of scope.
        let job = unsafe { erase(task, Arc::clone(&latch)) };
        let h = thread::spawn(move || drop(job));
        latch.decrement();
        latch.wait_parked();
        assert!(latch.was_discarded());
        assert_eq!(env.load(Ordering::Relaxed), 0);
        h.join().unwrap();
    });
}
