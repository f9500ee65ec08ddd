//! Errors of the OpenCode 2 client.

use std::time::Duration;

/// Everything that can go wrong talking to an OpenCode 2 server.
///
/// Transport problems, HTTP statuses and decoding problems are separate variants so that a
/// caller can decide what to retry (connection refused, timeouts and [`Error::Starting`]
/// usually; 4xx never).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection could not be established (server not running, wrong port).
    #[error("cannot connect to opencode at {url}: {source}")]
    Connect {
        /// The URL that was requested.
        url: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The request did not complete within its timeout.
    #[error("request to {url} timed out after {timeout:?}")]
    Timeout {
        /// The URL that was requested.
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The server requires credentials and ours were missing or wrong (HTTP 401).
    #[error(
        "opencode rejected the credentials for {url} (HTTP 401); check OPENCODE_SERVER_PASSWORD and OPENCODE_SERVER_USERNAME"
    )]
    Unauthorized {
        /// The URL that was requested.
        url: String,
    },
    /// The server is still starting (`503 {"code":"service_starting"}` with `Retry-After`).
    #[error("opencode at {url} is still starting (retry after {retry_after:?})")]
    Starting {
        /// The URL that was requested.
        url: String,
        /// Its `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// An `/api` route that does not exist, or a wrong method (404 with an **empty** body;
    /// an unknown object is a 404 with an `_tag`, see [`Error::Status`]).
    #[error("{method} {url}: no such route in this OpenCode (HTTP 404 with an empty body)")]
    NoRoute {
        /// The HTTP method.
        method: &'static str,
        /// The URL that was requested.
        url: String,
    },
    /// The server answered with a non-success status and (usually) an `{"_tag": …}` body.
    #[error("{method} {url} failed with HTTP {status}{}: {body}", tag.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Status {
        /// The HTTP method.
        method: &'static str,
        /// The URL that was requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// OpenCode's error tag (`SessionNotFoundError`, `ConflictError`,
        /// `InvalidRequestError`, `PermissionNotFoundError`, …).
        tag: Option<String>,
        /// The first few hundred bytes of the body.
        body: String,
    },
    /// The server answered 2xx but not with JSON: OpenCode 2 serves its web UI
    /// (`200 text/html`) for every non-`/api` `GET`, and OpenCode 1 for every unknown route
    /// (an OpenCode 1 server behind a V2 client ends here).
    #[error(
        "{url} answered {content_type:?} instead of JSON (not an OpenCode 2 API route?): {body}"
    )]
    NotJson {
        /// The URL that was requested.
        url: String,
        /// The content type that came back.
        content_type: String,
        /// The first bytes of the body.
        body: String,
    },
    /// The body was JSON but did not match the expected shape.
    #[error("cannot decode the answer of {url} at `{path}`: {message}")]
    Decode {
        /// The URL that was requested.
        url: String,
        /// Path of the offending field, e.g. `data[0].tokens.input`.
        path: String,
        /// What serde reported.
        message: String,
    },
    /// Any other transport error (connection reset mid-body, invalid header value, …).
    #[error("http error for {url}: {}", crate::error::causes(source))]
    Http {
        /// The URL that was requested.
        url: String,
        /// The underlying transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The base URL or a derived URL is not valid.
    #[error("invalid url {url:?}: {message}")]
    InvalidUrl {
        /// The offending URL text.
        url: String,
        /// Why it is invalid.
        message: String,
    },
}

impl Error {
    /// The HTTP status, for [`Error::Status`], [`Error::NoRoute`] (404),
    /// [`Error::Starting`] (503) and [`Error::Unauthorized`] (401).
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::NoRoute { .. } => Some(404),
            Self::Starting { .. } => Some(503),
            Self::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// OpenCode's `_tag` of an error answer.
    pub fn tag(&self) -> Option<&str> {
        match self {
            Self::Status { tag, .. } => tag.as_deref(),
            _ => None,
        }
    }

    /// Whether the server could not be reached at all (refused, reset, timed out): the signal
    /// a waiter uses to decide that the server is gone.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Timeout { .. } | Self::Http { .. }
        )
    }

    /// Whether the server said the object does not exist (a 404 with a `…NotFoundError`
    /// tag). A missing route ([`Error::NoRoute`]) is not this.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }

    /// Whether the server refused a conflicting write (409 `ConflictError`: e.g. a prompt id
    /// already used by another session).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    pub(crate) fn from_reqwest(url: &str, timeout: Duration, source: reqwest::Error) -> Self {
        if source.is_timeout() {
            Self::Timeout {
                url: url.to_owned(),
                timeout,
            }
        } else if source.is_connect() {
            Self::Connect {
                url: url.to_owned(),
                source,
            }
        } else {
            Self::Http {
                url: url.to_owned(),
                source,
            }
        }
    }
}

crate::connect::from_connect_error!(Error);
