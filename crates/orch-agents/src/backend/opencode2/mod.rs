//! The OpenCode 2 backend: the same seam as [`OpencodeBackend`](super::opencode::OpencodeBackend),
//! on OpenCode 2's API (`docs/opencode-v2.md`).
//!
//! - Sessions come from the same per-role pool, created in the project's directory (an
//!   OpenCode 2 session's directory is fixed by its creation body) and, when a parent session
//!   is configured, as its children (they show under it in the user's TUI). A used session is
//!   replaced by a pre-created clean one ([`SessionReset::Replace`]; `Compact` is treated as
//!   `Replace`: OpenCode 2 compaction is not wired).
//! - OpenCode 2 has no per-prompt agent or model: the agent and model are sticky switches of a
//!   session, sent when a turn asks for others than the session has.
//! - A scope becomes session rules (`PATCH` replaces them): edits ask except for the scope's
//!   files, nothing outside the project, no sub-agents, no questions. The edit requests that
//!   still arrive are answered by policy with a message (a reject without one ends the turn).
//! - A turn is a prompt with our own message id, awaited by `orch-opencode`'s
//!   [`TurnWaiter`](orch_opencode::v2::TurnWaiter) (the execution our input was delivered to,
//!   to its terminal event); the deadline and the stop signal interrupt it on the server.
//! - OpenCode 2's server has no toast route (toasts belong to TUI plugins): `notify` logs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_core::AgentRole;
use orch_opencode::v2::{self, Client, Event, EventKind, KindSet, ModelRef, Prompt, TurnError};
use orch_opencode::{EventRouter, MessageId, RouterConfig, SessionId};
use orch_pool::{KeyedPool, PoolError, PooledResource, RecycleMode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::opencode::OpencodeBackendConfig;
use super::opencode::pool::{SessionReset, build as build_pool};
use super::{
    AgentBackend, BackendError, Disposition, EditScope, ModelSpec, NoticeSink, PermissionDecision,
    SessionSpec, TokenUsage, ToolCallRecord, TurnNotice, TurnReport, TurnRequest,
};

mod config;
mod permissions;
mod places;
mod pool;

pub use config::{agent_entry, config_agents, install_spec};
pub use pool::{PooledSessionV2, SessionManagerV2};

/// How long the health check after a failed request may take before the server is lost.
const LOST_PROBE: Duration = Duration::from_secs(3);

/// The OpenCode 2 form of a model.
fn model_ref(model: &ModelSpec) -> ModelRef {
    ModelRef::new(model.provider(), model.model())
}

/// A session handed to the mission.
#[derive(Debug)]
pub struct OpencodeV2Session {
    guard: PooledResource<SessionManagerV2>,
    /// The backend of the session's directory, when it is not the main one.
    place: Option<Arc<OpencodeV2Backend>>,
}

impl OpencodeV2Session {
    /// The OpenCode session id.
    pub fn id(&self) -> &SessionId {
        &self.guard.id
    }
}

/// The OpenCode 2 backend. Build it with [`OpencodeV2Backend::connect`].
#[derive(Debug)]
pub struct OpencodeV2Backend {
    client: Client,
    router: EventRouter,
    pool: KeyedPool<SessionManagerV2>,
    directory: String,
    default_model: Option<ModelSpec>,
    silence_probe: Duration,
    keep_used_sessions: bool,
    reset: SessionReset,
    max_per_role: usize,
    warm_sessions: usize,
    allowed: AtomicU64,
    rejected: AtomicU64,
    replaced: AtomicU64,
    /// The settings, for the backends of other directories.
    config: OpencodeBackendConfig,
    /// Backends of other directories sessions were opened in (a git mission's worktrees):
    /// their own pools and session directory, this backend's client and event stream
    /// (OpenCode 2's stream is global and its replies are routed by session).
    places: crate::backend::places::Places<OpencodeV2Backend>,
}

/// How a client error looks to the mission.
fn client_error(e: v2::Error) -> BackendError {
    if e.is_unreachable() {
        return BackendError::ServerLost {
            message: e.to_string(),
        };
    }
    match e.status() {
        Some(429) => BackendError::RateLimited {
            retry_after: None,
            message: e.to_string(),
        },
        Some(s) if (400..500).contains(&s) => BackendError::Session {
            message: e.to_string(),
        },
        _ => BackendError::Unavailable {
            status: None,
            message: e.to_string(),
        },
    }
}

/// How a turn's failure looks to the mission.
fn turn_error(e: TurnError, stopped: bool) -> BackendError {
    let status = e.upstream_status();
    let retry_after = e.retry_after();
    match e {
        TurnError::Failed { error, .. } => {
            let message = error.to_string();
            match status {
                Some(429) => BackendError::RateLimited {
                    retry_after,
                    message,
                },
                Some(s) if s >= 500 => BackendError::Unavailable {
                    status: Some(s),
                    message,
                },
                _ => BackendError::Session { message },
            }
        }
        TurnError::Interrupted { .. } if stopped => BackendError::Stopped,
        TurnError::Client(e) => client_error(e),
        other @ TurnError::ServerLost { .. } => BackendError::ServerLost {
            message: other.to_string(),
        },
        other => BackendError::Session {
            message: other.to_string(),
        },
    }
}

impl OpencodeV2Backend {
    /// Connects to the OpenCode 2 server behind `client` for the project at `directory`
    /// (absolute): opens the event stream and builds the session pool. With
    /// [`OpencodeBackendConfig::parent_session`], every session is created as its child.
    ///
    /// # Errors
    /// [`BackendError::ServerLost`] or [`BackendError::Unavailable`] when the event stream
    /// cannot be opened; [`BackendError::Session`] for an unusable pool configuration.
    pub async fn connect(
        client: Client,
        directory: impl Into<String>,
        config: OpencodeBackendConfig,
    ) -> Result<Self, BackendError> {
        let directory = directory.into();
        let router = EventRouter::connect_v2(client.clone(), RouterConfig::default())
            .await
            .map_err(client_error)?;
        Self::assemble(client, router, directory, config)
    }

    /// A backend for `directory` on `client`, its events from `router`.
    fn assemble(
        client: Client,
        router: EventRouter,
        directory: String,
        config: OpencodeBackendConfig,
    ) -> Result<Self, BackendError> {
        let manager = SessionManagerV2 {
            client: client.clone(),
            directory: directory.clone(),
            parent: config.parent_session.clone().map(SessionId::new),
            settle: config.settle,
            keep_used: config.keep_used_sessions,
        };
        let pool = build_pool(manager, &config, RecycleMode::OnAcquire)?;
        Ok(OpencodeV2Backend {
            client,
            router,
            pool,
            directory,
            default_model: config.default_model.clone(),
            silence_probe: config.silence_probe,
            keep_used_sessions: config.keep_used_sessions,
            reset: config.reset,
            max_per_role: config.max_per_role,
            warm_sessions: config.warm_sessions,
            allowed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            config,
            places: crate::backend::places::Places::default(),
        })
    }

    /// The client.
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

    /// Whether the server answers its info route within a few seconds.
    pub async fn is_alive(&self) -> bool {
        matches!(
            tokio::time::timeout(LOST_PROBE, self.client.info()).await,
            Ok(Ok(_))
        )
    }

    /// `error`, unless the server is gone (see the V1 backend's rule: a session that cannot
    /// be opened or used because the server no longer answers is a lost server).
    async fn lost_or(&self, error: BackendError) -> BackendError {
        if !matches!(
            error,
            BackendError::Unavailable { .. } | BackendError::Session { .. }
        ) || self.is_alive().await
        {
            return error;
        }
        BackendError::ServerLost {
            message: format!("{error}; the server does not answer"),
        }
    }

    /// Switches the session to `agent` and `model` when they are not its own yet.
    async fn select(
        &self,
        session: &OpencodeV2Session,
        agent: &str,
        model: Option<&ModelRef>,
    ) -> Result<(), BackendError> {
        let id = session.id();
        if session.guard.agent.lock().as_deref() != Some(agent) {
            self.client
                .set_agent(id, agent)
                .await
                .map_err(client_error)?;
            *session.guard.agent.lock() = Some(agent.to_owned());
        }
        if let Some(model) = model
            && session.guard.model.lock().as_ref() != Some(model)
        {
            self.client
                .set_model(id, model)
                .await
                .map_err(client_error)?;
            *session.guard.model.lock() = Some(model.clone());
        }
        Ok(())
    }

    /// Answers a permission request that reached us during a turn of `scope`.
    async fn answer(
        &self,
        session: &SessionId,
        request: &v2::PermissionRequest,
        scope: &EditScope,
    ) -> PermissionDecision {
        let dir = std::path::Path::new(&self.directory);
        let (reply, allowed) = permissions::decide(dir, request, scope);
        let counter = if allowed {
            &self.allowed
        } else {
            &self.rejected
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self
            .client
            .reply_permission(session, &request.id, &reply)
            .await
        {
            warn!(%session, error = %e, "could not answer a permission request");
        }
        PermissionDecision {
            permission: request.action.clone(),
            patterns: permissions::shown_paths(dir, request),
            allowed,
        }
    }

    fn report(
        output: &v2::TurnOutput,
        started: Instant,
        permissions: Vec<PermissionDecision>,
    ) -> TurnReport {
        let tool_calls = output
            .tool_calls()
            .map(|call| ToolCallRecord {
                tool: call.name.clone(),
                status: format!("{:?}", call.state.status).to_lowercase(),
                input: call.state.input.to_string(),
            })
            .collect();
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
            model: output
                .model()
                .map(|m| format!("{}/{}", m.provider_id, m.id)),
            elapsed: started.elapsed(),
        }
    }
}

impl OpencodeV2Backend {
    fn provision_here(&self, role: AgentRole, sessions: usize) {
        let limit = (sessions + self.warm_sessions).max(self.max_per_role);
        self.pool.set_max_for_key(role, limit);
    }

    async fn open_here(&self, spec: SessionSpec) -> Result<OpencodeV2Session, BackendError> {
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
        let session = OpencodeV2Session { guard, place: None };
        self.rescope_here(&session, &spec.scope).await?;
        Ok(session)
    }

    async fn rescope_here(
        &self,
        session: &OpencodeV2Session,
        scope: &EditScope,
    ) -> Result<(), BackendError> {
        match self
            .client
            .set_permissions(session.id(), permissions::session_rules(scope))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(self.lost_or(client_error(e)).await),
        }
    }

    async fn run_turn_here(
        &self,
        session: &OpencodeV2Session,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        let started = Instant::now();
        let id = session.id().clone();
        let model = turn.model.or_else(|| self.default_model.clone());
        if let Err(e) = self
            .select(session, &turn.agent, model.as_ref().map(model_ref).as_ref())
            .await
        {
            return Err(self.lost_or(e).await);
        }
        let (retries_tx, mut retries) = tokio::sync::mpsc::unbounded_channel();
        let message_id = MessageId::generate();
        // Subscribe before prompting (no replay on OpenCode 2's event stream).
        let mut asks = self
            .router
            .subscribe_v2(id.as_str(), KindSet::of(&[EventKind::PermissionAsked]));
        let waiter = self
            .router
            .turn_v2(&id, &message_id)
            .probe_after(self.silence_probe)
            .notify_retries(retries_tx);
        let prompt = Prompt::text(turn.prompt).id(message_id);
        if let Err(e) = self.client.prompt(&id, &prompt).await {
            return Err(self.lost_or(client_error(e)).await);
        }
        session
            .guard
            .dirty
            .store(true, std::sync::atomic::Ordering::Release);
        session
            .guard
            .used
            .store(true, std::sync::atomic::Ordering::Release);
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
                    if let Ok(Event::PermissionAsked(request)) = raw.decode_v2() {
                        permissions.push(self.answer(&id, &request, &turn.scope).await);
                    }
                }
                () = stop.cancelled() => {
                    let _ = self.client.interrupt(&id).await;
                    return Err(BackendError::Stopped);
                }
            }
        };
        match result {
            Ok(output) => Ok(Self::report(&output, started, permissions)),
            Err(TurnError::Deadline { .. }) => Err(BackendError::Timeout {
                after: started.elapsed(),
            }),
            Err(e) => Err(turn_error(e, stop.is_cancelled())),
        }
    }

    async fn abort_here(&self, session: &OpencodeV2Session) -> Result<(), BackendError> {
        self.client
            .interrupt(session.id())
            .await
            .map(|_| ())
            .map_err(client_error)
    }

    async fn close_here(
        &self,
        mut session: OpencodeV2Session,
        disposition: Disposition,
    ) -> Result<(), BackendError> {
        let dirty = session
            .guard
            .dirty
            .load(std::sync::atomic::Ordering::Acquire);
        if disposition == Disposition::Broken {
            session.guard.mark_broken();
        } else if self.reset != SessionReset::Keep && dirty {
            // Closed safely in the background; a pre-created clean session takes its place.
            self.replaced.fetch_add(1, Ordering::Relaxed);
            session.guard.retire();
            return Ok(());
        }
        drop(session);
        Ok(())
    }
}

impl AgentBackend for OpencodeV2Backend {
    type Session = OpencodeV2Session;

    fn provision(&self, role: AgentRole, sessions: usize) {
        self.provision_here(role, sessions);
        self.places.provision(role, sessions);
    }

    async fn open(&self, spec: SessionSpec) -> Result<OpencodeV2Session, BackendError> {
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
        session: &OpencodeV2Session,
        scope: &EditScope,
    ) -> Result<(), BackendError> {
        let owner = self.owner(session);
        if scope
            .dir()
            .is_some_and(|d| d != std::path::Path::new(&owner.directory))
        {
            return Err(BackendError::Session {
                message: format!(
                    "session {} works in {}, not in the scope's directory",
                    session.id(),
                    owner.directory
                ),
            });
        }
        owner.rescope_here(session, scope).await
    }

    async fn run_turn(
        &self,
        session: &OpencodeV2Session,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        self.owner(session)
            .run_turn_here(session, turn, deadline, stop, notices)
            .await
    }

    async fn abort(&self, session: &OpencodeV2Session) -> Result<(), BackendError> {
        self.owner(session).abort_here(session).await
    }

    async fn close(
        &self,
        session: OpencodeV2Session,
        disposition: Disposition,
    ) -> Result<(), BackendError> {
        match session.place.clone() {
            Some(place) => place.close_here(session, disposition).await,
            None => self.close_here(session, disposition).await,
        }
    }

    async fn notify(&self, message: &str) {
        tracing::info!(%message, "mission notice (OpenCode 2 has no server toast route)");
    }

    fn session_id(&self, session: &OpencodeV2Session) -> String {
        session.id().to_string()
    }

    async fn cleanup(&self, sessions: Vec<String>) {
        for id in sessions {
            let id = SessionId::new(id);
            if let Err(e) = SessionManagerV2::close_session(
                &self.client,
                &id,
                Duration::from_secs(5),
                self.keep_used_sessions,
            )
            .await
            {
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
