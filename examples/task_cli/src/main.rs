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
mod install;
mod opencode_env;
mod output;
mod runner;
mod state;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use orch_agents::{AgentSet, ModelRef};
use orch_mvcc::{TODO_FILE, TodoStore};
use orch_testkit::Script;
use serde_json::json;

use crate::config::{FileConfig, Limits};
use crate::failure::{EXIT_CODES_HELP, Failure, code, describe};
use crate::output::{Mode, Ui};
use crate::runner::{MissionSpec, ModelChoice, ServerChoice};
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
    },
    /// Run a mission with your OpenCode configuration and model
    #[command(after_help = EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Continue the unfinished mission in a directory
    #[command(after_help = EXIT_CODES_HELP)]
    Resume(ResumeArgs),
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
    /// Install the orchestrator's agents into the project's opencode.json(c)
    Install {
        #[command(flatten)]
        dir: DirArg,
        /// Show the diff and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Replace agents of the same name that differ
        #[arg(long)]
        force: bool,
    },
    /// Remove the orchestrator's agents from the project's opencode.json(c)
    Uninstall {
        #[command(flatten)]
        dir: DirArg,
        /// Show the diff and change nothing
        #[arg(long)]
        dry_run: bool,
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
    },
}

#[derive(Debug, Args)]
struct DirArg {
    /// The project directory [default: the current directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct Backend {
    /// The model as provider/model [default: the one in your OpenCode config]
    #[arg(long, value_name = "PROVIDER/MODEL")]
    model: Option<String>,
    /// Use this running OpenCode server (password from OPENCODE_SERVER_PASSWORD) instead of starting one
    #[arg(long, value_name = "URL", conflicts_with = "model_script")]
    server: Option<String>,
    /// Use the scripted model with this script instead of a real model (offline, deterministic)
    #[arg(long, value_name = "FILE")]
    model_script: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// What to build, in plain words
    mission: String,
    /// The project directory (created if missing) [default: the current directory]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
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
        Command::Demo { dir } => demo::demo(ui, dir.as_deref()).await,
        Command::Run(args) => run(ui, args).await,
        Command::Resume(args) => resume(ui, args).await,
        Command::Status(dir) => state::status(ui, &project_dir(dir.dir.as_deref())?),
        Command::Stop { dir, wait } => state::stop(
            ui,
            &project_dir(dir.dir.as_deref())?,
            Duration::from_secs(wait),
        ),
        Command::Install {
            dir,
            dry_run,
            force,
        } => install::install(ui, &project_dir(dir.dir.as_deref())?, dry_run, force),
        Command::Uninstall { dir, dry_run } => {
            install::uninstall(ui, &project_dir(dir.dir.as_deref())?, dry_run)
        }
        Command::Doctor {
            dir,
            server,
            no_server,
        } => {
            doctor::doctor(
                ui,
                &project_dir(dir.dir.as_deref())?,
                server.as_deref(),
                !no_server,
            )
            .await
        }
    }
}

fn parse_model(model: &str) -> anyhow::Result<ModelRef> {
    ModelRef::parse(model).ok_or_else(|| {
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

/// Builds the mission spec from the saved settings, overridden by flags, then the config file.
async fn start(
    ui: &Ui,
    dir: PathBuf,
    mission: String,
    backend: &Backend,
    limits: &Limits,
    saved: Option<&Saved>,
) -> anyhow::Result<u8> {
    let (file, file_path) = FileConfig::load(limits.config.as_deref(), &dir)?;
    if let Some(path) = file_path {
        ui.note(format!("config: {}", path.display()));
    }
    let config = limits.mission_config(&file)?;
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
    let server = backend
        .server
        .clone()
        .or_else(|| saved.and_then(|s| s.server.clone()))
        .or(file.server.clone());
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
    let server_choice = match &server {
        Some(url) if model_script.is_none() => ServerChoice::Remote(url.clone()),
        _ => ServerChoice::Own(opencode_env::require()?),
    };
    Saved {
        mission: mission.clone(),
        model,
        model_script,
        server: if matches!(server_choice, ServerChoice::Remote(_)) {
            server
        } else {
            None
        },
    }
    .save(&dir)?;
    runner::run(
        ui,
        MissionSpec {
            dir,
            request: mission,
            server: server_choice,
            model: model_choice,
            config,
            agents,
        },
    )
    .await
}

async fn run(ui: &Ui, args: RunArgs) -> anyhow::Result<u8> {
    if args.mission.trim().is_empty() {
        return Err(Failure::usage(
            "the mission text is empty",
            "say what to build: task_cli run \"add a --verbose flag\"",
        ));
    }
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::env(
                format!("cannot create {}: {e}", dir.display()),
                "check the path",
            )
        })?;
    }
    let dir = project_dir(args.dir.as_deref())?;
    if unfinished_plan(&dir)? {
        ui.notice(format!(
            "{} holds an unfinished plan: continuing it (as `task_cli resume` would)",
            dir.display()
        ));
    }
    start(ui, dir, args.mission, &args.backend, &args.limits, None).await
}

async fn resume(ui: &Ui, args: ResumeArgs) -> anyhow::Result<u8> {
    let dir = project_dir(args.dir.as_deref())?;
    if !dir.join(".orchestrator").join(TODO_FILE).is_file() {
        return Err(Failure::env(
            format!(
                "nothing to resume in {}: no .orchestrator/{TODO_FILE}",
                dir.display()
            ),
            "pass the mission's directory with --dir, or start one with `task_cli run \"...\"`",
        ));
    }
    if !unfinished_plan(&dir)? {
        ui.notice(format!(
            "the mission in {} is already finished; nothing to resume (`task_cli status` shows it)",
            dir.display()
        ));
        return Ok(code::SUCCESS);
    }
    let saved = Saved::load(&dir)?;
    let mission = match &saved {
        Some(saved) => saved.mission.clone(),
        None => {
            let store = TodoStore::open(dir.join(".orchestrator"))?;
            store.snapshot()?.1.title
        }
    };
    start(
        ui,
        dir,
        mission,
        &args.backend,
        &args.limits,
        saved.as_ref(),
    )
    .await
}

/// Whether `dir` holds a plan with unfinished items.
fn unfinished_plan(dir: &Path) -> anyhow::Result<bool> {
    let state = dir.join(".orchestrator");
    if !state.join(TODO_FILE).is_file() {
        return Ok(false);
    }
    let store = TodoStore::open(&state).map_err(|e| {
        Failure::env(
            format!("cannot open the plan store: {e}"),
            "run `task_cli doctor --dir DIR`",
        )
    })?;
    let (_, plan) = store.snapshot().map_err(|e| {
        Failure::env(
            format!("cannot read {}: {e}", state.join(TODO_FILE).display()),
            "fix TODO.md at the line named above",
        )
    })?;
    Ok(!plan.items.is_empty() && !plan.is_finished())
}
