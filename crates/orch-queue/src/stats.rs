//! Per-worker counters and the snapshots handed to callers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::SpawnPriority;

/// Counters written by one worker thread only (so a load + store replaces a locked RMW) and
/// read by anyone with Relaxed loads.
#[derive(Default)]
pub(crate) struct WorkerCounters {
    pub(crate) tasks_run: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) steal_attempts: AtomicU64,
    pub(crate) injector_takes: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) idle_nanos: AtomicU64,
}

#[inline]
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl WorkerCounters {
    pub(crate) fn snapshot(&self, index: usize, local_depth: usize) -> WorkerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WorkerStats {
            index,
            tasks_run: get(&self.tasks_run),
            panics: get(&self.panics),
            discarded: get(&self.discarded),
            steals: get(&self.steals),
            steal_attempts: get(&self.steal_attempts),
            injector_takes: get(&self.injector_takes),
            parks: get(&self.parks),
            idle: Duration::from_nanos(get(&self.idle_nanos)),
            local_depth,
        }
    }
}

/// Statistics of one worker thread at the moment of the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Worker index (`0..threads`).
    pub index: usize,
    /// Tasks this worker ran to completion or to a caught panic.
    pub tasks_run: u64,
    /// Tasks that panicked (included in `tasks_run`).
    pub panics: u64,
    /// Tasks this worker dropped unrun during a [`ShutdownPolicy::Discard`](crate::ShutdownPolicy) shutdown.
    pub discarded: u64,
    /// Successful steals from other workers' deques.
    pub steals: u64,
    /// Steal attempts on other workers' deques (successful or not).
    pub steal_attempts: u64,
    /// Successful takes from the priority injectors (each may move a batch).
    pub injector_takes: u64,
    /// Times the worker parked for lack of work.
    pub parks: u64,
    /// Total time spent parked.
    pub idle: Duration,
    /// Tasks waiting in this worker's local deque.
    pub local_depth: usize,
}

/// A snapshot of a pool's statistics ([`WorkStealingPool::stats`](crate::WorkStealingPool::stats)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
    /// Tasks waiting in the global injectors, indexed by [`SpawnPriority::index`].
    pub injector_depths: [usize; 3],
    /// Panics caught so far (all workers).
    pub panics: u64,
}

impl PoolStats {
    /// Sum of `tasks_run` over workers.
    pub fn tasks_run(&self) -> u64 {
        self.workers.iter().map(|w| w.tasks_run).sum()
    }

    /// Sum of successful steals over workers.
    pub fn steals(&self) -> u64 {
        self.workers.iter().map(|w| w.steals).sum()
    }

    /// Sum of steal attempts over workers.
    pub fn steal_attempts(&self) -> u64 {
        self.workers.iter().map(|w| w.steal_attempts).sum()
    }

    /// Depth of one priority's injector.
    pub fn injector_depth(&self, priority: SpawnPriority) -> usize {
        self.injector_depths[priority.index()]
    }

    /// Every queued task: injectors plus local deques.
    pub fn queued(&self) -> usize {
        self.injector_depths.iter().sum::<usize>()
            + self.workers.iter().map(|w| w.local_depth).sum::<usize>()
    }
}
