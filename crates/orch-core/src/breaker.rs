//! Lock-free circuit breaker with a pluggable clock, and a per-key registry of breakers.
//!
//! The whole state is one `AtomicU64`: two tag bits (closed, open, half-open) and a payload
//! (the time it opened, or the half-open probe and success counts). A call in the closed state
//! costs one atomic load and nothing on success; only failures touch the failure ring, and only
//! the open state reads the clock.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::clock::{Clock, MonotonicClock};

const TAG_SHIFT: u32 = 62;
const TAG_OPEN: u64 = 1 << TAG_SHIFT;
const TAG_HALF: u64 = 2 << TAG_SHIFT;
const PAYLOAD: u64 = (1 << TAG_SHIFT) - 1;
const CLOSED: u64 = 0;
// Half-open payload: probes in flight (bits 0..16), successes (16..32), epoch (32..62). The
// epoch tells a late probe from an earlier half-open period apart from a current one.
const PROBES: u64 = 0xFFFF;
const SUCC_SHIFT: u32 = 16;
const EPOCH_SHIFT: u32 = 32;
const EPOCH_MASK: u64 = (1 << 30) - 1;

fn successes_of(w: u64) -> u64 {
    (w >> SUCC_SHIFT) & 0xFFFF
}

fn epoch_of(w: u64) -> u64 {
    (w >> EPOCH_SHIFT) & EPOCH_MASK
}

/// Settings of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker (seed: 5).
    pub failure_threshold: u32,
    /// The window those failures must fall in (default 60 s).
    pub window: Duration,
    /// How long the breaker stays open before letting a probe through (seed: 30 s).
    pub recovery: Duration,
    /// Probe successes in a row that close it again (seed: 2).
    pub success_threshold: u32,
    /// Probes allowed in flight at once while half-open (default 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            window: Duration::from_secs(60),
            recovery: Duration::from_secs(30),
            success_threshold: 2,
            half_open_probes: 1,
        }
    }
}

/// The observable state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are rejected until `retry_in` has passed.
    Open {
        /// Time left before a probe is allowed.
        retry_in: Duration,
    },
    /// A limited number of probes go through.
    HalfOpen {
        /// Probe successes so far.
        successes: u32,
        /// Probes in flight.
        in_flight: u32,
    },
}

/// A call the breaker refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {name} is open{}", retry_in.map(|d| format!(", retry in {d:?}")).unwrap_or_else(|| ", probe in flight".to_owned()))]
#[non_exhaustive]
pub struct Rejected {
    /// The breaker's name (its key in a registry).
    pub name: Arc<str>,
    /// Time until a probe will be allowed; `None` while half-open with every probe slot taken.
    pub retry_in: Option<Duration>,
}

/// Error of [`CircuitBreaker::call`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker refused the call; the operation did not run.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The operation ran and failed.
    #[error("{0}")]
    Inner(E),
}

impl<E> BreakerError<E> {
    /// The operation's own error, if it ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            BreakerError::Inner(e) => Some(e),
            BreakerError::Rejected(_) => None,
        }
    }
}

/// A circuit breaker for one provider, model or endpoint.
pub struct CircuitBreaker {
    state: AtomicU64,
    ring: Box<[AtomicU64]>,
    head: AtomicUsize,
    epoch: AtomicU64,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    name: Arc<str>,
    trips: AtomicU64,
    rejections: AtomicU64,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl CircuitBreaker {
    /// A breaker on the real monotonic clock.
    pub fn new(name: impl Into<String>, config: BreakerConfig) -> Self {
        Self::with_clock(name, config, Arc::new(MonotonicClock::new()))
    }

    /// A breaker on `clock` (e.g. a [`crate::ManualClock`] in tests).
    pub fn with_clock(
        name: impl Into<String>,
        config: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            half_open_probes: config.half_open_probes.clamp(1, PROBES as u32),
            success_threshold: config.success_threshold.clamp(1, 0xFFFF),
            ..config
        };
        let ring = (0..config.failure_threshold)
            .map(|_| AtomicU64::new(0))
            .collect();
        Self {
            state: AtomicU64::new(CLOSED),
            ring,
            head: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            config,
            clock,
            name: Arc::from(name.into()),
            trips: AtomicU64::new(0),
            rejections: AtomicU64::new(0),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Times it opened.
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Calls it rejected.
    pub fn rejections(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }

    /// Current state (reads the clock when open).
    pub fn state(&self) -> BreakerState {
        let w = self.state.load(Ordering::Acquire);
        match w & !PAYLOAD {
            TAG_OPEN => {
                let elapsed = nanos(self.clock.now()).saturating_sub(w & PAYLOAD);
                BreakerState::Open {
                    retry_in: self
                        .config
                        .recovery
                        .saturating_sub(Duration::from_nanos(elapsed)),
                }
            }
            TAG_HALF => BreakerState::HalfOpen {
                successes: successes_of(w) as u32,
                in_flight: (w & PROBES) as u32,
            },
            _ => BreakerState::Closed,
        }
    }

    /// Asks to make a call. Record its outcome on the permit; a permit dropped unrecorded
    /// counts as neither success nor failure.
    ///
    /// # Errors
    /// [`Rejected`] while open, or while half-open with every probe slot taken.
    #[inline]
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_>, Rejected> {
        let w = self.state.load(Ordering::Acquire);
        if w == CLOSED {
            return Ok(BreakerPermit {
                breaker: self,
                probe: None,
                done: false,
            });
        }
        self.acquire_slow(w)
    }

    #[cold]
    fn acquire_slow(&self, mut w: u64) -> Result<BreakerPermit<'_>, Rejected> {
        loop {
            let next = match w & !PAYLOAD {
                CLOSED => {
                    return Ok(BreakerPermit {
                        breaker: self,
                        probe: None,
                        done: false,
                    });
                }
                TAG_OPEN => {
                    let now = nanos(self.clock.now());
                    let elapsed = now.saturating_sub(w & PAYLOAD);
                    let recovery = nanos(self.config.recovery);
                    if elapsed < recovery {
                        return Err(self.reject(Some(Duration::from_nanos(recovery - elapsed))));
                    }
                    let epoch = (self.epoch.fetch_add(1, Ordering::Relaxed) + 1) & EPOCH_MASK;
                    TAG_HALF | (epoch << EPOCH_SHIFT) | 1
                }
                _ => {
                    if (w & PROBES) >= u64::from(self.config.half_open_probes) {
                        return Err(self.reject(None));
                    }
                    w + 1
                }
            };
            match self
                .state
                .compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    let probe = Some(epoch_of(next));
                    return Ok(BreakerPermit {
                        breaker: self,
                        probe,
                        done: false,
                    });
                }
                Err(cur) => w = cur,
            }
        }
    }

    fn reject(&self, retry_in: Option<Duration>) -> Rejected {
        self.rejections.fetch_add(1, Ordering::Relaxed);
        Rejected {
            name: Arc::clone(&self.name),
            retry_in,
        }
    }

    fn on_failure(&self, probe: Option<u64>) {
        let now = nanos(self.clock.now()) & PAYLOAD;
        if let Some(epoch) = probe {
            let mut w = self.state.load(Ordering::Acquire);
            while w & !PAYLOAD == TAG_HALF && epoch_of(w) == epoch {
                match self.state.compare_exchange_weak(
                    w,
                    TAG_OPEN | now,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        self.trips.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(breaker = %self.name, "probe failed; circuit re-opened");
                        return;
                    }
                    Err(cur) => w = cur,
                }
            }
            return;
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            return;
        }
        let n = self.ring.len();
        let idx = self.head.fetch_add(1, Ordering::AcqRel);
        self.ring[idx % n].store(now + 1, Ordering::Release);
        // The slot written `n - 1` failures ago is the next one to be overwritten.
        let oldest = self.ring[(idx + 1) % n].load(Ordering::Acquire);
        if oldest != 0
            && now + 1 - oldest.min(now + 1) <= nanos(self.config.window)
            && self
                .state
                .compare_exchange(CLOSED, TAG_OPEN | now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.trips.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(breaker = %self.name, failures = n, "circuit opened");
        }
    }

    fn on_success(&self, probe: Option<u64>) {
        let Some(epoch) = probe else { return };
        let mut w = self.state.load(Ordering::Acquire);
        while w & !PAYLOAD == TAG_HALF && epoch_of(w) == epoch {
            let successes = successes_of(w) + 1;
            let next = if successes >= u64::from(self.config.success_threshold) {
                CLOSED
            } else {
                TAG_HALF
                    | (epoch << EPOCH_SHIFT)
                    | (successes << SUCC_SHIFT)
                    | ((w & PROBES).saturating_sub(1))
            };
            match self
                .state
                .compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if next == CLOSED {
                        for slot in self.ring.iter() {
                            slot.store(0, Ordering::Release);
                        }
                        tracing::info!(breaker = %self.name, "circuit closed");
                    }
                    return;
                }
                Err(cur) => w = cur,
            }
        }
    }

    fn on_abandon(&self, probe: Option<u64>) {
        let Some(epoch) = probe else { return };
        let mut w = self.state.load(Ordering::Acquire);
        while w & !PAYLOAD == TAG_HALF && epoch_of(w) == epoch && w & PROBES > 0 {
            match self
                .state
                .compare_exchange_weak(w, w - 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(cur) => w = cur,
            }
        }
    }

    /// Runs `f` through the breaker; any `Err` counts as a failure.
    ///
    /// # Errors
    /// [`BreakerError::Rejected`] without running `f`, or `f`'s own error.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(|_| true, f).await
    }

    /// Runs `f` through the breaker; an `Err` counts as a failure only if `is_failure` says so
    /// (a session error is the caller's fault, not the provider's).
    ///
    /// # Errors
    /// [`BreakerError::Rejected`] without running `f`, or `f`'s own error.
    pub async fn call_with<T, E, F, Fut, P>(
        &self,
        is_failure: P,
        f: F,
    ) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: FnOnce(&E) -> bool,
    {
        let permit = self.try_acquire()?;
        permit.settle(f().await, is_failure)
    }

    /// Blocking version of [`call`](Self::call) for synchronous code.
    ///
    /// # Errors
    /// [`BreakerError::Rejected`] without running `f`, or `f`'s own error.
    #[inline]
    pub fn call_sync<T, E, F>(&self, f: F) -> Result<T, BreakerError<E>>
    where
        F: FnOnce() -> Result<T, E>,
    {
        let permit = self.try_acquire()?;
        permit.settle(f(), |_| true)
    }
}

/// Permission for one call. Record the outcome with [`success`](Self::success) or
/// [`failure`](Self::failure); dropping it unrecorded frees a half-open probe slot without
/// counting anything.
#[must_use = "record the call's outcome on the permit"]
#[derive(Debug)]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    /// The half-open epoch, for a probe.
    probe: Option<u64>,
    done: bool,
}

impl BreakerPermit<'_> {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Records a success.
    #[inline]
    pub fn success(mut self) {
        self.done = true;
        self.breaker.on_success(self.probe);
    }

    /// Records a failure.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.on_failure(self.probe);
    }

    #[inline]
    fn settle<T, E>(
        self,
        r: Result<T, E>,
        is_failure: impl FnOnce(&E) -> bool,
    ) -> Result<T, BreakerError<E>> {
        match r {
            Ok(v) => {
                self.success();
                Ok(v)
            }
            Err(e) => {
                if is_failure(&e) {
                    self.failure();
                } else {
                    self.success();
                }
                Err(BreakerError::Inner(e))
            }
        }
    }
}

impl Drop for BreakerPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.breaker.on_abandon(self.probe);
        }
    }
}

/// One breaker per key (provider, model), created on first use with shared settings.
pub struct CircuitBreakers<K> {
    map: RwLock<HashMap<K, Arc<CircuitBreaker>>>,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
}

impl<K: fmt::Debug> fmt::Debug for CircuitBreakers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakers")
            .field("breakers", &*self.map.read())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> CircuitBreakers<K> {
    /// A registry on the real clock.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, Arc::new(MonotonicClock::new()))
    }

    /// A registry whose breakers all use `clock`.
    pub fn with_clock(config: BreakerConfig, clock: Arc<dyn Clock>) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            config,
            clock,
        }
    }

    /// The breaker of `key` (keep the `Arc` to skip the lookup).
    pub fn get<Q>(&self, key: &Q) -> Arc<CircuitBreaker>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(b) = self.map.read().get(key) {
            return Arc::clone(b);
        }
        let key = key.to_owned();
        let mut map = self.map.write();
        Arc::clone(map.entry(key).or_insert_with_key(|k| {
            Arc::new(CircuitBreaker::with_clock(
                k.to_string(),
                self.config,
                Arc::clone(&self.clock),
            ))
        }))
    }

    /// State of every breaker created so far.
    pub fn states(&self) -> Vec<(K, BreakerState)> {
        self.map
            .read()
            .iter()
            .map(|(k, b)| (k.clone(), b.state()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn breaker() -> (CircuitBreaker, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (
            CircuitBreaker::with_clock("p", BreakerConfig::default(), clock.clone()),
            clock,
        )
    }

    fn fail(b: &CircuitBreaker) {
        b.try_acquire().unwrap().failure();
    }

    #[test]
    fn opens_after_threshold_failures_in_window() {
        let (b, clock) = breaker();
        for _ in 0..4 {
            fail(&b);
            clock.advance(Duration::from_secs(1));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(
            b.state(),
            BreakerState::Open {
                retry_in: Duration::from_secs(30)
            }
        );
        let err = b.try_acquire().unwrap_err();
        assert_eq!(err.retry_in, Some(Duration::from_secs(30)));
        assert_eq!(err.to_string(), "circuit breaker p is open, retry in 30s");
        assert_eq!((b.trips(), b.rejections()), (1, 1));
    }

    #[test]
    fn failures_spread_beyond_window_do_not_open() {
        let (b, clock) = breaker();
        for _ in 0..20 {
            fail(&b);
            clock.advance(Duration::from_secs(16));
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_admits_one_probe_and_closes_after_two_successes() {
        let (b, clock) = breaker();
        for _ in 0..5 {
            fail(&b);
        }
        clock.advance(Duration::from_secs(29));
        assert!(b.try_acquire().is_err());
        clock.advance(Duration::from_secs(1));
        let probe = b.try_acquire().unwrap();
        assert!(probe.is_probe());
        assert_eq!(
            b.try_acquire().unwrap_err().retry_in,
            None,
            "one probe at a time"
        );
        probe.success();
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                successes: 1,
                in_flight: 0
            }
        );
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
        // Old failures were forgotten: four more do not reopen it.
        for _ in 0..4 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failed_probe_reopens_for_full_recovery() {
        let (b, clock) = breaker();
        for _ in 0..5 {
            fail(&b);
        }
        clock.advance(Duration::from_secs(30));
        b.try_acquire().unwrap().failure();
        assert_eq!(
            b.state(),
            BreakerState::Open {
                retry_in: Duration::from_secs(30)
            }
        );
        assert_eq!(b.trips(), 2);
    }

    #[test]
    fn abandoned_probe_frees_its_slot() {
        let (b, clock) = breaker();
        for _ in 0..5 {
            fail(&b);
        }
        clock.advance(Duration::from_secs(30));
        drop(b.try_acquire().unwrap());
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                successes: 0,
                in_flight: 0
            }
        );
        assert!(b.try_acquire().unwrap().is_probe());
    }

    #[tokio::test]
    async fn call_with_ignores_non_failures() {
        let (b, _clock) = breaker();
        for _ in 0..10 {
            let r: Result<(), _> = b
                .call_with(|_: &&str| false, || async { Err("session") })
                .await;
            assert_eq!(r, Err(BreakerError::Inner("session")));
        }
        assert_eq!(b.state(), BreakerState::Closed);
        for _ in 0..5 {
            let _ = b.call(|| async { Err::<(), _>("net") }).await;
        }
        let r = b.call(|| async { Ok::<_, &str>(1) }).await;
        assert!(matches!(r, Err(BreakerError::Rejected(_))));
    }

    #[test]
    fn registry_keeps_one_breaker_per_key() {
        let clock = Arc::new(ManualClock::new());
        let reg: CircuitBreakers<String> =
            CircuitBreakers::with_clock(BreakerConfig::default(), clock);
        for _ in 0..5 {
            reg.get("anthropic").try_acquire().unwrap().failure();
        }
        assert!(reg.get("anthropic").try_acquire().is_err());
        assert!(reg.get("openai").try_acquire().is_ok());
        assert!(Arc::ptr_eq(&reg.get("openai"), &reg.get("openai")));
        assert_eq!(reg.states().len(), 2);
    }
}
