//! `task_cli demo`: a real four-agent mission on a real OpenCode server, with the scripted
//! model standing in for the language model.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_agents::{AgentSet, MissionConfig};
use orch_testkit::Script;

use crate::failure::{Failure, code};
use crate::output::Ui;
use crate::runner::{LaunchSpec, ModelChoice, ServerChoice};
use crate::state::{BUILTIN_DEMO, Saved};
use crate::{opencode_env, runner};

/// The built-in demo script (the format is documented in `crates/orch-testkit/README.md`).
pub(crate) const DEMO_SCRIPT: &str = include_str!("demo.toml");

/// The demo's mission.
pub(crate) const DEMO_MISSION: &str =
    "Build a tiny Python calculator (add, sub, mul, div) with unit tests and a README";

/// The demo script, parsed.
pub(crate) fn demo_script() -> anyhow::Result<Script> {
    Script::from_toml_str(DEMO_SCRIPT).map_err(|e| {
        Failure::env(
            format!("the built-in demo script is broken: {e}"),
            "report this bug",
        )
    })
}

/// The demo's limits: two Worker lanes, short turn deadline, Workers that may run the
/// project's tests (and nothing else).
pub(crate) fn demo_config() -> MissionConfig {
    MissionConfig {
        workers: 2,
        reviewers: 2,
        turn_timeout: Duration::from_secs(120),
        worker_commands: vec!["python3 -m unittest*".to_owned()],
        ..MissionConfig::default()
    }
}

/// Makes the demo's new project a git repository with one empty commit on `main`, so that the
/// mission runs on a branch of its own with a commit per item. `false` (and nothing done)
/// when git is missing or `dir` is already inside a repository.
fn init_repository(dir: &Path) -> anyhow::Result<bool> {
    match orch_agents::git::Repo::discover(dir) {
        Err(orch_agents::GitError::NotARepository { .. }) => {}
        _ => return Ok(false),
    }
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("LC_ALL", "C")
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Failure::env(
                format!(
                    "`git {}` failed in the demo project: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                "check your git installation",
            ))
        }
    };
    git(&["init", "-q", "-b", "main"])?;
    // The user's identity when git has one, a stand-in for this one commit otherwise.
    let configured = |key: &str| {
        std::process::Command::new("git")
            .args(["config", key])
            .current_dir(dir)
            .output()
            .is_ok_and(|o| o.status.success() && !o.stdout.trim_ascii().is_empty())
    };
    let mut args = vec![];
    if !configured("user.name") {
        args.extend(["-c", "user.name=task_cli demo"]);
    }
    if !configured("user.email") {
        args.extend(["-c", "user.email=demo@localhost"]);
    }
    args.extend([
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "Start the calculator project",
    ]);
    git(&args)?;
    Ok(true)
}

/// A new directory for the demo project: `dir` (new or empty), else a fresh one under the
/// system's temporary directory (kept).
fn demo_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = dir {
        if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
            return Err(Failure::usage(
                format!(
                    "{} is not empty; the demo builds its project in a new directory",
                    dir.display()
                ),
                "pass a new or empty directory to --dir, or leave --dir out to use a fresh temporary one",
            ));
        }
        std::fs::create_dir_all(dir)?;
        return crate::state::project_dir(Some(dir));
    }
    let dir = tempfile::Builder::new()
        .prefix("task-demo-")
        .tempdir()?
        .keep();
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// Runs the demo.
pub(crate) async fn demo(
    ui: &Ui,
    signals: runner::Signals,
    dir: Option<&Path>,
    generation: Option<orch_opencode::Generation>,
) -> anyhow::Result<u8> {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(Failure::env(
            "python3 was not found",
            "install Python 3: the demo's Reviewer runs the project's real tests with `python3 -m unittest`",
        ));
    }
    let bin = opencode_env::find_or_install(ui, generation)?;
    let dir = demo_dir(dir)?;
    ui.note(format!("demo project: {}", dir.display()));
    let git = init_repository(&dir)?;
    let mut config = demo_config();
    if git {
        ui.note("the project is a new git repository: the mission works on a branch of its own, one commit per item");
        config.git = orch_agents::GitMode::Branch;
    }
    let lock = crate::lifecycle::lock(&dir)?;
    let settings = Saved {
        mission: DEMO_MISSION.to_owned(),
        model_script: Some(BUILTIN_DEMO.to_owned()),
        opencode_generation: generation.map(|g| g.as_str().to_owned()),
        ..Saved::default()
    };
    let exit = runner::run(
        ui,
        signals,
        lock,
        LaunchSpec {
            dir: dir.clone(),
            request: DEMO_MISSION.to_owned(),
            server: ServerChoice::Own(bin),
            model: ModelChoice::Script(demo_script()?),
            config,
            agents: AgentSet::builtin(),
            parent_session: None,
            settings: Some(settings),
        },
    )
    .await?;
    if exit == code::SUCCESS && ui.mode() != crate::output::Mode::Json {
        let d = crate::state::shell_quote(&dir.display().to_string());
        let branch = if git {
            orch_agents::MissionGit::read(&dir)
                .ok()
                .flatten()
                .map(|g| g.branch)
        } else {
            None
        };
        ui.notice(match branch {
            // The mission left the checkout as it was: its work waits on its branch.
            Some(branch) => format!(
                "The demo project is in {d}; its checkout is as the mission found it, the work is on {branch}\n\
                 Review it:   git -C {d} log --stat main..{branch}\n\
                 Merge it:    task_cli merge --dir {d}\n\
                 Then try it: cd {d} && python3 -m unittest -v\n\
                 Inspect the mission: task_cli status --dir {d}"
            ),
            None => format!(
                "The demo project is in {d}
Try it: cd {d} && python3 -m unittest -v
Inspect the mission: task_cli status --dir {d}"
            ),
        });
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_script_parses() {
        assert!(demo_script().is_ok());
    }
}
