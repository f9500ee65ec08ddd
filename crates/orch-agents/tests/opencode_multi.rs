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
use orch_testkit::opencode::{TestServer, require_opencode};

/// A second server of its own (home, working directory), serving the same projects.
struct Extra {
    server: TestServer,
}

fn extra_server(shared: &common::Shared) -> Result<Extra, String> {
    let server = TestServer::builder(shared.model.base_url())
        .binary(require_opencode())
        .start()
        .map_err(|e| e.to_string())?;
    Ok(Extra { server })
}

/// The shared server and `extra` behind one [`MultiBackend`], both serving `dir`.
async fn two_servers(
    shared: &common::Shared,
    extra: &OpencodeServer,
    dir: &std::path::Path,
) -> Result<Arc<MultiBackend>, String> {
    let backends = vec![
        connect(shared.server(), dir).await?,
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
    let extra = extra_server(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "two servers [spread]".into(),
        };
        wide_mission(&rules, 4, Duration::from_millis(300))?;
        let multi = two_servers(&shared, extra.server.server(), dir.path()).await?;
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
    let extra = extra_server(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "two servers [one dies]".into(),
        };
        // Worker turns take 1.5 s: both Workers are mid-turn when the server dies.
        wide_mission(&rules, 4, Duration::from_millis(1500))?;
        let multi = two_servers(&shared, extra.server.server(), dir.path()).await?;
        // Kill the second server while a Worker turn runs on it: once the model holds the
        // (1.5 s) first request of a Worker session of that server, whatever the machine's load.
        let victim = Arc::new(tokio::sync::Mutex::new(Some(extra)));
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kill_victim, kill_armed) = (Arc::clone(&victim), Arc::clone(&armed));
        let watcher = Arc::clone(&shared);
        let project_dir = dir.path().to_owned();
        let write_rule = format!("{} ", rules.tag);
        let handle = tokio::runtime::Handle::current();
        let report = run_multi(Arc::clone(&multi), dir.path(), &rules.tag, move |event| {
            if matches!(event, MissionEvent::ItemStarted { .. })
                && !kill_armed.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let victim = Arc::clone(&kill_victim);
                let (shared, project_dir, write_rule) = (
                    Arc::clone(&watcher),
                    project_dir.clone(),
                    write_rule.clone(),
                );
                handle.spawn(async move {
                    for _ in 0..2400 {
                        let mut held = victim.lock().await;
                        let Some(extra) = held.as_ref() else { return };
                        let ours = common::session_ids(extra.server.server(), &project_dir)
                            .await
                            .unwrap_or_default();
                        let working = shared.model.requests().iter().any(|r| {
                            r.rule.as_deref().is_some_and(|rule| {
                                rule.starts_with(&write_rule) && rule.ends_with(" write")
                            }) && r.session.as_ref().is_some_and(|s| ours.contains(s))
                        });
                        if working {
                            drop(held.take());
                            return;
                        }
                        drop(held);
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                });
            }
        })
        .await?;
        ensure(victim.lock().await.is_none(), || {
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
