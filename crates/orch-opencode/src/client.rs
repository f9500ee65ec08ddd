//! The HTTP client.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::connect::{Connection, Endpoint};
use crate::error::{Error, error_name, excerpt};
use crate::ids::{MessageId, PermissionId, QuestionId, SessionId};
use crate::types::{
    Agent, CreateSession, Health, ListSessions, MessageCursor, MessagePage, MessageWithParts,
    ModelRef, PermissionReply, PermissionRequest, Prompt, Providers, QuestionRequest, Session,
    SessionStatus, Toast, Todo, UpdateSession,
};

/// Default username of OpenCode's basic auth (`OPENCODE_SERVER_USERNAME`).
pub const DEFAULT_USERNAME: &str = "opencode";

const BODY_EXCERPT: usize = 512;

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: Endpoint,
    directory: Option<String>,
    turn_timeout: Duration,
}

impl ClientBuilder {
    /// A builder for the server at `base_url` (e.g. `http://127.0.0.1:4096`), without
    /// credentials.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            endpoint: Endpoint::new(base_url.into()),
            directory: None,
            turn_timeout: Duration::from_secs(30 * 60),
        }
    }

    /// Reads `OPENCODE_SERVER_PASSWORD` and `OPENCODE_SERVER_USERNAME` (default `opencode`),
    /// the variables the server itself uses.
    pub fn credentials_from_env(mut self) -> Self {
        self.endpoint.credentials_from_env();
        self
    }

    /// Basic-auth credentials.
    pub fn basic_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.endpoint.username = username.into();
        self.endpoint.password = Some(password.into());
        self
    }

    /// Password with the default username.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.endpoint.password = Some(password.into());
        self
    }

    /// Scopes directory-routed requests (session creation and listing, status, permissions,
    /// events, agents, toasts) to `directory` (absolute path).
    pub fn directory(mut self, directory: impl Into<String>) -> Self {
        self.directory = Some(directory.into());
        self
    }

    /// Timeout of ordinary requests (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.timeout = timeout;
        self
    }

    /// Timeout of requests that run a whole turn: synchronous prompt and summarize
    /// (default 30 min).
    pub fn turn_timeout(mut self, timeout: Duration) -> Self {
        self.turn_timeout = timeout;
        self
    }

    /// TCP connect timeout (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.connect_timeout = timeout;
        self
    }

    /// Builds the client (one connection pool, shared by clones and by
    /// [`Client::with_directory`]).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a base URL that does not parse; [`Error::Http`] if the HTTP
    /// stack cannot be initialised.
    pub fn build(self) -> Result<Client, Error> {
        let Connection { http, base, auth } = self.endpoint.open(Duration::from_secs(60))?;
        Ok(Client {
            inner: Arc::new(Shared {
                http,
                base,
                auth,
                timeout: self.endpoint.timeout,
                turn_timeout: self.turn_timeout,
                requests: AtomicU64::new(0),
                response_bytes: AtomicU64::new(0),
            }),
            directory: self.directory.map(Arc::from),
        })
    }
}

struct Shared {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    timeout: Duration,
    turn_timeout: Duration,
    requests: AtomicU64,
    response_bytes: AtomicU64,
}

/// Request counters of a [`Client`] (shared by its clones), see [`Client::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Requests sent (event streams included, failed attempts included).
    pub requests: u64,
    /// Bytes of the response bodies read, after decompression (event streams excluded).
    pub response_bytes: u64,
}

impl ClientStats {
    /// The counts since `earlier` (another snapshot of the same client).
    pub fn since(&self, earlier: &ClientStats) -> ClientStats {
        ClientStats {
            requests: self.requests.saturating_sub(earlier.requests),
            response_bytes: self.response_bytes.saturating_sub(earlier.response_bytes),
        }
    }
}

/// A typed client for one OpenCode server, optionally scoped to one project directory.
///
/// Cheap to clone; clones share one connection pool. Session-routed calls
/// (`/session/{id}/…`) work whatever the directory; directory-scoped calls use the client's
/// directory (see `API.md` §3).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Shared>,
    directory: Option<Arc<str>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base.as_str())
            .field("directory", &self.directory)
            .field("auth", &self.inner.auth.is_some())
            .finish()
    }
}

/// Shorthand for a path segment list.
type Segs<'a> = &'a [&'a str];

impl Client {
    /// A builder; see [`ClientBuilder::new`].
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// The same client (same pool and credentials) scoped to another directory.
    pub fn with_directory(&self, directory: impl AsRef<str>) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            directory: Some(Arc::from(directory.as_ref())),
        }
    }

    /// The directory this client is scoped to.
    pub fn directory(&self) -> Option<&str> {
        self.directory.as_deref()
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Requests sent and response bytes read so far by this client and its clones (all
    /// directories). Take two snapshots and [`ClientStats::since`] to count an operation.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            response_bytes: self.inner.response_bytes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn url(&self, segments: Segs<'_>) -> Url {
        let mut url = self.inner.base.clone();
        {
            // A base URL that can be a base always yields path segments.
            if let Ok(mut segs) = url.path_segments_mut() {
                segs.pop_if_empty();
                segs.extend(segments);
            }
        }
        if let Some(dir) = &self.directory {
            url.query_pairs_mut().append_pair("directory", dir);
        }
        url
    }

    pub(crate) fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let mut rb = self.inner.http.request(method, url);
        if let Some(auth) = &self.inner.auth {
            rb = rb.header(header::AUTHORIZATION, auth.clone());
        }
        rb
    }

    async fn send_raw(
        &self,
        method: Method,
        url: Url,
        body: Option<&(dyn erased::Body + '_)>,
        timeout: Option<Duration>,
    ) -> Result<Answer, Error> {
        let url_text = url.to_string();
        let timeout = timeout.unwrap_or(self.inner.timeout);
        let mut rb = self
            .request(method.clone(), url)
            .timeout(timeout)
            .header(header::ACCEPT, "application/json");
        if let Some(body) = body {
            let bytes = body.to_json().map_err(|e| Error::Decode {
                url: url_text.clone(),
                path: String::new(),
                message: format!("cannot encode request body: {e}"),
            })?;
            rb = rb
                .header(header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let resp = rb
            .send()
            .await
            .map_err(|e| Error::from_reqwest(&url_text, timeout, e))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| Error::from_reqwest(&url_text, timeout, e))?;
        self.inner
            .response_bytes
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized { url: url_text });
        }
        if !status.is_success() {
            return Err(Error::Status {
                method: method_name(&method),
                url: url_text,
                status: status.as_u16(),
                name: error_name(&body),
                body: excerpt(&body, BODY_EXCERPT),
            });
        }
        Ok(Answer {
            headers,
            body,
            url: url_text,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&(dyn erased::Body + '_)>,
        timeout: Option<Duration>,
    ) -> Result<T, Error> {
        self.send_raw(method, url, body, timeout).await?.json()
    }

    /// `GET /global/health`.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn health(&self) -> Result<Health, Error> {
        self.call(Method::GET, self.url(&["global", "health"]), None, None)
            .await
    }

    /// `POST /session`: creates a session in this client's directory.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn create_session(&self, req: &CreateSession) -> Result<Session, Error> {
        self.call(Method::POST, self.url(&["session"]), Some(req), None)
            .await
    }

    /// `GET /session/{id}`.
    ///
    /// # Errors
    /// [`Error::Status`] 404 for an unknown session, and the usual transport errors.
    pub async fn session(&self, id: &SessionId) -> Result<Session, Error> {
        self.call(Method::GET, self.url(&["session", id.as_str()]), None, None)
            .await
    }

    /// `GET /session`: sessions of this directory (and below), most recently updated first.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn list_sessions(&self, query: &ListSessions) -> Result<Vec<Session>, Error> {
        let mut url = self.url(&["session"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(roots) = query.roots {
                q.append_pair("roots", if roots { "true" } else { "false" });
            }
            if let Some(search) = &query.search {
                q.append_pair("search", search);
            }
            if let Some(limit) = query.limit {
                q.append_pair("limit", &limit.to_string());
            }
        }
        self.call(Method::GET, url, None, None).await
    }

    /// `GET /session/{id}/children`.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn children(&self, id: &SessionId) -> Result<Vec<Session>, Error> {
        self.call(
            Method::GET,
            self.url(&["session", id.as_str(), "children"]),
            None,
            None,
        )
        .await
    }

    /// `PATCH /session/{id}`.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn update_session(
        &self,
        id: &SessionId,
        update: &UpdateSession,
    ) -> Result<Session, Error> {
        self.call(
            Method::PATCH,
            self.url(&["session", id.as_str()]),
            Some(update),
            None,
        )
        .await
    }

    /// `DELETE /session/{id}` (deletes children too). Deleting a busy session does not stop
    /// its turn; prefer [`Client::close_session`].
    ///
    /// # Errors
    /// [`Error::Status`] 404 when it does not exist (or was already deleted).
    pub async fn delete_session(&self, id: &SessionId) -> Result<bool, Error> {
        self.call(
            Method::DELETE,
            self.url(&["session", id.as_str()]),
            None,
            None,
        )
        .await
    }

    /// `POST /session/{id}/message`: runs a whole turn and returns its **last** assistant
    /// message. Model errors come back as `Ok` with `info.error` set; use
    /// [`Client::messages`] for the whole turn.
    ///
    /// # Errors
    /// Transport, status and decode errors; an unknown agent or model is a generic HTTP 500.
    pub async fn prompt(
        &self,
        session: &SessionId,
        prompt: &Prompt,
    ) -> Result<MessageWithParts, Error> {
        warn_if_unpinned(prompt);
        self.call(
            Method::POST,
            self.url(&["session", session.as_str(), "message"]),
            Some(prompt),
            Some(self.inner.turn_timeout),
        )
        .await
    }

    /// `POST /session/{id}/prompt_async`: starts a turn and returns at once (204). Subscribe
    /// to the session's events **before** calling this, and keep one prompt in flight per
    /// session (queued prompts share one idle). See [`crate::EventRouter::turn`].
    ///
    /// # Errors
    /// Transport and status errors; validation problems (unknown agent/model) only show up as
    /// `session.error` events.
    pub async fn prompt_async(&self, session: &SessionId, prompt: &Prompt) -> Result<(), Error> {
        warn_if_unpinned(prompt);
        self.send_raw(
            Method::POST,
            self.url(&["session", session.as_str(), "prompt_async"]),
            Some(prompt),
            None,
        )
        .await
        .map(drop)
    }

    /// `GET /session/{id}/message`: all messages, oldest first.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn messages(&self, session: &SessionId) -> Result<Vec<MessageWithParts>, Error> {
        self.call(
            Method::GET,
            self.url(&["session", session.as_str(), "message"]),
            None,
            None,
        )
        .await
    }

    /// `GET /session/{id}/message?limit=N[&before=cursor]`: the newest `limit` messages
    /// (oldest first within the page), or the `limit` messages just older than `before` (the
    /// cursor of the previous page). Much cheaper than [`Client::messages`] on a long
    /// session: the server loads only this page. A `limit` of 0 is sent as 1 (OpenCode
    /// answers `limit=0` with the whole history).
    ///
    /// # Errors
    /// Transport, status and decode errors; 400 for a malformed cursor.
    pub async fn messages_page(
        &self,
        session: &SessionId,
        limit: u32,
        before: Option<&MessageCursor>,
    ) -> Result<MessagePage, Error> {
        let mut url = self.url(&["session", session.as_str(), "message"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("limit", &limit.max(1).to_string());
            if let Some(cursor) = before {
                q.append_pair("before", cursor.as_str());
            }
        }
        let answer = self.send_raw(Method::GET, url, None, None).await?;
        let before = next_cursor(&answer.headers).map(MessageCursor::new);
        Ok(MessagePage {
            messages: answer.json()?,
            before,
        })
    }

    /// `GET /session/{id}/message/{messageID}`.
    ///
    /// # Errors
    /// 404 until the message exists, and the usual errors.
    pub async fn message(
        &self,
        session: &SessionId,
        message: &MessageId,
    ) -> Result<MessageWithParts, Error> {
        self.call(
            Method::GET,
            self.url(&["session", session.as_str(), "message", message.as_str()]),
            None,
            None,
        )
        .await
    }

    /// `GET /session/status` for this directory; idle sessions are absent.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn session_status(&self) -> Result<HashMap<SessionId, SessionStatus>, Error> {
        self.call(Method::GET, self.url(&["session", "status"]), None, None)
            .await
    }

    /// `POST /session/{id}/abort`: ends the running turn (also `true` when idle).
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn abort(&self, session: &SessionId) -> Result<bool, Error> {
        self.call(
            Method::POST,
            self.url(&["session", session.as_str(), "abort"]),
            None,
            None,
        )
        .await
    }

    /// `POST /session/{id}/summarize`: compacts the session (synchronously) with `model`.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn summarize(&self, session: &SessionId, model: &ModelRef) -> Result<bool, Error> {
        self.call(
            Method::POST,
            self.url(&["session", session.as_str(), "summarize"]),
            Some(model),
            Some(self.inner.turn_timeout),
        )
        .await
    }

    /// `GET /session/{id}/todo`.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn todo(&self, session: &SessionId) -> Result<Vec<Todo>, Error> {
        self.call(
            Method::GET,
            self.url(&["session", session.as_str(), "todo"]),
            None,
            None,
        )
        .await
    }

    /// `GET /permission`: pending permission requests of this directory.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn permissions(&self) -> Result<Vec<PermissionRequest>, Error> {
        self.call(Method::GET, self.url(&["permission"]), None, None)
            .await
    }

    /// Answers a permission request through the session-routed endpoint
    /// (`POST /session/{sid}/permissions/{pid}`), which works whatever the directory.
    ///
    /// # Errors
    /// 404 for an unknown or already answered request.
    pub async fn reply_permission(
        &self,
        session: &SessionId,
        request: &PermissionId,
        reply: PermissionReply,
    ) -> Result<bool, Error> {
        #[derive(Serialize)]
        struct Body {
            response: PermissionReply,
        }
        self.call(
            Method::POST,
            self.url(&["session", session.as_str(), "permissions", request.as_str()]),
            Some(&Body { response: reply }),
            None,
        )
        .await
    }

    /// Answers a permission request with optional feedback (`POST /permission/{id}/reply`,
    /// directory-scoped: the client must be scoped to the session's directory). A `reject`
    /// with a message lets the model continue with the feedback.
    ///
    /// # Errors
    /// 404 for an unknown request or a wrong directory.
    pub async fn reply_permission_with_message(
        &self,
        request: &PermissionId,
        reply: PermissionReply,
        message: Option<&str>,
    ) -> Result<bool, Error> {
        #[derive(Serialize)]
        struct Body<'a> {
            reply: PermissionReply,
            #[serde(skip_serializing_if = "Option::is_none")]
            message: Option<&'a str>,
        }
        self.call(
            Method::POST,
            self.url(&["permission", request.as_str(), "reply"]),
            Some(&Body { reply, message }),
            None,
        )
        .await
    }

    /// `GET /question`: pending questions of this directory.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn questions(&self) -> Result<Vec<QuestionRequest>, Error> {
        self.call(Method::GET, self.url(&["question"]), None, None)
            .await
    }

    /// `POST /question/{id}/reply` with one label list per question.
    ///
    /// # Errors
    /// 404 for an unknown request or a wrong directory.
    pub async fn reply_question(
        &self,
        request: &QuestionId,
        answers: Vec<Vec<String>>,
    ) -> Result<bool, Error> {
        #[derive(Serialize)]
        struct Body {
            answers: Vec<Vec<String>>,
        }
        self.call(
            Method::POST,
            self.url(&["question", request.as_str(), "reply"]),
            Some(&Body { answers }),
            None,
        )
        .await
    }

    /// `POST /question/{id}/reject`.
    ///
    /// # Errors
    /// 404 for an unknown request or a wrong directory.
    pub async fn reject_question(&self, request: &QuestionId) -> Result<bool, Error> {
        self.call(
            Method::POST,
            self.url(&["question", request.as_str(), "reject"]),
            None,
            None,
        )
        .await
    }

    /// `GET /agent`: the agents of this directory with their effective permission rules.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn agents(&self) -> Result<Vec<Agent>, Error> {
        self.call(Method::GET, self.url(&["agent"]), None, None)
            .await
    }

    /// `GET /config`: the effective configuration of this directory, as JSON.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn config(&self) -> Result<serde_json::Value, Error> {
        self.call(Method::GET, self.url(&["config"]), None, None)
            .await
    }

    /// `GET /config/providers`.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn providers(&self) -> Result<Providers, Error> {
        self.call(Method::GET, self.url(&["config", "providers"]), None, None)
            .await
    }

    /// `POST /instance/dispose`: reloads this directory's configuration (after installing
    /// agents, for example). Open event streams keep working.
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn dispose_instance(&self) -> Result<bool, Error> {
        self.call(Method::POST, self.url(&["instance", "dispose"]), None, None)
            .await
    }

    /// `POST /tui/show-toast` (emits `tui.toast.show`; harmless without a TUI).
    ///
    /// # Errors
    /// Transport, status and decode errors as in [`Error`].
    pub async fn show_toast(&self, toast: &Toast) -> Result<bool, Error> {
        self.call(
            Method::POST,
            self.url(&["tui", "show-toast"]),
            Some(toast),
            None,
        )
        .await
    }

    /// Shuts a session down safely: aborts a running turn, rejects its pending permission
    /// requests (they would otherwise keep it busy forever), waits until it is idle (polling
    /// `GET /session/status` every 100 ms, at most `settle`), then deletes it.
    ///
    /// # Errors
    /// The first failing request; a 404 on delete is treated as success (already gone).
    pub async fn close_session(&self, id: &SessionId, settle: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + settle;
        let busy = self.session_status().await?.contains_key(id);
        if busy {
            self.abort(id).await?;
        }
        for request in self.permissions().await? {
            if &request.session_id == id {
                match self
                    .reply_permission(id, &request.id, PermissionReply::Reject)
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        while self.session_status().await?.contains_key(id)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        match self.delete_session(id).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens `GET /event` for this directory (used by the router).
    pub(crate) async fn open_event_stream(&self) -> Result<reqwest::Response, Error> {
        let url = self.url(&["event"]);
        let url_text = url.to_string();
        let timeout = self.inner.timeout;
        // No total timeout on the stream itself (it lives for hours); the connect timeout of
        // the pool applies, and the router watches for silence (heartbeats every 10 s).
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .request(Method::GET, url)
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| Error::from_reqwest(&url_text, timeout, e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized { url: url_text });
        }
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(Error::Status {
                method: "GET",
                url: url_text,
                status: status.as_u16(),
                name: error_name(&body),
                body: excerpt(&body, BODY_EXCERPT),
            });
        }
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !ct.starts_with("text/event-stream") {
            return Err(Error::NotJson {
                url: url_text,
                content_type: ct,
                body: String::new(),
            });
        }
        Ok(resp)
    }
}

/// A successful answer.
struct Answer {
    headers: HeaderMap,
    body: bytes::Bytes,
    url: String,
}

impl Answer {
    /// Decodes a JSON body (OpenCode answers unknown routes with `200 text/html`).
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !ct.starts_with("application/json") {
            return Err(Error::NotJson {
                url: self.url.clone(),
                content_type: ct.to_owned(),
                body: excerpt(&self.body, 120),
            });
        }
        decode(&self.url, &self.body)
    }
}

/// The cursor of the next (older) page: `X-Next-Cursor`, or the `before` parameter of the
/// `Link: <…>; rel="next"` header.
fn next_cursor(headers: &HeaderMap) -> Option<String> {
    if let Some(c) = headers.get("x-next-cursor").and_then(|v| v.to_str().ok())
        && !c.is_empty()
    {
        return Some(c.to_owned());
    }
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',')
        .filter(|l| l.contains("rel=\"next\""))
        .find_map(|l| {
            let target = l.split_once('<')?.1.split_once('>')?.0;
            let url = Url::parse(target).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == "before")
                .map(|(_, v)| v.into_owned())
        })
        .filter(|c| !c.is_empty())
}

/// OpenCode quirk: the agent is not sticky (omitted means `build`) and a model is (a bad one
/// poisons the session), so a prompt should always name both.
fn warn_if_unpinned(prompt: &Prompt) {
    if !prompt.no_reply && (prompt.agent.is_none() || prompt.model.is_none()) {
        tracing::warn!(
            message_id = %prompt.message_id,
            "prompt without agent or model: OpenCode falls back to `build` and to the session's last model"
        );
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        _ => "REQUEST",
    }
}

/// Decodes JSON, reporting the path of the bad field.
pub(crate) fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| Error::Decode {
        url: url.to_owned(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Object-safe serialization of request bodies (keeps `call` non-generic in the body type).
mod erased {
    pub(super) trait Body: Sync {
        fn to_json(&self) -> serde_json::Result<Vec<u8>>;
    }

    impl<T: serde::Serialize + Sync> Body for T {
        fn to_json(&self) -> serde_json::Result<Vec<u8>> {
            serde_json::to_vec(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_path_segments_and_directory() {
        let c = Client::builder("http://127.0.0.1:4096")
            .directory("/tmp/a b")
            .build()
            .unwrap();
        let u = c.url(&["session", "ses_1", "message"]);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:4096/session/ses_1/message?directory=%2Ftmp%2Fa+b"
        );
        let c2 = Client::builder("http://h:1/prefix").build().unwrap();
        assert_eq!(c2.url(&["event"]).as_str(), "http://h:1/prefix/event");
    }

    #[test]
    fn decode_reports_the_bad_field_path() {
        let err =
            decode::<Vec<Session>>("u", br#"[{"id":"ses_1","tokens":{"input":"x"}}]"#).unwrap_err();
        match err {
            Error::Decode { path, .. } => assert_eq!(path, "[0].tokens.input"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn next_cursor_prefers_the_header_and_falls_back_to_the_link() {
        let mut h = HeaderMap::new();
        assert_eq!(next_cursor(&h), None);
        h.insert(
            header::LINK,
            HeaderValue::from_static(
                "<http://127.0.0.1:4096/session/ses_1/message?limit=3&before=eyJpZCI6Im1zZ18xIn0%3D>; rel=\"next\"",
            ),
        );
        assert_eq!(next_cursor(&h).as_deref(), Some("eyJpZCI6Im1zZ18xIn0="));
        h.insert("x-next-cursor", HeaderValue::from_static("abc"));
        assert_eq!(next_cursor(&h).as_deref(), Some("abc"));
        let mut prev = HeaderMap::new();
        prev.insert(
            header::LINK,
            HeaderValue::from_static("<http://h/x?before=zzz>; rel=\"prev\""),
        );
        assert_eq!(next_cursor(&prev), None);
    }

    #[test]
    fn stats_count_requests_since_a_snapshot() {
        let a = ClientStats {
            requests: 5,
            response_bytes: 100,
        };
        let b = ClientStats {
            requests: 7,
            response_bytes: 160,
        };
        assert_eq!(
            b.since(&a),
            ClientStats {
                requests: 2,
                response_bytes: 60
            }
        );
    }

    #[test]
    fn invalid_base_url_is_typed() {
        assert!(matches!(
            Client::builder("not a url").build(),
            Err(Error::InvalidUrl { .. })
        ));
    }
}
