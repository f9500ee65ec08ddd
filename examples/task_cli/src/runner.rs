//! Runs one mission on OpenCode with live output, signal handling and the pid file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use orch_agents::{
    AgentSet, BackendError, MissionConfig, MissionReport, MissionStatus, ModelSpec,
    OpencodeBackend, OpencodeBackendConfig, RunLock, Supervisor,
};
use orch_core::ShutdownManager;
use orch_opencode::{ConfigInstaller, InstallSpec, OpencodeServer};
use orch_testkit::opencode::{IsolatedHome, fake_provider_config};
use orch_testkit::{Script, ScriptedModel};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::failure::{Failure, code};
use crate::lifecycle::{self, Existing};
use crate::output::{Mode, Progress, Ui, status_line, summary};
use crate::state;

/// Where the agents run.
#[derive(Debug)]
pub(crate) enum ServerChoice {
    /// Start and own `opencode serve` with this binary.
    Own(PathBuf),
    /// A server the user runs.
    Remote(String),
}

/// Which model answers.
#[derive(Debug)]
pub(crate) enum ModelChoice {
    /// The user's OpenCode configuration; `Some` overrides its default model.
    User(Option<ModelSpec>),
    /// The scripted model with this script (an isolated OpenCode home whose only model it is).
    Script(Script),
}

/// Everything a run of this command needs: the mission, where its agents run, which model
/// answers.
#[derive(Debug)]
pub(crate) struct LaunchSpec {
    pub(crate) dir: PathBuf,
    pub(crate) request: String,
    pub(crate) server: ServerChoice,
    pub(crate) model: ModelChoice,
    pub(crate) config: MissionConfig,
    pub(crate) agents: AgentSet,
}

/// The install spec of the orchestrator's agents.
pub(crate) fn agents_spec(agents: &AgentSet) -> InstallSpec {
    orch_agents::backend::opencode::install_spec(agents)
}

/// Resources that must live as long as the mission.
#[derive(Default)]
struct Keep {
    _model: Option<ScriptedModel>,
    _home: Option<IsolatedHome>,
}

/// Runs the mission while holding `lock` (the directory's run lock, released when this
/// returns or the process ends), prints the summary (or the JSON report) and returns the exit
/// code. The first SIGINT or SIGTERM, from the very start, stops the mission (resumable); a
/// second one exits at once.
pub(crate) async fn run(
    ui: &Ui,
    signals: Signals,
    lock: RunLock,
    spec: LaunchSpec,
) -> anyhow::Result<u8> {
    let dir = spec.dir.clone();
    let lock = Arc::new(Mutex::new(Some(lock)));
    let server_slot: ServerSlot = Arc::new(Mutex::new(None));
    // One ordered, bounded teardown for every way a run ends: the mission's sessions, then
    // the server this command owns, then what the scripted model needed, then the directory.
    // Its token is the mission's stop signal.
    let teardown = Arc::new(ShutdownManager::new(Duration::from_secs(10)));
    {
        let server = Arc::clone(&server_slot);
        let _ = teardown.register("opencode server", 20, move || async move {
            let server = lock_(&server).take();
            if let Some(server) = server {
                let _ = tokio::task::spawn_blocking(move || server.stop()).await;
            }
        });
        let lock = Arc::clone(&lock);
        let _ = teardown.register("run lock", 40, move || async move {
            drop(lock_(&lock).take());
        });
    }
    let signals = signals.handle(ui, &dir, &teardown.token(), &server_slot, &lock);
    let result = run_locked(ui, spec, &teardown, &server_slot).await;
    signals.abort();
    let _ = signals.await;
    let report = teardown.shutdown().await;
    for name in report.timed_out() {
        tracing::warn!(step = name, "a teardown step did not finish in time");
    }
    result
}

/// SIGINT and SIGTERM, caught from the moment a mission command starts (before it takes the
/// directory, starts a server or runs anything), so that no signal kills it unreported.
#[derive(Debug)]
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Catches SIGINT and SIGTERM from now on (they are queued until [`Signals::handle`]).
    pub(crate) fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let catch = |kind| {
            signal(kind).map_err(|e| {
                Failure::env(
                    format!("cannot catch signals: {e}"),
                    "run task_cli in a normal process environment",
                )
            })
        };
        Ok(Signals {
            term: catch(SignalKind::terminate())?,
            int: catch(SignalKind::interrupt())?,
        })
    }

    /// The handler of a run: the first signal cancels `stop` (and says what is kept), the
    /// second kills the server this command owns, releases the directory and exits at once.
    fn handle(
        self,
        ui: &Ui,
        dir: &Path,
        stop: &CancellationToken,
        server: &ServerSlot,
        lock: &Arc<Mutex<Option<RunLock>>>,
    ) -> tokio::task::JoinHandle<()> {
        let ui = ui.clone();
        let dir = dir.to_owned();
        let stop = stop.clone();
        let server = Arc::clone(server);
        let lock = Arc::clone(lock);
        let Signals { mut term, mut int } = self;
        tokio::spawn(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "Ctrl-C",
            };
            let kept = if dir
                .join(".orchestrator")
                .join(orch_mvcc::TODO_FILE)
                .is_file()
            {
                "the plan is kept"
            } else {
                "the mission is kept (it has no plan yet; resume plans it)"
            };
            ui.notice(format!(
                "{which}: stopping the mission; running turns are abandoned and {kept}. \
             Resume with `task_cli resume --dir {}`. Press Ctrl-C again to exit at once.",
                dir.display()
            ));
            stop.cancel();
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            ui.notice("exiting at once");
            if let Some(server) = lock_(&server).take() {
                server.kill();
            }
            drop(lock_(&lock).take());
            std::process::exit(i32::from(code::STOPPED));
        })
    }
}

/// What a command prints when it was stopped before its mission started.
fn stopped_at_start(ui: &Ui, dir: &Path) -> u8 {
    ui.clear();
    let advice = format!(
        "Stopped before the mission started: nothing ran. Resume with `task_cli resume --dir {}`",
        dir.display()
    );
    if ui.mode() == Mode::Json {
        ui.notice(&advice);
        ui.json(&json!({
            "event": "report",
            "dir": dir,
            "exit_code": code::STOPPED,
            "report": Value::Null,
        }));
    } else {
        println!("\n{advice}");
    }
    code::STOPPED
}

async fn run_locked(
    ui: &Ui,
    spec: LaunchSpec,
    teardown: &ShutdownManager,
    server_slot: &ServerSlot,
) -> anyhow::Result<u8> {
    let dir = spec.dir.clone();
    let stop = &teardown.token();
    let mut keep = Keep::default();
    let (default_model, home, scripted) = match spec.model {
        ModelChoice::Script(script) => {
            if matches!(spec.server, ServerChoice::Remote(_)) {
                return Err(Failure::usage(
                    "--model-script needs a server this command starts (the scripted model is only known to it)",
                    "drop --server",
                ));
            }
            let step = ui.step("starting the scripted model");
            let model = ScriptedModel::start(script).map_err(|e| {
                Failure::env(
                    format!("cannot start the scripted model: {e}"),
                    "check that 127.0.0.1 accepts local connections",
                )
            })?;
            let home = IsolatedHome::new()?;
            write_isolated_config(home.path(), &model.base_url(), &spec.agents)?;
            step.done(model.base_url());
            let path = home.path().to_owned();
            keep._model = Some(model);
            keep._home = Some(home);
            (Some(ModelSpec::new("fake", "fake-model")), Some(path), true)
        }
        ModelChoice::User(model) => {
            let report = ConfigInstaller::new(&dir)
                .dry_run(&agents_spec(&spec.agents))
                .map_err(|e| {
                    Failure::env(
                        format!("cannot check the OpenCode config: {e}"),
                        "fix the file named above; `task_cli doctor` shows every problem",
                    )
                })?;
            if report.changed {
                return Err(Failure::env(
                    format!(
                        "the orchestrator's agents are not installed in {}",
                        report.path.display()
                    ),
                    format!(
                        "run `task_cli install --dir {0}` (preview with `task_cli install --dry-run --dir {0}`)",
                        dir.display()
                    ),
                ));
            }
            (model, None, false)
        }
    };

    let remote = match &spec.server {
        ServerChoice::Own(bin) => {
            let step = ui.step("starting the OpenCode server");
            let server = tokio::select! {
                server = start_server(bin, &dir, home.as_deref()) => server?,
                () = stop.cancelled() => return Ok(stopped_at_start(ui, &dir)),
            };
            let client = server.client().with_directory(dir.to_string_lossy());
            let health = client.health().await.map_err(|e| {
                Failure::env(
                    format!("the OpenCode server does not answer: {e}"),
                    "run `task_cli doctor`",
                )
            })?;
            step.done(format!(
                "{} (opencode {}, password-protected)",
                server.base_url(),
                health.version
            ));
            *lock_(server_slot) = Some(Arc::new(server));
            None
        }
        ServerChoice::Remote(url) => {
            let step = ui.step(&format!("connecting to {url}"));
            let (client, version) = tokio::select! {
                connected = crate::opencode_env::connect_remote(url) => connected?,
                () = stop.cancelled() => return Ok(stopped_at_start(ui, &dir)),
            };
            step.done(format!("opencode {version}"));
            Some(client.with_directory(dir.to_string_lossy()))
        }
    };
    let connector = Arc::new(Connector {
        bin: match &spec.server {
            ServerChoice::Own(bin) => Some(bin.clone()),
            ServerChoice::Remote(_) => None,
        },
        dir: dir.clone(),
        home: home.clone(),
        remote,
        server: Arc::clone(server_slot),
        backend: Mutex::new(None),
        config: OpencodeBackendConfig {
            default_model,
            toasts: !scripted,
            settle: Duration::from_secs(2),
            ..OpencodeBackendConfig::default()
        },
    });

    let supervisor = Supervisor::<OpencodeBackend>::new(
        orch_agents::MissionSpec::new(spec.request.clone(), &dir)
            .config(spec.config)
            .agents(spec.agents)
            .stop_token(stop.clone()),
    );
    let mut events = supervisor.spec().subscribe();

    // Until the supervisor is done (a lost server gives a `finished`, then `reconnecting`).
    let progress_ui = ui.clone();
    let progress_dir = dir.clone();
    let consumer = tokio::spawn(async move {
        let mut progress = Progress::new(&progress_ui, &progress_dir);
        loop {
            match events.recv().await {
                Ok(event) => progress.event(&event),
                Err(RecvError::Lagged(n)) => progress_ui.note(format!("({n} events skipped)")),
                Err(RecvError::Closed) => break,
            }
        }
        progress.finish();
    });

    let result = {
        let connector = Arc::clone(&connector);
        supervisor
            .run(move |attempt| {
                let connector = Arc::clone(&connector);
                async move { connector.connect(attempt).await }
            })
            .await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), consumer).await;
    let backend = lock_(&connector.backend).take();
    let _ = teardown.register("mission sessions", 10, move || async move {
        if let Some(backend) = backend {
            backend.shutdown().await;
        }
    });
    let _ = teardown.register("scripted model", 30, move || async move { drop(keep) });
    ui.clear();

    let (report, restarts) = result.map_err(|e| {
        Failure::env(
            format!("the mission could not run: {e}"),
            format!(
                "run `task_cli doctor --dir {}` to check the mission state",
                dir.display()
            ),
        )
    })?;
    let (status, exit) = status_line(&report.status);
    // Notices first: in JSON mode the report is the last line.
    if restarts > 0 {
        ui.notice(format!(
            "the OpenCode server was replaced {restarts} time(s) during this run"
        ));
    }
    if let Some(advice) = advice(&report, &dir) {
        ui.notice(format!("Mission {status}. {advice}"));
    }
    if ui.mode() == Mode::Json {
        ui.json(&json!({
            "event": "report",
            "dir": dir,
            "exit_code": exit,
            "report": report,
        }));
    } else {
        println!("{}", summary(&report, &dir));
    }
    Ok(exit)
}

/// What to do after a mission that did not complete, following what the directory holds.
fn advice(report: &MissionReport, dir: &Path) -> Option<String> {
    let d = dir.display();
    match &report.status {
        MissionStatus::Completed => None,
        MissionStatus::Stopped | MissionStatus::ServerLost { .. } => {
            Some(format!("Resume with `task_cli resume --dir {d}`"))
        }
        MissionStatus::BudgetExceeded { budget } => {
            let flag = if budget == "cost" {
                "--cost-budget"
            } else {
                "--token-budget"
            };
            Some(format!(
                "The {budget} budget counts the whole mission; continue with a higher one: `task_cli resume --dir {d} {flag} <more>`"
            ))
        }
        MissionStatus::Failed { reason } => Some(match lifecycle::inspect(dir).ok()? {
            Existing::Failed { failed, .. } => format!(
                "Retry the failed items ({}) with `task_cli retry --dir {d}`; `task_cli status --dir {d}` shows why they failed",
                failed.join(", ")
            ),
            Existing::Unplanned { .. } | Existing::Nothing => format!(
                "The mission has no plan; fix the cause above, then plan it again with `task_cli resume --dir {d}`"
            ),
            Existing::Unfinished { .. } if reason.starts_with("the round limit") => format!(
                "The plan is unfinished; continue with more rounds: `task_cli resume --dir {d} --max-rounds <more>`"
            ),
            Existing::Unfinished { .. } => format!(
                "The plan is unfinished; continue with `task_cli resume --dir {d}` (see {} for what stopped it)",
                dir.join(".orchestrator/report.json").display()
            ),
            Existing::Done { mission } | Existing::DoneButFailed { mission, .. } => format!(
                "Every item is done but the mission did not pass; plan it anew with `task_cli run {} --dir {d}` (this state is archived)",
                state::shell_quote(&mission)
            ),
        }),
    }
}

async fn start_server(
    bin: &Path,
    dir: &Path,
    home: Option<&Path>,
) -> anyhow::Result<OpencodeServer> {
    crate::opencode_env::start_server(bin, dir, home).await
}

type ServerSlot = Arc<Mutex<Option<Arc<OpencodeServer>>>>;

fn lock_<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gives the supervisor a backend: the first time on the server started above (or the
/// remote one), after a loss on a restarted server (when ours died) or a new connection.
struct Connector {
    bin: Option<PathBuf>,
    dir: PathBuf,
    home: Option<PathBuf>,
    remote: Option<orch_opencode::Client>,
    server: ServerSlot,
    backend: Mutex<Option<Arc<OpencodeBackend>>>,
    config: OpencodeBackendConfig,
}

impl Connector {
    async fn connect(&self, attempt: u32) -> Result<Arc<OpencodeBackend>, BackendError> {
        let old = lock_(&self.backend).take();
        if let Some(old) = old {
            old.shutdown().await;
        }
        let client = match (&self.remote, &self.bin) {
            (Some(client), _) => client.clone(),
            (None, Some(bin)) => {
                let current = lock_(&self.server).clone();
                let server = match current {
                    Some(server) if server.is_running() => server,
                    _ => {
                        if attempt > 0 {
                            tracing::warn!("the OpenCode server died; starting a new one");
                        }
                        let server = start_server(bin, &self.dir, self.home.as_deref())
                            .await
                            .map_err(|e| BackendError::Unavailable {
                                status: None,
                                message: e.to_string(),
                            })?;
                        let server = Arc::new(server);
                        *lock_(&self.server) = Some(Arc::clone(&server));
                        server
                    }
                };
                server.client().with_directory(self.dir.to_string_lossy())
            }
            (None, None) => {
                return Err(BackendError::Unavailable {
                    status: None,
                    message: "no server to connect to".into(),
                });
            }
        };
        let backend = Arc::new(OpencodeBackend::connect(client, self.config.clone()).await?);
        *lock_(&self.backend) = Some(Arc::clone(&backend));
        Ok(backend)
    }
}

/// The isolated home's global OpenCode config: the scripted model as the only model, the
/// orchestrator's agents, no snapshots (faster), no sharing or updates.
fn write_isolated_config(home: &Path, base_url: &str, agents: &AgentSet) -> anyhow::Result<()> {
    let mut config = fake_provider_config(base_url);
    config["snapshot"] = json!(false);
    config["agent"] = orch_agents::backend::opencode::config_agents(agents);
    let dir = home.join(".config/opencode");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("opencode.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(())
}
