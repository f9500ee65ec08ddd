//! Scoped tasks: tasks that borrow from the stack of the thread that opened the scope.
//!
//! This is the crate's only `unsafe`: a scoped closure's lifetime is erased so it can travel
//! through the pool's `'static` queues. It is sound because [`run_scope`] does not return, nor
//! unwind, before the scope's [`ScopeLatch`] reaches zero, and the latch is decremented only
//! after a job's closure has run and been dropped, or has been dropped unrun (the `Drop` of
//! `ScopedJob`). The latch protocol is model-checked by loom (`src/tests/loom_scope.rs`).
#![allow(unsafe_code)]

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

use crate::latch::{ScopeLatch, Waiter};
use crate::priority::SpawnPriority;
use crate::sync::thread;
use crate::worker::{Job, Shared, current_ctx};

/// A scope opened by [`WorkStealingPool::scope`](crate::WorkStealingPool::scope): tasks
/// spawned in it may borrow anything that outlives the scope (`'env`).
pub struct Scope<'scope, 'env: 'scope> {
    shared: &'scope Arc<Shared>,
    latch: Arc<ScopeLatch>,
    // Invariance, as in `std::thread::Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("done", &self.latch.is_done())
            .finish_non_exhaustive()
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a task that may borrow from the scope's environment. Tasks can spawn further
    /// tasks into the same scope by capturing `&Scope`.
    ///
    /// From a worker of the pool the task goes to that worker's local deque; from elsewhere to
    /// the NORMAL injector. If the pool is already shut down, the task runs inline, at once.
    pub fn spawn<F>(&'scope self, task: F)
    where
        F: FnOnce() + Send + 'scope,
    {
        self.latch.increment();
        // SAFETY: `run_scope`, which created `self`, waits until the latch is zero before it
        // returns or unwinds, and `ScopedJob` releases its count only after the closure is
        // gone. So the closure never outlives `'scope`.
        let job = unsafe { erase(task, Arc::clone(&self.latch)) };
        if let Some(ctx) = current_ctx(self.shared) {
            ctx.push_local(job);
        } else if let Err(job) = self.shared.submit(SpawnPriority::Normal, job) {
            job();
        }
    }
}

/// A scoped closure and the latch count it holds. Releases the count when dropped, after the
/// closure is gone (run or not).
struct ScopedJob<F: FnOnce()> {
    task: Option<F>,
    latch: Arc<ScopeLatch>,
}

impl<F: FnOnce()> ScopedJob<F> {
    fn run(mut self) {
        if let Some(task) = self.task.take()
            && let Err(payload) = catch_unwind(AssertUnwindSafe(task))
        {
            self.latch.record_panic(payload);
        }
        // `Drop` releases the count.
    }
}

impl<F: FnOnce()> Drop for ScopedJob<F> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            // Dropped unrun: the pool discarded it during shutdown.
            self.latch.mark_discarded();
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(task))) {
                self.latch.record_panic(payload);
            }
        }
        // Last use of the borrowed closure is above; only now may the scope end.
        self.latch.decrement();
    }
}

/// Boxes `task` (one allocation) as a pool job whose lifetime bound is erased to `'static`.
///
/// # Safety
/// The caller must not let `'a` end before `latch` reaches zero. The job holds one count
/// (already incremented by the caller) and releases it after the closure is dropped.
pub(crate) unsafe fn erase<'a, F>(task: F, latch: Arc<ScopeLatch>) -> Job
where
    F: FnOnce() + Send + 'a,
{
    let job = ScopedJob {
        task: Some(task),
        latch,
    };
    let job: Box<dyn FnOnce() + Send + 'a> = Box::new(move || job.run());
    // SAFETY: only the lifetime bound changes (same fat-pointer layout); the caller
    // guarantees the borrows in `task` outlive every use of the job (see `# Safety`).
    unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Job>(job) }
}

pub(crate) fn run_scope<'env, F, R>(shared: &Arc<Shared>, body: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let ctx = current_ctx(shared);
    let waiter = match &ctx {
        Some(ctx) => Waiter::Worker(ctx.parker.unparker().clone()),
        None => Waiter::Thread(thread::current()),
    };
    let scope = Scope {
        shared,
        latch: Arc::new(ScopeLatch::new(waiter)),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| body(&scope)));
    scope.latch.decrement(); // the body's own count
    match &ctx {
        Some(ctx) => ctx.run_until(|| scope.latch.is_done(), false),
        None => scope.latch.wait_parked(),
    }
    // Every scoped task has finished: borrows of 'env have ended.
    let job_panic = scope.latch.take_panic();
    match result {
        Err(payload) => resume_unwind(payload),
        Ok(value) => {
            if let Some(payload) = job_panic {
                resume_unwind(payload);
            }
            assert!(
                !scope.latch.was_discarded(),
                "scoped task discarded by pool shutdown"
            );
            value
        }
    }
}
