//! Git-native missions from the command line: which mode a run uses, what `status` shows,
//! `merge` and `clean`, and what happens to a finished mission's git workspace when a new
//! mission takes the directory.

use std::path::Path;

use orch_agents::git::{
    BranchCleanup, GitError, GitStatus, MergeCheck, MergeOutcome, MissionGit, Repo,
};
use orch_agents::{GitMode, RunLock};
use serde_json::{Value, json};

use crate::config::GitChoice;
use crate::failure::{Failure, code};
use crate::lifecycle;
use crate::output::{Mode, Ui};
use crate::state::shell_quote;

/// The git mode of a new run in `dir`: the one asked for (`--git`, `--no-git`,
/// `--worktree-per-lane`, `git` in task.toml), else a branch when `dir` is inside a git
/// repository with a commit on a branch, else none. An explicit mode that cannot work is an
/// error that names the cause; the default falls back to editing in place, and says why.
pub(crate) fn resolve(ui: &Ui, dir: &Path, choice: Option<GitChoice>) -> anyhow::Result<GitMode> {
    let wanted = match choice {
        Some(GitChoice::Off) => return Ok(GitMode::Off),
        Some(choice) => choice.mode(),
        None => GitMode::Branch,
    };
    let ready = Repo::discover(dir).and_then(|repo| repo.current_branch().map(drop));
    match (ready, choice) {
        (Ok(()), _) => Ok(wanted),
        (Err(GitError::NotARepository { .. }), None) => Ok(GitMode::Off),
        (Err(e), None) => {
            ui.notice(format!(
                "not using git: {e}; the mission edits {} in place (pass --no-git to say so, or fix the repository to get a branch with a commit per item)",
                dir.display()
            ));
            Ok(GitMode::Off)
        }
        (Err(e), Some(_)) => Err(Failure::env(
            format!("cannot run the mission on a git branch: {e}"),
            "fix the repository as said, or pass --no-git to edit the directory in place",
        )),
    }
}

/// The git workspace recorded by the mission of `dir`, if any.
fn recorded(dir: &Path) -> anyhow::Result<Option<MissionGit>> {
    MissionGit::read(dir).map_err(|e| {
        Failure::env(
            format!("cannot read the mission's git record: {e}"),
            "`task_cli status` shows the journal's state",
        )
    })
}

/// `status`'s git section (text), or `None` without a git mission.
pub(crate) fn status_text(dir: &Path) -> Option<String> {
    let git = recorded(dir).ok()??;
    let mut out = String::new();
    match git.status() {
        Ok(status) => {
            out.push_str(&format!(
                "\nGit:     branch {} from {}{} — {} commit(s){}\n",
                status.branch,
                status.base_branch,
                if status.branch_exists {
                    ""
                } else {
                    " (deleted)"
                },
                status.commits.len(),
                if status.merged { ", merged" } else { "" }
            ));
            for commit in &status.commits {
                out.push_str(&format!(
                    "         {} {}\n",
                    commit.sha.get(..10).unwrap_or(&commit.sha),
                    commit.subject
                ));
            }
            for tree in &status.worktrees {
                out.push_str(&format!("         worktree {}\n", tree.display()));
            }
            for branch in &status.lane_branches {
                out.push_str(&format!("         lane branch {branch}\n"));
            }
            if status.branch_exists && !status.merged && !status.commits.is_empty() {
                out.push_str(&format!(
                    "         merge it with `task_cli merge --dir {}`\n",
                    shell_quote(&dir.display().to_string())
                ));
            }
        }
        Err(e) => out.push_str(&format!("\nGit:     branch {} ({e})\n", git.branch)),
    }
    Some(out)
}

/// `status`'s git object (JSON), `null` without a git mission.
pub(crate) fn status_json(dir: &Path) -> Value {
    let Ok(Some(git)) = recorded(dir) else {
        return Value::Null;
    };
    match git.status() {
        Ok(s) => status_value(&s),
        Err(e) => json!({"branch": git.branch, "error": e.to_string()}),
    }
}

fn status_value(s: &GitStatus) -> Value {
    json!({
        "mode": s.mode,
        "branch": s.branch,
        "branch_exists": s.branch_exists,
        "base_branch": s.base_branch,
        "current_branch": s.current_branch,
        "merged": s.merged,
        "commits": s.commits.iter().map(|c| json!({"sha": c.sha, "subject": c.subject, "item": c.item()})).collect::<Vec<_>>(),
        "worktrees": s.worktrees,
        "lane_branches": s.lane_branches,
    })
}

/// The mission of `dir` and its git record, for `merge` and `clean`, read before they take
/// the run lock (a refused command writes nothing, not even the state folder).
fn mission_git(dir: &Path) -> anyhow::Result<MissionGit> {
    if !dir.join(".orchestrator").join("journal.jsonl").is_file() {
        return Err(Failure::env(
            format!("no mission in {}", dir.display()),
            "pass the mission's directory with --dir (`task_cli status --dir DIR` shows what it holds)",
        ));
    }
    recorded(dir)?.ok_or_else(|| {
        Failure::env(
            format!("the mission in {} has no git branch", dir.display()),
            "only missions run in a git repository (without --no-git) have one; `task_cli status` shows the mission",
        )
    })
}

fn git_failure(e: GitError, dir: &Path) -> anyhow::Error {
    let fix = match &e {
        GitError::DirtyTree { .. } => "commit or stash those changes, then merge again".to_owned(),
        GitError::MergeInProgress { .. } => {
            "finish or abort your merge (`git merge --abort`), then merge again".to_owned()
        }
        GitError::OnMissionBranch { .. } | GitError::DetachedHead { .. } => {
            "check out the branch to merge into (e.g. `git checkout main`), then merge again"
                .to_owned()
        }
        GitError::BranchMissing { .. } => format!(
            "the branch was deleted; `task_cli status --dir {}` shows what is left",
            shell_quote(&dir.display().to_string())
        ),
        _ => "fix the cause named above and try again".to_owned(),
    };
    Failure::env(e.to_string(), fix)
}

/// `task_cli merge`: the mission's branch into the branch the user's checkout is on, when
/// it merges cleanly; otherwise the conflicting paths, and nothing touched.
pub(crate) fn merge(ui: &Ui, dir: &Path, check: bool) -> anyhow::Result<u8> {
    let git = mission_git(dir)?;
    let _lock = lifecycle::lock(dir)?;
    let status = git.status().map_err(|e| git_failure(e, dir))?;
    if status.branch_exists && status.merged {
        ui.json(&json!({"event": "merged", "branch": git.branch, "into": status.current_branch, "already": true}));
        if ui.mode() != Mode::Json {
            println!(
                "{} is already merged into {}: nothing to do",
                git.branch,
                status.current_branch.as_deref().unwrap_or("your checkout")
            );
        }
        return Ok(code::SUCCESS);
    }
    let outcome = if check {
        match git.merge_check().map_err(|e| git_failure(e, dir))? {
            MergeCheck::Clean => None,
            MergeCheck::Conflicts { paths } => Some(paths),
        }
    } else {
        match git.merge().map_err(|e| git_failure(e, dir))? {
            MergeOutcome::Merged { sha } => {
                let into = Repo::discover(dir)
                    .and_then(|r| r.current_branch())
                    .map(|(b, _)| b)
                    .unwrap_or_default();
                ui.json(
                    &json!({"event": "merged", "branch": git.branch, "into": into, "sha": sha}),
                );
                if ui.mode() != Mode::Json {
                    println!(
                        "merged {} into {into} ({})",
                        git.branch,
                        sha.get(..10).unwrap_or(&sha)
                    );
                }
                return Ok(code::SUCCESS);
            }
            MergeOutcome::Conflict { paths } => Some(paths),
        }
    };
    match outcome {
        None => {
            ui.json(&json!({"event": "merge_check", "branch": git.branch, "clean": true}));
            if ui.mode() != Mode::Json {
                println!("{} merges cleanly into your branch", git.branch);
            }
            Ok(code::SUCCESS)
        }
        Some(paths) => {
            ui.json(&json!({"event": "merge_conflict", "branch": git.branch, "paths": paths}));
            Err(Failure {
                code: code::MISSION_FAILED,
                what: format!(
                    "{} conflicts with your branch in {}; nothing was changed",
                    git.branch,
                    paths.join(", ")
                ),
                fix: Some(format!(
                    "merge it by hand and resolve the conflicts: git merge {}",
                    git.branch
                )),
            }
            .into())
        }
    }
}

/// `task_cli clean`: removes the worktrees and lane branches the mission of `dir` left, and
/// its branch when `delete_branch` (merged or not) or when it is merged.
pub(crate) fn clean(ui: &Ui, dir: &Path, delete_branch: bool) -> anyhow::Result<u8> {
    let git = mission_git(dir)?;
    let lock = lifecycle::lock(dir)?;
    let how = if delete_branch {
        BranchCleanup::Always
    } else {
        BranchCleanup::IfMerged
    };
    let cleaned = git
        .clean_holding(how, &lock)
        .map_err(|e| git_failure(e, dir))?;
    ui.json(&json!({
        "event": "cleaned",
        "worktrees": cleaned.worktrees,
        "branches": cleaned.branches,
        "unmerged": cleaned.unmerged,
    }));
    if ui.mode() != Mode::Json {
        if cleaned.worktrees.is_empty() && cleaned.branches.is_empty() {
            println!("nothing to remove");
        }
        for tree in &cleaned.worktrees {
            println!("removed worktree {}", tree.display());
        }
        for branch in &cleaned.branches {
            println!("deleted branch {branch}");
        }
        if let Some(branch) = &cleaned.unmerged {
            println!(
                "kept {branch}: it is not merged (merge it with `task_cli merge`, or delete it with `task_cli clean --delete-branch`)"
            );
        }
    }
    Ok(code::SUCCESS)
}

/// Before a new mission takes `dir`: removes the worktrees of the mission being archived
/// (its branch stays, with its commits). Returns a sentence for the notice.
pub(crate) fn set_aside(dir: &Path, lock: &RunLock) -> anyhow::Result<Option<String>> {
    let Some(git) = recorded(dir)? else {
        return Ok(None);
    };
    let cleaned = git
        .clean_holding(BranchCleanup::Keep, lock)
        .map_err(|e| git_failure(e, dir))?;
    let removed = if cleaned.worktrees.is_empty() {
        String::new()
    } else {
        format!(", {} worktree(s) removed", cleaned.worktrees.len())
    };
    Ok(Some(format!(
        "its branch {} stays ({}){removed}",
        git.branch,
        git.merge_command()
    )))
}
