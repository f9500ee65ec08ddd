//! A Worker lane: it takes work orders (warm ones first) from `orch-queue`'s lane scheduler,
//! keeps its Worker session across items (re-scoped to each item's files), and sends each
//! outcome back to the Commander.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orch_core::AgentRole;
use orch_mvcc::Item;
use orch_queue::Lane;
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, info_span};

use super::context::Ctx;
use super::files::{diff_since, read_files};
use super::workspace::blocking;
use super::{Outcome, Place};
use crate::backend::{AgentBackend, BackendError, Disposition, EditScope, TurnReport};
use crate::events::MissionEvent;
use crate::git::GitError;
use crate::protocol;

/// Work handed to a Worker lane.
pub(crate) struct WorkOrder {
    pub(crate) item: Item,
    pub(crate) attempt: u32,
    pub(crate) context: String,
}

/// The lane consumer: runs work orders until the scheduler closes or the mission stops, then
/// gives its session back. With a worktree per lane, `gate` holds the lane until its last
/// item's review and commit are over, and the lane's worktree is reset for each item.
pub(crate) async fn lane_loop<B: AgentBackend>(
    ctx: Arc<Ctx<B>>,
    mut lane: Lane<String, WorkOrder>,
    tx: mpsc::UnboundedSender<Outcome>,
    gate: Option<Arc<Semaphore>>,
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
        let permit = match &gate {
            Some(gate) => tokio::select! {
                permit = Arc::clone(gate).acquire_owned() => permit.ok(),
                () = ctx.stop.cancelled() => {
                    let _ = tx.send(Outcome::WorkerFailed { item: id, error: BackendError::Stopped });
                    break;
                }
            },
            None => None,
        };
        let dir = match ready_lane(&ctx, lane_id).await {
            Ok(dir) => dir,
            Err(error) => {
                if tx.send(Outcome::GitFailed { item: id, error }).is_err() {
                    break;
                }
                continue;
            }
        };
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
        let outcome = match run_worker(&ctx, &mut session, &order, &dir)
            .instrument(span)
            .await
        {
            Ok((report, diff)) => Outcome::WorkerDone {
                item: id,
                report,
                diff,
                place: Place {
                    lane: Some(lane_id),
                    dir,
                    permit,
                },
            },
            Err(error) => Outcome::WorkerFailed { item: id, error },
        };
        if tx.send(outcome).is_err() {
            break;
        }
    }
    lane.idle();
    if let Some(session) = session.take() {
        ctx.close_session(session, Disposition::Reusable).await;
    }
}

/// The directory lane `lane` works in for its next item: with a worktree per lane, its
/// worktree (recorded in the journal first, created when missing, reset to the mission's
/// branch).
async fn ready_lane<B: AgentBackend>(ctx: &Arc<Ctx<B>>, lane: usize) -> Result<PathBuf, GitError> {
    if !ctx.work.per_lane() {
        return Ok(ctx.work.main_dir());
    }
    let c = Arc::clone(ctx);
    if let Some(entry) = blocking(move || c.work.lane_intent(lane)).await? {
        ctx.journal(entry);
    }
    let c = Arc::clone(ctx);
    blocking(move || c.work.prepare_lane(lane)).await
}

/// One Worker turn on `order`'s item, in the lane's session (opened, or re-scoped to the
/// item's files) working in `dir`; returns the report and the diff of the item's files.
async fn run_worker<B: AgentBackend>(
    ctx: &Ctx<B>,
    session: &mut Option<B::Session>,
    order: &WorkOrder,
    dir: &Path,
) -> Result<(TurnReport, String), BackendError> {
    let item = &order.item;
    let scope = ctx.scope_in(
        EditScope::files(item.files.iter().cloned()).commands(ctx.config.worker_commands.clone()),
        dir.to_owned(),
    );
    let current = match session.take() {
        Some(s) => match ctx.backend.rescope(&s, &scope).await {
            Ok(()) => s,
            Err(_) => {
                ctx.close_session(s, Disposition::Broken).await;
                ctx.open_session(AgentRole::Worker, scope.clone()).await?
            }
        },
        None => ctx.open_session(AgentRole::Worker, scope.clone()).await?,
    };
    let (read_dir, files) = (dir.to_owned(), item.files.clone());
    let before = ctx.files.run(move || read_files(&read_dir, &files)).await;
    let mut prompt = protocol::worker_prompt(&order.context, item);
    if !ctx.config.worker_commands.is_empty() {
        prompt.push_str(&format!(
            "\n\nYou may run exactly these shell commands (`*` matches anything): {}. Run the \
             checks that prove your change before you finish; any other command is rejected.",
            ctx.config
                .worker_commands
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let result = ctx
        .turn(
            &current,
            AgentRole::Worker,
            Some((&item.id, order.attempt)),
            prompt,
            scope,
        )
        .await;
    match result {
        Ok(report) => {
            let (read_dir, files) = (dir.to_owned(), item.files.clone());
            let diff = ctx
                .files
                .run(move || diff_since(&read_dir, &files, &before))
                .await;
            *session = Some(current);
            ctx.record_turn(AgentRole::Worker, Some(&item.id), &report);
            Ok((report, diff))
        }
        Err(error) => {
            ctx.record_failure(AgentRole::Worker, Some(&item.id), &error);
            // A session that failed or was stopped mid-turn is not reused.
            let _ = ctx.backend.abort(&current).await;
            ctx.close_session(current, Disposition::Broken).await;
            Err(error)
        }
    }
}
