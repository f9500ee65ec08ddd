//! The user's hooks as a layer around an [`AgentBackend`]: before a turn is sent (they may
//! change its prompt or veto it) and after it ends (they may change its report or reject
//! it). Verdict hooks run in the review, where verdicts are read.

use std::sync::Arc;

use orch_core::HookOutcome;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{AgentBackend, BackendError, NoticeSink, TurnReport, TurnRequest};
use crate::hooks::{HookEvent, MissionHooks};

/// An [`AgentBackend`] whose turns run through [`MissionHooks`].
#[derive(Debug)]
pub struct Hooked<B> {
    inner: B,
    hooks: Option<Arc<MissionHooks>>,
}

impl<B: AgentBackend> Hooked<B> {
    /// Wraps `inner`; with `None`, turns pass straight through.
    pub fn new(inner: B, hooks: Option<Arc<MissionHooks>>) -> Self {
        Hooked { inner, hooks }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// The hooks, if any (the mission runs the verdict hooks itself).
    pub fn hooks(&self) -> Option<&MissionHooks> {
        self.hooks.as_deref()
    }
}

/// A veto as the turn's error.
fn vetoed(hook: &str, what: &str, reason: &str) -> BackendError {
    BackendError::Session {
        message: format!("hook {hook} {what} the turn: {reason}"),
    }
}

impl<B: AgentBackend> AgentBackend for Hooked<B> {
    type Session = B::Session;

    forward_to_inner!(
        provision, open, rescope, abort, close, session_id, cleanup, notify, stats
    );

    async fn run_turn(
        &self,
        session: &B::Session,
        mut turn: TurnRequest,
        deadline: Instant,
        stop: &CancellationToken,
        notices: NoticeSink<'_>,
    ) -> Result<TurnReport, BackendError> {
        let Some(hooks) = &self.hooks else {
            return self
                .inner
                .run_turn(session, turn, deadline, stop, notices)
                .await;
        };
        let (role, item) = (turn.role, turn.item.clone());
        let mut before = HookEvent::BeforeTurn {
            role,
            item: item.clone(),
            prompt: std::mem::take(&mut turn.prompt),
        };
        if let HookOutcome::Vetoed { hook, reason } = hooks.run(&mut before) {
            return Err(vetoed(&hook, "vetoed", &reason));
        }
        if let HookEvent::BeforeTurn { prompt, .. } = before {
            turn.prompt = prompt;
        }
        let report = self
            .inner
            .run_turn(session, turn, deadline, stop, notices)
            .await?;
        let mut after = HookEvent::AfterTurn { role, item, report };
        if let HookOutcome::Vetoed { hook, reason } = hooks.run(&mut after) {
            return Err(vetoed(&hook, "rejected", &reason));
        }
        match after {
            HookEvent::AfterTurn { report, .. } => Ok(report),
            _ => unreachable!("hooks get the event by reference and cannot change its kind"),
        }
    }
}
