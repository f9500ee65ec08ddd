//! End to end: a real `opencode serve` (isolated HOME) driven by the scripted model.
//!
//! One OpenCode server and one scripted model are shared by all trials of this binary (a
//! server takes over a second to start); each trial has its own project directory and its
//! own sessions, and keys its rules on its session id, so trials are independent. The
//! harness is libtest-mimic so the shared server is stopped before the process exits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use orch_testkit::opencode::{IsolatedHome, TestProject, fake_provider_config, require_binary};
use orch_testkit::{Outcome, Reply, Rule, Script, ScriptedModel};
use serde_json::{Value, json};

const USER: &str = "opencode";

/// The shared OpenCode server and scripted model.
struct Harness {
    model: ScriptedModel,
    url: String,
    password: String,
    child: Child,
    _home: IsolatedHome,
    _cwd: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn random_password() -> String {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    format!("{:016x}{:016x}", state.hash_one(1u8), state.hash_one(2u8))
}

impl Harness {
    fn start() -> Result<Harness, String> {
        let bin = require_binary();
        let model = ScriptedModel::start(Script::new()).map_err(|e| e.to_string())?;
        let home = IsolatedHome::new().map_err(|e| e.to_string())?;
        let cwd = tempfile::tempdir().map_err(|e| e.to_string())?;
        let password = random_password();
        let mut child = Command::new(&bin)
            .args(["serve", "--port", "0", "--hostname", "127.0.0.1"])
            .current_dir(cwd.path())
            .envs(home.env())
            .env("OPENCODE_SERVER_PASSWORD", &password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot spawn {}: {e}", bin.display()))?;
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        // Wait for the "listening" line; never probe the port before it (API.md §1).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.split("listening on ").nth(1) {
                        let url = url.trim().to_owned();
                        return Ok(Harness {
                            model,
                            url,
                            password,
                            child,
                            _home: home,
                            _cwd: cwd,
                        });
                    }
                    log.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    return Err(format!(
                        "opencode serve printed no listening line within 60 s; output:\n{}",
                        log.join("\n")
                    ));
                }
            }
        }
    }
}

/// The shared harness: the only long-lived strong reference, taken (and so dropped, stopping
/// the server) at the end of `main`.
static HARNESS: Mutex<Option<Result<Arc<Harness>, String>>> = Mutex::new(None);

fn harness() -> Result<Arc<Harness>, Failed> {
    let mut slot = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    slot.get_or_insert_with(|| Harness::start().map(Arc::new))
        .clone()
        .map_err(Failed::from)
}

/// A small async client for the few routes these tests use.
struct Api {
    http: reqwest::Client,
    harness: Arc<Harness>,
    directory: PathBuf,
}

impl Api {
    fn new(harness: Arc<Harness>, directory: &Path) -> Api {
        Api {
            http: reqwest::Client::new(),
            harness,
            directory: directory.to_owned(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.harness.url))
            .query(&[("directory", self.directory.to_string_lossy().as_ref())])
            .basic_auth(USER, Some(&self.harness.password))
            .timeout(Duration::from_secs(120));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let is_json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() || !is_json {
            return Err(format!(
                "{path}: HTTP {status} (json: {is_json}): {text:.300}"
            ));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: bad JSON ({e}): {text:.300}"))
    }

    async fn create_session(&self, title: &str) -> Result<String, String> {
        let session = self
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({"title": title})),
            )
            .await?;
        session["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("no session id in {session}"))
    }

    async fn prompt(&self, session: &str, text: &str) -> Result<Value, String> {
        self.call(
            reqwest::Method::POST,
            &format!("/session/{session}/message"),
            Some(json!({
                "parts": [{"type": "text", "text": text}],
                "model": {"providerID": "fake", "modelID": "fake-model"}
            })),
        )
        .await
    }
}

fn project(harness: &Harness) -> Result<TestProject, Failed> {
    let mut config = fake_provider_config(&harness.model.base_url());
    config["snapshot"] = json!(false);
    TestProject::with_config(config).map_err(|e| Failed::from(e.to_string()))
}

fn run<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), Failed> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?
        .block_on(f)
        .map_err(Failed::from)
}

fn final_text(response: &Value) -> String {
    response["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<String>()
        })
        .unwrap_or_default()
}

fn ensure(condition: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what()) }
}

/// OpenCode executes the scripted `write` call (the file exists with the scripted content)
/// and returns the scripted final text.
fn scripted_write_tool_runs_for_real() -> Result<(), Failed> {
    let h = harness()?;
    let project = project(&h)?;
    run(async {
        let api = Api::new(Arc::clone(&h), project.path());
        let session = api.create_session("write test").await?;
        let content = "hello from the scripted model\n";
        h.model
            .add_rule(
                Rule::new("write hello")
                    .session(&session)
                    .step(0)
                    .reply(Reply::tool_call(
                        "write",
                        json!({"filePath": "hello.txt", "content": content}),
                    )),
            )
            .map_err(|e| e.to_string())?;
        h.model
            .add_rule(
                Rule::new("after write")
                    .session(&session)
                    .last_tool("write")
                    .reply(Reply::text("Wrote hello.txt.").usage(120, 7)),
            )
            .map_err(|e| e.to_string())?;
        let response = api.prompt(&session, "Create hello.txt").await?;
        ensure(response["info"]["error"].is_null(), || {
            format!("turn failed: {response}")
        })?;
        ensure(response["info"]["finish"] == "stop", || {
            format!("finish: {response}")
        })?;
        ensure(final_text(&response) == "Wrote hello.txt.", || {
            format!("text: {response}")
        })?;
        ensure(response["info"]["tokens"]["output"] == 7, || {
            format!("tokens: {response}")
        })?;
        let written = project
            .read("hello.txt")
            .map_err(|e| format!("hello.txt: {e}"))?;
        ensure(written == content, || {
            format!("hello.txt holds {written:?}")
        })?;
        let seen = h.model.requests_for_session(&session);
        ensure(seen.len() == 2, || {
            format!("expected 2 model calls, saw {}", seen.len())
        })?;
        ensure(
            seen[0].outcome
                == Outcome::ToolCalls {
                    tools: vec!["write".into()],
                },
            || format!("first outcome {:?}", seen[0].outcome),
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

/// A scripted 400 reaches the session as an error carrying the scripted message.
fn scripted_http_error_surfaces_in_the_turn() -> Result<(), Failed> {
    let h = harness()?;
    let project = project(&h)?;
    run(async {
        let api = Api::new(Arc::clone(&h), project.path());
        let session = api.create_session("error test").await?;
        h.model
            .add_rule(
                Rule::new("refuse")
                    .session(&session)
                    .reply(Reply::error(400, "scripted refusal")),
            )
            .map_err(|e| e.to_string())?;
        let response = api.prompt(&session, "anything").await?;
        let error = &response["info"]["error"];
        ensure(!error.is_null(), || {
            format!("expected an error: {response}")
        })?;
        ensure(error.to_string().contains("scripted refusal"), || {
            format!("error: {error}")
        })
    })
}

/// A request that no rule matches is answered 400 naming it, and OpenCode reports that.
fn unmatched_request_is_named_in_the_error() -> Result<(), Failed> {
    let h = harness()?;
    let project = project(&h)?;
    run(async {
        let api = Api::new(Arc::clone(&h), project.path());
        let session = api.create_session("unmatched test").await?;
        let response = api.prompt(&session, "nobody scripted this").await?;
        let error = response["info"]["error"].to_string();
        ensure(error.contains("no rule matched"), || {
            format!("error: {error}")
        })?;
        ensure(error.contains(&session), || {
            format!("error does not name the session: {error}")
        })?;
        let seen = h.model.requests_for_session(&session);
        ensure(
            seen.iter().all(|r| r.outcome == Outcome::NoMatch) && !seen.is_empty(),
            || format!("records {seen:?}"),
        )
    })
}

/// Several sessions at once, one per-session sequence rule: each session gets the sequence
/// from its own start, whatever the interleaving.
fn per_session_sequences_under_concurrency() -> Result<(), Failed> {
    let h = harness()?;
    let project = project(&h)?;
    run(async {
        let api = Arc::new(Api::new(Arc::clone(&h), project.path()));
        let mut sessions = Vec::new();
        for i in 0..4 {
            sessions.push(api.create_session(&format!("concurrent {i}")).await?);
        }
        let marker = format!("seq-{}", sessions[0]);
        h.model
            .add_rule(
                Rule::new("sequence")
                    .user(&regex_escape(&marker))
                    .map_err(|e| e.to_string())?
                    .per_session()
                    .reply(Reply::text("first").delay(Duration::from_millis(50)))
                    .reply(Reply::text("second")),
            )
            .map_err(|e| e.to_string())?;
        let mut tasks = Vec::new();
        for session in &sessions {
            let api = Arc::clone(&api);
            let (session, marker) = (session.clone(), marker.clone());
            tasks.push(tokio::spawn(async move {
                let a = api.prompt(&session, &marker).await?;
                let b = api.prompt(&session, &marker).await?;
                Ok::<_, String>((final_text(&a), final_text(&b)))
            }));
        }
        for task in tasks {
            let (a, b) = task.await.map_err(|e| e.to_string())??;
            ensure(a == "first" && b == "second", || {
                format!("got {a:?} then {b:?}")
            })?;
        }
        Ok(())
    })
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::test(
            "scripted_write_tool_runs_for_real",
            scripted_write_tool_runs_for_real,
        ),
        Trial::test(
            "scripted_http_error_surfaces_in_the_turn",
            scripted_http_error_surfaces_in_the_turn,
        ),
        Trial::test(
            "unmatched_request_is_named_in_the_error",
            unmatched_request_is_named_in_the_error,
        ),
        Trial::test(
            "per_session_sequences_under_concurrency",
            per_session_sequences_under_concurrency,
        ),
    ];
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the shared OpenCode server before exiting (statics are never dropped).
    drop(HARNESS.lock().unwrap_or_else(|e| e.into_inner()).take());
    conclusion.exit();
}
