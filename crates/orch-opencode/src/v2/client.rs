//! The OpenCode 2 HTTP client.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::ClientStats;
use crate::connect::{Connection, Endpoint};
use crate::error::excerpt;
use crate::ids::{MessageId, PermissionId, SessionId};

use super::error::Error;
use super::message::{Message, MessagePage, MessageQuery, Order};
use super::types::{
    ActiveSession, Agent, Command, CommandInfo, CreateSession, InboxItem, ListSessions,
    LocationInfo, ModelRef, PermissionReply, PermissionRequest, PermissionRule, Prompt,
    SavedPermission, ServerInfo, Session, SessionPage, UpdateSession,
};

const BODY_EXCERPT: usize = 512;

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoint: Endpoint,
}

impl ClientBuilder {
    /// A builder for the server at `base_url` (e.g. `http://127.0.0.1:4096`), without
    /// credentials.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            endpoint: Endpoint::new(base_url.into()),
        }
    }

    /// Reads `OPENCODE_SERVER_PASSWORD` and `OPENCODE_SERVER_USERNAME` (default `opencode`).
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

    /// Timeout of ordinary requests (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.timeout = timeout;
        self
    }

    /// TCP connect timeout (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.endpoint.connect_timeout = timeout;
        self
    }

    /// Builds the client (one connection pool, shared by clones).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a base URL that does not parse; [`Error::Http`] if the HTTP
    /// stack cannot be initialised.
    pub fn build(self) -> Result<Client, Error> {
        // The server closes idle connections after 5 s (`Keep-Alive: timeout=5`).
        let Connection { http, base, auth } = self.endpoint.open(Duration::from_secs(4))?;
        Ok(Client {
            inner: Arc::new(Shared {
                http,
                base,
                auth,
                timeout: self.endpoint.timeout,
                requests: AtomicU64::new(0),
                response_bytes: AtomicU64::new(0),
            }),
        })
    }
}

struct Shared {
    http: reqwest::Client,
    base: Url,
    auth: Option<HeaderValue>,
    timeout: Duration,
    requests: AtomicU64,
    response_bytes: AtomicU64,
}

/// A typed client for one OpenCode 2 server (`/api/*`).
///
/// Cheap to clone; clones share one connection pool, whose connections run on the Tokio
/// runtime that opened them: build one client per runtime. One server serves every directory:
/// a session's directory is set when it is created ([`CreateSession::directory`]) and every
/// `/api/session/{id}/…` route uses it; directory-scoped reads (agents, config, commands,
/// permission requests) take the directory as an argument.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Shared>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("v2::Client")
            .field("base_url", &self.inner.base.as_str())
            .field("auth", &self.inner.auth.is_some())
            .finish()
    }
}

/// The `{"data": …}` envelope of most answers.
#[derive(Deserialize)]
struct Data<T> {
    data: T,
}

/// A successful answer.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
    url: String,
}

impl Answer {
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

    fn data<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(self.json::<Data<T>>()?.data)
    }

    /// A `204` (or any 2xx without a body); a 2xx HTML page is the web UI, not success.
    fn empty(&self) -> Result<(), Error> {
        if self.status == StatusCode::NO_CONTENT || self.body.is_empty() {
            return Ok(());
        }
        self.json::<Value>().map(drop)
    }
}

fn decode<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| Error::Decode {
        url: url.to_owned(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
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

/// `_tag` of an OpenCode 2 error body.
fn error_tag(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Tagged {
        #[serde(rename = "_tag")]
        tag: Option<String>,
        name: Option<String>,
    }
    let t: Tagged = serde_json::from_slice(body).ok()?;
    t.tag.or(t.name)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

impl Client {
    /// A builder; see [`ClientBuilder::new`].
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(base_url)
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Requests sent and response bytes read so far by this client and its clones.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            requests: self.inner.requests.load(Ordering::Relaxed),
            response_bytes: self.inner.response_bytes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            segs.extend(segments);
        }
        url
    }

    fn api(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            segs.push("api");
            segs.extend(segments);
        }
        url
    }

    /// `segments` with `?location[directory]=…` (the deepObject query of directory-scoped
    /// routes).
    fn located(&self, segments: &[&str], directory: Option<&str>) -> Url {
        let mut url = self.api(segments);
        if let Some(dir) = directory {
            url.query_pairs_mut()
                .append_pair("location[directory]", dir);
        }
        url
    }

    pub(crate) fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut rb = self.inner.http.request(method, url);
        if let Some(auth) = &self.inner.auth {
            rb = rb.header(header::AUTHORIZATION, auth.clone());
        }
        rb
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Answer, Error> {
        let url_text = url.to_string();
        let timeout = timeout.unwrap_or(self.inner.timeout);
        let mut rb = self
            .request(method.clone(), url)
            .timeout(timeout)
            .header(header::ACCEPT, "application/json");
        if let Some(bytes) = body {
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
        check(&method, url_text, status, headers, body)
    }

    async fn call<B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        url: Url,
        body: Option<&B>,
    ) -> Result<Answer, Error> {
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| Error::Decode {
                url: url.to_string(),
                path: String::new(),
                message: format!("cannot encode request body: {e}"),
            })?),
            None => None,
        };
        self.send(method, url, bytes, None).await
    }

    async fn get(&self, url: Url) -> Result<Answer, Error> {
        self.call::<()>(Method::GET, url, None).await
    }

    /// `GET` of any path of the server, expecting JSON: the escape hatch for routes this
    /// client does not wrap. A non-`/api` path answers the web UI (`200 text/html`), which is
    /// [`Error::NotJson`], never a success; an unknown `/api` path is [`Error::NoRoute`].
    ///
    /// # Errors
    /// As in [`Error`].
    pub async fn get_json(&self, path: &str) -> Result<Value, Error> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.get(self.url(&segments)).await?.json()
    }

    /// `GET /api/info`: version and process id (no `{"data"}` envelope). Also the health
    /// check: it answers 200 as soon as the server listens.
    ///
    /// # Errors
    /// [`Error::Starting`] while the server starts, [`Error::NotJson`] from an OpenCode 1
    /// server (its web UI), and the usual transport errors.
    pub async fn info(&self) -> Result<ServerInfo, Error> {
        self.get(self.api(&["info"])).await?.json()
    }

    /// The server's version (`2.1.2`), from [`Client::info`].
    ///
    /// # Errors
    /// As [`Client::info`].
    pub async fn version(&self) -> Result<String, Error> {
        Ok(self.info().await?.version)
    }

    /// `GET /api/location`: what the server makes of `directory` (its project).
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn location(&self, directory: &str) -> Result<LocationInfo, Error> {
        self.get(self.located(&["location"], Some(directory)))
            .await?
            .json()
    }

    /// `POST /api/session`.
    ///
    /// # Errors
    /// 404 `SessionNotFoundError` for an unknown parent, 400 `InvalidRequestError` for a bad
    /// body, a bare 500 for a relative directory.
    pub async fn create_session(&self, req: &CreateSession) -> Result<Session, Error> {
        self.call(Method::POST, self.api(&["session"]), Some(req))
            .await?
            .data()
    }

    /// `GET /api/session/{id}`.
    ///
    /// # Errors
    /// 404 `SessionNotFoundError` ([`Error::is_not_found`]).
    pub async fn session(&self, id: &SessionId) -> Result<Session, Error> {
        self.get(self.api(&["session", id.as_str()])).await?.data()
    }

    /// `GET /api/session`: newest first, every directory unless filtered.
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn list_sessions(&self, query: &ListSessions) -> Result<Vec<Session>, Error> {
        Ok(self.session_page(query).await?.sessions)
    }

    /// [`Client::list_sessions`] with the page's cursors.
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn session_page(&self, query: &ListSessions) -> Result<SessionPage, Error> {
        let mut url = self.api(&["session"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(p) = &query.parent_id {
                q.append_pair("parentID", p.as_str());
            } else if query.roots {
                q.append_pair("parentID", "null");
            }
            if let Some(d) = &query.directory {
                q.append_pair("directory", d);
            }
            if let Some(s) = &query.search {
                q.append_pair("search", s);
            }
            if let Some(l) = query.limit {
                q.append_pair("limit", &l.to_string());
            }
            if let Some(a) = query.archived {
                q.append_pair("archived", if a { "true" } else { "false" });
            }
        }
        self.get(url).await?.json()
    }

    /// The children of `id` (`GET /api/session?parentID=`; there is no `/children` route).
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn children(&self, id: &SessionId) -> Result<Vec<Session>, Error> {
        self.list_sessions(&ListSessions::children_of(id.clone()))
            .await
    }

    /// `PATCH /api/session/{id}`.
    ///
    /// # Errors
    /// 404 for an unknown session.
    pub async fn update_session(&self, id: &SessionId, req: &UpdateSession) -> Result<(), Error> {
        self.call(
            Method::PATCH,
            self.api(&["session", id.as_str()]),
            Some(req),
        )
        .await?
        .empty()
    }

    /// Replaces the session's permission rules (`PATCH` with `permissions`; `[]` clears
    /// them). OpenCode 1 appended; OpenCode 2 replaces.
    ///
    /// # Errors
    /// 404 for an unknown session.
    pub async fn set_permissions(
        &self,
        id: &SessionId,
        rules: Vec<PermissionRule>,
    ) -> Result<(), Error> {
        self.update_session(id, &UpdateSession::new().permissions(rules))
            .await
    }

    /// `DELETE /api/session/{id}`: deletes it and its children; a running session is
    /// interrupted first.
    ///
    /// # Errors
    /// 404 for an unknown (or already deleted) session.
    pub async fn delete_session(&self, id: &SessionId) -> Result<(), Error> {
        self.call::<()>(Method::DELETE, self.api(&["session", id.as_str()]), None)
            .await?
            .empty()
    }

    /// `POST /api/session/{id}/agent`: the sticky agent of the next executions (not
    /// validated: an unknown agent fails the next turn).
    ///
    /// # Errors
    /// 404 for an unknown session.
    pub async fn set_agent(&self, id: &SessionId, agent: &str) -> Result<(), Error> {
        let body = serde_json::json!({ "agent": agent });
        self.call(
            Method::POST,
            self.api(&["session", id.as_str(), "agent"]),
            Some(&body),
        )
        .await?
        .empty()
    }

    /// `POST /api/session/{id}/model`: the sticky model (not validated either).
    ///
    /// # Errors
    /// 404 for an unknown session.
    pub async fn set_model(&self, id: &SessionId, model: &ModelRef) -> Result<(), Error> {
        let body = serde_json::json!({ "model": model });
        self.call(
            Method::POST,
            self.api(&["session", id.as_str(), "model"]),
            Some(&body),
        )
        .await?
        .empty()
    }

    /// `POST /api/session/{id}/prompt`: admits the input durably and schedules the turn
    /// (the session is in [`Client::active_sessions`] when this returns); the turn runs
    /// asynchronously (see [`crate::EventRouter::turn_v2`]).
    ///
    /// Re-sending the same prompt (same id, same session) is safe: the **stored** record
    /// comes back and nothing is admitted twice (after the turn ended, the server runs one
    /// more empty execution, without a model call).
    ///
    /// # Errors
    /// 409 `ConflictError` ([`Error::is_conflict`]) when the id is used by another session
    /// or another stored entry; 400 when it does not start with `msg_`; 404 for an unknown
    /// session.
    pub async fn prompt(&self, id: &SessionId, prompt: &Prompt) -> Result<InboxItem, Error> {
        self.call(
            Method::POST,
            self.api(&["session", id.as_str(), "prompt"]),
            Some(prompt),
        )
        .await?
        .data()
    }

    /// [`Client::prompt`], re-sent with the same id after a transport error (refused, reset,
    /// timed out), at most `attempts` times in all: the server admits an input once per id,
    /// so a re-send after a lost answer returns the stored record instead of a second turn.
    ///
    /// # Errors
    /// The last error, or the first that is not a transport error.
    pub async fn prompt_resending(
        &self,
        id: &SessionId,
        prompt: &Prompt,
        attempts: u32,
    ) -> Result<InboxItem, Error> {
        let mut tries = 1;
        loop {
            match self.prompt(id, prompt).await {
                Err(e) if e.is_unreachable() && tries < attempts.max(1) => {
                    tracing::debug!(error = %e, message = %prompt.id, "re-sending a prompt");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }

    /// `POST /api/session/{id}/command`: runs a configured or plugin command (`name` without
    /// a slash). Its user message id is server-made and not returned.
    ///
    /// # Errors
    /// 404 `CommandNotFoundError` for an unknown command.
    pub async fn command(&self, id: &SessionId, command: &Command) -> Result<(), Error> {
        self.call(
            Method::POST,
            self.api(&["session", id.as_str(), "command"]),
            Some(command),
        )
        .await?
        .empty()
    }

    /// `POST /api/session/{id}/interrupt`: `true` when an execution of this server process
    /// was interrupted, `false` on an idle session. Pending permission requests of the
    /// session are dropped silently.
    ///
    /// # Errors
    /// 404 for an unknown session.
    pub async fn interrupt(&self, id: &SessionId) -> Result<bool, Error> {
        #[derive(Deserialize)]
        struct Interrupted {
            interrupted: bool,
        }
        let answer: Interrupted = self
            .call::<()>(
                Method::POST,
                self.api(&["session", id.as_str(), "interrupt"]),
                None,
            )
            .await?
            .json()?;
        Ok(answer.interrupted)
    }

    /// `GET /api/session/{id}/message`: a page of history.
    ///
    /// # Errors
    /// 404 for an unknown session; 400 for a limit over 200.
    pub async fn messages(
        &self,
        id: &SessionId,
        query: &MessageQuery,
    ) -> Result<MessagePage, Error> {
        let mut url = self.api(&["session", id.as_str(), "message"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(l) = query.limit {
                q.append_pair("limit", &l.to_string());
            }
            // A cursor carries its own order (the server refuses both).
            if query.cursor.is_none() {
                match query.order {
                    Some(Order::Asc) => {
                        q.append_pair("order", "asc");
                    }
                    Some(Order::Desc) => {
                        q.append_pair("order", "desc");
                    }
                    None => {}
                }
            }
            if let Some(k) = &query.kind {
                q.append_pair("type", k);
            }
            if let Some(c) = &query.cursor {
                q.append_pair("cursor", c);
            }
        }
        self.get(url).await?.json()
    }

    /// `GET /api/session/{id}/message/{messageID}`. An input not delivered yet is a 404.
    ///
    /// # Errors
    /// 404 `MessageNotFoundError`.
    pub async fn message(&self, id: &SessionId, message: &MessageId) -> Result<Message, Error> {
        self.get(self.api(&["session", id.as_str(), "message", message.as_str()]))
            .await?
            .data()
    }

    /// `GET /api/session/{id}/inbox`: inputs admitted but not delivered yet.
    ///
    /// # Errors
    /// 404 for an unknown session.
    pub async fn inbox(&self, id: &SessionId) -> Result<Vec<InboxItem>, Error> {
        self.get(self.api(&["session", id.as_str(), "inbox"]))
            .await?
            .data()
    }

    /// `DELETE /api/session/{id}/inbox/{inboxID}`: withdraws an undelivered input (so that
    /// a later prompt does not carry it along). Idempotent.
    ///
    /// # Errors
    /// Transport and status errors.
    pub async fn cancel_inbox(&self, id: &SessionId, inbox: &MessageId) -> Result<(), Error> {
        self.call::<()>(
            Method::DELETE,
            self.api(&["session", id.as_str(), "inbox", inbox.as_str()]),
            None,
        )
        .await?
        .empty()
    }

    /// `GET /api/session/active`: the sessions with a running execution in this server
    /// process, every directory.
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn active_sessions(&self) -> Result<HashMap<SessionId, ActiveSession>, Error> {
        self.get(self.api(&["session", "active"])).await?.data()
    }

    /// Whether `id` has a running execution.
    ///
    /// # Errors
    /// As [`Client::active_sessions`].
    pub async fn is_active(&self, id: &SessionId) -> Result<bool, Error> {
        Ok(self.active_sessions().await?.contains_key(id))
    }

    /// `GET /api/session/{id}/permission`: the session's pending permission requests.
    ///
    /// # Errors
    /// 404 for an unknown session.
    pub async fn permissions(&self, id: &SessionId) -> Result<Vec<PermissionRequest>, Error> {
        self.get(self.api(&["session", id.as_str(), "permission"]))
            .await?
            .data()
    }

    /// `GET /api/permission/request?location[directory]=…`: pending requests of one
    /// directory.
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn permission_requests(
        &self,
        directory: &str,
    ) -> Result<Vec<PermissionRequest>, Error> {
        self.get(self.located(&["permission", "request"], Some(directory)))
            .await?
            .data()
    }

    /// `POST /api/session/{id}/permission/{requestID}/reply`. Use
    /// [`PermissionReply::once`] or [`PermissionReply::reject_with`]: a reject without a
    /// message ends the whole turn, and `always` saves a project-wide permission.
    ///
    /// # Errors
    /// 404 `PermissionNotFoundError` for a request already answered (or dropped by an
    /// interrupt).
    pub async fn reply_permission(
        &self,
        id: &SessionId,
        request: &PermissionId,
        reply: &PermissionReply,
    ) -> Result<(), Error> {
        self.call(
            Method::POST,
            self.api(&[
                "session",
                id.as_str(),
                "permission",
                request.as_str(),
                "reply",
            ]),
            Some(reply),
        )
        .await?
        .empty()
    }

    /// `GET /api/permission/saved`: the permissions `always` replies saved.
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn saved_permissions(&self) -> Result<Vec<SavedPermission>, Error> {
        self.get(self.api(&["permission", "saved"])).await?.data()
    }

    /// `DELETE /api/permission/saved/{id}`.
    ///
    /// # Errors
    /// 404 for an unknown id.
    pub async fn delete_saved_permission(&self, id: &str) -> Result<(), Error> {
        self.call::<()>(Method::DELETE, self.api(&["permission", "saved", id]), None)
            .await?
            .empty()
    }

    /// `GET /api/config?location[directory]=…`: the config sources of a directory, in V2
    /// shape (a bare array: `{type: "document", path, info}` / `{type: "directory", path}`).
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn config(&self, directory: Option<&str>) -> Result<Vec<Value>, Error> {
        self.get(self.located(&["config"], directory)).await?.json()
    }

    /// `GET /api/agent?location[directory]=…`.
    ///
    /// The first request for a directory the server has not loaded yet answers an **empty**
    /// list (the catalogue loads in the background); there are always built-in agents, so an
    /// empty list is asked again, for up to 3 s.
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn agents(&self, directory: Option<&str>) -> Result<Vec<Agent>, Error> {
        self.catalogue(&["agent"], directory).await
    }

    /// `GET /api/command?location[directory]=…` (asked again while empty, as
    /// [`Client::agents`]: `init` and `review` are built in).
    ///
    /// # Errors
    /// Transport, status and decode errors.
    pub async fn commands(&self, directory: Option<&str>) -> Result<Vec<CommandInfo>, Error> {
        self.catalogue(&["command"], directory).await
    }

    /// A catalogue list, asked again while it is empty (a location still loading).
    async fn catalogue<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        directory: Option<&str>,
    ) -> Result<Vec<T>, Error> {
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let list: Vec<T> = self.get(self.located(segments, directory)).await?.data()?;
            if !list.is_empty() || tokio::time::Instant::now() >= until {
                return Ok(list);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens `GET /api/event` (global: every directory).
    pub(crate) async fn open_event_stream(&self) -> Result<reqwest::Response, Error> {
        let url = self.api(&["event"]);
        let url_text = url.to_string();
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .request(Method::GET, url)
            .header(header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| Error::from_reqwest(&url_text, self.inner.timeout, e))?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let body = resp.bytes().await.unwrap_or_default();
            return match check(&Method::GET, url_text, status, headers, body) {
                Err(e) => Err(e),
                Ok(_) => unreachable!("a non-success status is an error"),
            };
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

/// Turns a response into an [`Answer`] or a typed error.
fn check(
    method: &Method,
    url: String,
    status: StatusCode,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Answer, Error> {
    if status == StatusCode::UNAUTHORIZED {
        return Err(Error::Unauthorized { url });
    }
    if status == StatusCode::SERVICE_UNAVAILABLE
        && body.windows(16).any(|w| w == b"service_starting")
    {
        return Err(Error::Starting {
            url,
            retry_after: retry_after(&headers),
        });
    }
    if status == StatusCode::NOT_FOUND && body.is_empty() {
        return Err(Error::NoRoute {
            method: method_name(method),
            url,
        });
    }
    if !status.is_success() {
        return Err(Error::Status {
            method: method_name(method),
            url,
            status: status.as_u16(),
            tag: error_tag(&body),
            body: excerpt(&body, BODY_EXCERPT),
        });
    }
    Ok(Answer {
        status,
        headers,
        body,
        url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_under_api_with_encoded_segments_and_location_queries() {
        let c = Client::builder("http://127.0.0.1:4096").build().unwrap();
        assert_eq!(
            c.api(&["session", "ses_1", "message"]).as_str(),
            "http://127.0.0.1:4096/api/session/ses_1/message"
        );
        assert_eq!(
            c.located(&["agent"], Some("/tmp/a b")).as_str(),
            "http://127.0.0.1:4096/api/agent?location%5Bdirectory%5D=%2Ftmp%2Fa+b"
        );
        let p = Client::builder("http://h:1/prefix").build().unwrap();
        assert_eq!(p.api(&["event"]).as_str(), "http://h:1/prefix/api/event");
    }

    fn answer(status: u16, ct: Option<&str>, body: &'static [u8]) -> Result<Answer, Error> {
        let mut headers = HeaderMap::new();
        if let Some(ct) = ct {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        }
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        check(
            &Method::GET,
            "http://h/api/x".into(),
            StatusCode::from_u16(status).unwrap(),
            headers,
            bytes::Bytes::from_static(body),
        )
    }

    #[test]
    fn answers_are_classified() {
        assert!(matches!(answer(404, None, b""), Err(Error::NoRoute { .. })));
        let e = answer(
            404,
            Some("application/json"),
            br#"{"_tag":"SessionNotFoundError","message":"x","sessionID":"ses_1"}"#,
        )
        .err()
        .unwrap();
        assert!(e.is_not_found());
        assert_eq!(e.tag(), Some("SessionNotFoundError"));
        let e = answer(
            409,
            Some("application/json"),
            br#"{"_tag":"ConflictError","message":"x","resource":"msg_1"}"#,
        )
        .err()
        .unwrap();
        assert!(e.is_conflict());
        match answer(
            503,
            Some("application/json"),
            br#"{"code":"service_starting"}"#,
        ) {
            Err(Error::Starting { retry_after, .. }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(1)));
            }
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(
            answer(401, None, b""),
            Err(Error::Unauthorized { .. })
        ));
        // The web UI is never a success.
        let html = answer(200, Some("text/html"), b"<!doctype html>").unwrap();
        assert!(matches!(html.json::<Value>(), Err(Error::NotJson { .. })));
        assert!(matches!(html.empty(), Err(Error::NotJson { .. })));
        let none = answer(204, None, b"").unwrap();
        assert!(none.empty().is_ok());
        let data = answer(200, Some("application/json"), br#"{"data":[1,2]}"#).unwrap();
        assert_eq!(data.data::<Vec<u8>>().unwrap(), vec![1, 2]);
    }
}
