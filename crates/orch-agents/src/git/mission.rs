//! What a mission recorded of its git workspace (in its journal), read back: for `status`,
//! for the merge into the user's branch, and for `clean`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::repo::same_path;
use super::{CommitInfo, GitError, MergeCheck, MergeOutcome, Repo};
use crate::journal::{Journal, JournalContents, JournalEntry};

/// Where a mission's worktrees live, inside its state directory.
pub const WORKTREES_DIR: &str = "worktrees";

/// How a mission uses git.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GitMode {
    /// Not at all: agents edit the project directory in place (the default).
    #[default]
    Off,
    /// A branch `orch/<slug>` from the user's `HEAD`, in a worktree of its own where every
    /// session works; one commit per passed item.
    Branch,
    /// [`GitMode::Branch`], and each Worker lane on a branch and worktree of its own; a passed
    /// item is merged into the mission branch (a conflict sends it back).
    WorktreePerLane,
}

impl GitMode {
    /// Whether the mission uses git.
    pub fn is_on(self) -> bool {
        self != GitMode::Off
    }
}

/// A lane's branch and worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneWorktree {
    /// The lane.
    pub lane: usize,
    /// Its branch.
    pub branch: String,
    /// Its worktree.
    pub worktree: PathBuf,
}

/// A mission's git workspace as its journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissionGit {
    /// The user's project directory.
    pub project: PathBuf,
    /// How the mission uses git.
    pub mode: GitMode,
    /// The mission's branch (`orch/<slug>`).
    pub branch: String,
    /// The commit it started from (the user's `HEAD` then).
    pub base: String,
    /// The user's branch then: where the mission's branch merges back.
    pub base_branch: String,
    /// The mission's worktree (it may have been removed since).
    pub worktree: PathBuf,
    /// Lane worktrees recorded and not removed since.
    pub lanes: Vec<LaneWorktree>,
}

/// What [`MissionGit::clean`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleaned {
    /// Worktrees removed.
    pub worktrees: Vec<PathBuf>,
    /// Branches deleted.
    pub branches: Vec<String>,
    /// The mission's branch, kept because it is not merged ([`BranchCleanup::IfMerged`]).
    pub unmerged: Option<String>,
}

/// What [`MissionGit::clean`] does with the mission's branch (its lane branches and
/// worktrees are always removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BranchCleanup {
    /// Keep it (the default): it holds the mission's work.
    #[default]
    Keep,
    /// Delete it when its commits are in the user's `HEAD` or the branch it started from
    /// (merged); keep it otherwise ([`Cleaned::unmerged`]).
    IfMerged,
    /// Delete it, merged or not.
    Always,
}

/// A mission's git workspace as it is now (for `status`), from [`MissionGit::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitStatus {
    /// How the mission uses git.
    pub mode: GitMode,
    /// The mission's branch.
    pub branch: String,
    /// Whether it still exists.
    pub branch_exists: bool,
    /// The user's branch the mission started from.
    pub base_branch: String,
    /// The branch the user's checkout is on now (`None`: detached).
    pub current_branch: Option<String>,
    /// The mission's commits, newest first (empty when the branch is gone).
    pub commits: Vec<CommitInfo>,
    /// Whether the user's `HEAD` has every commit of the mission's branch.
    pub merged: bool,
    /// The mission's worktrees git still has (its own first, then its lanes').
    pub worktrees: Vec<PathBuf>,
    /// The lane branches that still exist.
    pub lane_branches: Vec<String>,
}

impl MissionGit {
    /// The git workspace the mission in `project` recorded (`None`: it has none).
    ///
    /// # Errors
    /// [`GitError::Journal`] when the journal cannot be read.
    pub fn read(project: &Path) -> Result<Option<MissionGit>, GitError> {
        let journal = Journal::read(&project.join(".orchestrator"))?;
        Ok(Self::from_journal(project, &journal))
    }

    /// The workspace recorded in `journal` of the mission in `project`.
    pub fn from_journal(project: &Path, journal: &JournalContents) -> Option<MissionGit> {
        let mut found: Option<MissionGit> = None;
        for record in &journal.records {
            match &record.entry {
                JournalEntry::GitWorkspace {
                    mode,
                    branch,
                    worktree,
                    base,
                    base_branch,
                } => {
                    found = Some(MissionGit {
                        project: project.to_owned(),
                        mode: *mode,
                        branch: branch.clone(),
                        base: base.clone(),
                        base_branch: base_branch.clone(),
                        worktree: worktree.clone(),
                        lanes: Vec::new(),
                    });
                }
                JournalEntry::GitLane {
                    lane,
                    branch,
                    worktree,
                } => {
                    if let Some(git) = found.as_mut() {
                        git.lanes.retain(|l| l.lane != *lane);
                        git.lanes.push(LaneWorktree {
                            lane: *lane,
                            branch: branch.clone(),
                            worktree: worktree.clone(),
                        });
                    }
                }
                JournalEntry::GitRemoved { branches, .. } => {
                    if let Some(git) = found.as_mut() {
                        git.lanes.retain(|l| !branches.contains(&l.branch));
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The user's checkout.
    ///
    /// # Errors
    /// [`GitError::NotARepository`].
    pub fn repo(&self) -> Result<Repo, GitError> {
        Repo::discover(&self.project)
    }

    /// The mission's commits (its branch since it started), newest first.
    ///
    /// # Errors
    /// [`GitError::BranchMissing`], [`GitError::Command`].
    pub fn commits(&self) -> Result<Vec<CommitInfo>, GitError> {
        let repo = self.repo()?;
        if !repo.branch_exists(&self.branch)? {
            return Err(GitError::BranchMissing {
                branch: self.branch.clone(),
            });
        }
        repo.commits(&format!("{}..{}", self.base, self.branch))
    }

    /// The command a person runs in the project to merge the mission's branch.
    pub fn merge_command(&self) -> String {
        format!(
            "git checkout {} && git merge --no-ff {}",
            self.base_branch, self.branch
        )
    }

    /// What `status` shows: the branch and its commits, the worktrees and lane branches that
    /// exist, and whether the user's branch already has the mission's commits. Reads only.
    ///
    /// # Errors
    /// [`GitError::NotARepository`], [`GitError::Command`].
    pub fn status(&self) -> Result<GitStatus, GitError> {
        let repo = self.repo()?;
        let branch_exists = repo.branch_exists(&self.branch)?;
        let commits = if branch_exists {
            repo.commits(&format!("{}..{}", self.base, self.branch))?
        } else {
            Vec::new()
        };
        let head = repo.head()?;
        let merged = branch_exists && repo.is_ancestor(&self.branch, &head.commit)?;
        let trees = repo.worktrees()?;
        let worktrees = self
            .recorded_worktrees()
            .into_iter()
            .filter(|p| trees.iter().any(|w| same_path(&w.path, p)))
            .collect();
        let mut lane_branches = Vec::new();
        for lane in &self.lanes {
            if repo.branch_exists(&lane.branch)? {
                lane_branches.push(lane.branch.clone());
            }
        }
        Ok(GitStatus {
            mode: self.mode,
            branch: self.branch.clone(),
            branch_exists,
            base_branch: self.base_branch.clone(),
            current_branch: head.branch,
            commits,
            merged,
            worktrees,
            lane_branches,
        })
    }

    fn require_branch(&self, repo: &Repo) -> Result<(), GitError> {
        if repo.branch_exists(&self.branch)? {
            Ok(())
        } else {
            Err(GitError::BranchMissing {
                branch: self.branch.clone(),
            })
        }
    }

    /// The branch the user's checkout is on: where [`MissionGit::merge`] merges.
    fn target(&self, repo: &Repo) -> Result<String, GitError> {
        let (branch, _) = repo.current_branch()?;
        if branch == self.branch {
            return Err(GitError::OnMissionBranch {
                dir: repo.root().to_owned(),
                branch,
            });
        }
        Ok(branch)
    }

    /// Whether the mission's branch merges cleanly into the branch the user's checkout is on
    /// now, predicted without touching anything (`git merge-tree --write-tree`).
    ///
    /// # Errors
    /// [`GitError::BranchMissing`], [`GitError::DetachedHead`], [`GitError::OnMissionBranch`],
    /// [`GitError::TooOld`], [`GitError::Command`].
    pub fn merge_check(&self) -> Result<MergeCheck, GitError> {
        let repo = self.repo()?;
        self.require_branch(&repo)?;
        let into = self.target(&repo)?;
        repo.merge_check(&into, &self.branch)
    }

    /// Merges the mission's branch into the branch the user's checkout is on, with a merge
    /// commit (`--no-ff`). A predicted conflict is returned, with its paths, without touching
    /// anything; so is a refusal: a merge of the user's in progress, staged changes (the merge
    /// commit would record them), or uncommitted changes or untracked files in paths the merge
    /// writes. Uncommitted changes elsewhere stay as they are.
    ///
    /// # Errors
    /// [`GitError::MergeInProgress`], [`GitError::DirtyTree`], as [`MissionGit::merge_check`].
    pub fn merge(&self) -> Result<MergeOutcome, GitError> {
        let repo = self.repo()?;
        self.require_branch(&repo)?;
        let into = self.target(&repo)?;
        if repo.merging()? {
            return Err(GitError::MergeInProgress {
                dir: repo.root().to_owned(),
            });
        }
        let writes = repo.changed_since_fork(&into, &self.branch)?;
        let mut in_the_way = repo.staged_paths()?;
        in_the_way.extend(
            repo.changed_paths()?
                .into_iter()
                .chain(repo.untracked_paths()?)
                .filter(|p| writes.contains(p)),
        );
        in_the_way.sort();
        in_the_way.dedup();
        if !in_the_way.is_empty() {
            return Err(GitError::DirtyTree {
                dir: repo.root().to_owned(),
                paths: in_the_way,
            });
        }
        if let MergeCheck::Conflicts { paths } = repo.merge_check(&into, &self.branch)? {
            return Ok(MergeOutcome::Conflict { paths });
        }
        repo.merge_with(
            &self.branch,
            &format!("Merge {} (orchestrator mission)", self.branch),
            true,
        )
    }

    /// Removes what the mission left: its worktrees that git still has (with whatever is in
    /// them: they are the mission's, under its state directory), its lane branches, and the
    /// mission's branch as `branch` says; records it in the journal. Only what the journal
    /// records as created by the mission is touched, and nothing while a run holds the
    /// project. A stopped mission cleaned this way can still be resumed while its branch
    /// stays (its worktrees are made again).
    ///
    /// # Errors
    /// [`GitError::MissionRunning`]; [`GitError::Command`] (git refuses to delete a branch
    /// checked out in a checkout of the user's); [`GitError::Journal`].
    pub fn clean(&self, branch: BranchCleanup) -> Result<Cleaned, GitError> {
        let state_dir = self.project.join(".orchestrator");
        if let Ok(crate::RunState::Running(holder)) = crate::RunLock::state(&state_dir) {
            return Err(GitError::MissionRunning {
                dir: self.project.clone(),
                pid: holder.pid,
            });
        }
        self.clean_unchecked(branch)
    }

    /// [`MissionGit::clean`] by the process that holds the project's run lock (`lock`), so
    /// that no run can start while it cleans (a command that archives a finished mission
    /// before planning a new one, a `clean` command that owns the directory first).
    ///
    /// # Errors
    /// [`GitError::MissionRunning`] when `lock` is another directory's; as
    /// [`MissionGit::clean`] otherwise.
    pub fn clean_holding(
        &self,
        branch: BranchCleanup,
        lock: &crate::RunLock,
    ) -> Result<Cleaned, GitError> {
        let state_dir = self.project.join(".orchestrator");
        if !same_path(lock.state_dir(), &state_dir) {
            return Err(GitError::MissionRunning {
                dir: self.project.clone(),
                pid: lock.info().pid,
            });
        }
        self.clean_unchecked(branch)
    }

    fn clean_unchecked(&self, branch: BranchCleanup) -> Result<Cleaned, GitError> {
        let state_dir = self.project.join(".orchestrator");
        let repo = self.repo()?;
        let mut cleaned = Cleaned::default();
        let trees = repo.worktrees()?;
        let known = |path: &Path| trees.iter().any(|w| same_path(&w.path, path));
        for tree in self.recorded_worktrees() {
            if known(&tree) && repo.remove_worktree(&tree)? {
                cleaned.worktrees.push(tree);
            }
        }
        for lane in &self.lanes {
            if repo.branch_exists(&lane.branch)? {
                repo.delete_branch(&lane.branch)?;
                cleaned.branches.push(lane.branch.clone());
            }
        }
        if branch != BranchCleanup::Keep && repo.branch_exists(&self.branch)? {
            let merged = self.merged_somewhere(&repo)?;
            if merged || branch == BranchCleanup::Always {
                repo.delete_branch(&self.branch)?;
                cleaned.branches.push(self.branch.clone());
            } else {
                cleaned.unmerged = Some(self.branch.clone());
            }
        }
        repo.ok_prune()?;
        if !cleaned.worktrees.is_empty() || !cleaned.branches.is_empty() {
            Journal::append_once(
                &state_dir,
                JournalEntry::GitRemoved {
                    worktrees: cleaned.worktrees.clone(),
                    branches: cleaned.branches.clone(),
                },
            )?;
        }
        Ok(cleaned)
    }

    /// Whether the mission's branch is merged into the user's `HEAD` or its base branch.
    fn merged_somewhere(&self, repo: &Repo) -> Result<bool, GitError> {
        let head = repo.head()?;
        if repo.is_ancestor(&self.branch, &head.commit)? {
            return Ok(true);
        }
        Ok(repo.branch_exists(&self.base_branch)?
            && repo.is_ancestor(&self.branch, &self.base_branch)?)
    }

    /// The worktrees the mission recorded: its own, then its lanes'.
    fn recorded_worktrees(&self) -> Vec<PathBuf> {
        std::iter::once(&self.worktree)
            .chain(self.lanes.iter().map(|l| &l.worktree))
            .cloned()
            .collect()
    }
}

impl Repo {
    /// `git worktree prune`.
    pub(crate) fn ok_prune(&self) -> Result<(), GitError> {
        let _admin = super::repo::admin_lock();
        super::Git::new(&["worktree", "prune"])
            .ok(self.root())
            .map(drop)
    }
}
