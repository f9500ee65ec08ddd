//! Resilience on a real `opencode serve`: stalled and looping model streams, stop, and
//! kill -9 of the orchestrator process followed by resume.
//!
//! The kill -9 trials run the mission in a child process (this test binary re-executed with
//! `ORCH_CHILD_MISSION` set), kill it at a chosen point of the journal, and resume in this
//! process. Each trial asserts what was lost (nothing), what was redone (nothing finished),
//! and timing bounds.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    CALC, README, Rules, TESTS, calc_plan, ensure, mission_config, project, run, run_mission,
    shared,
};
use libtest_mimic::{Failed, Trial};
use orch_agents::backend::opencode::OpencodeBackendConfig;
use orch_agents::{
    AgentRole, AnyOpencode, Journal, JournalEntry, Mission, MissionConfig, MissionEvent,
    MissionSpec, MissionStatus, ModelSpec,
};
use orch_mvcc::{ItemState, TodoStore};
use orch_testkit::{Exhausted, Fault, Outcome, Reply};
use serde_json::json;

fn short_turns() -> MissionConfig {
    MissionConfig {
        turn_timeout: Duration::from_secs(4),
        ..mission_config()
    }
}

/// The three-item calculator, reviewed by real test runs.
fn calc_rules(rules: &Rules<'_>, worker_delay: Duration) -> Result<(), String> {
    rules.planner(&calc_plan("Calculator"))?;
    for (item, file, content) in [
        ("T1", "calc.py", CALC),
        ("T2", "test_calc.py", TESTS),
        ("T3", "README.md", README),
    ] {
        rules.worker_writes_after(item, file, content, worker_delay)?;
    }
    rules.calc_reviews()
}

fn check_project(dir: &Path) -> Result<(), String> {
    for (file, content) in [
        ("calc.py", CALC),
        ("test_calc.py", TESTS),
        ("README.md", README),
    ] {
        let written =
            std::fs::read_to_string(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
        ensure(written == content, || format!("{file} holds {written:?}"))?;
    }
    let store = TodoStore::open(dir.join(".orchestrator")).map_err(|e| e.to_string())?;
    let (_, plan) = store.snapshot().map_err(|e| e.to_string())?;
    ensure(
        plan.items.iter().all(|i| i.state == ItemState::Done),
        || format!("{plan:#?}"),
    )?;
    store.verify().map_err(|e| e.to_string())?;
    let journal = Journal::read(&dir.join(".orchestrator")).map_err(|e| e.to_string())?;
    let done = journal.done_counts();
    ensure(done.len() == 3 && done.values().all(|n| *n == 1), || {
        format!("done counts {done:?}")
    })?;
    ensure(journal.open_sessions().is_empty(), || {
        format!("open sessions {:?}", journal.open_sessions())
    })
}

/// A model stream that stalls is cut by the turn deadline, aborted, and the turn retried.
fn stalled_stream_is_aborted_and_retried() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "calc [stall]".into(),
        };
        rules.add(
            rules
                .rule("stall once", "worker", &rules.re("Your item: T1:"))?
                .tool_result(false)
                .reply(Reply::fault(Fault::Stall))
                .exhausted(Exhausted::Skip),
        )?;
        calc_rules(&rules, Duration::ZERO)?;
        let started = Instant::now();
        let (report, events) = run_mission(&shared, dir.path(), &rules.tag, short_turns()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        ensure(started.elapsed() < Duration::from_secs(90), || {
            format!("took {:?}", started.elapsed())
        })?;
        ensure(
            events.iter().any(|e| matches!(e, MissionEvent::Retrying { error, item: Some(i), .. } if i == "T1" && error.contains("timed out"))),
            || "the stalled turn was not retried after its deadline".into(),
        )?;
        check_project(dir.path())
    })
}

/// A stream cut without `finish_reason` makes OpenCode call the model again and again; the
/// turn deadline aborts the loop, the retry succeeds, and nothing keeps generating afterwards.
fn looping_cut_stream_is_aborted() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "calc [cut]".into(),
        };
        rules.add(
            rules
                .rule("cut loop", "worker", &rules.re("Your item: T3:"))?
                .reply(
                    Reply::fault(Fault::Cut)
                        .with_text("partial answer")
                        .delay(Duration::from_millis(700))
                        .times(6),
                )
                .exhausted(Exhausted::Skip),
        )?;
        calc_rules(&rules, Duration::ZERO)?;
        let (report, events) = run_mission(&shared, dir.path(), &rules.tag, short_turns()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}\n{events:#?}")
        })?;
        let cuts = shared
            .model
            .requests()
            .iter()
            .filter(|r| r.rule.as_deref() == Some("cut loop"))
            .count();
        ensure(cuts == 6, || format!("{cuts} cut streams served"))?;
        ensure(
            events.iter().any(|e| matches!(e, MissionEvent::Retrying { error, item: Some(i), .. } if i == "T3" && error.contains("timed out"))),
            || "the looping turn was not aborted at its deadline".into(),
        )?;
        // Nothing of this mission talks to the model any more.
        let before = shared
            .model
            .requests()
            .iter()
            .filter(|r| {
                r.view
                    .as_ref()
                    .is_some_and(|v| v.last_user.contains("calc [cut]"))
            })
            .count();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = shared
            .model
            .requests()
            .iter()
            .filter(|r| {
                r.view
                    .as_ref()
                    .is_some_and(|v| v.last_user.contains("calc [cut]"))
            })
            .count();
        ensure(before == after, || {
            format!("{} model calls after the mission ended", after - before)
        })?;
        check_project(dir.path())
    })
}

/// Stop mid-turn: the mission ends within 2 s, no session of the project is still busy on the
/// server, and a resumed mission completes the work.
fn stop_mid_turn_then_resume() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "calc [stop]".into(),
        };
        rules.add(
            rules
                .rule("slow first write", "worker", &rules.re("Your item: T1:"))?
                .tool_result(false)
                .reply(
                    Reply::tool_call("write", json!({"filePath": "calc.py", "content": CALC}))
                        .delay(Duration::from_secs(30)),
                )
                .exhausted(Exhausted::Skip),
        )?;
        calc_rules(&rules, Duration::ZERO)?;
        let backend = Arc::new(
            AnyOpencode::connect_server(shared.server(), dir.path(), backend_config())
                .await
                .map_err(|e| e.to_string())?,
        );
        let mission = Mission::new(
            Arc::clone(&backend),
            MissionSpec::new(&rules.tag, dir.path()).config(mission_config()),
        );
        let stop = mission.spec().stop_handle();
        let mut events = mission.spec().subscribe();
        let handle = tokio::spawn(mission.run());
        loop {
            match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                Ok(Ok(MissionEvent::ItemStarted { item, .. })) if item == "T1" => break,
                Ok(Ok(_)) => {}
                other => return Err(format!("T1 never started: {other:?}")),
            }
        }
        // Let the slow request reach the model, then stop.
        shared
            .model
            .wait_until_async(Duration::from_secs(20), |r| {
                r.iter()
                    .any(|r| r.rule.as_deref() == Some("slow first write"))
            })
            .await;
        let stopped_at = Instant::now();
        stop.cancel();
        let report = handle
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let took = stopped_at.elapsed();
        ensure(took < Duration::from_secs(2), || {
            format!("stop took {took:?}")
        })?;
        ensure(report.status == MissionStatus::Stopped, || {
            format!("{report:#?}")
        })?;
        backend.shutdown().await;
        let busy = common::busy_sessions(shared.server(), dir.path()).await?;
        ensure(busy.is_empty(), || {
            format!("sessions still busy after stop: {busy:?}")
        })?;
        let (resumed, events) =
            run_mission(&shared, dir.path(), &rules.tag, mission_config()).await?;
        ensure(resumed.status == MissionStatus::Completed, || {
            format!("{resumed:#?}")
        })?;
        ensure(
            matches!(
                events.first(),
                Some(MissionEvent::Started { resumed: true, .. })
            ),
            || format!("{:?}", events.first()),
        )?;
        check_project(dir.path())
    })
}

fn backend_config() -> OpencodeBackendConfig {
    OpencodeBackendConfig {
        default_model: Some(ModelSpec::new("fake", "fake-model")),
        silence_probe: Duration::from_secs(1),
        settle: Duration::from_secs(2),
        toasts: false,
        ..OpencodeBackendConfig::default()
    }
}

/// Runs a mission in a child process (see `child_main`).
fn spawn_child(shared: &common::Shared, dir: &Path, request: &str) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    Command::new(exe)
        .env("ORCH_CHILD_MISSION", "1")
        .env("ORCH_CHILD_URL", shared.server().base_url())
        .env("ORCH_CHILD_USER", shared.server().username())
        .env("ORCH_CHILD_PASSWORD", shared.server().password())
        .env("ORCH_CHILD_DIR", dir)
        .env(
            "ORCH_CHILD_GENERATION",
            match shared.server().generation() {
                orch_opencode::Generation::V2 => "v2",
                _ => "v1",
            },
        )
        .env("ORCH_CHILD_REQUEST", request)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())
}

/// Waits until the journal in `dir` holds an entry `point` accepts, then kills the child
/// with SIGKILL.
async fn kill_at(
    mut child: Child,
    dir: &Path,
    point: impl Fn(&JournalEntry) -> bool,
) -> Result<(), String> {
    let state = dir.join(".orchestrator");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!(
                "the child mission ended by itself ({status}) before the kill point"
            ));
        }
        let reached = Journal::read(&state)
            .map(|j| j.records.iter().any(|r| point(&r.entry)))
            .unwrap_or(false);
        if reached {
            child.kill().map_err(|e| e.to_string())?;
            child.wait().map_err(|e| e.to_string())?;
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err("the kill point was never reached".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kill9_then_resume(tag: &str, point: fn(&JournalEntry) -> bool) -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: tag.into(),
        };
        // Slow Worker turns so the kill lands while they run.
        calc_rules(&rules, Duration::from_millis(800))?;
        let child = spawn_child(&shared, dir.path(), tag)?;
        kill_at(child, dir.path(), point).await?;
        let (report, events) = run_mission(&shared, dir.path(), tag, mission_config()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        ensure(
            matches!(
                events.first(),
                Some(MissionEvent::Started { resumed: true, .. })
            ),
            || format!("{:?}", events.first()),
        )?;
        check_project(dir.path())?;
        // The planner ran once in all (the resumed run found the plan).
        let plans = shared
            .model
            .requests()
            .iter()
            .filter(|r| {
                r.rule.as_deref() == Some(&format!("{tag} plan")) && r.outcome == Outcome::Text
            })
            .count();
        ensure(plans == 1, || format!("the plan was made {plans} times"))
    })
}

fn kill9_after_planning() -> Result<(), Failed> {
    kill9_then_resume("calc [kill plan]", |e| {
        matches!(
            e,
            JournalEntry::Event {
                event: MissionEvent::PlanCommitted { .. }
            }
        )
    })
}

fn kill9_during_worker_turns() -> Result<(), Failed> {
    kill9_then_resume("calc [kill work]", |e| {
        matches!(
            e,
            JournalEntry::Event {
                event: MissionEvent::ItemStarted { .. }
            }
        )
    })
}

fn kill9_during_review() -> Result<(), Failed> {
    kill9_then_resume("calc [kill review]", |e| {
        matches!(
            e,
            JournalEntry::SessionOpened {
                role: AgentRole::Reviewer,
                ..
            }
        )
    })
}

/// The OpenCode server the orchestrator started dies mid-turn: the mission ends as
/// server-lost without charging the item, the supervisor starts a new server (same HOME, so
/// sessions survive) and resumes, and the mission completes with nothing lost.
fn server_killed_mid_turn_is_restarted() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let tag = "calc [server loss]";
        let rules = Rules {
            model: &shared.model,
            tag: tag.into(),
        };
        calc_rules(&rules, Duration::from_millis(1500))?;
        let home = orch_testkit::opencode::IsolatedHome::new().map_err(|e| e.to_string())?;
        let servers: Arc<std::sync::Mutex<Vec<Arc<orch_opencode::OpencodeServer>>>> =
            Arc::default();
        let supervisor = orch_agents::Supervisor::new(
            MissionSpec::new(tag, dir.path()).config(mission_config()),
        )
        .max_restarts(2);
        let mut events = supervisor.spec().subscribe();
        let started_servers = Arc::clone(&servers);
        let home_path = home.path().to_owned();
        let project_dir = dir.path().to_owned();
        let run = tokio::spawn(supervisor.run(move |_attempt| {
            let servers = Arc::clone(&started_servers);
            let home = home_path.clone();
            let project_dir = project_dir.clone();
            async move {
                let server = orch_opencode::OpencodeServer::builder()
                    .binary(orch_testkit::opencode::require_binary())
                    .project_dir(&project_dir)
                    .isolated_home(&home)
                    .remove_home_if_orphaned(true)
                    .start_async()
                    .await
                    .map_err(|e| orch_agents::BackendError::ServerLost {
                        message: e.to_string(),
                    })?;
                let backend =
                    AnyOpencode::connect_server(&server, &project_dir, backend_config()).await;
                servers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Arc::new(server));
                backend.map(Arc::new)
            }
        }));
        // Kill the first server while T1's Worker turn is waiting on the (slow) model.
        loop {
            match tokio::time::timeout(Duration::from_secs(60), events.recv()).await {
                Ok(Ok(MissionEvent::ItemStarted { item, .. })) if item == "T1" => break,
                Ok(Ok(_)) => {}
                other => return Err(format!("T1 never started: {other:?}")),
            }
        }
        shared
            .model
            .wait_until_async(Duration::from_secs(20), |r| {
                r.iter()
                    .any(|r| r.rule.as_deref() == Some("calc [server loss] T1 write"))
            })
            .await;
        let first = servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
            .ok_or("no server")?;
        first.kill();
        let killed_at = Instant::now();
        let (report, restarts) = tokio::time::timeout(Duration::from_secs(240), run)
            .await
            .map_err(|_| "the supervised mission did not end".to_owned())?
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        ensure(restarts == 1, || format!("{restarts} restarts"))?;
        ensure(killed_at.elapsed() < Duration::from_secs(120), || {
            format!("recovery took {:?}", killed_at.elapsed())
        })?;
        let t1 = report.items.iter().find(|i| i.id == "T1").ok_or("no T1")?;
        ensure(t1.attempts == 1, || {
            let journal = Journal::read(&dir.path().join(".orchestrator"))
                .map(|j| {
                    j.records
                        .iter()
                        .map(|r| format!("{} {:?}", r.at_ms, r.entry))
                        .collect::<Vec<_>>()
                        .join("\n")
                })
                .unwrap_or_default();
            format!("the server loss was charged to T1: {t1:?}\njournal:\n{journal}")
        })?;
        check_project(dir.path())
    })
}

/// A real SIGINT to an orchestrator process mid-turn: it exits within 2 s (exit code 130),
/// no session of the project is still busy on the server, and resume completes the mission.
fn sigint_stops_the_process_within_two_seconds() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let tag = "calc [sigint]";
        let rules = Rules {
            model: &shared.model,
            tag: tag.into(),
        };
        rules.add(
            rules
                .rule("sigint slow write", "worker", &rules.re("Your item: T1:"))?
                .tool_result(false)
                .reply(
                    Reply::tool_call("write", json!({"filePath": "calc.py", "content": CALC}))
                        .delay(Duration::from_secs(30)),
                )
                .exhausted(Exhausted::Skip),
        )?;
        calc_rules(&rules, Duration::ZERO)?;
        let mut child = spawn_child(&shared, dir.path(), tag)?;
        let reached = shared
            .model
            .wait_until_async(Duration::from_secs(60), |r| {
                r.iter()
                    .any(|r| r.rule.as_deref() == Some("sigint slow write"))
            })
            .await;
        if !reached {
            let _ = child.kill();
            return Err("the slow Worker turn never reached the model".into());
        }
        let signalled = Instant::now();
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .map_err(|e| e.to_string())?;
        ensure(status.success(), || "kill -INT failed".into())?;
        let exit = loop {
            if let Some(exit) = child.try_wait().map_err(|e| e.to_string())? {
                break exit;
            }
            if signalled.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return Err("the orchestrator did not exit within 10 s of SIGINT".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = signalled.elapsed();
        ensure(took < Duration::from_secs(2), || {
            format!("exit took {took:?}")
        })?;
        ensure(exit.code() == Some(130), || format!("exit status {exit}"))?;
        let busy = common::busy_sessions(shared.server(), dir.path()).await?;
        ensure(busy.is_empty(), || {
            format!("sessions still busy after SIGINT: {busy:?}")
        })?;
        let store = TodoStore::open(dir.path().join(".orchestrator")).map_err(|e| e.to_string())?;
        let (_, plan) = store.snapshot().map_err(|e| e.to_string())?;
        ensure(
            plan.items.iter().all(|i| i.state != ItemState::InProgress),
            || format!("{plan:#?}"),
        )?;
        let (report, _) = run_mission(&shared, dir.path(), tag, mission_config()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        check_project(dir.path())
    })
}

/// The child side of the kill -9 trials: run the mission and exit.
fn child_main() -> ! {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let code = runtime.block_on(async {
        let dir = PathBuf::from(env("ORCH_CHILD_DIR"));
        let generation = match env("ORCH_CHILD_GENERATION").as_str() {
            "v2" => orch_opencode::Generation::V2,
            _ => orch_opencode::Generation::V1,
        };
        let (user, password) = (env("ORCH_CHILD_USER"), env("ORCH_CHILD_PASSWORD"));
        let Ok(backend) = AnyOpencode::connect_url(
            &env("ORCH_CHILD_URL"),
            Some((&user, &password)),
            generation,
            &dir,
            backend_config(),
        )
        .await
        else {
            return 3;
        };
        let mission = Mission::new(
            Arc::new(backend),
            MissionSpec::new(env("ORCH_CHILD_REQUEST"), &dir).config(mission_config()),
        );
        // SIGINT (Ctrl-C) cancels the one stop token every loop and wait watches. The handler
        // is installed before the mission starts (a lazily polled `ctrl_c()` would leave a
        // window in which SIGINT still kills the process).
        let stop = mission.spec().stop_handle();
        let Ok(mut interrupt) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        else {
            return 3;
        };
        tokio::spawn(async move {
            if interrupt.recv().await.is_some() {
                stop.cancel();
            }
        });
        match mission.run().await {
            Ok(report) if report.status.is_success() => 0,
            Ok(report) if report.status == MissionStatus::Stopped => 130,
            _ => 1,
        }
    });
    std::process::exit(code)
}

fn main() {
    if std::env::var_os("ORCH_CHILD_MISSION").is_some() {
        child_main();
    }
    let trials = vec![
        Trial::test(
            "stalled_stream_is_aborted_and_retried",
            stalled_stream_is_aborted_and_retried,
        ),
        Trial::test(
            "looping_cut_stream_is_aborted",
            looping_cut_stream_is_aborted,
        ),
        Trial::test("stop_mid_turn_then_resume", stop_mid_turn_then_resume),
        Trial::test("kill9_after_planning", kill9_after_planning),
        Trial::test("kill9_during_worker_turns", kill9_during_worker_turns),
        Trial::test("kill9_during_review", kill9_during_review),
        Trial::test(
            "server_killed_mid_turn_is_restarted",
            server_killed_mid_turn_is_restarted,
        ),
        Trial::test(
            "sigint_stops_the_process_within_two_seconds",
            sigint_stops_the_process_within_two_seconds,
        ),
    ];
    common::run_trials(trials);
}
