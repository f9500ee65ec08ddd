//! What the clients of both generations share: the endpoint a builder collects (address,
//! credentials, timeouts) and the HTTP connection it opens.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::client::DEFAULT_USERNAME;

/// The settings a client builder collects, whatever the generation.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) base_url: String,
    pub(crate) username: String,
    pub(crate) password: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
}

/// An opened endpoint: one connection pool, the base URL (ending in `/`) and the basic-auth
/// header, if any.
pub(crate) struct Connection {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) auth: Option<HeaderValue>,
}

/// Why an endpoint could not be opened; each generation's `Error` has a variant for each
/// ([`from_connect_error`]).
#[derive(Debug)]
pub(crate) enum ConnectError {
    InvalidUrl { url: String, message: String },
    Http { url: String, source: reqwest::Error },
}

/// `From<ConnectError>` for an error type with `InvalidUrl { url, message }` and
/// `Http { url, source }` variants (both generations' `Error`).
macro_rules! from_connect_error {
    ($error:ty) => {
        impl From<$crate::connect::ConnectError> for $error {
            fn from(e: $crate::connect::ConnectError) -> Self {
                match e {
                    $crate::connect::ConnectError::InvalidUrl { url, message } => {
                        Self::InvalidUrl { url, message }
                    }
                    $crate::connect::ConnectError::Http { url, source } => {
                        Self::Http { url, source }
                    }
                }
            }
        }
    };
}
pub(crate) use from_connect_error;

impl Endpoint {
    /// `base_url` without credentials, 30 s requests, 5 s connect.
    pub(crate) fn new(base_url: String) -> Self {
        Self {
            base_url,
            username: DEFAULT_USERNAME.to_owned(),
            password: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// `OPENCODE_SERVER_PASSWORD` / `OPENCODE_SERVER_USERNAME`, when set and not empty (the
    /// variables the server itself reads).
    pub(crate) fn credentials_from_env(&mut self) {
        if let Ok(p) = std::env::var("OPENCODE_SERVER_PASSWORD")
            && !p.is_empty()
        {
            self.password = Some(p);
        }
        if let Ok(u) = std::env::var("OPENCODE_SERVER_USERNAME")
            && !u.is_empty()
        {
            self.username = u;
        }
    }

    /// Opens the connection pool. Idle connections are dropped after `pool_idle` (below the
    /// server's own keep-alive, so a request never goes out on a connection being closed).
    pub(crate) fn open(&self, pool_idle: Duration) -> Result<Connection, ConnectError> {
        let mut base = Url::parse(&self.base_url).map_err(|e| ConnectError::InvalidUrl {
            url: self.base_url.clone(),
            message: e.to_string(),
        })?;
        if base.cannot_be_a_base() {
            return Err(ConnectError::InvalidUrl {
                url: self.base_url.clone(),
                message: "not a base url".into(),
            });
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .pool_idle_timeout(pool_idle)
            .tcp_nodelay(true)
            .build()
            .map_err(|source| ConnectError::Http {
                url: self.base_url.clone(),
                source,
            })?;
        let auth = self.password.as_ref().map(|p| {
            let token = base64_encode(format!("{}:{}", self.username, p).as_bytes());
            // Base64 output is always a valid header value.
            HeaderValue::from_str(&format!("Basic {token}"))
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        });
        Ok(Connection { http, base, auth })
    }
}

/// Standard base64 (for the basic-auth header) — 20 lines instead of a dependency.
pub(crate) fn base64_encode(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"opencode:s3cret"), "b3BlbmNvZGU6czNjcmV0");
    }

    #[test]
    fn a_base_url_gets_its_trailing_slash_and_bad_ones_are_refused() {
        let ok = Endpoint::new("http://127.0.0.1:4096/prefix".into())
            .open(Duration::from_secs(4))
            .unwrap();
        assert_eq!(ok.base.as_str(), "http://127.0.0.1:4096/prefix/");
        assert!(ok.auth.is_none());
        for bad in ["not a url", "mailto:someone@example.com"] {
            assert!(matches!(
                Endpoint::new(bad.into()).open(Duration::from_secs(4)),
                Err(ConnectError::InvalidUrl { .. })
            ));
        }
    }
}
