//! Tests against a real OpenCode 1 `opencode serve` driven by the scripted model.
//!
//! One server is shared by the whole binary (start-up costs ≈1.3 s); every test gets its own
//! project directory (addressed with `?directory=`) and its own sessions, and keys its model
//! rules on its session ids. `harness = false` (libtest-mimic) so the server is dropped, and
//! its process stopped, before the process exits. The binary is OpenCode 1 whatever
//! `OPENCODE_BIN` selects ([`orch_opencode::find_generation`]); a missing one skips the
//! tests, or fails them when `CI` is set. The OpenCode 2 tests are in `server_v2.rs`.

#[path = "support/opencode_bin.rs"]
mod opencode_bin;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use orch_opencode::{
    Client, ConfigInstaller, CreateSession, Delivery, ErrorName, Event, EventKind, EventRouter,
    Finish, InstallSpec, ListSessions, MessageId, ModelRef, OpencodeServer, PartKind,
    PermissionAction, PermissionReply, PermissionRule, Prompt, RetryNotice, RouterConfig,
    ServerBuilder, Session, SessionId, SessionStatus, Toast, ToastVariant, ToolStatus, TurnError,
    TurnOutput, UpdateSession,
};
use orch_testkit::opencode::{IsolatedHome, TestProject, fake_provider_config, merge_json};
use orch_testkit::{Reply, RequestKind, Rule, Script, ScriptedModel};
use serde_json::json;
use tokio::time::Instant;

struct Env {
    // Dropped first (fields drop in order): the server is stopped before its home and
    // projects are removed. The other way round, a loaded machine left the home behind:
    // the server still wrote into it while it was being removed.
    server: OpencodeServer,
    model: ScriptedModel,
    _home: IsolatedHome,
    root: TestProject,
    bin: std::path::PathBuf,
}

impl Env {
    fn start(bin: &Path) -> Env {
        let model = ScriptedModel::start(Script::new()).expect("scripted model starts");
        let home = IsolatedHome::new().expect("isolated home");
        let root = project_for(&model);
        let server = server_for(bin, &home, root.path());
        Env {
            model,
            _home: home,
            root,
            bin: bin.to_owned(),
            server,
        }
    }

    fn project(&self) -> TestProject {
        project_for(&self.model)
    }

    /// Runs `test` on a runtime of its own with a fresh project directory and a client
    /// scoped to it. The directory lives until the test ends, whether the test's future
    /// holds it or not.
    fn run<F, Fut>(&self, test: F) -> Result<(), Failed>
    where
        F: FnOnce(Arc<TestProject>, Client) -> Fut,
        Fut: std::future::Future<Output = Result<(), Failed>>,
    {
        let project = Arc::new(self.project());
        let client = self.client(project.path());
        rt().block_on(test(Arc::clone(&project), client))
    }

    fn client(&self, dir: &Path) -> Client {
        client_for(&self.server, dir)
    }

    fn rule(&self, rule: Rule) {
        self.model.add_rule(rule).expect("valid rule");
    }

    /// The model answers every call of `session` with `reply`.
    fn reply(&self, session: &SessionId, name: impl Into<String>, reply: Reply) {
        self.rule(Rule::new(name).session(session.as_str()).reply(reply));
    }

    /// A scripted tool turn in `session`: a call without a tool result yet is answered with
    /// `call` (a tool call), the call after the tool's result with `then`.
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
}

fn project_for(model: &ScriptedModel) -> TestProject {
    let mut config = fake_provider_config(&model.base_url());
    merge_json(&mut config, json!({"snapshot": false}));
    TestProject::with_config(config).expect("project dir")
}

fn server_for(bin: &Path, home: &IsolatedHome, cwd: &Path) -> OpencodeServer {
    ServerBuilder::new()
        .binary(bin)
        .project_dir(cwd)
        .isolated_home(home.path())
        .remove_home_if_orphaned(true)
        .start()
        .unwrap_or_else(|e| panic!("opencode serve must start: {e}"))
}

fn client_for(server: &OpencodeServer, dir: &Path) -> Client {
    Client::builder(server.base_url())
        .basic_auth(server.username(), server.password())
        .directory(dir.to_string_lossy())
        .build()
        .expect("client")
}

fn fake() -> ModelRef {
    ModelRef::new("fake", "fake-model")
}

fn prompt(text: &str) -> Prompt {
    Prompt::text(text).agent("build").model(fake())
}

/// A session titled `title`.
async fn titled(client: &Client, title: &str) -> Result<Session, Failed> {
    Ok(client.create_session(&CreateSession::titled(title)).await?)
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
        (
            "session_create_get_list_children_update_delete",
            session_crud,
        ),
        ("prompt_runs_a_real_write_tool_call", prompt_with_tool_call),
        (
            "prompt_async_and_wait_idle_return_the_turn",
            prompt_async_wait_idle,
        ),
        (
            "events_of_one_session_arrive_in_order_while_another_runs",
            events_in_order,
        ),
        (
            "twenty_concurrent_sessions_all_finish_with_their_own_events",
            twenty_sessions,
        ),
        (
            "abort_during_a_slow_reply_is_a_typed_abort",
            abort_slow_reply,
        ),
        (
            "model_500_and_429_surface_as_typed_errors_with_status",
            model_http_errors,
        ),
        ("permission_request_is_seen_and_replied", permission_flow),
        (
            "close_session_rejects_a_pending_permission_and_deletes",
            close_with_pending_permission,
        ),
        ("wrong_password_is_a_typed_auth_error", wrong_password),
        (
            "server_killed_mid_wait_ends_the_wait_with_a_typed_error",
            server_killed,
        ),
        ("toast_agents_providers_todo_summarize", misc_endpoints),
        (
            "wait_idle_called_after_the_turn_ended_still_resolves",
            late_wait_idle,
        ),
        ("unknown_agent_fails_at_once", unknown_agent),
        ("installed_agent_is_used_by_the_server", installed_agent),
        ("unknown_route_is_a_typed_not_json_error", unknown_route),
        (
            "edit_only_rules_let_a_session_write_only_its_files",
            edit_only,
        ),
        (
            "without_a_stream_the_wait_falls_back_to_polling",
            polling_fallback,
        ),
        (
            "opencode_retries_reach_the_caller_live_and_are_counted",
            retries_live_and_counted,
        ),
        (
            "a_rate_limited_turn_reports_the_providers_retry_after",
            rate_limit_retry_after,
        ),
        (
            "a_silent_connected_stream_is_probed_after_the_silence_interval",
            silence_probe,
        ),
        (
            "a_turn_on_a_long_session_reads_one_page_of_its_own_size",
            long_history_turns,
        ),
        (
            "polling_on_a_long_session_reads_pages_not_the_history",
            long_history_polling,
        ),
    ];
    let bin = opencode_bin::binary_or_skip(orch_opencode::Generation::V1);
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
    env.run(|_project, client| async move {
        let rules = vec![PermissionRule::new("bash", "*", PermissionAction::Ask)];
        let parent = client
            .create_session(&CreateSession::titled("parent").permission(rules.clone()))
            .await?;
        ensure!(&*parent.title == "parent", "title {:?}", parent.title);
        ensure!(parent.id.has_valid_prefix(), "id {}", parent.id);
        let got = client.session(&parent.id).await?;
        ensure!(got.id == parent.id, "get returned {}", got.id);
        ensure!(
            got.permission
                .as_deref()
                .unwrap_or_default()
                .contains(&rules[0]),
            "permission rules not stored: {:?}",
            got.permission
        );
        let child = client
            .create_session(&CreateSession::titled("child").parent(parent.id.clone()))
            .await?;
        ensure!(
            child.parent_id.as_ref() == Some(&parent.id),
            "parent {:?}",
            child.parent_id
        );
        let children = client.children(&parent.id).await?;
        ensure!(
            children.len() == 1 && children[0].id == child.id,
            "children {children:?}"
        );
        let listed = client.list_sessions(&ListSessions::default()).await?;
        ensure!(listed.len() == 2, "listed {} sessions", listed.len());
        let renamed = client
            .update_session(&parent.id, &UpdateSession::title("renamed"))
            .await?;
        ensure!(
            &*renamed.title == "renamed",
            "renamed to {:?}",
            renamed.title
        );
        ensure!(
            client.delete_session(&parent.id).await?,
            "delete returned false"
        );
        let gone = client.session(&child.id).await;
        ensure!(
            matches!(&gone, Err(e) if e.is_not_found()),
            "child after parent delete: {gone:?}"
        );
        let again = client.delete_session(&parent.id).await;
        ensure!(
            matches!(&again, Err(e) if e.status() == Some(404)),
            "second delete: {again:?}"
        );
        Ok(())
    })
}

fn prompt_with_tool_call(env: &Env) -> Result<(), Failed> {
    env.run(|project, client| async move {
        let s = titled(&client, "tool").await?;
        env.tool_turn(
            &s.id,
            "write-step",
            Reply::tool_call(
                "write",
                json!({"filePath": "hello.txt", "content": "hello from the model\n"}),
            ),
            Reply::text("Wrote it.").usage(30, 4),
        );
        let last = client.prompt(&s.id, &prompt("create hello.txt")).await?;
        ensure!(last.info.error.is_none(), "error {:?}", last.info.error);
        ensure!(
            last.info.finish == Some(Finish::Stop),
            "finish {:?}",
            last.info.finish
        );
        ensure!(last.text() == "Wrote it.", "text {:?}", last.text());
        let written = project.read("hello.txt")?;
        ensure!(written == "hello from the model\n", "file {written:?}");
        let all = client.messages(&s.id).await?;
        let tool = all
            .iter()
            .flat_map(|m| m.tool_parts())
            .next()
            .ok_or("no tool part")?;
        ensure!(
            tool.tool.as_deref() == Some("write"),
            "tool {:?}",
            tool.tool
        );
        let state = tool.state.as_ref().ok_or("no state")?;
        ensure!(
            state.status == ToolStatus::Completed,
            "status {:?}",
            state.status
        );
        Ok(())
    })
}

async fn router_for(client: &Client) -> Result<EventRouter, Failed> {
    Ok(EventRouter::connect(client.clone(), RouterConfig::default()).await?)
}

fn prompt_async_wait_idle(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let s = titled(&client, "async").await?;
        env.reply(
            &s.id,
            "async-text",
            Reply::text("async answer").usage(11, 3),
        );
        let p = prompt("say something");
        let waiter = router.turn(&s.id, &p.message_id);
        client.prompt_async(&s.id, &p).await?;
        let out = waiter.wait(deadline(60)).await?;
        ensure!(out.text() == "async answer", "text {:?}", out.text());
        ensure!(out.messages.len() == 1, "{} messages", out.messages.len());
        ensure!(
            out.tokens.input == 11 && out.tokens.output == 3,
            "tokens {:?}",
            out.tokens
        );
        ensure!(
            out.messages[0].info.parent_id.as_ref() == Some(&p.message_id),
            "parent {:?}",
            out.messages[0].info.parent_id
        );
        ensure!(
            out.finish() == Some(&Finish::Stop),
            "finish {:?}",
            out.finish()
        );
        // A second turn in the same session, through run_turn.
        let out2 = router
            .run_turn(&s.id, &prompt("again"), deadline(60))
            .await?;
        ensure!(
            out2.text() == "async answer",
            "second text {:?}",
            out2.text()
        );
        Ok(())
    })
}

fn events_in_order(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let a = titled(&client, "a").await?;
        let b = titled(&client, "b").await?;
        env.reply(
            &a.id,
            "a",
            Reply::text("from a, in several chunks").chunk_chars(4),
        );
        env.reply(
            &b.id,
            "b",
            Reply::text("from b").delay(Duration::from_millis(200)),
        );
        let mut sub_a = router.subscribe_session(a.id.as_str());
        let pa = prompt("a");
        let pb = prompt("b");
        let (ra, rb) = tokio::join!(
            router.run_turn(&a.id, &pa, deadline(60)),
            router.run_turn(&b.id, &pb, deadline(60))
        );
        ra?;
        rb?;
        // Collect what A's subscriber saw (idle may be followed by a few trailing updates).
        let mut kinds = Vec::new();
        let mut deltas = String::new();
        while let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(300), sub_a.recv()).await
        {
            let Delivery::Event(raw) = d else {
                return Err(format!("unexpected {d:?}").into());
            };
            ensure!(
                raw.session_id() == Some(a.id.as_str()),
                "foreign event {raw:?}"
            );
            if let Event::MessagePartDelta { delta, .. } = raw.decode()? {
                deltas.push_str(&delta);
            }
            kinds.push(raw.kind());
        }
        let pos = |k: EventKind| kinds.iter().position(|x| *x == k);
        let user = pos(EventKind::MessageUpdated).ok_or("no message.updated")?;
        let busy = pos(EventKind::SessionStatus).ok_or("no status")?;
        let idle = pos(EventKind::SessionIdle).ok_or("no idle")?;
        let first_delta = pos(EventKind::MessagePartDelta).ok_or("no delta")?;
        ensure!(
            user < busy && busy < first_delta && first_delta < idle,
            "order {kinds:?}"
        );
        ensure!(deltas == "from a, in several chunks", "deltas {deltas:?}");
        Ok(())
    })
}

fn twenty_sessions(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let mut sessions = Vec::new();
        for i in 0..20 {
            let s = client
                .create_session(&CreateSession::titled(format!("s{i}")))
                .await?;
            env.reply(&s.id, format!("s{i}"), Reply::text(format!("answer {i}")));
            sessions.push(s.id);
        }
        let mut subs: Vec<_> = sessions
            .iter()
            .map(|id| router.subscribe_session(id.as_str()))
            .collect();
        let runs = sessions.iter().enumerate().map(|(i, id)| {
            let router = router.clone();
            let id = id.clone();
            async move {
                let out = router
                    .run_turn(&id, &prompt(&format!("q{i}")), deadline(120))
                    .await?;
                Ok::<_, TurnError>((i, out))
            }
        });
        let results = futures::future::join_all(runs).await;
        for r in results {
            let (i, out) = r?;
            ensure!(
                out.text() == format!("answer {i}"),
                "session {i} got {:?}",
                out.text()
            );
        }
        for (id, sub) in sessions.iter().zip(subs.iter_mut()) {
            let mut idle = 0;
            while let Some(d) = sub.try_recv() {
                match d {
                    Delivery::Event(raw) => {
                        ensure!(raw.session_id() == Some(id.as_str()), "{id} got {raw:?}");
                        idle += usize::from(raw.kind() == EventKind::SessionIdle);
                    }
                    Delivery::Missed(m) => return Err(format!("{id} missed events: {m:?}").into()),
                    _ => {}
                }
            }
            ensure!(idle >= 1, "{id} saw no idle");
        }
        ensure!(router.stats().dropped == 0, "dropped {:?}", router.stats());
        Ok(())
    })
}

fn abort_slow_reply(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let s = titled(&client, "abort").await?;
        env.reply(
            &s.id,
            "slow",
            Reply::text("too late").delay(Duration::from_secs(30)),
        );
        let p = prompt("take your time");
        let waiter = router.turn(&s.id, &p.message_id);
        let mut sub = router.subscribe_session(s.id.as_str());
        client.prompt_async(&s.id, &p).await?;
        // Abort once the turn is visibly running.
        loop {
            match tokio::time::timeout(Duration::from_secs(20), sub.recv()).await {
                Ok(Some(Delivery::Event(raw))) if raw.kind() == EventKind::SessionStatus => break,
                Ok(Some(_)) => {}
                other => return Err(format!("no busy status: {other:?}").into()),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        ensure!(client.abort(&s.id).await?, "abort returned false");
        let started = std::time::Instant::now();
        match waiter.wait(deadline(20)).await {
            Err(TurnError::Aborted { messages, .. }) => {
                ensure!(started.elapsed() < Duration::from_secs(10), "slow abort");
                let last = messages.last().ok_or("no assistant message")?;
                ensure!(last.info.is_completed(), "not finalised: {:?}", last.info);
            }
            other => return Err(format!("expected Aborted, got {other:?}").into()),
        }
        Ok(())
    })
}

fn model_http_errors(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let s500 = titled(&client, "e500").await?;
        let s429 = titled(&client, "e429").await?;
        // Retry-After: 1 keeps OpenCode's 5 retries to ≈5 s.
        env.reply(
            &s500.id,
            "e500",
            Reply::error(500, "scripted internal error").retry_after(1),
        );
        env.reply(
            &s429.id,
            "e429",
            Reply::error(429, "Rate limit exceeded").retry_after(1),
        );
        let (px, py) = (prompt("x"), prompt("y"));
        let (r500, r429) = tokio::join!(
            router.run_turn(&s500.id, &px, deadline(90)),
            router.run_turn(&s429.id, &py, deadline(90))
        );
        for (r, status, text) in [
            (r500, 500, "scripted internal error"),
            (r429, 429, "Rate limit exceeded"),
        ] {
            match r {
                Err(e @ TurnError::Failed { .. }) => {
                    ensure!(e.upstream_status() == Some(status), "status of {e}");
                    let TurnError::Failed { error, .. } = &e else {
                        unreachable!()
                    };
                    ensure!(error.name == ErrorName::Api, "name {:?}", error.name);
                    ensure!(
                        error.message().contains(text),
                        "message {:?}",
                        error.message()
                    );
                }
                other => return Err(format!("expected Failed({status}), got {other:?}").into()),
            }
        }
        Ok(())
    })
}

fn permission_flow(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let rules = vec![PermissionRule::new("bash", "*", PermissionAction::Ask)];
        let s = client
            .create_session(&CreateSession::titled("perm").permission(rules))
            .await?;
        env.tool_turn(
            &s.id,
            "bash",
            Reply::tool_call(
                "bash",
                json!({"command": "echo hi-from-bash", "description": "say hi"}),
            ),
            Reply::text("bash done"),
        );
        let mut sub = router.subscribe_session(s.id.as_str());
        let p = prompt("run bash");
        let waiter = router.turn(&s.id, &p.message_id);
        client.prompt_async(&s.id, &p).await?;
        let asked = loop {
            match tokio::time::timeout(Duration::from_secs(30), sub.recv()).await {
                Ok(Some(Delivery::Event(raw))) if raw.kind() == EventKind::PermissionAsked => {
                    match raw.decode()? {
                        Event::PermissionAsked(req) => break req,
                        other => return Err(format!("decoded {other:?}").into()),
                    }
                }
                Ok(Some(_)) => {}
                other => return Err(format!("no permission.asked: {other:?}").into()),
            }
        };
        ensure!(
            asked.permission == "bash",
            "permission {:?}",
            asked.permission
        );
        ensure!(
            asked.patterns == ["echo hi-from-bash"],
            "patterns {:?}",
            asked.patterns
        );
        let pending = client.permissions().await?;
        ensure!(
            pending.iter().any(|p| p.id == asked.id),
            "not listed: {pending:?}"
        );
        let status = client.session_status().await?;
        ensure!(
            status.get(&s.id) == Some(&SessionStatus::Busy),
            "status while asking {status:?}"
        );
        ensure!(
            client
                .reply_permission(&s.id, &asked.id, PermissionReply::Once)
                .await?,
            "reply returned false"
        );
        let out = waiter.wait(deadline(60)).await?;
        ensure!(out.text() == "bash done", "text {:?}", out.text());
        let tool = out
            .messages
            .iter()
            .flat_map(|m| m.tool_parts())
            .next()
            .ok_or("no tool part in the turn")?;
        let state = tool.state.as_ref().ok_or("no state")?;
        ensure!(state.status == ToolStatus::Completed, "tool {:?}", state);
        ensure!(
            state
                .output
                .as_deref()
                .unwrap_or_default()
                .contains("hi-from-bash"),
            "output {:?}",
            state.output
        );
        ensure!(
            client.permissions().await?.is_empty(),
            "permission still pending"
        );
        Ok(())
    })
}

fn close_with_pending_permission(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let rules = vec![PermissionRule::new("bash", "*", PermissionAction::Ask)];
        let s = client
            .create_session(&CreateSession::titled("close").permission(rules))
            .await?;
        env.reply(
            &s.id,
            "bash-close",
            Reply::tool_call(
                "bash",
                json!({"command": "echo never", "description": "never runs"}),
            ),
        );
        let p = prompt("run bash");
        let waiter = router.turn(&s.id, &p.message_id);
        client.prompt_async(&s.id, &p).await?;
        // The turn blocks on the permission: the wait ends at its deadline, naming it.
        match waiter.wait(deadline(8)).await {
            Err(TurnError::Deadline {
                pending_permission: Some(req),
                ..
            }) => ensure!(req.permission == "bash", "pending {req:?}"),
            other => return Err(format!("expected Deadline with a permission: {other:?}").into()),
        }
        client.close_session(&s.id, Duration::from_secs(10)).await?;
        ensure!(
            client.permissions().await?.is_empty(),
            "permission left pending"
        );
        let gone = client.session(&s.id).await;
        ensure!(
            matches!(&gone, Err(e) if e.is_not_found()),
            "session still there: {gone:?}"
        );
        ensure!(
            !client.session_status().await?.contains_key(&s.id),
            "session still busy"
        );
        Ok(())
    })
}

fn wrong_password(env: &Env) -> Result<(), Failed> {
    rt().block_on(async {
        let bad = Client::builder(env.server.base_url())
            .basic_auth(env.server.username(), "wrong")
            .build()?;
        let r = bad.health().await;
        ensure!(
            matches!(r, Err(orch_opencode::Error::Unauthorized { .. })),
            "health with a wrong password: {r:?}"
        );
        let r = EventRouter::connect(bad, RouterConfig::default()).await;
        ensure!(
            matches!(r, Err(orch_opencode::Error::Unauthorized { .. })),
            "events with a wrong password: {r:?}"
        );
        let good = env.client(env.root.path());
        let health = good.health().await?;
        ensure!(
            health.healthy && health.version == "1.18.33",
            "health {health:?}"
        );
        Ok(())
    })
}

fn server_killed(env: &Env) -> Result<(), Failed> {
    // A server of its own: this one gets killed.
    let home = IsolatedHome::new()?;
    let project = env.project();
    let server = server_for(&env.bin, &home, project.path());
    let client = client_for(&server, project.path());
    rt().block_on(async {
        let router = router_for(&client).await?;
        let s = titled(&client, "doomed").await?;
        env.reply(
            &s.id,
            "doomed",
            Reply::text("never").delay(Duration::from_secs(60)),
        );
        let p = prompt("wait forever");
        let waiter = router.turn(&s.id, &p.message_id);
        client.prompt_async(&s.id, &p).await?;
        tokio::time::sleep(Duration::from_millis(800)).await;
        let t0 = std::time::Instant::now();
        let deadline_in = Duration::from_secs(20);
        let wait = tokio::spawn(waiter.wait(Instant::now() + deadline_in));
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.kill();
        let r = wait.await?;
        let took = t0.elapsed();
        ensure!(took < deadline_in, "wait took {took:?}");
        ensure!(
            matches!(r, Err(TurnError::ServerLost { .. })),
            "expected ServerLost, got {r:?}"
        );
        Ok(())
    })
}

fn misc_endpoints(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let mut all = router.subscribe_all();
        ensure!(
            client
                .show_toast(&Toast::new(ToastVariant::Success, "built").title("Note"))
                .await?,
            "toast returned false"
        );
        let toast = loop {
            match tokio::time::timeout(Duration::from_secs(10), all.recv()).await {
                Ok(Some(Delivery::Event(raw))) if raw.kind() == EventKind::TuiToastShow => {
                    break raw.decode()?;
                }
                Ok(Some(_)) => {}
                other => return Err(format!("no toast event: {other:?}").into()),
            }
        };
        match toast {
            Event::TuiToastShow(t) => {
                ensure!(t.message == "built" && t.variant == ToastVariant::Success, "{t:?}")
            }
            other => return Err(format!("decoded {other:?}").into()),
        }
        let agents = client.agents().await?;
        ensure!(agents.iter().any(|a| a.name == "build"), "agents {agents:?}");
        let providers = client.providers().await?;
        ensure!(
            providers.providers.iter().any(|p| p.id == "fake"),
            "providers {:?}",
            providers.providers.iter().map(|p| &p.id).collect::<Vec<_>>()
        );
        let config = client.config().await?;
        ensure!(config["model"] == "fake/fake-model", "config model {}", config["model"]);

        let s = titled(&client, "misc").await?;
        ensure!(client.todo(&s.id).await?.is_empty(), "todo not empty");
        env.tool_turn(&s.id, "misc-todo", Reply::tool_call(
                    "todowrite",
                    json!({"todos": [{"content": "Write hello.txt", "status": "in_progress", "priority": "high"}]}),
                ), Reply::text("listed"));
        env.rule(
            Rule::new("misc-compact")
                .kind(RequestKind::Compaction)
                .session(s.id.as_str())
                .reply(Reply::text("summary of the session")),
        );
        router.run_turn(&s.id, &prompt("plan"), deadline(60)).await?;
        let todos = client.todo(&s.id).await?;
        ensure!(
            todos.len() == 1 && todos[0].content == "Write hello.txt",
            "todos {todos:?}"
        );
        ensure!(client.summarize(&s.id, &fake()).await?, "summarize returned false");
        let msgs = client.messages(&s.id).await?;
        ensure!(
            msgs.iter()
                .any(|m| m.parts.iter().any(|p| p.kind == PartKind::Compaction)),
            "no compaction part"
        );
        Ok(())
    })
}

fn late_wait_idle(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let s = titled(&client, "late").await?;
        env.reply(&s.id, "late", Reply::text("early bird"));
        let id = MessageId::generate();
        client
            .prompt(&s.id, &prompt("hi").message_id(id.clone()))
            .await?;
        let out = router.wait_idle(&s.id, &id, deadline(20)).await?;
        ensure!(out.text() == "early bird", "text {:?}", out.text());
        Ok(())
    })
}

fn unknown_agent(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let s = titled(&client, "noagent").await?;
        let p = Prompt::text("hi").agent("no-such-agent").model(fake());
        let started = std::time::Instant::now();
        match router.run_turn(&s.id, &p, deadline(30)).await {
            Err(TurnError::Failed { error, .. }) => {
                ensure!(
                    error.message().contains("no-such-agent"),
                    "message {:?}",
                    error.message()
                );
            }
            other => return Err(format!("expected Failed, got {other:?}").into()),
        }
        ensure!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
        let _ = SessionId::new("unused");
        Ok(())
    })
}

fn installed_agent(env: &Env) -> Result<(), Failed> {
    let project = env.project();
    let marker = orch_testkit::agent_marker("orch-worker");
    ConfigInstaller::new(project.path()).install(&InstallSpec::new().agent(
        "orch-worker",
        json!({"mode": "primary", "prompt": format!("{marker} You are the worker."),
               "permission": {"edit": "allow", "bash": "deny"}}),
    ))?;
    let client = env.client(project.path());
    rt().block_on(async {
        let agents = client.agents().await?;
        let worker = agents
            .iter()
            .find(|a| a.name == "orch-worker")
            .ok_or_else(|| {
                format!(
                    "agent not loaded: {:?}",
                    agents.iter().map(|a| &a.name).collect::<Vec<_>>()
                )
            })?;
        ensure!(worker.mode == "primary", "mode {:?}", worker.mode);
        let router = router_for(&client).await?;
        let s = titled(&client, "worker").await?;
        env.rule(
            Rule::new("worker-agent")
                .agent("orch-worker")
                .session(s.id.as_str())
                .reply(Reply::text("worker here")),
        );
        let p = Prompt::text("who are you")
            .agent("orch-worker")
            .model(fake());
        let out = router.run_turn(&s.id, &p, deadline(60)).await?;
        ensure!(out.text() == "worker here", "text {:?}", out.text());
        let info = &out.messages[0].info;
        ensure!(
            info.agent.as_deref() == Some("orch-worker"),
            "agent {:?}",
            info.agent
        );
        Ok(())
    })
}

fn unknown_route(env: &Env) -> Result<(), Failed> {
    rt().block_on(async {
        // Every path under this prefix is unknown to OpenCode: it serves its web UI instead.
        let client = Client::builder(format!("{}/no-such-prefix", env.server.base_url()))
            .basic_auth(env.server.username(), env.server.password())
            .build()?;
        match client.health().await {
            Err(orch_opencode::Error::NotJson { content_type, .. }) => {
                ensure!(
                    content_type.starts_with("text/html"),
                    "content type {content_type}"
                );
            }
            other => return Err(format!("expected NotJson, got {other:?}").into()),
        }
        Ok(())
    })
}

fn edit_only(env: &Env) -> Result<(), Failed> {
    let project = env.project();
    // A git repository, as real projects are: OpenCode matches edit patterns against paths
    // relative to the worktree root.
    let git = std::process::Command::new("git")
        .args(["init", "-q"])
        .current_dir(project.path())
        .status()?;
    ensure!(git.success(), "git init failed");
    let client = env.client(project.path());
    rt().block_on(async {
        let router = router_for(&client).await?;
        let s = client
            .create_session(
                &CreateSession::titled("edit-only")
                    .permission(PermissionRule::edit_only(["allowed.txt"])),
            )
            .await?;
        let write =
            |file: &str| Reply::tool_call("write", json!({"filePath": file, "content": "x\n"}));
        for (step, reply) in [
            (0, write("allowed.txt")),
            (1, write("other.txt")),
            (2, Reply::text("done")),
        ] {
            env.rule(
                Rule::new(format!("edit-only-{step}"))
                    .session(s.id.as_str())
                    .step(step)
                    .reply(reply),
            );
        }
        let out = router
            .run_turn(&s.id, &prompt("write two files"), deadline(60))
            .await?;
        let all = client.messages(&s.id).await?;
        let tools: Vec<_> = all
            .iter()
            .flat_map(|m| m.tool_parts())
            .map(|p| {
                let st = p.state.as_ref();
                format!(
                    "{:?} {:?} {:?} {:?} {:?}",
                    p.tool,
                    st.map(|s| &s.status),
                    st.map(|s| &s.input),
                    st.and_then(|s| s.output.as_deref()),
                    st.and_then(|s| s.error.as_deref())
                )
            })
            .collect();
        ensure!(out.text() == "done", "text {:?}: {tools:#?}", out.text());
        ensure!(
            project.path().join("allowed.txt").exists(),
            "allowed.txt not written: {tools:#?}"
        );
        ensure!(
            !project.path().join("other.txt").exists(),
            "other.txt was written"
        );
        Ok(())
    })
}

fn polling_fallback(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        // A router with no stream at all: the waiter can only poll.
        let router = EventRouter::detached(RouterConfig::default());
        let s = titled(&client, "poll").await?;
        env.reply(
            &s.id,
            "poll",
            Reply::text("polled").delay(Duration::from_millis(500)),
        );
        let p = prompt("poll me");
        let waiter = router.turn_with_client(&client, &s.id, &p.message_id);
        client.prompt_async(&s.id, &p).await?;
        let started = std::time::Instant::now();
        let out = waiter.wait(deadline(60)).await?;
        ensure!(out.text() == "polled", "text {:?}", out.text());
        // Three stable polls 500 ms apart at least.
        ensure!(
            started.elapsed() >= Duration::from_millis(1000),
            "resolved without stability detection after {:?}",
            started.elapsed()
        );
        Ok(())
    })
}

fn silence_probe(env: &Env) -> Result<(), Failed> {
    let project = env.project();
    let elsewhere = env.project();
    let client = env.client(project.path());
    rt().block_on(async {
        // A connected router whose stream belongs to another directory: no event of this
        // session ever arrives, so only the silence probe can see the turn end.
        let router = router_for(&env.client(elsewhere.path())).await?;
        let s = titled(&client, "silent").await?;
        env.reply(&s.id, "silent", Reply::text("answered in silence"));
        let p = prompt("anyone there?");
        let waiter = router
            .turn_with_client(&client, &s.id, &p.message_id)
            .probe_after(Duration::from_millis(700));
        client.prompt_async(&s.id, &p).await?;
        let started = std::time::Instant::now();
        let out = waiter.wait(deadline(30)).await?;
        ensure!(out.text() == "answered in silence", "text {:?}", out.text());
        ensure!(
            started.elapsed() < Duration::from_secs(15),
            "the probe took {:?}",
            started.elapsed()
        );
        // Without the probe the same wait only ends at its deadline.
        let p2 = prompt("anyone there, again?");
        let waiter = router
            .turn_with_client(&client, &s.id, &p2.message_id)
            .probe_after(Duration::from_secs(60));
        client.prompt_async(&s.id, &p2).await?;
        match waiter.wait(deadline(3)).await {
            Err(TurnError::Deadline { .. }) => Ok(()),
            other => Err(format!("expected a deadline without probing, got {other:?}").into()),
        }
    })
}

/// A session with 30 stored `noReply` messages and two earlier tool turns (5 messages each
/// way), so that a read of the whole history is easy to tell from a read of one turn.
async fn long_session(env: &Env, client: &Client, title: &str) -> Result<SessionId, Failed> {
    let s = client.create_session(&CreateSession::titled(title)).await?;
    let write = json!({"filePath": format!("{title}.txt"), "content": "x\n"});
    env.tool_turn(
        &s.id,
        title,
        Reply::tool_call("write", write).usage(5, 1),
        Reply::text("wrote it").usage(7, 2),
    );
    for i in 0..2 {
        client
            .prompt(&s.id, &prompt(&format!("earlier turn {i}")))
            .await?;
    }
    for i in 0..30 {
        let note = Prompt::text(format!("note {i}: {}", "context ".repeat(20))).no_reply();
        client.prompt(&s.id, &note).await?;
    }
    Ok(s.id)
}

fn long_history_turns(env: &Env) -> Result<(), Failed> {
    env.run(|project, client| async move {
        let router = router_for(&client).await?;
        let id = long_session(env, &client, "long").await?;
        let history = client.stats();
        let all = client.messages(&id).await?;
        let history_bytes = client.stats().since(&history).response_bytes;
        ensure!(all.len() == 2 * 3 + 30, "{} messages stored", all.len());

        // A separate client for the waiter, so its requests are counted alone.
        let counted = env.client(project.path());
        // A multi-step turn (tool call, then text): both assistant messages, one page.
        let p = prompt("one more tool turn");
        let waiter = router.turn_with_client(&counted, &id, &p.message_id);
        client.prompt_async(&id, &p).await?;
        let out = waiter.wait(deadline(60)).await?;
        let used = counted.stats();
        ensure!(out.messages.len() == 2, "{} messages", out.messages.len());
        ensure!(
            out.messages[0].info.finish == Some(Finish::ToolCalls)
                && out.messages[0].tool_parts().count() == 1,
            "first step {:?}",
            out.messages[0]
        );
        ensure!(out.text() == "wrote it", "text {:?}", out.text());
        ensure!(
            out.tokens.input == 12 && out.tokens.output == 3,
            "tokens summed over steps: {:?}",
            out.tokens
        );
        ensure!(
            out.messages
                .iter()
                .all(|m| m.info.parent_id.as_ref() == Some(&p.message_id)),
            "parents"
        );
        ensure!(
            used.requests == 1,
            "{} requests for the turn",
            used.requests
        );
        ensure!(
            used.response_bytes * 4 < history_bytes,
            "read {} bytes, the history is {history_bytes}",
            used.response_bytes
        );
        // The turn as read equals the turn as stored.
        let stored: Vec<_> = client
            .messages(&id)
            .await?
            .into_iter()
            .filter(|m| m.info.parent_id.as_ref() == Some(&p.message_id))
            .collect();
        ensure!(
            stored == out.messages,
            "read {:?}, stored {stored:?}",
            out.messages
        );

        // A failing turn (HTTP 400, no retry): its error is finalised after the first idle.
        let failing = titled(&client, "long-400").await?;
        env.reply(
            &failing.id,
            "long-400",
            Reply::error(400, "scripted bad request"),
        );
        let before = counted.stats();
        let p = prompt("fail please");
        let waiter = router.turn_with_client(&counted, &failing.id, &p.message_id);
        client.prompt_async(&failing.id, &p).await?;
        match waiter.wait(deadline(60)).await {
            Err(TurnError::Failed {
                error, messages, ..
            }) => {
                ensure!(error.name == ErrorName::Api, "error {error:?}");
                let last = messages.last().ok_or("no message in the failed turn")?;
                ensure!(
                    last.info.error.is_some() && last.info.is_completed(),
                    "the stored message was not finalised: {:?}",
                    last.info
                );
            }
            other => return Err(format!("expected a failure, got {other:?}").into()),
        }
        let used = counted.stats().since(&before);
        ensure!(
            used.requests == 1,
            "{} requests for the failed turn",
            used.requests
        );

        // wait_idle after the end (no event knowledge): status, then one small page.
        let p = prompt("late one");
        let late_router = router_for(&counted).await?;
        let out = router.run_turn(&id, &p, deadline(60)).await?;
        let before = counted.stats();
        let again = late_router
            .wait_idle(&id, &p.message_id, deadline(30))
            .await?;
        let used = counted.stats().since(&before);
        ensure!(again.messages == out.messages, "late read differs");
        ensure!(
            used.requests == 2,
            "{} requests for a late wait",
            used.requests
        );
        ensure!(
            used.response_bytes * 4 < history_bytes,
            "late wait read {} bytes, the history is {history_bytes}",
            used.response_bytes
        );
        Ok(())
    })
}

fn long_history_polling(env: &Env) -> Result<(), Failed> {
    env.run(|project, client| async move {
        let id = long_session(env, &client, "longpoll").await?;
        let history = client.stats();
        client.messages(&id).await?;
        let history_bytes = client.stats().since(&history).response_bytes;
        // No stream at all: the waiter can only poll.
        let router = EventRouter::detached(RouterConfig::default());
        let counted = env.client(project.path());
        let p = prompt("a tool turn, polled");
        let waiter = router.turn_with_client(&counted, &id, &p.message_id);
        client.prompt_async(&id, &p).await?;
        let out = waiter.wait(deadline(60)).await?;
        ensure!(out.messages.len() == 2, "{} messages", out.messages.len());
        ensure!(out.text() == "wrote it", "text {:?}", out.text());
        let used = counted.stats();
        // Every poll reads a status and at most a few messages, never the history.
        ensure!(
            used.response_bytes < used.requests * history_bytes / 4,
            "{} bytes in {} requests, the history is {history_bytes}",
            used.response_bytes,
            used.requests
        );

        // Events lost (a one-event buffer overflows while nobody waits): the waiter is told,
        // probes, and reads the turn back to its user message.
        let mut config = RouterConfig::default();
        config.buffer = 1;
        let tiny = EventRouter::connect(client.clone(), config).await?;
        let p = prompt("a tool turn, events lost");
        let waiter = tiny.turn_with_client(&counted, &id, &p.message_id);
        let before = counted.stats();
        client.prompt_async(&id, &p).await?;
        // Wait (with the uncounted client) until the turn is over and stored.
        let until = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ended = client.messages(&id).await?.iter().any(|m| {
                m.info.parent_id.as_ref() == Some(&p.message_id)
                    && m.info.finish == Some(Finish::Stop)
                    && m.info.is_completed()
            });
            if ended && !client.session_status().await?.contains_key(&id) {
                break;
            }
            ensure!(tokio::time::Instant::now() < until, "the turn did not end");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = waiter.wait(deadline(60)).await?;
        ensure!(out.messages.len() == 2, "{} messages", out.messages.len());
        ensure!(out.text() == "wrote it", "text {:?}", out.text());
        let used = counted.stats().since(&before);
        ensure!(
            used.requests == 2,
            "{} requests: status, one page",
            used.requests
        );
        ensure!(tiny.stats().dropped > 0, "nothing was dropped");
        Ok(())
    })
}

/// Waits for the turn of `waiter`, collecting the retry notices it sends while it runs.
async fn wait_collecting_retries(
    waiter: orch_opencode::TurnWaiter,
    deadline: Instant,
) -> (Result<TurnOutput, TurnError>, Vec<RetryNotice>) {
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
    (result, live)
}

fn retries_live_and_counted(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let s = titled(&client, "flaky").await?;
        // Two 500s (OpenCode retries each after the 1 s Retry-After), then an answer.
        env.rule(
            Rule::new("flaky")
                .session(s.id.as_str())
                .reply(Reply::error(500, "scripted outage").retry_after(1).times(2))
                .reply(Reply::text("recovered")),
        );
        let p = prompt("try hard");
        let waiter = router.turn(&s.id, &p.message_id);
        client.prompt_async(&s.id, &p).await?;
        let (result, live) = wait_collecting_retries(waiter, deadline(60)).await;
        let out = result?;
        ensure!(out.text() == "recovered", "text {:?}", out.text());
        // Seen live, while the turn ran, one per absorbed error.
        let attempts: Vec<u32> = live.iter().map(|n| n.attempt).collect();
        ensure!(attempts == [1, 2], "live notices {live:?}");
        for n in &live {
            ensure!(n.session_id == s.id, "session of {n:?}");
            ensure!(
                n.message.contains("scripted outage"),
                "message {:?}",
                n.message
            );
            ensure!(
                n.wait <= Duration::from_millis(1100),
                "OpenCode waits the Retry-After (1 s), not {:?}",
                n.wait
            );
            ensure!(!n.is_rate_limit(), "a 500 is not a rate limit: {n:?}");
        }
        // Counted in the output although the turn succeeded.
        ensure!(
            out.retries == live,
            "output {:?} vs live {live:?}",
            out.retries
        );
        let calls = env.model.requests_for_session(s.id.as_str()).len();
        ensure!(calls == 3, "{calls} model calls");
        Ok(())
    })
}

fn rate_limit_retry_after(env: &Env) -> Result<(), Failed> {
    env.run(|_project, client| async move {
        let router = router_for(&client).await?;
        let s = titled(&client, "limited").await?;
        env.reply(
            &s.id,
            "limited",
            Reply::error(429, "Rate limit exceeded").retry_after(3),
        );
        let p = prompt("again and again");
        let waiter = router.turn(&s.id, &p.message_id);
        client.prompt_async(&s.id, &p).await?;
        let started = std::time::Instant::now();
        let (result, live) = wait_collecting_retries(waiter, deadline(90)).await;
        let e = match result {
            Err(e @ TurnError::Failed { .. }) => e,
            other => return Err(format!("expected Failed, got {other:?}").into()),
        };
        // OpenCode 1.18.33 retries a 429 five times, waiting the Retry-After each time,
        // then fails the turn with the provider's error and headers.
        ensure!(e.upstream_status() == Some(429), "status of {e}");
        ensure!(
            e.retry_after() == Some(Duration::from_secs(3)),
            "retry_after {:?} of {e:?}",
            e.retry_after()
        );
        let attempts: Vec<u32> = live.iter().map(|n| n.attempt).collect();
        ensure!(attempts == [1, 2, 3, 4, 5], "live notices {live:?}");
        ensure!(
            e.retries() == live.as_slice(),
            "failure retries {:?}",
            e.retries()
        );
        for n in &live {
            ensure!(n.is_rate_limit(), "not seen as a rate limit: {n:?}");
            ensure!(
                n.wait > Duration::from_secs(2) && n.wait <= Duration::from_secs(3),
                "wait {:?}",
                n.wait
            );
        }
        ensure!(
            started.elapsed() >= Duration::from_secs(15),
            "five 3 s waits took {:?}",
            started.elapsed()
        );
        let calls = env.model.requests_for_session(s.id.as_str()).len();
        ensure!(calls == 6, "{calls} model calls");
        Ok(())
    })
}
