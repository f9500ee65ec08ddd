//! The turns that are not an item's: the Planner's plan, the Commander agent's diagnosis of a
//! stuck plan, and the integration review of the whole.

use orch_core::AgentRole;
use orch_mvcc::{Item, ItemId, Plan};

use super::context::Ctx;
use super::review::{ReviewError, review};
use crate::backend::{AgentBackend, BackendError, Disposition, EditScope};
use crate::events::{MissionEvent, MissionStatus};
use crate::protocol::{self, Verdict};

/// The planning phase: a Planner turn, parsed and validated, re-asked with the error at most
/// `plan_retries` times. The plan, or how the mission ends without one.
pub(crate) async fn plan<B: AgentBackend>(
    ctx: &Ctx<B>,
    request: &str,
    project_files: &[String],
) -> Result<Plan, MissionStatus> {
    let scope = ctx.main_scope(EditScope::none());
    let session = match ctx.open_session(AgentRole::Planner, scope.clone()).await {
        Ok(s) => s,
        Err(BackendError::ServerLost { message }) => {
            return Err(MissionStatus::ServerLost { reason: message });
        }
        Err(BackendError::Stopped) => return Err(MissionStatus::Stopped),
        Err(e) => {
            return Err(MissionStatus::Failed {
                reason: format!("cannot open a Planner session: {e}"),
            });
        }
    };
    let mut prompt = protocol::planner_prompt(request, project_files);
    let mut outcome = Err(MissionStatus::Failed {
        reason: "no plan".into(),
    });
    for attempt in 1..=ctx.config.plan_retries + 1 {
        let report = match ctx
            .turn(
                &session,
                AgentRole::Planner,
                None,
                prompt.clone(),
                scope.clone(),
            )
            .await
        {
            Ok(report) => report,
            Err(e) => {
                // A stop or a lost server abandons the turn: the planning resumes by planning.
                ctx.record_failure(AgentRole::Planner, None, &e);
                outcome = Err(match e {
                    BackendError::ServerLost { message } => {
                        MissionStatus::ServerLost { reason: message }
                    }
                    BackendError::Stopped => MissionStatus::Stopped,
                    e => MissionStatus::Failed {
                        reason: format!("the Planner's turn failed: {e}"),
                    },
                });
                break;
            }
        };
        ctx.record_turn(AgentRole::Planner, None, &report);
        match protocol::extract_plan(&report.text) {
            Ok(plan) => {
                outcome = Ok(plan);
                break;
            }
            Err(e) => {
                ctx.emit(MissionEvent::PlanRejected {
                    attempt,
                    error: e.to_string(),
                });
                outcome = Err(MissionStatus::Failed {
                    reason: format!("the plan was rejected {attempt} times; last error: {e}"),
                });
                prompt = protocol::planner_retry_prompt(request, &e);
            }
        }
    }
    let disposition = if outcome.is_ok() {
        Disposition::Reusable
    } else {
        Disposition::Broken
    };
    ctx.close_session(session, disposition).await;
    outcome
}

/// Asks the Commander agent why the plan is stuck (best effort).
pub(crate) async fn diagnose<B: AgentBackend>(
    ctx: &Ctx<B>,
    request: &str,
    plan: &Plan,
    unchanged: u32,
) -> Option<String> {
    let scope = ctx.main_scope(EditScope::none());
    let session = ctx
        .open_session(AgentRole::Commander, scope.clone())
        .await
        .ok()?;
    let prompt =
        protocol::diagnostic_prompt(&protocol::mission_context(request, plan, None), unchanged);
    let result = ctx
        .turn(&session, AgentRole::Commander, None, prompt, scope)
        .await;
    let disposition = if result.is_ok() {
        Disposition::Reusable
    } else {
        Disposition::Broken
    };
    ctx.close_session(session, disposition).await;
    let report = result.ok()?;
    ctx.record_turn(AgentRole::Commander, None, &report);
    Some(report.text)
}

/// What an integration review decided: its verdict and the fix-up items a FAIL asked for
/// (ids `F<round>-<n>`, those already in the plan left out).
pub(crate) struct Integration {
    pub(crate) verdict: Verdict,
    pub(crate) fixups: Vec<Item>,
}

/// The integration review of round `round` over `plan`.
pub(crate) async fn integrate<B: AgentBackend>(
    ctx: &Ctx<B>,
    request: &str,
    plan: &Plan,
    round: u32,
) -> Result<Integration, ReviewError> {
    let context = protocol::mission_context(request, plan, None);
    let scope = ctx.main_scope(EditScope::none());
    let (verdict, report) =
        review(ctx, None, protocol::integration_prompt(&context), scope).await?;
    let fixups = match &verdict {
        Verdict::Pass => Vec::new(),
        Verdict::Fail { .. } => protocol::parse_fixups(&report.text)
            .into_iter()
            .enumerate()
            .filter_map(|(n, fix)| {
                let id = ItemId::new(format!("F{round}-{}", n + 1)).ok()?;
                (plan.item(&id).is_none())
                    .then(|| Item::new(id, fix.summary.clone()).with_files(fix.files.clone()))
            })
            .collect(),
    };
    Ok(Integration { verdict, fixups })
}
