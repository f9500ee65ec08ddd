//! The Commander: a deterministic state machine that drives a mission through the Planner,
//! parallel Workers and the Reviewer.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use orch_core::{AgentRole, Priority};
use orch_mvcc::{Item, ItemId, ItemState, Plan, StoreError, TodoStore};
use orch_queue::{Lane, LaneScheduler};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use crate::agents::{AgentSet, worker_session_rules};
use crate::backend::{
    AgentBackend, BackendError, SessionSpec, TurnNotice, TurnReport, TurnRequest,
};
use crate::events::{MissionEvent, MissionReport, MissionStatus};
use crate::hooks::{HookEvent, MissionHooks};
use crate::journal::{Journal, JournalContents, JournalEntry, JournalError};
use crate::plan_writer::PlanWriter;
use crate::policy::{Policy, PolicyConfig, ProgressSignal};
use crate::protocol::{self, Verdict};
use crate::ready::ReadyIndex;

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
        }
    }
}

/// A mission could not run at all (as opposed to running and failing, which is a
/// [`MissionStatus`] in the report).
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
    /// The report could not be written.
    #[error("cannot write {path}: {source}")]
    Report {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything about a mission but its backend: what [`Mission`] runs, and what a
/// [`Supervisor`](crate::Supervisor) hands to each mission it runs (one per connection).
#[derive(Clone)]
pub(crate) struct MissionSettings {
    pub(crate) request: String,
    pub(crate) dir: PathBuf,
    pub(crate) agents: AgentSet,
    pub(crate) config: MissionConfig,
    pub(crate) stop: CancellationToken,
    pub(crate) events: broadcast::Sender<MissionEvent>,
    pub(crate) hooks: Option<Arc<MissionHooks>>,
    /// 0 for a run a command starts; `n` after the `n`-th server replacement.
    pub(crate) restart: u32,
}

impl MissionSettings {
    pub(crate) fn new(request: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        let (events, _) = broadcast::channel(1024);
        MissionSettings {
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

    /// The state directory: `<dir>/.orchestrator`.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.join(".orchestrator")
    }
}

/// One mission: a request, a project directory, a backend and the agents.
pub struct Mission<B: AgentBackend> {
    backend: Arc<B>,
    settings: MissionSettings,
}

impl<B: AgentBackend> std::fmt::Debug for Mission<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mission")
            .field("request", &self.settings.request)
            .field("dir", &self.settings.dir)
            .field("config", &self.settings.config)
            .finish_non_exhaustive()
    }
}

impl<B: AgentBackend> Mission<B> {
    /// A mission for `request` in the project at `dir`, with the built-in agents and default
    /// limits.
    pub fn new(backend: Arc<B>, request: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self::with_settings(backend, MissionSettings::new(request, dir))
    }

    pub(crate) fn with_settings(backend: Arc<B>, settings: MissionSettings) -> Self {
        Mission { backend, settings }
    }

    /// Runs these hooks before and after every turn and on every verdict (see
    /// [`HookEvent`]).
    #[must_use]
    pub fn hooks(mut self, hooks: Arc<MissionHooks>) -> Self {
        self.settings.hooks = Some(hooks);
        self
    }

    /// Uses these agents.
    #[must_use]
    pub fn agents(mut self, agents: AgentSet) -> Self {
        self.settings.agents = agents;
        self
    }

    /// Uses these limits.
    #[must_use]
    pub fn config(mut self, config: MissionConfig) -> Self {
        self.settings.config = config;
        self
    }

    /// Uses this stop signal (a child of it is watched by every loop and every wait).
    #[must_use]
    pub fn stop_token(mut self, stop: CancellationToken) -> Self {
        self.settings.stop = stop;
        self
    }

    /// The stop signal: cancel it to stop the mission.
    pub fn stop_handle(&self) -> CancellationToken {
        self.settings.stop.clone()
    }

    /// Publishes events on `sender` instead of the mission's own channel (a supervisor that
    /// runs several missions in a row keeps one stream for its subscribers).
    #[must_use]
    pub fn event_sender(mut self, sender: broadcast::Sender<MissionEvent>) -> Self {
        self.settings.events = sender;
        self
    }

    /// Subscribes to the mission's events (capacity 1,024; a subscriber that falls further
    /// behind loses the oldest and is told how many by `RecvError::Lagged`).
    pub fn subscribe(&self) -> broadcast::Receiver<MissionEvent> {
        self.settings.events.subscribe()
    }

    /// The state directory: `<dir>/.orchestrator`.
    pub fn state_dir(&self) -> PathBuf {
        self.settings.state_dir()
    }

    /// Runs the mission to its end and writes `.orchestrator/report.json`.
    ///
    /// A plan already in the store that is not finished is continued (items in progress go
    /// back to pending, items in review are reviewed).
    ///
    /// # Errors
    /// [`MissionError`] when the mission cannot run at all (the store, the configuration, the
    /// report file). A mission that runs and fails returns `Ok` with a failed status.
    pub async fn run(self) -> Result<MissionReport, MissionError> {
        if self.settings.config.workers == 0 || self.settings.config.reviewers == 0 {
            return Err(MissionError::Config(
                "workers and reviewers must be at least 1".into(),
            ));
        }
        let store = TodoStore::open(self.state_dir())?;
        let span = info_span!("mission", request = %self.settings.request);
        let dir = self.state_dir();
        let report = Commander::new(self, store)?.run().instrument(span).await?;
        let path = dir.join("report.json");
        let text = serde_json::to_string_pretty(&report).map_err(|e| MissionError::Report {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&path, text + "\n").map_err(|source| MissionError::Report {
            path: path.clone(),
            source,
        })?;
        Ok(report)
    }
}

/// Work handed to a Worker lane.
struct WorkOrder {
    item: Item,
    attempt: u32,
    context: String,
}

/// Results sent back to the Commander.
enum Outcome {
    WorkerDone {
        item: ItemId,
        report: TurnReport,
        diff: String,
    },
    WorkerFailed {
        item: ItemId,
        error: BackendError,
    },
    Reviewed {
        item: ItemId,
        result: Result<(Verdict, TurnReport), String>,
    },
}

/// Shared by the Commander, the lanes and the review tasks.
struct Ctx<B: AgentBackend> {
    backend: Arc<B>,
    agents: AgentSet,
    config: MissionConfig,
    dir: PathBuf,
    stop: CancellationToken,
    events: broadcast::Sender<MissionEvent>,
    policy: Policy,
    hooks: Option<Arc<MissionHooks>>,
    journal: Mutex<Journal>,
    /// Set when any turn saw the server go away.
    server_lost: Mutex<Option<String>>,
}

impl<B: AgentBackend> Ctx<B> {
    fn emit(&self, event: MissionEvent) {
        self.journal(JournalEntry::Event {
            event: event.clone(),
        });
        // No subscriber is fine: events are for observers.
        let _ = self.events.send(event);
    }

    /// Sends a notice to the user through the backend without waiting for it (a toast is
    /// never on a turn's path).
    fn notify(&self, message: String) {
        let backend = Arc::clone(&self.backend);
        tokio::spawn(async move { backend.notify(&message).await });
    }

    /// Appends to the journal; a failing journal is logged, not fatal (the plan store stays
    /// the source of truth for item states).
    fn journal(&self, entry: JournalEntry) {
        if let Err(e) = self.journal.lock().append(entry) {
            warn!(error = %e, "cannot write the mission journal");
        }
    }

    /// Remembers that the server is gone (the Commander ends the run with `ServerLost`).
    fn note_lost(&self, error: &BackendError) {
        if let BackendError::ServerLost { message } = error {
            self.server_lost
                .lock()
                .get_or_insert_with(|| message.clone());
        }
    }

    async fn open_session(&self, spec: SessionSpec) -> Result<B::Session, BackendError> {
        let role = spec.role;
        let session = self
            .backend
            .open(spec)
            .await
            .inspect_err(|e| self.note_lost(e))?;
        self.journal(JournalEntry::SessionOpened {
            role,
            session: self.backend.session_id(&session),
        });
        Ok(session)
    }

    async fn close_session(&self, session: B::Session, broken: bool) {
        let id = self.backend.session_id(&session);
        let _ = self.backend.close(session, broken).await;
        self.journal(JournalEntry::SessionClosed { session: id });
    }

    /// Journals a finished turn (the report's figures are summed from the journal).
    fn record_turn(&self, role: AgentRole, item: Option<&ItemId>, report: &TurnReport) {
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
    fn record_failure(&self, role: AgentRole, item: Option<&ItemId>, error: &BackendError) {
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

    /// Runs a turn with the retry policy and the circuit breaker: transient errors are
    /// retried (honouring `Retry-After`), an open breaker for the model moves the turn to a
    /// fallback model, and the stop signal ends every wait.
    async fn turn(
        &self,
        session: &B::Session,
        role: AgentRole,
        item: Option<&ItemId>,
        prompt: String,
        allowed_edits: Vec<String>,
    ) -> Result<TurnReport, BackendError> {
        let mut prompt = prompt;
        if let Some(hooks) = &self.hooks {
            let mut event = HookEvent::BeforeTurn {
                role,
                item: item.map(ToString::to_string),
                prompt,
            };
            if let orch_core::HookOutcome::Vetoed { hook, reason } = hooks.run(&mut event) {
                return Err(BackendError::Session {
                    message: format!("hook {hook} vetoed the turn: {reason}"),
                });
            }
            let HookEvent::BeforeTurn {
                prompt: changed, ..
            } = event
            else {
                unreachable!("hooks get the event by reference and cannot change its kind")
            };
            prompt = changed;
        }
        let result = self
            .turn_inner(session, role, item, prompt, allowed_edits)
            .await?;
        let Some(hooks) = &self.hooks else {
            return Ok(result);
        };
        let mut event = HookEvent::AfterTurn {
            role,
            item: item.map(ToString::to_string),
            report: result,
        };
        if let orch_core::HookOutcome::Vetoed { hook, reason } = hooks.run(&mut event) {
            return Err(BackendError::Session {
                message: format!("hook {hook} rejected the turn: {reason}"),
            });
        }
        let HookEvent::AfterTurn { report, .. } = event else {
            unreachable!("hooks get the event by reference and cannot change its kind")
        };
        Ok(report)
    }

    async fn turn_inner(
        &self,
        session: &B::Session,
        role: AgentRole,
        item: Option<&ItemId>,
        prompt: String,
        allowed_edits: Vec<String>,
    ) -> Result<TurnReport, BackendError> {
        let agent = self.agents.for_role(role);
        let primary = self.agents.model_for(role);
        let mut attempt = 1u32;
        loop {
            let model = self
                .policy
                .pick_model(primary.as_ref(), &self.agents.fallback_models);
            let request = TurnRequest {
                role,
                agent: agent.name.clone(),
                model: model.clone(),
                prompt: prompt.clone(),
                allowed_edits: allowed_edits.clone(),
            };
            let breaker = self.policy.breaker(model.as_ref());
            let result = match breaker.try_acquire() {
                Ok(permit) => {
                    let deadline = Instant::now() + self.config.turn_timeout;
                    let span = info_span!("turn", role = %role, item = item.map(ItemId::as_str).unwrap_or("-"), attempt);
                    // Errors the server absorbs by retrying count toward the model's breaker;
                    // once it opens, the turn leaves that model when a fallback can take it.
                    let leave_model = self.stop.child_token();
                    let model_name = crate::policy::model_key(model.as_ref());
                    let absorbed = std::sync::atomic::AtomicU32::new(0);
                    let notices = |notice: TurnNotice| {
                        let TurnNotice::UpstreamRetry {
                            attempt,
                            wait,
                            message,
                            status,
                            rate_limited,
                        } = notice;
                        absorbed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        self.policy.absorbed_failure(&breaker);
                        self.emit(MissionEvent::UpstreamRetry {
                            role,
                            item: item.map(ToString::to_string),
                            model: model_name.clone(),
                            attempt,
                            wait_ms: wait.as_millis() as u64,
                            message,
                            status,
                            rate_limited,
                        });
                        if self.policy.should_leave(
                            model.as_ref(),
                            primary.as_ref(),
                            &self.agents.fallback_models,
                        ) {
                            leave_model.cancel();
                        }
                    };
                    let result = self
                        .backend
                        .run_turn(session, request, deadline, &leave_model, &notices)
                        .instrument(span.clone())
                        .await;
                    let result = match result {
                        Err(BackendError::Stopped) if !self.stop.is_cancelled() => {
                            Err(BackendError::Unavailable {
                                status: None,
                                message: format!(
                                    "the breaker of {model_name} opened while the server retried it ({} errors); moving to a fallback model",
                                    absorbed.load(std::sync::atomic::Ordering::Relaxed)
                                ),
                            })
                        }
                        other => other,
                    };
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
                    match &result {
                        Err(e) if e.is_transient() => permit.failure(),
                        Err(BackendError::Stopped) => drop(permit),
                        _ => permit.success(),
                    }
                    result
                }
                // Every candidate model's breaker is open: wait like a transient error.
                Err(rejected) => Err(BackendError::Unavailable {
                    status: None,
                    message: rejected.to_string(),
                }),
            };
            match result {
                Ok(report) => return Ok(report),
                Err(BackendError::Stopped) => return Err(BackendError::Stopped),
                Err(BackendError::ServerLost { message }) => {
                    self.server_lost
                        .lock()
                        .get_or_insert_with(|| message.clone());
                    return Err(BackendError::ServerLost { message });
                }
                Err(error) => {
                    let Some(delay) = self.policy.retry_delay(attempt, &error) else {
                        return Err(error);
                    };
                    attempt += 1;
                    self.emit(MissionEvent::Retrying {
                        role,
                        item: item.map(ToString::to_string),
                        attempt,
                        delay_ms: delay.as_millis() as u64,
                        error: error.to_string(),
                    });
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Err(BackendError::Stopped),
                    }
                }
            }
        }
    }
}

/// Reads the item's files (missing files read as empty), for diffs.
fn read_files(dir: &Path, files: &[String]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read(dir.join(f))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            (f.clone(), text)
        })
        .collect()
}

/// A unified diff of each file between two readings.
fn diff_files(before: &[(String, String)], after: &[(String, String)]) -> String {
    let mut out = String::new();
    for ((name, old), (_, new)) in before.iter().zip(after) {
        if old != new {
            let diff = similar::TextDiff::from_lines(old, new);
            out.push_str(
                &diff
                    .unified_diff()
                    .context_radius(3)
                    .header(&format!("a/{name}"), &format!("b/{name}"))
                    .to_string(),
            );
        }
    }
    out
}

/// The lane consumer: takes work orders (warm ones first), keeps its Worker session across
/// items, re-scoping its permissions to each item's files.
async fn lane_loop<B: AgentBackend>(
    ctx: Arc<Ctx<B>>,
    mut lane: Lane<String, WorkOrder>,
    tx: mpsc::UnboundedSender<Outcome>,
) {
    let lane_id = lane.id().index();
    let mut session: Option<B::Session> = None;
    loop {
        let assigned = tokio::select! {
            next = lane.next() => next,
            () = ctx.stop.cancelled() => None,
        };
        let Some(assigned) = assigned else { break };
        let warm = assigned.ran_warm();
        let order = assigned.into_task();
        let id = order.item.id.clone();
        ctx.emit(MissionEvent::ItemStarted {
            item: id.to_string(),
            attempt: order.attempt,
            lane: lane_id,
            warm,
        });
        ctx.notify(format!(
            "{id} started (attempt {}): {}",
            order.attempt, order.item.summary
        ));
        let span = info_span!("item", item = %id, attempt = order.attempt, lane = lane_id);
        let outcome = run_worker(&ctx, &mut session, &order)
            .instrument(span)
            .await;
        let outcome = match outcome {
            Ok((report, diff)) => Outcome::WorkerDone {
                item: id,
                report,
                diff,
            },
            Err(error) => Outcome::WorkerFailed { item: id, error },
        };
        if tx.send(outcome).is_err() {
            break;
        }
    }
    lane.idle();
    if let Some(session) = session.take() {
        ctx.close_session(session, false).await;
    }
}

async fn run_worker<B: AgentBackend>(
    ctx: &Ctx<B>,
    session: &mut Option<B::Session>,
    order: &WorkOrder,
) -> Result<(TurnReport, String), BackendError> {
    let item = &order.item;
    let priority = if order.attempt > 1 {
        Priority::High
    } else {
        Priority::Normal
    };
    let _slot = ctx
        .policy
        .acquire(AgentRole::Worker, priority, &ctx.stop)
        .await
        .ok_or(BackendError::Stopped)?;
    let rules = worker_session_rules(&ctx.dir, &item.files);
    let current = match session.take() {
        Some(s) => match ctx.backend.rescope(&s, rules.clone()).await {
            Ok(()) => s,
            Err(_) => {
                ctx.close_session(s, true).await;
                open_worker(ctx, rules).await?
            }
        },
        None => open_worker(ctx, rules).await?,
    };
    let before = read_files(&ctx.dir, &item.files);
    let prompt = protocol::worker_prompt(&order.context, item);
    let result = ctx
        .turn(
            &current,
            AgentRole::Worker,
            Some(&item.id),
            prompt,
            item.files.clone(),
        )
        .await;
    ctx.policy.record_outcome(AgentRole::Worker, result.is_ok());
    match result {
        Ok(report) => {
            let after = read_files(&ctx.dir, &item.files);
            *session = Some(current);
            ctx.record_turn(AgentRole::Worker, Some(&item.id), &report);
            Ok((report, diff_files(&before, &after)))
        }
        Err(error) => {
            ctx.record_failure(AgentRole::Worker, Some(&item.id), &error);
            // A session that failed or was stopped mid-turn is not reused.
            let _ = ctx.backend.abort(&current).await;
            ctx.close_session(current, true).await;
            Err(error)
        }
    }
}

async fn open_worker<B: AgentBackend>(
    ctx: &Ctx<B>,
    rules: Vec<orch_opencode::PermissionRule>,
) -> Result<B::Session, BackendError> {
    ctx.open_session(SessionSpec {
        role: AgentRole::Worker,
        title: "orchestrator worker".into(),
        rules,
    })
    .await
}

/// One review turn (unit or integration) on a Reviewer session from the backend's pool; a
/// malformed verdict is asked for once more.
async fn review<B: AgentBackend>(
    ctx: &Ctx<B>,
    item: Option<&ItemId>,
    prompt: String,
) -> Result<(Verdict, TurnReport), String> {
    let _slot = ctx
        .policy
        .acquire(AgentRole::Reviewer, Priority::Normal, &ctx.stop)
        .await
        .ok_or_else(|| BackendError::Stopped.to_string())?;
    let session = ctx
        .open_session(SessionSpec {
            role: AgentRole::Reviewer,
            title: "orchestrator reviewer".into(),
            rules: Vec::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut prompt = prompt;
    let mut result = Err(String::new());
    for _ in 0..2 {
        match ctx
            .turn(
                &session,
                AgentRole::Reviewer,
                item,
                prompt.clone(),
                Vec::new(),
            )
            .await
        {
            Ok(report) => {
                ctx.record_turn(AgentRole::Reviewer, item, &report);
                match protocol::parse_verdict(&report.text) {
                    Ok(verdict) => {
                        result = Ok((hooked_verdict(ctx, item, verdict), report));
                        break;
                    }
                    Err(e) => {
                        result = Err(format!("reviewer answered without a valid verdict: {e}"));
                        prompt = format!(
                            "Your answer could not be read: {e}. Repeat your conclusion and end \
                             with exactly one line `VERDICT: PASS` or `VERDICT: FAIL: <reasons>`."
                        );
                    }
                }
            }
            Err(e) => {
                ctx.record_failure(AgentRole::Reviewer, item, &e);
                result = Err(e.to_string());
                break;
            }
        }
    }
    ctx.policy
        .record_outcome(AgentRole::Reviewer, result.is_ok());
    let broken = result.is_err();
    ctx.close_session(session, broken).await;
    result
}

/// Runs the verdict hooks: they may change the verdict; a veto makes it a FAIL.
fn hooked_verdict<B: AgentBackend>(
    ctx: &Ctx<B>,
    item: Option<&ItemId>,
    verdict: Verdict,
) -> Verdict {
    let Some(hooks) = &ctx.hooks else {
        return verdict;
    };
    let mut event = HookEvent::Verdict {
        item: item.map(ToString::to_string),
        verdict,
    };
    match hooks.run(&mut event) {
        orch_core::HookOutcome::Vetoed { hook, reason } => Verdict::Fail {
            reasons: format!("hook {hook}: {reason}"),
        },
        orch_core::HookOutcome::Proceed => match event {
            HookEvent::Verdict { verdict, .. } => verdict,
            _ => unreachable!("hooks get the event by reference and cannot change its kind"),
        },
    }
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

/// A hash of the ids and states (not notes or attempts): what "progress" means.
fn progress_hash(plan: &Plan) -> [u8; 32] {
    // One buffer, hashed at once: blake3 is fast on long input and slow per small update.
    let mut bytes = Vec::with_capacity(plan.items.len() * 16);
    for item in &plan.items {
        bytes.extend_from_slice(item.id.as_str().as_bytes());
        bytes.push(b' ');
        bytes.push(item.state.marker() as u8);
        bytes.push(b'\n');
    }
    *blake3::hash(&bytes).as_bytes()
}

struct Commander<B: AgentBackend> {
    ctx: Arc<Ctx<B>>,
    request: String,
    /// The working copy of the plan, written behind to the store.
    writer: PlanWriter,
    /// Items whose readiness may have changed, and the writer's merge count it follows.
    ready: ReadyIndex,
    merges_seen: u64,
    /// Items handed to the Worker lanes whose Worker outcome has not come back.
    on_lanes: usize,
    running: HashSet<ItemId>,
    rounds: u32,
    budget_hit: Option<String>,
    /// 0 for a run a command started; `n` after the `n`-th server replacement.
    restart: u32,
    /// The journal as it was when this run started (what earlier runs did).
    history: JournalContents,
    /// Lane statistics, recorded when execution winds down, for the report.
    lane_stats: Vec<(String, f64)>,
}

impl<B: AgentBackend> Commander<B> {
    fn new(mission: Mission<B>, store: TodoStore) -> Result<Self, MissionError> {
        let Mission { backend, settings } = mission;
        let policy = Policy::new(&settings.config);
        let writer = PlanWriter::new(store.clone(), settings.config.store_interval);
        let (journal, history) = Journal::open(store.dir(), settings.config.journal_fsync)?;
        let ctx = Arc::new(Ctx {
            backend,
            agents: settings.agents,
            config: settings.config,
            dir: settings.dir,
            stop: settings.stop,
            events: settings.events,
            policy,
            hooks: settings.hooks,
            journal: Mutex::new(journal),
            server_lost: Mutex::new(None),
        });
        Ok(Commander {
            ctx,
            request: settings.request,
            writer,
            ready: ReadyIndex::new(),
            merges_seen: 0,
            on_lanes: 0,
            running: HashSet::new(),
            rounds: 0,
            budget_hit: None,
            restart: settings.restart,
            history,
            lane_stats: Vec::new(),
        })
    }

    /// The working copy of the plan.
    fn current(&self) -> &Plan {
        self.writer.plan()
    }

    /// Journals a `Reconciled` line for every item `plan` shows done that `recorded` (the
    /// journal's done counts) lacks: a plan commit whose journal line was lost.
    fn reconcile(&self, plan: &Plan, recorded: &std::collections::BTreeMap<String, u32>) {
        for item in &plan.items {
            if item.state == ItemState::Done && !recorded.contains_key(item.id.as_str()) {
                self.ctx.journal(JournalEntry::Reconciled {
                    item: item.id.to_string(),
                    state: item.state.as_str().to_owned(),
                });
            }
        }
    }

    async fn run(mut self) -> Result<MissionReport, MissionError> {
        self.writer.sync().await?;
        let resumed = !self.current().items.is_empty();
        // First, so that everything this run journals counts in its figures.
        self.ctx.emit(MissionEvent::Started {
            mission: self.request.clone(),
            resumed,
            restart: self.restart,
        });
        let config = &self.ctx.config;
        for (role, sessions) in [
            (AgentRole::Planner, 1),
            (AgentRole::Commander, 1),
            (AgentRole::Worker, config.workers),
            (AgentRole::Reviewer, config.reviewers),
        ] {
            self.ctx.backend.provision(role, sessions);
        }
        self.reconcile(self.current(), &self.history.done_counts());
        let stale = self.history.open_sessions();
        if !stale.is_empty() {
            self.ctx.backend.cleanup(stale.clone()).await;
            self.ctx
                .journal(JournalEntry::StaleSessionsClosed { sessions: stale });
        }
        let status = if resumed {
            self.execute(true).await?
        } else {
            match self.planning().await? {
                Ok(()) => self.execute(false).await?,
                Err(status) => status,
            }
        };
        self.finish(status).await
    }

    /// The planning phase: a Planner turn, parsed and validated, re-asked with the error at
    /// most `plan_retries` times.
    async fn planning(&mut self) -> Result<Result<(), MissionStatus>, MissionError> {
        let ctx = Arc::clone(&self.ctx);
        let session = match ctx
            .open_session(SessionSpec {
                role: AgentRole::Planner,
                title: "orchestrator planner".into(),
                rules: Vec::new(),
            })
            .await
        {
            Ok(s) => s,
            Err(BackendError::ServerLost { message }) => {
                return Ok(Err(MissionStatus::ServerLost { reason: message }));
            }
            Err(e) => {
                return Ok(Err(MissionStatus::Failed {
                    reason: format!("cannot open a Planner session: {e}"),
                }));
            }
        };
        let files = project_files(&ctx.dir);
        let mut prompt = protocol::planner_prompt(&self.request, &files);
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
                    Vec::new(),
                )
                .await
            {
                Ok(report) => report,
                Err(e @ (BackendError::Stopped | BackendError::ServerLost { .. })) => {
                    // Abandoned, not failed: the planning resumes by planning.
                    ctx.record_failure(AgentRole::Planner, None, &e);
                    outcome = Err(match e {
                        BackendError::ServerLost { message } => {
                            MissionStatus::ServerLost { reason: message }
                        }
                        _ => MissionStatus::Stopped,
                    });
                    break;
                }
                Err(e) => {
                    ctx.record_failure(AgentRole::Planner, None, &e);
                    outcome = Err(MissionStatus::Failed {
                        reason: format!("the Planner's turn failed: {e}"),
                    });
                    break;
                }
            };
            ctx.record_turn(AgentRole::Planner, None, &report);
            match protocol::extract_plan(&report.text) {
                Ok(plan) => {
                    let items = plan.items.len();
                    self.writer.change(move |p| *p = plan.clone());
                    self.ready.invalidate();
                    let version = self.writer.sync().await?;
                    ctx.emit(MissionEvent::PlanCommitted { version, items });
                    outcome = Ok(());
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
                    prompt = protocol::planner_retry_prompt(&self.request, &e);
                }
            }
        }
        let broken = outcome.is_err();
        ctx.close_session(session, broken).await;
        Ok(outcome)
    }

    /// Schedules, runs and reviews items until the plan is finished, then runs the
    /// integration review (which may add fix-up items and go round again).
    async fn execute(&mut self, resumed: bool) -> Result<MissionStatus, MissionError> {
        let ctx = Arc::clone(&self.ctx);
        let (scheduler, lanes) = LaneScheduler::<String, WorkOrder>::new(ctx.config.workers)
            .map_err(|e| MissionError::Config(e.to_string()))?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut lane_tasks = JoinSet::new();
        for lane in lanes {
            lane_tasks.spawn(lane_loop(Arc::clone(&ctx), lane, tx.clone()));
        }
        let mut reviews: JoinSet<()> = JoinSet::new();
        if resumed {
            self.recover(&tx, &mut reviews).await?;
        }
        let mut integration_round = 0u32;
        let status = loop {
            if ctx.stop.is_cancelled() {
                break MissionStatus::Stopped;
            }
            if self.budget_hit.is_none() {
                self.dispatch(&scheduler);
            }
            // What this pass changed goes to the store in the background.
            self.writer.start();
            if self.running.is_empty() {
                // Agree with the store (and take in what others wrote) before concluding.
                self.writer.sync().await?;
                if self.budget_hit.is_none() && !self.current().ready_batch().is_empty() {
                    continue;
                }
                if let Some(budget) = &self.budget_hit {
                    break MissionStatus::BudgetExceeded {
                        budget: budget.clone(),
                    };
                }
                let plan = self.current().clone();
                if plan.is_finished() && plan.items.iter().all(|i| i.state == ItemState::Done) {
                    if !ctx.config.integration_review {
                        break MissionStatus::Completed;
                    }
                    integration_round += 1;
                    if integration_round > ctx.config.integration_rounds {
                        break MissionStatus::Failed {
                            reason: format!(
                                "the integration review still fails after {} rounds",
                                ctx.config.integration_rounds
                            ),
                        };
                    }
                    match self.integrate(integration_round, &plan).await? {
                        Some(status) => break status,
                        None => continue,
                    }
                }
                break self.stuck_status(&plan);
            }
            if self.rounds >= ctx.config.max_rounds {
                break MissionStatus::Failed {
                    reason: format!("the round limit ({}) was reached", ctx.config.max_rounds),
                };
            }
            let outcome = tokio::select! {
                outcome = rx.recv() => outcome,
                written = self.writer.drive() => {
                    written?;
                    continue;
                }
                () = ctx.stop.cancelled() => None,
            };
            let Some(outcome) = outcome else {
                break MissionStatus::Stopped;
            };
            // One pass handles every outcome that has arrived, then schedules once.
            self.rounds += 1;
            self.handle(outcome, &tx, &mut reviews).await?;
            while self.rounds < ctx.config.max_rounds {
                let Ok(outcome) = rx.try_recv() else { break };
                self.rounds += 1;
                self.handle(outcome, &tx, &mut reviews).await?;
            }
            if let Some(status) = self.observe_progress().await {
                break status;
            }
            if let Some(reason) = self.ctx.server_lost.lock().clone() {
                break MissionStatus::ServerLost { reason };
            }
        };
        // Wind down: no new work; running turns see the stop signal (when stopping) or
        // finish; lanes close when the scheduler closes.
        scheduler.close();
        if matches!(
            status,
            MissionStatus::Stopped | MissionStatus::ServerLost { .. }
        ) {
            ctx.stop.cancel();
        }
        let grace = Instant::now() + Duration::from_secs(2);
        while !self.running.is_empty() && Instant::now() < grace {
            let outcome = tokio::select! {
                o = rx.recv() => o,
                () = tokio::time::sleep_until(grace) => None,
            };
            let Some(outcome) = outcome else { break };
            self.settle(outcome);
        }
        drop(tx);
        reviews.shutdown().await;
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = lane_tasks.join_next() => if joined.is_none() { break },
                () = &mut deadline => { lane_tasks.abort_all(); break; }
            }
        }
        let stats = scheduler.stats();
        let mut engine = Vec::new();
        engine.push(("lanes.steals".into(), stats.steals() as f64));
        engine.push(("lanes.warm_hit_ratio".into(), stats.warm_hit_ratio()));
        engine.push(("lanes.pushed".into(), stats.pushed as f64));
        let (commits, changes) = self.writer.stats();
        engine.push(("store.commits".into(), commits as f64));
        engine.push(("store.changes".into(), changes as f64));
        self.lane_stats = engine;
        Ok(status)
    }

    /// After a restart: items in review are reviewed; an item whose last Worker turn the
    /// journal shows finished (and not reviewed since) goes to review too (its work is not
    /// redone); an item the journal shows passed review is done (its plan change had not been
    /// written yet); other items in progress (their session died with the process) go back to
    /// pending.
    async fn recover(
        &mut self,
        tx: &mpsc::UnboundedSender<Outcome>,
        reviews: &mut JoinSet<()>,
    ) -> Result<(), MissionError> {
        // TODO.md is written behind the journal: an item can show pending in the store while
        // the journal has its Worker turn finished, or its review passed.
        let open = |i: &Item| !i.state.is_terminal();
        let mut passed = self.history.passed();
        passed.retain(|id| self.current().item(id).is_some_and(open));
        let finished: HashSet<String> = self
            .current()
            .items
            .iter()
            .filter(|i| {
                matches!(i.state, ItemState::Pending | ItemState::InProgress)
                    && !passed.contains(i.id.as_str())
                    && self.history.worker_finished(i.id.as_str())
            })
            .map(|i| i.id.to_string())
            .collect();
        self.writer.change(move |plan| {
            for item in &mut plan.items {
                let id = item.id.as_str();
                if passed.contains(id) {
                    item.state = ItemState::Done;
                    item.attempts += 1;
                } else if finished.contains(id) {
                    item.state = ItemState::InReview;
                } else if item.state == ItemState::InProgress {
                    item.state = ItemState::Pending;
                }
            }
        });
        self.ready.invalidate();
        self.writer.sync().await?;
        let in_review: Vec<Item> = self
            .current()
            .items
            .iter()
            .filter(|i| i.state == ItemState::InReview)
            .cloned()
            .collect();
        for item in in_review {
            let text = read_files(&self.ctx.dir, &item.files)
                .into_iter()
                .map(|(f, t)| {
                    format!(
                        "--- {f} (current content; the attempt's diff was lost in a restart)\n{t}"
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            self.spawn_review(item, text, tx, reviews);
        }
        Ok(())
    }

    /// Marks every ready item in progress and queues it on the lanes, keyed by its files.
    fn dispatch(&mut self, scheduler: &LaneScheduler<String, WorkOrder>) {
        // Ready: pending, dependencies done, no file shared with an item in progress or in
        // review, nor with another item of this batch.
        if self.writer.merges() != self.merges_seen {
            self.merges_seen = self.writer.merges();
            self.ready.invalidate();
        }
        // Each lane holds at most one item beyond the one it runs: items wait as pending in
        // the plan, not as "in progress" in a lane's queue, and the next pass can still place
        // them by affinity.
        let room = (2 * self.ctx.config.workers).saturating_sub(self.on_lanes);
        if room == 0 {
            return;
        }
        let started: Vec<Item> = self
            .ready
            .batch(self.writer.plan(), room)
            .into_iter()
            .filter(|i| !self.running.contains(&i.id))
            .cloned()
            .collect();
        if started.is_empty() {
            return;
        }
        let ids: HashSet<ItemId> = started.iter().map(|i| i.id.clone()).collect();
        self.writer.change(move |plan| {
            for item in &mut plan.items {
                if item.state == ItemState::Pending && ids.contains(&item.id) {
                    item.state = ItemState::InProgress;
                }
            }
        });
        for mut item in started {
            item.state = ItemState::InProgress;
            self.running.insert(item.id.clone());
            let order = WorkOrder {
                attempt: item.attempts + 1,
                context: protocol::mission_context(&self.request, self.current(), Some(&item)),
                item,
            };
            let keys = order.item.files.clone();
            match scheduler.push_with_affinity(keys, order) {
                Ok(_) => self.on_lanes += 1,
                Err(rejected) => {
                    // Only a closed scheduler rejects; the mission is ending.
                    let order = rejected.into_inner();
                    self.running.remove(&order.item.id);
                }
            }
        }
    }

    fn spawn_review(
        &mut self,
        item: Item,
        diff: String,
        tx: &mpsc::UnboundedSender<Outcome>,
        reviews: &mut JoinSet<()>,
    ) {
        let context = protocol::mission_context(&self.request, self.current(), Some(&item));
        let prompt = protocol::review_prompt(&context, &item, &diff);
        let ctx = Arc::clone(&self.ctx);
        let tx = tx.clone();
        self.running.insert(item.id.clone());
        let span = info_span!("review", item = %item.id);
        reviews.spawn(
            async move {
                let result = review(&ctx, Some(&item.id), prompt).await;
                let _ = tx.send(Outcome::Reviewed {
                    item: item.id,
                    result,
                });
            }
            .instrument(span),
        );
    }

    /// Applies one outcome to the working copy and starts what follows from it (a review).
    async fn handle(
        &mut self,
        outcome: Outcome,
        tx: &mpsc::UnboundedSender<Outcome>,
        reviews: &mut JoinSet<()>,
    ) -> Result<(), MissionError> {
        match outcome {
            Outcome::WorkerDone { item, report, diff } => {
                self.on_lanes = self.on_lanes.saturating_sub(1);
                if let Some(detail) = self.ctx.policy.observe_turn(&item, &report) {
                    self.ctx.emit(MissionEvent::LoopDetected {
                        item: item.to_string(),
                        detail: detail.clone(),
                    });
                    let note = format!("the orchestrator saw a loop: {detail}; change approach");
                    let id = item.clone();
                    self.writer.change(move |plan| {
                        if let Some(i) = plan.item_mut(&id) {
                            i.add_note(&note);
                        }
                    });
                }
                let id = item.clone();
                self.writer.change(move |plan| {
                    if let Some(i) = plan.item_mut(&id) {
                        i.state = ItemState::InReview;
                    }
                });
                self.ready.touch(item.as_str());
                self.running.remove(&item);
                match self.current().item(&item).cloned() {
                    Some(moved) => self.spawn_review(moved, diff, tx, reviews),
                    None => warn!(item = %item, "item vanished from the plan (external edit)"),
                }
            }
            Outcome::WorkerFailed { item, error } => {
                self.on_lanes = self.on_lanes.saturating_sub(1);
                self.running.remove(&item);
                if matches!(
                    error,
                    BackendError::Stopped | BackendError::ServerLost { .. }
                ) {
                    self.requeue(&item);
                } else {
                    self.attempt_failed(&item, format!("worker error: {error}"));
                }
            }
            Outcome::Reviewed { item, result } => {
                self.running.remove(&item);
                match result {
                    Ok((verdict, _)) => {
                        self.ctx.emit(MissionEvent::Reviewed {
                            item: item.to_string(),
                            verdict: verdict.clone(),
                        });
                        match verdict {
                            Verdict::Pass => {
                                let id = item.clone();
                                self.writer.change(move |plan| {
                                    if let Some(i) = plan.item_mut(&id) {
                                        i.state = ItemState::Done;
                                        i.attempts += 1;
                                    }
                                });
                                self.ready.touch(item.as_str());
                                let attempts = self.current().item(&item).map_or(0, |i| i.attempts);
                                self.ctx.emit(MissionEvent::ItemDone {
                                    item: item.to_string(),
                                    attempts,
                                });
                                self.ctx.notify(format!("{item} done"));
                            }
                            Verdict::Fail { reasons } => {
                                self.attempt_failed(&item, format!("review: {reasons}"));
                            }
                        }
                    }
                    Err(_)
                        if self.ctx.stop.is_cancelled()
                            || self.ctx.server_lost.lock().is_some() =>
                    {
                        // An interrupted review leaves the item in review; resume reviews it.
                    }
                    Err(e) => self.attempt_failed(&item, format!("review error: {e}")),
                }
            }
        }
        self.check_budgets();
        Ok(())
    }

    /// Feeds the stagnation tracker this pass's plan; a final status when it escalates.
    async fn observe_progress(&mut self) -> Option<MissionStatus> {
        match self
            .ctx
            .policy
            .observe_progress(progress_hash(self.current()))
        {
            ProgressSignal::Ok => None,
            ProgressSignal::Diagnose(unchanged) => {
                let diagnosis = self.diagnose(self.current(), unchanged).await;
                self.ctx.emit(MissionEvent::Stagnation {
                    unchanged,
                    escalated: false,
                    diagnosis,
                });
                None
            }
            ProgressSignal::Escalate(unchanged) => {
                self.ctx.emit(MissionEvent::Stagnation {
                    unchanged,
                    escalated: true,
                    diagnosis: None,
                });
                Some(MissionStatus::Failed {
                    reason: format!("no progress for {unchanged} rounds"),
                })
            }
        }
    }

    /// Outcomes that arrive while winding down: record them without starting new work.
    fn settle(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::WorkerDone { item, .. } | Outcome::WorkerFailed { item, .. } => {
                self.running.remove(&item);
                self.requeue(&item);
            }
            Outcome::Reviewed { item, .. } => {
                // An interrupted review leaves the item in review; resume reviews it.
                self.running.remove(&item);
            }
        }
    }

    /// An item whose turn was interrupted goes back to pending, attempts unchanged.
    fn requeue(&mut self, item: &ItemId) {
        let id = item.clone();
        self.writer.change(move |plan| {
            if let Some(i) = plan.item_mut(&id)
                && i.state == ItemState::InProgress
            {
                i.state = ItemState::Pending;
            }
        });
        self.ready.touch(item.as_str());
    }

    /// One attempt of `item` failed: a note, and the item goes back to pending or, at the
    /// attempt limit, fails (and its dependants with it).
    fn attempt_failed(&mut self, item: &ItemId, reason: String) {
        let id = item.clone();
        let max = self.ctx.config.max_attempts;
        let note = reason.clone();
        self.writer.change(move |plan| {
            if let Some(item) = plan.item_mut(&id) {
                item.attempts += 1;
                item.add_note(&format!("attempt {}: {note}", item.attempts));
                item.state = if item.attempts >= max {
                    ItemState::Failed
                } else {
                    ItemState::Pending
                };
            }
        });
        self.ready.touch(item.as_str());
        let failed = self
            .current()
            .item(item)
            .is_some_and(|i| i.state == ItemState::Failed);
        if failed {
            let blocked = dependants(self.current(), item);
            self.ctx.notify(format!("{item} failed: {reason}"));
            self.ctx.emit(MissionEvent::ItemFailed {
                item: item.to_string(),
                reason: format!("{reason} (after {max} attempts)"),
                blocked,
            });
        }
    }

    fn check_budgets(&mut self) {
        if self.budget_hit.is_some() {
            return;
        }
        // The mission's budget, over every run in the journal.
        let journal = self.ctx.journal.lock();
        let tokens = journal.totals().tokens().total();
        let cost = journal.totals().cost();
        drop(journal);
        let hit = match (self.ctx.config.token_budget, self.ctx.config.cost_budget) {
            (Some(limit), _) if tokens > limit => Some(("tokens", tokens as f64, limit as f64)),
            (_, Some(limit)) if cost > limit => Some(("cost", cost, limit)),
            _ => None,
        };
        if let Some((budget, used, limit)) = hit {
            self.budget_hit = Some(budget.to_owned());
            self.ctx.emit(MissionEvent::BudgetExceeded {
                budget: budget.to_owned(),
                used,
                limit,
            });
        }
    }

    /// Asks the Commander agent why the plan is stuck (best effort).
    async fn diagnose(&self, plan: &Plan, unchanged: u32) -> Option<String> {
        let ctx = &self.ctx;
        let session = ctx
            .open_session(SessionSpec {
                role: AgentRole::Commander,
                title: "orchestrator commander".into(),
                rules: Vec::new(),
            })
            .await
            .ok()?;
        let prompt = protocol::diagnostic_prompt(
            &protocol::mission_context(&self.request, plan, None),
            unchanged,
        );
        let result = ctx
            .turn(&session, AgentRole::Commander, None, prompt, Vec::new())
            .await;
        ctx.close_session(session, result.is_err()).await;
        let report = result.ok()?;
        ctx.record_turn(AgentRole::Commander, None, &report);
        Some(report.text)
    }

    /// The final integration review. `Some(status)` ends the mission; `None` means fix-up
    /// items were added and execution goes on.
    async fn integrate(
        &mut self,
        round: u32,
        plan: &Plan,
    ) -> Result<Option<MissionStatus>, MissionError> {
        let context = protocol::mission_context(&self.request, plan, None);
        let result = review(&self.ctx, None, protocol::integration_prompt(&context)).await;
        let (verdict, report) = match result {
            Ok(ok) => ok,
            Err(_) if self.ctx.server_lost.lock().is_some() => {
                let reason = self.ctx.server_lost.lock().clone().unwrap_or_default();
                return Ok(Some(MissionStatus::ServerLost { reason }));
            }
            Err(_) if self.ctx.stop.is_cancelled() => return Ok(Some(MissionStatus::Stopped)),
            Err(e) => {
                return Ok(Some(MissionStatus::Failed {
                    reason: format!("the integration review failed to run: {e}"),
                }));
            }
        };
        let fixups = match &verdict {
            Verdict::Pass => Vec::new(),
            Verdict::Fail { .. } => protocol::parse_fixups(&report.text),
        };
        let mut added = Vec::new();
        for (n, fix) in fixups.iter().enumerate() {
            let Ok(id) = ItemId::new(format!("F{round}-{}", n + 1)) else {
                continue;
            };
            if self.current().item(&id).is_some() {
                continue;
            }
            added.push(Item::new(id, fix.summary.clone()).with_files(fix.files.clone()));
        }
        let new_items = added.clone();
        self.writer.change(move |plan| {
            for item in &new_items {
                if plan.item(&item.id).is_none() {
                    plan.push(item.clone());
                }
            }
        });
        self.ready.invalidate();
        self.writer.sync().await?;
        let added: Vec<String> = added.into_iter().map(|i| i.id.to_string()).collect();
        self.ctx.emit(MissionEvent::IntegrationReviewed {
            round,
            verdict: verdict.clone(),
            fixups: added.clone(),
        });
        match verdict {
            Verdict::Pass => Ok(Some(MissionStatus::Completed)),
            Verdict::Fail { reasons } if added.is_empty() => Ok(Some(MissionStatus::Failed {
                reason: format!("the integration review failed with no fix-up items: {reasons}"),
            })),
            Verdict::Fail { .. } => Ok(None),
        }
    }

    /// Nothing runs, yet the plan is not all done: items failed (and block others).
    fn stuck_status(&self, plan: &Plan) -> MissionStatus {
        let failed: Vec<String> = plan
            .items
            .iter()
            .filter(|i| i.state == ItemState::Failed)
            .map(|i| i.id.to_string())
            .collect();
        let waiting: Vec<String> = plan
            .items
            .iter()
            .filter(|i| i.state == ItemState::Pending)
            .map(|i| i.id.to_string())
            .collect();
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

    async fn finish(mut self, status: MissionStatus) -> Result<MissionReport, MissionError> {
        let version = self.writer.sync().await?;
        let plan = self.current().clone();
        // Items the plan shows done without a journal line (a write that landed after an
        // earlier run's reconciliation) are reconciled now, so the journal stays complete.
        if let Ok(journal) = Journal::read(self.writer.store().dir()) {
            self.reconcile(&plan, &journal.done_counts());
        }
        self.ctx.emit(MissionEvent::Finished {
            status: status.clone(),
            rounds: self.rounds,
        });
        self.ctx
            .backend
            .notify(&format!("mission {}", status.describe()))
            .await;
        // The breakers (and slots) whatever phase the run ended in; lanes when they ran.
        let mut engine: BTreeMap<String, f64> = self.ctx.policy.stats().into_iter().collect();
        engine.extend(std::mem::take(&mut self.lane_stats));
        engine.extend(self.ctx.backend.stats());
        let totals = self.ctx.journal.lock().totals().clone();
        Ok(crate::totals::report(
            self.request,
            status,
            &plan,
            version,
            engine,
            &totals,
        ))
    }
}

/// Files of the project (relative paths, sorted), for the Planner; skips VCS, build and
/// orchestrator state directories.
fn project_files(dir: &Path) -> Vec<String> {
    const SKIP: [&str; 6] = [
        ".git",
        ".orchestrator",
        "target",
        "node_modules",
        ".opencode",
        ".tools",
    ];
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if SKIP.iter().any(|s| name == *s) {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
            if out.len() > 5_000 {
                break;
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_show_changed_files_only() {
        let before = vec![
            ("a.txt".to_owned(), "one\n".to_owned()),
            ("b.txt".to_owned(), "same\n".to_owned()),
        ];
        let after = vec![
            ("a.txt".to_owned(), "one\ntwo\n".to_owned()),
            ("b.txt".to_owned(), "same\n".to_owned()),
        ];
        let diff = diff_files(&before, &after);
        assert!(
            diff.contains("--- a/a.txt") && diff.contains("+two"),
            "{diff}"
        );
        assert!(!diff.contains("b.txt"));
    }

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

    #[test]
    fn progress_hash_ignores_notes_but_not_states() {
        let mut plan = orch_mvcc::parse("# P\n- [ ] A: a\n  - files: a\n").unwrap();
        let h1 = progress_hash(&plan);
        plan.item_mut("A").unwrap().add_note("x");
        assert_eq!(progress_hash(&plan), h1);
        plan.item_mut("A").unwrap().state = ItemState::Done;
        assert_ne!(progress_hash(&plan), h1);
    }
}
