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

/// The demo's limits: two Worker lanes, short turn deadline.
pub(crate) fn demo_config() -> MissionConfig {
    MissionConfig {
        workers: 2,
        reviewers: 2,
        turn_timeout: Duration::from_secs(120),
        ..MissionConfig::default()
    }
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
            config: demo_config(),
            agents: AgentSet::builtin(),
            parent_session: None,
            settings: Some(settings),
        },
    )
    .await?;
    if exit == code::SUCCESS && ui.mode() != crate::output::Mode::Json {
        ui.notice(format!(
            "The demo project is in {0}\nTry it: cd {0} && python3 -m unittest -v\nInspect the mission: task_cli status --dir {0}",
            dir.display()
        ));
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
