//! `install` / `uninstall`: the orchestrator's agents in the project's opencode.json(c).

use std::path::Path;

use orch_agents::AgentSet;
use orch_opencode::{ConfigInstaller, Generation, InstallSpec};
use serde_json::json;

use crate::failure::{Failure, code};
use crate::output::{Mode, Ui};
use crate::runner::agents_spec;

fn agents(dir: &Path) -> anyhow::Result<AgentSet> {
    AgentSet::for_project(dir).map_err(|e| {
        Failure::env(
            format!("cannot load the agents: {e}"),
            "fix .orchestrator/agents.json at the line named above (or delete it to use the built-in agents)",
        )
    })
}

fn install_error(e: orch_opencode::InstallError) -> anyhow::Error {
    let fix = match &e {
        orch_opencode::InstallError::Conflict { .. } => {
            "an agent of the same name already exists with other settings; rename yours, or pass --force to replace it"
        }
        orch_opencode::InstallError::Parse { .. } => {
            "fix the file at the line and column named above, then run this again"
        }
        _ => "run `task_cli doctor` for details",
    };
    Failure::env(e.to_string(), fix)
}

/// The generation whose config shape `install` writes: `forced`, else the one of the
/// OpenCode found.
fn generation(forced: Option<Generation>) -> anyhow::Result<(Generation, String)> {
    if let Some(generation) = forced {
        return Ok((generation, "--opencode-generation".to_owned()));
    }
    let bin = crate::opencode_env::find(None).map_err(|e| {
        Failure::env(
            format!("OpenCode was not found, so the config shape to write is unknown: {e}"),
            "pass --opencode-generation v2 (npm @opencode/cli) or v1 (npm opencode-ai), or install OpenCode first",
        )
    })?;
    Ok((
        bin.generation,
        format!("the OpenCode at {}", bin.path.display()),
    ))
}

/// `task_cli install [--dry-run] [--force]`.
pub(crate) fn install(
    ui: &Ui,
    dir: &Path,
    dry_run: bool,
    force: bool,
    forced: Option<Generation>,
    plugin: bool,
) -> anyhow::Result<u8> {
    let (generation, why) = generation(forced)?;
    let exit = install_agents(ui, dir, dry_run, force, generation, &why)?;
    if plugin && exit == code::SUCCESS {
        return crate::plugin::install(ui, dir, generation, dry_run, force);
    }
    Ok(exit)
}

fn install_agents(
    ui: &Ui,
    dir: &Path,
    dry_run: bool,
    force: bool,
    generation: Generation,
    why: &str,
) -> anyhow::Result<u8> {
    let agents = agents(dir)?;
    ui.note(format!(
        "writing the OpenCode {generation} config shape ({why})"
    ));
    let spec = agents_spec(&agents, generation).force(force);
    let installer = ConfigInstaller::new(dir);
    let report = if dry_run {
        installer.dry_run(&spec)
    } else {
        installer.install(&spec)
    }
    .map_err(install_error)?;
    let names: Vec<String> = agents.agents().map(|a| a.name.clone()).collect();
    if ui.mode() == Mode::Json {
        ui.json(&json!({
            "event": "install",
            "generation": generation.as_str(),
            "dry_run": dry_run,
            "path": report.path,
            "changed": report.changed,
            "backup": report.backup,
            "agents": names,
            "diff": report.diff,
        }));
        return Ok(code::SUCCESS);
    }
    if !report.changed {
        println!(
            "{}: the agents ({}) are already installed; nothing to change",
            report.path.display(),
            names.join(", ")
        );
        return Ok(code::SUCCESS);
    }
    print!("{}", report.diff);
    if !report.diff.ends_with('\n') {
        println!();
    }
    if dry_run {
        println!(
            "dry run: {} would change as shown above (nothing was written); run `task_cli install` to apply it",
            report.path.display()
        );
    } else {
        println!(
            "installed {} into {} (OpenCode {generation})",
            names.join(", "),
            report.path.display()
        );
        if let Some(backup) = &report.backup {
            println!("backup of the previous file: {}", backup.display());
        }
    }
    Ok(code::SUCCESS)
}

/// `task_cli uninstall [--dry-run]`: the agents in the shape of `forced`, else in both
/// shapes (each entry removed only when it is exactly what install wrote).
pub(crate) fn uninstall(
    ui: &Ui,
    dir: &Path,
    dry_run: bool,
    forced: Option<Generation>,
    plugin: bool,
) -> anyhow::Result<u8> {
    if plugin {
        crate::plugin::uninstall(ui, dir, dry_run)?;
    }
    uninstall_agents(ui, dir, dry_run, forced)
}

fn uninstall_agents(
    ui: &Ui,
    dir: &Path,
    dry_run: bool,
    forced: Option<Generation>,
) -> anyhow::Result<u8> {
    let agents = agents(dir)?;
    let generations = match forced {
        Some(generation) => vec![generation],
        None => vec![Generation::V1, Generation::V2],
    };
    let spec = InstallSpec {
        entries: generations
            .into_iter()
            .flat_map(|g| agents_spec(&agents, g).entries)
            .collect(),
        ..InstallSpec::default()
    };
    let installer = ConfigInstaller::new(dir);
    if dry_run {
        // The uninstall of a dry run is shown as the diff of the real one on a copy.
        let copy = tempfile::tempdir()?;
        for name in orch_opencode::CONFIG_FILES {
            let from = dir.join(name);
            if from.is_file() {
                std::fs::copy(&from, copy.path().join(name))?;
            }
        }
        let report = ConfigInstaller::new(copy.path())
            .uninstall(&spec)
            .map_err(install_error)?;
        let diff = report.diff.replace(
            &copy.path().display().to_string(),
            &dir.display().to_string(),
        );
        if ui.mode() == Mode::Json {
            ui.json(&json!({"event": "uninstall", "dry_run": true, "changed": report.changed, "diff": diff, "kept": report.kept}));
        } else if report.changed {
            print!("{diff}");
            println!("dry run: nothing was written; run `task_cli uninstall` to apply it");
        } else {
            println!("nothing to uninstall");
        }
        return Ok(code::SUCCESS);
    }
    let report = installer.uninstall(&spec).map_err(install_error)?;
    if ui.mode() == Mode::Json {
        ui.json(&json!({
            "event": "uninstall",
            "dry_run": false,
            "path": report.path,
            "changed": report.changed,
            "backup": report.backup,
            "kept": report.kept,
            "diff": report.diff,
        }));
        return Ok(code::SUCCESS);
    }
    if report.changed {
        print!("{}", report.diff);
        println!(
            "removed the orchestrator's agents from {}",
            report.path.display()
        );
    } else {
        println!("{}: nothing to uninstall", report.path.display());
    }
    for key in &report.kept {
        println!("kept `{key}`: it was changed after install (remove it by hand if you want)");
    }
    Ok(code::SUCCESS)
}
