//! The [`Manager`] trait: how a [`KeyedPool`](super::KeyedPool) makes, resets, checks and
//! destroys its resources.

use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Creates, recycles, health-checks and tears down the resources of a
/// [`KeyedPool`](super::KeyedPool).
///
/// Every method is async and may take as long as it needs; the pool never holds a lock across
/// them. `create` runs on the path of the caller of [`get`](super::KeyedPool::get) when no
/// idle resource is ready, and in a background task when the pool keeps keys warm
/// ([`min_idle`](super::KeyedPoolBuilder::min_idle)); `recycle` runs on the caller's path
/// with [`RecycleMode::OnAcquire`](super::RecycleMode::OnAcquire) and in a background task
/// with [`RecycleMode::Background`](super::RecycleMode::Background); `check` runs in the
/// pool's background reaper; `teardown` always runs in a task of its own, never on a
/// caller's path.
///
/// # The teardown contract
/// The pool never drops a resource it holds; every resource it gives up goes through
/// [`teardown`](Self::teardown) (the one exception is a resource whose pool is dropped while
/// no tokio runtime is left to run the teardown). `teardown` must destroy the resource only
/// once that is safe: an OpenCode session, for example, must be idle before it is deleted, so
/// its manager waits for the idle state (with its own deadline, then aborts and waits again)
/// before deleting. [`KeyedPool::close`](super::KeyedPool::close) waits for every teardown.
pub trait Manager: Send + Sync + 'static {
    /// What resources are grouped by (an agent role, a host...).
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;
    /// The pooled resource.
    type Resource: Send + 'static;
    /// The error of `create`, `recycle` and `check`.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Creates a new resource for `key`.
    fn create(
        &self,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Self::Resource, Self::Error>> + Send;

    /// Resets a used resource before it is handed out again (never a fresh one). An error
    /// discards the resource (it is torn down); on the caller's path the pool then tries
    /// another one or creates one. The default does nothing.
    fn recycle(
        &self,
        key: &Self::Key,
        resource: &mut Self::Resource,
        metrics: &Metrics,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (key, resource, metrics);
        async { Ok(()) }
    }

    /// Checks an idle resource's health (run every `health_check_interval`). An error
    /// discards it. The default reports healthy.
    fn check(
        &self,
        key: &Self::Key,
        resource: &mut Self::Resource,
        metrics: &Metrics,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let _ = (key, resource, metrics);
        async { Ok(()) }
    }

    /// Destroys a resource the pool gave up, once that is safe (see the trait docs). Runs in
    /// a spawned task. The default drops it.
    fn teardown(
        &self,
        key: &Self::Key,
        resource: Self::Resource,
        reason: TeardownReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (key, reason);
        drop(resource);
        async {}
    }
}

/// Why the pool gave a resource up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TeardownReason {
    /// Its holder marked it broken or discarded it.
    Broken,
    /// Its holder retired it ([`PooledResource::retire`](super::PooledResource::retire)):
    /// replaced rather than reset.
    Retired,
    /// [`Manager::recycle`] failed.
    RecycleFailed,
    /// The `get` that was recycling it was cancelled mid-recycle, or the pool was closed
    /// during a background recycle.
    RecycleCancelled,
    /// [`Manager::check`] failed, or the check was cancelled.
    HealthCheckFailed,
    /// It stayed idle longer than the idle timeout.
    IdleTimeout,
    /// It reached the maximum reuse count.
    MaxReuse,
    /// It was idle while another key needed its slot under the total limit.
    Evicted,
    /// The pool was closed.
    Closed,
    /// The pool was dropped without `close`.
    PoolDropped,
}

/// What the pool knows about one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// When it was created.
    pub created: Instant,
    /// When it was last returned to the pool (or created).
    pub last_used: Instant,
    /// When it last passed a health check (or was created).
    pub last_checked: Instant,
    /// Times it has been handed out.
    pub uses: u32,
}

impl Metrics {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            created: now,
            last_used: now,
            last_checked: now,
            uses: 0,
        }
    }

    /// Time since creation.
    #[must_use]
    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// Time since it was last returned.
    #[must_use]
    pub fn idle_for(&self) -> Duration {
        self.last_used.elapsed()
    }
}
