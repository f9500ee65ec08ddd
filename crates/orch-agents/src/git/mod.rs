//! Git-native missions: the mission's branch, its worktrees, a commit per item, merges.
//!
//! # Why the `git` command line
//!
//! Git is driven through its command line, not a library. The command line is the maintained
//! reference implementation, installed wherever a user has a repository, and it is what the
//! user's own configuration (identity, `info/exclude`, signing, `safe.directory`, the object
//! formats and extensions of their repository) is written for. The mission needs worktrees
//! (`git worktree add/remove/list`), three-way merges with conflict detection and abort, and
//! merge prediction without touching any checkout (`git merge-tree --write-tree`, git ≥ 2.38):
//! libgit2 (`git2`) has no `merge-tree --write-tree` and partial worktree support, and gix
//! (gitoxide) has neither worktree creation nor a merge that updates a worktree yet. A
//! mission runs a few git commands per item, each a few milliseconds against turns of
//! seconds, so spawning processes costs nothing a user sees.
//!
//! Every call goes through one runner (`command.rs`): `LC_ALL=C` (messages are parsed),
//! `GIT_TERMINAL_PROMPT=0` and `GIT_EDITOR=true` (nothing ever waits for a person), the
//! caller's `GIT_DIR`/`GIT_WORK_TREE`/`GIT_INDEX_FILE` removed (the repository is the
//! directory's), the user's hooks off (`core.hooksPath=/dev/null`: a hook may prompt, be slow
//! or edit files; the mission's gate is the Reviewer), a 120 s bound (a command stuck on a
//! lock or a passphrase is killed), and a typed [`GitError`] for anything unexpected — never
//! a panic on git's output. The calls block; the mission runs them on blocking threads.
//!
//! # What a mission does with it
//!
//! With [`GitMode::Branch`] the mission creates the branch `orch/<slug>` from the user's
//! `HEAD` and a worktree of it under `.orchestrator/worktrees/`, and every agent session works
//! there: the user's checkout (`HEAD`, index, working tree) is never touched, and
//! `.orchestrator/` is ignored through `.git/info/exclude` (never `.gitignore`). An item whose
//! review passes becomes one commit on the branch (subject from the item, the Reviewer's
//! answer as body, trailers `Orch-Item`, `Orch-Plan-Version`, `Orch-Attempts`). With
//! [`GitMode::WorktreePerLane`] each Worker lane also has a branch and a worktree of its own;
//! a passed item is committed there and merged into the mission branch, and a conflict sends
//! the item back with the conflicting paths in its notes. [`MissionGit`] reads what a mission
//! recorded (for `status`), predicts and performs the merge into the user's branch, and
//! removes what the mission left ([`MissionGit::clean`]); [`MissionGit::status`] reads what is
//! there now.

mod command;
mod message;
mod mission;
mod repo;

use std::path::PathBuf;
use std::time::Duration;

pub use message::{CommitInfo, CommitMessage, slug};
pub use mission::{
    BranchCleanup, Cleaned, GitMode, GitStatus, LaneWorktree, MissionGit, WORKTREES_DIR,
};
pub use repo::{GitVersion, Head, MergeCheck, MergeOutcome, Repo, Worktree};

pub(crate) use command::Git;
pub(crate) use repo::{admin_lock, same_path as repo_same_path};

/// The trailer naming the plan item of a mission commit.
pub const ITEM_TRAILER: &str = "Orch-Item";
/// The trailer with the plan version the item ran under.
pub const PLAN_VERSION_TRAILER: &str = "Orch-Plan-Version";
/// The trailer with the attempt that passed.
pub const ATTEMPTS_TRAILER: &str = "Orch-Attempts";

/// A git operation that could not be done. A refused operation changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// No `git` executable on the `PATH`.
    #[error("git is not installed (no `git` on the PATH)")]
    Missing,
    /// Git is older than an operation needs.
    #[error("git {found} is too old: {needed} or later is needed for {what}")]
    TooOld {
        /// The version found.
        found: GitVersion,
        /// The version needed.
        needed: GitVersion,
        /// What needs it.
        what: &'static str,
    },
    /// The directory is not inside a git working tree.
    #[error("{} is not inside a git repository's working tree", dir.display())]
    NotARepository {
        /// The directory.
        dir: PathBuf,
    },
    /// The repository has no commit yet: there is nothing to branch from.
    #[error("the repository at {} has no commit yet; commit something first", dir.display())]
    NoCommits {
        /// Its root.
        dir: PathBuf,
    },
    /// `HEAD` is detached: there is no branch to start from or merge into.
    #[error("HEAD is detached in {}; check out a branch first", dir.display())]
    DetachedHead {
        /// The checkout.
        dir: PathBuf,
    },
    /// The user's checkout has changes in the way of a merge: staged changes (a merge commit
    /// would record them), or uncommitted changes or untracked files in paths the merge writes.
    #[error("the checkout at {} has changes in the way of the merge ({}); commit or stash them first", dir.display(), paths.join(", "))]
    DirtyTree {
        /// The checkout.
        dir: PathBuf,
        /// The paths in the way (relative to the repository root).
        paths: Vec<String>,
    },
    /// The user's checkout is on the mission's branch itself: there is nothing to merge it
    /// into.
    #[error("{} is on the mission's branch {branch}; check out the branch to merge it into first", dir.display())]
    OnMissionBranch {
        /// The checkout.
        dir: PathBuf,
        /// The mission's branch.
        branch: String,
    },
    /// A merge is in progress in the user's checkout (theirs, not the mission's): nothing is
    /// done until they conclude or abort it.
    #[error("a merge is in progress in {}; conclude or abort it first", dir.display())]
    MergeInProgress {
        /// The checkout.
        dir: PathBuf,
    },
    /// A branch to create exists already (it is not the mission's to reuse).
    #[error("the branch {branch} exists already")]
    BranchExists {
        /// The branch.
        branch: String,
    },
    /// A mission runs in the project: its workspace is not cleaned under it.
    #[error("a mission runs in {} (pid {pid}); stop it first", dir.display())]
    MissionRunning {
        /// The project.
        dir: PathBuf,
        /// The run's process.
        pid: u32,
    },
    /// A branch the mission recorded is gone.
    #[error("the mission's branch {branch} no longer exists")]
    BranchMissing {
        /// The branch.
        branch: String,
    },
    /// The mission has no git workspace (it ran without git, or nothing was recorded).
    #[error("the mission in {} has no git branch", dir.display())]
    NoMissionBranch {
        /// The project.
        dir: PathBuf,
    },
    /// A git command exited with an error.
    #[error("`{command}` failed in {} (exit {}): {stderr}", dir.display(), code.map_or("by a signal".to_owned(), |c| c.to_string()))]
    Command {
        /// The command line.
        command: String,
        /// Where it ran.
        dir: PathBuf,
        /// Its exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// The end of what it printed on standard error.
        stderr: String,
    },
    /// A git command ran too long and was killed.
    #[error("`{command}` did not finish within {} s and was killed", after.as_secs())]
    Timeout {
        /// The command line.
        command: String,
        /// Its time limit.
        after: Duration,
    },
    /// Git printed something this crate does not understand.
    #[error("unexpected output of `{command}`: {output}")]
    Unexpected {
        /// The command line.
        command: String,
        /// What it printed (an excerpt).
        output: String,
    },
    /// A file or a process could not be used.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The mission's journal could not be read.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}
