//! Per-key concurrency controller with priority wait queues, RAII tokens, auto-scaling and a
//! memory-pressure gate.
//!
//! Each key owns a [`KeySlots`]: a limit, a count of slots in use and three FIFO queues (one per
//! [`Priority`]). Releasing a slot hands it straight to the first waiter of the highest
//! non-empty priority, so a waiter can never be overtaken by a later arrival of the same or a
//! lower priority. The state sits behind one short `parking_lot` mutex per key that is never
//! held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::domain::{AgentRole, Priority};
use crate::memory::MemoryReader;

/// What a concurrency limit applies to: a role, a provider or a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotKey {
    /// An agent role (`Worker`, ...).
    Role(AgentRole),
    /// A model provider (`"anthropic"`).
    Provider(String),
    /// A model (`"anthropic/claude-sonnet"`).
    Model(String),
}

impl From<AgentRole> for SlotKey {
    fn from(role: AgentRole) -> Self {
        SlotKey::Role(role)
    }
}

impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotKey::Role(r) => write!(f, "role:{r}"),
            SlotKey::Provider(p) => write!(f, "provider:{p}"),
            SlotKey::Model(m) => write!(f, "model:{m}"),
        }
    }
}

/// Limits of one key: the auto-scaler moves the live limit between `floor` and `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitConfig {
    /// Limit at start.
    pub initial: usize,
    /// The auto-scaler never goes below this.
    pub floor: usize,
    /// The auto-scaler never goes above this (the user's configured limit).
    pub cap: usize,
}

impl LimitConfig {
    /// Starts at `cap`, may shrink to 1 and grow back to `cap`.
    pub const fn new(cap: usize) -> Self {
        Self {
            initial: cap,
            floor: 1,
            cap,
        }
    }

    /// Sets the starting limit.
    pub const fn with_initial(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the floor.
    pub const fn with_floor(mut self, floor: usize) -> Self {
        self.floor = floor;
        self
    }

    /// The same limits made consistent: `1 <= floor <= initial <= cap`.
    pub fn normalized(self) -> Self {
        let cap = self.cap.max(1);
        let floor = self.floor.clamp(1, cap);
        Self {
            initial: self.initial.clamp(floor, cap),
            floor,
            cap,
        }
    }
}

/// Why a slot was not handed out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AcquireError {
    /// `try_acquire` found every slot taken (or others already waiting).
    #[error("no free slot for {key} (limit {limit}, {in_use} in use)")]
    NoSlot {
        /// The key.
        key: SlotKey,
        /// The live limit.
        limit: usize,
        /// Slots in use.
        in_use: usize,
    },
    /// `acquire_timeout` gave up.
    #[error("timed out after {waited:?} waiting for a slot for {key}")]
    Timeout {
        /// The key.
        key: SlotKey,
        /// How long it waited.
        waited: Duration,
    },
    /// A low-priority request was refused because memory use is above the threshold.
    #[error(
        "memory pressure: {:.1}% in use (threshold {:.1}%), low-priority work for {key} refused",
        used * 100.0,
        threshold * 100.0
    )]
    MemoryPressure {
        /// The key.
        key: SlotKey,
        /// Memory in use, 0.0 to 1.0.
        used: f64,
        /// The configured threshold.
        threshold: f64,
    },
    /// The controller was closed (shutdown); waiters are woken with this.
    #[error("concurrency controller closed, no slot for {key}")]
    Closed {
        /// The key.
        key: SlotKey,
    },
}

/// One value per priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByPriority<T> {
    /// For [`Priority::High`].
    pub high: T,
    /// For [`Priority::Normal`].
    pub normal: T,
    /// For [`Priority::Low`].
    pub low: T,
}

impl<T> ByPriority<T> {
    /// The value for `p`.
    pub fn get(&self, p: Priority) -> &T {
        match p {
            Priority::High => &self.high,
            Priority::Normal => &self.normal,
            Priority::Low => &self.low,
        }
    }

    fn get_mut(&mut self, p: Priority) -> &mut T {
        match p {
            Priority::High => &mut self.high,
            Priority::Normal => &mut self.normal,
            Priority::Low => &mut self.low,
        }
    }
}

/// Wait-time statistics for one priority (slots granted straight away count as zero waits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitStats {
    /// Slots granted.
    pub granted: u64,
    /// Sum of waits.
    pub total: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl WaitStats {
    /// Mean wait, zero when nothing was granted.
    pub fn mean(&self) -> Duration {
        if self.granted == 0 {
            Duration::ZERO
        } else {
            self.total / u32::try_from(self.granted).unwrap_or(u32::MAX)
        }
    }

    fn record(&mut self, wait: Duration) {
        self.granted += 1;
        self.total += wait;
        self.max = self.max.max(wait);
    }
}

/// A snapshot of one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct KeyStats {
    /// The key.
    pub key: SlotKey,
    /// Live limit (after auto-scaling).
    pub limit: usize,
    /// Configured floor and cap.
    pub floor: usize,
    /// Configured cap.
    pub cap: usize,
    /// Slots held now.
    pub in_use: usize,
    /// Waiters now, per priority.
    pub waiting: ByPriority<usize>,
    /// Wait times, per priority.
    pub wait: ByPriority<WaitStats>,
    /// Waits abandoned (timeout or the future dropped) before a slot came.
    pub abandoned: u64,
    /// Low-priority requests refused for memory pressure.
    pub refused_memory: u64,
    /// Times the auto-scaler raised the limit.
    pub scale_ups: u64,
    /// Times the auto-scaler lowered the limit.
    pub scale_downs: u64,
}

/// A snapshot of every key, sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerStats {
    /// Per-key figures.
    pub keys: Vec<KeyStats>,
    /// Memory use at the last gate check (0.0 to 1.0), if any was read.
    pub memory_used: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Scaling {
    up_after: u32,
    down_after: u32,
}

struct MemoryGate {
    reader: Option<Arc<dyn MemoryReader>>,
    threshold: f64,
    refresh: Duration,
    cache: Mutex<Option<(Instant, Option<f64>)>>,
}

impl fmt::Debug for MemoryGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryGate")
            .field("reader", &self.reader)
            .field("threshold", &self.threshold)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

impl MemoryGate {
    /// Current usage ratio, re-read at most once per `refresh`. `None` when there is no reader
    /// or it failed (the gate then fails open).
    fn used(&self) -> Option<f64> {
        let reader = self.reader.as_ref()?;
        let mut cache = self.cache.lock();
        let now = Instant::now();
        if let Some((at, v)) = *cache
            && !self.refresh.is_zero()
            && now.duration_since(at) < self.refresh
        {
            return v;
        }
        let v = match reader.read() {
            Ok(u) => Some(u.ratio()),
            Err(e) => {
                tracing::debug!(error = %e, "memory reading failed; gate open");
                None
            }
        };
        *cache = Some((now, v));
        v
    }

    fn last(&self) -> Option<f64> {
        self.cache.lock().and_then(|(_, v)| v)
    }
}

struct Waiter {
    id: u64,
    since: Instant,
    tx: oneshot::Sender<()>,
}

#[derive(Default)]
struct Inner {
    in_use: usize,
    limit: usize,
    queues: [VecDeque<Waiter>; 3],
    next_id: u64,
    closed: bool,
    success_streak: u32,
    failure_streak: u32,
    wait: ByPriority<WaitStats>,
    abandoned: u64,
    refused_memory: u64,
    scale_ups: u64,
    scale_downs: u64,
}

impl Inner {
    fn waiting(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Hands free slots to waiters, highest priority first, FIFO within a priority.
    fn dispatch(&mut self) {
        if self.in_use >= self.limit || self.queues.iter().all(VecDeque::is_empty) {
            return; // the common release: nobody waits, so no clock read
        }
        let now = Instant::now();
        while self.in_use < self.limit {
            let Some((p, w)) = Priority::SERVE_ORDER
                .into_iter()
                .find_map(|p| self.queues[p.index()].pop_front().map(|w| (p, w)))
            else {
                return;
            };
            // A send only fails if the waiting future leaked without running its drop guard.
            if w.tx.send(()).is_ok() {
                self.in_use += 1;
                self.wait.get_mut(p).record(now.duration_since(w.since));
            }
        }
    }
}

/// The slots of one key. Get one with [`ConcurrencyController::slots`] and keep the `Arc` to
/// skip the key lookup on hot paths.
pub struct KeySlots {
    key: SlotKey,
    floor: usize,
    cap: usize,
    scaling: Scaling,
    gate: Arc<MemoryGate>,
    inner: Mutex<Inner>,
}

impl fmt::Debug for KeySlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.lock();
        f.debug_struct("KeySlots")
            .field("key", &self.key)
            .field("limit", &inner.limit)
            .field("in_use", &inner.in_use)
            .field("waiting", &inner.waiting())
            .finish_non_exhaustive()
    }
}

impl KeySlots {
    /// The key.
    pub fn key(&self) -> &SlotKey {
        &self.key
    }

    fn check_gate(&self, priority: Priority) -> Result<(), AcquireError> {
        if priority != Priority::Low {
            return Ok(());
        }
        match self.gate.used() {
            Some(used) if used > self.gate.threshold => {
                self.inner.lock().refused_memory += 1;
                Err(AcquireError::MemoryPressure {
                    key: self.key.clone(),
                    used,
                    threshold: self.gate.threshold,
                })
            }
            _ => Ok(()),
        }
    }

    fn token(self: &Arc<Self>, priority: Priority) -> ConcurrencyToken {
        ConcurrencyToken {
            slots: Arc::clone(self),
            priority,
        }
    }

    /// Takes a slot if one is free and nobody is waiting; never waits.
    ///
    /// # Errors
    /// [`AcquireError::NoSlot`], [`AcquireError::MemoryPressure`] (low priority only) or
    /// [`AcquireError::Closed`].
    pub fn try_acquire(
        self: &Arc<Self>,
        priority: Priority,
    ) -> Result<ConcurrencyToken, AcquireError> {
        self.check_gate(priority)?;
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(AcquireError::Closed {
                key: self.key.clone(),
            });
        }
        if inner.in_use < inner.limit && inner.waiting() == 0 {
            inner.in_use += 1;
            inner.wait.get_mut(priority).record(Duration::ZERO);
            drop(inner);
            Ok(self.token(priority))
        } else {
            Err(AcquireError::NoSlot {
                key: self.key.clone(),
                limit: inner.limit,
                in_use: inner.in_use,
            })
        }
    }

    /// Waits for a slot. Cancel-safe: dropping the future gives back a slot it was handed.
    ///
    /// # Errors
    /// [`AcquireError::MemoryPressure`] (low priority only) or [`AcquireError::Closed`].
    pub fn acquire(
        self: &Arc<Self>,
        priority: Priority,
    ) -> impl Future<Output = Result<ConcurrencyToken, AcquireError>> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            this.check_gate(priority)?;
            let guard = {
                let mut inner = this.inner.lock();
                if inner.closed {
                    return Err(AcquireError::Closed {
                        key: this.key.clone(),
                    });
                }
                if inner.in_use < inner.limit && inner.waiting() == 0 {
                    inner.in_use += 1;
                    inner.wait.get_mut(priority).record(Duration::ZERO);
                    drop(inner);
                    return Ok(this.token(priority));
                }
                let id = inner.next_id;
                inner.next_id += 1;
                let (tx, rx) = oneshot::channel();
                inner.queues[priority.index()].push_back(Waiter {
                    id,
                    since: Instant::now(),
                    tx,
                });
                WaitGuard {
                    slots: &this,
                    id,
                    priority,
                    rx,
                    armed: true,
                }
            };
            let mut guard = guard;
            match (&mut guard.rx).await {
                Ok(()) => {
                    guard.armed = false;
                    Ok(this.token(priority))
                }
                Err(_) => {
                    guard.armed = false;
                    Err(AcquireError::Closed {
                        key: this.key.clone(),
                    })
                }
            }
        }
    }

    /// [`acquire`](Self::acquire) with a time limit.
    ///
    /// # Errors
    /// As `acquire`, plus [`AcquireError::Timeout`].
    pub async fn acquire_timeout(
        self: &Arc<Self>,
        priority: Priority,
        timeout: Duration,
    ) -> Result<ConcurrencyToken, AcquireError> {
        let start = Instant::now();
        match tokio::time::timeout(timeout, self.acquire(priority)).await {
            Ok(r) => r,
            Err(_) => Err(AcquireError::Timeout {
                key: self.key.clone(),
                waited: start.elapsed(),
            }),
        }
    }

    fn release(&self) {
        let mut inner = self.inner.lock();
        inner.in_use -= 1;
        inner.dispatch();
    }

    /// Counts a success for auto-scaling: after `scale_up_after` in a row, the limit grows by
    /// one (never above the cap) and a waiter may be served.
    pub fn record_success(&self) {
        let mut inner = self.inner.lock();
        inner.failure_streak = 0;
        inner.success_streak += 1;
        if inner.success_streak >= self.scaling.up_after {
            inner.success_streak = 0;
            if inner.limit < self.cap {
                inner.limit += 1;
                inner.scale_ups += 1;
                inner.dispatch();
            }
        }
    }

    /// Counts a failure for auto-scaling: after `scale_down_after` in a row, the limit shrinks
    /// by one (never below the floor). Held slots are not revoked.
    pub fn record_failure(&self) {
        let mut inner = self.inner.lock();
        inner.success_streak = 0;
        inner.failure_streak += 1;
        if inner.failure_streak >= self.scaling.down_after {
            inner.failure_streak = 0;
            if inner.limit > self.floor {
                inner.limit -= 1;
                inner.scale_downs += 1;
            }
        }
    }

    /// Live limit.
    pub fn limit(&self) -> usize {
        self.inner.lock().limit
    }

    /// Slots held now.
    pub fn in_use(&self) -> usize {
        self.inner.lock().in_use
    }

    /// Refuses new requests and wakes every waiter with [`AcquireError::Closed`]. Held tokens
    /// stay valid and still release.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        for q in &mut inner.queues {
            q.clear();
        }
    }

    /// A snapshot of this key.
    pub fn stats(&self) -> KeyStats {
        let inner = self.inner.lock();
        KeyStats {
            key: self.key.clone(),
            limit: inner.limit,
            floor: self.floor,
            cap: self.cap,
            in_use: inner.in_use,
            waiting: ByPriority {
                high: inner.queues[0].len(),
                normal: inner.queues[1].len(),
                low: inner.queues[2].len(),
            },
            wait: inner.wait,
            abandoned: inner.abandoned,
            refused_memory: inner.refused_memory,
            scale_ups: inner.scale_ups,
            scale_downs: inner.scale_downs,
        }
    }
}

/// Removes an abandoned waiter, or gives back the slot it was handed but never took.
struct WaitGuard<'a> {
    slots: &'a KeySlots,
    id: u64,
    priority: Priority,
    rx: oneshot::Receiver<()>,
    armed: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Grants and removals happen under this lock, so the receiver's state is settled.
        let mut inner = self.slots.inner.lock();
        match self.rx.try_recv() {
            Ok(()) => {
                // Granted before we were dropped: the slot is ours to give back.
                inner.in_use -= 1;
                inner.dispatch();
            }
            Err(oneshot::error::TryRecvError::Empty) => {
                inner.abandoned += 1;
                let q = &mut inner.queues[self.priority.index()];
                if let Some(pos) = q.iter().position(|w| w.id == self.id) {
                    q.remove(pos);
                }
            }
            // Cleared by `close`: nothing was granted.
            Err(oneshot::error::TryRecvError::Closed) => {}
        }
    }
}

/// A held slot. Dropping it (also during a panic or when its task is cancelled) frees the slot
/// and hands it to the next waiter.
#[must_use = "the slot is released as soon as the token is dropped"]
pub struct ConcurrencyToken {
    slots: Arc<KeySlots>,
    priority: Priority,
}

impl fmt::Debug for ConcurrencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyToken")
            .field("key", &self.slots.key)
            .field("priority", &self.priority)
            .finish()
    }
}

impl ConcurrencyToken {
    /// The key this slot belongs to.
    pub fn key(&self) -> &SlotKey {
        &self.slots.key
    }

    /// The priority it was requested with.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Releases the slot and counts a success for auto-scaling.
    pub fn success(self) {
        self.slots.record_success();
    }

    /// Releases the slot and counts a failure for auto-scaling.
    pub fn failure(self) {
        self.slots.record_failure();
    }
}

impl Drop for ConcurrencyToken {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// Builder for [`ConcurrencyController`].
#[derive(Debug, Clone)]
pub struct ControllerBuilder {
    limits: HashMap<SlotKey, LimitConfig>,
    default_limit: LimitConfig,
    scaling: Scaling,
    reader: Option<Arc<dyn MemoryReader>>,
    threshold: f64,
    refresh: Duration,
}

impl Default for ControllerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerBuilder {
    /// Seed defaults: Commander 1, Planner/Worker/Reviewer 10, other keys 10; +1 after 3
    /// successes, -1 after 2 failures; memory threshold 80 % re-read every second, no reader.
    pub fn new() -> Self {
        let limits = AgentRole::ALL
            .into_iter()
            .map(|r| (SlotKey::Role(r), LimitConfig::new(r.default_limit())))
            .collect();
        Self {
            limits,
            default_limit: LimitConfig::new(10),
            scaling: Scaling {
                up_after: 3,
                down_after: 2,
            },
            reader: None,
            threshold: 0.8,
            refresh: Duration::from_secs(1),
        }
    }

    /// Sets the limits of one key.
    pub fn limit(mut self, key: impl Into<SlotKey>, limit: LimitConfig) -> Self {
        self.limits.insert(key.into(), limit.normalized());
        self
    }

    /// Limits for keys not configured with [`limit`](Self::limit).
    pub fn default_limit(mut self, limit: LimitConfig) -> Self {
        self.default_limit = limit.normalized();
        self
    }

    /// Consecutive successes before the limit grows (at least 1).
    pub fn scale_up_after(mut self, n: u32) -> Self {
        self.scaling.up_after = n.max(1);
        self
    }

    /// Consecutive failures before the limit shrinks (at least 1).
    pub fn scale_down_after(mut self, n: u32) -> Self {
        self.scaling.down_after = n.max(1);
        self
    }

    /// Enables the memory gate with this reader (e.g. [`crate::SystemMemoryReader`]).
    pub fn memory_reader(mut self, reader: Arc<dyn MemoryReader>) -> Self {
        self.reader = Some(reader);
        self
    }

    /// Memory use (0.0 to 1.0) above which low-priority work is refused.
    pub fn memory_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// How long a memory reading is reused (zero: read on every low-priority request).
    pub fn memory_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// Builds the controller.
    pub fn build(self) -> ConcurrencyController {
        ConcurrencyController {
            keys: RwLock::new(HashMap::new()),
            limits: self.limits,
            default_limit: self.default_limit,
            scaling: self.scaling,
            gate: Arc::new(MemoryGate {
                reader: self.reader,
                threshold: self.threshold,
                refresh: self.refresh,
                cache: Mutex::new(None),
            }),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// Per-key slot limits shared by the whole mission. Keys are created on first use.
#[derive(Debug)]
pub struct ConcurrencyController {
    keys: RwLock<HashMap<SlotKey, Arc<KeySlots>>>,
    limits: HashMap<SlotKey, LimitConfig>,
    default_limit: LimitConfig,
    scaling: Scaling,
    gate: Arc<MemoryGate>,
    closed: std::sync::atomic::AtomicBool,
}

impl Default for ConcurrencyController {
    fn default() -> Self {
        ControllerBuilder::new().build()
    }
}

impl ConcurrencyController {
    /// A controller with the seed defaults (see [`ControllerBuilder::new`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a builder.
    pub fn builder() -> ControllerBuilder {
        ControllerBuilder::new()
    }

    /// The slots of `key`, created with its configured (or the default) limits on first use.
    pub fn slots(&self, key: impl Into<SlotKey>) -> Arc<KeySlots> {
        let key = key.into();
        if let Some(s) = self.keys.read().get(&key) {
            return Arc::clone(s);
        }
        let mut keys = self.keys.write();
        Arc::clone(keys.entry(key).or_insert_with_key(|key| {
            let cfg = self
                .limits
                .get(key)
                .copied()
                .unwrap_or(self.default_limit)
                .normalized();
            Arc::new(KeySlots {
                key: key.clone(),
                floor: cfg.floor,
                cap: cfg.cap,
                scaling: self.scaling,
                gate: Arc::clone(&self.gate),
                inner: Mutex::new(Inner {
                    limit: cfg.initial,
                    closed: self.closed.load(std::sync::atomic::Ordering::Acquire),
                    ..Inner::default()
                }),
            })
        }))
    }

    /// Waits for a slot of `key`; see [`KeySlots::acquire`].
    ///
    /// # Errors
    /// [`AcquireError::MemoryPressure`] (low priority only) or [`AcquireError::Closed`].
    pub async fn acquire(
        &self,
        key: impl Into<SlotKey>,
        priority: Priority,
    ) -> Result<ConcurrencyToken, AcquireError> {
        self.slots(key).acquire(priority).await
    }

    /// Waits at most `timeout` for a slot of `key`.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire), plus [`AcquireError::Timeout`].
    pub async fn acquire_timeout(
        &self,
        key: impl Into<SlotKey>,
        priority: Priority,
        timeout: Duration,
    ) -> Result<ConcurrencyToken, AcquireError> {
        self.slots(key).acquire_timeout(priority, timeout).await
    }

    /// Takes a slot of `key` without waiting.
    ///
    /// # Errors
    /// [`AcquireError::NoSlot`], [`AcquireError::MemoryPressure`] or [`AcquireError::Closed`].
    pub fn try_acquire(
        &self,
        key: impl Into<SlotKey>,
        priority: Priority,
    ) -> Result<ConcurrencyToken, AcquireError> {
        self.slots(key).try_acquire(priority)
    }

    /// Counts a success of `key` for auto-scaling.
    pub fn record_success(&self, key: impl Into<SlotKey>) {
        self.slots(key).record_success();
    }

    /// Counts a failure of `key` for auto-scaling.
    pub fn record_failure(&self, key: impl Into<SlotKey>) {
        self.slots(key).record_failure();
    }

    /// Closes every key (see [`KeySlots::close`]), including keys first used afterwards.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        for s in self.keys.write().values() {
            s.close();
        }
    }

    /// A snapshot of every key in use so far.
    pub fn stats(&self) -> ControllerStats {
        let mut keys: Vec<KeyStats> = self.keys.read().values().map(|s| s.stats()).collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        ControllerStats {
            keys,
            memory_used: self.gate.last(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::FixedMemoryReader;
    use futures::FutureExt;

    fn worker_ctl(cap: usize) -> ConcurrencyController {
        ConcurrencyController::builder()
            .limit(AgentRole::Worker, LimitConfig::new(cap))
            .build()
    }

    #[tokio::test]
    async fn seed_defaults_per_role() {
        let c = ConcurrencyController::new();
        assert_eq!(c.slots(AgentRole::Commander).limit(), 1);
        assert_eq!(c.slots(AgentRole::Worker).limit(), 10);
        assert_eq!(c.slots(SlotKey::Provider("x".into())).limit(), 10);
    }

    #[tokio::test]
    async fn try_acquire_respects_limit_and_drop_releases() {
        let c = worker_ctl(2);
        let a = c.try_acquire(AgentRole::Worker, Priority::Normal).unwrap();
        let _b = c.try_acquire(AgentRole::Worker, Priority::Normal).unwrap();
        let err = c
            .try_acquire(AgentRole::Worker, Priority::High)
            .unwrap_err();
        assert!(
            matches!(
                err,
                AcquireError::NoSlot {
                    limit: 2,
                    in_use: 2,
                    ..
                }
            ),
            "{err}"
        );
        drop(a);
        assert!(c.try_acquire(AgentRole::Worker, Priority::Normal).is_ok());
    }

    #[tokio::test]
    async fn waiters_served_by_priority_then_fifo() {
        let c = worker_ctl(1);
        let s = c.slots(AgentRole::Worker);
        let held = s.try_acquire(Priority::Normal).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for (i, p) in [
            (0, Priority::Low),
            (1, Priority::Normal),
            (2, Priority::High),
            (3, Priority::Normal),
            (4, Priority::High),
        ] {
            let s2 = Arc::clone(&s);
            let order = Arc::clone(&order);
            handles.push(tokio::spawn(async move {
                let t = s2.acquire(p).await.unwrap();
                order.lock().push(i);
                tokio::task::yield_now().await;
                drop(t);
            }));
            // Let each task enqueue before the next one.
            while s.stats().waiting.get(p) == &0 {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![2, 4, 1, 3, 0]);
        assert_eq!(s.in_use(), 0);
    }

    #[tokio::test]
    async fn cancelled_waiter_leaves_queue() {
        let c = worker_ctl(1);
        let s = c.slots(AgentRole::Worker);
        let held = s.try_acquire(Priority::Normal).unwrap();
        let mut fut = Box::pin(s.acquire(Priority::Normal));
        assert!((&mut fut).now_or_never().is_none());
        assert_eq!(s.stats().waiting.normal, 1);
        drop(fut);
        assert_eq!(s.stats().waiting.normal, 0);
        assert_eq!(s.stats().abandoned, 1);
        drop(held);
        assert_eq!(s.in_use(), 0);
    }

    #[tokio::test]
    async fn granted_but_unpolled_waiter_returns_slot_on_drop() {
        let c = worker_ctl(1);
        let s = c.slots(AgentRole::Worker);
        let held = s.try_acquire(Priority::Normal).unwrap();
        let mut fut = Box::pin(s.acquire(Priority::Normal));
        assert!((&mut fut).now_or_never().is_none());
        drop(held); // hands the slot to the waiter
        assert_eq!(s.in_use(), 1);
        drop(fut); // never observed it
        assert_eq!(s.in_use(), 0);
        assert!(s.try_acquire(Priority::Normal).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_timeout_reports_wait() {
        let c = worker_ctl(1);
        let _held = c.try_acquire(AgentRole::Worker, Priority::Normal).unwrap();
        let err = c
            .acquire_timeout(AgentRole::Worker, Priority::High, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            AcquireError::Timeout {
                key: SlotKey::Role(AgentRole::Worker),
                waited: Duration::from_secs(2)
            }
        );
        assert_eq!(c.slots(AgentRole::Worker).stats().waiting.high, 0);
    }

    #[tokio::test]
    async fn autoscale_stays_within_floor_and_cap() {
        let c = ConcurrencyController::builder()
            .limit(
                AgentRole::Worker,
                LimitConfig::new(4).with_initial(2).with_floor(1),
            )
            .build();
        let s = c.slots(AgentRole::Worker);
        for _ in 0..3 {
            s.record_success();
        }
        assert_eq!(s.limit(), 3);
        for _ in 0..30 {
            s.record_success();
        }
        assert_eq!(s.limit(), 4, "never above cap");
        s.record_failure();
        assert_eq!(s.limit(), 4);
        s.record_failure();
        assert_eq!(s.limit(), 3);
        for _ in 0..20 {
            s.record_failure();
        }
        assert_eq!(s.limit(), 1, "never below floor");
        let st = s.stats();
        assert_eq!((st.scale_ups, st.scale_downs), (2, 3));
    }

    #[tokio::test]
    async fn success_interrupts_failure_streak() {
        let c = worker_ctl(4);
        let s = c.slots(AgentRole::Worker);
        s.record_failure();
        s.record_success();
        s.record_failure();
        assert_eq!(s.limit(), 4);
    }

    #[tokio::test]
    async fn scale_up_serves_waiter() {
        let c = ConcurrencyController::builder()
            .limit(AgentRole::Worker, LimitConfig::new(2).with_initial(1))
            .build();
        let s = c.slots(AgentRole::Worker);
        let held = s.try_acquire(Priority::Normal).unwrap();
        let mut fut = Box::pin(s.acquire(Priority::Normal));
        assert!((&mut fut).now_or_never().is_none());
        for _ in 0..3 {
            s.record_success();
        }
        let second = fut.await.unwrap();
        assert_eq!(s.in_use(), 2);
        held.success();
        drop(second);
        assert_eq!(s.in_use(), 0);
    }

    #[tokio::test]
    async fn memory_gate_refuses_only_low_priority() {
        let reader = Arc::new(FixedMemoryReader::new(0.9));
        let c = ConcurrencyController::builder()
            .memory_reader(reader.clone())
            .memory_refresh(Duration::ZERO)
            .build();
        let err = c.try_acquire(AgentRole::Worker, Priority::Low).unwrap_err();
        assert!(matches!(err, AcquireError::MemoryPressure { .. }));
        assert_eq!(
            err.to_string(),
            "memory pressure: 90.0% in use (threshold 80.0%), low-priority work for role:worker refused"
        );
        assert!(c.try_acquire(AgentRole::Worker, Priority::Normal).is_ok());
        reader.set(0.5);
        assert!(c.acquire(AgentRole::Worker, Priority::Low).await.is_ok());
        let st = c.stats();
        assert_eq!(st.keys[0].refused_memory, 1);
        assert_eq!(st.memory_used, Some(0.5));
    }

    #[tokio::test]
    async fn close_wakes_waiters() {
        let c = worker_ctl(1);
        let s = c.slots(AgentRole::Worker);
        let held = s.try_acquire(Priority::Normal).unwrap();
        let waiter = tokio::spawn({
            let s = Arc::clone(&s);
            async move { s.acquire(Priority::Normal).await }
        });
        while s.stats().waiting.normal == 0 {
            tokio::task::yield_now().await;
        }
        c.close();
        assert!(matches!(
            waiter.await.unwrap(),
            Err(AcquireError::Closed { .. })
        ));
        drop(held);
        assert_eq!(s.in_use(), 0);
        assert!(matches!(
            s.try_acquire(Priority::High),
            Err(AcquireError::Closed { .. })
        ));
        let later = c.try_acquire(SlotKey::Model("m".into()), Priority::High);
        assert!(matches!(later, Err(AcquireError::Closed { .. })));
    }
}
