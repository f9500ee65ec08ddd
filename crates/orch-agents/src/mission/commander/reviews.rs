//! Reviews the Commander starts: after a Worker turn, and on resume for the items left in
//! review (where their work is: the mission's worktree, or the worktree of the lane they ran
//! on). A passed item of a git mission is committed before its outcome goes back.

use std::sync::Arc;

use orch_mvcc::{Item, ItemState};
use tracing::{Instrument, info_span};

use super::{Commander, Execution};
use crate::backend::{AgentBackend, EditScope};
use crate::mission::files::current_contents;
use crate::mission::item;
use crate::mission::review::review;
use crate::mission::workspace::{ItemCommit, blocking};
use crate::mission::{MissionError, Outcome, Place};
use crate::protocol::{self, Verdict};

impl<B: AgentBackend> Commander<B> {
    /// After a restart: items in review are reviewed; an item whose last Worker turn the
    /// journal shows finished (and not reviewed since) goes to review too (its work is not
    /// redone); an item the journal shows passed review is done (its plan change had not been
    /// written yet); other items in progress (their session died with the process) go back to
    /// pending.
    pub(super) async fn recover(&mut self, run: &mut Execution) -> Result<(), MissionError> {
        for (id, change) in item::recovery(self.current(), &self.history, &self.committed) {
            self.change_item(&id, change);
        }
        self.ready.invalidate();
        self.writer.sync().await?;
        let in_review: Vec<Item> = self
            .current()
            .items
            .iter()
            .filter(|i| i.state == ItemState::InReview)
            .cloned()
            .collect();
        let lanes = self.history.lanes();
        for item in in_review {
            // With a worktree per lane the work is in the worktree of the lane it ran on.
            let lane = lanes
                .get(item.id.as_str())
                .copied()
                .filter(|_| self.ctx.work.per_lane());
            if lane.is_some_and(|l| !self.ctx.work.lane_exists(l)) {
                // Its worktree was removed (`clean`, by hand) with the work in it.
                self.attempt_failed(
                    &item.id,
                    "the lane's worktree holding this work was removed before its review; \
                     redo the item"
                        .to_owned(),
                );
                continue;
            }
            let dir = lane.map_or_else(|| self.ctx.work.main_dir(), |l| self.ctx.work.lane_dir(l));
            let permit = lane
                .and_then(|l| run.gates.get(l))
                .and_then(|g| Arc::clone(g).try_acquire_owned().ok());
            let (read_dir, files) = (dir.clone(), item.files.clone());
            let text = self
                .ctx
                .files
                .run(move || current_contents(&read_dir, &files))
                .await;
            self.spawn_review(item, text, run, Place { lane, dir, permit });
        }
        Ok(())
    }

    /// Reviews `item`'s work (its `diff`) where it is (`place`); a passed item of a git
    /// mission is committed before the outcome is sent.
    pub(super) fn spawn_review(
        &mut self,
        item: Item,
        diff: String,
        run: &mut Execution,
        place: Place,
    ) {
        let context = protocol::mission_context(&self.request, self.current(), Some(&item));
        let prompt = protocol::review_prompt(&context, &item, &diff);
        let ctx = Arc::clone(&self.ctx);
        let tx = run.tx.clone();
        let store = self.writer.store().clone();
        self.running.insert(item.id.clone());
        let span = info_span!("review", item = %item.id);
        run.reviews.spawn(
            async move {
                let attempt = item.attempts + 1;
                let scope = ctx.scope_in(EditScope::none(), place.dir.clone());
                let result = review(&ctx, Some((&item.id, attempt)), prompt, scope).await;
                let commit = match &result {
                    Ok((Verdict::Pass, report)) if ctx.work.mode().is_on() => {
                        let (ctx, text, lane) = (Arc::clone(&ctx), report.text.clone(), place.lane);
                        let item = item.clone();
                        blocking(move || {
                            let plan_version = store.version().unwrap_or_default();
                            let commit = ItemCommit {
                                item: &item,
                                attempt,
                                plan_version,
                                verdict: &text,
                            };
                            ctx.work.commit_item(lane, &commit)
                        })
                        .await
                        .transpose()
                    }
                    _ => None,
                };
                let _ = tx.send(Outcome::Reviewed {
                    item: item.id,
                    result,
                    commit,
                });
                // The lane may reset its worktree now.
                drop(place.permit);
            }
            .instrument(span),
        );
    }
}
