//! Several OpenCode servers behind one backend: the path past one machine.
//!
//! One OpenCode server runs the per-step work of every session on one JavaScript thread, so
//! it sustains a bounded number of turns per second (see `docs` of `orch-bench`). A
//! [`MultiBackend`] spreads sessions over several servers (given as clients, so URLs or
//! servers it started itself):
//!
//! - **Placement.** A new session goes to the live server with the fewest sessions open
//!   (ties: the lowest index). Each server keeps its own session pool, so a pooled session is
//!   reused on the server it lives on.
//! - **Loss.** A turn, rescope or open that fails with [`BackendError::ServerLost`] marks the
//!   server lost; the session moves to the least-loaded live server (a new session with the
//!   same role, title and rules) and the turn runs again there. The mission sees one turn
//!   that took longer. Only when no server is left does the error reach the mission.
//! - **Ids.** Session ids are `s<index>/<OpenCode id>`, so a resumed mission's
//!   [`AgentBackend::cleanup`] reaches the right server.
//!
//! Every server must serve the same project directory (the same machine, or a shared
//! file system): items edit files there.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use orch_core::AgentRole;

use crate::backend::any::{AnyOpencode, AnySession};
use crate::backend::{Disposition, EditScope, NoticeSink};
use crate::{AgentBackend, BackendError, SessionSpec, TurnReport, TurnRequest};

/// One server of a [`MultiBackend`].
struct Member {
    backend: AnyOpencode,
    open: AtomicU64,
    turns: AtomicU64,
    lost: AtomicBool,
}

/// Several OpenCode servers as one [`AgentBackend`]. Build it with [`MultiBackend::new`].
pub struct MultiBackend {
    members: Vec<Member>,
    migrations: AtomicU64,
}

impl fmt::Debug for MultiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultiBackend")
            .field("servers", &self.members.len())
            .field("open", &self.open_sessions())
            .field("lost", &self.lost())
            .finish()
    }
}

/// Where a [`MultiSession`] lives now.
struct Placement {
    server: usize,
    session: Arc<AnySession>,
}

/// A session of a [`MultiBackend`]: an OpenCode session on one of the servers, moved to
/// another server when its server is lost.
pub struct MultiSession {
    spec: Mutex<SessionSpec>,
    placement: Mutex<Placement>,
}

impl fmt::Debug for MultiSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.placement.lock();
        f.debug_struct("MultiSession")
            .field("server", &p.server)
            .field("session", &p.session.id())
            .finish()
    }
}

impl MultiSession {
    /// The index of the server the session lives on now.
    pub fn server(&self) -> usize {
        self.placement.lock().server
    }

    fn current(&self) -> (usize, Arc<AnySession>) {
        let p = self.placement.lock();
        (p.server, Arc::clone(&p.session))
    }
}

impl MultiBackend {
    /// One backend over `backends` (each connected to its own server, all serving the same
    /// project directory).
    ///
    /// # Errors
    /// [`BackendError::Session`] when `backends` is empty.
    pub fn new(
        backends: impl IntoIterator<Item = impl Into<AnyOpencode>>,
    ) -> Result<Self, BackendError> {
        let backends: Vec<AnyOpencode> = backends.into_iter().map(Into::into).collect();
        if backends.is_empty() {
            return Err(BackendError::Session {
                message: "a multi-server backend needs at least one server".into(),
            });
        }
        Ok(MultiBackend {
            members: backends
                .into_iter()
                .map(|backend| Member {
                    backend,
                    open: AtomicU64::new(0),
                    turns: AtomicU64::new(0),
                    lost: AtomicBool::new(false),
                })
                .collect(),
            migrations: AtomicU64::new(0),
        })
    }

    /// The servers' backends, in index order.
    pub fn backends(&self) -> impl Iterator<Item = &AnyOpencode> {
        self.members.iter().map(|m| &m.backend)
    }

    /// Sessions open per server.
    pub fn open_sessions(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|m| m.open.load(Ordering::Relaxed))
            .collect()
    }

    /// Turns finished per server.
    pub fn turns(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|m| m.turns.load(Ordering::Relaxed))
            .collect()
    }

    /// Indexes of the servers marked lost.
    pub fn lost(&self) -> Vec<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.lost.load(Ordering::Relaxed))
            .map(|(i, _)| i)
            .collect()
    }

    /// Sessions moved to another server after their server was lost.
    pub fn migrations(&self) -> u64 {
        self.migrations.load(Ordering::Relaxed)
    }

    /// Marks server `index` usable again (after it was restarted at the same address).
    pub fn revive(&self, index: usize) {
        if let Some(m) = self.members.get(index) {
            m.lost.store(false, Ordering::Relaxed);
        }
    }

    /// Closes every server's pool.
    pub async fn shutdown(&self) {
        for m in &self.members {
            m.backend.shutdown().await;
        }
    }

    /// Whether `error` from server `index` means the server is gone: [`BackendError::ServerLost`],
    /// or a transient or session error after which the server fails a health check (a
    /// connection cut in the middle of a request looks like a transient error).
    async fn server_gone(&self, index: usize, error: &BackendError) -> bool {
        match error {
            BackendError::ServerLost { .. } => true,
            BackendError::Unavailable { .. } | BackendError::Session { .. } => {
                !self.members[index].backend.is_alive().await
            }
            _ => false,
        }
    }

    fn mark_lost(&self, index: usize) {
        if let Some(m) = self.members.get(index) {
            m.lost.store(true, Ordering::Relaxed);
        }
    }

    /// The live server with the fewest open sessions, not in `skip`.
    fn least_loaded(&self, skip: &[usize]) -> Option<usize> {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| !m.lost.load(Ordering::Relaxed) && !skip.contains(i))
            .min_by_key(|(i, m)| (m.open.load(Ordering::Relaxed), *i))
            .map(|(i, _)| i)
    }

    /// Opens a session on the least-loaded live server, moving on when a server is lost.
    async fn place(&self, spec: &SessionSpec) -> Result<Placement, BackendError> {
        let mut tried = Vec::new();
        let mut last = None;
        while let Some(i) = self.least_loaded(&tried) {
            tried.push(i);
            let member = &self.members[i];
            member.open.fetch_add(1, Ordering::Relaxed);
            match member.backend.open(spec.clone()).await {
                Ok(session) => {
                    return Ok(Placement {
                        server: i,
                        session: Arc::new(session),
                    });
                }
                Err(e) => {
                    member.open.fetch_sub(1, Ordering::Relaxed);
                    if self.server_gone(i, &e).await {
                        self.mark_lost(i);
                        last = Some(e);
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| BackendError::ServerLost {
            message: "every OpenCode server is lost".into(),
        }))
    }

    /// Moves `session` off `from` (lost) to another server.
    async fn migrate(&self, session: &MultiSession, from: usize) -> Result<(), BackendError> {
        self.mark_lost(from);
        let spec = session.spec.lock().clone();
        let placement = self.place(&spec).await?;
        let old = std::mem::replace(&mut *session.placement.lock(), placement);
        self.release(old, Disposition::Broken).await;
        self.migrations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn release(&self, placement: Placement, disposition: Disposition) {
        let member = &self.members[placement.server];
        member.open.fetch_sub(1, Ordering::Relaxed);
        // A clone may still be held by a turn that is ending; the pool guard then goes back
        // when that clone drops.
        if let Ok(session) = Arc::try_unwrap(placement.session) {
            let _ = member.backend.close(session, disposition).await;
        }
    }
}

impl AgentBackend for MultiBackend {
    type Session = MultiSession;

    fn provision(&self, role: AgentRole, sessions: usize) {
        // After a loss one server may carry every session of the role.
        for member in &self.members {
            member.backend.provision(role, sessions);
        }
    }

    async fn open(&self, spec: SessionSpec) -> Result<MultiSession, BackendError> {
        let placement = self.place(&spec).await?;
        Ok(MultiSession {
            spec: Mutex::new(spec),
            placement: Mutex::new(placement),
        })
    }

    async fn rescope(&self, session: &MultiSession, scope: &EditScope) -> Result<(), BackendError> {
        session.spec.lock().scope = scope.clone();
        let (server, current) = session.current();
        let result = self.members[server].backend.rescope(&current, scope).await;
        drop(current);
        match result {
            // The new session is opened with the new rules already.
            Err(e) if self.server_gone(server, &e).await => self.migrate(session, server).await,
            other => other,
        }
    }

    async fn run_turn(
        &self,
        session: &MultiSession,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        let started = Instant::now();
        loop {
            let (server, current) = session.current();
            let result = self.members[server]
                .backend
                .run_turn(&current, turn.clone(), deadline, stop, notices)
                .await;
            drop(current);
            match result {
                Ok(mut report) => {
                    self.members[server].turns.fetch_add(1, Ordering::Relaxed);
                    report.elapsed = started.elapsed();
                    return Ok(report);
                }
                Err(e) if Instant::now() < deadline && self.server_gone(server, &e).await => {
                    self.migrate(session, server).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn abort(&self, session: &MultiSession) -> Result<(), BackendError> {
        let (server, current) = session.current();
        self.members[server].backend.abort(&current).await
    }

    async fn close(
        &self,
        session: MultiSession,
        disposition: Disposition,
    ) -> Result<(), BackendError> {
        let placement = session.placement.into_inner();
        self.release(placement, disposition).await;
        Ok(())
    }

    fn session_id(&self, session: &MultiSession) -> String {
        let (server, current) = session.current();
        format!(
            "s{server}/{}",
            self.members[server].backend.session_id(&current)
        )
    }

    async fn cleanup(&self, sessions: Vec<String>) {
        let mut per: Vec<Vec<String>> = vec![Vec::new(); self.members.len()];
        for id in sessions {
            let parsed = id
                .strip_prefix('s')
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(i, sid)| i.parse::<usize>().ok().map(|i| (i, sid.to_owned())));
            if let Some((i, sid)) = parsed
                && i < per.len()
            {
                per[i].push(sid);
            }
        }
        for (member, ids) in self.members.iter().zip(per) {
            if !ids.is_empty() && !member.lost.load(Ordering::Relaxed) {
                member.backend.cleanup(ids).await;
            }
        }
    }

    async fn notify(&self, message: &str) {
        if let Some(m) = self
            .members
            .iter()
            .find(|m| !m.lost.load(Ordering::Relaxed))
        {
            m.backend.notify(message).await;
        }
    }

    fn stats(&self) -> Vec<(String, f64)> {
        let mut out = vec![("multi.migrations".to_owned(), self.migrations() as f64)];
        for (i, m) in self.members.iter().enumerate() {
            out.push((
                format!("s{i}.turns"),
                m.turns.load(Ordering::Relaxed) as f64,
            ));
            out.push((
                format!("s{i}.lost"),
                f64::from(u8::from(m.lost.load(Ordering::Relaxed))),
            ));
            for (k, v) in m.backend.stats() {
                out.push((format!("s{i}.{k}"), v));
            }
        }
        out
    }
}
