//! The git layer on real repositories in temporary directories: branches, commits with
//! trailers, worktrees, merges and conflicts, merge prediction, `info/exclude`, the typed
//! refusals.

use std::path::Path;
use std::process::Command;

use orch_agents::git::{CommitMessage, GitError, GitVersion, MergeCheck, MergeOutcome, Repo, slug};

/// Runs git in `dir` (for setting up and checking; the code under test uses its own runner).
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository on `main` with one commit holding `a.txt`.
fn repo() -> (tempfile::TempDir, Repo) {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("a.txt"), "one\ntwo\nthree\n").unwrap();
    git(dir.path(), &["add", "a.txt"]);
    git(dir.path(), &["commit", "-q", "-m", "initial"]);
    let repo = Repo::discover(dir.path()).unwrap();
    (dir, repo)
}

fn message(item: &str) -> CommitMessage {
    CommitMessage {
        subject: format!("{item}: change"),
        body: "Reviewer's verdict:\n\nThe tests pass.\nVERDICT: PASS".into(),
        trailers: vec![
            ("Orch-Item".into(), item.into()),
            ("Orch-Plan-Version".into(), "4".into()),
            ("Orch-Attempts".into(), "2".into()),
        ],
    }
}

#[test]
fn the_installed_git_can_predict_merges() {
    let version = GitVersion::installed().unwrap();
    assert!(version >= GitVersion::MERGE_TREE, "git {version}");
    assert_eq!(
        GitVersion::parse("git version 2.39.5.windows.1"),
        Some(GitVersion {
            major: 2,
            minor: 39,
            patch: 5
        })
    );
    assert_eq!(GitVersion::parse("hg 6.1"), None);
}

#[test]
fn bad_checkouts_are_refused_with_typed_errors() {
    let plain = tempfile::tempdir().unwrap();
    assert!(matches!(
        Repo::discover(plain.path()),
        Err(GitError::NotARepository { .. })
    ));
    git(plain.path(), &["init", "-q", "-b", "main"]);
    let empty = Repo::discover(plain.path()).unwrap();
    assert!(matches!(empty.head(), Err(GitError::NoCommits { .. })));

    let (dir, repo) = repo();
    let head = repo.head().unwrap();
    assert_eq!(head.branch.as_deref(), Some("main"));
    git(dir.path(), &["checkout", "-q", "--detach"]);
    assert!(matches!(
        repo.current_branch(),
        Err(GitError::DetachedHead { .. })
    ));
    git(dir.path(), &["checkout", "-q", "main"]);
    std::fs::write(dir.path().join("a.txt"), "changed\n").unwrap();
    std::fs::write(dir.path().join("untracked.txt"), "new\n").unwrap();
    // Untracked files are not changes; a modified tracked file is.
    assert_eq!(repo.changed_paths().unwrap(), ["a.txt"]);
}

#[test]
fn a_commit_carries_its_trailers_and_only_the_given_paths() {
    let (dir, repo) = repo();
    repo.create_branch("orch/x", "main").unwrap();
    assert!(repo.branch_exists("orch/x").unwrap());
    assert_eq!(repo.unique_branch("orch/x").unwrap(), "orch/x-2");
    let tree = dir.path().join("tree");
    let work = repo.add_worktree(&tree, "orch/x").unwrap();
    std::fs::write(tree.join("b.txt"), "bee\n").unwrap();
    std::fs::write(tree.join("a.txt"), "other item's change\n").unwrap();
    let sha = work
        .commit(
            Some(&["b.txt".to_owned(), "gone.txt".to_owned()]),
            &message("T3"),
        )
        .unwrap();
    let commits = repo.commits("main..orch/x").unwrap();
    assert_eq!(commits.len(), 1);
    assert_eq!(commits[0].sha, sha);
    assert_eq!(commits[0].subject, "T3: change");
    assert_eq!(commits[0].item(), Some("T3"));
    assert_eq!(commits[0].trailer("Orch-Plan-Version"), Some("4"));
    assert_eq!(commits[0].trailer("Orch-Attempts"), Some("2"));
    // b.txt is committed; a.txt (another item's file) is left changed, not committed.
    assert_eq!(
        git(&tree, &["show", "--name-only", "--format=", "HEAD"]),
        "b.txt\n"
    );
    assert_eq!(work.changed_paths().unwrap(), ["a.txt"]);
    // The body kept the verdict; the user's checkout did not move.
    let body = git(dir.path(), &["log", "-1", "--format=%B", "orch/x"]);
    assert!(body.contains("VERDICT: PASS\n\nOrch-Item: T3"), "{body}");
    assert_eq!(repo.head().unwrap().branch.as_deref(), Some("main"));
    assert!(!dir.path().join("b.txt").exists());
}

#[test]
fn a_commit_without_an_identity_uses_the_orchestrators() {
    let (dir, repo) = repo();
    // An empty name is no identity: git would refuse to commit.
    git(dir.path(), &["config", "user.name", ""]);
    std::fs::write(dir.path().join("c.txt"), "c\n").unwrap();
    repo.commit(Some(&["c.txt".to_owned()]), &message("T1"))
        .unwrap();
    let author = git(dir.path(), &["log", "-1", "--format=%an"]);
    assert_eq!(author.trim(), "Orchestrator");
    // Nothing changed: still one commit per call.
    let sha = repo
        .commit(Some(&["c.txt".to_owned()]), &message("T2"))
        .unwrap();
    assert_eq!(repo.commits("HEAD~2..HEAD").unwrap()[0].sha, sha);
}

#[test]
fn worktrees_are_added_listed_and_removed_with_their_changes() {
    let (dir, repo) = repo();
    repo.create_branch("orch/y", "HEAD").unwrap();
    let tree = dir.path().join(".orchestrator/worktrees/y");
    std::fs::create_dir_all(tree.parent().unwrap()).unwrap();
    repo.add_worktree(&tree, "orch/y").unwrap();
    let listed = repo.worktrees().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1].branch.as_deref(), Some("orch/y"));
    std::fs::write(tree.join("dirty.txt"), "x").unwrap();
    assert!(repo.remove_worktree(&tree).unwrap());
    assert!(!tree.exists());
    assert_eq!(repo.worktrees().unwrap().len(), 1);
    assert!(!repo.remove_worktree(&tree).unwrap());
    // The branch stays until it is deleted.
    assert!(repo.branch_exists("orch/y").unwrap());
    repo.delete_branch("orch/y").unwrap();
    assert!(!repo.branch_exists("orch/y").unwrap());
}

#[test]
fn a_conflicting_merge_is_aborted_and_names_the_paths() {
    let (dir, repo) = repo();
    repo.create_branch("orch/m", "main").unwrap();
    repo.create_branch("orch/m-lane-0", "main").unwrap();
    let mission = repo.add_worktree(&dir.path().join("m"), "orch/m").unwrap();
    let lane = repo
        .add_worktree(&dir.path().join("lane"), "orch/m-lane-0")
        .unwrap();
    // The lane changes line two; a commit by hand on the mission branch changes it too.
    std::fs::write(lane.root().join("a.txt"), "one\nLANE\nthree\n").unwrap();
    let lane_sha = lane
        .commit(Some(&["a.txt".to_owned()]), &message("T1"))
        .unwrap();
    std::fs::write(mission.root().join("a.txt"), "one\nHAND\nthree\n").unwrap();
    git(mission.root(), &["commit", "-q", "-am", "by hand"]);
    let before = mission.head().unwrap().commit;
    assert_eq!(
        repo.merge_check("orch/m", "orch/m-lane-0").unwrap(),
        MergeCheck::Conflicts {
            paths: vec!["a.txt".into()]
        }
    );
    let outcome = mission.merge(&lane_sha, "Merge T1").unwrap();
    assert_eq!(
        outcome,
        MergeOutcome::Conflict {
            paths: vec!["a.txt".into()]
        }
    );
    // Nothing half made: the branch, the index and the files are as before.
    assert_eq!(mission.head().unwrap().commit, before);
    assert!(!mission.merging().unwrap());
    assert!(mission.changed_paths().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(mission.root().join("a.txt")).unwrap(),
        "one\nHAND\nthree\n"
    );
    // Redone on the branch as it is, the item merges (a fast-forward).
    lane.reset_to("orch/m").unwrap();
    std::fs::write(lane.root().join("a.txt"), "one\nLANE\nthree\n").unwrap();
    let redo = lane
        .commit(Some(&["a.txt".to_owned()]), &message("T1"))
        .unwrap();
    assert_eq!(
        repo.merge_check("orch/m", "orch/m-lane-0").unwrap(),
        MergeCheck::Clean
    );
    assert_eq!(
        mission.merge(&redo, "Merge T1").unwrap(),
        MergeOutcome::Merged { sha: redo }
    );
}

#[test]
fn the_state_folder_is_excluded_once_and_gitignore_is_untouched() {
    let (dir, repo) = repo();
    std::fs::create_dir_all(dir.path().join(".orchestrator")).unwrap();
    std::fs::write(dir.path().join(".orchestrator/TODO.md"), "x").unwrap();
    assert!(repo.exclude(".orchestrator/").unwrap());
    assert!(!repo.exclude(".orchestrator/").unwrap());
    assert!(!dir.path().join(".gitignore").exists());
    let status = git(dir.path(), &["status", "--porcelain"]);
    assert_eq!(status, "");
    let exclude = std::fs::read_to_string(dir.path().join(".git/info/exclude")).unwrap();
    assert_eq!(exclude.matches(".orchestrator/").count(), 1);
}

#[test]
fn branch_slugs_come_from_the_mission_text() {
    assert_eq!(slug("Add JWT auth to the API"), "add-jwt-auth-to-the-api");
    assert_eq!(
        slug("build calc [git branch] with a very long mission text that goes on"),
        "build-calc-git-branch-with-a-very-long"
    );
}
