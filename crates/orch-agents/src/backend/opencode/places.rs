//! The other directories an [`OpencodeBackend`]'s sessions work in (a git mission's
//! worktrees, see [`EditScope::within`](crate::backend::EditScope::within)): OpenCode 1
//! scopes events, session status and permission replies by directory, so each directory is a
//! backend of its own (client, event stream, pool), made on first use and owned by the main
//! one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{OpencodeBackend, OpencodeBackendConfig, OpencodeSession};
use orch_core::AgentRole;

use crate::backend::BackendError;
use crate::backend::places::Place;

impl Place for OpencodeBackend {
    fn provision_here(&self, role: AgentRole, sessions: usize) {
        OpencodeBackend::provision_here(self, role, sessions);
    }
}

impl OpencodeBackend {
    /// The backend of `dir`: `None` for this backend's own directory, else the place's
    /// (connected on first use, with this backend's settings and one warm session per role).
    pub(super) async fn place(
        &self,
        dir: Option<&Path>,
    ) -> Result<Option<Arc<OpencodeBackend>>, BackendError> {
        let Some(dir) = dir.filter(|d| *d != self.dir()) else {
            return Ok(None);
        };
        let config = OpencodeBackendConfig {
            warm_sessions: self.config.warm_sessions.min(1),
            ..self.config.clone()
        };
        let client = self.client.with_directory(dir.to_string_lossy());
        let place = self
            .places
            .get_or_make(dir, || async {
                match Box::pin(OpencodeBackend::connect(client, config)).await {
                    Ok(place) => Ok(place),
                    Err(e) => Err(self.lost_or(e).await),
                }
            })
            .await?;
        Ok(Some(place))
    }

    /// The backend that owns `session`.
    pub(super) fn owner<'a>(&'a self, session: &'a OpencodeSession) -> &'a OpencodeBackend {
        session.place.as_deref().unwrap_or(self)
    }

    /// This directory's figures.
    pub(super) fn stats_here(&self) -> Vec<(String, f64)> {
        let pool = self.pool.stats();
        let sessions = self.pool_stats();
        let router = self.router.stats();
        vec![
            ("pool.created".into(), pool.created as f64),
            ("pool.hits".into(), pool.hits as f64),
            ("pool.misses".into(), pool.misses as f64),
            ("pool.prewarmed".into(), pool.prewarmed as f64),
            ("pool.reused".into(), pool.reused as f64),
            ("pool.resets".into(), sessions.resets as f64),
            ("pool.replaced".into(), sessions.replaced as f64),
            ("pool.recycled".into(), pool.recycled as f64),
            ("pool.discarded".into(), pool.discarded as f64),
            ("pool.waits".into(), pool.waits as f64),
            (
                "permissions.allowed".into(),
                self.allowed.load(Ordering::Relaxed) as f64,
            ),
            (
                "permissions.rejected".into(),
                self.rejected.load(Ordering::Relaxed) as f64,
            ),
            ("events.published".into(), router.published as f64),
            ("events.dropped".into(), router.dropped as f64),
        ]
    }
}
