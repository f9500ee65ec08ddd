//! A backend wrapper that records when every turn ran, for bounds and overhead figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_agents::{
    AgentBackend, AgentRole, BackendError, Disposition, EditScope, SessionSpec, TurnReport,
    TurnRequest,
};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One turn as seen from outside the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRecord {
    /// The role.
    pub role: AgentRole,
    /// The item the turn was for (parsed from the prompt), if any.
    pub item: Option<String>,
    /// When the mission called `run_turn`, since the recorder was built.
    pub start: Duration,
    /// When `run_turn` returned.
    pub end: Duration,
    /// Whether it succeeded.
    pub ok: bool,
    /// The backend's id of the session it ran in.
    pub session: String,
}

/// Wraps a backend and records every turn and the peak concurrency.
#[derive(Debug)]
pub struct Recorder<B> {
    inner: B,
    t0: Instant,
    /// `t0` as milliseconds since the Unix epoch (to line turns up with other logs).
    t0_unix_ms: u64,
    log: Mutex<Vec<TurnRecord>>,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
}

/// The item id in a Worker (`Your item: T1: …`) or Reviewer (`Review item T1: …`) prompt.
pub fn item_of(prompt: &str) -> Option<String> {
    for marker in ["\nYour item: ", "\nReview item "] {
        if let Some(pos) = prompt.find(marker) {
            let rest = &prompt[pos + marker.len()..];
            let end = rest.find(':')?;
            return Some(rest[..end].to_owned());
        }
    }
    None
}

fn bump_peak(counter: &AtomicU64, peak: &AtomicU64) {
    let now = counter.fetch_add(1, Ordering::Relaxed) + 1;
    peak.fetch_max(now, Ordering::Relaxed);
}

impl<B> Recorder<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Recorder {
            inner,
            t0: Instant::now(),
            t0_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            log: Mutex::new(Vec::new()),
            in_flight: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
        }
    }

    /// Time since the recorder was built (the clock of [`TurnRecord`]).
    pub fn clock(&self) -> Duration {
        self.t0.elapsed()
    }

    /// The recorder's clock at a time given in milliseconds since the Unix epoch (as the
    /// scripted model's [`RecordedRequest::at_ms`](orch_testkit::RecordedRequest)), saturating at 0.
    pub fn clock_at_unix_ms(&self, unix_ms: u64) -> Duration {
        Duration::from_millis(unix_ms.saturating_sub(self.t0_unix_ms))
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Every turn so far, in completion order.
    pub fn turns(&self) -> Vec<TurnRecord> {
        self.log.lock().clone()
    }

    /// The most turns that ran at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    /// The most sessions open at once.
    pub fn peak_open_sessions(&self) -> u64 {
        self.peak_open.load(Ordering::Relaxed)
    }

    /// Successful turns per `(role, item)`.
    pub fn counts(&self) -> HashMap<(AgentRole, String), u32> {
        let mut out = HashMap::new();
        for t in self.log.lock().iter().filter(|t| t.ok) {
            if let Some(item) = &t.item {
                *out.entry((t.role, item.clone())).or_insert(0) += 1;
            }
        }
        out
    }
}

impl<B: AgentBackend> AgentBackend for Recorder<B> {
    type Session = B::Session;

    fn provision(&self, role: AgentRole, sessions: usize) {
        self.inner.provision(role, sessions);
    }

    async fn open(&self, spec: SessionSpec) -> Result<Self::Session, BackendError> {
        let s = self.inner.open(spec).await?;
        bump_peak(&self.open, &self.peak_open);
        Ok(s)
    }

    async fn rescope(
        &self,
        session: &Self::Session,
        scope: &EditScope,
    ) -> Result<(), BackendError> {
        self.inner.rescope(session, scope).await
    }

    async fn run_turn(
        &self,
        session: &Self::Session,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: orch_agents::NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        let role = turn.role;
        let item = item_of(&turn.prompt);
        let id = self.inner.session_id(session);
        bump_peak(&self.in_flight, &self.peak_in_flight);
        let start = self.t0.elapsed();
        let result = self
            .inner
            .run_turn(session, turn, deadline, stop, notices)
            .await;
        let end = self.t0.elapsed();
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.log.lock().push(TurnRecord {
            role,
            item,
            start,
            end,
            ok: result.is_ok(),
            session: id,
        });
        result
    }

    async fn abort(&self, session: &Self::Session) -> Result<(), BackendError> {
        self.inner.abort(session).await
    }

    async fn close(
        &self,
        session: Self::Session,
        disposition: Disposition,
    ) -> Result<(), BackendError> {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.inner.close(session, disposition).await
    }

    fn session_id(&self, session: &Self::Session) -> String {
        self.inner.session_id(session)
    }

    async fn cleanup(&self, sessions: Vec<String>) {
        self.inner.cleanup(sessions).await;
    }

    fn stats(&self) -> Vec<(String, f64)> {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_parsed_from_worker_and_reviewer_prompts() {
        assert_eq!(
            item_of("Mission: x\n\nYour item: T12: do it\nFiles"),
            Some("T12".into())
        );
        assert_eq!(
            item_of("ctx\nReview item D3-7: thing\n"),
            Some("D3-7".into())
        );
        assert_eq!(item_of("Every item is done."), None);
    }
}
