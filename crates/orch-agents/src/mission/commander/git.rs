//! The Commander's git steps: announcing the branch and finding what earlier runs committed
//! (a commit is never half made: one the journal lost is found by its trailer), recording a
//! passed item's commit or its merge conflict, and the end of a run.

use std::sync::Arc;

use orch_mvcc::{ItemId, ItemState};
use tracing::warn;

use super::Commander;
use crate::backend::AgentBackend;
use crate::events::{GitReport, MissionEvent, MissionStatus};
use crate::git::GitError;
use crate::mission::workspace::{Committed, blocking};
use crate::protocol::Verdict;

impl<B: AgentBackend> Commander<B> {
    /// Publishes the mission's branch; on a resumed run, records the commits of the branch
    /// whose `ItemCommitted` the journal lost (a crash between the commit and its record):
    /// their items passed, and recovery makes them done.
    pub(super) async fn announce_git(&mut self, resumed: bool) {
        let Some(record) = self.ctx.work.record() else {
            return;
        };
        let branch = record.branch.clone();
        self.ctx.emit(MissionEvent::GitBranch {
            branch: branch.clone(),
            worktree: self.ctx.work.main_dir(),
            base_branch: record.base_branch.clone(),
            resumed: !self.git_created,
            uncommitted: self.ctx.work.uncommitted().to_vec(),
        });
        if !resumed {
            return;
        }
        let ctx = Arc::clone(&self.ctx);
        let commits = match blocking(move || ctx.work.committed()).await {
            Ok(commits) => commits,
            Err(e) => {
                self.git_failed = Some(format!("cannot read {branch}: {e}"));
                return;
            }
        };
        let recorded = self.history.commits();
        for (item, sha) in &commits {
            if recorded.get(item) != Some(sha) {
                self.ctx.emit(MissionEvent::ItemCommitted {
                    item: item.clone(),
                    sha: sha.clone(),
                    branch: branch.clone(),
                    merge: None,
                    reconciled: true,
                });
            }
        }
        for item in &self.current().items {
            if item.state == ItemState::Done && !commits.contains_key(item.id.as_str()) {
                warn!(item = %item.id, %branch, "the plan shows the item done, the branch has no commit of it");
            }
        }
        self.committed = commits.into_keys().collect();
    }

    /// A review's verdict, and (a git mission's passed item) what its commit did: a commit
    /// is recorded and the item is done; a merge conflict charges the attempt and sends the
    /// item back with the paths in its notes; a git failure ends the run (the item stays in
    /// review, and the next run reviews and commits it).
    pub(super) fn reviewed_and_committed(
        &mut self,
        item: ItemId,
        verdict: Verdict,
        commit: Option<Result<Committed, GitError>>,
    ) {
        let branch = || {
            self.ctx
                .work
                .record()
                .map(|r| r.branch.clone())
                .unwrap_or_default()
        };
        match (verdict, commit) {
            (Verdict::Pass, Some(Ok(Committed::Done { sha, merge }))) => {
                self.ctx.emit(MissionEvent::ItemCommitted {
                    item: item.to_string(),
                    sha,
                    branch: branch(),
                    merge,
                    reconciled: false,
                });
                self.reviewed(item, Verdict::Pass);
            }
            (Verdict::Pass, Some(Ok(Committed::Conflict { paths }))) => {
                self.ctx.emit(MissionEvent::Reviewed {
                    item: item.to_string(),
                    verdict: Verdict::Pass,
                });
                self.ctx.emit(MissionEvent::MergeConflict {
                    item: item.to_string(),
                    paths: paths.clone(),
                });
                self.attempt_failed(
                    &item,
                    format!(
                        "merge conflict: the review passed, but {} changed on the mission's \
                         branch while the item ran ({}); the merge was aborted; redo the item \
                         on the branch as it is now",
                        paths.join(", "),
                        branch()
                    ),
                );
            }
            (Verdict::Pass, Some(Err(e))) => {
                self.ctx.emit(MissionEvent::Reviewed {
                    item: item.to_string(),
                    verdict: Verdict::Pass,
                });
                self.git_failed
                    .get_or_insert_with(|| format!("cannot commit {item}: {e}"));
            }
            (verdict, _) => self.reviewed(item, verdict),
        }
    }

    /// The end of a run of a git mission: a completed mission's worktrees removed (recorded),
    /// and the git part of the report.
    pub(super) async fn finish_git(&self, status: &MissionStatus) -> Option<GitReport> {
        self.ctx.work.record()?;
        let completed = *status == MissionStatus::Completed;
        let ctx = Arc::clone(&self.ctx);
        let finished = blocking(move || {
            let removed = ctx.work.finish(completed)?;
            Ok::<_, GitError>((removed, ctx.work.report()?))
        })
        .await;
        match finished {
            Ok((removed, report)) => {
                if let Some(entry) = removed {
                    self.ctx.journal(entry);
                }
                report
            }
            Err(e) => {
                warn!(error = %e, "cannot finish the mission's git workspace");
                None
            }
        }
    }
}
