//! Running one `git` command: in a directory, with a fixed environment, bounded in time, its
//! output captured. Every git call of the crate goes through [`run`].

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::GitError;

/// How long one git command may take before it is killed. Generous: a commit or a merge in a
/// large repository takes seconds; a command that waits for a passphrase or a lock never
/// ends, and that must not hang a mission.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(120);

/// What a finished git command printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Whether it exited 0.
    pub(crate) fn ok(&self) -> bool {
        self.status.success()
    }

    /// The exit code (`None` when killed by a signal).
    pub(crate) fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// A git command to run: its arguments, an optional standard input, and `-c` settings put
/// before the subcommand.
#[derive(Debug, Default)]
pub(crate) struct Git<'a> {
    config: Vec<String>,
    args: Vec<&'a str>,
    input: Option<&'a str>,
}

impl<'a> Git<'a> {
    pub(crate) fn new(args: &[&'a str]) -> Self {
        Git {
            args: args.to_vec(),
            ..Git::default()
        }
    }

    /// Adds arguments.
    pub(crate) fn args(mut self, args: impl IntoIterator<Item = &'a str>) -> Self {
        self.args.extend(args);
        self
    }

    /// `-c key=value` before the subcommand.
    pub(crate) fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push(format!("{key}={value}"));
        self
    }

    /// Feeds `input` on standard input.
    pub(crate) fn input(mut self, input: &'a str) -> Self {
        self.input = Some(input);
        self
    }

    /// The command line, for errors (`git merge --no-ff orch/x`).
    pub(crate) fn describe(&self) -> String {
        let mut words = vec!["git".to_owned()];
        for c in &self.config {
            words.push("-c".into());
            words.push(c.clone());
        }
        words.extend(self.args.iter().map(|a| (*a).to_owned()));
        words.join(" ")
    }

    /// Runs it in `dir`; the output whatever the exit status.
    ///
    /// # Errors
    /// [`GitError::Missing`] when `git` cannot be found, [`GitError::Io`] when it cannot be
    /// started or read, [`GitError::Timeout`] when it ran past [`TIMEOUT`] (it is killed).
    pub(crate) fn run(&self, dir: &Path) -> Result<Output, GitError> {
        run(dir, self, TIMEOUT)
    }

    /// Runs it in `dir` and returns its standard output when it exits 0.
    ///
    /// # Errors
    /// As [`Git::run`], and [`GitError::Command`] for a non-zero exit.
    pub(crate) fn ok(&self, dir: &Path) -> Result<String, GitError> {
        let output = self.run(dir)?;
        if output.ok() {
            Ok(output.stdout)
        } else {
            Err(self.failed(dir, &output))
        }
    }

    /// The error of a run that exited non-zero.
    pub(crate) fn failed(&self, dir: &Path, output: &Output) -> GitError {
        GitError::Command {
            command: self.describe(),
            dir: dir.to_owned(),
            code: output.code(),
            stderr: excerpt(if output.stderr.trim().is_empty() {
                &output.stdout
            } else {
                &output.stderr
            }),
        }
    }
}

/// At most the last 2,000 characters of `text`, trimmed: enough for a person to see why.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    let start = text.char_indices().rev().nth(1_999).map_or(0, |(i, _)| i);
    text[start..].to_owned()
}

/// Runs `git` with `command` in `dir`, killing it after `timeout`.
fn run(dir: &Path, command: &Git<'_>, timeout: Duration) -> Result<Output, GitError> {
    let mut cmd = Command::new("git");
    // The user's hooks do not run on the mission's commits, merges and checkouts.
    cmd.arg("-c").arg("core.hooksPath=/dev/null");
    for c in &command.config {
        cmd.arg("-c").arg(c);
    }
    cmd.args(&command.args)
        .current_dir(dir)
        // Never a prompt (credentials, an editor), always the C locale's messages (parsed),
        // and the repository of `dir`, whatever the caller's environment points at.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_EDITOR", "true")
        .env("LC_ALL", "C")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_PREFIX")
        .stdin(if command.input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let io = |e: std::io::Error| GitError::Io {
        context: format!("running `{}` in {}", command.describe(), dir.display()),
        source: e,
    };
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // `current_dir` missing reports NotFound too.
            if !dir.is_dir() {
                return Err(GitError::NotARepository {
                    dir: dir.to_owned(),
                });
            }
            return Err(GitError::Missing);
        }
        Err(e) => return Err(io(e)),
    };
    // The pipes are read on threads of their own, which are not joined after a timeout: a
    // process git started may still hold them open.
    let stdout = child.stdout.take().map(reader);
    let stderr = child.stderr.take().map(reader);
    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), command.input) {
        let text = text.to_owned();
        // A command that exits early closes its end: nothing more to write.
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(GitError::Timeout {
                    command: command.describe(),
                    after: timeout,
                });
            }
            Ok(None) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io(e));
            }
        }
    };
    let collect = |thread: Option<std::thread::JoinHandle<String>>| {
        thread.and_then(|t| t.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// A thread reading `pipe` to its end.
fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_exit_codes_are_captured() {
        let dir = tempfile::tempdir().unwrap();
        let version = Git::new(&["--version"]).ok(dir.path()).unwrap();
        assert!(version.starts_with("git version"), "{version}");
        let err = Git::new(&["rev-parse", "--show-toplevel"])
            .ok(dir.path())
            .unwrap_err();
        match err {
            GitError::Command {
                code,
                stderr,
                command,
                ..
            } => {
                assert_eq!(code, Some(128));
                assert!(stderr.contains("not a git repository"), "{stderr}");
                assert_eq!(command, "git rev-parse --show-toplevel");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn standard_input_reaches_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let out = Git::new(&["hash-object", "--stdin"])
            .input("hello\n")
            .ok(dir.path())
            .unwrap();
        assert_eq!(out.trim(), "ce013625030ba8dba906f756967f9e9ca394464a");
    }

    #[test]
    fn a_command_past_its_time_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        // An alias that sleeps: git waits for it.
        let err = run(
            dir.path(),
            &Git::new(&["-c", "alias.wait=!sleep 5", "wait"]),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, GitError::Timeout { .. }), "{err:?}");
    }

    #[test]
    fn a_missing_directory_is_not_a_repository() {
        let err = Git::new(&["status"])
            .ok(Path::new("/nonexistent/orch-agents-test"))
            .unwrap_err();
        assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");
    }

    #[test]
    fn long_errors_keep_their_end() {
        let text = format!("{}END", "x".repeat(5_000));
        let cut = excerpt(&text);
        assert_eq!(cut.chars().count(), 2_000);
        assert!(cut.ends_with("END"));
    }
}
