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

    /// A range slice as a span (an escaped one is none: see [`RawEvent::build`]).
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
    #[inline(always)]
    fn build(text: &str, env: &Envelope, generation: Generation) -> Result<Self, EventParseError> {
        let json_len = u32::try_from(text.len()).map_err(|_| too_large(text))?;
        let owned = |s: &Slice| matches!(s, Slice::Escaped(..));
        let escaped =
            owned(&env.kind) || owned(&env.id) || owned(&env.session) || owned(&env.aggregate);
        let (buffer, [kind_at, id_at, session_at, aggregate_at]): (Arc<str>, [Span; 4]) = if escaped
        {
            // Rare: strings with escapes, decoded and appended after the JSON.
            let mut buffer = String::from(text);
            let mut span = |s: &Slice| match *s {
                Slice::Escaped(a, b) => {
                    // Checked by the scan: cannot fail.
                    let decoded =
                        envelope::unescape(text, a, b).map_err(|e| EventParseError::Envelope {
                            message: format!("{} at byte {}", e.message, e.at),
                            excerpt: crate::error::excerpt(text.as_bytes(), 80),
                        })?;
                    let start = buffer.len();
                    buffer.push_str(&decoded);
                    Ok(Span {
                        start: start as u32,
                        end: buffer.len() as u32,
                    })
                }
                other => Ok(Span::of(&other)),
            };
            let spans = [
                span(&env.kind)?,
                span(&env.id)?,
                span(&env.session)?,
                span(&env.aggregate)?,
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
            K::SessionCreated => Event::SessionCreated {
                info: self.session_info()?,
            },
            K::SessionUpdated => Event::SessionUpdated {
                info: self.session_info()?,
            },
            K::SessionDeleted => Event::SessionDeleted {
                info: self.session_info()?,
            },
            K::SessionStatus => {
                let (session_id, status) = match fast::status(self.properties_json()) {
                    Some(p) => p,
                    None => {
                        let p: StatusProps = self.properties()?;
                        (p.session_id, p.status)
                    }
                };
                Event::SessionStatus { session_id, status }
            }
            K::SessionIdle => Event::SessionIdle {
                session_id: self.only_session_id()?,
            },
            K::SessionError => {
                let p: ErrorProps = self.properties()?;
                Event::SessionError {
                    session_id: p.session_id,
                    error: p.error,
                }
            }
            K::SessionDiff => {
                let (session_id, diff) = match fast::diff(self.properties_json()) {
                    Some(p) => p,
                    None => {
                        let p: DiffProps = self.properties()?;
                        (p.session_id, p.diff)
                    }
                };
                Event::SessionDiff { session_id, diff }
            }
            K::SessionCompacted => Event::SessionCompacted {
                session_id: self.only_session_id()?,
            },
            K::MessageUpdated => Event::MessageUpdated {
                info: match fast::message(self.properties_json()) {
                    Some(info) => info,
                    None => self.properties::<MessageProps>()?.info,
                },
            },
            K::MessageRemoved => {
                let p: MessageRemovedProps = self.properties()?;
                Event::MessageRemoved {
                    session_id: p.session_id,
                    message_id: p.message_id,
                }
            }
            K::MessagePartUpdated => Event::MessagePartUpdated {
                part: match fast::part_updated(self.properties_json()) {
                    Some(part) => part,
                    None => self.properties::<PartProps>()?.part,
                },
            },
            K::MessagePartDelta => match fast::delta(self.properties_json()) {
                Some(p) => Event::MessagePartDelta {
                    session_id: p.session_id,
                    message_id: p.message_id,
                    part_id: p.part_id,
                    field: p.field,
                    delta: p.delta,
                },
                None => {
                    let p: DeltaProps = self.properties()?;
                    Event::MessagePartDelta {
                        session_id: p.session_id,
                        message_id: p.message_id,
                        part_id: p.part_id,
                        field: p.field,
                        delta: p.delta,
                    }
                }
            },
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

impl RawEvent {
    /// `info` of a `session.*` event: read directly, else by serde (same value or error).
    fn session_info(&self) -> Result<Box<Session>, EventParseError> {
        match fast::session_info(self.properties_json()) {
            Some(info) => Ok(info),
            None => Ok(self.properties::<SessionInfoProps>()?.info),
        }
    }

    /// `sessionID` of a payload that holds only it (`session.idle`, `session.compacted`).
    fn only_session_id(&self) -> Result<SessionId, EventParseError> {
        match fast::session_id(self.properties_json()) {
            Some(id) => Ok(id),
            None => Ok(self.properties::<SessionProps>()?.session_id),
        }
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

/// Typed payloads of the frequent kinds read directly from the JSON text, without serde's
/// visitor machinery (a turn's `message.updated`, `message.part.updated`, `session.*`,
/// `session.status` and `message.part.delta` are most of a stream).
///
/// **Exactly serde's result, or nothing.** Each reader accepts only input that `serde_json`
/// reads into the same value: plain strings (an escape, a control character, a key with an
/// escape), numbers outside the plain grammar, a repeated known field, a missing required
/// field, `null` where serde would refuse it, a struct given as an array, or deep nesting
/// make it give up (`None`), and the caller decodes with serde as before (same value, same
/// error). Unknown members are skipped after checking them as strictly as `serde_json`
/// does; the rare nested payloads (tool states, errors, permission rules, structured
/// output, diffs) are handed to serde as their own text.
mod fast {
    use std::sync::Arc;

    use serde::de::DeserializeOwned;

    use crate::ids::{MessageId, PartId, SessionId};
    use crate::types::{
        CacheTokens, Finish, MessageInfo, MessageTime, ModelRef, Part, PartKind, Role, Session,
        SessionModel, SessionStatus, SessionTime, Tokens,
    };

    /// Deeper than this, give up (serde_json's own limit is 128).
    const MAX_DEPTH: u32 = 64;

    /// A cursor over the payload text.
    struct Cur<'a> {
        text: &'a str,
        at: usize,
        depth: u32,
    }

    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;

    impl<'a> Cur<'a> {
        fn new(text: &'a str) -> Self {
            Cur {
                text,
                at: 0,
                depth: 0,
            }
        }

        #[inline]
        fn peek(&self) -> Option<u8> {
            self.text.as_bytes().get(self.at).copied()
        }

        #[inline]
        fn ws(&mut self) {
            let b = self.text.as_bytes();
            while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(self.at) {
                self.at += 1;
            }
        }

        #[inline]
        fn eat(&mut self, c: u8) -> Option<()> {
            (self.peek()? == c).then(|| self.at += 1)
        }

        /// The first quote, backslash or control character at or after `i` (or the end).
        #[inline(always)]
        fn stop(&self, mut i: usize) -> usize {
            let b = self.text.as_bytes();
            // Sixteen bytes at a time with SSE2 on x86-64 (most strings here end in the
            // first block).
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            {
                use safe_arch::{
                    bitor_m128i, cmp_eq_mask_i8_m128i, load_unaligned_m128i, max_u8_m128i,
                    move_mask_i8_m128i, set_splat_i8_m128i,
                };
                let quote = set_splat_i8_m128i(b'"' as i8);
                let slash = set_splat_i8_m128i(b'\\' as i8);
                let below = set_splat_i8_m128i(0x1F);
                while let Some(block) = b.get(i..i + 16) {
                    let Ok(block) = <&[u8; 16]>::try_from(block) else {
                        break;
                    };
                    let v = load_unaligned_m128i(block);
                    // A control character: max(v, 0x1F) == 0x1F.
                    let ctrl = cmp_eq_mask_i8_m128i(max_u8_m128i(v, below), below);
                    let hit = bitor_m128i(
                        bitor_m128i(
                            cmp_eq_mask_i8_m128i(v, quote),
                            cmp_eq_mask_i8_m128i(v, slash),
                        ),
                        ctrl,
                    );
                    let mask = move_mask_i8_m128i(hit);
                    if mask != 0 {
                        return i + mask.trailing_zeros() as usize;
                    }
                    i += 16;
                }
            }
            // Eight bytes at a time (exact for the first hit: borrows only run upwards).
            while let Some(word) = b.get(i..i + 8) {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(word);
                let w = u64::from_le_bytes(bytes);
                let ctrl = w.wrapping_sub(ONES * 0x20) & !w;
                let q = w ^ (ONES * u64::from(b'"'));
                let quote = q.wrapping_sub(ONES) & !q;
                let s = w ^ (ONES * u64::from(b'\\'));
                let slash = s.wrapping_sub(ONES) & !s;
                let hit = (ctrl | quote | slash) & HIGH;
                if hit != 0 {
                    return i + hit.trailing_zeros() as usize / 8;
                }
                i += 8;
            }
            while let Some(&c) = b.get(i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                i += 1;
            }
            i
        }

        /// A string without escapes or control characters (what serde reads as is).
        #[inline(always)]
        fn str(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let start = self.at;
            let end = self.stop(start);
            if self.text.as_bytes().get(end) != Some(&b'"') {
                return None;
            }
            self.at = end + 1;
            self.text.get(start..end)
        }

        /// A string, escapes decoded as serde_json decodes them (a `\u` escape of a
        /// surrogate gives up).
        fn string(&mut self) -> Option<String> {
            self.eat(b'"')?;
            let b = self.text.as_bytes();
            let start = self.at;
            let end = self.stop(start);
            if b.get(end) == Some(&b'"') {
                self.at = end + 1;
                return self.text.get(start..end).map(str::to_owned);
            }
            let mut out = String::with_capacity(end - start + 16);
            let mut from = start;
            let mut at = end;
            loop {
                out.push_str(self.text.get(from..at)?);
                match *b.get(at)? {
                    b'"' => {
                        self.at = at + 1;
                        return Some(out);
                    }
                    b'\\' => {
                        let c = match *b.get(at + 1)? {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hex = self.text.get(at + 2..at + 6)?;
                                if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                                    return None;
                                }
                                // Surrogates (pairs or lone) are left to serde.
                                char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                            }
                            _ => return None,
                        };
                        out.push(c);
                        from = at + if b[at + 1] == b'u' { 6 } else { 2 };
                        at = self.stop(from);
                    }
                    _ => return None,
                }
            }
        }

        /// An id: shared with the thread's earlier copy of it ([`crate::ids`]); an escaped id
        /// (never seen from OpenCode) is decoded first.
        fn id<T>(&mut self, make: fn(&str) -> T) -> Option<T> {
            let save = self.at;
            if let Some(s) = self.str() {
                return Some(make(s));
            }
            self.at = save;
            self.string().map(|s| make(&s))
        }

        /// A string that recurs from event to event (a directory, an agent, a model): shared
        /// with the thread's earlier copy of it, like an id.
        fn shared(&mut self) -> Option<Arc<str>> {
            self.id(crate::ids::intern)
        }

        /// Skips a string as serde_json ignores one: escapes are checked for their form only
        /// (`\u` takes any four hex digits), control characters refused.
        fn skip_string(&mut self) -> Option<()> {
            self.eat(b'"')?;
            let b = self.text.as_bytes();
            let mut at = self.stop(self.at);
            loop {
                match *b.get(at)? {
                    b'"' => {
                        self.at = at + 1;
                        return Some(());
                    }
                    b'\\' => {
                        let len = match *b.get(at + 1)? {
                            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => 2,
                            b'u' => {
                                let hex = b.get(at + 2..at + 6)?;
                                if !hex.iter().all(u8::is_ascii_hexdigit) {
                                    return None;
                                }
                                6
                            }
                            _ => return None,
                        };
                        at = self.stop(at + len);
                    }
                    _ => return None,
                }
            }
        }

        /// A JSON integer as `serde_json` reads it into a `u64`: plain digits, no leading
        /// zero, not followed by a fraction or an exponent, within range.
        #[inline]
        fn u64(&mut self) -> Option<u64> {
            let b = self.text.as_bytes();
            let start = self.at;
            let mut n: u64 = 0;
            while let Some(&c) = b.get(self.at) {
                if !c.is_ascii_digit() {
                    break;
                }
                n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                self.at += 1;
            }
            let digits = self.at - start;
            if digits == 0 || (digits > 1 && b[start] == b'0') {
                return None;
            }
            match b.get(self.at) {
                Some(b'.' | b'e' | b'E') => None,
                _ => Some(n),
            }
        }

        fn u32(&mut self) -> Option<u32> {
            u32::try_from(self.u64()?).ok()
        }

        /// Skips one JSON value, checking it as strictly as `serde_json` does when it
        /// ignores a value (strings without escapes only); returns its text.
        fn skip(&mut self) -> Option<&'a str> {
            let start = self.at;
            match self.peek()? {
                b'"' => self.skip_string()?,
                b'{' => {
                    self.enter()?;
                    self.object(|c, _| {
                        c.skip()?;
                        Some(())
                    })?;
                    self.depth -= 1;
                }
                b'[' => {
                    self.enter()?;
                    self.at += 1;
                    self.ws();
                    if self.peek()? == b']' {
                        self.at += 1;
                    } else {
                        loop {
                            self.skip()?;
                            self.ws();
                            match self.peek()? {
                                b',' => {
                                    self.at += 1;
                                    self.ws();
                                }
                                b']' => {
                                    self.at += 1;
                                    break;
                                }
                                _ => return None,
                            }
                        }
                    }
                    self.depth -= 1;
                }
                b't' => self.word("true")?,
                b'f' => self.word("false")?,
                b'n' => self.word("null")?,
                _ => self.number()?,
            }
            self.text.get(start..self.at)
        }

        fn enter(&mut self) -> Option<()> {
            self.depth += 1;
            (self.depth <= MAX_DEPTH).then_some(())
        }

        fn word(&mut self, w: &str) -> Option<()> {
            let end = self.at + w.len();
            (self.text.get(self.at..end)? == w).then(|| self.at = end)
        }

        /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
        fn number(&mut self) -> Option<()> {
            let b = self.text.as_bytes();
            let digits = |at: &mut usize| {
                let from = *at;
                while b.get(*at).is_some_and(u8::is_ascii_digit) {
                    *at += 1;
                }
                *at - from
            };
            let mut i = self.at;
            if b.get(i) == Some(&b'-') {
                i += 1;
            }
            let first = *b.get(i)?;
            let n = digits(&mut i);
            if n == 0 || (first == b'0' && n > 1) {
                return None;
            }
            if b.get(i) == Some(&b'.') {
                i += 1;
                if digits(&mut i) == 0 {
                    return None;
                }
            }
            if let Some(b'e' | b'E') = b.get(i) {
                i += 1;
                if let Some(b'+' | b'-') = b.get(i) {
                    i += 1;
                }
                if digits(&mut i) == 0 {
                    return None;
                }
            }
            self.at = i;
            Some(())
        }

        /// The members of the object here: `member(cursor, key)` reads (or skips) each
        /// value.
        #[inline]
        fn object(
            &mut self,
            mut member: impl FnMut(&mut Self, &'a str) -> Option<()>,
        ) -> Option<()> {
            self.eat(b'{')?;
            self.ws();
            if self.peek()? == b'}' {
                self.at += 1;
                return Some(());
            }
            loop {
                let key = self.str()?;
                self.ws();
                self.eat(b':')?;
                self.ws();
                member(self, key)?;
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.at += 1;
                        self.ws();
                    }
                    b'}' => {
                        self.at += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }

        /// A nested struct (counted against the depth limit).
        fn nested<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
            self.enter()?;
            let v = read(self)?;
            self.depth -= 1;
            Some(v)
        }

        /// `null` (`None`) or a value read by `read`.
        fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
            if self.peek()? == b'n' {
                self.word("null")?;
                return Some(None);
            }
            read(self).map(Some)
        }

        /// The value here decoded by serde from its own text (rare nested payloads).
        fn serde<T: DeserializeOwned>(&mut self) -> Option<T> {
            let text = self.skip()?;
            serde_json::from_str(text).ok()
        }

        /// A JSON number into an `f64` as serde_json reads it: a plain integer of up to 15
        /// digits is exact either way (serde converts the integer); anything else is parsed
        /// by serde_json itself (same rounding).
        fn f64(&mut self) -> Option<f64> {
            let start = self.at;
            self.number()?;
            let text = self.text.get(start..self.at)?;
            if text.len() <= 15 && text.bytes().all(|c| c.is_ascii_digit()) {
                return text.parse::<u64>().ok().map(|n| n as f64);
            }
            serde_json::from_str(text).ok()
        }

        fn bool(&mut self) -> Option<bool> {
            match self.peek()? {
                b't' => self.word("true").map(|()| true),
                b'f' => self.word("false").map(|()| false),
                _ => None,
            }
        }

        /// Nothing but whitespace after the value (as `serde_json::from_str` requires).
        fn end(&mut self) -> Option<()> {
            self.ws();
            (self.at == self.text.len()).then_some(())
        }
    }

    /// Marks field `bit` as seen; `None` when it was already (serde: duplicate field).
    #[inline]
    fn once(seen: &mut u32, bit: u32) -> Option<()> {
        let mask = 1 << bit;
        if *seen & mask != 0 {
            return None;
        }
        *seen |= mask;
        Some(())
    }

    fn tokens(c: &mut Cur<'_>) -> Option<Tokens> {
        let mut t = Tokens::default();
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "total" => {
                        once(&mut seen, 0)?;
                        t.total = c.option(Cur::u64)?;
                    }
                    "input" => {
                        once(&mut seen, 1)?;
                        t.input = c.u64()?;
                    }
                    "output" => {
                        once(&mut seen, 2)?;
                        t.output = c.u64()?;
                    }
                    "reasoning" => {
                        once(&mut seen, 3)?;
                        t.reasoning = c.u64()?;
                    }
                    "cache" => {
                        once(&mut seen, 4)?;
                        t.cache = cache(c)?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(t)
    }

    fn cache(c: &mut Cur<'_>) -> Option<CacheTokens> {
        let mut t = CacheTokens::default();
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "read" => {
                        once(&mut seen, 0)?;
                        t.read = c.u64()?;
                    }
                    "write" => {
                        once(&mut seen, 1)?;
                        t.write = c.u64()?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(t)
    }

    fn session_time(c: &mut Cur<'_>) -> Option<SessionTime> {
        let mut t = SessionTime::default();
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "created" => {
                        once(&mut seen, 0)?;
                        t.created = c.u64()?;
                    }
                    "updated" => {
                        once(&mut seen, 1)?;
                        t.updated = c.u64()?;
                    }
                    "archived" => {
                        once(&mut seen, 2)?;
                        t.archived = c.option(Cur::u64)?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(t)
    }

    fn session_model(c: &mut Cur<'_>) -> Option<SessionModel> {
        let (mut id, mut provider_id, mut variant) = (None, None, None);
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "id" => {
                        once(&mut seen, 0)?;
                        id = Some(c.shared()?);
                    }
                    "providerID" => {
                        once(&mut seen, 1)?;
                        provider_id = Some(c.shared()?);
                    }
                    "variant" => {
                        once(&mut seen, 2)?;
                        variant = c.option(Cur::string)?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(SessionModel {
            id: id?,
            provider_id: provider_id?,
            variant,
        })
    }

    fn model_ref(c: &mut Cur<'_>) -> Option<ModelRef> {
        let (mut provider_id, mut model_id) = (None, None);
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "providerID" => {
                        once(&mut seen, 0)?;
                        provider_id = Some(c.string()?);
                    }
                    "modelID" => {
                        once(&mut seen, 1)?;
                        model_id = Some(c.string()?);
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(ModelRef {
            provider_id: provider_id?,
            model_id: model_id?,
        })
    }

    fn message_time(c: &mut Cur<'_>) -> Option<MessageTime> {
        let mut t = MessageTime::default();
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "created" => {
                        once(&mut seen, 0)?;
                        t.created = c.u64()?;
                    }
                    "completed" => {
                        once(&mut seen, 1)?;
                        t.completed = c.option(Cur::u64)?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(t)
    }

    fn session(c: &mut Cur<'_>) -> Option<Session> {
        let mut id = None;
        // Absent (rare): empty, as serde's `default` gives.
        let (mut slug, mut project_id, mut directory, mut title, mut version) =
            (None, None, None, None, None);
        let (mut parent_id, mut agent, mut model, mut permission) = (None, None, None, None);
        let mut cost = 0.0;
        let mut tokens_ = Tokens::default();
        let mut time = SessionTime::default();
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "id" => {
                        once(&mut seen, 0)?;
                        id = Some(c.id(SessionId::interned)?);
                    }
                    "slug" => {
                        once(&mut seen, 1)?;
                        slug = Some(c.shared()?);
                    }
                    "projectID" => {
                        once(&mut seen, 2)?;
                        project_id = Some(c.shared()?);
                    }
                    "directory" => {
                        once(&mut seen, 3)?;
                        directory = Some(c.shared()?);
                    }
                    "parentID" => {
                        once(&mut seen, 4)?;
                        parent_id = c.option(|c| c.id(SessionId::interned))?;
                    }
                    "title" => {
                        once(&mut seen, 5)?;
                        title = Some(c.shared()?);
                    }
                    "agent" => {
                        once(&mut seen, 6)?;
                        agent = c.option(Cur::shared)?;
                    }
                    "model" => {
                        once(&mut seen, 7)?;
                        model = c.option(session_model)?;
                    }
                    "version" => {
                        once(&mut seen, 8)?;
                        version = Some(c.shared()?);
                    }
                    "cost" => {
                        once(&mut seen, 9)?;
                        cost = c.f64()?;
                    }
                    "tokens" => {
                        once(&mut seen, 10)?;
                        tokens_ = tokens(c)?;
                    }
                    "permission" => {
                        once(&mut seen, 11)?;
                        permission = c.serde()?;
                    }
                    "time" => {
                        once(&mut seen, 12)?;
                        time = session_time(c)?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(Session {
            id: id?,
            slug: slug.unwrap_or_default(),
            project_id: project_id.unwrap_or_default(),
            directory: directory.unwrap_or_default(),
            parent_id,
            title: title.unwrap_or_default(),
            agent,
            model,
            version: version.unwrap_or_default(),
            cost,
            tokens: tokens_,
            permission,
            time,
        })
    }

    fn message_info(c: &mut Cur<'_>) -> Option<MessageInfo> {
        let (mut id, mut session_id, mut role) = (None, None, None);
        let mut time = MessageTime::default();
        let (mut parent_id, mut agent, mut mode, mut provider_id, mut model_id) =
            (None, None, None, None, None);
        let (mut model, mut finish, mut error, mut structured) = (None, None, None, None);
        let mut cost = 0.0;
        let mut tokens_ = Tokens::default();
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "id" => {
                        once(&mut seen, 0)?;
                        id = Some(c.id(MessageId::interned)?);
                    }
                    "sessionID" => {
                        once(&mut seen, 1)?;
                        session_id = Some(c.id(SessionId::interned)?);
                    }
                    "role" => {
                        once(&mut seen, 2)?;
                        role = Some(Role::from(c.str()?));
                    }
                    "time" => {
                        once(&mut seen, 3)?;
                        time = message_time(c)?;
                    }
                    "parentID" => {
                        once(&mut seen, 4)?;
                        parent_id = c.option(|c| c.id(MessageId::interned))?;
                    }
                    "agent" => {
                        once(&mut seen, 5)?;
                        agent = c.option(Cur::shared)?;
                    }
                    "mode" => {
                        once(&mut seen, 6)?;
                        mode = c.option(Cur::shared)?;
                    }
                    "providerID" => {
                        once(&mut seen, 7)?;
                        provider_id = c.option(Cur::shared)?;
                    }
                    "modelID" => {
                        once(&mut seen, 8)?;
                        model_id = c.option(Cur::shared)?;
                    }
                    "model" => {
                        once(&mut seen, 9)?;
                        model = c.option(model_ref)?;
                    }
                    "cost" => {
                        once(&mut seen, 10)?;
                        cost = c.f64()?;
                    }
                    "tokens" => {
                        once(&mut seen, 11)?;
                        tokens_ = tokens(c)?;
                    }
                    "finish" => {
                        once(&mut seen, 12)?;
                        finish = c.option(|c| c.str().map(Finish::from))?;
                    }
                    "error" => {
                        once(&mut seen, 13)?;
                        error = c.serde()?;
                    }
                    "structured" => {
                        once(&mut seen, 14)?;
                        structured = c.serde()?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(MessageInfo {
            id: id?,
            session_id: session_id?,
            role: role?,
            time,
            parent_id,
            agent,
            mode,
            provider_id,
            model_id,
            model,
            cost,
            tokens: tokens_,
            finish,
            error,
            structured,
        })
    }

    fn part(c: &mut Cur<'_>) -> Option<Part> {
        let (mut id, mut session_id, mut message_id, mut kind) = (None, None, None, None);
        let (mut text, mut synthetic, mut tool, mut call_id, mut state) =
            (None, None, None, None, None);
        let (mut reason, mut tokens_, mut cost, mut files) = (None, None, None, None);
        let (mut mime, mut url, mut filename) = (None, None, None);
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "id" => {
                        once(&mut seen, 0)?;
                        id = Some(c.id(PartId::interned)?);
                    }
                    "sessionID" => {
                        once(&mut seen, 1)?;
                        session_id = Some(c.id(SessionId::interned)?);
                    }
                    "messageID" => {
                        once(&mut seen, 2)?;
                        message_id = Some(c.id(MessageId::interned)?);
                    }
                    "type" => {
                        once(&mut seen, 3)?;
                        kind = Some(PartKind::from(c.str()?));
                    }
                    "text" => {
                        once(&mut seen, 4)?;
                        text = c.option(Cur::string)?;
                    }
                    "synthetic" => {
                        once(&mut seen, 5)?;
                        synthetic = c.option(Cur::bool)?;
                    }
                    "tool" => {
                        once(&mut seen, 6)?;
                        tool = c.option(Cur::string)?;
                    }
                    "callID" => {
                        once(&mut seen, 7)?;
                        call_id = c.option(Cur::string)?;
                    }
                    "state" => {
                        once(&mut seen, 8)?;
                        state = c.serde()?;
                    }
                    "reason" => {
                        once(&mut seen, 9)?;
                        reason = c.option(|c| c.str().map(Finish::from))?;
                    }
                    "tokens" => {
                        once(&mut seen, 10)?;
                        tokens_ = c.option(tokens)?;
                    }
                    "cost" => {
                        once(&mut seen, 11)?;
                        cost = c.option(Cur::f64)?;
                    }
                    "files" => {
                        once(&mut seen, 12)?;
                        files = c.serde()?;
                    }
                    "mime" => {
                        once(&mut seen, 13)?;
                        mime = c.option(Cur::string)?;
                    }
                    "url" => {
                        once(&mut seen, 14)?;
                        url = c.option(Cur::string)?;
                    }
                    "filename" => {
                        once(&mut seen, 15)?;
                        filename = c.option(Cur::string)?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(Part {
            id: id?,
            session_id: session_id?,
            message_id: message_id?,
            kind: kind?,
            text,
            synthetic,
            tool,
            call_id,
            state,
            reason,
            tokens: tokens_,
            cost,
            files,
            mime,
            url,
            filename,
        })
    }

    /// The payload object `{…}` with one required member `name` read by `read`, every other
    /// member skipped.
    fn single<T>(props: &str, name: &str, read: impl Fn(&mut Cur<'_>) -> Option<T>) -> Option<T> {
        let mut c = Cur::new(props);
        c.ws();
        let mut value = None;
        let mut seen = 0;
        c.object(|c, key| {
            if key == name {
                once(&mut seen, 0)?;
                value = Some(read(c)?);
            } else {
                c.skip()?;
            }
            Some(())
        })?;
        c.end()?;
        value
    }

    /// `session.created` / `updated` / `deleted`: `{"info": Session}`.
    pub(super) fn session_info(props: &str) -> Option<Box<Session>> {
        single(props, "info", session).map(Box::new)
    }

    /// `message.updated`: `{"info": MessageInfo}`.
    pub(super) fn message(props: &str) -> Option<Box<MessageInfo>> {
        single(props, "info", message_info).map(Box::new)
    }

    /// `message.part.updated`: `{"part": Part}`.
    pub(super) fn part_updated(props: &str) -> Option<Box<Part>> {
        single(props, "part", part).map(Box::new)
    }

    /// `session.idle` / `session.compacted`: `{"sessionID": …}`.
    pub(super) fn session_id(props: &str) -> Option<SessionId> {
        single(props, "sessionID", |c| c.id(SessionId::interned))
    }

    /// `session.status`: `{"sessionID": …, "status": {"type": …, …}}`.
    pub(super) fn status(props: &str) -> Option<(SessionId, SessionStatus)> {
        let mut c = Cur::new(props);
        c.ws();
        let (mut sid, mut status) = (None, None);
        let mut seen = 0;
        c.object(|c, key| {
            match key {
                "sessionID" => {
                    once(&mut seen, 0)?;
                    sid = Some(c.id(SessionId::interned)?);
                }
                "status" => {
                    once(&mut seen, 1)?;
                    status = Some(session_status(c)?);
                }
                _ => {
                    c.skip()?;
                }
            }
            Some(())
        })?;
        c.end()?;
        Some((sid?, status?))
    }

    /// [`SessionStatus`]'s own reading: `type`, and `attempt` / `message` / `next` for a
    /// retry.
    fn session_status(c: &mut Cur<'_>) -> Option<SessionStatus> {
        let (mut kind, mut attempt, mut message, mut next) = (None, 0u32, "", 0u64);
        let mut seen = 0;
        c.nested(|c| {
            c.object(|c, key| {
                match key {
                    "type" => {
                        once(&mut seen, 0)?;
                        kind = Some(c.str()?);
                    }
                    "attempt" => {
                        once(&mut seen, 1)?;
                        attempt = c.u32()?;
                    }
                    "message" => {
                        once(&mut seen, 2)?;
                        message = c.str()?;
                    }
                    "next" => {
                        once(&mut seen, 3)?;
                        next = c.u64()?;
                    }
                    _ => {
                        c.skip()?;
                    }
                }
                Some(())
            })
        })?;
        Some(match kind? {
            "idle" => SessionStatus::Idle,
            "busy" => SessionStatus::Busy,
            "retry" => SessionStatus::Retry {
                attempt,
                message: message.to_owned(),
                next,
            },
            other => SessionStatus::Other(other.to_owned()),
        })
    }

    /// `message.part.delta`'s members.
    pub(super) struct Delta {
        pub(super) session_id: SessionId,
        pub(super) message_id: MessageId,
        pub(super) part_id: PartId,
        pub(super) field: String,
        pub(super) delta: String,
    }

    /// `message.part.delta`: `{"sessionID", "messageID", "partID", "field", "delta"}`.
    pub(super) fn delta(props: &str) -> Option<Delta> {
        let mut c = Cur::new(props);
        c.ws();
        let (mut sid, mut mid, mut pid) = (None, None, None);
        let (mut field, mut delta) = (String::new(), String::new());
        let mut seen = 0;
        c.object(|c, key| {
            match key {
                "sessionID" => {
                    once(&mut seen, 0)?;
                    sid = Some(c.id(SessionId::interned)?);
                }
                "messageID" => {
                    once(&mut seen, 1)?;
                    mid = Some(c.id(MessageId::interned)?);
                }
                "partID" => {
                    once(&mut seen, 2)?;
                    pid = Some(c.id(PartId::interned)?);
                }
                "field" => {
                    once(&mut seen, 3)?;
                    field = c.string()?;
                }
                "delta" => {
                    once(&mut seen, 4)?;
                    delta = c.string()?;
                }
                _ => {
                    c.skip()?;
                }
            }
            Some(())
        })?;
        c.end()?;
        Some(Delta {
            session_id: sid?,
            message_id: mid?,
            part_id: pid?,
            field,
            delta,
        })
    }

    /// `session.diff`: `{"sessionID": …, "diff": any}`.
    pub(super) fn diff(props: &str) -> Option<(SessionId, serde_json::Value)> {
        let mut c = Cur::new(props);
        c.ws();
        let (mut sid, mut diff) = (None, None);
        let mut seen = 0;
        c.object(|c, key| {
            match key {
                "sessionID" => {
                    once(&mut seen, 0)?;
                    sid = Some(c.id(SessionId::interned)?);
                }
                "diff" => {
                    once(&mut seen, 1)?;
                    diff = Some(match c.peek()? {
                        // The usual empty diff, without a parser.
                        b'[' if c.text.as_bytes().get(c.at + 1) == Some(&b']') => {
                            c.at += 2;
                            serde_json::Value::Array(Vec::new())
                        }
                        _ => c.serde()?,
                    });
                }
                _ => {
                    c.skip()?;
                }
            }
            Some(())
        })?;
        c.end()?;
        Some((sid?, diff.unwrap_or_default()))
    }
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

    /// Every fast reader against serde's reading of the same payload: `Some` only with the
    /// value serde reads (serde must succeed then).
    fn fast_equals_serde(props: &str) -> (usize, usize) {
        fn check<T: PartialEq + fmt::Debug, S>(
            fast: Option<T>,
            serde: Result<S, serde_json::Error>,
            map: impl Fn(S) -> T,
            props: &str,
        ) -> (usize, usize) {
            match fast {
                Some(f) => {
                    let s = serde.map(map).unwrap_or_else(|e| {
                        panic!("fast path accepted what serde refuses ({e}): {props}")
                    });
                    assert_eq!(f, s, "{props}");
                    (1, 1)
                }
                None => (0, 1),
            }
        }
        let mut n = (0, 0);
        let mut add = |r: (usize, usize)| {
            n.0 += r.0;
            n.1 += r.1;
        };
        add(check(
            fast::session_info(props),
            serde_json::from_str::<SessionInfoProps>(props),
            |p| p.info,
            props,
        ));
        add(check(
            fast::message(props),
            serde_json::from_str::<MessageProps>(props),
            |p| p.info,
            props,
        ));
        add(check(
            fast::part_updated(props),
            serde_json::from_str::<PartProps>(props),
            |p| p.part,
            props,
        ));
        add(check(
            fast::session_id(props),
            serde_json::from_str::<SessionProps>(props),
            |p| p.session_id,
            props,
        ));
        add(check(
            fast::status(props),
            serde_json::from_str::<StatusProps>(props),
            |p| (p.session_id, p.status),
            props,
        ));
        add(check(
            fast::delta(props).map(|d| (d.session_id, d.message_id, d.part_id, d.field, d.delta)),
            serde_json::from_str::<DeltaProps>(props),
            |p| (p.session_id, p.message_id, p.part_id, p.field, p.delta),
            props,
        ));
        add(check(
            fast::diff(props),
            serde_json::from_str::<DiffProps>(props),
            |p| (p.session_id, p.diff),
            props,
        ));
        n
    }

    #[test]
    fn fast_readers_equal_serde_on_every_captured_payload() {
        let mut direct = 0;
        for text in samples() {
            let raw = RawEvent::parse(text.clone()).unwrap();
            let props = raw.properties_json();
            fast_equals_serde(props);
            // Every captured payload of the fast kinds is read directly (none falls back).
            let fast = match raw.kind() {
                EventKind::SessionCreated
                | EventKind::SessionUpdated
                | EventKind::SessionDeleted => fast::session_info(props).is_some(),
                EventKind::MessageUpdated => fast::message(props).is_some(),
                EventKind::MessagePartUpdated => fast::part_updated(props).is_some(),
                EventKind::MessagePartDelta => fast::delta(props).is_some(),
                EventKind::SessionStatus => fast::status(props).is_some(),
                EventKind::SessionIdle => fast::session_id(props).is_some(),
                EventKind::SessionDiff => fast::diff(props).is_some(),
                _ => continue,
            };
            assert!(fast, "fell back: {text}");
            direct += 1;
        }
        assert_eq!(direct, 45 + 11 + 1 + 76 + 74 + 27 + 52 + 12 + 23);
    }

    /// Mutates `props` (a payload of the captured stream) the ways that separate a lenient
    /// reader from serde: members removed, `null`ed, retyped, duplicated, unknown members,
    /// escapes, control characters, odd numbers, arrays for structs, whitespace.
    fn mutate(props: &str, rng: &mut fastrand::Rng) -> String {
        let mut text = props.to_owned();
        for _ in 0..rng.usize(1..4) {
            let quotes: Vec<usize> = text.match_indices("\":").map(|(i, _)| i).collect();
            let Some(&at) = quotes.get(rng.usize(..quotes.len().max(1))) else {
                break;
            };
            // The value after `":` at `at`.
            let v = at + 2;
            let end = {
                let b = text.as_bytes();
                let mut depth = 0i32;
                let mut i = v;
                let mut in_str = false;
                while i < b.len() {
                    let c = b[i];
                    if in_str {
                        if c == b'\\' {
                            i += 1;
                        } else if c == b'"' {
                            in_str = false;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                    } else if c == b'"' {
                        in_str = true;
                    } else if c == b'{' || c == b'[' {
                        depth += 1;
                    } else if c == b'}' || c == b']' {
                        if depth == 0 {
                            break;
                        }
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    } else if depth == 0 && c == b',' {
                        break;
                    }
                    i += 1;
                }
                i
            };
            let key_start = text[..at].rfind('"').unwrap_or(at);
            let member = text[key_start..end].to_owned();
            const VALUES: &[&str] = &[
                "null",
                "0",
                "-1",
                "01",
                "1.5",
                "1e2",
                "-0",
                "18446744073709551616",
                "4294967296",
                "\"x\"",
                "\"a\\\"b\"",
                "\"\\u00e9\"",
                "\"\u{1}\"",
                "[]",
                "{}",
                "[1,2]",
                "{\"a\":[{\"b\":null}]}",
                "true",
                " \"s\" ",
                "[\"a\",\"b\"]",
                "\"busy\"",
                "\"retry\"",
                "\"idle\"",
                "1.0",
                "[1,]",
                "{\"a\":1,}",
                "nul",
                "\"\\x\"",
            ];
            match rng.u8(..6) {
                // Replace the value.
                0 | 1 => text.replace_range(v..end, VALUES[rng.usize(..VALUES.len())]),
                // Remove the member (and a comma).
                2 => {
                    let (a, b) = if text[end..].starts_with(',') {
                        (key_start, end + 1)
                    } else if text[..key_start].ends_with(',') {
                        (key_start - 1, end)
                    } else {
                        (key_start, end)
                    };
                    text.replace_range(a..b, "");
                }
                // Duplicate the member.
                3 => text.insert_str(key_start, &format!("{member},")),
                // An unknown member before it.
                4 => text.insert_str(
                    key_start,
                    &format!(
                        "\"x{}\":{},",
                        rng.u8(..3),
                        VALUES[rng.usize(..VALUES.len())]
                    ),
                ),
                // Whitespace around it.
                _ => {
                    text.insert_str(end, " \n");
                    text.insert_str(key_start, "\t ");
                }
            }
        }
        text
    }

    #[test]
    fn mutated_payloads_exercise_both_the_fast_path_and_the_fallback() {
        let (mut fast, mut serde_ok, mut serde_err) = (0, 0, 0);
        for (i, text) in samples().iter().enumerate() {
            let raw = RawEvent::parse(text.clone()).unwrap();
            for seed in 0..40 {
                let mut rng = fastrand::Rng::with_seed(seed * 1000 + i as u64);
                let props = mutate(raw.properties_json(), &mut rng);
                let direct = match raw.kind() {
                    EventKind::SessionUpdated => fast::session_info(&props).is_some(),
                    EventKind::MessageUpdated => fast::message(&props).is_some(),
                    EventKind::MessagePartUpdated => fast::part_updated(&props).is_some(),
                    _ => continue,
                };
                fast_equals_serde(&props);
                let serde = match raw.kind() {
                    EventKind::SessionUpdated => {
                        serde_json::from_str::<SessionInfoProps>(&props).is_ok()
                    }
                    EventKind::MessageUpdated => {
                        serde_json::from_str::<MessageProps>(&props).is_ok()
                    }
                    _ => serde_json::from_str::<PartProps>(&props).is_ok(),
                };
                fast += usize::from(direct);
                serde_ok += usize::from(serde && !direct);
                serde_err += usize::from(!serde);
            }
        }
        // Most mutations keep the payload readable directly; some only serde reads (an
        // escaped key, an array for a struct, a float for a cost...), some nobody reads.
        assert!(
            fast > 2000 && serde_ok > 10 && serde_err > 1000,
            "{fast} {serde_ok} {serde_err}"
        );
    }

    proptest::proptest! {
        /// On mutated payloads the fast readers still return serde's value or nothing.
        #[test]
        fn fast_readers_never_disagree_with_serde(
            pick in proptest::prelude::any::<proptest::sample::Index>(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let all = samples();
            let text = &all[pick.index(all.len())];
            let raw = RawEvent::parse(text.clone()).unwrap();
            let mut rng = fastrand::Rng::with_seed(seed);
            let props = mutate(raw.properties_json(), &mut rng);
            fast_equals_serde(&props);
        }
    }
}
