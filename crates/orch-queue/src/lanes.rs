//! The async affinity lane scheduler.
//!
//! A [`LaneScheduler`] owns one queue per lane; each [`Lane`] is consumed by one async task
//! (an agent session, say) calling [`Lane::next`]. A task pushed with affinity keys goes to the
//! lane recorded for its keys (the lane that last ran one of them: warm context); otherwise to
//! the least-loaded lane. A lane with nothing of its own steals the **oldest** task from the
//! **busiest** lane, so no consumer idles while another has a backlog.
//!
//! Throughput needs are those of agent work (thousands of tasks per second at most), so the
//! state is one `Mutex`, never held across an `.await`; wakers are woken after unlocking.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Rejected};

/// Identifies a lane (`0..lanes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneId(usize);

impl LaneId {
    /// The lane's position, `0..lanes`.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for LaneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lane-{}", self.0)
    }
}

/// Identifies a task pushed on a [`LaneScheduler`] (unique per scheduler, increasing in push
/// order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneTaskId(u64);

impl LaneTaskId {
    /// The raw sequence number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Order in which a lane's consumer takes its own tasks. Thieves always take the oldest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LaneOrder {
    /// Oldest first (the default): predictable for long agent turns, where warmth comes from
    /// the lane placement rather than from cache recency.
    #[default]
    Fifo,
    /// Newest first (Chase-Lev owner order): a follow-up runs while its context is hottest;
    /// older tasks rely on thieves when the lane stays busy.
    Lifo,
}

/// Why a task was queued where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// One of its keys was recorded for that lane (it ran there last, or an earlier task
    /// with the key was placed there).
    Warm,
    /// No key was recorded (or the task had none): least-loaded lane.
    Cold,
}

/// How a lane obtained a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From its own queue.
    Own,
    /// Stolen from the front (oldest end) of another lane's queue.
    Stolen {
        /// The lane the task was queued on.
        from: LaneId,
    },
}

/// A task handed to a lane by [`Lane::next`].
///
/// The lane is considered busy with it until its consumer calls `next` again.
#[derive(Debug)]
#[non_exhaustive]
pub struct Assigned<K, T> {
    /// The task's id from the push.
    pub id: LaneTaskId,
    /// The task itself.
    pub task: T,
    /// The affinity keys it was pushed with (now recorded for this lane).
    pub keys: Vec<K>,
    /// The lane that runs it.
    pub lane: LaneId,
    /// Where the push put it.
    pub placement: Placement,
    /// Own queue or stolen.
    pub origin: Origin,
}

impl<K, T> Assigned<K, T> {
    /// True when the task was placed on a warm lane and runs there (not stolen).
    pub fn ran_warm(&self) -> bool {
        self.placement == Placement::Warm && self.origin == Origin::Own
    }

    /// Takes the task out.
    pub fn into_task(self) -> T {
        self.task
    }
}

/// Counters of one lane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneCounters {
    /// Tasks this lane took (own and stolen).
    pub taken: u64,
    /// Tasks placed warm on this lane and taken by it.
    pub warm_hits: u64,
    /// Tasks this lane stole from others.
    pub stolen_in: u64,
    /// Tasks other lanes stole from this one.
    pub stolen_out: u64,
    /// Tasks queued on this lane now.
    pub queued: usize,
    /// Whether the lane's consumer holds a task now.
    pub busy: bool,
    /// Whether the lane still takes work.
    pub open: bool,
}

/// A snapshot of a scheduler's statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaneStats {
    /// One entry per lane.
    pub lanes: Vec<LaneCounters>,
    /// Tasks accepted by `push*`.
    pub pushed: u64,
    /// Accepted tasks that carried at least one key.
    pub keyed: u64,
    /// Tasks placed on a warm lane.
    pub warm_placed: u64,
    /// Warm-placed tasks already taken by some lane (denominator of the warm-hit ratio).
    pub warm_taken: u64,
    /// Tasks moved to another lane because their lane closed.
    pub requeued: u64,
    /// Idle polls that looked for a victim (successful or not).
    pub steal_attempts: u64,
}

impl LaneStats {
    /// Successful steals over all lanes.
    pub fn steals(&self) -> u64 {
        self.lanes.iter().map(|l| l.stolen_in).sum()
    }

    /// Fraction of taken warm-placed tasks that ran on their warm lane (1.0 when none).
    pub fn warm_hit_ratio(&self) -> f64 {
        let hits: u64 = self.lanes.iter().map(|l| l.warm_hits).sum();
        if self.warm_taken == 0 {
            1.0
        } else {
            hits as f64 / self.warm_taken as f64
        }
    }
}

/// A scheduler and the consumer handles of its lanes, as returned by
/// [`LaneSchedulerBuilder::build`].
pub type LaneSet<K, T> = (LaneScheduler<K, T>, Vec<Lane<K, T>>);

/// Configures a [`LaneScheduler`].
#[derive(Debug, Clone)]
pub struct LaneSchedulerBuilder {
    lanes: usize,
    order: LaneOrder,
    steal_threshold: usize,
}

impl LaneSchedulerBuilder {
    /// `lanes` lanes, FIFO own order, steal threshold 1.
    pub fn new(lanes: usize) -> Self {
        Self {
            lanes,
            order: LaneOrder::Fifo,
            steal_threshold: 1,
        }
    }

    /// Own-queue order (thieves always take the oldest).
    pub fn order(mut self, order: LaneOrder) -> Self {
        self.order = order;
        self
    }

    /// An idle lane steals only from a lane with at least this many queued tasks (at least
    /// 1). Raising it keeps more tasks on their warm lane at the cost of idle lanes. After
    /// [`LaneScheduler::close`] the threshold is 1, so closing drains every queue.
    pub fn steal_threshold(mut self, threshold: usize) -> Self {
        self.steal_threshold = threshold;
        self
    }

    /// Creates the scheduler and its lanes (one consumer handle per lane).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero lanes or a zero steal threshold.
    pub fn build<K, T>(self) -> Result<LaneSet<K, T>, Error>
    where
        K: Hash + Eq + Clone,
    {
        if self.lanes == 0 {
            return Err(Error::InvalidConfig {
                what: "lanes must be at least 1",
                value: 0,
            });
        }
        if self.steal_threshold == 0 {
            return Err(Error::InvalidConfig {
                what: "steal_threshold must be at least 1",
                value: 0,
            });
        }
        let inner = Arc::new(Inner {
            order: self.order,
            steal_threshold: self.steal_threshold,
            state: Mutex::new(State {
                lanes: (0..self.lanes).map(|_| LaneState::new()).collect(),
                warm: HashMap::new(),
                closed: false,
                next_id: 0,
                cursor: 0,
                unassigned: VecDeque::new(),
                stats: LaneStats::default(),
            }),
        });
        let lanes = (0..self.lanes)
            .map(|i| Lane {
                id: LaneId(i),
                inner: Arc::clone(&inner),
            })
            .collect();
        Ok((LaneScheduler { inner }, lanes))
    }
}

struct Entry<K, T> {
    id: LaneTaskId,
    task: T,
    keys: Vec<K>,
    placement: Placement,
}

struct LaneState<K, T> {
    queue: VecDeque<Entry<K, T>>,
    waker: Option<Waker>,
    open: bool,
    busy: bool,
    counters: LaneCounters,
}

impl<K, T> LaneState<K, T> {
    fn new() -> Self {
        Self {
            queue: VecDeque::new(),
            waker: None,
            open: true,
            busy: false,
            counters: LaneCounters::default(),
        }
    }

    fn load(&self) -> usize {
        self.queue.len() + usize::from(self.busy)
    }
}

struct State<K, T> {
    lanes: Vec<LaneState<K, T>>,
    /// Key → lane that last ran it (or was given a task with it).
    warm: HashMap<K, usize>,
    closed: bool,
    next_id: u64,
    /// Rotates ties among equally loaded lanes.
    cursor: usize,
    /// Tasks left when every lane closed.
    unassigned: VecDeque<Entry<K, T>>,
    stats: LaneStats,
}

struct Inner<K, T> {
    order: LaneOrder,
    steal_threshold: usize,
    state: Mutex<State<K, T>>,
}

impl<K, T> Inner<K, T> {
    fn lock(&self) -> MutexGuard<'_, State<K, T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Hash + Eq + Clone, T> State<K, T> {
    /// Picks a lane for `keys`; `None` when no lane is open.
    fn choose(&mut self, keys: &[K]) -> Option<(usize, Placement)> {
        let n = self.lanes.len();
        // Warm: the open lane recorded for most of the keys; ties to the lighter lane.
        let mut best: Option<(usize, usize)> = None; // (lane, votes)
        for key in keys {
            if let Some(&lane) = self.warm.get(key) {
                if !self.lanes[lane].open {
                    continue;
                }
                let votes = keys
                    .iter()
                    .filter(|k| self.warm.get(*k) == Some(&lane))
                    .count();
                let better = match best {
                    None => true,
                    Some((b, bv)) => {
                        votes > bv
                            || (votes == bv && self.lanes[lane].load() < self.lanes[b].load())
                    }
                };
                if better {
                    best = Some((lane, votes));
                }
            }
        }
        if let Some((lane, _)) = best {
            return Some((lane, Placement::Warm));
        }
        // Cold: least loaded open lane, scanning from a rotating cursor.
        let start = self.cursor;
        let lane = (0..n)
            .map(|i| (start + i) % n)
            .filter(|&i| self.lanes[i].open)
            .min_by_key(|&i| self.lanes[i].load())?;
        self.cursor = (lane + 1) % n;
        Some((lane, Placement::Cold))
    }

    /// Queues `entry` on `lane` and returns the wakers to wake.
    fn enqueue(
        &mut self,
        lane: usize,
        entry: Entry<K, T>,
        threshold: usize,
        wake: &mut Vec<Waker>,
    ) {
        for key in &entry.keys {
            self.warm.entry(key.clone()).or_insert(lane);
        }
        self.lanes[lane].queue.push_back(entry);
        if let Some(w) = self.lanes[lane].waker.take() {
            wake.push(w);
        } else if self.lanes[lane].queue.len() >= threshold {
            // The target is busy: wake one idle lane so it can steal.
            if let Some(w) = self
                .lanes
                .iter_mut()
                .find(|l| l.open && l.waker.is_some())
                .and_then(|idle| idle.waker.take())
            {
                wake.push(w);
            }
        }
    }

    fn take(&mut self, lane: usize, order: LaneOrder, threshold: usize) -> Option<Assigned<K, T>> {
        let own = match order {
            LaneOrder::Fifo => self.lanes[lane].queue.pop_front(),
            LaneOrder::Lifo => self.lanes[lane].queue.pop_back(),
        };
        let (entry, origin, queued_on) = match own {
            Some(e) => (e, Origin::Own, lane),
            None => {
                self.stats.steal_attempts += 1;
                let threshold = if self.closed { 1 } else { threshold };
                let victim = (0..self.lanes.len())
                    .filter(|&v| v != lane && self.lanes[v].queue.len() >= threshold)
                    .max_by_key(|&v| (self.lanes[v].queue.len(), std::cmp::Reverse(v)))?;
                let e = self.lanes[victim].queue.pop_front()?;
                self.lanes[victim].counters.stolen_out += 1;
                self.lanes[lane].counters.stolen_in += 1;
                (
                    e,
                    Origin::Stolen {
                        from: LaneId(victim),
                    },
                    victim,
                )
            }
        };
        for key in &entry.keys {
            self.warm.insert(key.clone(), lane);
        }
        let st = &mut self.lanes[lane];
        st.busy = true;
        st.counters.taken += 1;
        if entry.placement == Placement::Warm {
            self.stats.warm_taken += 1;
            if queued_on == lane {
                self.lanes[lane].counters.warm_hits += 1;
            }
        }
        Some(Assigned {
            id: entry.id,
            task: entry.task,
            keys: entry.keys,
            lane: LaneId(lane),
            placement: entry.placement,
            origin,
        })
    }

    fn all_queues_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.queue.is_empty())
    }

    /// Closes `lane`, moving its queued tasks to other lanes. Returns wakers to wake.
    fn close_lane(&mut self, lane: usize, threshold: usize) -> Vec<Waker> {
        let mut wake = Vec::new();
        let st = &mut self.lanes[lane];
        if !st.open {
            return wake;
        }
        st.open = false;
        st.busy = false;
        st.waker = None;
        let orphans: Vec<_> = st.queue.drain(..).collect();
        self.warm.retain(|_, l| *l != lane);
        for mut entry in orphans {
            match self.choose(&entry.keys) {
                Some((target, placement)) => {
                    entry.placement = placement;
                    self.stats.requeued += 1;
                    self.enqueue(target, entry, threshold, &mut wake);
                }
                None => self.unassigned.push_back(entry),
            }
        }
        // Others may be waiting for the last queue to drain after `close`.
        if self.closed && self.all_queues_empty() {
            wake.extend(self.lanes.iter_mut().filter_map(|l| l.waker.take()));
        }
        wake
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

/// The producer side: push tasks, query warm lanes, close. Cheap to clone.
pub struct LaneScheduler<K, T> {
    inner: Arc<Inner<K, T>>,
}

impl<K, T> Clone for LaneScheduler<K, T> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, T> fmt::Debug for LaneScheduler<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("LaneScheduler")
            .field("lanes", &st.lanes.len())
            .field(
                "queued",
                &st.lanes.iter().map(|l| l.queue.len()).sum::<usize>(),
            )
            .field("closed", &st.closed)
            .finish()
    }
}

impl<K: Hash + Eq + Clone, T> LaneScheduler<K, T> {
    /// `lanes` lanes with default settings; see [`LaneSchedulerBuilder`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for zero lanes.
    pub fn new(lanes: usize) -> Result<(Self, Vec<Lane<K, T>>), Error> {
        LaneSchedulerBuilder::new(lanes).build()
    }

    /// Pushes a task without affinity (least-loaded lane).
    ///
    /// # Errors
    /// [`Rejected`] (holding `task`) after [`close`](Self::close) or when every lane closed.
    pub fn push(&self, task: T) -> Result<LaneTaskId, Rejected<T>> {
        self.push_with_affinity(std::iter::empty(), task)
    }

    /// Pushes a task with affinity keys (e.g. the files it touches). It goes to the open lane
    /// recorded for most of its keys, else to the least-loaded lane; the keys are then
    /// recorded for that lane until a lane runs them.
    ///
    /// # Errors
    /// [`Rejected`] (holding `task`) after [`close`](Self::close) or when every lane closed.
    pub fn push_with_affinity<I>(&self, keys: I, task: T) -> Result<LaneTaskId, Rejected<T>>
    where
        I: IntoIterator<Item = K>,
    {
        let mut unique: Vec<K> = Vec::new();
        for k in keys {
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        let keys = unique;
        let mut wake = Vec::new();
        let id = {
            let mut st = self.inner.lock();
            if st.closed {
                return Err(Rejected::new(task, "lane scheduler is closed"));
            }
            let Some((lane, placement)) = st.choose(&keys) else {
                return Err(Rejected::new(task, "every lane is closed"));
            };
            let id = LaneTaskId(st.next_id);
            st.next_id += 1;
            st.stats.pushed += 1;
            if !keys.is_empty() {
                st.stats.keyed += 1;
            }
            if placement == Placement::Warm {
                st.stats.warm_placed += 1;
            }
            let entry = Entry {
                id,
                task,
                keys,
                placement,
            };
            st.enqueue(lane, entry, self.inner.steal_threshold, &mut wake);
            id
        };
        wake_all(wake);
        Ok(id)
    }

    /// The lane recorded for `key`: the lane that last ran it, or that was given a queued
    /// task with it.
    pub fn warm_lane(&self, key: &K) -> Option<LaneId> {
        self.inner.lock().warm.get(key).copied().map(LaneId)
    }

    /// Forgets the lane recorded for `key` (e.g. after the file was rewritten elsewhere).
    pub fn forget(&self, key: &K) {
        self.inner.lock().warm.remove(key);
    }

    /// Stops accepting tasks. Lanes drain every queue (stealing with threshold 1), then
    /// [`Lane::next`] returns `None`.
    pub fn close(&self) {
        let wake: Vec<Waker> = {
            let mut st = self.inner.lock();
            st.closed = true;
            st.lanes.iter_mut().filter_map(|l| l.waker.take()).collect()
        };
        wake_all(wake);
    }

    /// True after [`close`](Self::close).
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Tasks queued on all lanes.
    pub fn queued(&self) -> usize {
        self.inner.lock().lanes.iter().map(|l| l.queue.len()).sum()
    }

    /// Tasks that were queued on lanes that closed while no other lane was open. Taking
    /// them empties the list.
    pub fn take_unassigned(&self) -> Vec<T> {
        self.inner
            .lock()
            .unassigned
            .drain(..)
            .map(|e| e.task)
            .collect()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> LaneStats {
        let st = self.inner.lock();
        let mut stats = st.stats.clone();
        stats.lanes = st
            .lanes
            .iter()
            .map(|l| LaneCounters {
                queued: l.queue.len(),
                busy: l.busy,
                open: l.open,
                ..l.counters.clone()
            })
            .collect();
        stats
    }
}

/// The consumer side of one lane. Not cloneable: one consumer per lane. Dropping it closes
/// the lane (its queued tasks move to other lanes).
pub struct Lane<K: Hash + Eq + Clone, T> {
    id: LaneId,
    inner: Arc<Inner<K, T>>,
}

impl<K: Hash + Eq + Clone, T> fmt::Debug for Lane<K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lane").field("id", &self.id).finish()
    }
}

impl<K: Hash + Eq + Clone, T> Lane<K, T> {
    /// This lane's id.
    pub fn id(&self) -> LaneId {
        self.id
    }

    /// Waits for the next task: own queue first, else the oldest task of the busiest lane.
    /// Calling it marks the previous task of this lane as finished.
    ///
    /// Resolves to `None` once this lane is closed, or once the scheduler is closed and every
    /// queue is empty. Cancel-safe: dropping the future loses no task.
    #[allow(clippy::should_implement_trait)] // async: `lane.next().await`, not an Iterator
    pub fn next(&mut self) -> Next<'_, K, T> {
        Next {
            lane: self,
            registered: false,
        }
    }

    /// Takes a task without waiting. `None` when nothing is available now.
    pub fn try_next(&mut self) -> Option<Assigned<K, T>> {
        let mut st = self.inner.lock();
        let idx = self.id.0;
        st.lanes[idx].busy = false;
        if !st.lanes[idx].open {
            return None;
        }
        st.take(idx, self.inner.order, self.inner.steal_threshold)
    }

    /// Marks the current task finished without asking for another (load accounting).
    pub fn idle(&mut self) {
        self.inner.lock().lanes[self.id.0].busy = false;
    }

    /// Closes the lane: it takes no more tasks and its queued tasks move to other open lanes
    /// (or to [`LaneScheduler::take_unassigned`] if none is open). Same as dropping it.
    pub fn close(self) {}
}

impl<K: Hash + Eq + Clone, T> Drop for Lane<K, T> {
    fn drop(&mut self) {
        let wake = self
            .inner
            .lock()
            .close_lane(self.id.0, self.inner.steal_threshold);
        wake_all(wake);
    }
}

/// Future returned by [`Lane::next`].
#[must_use = "futures do nothing unless polled"]
pub struct Next<'a, K: Hash + Eq + Clone, T> {
    lane: &'a mut Lane<K, T>,
    registered: bool,
}

impl<K: Hash + Eq + Clone, T> fmt::Debug for Next<'_, K, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").field("lane", &self.lane.id).finish()
    }
}

impl<K: Hash + Eq + Clone, T> Future for Next<'_, K, T> {
    type Output = Option<Assigned<K, T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = &this.lane.inner;
        let idx = this.lane.id.0;
        let mut st = inner.lock();
        st.lanes[idx].busy = false;
        if !st.lanes[idx].open {
            this.registered = false;
            return Poll::Ready(None);
        }
        if let Some(task) = st.take(idx, inner.order, inner.steal_threshold) {
            st.lanes[idx].waker = None;
            this.registered = false;
            return Poll::Ready(Some(task));
        }
        if st.closed && st.all_queues_empty() {
            st.lanes[idx].waker = None;
            this.registered = false;
            return Poll::Ready(None);
        }
        match &mut st.lanes[idx].waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        this.registered = true;
        Poll::Pending
    }
}

impl<K: Hash + Eq + Clone, T> Drop for Next<'_, K, T> {
    fn drop(&mut self) {
        if self.registered {
            // A stale waker would make this lane look idle to producers.
            self.lane.inner.lock().lanes[self.lane.id.0].waker = None;
        }
    }
}
