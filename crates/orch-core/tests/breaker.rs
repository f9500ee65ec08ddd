//! Model-based property test for the circuit breaker on a manual clock, plus a threaded check.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use orch_core::{BreakerConfig, BreakerState, CircuitBreaker, ManualClock};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Success,
    Failure,
    Abandon,
    HoldProbe,
    ReleaseHeld(bool),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Success),
        4 => Just(Op::Failure),
        1 => Just(Op::Abandon),
        1 => Just(Op::HoldProbe),
        1 => any::<bool>().prop_map(Op::ReleaseHeld),
        3 => (0u64..40_000).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum M {
    Closed(VecDeque<u64>),
    Open(u64),
    Half {
        successes: u32,
        in_flight: u32,
        epoch: u32,
    },
}

struct Model {
    cfg: BreakerConfig,
    now: u64,
    state: M,
    epochs: u32,
}

impl Model {
    fn ms(d: Duration) -> u64 {
        d.as_millis() as u64
    }

    /// Some(probe epoch) when admitted.
    fn acquire(&mut self) -> Option<Option<u32>> {
        match &mut self.state {
            M::Closed(_) => Some(None),
            M::Open(at) => {
                if self.now - *at >= Self::ms(self.cfg.recovery) {
                    self.epochs += 1;
                    self.state = M::Half {
                        successes: 0,
                        in_flight: 1,
                        epoch: self.epochs,
                    };
                    Some(Some(self.epochs))
                } else {
                    None
                }
            }
            M::Half {
                in_flight, epoch, ..
            } => {
                if *in_flight < self.cfg.half_open_probes {
                    *in_flight += 1;
                    Some(Some(*epoch))
                } else {
                    None
                }
            }
        }
    }

    fn outcome(&mut self, probe: Option<u32>, ok: Option<bool>) {
        let n = self.cfg.failure_threshold as usize;
        if let (M::Half { epoch, .. }, Some(p)) = (&self.state, probe)
            && *epoch != p
        {
            return; // a late probe from an earlier half-open period
        }
        match (&mut self.state, probe.is_some(), ok) {
            (M::Closed(f), false, Some(false)) => {
                f.push_back(self.now);
                if f.len() > n {
                    f.pop_front();
                }
                if f.len() == n && self.now - f[0] <= Self::ms(self.cfg.window) {
                    self.state = M::Open(self.now);
                }
            }
            (
                M::Half {
                    successes,
                    in_flight,
                    ..
                },
                true,
                Some(true),
            ) => {
                *successes += 1;
                *in_flight -= 1;
                if *successes >= self.cfg.success_threshold {
                    self.state = M::Closed(VecDeque::new());
                }
            }
            (M::Half { .. }, true, Some(false)) => self.state = M::Open(self.now),
            (M::Half { in_flight, .. }, true, None) => *in_flight -= 1,
            _ => {}
        }
    }

    fn observed(&self) -> BreakerState {
        match &self.state {
            M::Closed(_) => BreakerState::Closed,
            M::Open(at) => BreakerState::Open {
                retry_in: self
                    .cfg
                    .recovery
                    .saturating_sub(Duration::from_millis(self.now - at)),
            },
            M::Half {
                successes,
                in_flight,
                ..
            } => BreakerState::HalfOpen {
                successes: *successes,
                in_flight: *in_flight,
            },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_reference_model(
        threshold in 1u32..6,
        successes in 1u32..4,
        probes in 1u32..3,
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        let cfg = BreakerConfig {
            failure_threshold: threshold,
            window: Duration::from_secs(60),
            recovery: Duration::from_secs(30),
            success_threshold: successes,
            half_open_probes: probes,
        };
        let clock = Arc::new(ManualClock::new());
        let b = CircuitBreaker::with_clock("m", cfg, clock.clone());
        let mut model = Model { cfg, now: 0, state: M::Closed(VecDeque::new()), epochs: 0 };
        let mut held: Vec<(orch_core::BreakerPermit<'_>, Option<u32>)> = Vec::new();
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms;
                }
                Op::ReleaseHeld(ok) => {
                    if let Some((p, epoch)) = held.pop() {
                        let r = if ok { p.success(); Some(true) } else { p.failure(); Some(false) };
                        model.outcome(epoch, r);
                    }
                }
                other => {
                    let real = b.try_acquire();
                    let expected = model.acquire();
                    prop_assert_eq!(real.as_ref().ok().map(|p| p.is_probe()), expected.map(|e| e.is_some()));
                    if let (Ok(permit), Some(probe)) = (real, expected) {
                        match other {
                            Op::Success => { permit.success(); model.outcome(probe, Some(true)); }
                            Op::Failure => { permit.failure(); model.outcome(probe, Some(false)); }
                            Op::HoldProbe if probe.is_some() => held.push((permit, probe)),
                            _ => { drop(permit); model.outcome(probe, None); }
                        }
                    }
                }
            }
            prop_assert_eq!(b.state(), model.observed());
        }
    }
}

#[test]
fn concurrent_failures_open_exactly_once() {
    let clock = Arc::new(ManualClock::new());
    let b = Arc::new(CircuitBreaker::with_clock(
        "t",
        BreakerConfig::default(),
        clock,
    ));
    std::thread::scope(|s| {
        for _ in 0..4 {
            let b = Arc::clone(&b);
            s.spawn(move || {
                for _ in 0..1000 {
                    if let Ok(p) = b.try_acquire() {
                        p.failure();
                    }
                }
            });
        }
    });
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    assert_eq!(b.trips(), 1);
}
