//! [`Repo`]: one checkout of a repository (the user's, or a worktree of it) and the git
//! operations a mission does on it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::message::{CommitInfo, CommitMessage, LOG_FORMAT, parse_log};
use super::{Git, GitError};

/// A git version (`2.47.3` → `2.47.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GitVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl fmt::Display for GitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl GitVersion {
    /// The version `git merge-tree --write-tree` appeared in.
    pub const MERGE_TREE: GitVersion = GitVersion {
        major: 2,
        minor: 38,
        patch: 0,
    };

    /// The installed git's version.
    ///
    /// # Errors
    /// [`GitError::Missing`] without git; [`GitError::Unexpected`] for an unreadable answer.
    pub fn installed() -> Result<GitVersion, GitError> {
        let git = Git::new(&["--version"]);
        let text = git.ok(&std::env::temp_dir())?;
        Self::parse(&text).ok_or_else(|| GitError::Unexpected {
            command: git.describe(),
            output: text.trim().to_owned(),
        })
    }

    /// Reads `git version 2.47.3` (vendor suffixes such as `.windows.1` are ignored).
    pub fn parse(text: &str) -> Option<GitVersion> {
        let version = text.trim().strip_prefix("git version ")?;
        let mut parts = version
            .split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u32>().ok());
        Some(GitVersion {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next().flatten().unwrap_or(0),
        })
    }
}

/// Where `HEAD` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The commit.
    pub commit: String,
    /// The branch (`None`: detached).
    pub branch: Option<String>,
}

/// A worktree of a repository, as `git worktree list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    /// Its directory.
    pub path: PathBuf,
    /// The commit checked out.
    pub head: Option<String>,
    /// The branch checked out (`None`: detached or bare).
    pub branch: Option<String>,
}

/// What merging a branch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged; the branch's tip is now `sha` (a merge commit, or the other side when it
    /// fast-forwarded).
    Merged {
        /// The new tip.
        sha: String,
    },
    /// The branches conflict in these paths; the merge was aborted and nothing changed.
    Conflict {
        /// The conflicting paths (relative to the repository root).
        paths: Vec<String>,
    },
}

/// Whether one branch merges cleanly into another (predicted without touching a checkout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeCheck {
    /// It merges without conflict.
    Clean,
    /// It conflicts in these paths.
    Conflicts {
        /// The paths.
        paths: Vec<String>,
    },
}

/// Serialises the git commands that add, remove, prune or list worktrees, and create or
/// delete branches, within the process: git keeps no lock over `.git/worktrees/`, and two
/// lanes adding their worktrees at once make one of them read the other's half-written entry
/// (`failed to read .git/worktrees/<x>/commondir`). Re-entrant: an operation made of several
/// (ensuring a worktree) holds it throughout.
static ADMIN: parking_lot::ReentrantMutex<()> = parking_lot::ReentrantMutex::new(());

/// Holds [`ADMIN`] while the returned guard lives.
pub(crate) fn admin_lock() -> parking_lot::ReentrantMutexGuard<'static, ()> {
    ADMIN.lock()
}

/// One checkout of a git repository: the user's working tree, or a worktree of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    root: PathBuf,
}

/// Paths from `-z` output (NUL-separated).
fn nul_paths(text: &str) -> Vec<String> {
    text.split('\0')
        .filter(|p| !p.is_empty())
        .map(ToOwned::to_owned)
        .collect()
}

impl Repo {
    /// The checkout `dir` is in (its top-level directory, from `git rev-parse
    /// --show-toplevel`).
    ///
    /// # Errors
    /// [`GitError::NotARepository`] outside a working tree; [`GitError::Missing`] without git.
    pub fn discover(dir: &Path) -> Result<Repo, GitError> {
        let git = Git::new(&["rev-parse", "--show-toplevel"]);
        let output = git.run(dir)?;
        if !output.ok() {
            return Err(GitError::NotARepository {
                dir: dir.to_owned(),
            });
        }
        let root = output.stdout.trim_end_matches('\n');
        if root.is_empty() {
            return Err(GitError::NotARepository {
                dir: dir.to_owned(),
            });
        }
        Ok(Repo { root: root.into() })
    }

    /// The checkout whose top-level directory is `root` (not checked).
    pub fn at(root: impl Into<PathBuf>) -> Repo {
        Repo { root: root.into() }
    }

    /// Its top-level directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ok(&self, args: &[&str]) -> Result<String, GitError> {
        Git::new(args).ok(&self.root)
    }

    /// Where `HEAD` points.
    ///
    /// # Errors
    /// [`GitError::NoCommits`] in a repository without a commit.
    pub fn head(&self) -> Result<Head, GitError> {
        let commit = Git::new(&["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
        let output = commit.run(&self.root)?;
        if !output.ok() {
            return Err(GitError::NoCommits {
                dir: self.root.clone(),
            });
        }
        let branch = Git::new(&["symbolic-ref", "--quiet", "--short", "HEAD"]).run(&self.root)?;
        Ok(Head {
            commit: output.stdout.trim().to_owned(),
            branch: branch.ok().then(|| branch.stdout.trim().to_owned()),
        })
    }

    /// The branch `HEAD` is on.
    ///
    /// # Errors
    /// [`GitError::DetachedHead`], [`GitError::NoCommits`].
    pub fn current_branch(&self) -> Result<(String, String), GitError> {
        let head = self.head()?;
        match head.branch {
            Some(branch) => Ok((branch, head.commit)),
            None => Err(GitError::DetachedHead {
                dir: self.root.clone(),
            }),
        }
    }

    /// Tracked paths with changes not committed (staged or not), relative to the root.
    /// Untracked files are not changes.
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn changed_paths(&self) -> Result<Vec<String>, GitError> {
        let text = self.ok(&["status", "--porcelain=v1", "-z", "--untracked-files=no"])?;
        let mut paths = Vec::new();
        let mut entries = text.split('\0').filter(|e| !e.is_empty());
        while let Some(entry) = entries.next() {
            if entry.len() < 4 {
                continue;
            }
            let (status, path) = entry.split_at(3);
            paths.push(path.to_owned());
            // A rename or copy is followed by its source.
            if status.starts_with('R') || status.starts_with('C') {
                entries.next();
            }
        }
        Ok(paths)
    }

    /// Whether the local branch `name` exists.
    ///
    /// # Errors
    /// [`GitError::Command`] when git cannot tell.
    pub fn branch_exists(&self, name: &str) -> Result<bool, GitError> {
        let reference = format!("refs/heads/{name}");
        let git = Git::new(&["show-ref", "--verify", "--quiet", &reference]);
        let output = git.run(&self.root)?;
        match output.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(git.failed(&self.root, &output)),
        }
    }

    /// `base`, or `base-2`, `base-3`… : the first local branch name not taken.
    ///
    /// # Errors
    /// As [`Repo::branch_exists`]; [`GitError::Unexpected`] when 1,000 are taken.
    pub fn unique_branch(&self, base: &str) -> Result<String, GitError> {
        for n in 1..=1_000 {
            let name = if n == 1 {
                base.to_owned()
            } else {
                format!("{base}-{n}")
            };
            if !self.branch_exists(&name)? {
                return Ok(name);
            }
        }
        Err(GitError::Unexpected {
            command: format!("git show-ref {base}*"),
            output: "1,000 branches of that name exist".into(),
        })
    }

    /// Creates the branch `name` at `start` (a commit or a branch), checking nothing out. An
    /// existing branch is never moved.
    ///
    /// # Errors
    /// [`GitError::BranchExists`]; [`GitError::Command`] (an invalid name, an unknown start).
    pub fn create_branch(&self, name: &str, start: &str) -> Result<(), GitError> {
        let _admin = admin_lock();
        if self.branch_exists(name)? {
            return Err(GitError::BranchExists {
                branch: name.to_owned(),
            });
        }
        // Without `--force`, git refuses a branch created in between too.
        self.ok(&["branch", "--no-track", name, start]).map(drop)
    }

    /// Paths with changes staged in the index (relative to the root).
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn staged_paths(&self) -> Result<Vec<String>, GitError> {
        Ok(nul_paths(&self.ok(&[
            "diff",
            "--cached",
            "--name-only",
            "-z",
            "--no-renames",
        ])?))
    }

    /// Untracked files that are not ignored (relative to the root).
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn untracked_paths(&self) -> Result<Vec<String>, GitError> {
        Ok(nul_paths(&self.ok(&[
            "ls-files",
            "--others",
            "--exclude-standard",
            "-z",
        ])?))
    }

    /// The paths `to` changed since its merge base with `from` (`git diff from...to`): what
    /// merging `to` into `from` writes.
    ///
    /// # Errors
    /// [`GitError::Command`] for an unknown revision.
    pub fn changed_since_fork(&self, from: &str, to: &str) -> Result<Vec<String>, GitError> {
        let range = format!("{from}...{to}");
        Ok(nul_paths(&self.ok(&[
            "diff",
            "--name-only",
            "-z",
            "--no-renames",
            &range,
            "--",
        ])?))
    }

    /// Whether `ancestor` is an ancestor of (or the same commit as) `of`.
    ///
    /// # Errors
    /// [`GitError::Command`] for an unknown revision.
    pub fn is_ancestor(&self, ancestor: &str, of: &str) -> Result<bool, GitError> {
        let git = Git::new(&["merge-base", "--is-ancestor", ancestor, of]);
        let output = git.run(&self.root)?;
        match output.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(git.failed(&self.root, &output)),
        }
    }

    /// Deletes the branch `name`, merged or not. Git refuses a branch checked out in a
    /// worktree.
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn delete_branch(&self, name: &str) -> Result<(), GitError> {
        let _admin = admin_lock();
        self.ok(&["branch", "-D", name]).map(drop)
    }

    /// The commit `rev` names.
    ///
    /// # Errors
    /// [`GitError::Command`] for an unknown revision.
    pub fn resolve(&self, rev: &str) -> Result<String, GitError> {
        let spec = format!("{rev}^{{commit}}");
        Ok(self
            .ok(&["rev-parse", "--verify", &spec])?
            .trim()
            .to_owned())
    }

    /// Adds a worktree at `path` with `branch` checked out.
    ///
    /// # Errors
    /// [`GitError::Command`] (the path exists, the branch is checked out elsewhere).
    pub fn add_worktree(&self, path: &Path, branch: &str) -> Result<Repo, GitError> {
        let _admin = admin_lock();
        let path_text = path.to_string_lossy();
        self.ok(&["worktree", "add", "--quiet", &path_text, branch])?;
        Ok(Repo::at(path))
    }

    /// Removes the worktree at `path` (with any changes in it) and prunes what git still
    /// records of worktrees whose directory is gone. `false` when git had no worktree there.
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn remove_worktree(&self, path: &Path) -> Result<bool, GitError> {
        let _admin = admin_lock();
        let known = self.worktrees()?.iter().any(|w| same_path(&w.path, path));
        if known && path.exists() {
            let path_text = path.to_string_lossy();
            self.ok(&["worktree", "remove", "--force", "--force", &path_text])?;
        }
        self.ok(&["worktree", "prune"])?;
        Ok(known)
    }

    /// The repository's worktrees (the main one first).
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn worktrees(&self) -> Result<Vec<Worktree>, GitError> {
        let _admin = admin_lock();
        let text = self.ok(&["worktree", "list", "--porcelain"])?;
        let mut out = Vec::new();
        for block in text.split("\n\n") {
            let mut tree: Option<Worktree> = None;
            for line in block.lines() {
                if let Some(path) = line.strip_prefix("worktree ") {
                    tree = Some(Worktree {
                        path: path.into(),
                        head: None,
                        branch: None,
                    });
                } else if let Some(t) = tree.as_mut() {
                    if let Some(head) = line.strip_prefix("HEAD ") {
                        t.head = Some(head.to_owned());
                    } else if let Some(branch) = line.strip_prefix("branch ") {
                        t.branch = Some(branch.trim_start_matches("refs/heads/").to_owned());
                    }
                }
            }
            out.extend(tree);
        }
        Ok(out)
    }

    /// Adds `pattern` as a line of the repository's `info/exclude` (shared by its worktrees)
    /// unless it is there; `true` when it was added. `.gitignore` is never touched.
    ///
    /// # Errors
    /// [`GitError::Io`] when the file cannot be written.
    pub fn exclude(&self, pattern: &str) -> Result<bool, GitError> {
        let reported = self.ok(&["rev-parse", "--git-path", "info/exclude"])?;
        let path = self.root.join(reported.trim_end_matches('\n'));
        let io = |e| GitError::Io {
            context: format!("updating {}", path.display()),
            source: e,
        };
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let bare = pattern.trim_matches('/');
        if current
            .lines()
            .any(|l| l.trim() == pattern || l.trim().trim_matches('/') == bare)
        {
            return Ok(false);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut text = current;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(pattern);
        text.push('\n');
        std::fs::write(&path, text).map_err(io)?;
        Ok(true)
    }

    /// Commits in `range` (`base..branch`), newest first, with their trailers.
    ///
    /// # Errors
    /// [`GitError::Command`] for an unknown range; [`GitError::Unexpected`] for output that
    /// does not parse.
    pub fn commits(&self, range: &str) -> Result<Vec<CommitInfo>, GitError> {
        let git = Git::new(&["log", LOG_FORMAT, range, "--"]);
        let text = git.ok(&self.root)?;
        parse_log(&text).ok_or_else(|| GitError::Unexpected {
            command: git.describe(),
            output: text.chars().take(500).collect(),
        })
    }

    /// The `-c` settings that give git an identity when the user configured none (a commit
    /// would fail with `Please tell me who you are`).
    fn identity(&self) -> Result<Vec<(&'static str, &'static str)>, GitError> {
        let mut config = Vec::new();
        for (key, fallback) in [
            ("user.name", "Orchestrator"),
            ("user.email", "orchestrator@localhost"),
        ] {
            let output = Git::new(&["config", "--get", key]).run(&self.root)?;
            if !output.ok() || output.stdout.trim().is_empty() {
                config.push((key, fallback));
            }
        }
        Ok(config)
    }

    /// Commits `paths` (relative to the checkout's root; their changes, additions and
    /// deletions) with `message`, leaving whatever else is changed or staged alone; `None`
    /// commits the whole working tree. The commit is made even when nothing changed, so every
    /// call leaves exactly one commit. Returns its hash.
    ///
    /// # Errors
    /// [`GitError::Command`] (nothing is committed then).
    pub fn commit(
        &self,
        paths: Option<&[String]>,
        message: &CommitMessage,
    ) -> Result<String, GitError> {
        let present: Vec<String> = match paths {
            Some(paths) => {
                // Paths git can stage: on disk, or tracked (a deletion).
                let mut list = Git::new(&["ls-files", "-z", "--"]);
                list = list.args(paths.iter().map(String::as_str));
                let tracked = nul_paths(&list.ok(&self.root)?);
                paths
                    .iter()
                    .filter(|p| self.root.join(p).exists() || tracked.contains(p))
                    .cloned()
                    .collect()
            }
            None => Vec::new(),
        };
        match paths {
            Some(_) if !present.is_empty() => {
                Git::new(&["add", "-A", "--"])
                    .args(present.iter().map(String::as_str))
                    .ok(&self.root)?;
            }
            Some(_) => {}
            None => {
                self.ok(&["add", "-A"])?;
            }
        }
        let text = message.render();
        let mut commit = Git::new(&[
            "commit",
            "--quiet",
            "--allow-empty",
            "--no-verify",
            "--cleanup=whitespace",
            "-F",
            "-",
        ])
        .input(&text);
        if paths.is_some() {
            // Only these paths, whatever else is staged.
            commit = commit.args(["--only", "--"]);
            commit = commit.args(present.iter().map(String::as_str));
        }
        for (key, value) in self.identity()? {
            commit = commit.config(key, value);
        }
        commit.ok(&self.root)?;
        self.resolve("HEAD")
    }

    /// Merges `rev` into the branch checked out here (a fast-forward when possible, else a
    /// merge commit with `message`). A conflict aborts the merge: the checkout is as before
    /// and the conflicting paths are returned.
    ///
    /// # Errors
    /// [`GitError::Command`] when git refuses to start the merge (local changes in the way).
    pub fn merge(&self, rev: &str, message: &str) -> Result<MergeOutcome, GitError> {
        self.merge_with(rev, message, false)
    }

    /// [`Repo::merge`], always with a merge commit (`--no-ff`) when `no_ff`.
    ///
    /// # Errors
    /// As [`Repo::merge`].
    pub fn merge_with(
        &self,
        rev: &str,
        message: &str,
        no_ff: bool,
    ) -> Result<MergeOutcome, GitError> {
        let mut merge = Git::new(&["merge", "--no-edit", "--no-verify", "-m", message]);
        if no_ff {
            merge = merge.args(["--no-ff"]);
        }
        merge = merge.args([rev]);
        for (key, value) in self.identity()? {
            merge = merge.config(key, value);
        }
        let output = merge.run(&self.root)?;
        if output.ok() {
            return Ok(MergeOutcome::Merged {
                sha: self.resolve("HEAD")?,
            });
        }
        if !self.merging()? {
            return Err(merge.failed(&self.root, &output));
        }
        let paths = nul_paths(&self.ok(&["diff", "--name-only", "-z", "--diff-filter=U"])?);
        self.ok(&["merge", "--abort"])?;
        Ok(MergeOutcome::Conflict { paths })
    }

    /// Whether a merge is in progress here (`MERGE_HEAD` exists).
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn merging(&self) -> Result<bool, GitError> {
        let output =
            Git::new(&["rev-parse", "--quiet", "--verify", "MERGE_HEAD"]).run(&self.root)?;
        Ok(output.ok())
    }

    /// Aborts a merge left in progress (a process killed mid-merge); `true` if there was one.
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn abort_merge(&self) -> Result<bool, GitError> {
        if !self.merging()? {
            return Ok(false);
        }
        self.ok(&["merge", "--abort"])?;
        Ok(true)
    }

    /// Predicts merging `from` into `into` without touching any checkout (`git merge-tree
    /// --write-tree`, git ≥ 2.38).
    ///
    /// # Errors
    /// [`GitError::TooOld`], [`GitError::Command`].
    pub fn merge_check(&self, into: &str, from: &str) -> Result<MergeCheck, GitError> {
        let found = GitVersion::installed()?;
        if found < GitVersion::MERGE_TREE {
            return Err(GitError::TooOld {
                found,
                needed: GitVersion::MERGE_TREE,
                what: "checking a merge without a checkout",
            });
        }
        let git = Git::new(&[
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            into,
            from,
        ]);
        let output = git.run(&self.root)?;
        match output.code() {
            Some(0) => Ok(MergeCheck::Clean),
            Some(1) => {
                // The tree, then the conflicted paths, then (suppressed) messages.
                let paths = output
                    .stdout
                    .lines()
                    .skip(1)
                    .take_while(|l| !l.is_empty())
                    .map(ToOwned::to_owned)
                    .collect();
                Ok(MergeCheck::Conflicts { paths })
            }
            _ => Err(git.failed(&self.root, &output)),
        }
    }

    /// Resets the checked-out branch and the working tree to `rev` and removes untracked
    /// files (not ignored ones): a lane's worktree starting its next item.
    ///
    /// # Errors
    /// [`GitError::Command`].
    pub fn reset_to(&self, rev: &str) -> Result<(), GitError> {
        self.abort_merge()?;
        self.ok(&["reset", "--quiet", "--hard", rev])?;
        self.ok(&["clean", "--quiet", "-f", "-d"]).map(drop)
    }
}

/// Whether two paths name the same directory (resolving symbolic links when they exist).
pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    a == b || canon(a) == canon(b)
}
