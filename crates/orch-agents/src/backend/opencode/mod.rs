//! The real backend: sessions on an OpenCode server, pooled per role.
//!
//! - Sessions come from an [`orch_pool::KeyedPool`] keyed by role. The [`SessionManager`]
//!   creates them (titled, so OpenCode makes no title call), health-checks idle ones, and
//!   deletes a session only through [`Client::close_session`]: abort, reject its pending
//!   permissions, wait until OpenCode reports it idle, settle, delete. A session is never
//!   deleted while it is still written to.
//! - What happens to a used session is the [`SessionReset`] policy. The default,
//!   [`SessionReset::Replace`], never pays a model call to reset one: a session that ran a turn
//!   is closed safely in the background and a clean one, created ahead of time (the pool keeps
//!   [`OpencodeBackendConfig::warm_sessions`] idle sessions per role it has seen), takes its
//!   place, so `open` is a pool hit on a clean session. [`SessionReset::Compact`] resets by
//!   compaction in the background once the session is returned; [`SessionReset::Keep`] reuses
//!   it with its history.
//! - Worker permissions are enforced by OpenCode itself: per-session rules ask for every edit
//!   and allow the item's files ([`worker_session_rules`]); the edit requests that
//!   still reach us are answered by policy while the turn runs (allowed inside the item's
//!   files, rejected with a message otherwise), so no request is ever left pending.
//! - A turn is `prompt_async` with our own message id, awaited through the event router
//!   ([`orch_opencode::TurnWaiter`]) with a deadline and the stop signal; a turn that is given
//!   up on is aborted on the server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_core::AgentRole;
use orch_opencode::{
    Client, EventKind, EventRouter, KindSet, MessageId, ModelRef, PermissionReply,
    PermissionRequest, Prompt, RouterConfig, SessionId, Toast, TurnError, TurnOutput,
    UpdateSession,
};
use orch_pool::{KeyedPool, PoolError, PooledResource};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{
    AgentBackend, BackendError, Disposition, EditScope, ModelSpec, NoticeSink, PermissionDecision,
    SessionSpec, TokenUsage, ToolCallRecord, TurnNotice, TurnReport, TurnRequest,
};

mod config;
mod errors;
use errors::{client_error, turn_error};
pub(crate) mod permissions;
mod places;
pub(crate) mod pool;

pub use config::{agent_entry, config_agents, install_spec};
pub use permissions::{edit_allowed, edit_patterns, session_rules, worker_session_rules};
pub use pool::{PooledSession, SessionManager, SessionReset};

/// The OpenCode form of a model.
fn model_ref(model: &ModelSpec) -> ModelRef {
    ModelRef::new(model.provider(), model.model())
}

/// How long the health check after a failed session request may take before the server
/// counts as lost.
const LOST_PROBE: Duration = Duration::from_secs(3);

/// A session handed to the mission.
#[derive(Debug)]
pub struct OpencodeSession {
    guard: PooledResource<SessionManager>,
    /// The backend of the session's directory, when it is not the main one (see
    /// [`EditScope::within`]).
    place: Option<Arc<OpencodeBackend>>,
}

impl OpencodeSession {
    /// The OpenCode session id.
    pub fn id(&self) -> &SessionId {
        &self.guard.id
    }
}

/// Settings of an [`OpencodeBackend`].
#[derive(Debug, Clone)]
pub struct OpencodeBackendConfig {
    /// Sessions kept per role at least (seed: 5). A mission raises its roles' limits to
    /// what it holds at once plus [`warm_sessions`](Self::warm_sessions) (see
    /// [`AgentBackend::provision`]), so any number of Worker lanes gets its sessions.
    pub max_per_role: usize,
    /// Times a session is reused before it is replaced (seed: 10).
    pub max_reuse: u32,
    /// Idle sessions are closed after this (seed: 5 min).
    pub idle_timeout: Duration,
    /// Idle sessions are health-checked this often (seed: 60 s).
    pub health_check: Duration,
    /// How long a session may take to become idle before it is deleted anyway.
    pub settle: Duration,
    /// The model used when a turn names none, and for compaction.
    pub default_model: Option<ModelSpec>,
    /// Show OpenCode toasts on item start, finish and mission end (best effort).
    pub toasts: bool,
    /// What happens to a session that ran turns (default [`SessionReset::Replace`]).
    pub reset: SessionReset,
    /// Idle, clean sessions kept ready per role once the role has been seen (default 2;
    /// [`OpencodeBackend::prewarm`] sets it for a role ahead of its first use). They are
    /// created in the background, within `max_per_role`, when sessions come back (or at once
    /// when a role has none ready left); 0 turns pre-warming off.
    pub warm_sessions: usize,
    /// A turn whose session shows no event for this long is probed over HTTP (a missed end
    /// is caught, a vanished session reported).
    pub silence_probe: Duration,
    /// Open every session as a child of this session (the user's, so the mission's sessions
    /// show under it in their TUI).
    pub parent_session: Option<String>,
    /// Keep the sessions that ran turns when they are retired (stopped, their permission
    /// requests rejected, but not deleted), so that the user sees the mission's work in
    /// their TUI afterwards; sessions that never ran a turn are still deleted. For servers
    /// the user runs; off by default.
    pub keep_used_sessions: bool,
}

impl Default for OpencodeBackendConfig {
    fn default() -> Self {
        OpencodeBackendConfig {
            max_per_role: 5,
            max_reuse: 10,
            idle_timeout: Duration::from_secs(300),
            health_check: Duration::from_secs(60),
            settle: Duration::from_secs(5),
            default_model: None,
            toasts: true,
            reset: SessionReset::Replace,
            warm_sessions: 2,
            silence_probe: orch_opencode::DEFAULT_SILENCE_PROBE,
            parent_session: None,
            keep_used_sessions: false,
        }
    }
}

/// The OpenCode backend. Build it with [`OpencodeBackend::connect`].
#[derive(Debug)]
pub struct OpencodeBackend {
    client: Client,
    router: EventRouter,
    pool: KeyedPool<SessionManager>,
    default_model: Option<ModelSpec>,
    toasts: bool,
    keep_used_sessions: bool,
    silence_probe: Duration,
    reset: SessionReset,
    allowed: AtomicU64,
    rejected: AtomicU64,
    /// Used sessions closed and replaced by clean ones ([`SessionReset::Replace`]).
    replaced: AtomicU64,
    /// The per-role floor of the pool ([`OpencodeBackendConfig::max_per_role`]) and the warm
    /// sessions kept on top of what a mission holds.
    max_per_role: usize,
    warm_sessions: usize,
    /// The settings, for the backends of other directories.
    config: OpencodeBackendConfig,
    /// Backends of the other directories sessions were opened in (a git mission's
    /// worktrees): OpenCode 1 scopes events, status and permission replies by directory, so
    /// each directory has its own client, event stream and pool.
    places: crate::backend::places::Places<OpencodeBackend>,
}

/// Counters of an [`OpencodeBackend`]'s session pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SessionPoolStats {
    /// `open` calls served by an idle session (no `POST /session` on the way).
    pub hits: u64,
    /// `open` calls that created their session on the way.
    pub misses: u64,
    /// Sessions created (on the way or ahead of time).
    pub created: u64,
    /// Sessions created ahead of time, in the background.
    pub prewarmed: u64,
    /// Sessions reset by compaction ([`SessionReset::Compact`]).
    pub resets: u64,
    /// Used sessions closed and replaced by clean ones ([`SessionReset::Replace`]).
    pub replaced: u64,
    /// Sessions handed to the safe close (replaced, broken, idle too long, at shutdown).
    pub closed: u64,
    /// Idle sessions now.
    pub idle: usize,
    /// Sessions now: idle, in use, being created or reset.
    pub live: usize,
}

impl OpencodeBackend {
    /// Connects to the server behind `client` (scoped to the project directory): opens the
    /// event stream and builds the session pool.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the event stream cannot be opened;
    /// [`BackendError::Session`] for an unusable pool configuration.
    pub async fn connect(
        client: Client,
        config: OpencodeBackendConfig,
    ) -> Result<Self, BackendError> {
        let router = EventRouter::connect(client.clone(), RouterConfig::default())
            .await
            .map_err(client_error)?;
        let manager = SessionManager {
            client: client.clone(),
            compaction_model: config.default_model.as_ref().map(model_ref),
            settle: config.settle,
            reset: config.reset,
            compactions: Arc::default(),
            parent: config.parent_session.clone().map(SessionId::new),
            keep_used: config.keep_used_sessions,
        };
        let recycle = pool::recycle_mode(&config);
        let pool = pool::build(manager, &config, recycle)?;
        Ok(OpencodeBackend {
            client,
            router,
            pool,
            default_model: config.default_model.clone(),
            toasts: config.toasts,
            keep_used_sessions: config.keep_used_sessions,
            silence_probe: config.silence_probe,
            reset: config.reset,
            allowed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            max_per_role: config.max_per_role,
            warm_sessions: config.warm_sessions,
            config,
            places: crate::backend::places::Places::default(),
        })
    }

    /// Keeps `n` clean idle sessions of `role` ready from now on (created in the background),
    /// so even the role's first `open` is a pool hit. Overrides
    /// [`OpencodeBackendConfig::warm_sessions`] for the role; 0 stops pre-warming it.
    pub fn prewarm(&self, role: AgentRole, n: usize) {
        self.pool.prewarm(role, n);
    }

    /// The session pool's counters.
    pub fn pool_stats(&self) -> SessionPoolStats {
        let pool = self.pool.stats();
        SessionPoolStats {
            hits: pool.hits,
            misses: pool.misses,
            created: pool.created,
            prewarmed: pool.prewarmed,
            resets: self.pool.manager().compactions.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
            closed: pool.discarded,
            idle: pool.idle,
            live: pool.live,
        }
    }

    /// The client (scoped to the project directory).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Closes the pool (and those of the other directories sessions were opened in): idle
    /// sessions are deleted safely. Call when the mission is over.
    pub async fn shutdown(&self) {
        for place in self.places.all() {
            place.pool.close().await;
        }
        self.pool.close().await;
    }

    /// Whether the server answers its health route within a few seconds.
    pub async fn is_alive(&self) -> bool {
        matches!(
            tokio::time::timeout(LOST_PROBE, self.client.health()).await,
            Ok(Ok(_))
        )
    }

    /// `error`, unless the server is gone: a session that cannot be opened or used because
    /// the server no longer answers is a lost server (the mission charges no attempt and a
    /// supervisor replaces the server), whatever the failed request looked like.
    async fn lost_or(&self, error: BackendError) -> BackendError {
        if !matches!(
            error,
            BackendError::Unavailable { .. } | BackendError::Session { .. }
        ) {
            return error;
        }
        match tokio::time::timeout(LOST_PROBE, self.client.health()).await {
            Ok(Ok(_)) => error,
            Ok(Err(e)) => BackendError::ServerLost {
                message: format!("{error}; the server does not answer: {e}"),
            },
            Err(_) => BackendError::ServerLost {
                message: format!(
                    "{error}; the server does not answer its health check within {} s",
                    LOST_PROBE.as_secs()
                ),
            },
        }
    }

    /// Shows a toast in an attached OpenCode TUI (best effort; errors are ignored).
    pub async fn toast(&self, message: &str) {
        if self.toasts {
            let _ = self
                .client
                .show_toast(&Toast::new(orch_opencode::ToastVariant::Info, message))
                .await;
        }
    }

    /// The project directory the client is scoped to (`/` when unscoped).
    fn dir(&self) -> &std::path::Path {
        std::path::Path::new(self.client.directory().unwrap_or("/"))
    }

    /// Answers a permission request that reached us during a turn of `scope`, counts it, and
    /// records the decision.
    async fn answer(
        &self,
        session: &SessionId,
        request: &PermissionRequest,
        scope: &EditScope,
    ) -> PermissionDecision {
        let (reply, message) = permissions::decide(self.dir(), request, scope);
        let allowed = reply == PermissionReply::Once;
        if allowed {
            self.allowed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = self
            .client
            .reply_permission_with_message(&request.id, reply, message.as_deref())
            .await
        {
            warn!(%session, error = %e, "could not answer a permission request");
        }
        PermissionDecision {
            permission: request.permission.clone(),
            patterns: permissions::shown_paths(self.dir(), request),
            allowed,
        }
    }

    fn report(
        output: &TurnOutput,
        started: Instant,
        permissions: Vec<PermissionDecision>,
    ) -> TurnReport {
        let mut tool_calls = Vec::new();
        for message in &output.messages {
            for part in message.tool_parts() {
                let (status, input) = part
                    .state
                    .as_ref()
                    .map(|s| (s.status.to_string(), s.input.to_string()))
                    .unwrap_or_default();
                tool_calls.push(ToolCallRecord {
                    tool: part.tool.clone().unwrap_or_default(),
                    status,
                    input,
                });
            }
        }
        let model = output.last().and_then(|m| {
            m.info.model.as_ref().map(ToString::to_string).or_else(|| {
                match (&m.info.provider_id, &m.info.model_id) {
                    (Some(p), Some(id)) => Some(format!("{p}/{id}")),
                    _ => None,
                }
            })
        });
        TurnReport {
            text: output.text(),
            tokens: TokenUsage {
                input: output.tokens.input,
                output: output.tokens.output,
                reasoning: output.tokens.reasoning,
                cache_read: output.tokens.cache.read,
                cache_write: output.tokens.cache.write,
            },
            cost: output.cost,
            tool_calls,
            permissions,
            model,
            elapsed: started.elapsed(),
        }
    }
}

impl OpencodeBackend {
    fn provision_here(&self, role: AgentRole, sessions: usize) {
        let limit = (sessions + self.warm_sessions).max(self.max_per_role);
        self.pool.set_max_for_key(role, limit);
    }

    async fn open_here(&self, spec: SessionSpec) -> Result<OpencodeSession, BackendError> {
        let guard = match self.pool.get(spec.role).await {
            Ok(guard) => guard,
            Err(PoolError::Create { source, .. }) => {
                return Err(self.lost_or(client_error(source)).await);
            }
            Err(e) => {
                return Err(self
                    .lost_or(BackendError::Unavailable {
                        status: None,
                        message: format!("session pool: {e}"),
                    })
                    .await);
            }
        };
        let session = OpencodeSession { guard, place: None };
        if !spec.scope.is_empty() || !spec.scope.allowed_commands().is_empty() {
            self.rescope_here(&session, &spec.scope).await?;
        }
        Ok(session)
    }

    async fn rescope_here(
        &self,
        session: &OpencodeSession,
        scope: &EditScope,
    ) -> Result<(), BackendError> {
        // PATCH appends; the rules start with `edit *` so earlier items' files are cancelled.
        let rules = permissions::session_rules(self.dir(), scope);
        match self
            .client
            .update_session(
                session.id(),
                &UpdateSession::default().append_permission(rules),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.lost_or(client_error(e)).await),
        }
    }

    async fn run_turn_here(
        &self,
        session: &OpencodeSession,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        let started = Instant::now();
        let id = session.id().clone();
        let (retries_tx, mut retries) = tokio::sync::mpsc::unbounded_channel();
        let message_id = MessageId::generate();
        // Subscribe before prompting (no replay on OpenCode's event stream).
        let mut asks = self.router.subscribe_session_filtered(
            id.as_str(),
            KindSet::of(&[EventKind::PermissionAsked, EventKind::QuestionAsked]),
        );
        let waiter = self
            .router
            .turn(&id, &message_id)
            .probe_after(self.silence_probe)
            .notify_retries(retries_tx);
        let mut prompt = Prompt::text(turn.prompt)
            .message_id(message_id)
            .agent(turn.agent);
        let model = turn.model.or_else(|| self.default_model.clone());
        if let Some(model) = &model {
            prompt = prompt.model(model_ref(model));
        }
        if let Err(e) = self.client.prompt_async(&id, &prompt).await {
            return Err(self.lost_or(client_error(e)).await);
        }
        session.guard.dirty.store(true, Ordering::Release);
        session.guard.used.store(true, Ordering::Release);
        let mut permissions = Vec::new();
        let wait = waiter.wait(deadline);
        tokio::pin!(wait);
        let result = loop {
            tokio::select! {
                result = &mut wait => break result,
                Some(retry) = retries.recv() => notices(TurnNotice::UpstreamRetry {
                    model: model.clone(),
                    attempt: retry.attempt,
                    wait: retry.wait,
                    rate_limited: retry.is_rate_limit(),
                    status: retry.status,
                    message: retry.message,
                }),
                delivery = asks.recv() => {
                    let Some(orch_opencode::Delivery::Event(raw)) = delivery else { continue };
                    match raw.decode() {
                        Ok(orch_opencode::Event::PermissionAsked(request)) => {
                            permissions.push(self.answer(&id, &request, &turn.scope).await);
                        }
                        Ok(orch_opencode::Event::QuestionAsked(question)) => {
                            let _ = self.client.reject_question(&question.id).await;
                        }
                        _ => {}
                    }
                }
                () = stop.cancelled() => {
                    let _ = self.client.abort(&id).await;
                    return Err(BackendError::Stopped);
                }
            }
        };
        match result {
            Ok(output) => Ok(Self::report(&output, started, permissions)),
            Err(TurnError::Deadline { .. }) => {
                let _ = self.client.abort(&id).await;
                Err(BackendError::Timeout {
                    after: started.elapsed(),
                })
            }
            Err(e) => Err(turn_error(e, stop.is_cancelled())),
        }
    }

    async fn abort_here(&self, session: &OpencodeSession) -> Result<(), BackendError> {
        self.client
            .abort(session.id())
            .await
            .map(|_| ())
            .map_err(client_error)
    }

    async fn close_here(
        &self,
        mut session: OpencodeSession,
        disposition: Disposition,
    ) -> Result<(), BackendError> {
        if disposition == Disposition::Broken {
            session.guard.mark_broken();
        } else if self.reset == SessionReset::Replace && session.guard.dirty.load(Ordering::Acquire)
        {
            // Closed safely in the background; a pre-created clean session takes its place.
            self.replaced.fetch_add(1, Ordering::Relaxed);
            session.guard.retire();
            return Ok(());
        }
        drop(session);
        Ok(())
    }
}

impl AgentBackend for OpencodeBackend {
    type Session = OpencodeSession;

    fn provision(&self, role: AgentRole, sessions: usize) {
        self.provision_here(role, sessions);
        self.places.provision(role, sessions);
    }

    async fn open(&self, spec: SessionSpec) -> Result<OpencodeSession, BackendError> {
        match self.place(spec.scope.dir()).await? {
            None => self.open_here(spec).await,
            Some(place) => {
                let mut session = place.open_here(spec).await?;
                session.place = Some(place);
                Ok(session)
            }
        }
    }

    async fn rescope(
        &self,
        session: &OpencodeSession,
        scope: &EditScope,
    ) -> Result<(), BackendError> {
        let owner = self.owner(session);
        if scope.dir().is_some_and(|d| d != owner.dir()) {
            return Err(BackendError::Session {
                message: format!(
                    "session {} works in {}, not in the scope's directory",
                    session.id(),
                    owner.dir().display()
                ),
            });
        }
        owner.rescope_here(session, scope).await
    }

    async fn run_turn(
        &self,
        session: &OpencodeSession,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        self.owner(session)
            .run_turn_here(session, turn, deadline, stop, notices)
            .await
    }

    async fn abort(&self, session: &OpencodeSession) -> Result<(), BackendError> {
        self.owner(session).abort_here(session).await
    }

    async fn close(
        &self,
        session: OpencodeSession,
        disposition: Disposition,
    ) -> Result<(), BackendError> {
        match session.place.clone() {
            Some(place) => place.close_here(session, disposition).await,
            None => self.close_here(session, disposition).await,
        }
    }

    async fn notify(&self, message: &str) {
        self.toast(message).await;
    }

    fn session_id(&self, session: &OpencodeSession) -> String {
        session.id().to_string()
    }

    async fn cleanup(&self, sessions: Vec<String>) {
        for id in sessions {
            let id = SessionId::new(id);
            // Status and permission requests are per directory: use the session's.
            let client = match self.client.session(&id).await {
                Ok(s) if Some(&*s.directory) != self.client.directory() => {
                    self.client.with_directory(&s.directory)
                }
                _ => self.client.clone(),
            };
            let closed = if self.keep_used_sessions {
                pool::quiesce(&client, &id, Duration::from_secs(5)).await
            } else {
                client.close_session(&id, Duration::from_secs(5)).await
            };
            if let Err(e) = closed {
                warn!(session = %id, error = %e, "could not close a session left by an earlier run");
            }
        }
    }

    fn stats(&self) -> Vec<(String, f64)> {
        let mut stats = self.stats_here();
        for place in self.places.all() {
            for (key, value) in place.stats_here() {
                match stats.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, total)) => *total += value,
                    None => stats.push((key, value)),
                }
            }
        }
        stats
    }
}

/// Shared handle, so a CLI can keep the backend after the mission took its `Arc`.
pub type SharedOpencodeBackend = Arc<OpencodeBackend>;
