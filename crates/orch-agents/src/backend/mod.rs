//! The seam between the mission and whatever runs agent turns.
//!
//! [`AgentBackend`] speaks the mission's own vocabulary — a role, an [`EditScope`], a
//! [`ModelSpec`], a [`Disposition`] — so that any runner plugs in without dragging another's
//! types along: OpenCode ([`opencode::OpencodeBackend`]), several OpenCode servers
//! ([`multi::MultiBackend`]), or a simulation ([`simulated::SimulatedBackend`]). Policies wrap
//! a backend the way tower's layers wrap a service and implement the same trait:
//! [`guard::Guarded`] (a slot per role, a breaker per model, fallback models, retries of
//! transient errors) and [`hooks::Hooked`] (the user's hooks around each turn).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use orch_core::AgentRole;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Writes the methods of an [`AgentBackend`] layer that only pass the call to `self.inner`:
/// `forward_to_inner!(open, rescope, abort, close, session_id, cleanup, notify, provision)`.
macro_rules! forward_to_inner {
    ($($method:ident),* $(,)?) => { $( forward_to_inner!(@one $method); )* };
    (@one provision) => {
        fn provision(&self, role: orch_core::AgentRole, sessions: usize) {
            self.inner.provision(role, sessions);
        }
    };
    (@one open) => {
        async fn open(
            &self,
            spec: $crate::backend::SessionSpec,
        ) -> Result<Self::Session, $crate::backend::BackendError> {
            self.inner.open(spec).await
        }
    };
    (@one rescope) => {
        async fn rescope(
            &self,
            session: &Self::Session,
            scope: &$crate::backend::EditScope,
        ) -> Result<(), $crate::backend::BackendError> {
            self.inner.rescope(session, scope).await
        }
    };
    (@one abort) => {
        async fn abort(&self, session: &Self::Session) -> Result<(), $crate::backend::BackendError> {
            self.inner.abort(session).await
        }
    };
    (@one close) => {
        async fn close(
            &self,
            session: Self::Session,
            disposition: $crate::backend::Disposition,
        ) -> Result<(), $crate::backend::BackendError> {
            self.inner.close(session, disposition).await
        }
    };
    (@one session_id) => {
        fn session_id(&self, session: &Self::Session) -> String {
            self.inner.session_id(session)
        }
    };
    (@one cleanup) => {
        async fn cleanup(&self, sessions: Vec<String>) {
            self.inner.cleanup(sessions).await;
        }
    };
    (@one notify) => {
        async fn notify(&self, message: &str) {
            self.inner.notify(message).await;
        }
    };
    (@one stats) => {
        fn stats(&self) -> Vec<(String, f64)> {
            self.inner.stats()
        }
    };
}

pub mod any;
pub mod guard;
pub mod hooks;
pub mod multi;
pub mod opencode;
pub mod opencode2;
pub(crate) mod places;
pub mod simulated;

/// What a session may do, and where: the files it may edit (relative to its directory;
/// empty: none), the shell commands it may run (glob patterns, `*` matching anything; empty:
/// what its agent allows), and the directory it works in (`None`: the backend's project
/// directory; a git mission's worktree otherwise). A backend enforces it its own way
/// (OpenCode: per-session permission rules, and requests outside it rejected).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EditScope {
    files: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    commands: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dir: Option<std::path::PathBuf>,
}

impl EditScope {
    /// No file may be edited.
    pub fn none() -> Self {
        EditScope::default()
    }

    /// Exactly these files.
    pub fn files(files: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EditScope {
            files: files.into_iter().map(Into::into).collect(),
            ..EditScope::default()
        }
    }

    /// This scope, in `dir` (an absolute directory): the session works there, and its files
    /// are relative to it.
    #[must_use]
    pub fn within(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// This scope, allowed to run exactly the shell commands matching `patterns` (`python3 -m
    /// unittest*`) and no other; an empty list leaves commands to the agent's own rules.
    #[must_use]
    pub fn commands(mut self, patterns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.commands = patterns.into_iter().map(Into::into).collect();
        self
    }

    /// The files, as given.
    pub fn as_slice(&self) -> &[String] {
        &self.files
    }

    /// The shell commands allowed (glob patterns); empty when the agent's rules decide.
    pub fn allowed_commands(&self) -> &[String] {
        &self.commands
    }

    /// The directory the session works in (`None`: the backend's project directory).
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_deref()
    }

    /// Whether no file may be edited.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// A model as `provider/model` (`anthropic/claude-sonnet-4-5`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelSpec {
    provider: String,
    model: String,
}

impl ModelSpec {
    /// `ModelSpec::new("fake", "fake-model")`.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        ModelSpec {
            provider: provider.into(),
            model: model.into(),
        }
    }

    /// Parses `provider/model` (both parts non-empty; the model may contain `/`).
    pub fn parse(text: &str) -> Option<Self> {
        let (provider, model) = text.split_once('/')?;
        (!provider.is_empty() && !model.is_empty()).then(|| Self::new(provider, model))
    }

    /// The provider id.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The model id within the provider.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

impl TryFrom<String> for ModelSpec {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        ModelSpec::parse(&text).ok_or_else(|| format!("`{text}` is not provider/model"))
    }
}

impl From<ModelSpec> for String {
    fn from(spec: ModelSpec) -> String {
        spec.to_string()
    }
}

/// What becomes of a session given back with [`AgentBackend::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// It ended its turns cleanly: the backend may hand it out again (after its reset).
    Reusable,
    /// A turn failed or was abandoned in it: the backend tears it down safely.
    Broken,
}

/// What a session is opened for.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionSpec {
    /// The role the session plays.
    pub role: AgentRole,
    /// A title (OpenCode skips its title-generation call when one is given).
    pub title: String,
    /// What it may edit.
    pub scope: EditScope,
}

/// One turn to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnRequest {
    /// The role of the agent.
    pub role: AgentRole,
    /// The agent's name (`orch-worker`, or a user-defined one).
    pub agent: String,
    /// The model; `None` for the backend's default (a [`guard::Guarded`] layer fills it in
    /// from the agents and moves it to a fallback when its breaker is open).
    pub model: Option<ModelSpec>,
    /// The prompt text.
    pub prompt: String,
    /// What the turn may edit; edit requests outside it are rejected.
    pub scope: EditScope,
    /// The plan item the turn works on, if any (for notices and logs).
    pub item: Option<String>,
    /// The item's attempt (1 for a first attempt); a retry's turn gets its slot first.
    pub attempt: u32,
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
        /// The model that failed (`None`: the backend's default).
        model: Option<ModelSpec>,
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
    /// A transient error ended an attempt; the turn is tried again after `delay` (from
    /// [`guard::Guarded`]).
    Retrying {
        /// The attempt about to start (2 for the first retry).
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// The error retried.
        error: String,
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

/// A shared backend is a backend (the mission holds its backend in an `Arc`, and layers wrap
/// it).
impl<B: AgentBackend> AgentBackend for std::sync::Arc<B> {
    type Session = B::Session;

    fn provision(&self, role: AgentRole, sessions: usize) {
        (**self).provision(role, sessions);
    }

    fn open(
        &self,
        spec: SessionSpec,
    ) -> impl Future<Output = Result<Self::Session, BackendError>> + Send {
        (**self).open(spec)
    }

    fn rescope(
        &self,
        session: &Self::Session,
        scope: &EditScope,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        (**self).rescope(session, scope)
    }

    fn run_turn(
        &self,
        session: &Self::Session,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> impl Future<Output = Result<TurnReport, BackendError>> + Send {
        (**self).run_turn(session, turn, deadline, stop, notices)
    }

    fn abort(
        &self,
        session: &Self::Session,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        (**self).abort(session)
    }

    fn close(
        &self,
        session: Self::Session,
        disposition: Disposition,
    ) -> impl Future<Output = Result<(), BackendError>> + Send {
        (**self).close(session, disposition)
    }

    fn session_id(&self, session: &Self::Session) -> String {
        (**self).session_id(session)
    }

    fn cleanup(&self, sessions: Vec<String>) -> impl Future<Output = ()> + Send {
        (**self).cleanup(sessions)
    }

    fn notify(&self, message: &str) -> impl Future<Output = ()> + Send {
        (**self).notify(message)
    }

    fn stats(&self) -> Vec<(String, f64)> {
        (**self).stats()
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

    /// Changes what the session may edit (a reused Worker session moving to a new item).
    fn rescope(
        &self,
        session: &Self::Session,
        scope: &EditScope,
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

    /// Gives the session back, [`Disposition::Reusable`] or [`Disposition::Broken`] (torn
    /// down). How a reusable one is reset before its next use is the backend's business.
    fn close(
        &self,
        session: Self::Session,
        disposition: Disposition,
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
