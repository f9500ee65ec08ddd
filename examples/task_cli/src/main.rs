//! `task_cli`: the `/task` command line of the Rust OpenCode Orchestrator.
//!
//! `demo` runs a real four-agent mission on a real OpenCode server with a scripted model;
//! `run`, `resume`, `status` and `stop` drive missions with your own OpenCode configuration;
//! `install`/`uninstall` put the orchestrator's agents into `opencode.json(c)`; `doctor`
//! checks everything and says what to do. See the README for flags, the config file, exit
//! codes and the JSON event format.
#![forbid(unsafe_code)]

mod config;
mod demo;
mod doctor;
mod failure;
mod git;
mod install;
mod lifecycle;
mod opencode_env;
mod output;
mod plugin;
mod runner;
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use orch_agents::{AgentSet, ModelSpec, RunLock};
use orch_opencode::Generation;
use orch_testkit::Script;
use serde_json::json;

use crate::config::{FileConfig, Limits};
use crate::failure::{EXIT_CODES_HELP, Failure, code, describe};
use crate::lifecycle::Existing;
use crate::output::{Mode, Ui};
use crate::runner::{LaunchSpec, ModelChoice, ServerChoice, Signals};
use crate::state::{BUILTIN_DEMO, Saved, project_dir};

/// The /task command line of the Rust OpenCode Orchestrator: a deterministic Commander
/// driving a Planner, parallel Workers and a Reviewer on OpenCode.
#[derive(Debug, Parser)]
#[command(name = "task_cli", version, about, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Machine-readable output: one JSON object per line on stdout (events, then a report)
    #[arg(long, global = true)]
    json: bool,
    /// Only the final summary and errors
    #[arg(long, short, global = true, conflicts_with = "json")]
    quiet: bool,
    /// One plain line per event instead of live bars (automatic when not a terminal or NO_COLOR is set)
    #[arg(long, global = true)]
    plain: bool,
    /// More log lines (-v info, -vv debug); or set TASK_LOG (RUST_LOG syntax)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a small tested project with a real mission (scripted model, real OpenCode); installs OpenCode if missing
    #[command(after_help = EXIT_CODES_HELP)]
    Demo {
        /// A new or empty directory for the project [default: a fresh temporary directory]
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        generation: GenerationArg,
    },
    /// Run a mission with your OpenCode configuration and model
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Continue the unfinished mission in a directory (plans it again if its planning never finished)
    #[command(after_help = EXIT_CODES_HELP)]
    Resume(ResumeArgs),
    /// Put failed items (and the items they blocked) back to pending with their attempts reset, then continue
    #[command(after_help = EXIT_CODES_HELP)]
    Retry(RetryArgs),
    /// The plan, its versions, the audit verification, the journal and the last report
    Status(DirArg),
    /// Stop the mission running in a directory (it can be resumed)
    Stop {
        #[command(flatten)]
        dir: DirArg,
        /// Seconds to wait for it to stop
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        wait: u64,
    },
    /// Merge the mission's git branch into the branch your checkout is on (when it merges cleanly; a conflict changes nothing)
    #[command(after_help = EXIT_CODES_HELP)]
    Merge {
        #[command(flatten)]
        dir: DirArg,
        /// Only say whether it would merge cleanly (nothing is changed)
        #[arg(long)]
        check: bool,
    },
    /// Remove the git worktrees and lane branches a mission left, and its branch once merged
    Clean {
        #[command(flatten)]
        dir: DirArg,
        /// Also delete the mission's branch when it is not merged (its commits are then only in git's reflog)
        #[arg(long)]
        delete_branch: bool,
    },
    /// Install the orchestrator's agents into the project's opencode.json(c)
    Install {
        #[command(flatten)]
        dir: DirArg,
        /// Show the diff and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Replace agents of the same name that differ (and plugin files you changed, backed up first)
        #[arg(long)]
        force: bool,
        /// Also install the /task plugin into .opencode/plugins/ (OpenCode loads it by itself): type /task in OpenCode's TUI
        #[arg(long)]
        plugin: bool,
        #[command(flatten)]
        generation: GenerationArg,
    },
    /// Remove the orchestrator's agents from the project's opencode.json(c); with --plugin also the /task plugin
    Uninstall {
        #[command(flatten)]
        dir: DirArg,
        /// Show the diff and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Also remove the /task plugin (only its files that are as installed)
        #[arg(long)]
        plugin: bool,
        #[command(flatten)]
        generation: GenerationArg,
    },
    /// Check OpenCode, the server, the model, the config files and the mission state
    Doctor {
        #[command(flatten)]
        dir: DirArg,
        /// Check this server instead of starting one
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Do not start a server (skips the server, auth and model checks)
        #[arg(long, conflicts_with = "server")]
        no_server: bool,
        #[command(flatten)]
        generation: GenerationArg,
    },
}

#[derive(Debug, Args)]
struct DirArg {
    /// The project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct GenerationArg {
    /// The OpenCode generation: v1 (npm opencode-ai) or v2 (npm @opencode/cli) [default: the one OPENCODE_BIN or the installed OpenCode is, OpenCode 2 first; a --server's is detected]
    #[arg(long, value_name = "v1|v2", value_parser = parse_generation)]
    opencode_generation: Option<Generation>,
}

fn parse_generation(text: &str) -> Result<Generation, String> {
    text.parse::<Generation>()
        .map_err(|_| format!("`{text}` is not an OpenCode generation: pass v1 or v2"))
}

#[derive(Debug, Args)]
struct Backend {
    /// The model as provider/model [default: the one in your OpenCode config]
    #[arg(long, value_name = "PROVIDER/MODEL")]
    model: Option<String>,
    /// Use this running OpenCode server instead of starting one; repeat it to spread the sessions over several servers of one generation (password from OPENCODE_SERVER_PASSWORD, user from OPENCODE_SERVER_USERNAME)
    #[arg(long = "server", value_name = "URL", conflicts_with = "model_script")]
    servers: Vec<String>,
    /// Use the scripted model with this script instead of a real model (offline, deterministic)
    #[arg(long, value_name = "FILE")]
    model_script: Option<PathBuf>,
    #[command(flatten)]
    generation: GenerationArg,
    /// Start a private OpenCode server even when OpenCode 2's background service runs (without --server the mission attaches to that service, so that it shows in your TUI)
    #[arg(long, conflicts_with = "servers")]
    standalone: bool,
    /// Open every session of the mission as a child of this OpenCode session (on the --server), so that they show under it in the TUI
    #[arg(long, value_name = "SESSION_ID")]
    parent_session: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// What to build, in plain words
    mission: String,
    /// The project directory (created if missing) [default: the current directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Start this mission even though another one is unfinished in DIR (its state is archived under .orchestrator/history)
    #[arg(long)]
    new: bool,
    #[command(flatten)]
    backend: Backend,
    #[command(flatten)]
    limits: Limits,
}

#[derive(Debug, Args)]
struct ResumeArgs {
    /// The project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Also retry the failed items (and the items they blocked), as `task_cli retry` does
    #[arg(long)]
    retry_failed: bool,
    #[command(flatten)]
    backend: Backend,
    #[command(flatten)]
    limits: Limits,
}

#[derive(Debug, Args)]
struct RetryArgs {
    /// The failed items to retry [default: every failed item]
    #[arg(value_name = "ITEM")]
    items: Vec<String>,
    /// The project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    backend: Backend,
    #[command(flatten)]
    limits: Limits,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                code::USAGE
            } else {
                code::SUCCESS
            });
        }
    };
    let mode = Mode::detect(cli.json, cli.quiet, cli.plain);
    let ui = Ui::new(mode);
    let filter = std::env::var("TASK_LOG")
        .ok()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| {
            match cli.verbose {
                0 => "warn",
                1 => "info",
                _ => "debug",
            }
            .to_owned()
        });
    ui.init_tracing(&filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(code::ENVIRONMENT);
        }
    };
    let result = runtime.block_on(dispatch(&ui, cli.command));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(exit) => ExitCode::from(exit),
        Err(error) => {
            let (exit, what, fix) = describe(&error);
            if !what.is_empty() {
                ui.clear();
                ui.json(&json!({"event": "error", "exit_code": exit, "message": what, "fix": fix}));
                eprintln!("error: {what}");
                if let Some(fix) = fix {
                    eprintln!("  what to do: {fix}");
                }
            }
            ExitCode::from(exit)
        }
    }
}

async fn dispatch(ui: &Ui, command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Demo { dir, generation } => {
            demo::demo(
                ui,
                Signals::install()?,
                dir.as_deref(),
                generation.opencode_generation,
            )
            .await
        }
        Command::Run(args) => run(ui, Signals::install()?, args).await,
        Command::Resume(args) => resume(ui, Signals::install()?, args).await,
        Command::Retry(args) => retry(ui, Signals::install()?, args).await,
        Command::Status(dir) => state::status(ui, &project_dir(dir.dir.as_deref())?),
        Command::Stop { dir, wait } => state::stop(
            ui,
            &project_dir(dir.dir.as_deref())?,
            Duration::from_secs(wait),
        ),
        Command::Merge { dir, check } => git::merge(ui, &project_dir(dir.dir.as_deref())?, check),
        Command::Clean { dir, delete_branch } => {
            git::clean(ui, &project_dir(dir.dir.as_deref())?, delete_branch)
        }
        Command::Install {
            dir,
            dry_run,
            force,
            plugin,
            generation,
        } => install::install(
            ui,
            &project_dir(dir.dir.as_deref())?,
            dry_run,
            force,
            generation.opencode_generation,
            plugin,
        ),
        Command::Uninstall {
            dir,
            dry_run,
            plugin,
            generation,
        } => install::uninstall(
            ui,
            &project_dir(dir.dir.as_deref())?,
            dry_run,
            generation.opencode_generation,
            plugin,
        ),
        Command::Doctor {
            dir,
            server,
            no_server,
            generation,
        } => {
            doctor::doctor(
                ui,
                &project_dir(dir.dir.as_deref())?,
                server.as_deref(),
                !no_server,
                generation.opencode_generation,
            )
            .await
        }
    }
}

fn parse_model(model: &str) -> anyhow::Result<ModelSpec> {
    ModelSpec::parse(model).ok_or_else(|| {
        Failure::usage(
            format!("`{model}` is not a provider/model pair"),
            "pass e.g. --model anthropic/claude-sonnet-4-5",
        )
    })
}

fn load_script(path: &str) -> anyhow::Result<Script> {
    if path == BUILTIN_DEMO {
        return demo::demo_script();
    }
    Script::load(path).map_err(|e| {
        Failure::env(
            format!("cannot load the model script {path}: {e}"),
            "fix the script at the line named above; the format is documented in crates/orch-testkit/README.md",
        )
    })
}

/// Builds the mission spec from the flags, over the saved settings, over the config file,
/// saves the settings (this command owns the directory: `lock`), and runs the mission.
#[allow(clippy::too_many_arguments)]
async fn start(
    ui: &Ui,
    signals: Signals,
    lock: RunLock,
    dir: PathBuf,
    mission: String,
    backend: &Backend,
    limits: &Limits,
    saved: Option<&Saved>,
) -> anyhow::Result<u8> {
    let limits = match saved {
        Some(saved) => limits.over(&saved.limits),
        None => limits.clone(),
    };
    let (file, file_path) = FileConfig::load(limits.config.as_deref(), &dir)?;
    if let Some(path) = file_path {
        ui.note(format!("config: {}", path.display()));
    }
    let mut config = limits.mission_config(&file)?;
    config.git = git::resolve(ui, &dir, limits.git_choice().or(file.git))?;
    let model_script = backend
        .model_script
        .as_ref()
        .map(|p| {
            std::fs::canonicalize(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        })
        .or_else(|| saved.and_then(|s| s.model_script.clone()));
    let model = backend
        .model
        .clone()
        .or_else(|| saved.and_then(|s| s.model.clone()))
        .or(file.model.clone());
    let generation = match backend.generation.opencode_generation {
        Some(generation) => Some(generation),
        None => saved
            .and_then(|s| s.opencode_generation.clone())
            .or(file.opencode_generation.clone())
            .map(|text| {
                parse_generation(&text).map_err(|e| {
                    Failure::env(
                        format!("bad opencode_generation in the saved settings or task.toml: {e}"),
                        "set it to v1 or v2, or pass --opencode-generation",
                    )
                })
            })
            .transpose()?,
    };
    let servers = if backend.servers.is_empty() {
        saved
            .map(Saved::servers)
            .filter(|s| !s.is_empty())
            .or_else(|| file.server.as_ref().map(crate::config::OneOrMany::to_vec))
            .unwrap_or_default()
    } else {
        backend.servers.clone()
    };
    let standalone = backend.standalone || saved.is_some_and(|s| s.standalone);
    let agents = AgentSet::for_project(&dir).map_err(|e| {
        Failure::env(
            format!("cannot load the agents: {e}"),
            "fix .orchestrator/agents.json at the line named above, or delete it",
        )
    })?;
    let model_choice = match &model_script {
        Some(path) => ModelChoice::Script(load_script(path)?),
        None => ModelChoice::User(model.as_deref().map(parse_model).transpose()?),
    };
    let server_choice = if model_script.is_some() {
        // The scripted model is only known to a server this command starts.
        ServerChoice::Own(opencode_env::require(generation)?)
    } else if !servers.is_empty() {
        ServerChoice::Remote {
            urls: servers.clone(),
            generation,
        }
    } else if standalone || generation == Some(Generation::V1) {
        ServerChoice::Own(opencode_env::require(generation)?)
    } else {
        match opencode_env::find(generation) {
            Ok(bin) if bin.generation == Generation::V1 => ServerChoice::Own(bin),
            found => ServerChoice::ServiceOr(found),
        }
    };
    let settings = Saved {
        mission: mission.clone(),
        model,
        model_script,
        server: None,
        servers: if matches!(server_choice, ServerChoice::Remote { .. }) {
            servers
        } else {
            Vec::new()
        },
        opencode_generation: generation.map(|g| g.as_str().to_owned()),
        standalone,
        limits,
    };
    runner::run(
        ui,
        signals,
        lock,
        LaunchSpec {
            dir,
            request: mission,
            server: server_choice,
            model: model_choice,
            config,
            agents,
            parent_session: backend.parent_session.clone(),
            settings: Some(settings),
        },
    )
    .await
}

/// The project directory of `run`: `--dir` (created when missing) or the current one.
fn run_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        if dir.exists() && !dir.is_dir() {
            return Err(Failure::usage(
                format!("{} is not a directory", dir.display()),
                "pass the project's directory with --dir (it is created when missing)",
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::env(
                format!("cannot create {}: {e}", dir.display()),
                "check the path and its permissions",
            )
        })?;
    }
    project_dir(dir)
}

async fn run(ui: &Ui, signals: Signals, args: RunArgs) -> anyhow::Result<u8> {
    if args.mission.trim().is_empty() {
        return Err(Failure::usage(
            "the mission text is empty",
            "say what to build: task_cli run \"add a --verbose flag\"",
        ));
    }
    let dir = run_dir(args.dir.as_deref())?;
    // Own the directory first: a refused run writes nothing.
    let lock = lifecycle::lock(&dir)?;
    let existing = lifecycle::inspect(&dir)?;
    let d = dir.display();
    let mut saved = Saved::load(&dir)?;
    let archive = |why: String| -> anyhow::Result<()> {
        let branch = git::set_aside(&dir, &lock)?;
        let to = lifecycle::archive(&dir, &lock)?;
        ui.notice(format!(
            "{why}; its state is archived in {}{} and the new mission is planned",
            to.display(),
            branch.map(|b| format!(", {b}")).unwrap_or_default()
        ));
        Ok(())
    };
    match &existing {
        Existing::Nothing => {}
        Existing::Unplanned { mission } | Existing::Unfinished { mission, .. }
            if lifecycle::same_mission(mission, &args.mission) && !args.new =>
        {
            ui.notice(if matches!(existing, Existing::Unplanned { .. }) {
                format!(
                    "{d} holds this mission, never planned (interrupted or failed): planning it"
                )
            } else {
                format!(
                    "{d} holds this mission, unfinished: continuing it (as `task_cli resume` would)"
                )
            });
        }
        Existing::Unplanned { mission } | Existing::Unfinished { mission, .. } if !args.new => {
            return Err(Failure::usage(
                format!(
                    "{d} holds another mission, unfinished: {}",
                    state::shell_quote(mission)
                ),
                format!(
                    "continue it with `task_cli resume --dir {d}`, or start this one anyway with `task_cli run {} --new --dir {d}` (the other is archived under .orchestrator/history)",
                    state::shell_quote(&args.mission)
                ),
            ));
        }
        Existing::Unplanned { .. } | Existing::Unfinished { .. } => {
            archive("--new: the unfinished mission is set aside".to_owned())?;
        }
        Existing::Done { .. } => {
            archive("the previous mission in this directory is finished".to_owned())?;
        }
        Existing::DoneButFailed { reason, .. } => {
            archive(format!(
                "the previous mission in this directory failed ({reason})"
            ))?;
        }
        Existing::Failed { failed, .. } => {
            archive(format!(
                "the previous mission in this directory ended with failed items ({})",
                failed.join(", ")
            ))?;
        }
    }
    // A new mission keeps the directory's model, script and server (flags override them);
    // the limits only for the same mission.
    if let Some(old) = saved.as_mut()
        && !lifecycle::same_mission(&old.mission, &args.mission)
    {
        old.mission.clone_from(&args.mission);
        old.limits = Limits::default();
    }
    start(
        ui,
        signals,
        lock,
        dir,
        args.mission,
        &args.backend,
        &args.limits,
        saved.as_ref(),
    )
    .await
}

/// The mission of `dir` for `resume` and `retry`, or why there is nothing to continue.
fn continue_mission(dir: &Path, existing: &Existing, verb: &str) -> anyhow::Result<String> {
    existing.mission().map(str::to_owned).ok_or_else(|| {
        Failure::env(
            format!("nothing to {verb} in {}: no mission there", dir.display()),
            "pass the mission's directory with --dir, or start one with `task_cli run \"...\"`",
        )
    })
}

async fn resume(ui: &Ui, signals: Signals, args: ResumeArgs) -> anyhow::Result<u8> {
    let dir = project_dir(args.dir.as_deref())?;
    if !dir.is_dir() {
        return Err(Failure::env(
            format!("{} does not exist", dir.display()),
            "pass the mission's directory with --dir",
        ));
    }
    let lock = lifecycle::lock(&dir)?;
    let existing = lifecycle::inspect(&dir)?;
    let mission = continue_mission(&dir, &existing, "resume")?;
    let d = dir.display();
    match &existing {
        Existing::Done { .. } => {
            ui.notice(format!(
                "the mission in {d} is already finished; nothing to resume (`task_cli status --dir {d}` shows it)"
            ));
            return Ok(code::SUCCESS);
        }
        Existing::DoneButFailed { mission, reason } => {
            return Err(Failure {
                code: code::MISSION_FAILED,
                what: format!(
                    "nothing to resume in {d}: every item is done but the mission failed: {reason}"
                ),
                fix: Some(format!(
                    "plan it anew with `task_cli run {} --dir {d}` (this state is archived)",
                    state::shell_quote(mission)
                )),
            }
            .into());
        }
        Existing::Failed {
            failed, blocked, ..
        } if !args.retry_failed => {
            return Err(Failure {
                code: code::MISSION_FAILED,
                what: format!(
                    "nothing to resume in {d}: {} failed{}, and nothing else can run",
                    failed.join(", "),
                    if blocked.is_empty() {
                        String::new()
                    } else {
                        format!(" (blocking {})", blocked.join(", "))
                    }
                ),
                fix: Some(format!(
                    "retry them with `task_cli retry --dir {d}` (or `task_cli resume --retry-failed --dir {d}`)"
                )),
            }
            .into());
        }
        Existing::Unplanned { .. } => {
            ui.notice(format!(
                "the mission in {d} has no plan yet (its planning was interrupted or failed): planning it"
            ));
        }
        _ => {}
    }
    if args.retry_failed {
        let reset = lifecycle::reset_failed(&dir, &[], &lock)?;
        if !reset.is_empty() {
            ui.notice(format!("retrying {}", reset.join(", ")));
        }
    }
    continue_with_saved(ui, signals, lock, dir, mission, &args.backend, &args.limits).await
}

/// Runs the mission of `dir` again with the settings it was started with (flags win).
async fn continue_with_saved(
    ui: &Ui,
    signals: Signals,
    lock: RunLock,
    dir: PathBuf,
    mission: String,
    backend: &Backend,
    limits: &Limits,
) -> anyhow::Result<u8> {
    let saved = Saved::load(&dir)?;
    start(
        ui,
        signals,
        lock,
        dir,
        mission,
        backend,
        limits,
        saved.as_ref(),
    )
    .await
}

async fn retry(ui: &Ui, signals: Signals, args: RetryArgs) -> anyhow::Result<u8> {
    let dir = project_dir(args.dir.as_deref())?;
    let lock = lifecycle::lock(&dir)?;
    let existing = lifecycle::inspect(&dir)?;
    let mission = continue_mission(&dir, &existing, "retry")?;
    let reset = lifecycle::reset_failed(&dir, &args.items, &lock)?;
    if reset.is_empty() {
        return Err(Failure::usage(
            format!("no item failed in {}: nothing to retry", dir.display()),
            format!(
                "`task_cli status --dir {0}` shows the plan; continue an unfinished one with `task_cli resume --dir {0}`",
                dir.display()
            ),
        ));
    }
    ui.notice(format!(
        "retrying {} (attempts reset; recorded in the audit log and the journal)",
        reset.join(", ")
    ));
    continue_with_saved(ui, signals, lock, dir, mission, &args.backend, &args.limits).await
}
