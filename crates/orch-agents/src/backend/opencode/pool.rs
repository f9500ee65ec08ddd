//! The session pool of the OpenCode backend: sessions keyed by role, created titled,
//! health-checked, reset by the [`SessionReset`] policy, and deleted only safely.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use orch_core::AgentRole;
use orch_opencode::{Client, CreateSession, ModelRef, SessionId};
use orch_pool::{KeyedPool, Manager, Metrics, RecycleMode, Replenish, TeardownReason};
use tracing::{debug, warn};

use super::OpencodeBackendConfig;

/// What the pool does with a session that ran turns before it is handed out again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionReset {
    /// No model call: the used session is closed safely in the background (abort, wait until
    /// idle, delete) and a clean, pre-created one takes its place. The default.
    #[default]
    Replace,
    /// Compaction (`POST /session/{id}/summarize`, a model call), run in the background once
    /// the session is returned; the session is handed out again only after it. Needs a
    /// default model (without one, used sessions are kept as they are).
    Compact,
    /// Reused with its whole history (no reset at all).
    Keep,
}

/// A pooled OpenCode session.
#[derive(Debug)]
pub struct PooledSession {
    pub(super) id: SessionId,
    /// Whether it ran a turn since it was created or last compacted.
    pub(super) dirty: AtomicBool,
    /// Whether it ever ran a turn.
    pub(super) used: AtomicBool,
}

impl PooledSession {
    /// The OpenCode session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }
}

/// Creates, resets, checks and safely deletes OpenCode sessions for the pool.
#[derive(Debug, Clone)]
pub struct SessionManager {
    pub(super) client: Client,
    pub(super) compaction_model: Option<ModelRef>,
    pub(super) settle: Duration,
    pub(super) reset: SessionReset,
    /// Sessions reset by compaction.
    pub(super) compactions: Arc<AtomicU64>,
    /// The parent of every session created.
    pub(super) parent: Option<SessionId>,
    /// Retire used sessions without deleting them.
    pub(super) keep_used: bool,
}

/// Stops `id` without deleting it: aborted if it runs, its pending permission requests
/// rejected, idle (or `settle` passed).
pub(crate) async fn quiesce(
    client: &Client,
    id: &SessionId,
    settle: Duration,
) -> Result<(), orch_opencode::Error> {
    let deadline = tokio::time::Instant::now() + settle;
    if client.session_status().await?.contains_key(id) {
        client.abort(id).await?;
    }
    for request in client.permissions().await? {
        if &request.session_id == id {
            match client
                .reply_permission(id, &request.id, orch_opencode::PermissionReply::Reject)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    while client.session_status().await?.contains_key(id) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

impl Manager for SessionManager {
    type Key = AgentRole;
    type Resource = PooledSession;
    type Error = orch_opencode::Error;

    async fn create(&self, role: &AgentRole) -> Result<PooledSession, orch_opencode::Error> {
        let mut request = CreateSession::titled(format!("orchestrator {role}"));
        if let Some(parent) = &self.parent {
            request = request.parent(parent.clone());
        }
        let session = self.client.create_session(&request).await?;
        Ok(PooledSession {
            id: session.id,
            dirty: AtomicBool::new(false),
            used: AtomicBool::new(false),
        })
    }

    async fn recycle(
        &self,
        _role: &AgentRole,
        session: &mut PooledSession,
        _metrics: &Metrics,
    ) -> Result<(), orch_opencode::Error> {
        // Compact: the next turn starts from a summary, not the whole history (every turn
        // carries the mission context and its item again). Replace never gets here with a
        // used session (it is retired on return); Keep keeps the history.
        if self.reset == SessionReset::Compact
            && session.dirty.load(Ordering::Acquire)
            && let Some(model) = &self.compaction_model
        {
            self.client.summarize(&session.id, model).await?;
            session.dirty.store(false, Ordering::Release);
            self.compactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn check(
        &self,
        _role: &AgentRole,
        session: &mut PooledSession,
        _metrics: &Metrics,
    ) -> Result<(), orch_opencode::Error> {
        self.client.session(&session.id).await.map(|_| ())
    }

    async fn teardown(&self, role: &AgentRole, session: PooledSession, reason: TeardownReason) {
        if self.keep_used && session.used.load(Ordering::Acquire) {
            debug!(%role, session = %session.id, ?reason, "retiring OpenCode session (kept)");
            if let Err(e) = quiesce(&self.client, &session.id, self.settle).await {
                warn!(session = %session.id, error = %e, "could not stop an OpenCode session");
            }
            return;
        }
        debug!(%role, session = %session.id, ?reason, "closing OpenCode session");
        if let Err(e) = self.client.close_session(&session.id, self.settle).await {
            warn!(session = %session.id, error = %e, "could not close an OpenCode session");
        }
    }
}

/// When the pool recycles: compaction is a model call, so off the `open` path. Replace and
/// Keep recycle nothing (nor does Compact without a model), so a returned session is idle at
/// once.
pub(crate) fn recycle_mode(config: &OpencodeBackendConfig) -> RecycleMode {
    match config.reset {
        SessionReset::Compact if config.default_model.is_some() => RecycleMode::Background,
        _ => RecycleMode::OnAcquire,
    }
}

/// The session pool of either generation's backend: per role at least `max_per_role`
/// sessions (raised by `provision` to what the mission holds at once plus the warm ones; the
/// roles' limits bound the total), used sessions reused `max_reuse` times, idle ones checked
/// and aged out, `warm_sessions` kept ready per role once it has been seen.
pub(crate) fn build<M: Manager<Key = AgentRole>>(
    manager: M,
    config: &OpencodeBackendConfig,
    recycle: RecycleMode,
) -> Result<KeyedPool<M>, crate::backend::BackendError> {
    KeyedPool::builder(manager)
        .max_per_key(config.max_per_role)
        .max_reuse(Some(config.max_reuse))
        .idle_timeout(Some(config.idle_timeout))
        .health_check_interval(Some(config.health_check))
        .recycle_mode(recycle)
        .min_idle(config.warm_sessions)
        // The replacement's `POST /session` would compete with the turn just starting on the
        // hit session (measured in benchmark 4): top up when sessions come back.
        .replenish(Replenish::OnReturn)
        .build()
        .map_err(|e| crate::backend::BackendError::Session {
            message: format!("session pool: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_replaces_used_sessions_with_two_warm_ones() {
        let config = OpencodeBackendConfig::default();
        assert_eq!(
            (config.reset, config.warm_sessions),
            (SessionReset::Replace, 2)
        );
        assert_eq!(recycle_mode(&config), RecycleMode::OnAcquire);
    }

    #[test]
    fn only_compaction_with_a_model_recycles_in_the_background() {
        let model = Some(crate::backend::ModelSpec::new("fake", "fake-model"));
        for (reset, default_model, mode) in [
            (
                SessionReset::Compact,
                model.clone(),
                RecycleMode::Background,
            ),
            (SessionReset::Compact, None, RecycleMode::OnAcquire),
            (SessionReset::Keep, model.clone(), RecycleMode::OnAcquire),
            (SessionReset::Replace, model, RecycleMode::OnAcquire),
        ] {
            let config = OpencodeBackendConfig {
                reset,
                default_model,
                ..OpencodeBackendConfig::default()
            };
            assert_eq!(recycle_mode(&config), mode, "{reset:?}");
        }
    }
}
