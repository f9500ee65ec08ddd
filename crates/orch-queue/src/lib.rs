//! Work-stealing scheduling: a thread pool with priorities and scoped tasks, and an async
//! lane scheduler with context affinity.
//!
//! # The thread pool
//!
//! [`WorkStealingPool`] runs closures on a fixed set of worker threads, built on
//! `crossbeam-deque` (Chase-Lev deques). There is one global injector queue per
//! [`SpawnPriority`] (HIGH, NORMAL, LOW) and one local deque per worker. A worker looks for work in
//! this order:
//!
//! 1. its own deque, newest first (tasks spawned by the task it just ran: fork-join locality);
//! 2. the injectors, HIGH then NORMAL then LOW, moving a batch of up to
//!    [`batch_limit`](PoolBuilder::batch_limit) tasks into its deque; every
//!    [`fairness_interval`](PoolBuilder::fairness_interval)-th poll is a *guard poll* that
//!    looks at LOW (or NORMAL) first, so LOW work runs even while HIGH work keeps arriving;
//! 3. another worker's deque, chosen at random, oldest first (`Steal::Retry` repeats the
//!    sweep).
//!
//! A worker that finds nothing spins briefly, then parks. Producers publish work, fence, and
//! wake a parked worker; sleepers announce themselves, fence, and re-check every queue before
//! parking, so a wake-up cannot be lost (see `sleep.rs`).
//!
//! [`Spawner::spawn`] called from inside a task pushes to the current worker's deque;
//! [`WorkStealingPool::spawn_batch`] submits many tasks with one admission check;
//! [`WorkStealingPool::scope`] and [`WorkStealingPool::join`] run tasks that borrow from the
//! caller's stack, and a worker waiting on a scope keeps running other work. A panicking task
//! is caught: the worker survives, the panic is counted, logged
//! ([`WorkStealingPool::take_panics`]) and passed to an optional handler; in a scope it is
//! re-thrown to the scope's caller. [`WorkStealingPool::shutdown`] stops admission, drains or
//! discards queued work ([`ShutdownPolicy`]) and joins the threads.
//!
//! # The lane scheduler
//!
//! [`LaneScheduler`] places tasks (any `T`) on lanes consumed by async tasks, such as agent
//! sessions. A task may carry *affinity keys* (e.g. the files it touches); it goes to the lane
//! that last ran one of its keys, where that context is warm, else to the least-loaded lane.
//! A lane with an empty queue steals the oldest task of the busiest lane. The scheduler is
//! runtime-agnostic (plain `Waker`s; tested on tokio).
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use orch_queue::{SpawnPriority, ShutdownPolicy, WorkStealingPool};
//!
//! let pool = WorkStealingPool::new(2)?;
//!
//! // Scoped fork-join over borrowed data.
//! let data: Vec<u64> = (1..=1000).collect();
//! let total = AtomicU64::new(0);
//! pool.scope(|s| {
//!     for chunk in data.chunks(100) {
//!         let total = &total;
//!         s.spawn(move || {
//!             total.fetch_add(chunk.iter().sum::<u64>(), Ordering::Relaxed);
//!         });
//!     }
//! });
//! assert_eq!(total.load(Ordering::Relaxed), 500_500);
//!
//! // Detached tasks with priorities.
//! pool.spawn_with_priority(SpawnPriority::High, || println!("urgent"))
//!     .map_err(|e| e.reason())?;
//! let report = pool.shutdown(ShutdownPolicy::Drain)?;
//! assert_eq!(report.threads_joined, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

mod error;
mod lanes;
mod latch;
mod pool;
mod priority;
mod scope;
mod sleep;
mod stats;
mod sync;
mod worker;

pub use error::{Error, Rejected};
pub use lanes::{
    Assigned, Lane, LaneCounters, LaneId, LaneOrder, LaneScheduler, LaneSchedulerBuilder, LaneSet,
    LaneStats, LaneTaskId, Next, Origin, Placement,
};
pub use pool::{
    PanicReport, PoolBuilder, PoolShutdownReport, ShutdownPolicy, Spawner, WorkStealingPool,
};
pub use priority::SpawnPriority;
pub use scope::Scope;
pub use stats::{PoolStats, WorkerStats};
pub use worker::current_worker_index;

/// Compiles and runs the README example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(all(test, loom))]
mod tests {
    mod loom_scope;
}
