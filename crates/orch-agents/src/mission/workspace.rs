//! Where a mission's agents work: the project directory, or (a git mission) the worktree of
//! the mission's branch and, with a worktree per lane, each lane's worktree; and the commits
//! and merges of passed items.
//!
//! Everything here blocks (git commands, files); the mission calls it through [`blocking`].
//! Whatever is created is recorded in the journal first (the mission's worktree and branch
//! by `prepare`'s caller, a lane's by `lane_intent`'s), so a crash never leaves a branch or a
//! worktree the mission does not know is its own, and a resumed run creates what is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orch_mvcc::Item;
use parking_lot::Mutex;

use crate::events::{CommitReport, GitReport};
use crate::git::{
    ATTEMPTS_TRAILER, CommitMessage, GitError, GitMode, ITEM_TRAILER, MergeOutcome, MissionGit,
    PLAN_VERSION_TRAILER, Repo, WORKTREES_DIR, slug,
};
use crate::journal::{JournalContents, JournalEntry};

/// The OpenCode configuration a session reads from its directory: linked into a worktree
/// when the project's copy is not the committed one (an untracked `opencode.json` holding the
/// orchestrator's agents), since OpenCode 1 looks for it only up to the worktree's root.
const CONFIG_ENTRIES: [&str; 3] = ["opencode.json", "opencode.jsonc", ".opencode"];

/// Runs blocking `work` on tokio's blocking threads.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // The runtime is shutting down; nothing waits for the value any more.
        Err(e) => panic!("blocking work was cancelled: {e}"),
    }
}

/// The git workspace a run will use: the recorded one, or a new one to record
/// (`new: true`) before [`Workspace::open`] creates it.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) git: Option<MissionGit>,
    pub(crate) new: bool,
    /// Tracked paths of the user's checkout with uncommitted changes (relative to the
    /// repository's root): left out of the mission, which starts from `HEAD`.
    pub(crate) uncommitted: Vec<String>,
}

/// Decides the run's git workspace from what the journal recorded: the recorded one; else,
/// for a new mission with git on, a new branch name and worktree path after checking the
/// user's checkout (a branch, a commit) and adding `.orchestrator/` to `.git/info/exclude`.
/// Nothing else is written. Uncommitted changes in the user's checkout do not matter (it is
/// never touched), but they are not part of the mission's base: they are listed
/// (`Prepared::uncommitted`) for the run to report.
///
/// # Errors
/// [`GitError`] for a project that cannot host a git mission; nothing is changed then.
pub(crate) fn prepare(
    project: &Path,
    mode: GitMode,
    request: &str,
    history: &JournalContents,
    has_plan: bool,
) -> Result<Prepared, GitError> {
    if let Some(git) = MissionGit::from_journal(project, history) {
        return Ok(Prepared {
            git: Some(git),
            new: false,
            uncommitted: Vec::new(),
        });
    }
    if !mode.is_on() {
        return Ok(Prepared {
            git: None,
            new: false,
            uncommitted: Vec::new(),
        });
    }
    if has_plan {
        tracing::warn!("this mission started without git and continues without it");
        return Ok(Prepared {
            git: None,
            new: false,
            uncommitted: Vec::new(),
        });
    }
    let repo = Repo::discover(project)?;
    let (base_branch, base) = repo.current_branch()?;
    let prefix = prefix_of(&repo, project);
    let ours = |path: &str| {
        let rel = Path::new(path)
            .strip_prefix(&prefix)
            .unwrap_or(Path::new(path));
        rel.starts_with(".orchestrator") || CONFIG_ENTRIES.iter().any(|c| rel.starts_with(c))
    };
    let uncommitted: Vec<String> = repo
        .changed_paths()?
        .into_iter()
        .filter(|p| !ours(p))
        .collect();
    if !uncommitted.is_empty() {
        tracing::warn!(
            paths = ?uncommitted,
            "uncommitted changes in the checkout stay there and are not part of the mission, \
             which starts from HEAD"
        );
    }
    let worktrees = project.join(".orchestrator").join(WORKTREES_DIR);
    let mut branch = repo.unique_branch(&format!("orch/{}", slug(request)))?;
    let mut n = 1;
    while worktrees.join(dir_name(&branch)).exists() {
        n += 1;
        branch = repo.unique_branch(&format!("orch/{}-{n}", slug(request)))?;
    }
    repo.exclude(".orchestrator/")?;
    Ok(Prepared {
        git: Some(MissionGit {
            project: project.to_owned(),
            mode,
            worktree: worktrees.join(dir_name(&branch)),
            branch,
            base,
            base_branch,
            lanes: Vec::new(),
        }),
        new: true,
        uncommitted,
    })
}

/// The worktree directory name of a branch (`orch/add-auth` → `add-auth`).
fn dir_name(branch: &str) -> String {
    branch.trim_start_matches("orch/").replace('/', "-")
}

/// `project` relative to the repository's root (empty at the root).
fn prefix_of(repo: &Repo, project: &Path) -> PathBuf {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    canon(project)
        .strip_prefix(canon(repo.root()))
        .map(Path::to_owned)
        .unwrap_or_default()
}

/// A lane's branch and worktree.
#[derive(Debug)]
struct LaneTree {
    branch: String,
    repo: Repo,
}

/// A git mission's workspace during a run.
#[derive(Debug)]
struct GitRun {
    record: MissionGit,
    user: Repo,
    mission: Repo,
    prefix: PathBuf,
    /// Commits and merges on the mission's worktree, one at a time (its index).
    lock: Mutex<()>,
    lanes: Mutex<BTreeMap<usize, LaneTree>>,
}

/// Where the mission's agents work, and its git workspace if it has one.
#[derive(Debug)]
pub(crate) struct Workspace {
    project: PathBuf,
    git: Option<GitRun>,
    /// What [`Prepared::uncommitted`] listed (a new git mission).
    uncommitted: Vec<String>,
}

/// What committing a passed item did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Committed {
    /// The item's commit is on the mission's branch (`merge`: the merge commit that brought
    /// it there, if not a fast-forward).
    Done { sha: String, merge: Option<String> },
    /// The lane's commit conflicts with the mission's branch in these project paths; the
    /// merge was aborted.
    Conflict { paths: Vec<String> },
}

/// A passed item to commit.
pub(crate) struct ItemCommit<'a> {
    pub(crate) item: &'a Item,
    pub(crate) attempt: u32,
    pub(crate) plan_version: u64,
    pub(crate) verdict: &'a str,
}

impl Workspace {
    /// The project directory itself (no git).
    pub(crate) fn plain(project: &Path) -> Self {
        Workspace {
            project: project.to_owned(),
            git: None,
            uncommitted: Vec::new(),
        }
    }

    /// The workspace of `prepared` (recorded in the journal already): the mission's branch
    /// and worktree created when missing (the branch only before any item was committed, from
    /// the recorded base), a merge a killed process left in progress aborted, the OpenCode
    /// configuration linked in.
    ///
    /// # Errors
    /// [`GitError::BranchMissing`] when the branch is gone after commits were made; any
    /// git failure.
    pub(crate) fn open(
        project: &Path,
        prepared: Prepared,
        history: &JournalContents,
    ) -> Result<Self, GitError> {
        let uncommitted = prepared.uncommitted;
        let Some(record) = prepared.git else {
            return Ok(Self::plain(project));
        };
        let user = Repo::discover(project)?;
        user.exclude(".orchestrator/")?;
        if !user.branch_exists(&record.branch)? {
            if !history.commits().is_empty() {
                return Err(GitError::BranchMissing {
                    branch: record.branch.clone(),
                });
            }
            user.create_branch(&record.branch, &record.base)?;
        }
        let prefix = prefix_of(&user, project);
        let mission = ensure_worktree(&user, &record.worktree, &record.branch)?;
        mission.abort_merge()?;
        link_config(project, &record.worktree.join(&prefix))?;
        let lanes = record
            .lanes
            .iter()
            .map(|l| {
                (
                    l.lane,
                    LaneTree {
                        branch: l.branch.clone(),
                        repo: Repo::at(&l.worktree),
                    },
                )
            })
            .collect();
        Ok(Workspace {
            project: project.to_owned(),
            git: Some(GitRun {
                record,
                user,
                mission,
                prefix,
                lock: Mutex::new(()),
                lanes: Mutex::new(lanes),
            }),
            uncommitted,
        })
    }

    /// Tracked paths of the user's checkout whose uncommitted changes the new mission left
    /// out (it starts from `HEAD`).
    pub(crate) fn uncommitted(&self) -> &[String] {
        &self.uncommitted
    }

    /// The git mode of the run.
    pub(crate) fn mode(&self) -> GitMode {
        self.git.as_ref().map_or(GitMode::Off, |g| g.record.mode)
    }

    /// The recorded workspace, if git is on.
    pub(crate) fn record(&self) -> Option<&MissionGit> {
        self.git.as_ref().map(|g| &g.record)
    }

    /// Where the mission-wide sessions work and files are read: the mission's worktree (at
    /// the project's place in it), or the project.
    pub(crate) fn main_dir(&self) -> PathBuf {
        match &self.git {
            Some(g) => g.record.worktree.join(&g.prefix),
            None => self.project.clone(),
        }
    }

    /// Where lane `lane`'s Worker works now (its worktree with a worktree per lane).
    pub(crate) fn lane_dir(&self, lane: usize) -> PathBuf {
        match &self.git {
            Some(g) if g.record.mode == GitMode::WorktreePerLane => g
                .lanes
                .lock()
                .get(&lane)
                .map(|l| l.repo.root().join(&g.prefix))
                .filter(|d| d.exists())
                .unwrap_or_else(|| self.main_dir()),
            _ => self.main_dir(),
        }
    }

    /// Whether lane `lane` has a worktree on disk (with a worktree per lane).
    pub(crate) fn lane_exists(&self, lane: usize) -> bool {
        self.git.as_ref().is_some_and(|g| {
            g.lanes
                .lock()
                .get(&lane)
                .is_some_and(|l| l.repo.root().exists())
        })
    }

    /// Whether lanes work in worktrees of their own.
    pub(crate) fn per_lane(&self) -> bool {
        self.mode() == GitMode::WorktreePerLane
    }

    /// The journal record of lane `lane`'s branch and worktree, the first time the lane needs
    /// them (a branch name not taken yet); `None` when recorded already or not per lane.
    ///
    /// # Errors
    /// A git failure.
    pub(crate) fn lane_intent(&self, lane: usize) -> Result<Option<JournalEntry>, GitError> {
        let Some(g) = self
            .git
            .as_ref()
            .filter(|g| g.record.mode == GitMode::WorktreePerLane)
        else {
            return Ok(None);
        };
        let mut lanes = g.lanes.lock();
        if lanes.contains_key(&lane) {
            return Ok(None);
        }
        let branch = g
            .user
            .unique_branch(&format!("{}-lane-{lane}", g.record.branch))?;
        let worktree = self
            .project
            .join(".orchestrator")
            .join(WORKTREES_DIR)
            .join(dir_name(&branch));
        lanes.insert(
            lane,
            LaneTree {
                branch: branch.clone(),
                repo: Repo::at(&worktree),
            },
        );
        Ok(Some(JournalEntry::GitLane {
            lane,
            branch,
            worktree,
        }))
    }

    /// Readies lane `lane`'s worktree for its next item: created if missing, its branch reset
    /// to the mission's branch (a failed attempt's changes, and untracked files, are gone).
    /// Returns where its Worker works.
    ///
    /// # Errors
    /// A git failure.
    pub(crate) fn prepare_lane(&self, lane: usize) -> Result<PathBuf, GitError> {
        let Some(g) = self
            .git
            .as_ref()
            .filter(|g| g.record.mode == GitMode::WorktreePerLane)
        else {
            return Ok(self.main_dir());
        };
        let (branch, root) = {
            let lanes = g.lanes.lock();
            let tree = lanes.get(&lane).ok_or_else(|| GitError::Unexpected {
                command: format!("lane {lane}"),
                output: "the lane's worktree was not recorded".into(),
            })?;
            (tree.branch.clone(), tree.repo.root().to_owned())
        };
        if !g.user.branch_exists(&branch)? {
            g.user.create_branch(&branch, &g.record.branch)?;
        }
        let repo = ensure_worktree(&g.user, &root, &branch)?;
        repo.reset_to(&g.record.branch)?;
        let dir = root.join(&g.prefix);
        link_config(&self.project, &dir)?;
        Ok(dir)
    }

    /// Commits a passed item on the mission's branch: in the mission's worktree (its files
    /// only), or on lane `lane`'s branch then merged into the mission's branch. An item
    /// already committed (a review redone after a crash) is not committed again.
    ///
    /// # Errors
    /// A git failure; nothing is committed on the mission's branch then.
    pub(crate) fn commit_item(
        &self,
        lane: Option<usize>,
        commit: &ItemCommit<'_>,
    ) -> Result<Option<Committed>, GitError> {
        let Some(g) = &self.git else {
            return Ok(None);
        };
        let item = commit.item;
        let id = item.id.as_str();
        let message = CommitMessage {
            subject: format!("{id}: {}", item.summary),
            body: format!(
                "Reviewer's verdict:\n\n{}",
                clip(commit.verdict.trim(), 4_000)
            ),
            trailers: vec![
                (ITEM_TRAILER.into(), id.to_owned()),
                (PLAN_VERSION_TRAILER.into(), commit.plan_version.to_string()),
                (ATTEMPTS_TRAILER.into(), commit.attempt.to_string()),
            ],
        };
        let files: Vec<String> = item
            .files
            .iter()
            .map(|f| {
                g.prefix
                    .join(f.trim_start_matches("./"))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let _guard = g.lock.lock();
        if let Some(sha) = g.committed()?.remove(id) {
            return Ok(Some(Committed::Done { sha, merge: None }));
        }
        let lane_repo = lane
            .filter(|_| g.record.mode == GitMode::WorktreePerLane)
            .and_then(|l| g.lanes.lock().get(&l).map(|t| t.repo.clone()));
        let Some(lane_repo) = lane_repo else {
            let sha = g.mission.commit(Some(&files), &message)?;
            return Ok(Some(Committed::Done { sha, merge: None }));
        };
        // The lane's commit of this item, made before a crash, is reused.
        let head = lane_repo.commits("HEAD^!")?;
        let sha = match head.first().filter(|c| c.item() == Some(id)) {
            Some(c) => c.sha.clone(),
            None => lane_repo.commit(Some(&files), &message)?,
        };
        let title = format!("Merge {id}: {}", item.summary);
        Ok(Some(match g.mission.merge(&sha, &title)? {
            MergeOutcome::Merged { sha: tip } => Committed::Done {
                merge: (tip != sha).then_some(tip),
                sha,
            },
            MergeOutcome::Conflict { paths } => Committed::Conflict {
                paths: paths
                    .into_iter()
                    .map(|p| {
                        Path::new(&p)
                            .strip_prefix(&g.prefix)
                            .map_or(p.clone(), |r| r.to_string_lossy().into_owned())
                    })
                    .collect(),
            },
        }))
    }

    /// The items with a commit on the mission's branch, and the commit.
    ///
    /// # Errors
    /// A git failure.
    pub(crate) fn committed(&self) -> Result<BTreeMap<String, String>, GitError> {
        match &self.git {
            Some(g) => g.committed(),
            None => Ok(BTreeMap::new()),
        }
    }

    /// The end of a run: a completed mission's worktrees are removed and its lane branches
    /// deleted (the mission's branch stays, for the user to merge); any other end keeps them
    /// for the run that continues it. Returns the journal record of what was removed.
    ///
    /// # Errors
    /// A git failure.
    pub(crate) fn finish(&self, completed: bool) -> Result<Option<JournalEntry>, GitError> {
        let Some(g) = self.git.as_ref().filter(|_| completed) else {
            return Ok(None);
        };
        let lanes: Vec<(String, PathBuf)> = g
            .lanes
            .lock()
            .values()
            .map(|l| (l.branch.clone(), l.repo.root().to_owned()))
            .collect();
        let (mut worktrees, mut branches) = (Vec::new(), Vec::new());
        for (branch, root) in lanes {
            if g.user.remove_worktree(&root)? {
                worktrees.push(root);
            }
            if g.user.branch_exists(&branch)? {
                g.user.delete_branch(&branch)?;
                branches.push(branch);
            }
        }
        if g.user.remove_worktree(g.mission.root())? {
            worktrees.push(g.mission.root().to_owned());
        }
        Ok(Some(JournalEntry::GitRemoved {
            worktrees,
            branches,
        }))
    }

    /// The git part of the report.
    ///
    /// # Errors
    /// A git failure.
    pub(crate) fn report(&self) -> Result<Option<GitReport>, GitError> {
        self.record().map(git_report).transpose()
    }
}

/// The report of a recorded git workspace: the branch and its commits, oldest first.
pub(crate) fn git_report(record: &MissionGit) -> Result<GitReport, GitError> {
    let mut commits: Vec<CommitReport> = record
        .commits()?
        .into_iter()
        .map(|c| CommitReport {
            item: c.item().map(ToOwned::to_owned),
            sha: c.sha,
            subject: c.subject,
        })
        .collect();
    commits.reverse();
    Ok(GitReport {
        branch: record.branch.clone(),
        base_branch: record.base_branch.clone(),
        base: record.base.clone(),
        worktree: Some(record.worktree.clone()).filter(|w| w.exists()),
        commits,
        merge_command: record.merge_command(),
    })
}

impl GitRun {
    fn committed(&self) -> Result<BTreeMap<String, String>, GitError> {
        let commits = self
            .mission
            .commits(&format!("{}..HEAD", self.record.base))?;
        // Oldest first, so the first commit of an item wins.
        let mut out = BTreeMap::new();
        for c in commits.into_iter().rev() {
            if let Some(item) = c.item() {
                out.entry(item.to_owned()).or_insert(c.sha.clone());
            }
        }
        Ok(out)
    }
}

/// `text` cut to `max` characters.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    text.chars().take(max).collect::<String>() + "\n[…]"
}

/// The worktree at `path` with `branch` checked out: as it is when git has it there, added
/// otherwise (after pruning what git recorded of a removed directory).
fn ensure_worktree(user: &Repo, path: &Path, branch: &str) -> Result<Repo, GitError> {
    let _admin = crate::git::admin_lock();
    let known = user
        .worktrees()?
        .into_iter()
        .any(|w| crate::git::repo_same_path(&w.path, path));
    if known && path.exists() {
        return Ok(Repo::at(path));
    }
    user.ok_prune()?;
    if path.exists() {
        return Err(GitError::Unexpected {
            command: format!("git worktree add {}", path.display()),
            output: "the directory exists and is not a worktree of the repository".into(),
        });
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| GitError::Io {
            context: format!("creating {}", parent.display()),
            source: e,
        })?;
    }
    user.add_worktree(path, branch)
}

/// Links the project's OpenCode configuration into `work` where the worktree's differs (see
/// [`CONFIG_ENTRIES`]); committed, unchanged configuration is left as checked out.
fn link_config(project: &Path, work: &Path) -> Result<(), GitError> {
    for name in CONFIG_ENTRIES {
        let source = project.join(name);
        let target = work.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&source) else {
            continue;
        };
        let io = |e| GitError::Io {
            context: format!("linking {} into {}", source.display(), work.display()),
            source: e,
        };
        match std::fs::symlink_metadata(&target) {
            Err(_) => {}
            Ok(t) if t.file_type().is_symlink() => continue,
            Ok(t) if t.is_dir() || meta.is_dir() => continue,
            Ok(_) => {
                let same = std::fs::read(&source).ok() == std::fs::read(&target).ok();
                if same {
                    continue;
                }
                std::fs::remove_file(&target).map_err(io)?;
            }
        }
        symlink(&source, &target).map_err(io)?;
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(source: &Path, target: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(source, target)
}

#[cfg(not(unix))]
fn symlink(source: &Path, target: &Path) -> std::io::Result<()> {
    if source.is_dir() {
        return Ok(());
    }
    std::fs::copy(source, target).map(drop)
}
