//! The session pool of the OpenCode 2 backend: sessions keyed by role, created titled in the
//! project's directory (under the parent session, when there is one), health-checked, and
//! deleted only safely.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use orch_core::AgentRole;
use orch_opencode::SessionId;
use orch_opencode::v2::{Client, CreateSession, ModelRef};
use orch_pool::{Manager, Metrics, TeardownReason};
use parking_lot::Mutex;
use tracing::{debug, warn};

/// A pooled OpenCode 2 session, with the agent and model it was last switched to (OpenCode 2
/// has no per-prompt agent or model: they are sticky switches of the session).
#[derive(Debug)]
pub struct PooledSessionV2 {
    pub(super) id: SessionId,
    /// Whether it ran a turn since it was created.
    pub(super) dirty: AtomicBool,
    /// Whether it ever ran a turn.
    pub(super) used: AtomicBool,
    pub(super) agent: Mutex<Option<String>>,
    pub(super) model: Mutex<Option<ModelRef>>,
}

impl PooledSessionV2 {
    /// The OpenCode session id.
    pub fn id(&self) -> &SessionId {
        &self.id
    }
}

/// Creates, checks and safely deletes OpenCode 2 sessions for the pool.
#[derive(Debug, Clone)]
pub struct SessionManagerV2 {
    pub(super) client: Client,
    pub(super) directory: String,
    pub(super) parent: Option<SessionId>,
    pub(super) settle: Duration,
    /// Retire used sessions without deleting them.
    pub(super) keep_used: bool,
}

impl SessionManagerV2 {
    /// Deletes `id` only when it is safe: interrupted if it runs, its pending permission
    /// requests rejected, idle (or `settle` passed), then deleted (unless `keep`).
    pub(crate) async fn close_session(
        client: &Client,
        id: &SessionId,
        settle: Duration,
        keep: bool,
    ) -> Result<(), orch_opencode::v2::Error> {
        let deadline = tokio::time::Instant::now() + settle;
        if client.is_active(id).await? {
            let _ = client.interrupt(id).await?;
        }
        for request in client.permissions(id).await? {
            let reply = orch_opencode::v2::PermissionReply::reject_with("the session is closing");
            match client.reply_permission(id, &request.id, &reply).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        while client.is_active(id).await? && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if keep {
            return Ok(());
        }
        match client.delete_session(id).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Manager for SessionManagerV2 {
    type Key = AgentRole;
    type Resource = PooledSessionV2;
    type Error = orch_opencode::v2::Error;

    async fn create(&self, role: &AgentRole) -> Result<PooledSessionV2, Self::Error> {
        let mut request =
            CreateSession::titled(format!("orchestrator {role}")).directory(self.directory.clone());
        if let Some(parent) = &self.parent {
            request = request.parent(parent.clone());
        }
        let session = self.client.create_session(&request).await?;
        Ok(PooledSessionV2 {
            id: session.id,
            dirty: AtomicBool::new(false),
            used: AtomicBool::new(false),
            agent: Mutex::new(None),
            model: Mutex::new(None),
        })
    }

    async fn recycle(
        &self,
        _role: &AgentRole,
        _session: &mut PooledSessionV2,
        _metrics: &Metrics,
    ) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn check(
        &self,
        _role: &AgentRole,
        session: &mut PooledSessionV2,
        _metrics: &Metrics,
    ) -> Result<(), Self::Error> {
        self.client.session(&session.id).await.map(|_| ())
    }

    async fn teardown(&self, role: &AgentRole, session: PooledSessionV2, reason: TeardownReason) {
        let keep = self.keep_used && session.used.load(std::sync::atomic::Ordering::Acquire);
        debug!(%role, session = %session.id, ?reason, keep, "closing OpenCode 2 session");
        if let Err(e) = Self::close_session(&self.client, &session.id, self.settle, keep).await {
            warn!(session = %session.id, error = %e, "could not close an OpenCode 2 session");
        }
    }
}
