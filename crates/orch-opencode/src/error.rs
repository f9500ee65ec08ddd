//! The client's error type.

use std::time::Duration;

/// Everything that can go wrong talking to an OpenCode server.
///
/// Transport problems, HTTP statuses and decoding problems are separate variants so that a
/// caller can decide what to retry (connection refused and timeouts usually; 4xx never).
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
    /// The server answered with a non-success status.
    #[error("{method} {url} failed with HTTP {status}{}: {body}", name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default())]
    Status {
        /// The HTTP method.
        method: &'static str,
        /// The URL that was requested.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// OpenCode's error name (`NotFoundError`, `BadRequest`, `UnknownError`…), when the body
        /// carried one.
        name: Option<String>,
        /// The first few hundred bytes of the body.
        body: String,
    },
    /// The server answered 2xx but not with JSON: OpenCode serves its web UI (`200 text/html`)
    /// for every unknown route or wrong method.
    #[error(
        "{url} answered {content_type:?} instead of JSON (unknown route or wrong method?): {body}"
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
        /// Path of the offending field, e.g. `[0].tokens.input`.
        path: String,
        /// What serde reported.
        message: String,
    },
    /// Any other transport error (connection reset mid-body, invalid header value, …).
    #[error("http error for {url}: {}", causes(source))]
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
    /// The HTTP status, for [`Error::Status`] and [`Error::Unauthorized`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }

    /// Whether the server could not be reached at all (refused, reset, timed out): the signal a
    /// waiter uses to decide that the server is gone.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. } | Self::Timeout { .. } | Self::Http { .. }
        )
    }

    /// Whether the server said the object does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
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

/// Up to `max` bytes of `body` as text, cut on a character boundary.
/// `error` and each of its sources, joined by `: ` (reqwest's own message stops at "error
/// sending request"; the cause, such as a connection closed by the server, is below it).
pub(crate) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

pub(crate) fn excerpt(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    if text.len() <= max {
        return text.into_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// OpenCode error bodies come as `{"name": …}` or `{"_tag": …}`.
pub(crate) fn error_name(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: Option<String>,
        #[serde(rename = "_tag")]
        tag: Option<String>,
    }
    let named: Named = serde_json::from_slice(body).ok()?;
    named.name.or(named.tag)
}

crate::connect::from_connect_error!(Error);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_cuts_on_char_boundary() {
        assert_eq!(excerpt("héllo".as_bytes(), 2), "h…");
        assert_eq!(excerpt(b"short", 100), "short");
    }

    #[test]
    fn error_name_reads_both_shapes() {
        assert_eq!(
            error_name(br#"{"name":"NotFoundError","data":{}}"#).as_deref(),
            Some("NotFoundError")
        );
        assert_eq!(
            error_name(br#"{"_tag":"BadRequest"}"#).as_deref(),
            Some("BadRequest")
        );
        assert_eq!(error_name(b"<html>"), None);
    }
}
