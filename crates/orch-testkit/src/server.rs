//! The HTTP server: rule selection, answers, records, and its own runtime thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use orch_opencode::Generation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::dialect;
use crate::error::StartError;
use crate::request::RequestView;
use crate::script::{Exhausted, Fault, Reply, Rule, Script};
use crate::wire;

/// How a recorded request was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// Text only.
    Text,
    /// Tool calls (with the tool names).
    ToolCalls {
        /// The names of the tools called, in order.
        tools: Vec<String>,
    },
    /// An HTTP error with this status.
    Error {
        /// The HTTP status sent.
        status: u16,
    },
    /// A broken stream.
    Fault {
        /// Which fault.
        fault: Fault,
    },
    /// No rule matched: answered 400.
    NoMatch,
    /// The body was not a chat-completions request: answered 400.
    BadRequest {
        /// What was wrong.
        reason: String,
    },
}

/// One request the server saw, in arrival order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Arrival number, from 0.
    pub seq: u64,
    /// Arrival time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// OpenCode's `x-session-id` header.
    pub session: Option<String>,
    /// What the rules matched on (absent for an unreadable body).
    pub view: Option<RequestView>,
    /// The rule that answered.
    pub rule: Option<String>,
    /// Which reply of that rule's sequence (after `times` expansion).
    pub reply_index: Option<usize>,
    /// How it was answered.
    pub outcome: Outcome,
    /// The generation the reply was shaped for: the model's fixed one, or else the one the
    /// request's tools showed; `None` when the reply went out as written.
    #[serde(default, with = "dialect::serde_generation")]
    pub generation: Option<Generation>,
    /// The request body as received.
    pub body: Value,
}

struct RuleState {
    rule: Rule,
    used: usize,
    used_by_session: HashMap<String, usize>,
}

struct Selected {
    rule: String,
    index: usize,
    reply: Reply,
}

pub(crate) struct Shared {
    rules: Mutex<Vec<RuleState>>,
    models: Vec<String>,
    generation: Option<Generation>,
    records: Mutex<Vec<RecordedRequest>>,
    recorded: Condvar,
    count: watch::Sender<usize>,
    seq: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(script: Script, generation: Option<Generation>) -> Self {
        let models = script.model_ids();
        Shared {
            rules: Mutex::new(script.rules.into_iter().map(RuleState::new).collect()),
            models,
            generation,
            records: Mutex::new(Vec::new()),
            recorded: Condvar::new(),
            count: watch::Sender::new(0),
            seq: AtomicU64::new(0),
        }
    }

    /// Picks the first matching rule with a reply left and advances its sequence.
    fn select(&self, view: &RequestView) -> Option<Selected> {
        let mut rules = lock(&self.rules);
        for state in rules.iter_mut() {
            if !view.matches(&state.rule) {
                continue;
            }
            let len = state.rule.expanded_len();
            let used = if state.rule.per_session {
                let key = view.session.clone().unwrap_or_default();
                state.used_by_session.entry(key).or_insert(0)
            } else {
                &mut state.used
            };
            let index = match state.rule.exhausted {
                _ if *used < len => *used,
                Exhausted::RepeatLast => len - 1,
                Exhausted::Cycle => *used % len,
                Exhausted::Skip => continue,
            };
            *used += 1;
            let reply = state.rule.expanded(index)?.clone();
            return Some(Selected {
                rule: state.rule.name.clone(),
                index,
                reply,
            });
        }
        None
    }

    fn record(&self, record: RecordedRequest) {
        let mut records = lock(&self.records);
        records.push(record);
        let len = records.len();
        drop(records);
        self.recorded.notify_all();
        self.count.send_replace(len);
    }
}

impl RuleState {
    fn new(rule: Rule) -> Self {
        RuleState {
            rule,
            used: 0,
            used_by_session: HashMap::new(),
        }
    }
}

/// Settings of a [`ScriptedModel`] beyond its script: the port and the OpenCode generation
/// it answers.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start`"]
pub struct ScriptedModelBuilder {
    script: Script,
    port: u16,
    generation: Option<Generation>,
}

impl ScriptedModelBuilder {
    /// A model serving `script` on any free port, answering each request in the shape of the
    /// generation its offered tools show.
    pub fn new(script: Script) -> Self {
        ScriptedModelBuilder {
            script,
            port: 0,
            generation: None,
        }
    }

    /// Serves on this port of `127.0.0.1` (0, the default: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Answers every request as OpenCode `generation` expects: tool calls get its tool names
    /// and argument keys ([`crate::ToolCall::for_generation`]). Without this setting each
    /// request is answered for the generation whose tools it offers (`shell`/`subagent` for
    /// V2, `bash`/`task` for V1), and a request that offers none of them gets the calls as
    /// written.
    pub fn generation(mut self, generation: Generation) -> Self {
        self.generation = Some(generation);
        self
    }

    /// Like [`ScriptedModelBuilder::generation`], `None` meaning "the request's own".
    pub fn generation_opt(mut self, generation: Option<Generation>) -> Self {
        self.generation = generation;
        self
    }

    /// Validates the script and starts serving.
    ///
    /// # Errors
    /// [`StartError::Script`] for an invalid script, [`StartError::Io`] when the socket
    /// (e.g. a port in use) or the runtime cannot be set up.
    pub fn start(self) -> Result<ScriptedModel, StartError> {
        ScriptedModel::serve(self)
    }
}

/// A running scripted model server on `127.0.0.1`.
///
/// It runs on a thread of its own with its own Tokio runtime, so it can be started from plain
/// synchronous code or from any runtime, and outlives the runtimes of individual tests. It
/// stops when dropped (open streams, stalled ones included, are cut).
///
/// It speaks to both OpenCode generations: see [`ScriptedModelBuilder::generation`].
pub struct ScriptedModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ScriptedModel {
    /// Validates `script` and serves it on a random free port of `127.0.0.1`.
    ///
    /// # Errors
    /// [`StartError::Script`] for an invalid script, [`StartError::Io`] when the socket or the
    /// runtime cannot be set up.
    pub fn start(script: Script) -> Result<Self, StartError> {
        ScriptedModelBuilder::new(script).start()
    }

    /// Like [`ScriptedModel::start`] on a given port (0 = any free port).
    ///
    /// # Errors
    /// As [`ScriptedModel::start`]; a port in use is [`StartError::Io`].
    pub fn start_on(script: Script, port: u16) -> Result<Self, StartError> {
        ScriptedModelBuilder::new(script).port(port).start()
    }

    /// A builder, for the port and the generation.
    pub fn builder(script: Script) -> ScriptedModelBuilder {
        ScriptedModelBuilder::new(script)
    }

    fn serve(settings: ScriptedModelBuilder) -> Result<Self, StartError> {
        let ScriptedModelBuilder {
            script,
            port,
            generation,
        } = settings;
        script.validate()?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared::new(script, generation));
        let app = router(Arc::clone(&shared));
        let (shutdown, stop) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("scripted-model-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    // A stream is many small writes: with Nagle's algorithm each waited for
                    // the client's delayed ACK, ~40 ms per reply on loopback.
                    let listener = listener.tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop => {}
                    }
                });
                // Cancels every connection and stream task, stalled ones included.
                runtime.shutdown_timeout(Duration::ZERO);
            })?;
        Ok(ScriptedModel {
            addr,
            shared,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// The generation every request is answered for, when fixed
    /// ([`ScriptedModelBuilder::generation`]); `None`: each request's own.
    pub fn generation(&self) -> Option<Generation> {
        self.shared.generation
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL to give clients: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Appends a rule, after the script's rules and earlier additions.
    ///
    /// # Errors
    /// [`crate::ScriptError::Invalid`] when the rule cannot answer; nothing is added then.
    pub fn add_rule(&self, rule: Rule) -> Result<(), crate::ScriptError> {
        rule.validate()?;
        lock(&self.shared.rules).push(RuleState::new(rule));
        Ok(())
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.records).clone()
    }

    /// Takes every request recorded so far, leaving none: for long runs (benchmarks,
    /// soak tests) that would otherwise keep every request body.
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        let taken = std::mem::take(&mut *lock(&self.shared.records));
        self.shared.count.send_replace(0);
        taken
    }

    /// The requests of one OpenCode session, in arrival order.
    pub fn requests_for_session(&self, session: &str) -> Vec<RecordedRequest> {
        lock(&self.shared.records)
            .iter()
            .filter(|r| r.session.as_deref() == Some(session))
            .cloned()
            .collect()
    }

    /// Blocks until `done` holds for the records, or `timeout` passes; returns whether it held.
    pub fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[RecordedRequest]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        let mut records = lock(&self.shared.records);
        loop {
            if done(&records) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            records = self
                .shared
                .recorded
                .wait_timeout(records, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits (async) until `done` holds for the records, or `timeout` passes.
    pub async fn wait_until_async(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[RecordedRequest]) -> bool,
    ) -> bool {
        let mut changes = self.shared.count.subscribe();
        let check = async {
            loop {
                if done(&lock(&self.shared.records)) {
                    return;
                }
                if changes.changed().await.is_err() {
                    // The server is gone; nothing more will arrive.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, check).await.is_ok()
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/_scripted/requests", get(recorded))
        .route("/_scripted/rules", post(add_rule))
        .with_state(shared)
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    let data: Vec<Value> = shared
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "orch-testkit"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn recorded(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(lock(&shared.records).clone()).into_response()
}

async fn add_rule(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let rule: Rule = match serde_json::from_slice(&body) {
        Ok(rule) => rule,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad rule: {e}")).into_response(),
    };
    if let Err(e) = rule.validate() {
        return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
    }
    lock(&shared.rules).push(RuleState::new(rule));
    StatusCode::NO_CONTENT.into_response()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn invalid_request(message: String) -> Response {
    let body = json!({"error": {"message": message, "type": "invalid_request_error", "code": 400}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let seq = shared.seq.fetch_add(1, Ordering::Relaxed);
    let session = headers
        .get("x-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut record = RecordedRequest {
        seq,
        at_ms: now_ms(),
        session: session.clone(),
        view: None,
        rule: None,
        reply_index: None,
        outcome: Outcome::NoMatch,
        generation: None,
        body: Value::Null,
    };
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("the body is not JSON: {e}"))
        .and_then(|json| {
            let view = RequestView::from_body(&json, session).map_err(|e| e.0);
            record.body = json;
            view
        });
    let view = match parsed {
        Ok(view) => view,
        Err(reason) => {
            let message = format!("scripted-model: request #{seq} is not a chat request: {reason}");
            record.outcome = Outcome::BadRequest { reason };
            shared.record(record);
            return invalid_request(message);
        }
    };
    let Some(selected) = shared.select(&view) else {
        let message = format!(
            "scripted-model: no rule matched request #{seq} ({})",
            view.describe()
        );
        record.view = Some(view);
        shared.record(record);
        return invalid_request(message);
    };
    let generation = shared.generation.or(view.generation);
    let reply = dialect::answer_for(selected.reply, generation, view.kind);
    record.generation = generation;
    record.outcome = match (&reply.error, reply.fault) {
        (Some(error), _) => Outcome::Error {
            status: error.status,
        },
        (None, Some(fault)) => Outcome::Fault { fault },
        (None, None) if reply.tool_calls.is_empty() => Outcome::Text,
        (None, None) => Outcome::ToolCalls {
            tools: reply.tool_calls.iter().map(|c| c.name.clone()).collect(),
        },
    };
    record.rule = Some(selected.rule);
    record.reply_index = Some(selected.index);
    let stream = view.stream;
    let model = if view.model.is_empty() {
        crate::script::DEFAULT_MODEL.to_owned()
    } else {
        view.model.clone()
    };
    let usage = wire::usage_for(&reply, view.prompt_tokens);
    record.view = Some(view);
    shared.record(record);

    if reply.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
    }
    let id = format!("chatcmpl-{seq}");
    if let Some(error) = &reply.error {
        let mut response = (
            StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(wire::error_body(error)),
        )
            .into_response();
        if let Some(seconds) = error.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        return response;
    }
    if stream {
        stream_response(id, model, reply, usage)
    } else {
        whole_response(&id, &model, &reply, usage).await
    }
}

fn stream_response(
    id: String,
    model: String,
    reply: Reply,
    usage: crate::script::Usage,
) -> Response {
    let gap = Duration::from_millis(reply.chunk_delay_ms);
    if gap.is_zero() && matches!(reply.fault, None | Some(Fault::Cut)) {
        // Nothing to wait for between the events: one body, one write.
        let complete = reply.fault.is_none();
        let mut body = String::new();
        for event in wire::stream_events(&id, &model, &reply, usage, complete) {
            body.push_str("data: ");
            body.push_str(&event);
            body.push_str("\n\n");
        }
        return event_stream(Body::from(body));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        let events = match reply.fault {
            None => wire::stream_events(&id, &model, &reply, usage, true),
            Some(Fault::Cut) => wire::stream_events(&id, &model, &reply, usage, false),
            Some(Fault::Stall) | Some(Fault::StreamError) => vec![wire::opening_event(&id, &model)],
        };
        for (i, event) in events.iter().enumerate() {
            if i > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            let frame = Bytes::from(format!("data: {event}\n\n"));
            if tx.send(Ok(frame)).await.is_err() {
                return; // the client went away
            }
        }
        match reply.fault {
            Some(Fault::Stall) => tx.closed().await,
            Some(Fault::StreamError) => {
                let message = reply.text.as_deref().unwrap_or("scripted stream error");
                let frame = format!("data: {}\n\n", wire::stream_error_event(message));
                let _ = tx.send(Ok(Bytes::from(frame))).await;
            }
            _ => {}
        }
    });
    event_stream(Body::from_stream(ReceiverStream::new(rx)))
}

fn event_stream(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn whole_response(
    id: &str,
    model: &str,
    reply: &Reply,
    usage: crate::script::Usage,
) -> Response {
    match reply.fault {
        None => axum::Json(wire::completion_body(id, model, reply, usage)).into_response(),
        Some(Fault::Stall) => std::future::pending().await,
        Some(Fault::Cut) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"id\":\"{id}\",\"choices\":[{{"),
        )
            .into_response(),
        Some(Fault::StreamError) => {
            let message = reply.text.as_deref().unwrap_or("scripted stream error");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": message, "type": "server_error"}})),
            )
                .into_response()
        }
    }
}
