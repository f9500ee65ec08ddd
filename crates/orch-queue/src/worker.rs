//! The worker side of the pool: shared state, the per-thread worker context, the search
//! order (local, injectors by priority, random victim) and the run loop.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use crossbeam_utils::{Backoff, CachePadded, sync::Parker};

use crate::pool::{PanicReport, ShutdownPolicy};
use crate::priority::{SpawnPriority, poll_order};
use crate::sleep::Sleep;
use crate::stats::{PoolStats, WorkerCounters, bump};

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) type PanicHandler = Arc<dyn Fn(&PanicReport) + Send + Sync + 'static>;

/// How many panic reports a pool keeps for `WorkStealingPool::take_panics`.
pub(crate) const PANIC_LOG_CAPACITY: usize = 64;

/// Failed searches (spinning, then yielding) before an idle worker parks.
const IDLE_ROUNDS_BEFORE_PARK: u32 = 64;

pub(crate) const TERM_NONE: u8 = 0;
const TERM_DRAIN: u8 = 1;
const TERM_DISCARD: u8 = 2;

/// State shared by the pool handle, spawners and worker threads.
pub(crate) struct Shared {
    pub(crate) injectors: [CachePadded<Injector<Job>>; 3],
    pub(crate) stealers: Box<[Stealer<Job>]>,
    pub(crate) sleep: Sleep,
    pub(crate) counters: Box<[CachePadded<WorkerCounters>]>,
    /// Bit 0: closed to outside submissions. Bits 1..: submissions in flight (× 2).
    pub(crate) admission: CachePadded<AtomicUsize>,
    pub(crate) terminate: AtomicU8,
    pub(crate) panics: Mutex<VecDeque<PanicReport>>,
    pub(crate) panic_count: AtomicU64,
    pub(crate) panic_handler: Option<PanicHandler>,
    pub(crate) fairness_interval: u32,
    pub(crate) batch_limit: usize,
    pub(crate) discarded_at_shutdown: AtomicU64,
}

impl Shared {
    /// Enters an outside submission; false once the pool is closed.
    #[inline]
    pub(crate) fn admit(&self) -> bool {
        let prev = self.admission.fetch_add(2, Ordering::Acquire);
        if prev & 1 != 0 {
            self.admission.fetch_sub(2, Ordering::Release);
            return false;
        }
        true
    }

    #[inline]
    pub(crate) fn leave(&self) {
        self.admission.fetch_sub(2, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.admission.load(Ordering::Acquire) & 1 != 0
    }

    #[inline]
    pub(crate) fn terminating(&self) -> bool {
        self.terminate.load(Ordering::Acquire) != TERM_NONE
    }

    #[inline]
    pub(crate) fn discarding(&self) -> bool {
        self.terminate.load(Ordering::Acquire) == TERM_DISCARD
    }

    /// Pushes to an injector. The caller has been admitted (or is a worker).
    #[inline]
    pub(crate) fn inject(&self, priority: SpawnPriority, job: Job) {
        self.injectors[priority.index()].push(job);
        self.sleep.notify_one(0);
    }

    /// Pushes a job from outside, or from a worker of another pool. Hands the job back when
    /// the pool is closed.
    pub(crate) fn submit(&self, priority: SpawnPriority, job: Job) -> Result<(), Job> {
        if !self.admit() {
            return Err(job);
        }
        self.inject(priority, job);
        self.leave();
        Ok(())
    }

    /// Any queued work visible to a worker about to sleep.
    pub(crate) fn has_visible_work(&self) -> bool {
        self.injectors.iter().any(|i| !i.is_empty()) || self.stealers.iter().any(|s| !s.is_empty())
    }

    pub(crate) fn report_panic(&self, worker: usize, payload: Box<dyn Any + Send + 'static>) {
        let message = panic_message(payload.as_ref());
        // The payload's own destructor may panic; keep the worker alive regardless.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
        self.panic_count.fetch_add(1, Ordering::Relaxed);
        let report = PanicReport { worker, message };
        if let Some(handler) = &self.panic_handler {
            let _ = catch_unwind(AssertUnwindSafe(|| handler(&report)));
        }
        let mut log = self.panics.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == PANIC_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(report);
    }

    /// Closes admission, waits for in-flight submissions, and tells workers to stop.
    pub(crate) fn close(&self, policy: ShutdownPolicy) {
        self.admission.fetch_or(1, Ordering::AcqRel);
        let backoff = Backoff::new();
        while self.admission.load(Ordering::Acquire) >> 1 != 0 {
            backoff.snooze();
        }
        let term = match policy {
            ShutdownPolicy::Drain => TERM_DRAIN,
            ShutdownPolicy::Discard => TERM_DISCARD,
        };
        // Discard wins over an earlier drain request.
        self.terminate.fetch_max(term, Ordering::AcqRel);
        self.sleep.notify_all();
    }

    pub(crate) fn stats(&self) -> PoolStats {
        PoolStats {
            workers: self
                .counters
                .iter()
                .zip(self.stealers.iter())
                .enumerate()
                .map(|(i, (c, s))| c.snapshot(i, s.len()))
                .collect(),
            injector_depths: [
                self.injectors[0].len(),
                self.injectors[1].len(),
                self.injectors[2].len(),
            ],
            panics: self.panic_count.load(Ordering::Relaxed),
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// The per-thread side of a worker. Lives in an `Rc` on its own thread.
pub(crate) struct WorkerCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
    pub(crate) local: Worker<Job>,
    pub(crate) parker: Parker,
    pub(crate) rng: Cell<u64>,
    pub(crate) ticks: Cell<u32>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<WorkerCtx>>> = const { RefCell::new(None) };
}

/// The current thread's worker context, if it is a worker of the pool that owns `shared`.
pub(crate) fn current_ctx(shared: &Arc<Shared>) -> Option<Rc<WorkerCtx>> {
    CURRENT
        .try_with(|c| {
            c.borrow()
                .as_ref()
                .filter(|ctx| Arc::ptr_eq(&ctx.shared, shared))
                .cloned()
        })
        .ok()
        .flatten()
}

/// Index of the current thread within its [`WorkStealingPool`](crate::WorkStealingPool), or `None` when the current
/// thread is not a pool worker.
pub fn current_worker_index() -> Option<usize> {
    CURRENT
        .try_with(|c| c.borrow().as_ref().map(|ctx| ctx.index))
        .ok()
        .flatten()
}

pub(crate) fn worker_main(shared: Arc<Shared>, index: usize, local: Worker<Job>, parker: Parker) {
    let ctx = Rc::new(WorkerCtx::new(shared, index, local, parker));
    CURRENT.with(|c| *c.borrow_mut() = Some(Rc::clone(&ctx)));
    ctx.run_until(|| false, true);
    CURRENT.with(|c| c.borrow_mut().take());
}

impl WorkerCtx {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: usize,
        local: Worker<Job>,
        parker: Parker,
    ) -> Self {
        Self {
            shared,
            index,
            local,
            parker,
            rng: Cell::new(
                0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            ),
            ticks: Cell::new(0),
        }
    }

    pub(crate) fn counters(&self) -> &WorkerCounters {
        &self.shared.counters[self.index]
    }

    fn next_random(&self) -> u64 {
        // xorshift64*
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Runs jobs until `done()` holds. The worker's main loop passes `main = true` and
    /// `done = || false`: it returns when the pool terminates and a full search finds no
    /// work. A scope waiting on a worker passes its latch, so the worker keeps running other
    /// jobs instead of blocking, and parks only when there is nothing to run.
    pub(crate) fn run_until(&self, done: impl Fn() -> bool, main: bool) {
        let backoff = Backoff::new();
        let mut idle_rounds = 0u32;
        loop {
            if done() {
                return;
            }
            if let Some(job) = self.find_job() {
                self.execute(job);
                backoff.reset();
                idle_rounds = 0;
                continue;
            }
            if main && self.shared.terminating() {
                return;
            }
            // Spin, then yield for a while before parking: fork-join work arrives in bursts
            // and a park/unpark pair costs a few microseconds.
            if idle_rounds < IDLE_ROUNDS_BEFORE_PARK {
                idle_rounds += 1;
                if backoff.is_completed() {
                    thread::yield_now();
                } else {
                    backoff.snooze();
                }
                continue;
            }
            idle_rounds = 0;
            let shared = &*self.shared;
            let slept = shared.sleep.sleep(self.index, &self.parker, || {
                done() || (main && shared.terminating()) || shared.has_visible_work()
            });
            if !slept.is_zero() {
                let c = self.counters();
                bump(&c.parks, 1);
                bump(
                    &c.idle_nanos,
                    u64::try_from(slept.as_nanos()).unwrap_or(u64::MAX),
                );
            }
            backoff.reset();
        }
    }

    /// Local pop, then the injectors by priority, then a random victim.
    pub(crate) fn find_job(&self) -> Option<Job> {
        if let Some(job) = self.local.pop() {
            return Some(job);
        }
        self.find_global()
    }

    fn find_global(&self) -> Option<Job> {
        let shared = &*self.shared;
        let tick = self.ticks.get().wrapping_add(1);
        self.ticks.set(tick);
        for p in poll_order(tick, shared.fairness_interval) {
            loop {
                match shared.injectors[p]
                    .steal_batch_with_limit_and_pop(&self.local, shared.batch_limit)
                {
                    Steal::Success(job) => {
                        bump(&self.counters().injector_takes, 1);
                        if !self.local.is_empty() {
                            // We hold a batch now; let a sleeper come and steal part of it.
                            shared.sleep.notify_one(self.index + 1);
                        }
                        return Some(job);
                    }
                    Steal::Empty => break,
                    Steal::Retry => std::hint::spin_loop(),
                }
            }
        }
        let n = shared.stealers.len();
        if n <= 1 {
            return None;
        }
        let counters = self.counters();
        loop {
            let start = (self.next_random() % n as u64) as usize;
            let mut retry = false;
            for i in 0..n {
                let victim = (start + i) % n;
                if victim == self.index {
                    continue;
                }
                bump(&counters.steal_attempts, 1);
                match shared.stealers[victim].steal() {
                    Steal::Success(job) => {
                        bump(&counters.steals, 1);
                        return Some(job);
                    }
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
            if !retry {
                return None;
            }
            std::hint::spin_loop();
        }
    }

    pub(crate) fn execute(&self, job: Job) {
        let counters = self.counters();
        if self.shared.discarding() {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(job)));
            bump(&counters.discarded, 1);
            return;
        }
        if let Err(payload) = catch_unwind(AssertUnwindSafe(job)) {
            bump(&counters.panics, 1);
            self.shared.report_panic(self.index, payload);
        }
        bump(&counters.tasks_run, 1);
    }

    /// Pushes to this worker's own deque (LIFO for the owner, FIFO for thieves).
    #[inline]
    pub(crate) fn push_local(&self, job: Job) {
        self.local.push(job);
        self.shared.sleep.notify_one(self.index + 1);
    }
}
