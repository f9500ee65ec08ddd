//! The shared state of a keyed pool: slot accounting, the FIFO of waiters, and leases.
//!
//! All bookkeeping happens under one short `parking_lot` mutex that is never held across an
//! `.await`, never while a [`Lease`] is dropped, and never while a manager method runs: the
//! locked sections return a list of [`Action`]s (hand a lease to a waiter, spawn a teardown)
//! that run after the lock is released.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::manager::{Manager, Metrics, TeardownReason};
use super::{KeyedPoolConfig, ReuseOrder};

pub(crate) type Key<M> = <M as Manager>::Key;
pub(crate) type Res<M> = <M as Manager>::Resource;

pub(crate) struct Entry<R> {
    pub(crate) res: R,
    pub(crate) metrics: Metrics,
}

struct KeyState<R> {
    idle: VecDeque<Entry<R>>,
    /// Resources and reserved slots of this key: idle, handed out, being created or checked.
    live: usize,
}

impl<R> Default for KeyState<R> {
    fn default() -> Self {
        Self {
            idle: VecDeque::new(),
            live: 0,
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
}

pub(crate) enum Action<M: Manager> {
    Grant(oneshot::Sender<Lease<M>>, Lease<M>),
    Teardown(Key<M>, Res<M>, TeardownReason),
}

/// Event counters; see [`KeyedPoolStats`](super::KeyedPoolStats).
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) created: AtomicU64,
    pub(crate) create_failed: AtomicU64,
    pub(crate) recycled: AtomicU64,
    pub(crate) recycle_failed: AtomicU64,
    pub(crate) reused: AtomicU64,
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
}

impl<M: Manager> Drop for Lease<M> {
    fn drop(&mut self) {
        self.inner
            .release(&self.key, self.entry.take(), self.discard);
    }
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
            }),
            stats: Stats::default(),
            handle,
            changed: Notify::new(),
        }
    }

    fn lease(self: &Arc<Self>, key: Key<M>, entry: Option<Entry<Res<M>>>) -> Lease<M> {
        Lease {
            inner: Arc::clone(self),
            key,
            entry,
            discard: None,
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
            let max_per_key = self.config.max_per_key;
            let max_total = self.config.max_total;
            let st = &mut *st;
            if !st.keys.contains_key(key) {
                st.keys.insert(key.clone(), KeyState::default());
            }
            let ks = st.keys.get_mut(key)?;
            if let Some(entry) = self.pop_idle(ks) {
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
            }
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
            let ks = st.keys.entry(key.clone()).or_default();
            let grant = if let Some(entry) = self.pop_idle(ks) {
                st.idle_total -= 1;
                Some(Some(entry))
            } else if ks.live >= self.config.max_per_key || total_blocked {
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

    /// Returns a lease: its resource to the idle list (or to teardown), or its slot.
    fn release(
        self: &Arc<Self>,
        key: &Key<M>,
        entry: Option<Entry<Res<M>>>,
        discard: Option<TeardownReason>,
    ) {
        let mut actions = Vec::new();
        let closed = {
            let mut st = self.state.lock();
            let st = &mut *st;
            let closed = st.closed;
            if !st.keys.contains_key(key) {
                st.keys.insert(key.clone(), KeyState::default());
            }
            let Some(ks) = st.keys.get_mut(key) else {
                return;
            };
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
                            None
                        }
                        None => Some(e),
                    }
                }
            };
            if let Some(e) = keep {
                ks.idle.push_back(e);
                st.idle_total += 1;
            } else {
                ks.live = ks.live.saturating_sub(1);
                st.total = st.total.saturating_sub(1);
                if ks.live == 0 {
                    st.keys.remove(key);
                }
            }
            st.tearing_down += actions.len();
            self.dispatch(st, &mut actions);
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

    /// Takes idle resources out: the timed-out ones to teardown, the ones due for a health
    /// check returned as leases (still counted against the limits).
    pub(crate) fn reap_locked(self: &Arc<Self>) -> Vec<Lease<M>> {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut actions = Vec::new();
        {
            let mut st = self.state.lock();
            let st = &mut *st;
            let mut freed = 0;
            for (key, ks) in &mut st.keys {
                let mut kept = VecDeque::with_capacity(ks.idle.len());
                for e in ks.idle.drain(..) {
                    let idle_for = now.saturating_duration_since(e.metrics.last_used);
                    let check_age = now.saturating_duration_since(e.metrics.last_checked);
                    if self.config.idle_timeout.is_some_and(|t| idle_for >= t) {
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
        }
        self.run(actions);
        self.changed.notify_waiters();
        due.into_iter()
            .map(|(key, e)| {
                let mut lease = self.lease(key, Some(e));
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
