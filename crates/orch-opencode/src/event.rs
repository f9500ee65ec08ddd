//! Events of `GET /event` (OpenCode 1) and `GET /api/event` (OpenCode 2): a cheap envelope
//! decoded up front, typed payloads on demand.
//!
//! The router only needs an event's type and session to deliver it, so [`RawEvent::parse`]
//! reads just the envelope (`id`, `type`, and `properties.sessionID`) and keeps the text.
//! Subscribers call [`RawEvent::decode`] for the events they care about; one decoded
//! payload is never built for subscribers that ignore it. OpenCode 2 events are read by
//! [`RawEvent::parse_v2`] (payload in `data`, plus `durable.aggregateID` and `durable.seq`)
//! and decoded by [`RawEvent::decode_v2`].

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::envelope::{self, Envelope, Slice};
use crate::generation::Generation;
use crate::ids::{MessageId, PartId, PermissionId, QuestionId, SessionId};
use crate::types::{
    MessageError, MessageInfo, Part, PermissionReply, PermissionRequest, QuestionRequest, Session,
    SessionStatus, Toast, Todo,
};

macro_rules! event_kinds {
    ($($variant:ident = $text:literal),+ $(,)?) => {
        /// The `type` of an event. Cheap to copy and to compare; [`EventKind::Other`] covers
        /// every type this client does not know.
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
    ServerHeartbeat = "server.heartbeat",
    SessionCreated = "session.created",
    SessionUpdated = "session.updated",
    SessionDeleted = "session.deleted",
    SessionStatus = "session.status",
    SessionIdle = "session.idle",
    SessionError = "session.error",
    SessionDiff = "session.diff",
    SessionCompacted = "session.compacted",
    MessageUpdated = "message.updated",
    MessageRemoved = "message.removed",
    MessagePartUpdated = "message.part.updated",
    MessagePartDelta = "message.part.delta",
    MessagePartRemoved = "message.part.removed",
    TodoUpdated = "todo.updated",
    PermissionAsked = "permission.asked",
    PermissionReplied = "permission.replied",
    QuestionAsked = "question.asked",
    QuestionReplied = "question.replied",
    QuestionRejected = "question.rejected",
    FileEdited = "file.edited",
    FileWatcherUpdated = "file.watcher.updated",
    TuiToastShow = "tui.toast.show",
}

impl EventKind {
    /// The bit of this kind in a [`KindSet`].
    pub fn bit(self) -> u64 {
        1u64 << (self as u32)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`EventKind`]s (a bit mask), used to filter subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KindSet(u64);

impl KindSet {
    /// Every kind, including unknown ones.
    pub const ALL: KindSet = KindSet(u64::MAX);

    /// No kind.
    pub const fn empty() -> Self {
        KindSet(0)
    }

    /// The kinds a turn waiter needs: status, idle, error, message updates, deletion and
    /// permission/question requests (no part deltas, which can number thousands per turn).
    pub fn turn() -> Self {
        Self::of(&[
            EventKind::SessionStatus,
            EventKind::SessionIdle,
            EventKind::SessionError,
            EventKind::MessageUpdated,
            EventKind::SessionDeleted,
            EventKind::PermissionAsked,
            EventKind::QuestionAsked,
        ])
    }

    /// The set of `kinds`.
    pub fn of(kinds: &[EventKind]) -> Self {
        KindSet(kinds.iter().fold(0, |acc, k| acc | k.bit()))
    }

    /// Adds a kind.
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

/// Why an SSE payload is not an OpenCode event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventParseError {
    /// Not JSON or not an object with a string `type`.
    #[error("invalid event envelope: {message} in {excerpt:?}")]
    Envelope {
        /// What serde reported.
        message: String,
        /// The first bytes of the payload.
        excerpt: String,
    },
    /// The envelope is fine but the payload does not match the type's schema.
    #[error("cannot decode the properties of a {kind} event: {message}")]
    Payload {
        /// The event type.
        kind: String,
        /// What serde reported (with the path of the bad field).
        message: String,
    },
}

/// One event as it came off the stream: the JSON text plus its pre-decoded envelope.
/// Cloning is a reference-count increment (the text is shared, one allocation per event), so
/// the router hands the same event to any number of subscribers.
///
/// One type for both generations: an OpenCode 1 event ([`RawEvent::parse`]) has its payload
/// in `properties`; an OpenCode 2 event ([`RawEvent::parse_v2`]) in `data`, and a durable one
/// also carries its session's sequence number ([`RawEvent::seq`]).
#[derive(Clone)]
pub struct RawEvent {
    /// The event JSON (`..json_len`), followed by the decoded copies of envelope strings
    /// that had escapes (rare), so that every envelope field is a span of one buffer and a
    /// clone is one reference count plus a few words.
    text: Arc<str>,
    json_len: u32,
    kind: EventKind,
    kind_v2: crate::v2::EventKind,
    generation: Generation,
    has_seq: bool,
    kind_at: Span,
    id_at: Span,
    props_at: Span,
    session_at: Span,
    aggregate_at: Span,
    seq: u64,
}

fn too_large(text: &str) -> EventParseError {
    EventParseError::Envelope {
        message: "event larger than 4 GiB".into(),
        excerpt: crate::error::excerpt(text.as_bytes(), 80),
    }
}

/// A byte range of a [`RawEvent`]'s buffer, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    const NONE: Span = Span {
        start: u32::MAX,
        end: u32::MAX,
    };

    /// A range slice as a span (an owned one is none: see [`RawEvent::build`]).
    #[inline]
    fn of(slice: &Slice) -> Span {
        match slice {
            Slice::Range(start, end) => Span {
                start: *start,
                end: *end,
            },
            _ => Span::NONE,
        }
    }

    #[inline]
    fn get(self, text: &str) -> Option<&str> {
        if self.start == u32::MAX {
            return None;
        }
        text.get(self.start as usize..self.end as usize)
    }
}

impl fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawEvent")
            .field("kind", &self.kind_str())
            .field("session", &self.session_id())
            .field("seq", &self.seq())
            .field("len", &self.json_len)
            .finish()
    }
}

impl RawEvent {
    /// Parses the envelope of one SSE `data` payload. Only `type`, `id` and
    /// `properties.sessionID` are decoded; the rest stays text until [`RawEvent::decode`].
    ///
    /// The envelope is read without a JSON parser and equals what one reads on any valid
    /// JSON object (any key order, whitespace, escapes and extra fields; a repeated key's
    /// last occurrence wins, as in `JSON.parse`). The top level is checked strictly; the
    /// values it skips (the properties among them) only for balanced brackets and closed
    /// strings, and are validated by [`RawEvent::decode`] / [`RawEvent::properties`].
    ///
    /// # Errors
    /// [`EventParseError::Envelope`] when the text is not a JSON object with a string `type`.
    pub fn parse(text: String) -> Result<Self, EventParseError> {
        Self::parse_str(&text)
    }

    /// [`RawEvent::parse`] on borrowed text (copied once into the event's shared buffer).
    ///
    /// # Errors
    /// [`EventParseError::Envelope`] when the text is not a JSON object with a string `type`.
    pub fn parse_str(text: &str) -> Result<Self, EventParseError> {
        let env = envelope::scan(text).map_err(|e| EventParseError::Envelope {
            message: format!("{} at byte {}", e.message, e.at),
            excerpt: crate::error::excerpt(text.as_bytes(), 80),
        })?;
        let mut raw = Self::build(text, &env, Generation::V1)?;
        raw.kind = EventKind::from_type(raw.kind_str());
        Ok(raw)
    }

    /// The event of `text` and its envelope, with every envelope string a span of one
    /// buffer (decoded copies appended after the JSON).
    #[inline]
    fn build(text: &str, env: &Envelope, generation: Generation) -> Result<Self, EventParseError> {
        let json_len = u32::try_from(text.len()).map_err(|_| too_large(text))?;
        let owned = |s: &Slice| matches!(s, Slice::Owned(_));
        let escaped =
            owned(&env.kind) || owned(&env.id) || owned(&env.session) || owned(&env.aggregate);
        let (buffer, [kind_at, id_at, session_at, aggregate_at]): (Arc<str>, [Span; 4]) = if escaped
        {
            // Rare: strings with escapes, decoded and appended after the JSON.
            let mut buffer = String::from(text);
            let mut span = |s: &Slice| match s {
                Slice::Owned(decoded) => {
                    let start = buffer.len();
                    buffer.push_str(decoded);
                    Span {
                        start: start as u32,
                        end: buffer.len() as u32,
                    }
                }
                other => Span::of(other),
            };
            let spans = [
                span(&env.kind),
                span(&env.id),
                span(&env.session),
                span(&env.aggregate),
            ];
            if u32::try_from(buffer.len()).is_err() {
                return Err(too_large(text));
            }
            (Arc::from(buffer), spans)
        } else {
            (
                Arc::from(text),
                [
                    Span::of(&env.kind),
                    Span::of(&env.id),
                    Span::of(&env.session),
                    Span::of(&env.aggregate),
                ],
            )
        };
        Ok(RawEvent {
            text: buffer,
            json_len,
            kind: EventKind::Other,
            kind_v2: crate::v2::EventKind::Other,
            generation,
            has_seq: env.seq.is_some(),
            kind_at,
            id_at,
            props_at: env
                .props
                .map_or(Span::NONE, |(start, end)| Span { start, end }),
            session_at,
            aggregate_at,
            seq: env.seq.unwrap_or_default(),
        })
    }

    /// Parses the envelope of one OpenCode 2 event (`/api/event`): `type`, `id`,
    /// `data.sessionID`, and `durable.aggregateID` / `durable.seq` when the event is durable.
    /// The same guarantees as [`RawEvent::parse`]: what a JSON parser reads, on any valid
    /// JSON object.
    ///
    /// # Errors
    /// [`EventParseError::Envelope`] when the text is not a JSON object with a string `type`.
    pub fn parse_v2(text: String) -> Result<Self, EventParseError> {
        Self::parse_v2_str(&text)
    }

    /// [`RawEvent::parse_v2`] on borrowed text.
    ///
    /// # Errors
    /// [`EventParseError::Envelope`] when the text is not a JSON object with a string `type`.
    pub fn parse_v2_str(text: &str) -> Result<Self, EventParseError> {
        let env = envelope::scan_v2(text).map_err(|e| EventParseError::Envelope {
            message: format!("{} at byte {}", e.message, e.at),
            excerpt: crate::error::excerpt(text.as_bytes(), 80),
        })?;
        let mut raw = Self::build(text, &env, Generation::V2)?;
        raw.kind_v2 = crate::v2::EventKind::from_type(raw.kind_str());
        Ok(raw)
    }

    /// The generation whose stream the event came from.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The OpenCode 1 event kind ([`EventKind::Other`] for every OpenCode 2 event: see
    /// [`RawEvent::kind_v2`]).
    pub fn kind(&self) -> EventKind {
        self.kind
    }

    /// The OpenCode 2 event kind ([`crate::v2::EventKind::Other`] for an OpenCode 1 event).
    pub fn kind_v2(&self) -> crate::v2::EventKind {
        self.kind_v2
    }

    /// The bit the router filters subscriptions with: the kind's bit in its generation.
    pub(crate) fn route_bit(&self) -> u64 {
        match self.generation {
            Generation::V1 => self.kind.bit(),
            Generation::V2 => self.kind_v2.bit(),
        }
    }

    /// `durable.aggregateID` of an OpenCode 2 durable event (the session id).
    pub fn aggregate_id(&self) -> Option<&str> {
        self.aggregate_at.get(&self.text)
    }

    /// `durable.seq` of an OpenCode 2 durable event: its position in its aggregate's
    /// history (increasing, with holes).
    pub fn seq(&self) -> Option<u64> {
        self.has_seq.then_some(self.seq)
    }

    /// The `type` string as sent, escapes decoded (also for unknown kinds).
    pub fn kind_str(&self) -> &str {
        self.kind_at.get(&self.text).unwrap_or_default()
    }

    /// The event id (`evt_…`), if any.
    pub fn id(&self) -> Option<&str> {
        self.id_at.get(&self.text)
    }

    /// `properties.sessionID` (OpenCode 2: `data.sessionID`), if the event has one.
    pub fn session_id(&self) -> Option<&str> {
        self.session_at.get(&self.text)
    }

    /// The whole event JSON.
    pub fn json(&self) -> &str {
        &self.text[..self.json_len as usize]
    }

    /// The payload JSON exactly as sent: `properties` (OpenCode 2: `data`); `{}` when absent.
    pub fn properties_json(&self) -> &str {
        self.props_at.get(&self.text).unwrap_or("{}")
    }

    /// Decodes the properties into any type.
    ///
    /// # Errors
    /// [`EventParseError::Payload`] with the path of the bad field.
    pub fn properties<T: DeserializeOwned>(&self) -> Result<T, EventParseError> {
        let json = self.properties_json();
        // Fast path without path tracking; on error, decode again to name the bad field.
        serde_json::from_str(json).or_else(|_| {
            let de = &mut serde_json::Deserializer::from_str(json);
            serde_path_to_error::deserialize(de).map_err(|e| EventParseError::Payload {
                kind: self.kind_str().to_owned(),
                message: format!("at `{}`: {}", e.path(), e.inner()),
            })
        })
    }

    /// Decodes the typed OpenCode 1 event (an OpenCode 2 event is [`Event::Unknown`]: use
    /// [`RawEvent::decode_v2`]).
    ///
    /// # Errors
    /// [`EventParseError::Payload`] when a known event type carries properties of the wrong
    /// shape. Unknown types never fail: they become [`Event::Unknown`].
    pub fn decode(&self) -> Result<Event, EventParseError> {
        use EventKind as K;
        Ok(match self.kind() {
            K::ServerConnected => Event::ServerConnected,
            K::ServerHeartbeat => Event::ServerHeartbeat,
            K::SessionCreated => {
                let p: SessionInfoProps = self.properties()?;
                Event::SessionCreated { info: p.info }
            }
            K::SessionUpdated => {
                let p: SessionInfoProps = self.properties()?;
                Event::SessionUpdated { info: p.info }
            }
            K::SessionDeleted => {
                let p: SessionInfoProps = self.properties()?;
                Event::SessionDeleted { info: p.info }
            }
            K::SessionStatus => {
                let p: StatusProps = self.properties()?;
                Event::SessionStatus {
                    session_id: p.session_id,
                    status: p.status,
                }
            }
            K::SessionIdle => {
                let p: SessionProps = self.properties()?;
                Event::SessionIdle {
                    session_id: p.session_id,
                }
            }
            K::SessionError => {
                let p: ErrorProps = self.properties()?;
                Event::SessionError {
                    session_id: p.session_id,
                    error: p.error,
                }
            }
            K::SessionDiff => {
                let p: DiffProps = self.properties()?;
                Event::SessionDiff {
                    session_id: p.session_id,
                    diff: p.diff,
                }
            }
            K::SessionCompacted => {
                let p: SessionProps = self.properties()?;
                Event::SessionCompacted {
                    session_id: p.session_id,
                }
            }
            K::MessageUpdated => {
                let p: MessageProps = self.properties()?;
                Event::MessageUpdated { info: p.info }
            }
            K::MessageRemoved => {
                let p: MessageRemovedProps = self.properties()?;
                Event::MessageRemoved {
                    session_id: p.session_id,
                    message_id: p.message_id,
                }
            }
            K::MessagePartUpdated => {
                let p: PartProps = self.properties()?;
                Event::MessagePartUpdated { part: p.part }
            }
            K::MessagePartDelta => {
                let p: DeltaProps = self.properties()?;
                Event::MessagePartDelta {
                    session_id: p.session_id,
                    message_id: p.message_id,
                    part_id: p.part_id,
                    field: p.field,
                    delta: p.delta,
                }
            }
            K::MessagePartRemoved => {
                let p: PartRemovedProps = self.properties()?;
                Event::MessagePartRemoved {
                    session_id: p.session_id,
                    message_id: p.message_id,
                    part_id: p.part_id,
                }
            }
            K::TodoUpdated => {
                let p: TodoProps = self.properties()?;
                Event::TodoUpdated {
                    session_id: p.session_id,
                    todos: p.todos,
                }
            }
            K::PermissionAsked => Event::PermissionAsked(self.properties()?),
            K::PermissionReplied => {
                let p: PermissionRepliedProps = self.properties()?;
                Event::PermissionReplied {
                    session_id: p.session_id,
                    request_id: p.request_id,
                    reply: p.reply,
                }
            }
            K::QuestionAsked => Event::QuestionAsked(self.properties()?),
            K::QuestionReplied => {
                let p: QuestionRepliedProps = self.properties()?;
                Event::QuestionReplied {
                    session_id: p.session_id,
                    request_id: p.request_id,
                    answers: p.answers,
                }
            }
            K::QuestionRejected => {
                let p: QuestionRejectedProps = self.properties()?;
                Event::QuestionRejected {
                    session_id: p.session_id,
                    request_id: p.request_id,
                }
            }
            K::FileEdited => {
                let p: FileProps = self.properties()?;
                Event::FileEdited { file: p.file }
            }
            K::FileWatcherUpdated => {
                let p: FileWatcherProps = self.properties()?;
                Event::FileWatcherUpdated {
                    file: p.file,
                    event: p.event,
                }
            }
            K::TuiToastShow => Event::TuiToastShow(self.properties()?),
            K::Other => Event::Unknown {
                kind: self.kind_str().to_owned(),
                properties: serde_json::from_str(self.properties_json()).unwrap_or_default(),
            },
        })
    }
}

/// A typed OpenCode event.
///
/// The large payloads (sessions, messages, parts, permission and question requests, errors)
/// are boxed, so an `Event` stays small (120 bytes) however it is moved around; fields and
/// methods are reached through the box as usual (`info.id`, `&*request`).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// First event of every connection.
    ServerConnected,
    /// Every 10 s.
    ServerHeartbeat,
    /// A session was created.
    SessionCreated {
        /// The session.
        info: Box<Session>,
    },
    /// A session changed (title, tokens, …).
    SessionUpdated {
        /// The session.
        info: Box<Session>,
    },
    /// A session was deleted.
    SessionDeleted {
        /// The session as it was.
        info: Box<Session>,
    },
    /// Busy / idle / retry.
    SessionStatus {
        /// Session.
        session_id: SessionId,
        /// New status.
        status: SessionStatus,
    },
    /// The run loop of the session ended (emitted right after `session.status` idle).
    SessionIdle {
        /// Session.
        session_id: SessionId,
    },
    /// A turn failed (model error, abort, unknown agent…).
    SessionError {
        /// Session (absent for some global errors).
        session_id: Option<SessionId>,
        /// The error.
        error: Option<Box<MessageError>>,
    },
    /// File diff of the session.
    SessionDiff {
        /// Session.
        session_id: SessionId,
        /// The diff entries, as JSON.
        diff: serde_json::Value,
    },
    /// Compaction finished.
    SessionCompacted {
        /// Session.
        session_id: SessionId,
    },
    /// A message was created or changed (emitted several times per message).
    MessageUpdated {
        /// The message.
        info: Box<MessageInfo>,
    },
    /// A message was removed.
    MessageRemoved {
        /// Session.
        session_id: SessionId,
        /// Message.
        message_id: MessageId,
    },
    /// A part was created or changed (the whole part each time).
    MessagePartUpdated {
        /// The part.
        part: Box<Part>,
    },
    /// A streaming chunk of a text or reasoning part.
    MessagePartDelta {
        /// Session.
        session_id: SessionId,
        /// Message.
        message_id: MessageId,
        /// Part.
        part_id: PartId,
        /// Field the delta appends to (`text`).
        field: String,
        /// The chunk.
        delta: String,
    },
    /// A part was removed.
    MessagePartRemoved {
        /// Session.
        session_id: SessionId,
        /// Message.
        message_id: MessageId,
        /// Part.
        part_id: PartId,
    },
    /// The session's todo list was replaced.
    TodoUpdated {
        /// Session.
        session_id: SessionId,
        /// The whole list.
        todos: Vec<Todo>,
    },
    /// A tool call waits for a permission reply (the session stays busy until answered).
    PermissionAsked(Box<PermissionRequest>),
    /// A permission request was answered.
    PermissionReplied {
        /// Session.
        session_id: SessionId,
        /// Request.
        request_id: PermissionId,
        /// The answer.
        reply: PermissionReply,
    },
    /// The `question` tool waits for an answer.
    QuestionAsked(Box<QuestionRequest>),
    /// A question was answered.
    QuestionReplied {
        /// Session.
        session_id: SessionId,
        /// Request.
        request_id: QuestionId,
        /// One label list per question.
        answers: Vec<Vec<String>>,
    },
    /// A question was dismissed.
    QuestionRejected {
        /// Session.
        session_id: SessionId,
        /// Request.
        request_id: QuestionId,
    },
    /// A tool edited a file.
    FileEdited {
        /// Absolute path.
        file: String,
    },
    /// The file watcher saw a change.
    FileWatcherUpdated {
        /// Absolute path.
        file: String,
        /// `add`, `change`, `unlink`.
        event: String,
    },
    /// A toast was shown.
    TuiToastShow(Toast),
    /// An event type this client does not model.
    Unknown {
        /// Its `type`.
        kind: String,
        /// Its properties.
        properties: serde_json::Value,
    },
}

impl Event {
    /// The session the event belongs to, if any.
    pub fn session_id(&self) -> Option<&SessionId> {
        match self {
            Event::SessionCreated { info }
            | Event::SessionUpdated { info }
            | Event::SessionDeleted { info } => Some(&info.id),
            Event::SessionStatus { session_id, .. }
            | Event::SessionIdle { session_id }
            | Event::SessionDiff { session_id, .. }
            | Event::SessionCompacted { session_id }
            | Event::MessageRemoved { session_id, .. }
            | Event::MessagePartDelta { session_id, .. }
            | Event::MessagePartRemoved { session_id, .. }
            | Event::TodoUpdated { session_id, .. }
            | Event::PermissionReplied { session_id, .. }
            | Event::QuestionReplied { session_id, .. }
            | Event::QuestionRejected { session_id, .. } => Some(session_id),
            Event::SessionError { session_id, .. } => session_id.as_ref(),
            Event::MessageUpdated { info } => Some(&info.session_id),
            Event::MessagePartUpdated { part } => Some(&part.session_id),
            Event::PermissionAsked(p) => Some(&p.session_id),
            Event::QuestionAsked(q) => Some(&q.session_id),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct SessionInfoProps {
    info: Box<Session>,
}

#[derive(Deserialize)]
struct SessionProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
}

#[derive(Deserialize)]
struct StatusProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    status: SessionStatus,
}

#[derive(Deserialize)]
struct ErrorProps {
    #[serde(rename = "sessionID", default)]
    session_id: Option<SessionId>,
    #[serde(default)]
    error: Option<Box<MessageError>>,
}

#[derive(Deserialize)]
struct DiffProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(default)]
    diff: serde_json::Value,
}

#[derive(Deserialize)]
struct MessageProps {
    info: Box<MessageInfo>,
}

#[derive(Deserialize)]
struct MessageRemovedProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "messageID")]
    message_id: MessageId,
}

#[derive(Deserialize)]
struct PartProps {
    part: Box<Part>,
}

#[derive(Deserialize)]
struct DeltaProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "messageID")]
    message_id: MessageId,
    #[serde(rename = "partID")]
    part_id: PartId,
    #[serde(default)]
    field: String,
    #[serde(default)]
    delta: String,
}

#[derive(Deserialize)]
struct PartRemovedProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "messageID")]
    message_id: MessageId,
    #[serde(rename = "partID")]
    part_id: PartId,
}

#[derive(Deserialize)]
struct TodoProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(default)]
    todos: Vec<Todo>,
}

#[derive(Deserialize)]
struct PermissionRepliedProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "requestID")]
    request_id: PermissionId,
    reply: PermissionReply,
}

#[derive(Deserialize)]
struct QuestionRepliedProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "requestID")]
    request_id: QuestionId,
    #[serde(default)]
    answers: Vec<Vec<String>>,
}

#[derive(Deserialize)]
struct QuestionRejectedProps {
    #[serde(rename = "sessionID")]
    session_id: SessionId,
    #[serde(rename = "requestID")]
    request_id: QuestionId,
}

#[derive(Deserialize)]
struct FileProps {
    file: String,
}

#[derive(Deserialize)]
struct FileWatcherProps {
    file: String,
    #[serde(default)]
    event: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ErrorName;

    const SAMPLES: &str = include_str!("../tests/data/events-sample.jsonl");

    fn samples() -> Vec<String> {
        SAMPLES
            .lines()
            .map(|l| {
                // The event text exactly as OpenCode sent it (key order included).
                #[derive(Deserialize)]
                struct Line<'a> {
                    #[serde(borrow)]
                    event: &'a serde_json::value::RawValue,
                }
                let line: Line<'_> = serde_json::from_str(l).unwrap();
                line.event.get().to_owned()
            })
            .collect()
    }

    #[test]
    fn every_captured_sample_decodes() {
        let all = samples();
        assert_eq!(all.len(), 383);
        let mut unknown = 0;
        for text in all {
            let raw = RawEvent::parse(text.clone()).unwrap();
            let typed = raw.decode().unwrap_or_else(|e| panic!("{e} for {text}"));
            if let Event::Unknown { .. } = typed {
                unknown += 1;
            } else {
                // The envelope's session agrees with the typed payload's.
                assert_eq!(
                    raw.session_id(),
                    typed.session_id().map(|s| s.as_str()),
                    "{text}"
                );
            }
        }
        // plugin.added, catalog.updated, reference.updated, integration.updated.
        assert_eq!(unknown, 45 + 2 + 1 + 1);
    }

    /// Asserts that the envelope of `text` equals what `serde_json` reads (`text` must be
    /// valid JSON).
    fn assert_envelope_matches_serde(
        text: &str,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let value: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        let parsed = RawEvent::parse_str(text);
        let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
            proptest::prop_assert!(parsed.is_err(), "accepted without a string type: {text}");
            return Ok(());
        };
        let raw = match parsed {
            Ok(raw) => raw,
            Err(e) => {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "{e}: {text}"
                )));
            }
        };
        proptest::prop_assert_eq!(raw.kind_str(), kind, "{}", text);
        proptest::prop_assert_eq!(raw.kind(), EventKind::from_type(kind));
        proptest::prop_assert_eq!(
            raw.id(),
            value.get("id").and_then(|v| v.as_str()),
            "{}",
            text
        );
        let props = value
            .get("properties")
            .cloned()
            .unwrap_or(serde_json::json!({}));
        proptest::prop_assert_eq!(
            raw.session_id(),
            props.get("sessionID").and_then(|v| v.as_str()),
            "{}",
            text
        );
        let ours: serde_json::Value = match serde_json::from_str(raw.properties_json()) {
            Ok(v) => v,
            Err(e) => {
                return Err(proptest::test_runner::TestCaseError::fail(format!(
                    "properties_json {:?} is not JSON ({e}): {text}",
                    raw.properties_json()
                )));
            }
        };
        proptest::prop_assert_eq!(ours, props, "{}", text);
        Ok(())
    }

    #[test]
    fn envelope_matches_serde_json_on_every_sample() {
        for text in samples() {
            assert_envelope_matches_serde(&text).unwrap();
        }
    }

    #[test]
    fn a_field_after_the_properties_keeps_properties_json_valid() {
        let raw = RawEvent::parse(
            r#"{"id":"evt_1","type":"session.idle","properties":{"sessionID":"ses_a"},"extra":{}}"#
                .into(),
        )
        .unwrap();
        assert_eq!(raw.properties_json(), r#"{"sessionID":"ses_a"}"#);
        assert_eq!(
            raw.decode().unwrap(),
            Event::SessionIdle {
                session_id: "ses_a".into()
            }
        );
    }

    #[test]
    fn an_escaped_type_keeps_its_name() {
        let raw = RawEvent::parse(
            r#"{"type":"session.idl\u0065","properties":{"sessionID":"ses_a"}}"#.into(),
        )
        .unwrap();
        assert_eq!(raw.kind(), EventKind::SessionIdle);
        assert_eq!(raw.kind_str(), "session.idle");
        let other = RawEvent::parse(r#"{"type":"brand.ne\u0077","properties":{}}"#.into()).unwrap();
        assert_eq!(other.kind(), EventKind::Other);
        assert_eq!(other.kind_str(), "brand.new");
    }

    #[test]
    fn envelopes_in_other_layouts_are_read() {
        let a = RawEvent::parse(
            r#"{"id":"evt_1","type":"session.idle","properties":{"sessionID":"ses_A"}}"#.into(),
        )
        .unwrap();
        let b = RawEvent::parse(
            r#"{"type":"permission.asked","properties":{"id":"per_1","sessionID":"ses_B","permission":"bash"}}"#
                .into(),
        )
        .unwrap();
        let c = RawEvent::parse(
            r#"{"type":"session.idle","properties":{"sessionID":"ses_\u0041"}}"#.into(),
        )
        .unwrap();
        assert_eq!(a.session_id(), Some("ses_A"));
        assert_eq!(a.id(), Some("evt_1"));
        assert_eq!(a.kind(), EventKind::SessionIdle);
        assert_eq!(b.session_id(), Some("ses_B"));
        assert_eq!(b.id(), None);
        assert_eq!(c.session_id(), Some("ses_A"));
    }

    #[test]
    fn unknown_type_is_kept_with_its_properties() {
        let raw = RawEvent::parse(r#"{"type":"brand.new","properties":{"x":1}}"#.into()).unwrap();
        assert_eq!(raw.kind(), EventKind::Other);
        assert_eq!(raw.kind_str(), "brand.new");
        assert_eq!(
            raw.decode().unwrap(),
            Event::Unknown {
                kind: "brand.new".into(),
                properties: serde_json::json!({"x": 1})
            }
        );
    }

    #[test]
    fn session_error_carries_the_api_status() {
        let raw = RawEvent::parse(
            r#"{"type":"session.error","properties":{"sessionID":"ses_1","error":{"name":"APIError","data":{"message":"Rate limit exceeded","statusCode":429}}}}"#
                .into(),
        )
        .unwrap();
        match raw.decode().unwrap() {
            Event::SessionError { error: Some(e), .. } => {
                assert_eq!(e.name, ErrorName::Api);
                assert_eq!(e.data.status_code, Some(429));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_envelope_and_bad_payload_are_typed_errors() {
        assert!(matches!(
            RawEvent::parse("not json".into()),
            Err(EventParseError::Envelope { .. })
        ));
        let raw =
            RawEvent::parse(r#"{"type":"session.status","properties":{"sessionID":1}}"#.into())
                .unwrap();
        match raw.decode() {
            Err(EventParseError::Payload { message, .. }) => {
                assert!(message.contains("sessionID"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn large_payloads_are_boxed_so_events_stay_small() {
        // Events are moved through decode, channels and matches; the big payloads
        // (`Session`, `MessageInfo`, `Part`, requests) live behind a box.
        assert!(
            std::mem::size_of::<Event>() <= 128,
            "{}",
            std::mem::size_of::<Event>()
        );
    }

    #[test]
    fn events_stay_small_and_escaped_envelope_strings_do_not_leak_into_the_json() {
        // Cloned once per subscriber delivery: a reference count and a few words.
        assert!(
            std::mem::size_of::<RawEvent>() <= 80,
            "{}",
            std::mem::size_of::<RawEvent>()
        );
        let text = r#"{"type":"session.idl\u0065","id":"evt_\u0031","properties":{"sessionID":"ses_\u0041"}}"#;
        let raw = RawEvent::parse_str(text).unwrap();
        assert_eq!(raw.json(), text);
        assert_eq!(raw.kind_str(), "session.idle");
        assert_eq!(raw.id(), Some("evt_1"));
        assert_eq!(raw.session_id(), Some("ses_A"));
        assert_eq!(raw.properties_json(), r#"{"sessionID":"ses_\u0041"}"#);
    }

    #[test]
    fn kind_set_filters() {
        let set = KindSet::turn();
        assert!(set.contains(EventKind::SessionIdle));
        assert!(!set.contains(EventKind::MessagePartDelta));
        assert!(KindSet::ALL.contains(EventKind::Other));
        assert!(!KindSet::empty().contains(EventKind::Other));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_round_trips_session(sid in "[A-Za-z0-9_]{1,40}", kind in "[a-z.]{1,20}", junk in ".{0,64}") {
            let text = serde_json::json!({"type": kind, "properties": {"sessionID": sid, "x": junk}}).to_string();
            let raw = RawEvent::parse(text).unwrap();
            proptest::prop_assert_eq!(raw.session_id(), Some(sid.as_str()));
            proptest::prop_assert_eq!(raw.kind_str(), kind.as_str());
            let _ = RawEvent::parse(junk);
        }
    }

    /// Arbitrary JSON objects shaped like (and unlike) event envelopes, rendered with random
    /// whitespace and escapes: the envelope must equal what `serde_json` reads.
    mod arbitrary_json {
        use proptest::prelude::*;

        /// A JSON value with duplicate keys allowed (objects are member lists).
        #[derive(Clone, Debug)]
        pub(super) enum J {
            Null,
            Bool(bool),
            Num(String),
            Str(String),
            Arr(Vec<J>),
            Obj(Vec<(String, J)>),
        }

        fn text() -> impl Strategy<Value = String> {
            // Braces, brackets, quotes, backslashes, control characters, non-ASCII.
            prop_oneof![
                "[a-z._]{0,8}",
                "[a-z{}\\[\\]\"\\\\/:, \\x00-\\x1f\u{e9}\u{1F600}]{0,12}",
                // Long runs of backslashes and quotes, across the scanner's 64-byte blocks.
                "[\\\\\"a{}]{20,90}",
            ]
        }

        fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                "-?(0|[1-9][0-9]{0,5})(\\.[0-9]{1,4})?([eE][+-]?[0-9]{1,2})?",
            ]
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("id".to_owned()),
                Just("type".to_owned()),
                Just("properties".to_owned()),
                Just("sessionID".to_owned()),
                Just("data".to_owned()),
                Just("durable".to_owned()),
                Just("aggregateID".to_owned()),
                Just("seq".to_owned()),
                text(),
            ]
        }

        pub(super) fn value() -> impl Strategy<Value = J> {
            let leaf = prop_oneof![
                Just(J::Null),
                any::<bool>().prop_map(J::Bool),
                number().prop_map(J::Num),
                text().prop_map(J::Str),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Arr),
                    proptest::collection::vec((key(), inner), 0..4).prop_map(J::Obj),
                ]
            })
        }

        fn kind() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(crate::event::EventKind::ALL)
                    .prop_map(|k| k.as_str().to_owned()),
                text(),
            ]
        }

        fn properties() -> impl Strategy<Value = J> {
            let member = prop_oneof![
                3 => "ses_[A-Za-z0-9]{1,8}".prop_map(|s| ("sessionID".to_owned(), J::Str(s))),
                1 => value().prop_map(|v| ("sessionID".to_owned(), v)),
                4 => (key(), value()),
            ];
            prop_oneof![
                6 => proptest::collection::vec(member, 0..5).prop_map(J::Obj),
                1 => value(),
            ]
        }

        /// An event object: a `type` plus any mix of ids, properties, extra fields and
        /// repeated keys, in any order.
        pub(super) fn event() -> impl Strategy<Value = J> {
            let member = prop_oneof![
                3 => kind().prop_map(|k| ("type".to_owned(), J::Str(k))),
                1 => value().prop_map(|v| ("type".to_owned(), v)),
                3 => "evt_[A-Za-z0-9]{0,8}".prop_map(|s| ("id".to_owned(), J::Str(s))),
                1 => value().prop_map(|v| ("id".to_owned(), v)),
                4 => properties().prop_map(|p| ("properties".to_owned(), p)),
                3 => (key(), value()),
            ];
            (kind(), proptest::collection::vec(member, 0..6))
                .prop_flat_map(|(kind, mut members)| {
                    members.push(("type".to_owned(), J::Str(kind)));
                    Just(members).prop_shuffle()
                })
                .prop_map(J::Obj)
        }

        fn kind_v2() -> impl Strategy<Value = String> {
            prop_oneof![
                proptest::sample::select(crate::v2::EventKind::ALL)
                    .prop_map(|k| k.as_str().to_owned()),
                text(),
            ]
        }

        /// `durable.seq` as JSON numbers of every form `serde_json` reads differently:
        /// integers in and out of `u64`, negative, fractional, exponents, `-0`.
        fn seq() -> impl Strategy<Value = J> {
            prop_oneof![
                4 => any::<u64>().prop_map(|n| J::Num(n.to_string())),
                2 => (0u64..1000).prop_map(|n| J::Num(n.to_string())),
                1 => Just(J::Num("18446744073709551616".to_owned())),
                1 => Just(J::Num("-0".to_owned())),
                1 => Just(J::Num("-1".to_owned())),
                1 => Just(J::Num("1.0".to_owned())),
                1 => Just(J::Num("1e2".to_owned())),
                1 => value(),
            ]
        }

        fn durable() -> impl Strategy<Value = J> {
            let member = prop_oneof![
                3 => "ses_[A-Za-z0-9]{1,8}".prop_map(|s| ("aggregateID".to_owned(), J::Str(s))),
                1 => value().prop_map(|v| ("aggregateID".to_owned(), v)),
                3 => seq().prop_map(|v| ("seq".to_owned(), v)),
                1 => (0u64..3).prop_map(|v| ("version".to_owned(), J::Num(v.to_string()))),
                1 => (key(), value()),
            ];
            prop_oneof![
                6 => proptest::collection::vec(member, 0..5).prop_map(J::Obj),
                1 => value(),
            ]
        }

        /// An OpenCode 2 event object: a `type` plus any mix of ids, `data`, `durable`,
        /// extra fields and repeated keys, in any order.
        pub(super) fn event_v2() -> impl Strategy<Value = J> {
            let member = prop_oneof![
                3 => kind_v2().prop_map(|k| ("type".to_owned(), J::Str(k))),
                1 => value().prop_map(|v| ("type".to_owned(), v)),
                3 => "evt_[A-Za-z0-9]{0,8}".prop_map(|s| ("id".to_owned(), J::Str(s))),
                4 => properties().prop_map(|p| ("data".to_owned(), p)),
                3 => durable().prop_map(|d| ("durable".to_owned(), d)),
                1 => properties().prop_map(|p| ("properties".to_owned(), p)),
                3 => (key(), value()),
            ];
            (kind_v2(), proptest::collection::vec(member, 0..7))
                .prop_flat_map(|(kind, mut members)| {
                    members.push(("type".to_owned(), J::Str(kind)));
                    Just(members).prop_shuffle()
                })
                .prop_map(J::Obj)
        }

        /// The exact layout OpenCode 2 writes (the scanner's fast path), with arbitrary
        /// contents: `{"id","created"?,"metadata"?,"type","location"?,"data","durable"?}`.
        pub(super) fn server_layout_v2() -> impl Strategy<Value = String> {
            (
                "evt_[A-Za-z0-9]{0,26}",
                proptest::option::of(0u64..u64::MAX),
                proptest::option::of(value()),
                kind_v2(),
                proptest::option::of("/[a-z/]{0,20}"),
                properties(),
                proptest::option::of(("ses_[A-Za-z0-9]{1,26}", any::<u64>(), 0u64..3)),
                any::<u64>(),
            )
                .prop_map(|(id, created, metadata, kind, location, data, durable, seed)| {
                    let mut rng = fastrand::Rng::with_seed(seed);
                    let compact = |v: &J, rng: &mut fastrand::Rng| {
                        let mut out = String::new();
                        render(v, rng, &mut out);
                        // The server's JSON.stringify has no whitespace; keep what the
                        // renderer put inside strings only by re-serialising.
                        serde_json::from_str::<serde_json::Value>(&out)
                            .map(|v| v.to_string())
                            .unwrap_or(out)
                    };
                    let mut out = format!("{{\"id\":{}", serde_json::Value::from(id));
                    if let Some(c) = created {
                        out.push_str(&format!(",\"created\":{c}"));
                    }
                    if let Some(m) = metadata {
                        out.push_str(&format!(",\"metadata\":{{\"m\":{}}}", compact(&m, &mut rng)));
                    }
                    out.push_str(&format!(",\"type\":{}", serde_json::Value::from(kind)));
                    if let Some(l) = location {
                        out.push_str(&format!(
                            ",\"location\":{{\"directory\":{}}}",
                            serde_json::Value::from(l)
                        ));
                    }
                    out.push_str(&format!(",\"data\":{}", compact(&data, &mut rng)));
                    if let Some((agg, seq, version)) = durable {
                        out.push_str(&format!(
                            ",\"durable\":{{\"aggregateID\":\"{agg}\",\"seq\":{seq},\"version\":{version}}}"
                        ));
                    }
                    out.push('}');
                    out
                })
        }

        /// Renders `value` as JSON text, choosing whitespace and escapes with `rng`.
        pub(super) fn render(value: &J, rng: &mut fastrand::Rng, out: &mut String) {
            let ws = |rng: &mut fastrand::Rng, out: &mut String| {
                out.push_str(["", "", "", " ", "\n", "\t", "\r\n  "][rng.usize(..7)]);
            };
            ws(rng, out);
            match value {
                J::Null => out.push_str("null"),
                J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                J::Num(n) => out.push_str(n),
                J::Str(s) => string(s, rng, out),
                J::Arr(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        render(item, rng, out);
                    }
                    ws(rng, out);
                    out.push(']');
                }
                J::Obj(members) => {
                    out.push('{');
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        ws(rng, out);
                        string(k, rng, out);
                        ws(rng, out);
                        out.push(':');
                        render(v, rng, out);
                        ws(rng, out);
                    }
                    ws(rng, out);
                    out.push('}');
                }
            }
            ws(rng, out);
        }

        fn string(s: &str, rng: &mut fastrand::Rng, out: &mut String) {
            out.push('"');
            for c in s.chars() {
                let must = c == '"' || c == '\\' || (c as u32) < 0x20;
                match (must, rng.u8(..4)) {
                    (_, 0) => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{:04x}", u));
                        }
                    }
                    (true, _) => match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\t' => out.push_str("\\t"),
                        _ => out.push_str(&format!("\\u{:04X}", c as u32)),
                    },
                    (false, 1) if c == '/' => out.push_str("\\/"),
                    _ => out.push(c),
                }
            }
            out.push('"');
        }
    }

    /// The OpenCode 2 envelope equals `serde_json`'s reading: type, id, `data`, its
    /// session, and `durable.aggregateID` / `durable.seq` (`Value::as_u64`).
    fn assert_envelope_v2_matches_serde(
        text: &str,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let value: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        let parsed = RawEvent::parse_v2_str(text);
        let Some(kind) = value.get("type").and_then(|t| t.as_str()) else {
            proptest::prop_assert!(parsed.is_err(), "accepted without a string type: {text}");
            return Ok(());
        };
        let raw = parsed
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {text}")))?;
        proptest::prop_assert_eq!(raw.generation(), Generation::V2);
        proptest::prop_assert_eq!(raw.kind_str(), kind, "{}", text);
        proptest::prop_assert_eq!(raw.kind_v2(), crate::v2::EventKind::from_type(kind));
        proptest::prop_assert_eq!(raw.kind(), EventKind::Other);
        proptest::prop_assert_eq!(
            raw.id(),
            value.get("id").and_then(|v| v.as_str()),
            "{}",
            text
        );
        let data = value.get("data").cloned().unwrap_or(serde_json::json!({}));
        proptest::prop_assert_eq!(
            raw.session_id(),
            data.get("sessionID").and_then(|v| v.as_str()),
            "{}",
            text
        );
        let ours: serde_json::Value = serde_json::from_str(raw.properties_json())
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {text}")))?;
        proptest::prop_assert_eq!(ours, data, "{}", text);
        let durable = value.get("durable");
        proptest::prop_assert_eq!(
            raw.aggregate_id(),
            durable
                .and_then(|d| d.get("aggregateID"))
                .and_then(|v| v.as_str()),
            "{}",
            text
        );
        proptest::prop_assert_eq!(
            raw.seq(),
            durable
                .and_then(|d| d.get("seq"))
                .and_then(serde_json::Value::as_u64),
            "{}",
            text
        );
        Ok(())
    }

    #[test]
    fn v2_envelope_matches_serde_json_on_every_captured_event() {
        for text in crate::v2::tests_support::samples() {
            assert_envelope_v2_matches_serde(&text).unwrap();
        }
    }

    #[test]
    fn a_v2_envelope_reads_data_and_durable_in_any_layout() {
        let a = RawEvent::parse_v2(
            r#"{"durable":{"seq":7,"aggregateID":"ses_B","seq":8},"data":{"sessionID":"ses_A"},"type":"session.execution.started","properties":{"sessionID":"ses_X"}}"#
                .into(),
        )
        .unwrap();
        assert_eq!(a.session_id(), Some("ses_A"));
        assert_eq!(a.aggregate_id(), Some("ses_B"));
        assert_eq!(a.seq(), Some(8));
        assert_eq!(a.kind_v2(), crate::v2::EventKind::ExecutionStarted);
        let b = RawEvent::parse_v2(
            r#"{"id":"evt_1","type":"session.text.delta","data":{"sessionID":"ses_A","delta":"x"}}"#
                .into(),
        )
        .unwrap();
        assert_eq!((b.seq(), b.aggregate_id()), (None, None));
        // OpenCode 1 text read as V2 has no data, and the reverse no properties.
        let v1_text = r#"{"type":"session.idle","properties":{"sessionID":"ses_A"}}"#;
        assert_eq!(RawEvent::parse_v2_str(v1_text).unwrap().session_id(), None);
        let v2_text = r#"{"type":"session.execution.started","data":{"sessionID":"ses_A"}}"#;
        assert_eq!(RawEvent::parse_str(v2_text).unwrap().session_id(), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// The OpenCode 2 envelope read without a parser equals `serde_json`'s reading of
        /// every valid JSON object.
        #[test]
        fn v2_envelope_equals_serde_json_on_arbitrary_objects(
            event in arbitrary_json::event_v2(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut text = String::new();
            arbitrary_json::render(&event, &mut fastrand::Rng::with_seed(seed), &mut text);
            assert_envelope_v2_matches_serde(&text)?;
        }

        /// The same on the server's own layout (the fast path), whatever its contents.
        #[test]
        fn v2_envelope_equals_serde_json_on_the_server_layout(
            text in arbitrary_json::server_layout_v2(),
        ) {
            assert_envelope_v2_matches_serde(&text)?;
        }

        /// Truncated or corrupted OpenCode 2 envelopes never panic.
        #[test]
        fn damaged_v2_envelopes_never_panic(
            text in arbitrary_json::server_layout_v2(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let _ = RawEvent::parse_v2_str(&text[..at]);
            let _ = RawEvent::parse_v2_str(&text[at..]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

        /// The envelope read without a parser equals `serde_json`'s reading of every valid
        /// JSON object: type, id, session and the properties text.
        #[test]
        fn envelope_equals_serde_json_on_arbitrary_objects(
            event in arbitrary_json::event(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut text = String::new();
            arbitrary_json::render(&event, &mut fastrand::Rng::with_seed(seed), &mut text);
            assert_envelope_matches_serde(&text)?;
        }

        /// Truncated or corrupted envelopes never panic.
        #[test]
        fn damaged_envelopes_never_panic(
            event in arbitrary_json::event(),
            seed in proptest::prelude::any::<u64>(),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut text = String::new();
            arbitrary_json::render(&event, &mut fastrand::Rng::with_seed(seed), &mut text);
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            let _ = RawEvent::parse_str(&text[..at]);
            let _ = RawEvent::parse_str(&text[at..]);
        }
    }
}
