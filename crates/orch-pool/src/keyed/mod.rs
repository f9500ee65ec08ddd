//! [`KeyedPool`]: an async pool of resources grouped by key.

mod error;
mod manager;
mod state;

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::{Instant, MissedTickBehavior};

pub use error::{BuildError, PoolError};
pub use manager::{Manager, Metrics, TeardownReason};
use state::{Acquire, Inner, Lease, LeaseKind, Stats};

/// Which idle resource of a key is reused first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReuseOrder {
    /// The most recently returned (warm caches; the rest age out). The default.
    #[default]
    Lifo,
    /// The least recently returned (spreads use evenly).
    Fifo,
}

/// When a used resource is reset with [`Manager::recycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecycleMode {
    /// Just before it is handed out again, on the path of the caller of
    /// [`get`](KeyedPool::get). The default.
    #[default]
    OnAcquire,
    /// As soon as it is returned, in a task of its own: it becomes idle (and can be handed
    /// out) once the recycle succeeds, and is torn down if the recycle fails or the pool is
    /// closed meanwhile. `get` never waits for a recycle.
    Background,
}

/// When a warm key (see [`KeyedPoolConfig::min_idle`]) is topped up after a hand-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replenish {
    /// Right after every hand-out: the key is back to its target as soon as the creates
    /// finish. The default.
    #[default]
    Eager,
    /// When a resource comes back (returned, retired or torn down), and after a hand-out only
    /// if the key has nothing ready left. The background create then does not run while the
    /// caller starts using what it just got: for resources that share a server with their
    /// use (an OpenCode session's `POST /session` and its first prompt), that keeps the
    /// create off the caller's critical path too.
    OnReturn,
}

/// Settings of a [`KeyedPool`]; the defaults are the seeds' session-pool values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedPoolConfig {
    /// Resources per key, idle or in use (default 5).
    pub max_per_key: usize,
    /// Resources over all keys (default unbounded). When full, an idle resource of another
    /// key is evicted to serve a waiter.
    pub max_total: usize,
    /// Times a resource may be handed out again after its first use; `None` for no limit
    /// (default 10).
    pub max_reuse: Option<u32>,
    /// Idle resources older than this are torn down (default 5 min).
    pub idle_timeout: Option<Duration>,
    /// Idle resources are checked with [`Manager::check`] this often (default 60 s).
    pub health_check_interval: Option<Duration>,
    /// How long `get` waits for a free slot (default 60 s; not from the seeds).
    pub wait_timeout: Option<Duration>,
    /// How long [`Manager::create`] may take (default none).
    pub create_timeout: Option<Duration>,
    /// Reuse order of idle resources (default LIFO).
    pub reuse_order: ReuseOrder,
    /// When used resources are recycled (default on acquire).
    pub recycle_mode: RecycleMode,
    /// Idle resources kept ready for every key the pool has seen (default 0): after a
    /// hand-out the pool creates replacements in the background, within the limits. A key can
    /// be given its own number with [`KeyedPool::prewarm`].
    pub min_idle: usize,
    /// When warm keys are topped up after a hand-out (default eager).
    pub replenish: Replenish,
}

impl Default for KeyedPoolConfig {
    fn default() -> Self {
        Self {
            max_per_key: 5,
            max_total: usize::MAX,
            max_reuse: Some(10),
            idle_timeout: Some(Duration::from_secs(300)),
            health_check_interval: Some(Duration::from_secs(60)),
            wait_timeout: Some(Duration::from_secs(60)),
            create_timeout: None,
            reuse_order: ReuseOrder::Lifo,
            recycle_mode: RecycleMode::OnAcquire,
            min_idle: 0,
            replenish: Replenish::Eager,
        }
    }
}

/// Builds a [`KeyedPool`]; see [`KeyedPool::builder`].
#[must_use]
pub struct KeyedPoolBuilder<M> {
    manager: M,
    config: KeyedPoolConfig,
}

impl<M: fmt::Debug> fmt::Debug for KeyedPoolBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedPoolBuilder")
            .field("manager", &self.manager)
            .field("config", &self.config)
            .finish()
    }
}

impl<M: Manager> KeyedPoolBuilder<M> {
    /// Resources per key (default 5).
    pub fn max_per_key(mut self, n: usize) -> Self {
        self.config.max_per_key = n;
        self
    }

    /// Resources over all keys (default unbounded).
    pub fn max_total(mut self, n: usize) -> Self {
        self.config.max_total = n;
        self
    }

    /// Reuses allowed per resource, `None` for no limit (default 10).
    pub fn max_reuse(mut self, n: Option<u32>) -> Self {
        self.config.max_reuse = n;
        self
    }

    /// Idle timeout, `None` to keep idle resources forever (default 5 min).
    pub fn idle_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.idle_timeout = t;
        self
    }

    /// Health-check interval, `None` for no checks (default 60 s).
    pub fn health_check_interval(mut self, t: Option<Duration>) -> Self {
        self.config.health_check_interval = t;
        self
    }

    /// Wait timeout of [`KeyedPool::get`], `None` to wait forever (default 60 s).
    pub fn wait_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.wait_timeout = t;
        self
    }

    /// Create timeout, `None` for none (default none).
    pub fn create_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.create_timeout = t;
        self
    }

    /// Reuse order (default LIFO).
    pub fn reuse_order(mut self, order: ReuseOrder) -> Self {
        self.config.reuse_order = order;
        self
    }

    /// When used resources are recycled (default [`RecycleMode::OnAcquire`]).
    pub fn recycle_mode(mut self, mode: RecycleMode) -> Self {
        self.config.recycle_mode = mode;
        self
    }

    /// Idle resources kept ready per key seen (default 0); see [`KeyedPoolConfig::min_idle`].
    pub fn min_idle(mut self, n: usize) -> Self {
        self.config.min_idle = n;
        self
    }

    /// When warm keys are topped up after a hand-out (default [`Replenish::Eager`]).
    pub fn replenish(mut self, when: Replenish) -> Self {
        self.config.replenish = when;
        self
    }

    /// All settings at once.
    pub fn config(mut self, config: KeyedPoolConfig) -> Self {
        self.config = config;
        self
    }

    /// Creates the pool and, when an idle timeout or a health-check interval is set, its
    /// background reaper (which stops when the pool is closed or dropped).
    ///
    /// # Errors
    /// [`BuildError::NoRuntime`] outside a tokio runtime; [`BuildError::ZeroLimit`] for a
    /// zero limit.
    pub fn build(self) -> Result<KeyedPool<M>, BuildError> {
        let handle = Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        if self.config.max_per_key == 0 {
            return Err(BuildError::ZeroLimit {
                name: "max_per_key",
            });
        }
        if self.config.max_total == 0 {
            return Err(BuildError::ZeroLimit { name: "max_total" });
        }
        let period = [self.config.idle_timeout, self.config.health_check_interval]
            .into_iter()
            .flatten()
            .filter(|d| !d.is_zero())
            .min();
        let pool = KeyedPool {
            inner: Arc::new(Inner::new(self.manager, self.config, handle)),
        };
        if let Some(period) = period {
            pool.spawn_reaper(period);
        }
        Ok(pool)
    }
}

/// An async pool of resources grouped by key, with per-key and total limits.
///
/// [`get(key)`](Self::get) hands out an idle resource of that key (after
/// [`Manager::recycle`] resets it), creates one if the limits allow, or waits in a FIFO queue.
/// The returned [`PooledResource`] guard gives the resource back on drop; a resource marked
/// broken, [retired](PooledResource::retire), over its reuse limit, or returned after
/// [`close`](Self::close) is instead handed to [`Manager::teardown`] in a task of its own, so
/// dropping a guard never blocks.
///
/// Keeping `get` off the slow paths: with [`RecycleMode::Background`] a returned resource is
/// recycled in a task of its own and `get` only ever takes resources that are already clean;
/// with [`min_idle`](KeyedPoolBuilder::min_idle) (or [`prewarm`](Self::prewarm) per key) the
/// pool keeps that many idle resources ready and replaces the ones it hands out in the
/// background, so `get` does not pay for a create either. Background creates never take a
/// slot a waiting caller could use, never evict, and pause (100 ms, doubling up to 30 s)
/// after a failure.
///
/// Improvements over deadpool for keyed use: one pool serves every key under a shared total
/// limit (a waiter for key B evicts an idle resource of key A instead of waiting forever);
/// waiters are served first come, first served across keys; recycling, health checks and
/// teardown are all async manager hooks, and teardown is tracked so `close` can drain it.
///
/// Cancellation: dropping a `get` future at any point leaks nothing. A waiting caller leaves
/// the queue (a resource already handed to it goes to the next waiter); a caller cancelled
/// mid-recycle gives the resource to teardown (its state is unknown); a caller cancelled
/// mid-create frees the slot.
pub struct KeyedPool<M: Manager> {
    inner: Arc<Inner<M>>,
}

impl<M: Manager> Clone for KeyedPool<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Counters and gauges of a [`KeyedPool`].
///
/// Counters only grow. At any quiet moment `created == live + discarded + detached`,
/// `created == misses + prewarmed`, and `hits + misses` is the number of resources handed
/// out; with [`RecycleMode::OnAcquire`], `recycled == reused + recycle_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KeyedPoolStats {
    /// Resources created.
    pub created: u64,
    /// `create` calls that failed or timed out.
    pub create_failed: u64,
    /// `recycle` calls made.
    pub recycled: u64,
    /// `recycle` calls that failed.
    pub recycle_failed: u64,
    /// Idle resources handed out again after an earlier use.
    pub reused: u64,
    /// `get` calls served by an idle resource (a used one or a prewarmed one): no create on
    /// the caller's path.
    pub hits: u64,
    /// `get` calls that created their resource on the caller's path.
    pub misses: u64,
    /// Resources created in the background to keep keys warm (part of `created`).
    pub prewarmed: u64,
    /// Resources given to teardown (for any [`TeardownReason`]).
    pub discarded: u64,
    /// Teardowns finished.
    pub torn_down: u64,
    /// Resources taken out of the pool with [`PooledResource::detach`].
    pub detached: u64,
    /// Health checks run.
    pub health_checks: u64,
    /// Health checks failed.
    pub health_check_failed: u64,
    /// Idle resources evicted by the idle timeout.
    pub idle_evicted: u64,
    /// `get` calls that had to wait.
    pub waits: u64,
    /// `get` calls that timed out waiting.
    pub timeouts: u64,
    /// Total time `get` calls spent waiting.
    pub wait_time: Duration,
    /// Resources and reserved slots now (idle, in use, being created or checked).
    pub live: usize,
    /// Idle resources now.
    pub idle: usize,
    /// Callers waiting now.
    pub waiting: usize,
    /// Teardowns in progress now.
    pub tearing_down: usize,
    /// Background recycles in progress now (part of `live`).
    pub recycling: usize,
    /// Background creates in progress now (part of `live`).
    pub creating: usize,
    /// Keys with at least one resource or slot now.
    pub keys: usize,
}

impl<M: Manager> KeyedPool<M> {
    /// A builder with the seed defaults (see [`KeyedPoolConfig`]).
    pub fn builder(manager: M) -> KeyedPoolBuilder<M> {
        KeyedPoolBuilder {
            manager,
            config: KeyedPoolConfig::default(),
        }
    }

    /// A resource for `key`, waiting at most the configured wait timeout.
    ///
    /// # Errors
    /// [`PoolError::Timeout`] when nothing became free in time, [`PoolError::Create`] or
    /// [`PoolError::CreateTimeout`] when a new resource could not be made,
    /// [`PoolError::Closed`] after [`close`](Self::close).
    pub async fn get(&self, key: M::Key) -> Result<PooledResource<M>, PoolError<M::Error>> {
        self.get_with(key, self.inner.config.wait_timeout).await
    }

    /// Like [`get`](Self::get) with an explicit wait timeout.
    ///
    /// # Errors
    /// As for [`get`](Self::get).
    pub async fn get_timeout(
        &self,
        key: M::Key,
        timeout: Duration,
    ) -> Result<PooledResource<M>, PoolError<M::Error>> {
        self.get_with(key, Some(timeout)).await
    }

    async fn get_with(
        &self,
        key: M::Key,
        timeout: Option<Duration>,
    ) -> Result<PooledResource<M>, PoolError<M::Error>> {
        let inner = &self.inner;
        // Read the clock only when waiting: the fast path stays free of it. The deadline is
        // set by the first wait and holds across retries after failed recycles.
        let mut first_wait: Option<(Instant, Option<Instant>)> = None;
        loop {
            let mut lease = match inner.acquire(&key).ok_or(PoolError::Closed)? {
                Acquire::Now(lease) => lease,
                Acquire::Wait(mut waiter) => {
                    let waited_from = Instant::now();
                    let (start, deadline) = *first_wait.get_or_insert_with(|| {
                        Stats::bump(&inner.stats.waits);
                        (waited_from, timeout.map(|t| waited_from + t))
                    });
                    let got = match deadline {
                        Some(d) => tokio::time::timeout_at(d, &mut waiter.rx).await,
                        None => Ok((&mut waiter.rx).await),
                    };
                    inner.stats.add_wait(waited_from.elapsed());
                    match got {
                        Err(_elapsed) => {
                            Stats::bump(&inner.stats.timeouts);
                            return Err(PoolError::Timeout {
                                key: format!("{key:?}"),
                                waited: start.elapsed(),
                            });
                        }
                        Ok(Err(_closed)) => return Err(PoolError::Closed),
                        Ok(Ok(lease)) => lease,
                    }
                }
            };
            let Some(entry) = lease.entry.as_mut() else {
                // A free slot: create on the caller's path. Failure or cancellation drops
                // the lease, which frees the slot.
                let res = inner.create(&key).await?;
                Stats::bump(&inner.stats.created);
                Stats::bump(&inner.stats.misses);
                let mut metrics = Metrics::new(Instant::now());
                metrics.uses = 1;
                lease.entry = Some(state::Entry { res, metrics });
                lease.kind = LeaseKind::InUse;
                return Ok(PooledResource { lease });
            };
            // A used resource is reset now unless the pool recycles in the background (then
            // it was reset when returned); a prewarmed one has never been used.
            let used = entry.metrics.uses > 0;
            if used && inner.config.recycle_mode == RecycleMode::OnAcquire {
                Stats::bump(&inner.stats.recycled);
                // Cancelled mid-recycle: the resource's state is unknown, tear it down.
                lease.discard = Some(TeardownReason::RecycleCancelled);
                let recycled = inner
                    .manager
                    .recycle(&key, &mut entry.res, &entry.metrics)
                    .await;
                if recycled.is_err() {
                    Stats::bump(&inner.stats.recycle_failed);
                    lease.discard = Some(TeardownReason::RecycleFailed);
                    drop(lease);
                    continue;
                }
                lease.discard = None;
            }
            entry.metrics.uses += 1;
            Stats::bump(&inner.stats.hits);
            if used {
                Stats::bump(&inner.stats.reused);
            }
            lease.kind = LeaseKind::InUse;
            return Ok(PooledResource { lease });
        }
    }

    /// Runs one reaper pass now: tears down resources idle past the idle timeout, then
    /// health-checks the idle resources due for it (one after another), tearing down those
    /// that fail. The background reaper calls this every `min(idle_timeout,
    /// health_check_interval)`, so eviction happens within one such period of the timeout.
    pub async fn reap(&self) {
        let due = self.inner.reap_locked();
        for mut lease in due {
            let Some(entry) = lease.entry.as_mut() else {
                continue;
            };
            Stats::bump(&self.inner.stats.health_checks);
            let ok = self
                .inner
                .manager
                .check(&lease.key, &mut entry.res, &entry.metrics)
                .await;
            match ok {
                Ok(()) => {
                    entry.metrics.last_checked = Instant::now();
                    lease.discard = None;
                }
                Err(_) => Stats::bump(&self.inner.stats.health_check_failed),
            }
            // Back to idle (keeping its `last_used`), or to teardown.
            drop(lease);
        }
    }

    fn spawn_reaper(&self, period: Duration) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.handle.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.is_closed() {
                    break;
                }
                KeyedPool { inner }.reap().await;
            }
        });
    }

    /// Closes the pool and waits until it is drained: new and waiting `get`s fail with
    /// [`PoolError::Closed`], idle resources are torn down at once, resources in use are torn
    /// down when returned, and the future resolves once every resource is returned and every
    /// teardown has finished. Wrap it in a timeout to bound the wait for resources in use.
    pub async fn close(&self) {
        let waiters = self.inner.close_locked();
        drop(waiters);
        loop {
            let changed = self.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.inner.is_drained() {
                return;
            }
            changed.await;
        }
    }

    /// Keeps `n` idle resources of `key` ready (creating them now, in the background, and
    /// replacing those handed out), overriding [`min_idle`](KeyedPoolBuilder::min_idle) for
    /// this key; `n = 0` stops keeping it warm. Creates stay within `max_per_key` and
    /// `max_total`; the newest `n` idle resources of the key are exempt from the idle
    /// timeout. Does nothing after [`close`](Self::close).
    pub fn prewarm(&self, key: M::Key, n: usize) {
        self.inner.set_target(key, n);
    }

    /// Lets `key` have up to `n` resources (idle or in use; at least 1), overriding
    /// [`max_per_key`](KeyedPoolBuilder::max_per_key) for this key. A caller that holds
    /// resources for long (one per worker lane, say) sizes its key to what it holds, so no
    /// `get` waits for a resource that is never returned. Raising it serves waiting callers
    /// at once; resources above a lowered limit stay until they come back. `max_total`
    /// still applies. Does nothing after [`close`](Self::close).
    pub fn set_max_for_key(&self, key: M::Key, n: usize) {
        self.inner.set_limit(key, n);
    }

    /// Whether [`close`](Self::close) was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Resources of `key` now: `(live, idle)`, where live counts idle ones, ones in use and
    /// slots being created.
    #[must_use]
    pub fn key_status(&self, key: &M::Key) -> (usize, usize) {
        self.inner.key_counts(key)
    }

    /// The pool's settings.
    #[must_use]
    pub fn config(&self) -> &KeyedPoolConfig {
        &self.inner.config
    }

    /// The manager.
    #[must_use]
    pub fn manager(&self) -> &M {
        &self.inner.manager
    }

    /// A snapshot of counters and gauges.
    #[must_use]
    pub fn stats(&self) -> KeyedPoolStats {
        let s = &self.inner.stats;
        let g = self.inner.gauges();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        KeyedPoolStats {
            created: get(&s.created),
            create_failed: get(&s.create_failed),
            recycled: get(&s.recycled),
            recycle_failed: get(&s.recycle_failed),
            reused: get(&s.reused),
            hits: get(&s.hits),
            misses: get(&s.misses),
            prewarmed: get(&s.prewarmed),
            discarded: get(&s.discarded),
            torn_down: get(&s.torn_down),
            detached: get(&s.detached),
            health_checks: get(&s.health_checks),
            health_check_failed: get(&s.health_check_failed),
            idle_evicted: get(&s.idle_evicted),
            waits: get(&s.waits),
            timeouts: get(&s.timeouts),
            wait_time: Duration::from_nanos(get(&s.wait_nanos)),
            live: g.live,
            idle: g.idle,
            waiting: g.waiting,
            tearing_down: g.tearing_down,
            recycling: g.recycling,
            creating: g.creating,
            keys: g.keys,
        }
    }
}

impl<M: Manager> fmt::Debug for KeyedPool<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedPool")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A resource checked out of a [`KeyedPool`]; returns it on drop.
#[must_use = "dropping the guard returns the resource at once"]
pub struct PooledResource<M: Manager> {
    lease: Lease<M>,
}

impl<M: Manager> PooledResource<M> {
    /// The key it was checked out for.
    #[must_use]
    pub fn key(&self) -> &M::Key {
        &self.lease.key
    }

    /// What the pool knows about it.
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        self.entry().metrics
    }

    /// Marks it broken: on drop it is torn down instead of returned.
    pub fn mark_broken(&mut self) {
        self.lease.discard = Some(TeardownReason::Broken);
    }

    /// Gives it up for good: torn down (with [`TeardownReason::Retired`]) instead of
    /// returned, and, when its key is kept warm, replaced by a fresh resource in the
    /// background. For resources that are cheaper to replace than to reset.
    pub fn retire(mut self) {
        self.lease.discard = Some(TeardownReason::Retired);
    }

    /// Whether it is marked broken.
    #[must_use]
    pub fn is_broken(&self) -> bool {
        self.lease.discard.is_some()
    }

    /// Takes it out of the pool: its slot is freed and it will never be torn down by the
    /// pool.
    #[must_use]
    pub fn detach(mut self) -> M::Resource {
        Stats::bump(&self.lease.inner.stats.detached);
        match self.lease.entry.take() {
            Some(e) => e.res,
            None => unreachable!("a handed-out lease always holds its resource"),
        }
    }

    fn entry(&self) -> &state::Entry<M::Resource> {
        match &self.lease.entry {
            Some(e) => e,
            None => unreachable!("a handed-out lease always holds its resource"),
        }
    }
}

impl<M: Manager> Deref for PooledResource<M> {
    type Target = M::Resource;
    fn deref(&self) -> &M::Resource {
        &self.entry().res
    }
}

impl<M: Manager> DerefMut for PooledResource<M> {
    fn deref_mut(&mut self) -> &mut M::Resource {
        match &mut self.lease.entry {
            Some(e) => &mut e.res,
            None => unreachable!("a handed-out lease always holds its resource"),
        }
    }
}

impl<M: Manager> Drop for PooledResource<M> {
    fn drop(&mut self) {
        // The idle timer starts now; the lease then returns the resource.
        if let Some(e) = self.lease.entry.as_mut() {
            e.metrics.last_used = Instant::now();
        }
    }
}

impl<M: Manager> fmt::Debug for PooledResource<M>
where
    M::Resource: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledResource")
            .field("key", self.key())
            .field("resource", &**self)
            .field("metrics", &self.metrics())
            .finish()
    }
}
