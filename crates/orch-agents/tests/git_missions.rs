//! Git-native missions on a real `opencode serve` (either generation, as `OPENCODE_BIN`
//! says), with the scripted model as the only stand-in, in real repositories.
//!
//! Each trial has its own repository (a temporary directory), its own sessions and a unique
//! mission text its rules key on. Workers write through OpenCode's real tools inside the
//! mission's worktrees; Reviewers run the real tests there; every git operation is real.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{
    CALC, README, Rules, TESTS, calc_plan, ensure, mission_config, project, run, run_mission,
    shared,
};
use libtest_mimic::{Failed, Trial};
use orch_agents::GitError;
use orch_agents::git::{BranchCleanup, MergeCheck, MergeOutcome};
use orch_agents::{
    AgentRole, GitMode, HookDecision, HookEvent, HookPhase, HookSpec, MissionConfig, MissionEvent,
    MissionGit, MissionHooks, MissionSpec, MissionStatus,
};
use orch_testkit::Reply;
use serde_json::json;

/// Runs git in `dir`; its standard output.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("git {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes the project a repository on `main` with one commit (a notes file); the project's
/// `opencode.json` (the scripted provider and the agents) stays untracked, as a user's
/// local configuration would.
fn init_repo(dir: &Path) -> Result<(), String> {
    git(dir, &["init", "-q", "-b", "main"])?;
    std::fs::write(dir.join("NOTES.txt"), "the user's notes\n").map_err(|e| e.to_string())?;
    git(dir, &["add", "NOTES.txt"])?;
    git(dir, &["commit", "-q", "-m", "the user's work"])?;
    Ok(())
}

/// Everything of the user's checkout a mission must not touch: `HEAD`, its branch, the
/// index, `git status`, and every file outside `.git` and `.orchestrator`, byte for byte.
#[derive(Debug, PartialEq)]
struct Checkout {
    head: String,
    branch: String,
    index: String,
    status: String,
    files: BTreeMap<String, Vec<u8>>,
}

fn checkout(dir: &Path) -> Result<Checkout, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            let rel = path.strip_prefix(dir).map_err(|e| e.to_string())?;
            if rel.starts_with(".git") || rel.starts_with(".orchestrator") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
                files.insert(rel.to_string_lossy().into_owned(), bytes);
            }
        }
    }
    Ok(Checkout {
        head: git(dir, &["rev-parse", "HEAD"])?,
        branch: git(dir, &["symbolic-ref", "HEAD"])?,
        index: git(dir, &["ls-files", "--stage"])?,
        status: git(dir, &["status", "--porcelain", "--untracked-files=all"])?,
        files,
    })
}

/// A Branch mission of three items started on a checkout with work in progress (a changed
/// file, a staged one, an untracked one): the user's checkout is exactly as it was; the branch
/// has one commit per item with its trailers and the items' files, and none of the user's
/// uncommitted work; the report names the branch, its commits and the merge command; the
/// merge is refused while a file is staged, then made into `main` around the unsaved work;
/// the merged branch is cleaned.
fn branch_mode_commits_each_item_and_leaves_the_checkout_alone() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        init_repo(dir.path())?;
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [git branch]".into(),
        };
        rules.planner(&calc_plan("Calculator"))?;
        rules.worker_writes("T1", "calc.py", CALC)?;
        rules.worker_writes("T2", "test_calc.py", TESTS)?;
        rules.worker_writes("T3", "README.md", README)?;
        rules.calc_reviews()?;
        // The user's work in progress: a changed file, a staged new one, an untracked one.
        // The mission starts from HEAD and leaves all three exactly as they are.
        std::fs::write(dir.path().join("NOTES.txt"), "unsaved work\n")
            .map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("staged.txt"), "staged\n").map_err(|e| e.to_string())?;
        git(dir.path(), &["add", "staged.txt"])?;
        std::fs::write(dir.path().join("scratch.txt"), "scratch\n").map_err(|e| e.to_string())?;
        let before = checkout(dir.path())?;
        let config = MissionConfig {
            git: GitMode::Branch,
            ..mission_config()
        };
        let (report, events) = run_mission(&shared, dir.path(), &rules.tag, config).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let after = checkout(dir.path())?;
        ensure(before == after, || {
            format!("the user's checkout changed:\nbefore {before:#?}\nafter {after:#?}")
        })?;
        let summary = report.git.clone().ok_or("no git section in the report")?;
        ensure(
            summary.branch == "orch/build-calc-git-branch" && summary.base_branch == "main",
            || format!("{summary:#?}"),
        )?;
        ensure(summary.worktree.is_none(), || {
            format!("the worktree of a completed mission is still there: {summary:#?}")
        })?;
        ensure(
            summary.merge_command.contains("git merge")
                && summary.merge_command.contains(&summary.branch),
            || summary.merge_command.clone(),
        )?;
        let mut items: Vec<String> = summary
            .commits
            .iter()
            .filter_map(|c| c.item.clone())
            .collect();
        items.sort();
        ensure(
            items == ["T1", "T2", "T3"] && summary.commits.len() == 3,
            || format!("commits {:#?}", summary.commits),
        )?;
        // The trailers, read back from git.
        let mission = MissionGit::read(dir.path())
            .map_err(|e| e.to_string())?
            .ok_or("no git workspace recorded")?;
        for commit in mission.commits().map_err(|e| e.to_string())? {
            let item = commit.item().ok_or("a commit without Orch-Item")?;
            ensure(commit.subject.starts_with(&format!("{item}: ")), || {
                commit.subject.clone()
            })?;
            ensure(commit.trailer("Orch-Attempts") == Some("1"), || {
                format!("{commit:?}")
            })?;
            let version: u64 = commit
                .trailer("Orch-Plan-Version")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{commit:?}"))?;
            ensure(version >= 1, || format!("{commit:?}"))?;
            let body = git(dir.path(), &["log", "-1", "--format=%B", &commit.sha])?;
            ensure(body.contains("VERDICT: PASS"), || body.clone())?;
            let report_item = report.items.iter().find(|i| i.id == item).ok_or("item")?;
            ensure(
                report_item.commit.as_deref() == Some(commit.sha.as_str()),
                || format!("{report_item:?}"),
            )?;
        }
        for (file, content) in [
            ("calc.py", CALC),
            ("test_calc.py", TESTS),
            ("README.md", README),
        ] {
            let on_branch = git(dir.path(), &["show", &format!("{}:{file}", summary.branch)])?;
            ensure(on_branch == content, || {
                format!("{file} on the branch: {on_branch:?}")
            })?;
        }
        let announced = events.iter().find_map(|e| match e {
            MissionEvent::GitBranch { uncommitted, .. } => Some(uncommitted.clone()),
            _ => None,
        });
        ensure(
            announced == Some(vec!["NOTES.txt".to_owned(), "staged.txt".to_owned()]),
            || format!("uncommitted changes announced: {announced:?}"),
        )?;
        let notes = git(
            dir.path(),
            &["show", &format!("{}:NOTES.txt", summary.branch)],
        )?;
        ensure(notes == "the user's notes\n", || {
            format!("the branch took the uncommitted NOTES.txt: {notes:?}")
        })?;
        let committed = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    MissionEvent::ItemCommitted {
                        reconciled: false,
                        ..
                    }
                )
            })
            .count();
        ensure(committed == 3, || {
            format!("{committed} ItemCommitted events")
        })?;
        // The merge the user asks for: predicted clean; refused while something is staged (the
        // merge commit would record it), touching nothing; then made on their branch, their
        // unsaved NOTES.txt and untracked scratch.txt left as they are.
        ensure(
            mission.merge_check().map_err(|e| e.to_string())? == MergeCheck::Clean,
            || "the branch does not merge cleanly".into(),
        )?;
        match mission.merge() {
            Err(GitError::DirtyTree { paths, .. }) if paths == ["staged.txt"] => {}
            other => return Err(format!("a merge with a staged file: {other:?}")),
        }
        ensure(checkout(dir.path())? == before, || {
            "the refused merge changed the checkout".into()
        })?;
        git(dir.path(), &["rm", "-q", "--cached", "staged.txt"])?;
        let merged = mission.merge().map_err(|e| e.to_string())?;
        ensure(matches!(merged, MergeOutcome::Merged { .. }), || {
            format!("{merged:?}")
        })?;
        let calc =
            std::fs::read_to_string(dir.path().join("calc.py")).map_err(|e| e.to_string())?;
        ensure(calc == CALC, || calc.clone())?;
        for (file, content) in [
            ("NOTES.txt", "unsaved work\n"),
            ("scratch.txt", "scratch\n"),
        ] {
            let now = std::fs::read_to_string(dir.path().join(file)).map_err(|e| e.to_string())?;
            ensure(now == content, || {
                format!("{file} after the merge: {now:?}")
            })?;
        }
        let parents = git(dir.path(), &["log", "-1", "--format=%P", "HEAD"])?;
        ensure(parents.split_whitespace().count() == 2, || {
            format!("the merge is not a merge commit: {parents}")
        })?;
        let cleaned = mission
            .clean(BranchCleanup::IfMerged)
            .map_err(|e| e.to_string())?;
        ensure(cleaned.branches == [summary.branch.clone()], || {
            format!("{cleaned:?}")
        })?;
        let left = git(dir.path(), &["branch", "--list", "orch/*"])?;
        ensure(left.is_empty(), || format!("branches left: {left}"))
    })
}

/// With a worktree per lane, a commit made by hand on the mission's branch to the file the
/// item in flight writes: the item's merge conflicts, is aborted and reported, the item is
/// retried on the branch as it is (the Worker sees the conflict in its notes) and merges; the
/// hand commit stays; no worktree or lane branch is left.
fn a_conflict_with_the_branch_is_reported_and_the_item_retried() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        init_repo(dir.path())?;
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [git lanes]".into(),
        };
        rules.planner("# Calc\n\n- [ ] T1: calculator module\n  - files: calc.py\n")?;
        let redo = rules.re("Your item: T1:.*merge conflict");
        rules.add(
            rules
                .rule("lanes T1 redo", "worker", &redo)?
                .tool_result(false)
                .reply(Reply::tool_call(
                    "write",
                    json!({"filePath": "calc.py", "content": CALC}),
                )),
        )?;
        rules.worker_writes("T1", "calc.py", CALC)?;
        rules.reviewer_runs(
            "Review item T1:",
            "T1",
            "python3 -c 'import calc; assert calc.mul(4, 5) == 20'",
        )?;
        rules.reviewer_runs(
            "Every item is done",
            "integration",
            "python3 -c 'import calc'",
        )?;
        // The hand commit: when T1's first Worker turn starts (its lane already took the
        // branch as it was), someone commits calc.py on the mission's branch.
        let project_dir = dir.path().to_owned();
        let done = Arc::new(AtomicBool::new(false));
        let hand_sha = Arc::new(std::sync::Mutex::new(None::<String>));
        let (flag, sha_slot) = (Arc::clone(&done), Arc::clone(&hand_sha));
        let hooks = MissionHooks::builder()
            .register(
                HookSpec::new("commit by hand", HookPhase::Normal),
                move |event: &mut HookEvent| {
                    if let HookEvent::BeforeTurn {
                        role: AgentRole::Worker,
                        item: Some(item),
                        ..
                    } = event
                        && item == "T1"
                        && !flag.swap(true, Ordering::SeqCst)
                    {
                        let made = (|| -> Result<String, String> {
                            let mission = MissionGit::read(&project_dir)
                                .map_err(|e| e.to_string())?
                                .ok_or("no workspace")?;
                            let tree = mission.worktree;
                            std::fs::write(
                                tree.join("calc.py"),
                                "def add(a, b):\n    return b + a\n",
                            )
                            .map_err(|e| e.to_string())?;
                            git(&tree, &["add", "calc.py"])?;
                            git(&tree, &["commit", "-q", "-m", "calc by hand"])?;
                            Ok(git(&tree, &["rev-parse", "HEAD"])?.trim().to_owned())
                        })();
                        *sha_slot.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(made.unwrap_or_else(|e| format!("failed: {e}")));
                    }
                    HookDecision::Continue
                },
            )
            .build()
            .map_err(|e| e.to_string())?;
        let config = MissionConfig {
            git: GitMode::WorktreePerLane,
            ..mission_config()
        };
        let spec = MissionSpec::new(rules.tag.clone(), dir.path())
            .config(config)
            .hooks(Arc::new(hooks));
        let (report, events) = common::run_mission_spec(&shared, dir.path(), spec).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let hand = hand_sha
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or("the hand commit was never made")?;
        ensure(!hand.starts_with("failed"), || hand.clone())?;
        let conflicts: Vec<&Vec<String>> = events
            .iter()
            .filter_map(|e| match e {
                MissionEvent::MergeConflict { item, paths } if item == "T1" => Some(paths),
                _ => None,
            })
            .collect();
        ensure(conflicts == [&vec!["calc.py".to_owned()]], || {
            format!("conflicts {conflicts:?}")
        })?;
        let t1 = report.items.iter().find(|i| i.id == "T1").ok_or("no T1")?;
        ensure(t1.attempts == 2 && t1.state == "done", || format!("{t1:?}"))?;
        let redone = shared
            .model
            .requests()
            .iter()
            .any(|r| r.rule.as_deref() == Some("lanes T1 redo"));
        ensure(redone, || {
            "the retried Worker did not see the conflict in its notes".into()
        })?;
        let summary = report.git.clone().ok_or("no git section")?;
        let branch = summary.branch.clone();
        // The branch: the hand commit, then exactly one commit of T1, holding the item's file.
        git(dir.path(), &["merge-base", "--is-ancestor", &hand, &branch])?;
        let t1_commits = summary
            .commits
            .iter()
            .filter(|c| c.item.as_deref() == Some("T1"))
            .count();
        ensure(t1_commits == 1, || format!("{:#?}", summary.commits))?;
        let calc = git(dir.path(), &["show", &format!("{branch}:calc.py")])?;
        ensure(calc == CALC, || calc.clone())?;
        git(dir.path(), &["fsck", "--no-dangling", "--no-progress"])?;
        let worktrees = git(dir.path(), &["worktree", "list", "--porcelain"])?;
        ensure(worktrees.matches("worktree ").count() == 1, || {
            worktrees.clone()
        })?;
        let lanes = git(dir.path(), &["branch", "--list", "orch/*-lane-*"])?;
        ensure(lanes.is_empty(), || format!("lane branches left: {lanes}"))?;
        ensure(!dir.path().join("calc.py").exists(), || {
            "the user's checkout got calc.py".into()
        })
    })
}

/// A Worker allowed `python3 -m unittest*` runs the tests it wrote (OpenCode runs the
/// command: the model sees its real output), then is refused another command: OpenCode asks,
/// the orchestrator rejects it with a message, the decision is in the report and the
/// events, and the command never ran.
fn workers_run_the_allowed_checks_and_are_refused_the_rest() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        std::fs::write(dir.path().join("calc.py"), CALC).map_err(|e| e.to_string())?;
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [worker checks]".into(),
        };
        rules.planner(
            "# Calc\n\n- [ ] T1: unit tests for the calculator\n  - files: test_calc.py\n",
        )?;
        let t1 = rules.re("Your item: T1:");
        rules.add(
            rules
                .rule("checks refused", "worker", &t1)?
                .last_tool("bash")
                .tool_output("rejected this command")
                .map_err(|e| e.to_string())?
                .reply(Reply::text(
                    "The tests pass; the other command was refused.",
                )),
        )?;
        rules.add(
            rules
                .rule("checks then echo", "worker", &t1)?
                .last_tool("bash")
                .tool_output("Ran 2 tests")
                .map_err(|e| e.to_string())?
                .reply(Reply::tool_call(
                    "bash",
                    json!({"command": "echo pwned > pwned.txt", "description": "not allowed"}),
                )),
        )?;
        rules.add(
            rules
                .rule("checks run tests", "worker", &t1)?
                .last_tool("write")
                .reply(Reply::tool_call(
                    "bash",
                    json!({"command": "python3 -m unittest -v", "description": "run the tests"}),
                )),
        )?;
        rules.add(
            rules
                .rule("checks write", "worker", &t1)?
                .tool_result(false)
                .reply(Reply::tool_call(
                    "write",
                    json!({"filePath": "test_calc.py", "content": TESTS}),
                )),
        )?;
        rules.reviewer_runs("Review item T1:", "T1", "python3 -m unittest -v")?;
        rules.reviewer_runs(
            "Every item is done",
            "integration",
            "python3 -m unittest -v",
        )?;
        let config = MissionConfig {
            worker_commands: vec!["python3 -m unittest*".into()],
            ..mission_config()
        };
        let (report, events) = run_mission(&shared, dir.path(), &rules.tag, config).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let used = |name: &str| {
            shared
                .model
                .requests()
                .iter()
                .filter(|r| r.rule.as_deref() == Some(name))
                .count()
        };
        ensure(used("checks then echo") == 1, || {
            "the allowed test command did not run (its output never reached the model)".into()
        })?;
        ensure(used("checks refused") == 1, || {
            "the refused command's rejection never reached the model".into()
        })?;
        ensure(!dir.path().join("pwned.txt").exists(), || {
            "the refused command ran".into()
        })?;
        let refused: Vec<_> = report
            .permissions
            .iter()
            .filter(|p| !p.allowed && matches!(p.permission.as_str(), "bash" | "shell"))
            .collect();
        ensure(
            refused.len() == 1 && refused[0].patterns.iter().any(|p| p.contains("echo pwned")),
            || format!("permissions {:?}", report.permissions),
        )?;
        ensure(
            report
                .permissions
                .iter()
                .all(|p| !p.patterns.iter().any(|x| x.contains("unittest"))),
            || {
                format!(
                    "the allowed command was asked for: {:?}",
                    report.permissions
                )
            },
        )?;
        ensure(
            events.iter().any(|e| {
                matches!(
                    e,
                    MissionEvent::Permission { item: Some(item), decision }
                        if item == "T1" && !decision.allowed
                )
            }),
            || "no permission event for the refused command".into(),
        )
    })
}

fn main() {
    let trials = vec![
        Trial::test(
            "branch_mode_commits_each_item_and_leaves_the_checkout_alone",
            branch_mode_commits_each_item_and_leaves_the_checkout_alone,
        ),
        Trial::test(
            "a_conflict_with_the_branch_is_reported_and_the_item_retried",
            a_conflict_with_the_branch_is_reported_and_the_item_retried,
        ),
        Trial::test(
            "workers_run_the_allowed_checks_and_are_refused_the_rest",
            workers_run_the_allowed_checks_and_are_refused_the_rest,
        ),
    ];
    common::run_trials(trials);
}
