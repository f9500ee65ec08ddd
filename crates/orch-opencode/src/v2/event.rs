//! Typed OpenCode 2 events (`GET /api/event`).
//!
//! Every event is `{"id":"evt_…","created":ms,"type":"…","location"?:{directory},
//! "data":{…},"durable"?:{"aggregateID":"ses_…","seq":N,"version":V}}`, one SSE `data:` line
//! each; heartbeats are SSE comments. [`crate::RawEvent::parse_v2`] reads the envelope;
//! [`crate::RawEvent::decode_v2`] gives an [`Event`]. Kinds this client does not type decode
//! to [`Event::Other`] with their data.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::event::{EventParseError, RawEvent};
use crate::ids::{MessageId, PermissionId, SessionId};
use crate::types::Tokens;

use super::message::{Finish, ToolContent};
use super::types::{Decision, ModelRef, PermissionRequest, PermissionRule, StructuredError};

macro_rules! event_kinds {
    ($($variant:ident = $text:literal),+ $(,)?) => {
        /// The `type` of an OpenCode 2 event. [`EventKind::Other`] covers every type this
        /// client does not know.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum EventKind {
            $(#[doc = concat!("`", $text, "`")] $variant,)+
            /// Any other type (see [`RawEvent::kind_str`] for its name).
            Other,
        }

        impl EventKind {
            /// Every known kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)+];

            /// Classifies a `type` string.
            pub fn from_type(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    _ => Self::Other,
                }
            }

            /// The `type` string (`"other"` for [`EventKind::Other`]).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other => "other",
                }
            }
        }
    };
}

event_kinds! {
    ServerConnected = "server.connected",
    SessionCreated = "session.created",
    SessionRenamed = "session.renamed",
    SessionArchived = "session.archived",
    SessionMetadataUpdated = "session.metadata.updated",
    SessionPermissions = "session.permissions",
    SessionAgentSelected = "session.agent.selected",
    SessionModelSelected = "session.model.selected",
    SessionDeleted = "session.deleted",
    SessionMoved = "session.moved",
    InboxEnqueued = "session.inbox.enqueued",
    InboxDelivered = "session.inbox.delivered",
    InboxCancelled = "session.inbox.cancelled",
    Synthetic = "session.synthetic",
    InstructionsUpdated = "session.instructions.updated",
    ExecutionStarted = "session.execution.started",
    ExecutionSucceeded = "session.execution.succeeded",
    ExecutionFailed = "session.execution.failed",
    ExecutionInterrupted = "session.execution.interrupted",
    StepStarted = "session.step.started",
    StepStreamed = "session.step.streamed",
    StepEnded = "session.step.ended",
    StepFailed = "session.step.failed",
    RetryScheduled = "session.retry.scheduled",
    TextStarted = "session.text.started",
    TextDelta = "session.text.delta",
    TextEnded = "session.text.ended",
    ReasoningStarted = "session.reasoning.started",
    ReasoningDelta = "session.reasoning.delta",
    ReasoningEnded = "session.reasoning.ended",
    ToolInputStarted = "session.tool.input.started",
    ToolInputEnded = "session.tool.input.ended",
    ToolCalled = "session.tool.called",
    ToolProgress = "session.tool.progress",
    ToolSuccess = "session.tool.success",
    ToolFailed = "session.tool.failed",
    UsageUpdated = "session.usage.updated",
    CompactionStarted = "session.compaction.started",
    CompactionEnded = "session.compaction.ended",
    PermissionAsked = "permission.asked",
    PermissionReplied = "permission.replied",
    ShellCreated = "shell.created",
    ShellExited = "shell.exited",
}

impl EventKind {
    /// The bit of this kind in a [`KindSet`].
    pub fn bit(self) -> u64 {
        1u64 << (self as u32)
    }

    /// The three kinds that end an execution.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            EventKind::ExecutionSucceeded
                | EventKind::ExecutionFailed
                | EventKind::ExecutionInterrupted
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of OpenCode 2 [`EventKind`]s, to filter subscriptions
/// ([`crate::EventRouter::subscribe_v2`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KindSet(u64);

impl KindSet {
    /// Every kind, including unknown ones.
    pub const ALL: KindSet = KindSet(u64::MAX);

    /// No kind.
    pub const fn empty() -> Self {
        KindSet(0)
    }

    /// The kinds a V2 turn waiter follows: inbox, execution, steps and retries, usage,
    /// permissions and deletion (no text or tool deltas).
    pub fn turn() -> Self {
        Self::of(&[
            EventKind::InboxEnqueued,
            EventKind::InboxDelivered,
            EventKind::InboxCancelled,
            EventKind::ExecutionStarted,
            EventKind::ExecutionSucceeded,
            EventKind::ExecutionFailed,
            EventKind::ExecutionInterrupted,
            EventKind::StepStarted,
            EventKind::StepEnded,
            EventKind::StepFailed,
            EventKind::RetryScheduled,
            EventKind::PermissionAsked,
            EventKind::PermissionReplied,
            EventKind::SessionDeleted,
        ])
    }

    /// The set of `kinds`.
    pub fn of(kinds: &[EventKind]) -> Self {
        KindSet(kinds.iter().fold(0, |acc, k| acc | k.bit()))
    }

    /// Adds a kind.
    #[must_use]
    pub fn with(self, kind: EventKind) -> Self {
        KindSet(self.0 | kind.bit())
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: EventKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub(crate) fn bits(self) -> u64 {
        self.0
    }
}

/// Why an execution was interrupted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InterruptReason {
    /// `POST …/interrupt`, or the session was deleted.
    User,
    /// A permission rejected without a message, or the server shutting down.
    Shutdown,
    /// Another reason (verbatim).
    Other(String),
    /// Not known (the end was read from history, which has no reason).
    Unknown,
}

impl InterruptReason {
    fn from_str(s: Option<&str>) -> Self {
        match s {
            Some("user") => InterruptReason::User,
            Some("shutdown") => InterruptReason::Shutdown,
            Some(other) => InterruptReason::Other(other.to_owned()),
            None => InterruptReason::Unknown,
        }
    }
}

impl fmt::Display for InterruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterruptReason::User => f.write_str("user"),
            InterruptReason::Shutdown => f.write_str("shutdown"),
            InterruptReason::Other(s) => f.write_str(s),
            InterruptReason::Unknown => f.write_str("unknown"),
        }
    }
}

/// A typed OpenCode 2 event. Session events carry their session id; kinds without a typed
/// variant are [`Event::Other`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The first event of a stream: the subscription exists.
    ServerConnected,
    /// A session was created (also a sub-agent's child session).
    SessionCreated {
        /// Session.
        session_id: SessionId,
        /// Its parent.
        parent_id: Option<SessionId>,
        /// Title.
        title: Option<String>,
        /// Directory.
        directory: Option<String>,
    },
    /// A session was renamed.
    SessionRenamed {
        /// Session.
        session_id: SessionId,
        /// The new title.
        title: String,
    },
    /// A session's rules were replaced.
    SessionPermissions {
        /// Session.
        session_id: SessionId,
        /// The whole new ruleset.
        permissions: Vec<PermissionRule>,
    },
    /// The sticky agent changed.
    AgentSelected {
        /// Session.
        session_id: SessionId,
        /// The new agent.
        agent: String,
    },
    /// The sticky model changed.
    ModelSelected {
        /// Session.
        session_id: SessionId,
        /// The new model.
        model: ModelRef,
    },
    /// A session was deleted.
    SessionDeleted {
        /// Session.
        session_id: SessionId,
    },
    /// An input was admitted to the session's inbox.
    InboxEnqueued {
        /// Session.
        session_id: SessionId,
        /// The input's message id (ours, for a prompt that gave one).
        inbox_id: MessageId,
    },
    /// An input was delivered to the running execution: that execution carries it.
    InboxDelivered {
        /// Session.
        session_id: SessionId,
        /// The input's message id.
        inbox_id: MessageId,
    },
    /// An input was withdrawn from the inbox.
    InboxCancelled {
        /// Session.
        session_id: SessionId,
        /// The input's message id.
        inbox_id: MessageId,
    },
    /// An execution started.
    ExecutionStarted {
        /// Session.
        session_id: SessionId,
    },
    /// An execution finished.
    ExecutionSucceeded {
        /// Session.
        session_id: SessionId,
    },
    /// An execution failed.
    ExecutionFailed {
        /// Session.
        session_id: SessionId,
        /// Why (upstream status and `Retry-After` for provider errors).
        error: StructuredError,
    },
    /// An execution was interrupted.
    ExecutionInterrupted {
        /// Session.
        session_id: SessionId,
        /// Why.
        reason: InterruptReason,
    },
    /// A model step started (also re-sent for each retry of the same step).
    StepStarted {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// Agent.
        agent: Option<String>,
        /// Model.
        model: Option<ModelRef>,
    },
    /// A model step ended.
    StepEnded {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// Why.
        finish: Option<Finish>,
        /// Tokens of the step.
        tokens: Tokens,
        /// Cost of the step.
        cost: f64,
        /// Files it changed.
        files: Vec<String>,
    },
    /// A model step failed.
    StepFailed {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// Why.
        error: StructuredError,
    },
    /// OpenCode will retry a failed model call.
    RetryScheduled {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// The number of the **next** attempt (the first retry says 2).
        attempt: u32,
        /// When, in epoch milliseconds.
        at: u64,
        /// The error that is retried.
        error: StructuredError,
    },
    /// A chunk of streamed text (volatile; coalesced).
    TextDelta {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// The chunk.
        delta: String,
    },
    /// A text part ended.
    TextEnded {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// The whole text.
        text: String,
    },
    /// The model called a tool.
    ToolCalled {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// The call id.
        call_id: String,
        /// The arguments.
        input: Value,
    },
    /// A tool call succeeded.
    ToolSuccess {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// The call id.
        call_id: String,
        /// The output.
        content: Vec<ToolContent>,
    },
    /// A tool call failed (the turn goes on: the model gets the error).
    ToolFailed {
        /// Session.
        session_id: SessionId,
        /// The step's assistant entry.
        assistant_message_id: MessageId,
        /// The call id.
        call_id: String,
        /// Why.
        error: StructuredError,
    },
    /// The session's cumulative usage (volatile).
    UsageUpdated {
        /// Session.
        session_id: SessionId,
        /// Cumulative tokens.
        tokens: Tokens,
        /// Cumulative cost.
        cost: f64,
    },
    /// A permission request (volatile).
    PermissionAsked(Box<PermissionRequest>),
    /// A permission request was answered (volatile).
    PermissionReplied {
        /// Session.
        session_id: SessionId,
        /// The request.
        request_id: PermissionId,
        /// The decision.
        reply: Decision,
    },
    /// Any other kind, with its `data`.
    Other {
        /// `type`.
        kind: String,
        /// `data`.
        data: Value,
    },
}

impl Event {
    /// The session the event is about, when it names one.
    pub fn session_id(&self) -> Option<&SessionId> {
        use Event as E;
        match self {
            E::SessionCreated { session_id, .. }
            | E::SessionRenamed { session_id, .. }
            | E::SessionPermissions { session_id, .. }
            | E::AgentSelected { session_id, .. }
            | E::ModelSelected { session_id, .. }
            | E::SessionDeleted { session_id }
            | E::InboxEnqueued { session_id, .. }
            | E::InboxDelivered { session_id, .. }
            | E::InboxCancelled { session_id, .. }
            | E::ExecutionStarted { session_id }
            | E::ExecutionSucceeded { session_id }
            | E::ExecutionFailed { session_id, .. }
            | E::ExecutionInterrupted { session_id, .. }
            | E::StepStarted { session_id, .. }
            | E::StepEnded { session_id, .. }
            | E::StepFailed { session_id, .. }
            | E::RetryScheduled { session_id, .. }
            | E::TextDelta { session_id, .. }
            | E::TextEnded { session_id, .. }
            | E::ToolCalled { session_id, .. }
            | E::ToolSuccess { session_id, .. }
            | E::ToolFailed { session_id, .. }
            | E::UsageUpdated { session_id, .. }
            | E::PermissionReplied { session_id, .. } => Some(session_id),
            E::PermissionAsked(p) => Some(&p.session_id),
            E::ServerConnected | E::Other { .. } => None,
        }
    }
}

#[derive(Deserialize)]
struct Sid {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
}

#[derive(Deserialize)]
struct Created {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "parentID", default)]
    parent_id: Option<SessionId>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    location: Option<super::types::Location>,
}

#[derive(Deserialize)]
struct Renamed {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(default)]
    title: String,
}

#[derive(Deserialize)]
struct Permissions {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(default)]
    permissions: Vec<PermissionRule>,
}

#[derive(Deserialize)]
struct AgentSel {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    agent: String,
}

#[derive(Deserialize)]
struct ModelSel {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    model: ModelRef,
}

#[derive(Deserialize)]
struct Inbox {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "inboxID")]
    inbox_id: MessageId,
}

#[derive(Deserialize)]
struct Failed {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(default)]
    error: StructuredError,
}

#[derive(Deserialize)]
struct Interrupted {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Step {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "assistantMessageID")]
    assistant_message_id: MessageId,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    model: Option<ModelRef>,
    #[serde(default)]
    finish: Option<Finish>,
    #[serde(default)]
    tokens: Tokens,
    #[serde(default)]
    cost: f64,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    error: StructuredError,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    at: u64,
    #[serde(default)]
    delta: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Tool {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "assistantMessageID")]
    assistant_message_id: MessageId,
    id: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    content: Vec<ToolContent>,
    #[serde(default)]
    error: StructuredError,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(default)]
    tokens: Tokens,
    #[serde(default)]
    cost: f64,
}

#[derive(Deserialize)]
struct Replied {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "requestID")]
    request_id: PermissionId,
    reply: Decision,
}

impl RawEvent {
    /// Decodes an OpenCode 2 event ([`RawEvent::parse_v2`]); an OpenCode 1 event is
    /// [`Event::Other`] with its properties.
    ///
    /// # Errors
    /// [`EventParseError::Payload`] when a typed kind carries data of the wrong shape.
    pub fn decode_v2(&self) -> Result<Event, EventParseError> {
        use EventKind as K;
        if self.generation() != crate::Generation::V2 {
            return Ok(self.other());
        }
        Ok(match self.kind_v2() {
            K::ServerConnected => Event::ServerConnected,
            K::SessionCreated => {
                let p: Created = self.properties()?;
                Event::SessionCreated {
                    session_id: p.session_id,
                    parent_id: p.parent_id,
                    title: p.title,
                    directory: p.location.map(|l| l.directory),
                }
            }
            K::SessionRenamed => {
                let p: Renamed = self.properties()?;
                Event::SessionRenamed {
                    session_id: p.session_id,
                    title: p.title,
                }
            }
            K::SessionPermissions => {
                let p: Permissions = self.properties()?;
                Event::SessionPermissions {
                    session_id: p.session_id,
                    permissions: p.permissions,
                }
            }
            K::SessionAgentSelected => {
                let p: AgentSel = self.properties()?;
                Event::AgentSelected {
                    session_id: p.session_id,
                    agent: p.agent,
                }
            }
            K::SessionModelSelected => {
                let p: ModelSel = self.properties()?;
                Event::ModelSelected {
                    session_id: p.session_id,
                    model: p.model,
                }
            }
            K::SessionDeleted => Event::SessionDeleted {
                session_id: self.properties::<Sid>()?.session_id,
            },
            K::InboxEnqueued | K::InboxDelivered | K::InboxCancelled => {
                let p: Inbox = self.properties()?;
                let (session_id, inbox_id) = (p.session_id, p.inbox_id);
                match self.kind_v2() {
                    K::InboxEnqueued => Event::InboxEnqueued {
                        session_id,
                        inbox_id,
                    },
                    K::InboxDelivered => Event::InboxDelivered {
                        session_id,
                        inbox_id,
                    },
                    _ => Event::InboxCancelled {
                        session_id,
                        inbox_id,
                    },
                }
            }
            K::ExecutionStarted => Event::ExecutionStarted {
                session_id: self.properties::<Sid>()?.session_id,
            },
            K::ExecutionSucceeded => Event::ExecutionSucceeded {
                session_id: self.properties::<Sid>()?.session_id,
            },
            K::ExecutionFailed => {
                let p: Failed = self.properties()?;
                Event::ExecutionFailed {
                    session_id: p.session_id,
                    error: p.error,
                }
            }
            K::ExecutionInterrupted => {
                let p: Interrupted = self.properties()?;
                Event::ExecutionInterrupted {
                    session_id: p.session_id,
                    reason: InterruptReason::from_str(p.reason.as_deref()),
                }
            }
            K::StepStarted => {
                let p: Step = self.properties()?;
                Event::StepStarted {
                    session_id: p.session_id,
                    assistant_message_id: p.assistant_message_id,
                    agent: p.agent,
                    model: p.model,
                }
            }
            K::StepEnded => {
                let p: Step = self.properties()?;
                Event::StepEnded {
                    session_id: p.session_id,
                    assistant_message_id: p.assistant_message_id,
                    finish: p.finish,
                    tokens: p.tokens,
                    cost: p.cost,
                    files: p.files,
                }
            }
            K::StepFailed => {
                let p: Step = self.properties()?;
                Event::StepFailed {
                    session_id: p.session_id,
                    assistant_message_id: p.assistant_message_id,
                    error: p.error,
                }
            }
            K::RetryScheduled => {
                let p: Step = self.properties()?;
                Event::RetryScheduled {
                    session_id: p.session_id,
                    assistant_message_id: p.assistant_message_id,
                    attempt: p.attempt,
                    at: p.at,
                    error: p.error,
                }
            }
            K::TextDelta => {
                let p: Step = self.properties()?;
                Event::TextDelta {
                    session_id: p.session_id,
                    assistant_message_id: p.assistant_message_id,
                    delta: p.delta,
                }
            }
            K::TextEnded => {
                let p: Step = self.properties()?;
                Event::TextEnded {
                    session_id: p.session_id,
                    assistant_message_id: p.assistant_message_id,
                    text: p.text,
                }
            }
            K::ToolCalled | K::ToolSuccess | K::ToolFailed => {
                let p: Tool = self.properties()?;
                match self.kind_v2() {
                    K::ToolCalled => Event::ToolCalled {
                        session_id: p.session_id,
                        assistant_message_id: p.assistant_message_id,
                        call_id: p.id,
                        input: p.input,
                    },
                    K::ToolSuccess => Event::ToolSuccess {
                        session_id: p.session_id,
                        assistant_message_id: p.assistant_message_id,
                        call_id: p.id,
                        content: p.content,
                    },
                    _ => Event::ToolFailed {
                        session_id: p.session_id,
                        assistant_message_id: p.assistant_message_id,
                        call_id: p.id,
                        error: p.error,
                    },
                }
            }
            K::UsageUpdated => {
                let p: Usage = self.properties()?;
                Event::UsageUpdated {
                    session_id: p.session_id,
                    tokens: p.tokens,
                    cost: p.cost,
                }
            }
            K::PermissionAsked => Event::PermissionAsked(self.properties()?),
            K::PermissionReplied => {
                let p: Replied = self.properties()?;
                Event::PermissionReplied {
                    session_id: p.session_id,
                    request_id: p.request_id,
                    reply: p.reply,
                }
            }
            _ => self.other(),
        })
    }

    fn other(&self) -> Event {
        Event::Other {
            kind: self.kind_str().to_owned(),
            data: serde_json::from_str(self.properties_json()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::v2::tests_support::samples;

    #[test]
    fn every_captured_v2_event_decodes_and_agrees_with_its_envelope() {
        let all = samples();
        assert!(all.len() > 150, "{}", all.len());
        let mut typed = 0;
        for text in &all {
            let raw = RawEvent::parse_v2_str(text).unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(raw.kind_str(), value["type"].as_str().unwrap());
            assert_eq!(raw.seq(), value["durable"]["seq"].as_u64(), "{text}");
            assert_eq!(
                raw.aggregate_id(),
                value["durable"]["aggregateID"].as_str(),
                "{text}"
            );
            let event = raw.decode_v2().unwrap_or_else(|e| panic!("{e}: {text}"));
            if !matches!(event, Event::Other { .. }) {
                typed += 1;
                if let Some(sid) = event.session_id() {
                    assert_eq!(raw.session_id(), Some(sid.as_str()), "{text}");
                }
            }
        }
        assert!(typed > 100, "{typed}");
    }

    #[test]
    fn terminal_events_carry_status_retry_after_and_reason() {
        let all = samples();
        let failed = all
            .iter()
            .map(|t| RawEvent::parse_v2_str(t).unwrap())
            .find(|r| r.kind_v2() == EventKind::ExecutionFailed)
            .unwrap();
        match failed.decode_v2().unwrap() {
            Event::ExecutionFailed { error, .. } => {
                assert_eq!(error.status, Some(429));
                assert_eq!(error.retry_after_ms, Some(2000));
                assert_eq!(error.kind, "provider.rate-limit");
            }
            other => panic!("{other:?}"),
        }
        let retries: Vec<u32> = all
            .iter()
            .map(|t| RawEvent::parse_v2_str(t).unwrap())
            .filter_map(|r| match r.decode_v2().unwrap() {
                Event::RetryScheduled { attempt, .. } => Some(attempt),
                _ => None,
            })
            .collect();
        assert!(retries.starts_with(&[2, 3, 4]), "{retries:?}");
        let reasons: Vec<InterruptReason> = all
            .iter()
            .map(|t| RawEvent::parse_v2_str(t).unwrap())
            .filter_map(|r| match r.decode_v2().unwrap() {
                Event::ExecutionInterrupted { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert!(reasons.contains(&InterruptReason::User), "{reasons:?}");
        assert!(reasons.contains(&InterruptReason::Shutdown), "{reasons:?}");
    }

    #[test]
    fn kinds_fit_in_the_mask() {
        assert!(EventKind::ALL.len() < 63);
        assert_eq!(EventKind::from_type("session.brand.new"), EventKind::Other);
        let set = KindSet::turn();
        assert!(set.contains(EventKind::ExecutionFailed));
        assert!(!set.contains(EventKind::TextDelta));
    }

    #[test]
    fn a_v1_event_is_other_for_the_v2_decoder() {
        let raw =
            RawEvent::parse(r#"{"type":"session.idle","properties":{"sessionID":"ses_a"}}"#.into())
                .unwrap();
        assert_eq!(raw.kind_v2(), EventKind::Other);
        assert!(matches!(raw.decode_v2().unwrap(), Event::Other { .. }));
    }
}
