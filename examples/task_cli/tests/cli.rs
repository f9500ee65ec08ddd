//! End-to-end tests: `task_cli` as a subprocess, on a real OpenCode server (found like the
//! other tests; a missing OpenCode fails these tests, it does not skip them), with the
//! scripted model standing in for the language model.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{
    descendants, events_named, json_lines, python_tests_pass, read, run, task_cli, text,
    wait_child, wait_for,
};
use serde_json::Value;

fn greet_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/greet.toml")
}

#[test]
fn demo_builds_a_tested_project_and_reports_json() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("demo");
    let output = run(task_cli(tmp.path())
        .args(["--json", "demo", "--dir"])
        .arg(&project));
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {stderr}\nstdout: {}",
        text(&output.stdout)
    );

    // The demo project is a git repository: the mission left its checkout as it was (one
    // empty commit) and put one commit per item on its branch, which `merge` brings in.
    assert!(!project.join("calc.py").exists());
    let report: Value = serde_json::from_str(&read(&project, ".orchestrator/report.json")).unwrap();
    let branch = report["git"]["branch"]
        .as_str()
        .expect("a git branch")
        .to_owned();
    let log = std::process::Command::new("git")
        .args(["log", "--format=%B", &format!("main..{branch}")])
        .current_dir(&project)
        .output()
        .unwrap();
    let log = text(&log.stdout);
    for item in ["T1", "T2", "T3"] {
        assert!(log.contains(&format!("Orch-Item: {item}")), "{log}");
    }
    let merge = run(task_cli(&project).args(["merge", "--dir"]).arg(&project));
    assert_eq!(merge.status.code(), Some(0), "{}", text(&merge.stderr));

    // The project: real files, real passing tests.
    assert!(read(&project, "calc.py").contains("def div(a, b):"));
    assert!(read(&project, "test_calc.py").contains("class CalcTest"));
    assert!(read(&project, "README.md").contains("python3 -m unittest"));
    assert!(python_tests_pass(&project), "the demo's tests fail");

    // The plan: three items, all done.
    let todo = read(&project, ".orchestrator/TODO.md");
    for item in ["T1", "T2", "T3"] {
        assert!(todo.contains(&format!("- [x] {item}:")), "{todo}");
    }
    let report: Value = serde_json::from_str(&read(&project, ".orchestrator/report.json")).unwrap();
    assert_eq!(report["status"]["status"], "completed");
    assert_eq!(report["items"].as_array().map(Vec::len), Some(3));

    // The events: one JSON object a line, in order, then the report.
    let events = json_lines(&output);
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("no {n} in {names:?}"))
    };
    assert!(pos("started") < pos("plan_committed"));
    assert!(pos("plan_committed") < pos("item_started"));
    assert!(pos("item_done") < pos("integration_reviewed"));
    assert!(pos("integration_reviewed") < pos("finished"));
    assert_eq!(events_named(&events, "item_done").len(), 3);
    assert_eq!(events_named(&events, "plan_committed")[0]["items"], 3);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "report");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["report"]["status"]["status"], "completed");
    assert!(
        last["report"]["engine"]["pool.created"]
            .as_f64()
            .unwrap_or(0.0)
            >= 2.0,
        "{last}"
    );
    assert!(
        last["report"]["usage"]["worker"]["turns"]
            .as_u64()
            .unwrap_or(0)
            >= 3,
        "{last}"
    );

    // `status` reads it back: finished, audit verified.
    let status = run(task_cli(tmp.path()).args(["status", "--dir"]).arg(&project));
    let out = text(&status.stdout);
    assert_eq!(
        status.status.code(),
        Some(0),
        "{out}{}",
        text(&status.stderr)
    );
    assert!(out.contains("State:   finished"), "{out}");
    assert!(out.contains("Audit:   verified"), "{out}");
    assert!(out.contains("pool:"), "{out}");
}

#[test]
fn run_with_a_model_script_retries_a_failed_review() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("greet");
    let output = run(task_cli(tmp.path())
        .args([
            "--json",
            "run",
            "make a greeter",
            "--workers",
            "2",
            "--model-script",
        ])
        .arg(greet_script())
        .arg("--dir")
        .arg(&project));
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        text(&output.stderr)
    );
    assert!(read(&project, "greet.py").contains("Hello, {name}!"));
    assert!(python_tests_pass(&project));

    let events = json_lines(&output);
    let reviews = events_named(&events, "reviewed");
    let g1: Vec<&&Value> = reviews.iter().filter(|e| e["item"] == "G1").collect();
    assert_eq!(g1.len(), 2, "{reviews:?}");
    assert!(
        g1[0]["verdict"].to_string().contains("Hello, Ada!"),
        "{:?}",
        g1[0]
    );
    let report = &events.last().unwrap()["report"];
    let items = report["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], "G1");
    assert_eq!(items[0]["attempts"], 2);
    assert_eq!(items[0]["state"], "done");

    // Status as JSON.
    let status = run(task_cli(tmp.path())
        .args(["--json", "status", "--dir"])
        .arg(&project));
    assert_eq!(status.status.code(), Some(0));
    let status = &json_lines(&status)[0];
    assert_eq!(status["plan"]["finished"], true);
    assert_eq!(status["audit"]["ok"], true);
    assert_eq!(status["mission"], "make a greeter");
}

#[test]
fn stop_then_resume_finishes_the_mission() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("greet");
    // The G2 Worker's answer takes 60 s: the mission is stopped while it waits.
    let slow = std::fs::read_to_string(greet_script()).unwrap().replace(
        "[[rule.reply]]\ntool_calls = [{ name = \"write\", arguments = { filePath = \"test_greet.py\"",
        "[[rule.reply]]\ndelay_ms = 60000\ntool_calls = [{ name = \"write\", arguments = { filePath = \"test_greet.py\"",
    );
    assert!(slow.contains("delay_ms = 60000"));
    let slow_path = tmp.path().join("slow.toml");
    std::fs::write(&slow_path, slow).unwrap();

    let mut child = task_cli(tmp.path())
        .args(["--plain", "run", "make a greeter", "--model-script"])
        .arg(&slow_path)
        .arg("--dir")
        .arg(&project)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let todo = project.join(".orchestrator/TODO.md");
    wait_for("G2 to start", Duration::from_secs(90), || {
        std::fs::read_to_string(&todo).is_ok_and(|t| t.contains("- [~] G2:"))
    });
    assert!(project.join(".orchestrator/orchestrator.pid").is_file());

    let stop = run(task_cli(tmp.path()).args(["stop", "--dir"]).arg(&project));
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop.stderr));
    assert_eq!(wait_child(&mut child, Duration::from_secs(30)), Some(130));
    assert!(!project.join(".orchestrator/orchestrator.pid").exists());

    let status = run(task_cli(tmp.path()).args(["status", "--dir"]).arg(&project));
    let out = text(&status.stdout);
    assert!(
        out.contains("State:   unfinished; continue with `task_cli resume"),
        "{out}"
    );
    assert!(out.contains("[x] G1"), "{out}");

    // Resume with the fast script: G1 is not redone, G2 is.
    let resume = run(task_cli(tmp.path())
        .args(["--json", "resume", "--model-script"])
        .arg(greet_script())
        .arg("--dir")
        .arg(&project));
    assert_eq!(resume.status.code(), Some(0), "{}", text(&resume.stderr));
    let events = json_lines(&resume);
    assert_eq!(events_named(&events, "started")[0]["resumed"], true);
    assert!(
        events_named(&events, "item_started")
            .iter()
            .all(|e| e["item"] == "G2")
    );
    assert!(python_tests_pass(&project));
}

const COMMENTED: &str = "// my OpenCode config\n{\n  // the model I use\n  \"model\": \"anthropic/claude-sonnet-4-5\",\n  /* keep this */\n  \"share\": \"disabled\"\n}\n";

#[test]
fn install_dry_run_shows_a_diff_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("opencode.jsonc");
    std::fs::write(&config, COMMENTED).unwrap();
    let output = run(task_cli(tmp.path()).args(["install", "--dry-run"]));
    let out = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        out.contains("+") && out.contains("\"orch-planner\""),
        "{out}"
    );
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), COMMENTED);

    // The real install keeps the comments, adds the agents; uninstall takes them out.
    let output = run(task_cli(tmp.path()).args(["install"]));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let installed = std::fs::read_to_string(&config).unwrap();
    assert!(installed.contains("// the model I use") && installed.contains("/* keep this */"));
    for agent in ["orch-planner", "orch-worker", "orch-reviewer"] {
        assert!(installed.contains(&format!("\"{agent}\"")), "{installed}");
    }
    let again = run(task_cli(tmp.path()).args(["install", "--dry-run"]));
    assert!(
        text(&again.stdout).contains("already installed"),
        "{}",
        text(&again.stdout)
    );
    let output = run(task_cli(tmp.path()).args(["uninstall"]));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let removed = std::fs::read_to_string(&config).unwrap();
    assert!(!removed.contains("orch-planner"), "{removed}");
    assert!(removed.contains("// the model I use"));
}

#[test]
fn doctor_names_the_broken_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("opencode.jsonc"),
        "{\n  // fine\n  \"model\": \"a/b\",\n  \"share\" \"disabled\"\n}\n",
    )
    .unwrap();
    let output = run(task_cli(tmp.path()).args(["doctor", "--no-server"]));
    let out = text(&output.stdout);
    assert_eq!(output.status.code(), Some(3), "{out}");
    assert!(out.contains("✗ opencode config"), "{out}");
    assert!(out.contains("line 4"), "{out}");
    assert!(out.contains("fix: fix line 4"), "{out}");
    assert!(out.contains("✓ opencode "), "{out}");
}

#[test]
fn errors_say_what_to_do_and_use_the_documented_codes() {
    let tmp = tempfile::tempdir().unwrap();
    // Bad usage: 2.
    let output = run(task_cli(tmp.path()).args(["run"]));
    assert_eq!(output.status.code(), Some(2));
    let output = run(task_cli(tmp.path()).args([
        "run",
        "x",
        "--workers",
        "0",
        "--model-script",
        "nope.toml",
    ]));
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
    // A file where the project directory should be: 2, and the file is left alone.
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, "mine\n").unwrap();
    let output = run(task_cli(tmp.path())
        .args(["run", "x", "--model-script"])
        .arg(greet_script())
        .arg("--dir")
        .arg(&file));
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
    // `retry` names itself when there is nothing to retry.
    let output = run(task_cli(tmp.path()).args(["retry"]));
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output.stderr).contains("nothing to retry in"));
    // Environment: 3, with what to do.
    let output = run(task_cli(tmp.path()).args(["status"]));
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        err.contains("error: no mission in") && err.contains("what to do:"),
        "{err}"
    );
    let output = run(task_cli(tmp.path()).args(["run", "x", "--model-script", "missing.toml"]));
    assert_eq!(output.status.code(), Some(3));
    assert!(text(&output.stderr).contains("cannot load the model script"));
    let output = run(task_cli(tmp.path()).args(["--json", "stop"]));
    assert_eq!(output.status.code(), Some(3));
    let lines = json_lines(&output);
    assert_eq!(lines[0]["event"], "error");
    assert!(lines[0]["fix"].is_string());
    // A bad config file names the line.
    std::fs::create_dir_all(tmp.path().join(".orchestrator")).unwrap();
    std::fs::write(
        tmp.path().join(".orchestrator/task.toml"),
        "workers = 2\nwrokers = 3\n",
    )
    .unwrap();
    let output = run(task_cli(tmp.path())
        .args(["run", "x", "--model-script"])
        .arg(greet_script()));
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(err.contains("line 2") && err.contains("wrokers"), "{err}");
    // --help documents the exit codes.
    let output = run(task_cli(tmp.path()).args(["--help"]));
    assert!(text(&output.stdout).contains("130  stopped by the user"));
}

#[test]
fn a_killed_server_is_restarted_and_the_mission_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("greet");
    let slow = std::fs::read_to_string(greet_script()).unwrap().replace(
        "[[rule.reply]]\ntool_calls = [{ name = \"write\", arguments = { filePath = \"test_greet.py\"",
        "[[rule.reply]]\ndelay_ms = 5000\ntool_calls = [{ name = \"write\", arguments = { filePath = \"test_greet.py\"",
    );
    let slow_path = tmp.path().join("slow.toml");
    std::fs::write(&slow_path, slow).unwrap();
    let child = task_cli(tmp.path())
        .args(["--json", "run", "make a greeter", "--model-script"])
        .arg(&slow_path)
        .arg("--dir")
        .arg(&project)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let todo = project.join(".orchestrator/TODO.md");
    wait_for("G2 to start", Duration::from_secs(90), || {
        std::fs::read_to_string(&todo).is_ok_and(|t| t.contains("- [~] G2:"))
    });
    // Kill the whole `opencode serve` process tree under task_cli.
    let tree = descendants(child.id());
    assert!(!tree.is_empty(), "no OpenCode server under task_cli");
    for pid in tree.iter().rev() {
        let _ = common::signal(*pid, "KILL");
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let events = json_lines(&output);
    assert_eq!(events_named(&events, "reconnecting").len(), 1, "{events:?}");
    let last = events.last().unwrap();
    assert_eq!(last["report"]["status"]["status"], "completed");
    assert!(python_tests_pass(&project));
}
