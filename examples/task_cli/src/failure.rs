//! Errors that end the program: what happened, what to do, and the exit code.

use std::fmt;

/// The documented exit codes.
pub(crate) mod code {
    /// The mission completed (or the command did what it was asked).
    pub(crate) const SUCCESS: u8 = 0;
    /// The mission ran and failed (or a budget stopped it).
    pub(crate) const MISSION_FAILED: u8 = 1;
    /// Bad usage: unknown flag, bad value, bad config file value.
    pub(crate) const USAGE: u8 = 2;
    /// Environment problem: OpenCode missing, server unreachable, bad config file.
    pub(crate) const ENVIRONMENT: u8 = 3;
    /// Stopped by the user (Ctrl-C, SIGTERM, `task_cli stop`); resumable.
    pub(crate) const STOPPED: u8 = 130;
}

/// The exit-code table shown in `--help` and the README.
pub(crate) const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    the mission failed (or a budget stopped it); the audit log of `status` does not verify
  2    bad usage (unknown flag, bad value)
  3    environment problem (OpenCode missing, server unreachable, bad config); a failed doctor check
  130  stopped by the user (Ctrl-C, SIGTERM, task_cli stop); resume with task_cli resume";

/// An error that ends the program with `code`, saying what happened and what to do.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) what: String,
    pub(crate) fix: Option<String>,
}

impl Failure {
    /// An environment problem (exit 3).
    pub(crate) fn env(what: impl Into<String>, fix: impl Into<String>) -> anyhow::Error {
        Failure {
            code: code::ENVIRONMENT,
            what: what.into(),
            fix: Some(fix.into()),
        }
        .into()
    }

    /// Bad usage (exit 2).
    pub(crate) fn usage(what: impl Into<String>, fix: impl Into<String>) -> anyhow::Error {
        Failure {
            code: code::USAGE,
            what: what.into(),
            fix: Some(fix.into()),
        }
        .into()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Failure {}

/// The exit code, message and fix of any error (errors that are not a [`Failure`] are
/// environment problems: I/O, the server, the store).
pub(crate) fn describe(error: &anyhow::Error) -> (u8, String, Option<String>) {
    if let Some(failure) = error.downcast_ref::<Failure>() {
        return (failure.code, failure.what.clone(), failure.fix.clone());
    }
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !message.contains(&cause) {
            message.push_str(": ");
            message.push_str(&cause);
        }
    }
    (
        code::ENVIRONMENT,
        message,
        Some(
            "run `task_cli doctor` to check OpenCode, the config files and the mission state"
                .into(),
        ),
    )
}
