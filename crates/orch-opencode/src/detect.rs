//! Telling the generation of a running server.
//!
//! Both generations have routes under `/api`, so their presence says nothing. What does:
//!
//! | probe | OpenCode 2 (2.1.2) | OpenCode 1 (1.18.33) |
//! |---|---|---|
//! | `GET /api/info` | `200 application/json {"version":"2.1.2","pid",…}` | `200 text/html` (web UI) |
//! | `GET /global/health` | `200 text/html` | `200 {"healthy":true,"version":"1.18.33"}` |
//!
//! [`Client::detect_generation`] asks `/api/info` first, then `/global/health`.

use std::time::Duration;

use reqwest::Method;
use reqwest::header;
use serde::Deserialize;

use crate::client::{Client, ClientBuilder};
use crate::error::{Error, error_name, excerpt};
use crate::generation::Generation;

/// What a running server is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DetectedServer {
    /// Its generation.
    pub generation: Generation,
    /// Its version (`2.1.2`, `1.18.33`).
    pub version: String,
}

/// How often a server that answers "starting" (`503 service_starting`) is asked again.
const STARTING_TRIES: u32 = 20;

impl Client {
    /// Tells the generation and version of the server behind this client (its URL and
    /// credentials; a directory scope does not matter): `GET /api/info`, which only
    /// OpenCode 2 answers with JSON, then `GET /global/health`, which only OpenCode 1 does.
    /// A server still starting (`503`) is asked again for up to ≈20 s.
    ///
    /// # Errors
    /// [`Error::Unauthorized`] for wrong credentials, the transport errors, and
    /// [`Error::NotJson`] when neither probe answers JSON (not an OpenCode server).
    pub async fn detect_generation(&self) -> Result<DetectedServer, Error> {
        #[derive(Deserialize)]
        struct Info {
            version: String,
            pid: u64,
        }
        let info_url = self
            .base_url()
            .join("api/info")
            .map_err(|e| Error::InvalidUrl {
                url: self.base_url().to_string(),
                message: e.to_string(),
            })?;
        for _ in 0..STARTING_TRIES {
            let (status, ct, retry, body) = self.probe(info_url.clone()).await?;
            if status == 503 && body.windows(16).any(|w| w == b"service_starting") {
                tokio::time::sleep(retry.unwrap_or(Duration::from_secs(1))).await;
                continue;
            }
            if (200..300).contains(&status)
                && ct.starts_with("application/json")
                && let Ok(info) = serde_json::from_slice::<Info>(&body)
            {
                let _ = info.pid;
                return Ok(DetectedServer {
                    generation: Generation::V2,
                    version: info.version,
                });
            }
            break;
        }
        let health = self.health().await?;
        Ok(DetectedServer {
            generation: Generation::V1,
            version: health.version,
        })
    }

    /// One GET: status, content type, `Retry-After`, body. 401 is an error.
    async fn probe(
        &self,
        url: reqwest::Url,
    ) -> Result<(u16, String, Option<Duration>, bytes::Bytes), Error> {
        let url_text = url.to_string();
        let timeout = Duration::from_secs(10);
        let resp = self
            .request(Method::GET, url)
            .timeout(timeout)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| Error::from_reqwest(&url_text, timeout, e))?;
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::from_reqwest(&url_text, timeout, e))?;
        if status == 401 {
            return Err(Error::Unauthorized { url: url_text });
        }
        if status >= 500 && status != 503 {
            return Err(Error::Status {
                method: "GET",
                url: url_text,
                status,
                name: error_name(&body),
                body: excerpt(&body, 256),
            });
        }
        Ok((status, ct, retry, body))
    }
}

impl Generation {
    /// The generation and version of the server at `base_url`, with basic-auth
    /// `credentials` (`(username, password)`), see [`Client::detect_generation`].
    ///
    /// # Errors
    /// As [`Client::detect_generation`], and [`Error::InvalidUrl`].
    pub async fn of_server(
        base_url: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<DetectedServer, Error> {
        let mut builder = ClientBuilder::new(base_url);
        if let Some((user, password)) = credentials {
            builder = builder.basic_auth(user, password);
        }
        builder.build()?.detect_generation().await
    }
}
