//! The turn policy as a layer: a slot per role, a breaker per model with fallback models,
//! and retries of transient errors, around any [`AgentBackend`].
//!
//! [`Guarded::run_turn`] takes a slot of the turn's role from `orch-core`'s
//! [`ConcurrencyController`] (a retry's turn first; auto-scaling never above the configured
//! count), picks the model — the turn's own unless its breaker is open, then the first
//! fallback whose breaker is not — and runs the turn on the inner backend. A transient error
//! ([`BackendError::is_transient`]) is retried after the retry policy's backoff, never sooner
//! than a `Retry-After`, with a [`TurnNotice::Retrying`]; each model call the inner backend
//! says its server retried by itself ([`TurnNotice::UpstreamRetry`]) counts toward the
//! model's breaker, and once that breaker opens while a fallback can take the turn, the turn
//! leaves the model at once instead of waiting out the server's own retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use orch_core::{
    AcquireError, AgentRole, BreakerConfig, BreakerState, CircuitBreaker, CircuitBreakers,
    ConcurrencyController, ErrorClass, LimitConfig, MemoryReader, Priority, RetryDecision,
    RetryPolicy,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    AgentBackend, BackendError, ModelSpec, NoticeSink, TurnNotice, TurnReport, TurnRequest,
};

/// What a [`Guarded`] backend enforces.
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// Worker slots (parallel Worker turns).
    pub workers: usize,
    /// Reviewer slots.
    pub reviewers: usize,
    /// Retries of transient errors.
    pub retry: RetryPolicy,
    /// The breaker of each model.
    pub breaker: BreakerConfig,
    /// Let the controller move the Worker and Reviewer limits (never above the configured
    /// counts, never below 1).
    pub autoscale: bool,
    /// Models a turn moves to, in order, when its own model's breaker is open.
    pub fallbacks: Vec<ModelSpec>,
    /// Where memory readings come from (`None`: no gate). Above 80 % in use, low-priority
    /// turns (the Commander agent's diagnoses) are refused rather than run.
    pub memory: Option<Arc<dyn MemoryReader>>,
}

/// The breaker key of a model (`default` for the backend's default model).
pub(crate) fn model_key(model: Option<&ModelSpec>) -> String {
    model.map_or_else(|| "default".to_owned(), ToString::to_string)
}

/// How the retry policy sees a backend error.
fn classify(error: &BackendError) -> ErrorClass {
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

/// An [`AgentBackend`] whose turns go through slots, breakers, fallbacks and retries.
#[derive(Debug)]
pub struct Guarded<B> {
    inner: B,
    controller: ConcurrencyController,
    breakers: CircuitBreakers<String>,
    retry: RetryPolicy,
    fallbacks: Vec<ModelSpec>,
}

impl<B: AgentBackend> Guarded<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, config: &GuardConfig) -> Self {
        let limit = |cap: usize| {
            let limit = LimitConfig::new(cap);
            if config.autoscale {
                limit
            } else {
                limit.with_floor(cap)
            }
        };
        let mut controller = ConcurrencyController::builder()
            .limit(AgentRole::Commander, LimitConfig::new(1))
            .limit(AgentRole::Planner, LimitConfig::new(1))
            .limit(AgentRole::Worker, limit(config.workers))
            .limit(AgentRole::Reviewer, limit(config.reviewers));
        if let Some(reader) = &config.memory {
            controller = controller.memory_reader(Arc::clone(reader));
        }
        let controller = controller.build();
        Guarded {
            inner,
            controller,
            breakers: CircuitBreakers::new(config.breaker),
            retry: config.retry,
            fallbacks: config.fallbacks.clone(),
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn breaker(&self, model: Option<&ModelSpec>) -> Arc<CircuitBreaker> {
        self.breakers.get(&model_key(model))
    }

    fn is_open(&self, model: Option<&ModelSpec>) -> bool {
        matches!(self.breaker(model).state(), BreakerState::Open { .. })
    }

    /// The model for the next attempt: `primary` unless its breaker is open and a fallback's
    /// is not.
    pub(crate) fn pick_model(&self, primary: Option<&ModelSpec>) -> Option<ModelSpec> {
        if !self.is_open(primary) {
            return primary.cloned();
        }
        self.fallbacks
            .iter()
            .find(|m| !self.is_open(Some(m)))
            .cloned()
            .or_else(|| primary.cloned())
    }

    /// The wait before attempt `attempt + 1`, or `None` to give up.
    pub(crate) fn retry_delay(&self, attempt: u32, error: &BackendError) -> Option<Duration> {
        match self.retry.decide(classify(error), attempt, 0) {
            RetryDecision::GiveUp => None,
            RetryDecision::RetryAfter(delay) => {
                let floor = match error {
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
                Some((delay + jitter).max(floor))
            }
        }
    }

    /// A model call the server absorbed by retrying: a failure on the model's breaker,
    /// unless it is open already.
    fn absorbed_failure(breaker: &CircuitBreaker) {
        if matches!(breaker.state(), BreakerState::Open { .. }) {
            return;
        }
        if let Ok(permit) = breaker.try_acquire() {
            permit.failure();
        }
    }

    /// One attempt on `model`: the breaker's permit, the inner turn, and the notices of the
    /// server's own retries of failed calls counted on the breaker (leaving the model once it
    /// opens, when a fallback can take the turn). A rate limit the server waits out is
    /// backpressure, not a sick model: it is announced, not counted. When the breaker refuses
    /// (every candidate's breaker is open), the error comes with the time until it lets a
    /// probe through.
    async fn attempt(
        &self,
        session: &B::Session,
        turn: &TurnRequest,
        model: Option<ModelSpec>,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, (BackendError, Option<Duration>)> {
        let breaker = self.breaker(model.as_ref());
        let permit = breaker.try_acquire().map_err(|rejected| {
            let wait = rejected.retry_in;
            (
                BackendError::Unavailable {
                    status: None,
                    message: rejected.to_string(),
                },
                wait,
            )
        })?;
        let leave = stop.child_token();
        let absorbed = AtomicU32::new(0);
        let primary = turn.model.as_ref();
        let sink = |notice: TurnNotice| {
            if let TurnNotice::UpstreamRetry {
                rate_limited: false,
                ..
            } = notice
            {
                absorbed.fetch_add(1, Ordering::Relaxed);
                Self::absorbed_failure(&breaker);
                if self.is_open(model.as_ref()) && self.pick_model(primary) != model {
                    leave.cancel();
                }
            }
            notices(notice);
        };
        let request = TurnRequest {
            model: model.clone(),
            ..turn.clone()
        };
        let result = self
            .inner
            .run_turn(session, request, deadline, &leave, &sink)
            .await;
        let result = match result {
            Err(BackendError::Stopped) if !stop.is_cancelled() => Err(BackendError::Unavailable {
                status: None,
                message: format!(
                    "the breaker of {} opened while the server retried it ({} errors); moving to a fallback model",
                    model_key(model.as_ref()),
                    absorbed.load(Ordering::Relaxed)
                ),
            }),
            other => other,
        };
        match &result {
            Err(BackendError::RateLimited { .. }) => drop(permit),
            Err(e) if e.is_transient() => permit.failure(),
            Err(BackendError::Stopped | BackendError::ServerLost { .. }) => drop(permit),
            _ => permit.success(),
        }
        result.map_err(|e| (e, None))
    }
}

impl<B: AgentBackend> AgentBackend for Guarded<B> {
    type Session = B::Session;

    forward_to_inner!(
        provision, open, rescope, abort, close, session_id, cleanup, notify
    );

    /// Runs the turn under a slot of its role, on its model or a fallback, retrying transient
    /// errors; `deadline` bounds each attempt (every attempt gets as long as the first).
    async fn run_turn(
        &self,
        session: &B::Session,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        // A retry goes first; the Commander agent's diagnoses (best effort) go last, and are
        // the work the memory gate refuses under pressure.
        let priority = if turn.role == AgentRole::Commander {
            Priority::Low
        } else if turn.attempt > 1 {
            Priority::High
        } else {
            Priority::Normal
        };
        let _slot = tokio::select! {
            token = self.controller.acquire(turn.role, priority) => match token {
                Ok(token) => token,
                Err(e @ AcquireError::MemoryPressure { .. }) => {
                    return Err(BackendError::Unavailable {
                        status: None,
                        message: e.to_string(),
                    });
                }
                Err(_) => return Err(BackendError::Stopped),
            },
            () = stop.cancelled() => return Err(BackendError::Stopped),
        };
        let budget = deadline.saturating_duration_since(Instant::now());
        let mut attempt = 1u32;
        loop {
            let model = self.pick_model(turn.model.as_ref());
            let result = self
                .attempt(
                    session,
                    &turn,
                    model,
                    Instant::now() + budget,
                    stop,
                    notices,
                )
                .await;
            match result {
                Ok(report) => {
                    self.controller.record_success(turn.role);
                    return Ok(report);
                }
                Err((e @ (BackendError::Stopped | BackendError::ServerLost { .. }), _)) => {
                    return Err(e);
                }
                Err((error, breaker_wait)) => {
                    let Some(delay) = self.retry_delay(attempt, &error) else {
                        self.controller.record_failure(turn.role);
                        return Err(error);
                    };
                    // An open breaker lets a probe through only after its recovery time.
                    let delay = delay.max(breaker_wait.unwrap_or_default());
                    attempt += 1;
                    notices(TurnNotice::Retrying {
                        attempt,
                        delay,
                        error: error.to_string(),
                    });
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return Err(BackendError::Stopped),
                    }
                }
            }
        }
    }

    /// The inner backend's figures, then `slots.<role>.*` and `breaker.<model>.*`.
    fn stats(&self) -> Vec<(String, f64)> {
        let mut out = self.inner.stats();
        let slots = self.controller.stats();
        if let Some(used) = slots.memory_used {
            out.push(("memory.used_ratio".into(), used));
        }
        for key in slots.keys {
            let name = key.key.to_string();
            out.push((format!("slots.{name}.limit"), key.limit as f64));
            out.push((format!("slots.{name}.cap"), key.cap as f64));
            out.push((format!("slots.{name}.scale_ups"), key.scale_ups as f64));
            out.push((format!("slots.{name}.scale_downs"), key.scale_downs as f64));
            if key.refused_memory > 0 {
                out.push((
                    format!("slots.{name}.refused_memory"),
                    key.refused_memory as f64,
                ));
            }
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
    use crate::backend::simulated::SimulatedBackend;
    use crate::backend::{EditScope, SessionSpec};

    fn guard(retry: RetryPolicy, fallbacks: Vec<ModelSpec>) -> Guarded<SimulatedBackend> {
        Guarded::new(
            SimulatedBackend::builder().build(),
            &GuardConfig {
                workers: 2,
                reviewers: 1,
                retry,
                breaker: BreakerConfig {
                    failure_threshold: 2,
                    ..BreakerConfig::default()
                },
                autoscale: true,
                fallbacks,
                memory: None,
            },
        )
    }

    #[tokio::test]
    async fn under_memory_pressure_only_the_diagnoses_are_refused() {
        let reader = Arc::new(orch_core::FixedMemoryReader::new(0.95));
        let g = Guarded::new(
            SimulatedBackend::builder()
                .latency(crate::Latency::Fixed(Duration::ZERO))
                .build(),
            &GuardConfig {
                workers: 1,
                reviewers: 1,
                retry: RetryPolicy::default(),
                breaker: BreakerConfig::default(),
                autoscale: false,
                fallbacks: Vec::new(),
                memory: Some(reader),
            },
        );
        let stop = CancellationToken::new();
        let run = |role: AgentRole| {
            let g = &g;
            let stop = &stop;
            async move {
                let session = g
                    .open(SessionSpec {
                        role,
                        title: "t".into(),
                        scope: EditScope::none(),
                    })
                    .await
                    .unwrap();
                let turn = TurnRequest {
                    role,
                    agent: "a".into(),
                    model: None,
                    prompt: "p".into(),
                    scope: EditScope::none(),
                    item: None,
                    attempt: 1,
                };
                g.run_turn(
                    &session,
                    turn,
                    Instant::now() + Duration::from_secs(5),
                    stop,
                    &crate::backend::ignore_notices,
                )
                .await
            }
        };
        assert!(run(AgentRole::Worker).await.is_ok());
        let refused = run(AgentRole::Commander).await.unwrap_err();
        assert!(refused.to_string().contains("memory pressure"), "{refused}");
        let stats = g.stats();
        assert!(
            stats.contains(&("slots.role:commander.refused_memory".to_owned(), 1.0)),
            "{stats:?}"
        );
    }

    #[test]
    fn retry_honours_retry_after_and_gives_up_on_session_errors() {
        let g = guard(RetryPolicy::default().without_jitter(), Vec::new());
        let limited = BackendError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "slow".into(),
        };
        assert_eq!(g.retry_delay(1, &limited), Some(Duration::from_secs(7)));
        let net = BackendError::Unavailable {
            status: Some(500),
            message: "x".into(),
        };
        assert_eq!(g.retry_delay(1, &net), Some(Duration::from_secs(1)));
        assert_eq!(g.retry_delay(3, &net), Some(Duration::from_secs(4)));
        assert_eq!(g.retry_delay(5, &net), None);
        let session = BackendError::Session {
            message: "gone".into(),
        };
        assert_eq!(g.retry_delay(1, &session), None);
    }

    #[test]
    fn an_open_breaker_moves_turns_to_a_fallback_model() {
        let primary = ModelSpec::new("p", "main");
        let fallback = ModelSpec::new("p", "backup");
        let g = guard(RetryPolicy::default(), vec![fallback.clone()]);
        assert_eq!(g.pick_model(Some(&primary)), Some(primary.clone()));
        for _ in 0..2 {
            Guarded::<SimulatedBackend>::absorbed_failure(&g.breaker(Some(&primary)));
        }
        assert_eq!(g.pick_model(Some(&primary)), Some(fallback));
        let stats = g.stats();
        assert!(
            stats.contains(&("breaker.p/main.state".to_owned(), 2.0)),
            "{stats:?}"
        );
    }
}
