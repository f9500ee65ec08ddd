//! Property and stress tests for the concurrency controller.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use orch_core::{
    AcquireError, AgentRole, ConcurrencyController, ConcurrencyToken, KeySlots, LimitConfig,
    Priority,
};
use proptest::prelude::*;

type AcquireFut = Pin<Box<dyn Future<Output = Result<ConcurrencyToken, AcquireError>> + Send>>;

#[derive(Debug, Clone)]
enum Op {
    Acquire(Priority),
    Release(usize),
    Cancel(usize),
    Success,
    Failure,
    Panic,
}

fn op() -> impl Strategy<Value = Op> {
    let prio = prop_oneof![
        Just(Priority::High),
        Just(Priority::Normal),
        Just(Priority::Low)
    ];
    prop_oneof![
        4 => prio.prop_map(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Success),
        1 => Just(Op::Failure),
        1 => Just(Op::Panic),
    ]
}

struct Pending {
    prio: Priority,
    seq: u64,
    fut: AcquireFut,
}

fn poll_once(fut: &mut AcquireFut) -> Poll<Result<ConcurrencyToken, AcquireError>> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    fut.as_mut().poll(&mut cx)
}

/// Serve order: higher priority first, then arrival.
fn rank(prio: Priority, seq: u64) -> (usize, u64) {
    (prio.index(), seq)
}

struct Model {
    slots: Arc<KeySlots>,
    held: Vec<ConcurrencyToken>,
    pending: Vec<Pending>,
    seq: u64,
    scaled: bool,
}

impl Model {
    /// Polls every waiter; checks that exactly the best-ranked ones were served.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        let mut granted = Vec::new();
        let mut still = Vec::new();
        for mut p in self.pending.drain(..) {
            match poll_once(&mut p.fut) {
                Poll::Ready(r) => {
                    let t = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    granted.push(rank(p.prio, p.seq));
                    self.held.push(t);
                }
                Poll::Pending => still.push(p),
            }
        }
        if let (Some(worst_granted), Some(best_waiting)) = (
            granted.iter().max(),
            still.iter().map(|p| rank(p.prio, p.seq)).min(),
        ) {
            prop_assert!(
                worst_granted < &best_waiting,
                "served {worst_granted:?} before {best_waiting:?}"
            );
        }
        self.pending = still;
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let st = self.slots.stats();
        prop_assert_eq!(st.in_use, self.held.len(), "tokens out vs in_use");
        prop_assert!(self.held.len() <= st.cap);
        if !self.scaled {
            prop_assert!(
                self.held.len() <= st.limit,
                "{} > limit {}",
                self.held.len(),
                st.limit
            );
        }
        let waiting = st.waiting.high + st.waiting.normal + st.waiting.low;
        prop_assert_eq!(waiting, self.pending.len());
        if waiting > 0 {
            prop_assert!(st.in_use >= st.limit, "a free slot while {} wait", waiting);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tokens_never_exceed_limit_and_fifo_within_priority(
        cap in 1usize..5,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let ctl = ConcurrencyController::builder()
            .limit(AgentRole::Worker, LimitConfig::new(cap))
            .build();
        let slots = ctl.slots(AgentRole::Worker);
        let mut m = Model { slots: Arc::clone(&slots), held: Vec::new(), pending: Vec::new(), seq: 0, scaled: false };
        for op in ops {
            match op {
                Op::Acquire(p) => {
                    let mut fut: AcquireFut = Box::pin(slots.acquire(p));
                    match poll_once(&mut fut) {
                        Poll::Ready(r) => {
                            prop_assert!(m.pending.is_empty(), "jumped the queue");
                            m.held.push(r.map_err(|e| TestCaseError::fail(e.to_string()))?);
                        }
                        Poll::Pending => {
                            m.pending.push(Pending { prio: p, seq: m.seq, fut });
                            m.seq += 1;
                        }
                    }
                }
                Op::Release(i) => {
                    if !m.held.is_empty() {
                        let t = m.held.swap_remove(i % m.held.len());
                        drop(t);
                    }
                }
                Op::Cancel(i) => {
                    if !m.pending.is_empty() {
                        let p = m.pending.remove(i % m.pending.len());
                        drop(p.fut);
                    }
                }
                Op::Success => {
                    m.scaled = true;
                    slots.record_success();
                }
                Op::Failure => {
                    m.scaled = true;
                    slots.record_failure();
                }
                Op::Panic => {
                    // A task that holds a slot and panics still gives it back.
                    if let Ok(t) = slots.try_acquire(Priority::High) {
                        let r = std::panic::catch_unwind(AssertUnwindSafe(move || {
                            let _t = t;
                            panic!("worker crashed");
                        }));
                        prop_assert!(r.is_err());
                    }
                }
            }
            m.settle()?;
        }
        // Everything returns.
        m.pending.clear();
        m.held.clear();
        let st = slots.stats();
        prop_assert_eq!(st.in_use, 0);
        prop_assert_eq!(st.waiting.high + st.waiting.normal + st.waiting.low, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_with_cancellation_and_panics_returns_every_slot() {
    let ctl = Arc::new(
        ConcurrencyController::builder()
            .limit(AgentRole::Worker, LimitConfig::new(3))
            .build(),
    );
    let slots = ctl.slots(AgentRole::Worker);
    let live = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let slots = Arc::clone(&slots);
        let live = Arc::clone(&live);
        let peak = Arc::clone(&peak);
        tasks.push(tokio::spawn(async move {
            let prio = [Priority::High, Priority::Normal, Priority::Low][(i % 3) as usize];
            // Some waits are cut short: a timed-out acquire must not leak a slot.
            let timeout = Duration::from_micros(u64::from(i % 7) * 50 + 1);
            let Ok(token) = slots.acquire_timeout(prio, timeout).await else {
                return;
            };
            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::task::yield_now().await;
            live.fetch_sub(1, Ordering::SeqCst);
            assert!(i % 11 != 0, "task {i} panics while holding {token:?}");
            drop(token);
        }));
    }
    for t in tasks {
        let _ = t.await; // some panicked on purpose
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    let st = slots.stats();
    assert_eq!(st.in_use, 0);
    assert_eq!(st.waiting.high + st.waiting.normal + st.waiting.low, 0);
    assert!(slots.try_acquire(Priority::Normal).is_ok());
}

#[tokio::test]
async fn aborted_waiting_task_frees_its_place() {
    let ctl = ConcurrencyController::builder()
        .limit(AgentRole::Worker, LimitConfig::new(1))
        .build();
    let slots = ctl.slots(AgentRole::Worker);
    let held = slots.try_acquire(Priority::Normal).unwrap();
    let waiter = tokio::spawn({
        let slots = Arc::clone(&slots);
        async move { slots.acquire(Priority::High).await.map(drop) }
    });
    while slots.stats().waiting.high == 0 {
        tokio::task::yield_now().await;
    }
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(slots.stats().waiting.high, 0);
    drop(held);
    assert_eq!(slots.in_use(), 0);
}
