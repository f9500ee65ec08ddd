//! Mission events (for the CLI and tests) and the final report.

use std::collections::BTreeMap;
use std::time::Duration;

use orch_core::AgentRole;
use serde::{Deserialize, Serialize};

use crate::backend::{PermissionDecision, TokenUsage};
use crate::protocol::Verdict;

/// Something that happened in a mission. Subscribers get them in order; a subscriber that
/// falls more than the channel's capacity behind skips the oldest (and is told how many).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MissionEvent {
    /// The mission started.
    Started {
        /// The request.
        mission: String,
        /// Whether an earlier plan was found and continued.
        resumed: bool,
        /// 0 when a command started this run; `n` when it follows the `n`-th replacement of
        /// a lost server (see [`crate::Supervisor`]).
        #[serde(default)]
        restart: u32,
    },
    /// A plan (or a change to it) was committed.
    PlanCommitted {
        /// The TODO.md version.
        version: u64,
        /// Items in the plan.
        items: usize,
    },
    /// A plan answer was malformed and sent back.
    PlanRejected {
        /// Which attempt (1-based).
        attempt: u32,
        /// The parse or validation error.
        error: String,
    },
    /// A Worker started on an item.
    ItemStarted {
        /// The item.
        item: String,
        /// The attempt (1-based).
        attempt: u32,
        /// The Worker lane.
        lane: usize,
        /// Whether the lane had run one of the item's files before (warm context).
        warm: bool,
    },
    /// A turn ended.
    TurnFinished {
        /// Whose turn.
        role: AgentRole,
        /// The item, if the turn was for one.
        item: Option<String>,
        /// Tokens used.
        tokens: TokenUsage,
        /// Wall time.
        elapsed_ms: u64,
        /// Tool calls made.
        tool_calls: usize,
        /// Cost in the provider's currency unit.
        #[serde(default)]
        cost: f64,
        /// The model that answered, when the backend says.
        #[serde(default)]
        model: Option<String>,
    },
    /// A turn failed (after retries), or was given up on by a stop (`abandoned`).
    TurnFailed {
        /// Whose turn.
        role: AgentRole,
        /// The item, if any.
        item: Option<String>,
        /// Why.
        error: String,
        /// The stop signal ended it: not a failure of the agent or the model.
        #[serde(default)]
        abandoned: bool,
    },
    /// A transient error is being retried.
    Retrying {
        /// Whose turn.
        role: AgentRole,
        /// The item, if any.
        item: Option<String>,
        /// Attempt about to start (2 = first retry).
        attempt: u32,
        /// The wait before it.
        delay_ms: u64,
        /// The error retried.
        error: String,
    },
    /// The server failed a model call and retries it by itself (OpenCode does, for 429 and
    /// 5xx answers); the error counts toward the model's breaker.
    UpstreamRetry {
        /// Whose turn.
        role: AgentRole,
        /// The item, if any.
        item: Option<String>,
        /// The model (breaker key).
        model: String,
        /// The server's attempt counter (1 for the first retry).
        attempt: u32,
        /// How long until the server tries again.
        wait_ms: u64,
        /// The provider's error message.
        message: String,
        /// The upstream HTTP status, when known.
        status: Option<u16>,
        /// Whether the provider is rate limiting.
        rate_limited: bool,
    },
    /// A permission request was answered by policy.
    Permission {
        /// The item whose Worker asked.
        item: Option<String>,
        /// The decision.
        decision: PermissionDecision,
    },
    /// A unit review ended.
    Reviewed {
        /// The item.
        item: String,
        /// The verdict.
        verdict: Verdict,
    },
    /// An item is done.
    ItemDone {
        /// The item.
        item: String,
        /// Attempts it took.
        attempts: u32,
    },
    /// A passed item was committed on the mission's branch (git missions).
    ItemCommitted {
        /// The item.
        item: String,
        /// The item's commit.
        sha: String,
        /// The mission's branch.
        branch: String,
        /// The merge of the lane's branch into the mission's branch, when it was not a
        /// fast-forward (a worktree per lane).
        #[serde(default)]
        merge: Option<String>,
        /// Found on the branch when the mission resumed (the commit was made, its record was
        /// lost in a crash).
        #[serde(default)]
        reconciled: bool,
    },
    /// A passed item's lane could not be merged into the mission's branch: the branch
    /// changed the same lines meanwhile. The merge was aborted (the branch is as it was) and
    /// the item goes back to pending, an attempt charged.
    MergeConflict {
        /// The item.
        item: String,
        /// The conflicting paths.
        paths: Vec<String>,
    },
    /// The mission works on a git branch in a worktree of its own (published at the start of
    /// every run of a git mission).
    GitBranch {
        /// The branch.
        branch: String,
        /// The worktree where the agents work.
        worktree: std::path::PathBuf,
        /// The user's branch it started from.
        base_branch: String,
        /// Whether a run before this one created it.
        resumed: bool,
        /// Tracked paths of the user's checkout with uncommitted changes when the mission
        /// started: they stay where they are and are not part of the mission (it starts from
        /// the user's `HEAD`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        uncommitted: Vec<String>,
    },
    /// An item failed for good.
    ItemFailed {
        /// The item.
        item: String,
        /// Why.
        reason: String,
        /// Items that can no longer run because of it.
        blocked: Vec<String>,
    },
    /// The final integration review ended.
    IntegrationReviewed {
        /// The round (1-based).
        round: u32,
        /// The verdict.
        verdict: Verdict,
        /// Fix-up items added.
        fixups: Vec<String>,
    },
    /// The plan stopped changing.
    Stagnation {
        /// Unchanged rounds.
        unchanged: u32,
        /// Whether this escalated (the mission stops).
        escalated: bool,
        /// The Commander's diagnosis, if it was asked.
        diagnosis: Option<String>,
    },
    /// An agent repeated itself (same tool call, or identical turns).
    LoopDetected {
        /// The item.
        item: String,
        /// What repeated.
        detail: String,
    },
    /// A budget was exceeded; no new work starts.
    BudgetExceeded {
        /// Which budget.
        budget: String,
        /// The figure reached.
        used: f64,
        /// The limit.
        limit: f64,
    },
    /// The supervisor is reconnecting to (or restarting) the OpenCode server.
    Reconnecting {
        /// Reconnection attempt (1-based).
        attempt: u32,
        /// Why.
        reason: String,
    },
    /// The run ended (a mission whose server was replaced has one per run).
    Finished {
        /// How.
        status: MissionStatus,
        /// Commander rounds of this run.
        #[serde(default)]
        rounds: u32,
    },
}

/// How a mission ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MissionStatus {
    /// Every item done and the integration review passed.
    Completed,
    /// It could not finish; the reason says why.
    Failed {
        /// Why.
        reason: String,
    },
    /// The stop signal ended it; it can be resumed.
    Stopped,
    /// A budget stopped new work.
    BudgetExceeded {
        /// Which budget.
        budget: String,
    },
    /// The OpenCode server went away; the mission can be resumed once it is back (see
    /// [`crate::Supervisor`]).
    ServerLost {
        /// What was seen.
        reason: String,
    },
}

impl MissionStatus {
    /// Whether the mission completed.
    pub fn is_success(&self) -> bool {
        matches!(self, MissionStatus::Completed)
    }

    /// A few words for people: `completed`, `failed: <reason>`, `stopped by the user`, …
    pub fn describe(&self) -> String {
        match self {
            MissionStatus::Completed => "completed".into(),
            MissionStatus::Failed { reason } => format!("failed: {reason}"),
            MissionStatus::Stopped => "stopped by the user".into(),
            MissionStatus::BudgetExceeded { budget } => {
                format!("stopped: the {budget} budget was exceeded")
            }
            MissionStatus::ServerLost { reason } => {
                format!("interrupted: the OpenCode server went away ({reason})")
            }
        }
    }
}

/// Per-item figures in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemReport {
    /// The id.
    pub id: String,
    /// The summary.
    pub summary: String,
    /// The final state (`done`, `failed`, `pending` when blocked or not reached, …).
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// The verdicts, in order.
    pub verdicts: Vec<Verdict>,
    /// Blocked by these failed items.
    pub blocked_by: Vec<String>,
    /// Its commit on the mission's branch (git missions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// The git side of a mission's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitReport {
    /// The mission's branch.
    pub branch: String,
    /// The user's branch it started from (where it merges back).
    pub base_branch: String,
    /// The commit it started from.
    pub base: String,
    /// The mission's worktree, while it exists (removed when the mission completes).
    #[serde(default)]
    pub worktree: Option<std::path::PathBuf>,
    /// The branch's commits since `base`, oldest first.
    pub commits: Vec<CommitReport>,
    /// The command that merges the branch into `base_branch`.
    pub merge_command: String,
}

/// One commit of the mission's branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitReport {
    /// The hash.
    pub sha: String,
    /// The subject.
    pub subject: String,
    /// The plan item it commits (`None`: a merge, or a commit made by hand).
    pub item: Option<String>,
}

/// Figures for one role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleUsage {
    /// Turns finished.
    pub turns: u64,
    /// Turns failed.
    pub failed_turns: u64,
    /// Turns given up on by a stop (Ctrl-C): neither finished nor failed.
    #[serde(default)]
    pub abandoned_turns: u64,
    /// Tokens.
    pub tokens: TokenUsage,
    /// Cost.
    pub cost: f64,
    /// Time in turns.
    pub busy_ms: u64,
}

/// The final report of a mission (also written to `.orchestrator/report.json`).
///
/// The figures are the whole mission's: usage, models, permissions, retries, rounds and
/// elapsed time are summed over every run in the journal (a resume, a server replacement),
/// with one entry per run in `runs`. `engine` is the last run's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MissionReport {
    /// The request.
    pub mission: String,
    /// How it ended.
    pub status: MissionStatus,
    /// Every item.
    pub items: Vec<ItemReport>,
    /// Figures by role, over every run.
    pub usage: BTreeMap<AgentRole, RoleUsage>,
    /// Which model answered how many turns, over every run.
    pub models: BTreeMap<String, u64>,
    /// Permission requests answered, over every run.
    pub permissions: Vec<PermissionDecision>,
    /// The TODO.md version at the end.
    pub plan_version: u64,
    /// Commander rounds, over every run that recorded its end.
    pub rounds: u32,
    /// Retries of transient errors, over every run.
    pub retries: u64,
    /// Failed model calls the server retried by itself, over every run.
    #[serde(default)]
    pub upstream_retries: u64,
    /// Engine figures of the last run: scheduling, pools, breakers (`name → value`).
    pub engine: BTreeMap<String, f64>,
    /// Wall time, over every run (not the time between runs).
    pub elapsed: Duration,
    /// Every run, in order, the last one being this one.
    #[serde(default)]
    pub runs: Vec<crate::totals::RunSummary>,
    /// The mission's branch, its commits and how to merge it (git missions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitReport>,
}

impl MissionReport {
    /// Tokens of every role.
    pub fn total_tokens(&self) -> TokenUsage {
        let mut total = TokenUsage::default();
        for usage in self.usage.values() {
            total.add(&usage.tokens);
        }
        total
    }

    /// Cost of every role.
    pub fn total_cost(&self) -> f64 {
        self.usage.values().map(|u| u.cost).sum()
    }
}
