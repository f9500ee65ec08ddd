//! The whole pipeline on the simulated backend: planning, scheduling, review, retries,
//! failures, budgets, stop and resume.

use std::sync::Arc;

use orch_agents::{
    AgentRole, BackendError, Mission, MissionConfig, MissionEvent, MissionReport, MissionSpec,
    MissionStatus,
};
use orch_mvcc::{ItemState, TodoStore};
use parking_lot::Mutex;

mod sim;

use sim::{Log, PLAN, config, fast, run, states};

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
