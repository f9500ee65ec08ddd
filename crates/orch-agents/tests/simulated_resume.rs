//! Stop, resume, crashes and server loss on the simulated backend: a mission picks up where
//! the journal says it was, without redoing finished work.

mod sim;

use std::sync::Arc;
use std::time::Duration;

use orch_agents::{
    AgentRole, BackendError, Latency, Mission, MissionEvent, MissionSpec, MissionStatus,
    SimulatedBackend,
};
use orch_mvcc::{ItemState, TodoStore};
use parking_lot::Mutex;
use sim::{Log, PLAN, config, fast, states};

#[tokio::test]
async fn stop_ends_the_mission_quickly_and_resume_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(
        SimulatedBackend::builder()
            .latency(Latency::Fixed(Duration::from_millis(300)))
            .plan(PLAN)
            .build(),
    );
    let mission = Mission::new(
        Arc::clone(&backend),
        MissionSpec::new("build a thing", dir.path()).config(config()),
    );
    let stop = mission.spec().stop_handle();
    let mut events = mission.spec().subscribe();
    let handle = tokio::spawn(mission.run());
    // Stop once the first Worker is running.
    loop {
        if let MissionEvent::ItemStarted { .. } = events.recv().await.unwrap() {
            break;
        }
    }
    let stopped_at = std::time::Instant::now();
    stop.cancel();
    let report = handle.await.unwrap().unwrap();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped_at.elapsed()
    );
    assert_eq!(report.status, MissionStatus::Stopped);
    assert_eq!(backend.open_sessions(), 0, "every session was closed");
    // Nothing is left "in progress": interrupted items went back to pending.
    assert!(
        states(dir.path())
            .iter()
            .all(|(_, s)| *s != ItemState::InProgress)
    );
    let worker_turns_before = report.usage.get(&AgentRole::Worker).map_or(0, |u| u.turns);

    let resumed = Mission::new(
        Arc::new(fast().build()),
        MissionSpec::new("build a thing", dir.path()).config(config()),
    );
    let mut events = resumed.spec().subscribe();
    let report = resumed.run().await.unwrap();
    assert_eq!(report.status, MissionStatus::Completed);
    assert!(matches!(
        events.try_recv().unwrap(),
        MissionEvent::Started { resumed: true, .. }
    ));
    let mut planned_again = false;
    while let Ok(event) = events.try_recv() {
        planned_again |= matches!(event, MissionEvent::PlanCommitted { .. });
    }
    // The resumed run did not plan again and ran only what was left; the report counts both
    // runs (the first run's Planner turn included).
    assert!(!planned_again);
    assert_eq!(report.runs.len(), 2);
    assert_eq!(report.usage[&AgentRole::Planner].turns, 1);
    let worker_turns = report.usage[&AgentRole::Worker].turns;
    assert!(worker_turns >= worker_turns_before && worker_turns <= 3 + 1);
    assert!(
        states(dir.path())
            .iter()
            .all(|(_, s)| *s == ItemState::Done)
    );
}

/// A person adds an item to TODO.md while the mission runs: the Commander's next write
/// merges it (it is not overwritten) and the new item is scheduled, worked and reviewed.
#[tokio::test]
async fn an_item_added_to_todo_md_mid_mission_is_merged_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::default();
    let backend = log.passing(
        SimulatedBackend::builder()
            .latency(Latency::Fixed(Duration::from_millis(30)))
            .plan(PLAN),
    );
    let mission = Mission::new(
        Arc::new(backend),
        MissionSpec::new("build a thing", dir.path()).config(config()),
    );
    let mut events = mission.spec().subscribe();
    let state = dir.path().join(".orchestrator");
    let editor = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if matches!(event, MissionEvent::ItemStarted { .. }) {
                let store = TodoStore::open(&state).unwrap();
                store
                    .update("person", |p| {
                        p.push(
                            orch_mvcc::Item::new(orch_mvcc::ItemId::new("T9").unwrap(), "extra")
                                .with_files(["extra.txt"]),
                        );
                    })
                    .unwrap();
                return;
            }
        }
    });
    let report = mission.run().await.unwrap();
    editor.await.unwrap();
    assert_eq!(report.status, MissionStatus::Completed, "{report:#?}");
    let t9 = report.items.iter().find(|i| i.id == "T9");
    assert!(t9.is_some_and(|i| i.state == "done"), "{:?}", report.items);
    assert!(
        log.prompts(AgentRole::Worker)
            .iter()
            .any(|p| p.contains("Your item: T9:"))
    );
    assert_eq!(states(dir.path()).len(), 4);
    assert!(
        states(dir.path())
            .iter()
            .all(|(_, s)| *s == ItemState::Done)
    );
}

/// TODO.md is written behind the journal, so a crash can leave the store behind it: T1's
/// review passed and T3's Worker turn finished per the journal, while the store still shows
/// both pending. Resume trusts the journal: T1 is done without a turn, T3 goes straight to
/// review, and only T2 gets a Worker.
#[tokio::test]
async fn resume_rebuilds_from_the_journal_what_the_store_had_not_written() {
    use orch_agents::{Journal, JournalEntry};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".orchestrator");
    let store = TodoStore::open(&state).unwrap();
    store
        .update("commander", |p| *p = orch_mvcc::parse(PLAN).unwrap())
        .unwrap();
    drop(store);
    let (mut journal, _) = Journal::open(&state, false).unwrap();
    let ev = |event| JournalEntry::Event { event };
    for (item, reviewed) in [("T1", true), ("T3", false)] {
        journal
            .append(ev(MissionEvent::ItemStarted {
                item: item.into(),
                attempt: 1,
                lane: 0,
                warm: false,
            }))
            .unwrap();
        journal
            .append(ev(MissionEvent::TurnFinished {
                role: AgentRole::Worker,
                item: Some(item.into()),
                tokens: Default::default(),
                elapsed_ms: 5,
                tool_calls: 0,
                cost: 0.0,
                model: None,
            }))
            .unwrap();
        if reviewed {
            journal
                .append(ev(MissionEvent::Reviewed {
                    item: item.into(),
                    verdict: orch_agents::Verdict::Pass,
                }))
                .unwrap();
            journal
                .append(ev(MissionEvent::ItemDone {
                    item: item.into(),
                    attempts: 1,
                }))
                .unwrap();
        }
    }
    drop(journal);
    let log = Log::default();
    let backend = log.passing(fast());
    let report = Mission::new(
        Arc::new(backend),
        MissionSpec::new("build a thing", dir.path()).config(config()),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(report.status, MissionStatus::Completed, "{report:#?}");
    let workers = log.prompts(AgentRole::Worker);
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert!(workers[0].contains("Your item: T2:"));
    let reviews = log.prompts(AgentRole::Reviewer);
    assert!(reviews.iter().any(|p| p.contains("Review item T3:")));
    assert!(!reviews.iter().any(|p| p.contains("Review item T1:")));
    let done = orch_agents::Journal::read(&state).unwrap().done_counts();
    assert!(done.values().all(|n| *n == 1), "{done:?}");
    assert!(
        states(dir.path())
            .iter()
            .all(|(_, s)| *s == ItemState::Done)
    );
}

/// A process dying at any instant (the mission future dropped: no cleanup runs) loses nothing:
/// the resumed mission completes, no item is marked done twice (the journal says so), and
/// sessions the dead run left open are closed.
#[tokio::test]
async fn a_crash_at_any_point_resumes_without_redoing_finished_work() {
    let mut cleaned_somewhere = false;
    let mut crashes = 0;
    for crash_after_ms in [3u64, 12, 20, 31, 45, 60] {
        let dir = tempfile::tempdir().unwrap();
        let first = Mission::new(
            Arc::new(
                SimulatedBackend::builder()
                    .latency(Latency::Fixed(Duration::from_millis(6)))
                    .plan(PLAN)
                    .build(),
            ),
            MissionSpec::new("build a thing", dir.path()).config(config()),
        );
        // The crashed run gets a runtime of its own, dropped at the crash point like a dying
        // process: every task stops, and no blocking store write outlives it into the
        // resumed run (a dropped future alone would leave its spawn_blocking work running).
        let finished = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(async move {
                tokio::time::timeout(Duration::from_millis(crash_after_ms), first.run())
                    .await
                    .is_ok()
            });
            drop(runtime);
            result
        })
        .join()
        .unwrap();
        if finished {
            continue; // it finished before the crash point; nothing to resume
        }
        crashes += 1;
        let backend = Arc::new(fast().build());
        let resumed = Mission::new(
            Arc::clone(&backend),
            MissionSpec::new("build a thing", dir.path()).config(config()),
        );
        let report = resumed.run().await.unwrap();
        assert_eq!(
            report.status,
            MissionStatus::Completed,
            "crash at {crash_after_ms} ms"
        );
        assert!(
            states(dir.path())
                .iter()
                .all(|(_, s)| *s == ItemState::Done),
            "crash at {crash_after_ms} ms"
        );
        let journal = orch_agents::Journal::read(&dir.path().join(".orchestrator")).unwrap();
        for (item, times) in journal.done_counts() {
            assert_eq!(
                times, 1,
                "{item} done {times} times (crash at {crash_after_ms} ms)"
            );
        }
        assert_eq!(journal.done_counts().len(), 3);
        assert!(
            journal.open_sessions().is_empty(),
            "crash at {crash_after_ms} ms"
        );
        cleaned_somewhere |= backend.cleaned_up() > 0;
        TodoStore::open(dir.path().join(".orchestrator"))
            .unwrap()
            .verify()
            .unwrap();
    }
    assert!(crashes >= 4, "only {crashes} runs crashed mid-mission");
    assert!(cleaned_somewhere, "no crash point left a session open");
}

/// A backend whose server "dies" mid-mission: the mission ends as ServerLost without charging
/// attempts, and the supervisor reconnects and resumes to completion.
#[tokio::test]
async fn the_supervisor_resumes_after_server_loss() {
    let dir = tempfile::tempdir().unwrap();
    let lost_once = Arc::new(Mutex::new(false));
    let flag = Arc::clone(&lost_once);
    // Hooks reach the missions of every connection: each prompt is marked.
    let hooks = orch_agents::HookRegistry::builder()
        .register(
            orch_agents::HookSpec::new("mark", orch_agents::HookPhase::Normal),
            |event: &mut orch_agents::HookEvent| {
                if let orch_agents::HookEvent::BeforeTurn { prompt, .. } = event {
                    prompt.push_str("\nSUPERVISED");
                }
                orch_agents::HookDecision::Continue
            },
        )
        .build()
        .unwrap();
    // (attempt, prompt marked) of every turn.
    let seen: Arc<Mutex<Vec<(u32, bool)>>> = Arc::default();
    let record = Arc::clone(&seen);
    let supervisor = orch_agents::Supervisor::new(
        MissionSpec::new("build a thing", dir.path())
            .config(config())
            .hooks(Arc::new(hooks)),
    );
    let mut events = supervisor.spec().subscribe();
    let (report, restarts) = supervisor
        .run(move |attempt| {
            let flag = Arc::clone(&flag);
            let record = Arc::clone(&record);
            async move {
                let backend = fast()
                    .responder(move |turn| {
                        record
                            .lock()
                            .push((attempt, turn.prompt.ends_with("\nSUPERVISED")));
                        let mut lost = flag.lock();
                        if attempt == 0 && turn.role == AgentRole::Worker && !*lost {
                            *lost = true;
                            return Err(BackendError::ServerLost {
                                message: "connection refused".into(),
                            });
                        }
                        Ok(match turn.role {
                            AgentRole::Planner => PLAN.to_owned(),
                            AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                            _ => "done".to_owned(),
                        })
                    })
                    .build();
                Ok(Arc::new(backend))
            }
        })
        .await
        .unwrap();
    assert_eq!(report.status, MissionStatus::Completed, "{report:#?}");
    assert_eq!(restarts, 1);
    assert!(*lost_once.lock());
    let seen = seen.lock();
    assert!(seen.iter().any(|(a, _)| *a == 0) && seen.iter().any(|(a, _)| *a == 1));
    assert!(seen.iter().all(|(_, marked)| *marked), "{seen:?}");
    assert!(
        report.items.iter().all(|i| i.attempts == 1),
        "{:?}",
        report.items
    );
    let mut saw_lost = false;
    let mut saw_reconnect = false;
    while let Ok(event) = events.try_recv() {
        match event {
            MissionEvent::Finished {
                status: MissionStatus::ServerLost { .. },
                ..
            } => saw_lost = true,
            MissionEvent::Reconnecting { attempt: 1, .. } => saw_reconnect = true,
            _ => {}
        }
    }
    assert!(saw_lost && saw_reconnect);
}

/// A server that never comes back ends the mission with a clear reason, within the window.
#[tokio::test]
async fn the_supervisor_gives_up_when_the_server_stays_away() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let (report, _) = orch_agents::Supervisor::<SimulatedBackend>::new(MissionSpec::new(
        "build a thing",
        dir.path(),
    ))
    .reconnect_timeout(Duration::from_secs(2))
    .run(|_| async {
        Err(BackendError::ServerLost {
            message: "connection refused".into(),
        })
    })
    .await
    .unwrap();
    match report.status {
        MissionStatus::Failed { reason } => assert!(reason.contains("cannot reach"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}
