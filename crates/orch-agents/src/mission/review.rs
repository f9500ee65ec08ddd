//! Reviews: a unit review of one item with its diff, or the integration review of the whole,
//! on a Reviewer session; a malformed verdict is asked for once more. Verdict hooks may change
//! the verdict or veto it into a FAIL.

use orch_core::{AgentRole, HookOutcome};
use orch_mvcc::ItemId;

use super::context::Ctx;
use crate::backend::{AgentBackend, BackendError, Disposition, EditScope, TurnReport};
use crate::hooks::HookEvent;
use crate::protocol::{self, ProtocolError, Verdict};

/// Why a review gave no verdict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ReviewError {
    /// The session or a turn failed (stopped, server lost, or an error retries did not fix).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The Reviewer answered twice without a readable verdict.
    #[error("the reviewer answered without a valid verdict: {0}")]
    NoVerdict(ProtocolError),
}

impl ReviewError {
    /// Whether the review was cut short by the stop signal or a lost server (the item stays
    /// in review; resume reviews it), rather than failing.
    pub(crate) fn is_interruption(&self) -> bool {
        matches!(
            self,
            ReviewError::Backend(BackendError::Stopped | BackendError::ServerLost { .. })
        )
    }

    /// The lost server's description, if the server was lost.
    pub(crate) fn server_lost(&self) -> Option<&str> {
        match self {
            ReviewError::Backend(BackendError::ServerLost { message }) => Some(message),
            _ => None,
        }
    }
}

/// One review turn (unit, with `item`'s `attempt`, or integration) on a Reviewer session of
/// `scope` (it edits nothing; its directory is where the work is).
pub(crate) async fn review<B: AgentBackend>(
    ctx: &Ctx<B>,
    item: Option<(&ItemId, u32)>,
    prompt: String,
    scope: EditScope,
) -> Result<(Verdict, TurnReport), ReviewError> {
    let id = item.map(|(id, _)| id);
    let session = ctx.open_session(AgentRole::Reviewer, scope.clone()).await?;
    let mut prompt = prompt;
    let mut result = Err(ReviewError::NoVerdict(ProtocolError::NoVerdict));
    for _ in 0..2 {
        match ctx
            .turn(
                &session,
                AgentRole::Reviewer,
                item,
                prompt.clone(),
                scope.clone(),
            )
            .await
        {
            Ok(report) => {
                ctx.record_turn(AgentRole::Reviewer, id, &report);
                match protocol::parse_verdict(&report.text) {
                    Ok(verdict) => {
                        result = Ok((hooked_verdict(ctx, id, verdict), report));
                        break;
                    }
                    Err(e) => {
                        prompt = format!(
                            "Your answer could not be read: {e}. Repeat your conclusion and end \
                             with exactly one line `VERDICT: PASS` or `VERDICT: FAIL: <reasons>`."
                        );
                        result = Err(ReviewError::NoVerdict(e));
                    }
                }
            }
            Err(e) => {
                ctx.record_failure(AgentRole::Reviewer, id, &e);
                result = Err(e.into());
                break;
            }
        }
    }
    let disposition = if result.is_ok() {
        Disposition::Reusable
    } else {
        Disposition::Broken
    };
    ctx.close_session(session, disposition).await;
    result
}

/// Runs the verdict hooks: they may change the verdict; a veto makes it a FAIL.
fn hooked_verdict<B: AgentBackend>(
    ctx: &Ctx<B>,
    item: Option<&ItemId>,
    verdict: Verdict,
) -> Verdict {
    let Some(hooks) = ctx.hooks() else {
        return verdict;
    };
    let mut event = HookEvent::Verdict {
        item: item.map(ToString::to_string),
        verdict,
    };
    match hooks.run(&mut event) {
        HookOutcome::Vetoed { hook, reason } => Verdict::Fail {
            reasons: format!("hook {hook}: {reason}"),
        },
        HookOutcome::Proceed => match event {
            HookEvent::Verdict { verdict, .. } => verdict,
            _ => unreachable!("hooks get the event by reference and cannot change its kind"),
        },
    }
}
