//! The shared state of a keyed pool: slot accounting, the FIFO of waiters, leases, and the
//! background work (recycling returned resources, keeping idle resources warm).
//!
//! All bookkeeping happens under one short `parking_lot` mutex that is never held across an
//! `.await`, never while a [`Lease`] is dropped, and never while a manager method runs: the
//! locked sections return a list of [`Action`]s (hand a lease to a waiter, spawn a teardown,
//! a recycle or a create) that run after the lock is released.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::error::PoolError;
use super::manager::{Manager, Metrics, TeardownReason};
use super::{KeyedPoolConfig, RecycleMode, Replenish, ReuseOrder};

pub(crate) type Key<M> = <M as Manager>::Key;
pub(crate) type Res<M> = <M as Manager>::Resource;

/// First pause after a background create failed; doubled per failure in a row.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest pause between background creates that keep failing.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Entry<R> {
    pub(crate) res: R,
    pub(crate) metrics: Metrics,
}

struct KeyState<R> {
    idle: VecDeque<Entry<R>>,
    /// Resources and reserved slots of this key: idle, handed out, being created, recycled
    /// or checked.
    live: usize,
    /// Returned resources being recycled in the background (part of `live`).
    recycling: usize,
    /// Resources being created in the background (part of `live`).
    creating: usize,
    /// Idle resources out for a health check (part of `live`).
    checking: usize,
}

impl<R> KeyState<R> {
    /// Idle resources now or soon (once their background work ends).
    fn ready(&self) -> usize {
        self.idle.len() + self.recycling + self.creating + self.checking
    }
}

impl<R> Default for KeyState<R> {
    fn default() -> Self {
        Self {
            idle: VecDeque::new(),
            live: 0,
            recycling: 0,
            creating: 0,
            checking: 0,
        }
    }
}

/// How many idle resources to keep ready for a key.
struct Target {
    n: usize,
    /// Background creates for this key that failed in a row.
    failures: u32,
    /// Waiting out the pause after a failed background create: no creates until it ends.
    backing_off: bool,
}

impl Target {
    fn new(n: usize) -> Self {
        Self {
            n,
            failures: 0,
            backing_off: false,
        }
    }
}

struct Waiter<M: Manager> {
    id: u64,
    key: Key<M>,
    tx: oneshot::Sender<Lease<M>>,
}

pub(crate) struct State<M: Manager> {
    keys: HashMap<Key<M>, KeyState<Res<M>>>,
    total: usize,
    idle_total: usize,
    waiters: VecDeque<Waiter<M>>,
    next_waiter: u64,
    closed: bool,
    tearing_down: usize,
    recycling: usize,
    creating: usize,
    /// Keys kept warm: `min_idle` for every key seen, or what `prewarm` set.
    targets: HashMap<Key<M>, Target>,
    /// Per-key limits set with `set_max_for_key`, overriding `max_per_key`.
    limits: HashMap<Key<M>, usize>,
}

impl<M: Manager> State<M> {
    /// The most resources `key` may have: its own limit, else the pool's `max_per_key`.
    fn max_for(&self, config: &KeyedPoolConfig, key: &Key<M>) -> usize {
        self.limits.get(key).copied().unwrap_or(config.max_per_key)
    }
}

pub(crate) enum Action<M: Manager> {
    Grant(oneshot::Sender<Lease<M>>, Lease<M>),
    Teardown(Key<M>, Res<M>, TeardownReason),
    /// Recycle a returned resource in a task; its slot is already counted.
    Recycle(Key<M>, Entry<Res<M>>),
    /// Create a resource in a task; its slot is already reserved.
    Create(Key<M>),
}

/// Where a lease stands; decides what releasing it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseKind {
    /// A slot or idle resource taken by `get` but not yet handed out.
    Taken,
    /// Handed out to a caller; with [`RecycleMode::Background`] it is recycled on return.
    InUse,
    /// A returned resource being recycled in the background.
    Recycling,
    /// A slot being filled in the background.
    Creating,
    /// An idle resource out for a health check.
    Checking,
}

/// Event counters; see [`KeyedPoolStats`](super::KeyedPoolStats).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) created: AtomicU64,
    pub(crate) create_failed: AtomicU64,
    pub(crate) recycled: AtomicU64,
    pub(crate) recycle_failed: AtomicU64,
    pub(crate) reused: AtomicU64,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) prewarmed: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) torn_down: AtomicU64,
    pub(crate) detached: AtomicU64,
    pub(crate) health_checks: AtomicU64,
    pub(crate) health_check_failed: AtomicU64,
    pub(crate) idle_evicted: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) wait_nanos: AtomicU64,
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_wait(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Point-in-time gauges read under the lock.
pub(crate) struct Gauges {
    pub(crate) live: usize,
    pub(crate) idle: usize,
    pub(crate) waiting: usize,
    pub(crate) tearing_down: usize,
    pub(crate) recycling: usize,
    pub(crate) creating: usize,
    pub(crate) keys: usize,
}

pub(crate) struct Inner<M: Manager> {
    pub(crate) manager: Arc<M>,
    pub(crate) config: KeyedPoolConfig,
    pub(crate) state: Mutex<State<M>>,
    pub(crate) stats: Stats,
    pub(crate) handle: Handle,
    /// Notified whenever a slot is released or a teardown ends (for `close`).
    pub(crate) changed: Notify,
    /// Turns `true` on `close`: background recycles stop, backoff pauses end.
    closed_tx: watch::Sender<bool>,
}

/// Outcome of asking for a resource without waiting.
pub(crate) enum Acquire<M: Manager> {
    Now(Lease<M>),
    Wait(WaitGuard<M>),
}

/// A registered waiter; dropping it (cancellation, timeout) takes it out of the queue.
pub(crate) struct WaitGuard<M: Manager> {
    inner: Arc<Inner<M>>,
    id: u64,
    pub(crate) rx: oneshot::Receiver<Lease<M>>,
}

impl<M: Manager> Drop for WaitGuard<M> {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        if let Some(pos) = st.waiters.iter().position(|w| w.id == self.id) {
            st.waiters.remove(pos);
        }
        // The lock is released before `rx` drops; a lease already sent to `rx` is then
        // dropped and so returned to the pool.
    }
}

/// A claim on one slot of a key: a resource (`entry`) or the right to create one. Dropping a
/// lease releases it; this is what makes every path, cancellation included, leak-free.
pub(crate) struct Lease<M: Manager> {
    pub(crate) inner: Arc<Inner<M>>,
    pub(crate) key: Key<M>,
    pub(crate) entry: Option<Entry<Res<M>>>,
    /// If set, the resource is torn down instead of returned.
    pub(crate) discard: Option<TeardownReason>,
    pub(crate) kind: LeaseKind,
}

impl<M: Manager> Drop for Lease<M> {
    fn drop(&mut self) {
        self.inner
            .release(&self.key, self.entry.take(), self.discard, self.kind);
    }
}

/// Runs `f` until it ends (`Some`) or the pool closes (`None`, and `f` is dropped).
async fn until_closed<F: Future>(closed: &mut watch::Receiver<bool>, f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut shut = pin!(closed.wait_for(|c| *c));
    poll_fn(|cx| {
        if let Poll::Ready(out) = f.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        // Closed, or the pool is gone (the sender dropped): stop either way.
        match shut.as_mut().poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

impl<M: Manager> Inner<M> {
    pub(crate) fn new(manager: M, config: KeyedPoolConfig, handle: Handle) -> Self {
        Self {
            manager: Arc::new(manager),
            config,
            state: Mutex::new(State {
                keys: HashMap::new(),
                total: 0,
                idle_total: 0,
                waiters: VecDeque::new(),
                next_waiter: 0,
                closed: false,
                tearing_down: 0,
                recycling: 0,
                creating: 0,
                targets: HashMap::new(),
                limits: HashMap::new(),
            }),
            stats: Stats::default(),
            handle,
            changed: Notify::new(),
            closed_tx: watch::channel(false).0,
        }
    }

    fn lease(self: &Arc<Self>, key: Key<M>, entry: Option<Entry<Res<M>>>) -> Lease<M> {
        Lease {
            inner: Arc::clone(self),
            key,
            entry,
            discard: None,
            kind: LeaseKind::Taken,
        }
    }

    fn pop_idle(&self, ks: &mut KeyState<Res<M>>) -> Option<Entry<Res<M>>> {
        match self.config.reuse_order {
            ReuseOrder::Lifo => ks.idle.pop_back(),
            ReuseOrder::Fifo => ks.idle.pop_front(),
        }
    }

    /// Takes the longest-idle resource of a key other than `except`, freeing its slot.
    fn evict_other_idle(st: &mut State<M>, except: &Key<M>, actions: &mut Vec<Action<M>>) -> bool {
        let victim = st
            .keys
            .iter()
            .filter(|(k, ks)| *k != except && !ks.idle.is_empty())
            .min_by_key(|(_, ks)| ks.idle.front().map(|e| e.metrics.last_used))
            .map(|(k, _)| k.clone());
        let Some(vk) = victim else { return false };
        let Some(ks) = st.keys.get_mut(&vk) else {
            return false;
        };
        let Some(entry) = ks.idle.pop_front() else {
            return false;
        };
        ks.live -= 1;
        if ks.live == 0 {
            st.keys.remove(&vk);
        }
        st.total -= 1;
        st.idle_total -= 1;
        st.tearing_down += 1;
        actions.push(Action::Teardown(vk, entry.res, TeardownReason::Evicted));
        true
    }

    /// A lease for `key` without waiting, or a registered waiter.
    pub(crate) fn acquire(self: &Arc<Self>, key: &Key<M>) -> Option<Acquire<M>> {
        let mut actions = Vec::new();
        let result = {
            let mut st = self.state.lock();
            if st.closed {
                return None;
            }
            let max_total = self.config.max_total;
            let st = &mut *st;
            let max_per_key = st.max_for(&self.config, key);
            if self.config.min_idle > 0 && !st.targets.contains_key(key) {
                st.targets
                    .insert(key.clone(), Target::new(self.config.min_idle));
            }
            if !st.keys.contains_key(key) {
                st.keys.insert(key.clone(), KeyState::default());
            }
            let ks = st.keys.get_mut(key)?;
            let result = if let Some(entry) = self.pop_idle(ks) {
                // An idle resource means no waiter wants this key: taking it is fair.
                st.idle_total -= 1;
                Acquire::Now(self.lease(key.clone(), Some(entry)))
            } else if st.waiters.is_empty() && ks.live < max_per_key && st.total < max_total {
                ks.live += 1;
                st.total += 1;
                Acquire::Now(self.lease(key.clone(), None))
            } else {
                let (tx, rx) = oneshot::channel();
                let id = st.next_waiter;
                st.next_waiter += 1;
                st.waiters.push_back(Waiter {
                    id,
                    key: key.clone(),
                    tx,
                });
                self.dispatch(st, &mut actions);
                Acquire::Wait(WaitGuard {
                    inner: Arc::clone(self),
                    id,
                    rx,
                })
            };
            // Eager: top up after every hand-out. On return: only a key left with nothing
            // ready; otherwise the create waits until a resource comes back, so it does not
            // compete with the caller's use of the one it just got.
            let top_up = match self.config.replenish {
                Replenish::Eager => true,
                Replenish::OnReturn => st.keys.get(key).map_or(0, KeyState::ready) == 0,
            };
            if top_up {
                self.fill(st, &mut actions);
            }
            result
        };
        self.run(actions);
        Some(result)
    }

    /// Serves waiters in FIFO order with what is free. A waiter whose key is at its per-key
    /// limit does not hold up the others; the first waiter held up by the total limit keeps
    /// every later waiter from taking a new slot (they may still take idle resources).
    fn dispatch(self: &Arc<Self>, st: &mut State<M>, actions: &mut Vec<Action<M>>) {
        let mut total_blocked = false;
        let mut i = 0;
        while i < st.waiters.len() {
            let key = st.waiters[i].key.clone();
            let max_per_key = st.max_for(&self.config, &key);
            let ks = st.keys.entry(key.clone()).or_default();
            let grant = if let Some(entry) = self.pop_idle(ks) {
                st.idle_total -= 1;
                Some(Some(entry))
            } else if ks.live >= max_per_key || total_blocked {
                None
            } else if st.total < self.config.max_total || Self::evict_other_idle(st, &key, actions)
            {
                // The eviction may have removed other keys, never this one.
                let ks = st.keys.entry(key.clone()).or_default();
                ks.live += 1;
                st.total += 1;
                Some(None)
            } else {
                total_blocked = true;
                None
            };
            match grant {
                Some(entry) => {
                    if let Some(w) = st.waiters.remove(i) {
                        let lease = self.lease(key, entry);
                        actions.push(Action::Grant(w.tx, lease));
                    }
                }
                None => {
                    let ks_empty = st.keys.get(&key).is_some_and(|ks| ks.live == 0);
                    if ks_empty {
                        st.keys.remove(&key);
                    }
                    i += 1;
                }
            }
        }
    }

    /// Reserves slots for background creates wherever a warm key has fewer ready resources
    /// than its target. Never while callers wait (they come first), never past a limit,
    /// never by evicting, and not for a key pausing after failed creates.
    fn fill(&self, st: &mut State<M>, actions: &mut Vec<Action<M>>) {
        if st.closed || st.targets.is_empty() || !st.waiters.is_empty() {
            return;
        }
        let State {
            keys,
            targets,
            total,
            creating,
            limits,
            ..
        } = st;
        for (key, target) in targets.iter() {
            let max_per_key = limits.get(key).copied().unwrap_or(self.config.max_per_key);
            if target.backing_off {
                continue;
            }
            let ready = keys.get(key).map_or(0, KeyState::ready);
            let mut missing = target.n.saturating_sub(ready);
            if missing == 0 || *total >= self.config.max_total {
                continue;
            }
            let ks = keys.entry(key.clone()).or_default();
            while missing > 0 && ks.live < max_per_key && *total < self.config.max_total {
                ks.live += 1;
                ks.creating += 1;
                *total += 1;
                *creating += 1;
                missing -= 1;
                actions.push(Action::Create(key.clone()));
            }
            if ks.live == 0 {
                keys.remove(key);
            }
        }
    }

    /// Returns a lease: its resource to the idle list, to a background recycle, or to
    /// teardown; or its slot.
    fn release(
        self: &Arc<Self>,
        key: &Key<M>,
        entry: Option<Entry<Res<M>>>,
        discard: Option<TeardownReason>,
        kind: LeaseKind,
    ) {
        let mut actions = Vec::new();
        // A background create that produced nothing (it failed, or its task was dropped,
        // as a shutting-down runtime does with every task it is handed) does not start
        // another one: the pause after a failure refills later, and a dead runtime must not
        // be handed create after create.
        let refill = kind != LeaseKind::Creating || entry.is_some();
        let closed = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let closed = st.closed;
            match kind {
                LeaseKind::Recycling => st.recycling -= 1,
                LeaseKind::Creating => {
                    st.creating -= 1;
                    if entry.is_some()
                        && let Some(t) = st.targets.get_mut(key)
                    {
                        t.failures = 0;
                    }
                }
                LeaseKind::Taken | LeaseKind::InUse | LeaseKind::Checking => {}
            }
            if !st.keys.contains_key(key) {
                st.keys.insert(key.clone(), KeyState::default());
            }
            let Some(ks) = st.keys.get_mut(key) else {
                return;
            };
            match kind {
                LeaseKind::Recycling => ks.recycling -= 1,
                LeaseKind::Creating => ks.creating -= 1,
                LeaseKind::Checking => ks.checking -= 1,
                LeaseKind::Taken | LeaseKind::InUse => {}
            }
            let mut teardowns = 0;
            let keep = match entry {
                None => None,
                Some(e) => {
                    let reason = discard.or(closed.then_some(TeardownReason::Closed)).or(self
                        .config
                        .max_reuse
                        .filter(|&max| e.metrics.uses > max)
                        .map(|_| TeardownReason::MaxReuse));
                    match reason {
                        Some(reason) => {
                            actions.push(Action::Teardown(key.clone(), e.res, reason));
                            teardowns += 1;
                            None
                        }
                        None => Some(e),
                    }
                }
            };
            match keep {
                Some(e)
                    if kind == LeaseKind::InUse
                        && self.config.recycle_mode == RecycleMode::Background =>
                {
                    // Keeps its slot; idle once the recycle task is done.
                    ks.recycling += 1;
                    st.recycling += 1;
                    actions.push(Action::Recycle(key.clone(), e));
                }
                Some(e) => {
                    ks.idle.push_back(e);
                    st.idle_total += 1;
                }
                None => {
                    ks.live = ks.live.saturating_sub(1);
                    st.total = st.total.saturating_sub(1);
                    if ks.live == 0 {
                        st.keys.remove(key);
                    }
                }
            }
            st.tearing_down += teardowns;
            self.dispatch(st, &mut actions);
            if refill {
                self.fill(st, &mut actions);
            }
            closed
        };
        self.run(actions);
        // Only `close` waits on this; skip the notification's cost otherwise.
        if closed {
            self.changed.notify_waiters();
        }
    }

    /// Carries out what a locked section decided; call without the lock.
    pub(crate) fn run(self: &Arc<Self>, actions: Vec<Action<M>>) {
        for action in actions {
            match action {
                Action::Grant(tx, lease) => {
                    // A waiter gone in the meantime: dropping the lease returns it.
                    let _ = tx.send(lease);
                }
                Action::Teardown(key, res, reason) => self.spawn_teardown(key, res, reason),
                Action::Recycle(key, entry) => self.spawn_recycle(key, entry),
                Action::Create(key) => self.spawn_create(key),
            }
        }
    }

    fn spawn_teardown(self: &Arc<Self>, key: Key<M>, res: Res<M>, reason: TeardownReason) {
        Stats::bump(&self.stats.discarded);
        if reason == TeardownReason::IdleTimeout {
            Stats::bump(&self.stats.idle_evicted);
        }
        let ticket = TeardownTicket(Arc::clone(self));
        let manager = Arc::clone(&self.manager);
        self.handle.spawn(async move {
            manager.teardown(&key, res, reason).await;
            Stats::bump(&ticket.0.stats.torn_down);
            drop(ticket);
        });
    }

    /// Recycles a returned resource off the caller's path. Success makes it idle; failure
    /// tears it down; `close` stops the recycle and tears it down (its state is unknown).
    fn spawn_recycle(self: &Arc<Self>, key: Key<M>, entry: Entry<Res<M>>) {
        let mut lease = Lease {
            inner: Arc::clone(self),
            key,
            entry: Some(entry),
            discard: Some(TeardownReason::RecycleCancelled),
            kind: LeaseKind::Recycling,
        };
        let mut closed = self.closed_tx.subscribe();
        self.handle.spawn(async move {
            let inner = Arc::clone(&lease.inner);
            Stats::bump(&inner.stats.recycled);
            let Some(entry) = lease.entry.as_mut() else {
                return;
            };
            let recycle = inner
                .manager
                .recycle(&lease.key, &mut entry.res, &entry.metrics);
            match until_closed(&mut closed, recycle).await {
                Some(Ok(())) => lease.discard = None,
                Some(Err(_)) => {
                    Stats::bump(&inner.stats.recycle_failed);
                    lease.discard = Some(TeardownReason::RecycleFailed);
                }
                None => {}
            }
            drop(lease);
        });
    }

    /// Creates a resource for a warm key off every caller's path. A create is never
    /// cancelled (a half-made resource could leak); `close` waits for it and tears the
    /// result down. A failure pauses this key's creates (100 ms, doubling up to 30 s).
    fn spawn_create(self: &Arc<Self>, key: Key<M>) {
        let mut lease = Lease {
            inner: Arc::clone(self),
            key,
            entry: None,
            discard: None,
            kind: LeaseKind::Creating,
        };
        self.handle.spawn(async move {
            let inner = Arc::clone(&lease.inner);
            match inner.create(&lease.key).await {
                Ok(res) => {
                    Stats::bump(&inner.stats.created);
                    Stats::bump(&inner.stats.prewarmed);
                    lease.entry = Some(Entry {
                        res,
                        metrics: Metrics::new(Instant::now()),
                    });
                    drop(lease);
                }
                Err(_) => {
                    let pause = inner.create_failed_in_background(&lease.key);
                    let key = lease.key.clone();
                    drop(lease);
                    if pause.is_zero() {
                        return;
                    }
                    let mut closed = inner.closed_tx.subscribe();
                    let weak = Arc::downgrade(&inner);
                    drop(inner);
                    let slept = until_closed(&mut closed, tokio::time::sleep(pause)).await;
                    if slept.is_some()
                        && let Some(inner) = weak.upgrade()
                    {
                        inner.end_backoff(&key);
                    }
                }
            }
        });
    }

    /// [`Manager::create`] under the create timeout; failures are counted.
    pub(crate) async fn create(&self, key: &Key<M>) -> Result<Res<M>, PoolError<M::Error>> {
        let created = match self.config.create_timeout {
            Some(t) => tokio::time::timeout(t, self.manager.create(key))
                .await
                .map_err(|_| PoolError::CreateTimeout {
                    key: format!("{key:?}"),
                    timeout: t,
                }),
            None => Ok(self.manager.create(key).await),
        };
        match created {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(source)) => {
                Stats::bump(&self.stats.create_failed);
                Err(PoolError::Create {
                    key: format!("{key:?}"),
                    source,
                })
            }
            Err(e) => {
                Stats::bump(&self.stats.create_failed);
                Err(e)
            }
        }
    }

    /// Starts a key's pause after a failed background create; returns its length (zero
    /// when the key is no longer kept warm).
    fn create_failed_in_background(&self, key: &Key<M>) -> Duration {
        let mut st = self.state.lock();
        match st.targets.get_mut(key) {
            Some(t) => {
                t.failures = t.failures.saturating_add(1);
                t.backing_off = true;
                backoff(t.failures)
            }
            None => Duration::ZERO,
        }
    }

    fn end_backoff(self: &Arc<Self>, key: &Key<M>) {
        let mut actions = Vec::new();
        {
            let mut st = self.state.lock();
            if let Some(t) = st.targets.get_mut(key) {
                t.backing_off = false;
            }
            self.fill(&mut st, &mut actions);
        }
        self.run(actions);
    }

    /// Sets how many idle resources `key` keeps ready, and starts creating them.
    /// Sets the most resources `key` may have (`n >= 1`), serving waiters a higher limit
    /// lets in. Resources above a lowered limit stay until they are returned.
    pub(crate) fn set_limit(self: &Arc<Self>, key: Key<M>, n: usize) {
        let mut actions = Vec::new();
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            st.limits.insert(key, n.max(1));
            self.dispatch(&mut st, &mut actions);
            self.fill(&mut st, &mut actions);
        }
        self.run(actions);
    }

    pub(crate) fn set_target(self: &Arc<Self>, key: Key<M>, n: usize) {
        let mut actions = Vec::new();
        {
            let mut st = self.state.lock();
            if st.closed {
                return;
            }
            match st.targets.get_mut(&key) {
                Some(t) => t.n = n,
                None => {
                    st.targets.insert(key, Target::new(n));
                }
            }
            self.fill(&mut st, &mut actions);
        }
        self.run(actions);
    }

    /// Takes idle resources out: the timed-out ones to teardown, the ones due for a health
    /// check returned as leases (still counted against the limits). The newest idle
    /// resources of a warm key, up to its target, are exempt from the idle timeout.
    pub(crate) fn reap_locked(self: &Arc<Self>) -> Vec<Lease<M>> {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut actions = Vec::new();
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            let mut freed = 0;
            for (key, ks) in &mut st.keys {
                let keep_warm = st.targets.get(key).map_or(0, |t| t.n);
                let exempt_from = ks.idle.len().saturating_sub(keep_warm);
                let mut kept = VecDeque::with_capacity(ks.idle.len());
                for (i, e) in ks.idle.drain(..).enumerate() {
                    let idle_for = now.saturating_duration_since(e.metrics.last_used);
                    let check_age = now.saturating_duration_since(e.metrics.last_checked);
                    if i < exempt_from && self.config.idle_timeout.is_some_and(|t| idle_for >= t) {
                        actions.push(Action::Teardown(
                            key.clone(),
                            e.res,
                            TeardownReason::IdleTimeout,
                        ));
                        ks.live -= 1;
                        freed += 1;
                    } else if self
                        .config
                        .health_check_interval
                        .is_some_and(|t| check_age >= t)
                    {
                        ks.checking += 1;
                        due.push((key.clone(), e));
                    } else {
                        kept.push_back(e);
                    }
                }
                ks.idle = kept;
            }
            st.idle_total -= freed + due.len();
            st.total -= freed;
            st.tearing_down += freed;
            st.keys.retain(|_, ks| ks.live > 0);
            self.dispatch(st, &mut actions);
            self.fill(st, &mut actions);
        }
        self.run(actions);
        self.changed.notify_waiters();
        due.into_iter()
            .map(|(key, e)| {
                let mut lease = self.lease(key, Some(e));
                lease.kind = LeaseKind::Checking;
                // If the check is cancelled, the resource's health is unknown.
                lease.discard = Some(TeardownReason::HealthCheckFailed);
                lease
            })
            .collect()
    }

    /// Marks the pool closed; hands back the waiters (to drop outside the lock).
    pub(crate) fn close_locked(self: &Arc<Self>) -> Vec<oneshot::Sender<Lease<M>>> {
        let mut actions = Vec::new();
        let senders = {
            let mut st = self.state.lock();
            let st = &mut *st;
            st.closed = true;
            for (key, ks) in &mut st.keys {
                for e in ks.idle.drain(..) {
                    actions.push(Action::Teardown(key.clone(), e.res, TeardownReason::Closed));
                    ks.live -= 1;
                }
            }
            st.total -= actions.len();
            st.tearing_down += actions.len();
            st.idle_total = 0;
            st.keys.retain(|_, ks| ks.live > 0);
            st.waiters.drain(..).map(|w| w.tx).collect()
        };
        // Background recycles stop (their resources go to teardown); creates run to the end.
        self.closed_tx.send_replace(true);
        self.run(actions);
        self.changed.notify_waiters();
        senders
    }

    pub(crate) fn is_drained(&self) -> bool {
        let st = self.state.lock();
        st.total == 0 && st.tearing_down == 0
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    pub(crate) fn gauges(&self) -> Gauges {
        let st = self.state.lock();
        Gauges {
            live: st.total,
            idle: st.idle_total,
            waiting: st.waiters.len(),
            tearing_down: st.tearing_down,
            recycling: st.recycling,
            creating: st.creating,
            keys: st.keys.len(),
        }
    }

    pub(crate) fn key_counts(&self, key: &Key<M>) -> (usize, usize) {
        let st = self.state.lock();
        st.keys
            .get(key)
            .map_or((0, 0), |ks| (ks.live, ks.idle.len()))
    }
}

impl<M: Manager> Drop for Inner<M> {
    fn drop(&mut self) {
        // Without `close`, idle resources still get their teardown, if a runtime is left.
        let st = self.state.get_mut();
        for (key, ks) in st.keys.drain() {
            for e in ks.idle {
                let manager = Arc::clone(&self.manager);
                let key = key.clone();
                self.handle.spawn(async move {
                    manager
                        .teardown(&key, e.res, TeardownReason::PoolDropped)
                        .await;
                });
            }
        }
    }
}

/// Held by a teardown task; counts it out when the task ends or is dropped.
struct TeardownTicket<M: Manager>(Arc<Inner<M>>);

impl<M: Manager> Drop for TeardownTicket<M> {
    fn drop(&mut self) {
        {
            let mut st = self.0.state.lock();
            st.tearing_down = st.tearing_down.saturating_sub(1);
        }
        self.0.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(9), Duration::from_millis(25_600));
        assert_eq!(backoff(10), BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), BACKOFF_MAX);
    }
}
