//! The mission lifecycle from the command line, on a real OpenCode server with the scripted
//! model: width, the run lock and `stop`, new missions against unfinished ones, `retry`,
//! planning that failed or was interrupted, totals over several runs, and every piece of
//! advice the CLI prints followed to a completed mission.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Live, alive, descendants, events_named, items_script, json_lines, json_run, read, run,
    task_cli, text, write_script,
};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(180);

/// The `report` line that ends a `--json` run.
fn report(events: &[Value]) -> &Value {
    let last = events.last().expect("some output");
    assert_eq!(
        last["event"], "report",
        "the report is the last line: {events:?}"
    );
    last
}

fn state_file(project: &Path, name: &str) -> Option<Vec<u8>> {
    std::fs::read(project.join(".orchestrator").join(name)).ok()
}

/// `task_cli --json status --dir project`, parsed.
fn status(cwd: &Path, project: &Path) -> Value {
    let output = run(task_cli(cwd)
        .args(["--json", "status", "--dir"])
        .arg(project));
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    json_lines(&output).remove(0)
}

/// The advice a `--json` run printed (its notices), joined.
fn notices(events: &[Value]) -> String {
    events_named(events, "notice")
        .iter()
        .filter_map(|n| n["message"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn sixteen_workers_complete_sixteen_independent_items() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("wide");
    // Every Worker answer waits 2 s, so the lanes are busy at the same time.
    let script = write_script(tmp.path(), "wide.toml", &items_script(16, 2_000, ""));
    let output = json_run(
        tmp.path(),
        &["run", "sixteen files", "--workers", "16"],
        Some(&script),
        &project,
    );
    let events = json_lines(&output);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(events_named(&events, "item_done").len(), 16);
    let lanes: std::collections::BTreeSet<u64> = events_named(&events, "item_started")
        .iter()
        .filter_map(|e| e["lane"].as_u64())
        .collect();
    assert_eq!(lanes.len(), 16, "every lane ran an item: {lanes:?}");
    for i in 1..=16 {
        assert_eq!(read(&project, &format!("f{i}.txt")), format!("file {i}\n"));
    }
    let report = &report(&events)["report"];
    assert_eq!(report["status"]["status"], "completed");
    assert!(
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["attempts"] == 1),
        "{report}"
    );
}

#[test]
fn stop_never_signals_a_process_that_does_not_hold_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("stale");
    let state = project.join(".orchestrator");
    std::fs::create_dir_all(&state).unwrap();
    // A crashed run's pid file naming a live, unrelated process (a reused pid).
    let mut bystander = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let pid = bystander.id();
    std::fs::write(state.join("orchestrator.pid"), format!("{pid}\n")).unwrap();
    let before = std::fs::read(state.join("orchestrator.pid")).unwrap();

    let stop = run(task_cli(tmp.path()).args(["stop", "--dir"]).arg(&project));
    let err = text(&stop.stderr);
    assert_eq!(stop.status.code(), Some(3), "{err}");
    assert!(
        err.contains("no mission is running") && err.contains("stale"),
        "{err}"
    );
    assert!(alive(pid), "stop signalled an unrelated process");
    assert_eq!(
        std::fs::read(state.join("orchestrator.pid")).unwrap(),
        before
    );

    // status and doctor call it stale, not running.
    let doctor = run(task_cli(tmp.path())
        .args(["doctor", "--no-server", "--dir"])
        .arg(&project));
    let out = text(&doctor.stdout);
    assert!(
        out.contains("stale pid file") && out.contains(&pid.to_string()),
        "{out}"
    );

    // The next run takes the directory and removes the stale file when it ends.
    let script = write_script(tmp.path(), "one.toml", &items_script(1, 0, ""));
    let output = json_run(tmp.path(), &["run", "one file"], Some(&script), &project);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(!state.join("orchestrator.pid").exists());
    assert!(alive(pid));
    let _ = bystander.kill();
    let _ = bystander.wait();
}

#[test]
fn a_refused_run_changes_nothing_and_resume_keeps_the_first_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("busy");
    // T2's Worker answer takes a minute: the mission is busy while the others are tried.
    let slow = write_script(
        tmp.path(),
        "slow.toml",
        &items_script(
            2,
            0,
            r##"[[rule]]
name = "T2 slow"
agent = "worker"
user = "Your item: T2:"
tool_result = false
[[rule.reply]]
delay_ms = 60000
text = "still thinking"
"##,
        ),
    );
    let fast = write_script(tmp.path(), "fast.toml", &items_script(2, 0, ""));
    let mut first = Live::spawn({
        let mut cmd = task_cli(tmp.path());
        cmd.args([
            "--json",
            "run",
            "two files",
            "--workers",
            "1",
            "--model-script",
        ])
        .arg(&slow)
        .arg("--dir")
        .arg(&project);
        cmd
    });
    first.wait_line("T2 started", LONG, |l| {
        l["event"] == "item_started" && l["item"] == "T2"
    });
    let settings = state_file(&project, "task_cli.json").expect("settings saved");
    // The live mission writes its files atomically through a temporary file, which may
    // exist for an instant: list the directory once no temporary file is in it. A temporary
    // file left behind (by anyone) stays, and the listing then shows it.
    let files = |p: &Path| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut names: Vec<String> = std::fs::read_dir(p.join(".orchestrator"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            if !names.iter().any(|n| n.ends_with(".tmp")) || Instant::now() > deadline {
                return names;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let names = files(&project);

    // A second run, a resume, a retry: refused while the first holds the directory.
    for args in [
        vec!["run", "something else", "--model-script"],
        vec!["run", "something else", "--new", "--model-script"],
        vec!["resume", "--model-script"],
        vec!["retry", "--model-script"],
    ] {
        let output = run(task_cli(tmp.path())
            .args(&args)
            .arg(&fast)
            .arg("--dir")
            .arg(&project));
        let err = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("another task_cli (pid"), "{err}");
        assert!(err.contains("task_cli stop --dir"), "{err}");
    }
    assert_eq!(
        state_file(&project, "task_cli.json"),
        Some(settings.clone())
    );
    assert_eq!(files(&project), names);
    let status_now = status(tmp.path(), &project);
    assert_eq!(status_now["state"], "running");
    assert_eq!(status_now["running_pid"], first.child.id());

    // Stop it (what the refusal advised), then a different mission is refused too.
    let stop = run(task_cli(tmp.path()).args(["stop", "--dir"]).arg(&project));
    assert_eq!(stop.status.code(), Some(0), "{}", text(&stop.stderr));
    let (code, events, stderr) = first.finish(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{stderr}");
    assert_eq!(report(&events)["report"]["status"]["status"], "stopped");
    let other = run(task_cli(tmp.path())
        .args(["run", "something else", "--model-script"])
        .arg(&fast)
        .arg("--dir")
        .arg(&project));
    let err = text(&other.stderr);
    assert_eq!(other.status.code(), Some(2), "{err}");
    assert!(
        err.contains("holds another mission, unfinished")
            && err.contains("task_cli resume --dir")
            && err.contains("--new"),
        "{err}"
    );
    assert_eq!(state_file(&project, "task_cli.json"), Some(settings));

    // resume (what status and the stop advised) keeps the first run's settings (one lane).
    let advice = status(tmp.path(), &project);
    assert_eq!(advice["state"], "unfinished");
    assert!(
        advice["advice"]
            .as_str()
            .unwrap()
            .contains("task_cli resume --dir")
    );
    let resumed = json_run(tmp.path(), &["resume"], Some(&fast), &project);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let events = json_lines(&resumed);
    assert!(
        events_named(&events, "item_started")
            .iter()
            .all(|e| e["lane"] == 0),
        "the resume ran more than one lane: {events:?}"
    );
    assert_eq!(read(&project, "f2.txt"), "file 2\n");

    // The report counts both runs, and equals the journal's sums.
    let report = &report(&events)["report"];
    assert_eq!(report["mission"], "two files");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{report}");
    assert_eq!(runs[0]["status"]["status"], "stopped");
    assert!(
        runs[0]["abandoned_turns"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert_eq!(
        report["usage"]["planner"]["turns"], 1,
        "the first run's Planner counts"
    );
    let journal = read(&project, ".orchestrator/journal.jsonl");
    let finished = journal.matches("\"event\":\"turn_finished\"").count() as u64;
    let counted: u64 = report["usage"]
        .as_object()
        .unwrap()
        .values()
        .map(|u| u["turns"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, finished, "{report}");
    let elapsed: u64 = runs.iter().map(|r| r["elapsed_ms"].as_u64().unwrap()).sum();
    assert_eq!(report["elapsed"]["secs"].as_u64().unwrap(), elapsed / 1000);
}

#[test]
fn a_new_mission_archives_a_finished_one() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("again");
    let script = write_script(tmp.path(), "two.toml", &items_script(2, 0, ""));
    let first = json_run(
        tmp.path(),
        &["run", "first mission"],
        Some(&script),
        &project,
    );
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let first_todo = read(&project, ".orchestrator/TODO.md");

    let second = json_run(
        tmp.path(),
        &["run", "second mission"],
        Some(&script),
        &project,
    );
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let events = json_lines(&second);
    assert!(
        notices(&events).contains("is finished; its state is archived"),
        "{events:?}"
    );
    assert_eq!(events_named(&events, "started")[0]["resumed"], false);
    assert_eq!(events_named(&events, "plan_committed").len(), 1);
    let report = &report(&events)["report"];
    assert_eq!(report["mission"], "second mission");
    assert_eq!(report["runs"].as_array().unwrap().len(), 1);
    let history: Vec<_> = std::fs::read_dir(project.join(".orchestrator/history"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(history.len(), 1);
    assert_eq!(
        std::fs::read_to_string(history[0].join("TODO.md")).unwrap(),
        first_todo
    );
    assert!(history[0].join("journal.jsonl").is_file());
}

#[test]
fn failed_items_are_retried_with_their_attempts_reset() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("retry");
    // T1 fails its review; T2 depends on it.
    let plan = r##"[[rule]]
name = "plan with a dependency"
agent = "planner"
[[rule.reply]]
text = "# Chain\n\n- [ ] T1: file 1\n  - files: f1.txt\n- [ ] T2: file 2\n  - files: f2.txt\n  - deps: T1\n"
"##;
    let failing = format!(
        "{plan}\n{}",
        r##"[[rule]]
name = "T1 review fails"
agent = "reviewer"
user = "Review item T1:"
[[rule.reply]]
text = "VERDICT: FAIL: f1.txt is wrong"
"##
    );
    let script = write_script(tmp.path(), "retry.toml", &items_script(2, 0, &failing));
    let output = json_run(
        tmp.path(),
        &["run", "a chain", "--max-attempts", "2"],
        Some(&script),
        &project,
    );
    let events = json_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(
        notices(&events).contains("task_cli retry --dir"),
        "{events:?}"
    );
    report(&events);

    // status and resume both point at retry; resume changes nothing.
    let state = status(tmp.path(), &project);
    assert_eq!(state["state"], "failed");
    assert!(
        state["advice"]
            .as_str()
            .unwrap()
            .contains("T1 failed (blocking T2)")
    );
    let todo = read(&project, ".orchestrator/TODO.md");
    let resume = run(task_cli(tmp.path()).args(["resume", "--dir"]).arg(&project));
    let err = text(&resume.stderr);
    assert_eq!(resume.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing to resume") && err.contains("task_cli retry --dir"),
        "{err}"
    );
    assert_eq!(read(&project, ".orchestrator/TODO.md"), todo);
    // Only failed items are retried.
    let wrong = run(task_cli(tmp.path())
        .args(["retry", "T2", "--dir"])
        .arg(&project));
    assert_eq!(wrong.status.code(), Some(2), "{}", text(&wrong.stderr));
    assert!(text(&wrong.stderr).contains("T2 is pending, not failed"));
    assert_eq!(read(&project, ".orchestrator/TODO.md"), todo);

    // The model gets it right now; retry (as advised) completes the mission.
    std::fs::write(&script, items_script(2, 0, plan)).unwrap();
    let retried = json_run(tmp.path(), &["retry"], None, &project);
    assert_eq!(retried.status.code(), Some(0), "{}", text(&retried.stderr));
    let events = json_lines(&retried);
    assert!(notices(&events).contains("retrying T1, T2"), "{events:?}");
    let report = &report(&events)["report"];
    let items = report["items"].as_array().unwrap();
    assert_eq!(
        (items[0]["state"].as_str(), items[0]["attempts"].as_u64()),
        (Some("done"), Some(1))
    );
    assert_eq!(items[1]["state"], "done");
    let audit = read(&project, ".orchestrator/audit.jsonl");
    assert!(audit.contains("\"task_cli retry\""), "{audit}");
    let journal = read(&project, ".orchestrator/journal.jsonl");
    assert!(journal.contains("\"kind\":\"items_reset\""), "{journal}");
}

#[test]
fn a_failed_planning_is_planned_again_by_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("replan");
    let garbage = r##"[[rule]]
name = "no plan"
agent = "planner"
[[rule.reply]]
text = "I would rather not plan today."
"##;
    let script = write_script(tmp.path(), "plan.toml", &items_script(1, 0, garbage));
    let output = json_run(tmp.path(), &["run", "one file"], Some(&script), &project);
    let events = json_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let advice = notices(&events);
    assert!(
        advice.contains("plan it again with `task_cli resume --dir"),
        "{advice}"
    );
    assert!(report(&events)["report"]["usage"]["planner"]["turns"].as_u64() >= Some(1));
    let state = status(tmp.path(), &project);
    assert_eq!(state["state"], "not planned");
    assert!(
        state["advice"]
            .as_str()
            .unwrap()
            .contains("task_cli resume --dir")
    );

    std::fs::write(&script, items_script(1, 0, "")).unwrap();
    let resumed = json_run(tmp.path(), &["resume"], None, &project);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    let events = json_lines(&resumed);
    assert_eq!(events_named(&events, "plan_committed").len(), 1);
    assert_eq!(read(&project, "f1.txt"), "file 1\n");
    // The failed planning's turns count in the mission's totals.
    let planner = report(&events)["report"]["usage"]["planner"]["turns"]
        .as_u64()
        .unwrap();
    assert!(
        planner >= 4,
        "three rejected plans and the good one: {planner}"
    );
}

#[test]
fn ctrl_c_while_planning_keeps_the_mission_and_resume_plans_it() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("plan-stop");
    let slow = r##"[[rule]]
name = "slow plan"
agent = "planner"
[[rule.reply]]
delay_ms = 60000
text = "# Late\n\n- [ ] T1: file 1\n  - files: f1.txt\n"
"##;
    let script = write_script(tmp.path(), "plan.toml", &items_script(1, 0, slow));
    let mut live = Live::spawn({
        let mut cmd = task_cli(tmp.path());
        cmd.args(["--json", "run", "one file", "--model-script"])
            .arg(&script)
            .arg("--dir")
            .arg(&project);
        cmd
    });
    live.wait_line("the mission to start", LONG, |l| l["event"] == "started");
    std::thread::sleep(Duration::from_millis(500));
    assert!(common::signal(live.child.id(), "INT"));
    let (code, events, stderr) = live.finish(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{stderr}");
    let said = notices(&events);
    assert!(
        said.contains("the mission is kept (it has no plan yet; resume plans it)"),
        "{said}"
    );
    assert!(!said.contains("the plan is kept"), "{said}");
    assert_eq!(report(&events)["report"]["status"]["status"], "stopped");
    assert!(!project.join(".orchestrator/TODO.md").exists());
    let planner = &report(&events)["report"]["usage"]["planner"];
    assert_eq!(planner["abandoned_turns"], 1, "{planner}");
    assert_eq!(planner["failed_turns"], 0, "{planner}");

    std::fs::write(&script, items_script(1, 0, "")).unwrap();
    let resumed = json_run(tmp.path(), &["resume"], None, &project);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert_eq!(read(&project, "f1.txt"), "file 1\n");
}

/// A one-item mission whose Worker turn takes a minute, run with its own TMPDIR (where the
/// scripted model's isolated OpenCode home goes), caught once T1 has started.
struct Busy {
    tmp: tempfile::TempDir,
    project: std::path::PathBuf,
    script: std::path::PathBuf,
    temp: std::path::PathBuf,
    live: Live,
    /// The processes under task_cli then (the OpenCode server and its guard).
    server: Vec<u32>,
}

impl Busy {
    fn start() -> Busy {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("busy");
        let slow = r##"[[rule]]
name = "T1 slow"
agent = "worker"
user = "Your item: T1:"
tool_result = false
[[rule.reply]]
delay_ms = 60000
text = "still thinking"
"##;
        let script = write_script(tmp.path(), "one.toml", &items_script(1, 0, slow));
        let (mut live, temp) = Busy::spawn(tmp.path(), &script, &project);
        live.wait_line("T1 started", LONG, |l| {
            l["event"] == "item_started" && l["item"] == "T1"
        });
        let server = descendants(live.child.id());
        assert!(
            !server.is_empty(),
            "the OpenCode server runs under task_cli"
        );
        Busy {
            tmp,
            project,
            script,
            temp,
            live,
            server,
        }
    }

    /// `task_cli --json run "one file"` with `script`, and its own TMPDIR (returned).
    fn spawn(tmp: &Path, script: &Path, project: &Path) -> (Live, std::path::PathBuf) {
        let temp = tmp.join("tmp");
        std::fs::create_dir(&temp).unwrap();
        let mut cmd = task_cli(tmp);
        cmd.args(["--json", "run", "one file", "--model-script"])
            .arg(script)
            .arg("--dir")
            .arg(project)
            .env("TMPDIR", &temp);
        (Live::spawn(cmd), temp)
    }

    /// What task_cli left in its TMPDIR (OpenCode's own runtime files there are not ours).
    fn homes(temp: &Path) -> Vec<String> {
        std::fs::read_dir(temp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("orch-"))
            .collect()
    }

    /// Once task_cli has gone: neither its server nor its home is left (a SIGKILLed process
    /// takes a moment to finish dying, and the guard removes the home after the server).
    fn nothing_left(server: &[u32], temp: &Path) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while (server.iter().any(|&p| alive(p)) || !Busy::homes(temp).is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &p in server {
            let cmdline = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
            assert!(!alive(p), "process {p} ({cmdline:?}) outlived task_cli");
        }
        let left = Busy::homes(temp);
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
    }

    /// The directory is free and the mission resumes to its end.
    fn resumes(tmp: &Path, script: &Path, project: &Path) {
        std::fs::write(script, items_script(1, 0, "")).unwrap();
        let resumed = json_run(tmp, &["resume"], None, project);
        assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
        assert_eq!(read(project, "f1.txt"), "file 1\n");
    }
}

#[test]
fn a_second_ctrl_c_exits_at_once_and_leaves_no_server_or_home_behind() {
    let Busy {
        tmp,
        project,
        script,
        temp,
        mut live,
        server,
    } = Busy::start();
    let pid = live.child.id();
    assert!(common::signal(pid, "INT"));
    live.wait_line("the first signal's notice", LONG, |l| {
        l["event"] == "notice"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("Press Ctrl-C again"))
    });
    assert!(common::signal(pid, "INT"));
    let (code, events, stderr) = live.finish(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{stderr}");
    // The first signal's stop takes seconds (its turns are abandoned, its sessions ended):
    // the second arrives during it.
    assert!(notices(&events).contains("exiting at once"), "{events:?}");
    Busy::nothing_left(&server, &temp);
    Busy::resumes(tmp.path(), &script, &project);
}

#[test]
fn a_killed_orchestrator_leaves_no_server_or_home_behind_and_resumes() {
    let Busy {
        tmp,
        project,
        script,
        temp,
        live,
        server,
    } = Busy::start();
    assert_eq!(Busy::homes(&temp).len(), 1, "the scripted model's home");
    assert!(common::signal(live.child.id(), "KILL"));
    let (code, _, _) = live.finish(Duration::from_secs(30));
    assert_eq!(code, None, "killed by the signal");
    // Nothing of task_cli's can clean up after SIGKILL: the server's guard stops the server
    // and then removes the home.
    Busy::nothing_left(&server, &temp);
    Busy::resumes(tmp.path(), &script, &project);
}

#[test]
fn sigint_during_start_up_is_reported_and_the_mission_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("early");
    let script = write_script(tmp.path(), "one.toml", &items_script(1, 0, ""));
    let (mut live, temp) = Busy::spawn(tmp.path(), &script, &project);
    live.wait_line("the OpenCode server to be starting", LONG, |l| {
        l["event"] == "step"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("OpenCode server"))
    });
    assert!(common::signal(live.child.id(), "INT"));
    let pid = live.child.id();
    let (code, events, stderr) = live.finish(Duration::from_secs(30));
    assert_eq!(code, Some(130), "{stderr}");
    let last = report(&events);
    assert_eq!(last["exit_code"], 130);
    assert!(
        notices(&events).contains("Stopped before the mission started"),
        "{events:?}"
    );
    assert!(descendants(pid).is_empty());
    // The server was stopped before the home was removed (it writes there as it starts).
    let left = Busy::homes(&temp);
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");

    let resumed = json_run(tmp.path(), &["resume"], None, &project);
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert_eq!(read(&project, "f1.txt"), "file 1\n");
}

#[test]
fn an_exceeded_budget_is_continued_with_a_higher_one() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("budget");
    let script = write_script(tmp.path(), "two.toml", &items_script(2, 0, ""));
    let output = json_run(
        tmp.path(),
        &["run", "two files", "--token-budget", "10"],
        Some(&script),
        &project,
    );
    let events = json_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert_eq!(
        report(&events)["report"]["status"]["status"],
        "budget_exceeded"
    );
    let advice = notices(&events);
    assert!(
        advice.contains("--tokens-budget <more>") || advice.contains("--token-budget <more>"),
        "{advice}"
    );
    let resumed = json_run(
        tmp.path(),
        &["resume", "--token-budget", "100000000"],
        None,
        &project,
    );
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert_eq!(read(&project, "f2.txt"), "file 2\n");
}

#[test]
fn a_round_limit_is_continued_with_more_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("rounds");
    let script = write_script(tmp.path(), "three.toml", &items_script(3, 0, ""));
    let output = json_run(
        tmp.path(),
        &["run", "three files", "--workers", "1", "--max-rounds", "1"],
        Some(&script),
        &project,
    );
    let events = json_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let advice = notices(&events);
    assert!(advice.contains("--max-rounds <more>"), "{advice}");
    let resumed = json_run(
        tmp.path(),
        &["resume", "--max-rounds", "1000"],
        None,
        &project,
    );
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed.stderr));
    assert_eq!(read(&project, "f3.txt"), "file 3\n");
}

#[test]
fn a_failed_integration_is_planned_anew_by_run() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("integrate");
    let failing = r##"[[rule]]
name = "integration fails"
agent = "reviewer"
user = "Every item is done"
[[rule.reply]]
text = "VERDICT: FAIL: nothing works together"
"##;
    let script = write_script(tmp.path(), "int.toml", &items_script(1, 0, failing));
    let output = json_run(tmp.path(), &["run", "one file"], Some(&script), &project);
    let events = json_lines(&output);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let advice = notices(&events);
    assert!(
        advice.contains("plan it anew with `task_cli run 'one file' --dir"),
        "{advice}"
    );
    let state = status(tmp.path(), &project);
    assert_eq!(state["state"], "failed");

    std::fs::write(&script, items_script(1, 0, "")).unwrap();
    let again = json_run(tmp.path(), &["run", "one file"], None, &project);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(notices(&json_lines(&again)).contains("archived"));
}

#[test]
fn a_server_killed_as_items_start_is_replaced_without_charging_attempts() {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("lost");
    let script = write_script(tmp.path(), "four.toml", &items_script(4, 500, ""));
    let mut live = Live::spawn({
        let mut cmd = task_cli(tmp.path());
        cmd.args([
            "--json",
            "run",
            "four files",
            "--workers",
            "4",
            "--model-script",
        ])
        .arg(&script)
        .arg("--dir")
        .arg(&project);
        cmd
    });
    live.wait_line("an item to start", LONG, |l| l["event"] == "item_started");
    for pid in descendants(live.child.id()).iter().rev() {
        let _ = common::signal(*pid, "KILL");
    }
    let (code, events, stderr) = live.finish(LONG);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        !events_named(&events, "reconnecting").is_empty(),
        "{events:?}"
    );
    let report = &report(&events)["report"];
    assert_eq!(report["status"]["status"], "completed");
    assert!(
        report["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["attempts"] == 1),
        "a lost server was charged to an item: {report}"
    );
    for i in 1..=4 {
        assert_eq!(read(&project, &format!("f{i}.txt")), format!("file {i}\n"));
    }
}
