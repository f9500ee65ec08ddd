//! A mission: a request, a project directory, the agents and limits ([`MissionSpec`]), run
//! to its end on a backend ([`Mission::run`]).
//!
//! A reader follows a mission through these files:
//!
//! - [`commander`]: the state machine — plan or resume, then the execution loop (dispatch
//!   ready items to lanes, handle outcomes, integrate), wind-down and finish;
//! - [`planning`]: the Planner's plan, the Commander agent's diagnosis, the integration
//!   review;
//! - [`lane`]: a Worker lane running items in its session;
//! - [`review`]: a unit review and its verdict ([`review::ReviewError`] when there is none);
//! - [`item`]: every legal change of an item's state, in one function;
//! - [`context`]: what they share, and the one way to run a turn (through the layered
//!   backend: hooks → turn policy → backend);
//! - [`files`]: the project's files, diffs, and the threads that read and diff them;
//! - [`report`]: the report of a run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_mvcc::{ItemId, Plan, StoreError, TodoStore};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::agents::AgentSet;
use crate::backend::guard::{GuardConfig, Guarded};
use crate::backend::hooks::Hooked;
use crate::backend::{AgentBackend, BackendError, TurnReport};
use crate::events::{MissionEvent, MissionReport};
use crate::git::{GitError, GitMode};
use crate::hooks::MissionHooks;
use crate::journal::{Journal, JournalError};
use crate::policy::PolicyConfig;
use crate::protocol::Verdict;

mod commander;
mod context;
mod files;
pub(crate) mod item;
mod lane;
mod planning;
mod report;
mod review;
pub(crate) mod workspace;

use commander::Commander;
use context::Ctx;
use review::ReviewError;

/// Limits and switches of a mission.
#[derive(Debug, Clone, PartialEq)]
pub struct MissionConfig {
    /// Worker lanes (parallel Worker sessions).
    pub workers: usize,
    /// Parallel Reviewer turns.
    pub reviewers: usize,
    /// Attempts per item before it fails (a Reviewer FAIL or a Worker error is one).
    pub max_attempts: u32,
    /// Times a malformed plan is sent back before the mission fails.
    pub plan_retries: u32,
    /// Commander rounds (events handled) before the mission stops.
    pub max_rounds: u32,
    /// Final integration reviews (each FAIL may add fix-up items) before the mission fails.
    pub integration_rounds: u32,
    /// Run the final integration review.
    pub integration_review: bool,
    /// Deadline of one turn.
    pub turn_timeout: Duration,
    /// Stop new work past this many tokens.
    pub token_budget: Option<u64>,
    /// Stop new work past this cost.
    pub cost_budget: Option<f64>,
    /// Retry, breaker, auto-scaling and stagnation settings.
    pub policy: PolicyConfig,
    /// fsync the journal (in the background, group commit: see [`Journal`]); a record is
    /// always written before the Commander acts on it. Off only for tests and benchmarks.
    pub journal_fsync: bool,
    /// Least time between two writes of `TODO.md`. The Commander works from its own copy of
    /// the plan and writes changes behind, batched; the journal, written first, is what resume
    /// rebuilds unwritten changes from. Zero writes as soon as the previous write ends.
    pub store_interval: Duration,
    /// How the mission uses git (default [`GitMode::Off`]: agents edit the project in
    /// place). A mission that already has a plan keeps what it started with (the journal
    /// says).
    pub git: GitMode,
    /// Shell commands a Worker may run (glob patterns, `*` matching anything: `python3 -m
    /// unittest*`, `cargo test*`); any other command is rejected and recorded as a permission
    /// decision. Empty (the default): the Worker agent's own rules decide (the built-in
    /// Worker may run none).
    pub worker_commands: Vec<String>,
}

impl Default for MissionConfig {
    fn default() -> Self {
        MissionConfig {
            workers: 4,
            reviewers: 2,
            max_attempts: 3,
            plan_retries: 2,
            max_rounds: 1_000,
            integration_rounds: 2,
            integration_review: true,
            turn_timeout: Duration::from_secs(600),
            token_budget: None,
            cost_budget: None,
            policy: PolicyConfig::default(),
            journal_fsync: true,
            store_interval: Duration::from_millis(20),
            git: GitMode::Off,
            worker_commands: Vec::new(),
        }
    }
}

/// A mission could not run at all (as opposed to running and failing, which is a
/// [`MissionStatus`](crate::MissionStatus) in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MissionError {
    /// The TODO.md store failed.
    #[error("plan store: {0}")]
    Store(#[from] StoreError),
    /// The configuration is unusable.
    #[error("invalid mission configuration: {0}")]
    Config(String),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The git workspace could not be prepared (not a repository, no commit, a detached
    /// `HEAD`, git missing…); nothing was written.
    #[error("git: {0}")]
    Git(#[from] GitError),
    /// The report could not be written.
    #[error("cannot write {path}: {source}")]
    Report {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything about a mission but its backend: the request, the project, the agents, the
/// limits, the stop signal, the event channel and the hooks. [`Mission`] runs one;
/// [`Supervisor`](crate::Supervisor) runs one per connection to a server, each with a child of
/// its stop signal.
#[derive(Clone)]
pub struct MissionSpec {
    request: String,
    dir: PathBuf,
    agents: AgentSet,
    config: MissionConfig,
    stop: CancellationToken,
    events: broadcast::Sender<MissionEvent>,
    hooks: Option<Arc<MissionHooks>>,
    /// 0 for a run a command starts; `n` after the `n`-th server replacement.
    restart: u32,
}

impl std::fmt::Debug for MissionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MissionSpec")
            .field("request", &self.request)
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl MissionSpec {
    /// A mission for `request` in the project at `dir`, with the built-in agents and default
    /// limits.
    pub fn new(request: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        let (events, _) = broadcast::channel(1024);
        MissionSpec {
            request: request.into(),
            dir: dir.into(),
            agents: AgentSet::builtin(),
            config: MissionConfig::default(),
            stop: CancellationToken::new(),
            events,
            hooks: None,
            restart: 0,
        }
    }

    /// Uses these agents.
    #[must_use]
    pub fn agents(mut self, agents: AgentSet) -> Self {
        self.agents = agents;
        self
    }

    /// Uses these limits.
    #[must_use]
    pub fn config(mut self, config: MissionConfig) -> Self {
        self.config = config;
        self
    }

    /// Runs these hooks before and after every turn and on every verdict (see
    /// [`HookEvent`](crate::HookEvent)).
    #[must_use]
    pub fn hooks(mut self, hooks: Arc<MissionHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Uses this stop signal (a child of it is watched by every loop and every wait).
    #[must_use]
    pub fn stop_token(mut self, stop: CancellationToken) -> Self {
        self.stop = stop;
        self
    }

    /// Publishes events on `sender` instead of the spec's own channel.
    #[must_use]
    pub fn event_sender(mut self, sender: broadcast::Sender<MissionEvent>) -> Self {
        self.events = sender;
        self
    }

    /// The stop signal: cancel it to stop the mission.
    pub fn stop_handle(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Subscribes to the mission's events (capacity 1,024; a subscriber that falls further
    /// behind loses the oldest and is told how many by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<MissionEvent> {
        self.events.subscribe()
    }

    /// The request.
    pub fn request(&self) -> &str {
        &self.request
    }

    /// The project directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The state directory: `<dir>/.orchestrator`.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join(".orchestrator")
    }

    /// This spec for the run after the `n`-th server replacement, with a child of its stop
    /// signal (the [`Supervisor`](crate::Supervisor)'s).
    pub(crate) fn for_restart(&self, n: u32) -> Self {
        let mut spec = self.clone();
        spec.stop = self.stop.child_token();
        spec.restart = n;
        spec
    }

    /// Sends `event` to the spec's subscribers (not journaled: for the supervisor's own
    /// events between runs).
    pub(crate) fn publish(&self, event: MissionEvent) {
        let _ = self.events.send(event);
    }
}

/// One mission: a [`MissionSpec`] and the backend it runs on.
pub struct Mission<B: AgentBackend> {
    backend: Arc<B>,
    spec: MissionSpec,
}

impl<B: AgentBackend> std::fmt::Debug for Mission<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mission")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl<B: AgentBackend> Mission<B> {
    /// The mission `spec` on `backend`.
    pub fn new(backend: Arc<B>, spec: MissionSpec) -> Self {
        Mission { backend, spec }
    }

    /// The spec.
    pub fn spec(&self) -> &MissionSpec {
        &self.spec
    }

    /// Runs the mission to its end and writes `.orchestrator/report.json`.
    ///
    /// A plan already in the store that is not finished is continued (items in progress go
    /// back to pending, items in review are reviewed); a mission whose planning never
    /// committed a plan is planned.
    ///
    /// # Errors
    /// [`MissionError`] when the mission cannot run at all (the store, the configuration, the
    /// report file). A mission that runs and fails returns `Ok` with a failed status.
    pub async fn run(self) -> Result<MissionReport, MissionError> {
        let Mission { backend, spec } = self;
        let config = spec.config.clone();
        if config.workers == 0 || config.reviewers == 0 {
            return Err(MissionError::Config(
                "workers and reviewers must be at least 1".into(),
            ));
        }
        let state_dir = spec.state_dir();
        let prepared = {
            let (state_dir, dir, request) =
                (state_dir.clone(), spec.dir.clone(), spec.request.clone());
            let mode = config.git;
            workspace::blocking(move || -> Result<workspace::Prepared, MissionError> {
                // Decided from what is on disk, before anything is written.
                let history = Journal::read(&state_dir)?;
                let has_plan = std::fs::read_to_string(state_dir.join("TODO.md"))
                    .ok()
                    .and_then(|t| orch_mvcc::parse(&t).ok())
                    .is_some_and(|p| !p.items.is_empty());
                Ok(workspace::prepare(
                    &dir, mode, &request, &history, has_plan,
                )?)
            })
            .await?
        };
        let store = TodoStore::open(&state_dir)?;
        let (mut journal, history) = Journal::open(store.dir(), config.journal_fsync)?;
        if prepared.new
            && let Some(git) = &prepared.git
        {
            // Recorded before the branch and the worktree exist: they are provably the
            // mission's, and a crash leaves the next run to create them.
            journal.append(crate::journal::JournalEntry::GitWorkspace {
                mode: git.mode,
                branch: git.branch.clone(),
                worktree: git.worktree.clone(),
                base: git.base.clone(),
                base_branch: git.base_branch.clone(),
            })?;
        }
        let created = prepared.new;
        let work = {
            let (dir, history) = (spec.dir.clone(), history.clone());
            workspace::blocking(move || workspace::Workspace::open(&dir, prepared, &history))
                .await?
        };
        let guard = GuardConfig {
            workers: config.workers,
            reviewers: config.reviewers,
            retry: config.policy.retry,
            breaker: config.policy.breaker,
            autoscale: config.policy.autoscale,
            fallbacks: spec.agents.fallback_models.clone(),
            // The machine's (or the cgroup's) real memory in use.
            memory: Some(Arc::new(orch_core::SystemMemoryReader::new())),
        };
        let layered = Hooked::new(
            Guarded::new(Arc::clone(&backend), &guard),
            spec.hooks.clone(),
        );
        // Toasts go through one task the mission owns and waits for.
        let (toasts, mut queued) = mpsc::unbounded_channel::<String>();
        let notifier = tokio::spawn(async move {
            while let Some(message) = queued.recv().await {
                backend.notify(&message).await;
            }
        });
        let ctx = Arc::new(Ctx::new(
            layered,
            spec.agents.clone(),
            config,
            work,
            spec.stop.clone(),
            spec.events.clone(),
            journal,
            toasts,
        ));
        let span = info_span!("mission", request = %spec.request);
        let commander = Commander::new(
            Arc::clone(&ctx),
            spec.request.clone(),
            store,
            history,
            spec.restart,
            created,
        );
        let report = commander.run().instrument(span).await;
        ctx.close_notices();
        if tokio::time::timeout(Duration::from_secs(5), notifier)
            .await
            .is_err()
        {
            tracing::warn!("toasts still queued after 5 s were dropped");
        }
        let report = report?;
        let path = state_dir.join("report.json");
        let text = serde_json::to_string_pretty(&report).map_err(|e| MissionError::Report {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        let target = path.clone();
        ctx.files
            .run(move || files::write_whole(&target, &(text + "\n")))
            .await
            .map_err(|source| MissionError::Report { path, source })?;
        Ok(report)
    }
}

/// The report of a mission that ended with `status` outside a run (its server never came
/// back): the plan as it stands, the figures of every run from the journal.
pub(crate) fn report_of(
    request: String,
    status: crate::events::MissionStatus,
    plan: &Plan,
    version: u64,
    engine: std::collections::BTreeMap<String, f64>,
    totals: &crate::totals::MissionTotals,
) -> MissionReport {
    // Without a run there is no workspace at hand; `MissionGit::read` gives the branch.
    report::build(request, status, plan, version, engine, totals, None)
}

/// Results sent back to the Commander by lanes and reviews.
pub(crate) enum Outcome {
    WorkerDone {
        item: ItemId,
        report: TurnReport,
        diff: String,
        place: Place,
    },
    WorkerFailed {
        item: ItemId,
        error: BackendError,
    },
    /// A lane's worktree could not be readied for the item (git failed): the item was not
    /// started; the run ends.
    GitFailed {
        item: ItemId,
        error: GitError,
    },
    Reviewed {
        item: ItemId,
        result: Result<(Verdict, TurnReport), ReviewError>,
        /// A passed item's commit (git missions).
        commit: Option<Result<workspace::Committed, GitError>>,
    },
}

/// Where an item's work is: its lane, the directory, and (a worktree per lane) the lane's
/// permit, held until the item's review and commit are over so the lane does not reset its
/// worktree under them.
pub(crate) struct Place {
    pub(crate) lane: Option<usize>,
    pub(crate) dir: PathBuf,
    pub(crate) permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Items that can never run because `failed` failed (its transitive dependants).
pub(crate) fn dependants(plan: &Plan, failed: &ItemId) -> Vec<String> {
    let mut blocked: Vec<String> = Vec::new();
    let mut frontier = vec![failed.clone()];
    while let Some(id) = frontier.pop() {
        for item in &plan.items {
            if item.deps.contains(&id) && !blocked.contains(&item.id.to_string()) {
                blocked.push(item.id.to_string());
                frontier.push(item.id.clone());
            }
        }
    }
    blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependants_are_transitive() {
        let plan = orch_mvcc::parse(
            "# P\n- [ ] A: a\n  - files: a\n- [ ] B: b\n  - files: b\n  - deps: A\n- [ ] C: c\n  - files: c\n  - deps: B\n- [ ] D: d\n  - files: d\n",
        )
        .unwrap();
        let mut blocked = dependants(&plan, &ItemId::new("A").unwrap());
        blocked.sort();
        assert_eq!(blocked, ["B", "C"]);
    }
}
