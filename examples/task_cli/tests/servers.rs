//! `task_cli` on servers it does not start, of the generation `OPENCODE_BIN` selects: a
//! user's `opencode serve` (generation detected, password from the environment, sessions
//! under the user's session), several servers at once, and OpenCode 2's per-user background
//! service (attached to without `--server`; passed over with `--standalone` or an OpenCode 1
//! `OPENCODE_BIN`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{items_script, json_lines, task_cli, text};
use orch_opencode::{Generation, OpencodeServer};
use orch_testkit::opencode::{IsolatedHome, fake_provider_config_for, require_generation};
use orch_testkit::{Script, ScriptedModel};
use serde_json::Value;

/// A server of the user's: its own home, serving any project.
struct UserServer {
    server: OpencodeServer,
    _home: IsolatedHome,
    _cwd: tempfile::TempDir,
}

fn user_server() -> UserServer {
    let home = IsolatedHome::new().expect("a home");
    let cwd = tempfile::tempdir().expect("a directory");
    let server = OpencodeServer::builder()
        .binary(orch_testkit::opencode::require_binary())
        .project_dir(cwd.path())
        .isolated_home(home.path())
        .remove_home_if_orphaned(true)
        .start()
        .expect("opencode serve starts");
    UserServer {
        server,
        _home: home,
        _cwd: cwd,
    }
}

/// The scripted model serving `items` independent items.
fn model(items: usize, worker_delay_ms: u64) -> ScriptedModel {
    ScriptedModel::start(
        Script::from_toml_str(&items_script(items, worker_delay_ms, "")).expect("script"),
    )
    .expect("the scripted model starts")
}

/// A project whose OpenCode config names the scripted model (as a user's would name a real
/// provider), with the orchestrator's agents installed by `task_cli install` for `generation`.
fn project(model: &ScriptedModel, generation: Generation) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a project");
    let config = fake_provider_config_for(&model.base_url(), generation);
    std::fs::write(
        dir.path().join("opencode.json"),
        serde_json::to_string_pretty(&config).expect("json"),
    )
    .expect("config written");
    let out = task_cli(dir.path())
        .args(["install", "--opencode-generation", generation.as_str()])
        .output()
        .expect("task_cli runs");
    assert!(out.status.success(), "install: {}", text(&out.stderr));
    dir
}

fn generation() -> Generation {
    orch_testkit::opencode::require_opencode().generation
}

/// The report line of a `--json` run, after checking the exit code.
fn report_of(out: &Output) -> Value {
    let lines = json_lines(out);
    let report = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "report")
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no report line; stdout {lines:?}, stderr {}",
                text(&out.stderr)
            )
        });
    assert_eq!(
        out.status.code(),
        Some(0),
        "exit; report {report:#}; stderr {}",
        text(&out.stderr)
    );
    report
}

/// The sessions the mission in `dir` opened for its turns (from its journal).
fn opened_sessions(dir: &Path) -> Vec<String> {
    let journal = orch_agents::Journal::read(&dir.join(".orchestrator")).expect("journal");
    let mut ids: Vec<String> = journal
        .records
        .iter()
        .filter_map(|r| match &r.entry {
            orch_agents::JournalEntry::SessionOpened { session, .. } => Some(session.clone()),
            _ => None,
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A session of the user's in `dir`, and later its children (either generation).
fn user_session(server: &OpencodeServer, dir: &Path) -> String {
    runtime().block_on(async {
        match server.generation() {
            Generation::V1 => server
                .client()
                .with_directory(dir.to_string_lossy())
                .create_session(&orch_opencode::CreateSession::titled("my session"))
                .await
                .map(|s| s.id.to_string())
                .map_err(|e| e.to_string()),
            Generation::V2 => server
                .client_v2()
                .create_session(
                    &orch_opencode::v2::CreateSession::titled("my session")
                        .directory(dir.to_string_lossy()),
                )
                .await
                .map(|s| s.id.to_string())
                .map_err(|e| e.to_string()),
        }
        .expect("a session of the user's")
    })
}

fn children(server: &OpencodeServer, dir: &Path, parent: &str) -> Vec<String> {
    let parent = orch_opencode::SessionId::new(parent);
    let mut ids: Vec<String> = runtime().block_on(async {
        match server.generation() {
            Generation::V1 => server
                .client()
                .with_directory(dir.to_string_lossy())
                .children(&parent)
                .await
                .map(|v| v.into_iter().map(|s| s.id.to_string()).collect())
                .expect("children"),
            Generation::V2 => server
                .client_v2()
                .children(&parent)
                .await
                .map(|v| v.into_iter().map(|s| s.id.to_string()).collect())
                .expect("children"),
        }
    });
    ids.sort();
    ids
}

/// `run --server URL --parent-session ID` on a server of the user's, its generation found
/// by asking it, its password taken from the environment and never printed: the mission
/// completes, and every session that worked is a child of the user's session and is kept.
#[test]
fn runs_on_the_users_server_under_the_users_session() {
    let generation = generation();
    let model = model(3, 0);
    let project = project(&model, generation);
    let user = user_server();
    let parent = user_session(&user.server, project.path());
    let out = task_cli(project.path())
        .env("OPENCODE_SERVER_PASSWORD", user.server.password())
        .env("OPENCODE_SERVER_USERNAME", user.server.username())
        .args(["--json", "run", "write three files", "--server"])
        .arg(user.server.base_url())
        .args(["--parent-session", &parent])
        .output()
        .expect("task_cli runs");
    let report = report_of(&out);
    assert_eq!(
        report["report"]["status"]["status"], "completed",
        "{report:#}"
    );
    for i in 1..=3 {
        assert!(
            project.path().join(format!("f{i}.txt")).is_file(),
            "f{i}.txt"
        );
    }
    let opened = opened_sessions(project.path());
    assert!(opened.len() >= 4, "sessions opened: {opened:?}");
    assert_eq!(children(&user.server, project.path(), &parent), opened);
    let password = user.server.password();
    assert!(
        !text(&out.stdout).contains(password) && !text(&out.stderr).contains(password),
        "the password was printed"
    );
    // Settings keep the server (not the password) for `resume`.
    let saved = common::read(project.path(), ".orchestrator/task_cli.json");
    assert!(saved.contains(user.server.base_url()), "{saved}");
    assert!(!saved.contains(password), "{saved}");
}

/// A server that is not there, and a parent session without a server of the user's: clear
/// errors, nothing started.
#[test]
fn bad_servers_and_a_parent_without_a_server_are_refused() {
    let generation = generation();
    let model = model(1, 0);
    let project = project(&model, generation);
    let out = task_cli(project.path())
        .args([
            "run",
            "write a file",
            "--server",
            "http://127.0.0.1:9",
            "--plain",
        ])
        .output()
        .expect("task_cli runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("http://127.0.0.1:9"), "{stderr}");
    assert!(stderr.contains("what to do:"), "{stderr}");
    let out = task_cli(project.path())
        .args(["run", "write a file", "--standalone"])
        .args(["--parent-session", "ses_x", "--plain"])
        .output()
        .expect("task_cli runs");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--parent-session"), "{stderr}");
    let out = task_cli(project.path())
        .args(["run", "write a file", "--opencode-generation", "v3"])
        .output()
        .expect("task_cli runs");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("v1 or v2"),
        "{}",
        text(&out.stderr)
    );
}

/// `--server A --server B`: the mission's sessions are spread over both servers.
#[test]
fn two_servers_share_one_mission() {
    let generation = generation();
    let model = model(4, 300);
    let project = project(&model, generation);
    let (a, b) = (user_server(), user_server());
    // The environment names one password for both.
    let out = task_cli(project.path())
        .env("OPENCODE_SERVER_PASSWORD", a.server.password())
        .env("OPENCODE_SERVER_USERNAME", a.server.username())
        .args(["--json", "run", "write four files", "--workers", "2"])
        .arg("--server")
        .arg(a.server.base_url())
        .arg("--server")
        .arg(b.server.base_url())
        .output()
        .expect("task_cli runs");
    // b has another password: it refuses us, and nothing starts (nor is written).
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(b.server.base_url()),
        "the refusing server is not named: {stderr}"
    );
    assert!(
        !project.path().join(".orchestrator/task_cli.json").exists()
            && !project.path().join(".orchestrator/TODO.md").exists(),
        "a refused run wrote its state"
    );

    // With one password for both, both work.
    let project = self::project(&model, generation);
    let (c, d) = (
        user_server_with_password("shared-secret"),
        user_server_with_password("shared-secret"),
    );
    let out = task_cli(project.path())
        .env("OPENCODE_SERVER_PASSWORD", "shared-secret")
        .args(["--json", "run", "write four files", "--workers", "2"])
        .arg("--server")
        .arg(c.server.base_url())
        .arg("--server")
        .arg(d.server.base_url())
        .output()
        .expect("task_cli runs");
    let report = report_of(&out);
    assert_eq!(
        report["report"]["status"]["status"], "completed",
        "{report:#}"
    );
    let engine = &report["report"]["engine"];
    let turns = |server: &str| {
        engine
            .as_object()
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.ends_with(&format!("{server}.turns")))
                    .and_then(|(_, v)| v.as_f64())
            })
            .unwrap_or(0.0)
    };
    assert!(
        turns("s0") > 0.0 && turns("s1") > 0.0,
        "turns per server: {engine:#}"
    );
}

fn user_server_with_password(password: &str) -> UserServer {
    let home = IsolatedHome::new().expect("a home");
    let cwd = tempfile::tempdir().expect("a directory");
    let server = OpencodeServer::builder()
        .binary(orch_testkit::opencode::require_binary())
        .project_dir(cwd.path())
        .isolated_home(home.path())
        .remove_home_if_orphaned(true)
        .password(password)
        .start()
        .expect("opencode serve starts");
    UserServer {
        server,
        _home: home,
        _cwd: cwd,
    }
}

/// OpenCode 2's background service in a home of its own, stopped (and its state file
/// removed) on drop.
struct Service {
    bin: PathBuf,
    root: tempfile::TempDir,
}

impl Service {
    /// What `task_cli` needs to find the service: its state directory. The rest of the
    /// environment stays the tests' home: OpenCode 1 cannot open a data directory OpenCode 2
    /// created, so a private OpenCode 1 server must not share the service's.
    fn attach_env(&self, cmd: &mut Command) {
        cmd.env("XDG_STATE_HOME", self.state());
    }

    fn env(&self, cmd: &mut Command) {
        let root = self.root.path();
        cmd.env("HOME", root.join("home"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_STATE_HOME", root.join("state"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env_remove("OPENCODE_SERVER_PASSWORD");
    }

    fn state(&self) -> PathBuf {
        self.root.path().join("state")
    }

    fn start() -> Service {
        let bin = require_generation(Generation::V2).path;
        let root = tempfile::tempdir().expect("a home for the service");
        for d in ["home", "config/opencode", "state", "data", "cache"] {
            std::fs::create_dir_all(root.path().join(d)).expect("dirs");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        std::fs::write(
            root.path().join("config/opencode/service.json"),
            format!("{{\"port\": {port}}}"),
        )
        .expect("service config");
        let service = Service { bin, root };
        let mut cmd = Command::new(&service.bin);
        service.env(&mut cmd);
        let out = cmd
            .args(["service", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("opencode service start runs");
        assert!(
            out.status.success(),
            "opencode service start: {}",
            text(&out.stderr)
        );
        let file = orch_opencode::v2::ServiceFile::path_in(&service.state());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !file.is_file() {
            assert!(Instant::now() < deadline, "no {}", file.display());
            std::thread::sleep(Duration::from_millis(100));
        }
        service
    }

    /// The sessions the service holds for `dir`.
    fn sessions(&self, dir: &Path) -> Vec<String> {
        let file = orch_opencode::v2::ServiceFile::read(&orch_opencode::v2::ServiceFile::path_in(
            &self.state(),
        ))
        .expect("service file");
        runtime().block_on(async {
            file.client()
                .expect("client")
                .list_sessions(
                    &orch_opencode::v2::ListSessions::new().directory(dir.to_string_lossy()),
                )
                .await
                .expect("sessions")
                .into_iter()
                .map(|s| s.id.to_string())
                .collect()
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let mut cmd = Command::new(&self.bin);
        self.env(&mut cmd);
        let _ = cmd
            .args(["service", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Without `--server`, on OpenCode 2 `run` attaches to the user's background service (the
/// mission's sessions are there, for the TUI) and `--standalone` passes it over; an
/// OpenCode 1 `OPENCODE_BIN` always starts its own server.
#[test]
fn the_opencode_2_service_is_attached_to_unless_told_otherwise() {
    let generation = generation();
    let service = Service::start();
    let model = model(2, 0);

    let project = project(&model, generation);
    let mut cmd = task_cli(project.path());
    service.attach_env(&mut cmd);
    let out = cmd
        .args(["--json", "run", "write two files"])
        .output()
        .expect("task_cli runs");
    let report = report_of(&out);
    assert_eq!(
        report["report"]["status"]["status"], "completed",
        "{report:#}"
    );
    let on_service = service.sessions(project.path());
    match generation {
        Generation::V2 => {
            let opened = opened_sessions(project.path());
            assert!(
                !opened.is_empty() && opened.iter().all(|s| on_service.contains(s)),
                "sessions opened {opened:?}, on the service {on_service:?}"
            );
        }
        Generation::V1 => assert!(
            on_service.is_empty(),
            "an OpenCode 1 run used the service: {on_service:?}"
        ),
    }

    let project = self::project(&model, generation);
    let mut cmd = task_cli(project.path());
    service.attach_env(&mut cmd);
    let out = cmd
        .args(["--json", "run", "write two files", "--standalone"])
        .output()
        .expect("task_cli runs");
    let report = report_of(&out);
    assert_eq!(
        report["report"]["status"]["status"], "completed",
        "{report:#}"
    );
    assert!(
        service.sessions(project.path()).is_empty(),
        "--standalone used the service"
    );
}
