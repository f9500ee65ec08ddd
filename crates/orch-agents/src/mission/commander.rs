//! The Commander: the deterministic state machine that drives a mission.
//!
//! [`Commander::run`] plans (or resumes), then executes: Worker lanes start, and each pass of
//! the loop handles every outcome that has arrived (synchronously, [`Commander::handle`]:
//! item changes go to the plan writer, reviews are spawned) and schedules ready items once.
//! When nothing runs, the plan is either finished (the integration review runs; a FAIL may
//! add fix-up items and the loop goes on) or stuck. The run ends winding down the lanes and
//! reviews, then [`Commander::finish`] writes the report.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use orch_mvcc::{Item, ItemId, ItemState, Plan, TodoStore};
use orch_queue::LaneScheduler;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::context::Ctx;
use super::files::project_files;
use super::item::{self, ItemChange};
use super::lane::{WorkOrder, lane_loop};
use super::planning;
use super::workspace::Committed;
use super::{MissionError, Outcome};
use crate::backend::{AgentBackend, BackendError};
use crate::events::{MissionEvent, MissionReport, MissionStatus};
use crate::journal::{Journal, JournalContents, JournalEntry};
use crate::plan_writer::PlanWriter;
use crate::policy::{ProgressSignal, ProgressWatch};
use crate::protocol::{self, Verdict};
use crate::ready::ReadyIndex;
use orch_core::AgentRole;

mod git;
mod reviews;

/// What runs while the plan executes: the lanes, their scheduler, the reviews, and the
/// channel outcomes come back on.
struct Execution {
    scheduler: LaneScheduler<String, WorkOrder>,
    lanes: JoinSet<()>,
    reviews: JoinSet<()>,
    tx: mpsc::UnboundedSender<Outcome>,
    rx: mpsc::UnboundedReceiver<Outcome>,
    /// With a worktree per lane, one permit per lane: held by an item from its start to the
    /// end of its review and commit.
    gates: Vec<Arc<Semaphore>>,
}

pub(crate) struct Commander<B: AgentBackend> {
    ctx: Arc<Ctx<B>>,
    request: String,
    /// The working copy of the plan, written behind to the store.
    writer: PlanWriter,
    /// Items whose readiness may have changed, and the writer's merge count it follows.
    ready: ReadyIndex,
    merges_seen: u64,
    /// Items handed to the Worker lanes whose Worker outcome has not come back.
    on_lanes: usize,
    /// Items with a Worker turn or a review under way.
    running: HashSet<ItemId>,
    rounds: u32,
    budget_hit: Option<String>,
    /// Set when an outcome shows the server gone: the run ends `ServerLost`.
    server_lost: Option<String>,
    /// 0 for a run a command started; `n` after the `n`-th server replacement.
    restart: u32,
    /// The journal as it was when this run started (what earlier runs did).
    history: JournalContents,
    /// Stagnation and loop detection.
    watch: ProgressWatch,
    /// Lane statistics, recorded when execution winds down, for the report.
    lane_stats: Vec<(String, f64)>,
    /// Set when git failed (a commit, a lane's worktree): the run ends failed.
    git_failed: Option<String>,
    /// Whether this run created the mission's git workspace.
    git_created: bool,
    /// Items the mission's branch has a commit of (found when the run started).
    committed: BTreeSet<String>,
}

impl<B: AgentBackend> Commander<B> {
    pub(crate) fn new(
        ctx: Arc<Ctx<B>>,
        request: String,
        store: TodoStore,
        history: JournalContents,
        restart: u32,
        git_created: bool,
    ) -> Self {
        let watch = ProgressWatch::new(&ctx.config.policy);
        Commander {
            writer: PlanWriter::new(store, ctx.config.store_interval),
            ctx,
            request,
            ready: ReadyIndex::new(),
            merges_seen: 0,
            on_lanes: 0,
            running: HashSet::new(),
            rounds: 0,
            budget_hit: None,
            server_lost: None,
            restart,
            history,
            watch,
            lane_stats: Vec::new(),
            git_failed: None,
            git_created,
            committed: BTreeSet::new(),
        }
    }

    /// The working copy of the plan.
    fn current(&self) -> &Plan {
        self.writer.plan()
    }

    /// The one way an item's state changes: `change` is applied to the working copy now and
    /// to the store's plan when written (an external edit that made it illegal is logged and
    /// left alone).
    fn change_item(&mut self, id: &ItemId, change: ItemChange) {
        let max = self.ctx.config.max_attempts;
        let item_id = id.clone();
        self.writer.change(move |plan| {
            if let Some(item) = plan.item_mut(&item_id)
                && let Err(e) = item::apply(item, &change, max)
            {
                debug!(error = %e, "item change not applied");
            }
        });
        self.ready.touch(id.as_str());
    }

    /// Journals a `Reconciled` line for every item `plan` shows done that `recorded` (the
    /// journal's done counts) lacks: a plan commit whose journal line was lost.
    fn reconcile(&self, plan: &Plan, recorded: &BTreeMap<String, u32>) {
        for item in &plan.items {
            if item.state == ItemState::Done && !recorded.contains_key(item.id.as_str()) {
                self.ctx.journal(JournalEntry::Reconciled {
                    item: item.id.to_string(),
                    state: item.state.as_str().to_owned(),
                });
            }
        }
    }

    pub(crate) async fn run(mut self) -> Result<MissionReport, MissionError> {
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
        self.announce_git(resumed).await;
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

    /// Plans the mission and commits the plan; or how the mission ends without one.
    async fn planning(&mut self) -> Result<Result<(), MissionStatus>, MissionError> {
        let dir = self.ctx.work.main_dir();
        let files = self.ctx.files.run(move || project_files(&dir)).await;
        let plan = match planning::plan(&self.ctx, &self.request, &files).await {
            Ok(plan) => plan,
            Err(status) => return Ok(Err(status)),
        };
        let items = plan.items.len();
        self.writer.change(move |p| *p = plan.clone());
        self.ready.invalidate();
        let version = self.writer.sync().await?;
        self.ctx
            .emit(MissionEvent::PlanCommitted { version, items });
        Ok(Ok(()))
    }

    /// Schedules, runs and reviews items until the plan is finished, then runs the
    /// integration review (which may add fix-up items and go round again).
    async fn execute(&mut self, resumed: bool) -> Result<MissionStatus, MissionError> {
        let mut run = self.start_lanes()?;
        if resumed {
            self.recover(&mut run).await?;
        }
        let mut integration_round = 0u32;
        let status = loop {
            if let Some(status) = self.step(&mut run, &mut integration_round).await? {
                break status;
            }
        };
        self.wind_down(run, &status).await;
        Ok(status)
    }

    fn start_lanes(&self) -> Result<Execution, MissionError> {
        let (scheduler, lanes) = LaneScheduler::<String, WorkOrder>::new(self.ctx.config.workers)
            .map_err(|e| MissionError::Config(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        let gates: Vec<Arc<Semaphore>> = if self.ctx.work.per_lane() {
            (0..lanes.len())
                .map(|_| Arc::new(Semaphore::new(1)))
                .collect()
        } else {
            Vec::new()
        };
        for lane in lanes {
            let gate = gates.get(lane.id().index()).cloned();
            tasks.spawn(lane_loop(Arc::clone(&self.ctx), lane, tx.clone(), gate));
        }
        Ok(Execution {
            scheduler,
            lanes: tasks,
            reviews: JoinSet::new(),
            tx,
            rx,
            gates,
        })
    }

    /// One pass: schedule, then either conclude (nothing runs) or handle the outcomes that
    /// arrived. `Some(status)` ends the execution.
    async fn step(
        &mut self,
        run: &mut Execution,
        integration_round: &mut u32,
    ) -> Result<Option<MissionStatus>, MissionError> {
        if self.ctx.stop.is_cancelled() {
            return Ok(Some(MissionStatus::Stopped));
        }
        if self.budget_hit.is_none() {
            self.dispatch(&run.scheduler);
        }
        // What this pass changed goes to the store in the background.
        self.writer.start();
        if self.running.is_empty() {
            return self.conclude(integration_round).await;
        }
        if self.rounds >= self.ctx.config.max_rounds {
            return Ok(Some(MissionStatus::Failed {
                reason: format!(
                    "the round limit ({}) was reached",
                    self.ctx.config.max_rounds
                ),
            }));
        }
        let outcome = tokio::select! {
            outcome = run.rx.recv() => outcome,
            written = self.writer.drive() => {
                written?;
                return Ok(None);
            }
            () = self.ctx.stop.cancelled() => None,
        };
        let Some(outcome) = outcome else {
            return Ok(Some(MissionStatus::Stopped));
        };
        // One pass handles every outcome that has arrived, then schedules once.
        self.rounds += 1;
        self.handle(outcome, run);
        while self.rounds < self.ctx.config.max_rounds {
            let Ok(outcome) = run.rx.try_recv() else {
                break;
            };
            self.rounds += 1;
            self.handle(outcome, run);
        }
        self.check_budgets();
        if let Some(status) = self.observe_progress().await {
            return Ok(Some(status));
        }
        if let Some(reason) = &self.git_failed {
            return Ok(Some(MissionStatus::Failed {
                reason: format!("git: {reason}"),
            }));
        }
        Ok(self
            .server_lost
            .clone()
            .map(|reason| MissionStatus::ServerLost { reason }))
    }

    /// Nothing runs: the plan is finished (integration), ready again (after a merge), over
    /// budget, or stuck.
    async fn conclude(
        &mut self,
        integration_round: &mut u32,
    ) -> Result<Option<MissionStatus>, MissionError> {
        // Agree with the store (and take in what others wrote) before concluding.
        self.writer.sync().await?;
        if self.budget_hit.is_none() && !self.current().ready_batch().is_empty() {
            return Ok(None);
        }
        if let Some(budget) = &self.budget_hit {
            return Ok(Some(MissionStatus::BudgetExceeded {
                budget: budget.clone(),
            }));
        }
        let plan = self.current().clone();
        if !(plan.is_finished() && plan.items.iter().all(|i| i.state == ItemState::Done)) {
            return Ok(Some(super::report::stuck_status(&plan)));
        }
        if !self.ctx.config.integration_review {
            return Ok(Some(MissionStatus::Completed));
        }
        *integration_round += 1;
        if *integration_round > self.ctx.config.integration_rounds {
            return Ok(Some(MissionStatus::Failed {
                reason: format!(
                    "the integration review still fails after {} rounds",
                    self.ctx.config.integration_rounds
                ),
            }));
        }
        self.integrate(*integration_round, &plan).await
    }

    /// Winds down: no new work; running turns see the stop signal (when stopping) or finish;
    /// lanes close when the scheduler closes; their statistics are kept for the report.
    async fn wind_down(&mut self, mut run: Execution, status: &MissionStatus) {
        run.scheduler.close();
        if matches!(
            status,
            MissionStatus::Stopped | MissionStatus::ServerLost { .. }
        ) {
            self.ctx.stop.cancel();
        }
        let grace = Instant::now() + Duration::from_secs(2);
        while !self.running.is_empty() && Instant::now() < grace {
            let outcome = tokio::select! {
                o = run.rx.recv() => o,
                () = tokio::time::sleep_until(grace) => None,
            };
            let Some(outcome) = outcome else { break };
            self.settle(outcome);
        }
        drop(run.tx);
        run.reviews.shutdown().await;
        let deadline = tokio::time::sleep(Duration::from_secs(5));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = run.lanes.join_next() => if joined.is_none() { break },
                () = &mut deadline => { run.lanes.abort_all(); break; }
            }
        }
        let stats = run.scheduler.stats();
        let (commits, changes) = self.writer.stats();
        self.lane_stats = vec![
            ("lanes.steals".into(), stats.steals() as f64),
            ("lanes.warm_hit_ratio".into(), stats.warm_hit_ratio()),
            ("lanes.pushed".into(), stats.pushed as f64),
            ("store.commits".into(), commits as f64),
            ("store.changes".into(), changes as f64),
        ];
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
        for mut item in started {
            self.change_item(&item.id, ItemChange::Start);
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

    /// Applies one outcome to the working copy and starts what follows from it (a review).
    /// Never waits.
    fn handle(&mut self, outcome: Outcome, run: &mut Execution) {
        match outcome {
            Outcome::WorkerDone {
                item,
                report,
                diff,
                place,
            } => {
                self.on_lanes = self.on_lanes.saturating_sub(1);
                self.running.remove(&item);
                if let Some(detail) = self.watch.observe_turn(&item, &report) {
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
                self.change_item(&item, ItemChange::WorkDone);
                match self.current().item(&item).cloned() {
                    Some(moved) => self.spawn_review(moved, diff, run, place),
                    None => warn!(item = %item, "item vanished from the plan (external edit)"),
                }
            }
            Outcome::WorkerFailed { item, error } => {
                self.on_lanes = self.on_lanes.saturating_sub(1);
                self.running.remove(&item);
                match error {
                    BackendError::Stopped => self.change_item(&item, ItemChange::Interrupted),
                    BackendError::ServerLost { message } => {
                        self.server_lost.get_or_insert(message);
                        self.change_item(&item, ItemChange::Interrupted);
                    }
                    error => self.attempt_failed(&item, format!("worker error: {error}")),
                }
            }
            Outcome::GitFailed { item, error } => {
                self.on_lanes = self.on_lanes.saturating_sub(1);
                self.running.remove(&item);
                self.change_item(&item, ItemChange::Interrupted);
                self.git_failed.get_or_insert(error.to_string());
            }
            Outcome::Reviewed {
                item,
                result,
                commit,
            } => {
                self.running.remove(&item);
                match result {
                    Ok((verdict, _)) => self.reviewed_and_committed(item, verdict, commit),
                    Err(e) if e.is_interruption() => {
                        // The item stays in review; resume reviews it.
                        if let Some(lost) = e.server_lost() {
                            self.server_lost.get_or_insert_with(|| lost.to_owned());
                        }
                    }
                    Err(e) => self.attempt_failed(&item, format!("review error: {e}")),
                }
            }
        }
    }

    fn reviewed(&mut self, item: ItemId, verdict: Verdict) {
        self.ctx.emit(MissionEvent::Reviewed {
            item: item.to_string(),
            verdict: verdict.clone(),
        });
        match verdict {
            Verdict::Pass => {
                self.change_item(&item, ItemChange::Passed);
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

    /// Feeds the stagnation tracker this pass's plan; a final status when it escalates.
    async fn observe_progress(&mut self) -> Option<MissionStatus> {
        match self.watch.observe_progress(self.writer.plan()) {
            ProgressSignal::Ok => None,
            ProgressSignal::Diagnose(unchanged) => {
                let diagnosis =
                    planning::diagnose(&self.ctx, &self.request, self.current(), unchanged).await;
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
            Outcome::WorkerDone { item, .. }
            | Outcome::WorkerFailed { item, .. }
            | Outcome::GitFailed { item, .. } => {
                self.running.remove(&item);
                self.change_item(&item, ItemChange::Interrupted);
            }
            // A commit that was made is recorded: the item is done.
            Outcome::Reviewed {
                item,
                result: Ok((verdict @ Verdict::Pass, _)),
                commit: commit @ Some(Ok(Committed::Done { .. })),
            } => {
                self.running.remove(&item);
                self.reviewed_and_committed(item, verdict, commit);
            }
            Outcome::Reviewed { item, .. } => {
                // An interrupted review leaves the item in review; resume reviews it.
                self.running.remove(&item);
            }
        }
    }

    /// One attempt of `item` failed: a note, and the item goes back to pending or, at the
    /// attempt limit, fails (and its dependants with it).
    fn attempt_failed(&mut self, item: &ItemId, reason: String) {
        self.change_item(
            item,
            ItemChange::AttemptFailed {
                note: reason.clone(),
            },
        );
        let failed = self
            .current()
            .item(item)
            .is_some_and(|i| i.state == ItemState::Failed);
        if failed {
            let blocked = super::dependants(self.current(), item);
            self.ctx.notify(format!("{item} failed: {reason}"));
            self.ctx.emit(MissionEvent::ItemFailed {
                item: item.to_string(),
                reason: format!("{reason} (after {} attempts)", self.ctx.config.max_attempts),
                blocked,
            });
        }
    }

    /// Stops new work once the mission's tokens or cost (over every run) pass a budget.
    fn check_budgets(&mut self) {
        if self.budget_hit.is_some() {
            return;
        }
        let totals = self.ctx.totals();
        let (tokens, cost) = (totals.tokens().total(), totals.cost());
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

    /// The integration review of `round`. `Some(status)` ends the mission; `None` means
    /// fix-up items were added and execution goes on.
    async fn integrate(
        &mut self,
        round: u32,
        plan: &Plan,
    ) -> Result<Option<MissionStatus>, MissionError> {
        let integration = match planning::integrate(&self.ctx, &self.request, plan, round).await {
            Ok(integration) => integration,
            Err(e) => {
                return Ok(Some(match e.server_lost() {
                    Some(reason) => MissionStatus::ServerLost {
                        reason: reason.to_owned(),
                    },
                    None if self.ctx.stop.is_cancelled() => MissionStatus::Stopped,
                    None => MissionStatus::Failed {
                        reason: format!("the integration review failed to run: {e}"),
                    },
                }));
            }
        };
        let added: Vec<String> = integration
            .fixups
            .iter()
            .map(|i| i.id.to_string())
            .collect();
        let fixups = integration.fixups;
        self.writer.change(move |plan| {
            for item in &fixups {
                if plan.item(&item.id).is_none() {
                    plan.push(item.clone());
                }
            }
        });
        self.ready.invalidate();
        self.writer.sync().await?;
        self.ctx.emit(MissionEvent::IntegrationReviewed {
            round,
            verdict: integration.verdict.clone(),
            fixups: added.clone(),
        });
        Ok(match integration.verdict {
            Verdict::Pass => Some(MissionStatus::Completed),
            Verdict::Fail { reasons } if added.is_empty() => Some(MissionStatus::Failed {
                reason: format!("the integration review failed with no fix-up items: {reasons}"),
            }),
            Verdict::Fail { .. } => None,
        })
    }

    /// Ends the run: the plan written, the journal reconciled, `finished` published, and the
    /// report (the mission's figures over every run, from the journal).
    pub(crate) async fn finish(
        mut self,
        status: MissionStatus,
    ) -> Result<MissionReport, MissionError> {
        let version = self.writer.sync().await?;
        let plan = self.current().clone();
        // Items the plan shows done without a journal line (a write that landed after an
        // earlier run's reconciliation) are reconciled now, so the journal stays complete.
        let state_dir = self.writer.store().dir().to_owned();
        if let Ok(journal) = self.ctx.files.run(move || Journal::read(&state_dir)).await {
            self.reconcile(&plan, &journal.done_counts());
        }
        let git = self.finish_git(&status).await;
        self.ctx.emit(MissionEvent::Finished {
            status: status.clone(),
            rounds: self.rounds,
        });
        self.ctx.notify(format!("mission {}", status.describe()));
        let mut engine: BTreeMap<String, f64> = self.ctx.backend.stats().into_iter().collect();
        engine.extend(std::mem::take(&mut self.lane_stats));
        Ok(super::report::build(
            self.request,
            status,
            &plan,
            version,
            engine,
            &self.ctx.totals(),
            git,
        ))
    }
}
