//! What the Commander, the Worker lanes and the reviews share: the layered backend, the
//! settings, the event channel and the journal, and the one way to run a turn.

use std::path::PathBuf;
use std::sync::Arc;

use orch_core::AgentRole;
use orch_mvcc::ItemId;
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use super::MissionConfig;
use super::files::Offload;
use super::workspace::Workspace;
use crate::agents::AgentSet;
use crate::backend::guard::{Guarded, model_key};
use crate::backend::hooks::Hooked;
use crate::backend::{
    AgentBackend, BackendError, Disposition, EditScope, SessionSpec, TurnNotice, TurnReport,
    TurnRequest,
};
use crate::events::MissionEvent;
use crate::journal::{Journal, JournalEntry};
use crate::totals::MissionTotals;

/// The backend a mission runs turns on: the user's hooks around the turn policy around the
/// backend it was given.
pub(crate) type Layered<B> = Hooked<Guarded<Arc<B>>>;

/// Shared by the Commander, the lanes and the review tasks.
pub(crate) struct Ctx<B: AgentBackend> {
    pub(crate) backend: Layered<B>,
    pub(crate) agents: AgentSet,
    pub(crate) config: MissionConfig,
    /// Where the agents work (the project, or the mission's worktrees).
    pub(crate) work: Workspace,
    pub(crate) stop: CancellationToken,
    pub(crate) files: Offload,
    events: broadcast::Sender<MissionEvent>,
    journal: Mutex<Journal>,
    /// Messages for a person watching the backend; drained by the mission's notifier task.
    toasts: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl<B: AgentBackend> Ctx<B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        backend: Layered<B>,
        agents: AgentSet,
        config: MissionConfig,
        work: Workspace,
        stop: CancellationToken,
        events: broadcast::Sender<MissionEvent>,
        journal: Journal,
        toasts: mpsc::UnboundedSender<String>,
    ) -> Self {
        Ctx {
            backend,
            agents,
            config,
            work,
            stop,
            files: Offload::new(2),
            events,
            journal: Mutex::new(journal),
            toasts: Mutex::new(Some(toasts)),
        }
    }

    /// `scope` in the directory of the mission-wide sessions (the mission's worktree in a
    /// git mission; the backend's own directory otherwise).
    pub(crate) fn main_scope(&self, scope: EditScope) -> EditScope {
        self.scope_in(scope, self.work.main_dir())
    }

    /// `scope` in `dir`, when the mission works elsewhere than the backend's directory (git).
    pub(crate) fn scope_in(&self, scope: EditScope, dir: PathBuf) -> EditScope {
        if self.work.mode().is_on() {
            scope.within(dir)
        } else {
            scope
        }
    }

    /// The user's hooks, if any.
    pub(crate) fn hooks(&self) -> Option<&crate::hooks::MissionHooks> {
        self.backend.hooks()
    }

    /// Journals `event`, then publishes it.
    pub(crate) fn emit(&self, event: MissionEvent) {
        self.journal(JournalEntry::Event {
            event: event.clone(),
        });
        // No subscriber is fine: events are for observers.
        let _ = self.events.send(event);
    }

    /// Appends to the journal; a failing journal is logged, not fatal (the plan store stays
    /// the source of truth for item states).
    pub(crate) fn journal(&self, entry: JournalEntry) {
        if let Err(e) = self.journal.lock().append(entry) {
            warn!(error = %e, "cannot write the mission journal");
        }
    }

    /// The mission's figures over every run, from the journal.
    pub(crate) fn totals(&self) -> MissionTotals {
        self.journal.lock().totals().clone()
    }

    /// Tells a person watching the backend (a TUI toast), without waiting: the mission's
    /// notifier task sends it.
    pub(crate) fn notify(&self, message: String) {
        if let Some(toasts) = &*self.toasts.lock() {
            let _ = toasts.send(message);
        }
    }

    /// No more notices: the notifier task ends once it has sent what is queued.
    pub(crate) fn close_notices(&self) {
        self.toasts.lock().take();
    }

    pub(crate) async fn open_session(
        &self,
        role: AgentRole,
        scope: EditScope,
    ) -> Result<B::Session, BackendError> {
        let session = self
            .backend
            .open(SessionSpec {
                role,
                title: format!("orchestrator {role}"),
                scope,
            })
            .await?;
        self.journal(JournalEntry::SessionOpened {
            role,
            session: self.backend.session_id(&session),
        });
        Ok(session)
    }

    pub(crate) async fn close_session(&self, session: B::Session, disposition: Disposition) {
        let id = self.backend.session_id(&session);
        let _ = self.backend.close(session, disposition).await;
        self.journal(JournalEntry::SessionClosed { session: id });
    }

    /// Runs one turn of `role` (on `item`'s `attempt`, if any) through the layered backend:
    /// hooks, the turn policy, the backend. What happens on the way becomes mission events.
    pub(crate) async fn turn(
        &self,
        session: &B::Session,
        role: AgentRole,
        item: Option<(&ItemId, u32)>,
        prompt: String,
        scope: EditScope,
    ) -> Result<TurnReport, BackendError> {
        let item_name = item.map(|(id, _)| id.to_string());
        let request = TurnRequest {
            role,
            agent: self.agents.for_role(role).name.clone(),
            model: self.agents.model_for(role),
            prompt,
            scope,
            item: item_name.clone(),
            attempt: item.map_or(1, |(_, attempt)| attempt),
        };
        let notices = |notice: TurnNotice| match notice {
            TurnNotice::UpstreamRetry {
                model,
                attempt,
                wait,
                message,
                status,
                rate_limited,
            } => self.emit(MissionEvent::UpstreamRetry {
                role,
                item: item_name.clone(),
                model: model_key(model.as_ref()),
                attempt,
                wait_ms: wait.as_millis() as u64,
                message,
                status,
                rate_limited,
            }),
            TurnNotice::Retrying {
                attempt,
                delay,
                error,
            } => self.emit(MissionEvent::Retrying {
                role,
                item: item_name.clone(),
                attempt,
                delay_ms: delay.as_millis() as u64,
                error,
            }),
        };
        let span = info_span!("turn", role = %role, item = item_name.as_deref().unwrap_or("-"));
        let deadline = Instant::now() + self.config.turn_timeout;
        let result = self
            .backend
            .run_turn(session, request, deadline, &self.stop, &notices)
            .instrument(span.clone())
            .await;
        if let Ok(report) = &result {
            let _entered = span.enter();
            for call in &report.tool_calls {
                tracing::info!(tool = %call.tool, status = %call.status, input = %call.input, "tool call");
            }
            tracing::info!(
                tokens_in = report.tokens.input,
                tokens_out = report.tokens.output,
                cost = report.cost,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "turn finished"
            );
        }
        result
    }

    /// Journals a finished turn (the report's figures are summed from the journal).
    pub(crate) fn record_turn(&self, role: AgentRole, item: Option<&ItemId>, report: &TurnReport) {
        for decision in &report.permissions {
            self.emit(MissionEvent::Permission {
                item: item.map(ToString::to_string),
                decision: decision.clone(),
            });
        }
        self.emit(MissionEvent::TurnFinished {
            role,
            item: item.map(ToString::to_string),
            tokens: report.tokens,
            elapsed_ms: report.elapsed.as_millis() as u64,
            tool_calls: report.tool_calls.len(),
            cost: report.cost,
            model: report.model.clone(),
        });
    }

    /// Journals a failed turn; one ended by the stop signal or a lost server is abandoned,
    /// not failed (no agent or model failed, and its item is not charged an attempt).
    pub(crate) fn record_failure(
        &self,
        role: AgentRole,
        item: Option<&ItemId>,
        error: &BackendError,
    ) {
        self.emit(MissionEvent::TurnFailed {
            role,
            item: item.map(ToString::to_string),
            error: error.to_string(),
            abandoned: matches!(
                error,
                BackendError::Stopped | BackendError::ServerLost { .. }
            ),
        });
    }
}
