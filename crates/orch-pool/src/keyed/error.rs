//! Errors of the keyed pool.

use std::time::Duration;

/// Why [`KeyedPool::get`](super::KeyedPool::get) gave no resource.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError<E: std::error::Error + 'static> {
    /// No resource became free within the wait timeout.
    #[error("timed out after {waited:?} waiting for a resource for key {key}")]
    Timeout {
        /// The key, `Debug`-formatted.
        key: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// [`Manager::create`](super::Manager::create) failed.
    #[error("creating a resource for key {key} failed")]
    Create {
        /// The key, `Debug`-formatted.
        key: String,
        /// The manager's error.
        #[source]
        source: E,
    },
    /// [`Manager::create`](super::Manager::create) took longer than the create timeout.
    #[error("creating a resource for key {key} timed out after {timeout:?}")]
    CreateTimeout {
        /// The key, `Debug`-formatted.
        key: String,
        /// The create timeout.
        timeout: Duration,
    },
    /// The pool is closed (or was closed while the caller waited).
    #[error("the pool is closed")]
    Closed,
}

/// Why [`KeyedPoolBuilder::build`](super::KeyedPoolBuilder::build) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// `build` was called outside a tokio runtime (the pool spawns teardown and reaper tasks).
    #[error("a keyed pool must be built inside a tokio runtime")]
    NoRuntime,
    /// A limit was zero.
    #[error("{name} must be at least 1")]
    ZeroLimit {
        /// The setting's name.
        name: &'static str,
    },
}
