//! Shared harness of the real-OpenCode test binaries: one `opencode serve` and one scripted
//! model per binary, a project directory per trial, and rule helpers keyed on a trial's
//! unique mission text.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use orch_agents::backend::opencode::OpencodeBackendConfig;
use orch_agents::{
    AgentSet, AnyOpencode, Mission, MissionConfig, MissionEvent, MissionReport, MissionSpec,
    ModelSpec, PolicyConfig,
};
use orch_core::RetryPolicy;
use orch_opencode::{ConfigInstaller, Generation, OpencodeServer};
use orch_testkit::opencode::{TestServer, fake_provider_config, require_opencode};
use orch_testkit::{Reply, RequestKind, Rule, Script, ScriptedModel};
use serde_json::json;

pub struct Shared {
    pub model: ScriptedModel,
    /// An isolated `opencode serve` (its own home and working directory) of the generation
    /// `OPENCODE_BIN` selects; projects name the scripted model in their own config.
    pub test_server: TestServer,
}

impl Shared {
    /// The shared server.
    pub fn server(&self) -> &OpencodeServer {
        self.test_server.server()
    }
}

/// The shared server and model: the only long-lived strong reference, taken (and so dropped,
/// stopping both) by [`run_trials`].
static SHARED: Mutex<Option<Result<Arc<Shared>, String>>> = Mutex::new(None);

pub fn shared() -> Result<Arc<Shared>, Failed> {
    SHARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(|| {
            let start = || -> Result<Arc<Shared>, String> {
                // Compaction (session reset in the pool) and nothing else is shared by trials.
                let model = ScriptedModel::start(
                    Script::new().rule(
                        Rule::new("compaction")
                            .kind(RequestKind::Compaction)
                            .reply(Reply::text("Summary of the earlier work.")),
                    ),
                )
                .map_err(|e| e.to_string())?;
                let test_server = TestServer::builder(model.base_url())
                    .binary(require_opencode())
                    .start()
                    .map_err(|e| e.to_string())?;
                let shared = Arc::new(Shared { model, test_server });
                Ok(shared)
            };
            start()
        })
        .clone()
        .map_err(Failed::from)
}

/// A project directory with the scripted provider and the orchestrator's agents installed
/// through the real installer.
pub fn project(shared: &Shared) -> Result<tempfile::TempDir, Failed> {
    let dir = tempfile::tempdir().map_err(|e| Failed::from(e.to_string()))?;
    let mut config = fake_provider_config(&shared.model.base_url());
    config["snapshot"] = json!(false);
    // A second model of the same provider, for fallback tests.
    config["provider"]["fake"]["models"]["fake-backup"] =
        json!({"name": "Backup", "tool_call": true});
    std::fs::write(dir.path().join("opencode.json"), config.to_string())
        .map_err(|e| Failed::from(e.to_string()))?;
    ConfigInstaller::new(dir.path())
        .install(&install_spec(
            shared.server().generation(),
            &AgentSet::builtin(),
        ))
        .map_err(|e| Failed::from(e.to_string()))?;
    Ok(dir)
}

/// The orchestrator's agents for a project config of `generation`.
pub fn install_spec(generation: Generation, agents: &AgentSet) -> orch_opencode::InstallSpec {
    match generation {
        Generation::V1 => orch_agents::backend::opencode::install_spec(agents),
        Generation::V2 => orch_agents::backend::opencode2::install_spec(agents),
    }
}

pub fn mission_config() -> MissionConfig {
    MissionConfig {
        workers: 2,
        reviewers: 2,
        turn_timeout: Duration::from_secs(90),
        policy: PolicyConfig {
            retry: RetryPolicy {
                initial_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(2),
                ..RetryPolicy::default()
            },
            ..PolicyConfig::default()
        },
        ..MissionConfig::default()
    }
}

/// The backend settings of the tests: the scripted model, short settle and probe times, no
/// toasts.
pub fn backend_config() -> OpencodeBackendConfig {
    OpencodeBackendConfig {
        default_model: Some(ModelSpec::new("fake", "fake-model")),
        settle: Duration::from_secs(2),
        toasts: false,
        silence_probe: Duration::from_secs(2),
        ..OpencodeBackendConfig::default()
    }
}

/// A backend on `server` (either generation) for the project at `dir`, with
/// [`backend_config`].
pub async fn connect(server: &OpencodeServer, dir: &Path) -> Result<AnyOpencode, String> {
    AnyOpencode::connect_server(server, dir, backend_config())
        .await
        .map_err(|e| e.to_string())
}

/// The sessions of the project at `dir` that `server` (either generation) still runs.
pub async fn busy_sessions(server: &OpencodeServer, dir: &Path) -> Result<Vec<String>, String> {
    match server.generation() {
        Generation::V1 => {
            let client = server.client().with_directory(dir.to_string_lossy());
            let status = client.session_status().await.map_err(|e| e.to_string())?;
            Ok(status.keys().map(ToString::to_string).collect())
        }
        Generation::V2 => {
            let client = server.client_v2();
            let ours = client
                .list_sessions(
                    &orch_opencode::v2::ListSessions::new().directory(dir.to_string_lossy()),
                )
                .await
                .map_err(|e| e.to_string())?;
            let active = client.active_sessions().await.map_err(|e| e.to_string())?;
            Ok(ours
                .into_iter()
                .filter(|s| active.contains_key(&s.id))
                .map(|s| s.id.to_string())
                .collect())
        }
    }
}

/// A new session of the project at `dir` on `server` (either generation), as a user's.
pub async fn user_session(server: &OpencodeServer, dir: &Path) -> Result<String, String> {
    match server.generation() {
        Generation::V1 => server
            .client()
            .with_directory(dir.to_string_lossy())
            .create_session(&orch_opencode::CreateSession::titled("the user's session"))
            .await
            .map(|s| s.id.to_string())
            .map_err(|e| e.to_string()),
        Generation::V2 => server
            .client_v2()
            .create_session(
                &orch_opencode::v2::CreateSession::titled("the user's session")
                    .directory(dir.to_string_lossy()),
            )
            .await
            .map(|s| s.id.to_string())
            .map_err(|e| e.to_string()),
    }
}

/// The children of session `parent` of the project at `dir` (either generation).
pub async fn children(
    server: &OpencodeServer,
    dir: &Path,
    parent: &str,
) -> Result<Vec<String>, String> {
    let parent = orch_opencode::SessionId::new(parent);
    let ids: Vec<String> = match server.generation() {
        Generation::V1 => server
            .client()
            .with_directory(dir.to_string_lossy())
            .children(&parent)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| s.id.to_string())
            .collect(),
        Generation::V2 => server
            .client_v2()
            .children(&parent)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| s.id.to_string())
            .collect(),
    };
    Ok(ids)
}

/// Every session of the project at `dir` on `server` (either generation).
pub async fn session_ids(server: &OpencodeServer, dir: &Path) -> Result<Vec<String>, String> {
    match server.generation() {
        Generation::V1 => {
            let client = server.client().with_directory(dir.to_string_lossy());
            let sessions = client
                .list_sessions(&orch_opencode::ListSessions::default())
                .await
                .map_err(|e| e.to_string())?;
            Ok(sessions.into_iter().map(|s| s.id.to_string()).collect())
        }
        Generation::V2 => {
            let sessions = server
                .client_v2()
                .list_sessions(
                    &orch_opencode::v2::ListSessions::new().directory(dir.to_string_lossy()),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(sessions.into_iter().map(|s| s.id.to_string()).collect())
        }
    }
}

pub async fn run_mission(
    shared: &Shared,
    dir: &Path,
    request: &str,
    config: MissionConfig,
) -> Result<(MissionReport, Vec<MissionEvent>), String> {
    run_mission_with(shared, dir, request, config, AgentSet::builtin()).await
}

/// [`run_mission`] with these agents (models, fallbacks).
pub async fn run_mission_with(
    shared: &Shared,
    dir: &Path,
    request: &str,
    config: MissionConfig,
    agents: AgentSet,
) -> Result<(MissionReport, Vec<MissionEvent>), String> {
    run_mission_on(shared, dir, request, config, agents, backend_config()).await
}

/// [`run_mission_with`] on a backend of this configuration.
pub async fn run_mission_on(
    shared: &Shared,
    dir: &Path,
    request: &str,
    config: MissionConfig,
    agents: AgentSet,
    backend: OpencodeBackendConfig,
) -> Result<(MissionReport, Vec<MissionEvent>), String> {
    let backend = Arc::new(
        AnyOpencode::connect_server(shared.server(), dir, backend)
            .await
            .map_err(|e| e.to_string())?,
    );
    let mission = Mission::new(
        Arc::clone(&backend),
        MissionSpec::new(request, dir).config(config).agents(agents),
    );
    let mut rx = mission.spec().subscribe();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Ok(event) = rx.recv().await {
            let end = matches!(event, MissionEvent::Finished { .. });
            events.push(event);
            if end {
                break;
            }
        }
        events
    });
    let report = tokio::time::timeout(Duration::from_secs(240), mission.run())
        .await
        .map_err(|_| "the mission did not end within 240 s".to_owned())?
        .map_err(|e| e.to_string())?;
    backend.shutdown().await;
    let events = collector.await.map_err(|e| e.to_string())?;
    Ok((report, events))
}

/// Runs the mission `spec` (its project at `dir`) on a backend with [`backend_config`]; the
/// report and every event published.
pub async fn run_mission_spec(
    shared: &Shared,
    dir: &Path,
    spec: MissionSpec,
) -> Result<(MissionReport, Vec<MissionEvent>), String> {
    let backend = Arc::new(
        AnyOpencode::connect_server(shared.server(), dir, backend_config())
            .await
            .map_err(|e| e.to_string())?,
    );
    let mission = Mission::new(Arc::clone(&backend), spec);
    let mut rx = mission.spec().subscribe();
    let collector = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Ok(event) = rx.recv().await {
            let end = matches!(event, MissionEvent::Finished { .. });
            events.push(event);
            if end {
                break;
            }
        }
        events
    });
    let report = tokio::time::timeout(Duration::from_secs(240), mission.run())
        .await
        .map_err(|_| "the mission did not end within 240 s".to_owned())?
        .map_err(|e| e.to_string())?;
    backend.shutdown().await;
    let events = collector.await.map_err(|e| e.to_string())?;
    Ok((report, events))
}

pub fn run<F: std::future::Future<Output = Result<(), String>>>(f: F) -> Result<(), Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(e.to_string()))?
        .block_on(f)
        .map_err(Failed::from)
}

pub fn ensure(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what()) }
}

/// Rules of one mission, keyed on its unique request text.
pub struct Rules<'a> {
    pub model: &'a ScriptedModel,
    pub tag: String,
}

impl Rules<'_> {
    /// A regex matching prompts of this mission that also contain `then`.
    pub fn re(&self, then: &str) -> String {
        format!("(?s)Mission: {}.*{then}", regex_escape(&self.tag))
    }

    /// A rule for `agent` matching prompts that match `regex` (from [`Rules::re`]).
    pub fn rule(&self, name: impl Into<String>, agent: &str, regex: &str) -> Result<Rule, String> {
        Rule::new(name)
            .agent(agent)
            .user(regex)
            .map_err(|e| e.to_string())
    }

    pub fn add(&self, rule: Rule) -> Result<(), String> {
        self.model.add_rule(rule).map_err(|e| e.to_string())
    }

    pub fn planner(&self, plan: &str) -> Result<(), String> {
        self.add(
            self.rule(format!("{} plan", self.tag), "planner", &self.re(""))?
                .reply(Reply::text(plan)),
        )
    }

    /// The Worker of `item` writes `file` with `content`, then says it is done.
    pub fn worker_writes(&self, item: &str, file: &str, content: &str) -> Result<(), String> {
        self.worker_writes_after(item, file, content, Duration::ZERO)
    }

    /// [`Rules::worker_writes`], with the model taking `delay` before the write call.
    pub fn worker_writes_after(
        &self,
        item: &str,
        file: &str,
        content: &str,
        delay: Duration,
    ) -> Result<(), String> {
        let re = self.re(&format!("Your item: {item}:"));
        self.add(
            self.rule(format!("{} {item} write", self.tag), "worker", &re)?
                .tool_result(false)
                .reply(
                    Reply::tool_call("write", json!({"filePath": file, "content": content}))
                        .delay(delay),
                ),
        )?;
        self.add(
            self.rule(format!("{} {item} done", self.tag), "worker", &re)?
                .last_tool("write")
                .reply(Reply::text(format!("Wrote {file}."))),
        )
    }

    /// Reviews of the 3-item calculator project ([`calc_plan`]), each by a real test run.
    pub fn calc_reviews(&self) -> Result<(), String> {
        self.reviewer_runs(
            "Review item T1:",
            "T1",
            "python3 -c 'import calc; assert calc.add(2, 3) == 5'",
        )?;
        self.reviewer_runs("Review item T2:", "T2", "python3 -m unittest -v")?;
        self.reviewer_runs("Review item T3:", "T3", "test -s README.md")?;
        self.reviewer_runs(
            "Every item is done",
            "integration",
            "python3 -m unittest -v",
        )
    }

    /// A one-item mission's work and reviews: T1 writes `calc.py`, reviews import it.
    pub fn module_work_and_reviews(&self) -> Result<(), String> {
        self.worker_writes("T1", "calc.py", CALC)?;
        self.reviewer_runs("Review item T1:", "T1", "python3 -c 'import calc'")?;
        self.reviewer_runs(
            "Every item is done",
            "integration",
            "python3 -c 'import calc'",
        )
    }

    /// The Reviewer of `item` runs `command` and passes only if it exits 0.
    pub fn reviewer_runs(
        &self,
        item_prompt: &str,
        name: &str,
        command: &str,
    ) -> Result<(), String> {
        let re = self.re(item_prompt);
        self.add(
            self.rule(format!("{} {name} run", self.tag), "reviewer", &re)?
                .tool_result(false)
                .reply(Reply::tool_call(
                    "bash",
                    json!({"command": format!("{command} 2>&1; echo EXIT=$?"), "description": "run the tests"}),
                )),
        )?;
        self.add(
            self.rule(format!("{} {name} pass", self.tag), "reviewer", &re)?
                .last_tool("bash")
                .tool_output("EXIT=0")
                .map_err(|e| e.to_string())?
                .reply(Reply::text("The tests pass.\nVERDICT: PASS")),
        )?;
        self.add(
            self.rule(format!("{} {name} fail", self.tag), "reviewer", &re)?
                .last_tool("bash")
                .reply(Reply::text("VERDICT: FAIL: the tests did not pass")),
        )
    }
}

pub fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ' ' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

pub const CALC: &str = "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n";
pub const TESTS: &str = "import unittest\n\nimport calc\n\n\nclass CalcTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(calc.add(2, 3), 5)\n\n    def test_mul(self):\n        self.assertEqual(calc.mul(4, 5), 20)\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n";
pub const README: &str = "# calc\n\nAdd and multiply. Run the tests with `python3 -m unittest`.\n";

pub fn calc_plan(title: &str) -> String {
    format!(
        "# {title}\n\nA tiny calculator with tests.\n\n\
         - [ ] T1: calculator module\n  - files: calc.py\n\
         - [ ] T2: unit tests for the calculator\n  - files: test_calc.py\n  - deps: T1\n\
         - [ ] T3: readme\n  - files: README.md\n"
    )
}

/// Runs the trials with libtest's command line, then stops the shared server (a static is
/// never dropped) and exits with the harness's code.
pub fn run_trials(trials: Vec<Trial>) -> ! {
    let conclusion = libtest_mimic::run(&Arguments::from_args(), trials);
    let shared = SHARED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if conclusion.has_failed()
        && let Some(Ok(shared)) = &shared
    {
        let log = shared.test_server.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!(
            "--- the shared OpenCode server ({}) {} running; the end of its output:\n{}",
            shared.test_server.generation(),
            if shared.test_server.is_running() {
                "is still"
            } else {
                "is no longer"
            },
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    drop(shared);
    conclusion.exit()
}
