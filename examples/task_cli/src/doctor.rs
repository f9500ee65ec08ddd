//! `task_cli doctor`: checks the environment and says what to do about each problem.

use std::path::Path;
use std::time::Duration;

use orch_agents::{AgentSet, Journal};
use orch_mvcc::{TODO_FILE, TodoStore};
use orch_opencode::{CONFIG_FILES, ConfigInstaller, Generation, InstallError, OpencodeBinary};
use serde_json::{Value, json};

use crate::config::FileConfig;
use crate::failure::code;
use crate::opencode_env;
use crate::output::{Mode, Ui};
use crate::runner::agents_spec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
struct Check {
    name: &'static str,
    level: Level,
    detail: String,
    fix: Option<String>,
}

#[derive(Debug, Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn ok(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Level::Ok, detail, None::<String>);
    }
    fn warn(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Level::Warn, detail, Some(fix));
    }
    fn fail(&mut self, name: &'static str, detail: impl Into<String>, fix: impl Into<String>) {
        self.push(name, Level::Fail, detail, Some(fix));
    }
    fn push(
        &mut self,
        name: &'static str,
        level: Level,
        detail: impl Into<String>,
        fix: Option<impl Into<String>>,
    ) {
        self.0.push(Check {
            name,
            level,
            detail: detail.into(),
            fix: fix.map(Into::into),
        });
    }
}

/// Runs every check; exit 3 when one fails.
pub(crate) async fn doctor(
    ui: &Ui,
    dir: &Path,
    server: Option<&str>,
    start_server: bool,
    forced: Option<Generation>,
) -> anyhow::Result<u8> {
    let mut checks = Checks::default();

    // OpenCode binary and version: the one a mission would use.
    let bin = match opencode_env::find(forced) {
        Ok(bin) => {
            checks.ok(
                "opencode",
                format!(
                    "found {} (OpenCode {}{})",
                    bin.path.display(),
                    bin.generation,
                    if std::env::var_os("OPENCODE_BIN").is_some_and(|v| !v.is_empty()) {
                        ", from OPENCODE_BIN"
                    } else {
                        ""
                    }
                ),
            );
            let pinned = bin.generation.pinned_version();
            if bin.version == pinned {
                checks.ok("opencode version", bin.version.clone());
            } else {
                checks.warn(
                    "opencode version",
                    format!(
                        "{}; this project is tested with OpenCode {} {pinned}",
                        bin.version, bin.generation
                    ),
                    "scripts/install-opencode.sh installs the pinned versions (or set OPENCODE_BIN)",
                );
            }
            Some(bin)
        }
        Err(e) => {
            checks.fail(
                "opencode",
                format!("not found: {e}"),
                opencode_env::INSTALL_HINT,
            );
            None
        }
    };
    // OpenCode 2's background service: what `run` attaches to without --server.
    let mut service = None;
    if server.is_none() && bin.as_ref().is_none_or(|b| b.generation == Generation::V2) {
        match opencode_env::attach_service().await {
            Ok(Some(endpoint)) => {
                checks.ok(
                    "opencode service",
                    format!(
                        "OpenCode 2's background service runs at {} ({}): `task_cli run` attaches to it (--standalone starts a private server instead)",
                        endpoint.url, endpoint.version
                    ),
                );
                service = Some(endpoint);
            }
            Ok(None) => checks.ok(
                "opencode service",
                "OpenCode 2's background service is not running: `task_cli run` starts a private server (`opencode service start` starts the service, so that missions show in your TUI)",
            ),
            Err(e) => checks.warn(
                "opencode service",
                e.to_string(),
                "`opencode service restart` starts it again; `task_cli run` starts a private server meanwhile",
            ),
        }
    }
    // The config shape the agents are checked in.
    let generation = forced
        .or(bin.as_ref().map(|b| b.generation))
        .unwrap_or(opencode_env::DEFAULT_GENERATION);

    // Config files.
    let present: Vec<&str> = CONFIG_FILES
        .iter()
        .copied()
        .filter(|f| dir.join(f).is_file())
        .collect();
    let installer = ConfigInstaller::new(dir);
    match AgentSet::for_project(dir) {
        Ok(agents) => {
            checks.ok(
                "agents.json",
                if dir.join(".orchestrator/agents.json").is_file() {
                    "parses"
                } else {
                    "absent: the built-in agents are used"
                },
            );
            match installer.dry_run(&agents_spec(&agents, generation)) {
                Err(InstallError::Parse {
                    path,
                    line,
                    column,
                    message,
                }) => checks.fail(
                    "opencode config",
                    format!(
                        "{} does not parse: {message} at line {line}, column {column}",
                        path.display()
                    ),
                    format!(
                        "fix line {line} of {}; OpenCode will not start with it",
                        path.display()
                    ),
                ),
                Err(e) => checks.fail("opencode config", e.to_string(), "fix the file named above"),
                Ok(report) if present.is_empty() => checks.warn(
                    "opencode config",
                    format!(
                        "no {} in {}; the orchestrator's agents are not installed",
                        CONFIG_FILES.join(" or "),
                        dir.display()
                    ),
                    format!(
                        "run `task_cli install --dir {}` (preview with --dry-run); it creates {}",
                        dir.display(),
                        report.path.display()
                    ),
                ),
                Ok(report) if report.changed => checks.warn(
                    "opencode config",
                    format!(
                        "{} parses, but the orchestrator's agents are not (all) installed for OpenCode {generation}",
                        report.path.display()
                    ),
                    format!(
                        "run `task_cli install --dir {}` (preview with --dry-run)",
                        dir.display()
                    ),
                ),
                Ok(report) => checks.ok(
                    "opencode config",
                    format!("{} parses; the agents are installed", report.path.display()),
                ),
            }
            match installer.backups() {
                Ok(b) if b.is_empty() => checks.ok("config backups", "none"),
                Ok(b) => checks.ok(
                    "config backups",
                    format!(
                        "{} (newest {})",
                        b.len(),
                        b.last()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
                ),
                Err(e) => checks.warn(
                    "config backups",
                    format!("cannot list: {e}"),
                    "check the directory's permissions",
                ),
            }
        }
        Err(e) => checks.fail(
            "agents.json",
            e.to_string(),
            "fix .orchestrator/agents.json at the line named above, or delete it",
        ),
    }
    match FileConfig::load(None, dir) {
        Ok((_, Some(path))) => checks.ok("task.toml", format!("{} parses", path.display())),
        Ok((_, None)) => checks.ok("task.toml", "absent: default limits"),
        Err(e) => checks.fail("task.toml", e.to_string(), "fix the line named above"),
    }

    git_check(&mut checks, dir);

    // The server: reachable, auth, model.
    if let Some(url) = server {
        match opencode_env::connect_remote(url, forced).await {
            Ok(endpoint) => {
                checks.ok(
                    "server",
                    format!(
                        "{url} answers (OpenCode {} {})",
                        endpoint.generation, endpoint.version
                    ),
                );
                let probe = Probe::of_endpoint(&endpoint, dir);
                model_check(&mut checks, probe).await;
            }
            Err(e) => {
                let (_, what, fix) = crate::failure::describe(&e);
                checks.fail("server", what, fix.unwrap_or_default());
            }
        }
    } else if let (Some(endpoint), true) = (&service, start_server) {
        // The server a mission would use: the service.
        model_check(&mut checks, Probe::of_endpoint(endpoint, dir)).await;
    } else if let (Some(bin), true) = (&bin, start_server) {
        own_server_checks(&mut checks, bin, dir).await;
    }

    // Mission state.
    let state_dir = dir.join(".orchestrator");
    if state_dir.join(TODO_FILE).is_file() {
        match TodoStore::open(&state_dir).and_then(|s| s.snapshot().map(|snap| (s, snap))) {
            Ok((store, (version, plan))) => {
                checks.ok(
                    "TODO.md",
                    format!(
                        "parses: \"{}\", v{version}, {} items",
                        plan.title,
                        plan.items.len()
                    ),
                );
                match store.verify() {
                    Ok(s) => checks.ok("audit log", format!("verified: {} records up to v{}", s.records, s.last_version)),
                    Err(e) => checks.fail("audit log", e.to_string(), "the plan history was changed outside the orchestrator; keep a copy of .orchestrator for inspection and start a new mission in a fresh directory"),
                }
            }
            Err(e) => checks.fail(
                "TODO.md",
                e.to_string(),
                "fix .orchestrator/TODO.md at the line named above",
            ),
        }
        match Journal::read(&state_dir) {
            Ok(j) => checks.ok(
                "journal",
                format!(
                    "{} records{}",
                    j.records.len(),
                    if j.repaired_bytes > 0 {
                        ", a torn last line cut off"
                    } else {
                        ""
                    }
                ),
            ),
            Err(e) => checks.fail(
                "journal",
                e.to_string(),
                "move .orchestrator/journal.jsonl aside; the mission resumes from TODO.md",
            ),
        }
    } else {
        checks.ok("mission state", "no mission in this directory yet");
    }
    match orch_agents::RunLock::state(&state_dir) {
        Ok(orch_agents::RunState::Running(holder)) => checks.ok(
            "orchestrator",
            format!(
                "running (pid {}{})",
                holder.pid,
                holder
                    .info
                    .map(|i| format!(", run {}", i.run_id))
                    .unwrap_or_default()
            ),
        ),
        Ok(orch_agents::RunState::Stale(info)) => checks.warn(
            "orchestrator",
            format!(
                "a stale pid file names pid {}: a run that ended without cleaning up (no run holds the directory)",
                info.pid
            ),
            format!(
                "nothing to do: the next `task_cli resume --dir {}` removes it",
                dir.display()
            ),
        ),
        Ok(_) => {}
        Err(e) => checks.warn(
            "orchestrator",
            format!("cannot read the run lock: {e}"),
            "check the permissions of .orchestrator/",
        ),
    }

    let failed = checks.0.iter().any(|c| c.level == Level::Fail);
    if ui.mode() == Mode::Json {
        let list: Vec<_> = checks
            .0
            .iter()
            .map(|c| json!({"check": c.name, "status": match c.level { Level::Ok => "ok", Level::Warn => "warn", Level::Fail => "fail" }, "detail": c.detail, "fix": c.fix}))
            .collect();
        ui.json(&json!({"event": "doctor", "dir": dir, "ok": !failed, "checks": list}));
    } else {
        for c in &checks.0 {
            let mark = match c.level {
                Level::Ok => "✓",
                Level::Warn => "!",
                Level::Fail => "✗",
            };
            println!("{mark} {:<16} {}", c.name, c.detail);
            if let Some(fix) = &c.fix {
                println!("  {:<16} fix: {fix}", "");
            }
        }
        let warns = checks.0.iter().filter(|c| c.level == Level::Warn).count();
        let fails = checks.0.iter().filter(|c| c.level == Level::Fail).count();
        println!(
            "\n{} checks: {fails} failed, {warns} warnings",
            checks.0.len()
        );
    }
    Ok(if failed {
        code::ENVIRONMENT
    } else {
        code::SUCCESS
    })
}

/// A client of either generation for the checks that need one.
enum Probe {
    V1(orch_opencode::Client),
    V2(orch_opencode::v2::Client, String),
}

impl Probe {
    fn of_endpoint(endpoint: &opencode_env::Endpoint, dir: &Path) -> Option<Probe> {
        let directory = dir.to_string_lossy().into_owned();
        match endpoint.generation {
            Generation::V1 => {
                let mut b = orch_opencode::Client::builder(&endpoint.url);
                if let Some((u, p)) = endpoint.credentials() {
                    b = b.basic_auth(u, p);
                }
                b.build()
                    .ok()
                    .map(|c| Probe::V1(c.with_directory(directory)))
            }
            Generation::V2 => {
                let mut b = orch_opencode::v2::Client::builder(&endpoint.url);
                if let Some((u, p)) = endpoint.credentials() {
                    b = b.basic_auth(u, p);
                }
                b.build().ok().map(|c| Probe::V2(c, directory))
            }
        }
    }

    /// The default model the server's config names for the project, if any.
    async fn default_model(&self) -> Result<Option<String>, String> {
        match self {
            Probe::V1(client) => client
                .config()
                .await
                .map(|c| c.get("model").and_then(Value::as_str).map(str::to_owned))
                .map_err(|e| e.to_string()),
            Probe::V2(client, directory) => client
                .config(Some(directory))
                .await
                .map(|sources| {
                    // Normalised by the server to `{providerID, model}` (a plain
                    // `provider/model` string is accepted too).
                    sources
                        .iter()
                        .filter_map(|s| s.pointer("/info/model"))
                        .filter_map(|m| match m {
                            Value::String(text) => Some(text.clone()),
                            Value::Object(o) => Some(format!(
                                "{}/{}",
                                o.get("providerID").and_then(Value::as_str)?,
                                o.get("model")
                                    .or_else(|| o.get("id"))
                                    .and_then(Value::as_str)?
                            )),
                            _ => None,
                        })
                        .next_back()
                })
                .map_err(|e| e.to_string()),
        }
    }
}

async fn model_check(checks: &mut Checks, probe: Option<Probe>) {
    let Some(probe) = probe else { return };
    match probe.default_model().await {
        Ok(Some(model)) => checks.ok("model", format!("default model {model}")),
        Ok(None) => checks.warn(
            "model",
            "no default model configured",
            "set \"model\": \"provider/model\" in opencode.json, or pass --model provider/model to `task_cli run`",
        ),
        Err(e) => checks.fail(
            "model",
            format!("cannot read the server's config: {e}"),
            "check the server",
        ),
    }
}

/// Starts a server of `bin` for `dir` and checks that it answers, refuses requests without
/// the password, and names a model.
async fn own_server_checks(checks: &mut Checks, bin: &OpencodeBinary, dir: &Path) {
    let server = match opencode_env::start_server(bin, dir, None).await {
        Ok(server) => server,
        Err(e) => {
            let (_, what, _) = crate::failure::describe(&e);
            checks.fail(
                "server",
                what,
                "run `opencode serve` in the project and read its output; a config error names the file and line",
            );
            return;
        }
    };
    let directory = dir.to_string_lossy().into_owned();
    let (answer, anonymous, probe) = match server.generation() {
        Generation::V1 => {
            let client = server.client().with_directory(directory);
            let answer = client
                .health()
                .await
                .map(|h| h.version)
                .map_err(|e| e.to_string());
            let anonymous = match orch_opencode::Client::builder(server.base_url()).build() {
                Ok(anon) => tokio::time::timeout(Duration::from_secs(5), anon.health())
                    .await
                    .map(|r| r.is_ok()),
                Err(_) => Ok(false),
            };
            (answer, anonymous, Probe::V1(client))
        }
        Generation::V2 => {
            let client = server.client_v2();
            let answer = client
                .info()
                .await
                .map(|i| i.version)
                .map_err(|e| e.to_string());
            let anonymous = match orch_opencode::v2::Client::builder(server.base_url()).build() {
                Ok(anon) => tokio::time::timeout(Duration::from_secs(5), anon.info())
                    .await
                    .map(|r| r.is_ok()),
                Err(_) => Ok(false),
            };
            (answer, anonymous, Probe::V2(client, directory))
        }
    };
    match answer {
        Ok(version) => checks.ok(
            "server",
            format!(
                "started {} and it answers (OpenCode {} {version})",
                server.base_url(),
                server.generation()
            ),
        ),
        Err(e) => checks.fail(
            "server",
            format!("started but does not answer: {e}"),
            "look at the server log: run `opencode serve` in the project",
        ),
    }
    // Auth: a client without the password must be refused.
    match anonymous {
        Ok(false) => checks.ok("auth", "the server refuses requests without the password"),
        Ok(true) => checks.warn(
            "auth",
            "the server answers without a password",
            "set OPENCODE_SERVER_PASSWORD when you run `opencode serve` yourself",
        ),
        Err(_) => checks.warn(
            "auth",
            "no answer within 5 s",
            "run `opencode serve` by hand and look at its output",
        ),
    }
    model_check(checks, Some(probe)).await;
    drop(server);
}

/// What a mission in `dir` would do with git (a branch of its own, or edits in place) and
/// why.
fn git_check(checks: &mut Checks, dir: &Path) {
    use orch_agents::git::{GitError, Repo};
    let repo = match Repo::discover(dir) {
        Ok(repo) => repo,
        Err(GitError::NotARepository { .. }) => {
            return checks.ok(
                "git",
                "not a repository: missions edit the directory in place",
            );
        }
        Err(GitError::Missing) => {
            return checks.ok(
                "git",
                "git is not installed: missions edit the directory in place",
            );
        }
        Err(e) => {
            return checks.warn(
                "git",
                e.to_string(),
                "fix the repository, or pass --no-git to edit the directory in place",
            );
        }
    };
    match repo.current_branch() {
        Ok((branch, _)) => checks.ok(
            "git",
            format!(
                "repository {} on {branch}: a mission works on a branch of its own (orch/...), one commit per item",
                repo.root().display()
            ),
        ),
        Err(e) => checks.warn(
            "git",
            format!("{e} — a mission without a git flag edits the directory in place"),
            "commit on a branch to get a mission branch, or pass --no-git",
        ),
    }
}
