//! Finding OpenCode of either generation, installing the pinned one, and reaching a server:
//! one this command starts, one the user runs (`--server`), or OpenCode 2's per-user
//! background service.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use orch_opencode::{Generation, OpencodeBinary, OpencodeServer};

use crate::failure::Failure;
use crate::output::Ui;

/// The generation `demo` installs when no OpenCode is found: the one new users install.
pub(crate) const DEFAULT_GENERATION: Generation = Generation::V2;

/// The project's installer, embedded so `demo` works outside the repository too.
const INSTALL_SCRIPT: &str = include_str!("../../../scripts/install-opencode.sh");

/// What to do when OpenCode is missing.
pub(crate) const INSTALL_HINT: &str = "run `task_cli demo` (it installs the pinned OpenCode), or \
     `scripts/install-opencode.sh` from the repository, or set OPENCODE_BIN to an opencode binary \
     (OpenCode 1 `opencode-ai` or OpenCode 2 `@opencode/cli`)";

/// The binary inside an install directory made by the installer.
fn installed_bin(dir: &Path) -> PathBuf {
    orch_opencode::installed_binary(dir)
}

/// The install folder's name of a generation (as the installer names it).
fn folder(generation: Generation) -> &'static str {
    match generation {
        Generation::V1 => "opencode",
        Generation::V2 => "opencode2",
    }
}

/// `$XDG_CACHE_HOME/rust-opencode-orchestrator/opencode[2]` (or under `~/.cache`).
fn cache_install_dir(generation: Generation) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        base.join("rust-opencode-orchestrator")
            .join(folder(generation)),
    )
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

/// Where `demo` installs OpenCode of `generation`: the repository's `.tools/opencode[2]`,
/// else a user cache dir.
pub(crate) fn install_dir(generation: Generation) -> Option<PathBuf> {
    repo_root()
        .map(|root| root.join(".tools").join(folder(generation)))
        .or_else(|| cache_install_dir(generation))
}

/// Finds OpenCode of `wanted` generation (or either, OpenCode 2 first): `OPENCODE_BIN` (its
/// generation read from `--version`; an error when it is not the wanted one), the
/// project-local installs, `PATH`, then the user cache installs made by `demo` outside a
/// repository.
pub(crate) fn find(wanted: Option<Generation>) -> Result<OpencodeBinary, String> {
    match orch_opencode::find_opencode(wanted) {
        Ok(bin) => Ok(bin),
        Err(e @ orch_opencode::FindError::Missing { .. }) => {
            let generations = match wanted {
                Some(g) => vec![g],
                None => vec![Generation::V2, Generation::V1],
            };
            generations
                .into_iter()
                .filter_map(cache_install_dir)
                .map(|dir| installed_bin(&dir))
                .filter(|bin| bin.is_file())
                .find_map(|bin| OpencodeBinary::probe(bin).ok())
                .filter(|bin| wanted.is_none_or(|g| g == bin.generation))
                .ok_or_else(|| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// [`find`], or an environment failure saying how to install it.
pub(crate) fn require(wanted: Option<Generation>) -> anyhow::Result<OpencodeBinary> {
    find(wanted).map_err(|e| Failure::env(format!("OpenCode was not found: {e}"), INSTALL_HINT))
}

/// [`find`], installing the pinned OpenCode of `wanted` (else [`DEFAULT_GENERATION`])
/// through the project's installer when none is found.
pub(crate) fn find_or_install(
    ui: &Ui,
    wanted: Option<Generation>,
) -> anyhow::Result<OpencodeBinary> {
    match find(wanted) {
        Ok(bin) => return Ok(bin),
        // An OPENCODE_BIN that is broken or of the other generation is the user's to fix.
        Err(e) if std::env::var_os("OPENCODE_BIN").is_some_and(|v| !v.is_empty()) => {
            return Err(Failure::env(
                format!("OpenCode was not found: {e}"),
                "unset OPENCODE_BIN (the demo then installs the pinned OpenCode), or point it at a working opencode binary",
            ));
        }
        Err(_) => {}
    }
    let generation = wanted.unwrap_or(DEFAULT_GENERATION);
    let dir = install_dir(generation).ok_or_else(|| {
        Failure::env(
            "OpenCode is missing and there is no place to install it (no repository, no HOME)",
            "set HOME or XDG_CACHE_HOME, or set OPENCODE_BIN to an opencode binary",
        )
    })?;
    let step = ui.step(&format!(
        "installing OpenCode {} ({} {}) into {}",
        generation,
        generation.npm_package(),
        generation.pinned_version(),
        dir.display()
    ));
    let bin = run_installer(&dir, generation)?;
    let bin = OpencodeBinary::probe(&bin).map_err(|e| {
        Failure::env(
            format!("the installed OpenCode does not run: {e}"),
            "run scripts/install-opencode.sh by hand and look at its output",
        )
    })?;
    step.done(bin.path.display().to_string());
    Ok(bin)
}

/// Runs the embedded installer for `generation` into `dir`; returns the binary it printed
/// last (its output lines are `v1 <path>` or `v2 <path>`).
fn run_installer(dir: &Path, generation: Generation) -> anyhow::Result<PathBuf> {
    let version = generation.pinned_version();
    let script = tempfile::Builder::new()
        .prefix("install-opencode-")
        .suffix(".sh")
        .tempfile()?;
    std::fs::write(script.path(), INSTALL_SCRIPT)?;
    let output = Command::new("bash")
        .arg(script.path())
        .env("OPENCODE_INSTALL_DIR", dir)
        .env("OPENCODE_GENERATION", generation.as_str())
        .env("OPENCODE_VERSION", version)
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
                "installing OpenCode {version} failed ({}):\n{}",
                output.status,
                tail.join("\n")
            ),
            format!(
                "install Node.js and npm (the installer runs `npm install {}`), check the network, then run the demo again; or set OPENCODE_BIN",
                generation.npm_package()
            ),
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let bin = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            let l = l.trim();
            let path = l
                .strip_prefix("v1 ")
                .or_else(|| l.strip_prefix("v2 "))
                .unwrap_or(l);
            PathBuf::from(path)
        })
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

/// Starts `opencode serve` of `bin` for `dir` on 127.0.0.1 with a random password.
pub(crate) async fn start_server(
    bin: &OpencodeBinary,
    dir: &Path,
    home: Option<&Path>,
) -> anyhow::Result<OpencodeServer> {
    match start_server_until(bin, dir, home, std::future::pending()).await? {
        Some(server) => Ok(server),
        None => unreachable!("a start that is never cancelled ends with a server or an error"),
    }
}

/// [`start_server`] that gives up when `cancel` completes first: `None`, once the process
/// is gone (so its home and directory are no longer written to).
pub(crate) async fn start_server_until(
    bin: &OpencodeBinary,
    dir: &Path,
    home: Option<&Path>,
    cancel: impl Future<Output = ()>,
) -> anyhow::Result<Option<OpencodeServer>> {
    let mut builder = OpencodeServer::builder()
        .binary(&bin.path)
        .generation(bin.generation)
        .project_dir(dir)
        .ready_timeout(Duration::from_secs(60));
    if let Some(home) = home {
        // Always the scripted model's temporary home: gone with an orphaned server too.
        builder = builder.isolated_home(home).remove_home_if_orphaned(true);
    }
    builder.start_until(cancel).await.map_err(|e| {
        let text = e.to_string();
        let fix = if bin.generation == Generation::V1
            && text.contains("Database is not empty and has no session table")
        {
            // Checked with 1.18.33 and 2.1.2: OpenCode 1 cannot open a database that
            // OpenCode 2 created (one OpenCode 1 created serves both).
            "OpenCode 2 owns this user's OpenCode data directory ($XDG_DATA_HOME/opencode, by default ~/.local/share/opencode) and OpenCode 1 cannot read it: use OpenCode 2 (`--opencode-generation v2`, or point OPENCODE_BIN at it), or run OpenCode 1 with its own XDG_DATA_HOME"
        } else {
            "run `task_cli doctor`; check that the binary runs (`opencode --version`) and that its config parses"
        };
        Failure::env(
            format!(
                "cannot start the OpenCode server ({}, OpenCode {}): {text}",
                bin.path.display(),
                bin.generation
            ),
            fix,
        )
    })
}

/// A server this command does not own: its URL, credentials and generation.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) url: String,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) generation: Generation,
    pub(crate) version: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "…")),
            )
            .field("generation", &self.generation)
            .field("version", &self.version)
            .finish()
    }
}

impl Endpoint {
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }
}

/// `OPENCODE_SERVER_USERNAME` (default `opencode`) and `OPENCODE_SERVER_PASSWORD`, the
/// variables `opencode serve` itself reads, when a password is set.
pub(crate) fn env_credentials() -> Option<(String, String)> {
    let password = std::env::var("OPENCODE_SERVER_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())?;
    let user = std::env::var("OPENCODE_SERVER_USERNAME")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "opencode".to_owned());
    Some((user, password))
}

/// A server the user runs (`--server URL`), with the credentials of [`env_credentials`]:
/// its generation detected from what it serves (or `forced`), checked to answer.
pub(crate) async fn connect_remote(
    url: &str,
    forced: Option<Generation>,
) -> anyhow::Result<Endpoint> {
    let credentials = env_credentials();
    let creds = credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
    let bad_url = |e: &dyn std::fmt::Display| {
        Failure::usage(
            format!("bad server URL {url}: {e}"),
            "pass e.g. --server http://127.0.0.1:4096",
        )
    };
    let unreachable = |e: &dyn std::fmt::Display| {
        Failure::env(
            format!("the OpenCode server at {url} is unreachable or refused us: {e}"),
            "check the URL and that `opencode serve` runs there; if it needs a password, set OPENCODE_SERVER_PASSWORD (and OPENCODE_SERVER_USERNAME)",
        )
    };
    let timed_out = || {
        Failure::env(
            format!("the OpenCode server at {url} did not answer within 10 s"),
            "check that `opencode serve` runs there",
        )
    };
    let within = Duration::from_secs(10);
    let (generation, version) = match forced {
        None => {
            let detected = tokio::time::timeout(within, Generation::of_server(url, creds))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| match e {
                    orch_opencode::Error::InvalidUrl { .. } => bad_url(&e),
                    _ => unreachable(&e),
                })?;
            (detected.generation, detected.version)
        }
        Some(Generation::V1) => {
            let mut builder = orch_opencode::Client::builder(url);
            if let Some((u, p)) = creds {
                builder = builder.basic_auth(u, p);
            }
            let client = builder.build().map_err(|e| bad_url(&e))?;
            let health = tokio::time::timeout(within, client.health())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| unreachable(&e))?;
            (Generation::V1, health.version)
        }
        Some(Generation::V2) => {
            let mut builder = orch_opencode::v2::Client::builder(url);
            if let Some((u, p)) = creds {
                builder = builder.basic_auth(u, p);
            }
            let client = builder.build().map_err(|e| bad_url(&e))?;
            let info = tokio::time::timeout(within, client.info())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| unreachable(&e))?;
            (Generation::V2, info.version)
        }
    };
    Ok(Endpoint {
        url: url.trim_end_matches('/').to_owned(),
        credentials,
        generation,
        version,
    })
}

/// OpenCode 2's per-user background service (the one its TUI talks to), when it runs:
/// `Ok(None)` when it does not (no `service.json`), an error when its file is there but
/// the service does not answer as the file says.
pub(crate) async fn attach_service() -> Result<Option<Endpoint>, orch_opencode::v2::ServiceError> {
    let path = match orch_opencode::v2::ServiceFile::default_path() {
        Ok(path) => path,
        Err(orch_opencode::v2::ServiceError::NoStateDir) => return Ok(None),
        Err(e) => return Err(e),
    };
    match orch_opencode::v2::attach_service(Some(&path)).await {
        Ok((_, file, info)) => Ok(Some(Endpoint {
            url: file.url.trim_end_matches('/').to_owned(),
            credentials: file.password.clone().map(|p| ("opencode".to_owned(), p)),
            generation: Generation::V2,
            version: info.version,
        })),
        Err(orch_opencode::v2::ServiceError::NotRunning { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded installer, on the install the tests use: its idempotent path prints the
    /// binary last, which is what `demo` reads.
    #[test]
    fn embedded_installer_reports_the_installed_binary() {
        let Some(root) = repo_root() else { return };
        for generation in [Generation::V1, Generation::V2] {
            let dir = root.join(generation.install_dir());
            let stamp = std::fs::read_to_string(dir.join(".installed-version")).unwrap_or_default();
            if !installed_bin(&dir).is_file() || stamp.trim() != generation.pinned_version() {
                continue; // would download: not a unit test's business
            }
            let bin = run_installer(&dir, generation).expect("the installer runs");
            assert_eq!(bin, installed_bin(&dir));
            let probed = OpencodeBinary::probe(&bin).expect("it runs");
            assert_eq!(probed.generation, generation);
            assert_eq!(probed.version, generation.pinned_version());
        }
    }
}
