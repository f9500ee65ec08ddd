//! Error types: one for plan text, one for the audit log, one for the store.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// `" at line N"` when a line is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AtLine(pub(crate) Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " at line {line}"),
            None => Ok(()),
        }
    }
}

/// A plan that does not parse or is not well formed. Lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The text does not follow the grammar.
    #[error("line {line}, column {column}: expected {expected}, found {found}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What the grammar allows here.
        expected: String,
        /// An excerpt of what is there instead.
        found: String,
    },
    /// Two items share an id.
    #[error("duplicate item id `{id}`{} (first defined{})", AtLine(*.line), AtLine(*.first_line))]
    DuplicateId {
        /// The repeated id.
        id: String,
        /// Line of the second definition.
        line: Option<usize>,
        /// Line of the first definition.
        first_line: Option<usize>,
    },
    /// An item depends on an id no item has.
    #[error("item `{item}`{} depends on `{dependency}`, which is not in the plan", AtLine(*.line))]
    UnknownDependency {
        /// The depending item.
        item: String,
        /// The missing id.
        dependency: String,
        /// Line of the depending item.
        line: Option<usize>,
    },
    /// Dependencies form a cycle.
    #[error("dependency cycle {}{}", .cycle.join(" -> "), AtLine(*.line))]
    DependencyCycle {
        /// The ids on the cycle; the first is repeated at the end.
        cycle: Vec<String>,
        /// Line of an item on the cycle.
        line: Option<usize>,
    },
    /// An id outside the id grammar (in a plan built in code).
    #[error(
        "invalid item id {id:?}: expected an ASCII letter or digit, then letters, digits, `.`, `_` or `-`"
    )]
    InvalidId {
        /// The rejected id.
        id: String,
    },
    /// A field holds text the format cannot write back unchanged (in a plan built in code).
    #[error("{}: {reason}", match .item { Some(i) => format!("item `{i}`"), None => "plan".to_owned() })]
    Unrepresentable {
        /// The item, when the problem is in one.
        item: Option<String>,
        /// What is wrong.
        reason: String,
    },
}

impl PlanError {
    /// The 1-based line of the text the error is about: always for [`PlanError::Syntax`],
    /// and for the graph errors ([`PlanError::DuplicateId`], [`PlanError::UnknownDependency`],
    /// [`PlanError::DependencyCycle`]) when they come from [`crate::parse`]. `None` for a plan
    /// built in code.
    #[must_use]
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Syntax { line, .. } => Some(*line),
            Self::DuplicateId { line, .. }
            | Self::UnknownDependency { line, .. }
            | Self::DependencyCycle { line, .. } => *line,
            Self::InvalidId { .. } | Self::Unrepresentable { .. } => None,
        }
    }

    /// The 1-based column (in characters) of a [`PlanError::Syntax`]. The graph errors name
    /// a line and the items instead.
    #[must_use]
    pub fn column(&self) -> Option<usize> {
        match self {
            Self::Syntax { column, .. } => Some(*column),
            _ => None,
        }
    }
}

/// Why an audit log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A record is not valid JSON or lacks fields.
    #[error("audit record at line {line} is malformed: {reason}")]
    Malformed {
        /// 1-based line of the record.
        line: usize,
        /// The decoder's message.
        reason: String,
    },
    /// A record's stored hash is not the hash of its content (it was edited).
    #[error(
        "audit record at line {line} (version {version}) was altered: stored hash {stored}, computed {computed}"
    )]
    HashMismatch {
        /// 1-based line.
        line: usize,
        /// The record's version.
        version: u64,
        /// Hash in the record.
        stored: String,
        /// Hash of the record's content.
        computed: String,
    },
    /// A record's `prev` is not the previous record's hash (records removed or reordered).
    #[error(
        "audit record at line {line} (version {version}) does not chain to the record before it"
    )]
    BrokenChain {
        /// 1-based line.
        line: usize,
        /// The record's version.
        version: u64,
    },
    /// Versions do not go up by one (records removed, duplicated or reordered).
    #[error("audit record at line {line} has version {found}, expected {expected}")]
    VersionGap {
        /// 1-based line.
        line: usize,
        /// The version that should be there.
        expected: u64,
        /// The version that is there.
        found: u64,
    },
    /// The last line is not complete: a write was cut short. [`crate::TodoStore`] repairs
    /// this by truncation.
    #[error("audit log ends in an incomplete record at line {line} ({bytes} bytes)")]
    TornTail {
        /// 1-based line of the incomplete record.
        line: usize,
        /// Its length in bytes.
        bytes: u64,
    },
    /// The log ends before the version the version file names (records cut off the end).
    #[error("audit log ends at version {audit}, but the store is at version {store}")]
    Truncated {
        /// Last version in the log.
        audit: u64,
        /// Version in the version file.
        store: u64,
    },
    /// The file could not be read.
    #[error("cannot read audit log {path}: {message}")]
    Io {
        /// The log's path.
        path: PathBuf,
        /// The system's message.
        message: String,
    },
}

/// What can go wrong in [`crate::TodoStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `renaming`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The expected version is not the current one.
    #[error(
        "version conflict: expected version {expected}, current version is {current} (after {attempts} attempt(s))"
    )]
    Conflict {
        /// The version the caller based its change on.
        expected: u64,
        /// The version now in the store.
        current: u64,
        /// How many attempts were made.
        attempts: u32,
    },
    /// `TODO.md` was edited outside the store into text that does not parse. Nothing was
    /// changed; fix the file (or restore it) and try again.
    #[error("TODO.md at {path} was edited outside the store and does not parse: {error}")]
    ExternalEditInvalid {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        error: PlanError,
    },
    /// `TODO.md` is missing while the version file says the store has versions.
    #[error("{path} is missing but the store is at version {version}")]
    TodoMissing {
        /// The missing file.
        path: PathBuf,
        /// The version the version file names.
        version: u64,
    },
    /// The version file cannot be read as JSON.
    #[error("version file {path} is corrupt: {reason}")]
    CorruptVersionFile {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The version file and the audit log disagree.
    #[error("version file {path} does not match the audit log: {reason}")]
    VersionMismatch {
        /// The version file.
        path: PathBuf,
        /// Which values differ.
        reason: String,
    },
    /// The audit log is broken (not a torn tail, which is repaired).
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The plan to commit is not well formed.
    #[error("plan rejected: {0}")]
    InvalidPlan(#[from] PlanError),
    /// A writer id is empty or holds a line break.
    #[error("invalid writer id {0:?}: expected a non-empty single line")]
    InvalidWriter(String),
    /// A wait ended before a new version appeared.
    #[error("no new version after {after} within {waited_ms} ms")]
    Timeout {
        /// The version waited past.
        after: u64,
        /// How long the wait lasted.
        waited_ms: u64,
    },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The current version carried by a [`StoreError::Conflict`].
    #[must_use]
    pub fn current_version(&self) -> Option<u64> {
        match self {
            Self::Conflict { current, .. } => Some(*current),
            _ => None,
        }
    }
}
