//! Errors of the crate, and the "payload handed back" type for rejected submissions.

use std::fmt;

/// Errors from building or shutting down a pool or a lane scheduler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range.
    #[error("invalid configuration: {what} (got {value})")]
    InvalidConfig {
        /// Which setting was wrong and what it must be.
        what: &'static str,
        /// The value that was given.
        value: usize,
    },
    /// The operating system refused to start a worker thread.
    #[error("could not spawn worker thread {index}: {source}")]
    ThreadSpawn {
        /// Index of the worker that failed to start.
        index: usize,
        /// The error from `std::thread::Builder::spawn`.
        #[source]
        source: std::io::Error,
    },
    /// `shutdown` was called from one of the pool's own worker threads, which cannot join
    /// itself.
    #[error("shutdown called from worker thread {index} of the same pool")]
    ShutdownFromWorker {
        /// Index of the calling worker.
        index: usize,
    },
}

/// A submission that was refused because the pool or scheduler no longer accepts work.
///
/// Holds the task so the caller can run it elsewhere ([`Rejected::into_inner`]).
#[derive(thiserror::Error)]
#[error("{reason}; task handed back")]
pub struct Rejected<T> {
    task: T,
    reason: &'static str,
}

impl<T> Rejected<T> {
    pub(crate) fn new(task: T, reason: &'static str) -> Self {
        Self { task, reason }
    }

    /// Takes the refused task back.
    pub fn into_inner(self) -> T {
        self.task
    }

    /// Why the task was refused (lowercase, for logs).
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl<T> fmt::Debug for Rejected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}
