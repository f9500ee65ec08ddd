//! Finding OpenCode, installing the pinned version, and connecting to a server.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use orch_opencode::{Client, OpencodeServer};

use crate::failure::Failure;
use crate::output::Ui;

/// The OpenCode version `demo` installs when none is found.
pub(crate) const OPENCODE_VERSION: &str = orch_opencode::Generation::V1.pinned_version();

/// The project's installer, embedded so `demo` works outside the repository too.
const INSTALL_SCRIPT: &str = include_str!("../../../scripts/install-opencode.sh");

/// What to do when OpenCode is missing.
pub(crate) const INSTALL_HINT: &str = "run `task_cli demo` (it installs the pinned OpenCode), or \
     `scripts/install-opencode.sh` from the repository, or set OPENCODE_BIN to an opencode binary";

/// The binary inside an install directory made by the installer.
fn installed_bin(dir: &Path) -> PathBuf {
    dir.join("node_modules/.bin/opencode")
}

/// `$XDG_CACHE_HOME/rust-opencode-orchestrator/opencode` (or under `~/.cache`).
fn cache_install_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rust-opencode-orchestrator").join("opencode"))
}

/// The repository root, when run from inside it (or built from it).
fn repo_root() -> Option<PathBuf> {
    let is_root = |dir: &Path| {
        dir.join("scripts/install-opencode.sh").is_file() && dir.join("Cargo.toml").is_file()
    };
    if let Ok(cwd) = std::env::current_dir()
        && let Some(dir) = cwd.ancestors().find(|d| is_root(d))
    {
        return Some(dir.to_owned());
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .find(|d| is_root(d))
        .map(Path::to_owned)
}

/// Where `demo` installs OpenCode: the repository's `.tools/opencode`, else a user cache dir.
pub(crate) fn install_dir() -> Option<PathBuf> {
    repo_root()
        .map(|root| root.join(".tools/opencode"))
        .or_else(cache_install_dir)
}

/// Finds OpenCode: `OPENCODE_BIN`, the project-local install, `PATH`, then the user cache
/// install made by `demo` outside a repository.
pub(crate) fn find() -> Result<PathBuf, String> {
    match orch_opencode::find_opencode(None) {
        Ok(bin) => Ok(bin.path),
        Err(e) => cache_install_dir()
            .map(|dir| installed_bin(&dir))
            .filter(|bin| bin.is_file())
            .ok_or_else(|| e.to_string()),
    }
}

/// [`find`], or an environment failure saying how to install it.
pub(crate) fn require() -> anyhow::Result<PathBuf> {
    find().map_err(|e| Failure::env(format!("OpenCode was not found: {e}"), INSTALL_HINT))
}

/// [`find`], installing the pinned OpenCode through the project's installer when missing.
pub(crate) fn find_or_install(ui: &Ui) -> anyhow::Result<PathBuf> {
    if let Ok(bin) = find() {
        return Ok(bin);
    }
    let dir = install_dir().ok_or_else(|| {
        Failure::env(
            "OpenCode is missing and there is no place to install it (no repository, no HOME)",
            "set HOME or XDG_CACHE_HOME, or set OPENCODE_BIN to an opencode binary",
        )
    })?;
    let step = ui.step(&format!(
        "installing OpenCode {OPENCODE_VERSION} into {}",
        dir.display()
    ));
    let bin = run_installer(&dir)?;
    step.done(bin.display().to_string());
    Ok(bin)
}

/// Runs the embedded installer into `dir`; returns the binary it printed last.
fn run_installer(dir: &Path) -> anyhow::Result<PathBuf> {
    let script = tempfile::Builder::new()
        .prefix("install-opencode-")
        .suffix(".sh")
        .tempfile()?;
    std::fs::write(script.path(), INSTALL_SCRIPT)?;
    let output = Command::new("bash")
        .arg(script.path())
        .env("OPENCODE_INSTALL_DIR", dir)
        .env("OPENCODE_VERSION", OPENCODE_VERSION)
        .output()
        .map_err(|e| {
            Failure::env(
                format!("cannot run bash to install OpenCode: {e}"),
                "install bash, or install OpenCode yourself and set OPENCODE_BIN",
            )
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Failure::env(
            format!(
                "installing OpenCode {OPENCODE_VERSION} failed ({}):\n{}",
                output.status,
                tail.join("\n")
            ),
            "install Node.js and npm (the installer uses `npm install opencode-ai`), check the network, then run the demo again; or set OPENCODE_BIN",
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bin = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| installed_bin(dir));
    if !bin.is_file() {
        return Err(Failure::env(
            format!(
                "the installer finished but {} does not exist",
                bin.display()
            ),
            "run scripts/install-opencode.sh by hand and look at its output",
        ));
    }
    Ok(bin)
}

/// `opencode --version`.
pub(crate) fn version(bin: &Path) -> Result<String, String> {
    let output = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --version exited with {}",
            bin.display(),
            output.status
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Starts `opencode serve` for `dir` on 127.0.0.1 with a random password.
pub(crate) async fn start_server(
    bin: &Path,
    dir: &Path,
    home: Option<&Path>,
) -> anyhow::Result<OpencodeServer> {
    let mut builder = OpencodeServer::builder()
        .binary(bin)
        .project_dir(dir)
        .ready_timeout(Duration::from_secs(60));
    if let Some(home) = home {
        builder = builder.isolated_home(home);
    }
    builder.start_async().await.map_err(|e| {
        Failure::env(
            format!("cannot start the OpenCode server ({}): {e}", bin.display()),
            "run `task_cli doctor`; check that the binary runs (`opencode --version`) and that its config parses",
        )
    })
}

/// A client for a server the user runs (`--server URL`), with `OPENCODE_SERVER_PASSWORD`.
pub(crate) async fn connect_remote(url: &str) -> anyhow::Result<(Client, String)> {
    let client = Client::builder(url)
        .credentials_from_env()
        .build()
        .map_err(|e| {
            Failure::usage(
                format!("bad server URL {url}: {e}"),
                "pass e.g. --server http://127.0.0.1:4096",
            )
        })?;
    let health = tokio::time::timeout(Duration::from_secs(10), client.health())
        .await
        .map_err(|_| Failure::env(format!("the OpenCode server at {url} did not answer within 10 s"), "check that `opencode serve` runs there"))?
        .map_err(|e| {
            Failure::env(
                format!("the OpenCode server at {url} is unreachable or refused us: {e}"),
                "check the URL and that `opencode serve` runs; if it needs a password, set OPENCODE_SERVER_PASSWORD (and OPENCODE_SERVER_USERNAME)",
            )
        })?;
    Ok((client, health.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded installer, on the install the tests use: its idempotent path prints the
    /// binary last, which is what `demo` reads.
    #[test]
    fn embedded_installer_reports_the_installed_binary() {
        let Some(root) = repo_root() else { return };
        let dir = root.join(".tools/opencode");
        let stamp = std::fs::read_to_string(dir.join(".installed-version")).unwrap_or_default();
        if !installed_bin(&dir).is_file() || stamp.trim() != OPENCODE_VERSION {
            return; // would download: not a unit test's business
        }
        let bin = run_installer(&dir).expect("the installer runs");
        assert_eq!(bin, installed_bin(&dir));
        assert_eq!(version(&bin).as_deref(), Ok(OPENCODE_VERSION));
    }
}
