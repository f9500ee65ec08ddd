//! Git-native missions from the command line, on a real OpenCode server with the scripted
//! model: the mission works on a branch of its own, one commit per item, the user's checkout
//! untouched; `status`, `merge` (clean and conflicting) and `clean`; `--no-git`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{events_named, json_lines, json_run, read, run, task_cli, text};
use serde_json::Value;

fn greet_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/greet.toml")
}

/// `git ARGS` in `dir` (a test identity, no user configuration), its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test User")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test User")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("LC_ALL", "C")
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// A repository on `main` with one commit (`notes.txt`), a file with uncommitted changes and
/// an untracked file of the user's.
fn user_repository(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("notes.txt"), "my notes\n").unwrap();
    git(dir, &["add", "notes.txt"]);
    git(dir, &["commit", "-q", "-m", "my first commit"]);
    std::fs::write(dir.join("notes.txt"), "my notes\nand an unsaved line\n").unwrap();
    std::fs::write(dir.join("scratch.txt"), "untracked\n").unwrap();
}

/// What the user's checkout is: HEAD, its branch, the status, the files (outside the
/// mission's state folder).
fn checkout(dir: &Path) -> (String, String, String, Vec<(String, String)>) {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".git" && n != ".orchestrator")
        .map(|n| {
            let body = std::fs::read_to_string(dir.join(&n)).unwrap_or_default();
            (n, body)
        })
        .collect();
    files.sort();
    (
        git(dir, &["rev-parse", "HEAD"]),
        git(dir, &["branch", "--show-current"]),
        git(dir, &["status", "--porcelain"]),
        files,
    )
}

fn status_json(project: &Path) -> Value {
    let out = run(task_cli(project)
        .args(["--json", "status", "--dir"])
        .arg(project));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    json_lines(&out).pop().expect("a status line")
}

#[test]
fn a_mission_in_a_repository_works_on_its_branch_and_merges_back() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("repo");
    user_repository(&project);
    let before = checkout(&project);

    let output = json_run(
        tmp.path(),
        &["run", "Add a greet function with a test"],
        Some(&greet_script()),
        &project,
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        text(&output.stderr),
        text(&output.stdout)
    );
    // The user's checkout is exactly as it was; the mission's state folder is ignored
    // through info/exclude, not .gitignore.
    assert_eq!(checkout(&project), before);
    assert!(!project.join(".gitignore").exists());
    assert!(read(&project, ".git/info/exclude").contains(".orchestrator/"));

    // The branch: one commit per item, with the trailers; G1 passed on its second attempt.
    let events = json_lines(&output);
    let branch = events_named(&events, "git_branch")[0]["branch"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(branch.starts_with("orch/add-a-greet-function"), "{branch}");
    let log = git(
        &project,
        &["log", "--format=%s%n%b%n--", &format!("main..{branch}")],
    );
    assert_eq!(log.matches("Orch-Item:").count(), 2, "{log}");
    assert!(
        log.contains("Orch-Item: G1") && log.contains("Orch-Attempts: 2"),
        "{log}"
    );
    assert_eq!(events_named(&events, "item_committed").len(), 2);
    let report: Value = serde_json::from_str(&read(&project, ".orchestrator/report.json")).unwrap();
    assert_eq!(report["git"]["branch"], branch.as_str());
    assert_eq!(report["git"]["commits"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        git(&project, &["show", &format!("{branch}:greet.py")]),
        "def greet(name):\n    return f\"Hello, {name}!\"\n"
    );

    // status names the branch and its commits, not merged yet.
    let status = status_json(&project);
    assert_eq!(status["git"]["branch"], branch.as_str());
    assert_eq!(status["git"]["merged"], false);
    assert_eq!(status["git"]["commits"].as_array().map(Vec::len), Some(2));

    // merge --check changes nothing; merge brings the files in around the unsaved work.
    let check = run(task_cli(&project)
        .args(["merge", "--check", "--dir"])
        .arg(&project));
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert_eq!(checkout(&project), before);
    let merge = run(task_cli(&project).args(["merge", "--dir"]).arg(&project));
    assert_eq!(merge.status.code(), Some(0), "{}", text(&merge.stderr));
    assert!(text(&merge.stdout).contains(&format!("merged {branch} into main")));
    assert!(read(&project, "greet.py").contains("Hello, {name}!"));
    assert_eq!(
        read(&project, "notes.txt"),
        "my notes\nand an unsaved line\n"
    );
    assert_eq!(read(&project, "scratch.txt"), "untracked\n");
    assert_eq!(status_json(&project)["git"]["merged"], true);

    // clean deletes the merged branch; nothing else of the user's.
    let clean = run(task_cli(&project).args(["clean", "--dir"]).arg(&project));
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));
    assert!(text(&clean.stdout).contains(&format!("deleted branch {branch}")));
    assert_eq!(git(&project, &["branch", "--list", "orch/*"]), "");
    assert_eq!(git(&project, &["branch", "--show-current"]).trim(), "main");
}

#[test]
fn a_conflicting_merge_changes_nothing_and_no_git_edits_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("repo");
    user_repository(&project);
    git(&project, &["commit", "-q", "-am", "save the notes"]);
    std::fs::remove_file(project.join("scratch.txt")).unwrap();

    let output = json_run(
        tmp.path(),
        &["run", "Add a greet function with a test"],
        Some(&greet_script()),
        &project,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let branch = status_json(&project)["git"]["branch"]
        .as_str()
        .unwrap()
        .to_owned();

    // The user writes greet.py on main meanwhile: the mission's branch conflicts.
    std::fs::write(project.join("greet.py"), "print('mine')\n").unwrap();
    git(&project, &["add", "greet.py"]);
    git(&project, &["commit", "-q", "-m", "my own greet"]);
    let before = checkout(&project);
    let merge = run(task_cli(&project).args(["merge", "--dir"]).arg(&project));
    assert_eq!(merge.status.code(), Some(1), "{}", text(&merge.stderr));
    let stderr = text(&merge.stderr);
    assert!(
        stderr.contains("greet.py") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(checkout(&project), before);
    assert!(!project.join(".git/MERGE_HEAD").exists());

    // An unmerged branch survives `clean` unless asked.
    let clean = run(task_cli(&project).args(["clean", "--dir"]).arg(&project));
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));
    assert!(text(&clean.stdout).contains(&format!("kept {branch}")));
    assert!(!git(&project, &["branch", "--list", &branch]).is_empty());

    // --no-git: a new mission edits the checkout in place, no new branch.
    let other = tmp.path().join("in-place");
    user_repository(&other);
    let output = json_run(
        tmp.path(),
        &["run", "Add a greet function with a test", "--no-git"],
        Some(&greet_script()),
        &other,
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(read(&other, "greet.py").contains("Hello, {name}!"));
    assert_eq!(git(&other, &["branch", "--list", "orch/*"]), "");
    assert!(events_named(&json_lines(&output), "git_branch").is_empty());
    let merge = run(task_cli(&other).args(["merge", "--dir"]).arg(&other));
    assert_eq!(merge.status.code(), Some(3), "{}", text(&merge.stderr));
    assert!(text(&merge.stderr).contains("has no git branch"));

    // A refused merge or clean writes nothing, not even the state folder.
    let nowhere = tmp.path().join("nowhere");
    for command in ["merge", "clean"] {
        let out = run(task_cli(tmp.path()).args([command, "--dir"]).arg(&nowhere));
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("no mission in"));
        assert!(!nowhere.exists());
    }
}

#[test]
fn a_worktree_per_lane_mission_leaves_one_branch_and_no_lane_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("repo");
    user_repository(&project);
    let before = checkout(&project);
    let output = json_run(
        tmp.path(),
        &[
            "run",
            "Add a greet function with a test",
            "--worktree-per-lane",
            "--workers",
            "2",
        ],
        Some(&greet_script()),
        &project,
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}\nstdout: {}",
        text(&output.stderr),
        text(&output.stdout)
    );
    assert_eq!(checkout(&project), before);
    let status = status_json(&project);
    assert_eq!(status["git"]["mode"], "worktree_per_lane");
    let branch = status["git"]["branch"].as_str().unwrap().to_owned();
    // Both items on the mission's branch; no lane branch or worktree left.
    let log = git(
        &project,
        &["log", "--format=%B", &format!("main..{branch}")],
    );
    assert!(
        log.contains("Orch-Item: G1") && log.contains("Orch-Item: G2"),
        "{log}"
    );
    assert_eq!(
        status["git"]["lane_branches"].as_array().map(Vec::len),
        Some(0)
    );
    assert_eq!(status["git"]["worktrees"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        git(&project, &["branch", "--list", "orch/*"])
            .lines()
            .count(),
        1,
        "{}",
        git(&project, &["branch", "--list"])
    );
    assert_eq!(git(&project, &["worktree", "list"]).lines().count(), 1);
}
