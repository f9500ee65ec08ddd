//! A typed client for a real OpenCode server (`opencode serve`), both generations: OpenCode 1
//! (`opencode-ai`, verified against 1.18.33; the items below) and OpenCode 2
//! (`@opencode/cli`, verified against 2.1.2; the [`v2`] module, on the same event router).
//!
//! The pieces an orchestrator needs to drive coding-agent sessions:
//!
//! * [`Client`]: typed requests and responses for health, sessions (with per-session
//!   permission rules), synchronous and asynchronous prompts, messages, status, abort,
//!   compaction, todos, permissions, questions, agents, config/providers and toasts. One
//!   connection pool, optional directory scoping (one server serves many project
//!   directories), basic auth from `OPENCODE_SERVER_PASSWORD`. Every failure is a typed
//!   [`Error`]: connection refused, timeout, 401, HTTP status with a body excerpt, a 2xx that
//!   is not JSON (OpenCode answers unknown routes with its web UI), decode error with the
//!   path of the bad field. Unknown fields are ignored and unknown enum values kept
//!   (`Other(String)`).
//! * [`EventRouter`]: one `/event` stream per directory serving many [`Subscription`]s (one
//!   session, or everything, filtered by [`KindSet`]). Each event's envelope is decoded once
//!   ([`RawEvent`], without a JSON parser, equal to a parser's reading of any valid JSON
//!   object); typed payloads ([`Event`]) only when a subscriber asks. Buffers are
//!   bounded: a subscriber that falls behind loses events and is told so
//!   ([`Missed::Lagged`]); stream drops are reconnected with backoff and signalled
//!   ([`Missed::Disconnected`], [`Missed::Reconnected`]). The events of one network chunk
//!   are routed under one lock and wake each waiting subscriber once.
//! * [`SseDecoder`]: the router's incremental, byte-level `text/event-stream` decoder (every
//!   line ending, multi-line data, `event`/`id`/`retry`, comments, BOM, events split at any
//!   byte), zero-copy for events inside one chunk and bounded by a maximum event size
//!   ([`SseError::EventTooLarge`]).
//! * [`TurnWaiter`] / [`EventRouter::run_turn`] / [`EventRouter::wait_idle`]: the completion
//!   recipe of OpenCode's API (subscribe first, our own message id, filter by session, errors
//!   arrive before the message is finalised, a lone `session.error` means no idle will come),
//!   with polling fallback while the stream is down and typed outcomes ([`TurnOutput`] with
//!   tokens and cost, or a [`TurnError`]: failed with the upstream status and the provider's
//!   `Retry-After`, aborted, deadline with the pending permission, server lost, session
//!   deleted). OpenCode's own retries of failing model calls arrive live as [`RetryNotice`]s
//!   ([`TurnWaiter::notify_retries`]) and are counted in both outcomes. No wait is unbounded.
//! * [`ServerBuilder`] / [`OpencodeServer`]: spawns `opencode serve` on a free loopback port
//!   with a random password, waits for its "listening" line, captures its output, stops it on
//!   drop.
//! * [`v2`]: the OpenCode 2 client ([`v2::Client`], typed [`v2::Error`]s), its typed events
//!   ([`RawEvent::parse_v2`], [`v2::Event`]; routed by the same [`EventRouter`] made with
//!   [`EventRouter::connect_v2`], durable replays dropped by `(aggregateID, seq)`), and its
//!   completion recipe ([`EventRouter::turn_v2`] / [`EventRouter::run_turn_v2`] →
//!   [`v2::TurnOutput`] or [`v2::TurnError`], shaped like OpenCode 1's), and the user's own
//!   background service ([`v2::attach_service`]).
//! * [`Generation`]: which OpenCode a binary is ([`find_opencode`], [`find_generation`]) and
//!   which a running server is ([`Generation::of_server`], [`Client::detect_generation`]);
//!   [`OpencodeServer::generation`] of a launched one.
//! * [`ConfigInstaller`]: installs agent definitions into `opencode.jsonc`/`opencode.json`
//!   as text splices that keep comments and formatting (a UTF-8 BOM included; a repeated key
//!   edited where `JSON.parse` reads it, at its last occurrence), with backups, atomic
//!   writes, verification, rollback, idempotence, dry runs and an uninstall that gives the
//!   original bytes back.
//!
//! Routing and typed decoding, runnable without a server:
//!
//! ```
//! use orch_opencode::{Delivery, Event, EventRouter, RawEvent, RouterConfig, SessionStatus};
//!
//! let router = EventRouter::detached(RouterConfig::default());
//! let mut sub = router.subscribe_session("ses_a");
//! router.publish(RawEvent::parse(
//!     r#"{"id":"evt_1","type":"session.status","properties":{"sessionID":"ses_a","status":{"type":"busy"}}}"#.into(),
//! )?);
//! router.publish(RawEvent::parse(
//!     r#"{"id":"evt_2","type":"session.idle","properties":{"sessionID":"ses_b"}}"#.into(),
//! )?);
//! let Some(Delivery::Event(raw)) = sub.try_recv() else { panic!("expected an event") };
//! assert_eq!(raw.session_id(), Some("ses_a"));
//! match raw.decode()? {
//!     Event::SessionStatus { status, .. } => assert_eq!(status, SessionStatus::Busy),
//!     other => panic!("{other:?}"),
//! }
//! assert!(sub.try_recv().is_none()); // ses_b's event went elsewhere
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A turn against a real server (what `orch-agents` does):
//!
//! ```no_run
//! # async fn turn() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use orch_opencode::*;
//!
//! let server = ServerBuilder::new().project_dir("/path/to/project").start_async().await?;
//! let client = server.client().with_directory("/path/to/project");
//! let events = EventRouter::connect(client.clone(), RouterConfig::default()).await?;
//! let session = client
//!     .create_session(
//!         &CreateSession::titled("worker: item 3")
//!             .permission(PermissionRule::edit_only(["src/lib.rs"])),
//!     )
//!     .await?;
//! let prompt = Prompt::text("Implement item 3")
//!     .agent("build")
//!     .model(ModelRef::new("anthropic", "claude-sonnet-4"));
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
//! match events.run_turn(&session.id, &prompt, deadline).await {
//!     Ok(out) => println!("{} ({} output tokens, ${})", out.text(), out.tokens.output, out.cost),
//!     Err(TurnError::Deadline { .. }) => { client.abort(&session.id).await?; }
//!     Err(e) => return Err(e.into()),
//! }
//! client.close_session(&session.id, Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! The same turn on OpenCode 2 (agent and model are sticky settings of the session, the
//! directory is the session's, and the prompt carries our own message id):
//!
//! ```no_run
//! # async fn turn() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use orch_opencode::{EventRouter, Generation, RouterConfig, ServerBuilder, v2};
//!
//! let server = ServerBuilder::new().generation(Generation::V2).start_async().await?;
//! let client = server.client_v2();
//! let events = EventRouter::connect_v2(client.clone(), RouterConfig::default()).await?;
//! let session = client
//!     .create_session(
//!         &v2::CreateSession::titled("worker: item 3")
//!             .directory("/path/to/project")
//!             .agent("build")
//!             .model(v2::ModelRef::new("anthropic", "claude-sonnet-4"))
//!             .permissions(v2::PermissionRule::edit_only(["src/lib.rs"])),
//!     )
//!     .await?;
//! let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
//! match events.run_turn_v2(&session.id, &v2::Prompt::text("Implement item 3"), deadline).await {
//!     Ok(out) => println!("{} ({} output tokens, ${})", out.text(), out.tokens.output, out.cost),
//!     Err(v2::TurnError::Failed { error, .. }) => println!("failed: {error}"),
//!     Err(e) => return Err(e.into()), // at the deadline the session was interrupted
//! }
//! client.delete_session(&session.id).await?;
//! # Ok(()) }
//! ```
// The README's examples are compiled as doc tests (as a new crate would use them).
#![cfg_attr(doctest, doc = include_str!("../README.md"))]
#![forbid(unsafe_code)]

mod client;
mod connect;
mod detect;
mod envelope;
mod error;
mod event;
mod generation;
mod ids;
mod install;
mod jsonc_edit;
mod retry;
mod router;
mod server;
mod sse;
mod types;
pub mod v2;
mod wait;

pub use client::{Client, ClientBuilder, ClientStats, DEFAULT_USERNAME};
pub use detect::DetectedServer;
pub use error::Error;
pub use event::{Event, EventKind, EventParseError, KindSet, RawEvent};
pub use generation::{
    FindError, Generation, OpencodeBinary, find_generation, find_opencode, installed_binary,
};
pub use ids::{EventId, MessageId, PartId, PermissionId, QuestionId, SessionId};
pub use install::{
    CONFIG_FILES, ConfigInstaller, InstallEntry, InstallError, InstallReport, InstallSpec,
};
pub use retry::RetryNotice;
pub use router::{
    Delivery, DisconnectReason, EventRouter, Missed, RouterConfig, RouterStats, StreamState,
    Subscription,
};
pub use server::{OpencodeServer, ServerBuilder, ServerError};
pub use sse::{DEFAULT_MAX_EVENT_SIZE, SseDecoder, SseError, SseEvent};
pub use types::{
    Agent, ArchiveTime, CacheTokens, CreateSession, ErrorData, ErrorName, Finish, Health,
    ListSessions, MessageCursor, MessageError, MessageInfo, MessagePage, MessageTime,
    MessageWithParts, ModelRef, Part, PartKind, PartTime, PermissionAction, PermissionReply,
    PermissionRequest, PermissionRule, Prompt, PromptPart, Provider, Providers, Question,
    QuestionOption, QuestionRequest, Role, Session, SessionModel, SessionStatus, SessionTime,
    Toast, ToastVariant, Todo, Tokens, ToolRef, ToolState, ToolStatus, UpdateSession,
};
pub use wait::{DEFAULT_SILENCE_PROBE, TurnError, TurnOutput, TurnWaiter};
