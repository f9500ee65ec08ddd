//! A Worker lane: it takes work orders (warm ones first) from `orch-queue`'s lane scheduler,
//! keeps its Worker session across items (re-scoped to each item's files), and sends each
//! outcome back to the Commander.

use std::sync::Arc;

use orch_core::AgentRole;
use orch_mvcc::Item;
use orch_queue::Lane;
use tokio::sync::mpsc;
use tracing::{Instrument, info_span};

use super::Outcome;
use super::context::Ctx;
use super::files::{diff_since, read_files};
use crate::backend::{AgentBackend, BackendError, Disposition, EditScope, TurnReport};
use crate::events::MissionEvent;
use crate::protocol;

/// Work handed to a Worker lane.
pub(crate) struct WorkOrder {
    pub(crate) item: Item,
    pub(crate) attempt: u32,
    pub(crate) context: String,
}

/// The lane consumer: runs work orders until the scheduler closes or the mission stops, then
/// gives its session back.
pub(crate) async fn lane_loop<B: AgentBackend>(
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
        let outcome = match run_worker(&ctx, &mut session, &order)
            .instrument(span)
            .await
        {
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
        ctx.close_session(session, Disposition::Reusable).await;
    }
}

/// One Worker turn on `order`'s item, in the lane's session (opened, or re-scoped to the
/// item's files); returns the report and the diff of the item's files.
async fn run_worker<B: AgentBackend>(
    ctx: &Ctx<B>,
    session: &mut Option<B::Session>,
    order: &WorkOrder,
) -> Result<(TurnReport, String), BackendError> {
    let item = &order.item;
    let scope = EditScope::files(item.files.iter().cloned());
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
    let (dir, files) = (ctx.dir.clone(), item.files.clone());
    let before = ctx.files.run(move || read_files(&dir, &files)).await;
    let prompt = protocol::worker_prompt(&order.context, item);
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
            let (dir, files) = (ctx.dir.clone(), item.files.clone());
            let diff = ctx
                .files
                .run(move || diff_since(&dir, &files, &before))
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
