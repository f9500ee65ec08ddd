//! The public face of the thread pool: builder, handles, spawning, scopes and shutdown.

use std::collections::VecDeque;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use crossbeam_deque::{Injector, Steal, Worker};
use crossbeam_utils::{CachePadded, sync::Parker};

use crate::error::{Error, Rejected};
use crate::priority::SpawnPriority;
use crate::scope::{self, Scope};
use crate::sleep::Sleep;
use crate::stats::{PoolStats, WorkerCounters};
use crate::worker::{Job, PanicHandler, Shared, TERM_NONE, current_ctx, worker_main};

/// What [`WorkStealingPool::shutdown`] does with work that is still queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShutdownPolicy {
    /// Run every queued task, and every task those tasks spawn, then stop.
    #[default]
    Drain,
    /// Finish the tasks that are running, drop the queued ones unrun.
    Discard,
}

/// What [`WorkStealingPool::shutdown`] did. Counts are totals over the pool's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolShutdownReport {
    /// Tasks that ran (including those that panicked).
    pub completed: u64,
    /// Tasks dropped unrun because of [`ShutdownPolicy::Discard`].
    pub discarded: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Worker threads joined by this call.
    pub threads_joined: usize,
}

/// A caught task panic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PanicReport {
    /// Index of the worker that ran the task.
    pub worker: usize,
    /// The panic message, when the payload was a string.
    pub message: String,
}

/// Configures and starts a [`WorkStealingPool`].
pub struct PoolBuilder {
    threads: usize,
    name_prefix: String,
    fairness_interval: u32,
    batch_limit: usize,
    stack_size: Option<usize>,
    panic_handler: Option<PanicHandler>,
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("threads", &self.threads)
            .field("name_prefix", &self.name_prefix)
            .field("fairness_interval", &self.fairness_interval)
            .field("batch_limit", &self.batch_limit)
            .field("stack_size", &self.stack_size)
            .field("panic_handler", &self.panic_handler.is_some())
            .finish()
    }
}

impl Default for PoolBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PoolBuilder {
    /// Defaults: one thread per available core, threads named `orch-queue-N`, a guard poll
    /// every 8 injector polls, batches of up to 32 tasks taken from an injector.
    pub fn new() -> Self {
        Self {
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
            name_prefix: "orch-queue".to_owned(),
            fairness_interval: 8,
            batch_limit: 32,
            stack_size: None,
            panic_handler: None,
        }
    }

    /// Number of worker threads (at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Thread names are `{prefix}-{index}`.
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Starvation guard: every `interval`-th injector poll of a worker is a guard poll that
    /// looks at LOW (or NORMAL) before HIGH; see [`SpawnPriority`]. While LOW work is queued each
    /// worker takes some at least once per `2 * interval` injector polls. Must be at least 1.
    pub fn fairness_interval(mut self, interval: u32) -> Self {
        self.fairness_interval = interval;
        self
    }

    /// Most tasks a worker moves from an injector into its local deque in one take. Larger
    /// batches mean less contention, coarser priority order. Must be at least 1.
    pub fn batch_limit(mut self, limit: usize) -> Self {
        self.batch_limit = limit;
        self
    }

    /// Stack size of worker threads.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Called on the worker thread for every caught task panic (after it is logged for
    /// [`WorkStealingPool::take_panics`]). A panic inside the handler is caught and ignored.
    pub fn panic_handler(mut self, handler: impl Fn(&PanicReport) + Send + Sync + 'static) -> Self {
        self.panic_handler = Some(Arc::new(handler));
        self
    }

    /// Starts the worker threads.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero threads, interval or batch limit;
    /// [`Error::ThreadSpawn`] when the OS refuses a thread (threads already started are
    /// stopped and joined).
    pub fn build(mut self) -> Result<WorkStealingPool, Error> {
        if self.threads == 0 {
            return Err(Error::InvalidConfig {
                what: "threads must be at least 1",
                value: 0,
            });
        }
        if self.fairness_interval == 0 {
            return Err(Error::InvalidConfig {
                what: "fairness_interval must be at least 1",
                value: 0,
            });
        }
        if self.batch_limit == 0 {
            return Err(Error::InvalidConfig {
                what: "batch_limit must be at least 1",
                value: 0,
            });
        }
        let n = self.threads;
        let name_prefix = std::mem::take(&mut self.name_prefix);
        let stack_size = self.stack_size;
        let (shared, locals, parkers) = self.into_parts();
        let pool = WorkStealingPool {
            spawner: Spawner {
                shared: Arc::clone(&shared),
            },
            handles: Mutex::new(Vec::with_capacity(n)),
        };
        for (index, (local, parker)) in locals.into_iter().zip(parkers).enumerate() {
            let mut builder = thread::Builder::new().name(format!("{name_prefix}-{index}"));
            if let Some(size) = stack_size {
                builder = builder.stack_size(size);
            }
            let shared = Arc::clone(&shared);
            match builder.spawn(move || worker_main(shared, index, local, parker)) {
                Ok(handle) => pool.lock_handles().push(handle),
                Err(source) => {
                    // Dropping the pool drains and joins the threads already started.
                    drop(pool);
                    return Err(Error::ThreadSpawn { index, source });
                }
            }
        }
        Ok(pool)
    }

    /// The shared state plus each worker's deque and parker, without starting threads.
    fn into_parts(self) -> (Arc<Shared>, Vec<Worker<Job>>, Vec<Parker>) {
        let n = self.threads;
        let locals: Vec<Worker<Job>> = (0..n).map(|_| Worker::new_lifo()).collect();
        let parkers: Vec<Parker> = (0..n).map(|_| Parker::new()).collect();
        let shared = Arc::new(Shared {
            injectors: [
                CachePadded::new(Injector::new()),
                CachePadded::new(Injector::new()),
                CachePadded::new(Injector::new()),
            ],
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleep: Sleep::new(parkers.iter().map(|p| p.unparker().clone()).collect()),
            counters: (0..n)
                .map(|_| CachePadded::new(WorkerCounters::default()))
                .collect(),
            admission: CachePadded::new(AtomicUsize::new(0)),
            terminate: AtomicU8::new(TERM_NONE),
            panics: Mutex::new(VecDeque::new()),
            panic_count: AtomicU64::new(0),
            panic_handler: self.panic_handler,
            fairness_interval: self.fairness_interval,
            batch_limit: self.batch_limit,
            discarded_at_shutdown: AtomicU64::new(0),
        });
        (shared, locals, parkers)
    }
}

/// A cloneable handle that submits work to a pool; tasks capture it to spawn follow-ups.
///
/// Holding a `Spawner` does not keep the worker threads alive: after the pool shuts down,
/// submissions are [`Rejected`].
#[derive(Clone)]
pub struct Spawner {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("workers", &self.shared.stealers.len())
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

impl Spawner {
    /// Submits a task at [`SpawnPriority::Normal`].
    ///
    /// Called from a task running on one of this pool's workers, the task goes to that
    /// worker's own deque (run LIFO by the worker, stolen FIFO by others) and is accepted even
    /// while a [`ShutdownPolicy::Drain`] shutdown is in progress. Called from anywhere else it
    /// goes to the NORMAL injector.
    ///
    /// # Errors
    /// [`Rejected`] (holding `task`) when called from outside the pool after shutdown began.
    pub fn spawn<F>(&self, task: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if let Some(ctx) = current_ctx(&self.shared) {
            ctx.push_local(Box::new(task));
            return Ok(());
        }
        self.spawn_external(SpawnPriority::Normal, task)
    }

    /// Admission-checked injector push from a thread that is not one of our workers.
    #[inline]
    fn spawn_external<F>(&self, priority: SpawnPriority, task: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if !self.shared.admit() {
            return Err(Rejected::new(task, "pool is shut down"));
        }
        self.shared.inject(priority, Box::new(task));
        self.shared.leave();
        Ok(())
    }

    /// Submits a task to the injector of `priority`, from any thread (also from tasks: an
    /// explicit priority always goes through the injector, so LOW work spawned by a task does
    /// not jump ahead of queued HIGH work). Like [`spawn`](Self::spawn), a call from one of
    /// this pool's workers is accepted during a drain.
    ///
    /// # Errors
    /// [`Rejected`] (holding `task`) when called from outside the pool after shutdown began.
    pub fn spawn_with_priority<F>(
        &self,
        priority: SpawnPriority,
        task: F,
    ) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        if current_ctx(&self.shared).is_some() {
            // The calling worker is alive and searches the injectors before it may exit.
            self.shared.inject(priority, Box::new(task));
            return Ok(());
        }
        self.spawn_external(priority, task)
    }

    /// Submits many tasks to the injector of `priority` with one admission and a few
    /// wake-ups, instead of one of each per task. Returns how many tasks were queued.
    /// The iterator is consumed while shutdown waits for in-flight submissions, so it should
    /// be cheap (no blocking).
    ///
    /// # Errors
    /// [`Rejected`] (holding the untouched iterator) when called from outside the pool after
    /// shutdown began.
    pub fn spawn_batch<I, F>(&self, priority: SpawnPriority, tasks: I) -> Result<usize, Rejected<I>>
    where
        I: IntoIterator<Item = F>,
        F: FnOnce() + Send + 'static,
    {
        let on_worker = current_ctx(&self.shared).is_some();
        if !on_worker && !self.shared.admit() {
            return Err(Rejected::new(tasks, "pool is shut down"));
        }
        let injector = &self.shared.injectors[priority.index()];
        let mut queued = 0usize;
        for task in tasks {
            injector.push(Box::new(task));
            queued += 1;
            // Wake workers early and now and then, so they start while we keep pushing.
            if queued == 1 || queued.is_multiple_of(256) {
                self.shared.sleep.notify_one(queued);
            }
        }
        for i in 0..queued.min(self.shared.stealers.len()) {
            self.shared.sleep.notify_one(i);
        }
        if !on_worker {
            self.shared.leave();
        }
        Ok(queued)
    }

    /// Runs `body` with a [`Scope`] whose tasks may borrow from the caller's stack; returns
    /// when the body and every task spawned in the scope have finished.
    ///
    /// On a worker thread of this pool the caller keeps running queued jobs while it waits
    /// (so nested fork-join cannot deadlock); elsewhere it blocks.
    ///
    /// # Panics
    /// Re-throws the body's panic, else the first panic of a scoped task, after all scoped
    /// tasks finished. Panics with "scoped task discarded" when a
    /// [`ShutdownPolicy::Discard`] shutdown dropped one of the scope's tasks unrun.
    pub fn scope<'env, F, R>(&self, body: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        scope::run_scope(&self.shared, body)
    }

    /// Runs `a` and `b`, potentially in parallel, and returns both results (fork-join).
    /// `b` is offered to other workers while the caller runs `a`.
    ///
    /// # Panics
    /// As [`Spawner::scope`].
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA,
        B: FnOnce() -> RB + Send,
        RB: Send,
    {
        let mut rb = None;
        let ra = self.scope(|s| {
            s.spawn(|| rb = Some(b()));
            a()
        });
        match rb {
            Some(rb) => (ra, rb),
            // `scope` returns only after the spawned task ran; it panics if the task panicked
            // or was discarded, so this arm is unreachable.
            None => unreachable!("scope returned before its task ran"),
        }
    }

    /// A snapshot of the pool's statistics.
    pub fn stats(&self) -> PoolStats {
        self.shared.stats()
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.shared.stealers.len()
    }

    /// True once shutdown began.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

/// A work-stealing thread pool.
///
/// One global injector per [`SpawnPriority`], one local deque per worker thread. See the crate docs
/// for the scheduling model. Dropping the pool performs a [`ShutdownPolicy::Drain`] shutdown
/// (joining the threads unless dropped on one of them).
pub struct WorkStealingPool {
    spawner: Spawner,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for WorkStealingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkStealingPool")
            .field("workers", &self.spawner.threads())
            .field("closed", &self.spawner.is_closed())
            .finish()
    }
}

impl WorkStealingPool {
    /// A pool with `threads` workers and default settings.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    pub fn new(threads: usize) -> Result<Self, Error> {
        PoolBuilder::new().threads(threads).build()
    }

    /// A builder for the other settings.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::new()
    }

    fn lock_handles(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.handles.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cloneable handle for submitting work (e.g. from inside tasks).
    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// See [`Spawner::spawn`].
    ///
    /// # Errors
    /// [`Rejected`] (holding `task`) once shutdown began.
    pub fn spawn<F>(&self, task: F) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.spawner.spawn(task)
    }

    /// See [`Spawner::spawn_with_priority`].
    ///
    /// # Errors
    /// [`Rejected`] (holding `task`) once shutdown began.
    pub fn spawn_with_priority<F>(
        &self,
        priority: SpawnPriority,
        task: F,
    ) -> Result<(), Rejected<F>>
    where
        F: FnOnce() + Send + 'static,
    {
        self.spawner.spawn_with_priority(priority, task)
    }

    /// See [`Spawner::spawn_batch`].
    ///
    /// # Errors
    /// [`Rejected`] (holding the untouched iterator) once shutdown began.
    pub fn spawn_batch<I, F>(&self, priority: SpawnPriority, tasks: I) -> Result<usize, Rejected<I>>
    where
        I: IntoIterator<Item = F>,
        F: FnOnce() + Send + 'static,
    {
        self.spawner.spawn_batch(priority, tasks)
    }

    /// See [`Spawner::scope`].
    ///
    /// # Panics
    /// As [`Spawner::scope`].
    pub fn scope<'env, F, R>(&self, body: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        self.spawner.scope(body)
    }

    /// See [`Spawner::join`].
    ///
    /// # Panics
    /// As [`Spawner::scope`].
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA,
        B: FnOnce() -> RB + Send,
        RB: Send,
    {
        self.spawner.join(a, b)
    }

    /// A snapshot of the statistics: per-worker counters, idle time and queue depths.
    pub fn stats(&self) -> PoolStats {
        self.spawner.stats()
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.spawner.threads()
    }

    /// Takes the log of caught task panics (the last 64; [`PoolStats::panics`] counts all).
    pub fn take_panics(&self) -> Vec<PanicReport> {
        let mut log = self
            .spawner
            .shared
            .panics
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        log.drain(..).collect()
    }

    /// Stops accepting outside submissions, handles queued work by `policy`, and joins the
    /// worker threads. Calling it again is harmless (it joins nothing and reports totals).
    ///
    /// Tasks that are running are always finished; a task that never returns blocks this call.
    ///
    /// # Errors
    /// [`Error::ShutdownFromWorker`] when called from one of this pool's own workers.
    pub fn shutdown(&self, policy: ShutdownPolicy) -> Result<PoolShutdownReport, Error> {
        if let Some(ctx) = current_ctx(&self.spawner.shared) {
            return Err(Error::ShutdownFromWorker { index: ctx.index });
        }
        Ok(self.shutdown_inner(policy))
    }

    fn shutdown_inner(&self, policy: ShutdownPolicy) -> PoolShutdownReport {
        let shared = &*self.spawner.shared;
        shared.close(policy);
        let me = thread::current().id();
        let handles: Vec<_> = self.lock_handles().drain(..).collect();
        let mut threads_joined = 0;
        for handle in handles {
            if handle.thread().id() == me {
                continue; // dropped on its own worker: it exits by itself
            }
            // Workers catch task panics, so a join error would mean a bug in the pool itself.
            if handle.join().is_ok() {
                threads_joined += 1;
            }
        }
        // Anything left (discard policy, or a job that raced the last worker's exit).
        for injector in &shared.injectors {
            loop {
                match injector.steal() {
                    Steal::Success(job) => {
                        let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
                        shared.discarded_at_shutdown.fetch_add(1, Ordering::Relaxed);
                    }
                    Steal::Empty => break,
                    Steal::Retry => std::hint::spin_loop(),
                }
            }
        }
        let stats = shared.stats();
        PoolShutdownReport {
            completed: stats.tasks_run(),
            discarded: stats.workers.iter().map(|w| w.discarded).sum::<u64>()
                + shared.discarded_at_shutdown.load(Ordering::Relaxed),
            panicked: stats.panics,
            threads_joined,
        }
    }
}

impl Drop for WorkStealingPool {
    fn drop(&mut self) {
        self.shutdown_inner(ShutdownPolicy::Drain);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::priority::poll_order;
    use crate::worker::WorkerCtx;
    use proptest::prelude::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Debug, Clone)]
    enum Op {
        Inject(SpawnPriority),
        SpawnLocal(usize),
        Run(usize),
    }

    fn op(workers: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            prop::sample::select(SpawnPriority::ALL.to_vec()).prop_map(Op::Inject),
            (0..workers).prop_map(Op::SpawnLocal),
            (0..workers).prop_map(Op::Run),
            (0..workers).prop_map(Op::Run),
        ]
    }

    /// Worker contexts on one thread, driven step by step (no worker threads).
    fn harness(workers: usize, batch: usize) -> Vec<WorkerCtx> {
        let (shared, locals, parkers) = PoolBuilder::new()
            .threads(workers)
            .batch_limit(batch)
            .fairness_interval(3)
            .into_parts();
        locals
            .into_iter()
            .zip(parkers)
            .enumerate()
            .map(|(i, (l, p))| WorkerCtx::new(Arc::clone(&shared), i, l, p))
            .collect()
    }

    proptest! {
        /// Any interleaving of injector pushes, local spawns, pops and steals runs every task
        /// exactly once.
        #[test]
        fn any_interleaving_runs_every_task_exactly_once(
            workers in 1usize..4,
            batch in 1usize..8,
            ops in prop::collection::vec(op(3), 0..200),
        ) {
            let ctxs = harness(workers, batch);
            let runs: Arc<Vec<AtomicU32>> = Arc::new((0..ops.len()).map(|_| AtomicU32::new(0)).collect());
            let mut spawned = 0usize;
            let job = |id: usize| -> Job {
                let runs = Arc::clone(&runs);
                Box::new(move || {
                    runs[id].fetch_add(1, Ordering::Relaxed);
                })
            };
            for op in ops {
                match op {
                    Op::Inject(p) => {
                        prop_assert!(ctxs[0].shared.submit(p, job(spawned)).is_ok());
                        spawned += 1;
                    }
                    Op::SpawnLocal(w) => {
                        ctxs[w % workers].push_local(job(spawned));
                        spawned += 1;
                    }
                    Op::Run(w) => {
                        if let Some(j) = ctxs[w % workers].find_job() {
                            ctxs[w % workers].execute(j);
                        }
                    }
                }
            }
            // Drain from the last worker only: it must reach everything by stealing.
            let last = &ctxs[workers - 1];
            while let Some(j) = last.find_job() {
                last.execute(j);
            }
            for w in &ctxs {
                prop_assert!(w.find_job().is_none());
            }
            for (id, r) in runs.iter().enumerate().take(spawned) {
                prop_assert_eq!(r.load(Ordering::Relaxed), 1, "task {}", id);
            }
            prop_assert_eq!(ctxs[0].shared.stats().tasks_run(), spawned as u64);
            prop_assert_eq!(ctxs[0].shared.stats().queued(), 0);
        }

        /// With an empty local deque and batch 1, a take follows the documented poll order.
        #[test]
        fn injector_takes_follow_the_priority_poll_order(
            pushes in prop::collection::vec(prop::sample::select(SpawnPriority::ALL.to_vec()), 1..60),
        ) {
            let ctxs = harness(1, 1);
            let ctx = &ctxs[0];
            let taken = Arc::new(Mutex::new(Vec::new()));
            let mut depth = [0usize; 3];
            for p in &pushes {
                let (taken, p2) = (Arc::clone(&taken), *p);
                prop_assert!(ctx.shared.submit(*p, Box::new(move || taken.lock().unwrap().push(p2))).is_ok());
                depth[p.index()] += 1;
            }
            for _ in 0..pushes.len() {
                let tick = ctx.ticks.get().wrapping_add(1);
                let expected = poll_order(tick, 3).into_iter().find(|&i| depth[i] > 0).unwrap();
                let j = ctx.find_job().unwrap();
                j();
                let got = *taken.lock().unwrap().last().unwrap();
                prop_assert_eq!(got.index(), expected);
                depth[expected] -= 1;
            }
        }
    }

    #[test]
    fn sleeper_count_returns_to_zero_after_wake() {
        let pool = WorkStealingPool::new(2).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        pool.shutdown(ShutdownPolicy::Drain).unwrap();
        assert_eq!(pool.spawner.shared.sleep.sleeping(), 0);
    }
}
