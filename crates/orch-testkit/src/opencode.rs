//! Helpers for tests that run a real `opencode serve` (either generation) against the
//! scripted model.
//!
//! - [`TestServer`]: an isolated server whose only model is the scripted one, stopped (its
//!   whole process group) on drop.
//! - [`require_opencode`] / [`require_binary`]: the one way tests find OpenCode (through
//!   [`orch_opencode::find_opencode`]; `OPENCODE_BIN` picks the generation under test);
//!   [`find_generation`] / [`require_generation`] for a test of one generation.
//! - [`fake_provider_config`] / [`fake_provider_config_for`]: an `opencode.json` whose only
//!   model is the scripted one.
//! - [`TestProject`]: a temporary project directory with that config.
//! - [`IsolatedHome`]: a temporary `HOME` and XDG directories, so a test server shares no state
//!   with the user's OpenCode.
//! - [`process_tree_cpu`]: CPU time of a server process and its children, to tell where a
//!   benchmark's time goes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use orch_opencode::{FindError, Generation, OpencodeBinary, find_opencode, installed_binary};
use serde_json::{Value, json};

mod server;

pub use crate::error::TestServerError;
pub use server::{TestServer, TestServerBuilder};

/// The command that installs the pinned OpenCode into the project.
pub const INSTALL_COMMAND: &str = "scripts/install-opencode.sh";

/// The provider id of the scripted model in [`fake_provider_config`].
pub const PROVIDER_ID: &str = "fake";

/// The model id of the scripted model in [`fake_provider_config`].
pub const MODEL_ID: &str = "fake-model";

/// The OpenCode the tests use: [`orch_opencode::find_opencode`] (an explicit `OPENCODE_BIN`
/// wins, its generation read from `--version`). Panics with the install instructions when
/// OpenCode is missing: a test that needs OpenCode fails rather than skips, with or without
/// `CI` set.
///
/// # Panics
/// When OpenCode cannot be found.
pub fn require_opencode() -> OpencodeBinary {
    match find_opencode(None) {
        Ok(bin) => bin,
        Err(e) => panic!(
            "{e}{}",
            if std::env::var_os("CI").is_some() {
                " (CI is set: tests that need OpenCode fail, never skip)"
            } else {
                ""
            }
        ),
    }
}

/// OpenCode of one generation, for tests that run each generation whatever `OPENCODE_BIN`
/// says:
///
/// 1. `OPENCODE_BIN_V1` / `OPENCODE_BIN_V2`, when set (an explicit path for that
///    generation; an error if it is the other one);
/// 2. [`find_opencode`]`(Some(generation))` (`OPENCODE_BIN` when it is of that generation, the
///    installer's `.tools/…` directories, `PATH`);
/// 3. when `OPENCODE_BIN` names the other generation, the installer's directory of this one
///    (`.tools/opencode` or `.tools/opencode2` of the repository).
///
/// # Errors
/// [`FindError`], naming where it looked and the install command.
pub fn find_generation(generation: Generation) -> Result<OpencodeBinary, FindError> {
    let variable = match generation {
        Generation::V1 => "OPENCODE_BIN_V1",
        Generation::V2 => "OPENCODE_BIN_V2",
    };
    if let Some(path) = std::env::var_os(variable).filter(|v| !v.is_empty()) {
        let found = OpencodeBinary::probe(path)?;
        return if found.generation == generation {
            Ok(found)
        } else {
            Err(FindError::WrongGeneration {
                path: found.path,
                found: found.generation,
                wanted: generation,
            })
        };
    }
    match find_opencode(Some(generation)) {
        Err(FindError::WrongGeneration { .. }) => {
            // OPENCODE_BIN picks the other generation for the rest of the tests.
            let repository = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors();
            let mut looked_at = Vec::new();
            for dir in repository {
                let candidate = installed_binary(&dir.join(generation.install_dir()));
                if candidate.is_file()
                    && let Ok(found) = OpencodeBinary::probe(&candidate)
                    && found.generation == generation
                {
                    return Ok(found);
                }
                looked_at.push(candidate);
            }
            Err(FindError::Missing {
                wanted: Some(generation),
                looked_at,
            })
        }
        other => other,
    }
}

/// [`find_generation`], panicking with the install instructions: a test that needs OpenCode
/// fails rather than skips.
///
/// # Panics
/// When no OpenCode of `generation` can be found.
pub fn require_generation(generation: Generation) -> OpencodeBinary {
    find_generation(generation).unwrap_or_else(|e| {
        panic!(
            "{e} (or set OPENCODE_BIN_{})",
            generation.as_str().to_uppercase()
        )
    })
}

/// The path of [`require_opencode`].
///
/// # Panics
/// When OpenCode cannot be found.
pub fn require_binary() -> PathBuf {
    require_opencode().path
}

/// An `opencode.json` whose provider `fake` serves the model `fake-model` from `base_url`
/// (the scripted model's [`crate::ScriptedModel::base_url`]), as the default and small model,
/// with sharing and auto-update off. Works with no network.
pub fn fake_provider_config(base_url: &str) -> Value {
    json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted model",
                "options": { "baseURL": base_url, "apiKey": "scripted" },
                "models": { MODEL_ID: { "name": "Scripted model", "tool_call": true } }
            }
        },
        "model": format!("{PROVIDER_ID}/{MODEL_ID}"),
        "small_model": format!("{PROVIDER_ID}/{MODEL_ID}"),
        "share": "disabled",
        "autoupdate": false
    })
}

/// [`fake_provider_config`] for `generation`, with OpenCode's snapshots off (`snapshot:
/// false` for OpenCode 1, `snapshots: false` for OpenCode 2). OpenCode 2 reads the
/// V1-shaped provider block (`provider`, `npm`, `options`) and normalises it (checked with
/// 2.1.2), so one provider block serves both.
pub fn fake_provider_config_for(base_url: &str, generation: Generation) -> Value {
    let mut config = fake_provider_config(base_url);
    let key = match generation {
        Generation::V1 => "snapshot",
        Generation::V2 => "snapshots",
    };
    config[key] = json!(false);
    config
}

/// Merges `patch` into `base`: objects key by key (recursively), anything else replaced.
pub fn merge_json(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge_json(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// A temporary project directory with an `opencode.json`; removed on drop.
#[derive(Debug)]
pub struct TestProject {
    dir: tempfile::TempDir,
}

impl TestProject {
    /// A project using the scripted model at `base_url` ([`fake_provider_config`]).
    ///
    /// # Errors
    /// When the directory or the config cannot be written.
    pub fn new(base_url: &str) -> std::io::Result<Self> {
        Self::with_config(fake_provider_config(base_url))
    }

    /// A project with this `opencode.json`.
    ///
    /// # Errors
    /// When the directory or the config cannot be written.
    pub fn with_config(config: Value) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("orch-project-").tempdir()?;
        let project = TestProject { dir };
        project.write_config(&config)?;
        Ok(project)
    }

    /// The project directory (absolute).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Replaces `opencode.json`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_config(&self, config: &Value) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(config).map_err(std::io::Error::other)?;
        std::fs::write(self.path().join("opencode.json"), text + "\n")
    }

    /// Reads a file of the project, relative to its root.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn read(&self, relative: impl AsRef<Path>) -> std::io::Result<String> {
        std::fs::read_to_string(self.path().join(relative))
    }
}

/// A temporary `HOME` with its own XDG directories; removed on drop.
///
/// OpenCode keeps its database, snapshots, logs and config under these, so a server started
/// with [`IsolatedHome::env`] shares nothing with the user's own OpenCode or with other tests.
#[derive(Debug)]
pub struct IsolatedHome {
    dir: tempfile::TempDir,
}

impl IsolatedHome {
    /// Creates the directories.
    ///
    /// # Errors
    /// When they cannot be created.
    pub fn new() -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("orch-home-").tempdir()?;
        for sub in [".config", ".local/share", ".cache", ".local/state"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        Ok(IsolatedHome { dir })
    }

    /// The home directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment variables to set on the OpenCode process.
    pub fn env(&self) -> Vec<(&'static str, OsString)> {
        let home = self.path();
        vec![
            ("HOME", home.as_os_str().to_owned()),
            ("XDG_CONFIG_HOME", home.join(".config").into_os_string()),
            ("XDG_DATA_HOME", home.join(".local/share").into_os_string()),
            ("XDG_CACHE_HOME", home.join(".cache").into_os_string()),
            ("XDG_STATE_HOME", home.join(".local/state").into_os_string()),
        ]
    }
}

/// User + system CPU time used so far by process `root` and all its descendants (OpenCode's
/// launcher runs the server as a child process), from `/proc/PID/stat`. Linux only: `None`
/// elsewhere or when `root` is gone. Take two readings around an operation and subtract.
/// Clock ticks are assumed to be 10 ms (`CLK_TCK` 100, the Linux default).
pub fn process_tree_cpu(root: u32) -> Option<std::time::Duration> {
    // (pid, parent, utime + stime) of every process.
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name (field 2) may hold spaces: count the fields after its `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
        if let (Some(parent), Some(user), Some(system)) = (num(1), num(11), num(12)) {
            procs.push((pid, parent as u32, user + system));
        }
    }
    if !procs.iter().any(|p| p.0 == root) {
        return None;
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
        i += 1;
    }
    let ticks: u64 = procs
        .iter()
        .filter(|p| tree.contains(&p.0))
        .map(|p| p.2)
        .sum();
    Some(std::time::Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orch_opencode::Generation;

    #[test]
    fn merge_is_recursive_for_objects_and_replaces_the_rest() {
        let mut base = json!({"a": {"b": 1, "c": [1]}, "d": 1});
        merge_json(
            &mut base,
            json!({"a": {"c": [2], "e": true}, "d": {"x": 1}}),
        );
        assert_eq!(
            base,
            json!({"a": {"b": 1, "c": [2], "e": true}, "d": {"x": 1}})
        );
    }

    #[test]
    fn provider_config_points_at_the_base_url() {
        let config = fake_provider_config("http://127.0.0.1:9/v1");
        assert_eq!(
            config["provider"]["fake"]["options"]["baseURL"],
            "http://127.0.0.1:9/v1"
        );
        assert_eq!(config["model"], "fake/fake-model");
        assert_eq!(config["small_model"], "fake/fake-model");
    }

    #[test]
    fn project_and_home_are_real_directories() {
        let project = TestProject::new("http://127.0.0.1:9/v1").unwrap();
        let written: Value = serde_json::from_str(&project.read("opencode.json").unwrap()).unwrap();
        assert_eq!(written["model"], "fake/fake-model");
        let home = IsolatedHome::new().unwrap();
        for (_, dir) in home.env() {
            assert!(Path::new(&dir).is_dir(), "{dir:?}");
        }
    }

    #[test]
    fn not_found_message_names_the_install_command() {
        let e = orch_opencode::FindError::Missing {
            wanted: Some(Generation::V2),
            looked_at: vec![PathBuf::from(
                "/x/.tools/opencode2/node_modules/.bin/opencode",
            )],
        };
        let text = e.to_string();
        assert!(text.contains(INSTALL_COMMAND), "{text}");
        assert!(
            text.contains("/x/.tools") && text.contains("@opencode/cli 2.1.2"),
            "{text}"
        );
    }

    #[test]
    fn process_tree_cpu_counts_a_busy_child_and_nothing_for_a_missing_process() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("sh");
        std::thread::sleep(std::time::Duration::from_millis(400));
        let busy = process_tree_cpu(child.id());
        let ours = process_tree_cpu(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        let busy = busy.expect("the child is running");
        assert!(busy >= std::time::Duration::from_millis(100), "{busy:?}");
        // Our tree includes the child.
        assert!(ours.expect("this process") >= busy);
        assert_eq!(process_tree_cpu(u32::MAX), None);
    }
}
