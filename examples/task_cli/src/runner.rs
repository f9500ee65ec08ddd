//! Runs one mission on OpenCode with live output, signal handling and the pid file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use orch_agents::backend::AgentBackend;
use orch_agents::backend::multi::MultiBackend;
use orch_agents::{
    AgentSet, AnyOpencode, BackendError, MissionConfig, MissionReport, MissionStatus, ModelSpec,
    OpencodeBackendConfig, RunLock, Supervisor,
};
use orch_core::ShutdownManager;
use orch_opencode::{ConfigInstaller, Generation, InstallSpec, OpencodeBinary, OpencodeServer};
use orch_testkit::opencode::{IsolatedHome, fake_provider_config_for};
use orch_testkit::{Script, ScriptedModel};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::failure::{Failure, code};
use crate::lifecycle::{self, Existing};
use crate::opencode_env::{self, Endpoint};
use crate::output::{Mode, Progress, Ui, status_line, summary};
use crate::state;

/// Where the agents run.
#[derive(Debug)]
pub(crate) enum ServerChoice {
    /// Start and own `opencode serve` with this binary.
    Own(OpencodeBinary),
    /// Servers the user runs (one generation), detected unless `generation` forces it.
    Remote {
        urls: Vec<String>,
        generation: Option<Generation>,
    },
    /// OpenCode 2's per-user background service when it runs (the mission then shows in the
    /// user's TUI), else a server of this binary (or the error of looking for one).
    ServiceOr(Result<OpencodeBinary, String>),
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
    /// Open every session of the mission as a child of this OpenCode session.
    pub(crate) parent_session: Option<String>,
    /// The settings `resume` continues with, saved once the server is settled and the
    /// config checked (a run refused before that leaves the directory as it was).
    pub(crate) settings: Option<state::Saved>,
}

/// The install spec of the orchestrator's agents in a project config of `generation`.
pub(crate) fn agents_spec(agents: &AgentSet, generation: Generation) -> InstallSpec {
    match generation {
        Generation::V1 => orch_agents::backend::opencode::install_spec(agents),
        Generation::V2 => orch_agents::backend::opencode2::install_spec(agents),
    }
}

/// What a scripted run needs as long as its server runs: the model, and the isolated home
/// the server writes to (removed when dropped).
struct Keep {
    _model: ScriptedModel,
    _home: IsolatedHome,
}

/// Where the run keeps its [`Keep`] until its teardown (or a second signal) drops it.
type KeepSlot = Arc<Mutex<Option<Keep>>>;

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
    // The scripted model and its isolated home: removed after the server that used them,
    // however the run ends (an early error, the end, or a second signal's exit).
    let keep: KeepSlot = Arc::new(Mutex::new(None));
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
        let keep = Arc::clone(&keep);
        let _ = teardown.register("scripted model", 30, move || async move {
            drop(lock_(&keep).take());
        });
        let lock = Arc::clone(&lock);
        let _ = teardown.register("run lock", 40, move || async move {
            drop(lock_(&lock).take());
        });
    }
    let signals = signals.handle(ui, &dir, &teardown.token(), &server_slot, &keep, &lock);
    let result = run_locked(ui, spec, &teardown, &server_slot, &keep).await;
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
        keep: &KeepSlot,
        lock: &Arc<Mutex<Option<RunLock>>>,
    ) -> tokio::task::JoinHandle<()> {
        let ui = ui.clone();
        let dir = dir.to_owned();
        let stop = stop.clone();
        let server = Arc::clone(server);
        let keep = Arc::clone(keep);
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
            drop(lock_(&keep).take());
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

/// Where the mission's sessions go once the server question is settled.
enum Target {
    /// A server this command starts (and starts again when it dies).
    Own(OpencodeBinary),
    /// Servers the user runs.
    Remote(Vec<Endpoint>),
    /// OpenCode 2's background service (its file read again on every reconnection: a
    /// restarted service listens elsewhere with another password).
    Service,
}

impl Target {
    fn generation(&self) -> Generation {
        match self {
            Target::Own(bin) => bin.generation,
            Target::Remote(endpoints) => endpoints.first().map_or(Generation::V1, |e| e.generation),
            Target::Service => Generation::V2,
        }
    }
}

/// Settles where the agents run: starts our server, connects to the user's, or attaches to
/// OpenCode 2's service. `None` when stopped meanwhile.
async fn settle_server(
    ui: &Ui,
    choice: ServerChoice,
    dir: &Path,
    home: Option<&Path>,
    stop: &CancellationToken,
    server_slot: &ServerSlot,
) -> anyhow::Result<Option<Target>> {
    let bin = match choice {
        ServerChoice::Own(bin) => bin,
        ServerChoice::Remote { urls, generation } => {
            let mut endpoints = Vec::new();
            for url in &urls {
                let step = ui.step(&format!("connecting to {url}"));
                let endpoint = tokio::select! {
                    connected = opencode_env::connect_remote(url, generation) => connected?,
                    () = stop.cancelled() => return Ok(None),
                };
                step.done(format!(
                    "OpenCode {} {}",
                    endpoint.generation, endpoint.version
                ));
                endpoints.push(endpoint);
            }
            if let Some(other) = endpoints
                .iter()
                .find(|e| e.generation != endpoints[0].generation)
            {
                return Err(Failure::usage(
                    format!(
                        "{} is OpenCode {} but {} is OpenCode {}: one mission runs on servers of one generation",
                        endpoints[0].url, endpoints[0].generation, other.url, other.generation
                    ),
                    "pass --server only for servers of one generation",
                ));
            }
            return Ok(Some(Target::Remote(endpoints)));
        }
        ServerChoice::ServiceOr(bin) => {
            let attached = tokio::select! {
                attached = opencode_env::attach_service() => attached,
                () = stop.cancelled() => return Ok(None),
            };
            match (attached, bin) {
                (Ok(Some(endpoint)), _) => {
                    ui.step("attaching to OpenCode 2's background service")
                        .done(format!(
                            "{} (OpenCode {}): the mission's sessions show in your OpenCode TUI",
                            endpoint.url, endpoint.version
                        ));
                    return Ok(Some(Target::Service));
                }
                (Ok(None), Ok(bin)) => {
                    if bin.generation == Generation::V2 {
                        ui.note(
                            "OpenCode 2's background service is not running: starting a private server \
                             (`opencode service start` starts the service, so that the next mission shows in your TUI)",
                        );
                    }
                    bin
                }
                (Err(e), Ok(bin)) => {
                    ui.notice(format!(
                        "cannot attach to OpenCode 2's background service ({e}): starting a private server"
                    ));
                    bin
                }
                (Ok(None), Err(e)) => {
                    return Err(Failure::env(
                        format!("OpenCode was not found: {e}"),
                        opencode_env::INSTALL_HINT,
                    ));
                }
                (Err(service), Err(e)) => {
                    return Err(Failure::env(
                        format!(
                            "OpenCode was not found ({e}) and its background service does not answer: {service}"
                        ),
                        format!(
                            "start it with `opencode service start`, or {}",
                            opencode_env::INSTALL_HINT
                        ),
                    ));
                }
            }
        }
    };
    let step = ui.step(&format!(
        "starting the OpenCode server (OpenCode {})",
        bin.generation
    ));
    // A stop during the start returns once the process is gone: the isolated home is then
    // removed whole (a server still starting would write into it as it goes).
    let Some(server) = opencode_env::start_server_until(&bin, dir, home, stop.cancelled()).await?
    else {
        return Ok(None);
    };
    let version = server_version(&server).await.map_err(|e| {
        Failure::env(
            format!("the OpenCode server does not answer: {e}"),
            "run `task_cli doctor`",
        )
    })?;
    step.done(format!(
        "{} (opencode {version}, password-protected)",
        server.base_url()
    ));
    *lock_(server_slot) = Some(Arc::new(server));
    Ok(Some(Target::Own(bin)))
}

/// The version a server of either generation reports.
async fn server_version(server: &OpencodeServer) -> Result<String, String> {
    match server.generation() {
        Generation::V1 => server
            .client()
            .health()
            .await
            .map(|h| h.version)
            .map_err(|e| e.to_string()),
        Generation::V2 => server
            .client_v2()
            .info()
            .await
            .map(|i| i.version)
            .map_err(|e| e.to_string()),
    }
}

async fn run_locked(
    ui: &Ui,
    spec: LaunchSpec,
    teardown: &ShutdownManager,
    server_slot: &ServerSlot,
    keep_slot: &KeepSlot,
) -> anyhow::Result<u8> {
    let dir = spec.dir.clone();
    let stop = &teardown.token();
    let scripted = matches!(spec.model, ModelChoice::Script(_));
    let (default_model, home) = match spec.model {
        ModelChoice::Script(script) => {
            let ServerChoice::Own(bin) = &spec.server else {
                return Err(Failure::usage(
                    "--model-script needs a server this command starts (the scripted model is only known to it)",
                    "drop --server",
                ));
            };
            let step = ui.step("starting the scripted model");
            let model = ScriptedModel::start(script).map_err(|e| {
                Failure::env(
                    format!("cannot start the scripted model: {e}"),
                    "check that 127.0.0.1 accepts local connections",
                )
            })?;
            let home = IsolatedHome::new()?;
            write_isolated_config(home.path(), &model.base_url(), &spec.agents, bin.generation)?;
            step.done(model.base_url());
            let path = home.path().to_owned();
            *lock_(keep_slot) = Some(Keep {
                _model: model,
                _home: home,
            });
            (Some(ModelSpec::new("fake", "fake-model")), Some(path))
        }
        ModelChoice::User(model) => (model, None),
    };
    if let Some(parent) = &spec.parent_session
        && matches!(spec.server, ServerChoice::Own(_))
    {
        return Err(Failure::usage(
            format!(
                "--parent-session {parent} names a session of a server this command does not start"
            ),
            "pass the server that holds it with --server, or drop --parent-session",
        ));
    }
    // Our agents must be in the project's config before a server of the user's serves it.
    let check_config = |generation: Generation| -> anyhow::Result<()> {
        if scripted {
            return Ok(());
        }
        let report = ConfigInstaller::new(&dir)
            .dry_run(&agents_spec(&spec.agents, generation))
            .map_err(|e| {
                Failure::env(
                    format!("cannot check the OpenCode config: {e}"),
                    "fix the file named above; `task_cli doctor` shows every problem",
                )
            })?;
        if report.changed {
            return Err(Failure::env(
                format!(
                    "the orchestrator's agents are not installed (for OpenCode {generation}) in {}",
                    report.path.display()
                ),
                format!(
                    "run `task_cli install --dir {0}` (preview with `task_cli install --dry-run --dir {0}`)",
                    dir.display()
                ),
            ));
        }
        Ok(())
    };
    if let ServerChoice::Own(bin) = &spec.server {
        check_config(bin.generation)?;
    }
    let Some(target) =
        settle_server(ui, spec.server, &dir, home.as_deref(), stop, server_slot).await?
    else {
        // Interrupted, not refused: `resume` continues it.
        if let Some(settings) = &spec.settings {
            settings.save(&dir)?;
        }
        return Ok(stopped_at_start(ui, &dir));
    };
    check_config(target.generation())?;
    if let Some(settings) = &spec.settings {
        settings.save(&dir)?;
    }
    // On a server of the user's the sessions that worked stay, for the user to look at.
    let keep_used_sessions = !matches!(target, Target::Own(_));
    let connector = Arc::new(Connector {
        target,
        dir: dir.clone(),
        home: home.clone(),
        server: Arc::clone(server_slot),
        config: OpencodeBackendConfig {
            default_model,
            toasts: !scripted,
            settle: Duration::from_secs(2),
            parent_session: spec.parent_session.clone(),
            keep_used_sessions,
            ..OpencodeBackendConfig::default()
        },
    });
    let mission = orch_agents::MissionSpec::new(spec.request.clone(), &dir)
        .config(spec.config)
        .agents(spec.agents)
        .stop_token(stop.clone());
    let outcome = match &connector.target {
        Target::Remote(endpoints) if endpoints.len() > 1 => {
            let connector = Arc::clone(&connector);
            supervise(ui, mission, teardown, move |attempt| {
                let connector = Arc::clone(&connector);
                async move { connector.connect_many(attempt).await }
            })
            .await
        }
        _ => {
            let connector = Arc::clone(&connector);
            supervise(ui, mission, teardown, move |attempt| {
                let connector = Arc::clone(&connector);
                async move { connector.connect_one(attempt).await }
            })
            .await
        }
    };
    ui.clear();

    let (report, restarts) = outcome.map_err(|e| {
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

/// A backend the supervisor can run on, closed at the end of the run.
trait Engine: AgentBackend + 'static {
    fn close_all(&self) -> impl std::future::Future<Output = ()> + Send;
}

impl Engine for AnyOpencode {
    async fn close_all(&self) {
        self.shutdown().await;
    }
}

impl Engine for MultiBackend {
    async fn close_all(&self) {
        self.shutdown().await;
    }
}

/// Runs `mission` under a supervisor that gets its backend from `connect` (again after a
/// lost server), with live progress; the last backend's sessions are closed at teardown.
async fn supervise<B, F, Fut>(
    ui: &Ui,
    mission: orch_agents::MissionSpec,
    teardown: &ShutdownManager,
    mut connect: F,
) -> Result<(MissionReport, u32), orch_agents::MissionError>
where
    B: Engine,
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<B>, BackendError>>,
{
    let dir = mission.dir().to_owned();
    let supervisor = Supervisor::<B>::new(mission);
    let mut events = supervisor.spec().subscribe();
    // Until the supervisor is done (a lost server gives a `finished`, then `reconnecting`).
    let progress_ui = ui.clone();
    let consumer = tokio::spawn(async move {
        let mut progress = Progress::new(&progress_ui, &dir);
        loop {
            match events.recv().await {
                Ok(event) => progress.event(&event),
                Err(RecvError::Lagged(n)) => progress_ui.note(format!("({n} events skipped)")),
                Err(RecvError::Closed) => break,
            }
        }
        progress.finish();
    });
    let current: Arc<Mutex<Option<Arc<B>>>> = Arc::new(Mutex::new(None));
    let result = {
        let current = Arc::clone(&current);
        supervisor
            .run(move |attempt| {
                let next = connect(attempt);
                let current = Arc::clone(&current);
                async move {
                    let old = lock_(&current).take();
                    if let Some(old) = old {
                        old.close_all().await;
                    }
                    let backend = next.await?;
                    *lock_(&current) = Some(Arc::clone(&backend));
                    Ok(backend)
                }
            })
            .await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), consumer).await;
    let backend = lock_(&current).take();
    let _ = teardown.register("mission sessions", 10, move || async move {
        if let Some(backend) = backend {
            backend.close_all().await;
        }
    });
    result
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

type ServerSlot = Arc<Mutex<Option<Arc<OpencodeServer>>>>;

fn lock_<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gives the supervisor a backend: the first time on the server settled above, after a
/// loss on a restarted server (when ours died), a new connection, or the service's new
/// address.
struct Connector {
    target: Target,
    dir: PathBuf,
    home: Option<PathBuf>,
    server: ServerSlot,
    config: OpencodeBackendConfig,
}

fn unavailable(message: impl Into<String>) -> BackendError {
    BackendError::Unavailable {
        status: None,
        message: message.into(),
    }
}

impl Connector {
    /// One server's backend.
    async fn connect_one(&self, attempt: u32) -> Result<Arc<AnyOpencode>, BackendError> {
        let backend = match &self.target {
            Target::Own(bin) => {
                let current = lock_(&self.server).clone();
                let server = match current {
                    Some(server) if server.is_running() => server,
                    _ => {
                        if attempt > 0 {
                            tracing::warn!("the OpenCode server died; starting a new one");
                        }
                        let server =
                            opencode_env::start_server(bin, &self.dir, self.home.as_deref())
                                .await
                                .map_err(|e| unavailable(e.to_string()))?;
                        let server = Arc::new(server);
                        *lock_(&self.server) = Some(Arc::clone(&server));
                        server
                    }
                };
                AnyOpencode::connect_server(&server, &self.dir, self.config.clone()).await?
            }
            Target::Remote(endpoints) => {
                let endpoint = endpoints
                    .first()
                    .ok_or_else(|| unavailable("no server to connect to"))?;
                self.connect_endpoint(endpoint).await?
            }
            Target::Service => {
                let endpoint = opencode_env::attach_service()
                    .await
                    .map_err(|e| unavailable(e.to_string()))?
                    .ok_or_else(|| {
                        unavailable("OpenCode 2's background service is not running any more")
                    })?;
                self.connect_endpoint(&endpoint).await?
            }
        };
        Ok(Arc::new(backend))
    }

    /// Every reachable server behind one [`MultiBackend`] (at least one must answer).
    async fn connect_many(&self, _attempt: u32) -> Result<Arc<MultiBackend>, BackendError> {
        let Target::Remote(endpoints) = &self.target else {
            return Err(unavailable("several servers were not given"));
        };
        let mut backends = Vec::new();
        let mut errors = Vec::new();
        for endpoint in endpoints {
            match self.connect_endpoint(endpoint).await {
                Ok(backend) => backends.push(backend),
                Err(e) => {
                    tracing::warn!(url = %endpoint.url, error = %e, "an OpenCode server is not usable");
                    errors.push(format!("{}: {e}", endpoint.url));
                }
            }
        }
        if backends.is_empty() {
            return Err(BackendError::ServerLost {
                message: format!("no OpenCode server answers ({})", errors.join("; ")),
            });
        }
        MultiBackend::new(backends)
            .map(Arc::new)
            .map_err(|e| unavailable(e.to_string()))
    }

    async fn connect_endpoint(&self, endpoint: &Endpoint) -> Result<AnyOpencode, BackendError> {
        AnyOpencode::connect_url(
            &endpoint.url,
            endpoint.credentials(),
            endpoint.generation,
            &self.dir,
            self.config.clone(),
        )
        .await
    }
}

/// The isolated home's global OpenCode config: the scripted model as the only model, the
/// orchestrator's agents, no snapshots (faster), no sharing or updates.
fn write_isolated_config(
    home: &Path,
    base_url: &str,
    agents: &AgentSet,
    generation: Generation,
) -> anyhow::Result<()> {
    let mut config = fake_provider_config_for(base_url, generation);
    match generation {
        Generation::V1 => config["agent"] = orch_agents::backend::opencode::config_agents(agents),
        Generation::V2 => {
            config["agents"] = orch_agents::backend::opencode2::config_agents(agents);
        }
    }
    let dir = home.join(".config/opencode");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("opencode.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(())
}
