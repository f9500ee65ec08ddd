//! The seam between the mission and whatever runs agent turns.

use std::future::Future;
use std::time::Duration;

use orch_core::AgentRole;
use orch_opencode::{ModelRef, PermissionRule};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub mod multi;
pub mod opencode;
pub mod simulated;

/// What a session is opened for.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    /// The role the session plays.
    pub role: AgentRole,
    /// A title (OpenCode skips its title-generation call when one is given).
    pub title: String,
    /// Per-session permission rules (a Worker's owned files).
    pub rules: Vec<PermissionRule>,
}

/// One turn to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRequest {
    /// The role of the agent.
    pub role: AgentRole,
    /// The agent's name (`orch-worker`, or a user-defined one).
    pub agent: String,
    /// The model; `None` for the backend's default.
    pub model: Option<ModelRef>,
    /// The prompt text.
    pub prompt: String,
    /// The files this turn may edit; edit requests for other files are rejected.
    pub allowed_edits: Vec<String>,
}

/// Token figures of a turn, as reported by the backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
    /// Reasoning tokens.
    pub reasoning: u64,
    /// Cache reads.
    pub cache_read: u64,
    /// Cache writes.
    pub cache_write: u64,
}

impl TokenUsage {
    /// Everything counted.
    pub fn total(&self) -> u64 {
        self.input + self.output + self.reasoning + self.cache_read + self.cache_write
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &TokenUsage) {
        self.input += other.input;
        self.output += other.output;
        self.reasoning += other.reasoning;
        self.cache_read += other.cache_read;
        self.cache_write += other.cache_write;
    }
}

/// A tool call the agent made during a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// The tool (`write`, `bash`, …).
    pub tool: String,
    /// Its final status (`completed`, `error`, …).
    pub status: String,
    /// A short rendering of its input, for loop detection and reports.
    pub input: String,
}

/// A permission request answered during a turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionDecision {
    /// The permission asked for (`edit`, `bash`, …).
    pub permission: String,
    /// The patterns (for `edit`, the file paths).
    pub patterns: Vec<String>,
    /// Whether it was allowed.
    pub allowed: bool,
}

/// What a finished turn produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TurnReport {
    /// The final assistant text.
    pub text: String,
    /// Token figures.
    pub tokens: TokenUsage,
    /// Cost in the provider's currency unit.
    pub cost: f64,
    /// The tool calls made, in order.
    pub tool_calls: Vec<ToolCallRecord>,
    /// Permission requests answered, in order.
    pub permissions: Vec<PermissionDecision>,
    /// The model that answered.
    pub model: Option<String>,
    /// Wall time of the turn.
    pub elapsed: Duration,
}

/// Something a backend reports while a turn runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TurnNotice {
    /// The server failed a model call and will retry it by itself (OpenCode does, for 429
    /// and 5xx answers): an outage the turn may still survive.
    UpstreamRetry {
        /// The server's attempt counter (1 for the first retry).
        attempt: u32,
        /// How long until the next attempt.
        wait: Duration,
        /// The provider's error message.
        message: String,
        /// The upstream HTTP status, when known.
        status: Option<u16>,
        /// Whether the provider is rate limiting.
        rate_limited: bool,
    },
}

/// Receives a turn's [`TurnNotice`]s as they happen.
pub type NoticeSink<'a> = &'a (dyn Fn(TurnNotice) + Send + Sync);

/// A [`NoticeSink`] that drops every notice.
pub fn ignore_notices(_: TurnNotice) {}

/// Why a turn or a session operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The model provider is rate limiting.
    #[error("rate limited{}: {message}", retry_after.map(|d| format!(" (retry after {})", seconds(d))).unwrap_or_default())]
    RateLimited {
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
        /// The provider's message.
        message: String,
    },
    /// A transient failure: a 5xx from the model, a lost connection, a server restart.
    #[error("temporarily unavailable{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Unavailable {
        /// The upstream HTTP status, when there was one.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
    /// The session reported an error that retrying will not fix (a 4xx from the model, an
    /// unknown agent or model, a vanished session).
    #[error("session error: {message}")]
    Session {
        /// What happened.
        message: String,
    },
    /// The turn did not end before its deadline (it was aborted).
    #[error("turn timed out after {}", seconds(*after))]
    Timeout {
        /// How long it ran.
        after: Duration,
    },
    /// The stop signal fired (the turn was aborted).
    #[error("stopped")]
    Stopped,
    /// The server is gone (connection refused, or the event stream and status polls failed).
    /// The mission ends with [`crate::MissionStatus::ServerLost`] without charging the item an
    /// attempt, so a supervisor can reconnect and resume.
    #[error("server lost: {message}")]
    ServerLost {
        /// What was seen.
        message: String,
    },
}

impl BackendError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BackendError::RateLimited { .. }
                | BackendError::Unavailable { .. }
                | BackendError::Timeout { .. }
        )
    }
}

/// A duration in messages for people: `850 ms`, `5.0 s`, `125 s`.
pub(crate) fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if d < Duration::from_secs(100) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} s", d.as_secs())
    }
}

/// Runs agent turns: OpenCode for real (`OpencodeBackend`) or simulated
/// ([`simulated::SimulatedBackend`]).
///
/// The mission opens a session per role (Workers: one per lane, reused across items and
/// re-scoped to each item's files), sends turns, waits for each with a deadline and the stop
/// signal, and closes sessions when done. Every method is cancellation-safe; no wait is
/// unbounded.
pub trait AgentBackend: Send + Sync + 'static {
    /// A session handle.
    type Session: Send + Sync + 'static;

    /// Says that the mission holds up to `sessions` sessions of `role` at once (one per Worker
    /// lane for the whole mission, one per concurrent review). A backend that pools sessions
    /// sizes the role's pool to at least that, so no `open` waits for a session that is never
    /// given back. Called before the first `open` of the role; the default does nothing.
    fn provision(&self, role: AgentRole, sessions: usize) {
        let _ = (role, sessions);
    }

    /// Opens (or takes from a pool) a session for `spec.role`, with `spec.rules` in force.
    fn open(
        &self,
        spec: SessionSpec,
    ) -> impl Future<Output = Result<Self::Session, BackendError>> + Send;

    /// Replaces the session's per-session permission rules (a reused Worker session moving
    /// to a new item).
    fn rescope(
        &self,
        session: &Self::Session,
        rules: Vec<PermissionRule>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Runs one turn to its end: sends it, answers permission requests by `turn.allowed_edits`,
    /// and waits until the turn is over, `deadline` passes (the turn is aborted:
    /// [`BackendError::Timeout`]) or `stop` fires (aborted: [`BackendError::Stopped`]).
    /// What happens on the way (the server retrying a failed model call) goes to `notices`.
    fn run_turn(
        &self,
        session: &Self::Session,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> impl Future<Output = Result<TurnReport, BackendError>> + Send;

    /// Aborts whatever the session is running.
    fn abort(
        &self,
        session: &Self::Session,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Clears the session's context for reuse (OpenCode: compaction).
    fn reset(
        &self,
        session: &Self::Session,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Gives the session back: reusable (`broken = false`) or to be torn down.
    fn close(
        &self,
        session: Self::Session,
        broken: bool,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The backend's id of a session (for the journal).
    fn session_id(&self, session: &Self::Session) -> String;

    /// Closes sessions a previous process left open (ids from the journal). Best effort.
    fn cleanup(&self, sessions: Vec<String>) -> impl Future<Output = ()> + Send {
        let _ = sessions;
        async {}
    }

    /// Tells a person watching the backend (OpenCode: a TUI toast). Best effort; the default
    /// does nothing.
    fn notify(&self, message: &str) -> impl Future<Output = ()> + Send {
        let _ = message;
        async {}
    }

    /// Figures for the report (pool hit rates and the like), as `(name, value)` pairs.
    fn stats(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_give_durations_as_people_read_them() {
        let timeout = BackendError::Timeout {
            after: Duration::from_nanos(5_015_087_281),
        };
        assert_eq!(timeout.to_string(), "turn timed out after 5.0 s");
        let limited = BackendError::RateLimited {
            retry_after: Some(Duration::from_millis(250)),
            message: "slow down".into(),
        };
        assert_eq!(
            limited.to_string(),
            "rate limited (retry after 250 ms): slow down"
        );
    }
}
