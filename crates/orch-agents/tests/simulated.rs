//! The whole pipeline on the simulated backend: planning, scheduling, review, retries,
//! failures, budgets, stop and resume.

use std::sync::Arc;
use std::time::Duration;

use orch_agents::{
    AgentRole, BackendError, Latency, Mission, MissionConfig, MissionEvent, MissionReport,
    MissionSpec, MissionStatus, PolicyConfig, SimulatedBackend, TurnRequest,
};
use orch_core::RetryPolicy;
use orch_mvcc::{ItemState, TodoStore};
use parking_lot::Mutex;

const PLAN: &str = "\
# Build a thing

- [ ] T1: core
  - files: core.txt
- [ ] T2: feature on core
  - files: feature.txt
  - deps: T1
- [ ] T3: docs
  - files: docs.txt
";

fn config() -> MissionConfig {
    MissionConfig {
        workers: 2,
        reviewers: 2,
        policy: PolicyConfig {
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(5),
                max_delay: Duration::from_millis(20),
                ..RetryPolicy::default()
            },
            ..PolicyConfig::default()
        },
        ..MissionConfig::default()
    }
}

fn fast() -> orch_agents::SimulatedBackendBuilder {
    SimulatedBackend::builder()
        .latency(Latency::Fixed(Duration::from_millis(5)))
        .plan(PLAN)
}

/// Records every turn request, and answers with `answer`.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<TurnRequest>>>);

impl Log {
    /// `builder` recording every turn here and answering as a mission that passes: the
    /// plan, `done`, `VERDICT: PASS`.
    fn passing(&self, builder: orch_agents::SimulatedBackendBuilder) -> SimulatedBackend {
        let seen = self.clone();
        builder
            .responder(move |turn| {
                seen.0.lock().push(turn.clone());
                Ok(match turn.role {
                    AgentRole::Planner => PLAN.to_owned(),
                    AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                    _ => "done".to_owned(),
                })
            })
            .build()
    }

    fn prompts(&self, role: AgentRole) -> Vec<String> {
        self.0
            .lock()
            .iter()
            .filter(|t| t.role == role)
            .map(|t| t.prompt.clone())
            .collect()
    }
}

async fn run(
    backend: SimulatedBackend,
    config: MissionConfig,
) -> (tempfile::TempDir, MissionReport, Vec<MissionEvent>) {
    let dir = tempfile::tempdir().unwrap();
    let mission = Mission::new(
        Arc::new(backend),
        MissionSpec::new("build a thing", dir.path()).config(config),
    );
    let mut events = mission.spec().subscribe();
    let report = mission.run().await.unwrap();
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    (dir, report, seen)
}

fn states(dir: &std::path::Path) -> Vec<(String, ItemState)> {
    let store = TodoStore::open(dir.join(".orchestrator")).unwrap();
    let (_, plan) = store.snapshot().unwrap();
    plan.items
        .iter()
        .map(|i| (i.id.to_string(), i.state))
        .collect()
}

#[tokio::test]
async fn a_mission_plans_runs_reviews_and_completes() {
    let (dir, report, events) = run(fast().build(), config()).await;
    assert_eq!(report.status, MissionStatus::Completed, "{report:#?}");
    assert!(
        states(dir.path())
            .iter()
            .all(|(_, s)| *s == ItemState::Done)
    );
    let started = events
        .iter()
        .filter(|e| matches!(e, MissionEvent::ItemStarted { .. }))
        .count();
    assert_eq!(started, 3);
    let passes = events
        .iter()
        .filter(|e| matches!(e, MissionEvent::Reviewed { verdict, .. } if verdict.is_pass()))
        .count();
    assert_eq!(passes, 3);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MissionEvent::IntegrationReviewed { .. }))
    );
    assert!(matches!(
        events.last(),
        Some(MissionEvent::Finished {
            status: MissionStatus::Completed,
            ..
        })
    ));
    // Planner 1, Workers 3, Reviewers 3 units + 1 integration.
    assert_eq!(report.usage[&AgentRole::Planner].turns, 1);
    assert_eq!(report.usage[&AgentRole::Worker].turns, 3);
    assert_eq!(report.usage[&AgentRole::Reviewer].turns, 4);
    assert_eq!(report.total_tokens().input, 8 * 1_000);
    // The store's audit chain verifies and the report is on disk.
    let store = TodoStore::open(dir.path().join(".orchestrator")).unwrap();
    store.verify().unwrap();
    let on_disk: MissionReport = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(".orchestrator/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk.status, MissionStatus::Completed);
}

#[tokio::test]
async fn dependencies_and_file_ownership_order_the_work() {
    let order = Log::default();
    let log = order.clone();
    let backend = fast()
        .responder(move |turn| {
            log.0.lock().push(turn.clone());
            Ok(match turn.role {
                AgentRole::Planner => PLAN.to_owned(),
                AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                _ => "done".to_owned(),
            })
        })
        .build();
    let (_dir, report, events) = run(backend, config()).await;
    assert_eq!(report.status, MissionStatus::Completed);
    let started: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            MissionEvent::ItemStarted { item, .. } => Some(item.clone()),
            _ => None,
        })
        .collect();
    let pos = |id: &str| started.iter().position(|s| s == id).unwrap();
    assert!(pos("T1") < pos("T2"), "T2 depends on T1: {started:?}");
    let done_t1 = events
        .iter()
        .position(|e| matches!(e, MissionEvent::ItemDone { item, .. } if item == "T1"))
        .unwrap();
    let start_t2 = events
        .iter()
        .position(|e| matches!(e, MissionEvent::ItemStarted { item, .. } if item == "T2"))
        .unwrap();
    assert!(done_t1 < start_t2, "T2 started before T1 was done");
    // Workers are told which files they may edit.
    let prompts = order.0.lock();
    let t2 = prompts
        .iter()
        .find(|t| t.role == AgentRole::Worker && t.prompt.contains("Your item: T2"))
        .unwrap();
    assert_eq!(t2.scope.as_slice(), ["feature.txt".to_owned()]);
}

#[tokio::test]
async fn a_review_fail_sends_the_notes_to_the_next_attempt() {
    let log = Log::default();
    let seen = log.clone();
    let reviews = Arc::new(Mutex::new(0u32));
    let backend = fast()
        .responder(move |turn| {
            seen.0.lock().push(turn.clone());
            Ok(match turn.role {
                AgentRole::Planner => PLAN.to_owned(),
                AgentRole::Reviewer if turn.prompt.contains("Review item T1") => {
                    let mut n = reviews.lock();
                    *n += 1;
                    if *n == 1 {
                        "VERDICT: FAIL: core.txt lacks the header".to_owned()
                    } else {
                        "VERDICT: PASS".to_owned()
                    }
                }
                AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                _ => "done".to_owned(),
            })
        })
        .build();
    let (dir, report, events) = run(backend, config()).await;
    assert_eq!(report.status, MissionStatus::Completed);
    let t1 = report.items.iter().find(|i| i.id == "T1").unwrap();
    assert_eq!(t1.attempts, 2);
    assert_eq!(t1.verdicts.len(), 2);
    let t1_prompts: Vec<String> = log
        .prompts(AgentRole::Worker)
        .into_iter()
        .filter(|p| p.contains("Your item: T1"))
        .collect();
    assert_eq!(t1_prompts.len(), 2);
    assert!(!t1_prompts[0].contains("lacks the header"));
    assert!(
        t1_prompts[1].contains("core.txt lacks the header"),
        "{}",
        t1_prompts[1]
    );
    // The retry ran on the lane that had T1's files (warm context).
    let t1_starts: Vec<(usize, bool)> = events
        .iter()
        .filter_map(|e| match e {
            MissionEvent::ItemStarted {
                item, lane, warm, ..
            } if item == "T1" => Some((*lane, *warm)),
            _ => None,
        })
        .collect();
    assert_eq!(t1_starts.len(), 2);
    assert_eq!(t1_starts[0].0, t1_starts[1].0, "{t1_starts:?}");
    assert!(t1_starts[1].1);
    let todo = std::fs::read_to_string(dir.path().join(".orchestrator/TODO.md")).unwrap();
    assert!(todo.contains("lacks the header"), "{todo}");
}

#[tokio::test]
async fn an_item_failing_three_times_blocks_its_dependants() {
    let backend = fast()
        .responder(|turn| {
            Ok(match turn.role {
                AgentRole::Planner => PLAN.to_owned(),
                AgentRole::Reviewer if turn.prompt.contains("Review item T1") => {
                    "VERDICT: FAIL: still wrong".to_owned()
                }
                AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                _ => "done".to_owned(),
            })
        })
        .build();
    let (dir, report, events) = run(backend, config()).await;
    match &report.status {
        MissionStatus::Failed { reason } => {
            assert!(reason.contains("T1") && reason.contains("T2"), "{reason}")
        }
        other => panic!("expected failure, got {other:?}"),
    }
    let states = states(dir.path());
    assert_eq!(
        states,
        vec![
            ("T1".to_owned(), ItemState::Failed),
            ("T2".to_owned(), ItemState::Pending),
            ("T3".to_owned(), ItemState::Done)
        ]
    );
    let t1 = report.items.iter().find(|i| i.id == "T1").unwrap();
    assert_eq!(t1.attempts, 3);
    let t2 = report.items.iter().find(|i| i.id == "T2").unwrap();
    assert_eq!(t2.blocked_by, vec!["T1".to_owned()]);
    assert!(events.iter().any(|e| matches!(e,
        MissionEvent::ItemFailed { item, blocked, .. } if item == "T1" && blocked == &vec!["T2".to_owned()])));
}

#[tokio::test]
async fn a_malformed_plan_is_sent_back_with_the_error() {
    let log = Log::default();
    let seen = log.clone();
    let backend = fast()
        .responder(move |turn| {
            seen.0.lock().push(turn.clone());
            Ok(match turn.role {
                AgentRole::Planner if turn.prompt.contains("could not be used") => PLAN.to_owned(),
                AgentRole::Planner => "# Plan\n- [ ] A: a\n  - deps: B\n".to_owned(),
                AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                _ => "done".to_owned(),
            })
        })
        .build();
    let (_dir, report, events) = run(backend, config()).await;
    assert_eq!(report.status, MissionStatus::Completed);
    let rejected: Vec<&MissionEvent> = events
        .iter()
        .filter(|e| matches!(e, MissionEvent::PlanRejected { .. }))
        .collect();
    assert_eq!(rejected.len(), 1);
    let retry = &log.prompts(AgentRole::Planner)[1];
    assert!(retry.contains("could not be used"), "{retry}");
    assert!(retry.starts_with("Mission: build a thing"), "{retry}");
    assert!(
        retry.contains('B'),
        "the error names the missing dependency: {retry}"
    );
}

#[tokio::test]
async fn a_plan_that_never_parses_fails_the_mission() {
    let backend = fast()
        .responder(|turn| match turn.role {
            AgentRole::Planner => Ok("I would rather not plan.".to_owned()),
            _ => Ok("VERDICT: PASS".to_owned()),
        })
        .build();
    let (_dir, report, events) = run(backend, config()).await;
    match &report.status {
        MissionStatus::Failed { reason } => {
            assert!(reason.contains("rejected 3 times"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let rejections = events
        .iter()
        .filter(|e| matches!(e, MissionEvent::PlanRejected { .. }))
        .count();
    assert_eq!(rejections, 3);
}

#[tokio::test]
async fn transient_failures_are_retried_and_counted() {
    let backend = fast().failure_rate(0.3).seed(11).build();
    let (_dir, report, events) = run(backend, config()).await;
    assert_eq!(report.status, MissionStatus::Completed, "{report:#?}");
    assert!(report.retries > 0);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MissionEvent::Retrying { .. }))
    );
}

#[tokio::test]
async fn a_session_error_fails_the_attempt_without_retrying() {
    let backend = fast()
        .responder(|turn| match turn.role {
            AgentRole::Planner => Ok(PLAN.to_owned()),
            AgentRole::Worker if turn.prompt.contains("Your item: T3") => {
                Err(BackendError::Session {
                    message: "model not found".into(),
                })
            }
            _ => Ok("VERDICT: PASS".to_owned()),
        })
        .build();
    let (_dir, report, _) = run(backend, config()).await;
    assert!(matches!(report.status, MissionStatus::Failed { .. }));
    assert_eq!(report.retries, 0);
    let t3 = report.items.iter().find(|i| i.id == "T3").unwrap();
    assert_eq!((t3.state.as_str(), t3.attempts), ("failed", 3));
}

#[tokio::test]
async fn a_token_budget_stops_new_work_and_says_so() {
    let config = MissionConfig {
        token_budget: Some(2_500),
        workers: 1,
        ..config()
    };
    let (_dir, report, events) = run(fast().build(), config).await;
    assert_eq!(
        report.status,
        MissionStatus::BudgetExceeded {
            budget: "tokens".into()
        }
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, MissionEvent::BudgetExceeded { .. }))
    );
    assert!(report.items.iter().any(|i| i.state != "done"));
}

#[tokio::test]
async fn an_integration_fail_adds_fixups_that_run() {
    let integration = Arc::new(Mutex::new(0u32));
    let backend = fast()
        .responder(move |turn| {
            Ok(match turn.role {
                AgentRole::Planner => PLAN.to_owned(),
                AgentRole::Reviewer if turn.prompt.contains("Every item is done") => {
                    let mut n = integration.lock();
                    *n += 1;
                    if *n == 1 {
                        "VERDICT: FAIL: no tests\n- FIX: add tests (files: tests.txt)".to_owned()
                    } else {
                        "VERDICT: PASS".to_owned()
                    }
                }
                AgentRole::Reviewer => "VERDICT: PASS".to_owned(),
                _ => "done".to_owned(),
            })
        })
        .build();
    let (dir, report, _) = run(backend, config()).await;
    assert_eq!(report.status, MissionStatus::Completed);
    let states = states(dir.path());
    assert!(
        states.contains(&("F1-1".to_owned(), ItemState::Done)),
        "{states:?}"
    );
}

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
    // The resumed run did not plan again and ran only what was left.
    assert!(!report.usage.contains_key(&AgentRole::Planner));
    let worker_turns_after = report.usage[&AgentRole::Worker].turns;
    assert!(worker_turns_before + worker_turns_after <= 3 + 1);
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

/// Hooks see every turn and verdict: one rewrites Worker prompts, one vetoes T1's first PASS
/// (turning it into a FAIL with the hook's reason), and the mission still completes.
#[tokio::test]
async fn hooks_modify_prompts_and_veto_verdicts() {
    use orch_agents::{HookDecision, HookEvent, HookPhase, HookRegistry, HookSpec, Verdict};
    let vetoed = Arc::new(Mutex::new(false));
    let veto_flag = Arc::clone(&vetoed);
    let hooks = HookRegistry::builder()
        .register(
            HookSpec::new("house-rules", HookPhase::Early),
            |event: &mut HookEvent| {
                if let HookEvent::BeforeTurn {
                    role: AgentRole::Worker,
                    prompt,
                    ..
                } = event
                {
                    prompt.push_str("\nHOUSE RULE: tabs.");
                }
                HookDecision::Continue
            },
        )
        .register(
            HookSpec::new("second-opinion", HookPhase::Late),
            move |event: &mut HookEvent| {
                if let HookEvent::Verdict {
                    item: Some(item),
                    verdict: Verdict::Pass,
                } = event
                    && item == "T1"
                {
                    let mut once = veto_flag.lock();
                    if !*once {
                        *once = true;
                        return HookDecision::Veto("needs a second look".into());
                    }
                }
                HookDecision::Continue
            },
        )
        .build()
        .unwrap();
    let log = Log::default();
    let backend = log.passing(fast());
    let dir = tempfile::tempdir().unwrap();
    let report = Mission::new(
        Arc::new(backend),
        MissionSpec::new("build a thing", dir.path())
            .config(config())
            .hooks(Arc::new(hooks)),
    )
    .run()
    .await
    .unwrap();
    assert_eq!(report.status, MissionStatus::Completed);
    assert!(*vetoed.lock());
    let workers = log.prompts(AgentRole::Worker);
    assert!(
        workers.iter().all(|p| p.ends_with("HOUSE RULE: tabs.")),
        "{workers:?}"
    );
    assert!(
        log.prompts(AgentRole::Planner)
            .iter()
            .all(|p| !p.contains("HOUSE RULE"))
    );
    let t1 = report.items.iter().find(|i| i.id == "T1").unwrap();
    assert_eq!(t1.attempts, 2);
    assert_eq!(
        t1.verdicts[0],
        Verdict::Fail {
            reasons: "hook second-opinion: needs a second look".into()
        }
    );
}
