//! Errors of this crate.

use std::path::PathBuf;

use orch_opencode::{FindError, ServerError};

/// A script that cannot be read, parsed or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The script file could not be read.
    #[error("cannot read script {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An error in a script file, with the file's path.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: Box<ScriptError>,
    },
    /// TOML that does not parse, or does not fit the script format.
    #[error("line {line}, column {column}: {message}")]
    Toml {
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// JSON that does not parse, or does not fit the script format.
    #[error("line {line}, column {column}: {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// An invalid regular expression given in code.
    #[error("invalid regex {pattern:?}: {message}")]
    Regex {
        /// The regex source.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
    /// A rule that parses but cannot answer.
    #[error("rule {rule:?}: {reason}")]
    Invalid {
        /// The rule's name.
        rule: String,
        /// What is wrong.
        reason: String,
    },
}

/// The scripted model server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The script is invalid.
    #[error("invalid script: {0}")]
    Script(#[from] ScriptError),
    /// The socket, runtime or thread could not be set up.
    #[error("cannot start the scripted model server: {0}")]
    Io(#[from] std::io::Error),
}

/// A [`crate::opencode::TestServer`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestServerError {
    /// No OpenCode (of the generation asked for) was found.
    #[error(transparent)]
    NotFound(#[from] FindError),
    /// A directory or the config could not be written.
    #[error("cannot write the test server's {what} at {}: {source}", path.display())]
    Io {
        /// What was being written.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `opencode serve` did not start; the launcher's error carries its output.
    #[error("opencode {version} ({}) did not start: {source}", binary.display())]
    Start {
        /// The binary.
        binary: PathBuf,
        /// Its version.
        version: String,
        /// The launcher's error.
        source: Box<ServerError>,
    },
}
