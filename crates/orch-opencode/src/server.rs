//! Launching `opencode serve`.
//!
//! [`ServerBuilder::start`] spawns `opencode serve --hostname 127.0.0.1 --port 0` in its own
//! process group, with a random password in `OPENCODE_SERVER_PASSWORD`, reads its stdout until
//! the listening line (bounded by a timeout; the port is never probed before that line, since
//! a connection accepted during start-up can hang forever, see `API.md` §1), and keeps the
//! last 256 KiB of its output for error messages. Dropping the [`OpencodeServer`] stops it:
//! SIGTERM to the group, then SIGKILL after a grace period.
//!
//! Both generations start the same way; OpenCode 1 prints `opencode server listening on
//! http://…`, OpenCode 2 `server listening on http://…`. The server's [`Generation`] is the
//! one forced with [`ServerBuilder::generation`], else the one [`find_opencode`] read from the
//! binary's `--version`, else (an explicit [`ServerBuilder::binary`]) the one its listening
//! line tells.
//!
//! The launcher is synchronous and owns no async runtime, so one server can outlive many
//! test runtimes; [`ServerBuilder::start_async`] runs it on Tokio's blocking pool.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientBuilder, DEFAULT_USERNAME};
use crate::error::Error;
use crate::generation::{FindError, Generation, find_opencode};

const LOG_LIMIT: usize = 256 * 1024;
/// Both generations' listening lines contain this, followed by the URL.
const LISTENING: &str = "server listening on ";
/// OpenCode 1's listening line.
const LISTENING_V1: &str = "opencode server listening on ";

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// No usable `opencode` binary was found.
    #[error(transparent)]
    NotFound(#[from] FindError),
    /// The process could not be spawned.
    #[error("cannot spawn {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it was ready.
    #[error("opencode serve exited with {status} before listening; its output:\n{log}")]
    Exited {
        /// Exit status.
        status: ExitStatus,
        /// Captured output.
        log: String,
    },
    /// No "listening" line within the timeout.
    #[error("opencode serve did not report listening within {timeout:?}; its output:\n{log}")]
    NotReady {
        /// The timeout.
        timeout: Duration,
        /// Captured output.
        log: String,
    },
    /// Building the client failed.
    #[error(transparent)]
    Client(#[from] Error),
    /// Building the OpenCode 2 client failed.
    #[error(transparent)]
    ClientV2(#[from] crate::v2::Error),
    /// [`ServerBuilder::start_until`] was cancelled; the process was stopped first.
    #[error("the start of opencode serve was cancelled (the process is stopped)")]
    Cancelled,
}

/// Configures and starts an `opencode serve` process.
#[derive(Clone, Debug)]
pub struct ServerBuilder {
    binary: Option<PathBuf>,
    cwd: Option<PathBuf>,
    home: Option<PathBuf>,
    envs: Vec<(OsString, OsString)>,
    username: String,
    password: Option<String>,
    ready_timeout: Duration,
    stop_grace: Duration,
    orphan_guard: bool,
    remove_home: bool,
    generation: Option<Generation>,
}

/// Runs the server in the background and stops it when our end of its stdin closes, which
/// happens when this process dies without dropping the [`OpencodeServer`] (a static, an
/// abort, `process::exit`, SIGKILL). Exits with the server's status.
/// (Background jobs of a non-interactive shell get `/dev/null` as stdin unless redirected,
/// hence the explicit `<&3`.)
///
/// The shell's own output goes nowhere once the server runs: after this process died, a
/// report on our closed pipes ("Terminated") would kill the shell by SIGPIPE.
///
/// `$1`: a directory to remove once the server has exited, only when it was stopped because
/// our end closed (empty: none). The watcher marks that case inside the directory before it
/// signals, so a server that exits on its own (a crash this process recovers from in the same
/// home) never has its directory removed.
const GUARD: &str = r#"exec 3<&0
remove=$1
shift
"$@" </dev/null 3<&- &
pid=$!
exec >/dev/null 2>&1
( while read -r _; do :; done <&3
  [ -n "$remove" ] && [ -d "$remove" ] && : > "$remove/.orphaned"
  kill -TERM "$pid" 2>/dev/null; sleep 3; kill -KILL "$pid" 2>/dev/null ) &
watcher=$!
wait "$pid"
status=$?
kill "$watcher" 2>/dev/null
if [ -n "$remove" ] && [ -e "$remove/.orphaned" ]; then rm -rf -- "$remove"; fi
exit "$status""#;

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// Defaults: binary from [`find_opencode`](crate::find_opencode), current directory, inherited `HOME`, random
    /// password, 30 s ready timeout, 3 s stop grace.
    pub fn new() -> Self {
        Self {
            binary: None,
            cwd: None,
            home: None,
            envs: Vec::new(),
            username: DEFAULT_USERNAME.to_owned(),
            password: None,
            ready_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(3),
            orphan_guard: true,
            remove_home: false,
            generation: None,
        }
    }

    /// Finds (without an explicit [`ServerBuilder::binary`]) and reports this generation: with
    /// no binary set, [`find_opencode`] looks for this generation only.
    pub fn generation(mut self, generation: Generation) -> Self {
        self.generation = Some(generation);
        self
    }

    /// Whether to run the server under a small `sh` guard that stops it if this process dies
    /// without stopping it (default on; the guard needs `/bin/sh`).
    pub fn orphan_guard(mut self, on: bool) -> Self {
        self.orphan_guard = on;
        self
    }

    /// For a temporary [`ServerBuilder::isolated_home`]: when this process dies without
    /// stopping the server (SIGKILL, an abort, `process::exit`), the orphan guard removes the
    /// home once the server has exited, which this process's own clean-up can no longer do.
    /// Never for a directory that must outlive the process. Off by default; needs the guard.
    pub fn remove_home_if_orphaned(mut self, on: bool) -> Self {
        self.remove_home = on;
        self
    }

    /// Uses this binary.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// The server's working directory: the default project directory.
    pub fn project_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Isolates OpenCode's state: sets `HOME` and the `XDG_*` directories under `home`.
    pub fn isolated_home(mut self, home: impl Into<PathBuf>) -> Self {
        self.home = Some(home.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Uses this password instead of a random one.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Uses this basic-auth username (default `opencode`).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = username.into();
        self
    }

    /// How long to wait for the "listening" line (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How long a stop waits after SIGTERM before SIGKILL (default 3 s).
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Starts the server and blocks until it listens.
    ///
    /// # Errors
    /// See [`ServerError`]; the process is killed on every error path.
    pub fn start(self) -> Result<OpencodeServer, ServerError> {
        self.start_inner(None)
    }

    /// The start; `cancel` (checked while waiting for the "listening" line) stops the
    /// process and makes it [`ServerError::Cancelled`].
    fn start_inner(self, cancel: Option<&AtomicBool>) -> Result<OpencodeServer, ServerError> {
        let (binary, mut generation) = match self.binary.clone() {
            Some(b) => (b, self.generation),
            None => {
                let found = find_opencode(self.generation)?;
                (found.path, Some(found.generation))
            }
        };
        let password = self.password.clone().unwrap_or_else(random_password);
        let args = ["serve", "--hostname", "127.0.0.1", "--port", "0"];
        let mut cmd = if self.orphan_guard {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(GUARD)
                .arg("opencode-guard")
                .arg(match (&self.home, self.remove_home) {
                    (Some(home), true) => home.as_os_str(),
                    _ => OsStr::new(""),
                })
                .arg(&binary)
                .args(args)
                .stdin(Stdio::piped());
            c
        } else {
            let mut c = Command::new(&binary);
            c.args(args).stdin(Stdio::null());
            c
        };
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("OPENCODE_SERVER_PASSWORD", &password)
            .env("OPENCODE_SERVER_USERNAME", &self.username)
            .process_group(0);
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        if let Some(home) = &self.home {
            cmd.env("HOME", home)
                .env("XDG_CONFIG_HOME", home.join(".config"))
                .env("XDG_DATA_HOME", home.join(".local/share"))
                .env("XDG_CACHE_HOME", home.join(".cache"))
                .env("XDG_STATE_HOME", home.join(".local/state"));
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|source| ServerError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let log = Log::default();
        let (ready_tx, ready_rx) = mpsc::channel::<(String, Generation)>();
        let mut readers = Readers::default();
        if let Some(out) = child.stdout.take() {
            readers.spawn(out, log.clone(), Some(ready_tx));
        }
        if let Some(err) = child.stderr.take() {
            readers.spawn(err, log.clone(), None);
        }
        let started = Instant::now();
        let mut proc = Proc {
            child,
            grace: self.stop_grace,
            stopped: false,
        };
        // Every failure reports the process's whole output: the readers are drained to the
        // end of both pipes first (an exit is seen before the output is read, and losing the
        // output to that race was a flaky test on a loaded machine).
        let url = loop {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok((url, said)) => {
                    generation.get_or_insert(said);
                    break url;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without the line: the process is exiting.
                    let status = proc.wait_exit(Duration::from_secs(2));
                    proc.stop();
                    readers.drain(DRAIN);
                    return Err(match status {
                        Some(status) => ServerError::Exited {
                            status,
                            log: log.text(),
                        },
                        None => ServerError::NotReady {
                            timeout: self.ready_timeout,
                            log: log.text(),
                        },
                    });
                }
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                // Whatever is left of its group (the guard's watcher, children) may still
                // hold the pipes open.
                proc.stopped = true;
                proc.signal_group(rustix::process::Signal::KILL);
                readers.drain(DRAIN);
                return Err(ServerError::Exited {
                    status,
                    log: log.text(),
                });
            }
            if cancel.is_some_and(|c| c.load(Ordering::Acquire)) {
                proc.stop();
                readers.drain(DRAIN);
                return Err(ServerError::Cancelled);
            }
            if started.elapsed() >= self.ready_timeout {
                proc.stop();
                readers.drain(DRAIN);
                return Err(ServerError::NotReady {
                    timeout: self.ready_timeout,
                    log: log.text(),
                });
            }
        };
        let client = ClientBuilder::new(url.clone())
            .basic_auth(self.username.clone(), password.clone())
            .build()?;
        let client_v2 = crate::v2::Client::builder(url.clone())
            .basic_auth(self.username.clone(), password.clone())
            .build()?;
        Ok(OpencodeServer {
            proc: Mutex::new(proc),
            url,
            username: self.username,
            password,
            log,
            client,
            client_v2,
            generation: generation.unwrap_or(Generation::V1),
            pid: 0,
        }
        .with_pid())
    }

    /// [`ServerBuilder::start`] on Tokio's blocking pool.
    ///
    /// # Errors
    /// See [`ServerBuilder::start`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn start_async(self) -> Result<OpencodeServer, ServerError> {
        match tokio::task::spawn_blocking(move || self.start()).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// [`ServerBuilder::start_async`] that gives up when `cancel` completes first, and then
    /// returns only once the process is gone (SIGTERM, SIGKILL after the grace period):
    /// `Ok(None)`. What the server was given (a home, a project directory) is then free to be
    /// removed, which it is not while a started process still writes there. (Dropping this
    /// future also stops the start, without waiting for the process to go.)
    ///
    /// # Errors
    /// See [`ServerBuilder::start`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub async fn start_until(
        self,
        cancel: impl Future<Output = ()>,
    ) -> Result<Option<OpencodeServer>, ServerError> {
        /// Raises the flag when dropped: a dropped start gives up too.
        struct Raise(Arc<AtomicBool>);
        impl Drop for Raise {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let flag = Raise(Arc::new(AtomicBool::new(false)));
        let mut task = tokio::task::spawn_blocking({
            let flag = Arc::clone(&flag.0);
            move || self.start_inner(Some(&flag))
        });
        let joined = |r: Result<_, tokio::task::JoinError>| match r {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        tokio::select! {
            r = &mut task => joined(r).map(Some),
            () = cancel => {
                flag.0.store(true, Ordering::Release);
                match joined(task.await) {
                    // It was ready just as the cancel came: stop it (a blocking wait).
                    Ok(server) => {
                        let _ = tokio::task::spawn_blocking(move || drop(server)).await;
                        Ok(None)
                    }
                    Err(ServerError::Cancelled) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

fn random_password() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..32)
        .map(|_| CHARS[fastrand::usize(..CHARS.len())] as char)
        .collect()
}

/// The URL and the generation a listening line announces (`opencode server listening on
/// http://…`: OpenCode 1; `server listening on http://…`: OpenCode 2).
fn listening(line: &str) -> Option<(String, Generation)> {
    let idx = line.find(LISTENING)?;
    let url = line[idx + LISTENING.len()..].trim();
    if !url.starts_with("http") {
        return None;
    }
    let generation = if line.contains(LISTENING_V1) {
        Generation::V1
    } else {
        Generation::V2
    };
    Some((url.to_owned(), generation))
}

/// Bounded capture of the server's output.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<VecDeque<u8>>>);

impl Log {
    fn push_line(&self, line: &str) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        buf.extend(line.as_bytes());
        buf.push_back(b'\n');
        let excess = buf.len().saturating_sub(LOG_LIMIT);
        buf.drain(..excess);
    }

    fn text(&self) -> String {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&buf.iter().copied().collect::<Vec<u8>>()).into_owned()
    }
}

/// How long a failed start waits for the output readers to reach the end of the pipes once
/// the process group is gone (only a process outside the group could hold them longer).
const DRAIN: Duration = Duration::from_secs(5);

/// The threads copying the server's stdout and stderr into its [`Log`].
#[derive(Default)]
struct Readers {
    done: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    running: usize,
}

impl Readers {
    /// Copies `stream` line by line into `log`, sending the listening URL to `ready`.
    fn spawn(
        &mut self,
        stream: impl Read + Send + 'static,
        log: Log,
        ready: Option<mpsc::Sender<(String, Generation)>>,
    ) {
        let (done, _) = self.done.get_or_insert_with(mpsc::channel);
        let done = done.clone();
        self.running += 1;
        std::thread::spawn(move || {
            let mut ready = ready;
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                // Logged before the URL is handed over, so the log holds every line seen.
                log.push_line(&line);
                if let Some(tx) = &ready
                    && let Some((url, generation)) = listening(&line)
                {
                    let _ = tx.send((url, generation));
                    ready = None;
                }
            }
            let _ = done.send(());
        });
    }

    /// Waits until every reader has reached the end of its pipe, at most `within`.
    fn drain(&mut self, within: Duration) {
        let until = Instant::now() + within;
        let Some((_, done)) = &self.done else { return };
        while self.running > 0 {
            match done.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(()) => self.running -= 1,
                Err(_) => return,
            }
        }
    }
}

struct Proc {
    child: Child,
    grace: Duration,
    stopped: bool,
}

impl Proc {
    fn signal_group(&self, signal: rustix::process::Signal) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            // The group may already be gone; nothing to do then.
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => return None,
            }
        }
    }

    /// SIGTERM to the group, SIGKILL after the grace period.
    fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped {
            return self.child.try_wait().ok().flatten();
        }
        self.stopped = true;
        self.signal_group(rustix::process::Signal::TERM);
        if let Some(status) = self.wait_exit(self.grace) {
            // Children of the server (if any) go with the group.
            self.signal_group(rustix::process::Signal::KILL);
            return Some(status);
        }
        self.signal_group(rustix::process::Signal::KILL);
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

/// A running `opencode serve`. Stopped on drop (SIGTERM, then SIGKILL).
pub struct OpencodeServer {
    proc: Mutex<Proc>,
    url: String,
    username: String,
    password: String,
    log: Log,
    client: Client,
    client_v2: crate::v2::Client,
    generation: Generation,
    pid: u32,
}

impl fmt::Debug for OpencodeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpencodeServer")
            .field("url", &self.url)
            .field("generation", &self.generation)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl OpencodeServer {
    /// A builder.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }

    fn with_pid(mut self) -> Self {
        self.pid = self
            .proc
            .get_mut()
            .map(|p| p.child.id())
            .unwrap_or_else(|e| e.into_inner().child.id());
        self
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.url
    }

    /// The basic-auth username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The basic-auth password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A client with the server's credentials (not scoped to a directory; use
    /// [`Client::with_directory`]). Speaks OpenCode 1: see [`OpencodeServer::client_v2`].
    ///
    /// A new client (its own connection pool) each call: pooled connections are driven by
    /// tasks of the Tokio runtime that opened them, so a client shared by code on two
    /// runtimes (a server kept across tests that each build a runtime) fails with "dispatch
    /// task is gone" once the first runtime is dropped. Clone the client to share it within
    /// one runtime.
    pub fn client(&self) -> Client {
        ClientBuilder::new(self.url.clone())
            .basic_auth(self.username.clone(), self.password.clone())
            .build()
            .unwrap_or_else(|_| self.client.clone())
    }

    /// An OpenCode 2 client with the server's credentials; a new one each call, as
    /// [`OpencodeServer::client`].
    pub fn client_v2(&self) -> crate::v2::Client {
        crate::v2::Client::builder(self.url.clone())
            .basic_auth(self.username.clone(), self.password.clone())
            .build()
            .unwrap_or_else(|_| self.client_v2.clone())
    }

    /// The generation of the running binary.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The captured output (stdout and stderr, last 256 KiB).
    pub fn log(&self) -> String {
        self.log.text()
    }

    /// Whether the process is still running.
    pub fn is_running(&self) -> bool {
        let mut p = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        !p.stopped && matches!(p.child.try_wait(), Ok(None))
    }

    /// Stops the server (SIGTERM, then SIGKILL after the grace period) and returns its exit
    /// status. Idempotent.
    pub fn stop(&self) -> Option<ExitStatus> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner()).stop()
    }

    /// Kills the server at once (SIGKILL to its group), simulating a crash.
    pub fn kill(&self) {
        let mut p = self.proc.lock().unwrap_or_else(|e| e.into_inner());
        p.signal_group(rustix::process::Signal::KILL);
        let _ = p.child.kill();
        let _ = p.child.wait();
        p.stopped = true;
    }
}

impl Drop for OpencodeServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn random_passwords_differ_and_are_alphanumeric() {
        let a = random_password();
        let b = random_password();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn log_keeps_only_the_tail() {
        let log = Log::default();
        for i in 0..100_000 {
            log.push_line(&format!("line {i}"));
        }
        let text = log.text();
        assert!(text.len() <= LOG_LIMIT);
        assert!(text.ends_with("line 99999\n"));
    }

    #[test]
    fn listening_lines_tell_the_url_and_the_generation() {
        assert_eq!(
            listening("opencode server listening on http://127.0.0.1:4096"),
            Some(("http://127.0.0.1:4096".into(), Generation::V1))
        );
        assert_eq!(
            listening("server listening on http://127.0.0.1:37685"),
            Some(("http://127.0.0.1:37685".into(), Generation::V2))
        );
        assert_eq!(listening("INFO server listening on port"), None);
        assert_eq!(listening("starting"), None);
    }

    #[test]
    fn a_binary_that_exits_is_reported_with_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-opencode");
        std::fs::write(&script, "#!/bin/sh\necho boom: bad config >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = ServerBuilder::new().binary(&script).start().unwrap_err();
        match err {
            ServerError::Exited { log, .. } => assert!(log.contains("boom: bad config"), "{log}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_guard_stops_the_server_when_our_end_of_its_stdin_closes() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("listening-opencode");
        std::fs::write(
            &script,
            "#!/bin/sh\necho 'opencode server listening on http://127.0.0.1:1'\nexec sleep 60\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let server = ServerBuilder::new().binary(&script).start().unwrap();
        assert_eq!(server.base_url(), "http://127.0.0.1:1");
        assert_eq!(server.generation(), Generation::V1);
        // Still running a while later: the guard waits for our end of the pipe.
        std::thread::sleep(Duration::from_millis(700));
        assert!(server.is_running());
        // What the death of this process would do: close the pipe.
        drop(server.proc.lock().unwrap().child.stdin.take());
        let until = Instant::now() + Duration::from_secs(10);
        while server.is_running() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!server.is_running(), "guard did not stop the server");
    }

    /// A fake server that listens (says so) and then runs `then`.
    fn fake_server(dir: &Path, then: &str) -> PathBuf {
        let script = dir.join("fake-opencode");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho 'opencode server listening on http://127.0.0.1:1'\n{then}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        script
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < until, "{what}: not within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn an_orphaned_servers_temporary_home_is_removed_once_it_has_exited() {
        for remove in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let home = dir.path().join("home");
            std::fs::create_dir_all(home.join(".local/share")).unwrap();
            let server = ServerBuilder::new()
                .binary(fake_server(dir.path(), "exec sleep 60"))
                .isolated_home(&home)
                .remove_home_if_orphaned(remove)
                .start()
                .unwrap();
            // What the death of this process would do: close the pipe.
            drop(server.proc.lock().unwrap().child.stdin.take());
            wait_until("the server stops", || !server.is_running());
            if remove {
                wait_until("the home goes", || !home.exists());
            } else {
                std::thread::sleep(Duration::from_millis(300));
                assert!(home.join(".local/share").is_dir(), "not asked to remove it");
            }
        }
    }

    #[test]
    fn a_server_that_exits_on_its_own_keeps_its_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("kept"), "still needed for a restart").unwrap();
        let server = ServerBuilder::new()
            .binary(fake_server(dir.path(), "sleep 0.3; exit 1"))
            .isolated_home(&home)
            .remove_home_if_orphaned(true)
            .start()
            .unwrap();
        wait_until("the server exits", || !server.is_running());
        drop(server);
        std::thread::sleep(Duration::from_millis(300));
        assert!(home.join("kept").is_file());
        assert!(!home.join(".orphaned").exists());
    }

    #[test]
    fn a_binary_that_never_listens_times_out_and_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("slow-opencode");
        std::fs::write(&script, "#!/bin/sh\necho starting\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let err = ServerBuilder::new()
            .binary(&script)
            .ready_timeout(Duration::from_millis(300))
            .stop_grace(Duration::from_millis(200))
            .start()
            .unwrap_err();
        match err {
            ServerError::NotReady { log, .. } => assert!(log.contains("starting"), "{log}"),
            other => panic!("{other:?}"),
        }
    }
}
