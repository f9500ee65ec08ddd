//! The other directories an [`OpencodeV2Backend`]'s sessions work in (a git mission's
//! worktrees): each a backend of its own (pool, session directory) sharing the main one's
//! client and event stream (OpenCode 2's stream is global and its replies are routed by
//! session), made on first use and owned by the main one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{OpencodeBackendConfig, OpencodeV2Backend, OpencodeV2Session};
use orch_core::AgentRole;

use crate::backend::BackendError;
use crate::backend::places::Place;

impl Place for OpencodeV2Backend {
    fn provision_here(&self, role: AgentRole, sessions: usize) {
        OpencodeV2Backend::provision_here(self, role, sessions);
    }
}

impl OpencodeV2Backend {
    /// The backend of `dir`: `None` for this backend's own directory, else the place's
    /// (made on first use, with this backend's settings and one warm session per role).
    pub(super) async fn place(
        &self,
        dir: Option<&std::path::Path>,
    ) -> Result<Option<Arc<OpencodeV2Backend>>, BackendError> {
        let Some(dir) = dir.filter(|d| *d != std::path::Path::new(&self.directory)) else {
            return Ok(None);
        };
        let config = OpencodeBackendConfig {
            warm_sessions: self.config.warm_sessions.min(1),
            ..self.config.clone()
        };
        let place = self
            .places
            .get_or_make(dir, || async {
                Self::assemble(
                    self.client.clone(),
                    self.router.clone(),
                    dir.to_string_lossy().into_owned(),
                    config,
                )
            })
            .await?;
        Ok(Some(place))
    }

    /// The backend that owns `session`.
    pub(super) fn owner<'a>(&'a self, session: &'a OpencodeV2Session) -> &'a OpencodeV2Backend {
        session.place.as_deref().unwrap_or(self)
    }

    /// This directory's figures.
    pub(super) fn stats_here(&self) -> Vec<(String, f64)> {
        let pool = self.pool.stats();
        let router = self.router.stats();
        vec![
            ("pool.created".into(), pool.created as f64),
            ("pool.hits".into(), pool.hits as f64),
            ("pool.misses".into(), pool.misses as f64),
            ("pool.prewarmed".into(), pool.prewarmed as f64),
            ("pool.reused".into(), pool.reused as f64),
            (
                "pool.replaced".into(),
                self.replaced.load(Ordering::Relaxed) as f64,
            ),
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
