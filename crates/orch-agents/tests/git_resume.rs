//! Git missions on the simulated backend (whose Workers write their items' files in the
//! directory their session works in) and real repositories: stopped and resumed (a resumed
//! mission finds its branch and worktrees, no item is committed twice, every item ends with
//! exactly one commit, the user's checkout is never touched); refused before writing
//! anything; a user's branch of the mission's name left alone; the merge into the user's
//! branch conflicting without touching anything; `clean`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use orch_agents::git::{BranchCleanup, MergeCheck, MergeOutcome};
use orch_agents::{
    AgentRole, GitError, GitMode, Latency, Mission, MissionConfig, MissionError, MissionEvent,
    MissionGit, MissionSpec, MissionStatus, PolicyConfig, RunLock, SimulatedBackend,
};
use tokio_util::sync::CancellationToken;

const PLAN: &str = "\
# Build a thing

- [ ] T1: core
  - files: core.txt
- [ ] T2: feature on core
  - files: feature.txt
  - deps: T1
- [ ] T3: docs
  - files: docs.txt
- [ ] T4: more docs
  - files: more.txt
";

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

/// A backend whose Worker writes `<item files>` in its session's directory and whose
/// Reviewer passes everything.
fn backend() -> SimulatedBackend {
    SimulatedBackend::builder()
        .latency(Latency::Fixed(Duration::from_millis(20)))
        .responder(|turn| {
            Ok(match turn.role {
                AgentRole::Planner => PLAN.to_owned(),
                AgentRole::Reviewer => "Looked at it.\nVERDICT: PASS".to_owned(),
                AgentRole::Worker => {
                    let dir = turn
                        .scope
                        .dir()
                        .expect("a git mission's Worker has a directory");
                    for file in turn.scope.as_slice() {
                        std::fs::write(dir.join(file), format!("{file} by the Worker\n"))
                            .expect("the worktree is writable");
                    }
                    "done".to_owned()
                }
                AgentRole::Commander => "diagnosis".to_owned(),
            })
        })
        .build()
}

fn config(git: GitMode) -> MissionConfig {
    MissionConfig {
        workers: 2,
        reviewers: 2,
        git,
        journal_fsync: false,
        policy: PolicyConfig::default(),
        ..MissionConfig::default()
    }
}

/// Runs the mission in `dir`; with `stop_at_first_commit`, stops it when the first item is
/// committed.
async fn run(
    dir: &Path,
    mode: GitMode,
    stop_at_first_commit: bool,
) -> (orch_agents::MissionReport, Vec<MissionEvent>) {
    let stop = CancellationToken::new();
    let spec = MissionSpec::new("build a thing [git resume]", dir)
        .config(config(mode))
        .stop_token(stop.clone());
    let mut events = spec.subscribe();
    let mission = Mission::new(Arc::new(backend()), spec);
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(event) = events.recv().await {
            if stop_at_first_commit && matches!(event, MissionEvent::ItemCommitted { .. }) {
                stop.cancel();
            }
            let end = matches!(event, MissionEvent::Finished { .. });
            seen.push(event);
            if end {
                break;
            }
        }
        seen
    });
    let report = mission.run().await.expect("the mission runs");
    (report, watcher.await.expect("the watcher ends"))
}

async fn stopped_then_resumed(mode: GitMode, clean_between: bool) {
    let dir = tempfile::tempdir().unwrap();
    git_init(dir.path());
    let head = git(dir.path(), &["rev-parse", "HEAD"]);
    let (first, first_events) = run(dir.path(), mode, true).await;
    assert_eq!(first.status, MissionStatus::Stopped, "{first:#?}");
    let mission = MissionGit::read(dir.path()).unwrap().expect("recorded");
    assert_eq!(mission.mode, mode);
    // Stopped: the worktrees stay for the next run; at least one item is committed.
    assert!(mission.worktree.exists());
    let committed_first: Vec<String> = first_events
        .iter()
        .filter_map(|e| match e {
            MissionEvent::ItemCommitted { item, .. } => Some(item.clone()),
            _ => None,
        })
        .collect();
    assert!(!committed_first.is_empty());
    if clean_between {
        // What the stopped run left is removed (its worktrees, its lane branches); the branch
        // stays, and the next run makes the rest again.
        let cleaned = mission.clean(BranchCleanup::Keep).unwrap();
        assert!(cleaned.worktrees.contains(&mission.worktree), "{cleaned:?}");
        assert!(!cleaned.branches.contains(&mission.branch), "{cleaned:?}");
        assert!(!mission.worktree.exists());
        assert_eq!(
            git(dir.path(), &["worktree", "list", "--porcelain"])
                .matches("worktree ")
                .count(),
            1
        );
    }

    let (second, second_events) = run(dir.path(), mode, false).await;
    assert_eq!(second.status, MissionStatus::Completed, "{second:#?}");
    assert!(second_events.iter().any(|e| matches!(
        e,
        MissionEvent::GitBranch { resumed: true, branch, .. } if *branch == mission.branch
    )));
    // One branch of the mission, one commit per item, each with its files.
    let branches = git(dir.path(), &["branch", "--list", "orch/*"]);
    assert_eq!(branches.trim().trim_start_matches("* "), mission.branch);
    let summary = second.git.expect("a git report");
    let mut items: Vec<String> = summary
        .commits
        .iter()
        .filter_map(|c| c.item.clone())
        .collect();
    items.sort();
    assert_eq!(items, ["T1", "T2", "T3", "T4"], "{:#?}", summary.commits);
    for (item, file) in [("T1", "core.txt"), ("T4", "more.txt")] {
        let content = git(dir.path(), &["show", &format!("{}:{file}", mission.branch)]);
        assert_eq!(content, format!("{file} by the Worker\n"), "{item}");
    }
    for item in &committed_first {
        let report = second.items.iter().find(|i| &i.id == item).unwrap();
        assert_eq!(report.attempts, 1, "{item} was redone: {report:?}");
    }
    // The user's checkout never moved; the worktrees are gone, the branch stays.
    assert_eq!(git(dir.path(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(dir.path(), &["status", "--porcelain"]), "");
    assert!(!mission.worktree.exists());
    assert_eq!(
        git(dir.path(), &["worktree", "list", "--porcelain"])
            .matches("worktree ")
            .count(),
        1
    );
}

fn git_init(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README"), "the user's\n").unwrap();
    git(dir, &["add", "README"]);
    git(dir, &["commit", "-q", "-m", "start"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_branch_mission_resumes_on_its_branch() {
    stopped_then_resumed(GitMode::Branch, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_lane_mission_resumes_on_its_branch_and_lanes() {
    stopped_then_resumed(GitMode::WorktreePerLane, false).await;
}

/// `clean` after a stop removes the worktrees and lane branches; the mission resumes all the
/// same (an item whose work was in a removed lane worktree is redone), one commit per item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_lane_mission_cleaned_resumes_and_completes() {
    stopped_then_resumed(GitMode::WorktreePerLane, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_outside_a_repository_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let mission = Mission::new(
        Arc::new(backend()),
        MissionSpec::new("build a thing", dir.path()).config(config(GitMode::Branch)),
    );
    let error = mission.run().await.unwrap_err();
    assert!(
        matches!(
            error,
            orch_agents::MissionError::Git(orch_agents::GitError::NotARepository { .. })
        ),
        "{error:?}"
    );
    assert!(!dir.path().join(".orchestrator").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_head_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    git_init(dir.path());
    git(dir.path(), &["checkout", "-q", "--detach"]);
    let mission = Mission::new(
        Arc::new(backend()),
        MissionSpec::new("build a thing", dir.path()).config(config(GitMode::Branch)),
    );
    let error = mission.run().await.unwrap_err();
    assert!(
        matches!(error, MissionError::Git(GitError::DetachedHead { .. })),
        "{error:?}"
    );
    assert!(!dir.path().join(".orchestrator").exists());
    let exclude = std::fs::read_to_string(dir.path().join(".git/info/exclude")).unwrap();
    assert!(!exclude.contains(".orchestrator"), "{exclude}");
    assert_eq!(git(dir.path(), &["branch", "--list", "orch/*"]), "");
}

/// A branch of the mission's name that the user made is not the mission's: the mission takes
/// another name, and no cleaning ever touches the user's branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_branch_of_the_same_name_is_never_the_missions() {
    let dir = tempfile::tempdir().unwrap();
    git_init(dir.path());
    git(dir.path(), &["branch", "orch/build-a-thing-git-resume"]);
    let users = git(dir.path(), &["rev-parse", "orch/build-a-thing-git-resume"]);
    let (report, _) = run(dir.path(), GitMode::Branch, false).await;
    assert_eq!(report.status, MissionStatus::Completed, "{report:#?}");
    let mission = MissionGit::read(dir.path()).unwrap().unwrap();
    assert_eq!(mission.branch, "orch/build-a-thing-git-resume-2");
    assert_eq!(report.git.unwrap().commits.len(), 4);
    let cleaned = mission.clean(BranchCleanup::Always).unwrap();
    assert_eq!(cleaned.branches, ["orch/build-a-thing-git-resume-2"]);
    assert_eq!(
        git(dir.path(), &["rev-parse", "orch/build-a-thing-git-resume"]),
        users
    );
}

/// The user changed a file on their branch that the mission also wrote: the merge is
/// predicted to conflict and refused with the path, nothing in the checkout moves; `status`
/// says what is there; `clean` refuses while a run holds the project, and keeps the unmerged
/// branch unless told otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_merge_touches_nothing_and_clean_keeps_unmerged_work() {
    let dir = tempfile::tempdir().unwrap();
    git_init(dir.path());
    let (report, _) = run(dir.path(), GitMode::WorktreePerLane, false).await;
    assert_eq!(report.status, MissionStatus::Completed, "{report:#?}");
    let mission = MissionGit::read(dir.path()).unwrap().unwrap();
    // The user, meanwhile, wrote core.txt on main.
    std::fs::write(dir.path().join("core.txt"), "the user's core\n").unwrap();
    git(dir.path(), &["add", "core.txt"]);
    git(dir.path(), &["commit", "-q", "-m", "core by the user"]);
    let head = git(dir.path(), &["rev-parse", "HEAD"]);
    assert_eq!(
        mission.merge_check().unwrap(),
        MergeCheck::Conflicts {
            paths: vec!["core.txt".into()]
        }
    );
    assert_eq!(
        mission.merge().unwrap(),
        MergeOutcome::Conflict {
            paths: vec!["core.txt".into()]
        }
    );
    assert_eq!(git(dir.path(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(dir.path(), &["status", "--porcelain"]), "");
    assert!(!dir.path().join(".git/MERGE_HEAD").exists());

    let status = mission.status().unwrap();
    assert!(status.branch_exists && !status.merged, "{status:?}");
    assert_eq!(status.current_branch.as_deref(), Some("main"));
    // One commit per item; the rest are the merges of lanes (a fast-forward has none).
    let mut items: Vec<&str> = status.commits.iter().filter_map(|c| c.item()).collect();
    items.sort_unstable();
    assert_eq!(items, ["T1", "T2", "T3", "T4"], "{status:?}");
    assert!(
        status.commits.iter().all(|c| c.item().is_some() || c.merge),
        "{status:?}"
    );
    // A completed mission removed its worktrees and lane branches already.
    assert!(
        status.worktrees.is_empty() && status.lane_branches.is_empty(),
        "{status:?}"
    );

    let lock = RunLock::acquire(&dir.path().join(".orchestrator")).unwrap();
    assert!(matches!(
        mission.clean(BranchCleanup::Always),
        Err(GitError::MissionRunning { .. })
    ));
    drop(lock);
    let cleaned = mission.clean(BranchCleanup::IfMerged).unwrap();
    assert_eq!(cleaned.unmerged.as_deref(), Some(mission.branch.as_str()));
    assert!(cleaned.branches.is_empty());
    assert!(git(dir.path(), &["branch", "--list", &mission.branch]).contains(&mission.branch));
}
