//! Missions on a real `opencode serve`, with the scripted model as the only stand-in.
//!
//! One OpenCode server (isolated HOME) and one scripted model are shared by the trials of
//! this binary; each trial has its own project directory and a unique mission text that its
//! rules key on, so trials are independent. Workers write files through OpenCode's real
//! `write` tool; the Reviewer runs the project's real tests through OpenCode's `bash` tool,
//! and the scripted reviewer says PASS only when the real test output shows exit code 0.

mod common;

use common::{
    CALC, README, Rules, TESTS, calc_plan, ensure, mission_config, project, run, run_mission,
    shared,
};
use libtest_mimic::{Failed, Trial};
use orch_agents::{MissionConfig, MissionEvent, MissionStatus};
use orch_mvcc::{ItemState, TodoStore};
use orch_testkit::{Outcome, Reply, Rule};
use serde_json::json;

/// Planner → 3 items with a dependency → Workers write real files → Reviewers run the real
/// tests → integration review runs the whole suite. T3's Worker first tries to write a file
/// it does not own: OpenCode asks, the policy rejects with a message, the Worker recovers.
fn complete_mission_builds_a_tested_project() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [complete]".into(),
        };
        rules.planner(&calc_plan("Calculator"))?;
        rules.worker_writes("T1", "calc.py", CALC)?;
        rules.worker_writes("T2", "test_calc.py", TESTS)?;
        // T3 tries calc.py first (not its file), gets rejected, then writes README.md.
        let t3 = rules.re("Your item: T3:");
        rules.add(
            rules
                .rule("complete T3 trespass", "worker", &t3)?
                .tool_result(false)
                .reply(Reply::tool_call(
                    "write",
                    json!({"filePath": "calc.py", "content": "broken\n"}),
                )),
        )?;
        rules.add(
            rules
                .rule("complete T3 after rejection", "worker", &t3)?
                .tool_output("rejected")
                .map_err(|e| e.to_string())?
                .reply(Reply::tool_call(
                    "write",
                    json!({"filePath": "README.md", "content": README}),
                )),
        )?;
        rules.add(
            rules
                .rule("complete T3 done", "worker", &t3)?
                .last_tool("write")
                .reply(Reply::text("Wrote README.md.")),
        )?;
        rules.calc_reviews()?;

        let (report, events) =
            run_mission(&shared, dir.path(), &rules.tag, mission_config()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        for (file, content) in [
            ("calc.py", CALC),
            ("test_calc.py", TESTS),
            ("README.md", README),
        ] {
            let written = std::fs::read_to_string(dir.path().join(file))
                .map_err(|e| format!("{file}: {e}"))?;
            ensure(written == content, || format!("{file} holds {written:?}"))?;
        }
        let store = TodoStore::open(dir.path().join(".orchestrator")).map_err(|e| e.to_string())?;
        let (_, plan) = store.snapshot().map_err(|e| e.to_string())?;
        ensure(
            plan.items.len() == 3 && plan.items.iter().all(|i| i.state == ItemState::Done),
            || format!("{plan:#?}"),
        )?;
        store.verify().map_err(|e| e.to_string())?;
        // The trespass was asked for, rejected by policy, and recorded.
        let denied: Vec<_> = report.permissions.iter().filter(|p| !p.allowed).collect();
        ensure(
            denied.len() == 1
                && denied[0].permission == "edit"
                && denied[0].patterns == ["calc.py"],
            || format!("permissions: {:?}", report.permissions),
        )?;
        ensure(
            events.iter().any(
                |e| matches!(e, MissionEvent::Permission { decision, .. } if !decision.allowed),
            ),
            || "no permission event".into(),
        )?;
        // The Reviewer's verdicts came from real test runs.
        let runs = shared
            .model
            .requests()
            .into_iter()
            .filter(|r| {
                r.rule
                    .as_deref()
                    .is_some_and(|n| n.starts_with("build calc [complete]") && n.ends_with("pass"))
            })
            .count();
        ensure(runs == 4, || {
            format!("{runs} passing reviews seen by the model")
        })?;
        ensure(
            report.engine.get("pool.created").copied().unwrap_or(0.0) >= 2.0,
            || format!("engine: {:?}", report.engine),
        )
    })
}

/// A Reviewer FAIL sends the item back with the reviewer's notes; the second Worker turn
/// sees them; the mission completes.
fn review_fail_then_pass_carries_the_notes() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [retry]".into(),
        };
        rules.planner("# Calc\n\n- [ ] T1: calculator module\n  - files: calc.py\n")?;
        // First attempt writes a wrong module; the second (which sees the notes) a right one.
        let first = rules.re("Your item: T1:");
        let second = rules.re("Your item: T1:.*mul is missing");
        rules.add(
            rules
                .rule("retry T1 fixed", "worker", &second)?
                .tool_result(false)
                .reply(Reply::tool_call(
                    "write",
                    json!({"filePath": "calc.py", "content": CALC}),
                )),
        )?;
        rules.add(
            rules
                .rule("retry T1 first", "worker", &first)?
                .tool_result(false)
                .reply(Reply::tool_call(
                    "write",
                    json!({"filePath": "calc.py", "content": "def add(a, b):\n    return a + b\n"}),
                )),
        )?;
        rules.add(
            rules
                .rule("retry T1 done", "worker", &first)?
                .last_tool("write")
                .reply(Reply::text("Wrote calc.py.")),
        )?;
        let review = rules.re("Review item T1:");
        rules.add(
            rules.rule("retry review run", "reviewer", &review)?
                .tool_result(false)
                .reply(Reply::tool_call(
                    "bash",
                    json!({"command": "python3 -c 'import calc; calc.mul(2, 2)' 2>&1; echo EXIT=$?", "description": "check"}),
                )),
        )?;
        rules.add(
            rules
                .rule("retry review pass", "reviewer", &review)?
                .tool_output("EXIT=0")
                .map_err(|e| e.to_string())?
                .reply(Reply::text("VERDICT: PASS")),
        )?;
        rules.add(
            rules
                .rule("retry review fail", "reviewer", &review)?
                .last_tool("bash")
                .reply(Reply::text("VERDICT: FAIL: mul is missing from calc.py")),
        )?;
        rules.reviewer_runs(
            "Every item is done",
            "integration",
            "python3 -c 'import calc'",
        )?;
        let (report, _) = run_mission(&shared, dir.path(), &rules.tag, mission_config()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let t1 = &report.items[0];
        ensure(
            t1.attempts == 2 && t1.verdicts.len() == 2 && !t1.verdicts[0].is_pass(),
            || format!("{t1:?}"),
        )?;
        let fixed_used = shared
            .model
            .requests()
            .iter()
            .any(|r| r.rule.as_deref() == Some("retry T1 fixed"));
        ensure(fixed_used, || {
            "the second Worker turn did not see the reviewer's notes".into()
        })?;
        let written =
            std::fs::read_to_string(dir.path().join("calc.py")).map_err(|e| e.to_string())?;
        ensure(written == CALC, || format!("calc.py holds {written:?}"))
    })
}

/// An item whose review always fails is failed after 3 attempts; its dependant is blocked;
/// the report says why.
fn failing_item_blocks_its_dependants() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [failing]".into(),
        };
        rules.planner(&calc_plan("Calc"))?;
        rules.worker_writes("T1", "calc.py", "def add(a, b):\n    return a - b\n")?;
        rules.worker_writes("T3", "README.md", README)?;
        rules.reviewer_runs(
            "Review item T1:",
            "T1",
            "python3 -c 'import calc; assert calc.add(2, 3) == 5'",
        )?;
        rules.reviewer_runs("Review item T3:", "T3", "test -s README.md")?;
        let (report, events) =
            run_mission(&shared, dir.path(), &rules.tag, mission_config()).await?;
        let MissionStatus::Failed { reason } = &report.status else {
            return Err(format!("expected a failure: {report:#?}"));
        };
        ensure(reason.contains("T1") && reason.contains("T2"), || {
            reason.clone()
        })?;
        let by_id = |id: &str| report.items.iter().find(|i| i.id == id).cloned();
        let t1 = by_id("T1").ok_or("no T1")?;
        let t2 = by_id("T2").ok_or("no T2")?;
        let t3 = by_id("T3").ok_or("no T3")?;
        ensure(t1.state == "failed" && t1.attempts == 3, || {
            format!("{t1:?}")
        })?;
        ensure(t2.state == "pending" && t2.blocked_by == ["T1"], || {
            format!("{t2:?}")
        })?;
        ensure(t3.state == "done", || format!("{t3:?}"))?;
        ensure(
            events
                .iter()
                .any(|e| matches!(e, MissionEvent::ItemFailed { item, .. } if item == "T1")),
            || "no ItemFailed event".into(),
        )
    })
}

/// A plan that does not validate is sent back with the error and the corrected one is used.
fn malformed_plan_is_reasked() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [replan]".into(),
        };
        rules.add(
            rules
                .rule("replan plans", "planner", &rules.re(""))?
                .reply(Reply::text(
                    "# Broken\n\n- [ ] T1: module\n  - files: calc.py\n  - deps: T9\n",
                ))
                .reply(Reply::text(
                    "# Calc\n\n- [ ] T1: module\n  - files: calc.py\n",
                )),
        )?;
        rules.module_work_and_reviews()?;
        let (report, events) =
            run_mission(&shared, dir.path(), &rules.tag, mission_config()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let rejected: Vec<String> = events
            .iter()
            .filter_map(|e| match e {
                MissionEvent::PlanRejected { error, .. } => Some(error.clone()),
                _ => None,
            })
            .collect();
        ensure(rejected.len() == 1 && rejected[0].contains("T9"), || {
            format!("{rejected:?}")
        })?;
        let second_prompt = shared
            .model
            .requests()
            .into_iter()
            .filter(|r| r.rule.as_deref() == Some("replan plans"))
            .nth(1)
            .and_then(|r| r.view.map(|v| v.last_user))
            .unwrap_or_default();
        ensure(
            second_prompt.contains("could not be used") && second_prompt.contains("T9"),
            || second_prompt.clone(),
        )
    })
}

/// The model rate-limits past OpenCode's own retries (6 × 429 with Retry-After); the turn
/// fails as rate limited, the mission's retry policy tries again, and the mission completes.
fn rate_limits_are_honoured_then_recover() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    // OpenCode 1 gives a rate-limited turn up after a few attempts of its own, so the
    // mission must retry it; OpenCode 2 keeps retrying with its own (long) backoff, so the
    // mission must wait, showing each upstream retry, and not give the turn up.
    let v2 = shared.server().generation() == orch_opencode::Generation::V2;
    let times = if v2 { 2 } else { 6 };
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [ratelimit]".into(),
        };
        rules.add(
            rules
                .rule("ratelimit plan", "planner", &rules.re(""))?
                .reply(
                    Reply::error(429, "Rate limit exceeded")
                        .retry_after(1)
                        .times(times),
                )
                .reply(Reply::text(
                    "# Calc\n\n- [ ] T1: module\n  - files: calc.py\n",
                )),
        )?;
        rules.module_work_and_reviews()?;
        let (report, events) =
            run_mission(&shared, dir.path(), &rules.tag, mission_config()).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let limited = shared
            .model
            .requests()
            .iter()
            .filter(|r| {
                r.rule.as_deref() == Some("ratelimit plan")
                    && r.outcome == Outcome::Error { status: 429 }
            })
            .count();
        ensure(limited == times, || {
            format!("{limited} rate-limited requests")
        })?;
        let upstream = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    MissionEvent::UpstreamRetry {
                        rate_limited: true,
                        status: Some(429),
                        ..
                    }
                )
            })
            .count();
        let retried = events.iter().any(
            |e| matches!(e, MissionEvent::Retrying { error, .. } if error.contains("rate limited")),
        );
        if v2 {
            ensure(upstream == times, || {
                format!("{upstream} upstream retries shown for {times} rate limits: {events:#?}")
            })?;
            ensure(report.upstream_retries as usize >= times, || {
                format!("upstream retries {}", report.upstream_retries)
            })
        } else {
            ensure(retried, || {
                format!("the mission did not retry the rate-limited turn: {events:#?}")
            })?;
            ensure(report.retries >= 1, || {
                format!("retries {}", report.retries)
            })
        }
    })
}

/// A token budget stops new work and the report says so.
fn token_budget_stops_new_work() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [budget]".into(),
        };
        rules.add(
            rules.rule("budget plan", "planner", &rules.re(""))?
                .reply(
                    Reply::text("# Calc\n\n- [ ] T1: module\n  - files: calc.py\n- [ ] T2: more\n  - files: more.py\n  - deps: T1\n")
                        .usage(50_000, 100),
                ),
        )?;
        let (report, events) = run_mission(
            &shared,
            dir.path(),
            &rules.tag,
            MissionConfig {
                token_budget: Some(10_000),
                ..mission_config()
            },
        )
        .await?;
        ensure(
            report.status
                == MissionStatus::BudgetExceeded {
                    budget: "tokens".into(),
                },
            || format!("{report:#?}"),
        )?;
        ensure(
            events
                .iter()
                .any(|e| matches!(e, MissionEvent::BudgetExceeded { .. })),
            || "no budget event".into(),
        )?;
        ensure(report.items.iter().all(|i| i.state == "pending"), || {
            format!("{:?}", report.items)
        })
    })
}

/// Bursts of 500s (past OpenCode's own retries) open the breaker of the primary model; the
/// mission moves to the fallback model, and the report shows the breaker and which model
/// answered.
fn server_errors_open_the_breaker_and_move_to_the_fallback() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [breaker]".into(),
        };
        rules.add(
            Rule::new("breaker primary down")
                .model("fake-model")
                .user(&rules.re(""))
                .map_err(|e| e.to_string())?
                .reply(Reply::error(500, "upstream overloaded").retry_after(0)),
        )?;
        rules.add(
            Rule::new("breaker backup plan")
                .model("fake-backup")
                .agent("planner")
                .user(&rules.re(""))
                .map_err(|e| e.to_string())?
                .reply(Reply::text(
                    "# Calc\n\n- [ ] T1: module\n  - files: calc.py\n",
                )),
        )?;
        rules.module_work_and_reviews()?;
        let mut agents = orch_agents::AgentSet::builtin();
        agents.model = Some(orch_agents::ModelSpec::new("fake", "fake-model"));
        agents.fallback_models = vec![orch_agents::ModelSpec::new("fake", "fake-backup")];
        let mut config = mission_config();
        config.policy.breaker.failure_threshold = 2;
        let started = std::time::Instant::now();
        let (report, events) =
            common::run_mission_with(&shared, dir.path(), &rules.tag, config, agents).await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let failed = shared
            .model
            .requests()
            .iter()
            .filter(|r| r.rule.as_deref() == Some("breaker primary down"))
            .count();
        // OpenCode retries the 500s by itself; each retry it announces counts toward the
        // breaker, which opens after two: the Planner's first turn leaves the primary then,
        // instead of waiting out OpenCode's five retries (twice).
        ensure((2..=4).contains(&failed), || {
            format!("{failed} requests to the failing model")
        })?;
        let announced = events
            .iter()
            .filter(|e| matches!(e, MissionEvent::UpstreamRetry { model, .. } if model == "fake/fake-model"))
            .count();
        ensure(
            announced >= 2 && report.upstream_retries == announced as u64,
            || {
                format!(
                    "{announced} retries announced, {} counted",
                    report.upstream_retries
                )
            },
        )?;
        ensure(
            started.elapsed() < std::time::Duration::from_secs(40),
            || format!("the storm took {:?}", started.elapsed()),
        )?;
        ensure(
            report.engine.get("breaker.fake/fake-model.trips") == Some(&1.0),
            || format!("engine: {:?}", report.engine),
        )?;
        ensure(
            report.engine.get("breaker.fake/fake-model.state") == Some(&2.0),
            || format!("engine: {:?}", report.engine),
        )?;
        ensure(
            report.models.get("fake/fake-backup").copied().unwrap_or(0) >= 4
                && !report.models.contains_key("fake/fake-model"),
            || format!("models: {:?}", report.models),
        )
    })
}

/// With a parent session (the user's) and `keep_used_sessions`, as `task_cli` attached to
/// the user's server runs: every session that worked is a child of the parent and is still
/// there after the mission; the pre-created ones that never worked are gone.
fn sessions_open_under_the_parent_and_are_kept() -> Result<(), Failed> {
    let shared = shared()?;
    let dir = project(&shared)?;
    run(async {
        let rules = Rules {
            model: &shared.model,
            tag: "build calc [parent]".into(),
        };
        rules.planner(&calc_plan("Calculator"))?;
        rules.worker_writes("T1", "calc.py", CALC)?;
        rules.worker_writes("T2", "test_calc.py", TESTS)?;
        rules.worker_writes("T3", "README.md", README)?;
        rules.calc_reviews()?;
        let parent = common::user_session(shared.server(), dir.path()).await?;
        let (report, _) = common::run_mission_on(
            &shared,
            dir.path(),
            &rules.tag,
            mission_config(),
            orch_agents::AgentSet::builtin(),
            orch_agents::backend::opencode::OpencodeBackendConfig {
                parent_session: Some(parent.clone()),
                keep_used_sessions: true,
                ..common::backend_config()
            },
        )
        .await?;
        ensure(report.status == MissionStatus::Completed, || {
            format!("{report:#?}")
        })?;
        let mut children = common::children(shared.server(), dir.path(), &parent).await?;
        children.sort();
        // The sessions that worked: those the mission opened for its turns.
        let journal = orch_agents::Journal::read(&dir.path().join(".orchestrator"))
            .map_err(|e| e.to_string())?;
        let opened: Vec<(orch_agents::AgentRole, String)> = journal
            .records
            .iter()
            .filter_map(|r| match &r.entry {
                orch_agents::JournalEntry::SessionOpened { role, session } => {
                    Some((*role, session.clone()))
                }
                _ => None,
            })
            .collect();
        for role in ["planner", "worker", "reviewer"] {
            ensure(opened.iter().any(|(r, _)| r.as_str() == role), || {
                format!("no {role} session opened: {opened:?}")
            })?;
        }
        let mut worked: Vec<String> = opened.into_iter().map(|(_, s)| s).collect();
        worked.sort();
        worked.dedup();
        ensure(children == worked, || {
            format!("children of the parent {children:?}, sessions that worked {worked:?}")
        })?;
        let all = common::session_ids(shared.server(), dir.path()).await?;
        ensure(
            all.iter().all(|id| *id == parent || children.contains(id)),
            || format!("sessions outside the parent: {all:?}"),
        )
    })
}

fn main() {
    let trials = vec![
        Trial::test(
            "sessions_open_under_the_parent_and_are_kept",
            sessions_open_under_the_parent_and_are_kept,
        ),
        Trial::test(
            "complete_mission_builds_a_tested_project",
            complete_mission_builds_a_tested_project,
        ),
        Trial::test(
            "review_fail_then_pass_carries_the_notes",
            review_fail_then_pass_carries_the_notes,
        ),
        Trial::test(
            "failing_item_blocks_its_dependants",
            failing_item_blocks_its_dependants,
        ),
        Trial::test("malformed_plan_is_reasked", malformed_plan_is_reasked),
        Trial::test(
            "rate_limits_are_honoured_then_recover",
            rate_limits_are_honoured_then_recover,
        ),
        Trial::test("token_budget_stops_new_work", token_budget_stops_new_work),
        Trial::test(
            "server_errors_open_the_breaker_and_move_to_the_fallback",
            server_errors_open_the_breaker_and_move_to_the_fallback,
        ),
    ];
    common::run_trials(trials);
}
