//! Runs one mission on OpenCode with live output, signal handling and the pid file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use orch_agents::{
    AgentSet, BackendError, MissionConfig, ModelRef, OpencodeBackend, OpencodeBackendConfig,
    Supervisor,
};
use orch_opencode::{ConfigInstaller, InstallSpec, OpencodeServer};
use orch_testkit::opencode::{IsolatedHome, fake_provider_config};
use orch_testkit::{Script, ScriptedModel};
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use crate::failure::{Failure, code};
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
    User(Option<ModelRef>),
    /// The scripted model with this script (an isolated OpenCode home whose only model it is).
    Script(Script),
}

/// Everything a mission run needs.
#[derive(Debug)]
pub(crate) struct MissionSpec {
    pub(crate) dir: PathBuf,
    pub(crate) request: String,
    pub(crate) server: ServerChoice,
    pub(crate) model: ModelChoice,
    pub(crate) config: MissionConfig,
    pub(crate) agents: AgentSet,
}

/// The install spec of the orchestrator's agents.
pub(crate) fn agents_spec(agents: &AgentSet) -> InstallSpec {
    agents.install_spec()
}

/// Removes the pid file when the run ends.
struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Resources that must live as long as the mission.
#[derive(Default)]
struct Keep {
    _model: Option<ScriptedModel>,
    _home: Option<IsolatedHome>,
}

/// Runs the mission, prints the summary (or the JSON report) and returns the exit code.
pub(crate) async fn run(ui: &Ui, spec: MissionSpec) -> anyhow::Result<u8> {
    let dir = spec.dir.clone();
    let state_dir = dir.join(".orchestrator");
    std::fs::create_dir_all(&state_dir).map_err(|e| {
        Failure::env(
            format!("cannot create {}: {e}", state_dir.display()),
            "check that the directory is writable",
        )
    })?;
    if let Some(pid) = state::running_pid(&dir) {
        return Err(Failure::env(
            format!(
                "another task_cli (pid {pid}) is running a mission in {}",
                dir.display()
            ),
            format!(
                "wait for it to end, or stop it with `task_cli stop --dir {}`",
                dir.display()
            ),
        ));
    }

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
            (Some(ModelRef::new("fake", "fake-model")), Some(path), true)
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

    let server_slot: ServerSlot = Arc::new(Mutex::new(None));
    let remote = match &spec.server {
        ServerChoice::Own(bin) => {
            let step = ui.step("starting the OpenCode server");
            let server = start_server(bin, &dir, home.as_deref()).await?;
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
            *lock(&server_slot) = Some(Arc::new(server));
            None
        }
        ServerChoice::Remote(url) => {
            let step = ui.step(&format!("connecting to {url}"));
            let (client, version) = crate::opencode_env::connect_remote(url).await?;
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
        server: Arc::clone(&server_slot),
        backend: Mutex::new(None),
        config: OpencodeBackendConfig {
            default_model,
            toasts: !scripted,
            settle: Duration::from_secs(2),
            ..OpencodeBackendConfig::default()
        },
    });

    let supervisor = Supervisor::<OpencodeBackend>::new(spec.request.clone(), &dir)
        .config(spec.config)
        .agents(spec.agents);
    let mut events = supervisor.subscribe();
    let stop = supervisor.stop_handle();

    let pid_path = state_dir.join(state::PID_FILE);
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))?;
    let pid_file = PidFile(pid_path.clone());

    // Signals: the first stops the mission (resumable), the second exits at once.
    let signals = {
        let ui = ui.clone();
        let dir = dir.clone();
        let server = Arc::clone(&server_slot);
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "Ctrl-C",
            };
            ui.notice(format!(
                "{which}: stopping the mission; running turns are abandoned and the plan is kept. \
                 Resume with `task_cli resume --dir {}`. Press Ctrl-C again to exit at once.",
                dir.display()
            ));
            stop.cancel();
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            ui.notice("exiting at once");
            let _ = std::fs::remove_file(&pid_path);
            if let Some(server) = lock(&server).take() {
                server.kill();
            }
            std::process::exit(i32::from(code::STOPPED));
        })
    };

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
    let backend = lock(&connector.backend).take();
    if let Some(backend) = backend {
        backend.shutdown().await;
    }
    signals.abort();
    drop(pid_file);
    let server = lock(&server_slot).take();
    if let Some(server) = server {
        server.stop();
    }
    drop(keep);
    ui.clear();

    let result = result.map(|(report, restarts)| {
        if restarts > 0 {
            ui.notice(format!(
                "the OpenCode server was replaced {restarts} time(s) during the mission"
            ));
        }
        report
    });
    let report = result.map_err(|e| {
        Failure::env(
            format!("the mission could not run: {e}"),
            "run `task_cli doctor --dir DIR` to check the mission state",
        )
    })?;
    let (status, exit) = status_line(&report.status);
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
    match exit {
        code::SUCCESS => {}
        code::STOPPED | code::ENVIRONMENT => ui.notice(format!(
            "Mission {status}. Resume with: task_cli resume --dir {}",
            dir.display()
        )),
        _ => ui.notice(format!(
            "Mission {status}. See {} and `task_cli status --dir {}`; fix the cause and run `task_cli resume --dir {}`.",
            dir.join(".orchestrator/report.json").display(),
            dir.display(),
            dir.display()
        )),
    }
    Ok(exit)
}

async fn start_server(
    bin: &Path,
    dir: &Path,
    home: Option<&Path>,
) -> anyhow::Result<OpencodeServer> {
    crate::opencode_env::start_server(bin, dir, home).await
}

type ServerSlot = Arc<Mutex<Option<Arc<OpencodeServer>>>>;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
        let old = lock(&self.backend).take();
        if let Some(old) = old {
            old.shutdown().await;
        }
        let client = match (&self.remote, &self.bin) {
            (Some(client), _) => client.clone(),
            (None, Some(bin)) => {
                let current = lock(&self.server).clone();
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
                        *lock(&self.server) = Some(Arc::clone(&server));
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
        *lock(&self.backend) = Some(Arc::clone(&backend));
        Ok(backend)
    }
}

/// The isolated home's global OpenCode config: the scripted model as the only model, the
/// orchestrator's agents, no snapshots (faster), no sharing or updates.
fn write_isolated_config(home: &Path, base_url: &str, agents: &AgentSet) -> anyhow::Result<()> {
    let mut config = fake_provider_config(base_url);
    config["snapshot"] = json!(false);
    config["agent"] = agents.opencode_agents();
    let dir = home.join(".config/opencode");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("opencode.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(())
}
