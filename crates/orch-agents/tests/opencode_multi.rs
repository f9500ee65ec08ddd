//! Missions on several real OpenCode servers behind one [`MultiBackend`]: sessions spread
//! over the servers, and a server killed mid-mission loses no item.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Rules, connect, ensure, mission_config, project, run, shared};
use libtest_mimic::{Failed, Trial};
use orch_agents::backend::multi::MultiBackend;
use orch_agents::{AgentSet, Mission, MissionSpec};
use orch_agents::{MissionEvent, MissionStatus};
use orch_opencode::OpencodeServer;
use orch_testkit::opencode::{IsolatedHome, require_binary};

/// A second server of its own (home, working directory), serving the same projects.
struct Extra {
    server: OpencodeServer,
    _home: IsolatedHome,
    _cwd: tempfile::TempDir,
}

fn extra_server() -> Result<Extra, String> {
    let home = IsolatedHome::new().map_err(|e| e.to_string())?;
    let cwd = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = OpencodeServer::builder()
        .binary(require_binary())
        .project_dir(cwd.path())
        .isolated_home(home.path())
        .start()
        .map_err(|e| e.to_string())?;
    Ok(Extra {
        server,
        _home: home,
        _cwd: cwd,
    })
}

/// The shared server and `extra` behind one [`MultiBackend`], both serving `dir`.
async fn two_servers(
    shared: &common::Shared,
    extra: &OpencodeServer,
    dir: &std::path::Path,
) -> Result<Arc<MultiBackend>, String> {
    let backends = vec![
        connect(&shared.server, dir).await?,
        connect(extra, dir).await?,
    ];
    Ok(Arc::new(
        MultiBackend::new(backends).map_err(|e| e.to_string())?,
    ))
}

/// `n` independent items, each writing `wN.txt` (after `delay`), each reviewed by a real
/// `test -s`.
fn wide_mission(rules: &Rules<'_>, n: usize, delay: Duration) -> Result<(), String> {
    let mut plan = format!("# {}\n\nIndependent files.\n\n", rules.tag);
    for i in 1..=n {
        plan.push_str(&format!(
            "- [ ] T{i}: write w{i}.txt\n  - files: w{i}.txt\n"
        ));
    }
    rules.planner(&plan)?;
    for i in 1..=n {
        rules.worker_writes_after(
            &format!("T{i}"),
            &format!("w{i}.txt"),
            &format!("item {i}\n"),
            delay,
        )?;
        rules.reviewer_runs(
            &format!("Review item T{i}:"),
            &format!("T{i}"),
            &format!("test -s w{i}.txt"),
        )?;
    }
    rules.reviewer_runs("Every item is done", "integration", "ls w1.txt")
}

async fn run_multi(
    multi: Arc<MultiBackend>,
    dir: &std::path::Path,
    request: &str,
    on_event: impl Fn(&MissionEvent) + Send + 'static,
) -> Result<orch_agents::MissionReport, String> {
    let mission = Mission::new(
        Arc::clone(&multi),
        MissionSpec::new(request, dir)
            .config(mission_config())
            .agents(AgentSet::builtin()),
    );
    let mut rx = mission.spec().subscribe();
    let watcher = tokio::spawn(async move {
        while let Ok(event) = rx.recv().await {
            on_event(&event);
            if matches!(event, MissionEvent::Finished { .. }) {
                break;
            }
        }
    });
    let report = tokio::time::timeout(Duration::from_secs(240), mission.run())
        .await
        .map_err(|_| "the mission did not end within 240 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = watcher.await;
    multi.shutdown().await;
    Ok(report)
}

fn sessions_spread_over_two_servers() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    let extra = extra_server()?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "two servers [spread]".into(),
        };
        wide_mission(&rules, 4, Duration::from_millis(300))?;
        let multi = two_servers(&shared, &extra.server, dir.path()).await?;
        let report = run_multi(Arc::clone(&multi), dir.path(), &rules.tag, |_| {}).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        for i in 1..=4 {
            let text = std::fs::read_to_string(dir.path().join(format!("w{i}.txt")))
                .map_err(|e| format!("w{i}.txt: {e}"))?;
            ensure(text == format!("item {i}\n"), || {
                format!("w{i}.txt: {text:?}")
            })?;
        }
        let turns = multi.turns();
        ensure(turns.len() == 2 && turns.iter().all(|t| *t > 0), || {
            format!("turns per server: {turns:?}")
        })?;
        ensure(multi.lost().is_empty(), || {
            format!("lost: {:?}", multi.lost())
        })
    })
}

fn a_server_killed_mid_mission_loses_no_item() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    let extra = extra_server()?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "two servers [one dies]".into(),
        };
        // Worker turns take 1.5 s: both Workers are mid-turn when the server dies.
        wide_mission(&rules, 4, Duration::from_millis(1500))?;
        let multi = two_servers(&shared, &extra.server, dir.path()).await?;
        // Kill the second server while a Worker turn runs on it: once it holds a session
        // (a busy machine may take a while to open it), 300 ms into the 1.5 s turn.
        let victim = Arc::new(parking_lot::Mutex::new(Some(extra)));
        let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kill_victim, kill_started) = (Arc::clone(&victim), Arc::clone(&started));
        let watched = Arc::clone(&multi);
        let handle = tokio::runtime::Handle::current();
        let report = run_multi(Arc::clone(&multi), dir.path(), &rules.tag, move |event| {
            if matches!(event, MissionEvent::ItemStarted { .. })
                && kill_started.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1
            {
                let victim = Arc::clone(&kill_victim);
                let multi = Arc::clone(&watched);
                handle.spawn(async move {
                    for _ in 0..200 {
                        if multi.open_sessions().get(1).copied().unwrap_or(0) > 0 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    drop(victim.lock().take());
                });
            }
        })
        .await?;
        ensure(victim.lock().is_none(), || {
            "the server was never killed".into()
        })?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        for i in 1..=4 {
            ensure(dir.path().join(format!("w{i}.txt")).is_file(), || {
                format!("w{i}.txt missing")
            })?;
            let item = report.items.iter().find(|it| it.id == format!("T{i}"));
            ensure(item.is_some_and(|it| it.state == "done"), || {
                format!("T{i}: {item:?}")
            })?;
        }
        ensure(multi.lost() == [1], || format!("lost: {:?}", multi.lost()))?;
        ensure(multi.migrations() >= 1, || {
            format!("no session moved (turns per server {:?})", multi.turns())
        })
    })
}

fn main() {
    let trials = vec![
        Trial::test(
            "sessions_spread_over_two_servers",
            sessions_spread_over_two_servers,
        ),
        Trial::test(
            "a_server_killed_mid_mission_loses_no_item",
            a_server_killed_mid_mission_loses_no_item,
        ),
    ];
    common::run_trials(trials);
}
