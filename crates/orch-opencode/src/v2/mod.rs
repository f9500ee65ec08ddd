//! The OpenCode 2 client (`@opencode/cli`, verified against 2.1.2).
//!
//! OpenCode 2 keeps the ideas and changes every shape: all routes live under `/api/*` and
//! wrap their payload in `{"data": …}`; a session's directory is fixed at creation; prompts
//! carry only text and **our own message id**, and are durably admitted to the session's
//! inbox (agent and model are sticky switches of the session); a turn is an *execution* that
//! ends with `session.execution.succeeded|failed|interrupted` (there is no `session.idle`);
//! events carry `data` and, when durable, a per-session `seq`; tools take V2 shapes
//! (`write {path, content}`, `shell {command}`, `subagent`); permission rules are
//! `{action, resource, effect}` and replies `once|always|reject` with an optional message.
//!
//! * [`Client`]: typed requests with typed [`Error`]s. A non-`/api` route answers the web
//!   UI (`200 text/html`): that is [`Error::NotJson`], never a success; an unknown `/api`
//!   route is [`Error::NoRoute`] (404, empty body); OpenCode's `{"_tag": …}` errors are
//!   [`Error::Status`] with the tag.
//! * Events: the same [`crate::EventRouter`] and SSE decoder as OpenCode 1
//!   ([`crate::EventRouter::connect_v2`]), routed by `data.sessionID`, filtered with
//!   [`KindSet`], durable replays dropped by `(aggregateID, seq)`;
//!   [`crate::RawEvent::decode_v2`] gives an [`Event`].
//! * [`TurnWaiter`] ([`crate::EventRouter::turn_v2`], [`crate::EventRouter::run_turn_v2`]):
//!   the completion recipe, with [`TurnOutput`] / [`TurnError`] shaped like OpenCode 1's.
//! * [`attach_service`]: the user's own background service (`service.json`).
//!
//! Traps the types encode: [`PermissionReply::reject`] without a message ends the whole turn
//! (`interrupted`, `shutdown`); [`Decision::Always`] saves a project-wide permission (never a
//! default here); an interrupt drops pending permission requests; OpenCode 2's `build` agent
//! writes outside the project without asking ([`PermissionRule::edit_only`] denies it).

mod client;
mod error;
mod event;
mod message;
mod service;
mod types;
mod wait;

pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use event::{Event, EventKind, InterruptReason, KindSet};
pub use message::{
    AssistantMessage, Content, EntryTime, Finish, IdleMessage, Message, MessagePage, MessageQuery,
    Order, PageCursor, Snapshot, ToolCall, ToolContent, ToolState, ToolStatus, UserMessage,
};
pub use service::{ServiceError, ServiceFile, attach_service};
pub use types::{
    ActiveSession, Agent, AgentMode, Command, CommandInfo, CreateSession, Decision, Delivery,
    Effect, ErrorResponse, InboxItem, ListSessions, Location, LocationInfo, ModelRef, Outcome,
    PermissionReply, PermissionRequest, PermissionRule, PermissionSource, Prompt, SavedPermission,
    ServerInfo, Session, SessionPage, SessionTime, StructuredError, UpdateSession,
};
pub use wait::{TurnError, TurnOutput, TurnWaiter};

/// Captured OpenCode 2.1.2 streams, for the tests of this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    const STREAMS: &[&str] = &[
        include_str!("../../tests/data/v2/events-one-turn-2.1.2.sse"),
        include_str!("../../tests/data/v2/events-write-turn.sse"),
        include_str!("../../tests/data/v2/events-429-retries-then-failed.sse"),
        include_str!("../../tests/data/v2/events-503-twice-then-ok.sse"),
        include_str!("../../tests/data/v2/events-interrupt.sse"),
        include_str!("../../tests/data/v2/events-permission-reject.sse"),
        include_str!("../../tests/data/v2/events-permission-reject-with-message.sse"),
        include_str!("../../tests/data/v2/events-plugin-command.sse"),
        include_str!("../../tests/data/v2/events-subagent.sse"),
    ];

    /// Every `data:` payload of the captured streams.
    pub(crate) fn samples() -> Vec<String> {
        STREAMS
            .iter()
            .flat_map(|s| s.lines())
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_owned)
            .collect()
    }
}
