//! `install --plugin` / `uninstall --plugin`: the `/task` plugin
//! (`integrations/opencode-plugin`, embedded in this binary) in the project's
//! `.opencode/plugins/`, where OpenCode loads it by itself (no config file is edited).
//!
//! * OpenCode 2 loads the folder `.opencode/plugins/orch-task/` as a plugin package
//!   (`index.js` in the server, `tui.js` in the TUI).
//! * OpenCode 1 loads only files directly in `.opencode/plugins/`: a one-line
//!   `orch-task.js` re-exports the folder's `index.js`.
//!
//! `orch-task/orch-task.json` records the engine (`{"task_cli": "<this binary>"}`, which the
//! plugin runs) and the blake3 of every file written, so that a later install replaces only
//! files that are still as written, and `uninstall` removes only those: a file the user
//! changed is kept (or, for install, refused without `--force`, then backed up).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orch_opencode::Generation;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::failure::{Failure, code};
use crate::output::{Mode, Ui};

/// The plugin's folder under the project.
const FOLDER: &str = ".opencode/plugins/orch-task";
/// OpenCode 1's entry, relative to the folder.
const V1_ENTRY: &str = "../orch-task.js";
/// The record of what was installed, in the folder.
const RECORD: &str = "orch-task.json";

macro_rules! plugin_file {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!("../../../integrations/opencode-plugin/", $name)),
        )
    };
}

/// The plugin's files, as this binary was built with them.
const FILES: [(&str, &str); 8] = [
    plugin_file!("index.js"),
    plugin_file!("tui.js"),
    plugin_file!("package.json"),
    plugin_file!("lib/controller.js"),
    plugin_file!("lib/engine.js"),
    plugin_file!("lib/format.js"),
    plugin_file!("lib/rpc.js"),
    plugin_file!("lib/server.js"),
];

/// OpenCode 1's entry file.
const V1_ENTRY_TEXT: &str = "// The /task plugin for OpenCode 1 (written by `task_cli install --plugin`).\n\
export { default } from \"./orch-task/index.js\";\n";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// The engine the plugin runs.
    task_cli: String,
    /// The task_cli version that wrote it.
    #[serde(default)]
    installed_by: String,
    /// Relative to the folder: the blake3 of each file as written.
    #[serde(default)]
    files: BTreeMap<String, String>,
}

fn hash(text: &[u8]) -> String {
    blake3::hash(text).to_hex().to_string()
}

fn folder(dir: &Path) -> PathBuf {
    dir.join(FOLDER)
}

/// `path` relative to the folder, made absolute (`../orch-task.js` → the plugins dir).
fn target(dir: &Path, relative: &str) -> PathBuf {
    match relative.strip_prefix("../") {
        Some(up) => folder(dir)
            .parent()
            .map_or_else(|| folder(dir), Path::to_owned)
            .join(up),
        None => folder(dir).join(relative),
    }
}

/// The record of an earlier install: `Ok(None)` when there is none, an error when a file of
/// that name is there but is not one.
fn read_record(dir: &Path) -> anyhow::Result<Option<Record>> {
    let path = folder(dir).join(RECORD);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Record>(&bytes)
            .map(Some)
            .map_err(|e| {
                Failure::env(
                    format!(
                        "{} is not a record of task_cli's plugin install: {e}",
                        path.display()
                    ),
                    "move it aside if it is yours, or delete it, then run this again",
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What happens to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Create,
    Replace,
    Unchanged,
    /// Replaced although it is not as task_cli wrote it (`--force`; a backup is kept).
    Overwrite,
}

/// The files of one install of `generation`: the plugin's, plus OpenCode 1's entry.
fn wanted(generation: Generation) -> Vec<(&'static str, &'static str)> {
    let mut files = FILES.to_vec();
    if generation == Generation::V1 {
        files.push((V1_ENTRY, V1_ENTRY_TEXT));
    }
    files
}

/// This binary, as the plugin should run it.
fn engine() -> anyhow::Result<String> {
    let exe = std::env::current_exe().map_err(|e| {
        Failure::env(
            format!("cannot tell where this task_cli is: {e}"),
            "run task_cli by its full path",
        )
    })?;
    Ok(std::fs::canonicalize(&exe)
        .unwrap_or(exe)
        .display()
        .to_string())
}

/// Writes `text` to `path` whole or not at all.
fn write_atomic(path: &Path, text: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension(format!("orch-tmp-{}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// `task_cli install --plugin`: the plugin for `generation` (after the agents, which the
/// caller installs). A file that is there and not as task_cli wrote it refuses the install
/// (nothing is written) unless `force`, which backs it up first.
pub(crate) fn install(
    ui: &Ui,
    dir: &Path,
    generation: Generation,
    dry_run: bool,
    force: bool,
) -> anyhow::Result<u8> {
    let record = read_record(dir)?;
    let engine = engine()?;
    let record_stale = record.as_ref().is_none_or(|r| r.task_cli != engine);
    let recorded = record.as_ref().map(|r| &r.files);
    let mut plan = Vec::new();
    let mut foreign = Vec::new();
    for (name, text) in wanted(generation) {
        let path = target(dir, name);
        let change = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Change::Create,
            Err(e) => return Err(e.into()),
            Ok(current) if current == text.as_bytes() => Change::Unchanged,
            Ok(current) => {
                if recorded.and_then(|f| f.get(name)) == Some(&hash(&current)) {
                    Change::Replace
                } else {
                    foreign.push(path.clone());
                    Change::Overwrite
                }
            }
        };
        plan.push((name, text, path, change));
    }
    // The record is ours to rewrite only if it was written by an install.
    let record_path = folder(dir).join(RECORD);
    if record.is_none() && record_path.exists() {
        foreign.push(record_path.clone());
    }
    if !foreign.is_empty() && !force {
        return Err(Failure::env(
            format!(
                "the /task plugin's files are there but not as task_cli wrote them: {}",
                foreign
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "nothing was written; move your changes aside, or pass --force to replace them (a backup of each is kept)",
        ));
    }
    let mut files: BTreeMap<String, String> = record.map(|r| r.files).unwrap_or_default();
    let changed = record_stale || plan.iter().any(|(.., c)| *c != Change::Unchanged);
    let mut backups = Vec::new();
    if !dry_run {
        for (name, text, path, change) in &plan {
            if *change == Change::Overwrite {
                let backup = path.with_extension(format!(
                    "orch-backup-{}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                ));
                std::fs::copy(path, &backup)?;
                backups.push(backup);
            }
            if *change != Change::Unchanged {
                write_atomic(path, text.as_bytes())?;
            }
            files.insert((*name).to_owned(), hash(text.as_bytes()));
        }
        let record = Record {
            task_cli: engine.clone(),
            installed_by: format!("task_cli {}", env!("CARGO_PKG_VERSION")),
            files,
        };
        write_atomic(
            &record_path,
            (serde_json::to_string_pretty(&record)? + "\n").as_bytes(),
        )?;
    }
    let listed: Vec<_> = plan
        .iter()
        .map(|(name, _, path, change)| json!({"file": name, "path": path, "change": change}))
        .collect();
    if ui.mode() == Mode::Json {
        ui.json(&json!({
            "event": "install_plugin",
            "generation": generation.as_str(),
            "dry_run": dry_run,
            "dir": folder(dir),
            "engine": engine,
            "changed": changed,
            "files": listed,
            "backups": backups,
        }));
        return Ok(code::SUCCESS);
    }
    for (_, _, path, change) in &plan {
        let what = match change {
            Change::Create => "new",
            Change::Replace => "updated",
            Change::Unchanged => "unchanged",
            Change::Overwrite => "replaced (yours was backed up)",
        };
        if *change != Change::Unchanged || dry_run {
            println!("  {what:<9} {}", path.display());
        }
    }
    for backup in &backups {
        println!("backup of a file you had changed: {}", backup.display());
    }
    if dry_run {
        println!(
            "dry run: the /task plugin for OpenCode {generation} would be written as listed (nothing was written); run `task_cli install --plugin --dir {}` to apply it",
            dir.display()
        );
    } else if changed {
        println!(
            "installed the /task plugin for OpenCode {generation} into {} (it runs {engine})\n\
             Start OpenCode in {} and type `/task <what to build>` (also /task-status, /task-stop, /task-resume).",
            folder(dir).display(),
            dir.display()
        );
    } else {
        println!(
            "the /task plugin for OpenCode {generation} is already installed in {}; nothing to change",
            folder(dir).display()
        );
    }
    Ok(code::SUCCESS)
}

/// `task_cli uninstall --plugin`: removes every file the install recorded that is still as
/// written; keeps (and names) the ones the user changed.
pub(crate) fn uninstall(ui: &Ui, dir: &Path, dry_run: bool) -> anyhow::Result<u8> {
    let Some(record) = read_record(dir)? else {
        let there = folder(dir).exists();
        let message = if there {
            format!(
                "{} has no record of a task_cli install: nothing of it is removed",
                folder(dir).display()
            )
        } else {
            format!("no /task plugin in {}: nothing to uninstall", dir.display())
        };
        if ui.mode() == Mode::Json {
            ui.json(&json!({"event": "uninstall_plugin", "dry_run": dry_run, "changed": false, "removed": [], "kept": [], "note": message}));
        } else {
            println!("{message}");
        }
        return Ok(code::SUCCESS);
    };
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for (name, recorded) in &record.files {
        let path = target(dir, name);
        match std::fs::read(&path) {
            Ok(current) if hash(&current) == *recorded => removed.push(path),
            Ok(_) => kept.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !dry_run {
        for path in &removed {
            std::fs::remove_file(path)?;
        }
        if kept.is_empty() {
            std::fs::remove_file(folder(dir).join(RECORD))?;
        }
        // Directories the install made, when nothing else is in them.
        for sub in ["lib", ""] {
            let d = folder(dir).join(sub);
            if d.is_dir() && std::fs::read_dir(&d)?.next().is_none() {
                std::fs::remove_dir(&d)?;
            }
        }
    }
    if ui.mode() == Mode::Json {
        ui.json(&json!({"event": "uninstall_plugin", "dry_run": dry_run, "changed": !removed.is_empty(), "removed": removed, "kept": kept}));
        return Ok(code::SUCCESS);
    }
    for path in &removed {
        println!(
            "  {} {}",
            if dry_run { "would remove" } else { "removed" },
            path.display()
        );
    }
    for path in &kept {
        println!(
            "kept {}: it was changed after install (remove it by hand if you want)",
            path.display()
        );
    }
    if dry_run {
        println!("dry run: nothing was removed; run `task_cli uninstall --plugin` to apply it");
    } else {
        println!(
            "removed the /task plugin from {}",
            folder(dir)
                .parent()
                .map_or_else(|| folder(dir), Path::to_owned)
                .display()
        );
    }
    Ok(code::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the plugin package (what its package.json ships) is embedded.
    #[test]
    fn every_file_of_the_plugin_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../integrations/opencode-plugin");
        let mut on_disk = vec![
            "index.js".to_owned(),
            "tui.js".to_owned(),
            "package.json".to_owned(),
        ];
        for entry in std::fs::read_dir(root.join("lib")).expect("lib/") {
            let name = entry.expect("entry").file_name();
            on_disk.push(format!("lib/{}", name.to_string_lossy()));
        }
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
        for (name, text) in FILES {
            assert_eq!(
                std::fs::read_to_string(root.join(name)).expect("file"),
                text,
                "{name}"
            );
        }
    }

    #[test]
    fn the_v1_entry_sits_beside_the_folder() {
        let dir = Path::new("/p");
        assert_eq!(
            target(dir, V1_ENTRY),
            Path::new("/p/.opencode/plugins/orch-task.js")
        );
        assert_eq!(
            target(dir, "lib/rpc.js"),
            Path::new("/p/.opencode/plugins/orch-task/lib/rpc.js")
        );
    }
}
