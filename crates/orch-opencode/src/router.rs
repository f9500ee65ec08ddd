//! One event stream, many subscribers.
//!
//! The router owns the SSE connection of one directory (OpenCode 1: `GET /event`), or of a
//! whole server (OpenCode 2: `GET /api/event`, every directory), decodes each event's envelope once
//! ([`RawEvent`]) and hands it to the subscribers that want it: those of the event's session,
//! and those subscribed to everything, each filtered by a [`KindSet`].
//!
//! **Slow subscribers.** Every subscriber has a bounded buffer (`RouterConfig::buffer`,
//! default 1024). The router never waits for a subscriber: when a buffer is full the event is
//! dropped *for that subscriber only*, and the next event that fits is preceded by
//! [`Missed::Lagged`] with the number of events lost, in stream order (the notice takes no
//! buffer space). Memory stays bounded whatever a subscriber does.
//!
//! **Batches.** The events of one network chunk are decoded first, then routed under one
//! lock; a subscriber waiting on an empty buffer is woken once per chunk, after routing, not
//! once per event.
//!
//! **OpenCode 2.** A router made by [`EventRouter::connect_v2`] reads `data`/`durable`
//! envelopes ([`RawEvent::parse_v2`]), filters with [`crate::v2::KindSet`]
//! ([`EventRouter::subscribe_v2`]) and drops **durable replays**: an event whose
//! `(durable.aggregateID, durable.seq)` is not above the last one routed for that aggregate
//! is counted in [`RouterStats::duplicates`] and delivered to nobody (`seq` has holes, so a
//! jump is not reported as a loss). Its heartbeats are SSE comments every 15 s, so silence is
//! measured from the last byte. A stream the server fails (its
//! `effect/http-api/stream/failure` event: a slow consumer overflowed) is a disconnect
//! ([`DisconnectReason::Failed`]).
//!
//! **Reconnects.** When the stream ends, errors or stays silent for longer than
//! `RouterConfig::silence` (OpenCode sends a heartbeat every 10 s), subscribers receive
//! [`Missed::Disconnected`]; the router reconnects with exponential backoff (100 ms … 5 s,
//! jittered) and sends [`Missed::Reconnected`]. OpenCode has no replay, so either signal
//! means "re-read the state you care about" ([`crate::TurnWaiter`] does so, and polls
//! while the stream is down).
//!
//! **Turns.** [`EventRouter::turn`], [`EventRouter::run_turn`] and [`EventRouter::wait_idle`]
//! subscribe a [`TurnWaiter`] to a session's turn kinds (see [`crate::TurnWaiter`] for the
//! completion recipe).
//!
//! **Decoding.** The body is framed by [`SseDecoder`] (zero-copy for events inside one
//! chunk). An event whose data is not UTF-8 or not an event envelope is counted in
//! [`RouterStats::malformed`] and skipped; an event larger than `RouterConfig::max_event_size`
//! drops the connection (subscribers are told, as for any disconnect).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;
use hashbrown::HashMap;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use tokio::time::Instant;

use crate::client::Client;
use crate::error::Error;
use crate::event::{EventKind, KindSet, RawEvent};
use crate::generation::Generation;
use crate::ids::{MessageId, SessionId};
use crate::sse::{DEFAULT_MAX_EVENT_SIZE, SseDecoder};
use crate::types::Prompt;
use crate::wait::{TurnError, TurnOutput, TurnWaiter};

/// Settings of an [`EventRouter`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RouterConfig {
    /// Buffer of each subscriber, in deliveries (default 1024).
    pub buffer: usize,
    /// A stream silent for this long is considered dead (default 30 s; heartbeats come every
    /// 10 s).
    pub silence: Duration,
    /// First reconnect delay (default 100 ms).
    pub reconnect_min: Duration,
    /// Largest reconnect delay (default 5 s).
    pub reconnect_max: Duration,
    /// How long [`EventRouter::connect`] waits for the first `server.connected` (default 10 s).
    pub connect_timeout: Duration,
    /// Largest SSE line or event data accepted, in bytes (default
    /// [`DEFAULT_MAX_EVENT_SIZE`], 64 MiB). A larger event drops the connection, which is
    /// then reopened.
    pub max_event_size: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            buffer: 1024,
            silence: Duration::from_secs(30),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
        }
    }
}

/// What a subscriber receives.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Delivery {
    /// An event.
    Event(RawEvent),
    /// Events may have been missed: re-read the state you depend on.
    Missed(Missed),
}

/// Why events may have been missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Missed {
    /// This subscriber's buffer was full; `dropped` events were discarded for it.
    Lagged {
        /// How many.
        dropped: u64,
    },
    /// The stream dropped; the router is reconnecting.
    Disconnected,
    /// The stream is back (events published in between are lost).
    Reconnected,
}

/// Connection state of the router's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamState {
    /// Not connected yet.
    Connecting,
    /// Connected (the server's `server.connected` was received).
    Connected,
    /// Down; reconnecting. Carries why.
    Disconnected(DisconnectReason),
    /// The router was shut down.
    Closed,
}

/// Why the router's stream is down.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server refused the credentials (HTTP 401): reconnecting cannot help until they
    /// change.
    Unauthorized {
        /// The event stream's URL.
        url: String,
    },
    /// The stream could not be opened.
    Connect {
        /// The error.
        message: String,
    },
    /// The open stream failed (a read error, or an event over the size limit).
    Stream {
        /// The error.
        message: String,
    },
    /// The server ended the stream.
    Ended,
    /// No event (not even a heartbeat) for this long.
    Silent(Duration),
    /// The server failed the stream (OpenCode 2 sends `effect/http-api/stream/failure` when
    /// a slow consumer overflows its buffer).
    Failed {
        /// What the failure event said.
        message: String,
    },
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized { url } => write!(f, "unauthorized: {url}"),
            Self::Connect { message } => f.write_str(message),
            Self::Stream { message } => write!(f, "event stream error: {message}"),
            Self::Ended => f.write_str("event stream ended"),
            Self::Silent(after) => write!(f, "no event (not even a heartbeat) for {after:?}"),
            Self::Failed { message } => write!(f, "the server failed the stream: {message}"),
        }
    }
}

/// Counters of a router.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Events published to the router.
    pub published: u64,
    /// Deliveries dropped because a subscriber's buffer was full.
    pub dropped: u64,
    /// Payloads that were not valid event envelopes.
    pub malformed: u64,
    /// Successful (re)connections.
    pub connections: u64,
    /// OpenCode 2 durable events dropped as replays (not above the last `seq` of their
    /// aggregate).
    pub duplicates: u64,
}

/// What travels through a subscriber's channel: a delivery plus the number of deliveries
/// dropped for this subscriber just before it (reported as [`Missed::Lagged`] first, so lag
/// notices never take buffer space and always arrive in stream order). Drops after the last
/// queued delivery are reported on their own once the buffer is drained.
struct Item {
    lagged: u64,
    delivery: Delivery,
}

/// A subscriber's buffer, shared by its [`Slot`] (router side) and its [`Subscription`].
///
/// The receiver takes the whole buffer at once (one lock per batch, not per delivery) into
/// its own local queue; `taken - consumed` is what it holds there and still counts against
/// the capacity, so the bound is the same as if it took one delivery at a time.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    /// Deliveries the receiver consumed from its local queue (written by the receiver only).
    consumed: AtomicU64,
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Item>,
    /// The receiver, when it found the buffer empty.
    waker: Option<Waker>,
    /// The slot is gone (router shut down): the receiver ends once the buffer is drained.
    closed: bool,
    /// Deliveries dropped since the last one queued: reported with the next one queued, or
    /// on their own as soon as the receiver has drained the buffer (so a subscriber whose
    /// session falls silent still learns that it missed something).
    dropped: u64,
    /// Deliveries the receiver moved to its local queue, in all.
    taken: u64,
}

impl QueueState {
    /// The lag notice owed to a receiver that drained the buffer.
    fn take_lag(&mut self) -> Option<Item> {
        let dropped = std::mem::take(&mut self.dropped);
        (dropped > 0).then_some(Item {
            lagged: 0,
            delivery: Delivery::Missed(Missed::Lagged { dropped }),
        })
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Plain data; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Slot {
    id: u64,
    queue: Arc<Queue>,
    capacity: usize,
    mask: u64,
    /// Deliveries routed in the current batch, offered at its end under one lock.
    staged: Vec<Delivery>,
}

impl Slot {
    /// Offers the staged deliveries, in order, without ever blocking; returns how many were
    /// dropped (buffer full). A receiver waiting on the empty buffer is handed to `wake`.
    fn flush(&mut self, wake: &mut impl FnMut(Waker)) -> u64 {
        let mut q = self.queue.lock();
        // What the receiver holds locally (a stale `consumed` only overestimates it).
        let held = q
            .taken
            .saturating_sub(self.queue.consumed.load(Ordering::Acquire));
        let held = usize::try_from(held).unwrap_or(usize::MAX);
        let mut dropped = 0;
        for delivery in self.staged.drain(..) {
            if q.items.len().saturating_add(held) >= self.capacity {
                q.dropped += 1;
                dropped += 1;
            } else {
                let lagged = std::mem::take(&mut q.dropped);
                q.items.push_back(Item { lagged, delivery });
            }
        }
        // With room (or a zero capacity) the receiver may be waiting on an empty buffer.
        let waiting = q.waker.take();
        drop(q);
        if let Some(w) = waiting {
            wake(w);
        }
        dropped
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut q = self.queue.lock();
        q.closed = true;
        let waiting = q.waker.take();
        drop(q);
        if let Some(w) = waiting {
            w.wake();
        }
    }
}

/// The subscribers: slots in a slab, indexed by session and for the catch-all ones.
#[derive(Default)]
struct Registry {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    by_session: HashMap<Box<str>, Vec<usize>>,
    all: Vec<usize>,
    /// Slots with staged deliveries.
    touched: Vec<usize>,
    /// Scratch: the slots the event being routed goes to.
    targets: Vec<usize>,
    /// The last durable `seq` routed per aggregate (OpenCode 2).
    last_seq: HashMap<Box<str>, u64>,
    /// Durable events dropped as replays.
    duplicates: u64,
}

impl Registry {
    fn insert(&mut self, slot: Slot) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        }
    }

    fn slot(&mut self, i: usize) -> Option<&mut Slot> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// Stages `delivery` for slot `i`.
    fn stage(&mut self, i: usize, delivery: Delivery) {
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if slot.staged.is_empty() {
            self.touched.push(i);
        }
        slot.staged.push(delivery);
    }

    /// Offers every staged delivery; returns how many were dropped.
    fn flush(&mut self, wake: &mut impl FnMut(Waker)) -> u64 {
        let mut dropped = 0;
        let mut touched = std::mem::take(&mut self.touched);
        for i in touched.drain(..) {
            if let Some(slot) = self.slot(i) {
                dropped += slot.flush(wake);
            }
        }
        self.touched = touched;
        dropped
    }
}

/// Where a connected router reads its stream from.
#[derive(Clone, Debug)]
enum Source {
    V1(Client),
    V2(crate::v2::Client),
}

impl Source {
    fn generation(&self) -> Generation {
        match self {
            Source::V1(_) => Generation::V1,
            Source::V2(_) => Generation::V2,
        }
    }

    async fn open(&self) -> Result<reqwest::Response, DisconnectReason> {
        match self {
            Source::V1(c) => c.open_event_stream().await.map_err(|e| match e {
                Error::Unauthorized { url } => DisconnectReason::Unauthorized { url },
                e => DisconnectReason::Connect {
                    message: e.to_string(),
                },
            }),
            Source::V2(c) => c.open_event_stream().await.map_err(|e| match e {
                crate::v2::Error::Unauthorized { url } => DisconnectReason::Unauthorized { url },
                e => DisconnectReason::Connect {
                    message: e.to_string(),
                },
            }),
        }
    }
}

/// The SSE event type OpenCode 2 (Effect's HTTP API) sends when it fails a stream.
const STREAM_FAILURE: &str = "effect/http-api/stream/failure";

struct Shared {
    registry: Mutex<Registry>,
    state: watch::Sender<StreamState>,
    next_id: AtomicU64,
    published: AtomicU64,
    dropped: AtomicU64,
    malformed: AtomicU64,
    connections: AtomicU64,
    config: RouterConfig,
    source: Option<Source>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, event: RawEvent) {
        self.published.fetch_add(1, Ordering::Relaxed);
        let mut reg = self.lock();
        route(&mut reg, event);
        let dropped = reg.flush(&mut Waker::wake);
        drop(reg);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Routes `events` in order under one lock, offers each subscriber its share under one
    /// lock of its buffer, then wakes each waiting receiver once.
    fn publish_batch(&self, events: &mut Vec<RawEvent>, wakers: &mut Vec<Waker>) {
        self.published
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let mut reg = self.lock();
        for event in events.drain(..) {
            route(&mut reg, event);
        }
        let dropped = reg.flush(&mut |w| wakers.push(w));
        drop(reg);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
        for w in wakers.drain(..) {
            w.wake();
        }
    }

    fn broadcast(&self, missed: Missed) {
        let mut reg = self.lock();
        let mut dropped = 0;
        for slot in reg.slots.iter_mut().flatten() {
            slot.staged.push(Delivery::Missed(missed));
            dropped += slot.flush(&mut Waker::wake);
        }
        drop(reg);
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    fn close(&self) {
        let mut reg = self.lock();
        reg.by_session.clear();
        reg.all.clear();
        reg.touched.clear();
        reg.free.clear();
        let slots = std::mem::take(&mut reg.slots);
        drop(reg);
        drop(slots);
        self.state.send_replace(StreamState::Closed);
    }
}

/// Stages `event` for its session's subscribers and the catch-all ones (the last one gets
/// the event itself, the others a clone). A durable OpenCode 2 event not above its
/// aggregate's last `seq` is a replay: counted and dropped.
fn route(reg: &mut Registry, event: RawEvent) {
    if let Some(seq) = event.seq()
        && let Some(aggregate) = event.aggregate_id()
    {
        match reg.last_seq.get_mut(aggregate) {
            Some(last) if seq <= *last => {
                reg.duplicates += 1;
                return;
            }
            Some(last) => *last = seq,
            None => {
                reg.last_seq.insert(aggregate.into(), seq);
            }
        }
        if event.kind_v2() == crate::v2::EventKind::SessionDeleted {
            reg.last_seq.remove(aggregate);
        }
    }
    let bit = event.route_bit();
    let mut targets = std::mem::take(&mut reg.targets);
    targets.clear();
    let wanted = |slots: &[Option<Slot>], i: usize| {
        slots
            .get(i)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.mask & bit != 0)
    };
    if let Some(sid) = event.session_id()
        && let Some(ids) = reg.by_session.get(sid)
    {
        targets.extend(ids.iter().copied().filter(|&i| wanted(&reg.slots, i)));
    }
    targets.extend(reg.all.iter().copied().filter(|&i| wanted(&reg.slots, i)));
    if let Some((&last, rest)) = targets.split_last() {
        for &i in rest {
            reg.stage(i, Delivery::Event(event.clone()));
        }
        reg.stage(last, Delivery::Event(event));
    }
    reg.targets = targets;
}

/// Cancels the stream task when the last [`EventRouter`] handle goes away.
struct TaskGuard(CancellationToken);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Serves many subscribers from one `/event` stream. Cheap to clone; the stream task stops
/// when the last clone is dropped (subscriptions then end).
#[derive(Clone)]
pub struct EventRouter {
    shared: Arc<Shared>,
    _guard: Arc<TaskGuard>,
}

impl fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventRouter")
            .field("state", &*self.shared.state.borrow())
            .field("stats", &self.stats())
            .finish()
    }
}

impl EventRouter {
    /// Opens the event stream of `client`'s directory on the current Tokio runtime and waits
    /// (at most `config.connect_timeout`) until the server confirmed the subscription with
    /// `server.connected`, so that nothing published afterwards is missed.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for wrong credentials, otherwise the last connection error
    /// when the stream could not be opened in time.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn connect(client: Client, config: RouterConfig) -> Result<Self, Error> {
        let router = Self::spawn(client.clone(), config);
        let timeout = router.shared.config.connect_timeout;
        if router.connected_within(timeout).await {
            return Ok(router);
        }
        // Report the real reason with one direct attempt.
        match client.open_event_stream().await {
            Err(e) => Err(e),
            Ok(_) => Err(Error::Timeout {
                url: client.url(&["event"]).to_string(),
                timeout,
            }),
        }
    }

    /// Opens the event stream of an OpenCode 2 server (`GET /api/event`: every directory)
    /// and waits (at most `config.connect_timeout`) for `server.connected`.
    ///
    /// # Errors
    /// [`crate::v2::Error::Unauthorized`] for wrong credentials, otherwise the last
    /// connection error when the stream could not be opened in time.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn connect_v2(
        client: crate::v2::Client,
        config: RouterConfig,
    ) -> Result<Self, crate::v2::Error> {
        let router = Self::spawn_v2(client.clone(), config);
        let timeout = router.shared.config.connect_timeout;
        if router.connected_within(timeout).await {
            return Ok(router);
        }
        match client.open_event_stream().await {
            Err(e) => Err(e),
            Ok(_) => Err(crate::v2::Error::Timeout {
                url: client.url(&["api", "event"]).to_string(),
                timeout,
            }),
        }
    }

    /// Whether the stream is confirmed within `timeout` (`false` at once on refused
    /// credentials).
    async fn connected_within(&self, timeout: Duration) -> bool {
        let mut state = self.shared.state.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                match &*state.borrow_and_update() {
                    StreamState::Connected => return Ok(()),
                    StreamState::Disconnected(DisconnectReason::Unauthorized { .. }) => {
                        return Err(());
                    }
                    _ => {}
                }
                if state.changed().await.is_err() {
                    return Err(());
                }
            }
        })
        .await;
        matches!(waited, Ok(Ok(())))
    }

    /// Starts the stream task without waiting for the connection.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn(client: Client, config: RouterConfig) -> Self {
        Self::spawn_source(Source::V1(client), config)
    }

    /// Starts the stream task of an OpenCode 2 server without waiting for the connection.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn_v2(client: crate::v2::Client, config: RouterConfig) -> Self {
        Self::spawn_source(Source::V2(client), config)
    }

    fn spawn_source(source: Source, config: RouterConfig) -> Self {
        let cancel = CancellationToken::new();
        let router = Self::build(Some(source.clone()), config, cancel.clone());
        let shared = Arc::clone(&router.shared);
        tokio::spawn(run(shared, source, cancel));
        router
    }

    /// A router without a connection: events come only from [`EventRouter::publish`]
    /// (replays, tests, benchmarks).
    pub fn detached(config: RouterConfig) -> Self {
        Self::build(None, config, CancellationToken::new())
    }

    fn build(source: Option<Source>, config: RouterConfig, cancel: CancellationToken) -> Self {
        let (state, _) = watch::channel(StreamState::Connecting);
        Self {
            shared: Arc::new(Shared {
                registry: Mutex::new(Registry::default()),
                state,
                next_id: AtomicU64::new(1),
                published: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                malformed: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                config,
                source,
            }),
            _guard: Arc::new(TaskGuard(cancel)),
        }
    }

    /// The client the router was connected with (`None` for a detached router and for an
    /// OpenCode 2 router: see [`EventRouter::client_v2`]).
    pub fn client(&self) -> Option<&Client> {
        match &self.shared.source {
            Some(Source::V1(c)) => Some(c),
            _ => None,
        }
    }

    /// The OpenCode 2 client the router was connected with ([`EventRouter::connect_v2`]).
    pub fn client_v2(&self) -> Option<&crate::v2::Client> {
        match &self.shared.source {
            Some(Source::V2(c)) => Some(c),
            _ => None,
        }
    }

    /// The generation of the server the router reads (`None` for a detached router).
    pub fn generation(&self) -> Option<Generation> {
        self.shared.source.as_ref().map(Source::generation)
    }

    /// Subscribes to every event of `session` (all kinds).
    pub fn subscribe_session(&self, session: &str) -> Subscription {
        self.subscribe_session_filtered(session, KindSet::ALL)
    }

    /// Subscribes to the events of `session` whose kind is in `kinds`.
    pub fn subscribe_session_filtered(&self, session: &str, kinds: KindSet) -> Subscription {
        self.subscribe_session_mask(session, kinds.bits())
    }

    /// Subscribes to every event of the directory (all sessions, and events without one).
    pub fn subscribe_all(&self) -> Subscription {
        self.subscribe_all_filtered(KindSet::ALL)
    }

    /// Subscribes to every event whose kind is in `kinds`.
    pub fn subscribe_all_filtered(&self, kinds: KindSet) -> Subscription {
        self.subscribe_all_mask(kinds.bits())
    }

    /// Subscribes to the OpenCode 2 events of `session` whose kind is in `kinds`
    /// ([`crate::v2::KindSet::ALL`] for all).
    pub fn subscribe_v2(&self, session: &str, kinds: crate::v2::KindSet) -> Subscription {
        self.subscribe_session_mask(session, kinds.bits())
    }

    /// Subscribes to every OpenCode 2 event (all sessions, all directories) whose kind is in
    /// `kinds`.
    pub fn subscribe_all_v2(&self, kinds: crate::v2::KindSet) -> Subscription {
        self.subscribe_all_mask(kinds.bits())
    }

    fn subscribe_session_mask(&self, session: &str, mask: u64) -> Subscription {
        self.new_slot(Some(session.into()), mask)
    }

    fn subscribe_all_mask(&self, mask: u64) -> Subscription {
        self.new_slot(None, mask)
    }

    fn new_slot(&self, key: Option<Box<str>>, mask: u64) -> Subscription {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::default());
        let slot = Slot {
            id,
            queue: Arc::clone(&queue),
            capacity: self.shared.config.buffer.max(1),
            mask,
            staged: Vec::new(),
        };
        let mut reg = self.shared.lock();
        let index = reg.insert(slot);
        match &key {
            Some(session) => reg
                .by_session
                .entry(session.clone())
                .or_default()
                .push(index),
            None => reg.all.push(index),
        }
        drop(reg);
        Subscription {
            id,
            index,
            key,
            queue,
            local: VecDeque::new(),
            consumed: 0,
            stash: None,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Routes one event to its subscribers, never blocking (see the module docs for the
    /// policy when a subscriber is full).
    pub fn publish(&self, event: RawEvent) {
        self.shared.publish(event);
    }

    /// Parses one SSE `data` payload and routes it; malformed payloads are counted and
    /// skipped.
    pub fn publish_json(&self, data: String) {
        publish_data(&self.shared, data, Generation::V1);
    }

    /// Parses one OpenCode 2 SSE `data` payload ([`RawEvent::parse_v2`]) and routes it;
    /// malformed payloads are counted and skipped.
    pub fn publish_json_v2(&self, data: String) {
        publish_data(&self.shared, data, Generation::V2);
    }

    /// Current connection state.
    pub fn state(&self) -> StreamState {
        self.shared.state.borrow().clone()
    }

    /// A receiver of connection-state changes.
    pub fn watch_state(&self) -> watch::Receiver<StreamState> {
        self.shared.state.subscribe()
    }

    /// Counters.
    pub fn stats(&self) -> RouterStats {
        RouterStats {
            published: self.shared.published.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            malformed: self.shared.malformed.load(Ordering::Relaxed),
            connections: self.shared.connections.load(Ordering::Relaxed),
            duplicates: self.shared.lock().duplicates,
        }
    }

    /// Subscribes to `session` for the turn whose user message is `message`. Call this
    /// **before** `prompt_async`, then [`TurnWaiter::wait`].
    ///
    /// # Panics
    /// On a detached router (it has no client to read messages with).
    pub fn turn(&self, session: &SessionId, message: &MessageId) -> TurnWaiter {
        let client = self
            .client()
            .cloned()
            .expect("EventRouter::turn needs a connected router (not EventRouter::detached)");
        self.turn_with_client(&client, session, message)
    }

    /// Like [`EventRouter::turn`], reading state through `client`. On a detached router
    /// (no stream) the waiter relies on polling alone.
    pub fn turn_with_client(
        &self,
        client: &Client,
        session: &SessionId,
        message: &MessageId,
    ) -> TurnWaiter {
        let kinds = KindSet::turn().with(EventKind::PermissionReplied);
        TurnWaiter::new(
            client.clone(),
            session.clone(),
            message.clone(),
            self.subscribe_session_filtered(session.as_str(), kinds),
            self.watch_state(),
        )
    }

    /// Waits for the end of the turn started by user message `message` in `session`, at the
    /// latest until `deadline`. Safe to call after `prompt_async`: it first re-reads the
    /// session over HTTP in case the turn progressed before the subscription existed.
    ///
    /// # Errors
    /// See [`TurnError`].
    ///
    /// # Panics
    /// On a detached router, as [`EventRouter::turn`].
    pub async fn wait_idle(
        &self,
        session: &SessionId,
        message: &MessageId,
        deadline: Instant,
    ) -> Result<TurnOutput, TurnError> {
        self.turn(session, message).late().wait(deadline).await
    }

    /// Subscribes, sends `prompt` with `prompt_async`, and waits for the turn's end. To
    /// follow OpenCode's retries live, or to answer permissions meanwhile, use
    /// [`EventRouter::turn`] and [`TurnWaiter::notify_retries`] instead.
    ///
    /// # Errors
    /// See [`TurnError`]; a failing `prompt_async` is [`TurnError::Client`].
    ///
    /// # Panics
    /// On a detached router, as [`EventRouter::turn`].
    pub async fn run_turn(
        &self,
        session: &SessionId,
        prompt: &Prompt,
        deadline: Instant,
    ) -> Result<TurnOutput, TurnError> {
        let waiter = self.turn(session, &prompt.message_id);
        waiter.client().prompt_async(session, prompt).await?;
        waiter.wait(deadline).await
    }
}

impl EventRouter {
    /// Subscribes to `session` for the OpenCode 2 turn of our input `message`. Call this
    /// **before** [`crate::v2::Client::prompt`], then [`crate::v2::TurnWaiter::wait`].
    ///
    /// # Panics
    /// On a router not made by [`EventRouter::connect_v2`] / [`EventRouter::spawn_v2`] (use
    /// [`EventRouter::turn_v2_with_client`]).
    pub fn turn_v2(&self, session: &SessionId, message: &MessageId) -> crate::v2::TurnWaiter {
        let client = self
            .client_v2()
            .cloned()
            .expect("EventRouter::turn_v2 needs a router made by connect_v2 or spawn_v2");
        self.turn_v2_with_client(&client, session, message)
    }

    /// Like [`EventRouter::turn_v2`], reading state through `client`. On a detached router
    /// (no stream) the waiter relies on polling alone.
    pub fn turn_v2_with_client(
        &self,
        client: &crate::v2::Client,
        session: &SessionId,
        message: &MessageId,
    ) -> crate::v2::TurnWaiter {
        crate::v2::TurnWaiter::new(
            client.clone(),
            session.clone(),
            message.clone(),
            self.subscribe_v2(session.as_str(), crate::v2::KindSet::turn()),
            self.watch_state(),
        )
    }

    /// Waits for the end of the OpenCode 2 turn of our input `message` in `session`, at the
    /// latest until `deadline`. Safe to call after the prompt (even long after the turn
    /// ended): it first reads the turn's state over HTTP.
    ///
    /// # Errors
    /// See [`crate::v2::TurnError`].
    ///
    /// # Panics
    /// As [`EventRouter::turn_v2`].
    pub async fn wait_turn_v2(
        &self,
        session: &SessionId,
        message: &MessageId,
        deadline: Instant,
    ) -> Result<crate::v2::TurnOutput, crate::v2::TurnError> {
        self.turn_v2(session, message).late().wait(deadline).await
    }

    /// Subscribes, sends `prompt` (re-sent with the same id after a transport error: the
    /// server admits it once), and waits for the turn's end. To follow retries live or
    /// answer permissions meanwhile, use [`EventRouter::turn_v2`].
    ///
    /// # Errors
    /// See [`crate::v2::TurnError`]; a failing prompt is [`crate::v2::TurnError::Client`].
    ///
    /// # Panics
    /// As [`EventRouter::turn_v2`].
    pub async fn run_turn_v2(
        &self,
        session: &SessionId,
        prompt: &crate::v2::Prompt,
        deadline: Instant,
    ) -> Result<crate::v2::TurnOutput, crate::v2::TurnError> {
        let waiter = self.turn_v2(session, &prompt.id);
        waiter.client().prompt_resending(session, prompt, 3).await?;
        waiter.wait(deadline).await
    }
}

/// A stream of [`Delivery`]s for one subscriber. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    /// The slot's index in the registry.
    index: usize,
    key: Option<Box<str>>,
    queue: Arc<Queue>,
    /// Deliveries taken from the shared buffer in one go, handed out one by one.
    local: VecDeque<Item>,
    /// Deliveries handed out of `local`, in all (published to `queue.consumed`).
    consumed: u64,
    stash: Option<Delivery>,
    shared: Arc<Shared>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("session", &self.key)
            .field("queued", &self.len())
            .finish()
    }
}

impl Subscription {
    /// The next delivery; `None` once the router is shut down.
    pub async fn recv(&mut self) -> Option<Delivery> {
        if let Some(d) = self.stash.take() {
            return Some(d);
        }
        // Deliveries already taken from the shared buffer cost no lock and no budget: the
        // budget is charged once per batch taken (below).
        let item = match self.pop_local() {
            Some(item) => item,
            None => std::future::poll_fn(|cx| self.poll_item(cx)).await?,
        };
        Some(self.unpack(item))
    }

    /// The next item of the local queue.
    #[inline]
    fn pop_local(&mut self) -> Option<Item> {
        let item = self.local.pop_front()?;
        self.consumed += 1;
        // Single writer: a plain store is enough (the router only reads it).
        self.queue.consumed.store(self.consumed, Ordering::Release);
        Some(item)
    }

    /// Takes the whole shared buffer (or the lag notice owed once it is drained), under one
    /// lock. `Err(closed)` when there is nothing.
    fn refill(&mut self, q: &mut QueueState) -> Result<Item, bool> {
        if !q.items.is_empty() {
            // `local` is empty: the two buffers swap, so neither allocates again.
            std::mem::swap(&mut q.items, &mut self.local);
            q.taken += self.local.len() as u64;
            return self.pop_local().ok_or(false);
        }
        q.take_lag().ok_or(q.closed)
    }

    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        // Take part in Tokio's cooperative budget, as its channels do.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        if let Some(item) = self.pop_local() {
            coop.made_progress();
            return Poll::Ready(Some(item));
        }
        let queue = Arc::clone(&self.queue);
        let mut q = queue.lock();
        match self.refill(&mut q) {
            Ok(item) => {
                coop.made_progress();
                Poll::Ready(Some(item))
            }
            Err(true) => {
                coop.made_progress();
                Poll::Ready(None)
            }
            Err(false) => {
                match &mut q.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    waiting => *waiting = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The next delivery if one is queued; never waits.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        if let Some(d) = self.stash.take() {
            return Some(d);
        }
        let item = match self.pop_local() {
            Some(item) => item,
            None => {
                let queue = Arc::clone(&self.queue);
                let mut q = queue.lock();
                self.refill(&mut q).ok()?
            }
        };
        Some(self.unpack(item))
    }

    fn unpack(&mut self, item: Item) -> Delivery {
        if item.lagged > 0 {
            self.stash = Some(item.delivery);
            Delivery::Missed(Missed::Lagged {
                dropped: item.lagged,
            })
        } else {
            item.delivery
        }
    }

    /// Deliveries waiting in the buffer.
    pub fn len(&self) -> usize {
        self.queue.lock().items.len() + self.local.len() + usize::from(self.stash.is_some())
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut reg = self.shared.lock();
        // The slot is ours only if the router was not shut down (and the index reused) since.
        if reg.slot(self.index).is_none_or(|s| s.id != self.id) {
            return;
        }
        match &self.key {
            Some(key) => {
                if let Some(slots) = reg.by_session.get_mut(key) {
                    slots.retain(|&i| i != self.index);
                    if slots.is_empty() {
                        reg.by_session.remove(key);
                    }
                }
            }
            None => {
                let index = self.index;
                reg.all.retain(|&i| i != index);
            }
        }
        let slot = reg.slots.get_mut(self.index).and_then(Option::take);
        reg.free.push(self.index);
        drop(reg);
        drop(slot);
    }
}

/// Decodes the envelope of one SSE event; `None` (counted as malformed) when its data is not
/// an event.
fn parse_sse(shared: &Shared, data: &[u8], generation: Generation) -> Option<RawEvent> {
    let parsed = crate::sse::utf8(data)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            match generation {
                Generation::V1 => RawEvent::parse_str(text),
                Generation::V2 => RawEvent::parse_v2_str(text),
            }
            .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(raw) => Some(raw),
        Err(e) => {
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "skipping malformed event");
            None
        }
    }
}

fn publish_data(shared: &Shared, data: String, generation: Generation) -> Option<EventKind> {
    let parsed = match generation {
        Generation::V1 => RawEvent::parse(data),
        Generation::V2 => RawEvent::parse_v2(data),
    };
    match parsed {
        Ok(raw) => {
            let kind = raw.kind();
            shared.publish(raw);
            Some(kind)
        }
        Err(e) => {
            shared.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(error = %e, "skipping malformed event");
            None
        }
    }
}

async fn run(shared: Arc<Shared>, source: Source, cancel: CancellationToken) {
    let config = shared.config.clone();
    let generation = source.generation();
    // OpenCode 2's heartbeats are SSE comments, which the decoder does not report: any byte
    // proves the stream alive there.
    let bytes_are_life = generation == Generation::V2;
    let backoff_builder = backon::ExponentialBuilder::default()
        .with_min_delay(config.reconnect_min)
        .with_max_delay(config.reconnect_max)
        .with_jitter()
        .without_max_times();
    let mut backoff = backoff_builder.build();
    let mut was_connected = false;
    loop {
        let opened = tokio::select! {
            () = cancel.cancelled() => break,
            r = source.open() => r,
        };
        let reason = match opened {
            Err(reason) => reason,
            Ok(resp) => {
                let mut body = resp.bytes_stream();
                let mut decoder = SseDecoder::with_max_event_size(config.max_event_size);
                let mut confirmed = false;
                let mut batch = Vec::new();
                let mut wakers = Vec::new();
                // Silence is measured from the last event (not the last byte).
                let mut deadline = tokio::time::Instant::now() + config.silence;
                let reason = loop {
                    let next = tokio::select! {
                        () = cancel.cancelled() => {
                            shared.close();
                            return;
                        }
                        n = tokio::time::timeout_at(deadline, body.next()) => n,
                    };
                    match next {
                        Ok(Some(Ok(chunk))) => {
                            let alive = bytes_are_life && !chunk.is_empty();
                            decoder.push(chunk);
                            let mut events = 0usize;
                            let mut failure = None;
                            let mut failure_event = None;
                            while let Some(next) = decoder.next_raw() {
                                let ev = match next {
                                    Ok(ev) => ev,
                                    Err(e) => {
                                        failure = Some(e);
                                        break;
                                    }
                                };
                                events += 1;
                                let data = decoder.raw_data(&ev);
                                if generation == Generation::V2 && ev.event_is(STREAM_FAILURE) {
                                    failure_event = Some(
                                        std::str::from_utf8(data)
                                            .unwrap_or("(not UTF-8)")
                                            .to_owned(),
                                    );
                                    break;
                                }
                                let Some(raw) = parse_sse(&shared, data, generation) else {
                                    continue;
                                };
                                if confirmed {
                                    batch.push(raw);
                                } else {
                                    // The first event (server.connected) proves the
                                    // server-side subscription exists; it is routed alone,
                                    // and the reconnection announced before what follows.
                                    shared.publish(raw);
                                    confirmed = true;
                                    shared.connections.fetch_add(1, Ordering::Relaxed);
                                    backoff = backoff_builder.build();
                                    if was_connected {
                                        shared.broadcast(Missed::Reconnected);
                                    }
                                    was_connected = true;
                                    shared.state.send_replace(StreamState::Connected);
                                }
                            }
                            if !batch.is_empty() {
                                shared.publish_batch(&mut batch, &mut wakers);
                            }
                            if events > 0 || alive {
                                deadline = tokio::time::Instant::now() + config.silence;
                            }
                            if let Some(message) = failure_event {
                                break DisconnectReason::Failed { message };
                            }
                            if let Some(e) = failure {
                                break DisconnectReason::Stream {
                                    message: e.to_string(),
                                };
                            }
                        }
                        Ok(Some(Err(e))) => {
                            break DisconnectReason::Stream {
                                message: e.to_string(),
                            };
                        }
                        Ok(None) => break DisconnectReason::Ended,
                        Err(_) => break DisconnectReason::Silent(config.silence),
                    }
                };
                if confirmed {
                    shared.broadcast(Missed::Disconnected);
                }
                reason
            }
        };
        tracing::debug!(%reason, "opencode event stream down; reconnecting");
        shared.state.send_replace(StreamState::Disconnected(reason));
        let delay = backoff.next().unwrap_or(config.reconnect_max);
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    shared.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(session: &str, kind: &str) -> RawEvent {
        RawEvent::parse(format!(
            r#"{{"type":"{kind}","properties":{{"sessionID":"{session}"}}}}"#
        ))
        .unwrap()
    }

    fn drain(sub: &mut Subscription) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = sub.try_recv() {
            out.push(match d {
                Delivery::Event(e) => format!("{}:{}", e.session_id().unwrap_or("-"), e.kind_str()),
                Delivery::Missed(m) => format!("{m:?}"),
            });
        }
        out
    }

    #[test]
    fn session_subscribers_get_only_their_session() {
        let router = EventRouter::detached(RouterConfig::default());
        let mut a = router.subscribe_session("ses_a");
        let mut b = router.subscribe_session("ses_b");
        let mut all = router.subscribe_all();
        router.publish(ev("ses_a", "session.status"));
        router.publish(ev("ses_b", "session.idle"));
        router.publish(ev("ses_a", "session.idle"));
        assert_eq!(
            drain(&mut a),
            ["ses_a:session.status", "ses_a:session.idle"]
        );
        assert_eq!(drain(&mut b), ["ses_b:session.idle"]);
        assert_eq!(drain(&mut all).len(), 3);
    }

    #[test]
    fn kind_filter_applies() {
        let router = EventRouter::detached(RouterConfig::default());
        let mut a =
            router.subscribe_session_filtered("ses_a", KindSet::of(&[EventKind::SessionIdle]));
        router.publish(ev("ses_a", "message.part.delta"));
        router.publish(ev("ses_a", "session.idle"));
        assert_eq!(drain(&mut a), ["ses_a:session.idle"]);
    }

    #[test]
    fn full_buffer_drops_then_reports_lag_in_order() {
        let config = RouterConfig {
            buffer: 2,
            ..RouterConfig::default()
        };
        let router = EventRouter::detached(config);
        let mut slow = router.subscribe_session("ses_a");
        let mut fast = router.subscribe_session("ses_a");
        for kind in ["e1", "e2", "e3", "e4"] {
            router.publish(ev("ses_a", kind));
            let _ = fast.try_recv();
        }
        assert_eq!(router.stats().dropped, 2);
        // The lag is reported once the buffer is drained, without waiting for a later event.
        assert_eq!(
            drain(&mut slow),
            ["ses_a:e1", "ses_a:e2", "Lagged { dropped: 2 }"]
        );
        router.publish(ev("ses_a", "e5"));
        assert_eq!(drain(&mut slow), ["ses_a:e5"]);
        // A drop while the receiver has not drained yet is reported before the next event.
        for kind in ["e6", "e7", "e8"] {
            router.publish(ev("ses_a", kind));
        }
        assert!(matches!(slow.try_recv(), Some(Delivery::Event(e)) if e.kind_str() == "e6"));
        router.publish(ev("ses_a", "e9"));
        assert_eq!(
            drain(&mut slow),
            ["ses_a:e7", "Lagged { dropped: 1 }", "ses_a:e9"]
        );
    }

    #[test]
    fn dropping_a_subscription_unregisters_it() {
        let router = EventRouter::detached(RouterConfig::default());
        let sub = router.subscribe_session("ses_a");
        drop(sub);
        assert!(router.shared.lock().by_session.is_empty());
        let all = router.subscribe_all();
        drop(all);
        assert!(router.shared.lock().all.is_empty());
    }

    /// A server whose `i`-th `/event` connection gets `bodies[i]` (the last one repeated), one
    /// write per chunk, then stays open.
    async fn serve(bodies: Vec<Vec<&'static [u8]>>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let chunks = bodies[n.min(bodies.len() - 1)].clone();
                n += 1;
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                    sock.write_all(head.as_bytes()).await.unwrap();
                    for chunk in chunks {
                        sock.write_all(chunk).await.unwrap();
                        sock.flush().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        url
    }

    async fn next(sub: &mut Subscription) -> String {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .expect("a delivery in time")
            .expect("router alive");
        match d {
            Delivery::Event(e) => format!("{}:{}", e.session_id().unwrap_or("-"), e.kind_str()),
            Delivery::Missed(m) => format!("{m:?}"),
        }
    }

    const CONNECTED: &[u8] =
        b"data: {\"id\":\"evt_0\",\"type\":\"server.connected\",\"properties\":{}}\n\n";

    #[tokio::test]
    async fn stream_edge_cases_reach_subscribers_and_bad_events_are_counted() {
        let url = serve(vec![vec![
            b"\xEF\xBB",
            b"\xBF: hello\r\ndata: {\"id\":\"evt_0\",\"type\":\"server.connected\",\"properties\":{}}\r",
            b"\n\r\n",
            // Multi-line data, joined with `\n` (JSON whitespace): the parser's path.
            b"data: {\"type\":\"session.status\",\ndata: \"properties\":{\"sessionID\":\"ses_a\",\"status\":{\"type\":\"busy\"}}}\n\n",
            b"data: \xFF\xFE\n\n: heartbeat\n\ndata: not json\n\n",
            b"event: x\rid: 3\rdata: {\"id\":\"evt_2\",\"type\":\"session.idle\",\"prop",
            b"erties\":{\"sessionID\":\"ses_a\"}}\r\r",
        ]])
        .await;
        let client = Client::builder(&url).build().unwrap();
        let router = EventRouter::spawn(client, RouterConfig::default());
        let mut a = router.subscribe_session("ses_a");
        assert_eq!(next(&mut a).await, "ses_a:session.status");
        assert_eq!(next(&mut a).await, "ses_a:session.idle");
        let stats = router.stats();
        assert_eq!(
            (stats.published, stats.malformed, stats.connections),
            (3, 2, 1)
        );
        assert_eq!(router.state(), StreamState::Connected);
        // The last handle gone, the stream task stops and subscriptions end.
        drop(router);
        let end = tokio::time::timeout(Duration::from_secs(10), a.recv()).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
    }

    #[tokio::test]
    async fn an_oversized_event_drops_the_connection_and_subscribers_are_told() {
        let big: &'static [u8] = Box::leak(
            format!(
                "data: {{\"type\":\"x\",\"properties\":{{\"pad\":\"{}\"}}}}\n\n",
                "y".repeat(400)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let url = serve(vec![
            vec![CONNECTED, b"data: {\"id\":\"evt_1\",\"type\":\"session.idle\",\"properties\":{\"sessionID\":\"ses_a\"}}\n\n", big],
            vec![CONNECTED, b"data: {\"id\":\"evt_3\",\"type\":\"session.status\",\"properties\":{\"sessionID\":\"ses_a\",\"status\":{\"type\":\"idle\"}}}\n\n"],
        ])
        .await;
        let config = RouterConfig {
            max_event_size: 256,
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(20),
            ..RouterConfig::default()
        };
        let client = Client::builder(&url).build().unwrap();
        // Subscribed before the task first runs: nothing is missed.
        let router = EventRouter::spawn(client, config);
        let mut a = router.subscribe_session("ses_a");
        let seen = [
            next(&mut a).await,
            next(&mut a).await,
            next(&mut a).await,
            next(&mut a).await,
        ];
        assert_eq!(
            seen,
            [
                "ses_a:session.idle",
                "Disconnected",
                "Reconnected",
                "ses_a:session.status"
            ]
        );
        assert_eq!(router.stats().connections, 2);
    }

    #[tokio::test]
    async fn refused_credentials_are_a_typed_state_and_fail_connect_at_once() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = sock.read(&mut buf).await;
                    let reply = "HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Basic realm=\"x\"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        let client = Client::builder(&url).build().unwrap();
        let router = EventRouter::spawn(client.clone(), RouterConfig::default());
        let mut state = router.watch_state();
        let seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let StreamState::Disconnected(reason) = &*state.borrow_and_update() {
                    return reason.clone();
                }
                state.changed().await.unwrap();
            }
        })
        .await
        .expect("a disconnected state");
        assert!(
            matches!(&seen, DisconnectReason::Unauthorized { url } if url.ends_with("/event")),
            "{seen:?}"
        );
        assert!(seen.to_string().starts_with("unauthorized: "), "{seen}");
        // `connect` gives up on the typed state, not at its (here one hour) timeout.
        let config = RouterConfig {
            connect_timeout: Duration::from_secs(3600),
            ..RouterConfig::default()
        };
        let connected = tokio::time::timeout(
            Duration::from_secs(60),
            EventRouter::connect(client, config),
        )
        .await
        .expect("connect returns without waiting for its timeout");
        assert!(
            matches!(connected, Err(Error::Unauthorized { .. })),
            "{connected:?}"
        );
    }

    fn ev2(session: &str, kind: &str, seq: Option<u64>) -> RawEvent {
        let durable = seq
            .map(|n| format!(r#","durable":{{"aggregateID":"{session}","seq":{n},"version":1}}"#))
            .unwrap_or_default();
        RawEvent::parse_v2(format!(
            r#"{{"id":"evt_x","type":"{kind}","data":{{"sessionID":"{session}"}}{durable}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn v2_durable_replays_are_dropped_and_counted_per_aggregate() {
        let router = EventRouter::detached(RouterConfig::default());
        let mut a = router.subscribe_v2("ses_a", crate::v2::KindSet::ALL);
        let mut b = router.subscribe_v2("ses_b", crate::v2::KindSet::ALL);
        router.publish(ev2("ses_a", "session.execution.started", Some(2)));
        router.publish(ev2("ses_a", "session.execution.started", Some(2)));
        router.publish(ev2("ses_b", "session.execution.started", Some(1)));
        router.publish(ev2("ses_a", "session.text.delta", None));
        router.publish(ev2("ses_a", "session.step.started", Some(1)));
        router.publish(ev2("ses_a", "session.execution.succeeded", Some(5)));
        assert_eq!(
            drain(&mut a),
            [
                "ses_a:session.execution.started",
                "ses_a:session.text.delta",
                "ses_a:session.execution.succeeded"
            ]
        );
        assert_eq!(drain(&mut b), ["ses_b:session.execution.started"]);
        assert_eq!(router.stats().duplicates, 2);
        // A deleted aggregate is forgotten.
        router.publish(ev2("ses_a", "session.deleted", Some(6)));
        assert!(!router.shared.lock().last_seq.contains_key("ses_a"));
    }

    #[test]
    fn v2_kind_sets_filter_v2_events() {
        use crate::v2::{EventKind as K2, KindSet as Set2};
        let router = EventRouter::detached(RouterConfig::default());
        let mut ends = router.subscribe_v2("ses_a", Set2::of(&[K2::ExecutionSucceeded]));
        let mut all = router.subscribe_all_v2(Set2::turn());
        router.publish(ev2("ses_a", "session.text.delta", None));
        router.publish(ev2("ses_a", "session.execution.started", Some(1)));
        router.publish(ev2("ses_a", "session.execution.succeeded", Some(2)));
        assert_eq!(drain(&mut ends), ["ses_a:session.execution.succeeded"]);
        assert_eq!(
            drain(&mut all),
            [
                "ses_a:session.execution.started",
                "ses_a:session.execution.succeeded"
            ]
        );
    }

    const CONNECTED_V2: &[u8] =
        b": heartbeat\n\ndata: {\"id\":\"evt_0\",\"type\":\"server.connected\",\"data\":{}}\n\n";

    #[tokio::test]
    async fn a_v2_stream_the_server_fails_is_a_disconnect_then_a_reconnect() {
        let url = serve(vec![
            vec![
                CONNECTED_V2,
                b"data: {\"id\":\"evt_1\",\"type\":\"session.execution.started\",\"data\":{\"sessionID\":\"ses_a\"},\"durable\":{\"aggregateID\":\"ses_a\",\"seq\":1,\"version\":1}}\n\n",
                b"event: effect/http-api/stream/failure\ndata: [{\"_tag\":\"Fail\",\"error\":\"overflow\"}]\n\n",
            ],
            vec![
                CONNECTED_V2,
                // A replay of what was already routed is dropped; the new event is not.
                b"data: {\"id\":\"evt_1\",\"type\":\"session.execution.started\",\"data\":{\"sessionID\":\"ses_a\"},\"durable\":{\"aggregateID\":\"ses_a\",\"seq\":1,\"version\":1}}\n\n",
                b"data: {\"id\":\"evt_2\",\"type\":\"session.execution.succeeded\",\"data\":{\"sessionID\":\"ses_a\"},\"durable\":{\"aggregateID\":\"ses_a\",\"seq\":2,\"version\":1}}\n\n",
            ],
        ])
        .await;
        let config = RouterConfig {
            reconnect_min: Duration::from_millis(10),
            reconnect_max: Duration::from_millis(20),
            ..RouterConfig::default()
        };
        let client = crate::v2::Client::builder(&url).build().unwrap();
        let router = EventRouter::spawn_v2(client, config);
        assert_eq!(router.generation(), Some(Generation::V2));
        let mut a = router.subscribe_v2("ses_a", crate::v2::KindSet::ALL);
        let mut states = router.watch_state();
        let seen = [
            next(&mut a).await,
            next(&mut a).await,
            next(&mut a).await,
            next(&mut a).await,
        ];
        assert_eq!(
            seen,
            [
                "ses_a:session.execution.started",
                "Disconnected",
                "Reconnected",
                "ses_a:session.execution.succeeded"
            ]
        );
        let stats = router.stats();
        assert_eq!((stats.connections, stats.duplicates), (2, 1));
        // The failure was recorded as the reason of the disconnect.
        let _ = states.borrow_and_update();
        assert_eq!(router.state(), StreamState::Connected);
    }

    #[tokio::test]
    async fn v2_comment_heartbeats_keep_a_quiet_stream_alive() {
        let heartbeats: Vec<&'static [u8]> = std::iter::once(CONNECTED_V2)
            .chain(std::iter::repeat_n(&b": heartbeat\n\n"[..], 120))
            .chain(std::iter::once(
                &b"data: {\"id\":\"evt_1\",\"type\":\"session.execution.started\",\"data\":{\"sessionID\":\"ses_a\"}}\n\n"[..],
            ))
            .collect();
        let url = serve(vec![heartbeats]).await;
        let config = RouterConfig {
            silence: Duration::from_millis(300),
            ..RouterConfig::default()
        };
        let client = crate::v2::Client::builder(&url).build().unwrap();
        let router = EventRouter::spawn_v2(client, config);
        let mut a = router.subscribe_v2("ses_a", crate::v2::KindSet::ALL);
        // 120 comments 5 ms apart outlast the 300 ms silence: only bytes kept it open.
        assert_eq!(next(&mut a).await, "ses_a:session.execution.started");
        assert_eq!(router.stats().connections, 1);
    }

    proptest::proptest! {
        /// Whatever the interleaving and buffer size, a subscriber sees its own session's
        /// events in order, and every event is either delivered or counted in a Lagged.
        #[test]
        fn deliveries_are_ordered_and_accounted(
            seq in proptest::collection::vec((0usize..4, proptest::bool::ANY), 1..200),
            buffer in 1usize..8,
        ) {
            let router = EventRouter::detached(RouterConfig { buffer, ..RouterConfig::default() });
            let mut subs: Vec<Subscription> = (0..4).map(|i| router.subscribe_session(&format!("ses_{i}"))).collect();
            let mut sent = [0u64; 4];
            let mut seen = [0u64; 4];
            let mut last = [0u64; 4];
            for (i, read) in seq {
                sent[i] += 1;
                router.publish(ev(&format!("ses_{i}"), &format!("n{}", sent[i])));
                if read {
                    for (j, sub) in subs.iter_mut().enumerate() {
                        while let Some(d) = sub.try_recv() {
                            match d {
                                Delivery::Event(e) => {
                                    let n: u64 = e.kind_str()[1..].parse().unwrap();
                                    proptest::prop_assert!(n > last[j]);
                                    last[j] = n;
                                    seen[j] += 1;
                                }
                                Delivery::Missed(Missed::Lagged { dropped }) => seen[j] += dropped,
                                Delivery::Missed(_) => {}
                            }
                        }
                    }
                }
            }
            // Flush: one drain accounts for everything (a lag notice is owed to no one).
            for (j, sub) in subs.iter_mut().enumerate() {
                while let Some(d) = sub.try_recv() {
                    match d {
                        Delivery::Event(_) => seen[j] += 1,
                        Delivery::Missed(Missed::Lagged { dropped }) => seen[j] += dropped,
                        Delivery::Missed(_) => {}
                    }
                }
                proptest::prop_assert_eq!(seen[j], sent[j]);
            }
        }
    }
}
