//! The mission's policy, composed from orch-core: slots per role (with auto-scaling), a circuit
//! breaker per model, the retry policy, stagnation detection and the loop breaker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use orch_core::{
    AgentRole, BreakerConfig, BreakerState, CircuitBreaker, CircuitBreakers, ConcurrencyController,
    ConcurrencyToken, ErrorClass, LimitConfig, LoopBreaker, LoopReason, LoopVerdict, Priority,
    ProgressTracker, RetryDecision, RetryPolicy,
};
use orch_mvcc::ItemId;
use orch_opencode::ModelRef;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, TurnReport};

/// Retry, breaker, scaling and stagnation settings of a mission.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyConfig {
    /// Retries of transient errors (seed: 1 s, 2 s, 4 s…, 5 attempts).
    pub retry: RetryPolicy,
    /// The breaker per model (seed: open after 5 failures, 30 s, 2 successes to close).
    pub breaker: BreakerConfig,
    /// Let the controller move the Worker and Reviewer limits (never above the configured
    /// counts, never below 1).
    pub autoscale: bool,
    /// Unchanged progress rounds before the Commander is asked for a diagnosis (seed: 3).
    pub diagnose_after: u32,
    /// Unchanged progress rounds before the mission stops (seed: 5).
    pub escalate_after: u32,
    /// Identical tool calls (or identical turns without tools) in a row that count as a loop
    /// (seed: 3).
    pub loop_threshold: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
            autoscale: true,
            diagnose_after: 3,
            escalate_after: 5,
            loop_threshold: 3,
        }
    }
}

/// What the progress tracker says after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressSignal {
    Ok,
    Diagnose(u32),
    Escalate(u32),
}

/// The breaker key of a model (`default` when the backend's default model is used).
pub(crate) fn model_key(model: Option<&ModelRef>) -> String {
    model.map_or_else(|| "default".to_owned(), ToString::to_string)
}

/// How the retry policy sees a backend error.
pub(crate) fn classify(error: &BackendError) -> ErrorClass {
    match error {
        BackendError::RateLimited { retry_after, .. } => ErrorClass::RateLimit {
            retry_after: *retry_after,
        },
        BackendError::Unavailable { .. } | BackendError::Timeout { .. } => ErrorClass::Network,
        BackendError::Session { .. } | BackendError::Stopped | BackendError::ServerLost { .. } => {
            ErrorClass::Session
        }
    }
}

pub(crate) struct Policy {
    controller: ConcurrencyController,
    breakers: CircuitBreakers<String>,
    retry: RetryPolicy,
    progress: Mutex<ProgressTracker>,
    loops: Mutex<HashMap<ItemId, LoopBreaker>>,
    loop_threshold: u32,
}

impl Policy {
    pub(crate) fn new(config: &crate::mission::MissionConfig) -> Self {
        let p = &config.policy;
        let limit = |cap: usize| {
            let limit = LimitConfig::new(cap);
            if p.autoscale {
                limit
            } else {
                limit.with_floor(cap)
            }
        };
        let controller = ConcurrencyController::builder()
            .limit(AgentRole::Commander, LimitConfig::new(1))
            .limit(AgentRole::Planner, LimitConfig::new(1))
            .limit(AgentRole::Worker, limit(config.workers))
            .limit(AgentRole::Reviewer, limit(config.reviewers))
            .build();
        Policy {
            controller,
            breakers: CircuitBreakers::new(p.breaker),
            retry: p.retry,
            progress: Mutex::new(ProgressTracker::new(p.diagnose_after, p.escalate_after)),
            loops: Mutex::new(HashMap::new()),
            loop_threshold: p.loop_threshold,
        }
    }

    /// A slot for `role`, or `None` once stopping (or the controller closed).
    pub(crate) async fn acquire(
        &self,
        role: AgentRole,
        priority: Priority,
        stop: &CancellationToken,
    ) -> Option<ConcurrencyToken> {
        tokio::select! {
            token = self.controller.acquire(role, priority) => token.ok(),
            () = stop.cancelled() => None,
        }
    }

    /// Feeds the auto-scaler.
    pub(crate) fn record_outcome(&self, role: AgentRole, ok: bool) {
        if ok {
            self.controller.record_success(role);
        } else {
            self.controller.record_failure(role);
        }
    }

    /// The model for the next attempt: the primary unless its breaker is open and a fallback's
    /// is not.
    pub(crate) fn pick_model(
        &self,
        primary: Option<&ModelRef>,
        fallbacks: &[ModelRef],
    ) -> Option<ModelRef> {
        let is_open = |m: Option<&ModelRef>| {
            matches!(
                self.breakers.get(&model_key(m)).state(),
                BreakerState::Open { .. }
            )
        };
        if !is_open(primary) {
            return primary.cloned();
        }
        fallbacks
            .iter()
            .find(|m| !is_open(Some(m)))
            .cloned()
            .or_else(|| primary.cloned())
    }

    /// The breaker of a model.
    pub(crate) fn breaker(&self, model: Option<&ModelRef>) -> Arc<CircuitBreaker> {
        self.breakers.get(&model_key(model))
    }

    /// Records a failed model call the server absorbed (it retries by itself) on the
    /// model's breaker, unless the breaker is already open.
    pub(crate) fn absorbed_failure(&self, breaker: &CircuitBreaker) {
        if matches!(breaker.state(), BreakerState::Open { .. }) {
            return;
        }
        if let Ok(permit) = breaker.try_acquire() {
            permit.failure();
        }
    }

    /// Whether a turn on `model` should leave it: its breaker is open and
    /// [`pick_model`](Self::pick_model) would now choose another one.
    pub(crate) fn should_leave(
        &self,
        model: Option<&ModelRef>,
        primary: Option<&ModelRef>,
        fallbacks: &[ModelRef],
    ) -> bool {
        matches!(
            self.breakers.get(&model_key(model)).state(),
            BreakerState::Open { .. }
        ) && self.pick_model(primary, fallbacks).as_ref() != model
    }

    /// The wait before attempt `attempt + 1`, or `None` to give up.
    pub(crate) fn retry_delay(&self, attempt: u32, error: &BackendError) -> Option<Duration> {
        match self.retry.decide(classify(error), attempt, 0) {
            RetryDecision::GiveUp => None,
            RetryDecision::RetryAfter(delay) => {
                let rate_limit_floor = match error {
                    BackendError::RateLimited {
                        retry_after: Some(d),
                        ..
                    } => *d,
                    _ => Duration::ZERO,
                };
                // Jitter spreads retries of parallel turns, but never below Retry-After.
                let jitter = if self.retry.jitter {
                    delay.mul_f64(fastrand::f64() * 0.25)
                } else {
                    Duration::ZERO
                };
                Some((delay + jitter).max(rate_limit_floor))
            }
        }
    }

    /// Feeds the progress tracker one round's plan hash.
    pub(crate) fn observe_progress(&self, hash: [u8; 32]) -> ProgressSignal {
        match self.progress.lock().observe(&hash) {
            orch_core::ProgressSignal::Intervene { unchanged } => {
                ProgressSignal::Diagnose(unchanged)
            }
            orch_core::ProgressSignal::Escalate { unchanged } => {
                ProgressSignal::Escalate(unchanged)
            }
            _ => ProgressSignal::Ok,
        }
    }

    /// Feeds an item's loop breaker a Worker turn; `Some(detail)` when it loops.
    pub(crate) fn observe_turn(&self, item: &ItemId, report: &TurnReport) -> Option<String> {
        let mut loops = self.loops.lock();
        let breaker = loops
            .entry(item.clone())
            .or_insert_with(|| LoopBreaker::new(self.loop_threshold));
        let mut verdict = LoopVerdict::Continue;
        for call in &report.tool_calls {
            if let LoopVerdict::Break(reason) =
                breaker.on_tool_call(&call.tool, call.input.as_bytes())
            {
                verdict = LoopVerdict::Break(reason);
            }
        }
        if let LoopVerdict::Break(reason) =
            breaker.on_turn(&report.text, !report.tool_calls.is_empty())
        {
            verdict = LoopVerdict::Break(reason);
        }
        match verdict {
            LoopVerdict::Continue => None,
            LoopVerdict::Break(LoopReason::RepeatedToolCall { tool, times }) => {
                Some(format!("the same `{tool}` call {times} times in a row"))
            }
            LoopVerdict::Break(LoopReason::RepeatedTurn { times }) => {
                Some(format!("{times} identical turns without a tool call"))
            }
        }
    }

    /// Figures for the report.
    pub(crate) fn stats(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for key in self.controller.stats().keys {
            let name = key.key.to_string();
            out.push((format!("slots.{name}.limit"), key.limit as f64));
            out.push((format!("slots.{name}.cap"), key.cap as f64));
            out.push((format!("slots.{name}.scale_ups"), key.scale_ups as f64));
            out.push((format!("slots.{name}.scale_downs"), key.scale_downs as f64));
        }
        for (model, state) in self.breakers.states() {
            let breaker = self.breakers.get(&model);
            let code = match state {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen { .. } => 1.0,
                BreakerState::Open { .. } => 2.0,
            };
            out.push((format!("breaker.{model}.state"), code));
            out.push((format!("breaker.{model}.trips"), breaker.trips() as f64));
            out.push((
                format!("breaker.{model}.rejections"),
                breaker.rejections() as f64,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mission::MissionConfig;

    fn policy(retry: RetryPolicy) -> Policy {
        let mut config = MissionConfig::default();
        config.policy.retry = retry;
        config.policy.breaker = BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        };
        Policy::new(&config)
    }

    #[test]
    fn retry_honours_retry_after_and_gives_up_on_session_errors() {
        let p = policy(RetryPolicy::default().without_jitter());
        let limited = BackendError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "slow".into(),
        };
        assert_eq!(p.retry_delay(1, &limited), Some(Duration::from_secs(7)));
        let net = BackendError::Unavailable {
            status: Some(500),
            message: "x".into(),
        };
        assert_eq!(p.retry_delay(1, &net), Some(Duration::from_secs(1)));
        assert_eq!(p.retry_delay(3, &net), Some(Duration::from_secs(4)));
        assert_eq!(p.retry_delay(5, &net), None);
        let session = BackendError::Session {
            message: "gone".into(),
        };
        assert_eq!(p.retry_delay(1, &session), None);
    }

    #[test]
    fn an_open_breaker_moves_turns_to_a_fallback_model() {
        let p = policy(RetryPolicy::default());
        let primary = ModelRef::new("p", "main");
        let fallback = ModelRef::new("p", "backup");
        assert_eq!(
            p.pick_model(Some(&primary), std::slice::from_ref(&fallback)),
            Some(primary.clone())
        );
        for _ in 0..2 {
            let breaker = p.breaker(Some(&primary));
            breaker.try_acquire().unwrap().failure();
        }
        assert_eq!(
            p.pick_model(Some(&primary), std::slice::from_ref(&fallback)),
            Some(fallback)
        );
        let stats = p.stats();
        assert!(
            stats.contains(&("breaker.p/main.state".to_owned(), 2.0)),
            "{stats:?}"
        );
    }

    #[test]
    fn loops_are_detected_per_item() {
        let p = policy(RetryPolicy::default());
        let item = ItemId::new("T1").unwrap();
        let report = TurnReport {
            text: "same".into(),
            ..TurnReport::default()
        };
        assert_eq!(p.observe_turn(&item, &report), None);
        assert_eq!(p.observe_turn(&item, &report), None);
        let detail = p.observe_turn(&item, &report).unwrap();
        assert!(detail.contains("3 identical turns"), "{detail}");
        // Another item has its own history.
        assert_eq!(p.observe_turn(&ItemId::new("T2").unwrap(), &report), None);
    }

    #[test]
    fn progress_signals_diagnose_then_escalate() {
        let p = policy(RetryPolicy::default());
        let signals: Vec<ProgressSignal> = (0..6).map(|_| p.observe_progress([1; 32])).collect();
        assert_eq!(signals[0], ProgressSignal::Ok);
        assert_eq!(signals[3], ProgressSignal::Diagnose(3));
        assert_eq!(signals[5], ProgressSignal::Escalate(5));
    }
}
