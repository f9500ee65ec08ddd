//! The report of a run: the plan as it ended, and the mission's figures over every run.

use std::collections::BTreeMap;

use orch_mvcc::{ItemId, ItemState, Plan};

use crate::events::{GitReport, ItemReport, MissionReport, MissionStatus};
use crate::totals::MissionTotals;

/// The report of a mission whose run ended with `status` and `plan` (at `version`), its
/// figures from `totals`.
pub(crate) fn build(
    mission: String,
    status: MissionStatus,
    plan: &Plan,
    version: u64,
    engine: BTreeMap<String, f64>,
    totals: &MissionTotals,
    git: Option<GitReport>,
) -> MissionReport {
    let failed: Vec<&ItemId> = plan
        .items
        .iter()
        .filter(|i| i.state == ItemState::Failed)
        .map(|i| &i.id)
        .collect();
    let items = plan
        .items
        .iter()
        .map(|item| ItemReport {
            id: item.id.to_string(),
            summary: item.summary.clone(),
            state: item.state.as_str().to_owned(),
            attempts: item.attempts,
            verdicts: totals
                .verdicts
                .get(item.id.as_str())
                .cloned()
                .unwrap_or_default(),
            blocked_by: failed
                .iter()
                .filter(|f| super::dependants(plan, f).contains(&item.id.to_string()))
                .map(ToString::to_string)
                .collect(),
            commit: git.as_ref().and_then(|g| {
                g.commits
                    .iter()
                    .find(|c| c.item.as_deref() == Some(item.id.as_str()))
                    .map(|c| c.sha.clone())
            }),
        })
        .collect();
    MissionReport {
        mission,
        status,
        items,
        usage: totals.usage.clone(),
        models: totals.models.clone(),
        permissions: totals.permissions.clone(),
        plan_version: version,
        rounds: totals.rounds(),
        retries: totals.retries,
        upstream_retries: totals.upstream_retries,
        engine,
        elapsed: totals.elapsed(),
        runs: totals.runs.clone(),
        git,
    }
}

/// Nothing runs, yet the plan is not all done: items failed (and block others).
pub(crate) fn stuck_status(plan: &Plan) -> MissionStatus {
    let ids = |state: ItemState| -> Vec<String> {
        plan.items
            .iter()
            .filter(|i| i.state == state)
            .map(|i| i.id.to_string())
            .collect()
    };
    let (failed, waiting) = (ids(ItemState::Failed), ids(ItemState::Pending));
    MissionStatus::Failed {
        reason: if failed.is_empty() {
            format!("items cannot be scheduled: {}", waiting.join(", "))
        } else {
            format!(
                "items failed: {}; blocked by them: {}",
                failed.join(", "),
                if waiting.is_empty() {
                    "none".to_owned()
                } else {
                    waiting.join(", ")
                }
            )
        },
    }
}
