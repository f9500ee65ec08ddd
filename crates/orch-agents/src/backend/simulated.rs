//! A simulated backend: configurable latency, failures and token use, no server.
//!
//! It runs the same pipeline code paths as the OpenCode backend, for dry runs, tests and
//! benchmarks. Answers come from a responder function (by default: the configured plan for
//! the Planner, a summary for Workers, `VERDICT: PASS` for the Reviewer).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_core::AgentRole;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    AgentBackend, BackendError, Disposition, EditScope, NoticeSink, SessionSpec, TokenUsage,
    TurnReport, TurnRequest,
};

/// A latency distribution for simulated turns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Always the same.
    Fixed(Duration),
    /// Uniform between the bounds.
    Uniform {
        /// Lower bound.
        min: Duration,
        /// Upper bound.
        max: Duration,
    },
    /// Log-normal around a median (`sigma` is the spread of the log), the usual shape of
    /// model latencies.
    LogNormal {
        /// The median.
        median: Duration,
        /// Standard deviation of `ln(latency)`.
        sigma: f64,
    },
}

impl Latency {
    /// Draws one latency.
    pub fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } if max > min => {
                let span = (max - min).as_nanos() as f64;
                min + Duration::from_nanos((rng.f64() * span) as u64)
            }
            Latency::Uniform { min, .. } => min,
            Latency::LogNormal { median, sigma } => {
                // Box-Muller: a standard normal from two uniforms.
                let u1 = rng.f64().max(f64::MIN_POSITIVE);
                let u2 = rng.f64();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                median.mul_f64((sigma * z).exp())
            }
        }
    }
}

/// The answer function: the text of a turn, or an error.
pub type Responder = Arc<dyn Fn(&TurnRequest) -> Result<String, BackendError> + Send + Sync>;

/// A simulated session.
#[derive(Debug)]
pub struct SimSession {
    id: u64,
    role: AgentRole,
    scope: Mutex<EditScope>,
}

impl SimSession {
    /// A unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The role it was opened for.
    pub fn role(&self) -> AgentRole {
        self.role
    }

    /// What it may edit now.
    pub fn scope(&self) -> EditScope {
        self.scope.lock().clone()
    }
}

/// Counters of a [`SimulatedBackend`].
#[derive(Debug, Default)]
struct Counters {
    opened: AtomicU64,
    closed: AtomicU64,
    turns: AtomicU64,
    failures: AtomicU64,
    aborts: AtomicU64,
    cleaned: AtomicU64,
}

/// The simulated backend. Build one with [`SimulatedBackend::builder`].
pub struct SimulatedBackend {
    latency: Latency,
    failure_rate: f64,
    tokens: (u64, u64),
    responder: Responder,
    rng: Mutex<fastrand::Rng>,
    next_id: AtomicU64,
    counters: Counters,
}

impl fmt::Debug for SimulatedBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedBackend")
            .field("latency", &self.latency)
            .field("failure_rate", &self.failure_rate)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

/// Configures a [`SimulatedBackend`].
pub struct SimulatedBackendBuilder {
    latency: Latency,
    failure_rate: f64,
    tokens: (u64, u64),
    plan: String,
    responder: Option<Responder>,
    seed: u64,
}

impl fmt::Debug for SimulatedBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimulatedBackendBuilder")
            .field("latency", &self.latency)
            .field("failure_rate", &self.failure_rate)
            .finish_non_exhaustive()
    }
}

/// The plan the default responder's Planner answers with.
pub const DEFAULT_PLAN: &str = "\
# Simulated mission

- [ ] T1: first step
  - files: a.txt
- [ ] T2: second step
  - files: b.txt
  - deps: T1
- [ ] T3: independent step
  - files: c.txt
";

impl SimulatedBackendBuilder {
    /// Defaults: 10 ms fixed latency, no failures, 1,000 input and 100 output tokens a turn,
    /// [`DEFAULT_PLAN`], seed 1.
    pub fn new() -> Self {
        SimulatedBackendBuilder {
            latency: Latency::Fixed(Duration::from_millis(10)),
            failure_rate: 0.0,
            tokens: (1_000, 100),
            plan: DEFAULT_PLAN.to_owned(),
            responder: None,
            seed: 1,
        }
    }

    /// The latency of every turn.
    #[must_use]
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// The probability (0..=1) that a turn fails with a transient error (HTTP 500).
    #[must_use]
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate.clamp(0.0, 1.0);
        self
    }

    /// Tokens reported per turn.
    #[must_use]
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.tokens = (input, output);
        self
    }

    /// The plan the default Planner answers with.
    #[must_use]
    pub fn plan(mut self, plan: impl Into<String>) -> Self {
        self.plan = plan.into();
        self
    }

    /// Replaces the default responder.
    #[must_use]
    pub fn responder(
        mut self,
        responder: impl Fn(&TurnRequest) -> Result<String, BackendError> + Send + Sync + 'static,
    ) -> Self {
        self.responder = Some(Arc::new(responder));
        self
    }

    /// Seeds the random draws (latency, failures), for reproducible runs.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Builds the backend.
    pub fn build(self) -> SimulatedBackend {
        let plan = self.plan;
        let responder = self.responder.unwrap_or_else(|| {
            Arc::new(move |turn: &TurnRequest| {
                Ok(match turn.role {
                    AgentRole::Planner => plan.clone(),
                    AgentRole::Worker => "Implemented the item.".to_owned(),
                    AgentRole::Reviewer => "Checked.\nVERDICT: PASS".to_owned(),
                    AgentRole::Commander => "No change needed.".to_owned(),
                })
            })
        });
        SimulatedBackend {
            latency: self.latency,
            failure_rate: self.failure_rate,
            tokens: self.tokens,
            responder,
            rng: Mutex::new(fastrand::Rng::with_seed(self.seed)),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
        }
    }
}

impl Default for SimulatedBackendBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SimulatedBackend {
    /// A builder with the defaults of [`SimulatedBackendBuilder::new`].
    pub fn builder() -> SimulatedBackendBuilder {
        SimulatedBackendBuilder::new()
    }

    /// Turns run so far (finished or failed).
    pub fn turns(&self) -> u64 {
        self.counters.turns.load(Ordering::Relaxed)
    }

    /// Sessions of earlier runs closed through [`AgentBackend::cleanup`].
    pub fn cleaned_up(&self) -> u64 {
        self.counters.cleaned.load(Ordering::Relaxed)
    }

    /// Sessions opened and not yet closed.
    pub fn open_sessions(&self) -> u64 {
        self.counters.opened.load(Ordering::Relaxed) - self.counters.closed.load(Ordering::Relaxed)
    }
}

impl AgentBackend for SimulatedBackend {
    type Session = SimSession;

    async fn open(&self, spec: SessionSpec) -> Result<SimSession, BackendError> {
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        Ok(SimSession {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            role: spec.role,
            scope: Mutex::new(spec.scope),
        })
    }

    async fn rescope(&self, session: &SimSession, scope: &EditScope) -> Result<(), BackendError> {
        session.scope.lock().clone_from(scope);
        Ok(())
    }

    async fn run_turn(
        &self,
        _session: &SimSession,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        _notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        let started = Instant::now();
        let (latency, fails) = {
            let mut rng = self.rng.lock();
            let latency = self.latency.sample(&mut rng);
            (latency, rng.f64() < self.failure_rate)
        };
        let done_at = started + latency;
        if latency.is_zero() {
            // An instant turn: no timer (tokio's has millisecond ticks), just a yield.
            tokio::task::yield_now().await;
            if stop.is_cancelled() {
                self.counters.aborts.fetch_add(1, Ordering::Relaxed);
                return Err(BackendError::Stopped);
            }
        } else {
            tokio::select! {
                () = tokio::time::sleep_until(done_at.min(deadline)) => {}
                () = stop.cancelled() => {
                    self.counters.aborts.fetch_add(1, Ordering::Relaxed);
                    return Err(BackendError::Stopped);
                }
            }
        }
        self.counters.turns.fetch_add(1, Ordering::Relaxed);
        if done_at > deadline {
            self.counters.aborts.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::Timeout {
                after: started.elapsed(),
            });
        }
        if fails {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
            return Err(BackendError::Unavailable {
                status: Some(500),
                message: "simulated model failure".into(),
            });
        }
        let text = (self.responder)(&turn)?;
        Ok(TurnReport {
            text,
            tokens: TokenUsage {
                input: self.tokens.0,
                output: self.tokens.1,
                ..TokenUsage::default()
            },
            cost: 0.0,
            tool_calls: Vec::new(),
            permissions: Vec::new(),
            model: turn.model.map(|m| m.to_string()),
            elapsed: started.elapsed(),
        })
    }

    async fn abort(&self, _session: &SimSession) -> Result<(), BackendError> {
        self.counters.aborts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn close(
        &self,
        _session: SimSession,
        _disposition: Disposition,
    ) -> Result<(), BackendError> {
        self.counters.closed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn session_id(&self, session: &SimSession) -> String {
        format!("sim-{}", session.id)
    }

    async fn cleanup(&self, sessions: Vec<String>) {
        self.counters
            .cleaned
            .fetch_add(sessions.len() as u64, Ordering::Relaxed);
    }

    fn stats(&self) -> Vec<(String, f64)> {
        let c = &self.counters;
        vec![
            (
                "sim.sessions_opened".into(),
                c.opened.load(Ordering::Relaxed) as f64,
            ),
            ("sim.turns".into(), c.turns.load(Ordering::Relaxed) as f64),
            (
                "sim.failures".into(),
                c.failures.load(Ordering::Relaxed) as f64,
            ),
            ("sim.aborts".into(), c.aborts.load(Ordering::Relaxed) as f64),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: AgentRole) -> TurnRequest {
        TurnRequest {
            role,
            agent: format!("orch-{}", role.as_str()),
            model: None,
            prompt: "p".into(),
            scope: EditScope::none(),
            item: None,
            attempt: 1,
        }
    }

    fn spec(role: AgentRole) -> SessionSpec {
        SessionSpec {
            role,
            title: "t".into(),
            scope: EditScope::none(),
        }
    }

    #[test]
    fn latency_distributions_stay_in_shape() {
        let mut rng = fastrand::Rng::with_seed(7);
        let uniform = Latency::Uniform {
            min: Duration::from_millis(10),
            max: Duration::from_millis(20),
        };
        for _ in 0..1000 {
            let d = uniform.sample(&mut rng);
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        let lognormal = Latency::LogNormal {
            median: Duration::from_millis(100),
            sigma: 0.5,
        };
        let mut samples: Vec<Duration> = (0..2001).map(|_| lognormal.sample(&mut rng)).collect();
        samples.sort();
        let median = samples[1000].as_secs_f64();
        assert!((0.085..0.115).contains(&median), "median {median}");
    }

    #[tokio::test(start_paused = true)]
    async fn turns_take_their_latency_and_answer_by_role() {
        let backend = SimulatedBackend::builder()
            .latency(Latency::Fixed(Duration::from_millis(250)))
            .build();
        let session = backend.open(spec(AgentRole::Reviewer)).await.unwrap();
        let stop = CancellationToken::new();
        let started = Instant::now();
        let report = backend
            .run_turn(
                &session,
                turn(AgentRole::Reviewer),
                Instant::now() + Duration::from_secs(5),
                &stop,
                &crate::backend::ignore_notices,
            )
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(250));
        assert!(report.text.ends_with("VERDICT: PASS"));
        assert_eq!(report.tokens.input, 1_000);
        backend.close(session, Disposition::Reusable).await.unwrap();
        assert_eq!(backend.open_sessions(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_and_stop_end_a_turn() {
        let backend = SimulatedBackend::builder()
            .latency(Latency::Fixed(Duration::from_secs(10)))
            .build();
        let session = backend.open(spec(AgentRole::Worker)).await.unwrap();
        let stop = CancellationToken::new();
        let err = backend
            .run_turn(
                &session,
                turn(AgentRole::Worker),
                Instant::now() + Duration::from_secs(1),
                &stop,
                &crate::backend::ignore_notices,
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            BackendError::Timeout {
                after: Duration::from_secs(1)
            }
        );
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.cancel();
        });
        let err = backend
            .run_turn(
                &session,
                turn(AgentRole::Worker),
                Instant::now() + Duration::from_secs(60),
                &stop,
                &crate::backend::ignore_notices,
            )
            .await
            .unwrap_err();
        assert_eq!(err, BackendError::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_produces_transient_errors() {
        let backend = SimulatedBackend::builder()
            .failure_rate(0.5)
            .seed(3)
            .build();
        let session = backend.open(spec(AgentRole::Worker)).await.unwrap();
        let stop = CancellationToken::new();
        let mut failures = 0;
        for _ in 0..200 {
            let deadline = Instant::now() + Duration::from_secs(1);
            if let Err(e) = backend
                .run_turn(
                    &session,
                    turn(AgentRole::Worker),
                    deadline,
                    &stop,
                    &crate::backend::ignore_notices,
                )
                .await
            {
                assert!(e.is_transient());
                failures += 1;
            }
        }
        assert!((70..130).contains(&failures), "{failures} failures of 200");
    }
}
