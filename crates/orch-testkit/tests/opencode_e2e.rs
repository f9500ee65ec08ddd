//! End to end, on both OpenCode generations: a real `opencode serve` ([`TestServer`]: an
//! isolated home, the scripted model as its only model) driven by one scripted model.
//!
//! One scripted model serves every trial of both generations at once: it answers each
//! request in the shape of the tools that request offers, so the same V1-shaped rules drive
//! OpenCode 1 and OpenCode 2. One server per generation is shared by that generation's
//! trials (a start takes a second or more); each trial has its own project directory and
//! sessions, and keys its rules on its session ids, so trials are independent. OpenCode 1 is
//! found as `OPENCODE_BIN` or the installer's `.tools/opencode`, OpenCode 2 as
//! `OPENCODE_BIN_V2` or `.tools/opencode2` (see `find_generation`); a missing one fails its
//! trials. The harness is libtest-mimic so the shared servers are stopped before the process
//! exits.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use orch_testkit::opencode::TestServer;
use orch_testkit::{Generation, Outcome, Reply, RequestKind, Rule, Script, ScriptedModel};
use serde_json::{Value, json};
use support::{Api, Session};

/// The scripted model of every trial (no fixed generation).
static MODEL: Mutex<Option<Arc<ScriptedModel>>> = Mutex::new(None);

/// A generation's shared server, or why it did not start.
type Started = Result<Arc<TestServer>, String>;

/// The shared server of each generation, started on first use.
static SERVERS: Mutex<Vec<(Generation, Started)>> = Mutex::new(Vec::new());

fn model() -> Arc<ScriptedModel> {
    let mut slot = MODEL.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(slot.get_or_insert_with(|| {
        Arc::new(ScriptedModel::start(Script::new()).expect("the scripted model starts"))
    }))
}

/// The agent the shared servers define for the trials' own rules.
const TESTER: &str = "orch-tester";

/// The agents the shared servers define, in each generation's own shape: the tester and
/// the three the example scripts speak to.
fn agents(generation: Generation) -> Value {
    let prompt_key = match generation {
        Generation::V1 => "prompt",
        Generation::V2 => "system",
    };
    let agents = [TESTER, "planner", "worker", "reviewer"].map(|name| {
        let prompt = format!("{} You are the {name}.", orch_testkit::agent_marker(name));
        let definition = json!({ prompt_key: prompt, "mode": "primary", "description": name });
        (name.to_owned(), definition)
    });
    Value::Object(agents.into_iter().collect())
}

fn server(generation: Generation) -> Result<Arc<TestServer>, Failed> {
    let model = model();
    let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, server)) = servers.iter().find(|(g, _)| *g == generation) {
        return server.clone().map_err(Failed::from);
    }
    let started = TestServer::builder(model.base_url())
        .generation(generation)
        .agents(agents(generation))
        .start()
        .map(Arc::new)
        .map_err(|e| e.to_string());
    servers.push((generation, started.clone()));
    started.map_err(Failed::from)
}

/// What a trial gets: the model, the server of its generation, a project and a client.
struct Ctx {
    model: Arc<ScriptedModel>,
    project: tempfile::TempDir,
    api: Api,
}

impl Ctx {
    fn new(generation: Generation) -> Result<Ctx, Failed> {
        let server = server(generation)?;
        let project = tempfile::Builder::new().prefix("orch-e2e-").tempdir()?;
        let api = Api::new(&server, project.path());
        Ok(Ctx {
            model: model(),
            project,
            api,
        })
    }

    fn add(&self, rule: Rule) -> Result<(), String> {
        self.model.add_rule(rule).map_err(|e| e.to_string())
    }

    fn read(&self, file: &str) -> Result<String, String> {
        std::fs::read_to_string(self.project.path().join(file)).map_err(|e| format!("{file}: {e}"))
    }
}

fn run<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), Failed> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?
        .block_on(f)
        .map_err(Failed::from)
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

/// OpenCode executes the scripted `write` call (the file exists with the scripted content)
/// and returns the scripted final text and usage.
fn scripted_write_tool_runs_for_real(generation: Generation) -> Result<(), Failed> {
    let ctx = Ctx::new(generation)?;
    run(async {
        let session = ctx.api.create_session("write test", None).await?;
        let content = "hello from the scripted model\n";
        ctx.add(
            Rule::new("write hello")
                .session(&session.id)
                .step(0)
                .reply(Reply::write_file("hello.txt", content)),
        )?;
        ctx.add(
            Rule::new("after write")
                .session(&session.id)
                .last_tool("write")
                .reply(Reply::text("Wrote hello.txt.").usage(120, 7)),
        )?;
        let turn = ctx.api.turn(&session, "Create hello.txt").await?;
        ensure(turn.error.is_none(), || format!("turn failed: {turn:?}"))?;
        ensure(turn.text == "Wrote hello.txt.", || {
            format!("text: {turn:?}")
        })?;
        ensure(turn.output_tokens == Some(7), || {
            format!("tokens: {turn:?}")
        })?;
        let written = ctx.read("hello.txt")?;
        ensure(written == content, || {
            format!("hello.txt holds {written:?}")
        })?;
        let seen = ctx.model.requests_for_session(&session.id);
        ensure(seen.len() == 2, || {
            format!("expected 2 model calls, saw {seen:?}")
        })?;
        ensure(
            seen[0].outcome
                == Outcome::ToolCalls {
                    tools: vec!["write".into()],
                }
                && seen.iter().all(|r| r.generation == Some(generation)),
            || format!("first outcome {:?}, generations {seen:?}", seen[0].outcome),
        )?;
        let second = seen[1].view.as_ref().ok_or("no view")?;
        ensure(second.tool_result && second.step == 1, || {
            format!("second view {second:?}")
        })?;
        ensure(
            second
                .tool_output
                .as_deref()
                .is_some_and(|o| o.contains("success")),
            || format!("tool output {:?}", second.tool_output),
        )
    })
}

/// A script written for OpenCode 1 (`write {filePath}`, `bash {command, description}`,
/// `last_tool = "bash"`, `tool_output = "EXIT=0"`) runs unchanged: the file is written, the
/// command really runs (it leaves a file), its output reaches the model, and the turn passes.
fn v1_shaped_script_writes_and_runs_for_real(generation: Generation) -> Result<(), Failed> {
    let ctx = Ctx::new(generation)?;
    run(async {
        let session = ctx.api.create_session("v1-shaped", Some(TESTER)).await?;
        let toml = format!(
            r#"
[[rule]]
name = "write the note"
session = "{id}"
agent = "{TESTER}"
tool_result = false
[[rule.reply]]
text = "Writing the note."
tool_calls = [{{ name = "write", arguments = {{ filePath = "note.txt", content = "ran ok\n" }} }}]

[[rule]]
name = "check the note"
session = "{id}"
last_tool = "write"
[[rule.reply]]
tool_calls = [{{ name = "bash", arguments = {{ command = "cp note.txt copied.txt && cat copied.txt; echo EXIT=$?", description = "check" }} }}]

[[rule]]
name = "pass"
session = "{id}"
last_tool = "bash"
tool_output = "ran ok\\s+EXIT=0\\s*$"
[[rule.reply]]
text = "VERDICT: PASS"

[[rule]]
name = "fail"
session = "{id}"
last_tool = "bash"
[[rule.reply]]
text = "VERDICT: FAIL"
"#,
            id = session.id
        );
        let script = Script::from_toml_str(&toml).map_err(|e| e.to_string())?;
        for rule in script.rules {
            ctx.add(rule)?;
        }
        let turn = ctx
            .api
            .turn(&session, "Write the note and check it.")
            .await?;
        ensure(turn.error.is_none(), || format!("turn failed: {turn:?}"))?;
        ensure(turn.text.ends_with("VERDICT: PASS"), || {
            format!("text: {turn:?}")
        })?;
        ensure(ctx.read("note.txt")? == "ran ok\n", || "note.txt".into())?;
        ensure(ctx.read("copied.txt")? == "ran ok\n", || {
            "the command did not run".into()
        })?;
        let seen = ctx.model.requests_for_session(&session.id);
        let rules: Vec<_> = seen.iter().filter_map(|r| r.rule.as_deref()).collect();
        ensure(
            rules == ["write the note", "check the note", "pass"],
            || format!("rules {rules:?}"),
        )?;
        let command = match generation {
            Generation::V1 => "bash",
            Generation::V2 => "shell",
        };
        ensure(
            seen[1].outcome
                == Outcome::ToolCalls {
                    tools: vec![command.into()],
                },
            || format!("the command went out as {:?}", seen[1].outcome),
        )?;
        let view = seen[2].view.as_ref().ok_or("no view")?;
        ensure(view.last_tool.as_deref() == Some(command), || {
            format!("{view:?}")
        })?;
        ensure(view.system.contains("[orch-agent:orch-tester]"), || {
            "no agent marker".into()
        })
    })
}

/// The example scripts, all written for OpenCode 1, run unchanged: `hello.toml` of this
/// crate and task_cli's `demo.toml` and `greet.toml` (each turn in a session of its own,
/// with the rules of all three, in that order, scoped to it).
fn example_scripts_run_unchanged(generation: Generation) -> Result<(), Failed> {
    let ctx = Ctx::new(generation)?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut rules = Vec::new();
    for file in [
        root.join("../../examples/task_cli/src/demo.toml"),
        root.join("../../examples/task_cli/tests/scripts/greet.toml"),
        root.join("examples/hello.toml"),
    ] {
        rules.extend(Script::load(&file)?.rules);
    }
    run(async {
        let turn = |agent: Option<&'static str>, prompt: &'static str| {
            let (ctx, rules) = (&ctx, &rules);
            async move {
                let session = ctx.api.create_session(prompt, agent).await?;
                for rule in rules {
                    ctx.add(rule.clone().session(&session.id))?;
                }
                let turn = ctx.api.turn(&session, prompt).await?;
                ensure(turn.error.is_none(), || format!("{prompt}: {turn:?}"))?;
                Ok::<_, String>(turn.text)
            }
        };
        let text = turn(None, "Please create hello.txt").await?;
        ensure(text.ends_with("Created hello.txt."), || {
            format!("hello: {text:?}")
        })?;
        ensure(ctx.read("hello.txt")? == "hello, world\n", || {
            "hello.txt".into()
        })?;

        let text = turn(
            Some("worker"),
            "Mission: calc\nYour item: T1: calculator module",
        )
        .await?;
        ensure(
            text.ends_with("Wrote calc.py with add, sub, mul and div."),
            || format!("T1: {text:?}"),
        )?;
        ensure(ctx.read("calc.py")?.contains("def div(a, b):"), || {
            "calc.py".into()
        })?;
        let text = turn(Some("reviewer"), "Review item T1: calculator module").await?;
        ensure(text.ends_with("VERDICT: PASS"), || {
            format!("review T1: {text:?}")
        })?;

        // greet.toml's first attempt is wrong on purpose: the real check fails.
        turn(
            Some("worker"),
            "Mission: greet\nYour item: G1: greeting function",
        )
        .await?;
        ensure(ctx.read("greet.py")?.contains("return \"Hello\""), || {
            "greet.py".into()
        })?;
        let text = turn(Some("reviewer"), "Review item G1: greeting function").await?;
        ensure(text.contains("VERDICT: FAIL"), || {
            format!("review G1: {text:?}")
        })
    })
}

/// A scripted 400 reaches the session as an error carrying the scripted message.
fn scripted_http_error_surfaces_in_the_turn(generation: Generation) -> Result<(), Failed> {
    let ctx = Ctx::new(generation)?;
    run(async {
        let session = ctx.api.create_session("error test", None).await?;
        ctx.add(
            Rule::new("refuse")
                .session(&session.id)
                .reply(Reply::error(400, "scripted refusal")),
        )?;
        let turn = ctx.api.turn(&session, "anything").await?;
        let error = turn.error.ok_or("expected an error")?;
        ensure(error.contains("scripted refusal"), || {
            format!("error: {error}")
        })
    })
}

/// A request that no rule matches is answered 400 naming it, and OpenCode reports that.
fn unmatched_request_is_named_in_the_error(generation: Generation) -> Result<(), Failed> {
    let ctx = Ctx::new(generation)?;
    run(async {
        let session = ctx.api.create_session("unmatched test", None).await?;
        let turn = ctx.api.turn(&session, "nobody scripted this").await?;
        let error = turn.error.ok_or("expected an error")?;
        ensure(error.contains("no rule matched"), || {
            format!("error: {error}")
        })?;
        ensure(error.contains(&session.id), || {
            format!("error does not name the session: {error}")
        })?;
        let seen = ctx.model.requests_for_session(&session.id);
        ensure(
            !seen.is_empty() && seen.iter().all(|r| r.outcome == Outcome::NoMatch),
            || format!("records {seen:?}"),
        )
    })
}

/// Several sessions at once, one per-session sequence rule: each session gets the sequence
/// from its own start, whatever the interleaving.
fn per_session_sequences_under_concurrency(generation: Generation) -> Result<(), Failed> {
    let ctx = Ctx::new(generation)?;
    run(async {
        let mut sessions = Vec::new();
        for i in 0..4 {
            sessions.push(
                ctx.api
                    .create_session(&format!("concurrent {i}"), None)
                    .await?,
            );
        }
        let marker = format!("seq-{}", sessions[0].id);
        ctx.add(
            Rule::new("sequence")
                .user(&regex::escape(&marker))
                .map_err(|e| e.to_string())?
                .per_session()
                .reply(Reply::text("first").delay(Duration::from_millis(50)))
                .reply(Reply::text("second")),
        )?;
        let turns = sessions.iter().map(|session: &Session| async {
            let a = ctx.api.turn(session, &marker).await?;
            let b = ctx.api.turn(session, &marker).await?;
            Ok::<_, String>((a.text, b.text))
        });
        for result in futures::future::join_all(turns).await {
            let (a, b) = result?;
            ensure(a == "first" && b == "second", || {
                format!("got {a:?} then {b:?}")
            })?;
        }
        Ok(())
    })
}

/// A scripted compaction summary is accepted (OpenCode 2 checks it against its template).
fn compaction_is_scripted(generation: Generation) -> Result<(), Failed> {
    let ctx = Ctx::new(generation)?;
    run(async {
        let session = ctx.api.create_session("compaction test", None).await?;
        ctx.add(
            Rule::new("chat")
                .session(&session.id)
                .reply(Reply::text("noted")),
        )?;
        ctx.add(
            Rule::new("summary")
                .kind(RequestKind::Compaction)
                .session(&session.id)
                .reply(Reply::text("Summary of the earlier work.")),
        )?;
        ctx.api.turn(&session, "remember this").await?;
        ctx.api.compact(&session).await?;
        let seen = ctx.model.requests_for_session(&session.id);
        let summaries: Vec<_> = seen
            .iter()
            .filter(|r| r.rule.as_deref() == Some("summary"))
            .collect();
        ensure(summaries.len() == 1, || {
            format!("summary requests: {seen:?}")
        })
    })
}

/// The test server is isolated (its config in its own home, a password), reports its
/// generation, and is gone after `kill` or drop: the whole process group, and its
/// directories.
fn test_server_is_isolated_and_stops(generation: Generation) -> Result<(), Failed> {
    let model = model();
    let server = TestServer::builder(model.base_url())
        .generation(generation)
        .start()?;
    ensure(server.generation() == generation, || {
        format!("{:?}", server.binary())
    })?;
    ensure(
        server.config_path().starts_with(server.home().path()),
        || format!("config at {}", server.config_path().display()),
    )?;
    let config: Value = serde_json::from_str(&std::fs::read_to_string(server.config_path())?)?;
    let snapshots = match generation {
        Generation::V1 => "snapshot",
        Generation::V2 => "snapshots",
    };
    ensure(config[snapshots] == json!(false), || {
        format!("config {config}")
    })?;
    ensure(
        config["provider"]["fake"]["options"]["baseURL"] == json!(model.base_url()),
        || format!("config {config}"),
    )?;
    let route = match generation {
        Generation::V1 => "/session",
        Generation::V2 => "/api/session",
    };
    run(async {
        let http = reqwest::Client::new();
        let url = format!("{}{route}", server.base_url());
        let status = |password: String| {
            let request = http.get(&url).basic_auth("opencode", Some(password));
            async move {
                request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .map_err(|e| e.to_string())
            }
        };
        ensure(status("wrong".into()).await? == 401, || {
            "a wrong password was let in".into()
        })?;
        ensure(status(server.password().to_owned()).await? == 200, || {
            "the password was refused".into()
        })?;
        server.kill();
        ensure(!server.is_running(), || "still running after kill".into())?;
        ensure(status(server.password().to_owned()).await.is_err(), || {
            "answers after kill".into()
        })
    })?;
    ensure(group_gone(server.pid()), || {
        "the group outlived kill".into()
    })?;

    let other = TestServer::builder(model.base_url())
        .generation(generation)
        .start()?;
    let (pid, home, project) = (
        other.pid(),
        other.home().path().to_owned(),
        other.project_dir().to_owned(),
    );
    ensure(!group_members(pid).is_empty(), || "no process group".into())?;
    drop(other);
    ensure(group_gone(pid), || format!("group {pid} outlived the drop"))?;
    ensure(!home.exists() && !project.exists(), || {
        "directories left behind".into()
    })?;
    Ok(())
}

/// Whether process group `pgid` is empty, waiting up to 5 s: a killed process of 200 MB
/// takes a moment to finish exiting.
fn group_gone(pgid: u32) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !group_members(pgid).is_empty() {
        if std::time::Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// The live processes of process group `pgid` (from `/proc`).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // After the command: state, ppid, pgrp. Zombies are dead.
            (fields.first() != Some(&"Z") && fields.get(2)?.parse::<u32>().ok()? == pgid)
                .then_some(pid)
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    type Test = fn(Generation) -> Result<(), Failed>;
    let tests: [(&str, Test); 8] = [
        (
            "scripted_write_tool_runs_for_real",
            scripted_write_tool_runs_for_real,
        ),
        (
            "v1_shaped_script_writes_and_runs_for_real",
            v1_shaped_script_writes_and_runs_for_real,
        ),
        (
            "scripted_http_error_surfaces_in_the_turn",
            scripted_http_error_surfaces_in_the_turn,
        ),
        (
            "unmatched_request_is_named_in_the_error",
            unmatched_request_is_named_in_the_error,
        ),
        (
            "per_session_sequences_under_concurrency",
            per_session_sequences_under_concurrency,
        ),
        ("compaction_is_scripted", compaction_is_scripted),
        (
            "example_scripts_run_unchanged",
            example_scripts_run_unchanged,
        ),
        (
            "test_server_is_isolated_and_stops",
            test_server_is_isolated_and_stops,
        ),
    ];
    let trials = Generation::ALL
        .into_iter()
        .flat_map(|generation| {
            tests.iter().map(move |&(name, test)| {
                Trial::test(format!("{generation}::{name}"), move || test(generation))
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the shared servers, then the model (statics are never dropped).
    SERVERS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    drop(MODEL.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
}
