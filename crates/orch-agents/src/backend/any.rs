//! An OpenCode server of either generation as one backend type, so a command line or a
//! [`MultiBackend`](super::multi::MultiBackend) can take whatever server it finds.

use std::path::Path;

use orch_core::AgentRole;
use orch_opencode::{Generation, OpencodeServer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::opencode::{OpencodeBackend, OpencodeBackendConfig, OpencodeSession};
use super::opencode2::{OpencodeV2Backend, OpencodeV2Session};
use super::{
    AgentBackend, BackendError, Disposition, EditScope, NoticeSink, SessionSpec, TurnReport,
    TurnRequest,
};

/// An OpenCode 1 or OpenCode 2 backend.
#[derive(Debug)]
pub enum AnyOpencode {
    /// OpenCode 1.
    V1(OpencodeBackend),
    /// OpenCode 2.
    V2(OpencodeV2Backend),
}

/// A session of an [`AnyOpencode`].
#[derive(Debug)]
pub enum AnySession {
    /// On OpenCode 1.
    V1(OpencodeSession),
    /// On OpenCode 2.
    V2(OpencodeV2Session),
}

impl AnySession {
    /// The OpenCode session id.
    pub fn id(&self) -> &orch_opencode::SessionId {
        match self {
            AnySession::V1(s) => s.id(),
            AnySession::V2(s) => s.id(),
        }
    }
}

impl From<OpencodeBackend> for AnyOpencode {
    fn from(backend: OpencodeBackend) -> Self {
        AnyOpencode::V1(backend)
    }
}

impl From<OpencodeV2Backend> for AnyOpencode {
    fn from(backend: OpencodeV2Backend) -> Self {
        AnyOpencode::V2(backend)
    }
}

/// The session of the other generation than the backend's: a caller's bug, as an error.
fn mismatch() -> BackendError {
    BackendError::Session {
        message: "a session of one OpenCode generation was handed to the other's backend".into(),
    }
}

impl AnyOpencode {
    /// A backend for the project at `dir` on `server` (one this process started), of the
    /// server's generation.
    ///
    /// # Errors
    /// As [`OpencodeBackend::connect`] and [`OpencodeV2Backend::connect`].
    pub async fn connect_server(
        server: &OpencodeServer,
        dir: &Path,
        config: OpencodeBackendConfig,
    ) -> Result<AnyOpencode, BackendError> {
        let directory = dir.to_string_lossy();
        Ok(match server.generation() {
            Generation::V1 => AnyOpencode::V1(
                OpencodeBackend::connect(server.client().with_directory(directory), config).await?,
            ),
            Generation::V2 => AnyOpencode::V2(
                OpencodeV2Backend::connect(server.client_v2(), directory, config).await?,
            ),
        })
    }

    /// A backend for the project at `dir` on the server at `url` of `generation`, with
    /// `credentials` (`(username, password)`) when it needs them.
    ///
    /// # Errors
    /// [`BackendError::Session`] for a bad URL; else as the generation's `connect`.
    pub async fn connect_url(
        url: &str,
        credentials: Option<(&str, &str)>,
        generation: Generation,
        dir: &Path,
        config: OpencodeBackendConfig,
    ) -> Result<AnyOpencode, BackendError> {
        let bad = |e: String| BackendError::Session {
            message: format!("bad server URL {url}: {e}"),
        };
        let directory = dir.to_string_lossy();
        Ok(match generation {
            Generation::V1 => {
                let mut builder = orch_opencode::Client::builder(url);
                if let Some((user, password)) = credentials {
                    builder = builder.basic_auth(user, password);
                }
                let client = builder.build().map_err(|e| bad(e.to_string()))?;
                AnyOpencode::V1(
                    OpencodeBackend::connect(client.with_directory(directory), config).await?,
                )
            }
            Generation::V2 => {
                let mut builder = orch_opencode::v2::Client::builder(url);
                if let Some((user, password)) = credentials {
                    builder = builder.basic_auth(user, password);
                }
                let client = builder.build().map_err(|e| bad(e.to_string()))?;
                AnyOpencode::V2(OpencodeV2Backend::connect(client, directory, config).await?)
            }
        })
    }

    /// The generation of the server.
    pub fn generation(&self) -> Generation {
        match self {
            AnyOpencode::V1(_) => Generation::V1,
            AnyOpencode::V2(_) => Generation::V2,
        }
    }

    /// Whether the server answers its health route within a few seconds.
    pub async fn is_alive(&self) -> bool {
        match self {
            AnyOpencode::V1(b) => b.is_alive().await,
            AnyOpencode::V2(b) => b.is_alive().await,
        }
    }

    /// Closes the session pool (idle sessions deleted safely).
    pub async fn shutdown(&self) {
        match self {
            AnyOpencode::V1(b) => b.shutdown().await,
            AnyOpencode::V2(b) => b.shutdown().await,
        }
    }
}

impl AgentBackend for AnyOpencode {
    type Session = AnySession;

    fn provision(&self, role: AgentRole, sessions: usize) {
        match self {
            AnyOpencode::V1(b) => b.provision(role, sessions),
            AnyOpencode::V2(b) => b.provision(role, sessions),
        }
    }

    async fn open(&self, spec: SessionSpec) -> Result<AnySession, BackendError> {
        Ok(match self {
            AnyOpencode::V1(b) => AnySession::V1(b.open(spec).await?),
            AnyOpencode::V2(b) => AnySession::V2(b.open(spec).await?),
        })
    }

    async fn rescope(&self, session: &AnySession, scope: &EditScope) -> Result<(), BackendError> {
        match (self, session) {
            (AnyOpencode::V1(b), AnySession::V1(s)) => b.rescope(s, scope).await,
            (AnyOpencode::V2(b), AnySession::V2(s)) => b.rescope(s, scope).await,
            _ => Err(mismatch()),
        }
    }

    async fn run_turn(
        &self,
        session: &AnySession,
        turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        match (self, session) {
            (AnyOpencode::V1(b), AnySession::V1(s)) => {
                b.run_turn(s, turn, deadline, stop, notices).await
            }
            (AnyOpencode::V2(b), AnySession::V2(s)) => {
                b.run_turn(s, turn, deadline, stop, notices).await
            }
            _ => Err(mismatch()),
        }
    }

    async fn abort(&self, session: &AnySession) -> Result<(), BackendError> {
        match (self, session) {
            (AnyOpencode::V1(b), AnySession::V1(s)) => b.abort(s).await,
            (AnyOpencode::V2(b), AnySession::V2(s)) => b.abort(s).await,
            _ => Err(mismatch()),
        }
    }

    async fn close(
        &self,
        session: AnySession,
        disposition: Disposition,
    ) -> Result<(), BackendError> {
        match (self, session) {
            (AnyOpencode::V1(b), AnySession::V1(s)) => b.close(s, disposition).await,
            (AnyOpencode::V2(b), AnySession::V2(s)) => b.close(s, disposition).await,
            _ => Err(mismatch()),
        }
    }

    fn session_id(&self, session: &AnySession) -> String {
        session.id().to_string()
    }

    async fn cleanup(&self, sessions: Vec<String>) {
        match self {
            AnyOpencode::V1(b) => b.cleanup(sessions).await,
            AnyOpencode::V2(b) => b.cleanup(sessions).await,
        }
    }

    async fn notify(&self, message: &str) {
        match self {
            AnyOpencode::V1(b) => b.notify(message).await,
            AnyOpencode::V2(b) => b.notify(message).await,
        }
    }

    fn stats(&self) -> Vec<(String, f64)> {
        match self {
            AnyOpencode::V1(b) => b.stats(),
            AnyOpencode::V2(b) => b.stats(),
        }
    }
}
