//! Runs a mission through server loss: reconnect (or restart), then resume.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::{AgentBackend, BackendError};
use crate::events::{MissionEvent, MissionReport, MissionStatus};
use crate::mission::{Mission, MissionError, MissionSpec};

/// Runs a mission and, when the OpenCode server goes away, gets a new backend from `connect`
/// and resumes the mission from its `TODO.md` and journal, at most `max_restarts` times.
///
/// `connect(n)` is called with 0 for the first backend and 1, 2, … after a loss. For a server
/// the caller started, it restarts the server; for a remote one, it reconnects. A failing
/// `connect` is retried with backoff until `reconnect_timeout` has passed since the loss; then
/// the mission ends with a failed status saying so.
pub struct Supervisor<B: AgentBackend> {
    /// What every run gets (its stop signal as a child of this one).
    spec: MissionSpec,
    max_restarts: u32,
    reconnect_timeout: Duration,
    _backend: std::marker::PhantomData<fn() -> B>,
}

impl<B: AgentBackend> std::fmt::Debug for Supervisor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("spec", &self.spec)
            .field("max_restarts", &self.max_restarts)
            .finish_non_exhaustive()
    }
}

impl<B: AgentBackend> Supervisor<B> {
    /// A supervisor of `spec` with 3 restarts and a 60 s reconnection window.
    pub fn new(spec: MissionSpec) -> Self {
        Supervisor {
            spec,
            max_restarts: 3,
            reconnect_timeout: Duration::from_secs(60),
            _backend: std::marker::PhantomData,
        }
    }

    /// How many times a lost server is replaced.
    #[must_use]
    pub fn max_restarts(mut self, restarts: u32) -> Self {
        self.max_restarts = restarts;
        self
    }

    /// How long to keep trying to reconnect after a loss.
    #[must_use]
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// The mission it runs (its stop signal, its events).
    pub fn spec(&self) -> &MissionSpec {
        &self.spec
    }

    /// Runs the mission to its end. The report is the last run's; `restarts` says how many
    /// times the server was replaced.
    ///
    /// # Errors
    /// As [`Mission::run`]; a `connect` that fails for good ends the mission with a failed
    /// status, not an error.
    pub async fn run<F, Fut>(self, mut connect: F) -> Result<(MissionReport, u32), MissionError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Arc<B>, BackendError>>,
    {
        let mut restarts = 0u32;
        let mut last_error = String::new();
        loop {
            let backend = match self
                .connect_with_backoff(&mut connect, restarts, &last_error)
                .await
            {
                Ok(backend) => backend,
                Err(reason) => return self.unreachable(reason).await.map(|r| (r, restarts)),
            };
            let mission = Mission::new(backend, self.spec.for_restart(restarts));
            let report = mission.run().await?;
            match &report.status {
                MissionStatus::ServerLost { reason }
                    if restarts < self.max_restarts && !self.spec.stop_handle().is_cancelled() =>
                {
                    restarts += 1;
                    last_error.clone_from(reason);
                    self.spec.publish(MissionEvent::Reconnecting {
                        attempt: restarts,
                        reason: reason.clone(),
                    });
                }
                _ => return Ok((report, restarts)),
            }
        }
    }

    async fn connect_with_backoff<F, Fut>(
        &self,
        connect: &mut F,
        attempt: u32,
        last_error: &str,
    ) -> Result<Arc<B>, String>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Arc<B>, BackendError>>,
    {
        let deadline = Instant::now() + self.reconnect_timeout;
        let stop = self.spec.stop_handle();
        let mut delay = Duration::from_millis(500);
        loop {
            match connect(attempt).await {
                Ok(backend) => return Ok(backend),
                Err(e)
                    if Instant::now() + delay < deadline
                        && !self.spec.stop_handle().is_cancelled() =>
                {
                    tracing::warn!(error = %e, "OpenCode server not reachable yet; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return Err("stopped while reconnecting".into()),
                    }
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
                Err(e) => {
                    return Err(if last_error.is_empty() {
                        format!("cannot reach the OpenCode server: {e}")
                    } else {
                        format!(
                            "the OpenCode server was lost ({last_error}) and did not come back within {}: {e}",
                            crate::backend::seconds(self.reconnect_timeout)
                        )
                    });
                }
            }
        }
    }

    /// The report of a mission whose server never came back: the plan as it stands, the
    /// figures of every earlier run from the journal.
    async fn unreachable(&self, reason: String) -> Result<MissionReport, MissionError> {
        let status = MissionStatus::Failed { reason };
        self.spec.publish(MissionEvent::Finished {
            status: status.clone(),
            rounds: 0,
        });
        let state = self.spec.state_dir();
        let store = orch_mvcc::TodoStore::open(&state)?;
        let (version, plan) = store.snapshot()?;
        let journal = crate::journal::Journal::read(&state)?;
        let totals = crate::totals::MissionTotals::from_records(&journal.records);
        Ok(crate::mission::report_of(
            self.spec.request().to_owned(),
            status,
            &plan,
            version,
            Default::default(),
            &totals,
        ))
    }
}
