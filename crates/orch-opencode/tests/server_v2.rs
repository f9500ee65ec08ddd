//! Tests against a real OpenCode 2 `opencode serve` (2.1.2) driven by the scripted model.
//!
//! One server is shared by the whole binary; every test gets its own project directory
//! (each session's `location.directory`) and its own sessions, and keys its model rules on
//! its session ids. Tool calls are written in OpenCode 2's shapes (`write {path, content}`).
//! `harness = false` (libtest-mimic) so the server is stopped before the process exits. The
//! binary is OpenCode 2 whatever `OPENCODE_BIN` selects (`OPENCODE_BIN_V2`, else
//! [`orch_opencode::find_generation`]); a missing one skips the tests, or fails them when `CI` is set.

#[path = "support/opencode_bin.rs"]
mod opencode_bin;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use orch_opencode::EventRouter;
use orch_opencode::v2::{
    self, Command, CreateSession, Decision, Event, EventKind, InterruptReason, KindSet,
    ListSessions, Message, MessageQuery, ModelRef, PermissionReply, PermissionRule, Prompt,
    ServiceError, ServiceFile, ToolStatus, TurnError, attach_service,
};
use orch_opencode::{
    Delivery, Generation, MessageId, OpencodeServer, RetryNotice, RouterConfig, ServerBuilder,
    SessionId,
};
use orch_testkit::opencode::{IsolatedHome, TestProject, fake_provider_config, merge_json};
use orch_testkit::{Reply, Rule, Script, ScriptedModel, ToolCall};
use serde_json::json;
use tokio::time::Instant;

struct Env {
    // Dropped first (fields drop in order): the server is stopped before its home and
    // projects are removed. The other way round, a loaded machine left the home behind:
    // the server still wrote into it while it was being removed.
    server: OpencodeServer,
    model: ScriptedModel,
    _home: IsolatedHome,
    _root: TestProject,
    bin: PathBuf,
}

impl Env {
    fn start(bin: &Path) -> Env {
        let model = ScriptedModel::start(Script::new()).expect("scripted model starts");
        let home = IsolatedHome::new().expect("isolated home");
        let root = project_for(&model, json!({}));
        let server = server_for(bin, &home, root.path());
        assert_eq!(server.generation(), Generation::V2);
        Env {
            model,
            _home: home,
            _root: root,
            bin: bin.to_owned(),
            server,
        }
    }

    /// Runs `test` on a runtime of its own with a fresh project directory, a client, and a
    /// router on the shared server's stream.
    fn run<F, Fut>(&self, test: F) -> Result<(), Failed>
    where
        F: FnOnce(Arc<TestProject>, v2::Client, EventRouter) -> Fut,
        Fut: std::future::Future<Output = Result<(), Failed>>,
    {
        self.run_with(json!({}), test)
    }

    /// [`Env::run`] with `patch` merged into the project's `opencode.json`.
    fn run_with<F, Fut>(&self, patch: serde_json::Value, test: F) -> Result<(), Failed>
    where
        F: FnOnce(Arc<TestProject>, v2::Client, EventRouter) -> Fut,
        Fut: std::future::Future<Output = Result<(), Failed>>,
    {
        let project = Arc::new(project_for(&self.model, patch));
        let client = client_for(&self.server);
        rt().block_on(async move {
            let router = EventRouter::connect_v2(client.clone(), RouterConfig::default()).await?;
            test(Arc::clone(&project), client, router).await
        })
    }

    fn rule(&self, rule: Rule) {
        self.model.add_rule(rule).expect("valid rule");
    }

    /// The model answers every call of `session` with `reply`.
    fn reply(&self, session: &SessionId, name: &str, reply: Reply) {
        self.rule(Rule::new(name).session(session.as_str()).reply(reply));
    }

    /// A tool turn: a call without a tool result yet gets `call`, the next one `then`.
    fn tool_turn(&self, session: &SessionId, name: &str, call: Reply, then: Reply) {
        self.rule(
            Rule::new(format!("{name}-call"))
                .session(session.as_str())
                .tool_result(false)
                .reply(call),
        );
        self.rule(
            Rule::new(format!("{name}-then"))
                .session(session.as_str())
                .tool_result(true)
                .reply(then),
        );
    }

    fn calls(&self, session: &SessionId) -> usize {
        self.model.requests_for_session(session.as_str()).len()
    }
}

fn project_for(model: &ScriptedModel, patch: serde_json::Value) -> TestProject {
    let mut config = fake_provider_config(&model.base_url());
    merge_json(&mut config, json!({"snapshot": false}));
    merge_json(&mut config, patch);
    TestProject::with_config(config).expect("project dir")
}

fn server_for(bin: &Path, home: &IsolatedHome, cwd: &Path) -> OpencodeServer {
    ServerBuilder::new()
        .binary(bin)
        .generation(Generation::V2)
        .project_dir(cwd)
        .isolated_home(home.path())
        .remove_home_if_orphaned(true)
        .start()
        .unwrap_or_else(|e| panic!("opencode serve (V2) must start: {e}"))
}

/// A client of its own (a client's connections belong to the runtime that opened them, and
/// every test runs on a runtime of its own).
fn client_for(server: &OpencodeServer) -> v2::Client {
    v2::Client::builder(server.base_url())
        .basic_auth(server.username(), server.password())
        .build()
        .expect("client")
}

fn fake() -> ModelRef {
    ModelRef::new("fake", "fake-model")
}

/// A session in `project`, pinned to the scripted model and `build`.
fn new_session(project: &TestProject, title: &str) -> CreateSession {
    CreateSession::titled(title)
        .directory(project.path().to_string_lossy())
        .agent("build")
        .model(fake())
}

async fn session(
    client: &v2::Client,
    project: &TestProject,
    title: &str,
) -> Result<SessionId, Failed> {
    Ok(client
        .create_session(&new_session(project, title))
        .await?
        .id)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// The next event of `kind` on `sub`, within 20 s.
async fn next_of(sub: &mut orch_opencode::Subscription, kind: EventKind) -> Result<Event, Failed> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let d = tokio::time::timeout_at(until, sub.recv())
            .await
            .map_err(|_| format!("no {kind} within 20 s"))?
            .ok_or("router closed")?;
        if let Delivery::Event(raw) = d
            && raw.kind_v2() == kind
        {
            return Ok(raw.decode_v2()?);
        }
    }
}

type TestFn = fn(&Env) -> Result<(), Failed>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

fn main() {
    let args = Arguments::from_args();
    let env: Arc<OnceLock<Env>> = Arc::new(OnceLock::new());
    let tests: &[(&str, TestFn)] = &[
        ("session_create_get_list_children_delete", session_crud),
        ("sticky_agent_model_and_rules_of_a_session", sticky_switches),
        (
            "our_message_id_is_admitted_once_even_when_resent",
            prompt_ids,
        ),
        ("a_text_turn_returns_text_tokens_and_model", text_turn),
        ("a_write_turn_really_writes_the_file", write_turn),
        (
            "retries_reach_the_caller_live_and_a_failure_keeps_the_upstream_status",
            failed_turn_with_retries,
        ),
        (
            "a_rate_limited_turn_fails_after_opencodes_retries_with_retry_after",
            rate_limited_turn,
        ),
        ("interrupt_ends_the_turn_interrupted_by_user", interrupt),
        ("the_deadline_interrupts_the_session", deadline_interrupts),
        (
            "permission_reject_with_message_goes_on_allow_writes_plain_reject_ends",
            permission_flow,
        ),
        (
            "per_session_rules_deny_an_edit_outside_the_allowed_file",
            per_session_rules,
        ),
        ("a_prompt_to_a_busy_session_joins_its_execution", busy_join),
        (
            "an_unknown_agent_fails_undelivered_and_the_input_is_withdrawn",
            unknown_agent,
        ),
        (
            "a_wait_started_after_the_turn_ended_still_resolves",
            late_wait,
        ),
        (
            "without_a_stream_the_wait_falls_back_to_polling",
            polling_fallback,
        ),
        (
            "events_are_routed_by_session_in_seq_order_without_duplicates",
            events_in_order,
        ),
        ("non_api_routes_are_html_and_never_a_success", html_trap),
        ("info_agents_config_commands_and_a_command", misc_endpoints),
        (
            "the_generation_of_a_v1_and_a_v2_server_is_detected",
            generation_detection,
        ),
        (
            "the_user_service_is_found_through_service_json",
            service_json,
        ),
        (
            "a_server_killed_mid_wait_ends_the_wait_server_lost",
            server_lost,
        ),
    ];
    let bin = opencode_bin::binary_or_skip(Generation::V2);
    let trials = tests
        .iter()
        .map(|&(name, f)| {
            let env = Arc::clone(&env);
            let bin = bin.clone();
            let skip = bin.is_none();
            Trial::test(name, move || match &bin {
                Some(bin) => f(env.get_or_init(|| Env::start(bin))),
                None => Ok(()),
            })
            .with_ignored_flag(skip)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the shared server (and the model) before exiting, and check that nothing of it is
    // left: the home goes after the server has stopped (`Env`'s field order).
    let home = env.get().map(|env| env._home.path().to_owned());
    drop(env);
    if let Some(home) = home.filter(|home| home.exists()) {
        eprintln!(
            "error: the shared server's home {} was left behind",
            home.display()
        );
        std::process::exit(101);
    }
    conclusion.exit();
}

fn session_crud(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, _router| async move {
        let dir = project.path().to_string_lossy().into_owned();
        let rules = vec![PermissionRule::ask("edit", "*")];
        let parent = client
            .create_session(&new_session(&project, "parent").permissions(rules.clone()))
            .await?;
        ensure!(parent.title == "parent", "title {:?}", parent.title);
        ensure!(parent.location.directory == dir, "dir {:?}", parent.location);
        ensure!(parent.agent.as_deref() == Some("build"), "{:?}", parent.agent);
        ensure!(
            parent.model.as_ref().map(|m| m.id.as_str()) == Some("fake-model"),
            "{:?}",
            parent.model
        );
        let got = client.session(&parent.id).await?;
        ensure!(got.id == parent.id, "get returned {}", got.id);
        ensure!(
            got.permissions.as_deref() == Some(&rules[..]),
            "rules {:?}",
            got.permissions
        );
        let child = client
            .create_session(&new_session(&project, "child").parent(parent.id.clone()))
            .await?;
        ensure!(child.parent_id.as_ref() == Some(&parent.id), "{child:?}");
        let children = client.children(&parent.id).await?;
        ensure!(
            children.iter().map(|s| &s.id).eq([&child.id]),
            "children {children:?}"
        );
        let listed = client
            .list_sessions(&ListSessions::new().directory(&dir))
            .await?;
        ensure!(
            listed.iter().any(|s| s.id == parent.id) && listed.iter().any(|s| s.id == child.id),
            "list {listed:?}"
        );
        // An unknown parent is refused (OpenCode 1 accepted anything).
        let orphan = client
            .create_session(&new_session(&project, "x").parent("ses_nope".into()))
            .await;
        ensure!(
            matches!(&orphan, Err(e) if e.is_not_found()),
            "orphan: {orphan:?}"
        );
        // Deleting the parent deletes the child.
        client.delete_session(&parent.id).await?;
        for id in [&parent.id, &child.id] {
            let gone = client.session(id).await;
            ensure!(
                matches!(&gone, Err(e) if e.is_not_found() && e.tag() == Some("SessionNotFoundError")),
                "{id} after delete: {gone:?}"
            );
        }
        let again = client.delete_session(&parent.id).await;
        ensure!(
            matches!(&again, Err(e) if e.is_not_found()),
            "second delete: {again:?}"
        );
        Ok(())
    })
}

fn sticky_switches(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, _router| async move {
        let s = session(&client, &project, "switches").await?;
        client.set_agent(&s, "plan").await?;
        client
            .set_model(&s, &ModelRef::new("fake", "other-model"))
            .await?;
        let rules = PermissionRule::edit_only(["a.txt"]);
        client.set_permissions(&s, rules.clone()).await?;
        let got = client.session(&s).await?;
        ensure!(got.agent.as_deref() == Some("plan"), "{:?}", got.agent);
        ensure!(
            got.model.as_ref().map(|m| m.id.as_str()) == Some("other-model"),
            "{:?}",
            got.model
        );
        ensure!(
            got.permissions.as_deref() == Some(&rules[..]),
            "{:?}",
            got.permissions
        );
        // PATCH replaces the rules (OpenCode 1 appended).
        client.set_permissions(&s, Vec::new()).await?;
        let cleared = client.session(&s).await?;
        ensure!(
            cleared
                .permissions
                .as_deref()
                .unwrap_or_default()
                .is_empty(),
            "{:?}",
            cleared.permissions
        );
        client.delete_session(&s).await?;
        Ok(())
    })
}

fn prompt_ids(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "ids").await?;
        let other = session(&client, &project, "ids-other").await?;
        env.reply(&s, "ids", Reply::text("once"));
        let id = MessageId::generate();
        let p = Prompt::text("the original").id(id.clone());
        let waiter = router.turn_v2(&s, &id);
        let first = client.prompt(&s, &p).await?;
        ensure!(first.id == id, "receipt {first:?}");
        ensure!(first.text() == Some("the original"), "{first:?}");
        let out = waiter.wait(deadline(60)).await?;
        ensure!(out.text() == "once", "text {:?}", out.text());
        // Re-sent after the turn (as after a lost answer): the stored record comes back,
        // the new text is ignored, and nothing is admitted twice.
        let again = client
            .prompt(&s, &Prompt::text("a different text").id(id.clone()))
            .await?;
        ensure!(again.id == id, "{again:?}");
        ensure!(again.text() == Some("the original"), "resent: {again:?}");
        // The server runs one more, empty execution for it: let it end.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let history = client
            .messages(&s, &MessageQuery::new().ascending().kind("user"))
            .await?;
        let ours: Vec<&Message> = history.messages.iter().filter(|m| *m.id() == id).collect();
        ensure!(ours.len() == 1, "user entries {:?}", history.messages);
        ensure!(env.calls(&s) == 1, "{} model calls", env.calls(&s));
        // The same id in another session: a conflict (ids are unique server-wide).
        let clash = client.prompt(&other, &p).await;
        ensure!(
            matches!(&clash, Err(e) if e.is_conflict() && e.tag() == Some("ConflictError")),
            "other session: {clash:?}"
        );
        // Not a `msg_` id: a typed 400.
        let bad = client
            .prompt(&s, &Prompt::text("x").id("orch0001".into()))
            .await;
        ensure!(
            matches!(&bad, Err(e) if e.status() == Some(400)),
            "bad id: {bad:?}"
        );
        Ok(())
    })
}

fn text_turn(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "text").await?;
        env.rule(
            Rule::new("text")
                .session(s.as_str())
                .user("say hello")
                .unwrap()
                .reply(Reply::text("Hello from V2.").usage(11, 3)),
        );
        let out = router
            .run_turn_v2(&s, &Prompt::text("say hello"), deadline(60))
            .await?;
        ensure!(out.text() == "Hello from V2.", "text {:?}", out.text());
        ensure!(out.messages.len() == 1, "{} steps", out.messages.len());
        ensure!(
            out.tokens.input == 11 && out.tokens.output == 3,
            "tokens {:?}",
            out.tokens
        );
        ensure!(
            out.finish() == Some(&v2::Finish::Stop),
            "finish {:?}",
            out.finish()
        );
        ensure!(
            out.model().map(|m| m.id.as_str()) == Some("fake-model"),
            "{:?}",
            out.model()
        );
        ensure!(out.retries.is_empty(), "{:?}", out.retries);
        // A second turn in the same session reads only its own steps.
        env.rule(
            Rule::new("text-2")
                .session(s.as_str())
                .user("again")
                .unwrap()
                .reply(Reply::text("Second.")),
        );
        let out2 = router
            .run_turn_v2(&s, &Prompt::text("again"), deadline(60))
            .await?;
        ensure!(out2.text() == "Second.", "text {:?}", out2.text());
        ensure!(out2.messages.len() == 1, "{} steps", out2.messages.len());
        Ok(())
    })
}

fn write_turn(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "write").await?;
        env.tool_turn(
            &s,
            "write",
            Reply::tool_call(
                "write",
                json!({"path": "hello.txt", "content": "hello from the model\n"}),
            )
            .usage(30, 4),
            Reply::text("Wrote it.").usage(40, 2),
        );
        let out = router
            .run_turn_v2(&s, &Prompt::text("create hello.txt"), deadline(60))
            .await?;
        ensure!(out.text() == "Wrote it.", "text {:?}", out.text());
        let written = project.read("hello.txt")?;
        ensure!(written == "hello from the model\n", "file {written:?}");
        let call = out.tool_calls().next().ok_or("no tool call")?;
        ensure!(call.name == "write", "tool {:?}", call.name);
        ensure!(
            call.state.status == ToolStatus::Completed,
            "status {:?}",
            call.state
        );
        ensure!(call.state.input["path"] == "hello.txt", "{:?}", call.state);
        ensure!(out.messages.len() == 2, "{} steps", out.messages.len());
        ensure!(out.tokens.input == 70, "tokens {:?}", out.tokens);
        Ok(())
    })
}

/// Waits for `waiter`, collecting the retry notices it sends live.
async fn wait_collecting_retries(
    waiter: v2::TurnWaiter,
    deadline: Instant,
) -> (Result<v2::TurnOutput, TurnError>, Vec<RetryNotice>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let wait = waiter.notify_retries(tx).wait(deadline);
    tokio::pin!(wait);
    let mut live = Vec::new();
    let result = loop {
        tokio::select! {
            biased;
            Some(notice) = rx.recv() => live.push(notice),
            result = &mut wait => break result,
        }
    };
    while let Ok(n) = rx.try_recv() {
        live.push(n);
    }
    (result, live)
}

fn failed_turn_with_retries(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let flaky = session(&client, &project, "flaky").await?;
        let broken = session(&client, &project, "broken").await?;
        // Two 503s (OpenCode retries each), then an answer.
        env.rule(
            Rule::new("flaky")
                .session(flaky.as_str())
                .reply(Reply::error(503, "scripted outage").retry_after(1).times(2))
                .reply(Reply::text("recovered")),
        );
        // Two 429s, then a 400 that OpenCode does not retry.
        env.rule(
            Rule::new("broken")
                .session(broken.as_str())
                .reply(
                    Reply::error(429, "Rate limit exceeded")
                        .retry_after(1)
                        .times(2),
                )
                .reply(Reply::error(400, "scripted bad request")),
        );
        let (pf, pb) = (Prompt::text("try hard"), Prompt::text("try harder"));
        let wf = router.turn_v2(&flaky, &pf.id);
        let wb = router.turn_v2(&broken, &pb.id);
        client.prompt(&flaky, &pf).await?;
        client.prompt(&broken, &pb).await?;
        let ((rf, live_f), (rb, live_b)) = tokio::join!(
            wait_collecting_retries(wf, deadline(90)),
            wait_collecting_retries(wb, deadline(90))
        );
        let out = rf?;
        ensure!(out.text() == "recovered", "text {:?}", out.text());
        let attempts: Vec<u32> = live_f.iter().map(|n| n.attempt).collect();
        ensure!(attempts == [1, 2], "live notices {live_f:?}");
        ensure!(out.retries == live_f, "output {:?}", out.retries);
        for n in &live_f {
            ensure!(n.session_id == flaky, "session of {n:?}");
            ensure!(n.status == Some(503), "status of {n:?}");
            ensure!(n.retry_after == Some(Duration::from_secs(1)), "{n:?}");
            ensure!(n.message.contains("scripted outage"), "{n:?}");
            ensure!(!n.is_rate_limit(), "{n:?}");
        }
        ensure!(env.calls(&flaky) == 3, "{} model calls", env.calls(&flaky));
        let e = match rb {
            Err(e @ TurnError::Failed { .. }) => e,
            other => return Err(format!("expected Failed, got {other:?}").into()),
        };
        ensure!(e.upstream_status() == Some(400), "status of {e}");
        let TurnError::Failed {
            error, delivered, ..
        } = &e
        else {
            unreachable!()
        };
        ensure!(*delivered, "{e:?}");
        ensure!(error.kind == "provider.invalid-request", "{error:?}");
        ensure!(error.message.contains("scripted bad request"), "{error:?}");
        let attempts: Vec<u32> = live_b.iter().map(|n| n.attempt).collect();
        ensure!(attempts == [1, 2], "live notices {live_b:?}");
        ensure!(e.retries() == live_b.as_slice(), "{:?}", e.retries());
        ensure!(live_b.iter().all(RetryNotice::is_rate_limit), "{live_b:?}");
        // The failure has no Retry-After of its own: the last retry's.
        ensure!(
            e.retry_after() == Some(Duration::from_secs(1)),
            "{:?}",
            e.retry_after()
        );
        Ok(())
    })
}

fn rate_limited_turn(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "limited").await?;
        env.reply(
            &s,
            "limited",
            Reply::error(429, "Rate limit exceeded").retry_after(2),
        );
        let p = Prompt::text("again and again");
        let waiter = router.turn_v2(&s, &p.id);
        client.prompt(&s, &p).await?;
        let (result, live) = wait_collecting_retries(waiter, deadline(240)).await;
        let e = match result {
            Err(e @ TurnError::Failed { .. }) => e,
            other => return Err(format!("expected Failed, got {other:?}").into()),
        };
        // OpenCode 2.1.2 retries ten times (delays growing from 2 s to ≈8–12 s, the
        // Retry-After only a minimum), then fails with the provider's status and Retry-After.
        ensure!(e.upstream_status() == Some(429), "status of {e}");
        ensure!(
            e.retry_after() == Some(Duration::from_secs(2)),
            "retry_after {:?}",
            e.retry_after()
        );
        let attempts: Vec<u32> = live.iter().map(|n| n.attempt).collect();
        ensure!(
            attempts == (1..=10).collect::<Vec<_>>(),
            "live {attempts:?}"
        );
        ensure!(e.retries() == live.as_slice(), "{:?}", e.retries());
        ensure!(env.calls(&s) == 11, "{} model calls", env.calls(&s));
        Ok(())
    })
}

fn interrupt(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "interrupt").await?;
        env.reply(
            &s,
            "slow",
            Reply::text("too late").delay(Duration::from_secs(30)),
        );
        let p = Prompt::text("take your time");
        let waiter = router.turn_v2(&s, &p.id);
        let mut sub = router.subscribe_v2(s.as_str(), KindSet::ALL);
        client.prompt(&s, &p).await?;
        next_of(&mut sub, EventKind::InboxDelivered).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(client.interrupt(&s).await?, "interrupt returned false");
        let started = std::time::Instant::now();
        match waiter.wait(deadline(20)).await {
            Err(TurnError::Interrupted { reason, .. }) => {
                ensure!(reason == InterruptReason::User, "reason {reason:?}");
                ensure!(
                    started.elapsed() < Duration::from_secs(10),
                    "slow: {:?}",
                    started.elapsed()
                );
            }
            other => return Err(format!("expected Interrupted, got {other:?}").into()),
        }
        // An idle session has nothing to interrupt.
        ensure!(!client.interrupt(&s).await?, "second interrupt");
        Ok(())
    })
}

fn deadline_interrupts(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "deadline").await?;
        env.reply(
            &s,
            "stalled",
            Reply::text("never in time").delay(Duration::from_secs(60)),
        );
        let p = Prompt::text("stall");
        let waiter = router.turn_v2(&s, &p.id);
        client.prompt(&s, &p).await?;
        match waiter.wait(deadline(3)).await {
            Err(TurnError::Deadline {
                interrupted,
                waited,
                ..
            }) => {
                ensure!(interrupted == Some(true), "interrupted {interrupted:?}");
                ensure!(waited >= Duration::from_secs(2), "waited {waited:?}");
            }
            other => return Err(format!("expected Deadline, got {other:?}").into()),
        }
        // The server ended the execution.
        let until = Instant::now() + Duration::from_secs(10);
        while client.is_active(&s).await? {
            ensure!(Instant::now() < until, "still active after the interrupt");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    })
}

/// Runs a turn whose `write` of `file` asks for permission, answering with `reply`.
async fn asked_write(
    env: &Env,
    client: &v2::Client,
    router: &EventRouter,
    s: &SessionId,
    file: &str,
    reply: PermissionReply,
) -> Result<(Result<v2::TurnOutput, TurnError>, v2::PermissionRequest), Failed> {
    for (suffix, after_tool, reply) in [
        (
            "call",
            false,
            Reply::tool_call("write", json!({"path": file, "content": "asked\n"})),
        ),
        ("then", true, Reply::text("after the reply")),
    ] {
        env.rule(
            Rule::new(format!("ask-{file}-{suffix}"))
                .session(s.as_str())
                .user(&format!("write {file}"))
                .expect("regex")
                .tool_result(after_tool)
                .reply(reply),
        );
    }
    let p = Prompt::text(format!("write {file}"));
    let waiter = router.turn_v2(s, &p.id);
    let mut sub = router.subscribe_v2(s.as_str(), KindSet::of(&[EventKind::PermissionAsked]));
    client.prompt(s, &p).await?;
    let Event::PermissionAsked(req) = next_of(&mut sub, EventKind::PermissionAsked).await? else {
        unreachable!()
    };
    let pending = client.permissions(s).await?;
    ensure!(
        pending.iter().any(|r| r.id == req.id),
        "not listed: {pending:?}"
    );
    client.reply_permission(s, &req.id, &reply).await?;
    // Answered once: a second reply finds nothing.
    let twice = client.reply_permission(s, &req.id, &reply).await;
    ensure!(
        matches!(&twice, Err(e) if e.tag() == Some("PermissionNotFoundError")),
        "second reply: {twice:?}"
    );
    Ok((waiter.wait(deadline(60)).await, *req))
}

fn permission_flow(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let ask = vec![PermissionRule::ask("edit", "*")];
        let s = client
            .create_session(&new_session(&project, "perm").permissions(ask.clone()))
            .await?
            .id;
        // Reject with a message: the tool fails with it, the turn goes on.
        let (result, req) = asked_write(
            env,
            &client,
            &router,
            &s,
            "rejected.txt",
            PermissionReply::reject_with("not this file"),
        )
        .await?;
        ensure!(req.action == "edit", "{req:?}");
        ensure!(req.resources == ["rejected.txt"], "{req:?}");
        let out = result?;
        ensure!(out.text() == "after the reply", "text {:?}", out.text());
        let call = out.tool_calls().next().ok_or("no call")?;
        let error = call.state.error.as_ref().ok_or("no tool error")?;
        ensure!(
            error.kind == "permission.rejected" && error.message == "not this file",
            "{error:?}"
        );
        ensure!(project.read("rejected.txt").is_err(), "file written");
        // Allow once: the file is written.
        let (result, _) = asked_write(
            env,
            &client,
            &router,
            &s,
            "allowed.txt",
            PermissionReply::once(),
        )
        .await?;
        let out = result?;
        ensure!(out.text() == "after the reply", "text {:?}", out.text());
        ensure!(project.read("allowed.txt")? == "asked\n", "file");
        ensure!(
            client.saved_permissions().await?.is_empty(),
            "`once` saved a permission"
        );
        // Reject without a message (the trap): the whole turn ends interrupted/shutdown.
        let plain = client
            .create_session(&new_session(&project, "perm-plain").permissions(ask))
            .await?
            .id;
        let (result, _) = asked_write(
            env,
            &client,
            &router,
            &plain,
            "plain.txt",
            PermissionReply::reject(),
        )
        .await?;
        match result {
            Err(TurnError::Interrupted { reason, .. }) => {
                ensure!(reason == InterruptReason::Shutdown, "reason {reason:?}");
            }
            other => return Err(format!("expected Interrupted, got {other:?}").into()),
        }
        ensure!(
            PermissionReply::always().decision == Decision::Always,
            "never sent here"
        );
        Ok(())
    })
}

fn per_session_rules(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = client
            .create_session(
                &new_session(&project, "rules")
                    .permissions(PermissionRule::edit_only(["allowed.txt"])),
            )
            .await?
            .id;
        env.tool_turn(
            &s,
            "rules",
            Reply::tool_calls(vec![
                ToolCall::new("write", json!({"path": "allowed.txt", "content": "yes\n"})),
                ToolCall::new("write", json!({"path": "other.txt", "content": "no\n"})),
                ToolCall::new(
                    "write",
                    json!({"path": "/tmp/orch-v2-outside.txt", "content": "no\n"}),
                ),
            ]),
            Reply::text("done"),
        );
        let out = router
            .run_turn_v2(&s, &Prompt::text("write both"), deadline(60))
            .await?;
        ensure!(out.text() == "done", "text {:?}", out.text());
        ensure!(project.read("allowed.txt")? == "yes\n", "allowed file");
        ensure!(project.read("other.txt").is_err(), "other.txt was written");
        ensure!(
            !Path::new("/tmp/orch-v2-outside.txt").exists(),
            "outside file was written"
        );
        let states: Vec<(String, ToolStatus, Option<String>)> = out
            .tool_calls()
            .map(|c| {
                (
                    c.state.input["path"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    c.state.status.clone(),
                    c.state.error.as_ref().map(|e| e.kind.clone()),
                )
            })
            .collect();
        ensure!(states.len() == 3, "{states:?}");
        for (path, status, error) in &states {
            if path == "allowed.txt" {
                ensure!(*status == ToolStatus::Completed, "{states:?}");
            } else {
                ensure!(
                    *status == ToolStatus::Error && error.as_deref() == Some("permission.rejected"),
                    "{states:?}"
                );
            }
        }
        Ok(())
    })
}

fn busy_join(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "busy").await?;
        env.rule(
            Rule::new("busy")
                .session(s.as_str())
                .reply(Reply::text("first").delay(Duration::from_millis(1500)))
                .reply(Reply::text("second")),
        );
        let mut starts =
            router.subscribe_v2(s.as_str(), KindSet::of(&[EventKind::ExecutionStarted]));
        let mut delivered =
            router.subscribe_v2(s.as_str(), KindSet::of(&[EventKind::InboxDelivered]));
        let (a, b) = (Prompt::text("first input"), Prompt::text("second input"));
        let wa = router.turn_v2(&s, &a.id);
        let wb = router.turn_v2(&s, &b.id);
        client.prompt(&s, &a).await?;
        next_of(&mut delivered, EventKind::InboxDelivered).await?;
        client.prompt(&s, &b).await?;
        let (ra, rb) = tokio::join!(wa.wait(deadline(60)), wb.wait(deadline(60)));
        let (ra, rb) = (ra?, rb?);
        // One execution carried both inputs: both turns end with its last step.
        ensure!(rb.text() == "second", "b {:?}", rb.text());
        ensure!(rb.messages.len() == 1, "b steps {}", rb.messages.len());
        ensure!(ra.text() == "second", "a {:?}", ra.text());
        ensure!(ra.messages.len() == 2, "a steps {}", ra.messages.len());
        let mut executions = 0;
        while let Some(d) = starts.try_recv() {
            if let Delivery::Event(raw) = d {
                executions += usize::from(raw.kind_v2() == EventKind::ExecutionStarted);
            }
        }
        ensure!(executions == 1, "{executions} executions");
        Ok(())
    })
}

fn unknown_agent(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = client
            .create_session(&new_session(&project, "nope").agent("nope"))
            .await?
            .id;
        let p = Prompt::text("hello nope");
        match router.run_turn_v2(&s, &p, deadline(30)).await {
            Err(TurnError::Failed {
                error, delivered, ..
            }) => {
                ensure!(!delivered, "delivered?");
                ensure!(error.message.contains("nope"), "{error:?}");
            }
            other => return Err(format!("expected Failed, got {other:?}").into()),
        }
        // Withdrawn: a later prompt does not carry it along.
        let inbox = client.inbox(&s).await?;
        ensure!(inbox.is_empty(), "inbox {inbox:?}");
        client.set_agent(&s, "build").await?;
        env.reply(&s, "fixed", Reply::text("fixed"));
        let out = router
            .run_turn_v2(&s, &Prompt::text("hello build"), deadline(30))
            .await?;
        ensure!(out.text() == "fixed", "{:?}", out.text());
        let users = client
            .messages(&s, &MessageQuery::new().kind("user"))
            .await?;
        ensure!(users.messages.len() == 1, "{:?}", users.messages);
        Ok(())
    })
}

fn late_wait(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let s = session(&client, &project, "late").await?;
        env.rule(
            Rule::new("late")
                .session(s.as_str())
                .user("^go$")
                .unwrap()
                .reply(Reply::text("done before anyone waited")),
        );
        let p = Prompt::text("go");
        client.prompt(&s, &p).await?;
        let until = Instant::now() + Duration::from_secs(20);
        while client.is_active(&s).await? {
            ensure!(Instant::now() < until, "turn did not end");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Another turn after it: the late wait still reads its own.
        env.rule(
            Rule::new("late-2")
                .session(s.as_str())
                .user("later")
                .unwrap()
                .reply(Reply::text("a later turn")),
        );
        router
            .run_turn_v2(&s, &Prompt::text("later"), deadline(30))
            .await?;
        let out = router.wait_turn_v2(&s, &p.id, deadline(30)).await?;
        ensure!(
            out.text() == "done before anyone waited",
            "text {:?}",
            out.text()
        );
        Ok(())
    })
}

fn polling_fallback(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, _router| async move {
        let s = session(&client, &project, "polling").await?;
        env.reply(
            &s,
            "polled",
            Reply::text("polled").delay(Duration::from_millis(800)),
        );
        // A router without a stream: the waiter only polls.
        let detached = EventRouter::detached(RouterConfig::default());
        let p = Prompt::text("poll me");
        let waiter = detached.turn_v2_with_client(&client, &s, &p.id);
        client.prompt(&s, &p).await?;
        let out = waiter.wait(deadline(60)).await?;
        ensure!(out.text() == "polled", "text {:?}", out.text());
        Ok(())
    })
}

fn events_in_order(env: &Env) -> Result<(), Failed> {
    env.run(|project, client, router| async move {
        let a = session(&client, &project, "a").await?;
        let b = session(&client, &project, "b").await?;
        env.reply(
            &a,
            "a",
            Reply::text("from a, in several chunks").chunk_chars(4),
        );
        env.reply(
            &b,
            "b",
            Reply::text("from b").delay(Duration::from_millis(200)),
        );
        let mut sub_a = router.subscribe_v2(a.as_str(), KindSet::ALL);
        let (pa, pb) = (Prompt::text("a"), Prompt::text("b"));
        let (ra, rb) = tokio::join!(
            router.run_turn_v2(&a, &pa, deadline(60)),
            router.run_turn_v2(&b, &pb, deadline(60))
        );
        ra?;
        rb?;
        let mut kinds = Vec::new();
        let mut seqs = Vec::new();
        let mut text = String::new();
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), sub_a.recv()).await
        {
            let Delivery::Event(raw) = d else {
                return Err(format!("unexpected {d:?}").into());
            };
            ensure!(raw.session_id() == Some(a.as_str()), "foreign {raw:?}");
            if let Some(seq) = raw.seq() {
                ensure!(raw.aggregate_id() == Some(a.as_str()), "{raw:?}");
                seqs.push(seq);
            }
            if let Event::TextDelta { delta, .. } = raw.decode_v2()? {
                text.push_str(&delta);
            }
            kinds.push(raw.kind_v2());
        }
        ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "seqs {seqs:?}");
        let pos = |k: EventKind| kinds.iter().position(|x| *x == k);
        let started = pos(EventKind::ExecutionStarted).ok_or("no execution.started")?;
        let delivered = pos(EventKind::InboxDelivered).ok_or("no inbox.delivered")?;
        let ended = pos(EventKind::ExecutionSucceeded).ok_or("no succeeded")?;
        ensure!(started < delivered && delivered < ended, "{kinds:?}");
        ensure!(text == "from a, in several chunks", "deltas {text:?}");
        let stats = router.stats();
        ensure!(stats.duplicates == 0 && stats.dropped == 0, "{stats:?}");
        Ok(())
    })
}

fn html_trap(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client, _router| async move {
        for path in ["/session", "/global/health", "/event"] {
            let r = client.get_json(path).await;
            ensure!(
                matches!(&r, Err(v2::Error::NotJson { content_type, .. }) if content_type.starts_with("text/html")),
                "{path}: {r:?}"
            );
        }
        let r = client.get_json("/api/nope").await;
        ensure!(
            matches!(&r, Err(v2::Error::NoRoute { .. })),
            "/api/nope: {r:?}"
        );
        let info = client.get_json("/api/info").await?;
        ensure!(info["version"] == "2.1.2", "{info}");
        // Wrong credentials are typed, on the event stream too.
        let wrong = v2::Client::builder(env.server.base_url())
            .password("wrong")
            .build()?;
        let r = wrong.info().await;
        ensure!(
            matches!(&r, Err(v2::Error::Unauthorized { .. })),
            "wrong password: {r:?}"
        );
        let r = EventRouter::connect_v2(wrong, RouterConfig::default()).await;
        ensure!(
            matches!(&r, Err(v2::Error::Unauthorized { .. })),
            "stream: {r:?}"
        );
        Ok(())
    })
}

fn misc_endpoints(env: &Env) -> Result<(), Failed> {
    env.run_with(
        json!({"command": {"hello": {"template": "Say hello to $ARGUMENTS", "description": "greets"}}}),
        |project, client, router| async move {
            let dir = project.path().to_string_lossy().into_owned();
            let info = client.info().await?;
            ensure!(info.version == "2.1.2", "{info:?}");
            ensure!(client.version().await? == "2.1.2", "version");
            let agents = client.agents(Some(&dir)).await?;
            ensure!(agents.iter().any(|a| a.id == "build"), "agents {agents:?}");
            let config = client.config(Some(&dir)).await?;
            ensure!(
                config.iter().any(|c| c["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("opencode.json") && p.starts_with(&dir))),
                "config {config:?}"
            );
            // A directory the server just met fills its catalogue in over ≈0.5 s: empty
            // (which `commands` asks again), then the built-ins, then the project's.
            let until = Instant::now() + Duration::from_secs(5);
            loop {
                let commands = client.commands(Some(&dir)).await?;
                if commands.iter().any(|c| c.name == "hello") {
                    break;
                }
                ensure!(Instant::now() < until, "commands {commands:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let s = session(&client, &project, "command").await?;
            env.reply(&s, "command", Reply::text("hello, world"));
            let mut sub = router.subscribe_v2(
                s.as_str(),
                KindSet::of(&[EventKind::ExecutionSucceeded]),
            );
            client.command(&s, &Command::new("hello", "world")).await?;
            next_of(&mut sub, EventKind::ExecutionSucceeded).await?;
            let users = client
                .messages(&s, &MessageQuery::new().kind("user"))
                .await?;
            ensure!(
                matches!(users.messages.first(), Some(Message::User(u)) if u.text == "Say hello to world"),
                "{:?}",
                users.messages
            );
            let unknown = client.command(&s, &Command::new("/hello", "x")).await;
            ensure!(
                matches!(&unknown, Err(e) if e.tag() == Some("CommandNotFoundError")),
                "{unknown:?}"
            );
            Ok(())
        },
    )
}

fn generation_detection(env: &Env) -> Result<(), Failed> {
    rt().block_on(async {
        let v2 = orch_opencode::Generation::of_server(
            env.server.base_url(),
            Some((env.server.username(), env.server.password())),
        )
        .await?;
        ensure!(
            v2.generation == Generation::V2 && v2.version == "2.1.2",
            "{v2:?}"
        );
        let via_client = env.server.client().detect_generation().await?;
        ensure!(via_client == v2, "{via_client:?}");
        Ok::<(), Failed>(())
    })?;
    let Some(v1_bin) = opencode_bin::binary_or_skip(Generation::V1) else {
        eprintln!("OpenCode 1 not installed, its detection is not checked");
        return Ok(());
    };
    let home = IsolatedHome::new()?;
    let project = project_for(&env.model, json!({}));
    let v1 = ServerBuilder::new()
        .binary(v1_bin)
        .project_dir(project.path())
        .isolated_home(home.path())
        .remove_home_if_orphaned(true)
        .start()?;
    ensure!(v1.generation() == Generation::V1, "{v1:?}");
    rt().block_on(async {
        let found =
            orch_opencode::Generation::of_server(v1.base_url(), Some(("opencode", v1.password())))
                .await?;
        ensure!(
            found.generation == Generation::V1 && found.version == "1.18.33",
            "{found:?}"
        );
        // A V2 client on a V1 server meets its web UI: never a success.
        let confused = v2::Client::builder(v1.base_url())
            .password(v1.password())
            .build()?;
        let r = confused.info().await;
        ensure!(
            matches!(&r, Err(v2::Error::NotJson { .. })),
            "V2 client on V1: {r:?}"
        );
        Ok::<(), Failed>(())
    })?;
    v1.stop();
    Ok(())
}

fn service_json(env: &Env) -> Result<(), Failed> {
    let home = IsolatedHome::new()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let config_dir = home.path().join(".config/opencode");
    std::fs::create_dir_all(&config_dir)?;
    std::fs::write(
        config_dir.join("service.json"),
        json!({"port": port}).to_string(),
    )?;
    let state = ServiceFile::path_in(&home.path().join(".local/state"));
    let service = |arg: &str| {
        std::process::Command::new(&env.bin)
            .args(["service", arg])
            .envs(home.env())
            .env_remove("OPENCODE_SERVER_PASSWORD")
            .current_dir(home.path())
            .output()
    };
    // Not running yet.
    let r = rt().block_on(attach_service(Some(&state)));
    ensure!(
        matches!(&r, Err(ServiceError::NotRunning { .. })),
        "before start: {r:?}"
    );
    let started = service("start")?;
    ensure!(
        started.status.success(),
        "service start: {}",
        String::from_utf8_lossy(&started.stderr)
    );
    let result = rt().block_on(async {
        let (client, file, info) = attach_service(Some(&state)).await?;
        ensure!(file.pid == info.pid, "{file:?} vs {info:?}");
        ensure!(file.url == format!("http://127.0.0.1:{port}"), "{file:?}");
        ensure!(file.password.is_some(), "no password in {file:?}");
        ensure!(info.version == "2.1.2", "{info:?}");
        // The service is a V2 server like any other.
        let s = client.create_session(&CreateSession::titled("svc")).await?;
        client.delete_session(&s.id).await?;
        // A file naming another process (a stale file whose port was reused) is refused.
        let stale = home.path().join("stale.json");
        std::fs::write(
            &stale,
            json!({"url": env.server.base_url(), "pid": 1, "password": env.server.password()})
                .to_string(),
        )?;
        let r = attach_service(Some(&stale)).await;
        ensure!(
            matches!(&r, Err(ServiceError::PidMismatch { expected: 1, .. })),
            "stale: {r:?}"
        );
        Ok::<(), Failed>(())
    });
    // Stop it whatever happened; kill it by its pid if `stop` did not.
    let pid = ServiceFile::read(&state).ok().map(|f| f.pid);
    let stopped = service("stop");
    if let Some(pid) = pid {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(100));
        }
        if Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    result?;
    let stopped = stopped?;
    ensure!(
        stopped.status.success(),
        "service stop: {}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    ensure!(!state.exists(), "service.json left after stop");
    Ok(())
}

fn server_lost(env: &Env) -> Result<(), Failed> {
    let home = IsolatedHome::new()?;
    let project = project_for(&env.model, json!({}));
    let server = server_for(&env.bin, &home, project.path());
    let client = client_for(&server);
    rt().block_on(async {
        let router = EventRouter::connect_v2(client.clone(), RouterConfig::default()).await?;
        let s = session(&client, &project, "lost").await?;
        env.reply(
            &s,
            "lost",
            Reply::text("never").delay(Duration::from_secs(60)),
        );
        let p = Prompt::text("wait for me");
        let waiter = router.turn_v2(&s, &p.id);
        client.prompt(&s, &p).await?;
        let killer = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_millis(700));
            server.kill();
            server
        });
        let started = std::time::Instant::now();
        let r = waiter.wait(deadline(60)).await;
        let _server = killer.await?;
        match r {
            Err(TurnError::ServerLost { source, .. }) => {
                ensure!(source.is_unreachable(), "{source}");
                ensure!(
                    started.elapsed() < Duration::from_secs(30),
                    "took {:?}",
                    started.elapsed()
                );
            }
            other => return Err(format!("expected ServerLost, got {other:?}").into()),
        }
        Ok(())
    })
}
