//! [`TestServer`]: an isolated `opencode serve` of either generation whose only model is the
//! scripted one.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use orch_opencode::{Generation, OpencodeBinary, OpencodeServer, find_opencode};
use serde_json::{Value, json};

use super::{IsolatedHome, fake_provider_config_for, find_generation, merge_json};
use crate::error::TestServerError;

/// Configures a [`TestServer`]; [`TestServerBuilder::start`] starts it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start`"]
pub struct TestServerBuilder {
    model_url: String,
    binary: Option<OpencodeBinary>,
    generation: Option<Generation>,
    project_dir: Option<PathBuf>,
    agents: Option<Value>,
    patches: Vec<Value>,
    envs: Vec<(OsString, OsString)>,
    ready_timeout: Duration,
}

impl TestServerBuilder {
    /// A server whose only model is the scripted model at `model_url`
    /// ([`crate::ScriptedModel::base_url`]); the OpenCode of [`find_opencode`] (an explicit
    /// `OPENCODE_BIN` wins), a temporary project directory, a 60 s start timeout.
    pub fn new(model_url: impl Into<String>) -> Self {
        TestServerBuilder {
            model_url: model_url.into(),
            binary: None,
            generation: None,
            project_dir: None,
            agents: None,
            patches: Vec::new(),
            envs: Vec::new(),
            ready_timeout: Duration::from_secs(60),
        }
    }

    /// Runs this binary (it wins over [`TestServerBuilder::generation`]).
    pub fn binary(mut self, binary: OpencodeBinary) -> Self {
        self.binary = Some(binary);
        self
    }

    /// Runs an OpenCode of this generation, found with [`find_generation`].
    pub fn generation(mut self, generation: Generation) -> Self {
        self.generation = Some(generation);
        self
    }

    /// Serves this directory as the default project (the server's working directory);
    /// otherwise a temporary directory, removed with the server.
    pub fn project_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.project_dir = Some(dir.into());
        self
    }

    /// Defines these agents (a JSON object, name → definition) under the generation's key:
    /// `agent` for OpenCode 1, `agents` for OpenCode 2. Give the definitions in that
    /// generation's shape (`prompt`, `permission` for V1; `system`, `permissions` for V2).
    /// OpenCode 2 also reads V1-shaped definitions under V1's `agent` key (checked with
    /// 2.1.2): pass those with [`TestServerBuilder::config`]`(json!({"agent": …}))`.
    pub fn agents(mut self, agents: Value) -> Self {
        self.agents = Some(agents);
        self
    }

    /// Merges `patch` into the server's config, after everything else
    /// ([`merge_json`]: objects key by key, anything else replaced).
    pub fn config(mut self, patch: Value) -> Self {
        self.patches.push(patch);
        self
    }

    /// Sets an environment variable of the server process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// How long to wait for the server to listen (default 60 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The config the server gets for `generation`: [`fake_provider_config_for`], the
    /// agents, then the patches.
    pub fn config_for(&self, generation: Generation) -> Value {
        let mut config = fake_provider_config_for(&self.model_url, generation);
        if let Some(agents) = &self.agents {
            let key = match generation {
                Generation::V1 => "agent",
                Generation::V2 => "agents",
            };
            merge_json(&mut config, json!({ key: agents }));
        }
        for patch in &self.patches {
            merge_json(&mut config, patch.clone());
        }
        config
    }

    /// Starts the server and blocks until it listens.
    ///
    /// The config goes to the isolated home's global config
    /// (`$XDG_CONFIG_HOME/opencode/opencode.json`), so every directory the server is asked
    /// about uses the scripted model; a project's own `opencode.json` still applies on top.
    ///
    /// # Errors
    /// [`TestServerError::NotFound`] when no OpenCode (of the generation) is found,
    /// [`TestServerError::Io`] when the home, project or config cannot be written,
    /// [`TestServerError::Start`] when the server does not start (with its output).
    pub fn start(self) -> Result<TestServer, TestServerError> {
        let binary = match (&self.binary, self.generation) {
            (Some(binary), _) => binary.clone(),
            (None, Some(generation)) => find_generation(generation)?,
            (None, None) => find_opencode(None)?,
        };
        let io = |what: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| TestServerError::Io { what, path, source }
        };
        let home = IsolatedHome::new().map_err(io("isolated home", &std::env::temp_dir()))?;
        let config_dir = home.path().join(".config/opencode");
        std::fs::create_dir_all(&config_dir).map_err(io("config directory", &config_dir))?;
        let config_path = config_dir.join("opencode.json");
        let text = serde_json::to_string_pretty(&self.config_for(binary.generation))
            .map_err(std::io::Error::other)
            .map_err(io("config", &config_path))?;
        std::fs::write(&config_path, text + "\n").map_err(io("config", &config_path))?;
        let project = match self.project_dir {
            Some(dir) => Project::Given(dir),
            None => Project::Owned(
                tempfile::Builder::new()
                    .prefix("orch-project-")
                    .tempdir()
                    .map_err(io("project directory", &std::env::temp_dir()))?,
            ),
        };
        let mut builder = OpencodeServer::builder()
            .binary(&binary.path)
            .generation(binary.generation)
            .project_dir(project.path())
            .isolated_home(home.path())
            .remove_home_if_orphaned(true)
            .ready_timeout(self.ready_timeout);
        for (key, value) in &self.envs {
            builder = builder.env(key, value);
        }
        let server = builder.start().map_err(|source| TestServerError::Start {
            binary: binary.path.clone(),
            version: binary.version.clone(),
            source: Box::new(source),
        })?;
        Ok(TestServer {
            server,
            binary,
            config_path,
            project,
            home,
        })
    }

    /// [`TestServerBuilder::start`] on Tokio's blocking pool.
    ///
    /// # Errors
    /// As [`TestServerBuilder::start`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn start_async(self) -> Result<TestServer, TestServerError> {
        match tokio::task::spawn_blocking(move || self.start()).await {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

#[derive(Debug)]
enum Project {
    Owned(tempfile::TempDir),
    Given(PathBuf),
}

impl Project {
    fn path(&self) -> &Path {
        match self {
            Project::Owned(dir) => dir.path(),
            Project::Given(dir) => dir,
        }
    }
}

/// An `opencode serve` of either generation, isolated for a test: its own `HOME` and XDG
/// directories ([`IsolatedHome`]), the scripted model as its only model, no snapshots, a
/// random password, in its own process group. Dropping it stops the whole group (SIGTERM,
/// then SIGKILL), then removes its home (and its project directory, when it made one).
///
/// ```no_run
/// use orch_testkit::opencode::TestServer;
/// use orch_testkit::{Generation, Script, ScriptedModel};
///
/// let model = ScriptedModel::start(Script::load("tests/scripts/hello.toml")?)?;
/// let server = TestServer::builder(model.base_url()).generation(Generation::V2).start()?;
/// println!("{} ({}), password {}", server.base_url(), server.generation(), server.password());
/// server.kill(); // a crash, for resilience tests
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TestServer {
    // Dropped first: the server stops before its directories go.
    server: OpencodeServer,
    binary: OpencodeBinary,
    config_path: PathBuf,
    project: Project,
    home: IsolatedHome,
}

impl TestServer {
    /// A builder for a server whose only model is the scripted model at `model_url`.
    pub fn builder(model_url: impl Into<String>) -> TestServerBuilder {
        TestServerBuilder::new(model_url)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        self.server.base_url()
    }

    /// The basic-auth username (`opencode`).
    pub fn username(&self) -> &str {
        self.server.username()
    }

    /// The basic-auth password (random).
    pub fn password(&self) -> &str {
        self.server.password()
    }

    /// The generation of the running OpenCode.
    pub fn generation(&self) -> Generation {
        self.binary.generation
    }

    /// The OpenCode binary it runs.
    pub fn binary(&self) -> &OpencodeBinary {
        &self.binary
    }

    /// The default project directory (the server's working directory).
    pub fn project_dir(&self) -> &Path {
        self.project.path()
    }

    /// The isolated home.
    pub fn home(&self) -> &IsolatedHome {
        &self.home
    }

    /// The config file the server reads (global config of the isolated home).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The launcher's handle: the process id, a client, the captured output.
    pub fn server(&self) -> &OpencodeServer {
        &self.server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Whether the server process is still running.
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// The captured output (stdout and stderr, the last 256 KiB).
    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Kills the server's process group at once (SIGKILL), as a crash would.
    pub fn kill(&self) {
        self.server.kill();
    }

    /// Stops the server (SIGTERM, then SIGKILL after a grace period) and returns its exit
    /// status. Idempotent; dropping does the same.
    pub fn stop(&self) -> Option<ExitStatus> {
        self.server.stop()
    }
}
