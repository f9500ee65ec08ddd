//! Events of `GET /event`: a cheap envelope decoded up front, typed payloads on demand.
//!
//! The router only needs an event's type and session to deliver it, so [`RawEvent::parse`]
//! reads just the envelope (`id`, `type`, and `properties.sessionID`) and keeps the text.
//! Subscribers call [`RawEvent::decode`] for the events they care about; one decoded
//! payload is never built for subscribers that ignore it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

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

#[derive(Clone, Debug)]
enum Slice {
    None,
    Range(u32, u32),
    Owned(Arc<str>),
}

/// Where the envelope's parts are in the text.
#[derive(Clone, Debug)]
struct Layout {
    kind: EventKind,
    kind_range: (u32, u32),
    id: (u32, u32),
    props: (u32, u32),
    session: Slice,
}

/// One event as it came off the stream: the JSON text plus its pre-decoded envelope.
/// Cloning is a reference-count increment (the text is shared, one allocation per event), so
/// the router hands the same event to any number of subscribers.
#[derive(Clone)]
pub struct RawEvent {
    text: Arc<str>,
    env: Layout,
}

impl fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawEvent")
            .field("kind", &self.kind_str())
            .field("session", &self.session_id())
            .field("len", &self.text.len())
            .finish()
    }
}

/// A string that borrows from the input when it has no escapes (serde's `borrow` does not
/// reach inside `Option`).
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<Text<'a>>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SessionField<'a> {
    #[serde(rename = "sessionID", borrow, default)]
    session_id: Option<Text<'a>>,
}

const FAST_PREFIX: &str = "{\"sessionID\":\"";

fn range_of(outer: &str, inner: &str) -> Option<(u32, u32)> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start + inner.len();
    (end <= outer.len()).then_some((start as u32, end as u32))
}

impl RawEvent {
    /// Parses the envelope of one SSE `data` payload. Only `type`, `id` and
    /// `properties.sessionID` are decoded; the rest stays text until [`RawEvent::decode`].
    ///
    /// OpenCode's own layout (`{"id":…,"type":…,"properties":{…}}` with no whitespace) is
    /// recognised without a JSON parser, so the properties of such an event are only
    /// validated by [`RawEvent::decode`] / [`RawEvent::properties`]; any other layout is
    /// parsed (and validated) as JSON here.
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
        if text.len() > u32::MAX as usize {
            return Err(EventParseError::Envelope {
                message: "event larger than 4 GiB".into(),
                excerpt: String::new(),
            });
        }
        let (kind, kind_range, id, props, session) = match fast_envelope(text) {
            Some((kind_range, id, props)) => {
                let kind =
                    EventKind::from_type(&text[kind_range.0 as usize..kind_range.1 as usize]);
                let p = &text[props.0 as usize..props.1 as usize];
                (kind, kind_range, id, props, session_slice(text, p))
            }
            None => slow_envelope(text)?,
        };
        Ok(RawEvent {
            text: Arc::from(text),
            env: Layout {
                kind,
                kind_range,
                id,
                props,
                session,
            },
        })
    }

    /// The event kind.
    pub fn kind(&self) -> EventKind {
        self.env.kind
    }

    /// The `type` string as sent (also for unknown kinds).
    pub fn kind_str(&self) -> &str {
        let (a, b) = self.env.kind_range;
        if b > a {
            &self.text[a as usize..b as usize]
        } else {
            self.env.kind.as_str()
        }
    }

    /// The event id (`evt_…`), if any.
    pub fn id(&self) -> Option<&str> {
        let (a, b) = self.env.id;
        (b > a).then(|| &self.text[a as usize..b as usize])
    }

    /// `properties.sessionID`, if the event has one.
    pub fn session_id(&self) -> Option<&str> {
        match &self.env.session {
            Slice::None => None,
            Slice::Range(a, b) => Some(&self.text[*a as usize..*b as usize]),
            Slice::Owned(s) => Some(s),
        }
    }

    /// The whole event JSON.
    pub fn json(&self) -> &str {
        &self.text
    }

    /// The `properties` JSON (`{}` when absent).
    pub fn properties_json(&self) -> &str {
        let (a, b) = self.env.props;
        if b > a {
            &self.text[a as usize..b as usize]
        } else {
            "{}"
        }
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

    /// Decodes the typed event.
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

type Ranges = ((u32, u32), (u32, u32), (u32, u32));

/// Length of the JSON string body at the start of `s` (up to its closing quote), when it has
/// no escape.
fn plain_string_len(s: &str) -> Option<usize> {
    let at = memchr::memchr2(b'"', b'\\', s.as_bytes())?;
    (s.as_bytes()[at] == b'"').then_some(at)
}

/// The layout OpenCode always writes (`JSON.stringify` of `{id, type, properties}`), read
/// without a JSON parser: ids and types never contain escapes. The properties are only
/// delimited here; they are validated when a subscriber decodes them.
fn fast_envelope(text: &str) -> Option<Ranges> {
    const ID: &str = "{\"id\":\"";
    const TYPE: &str = "\",\"type\":\"";
    const PROPS: &str = "\",\"properties\":{";
    let rest = text.strip_prefix(ID)?;
    // Ids and types with escapes take the parser's path.
    let id_len = plain_string_len(rest)?;
    let rest = &rest[id_len..];
    let rest = rest.strip_prefix(TYPE)?;
    let kind_len = plain_string_len(rest)?;
    let kind_start = text.len() - rest.len();
    let rest = &rest[kind_len..];
    let props_body = rest.strip_prefix(PROPS)?;
    let props_start = text.len() - props_body.len() - 1;
    // The text must end with the properties' `}` followed by the envelope's `}`.
    let props_end = text.len().checked_sub(1)?;
    if !text.ends_with("}}") || props_end <= props_start {
        return None;
    }
    let id_start = ID.len();
    Some((
        (kind_start as u32, (kind_start + kind_len) as u32),
        (id_start as u32, (id_start + id_len) as u32),
        (props_start as u32, props_end as u32),
    ))
}

/// Kind, kind range, id range, properties range and session of an envelope.
type SlowParts = (EventKind, (u32, u32), (u32, u32), (u32, u32), Slice);

/// Any other layout: a real (borrowing) JSON parse of the envelope.
fn slow_envelope(text: &str) -> Result<SlowParts, EventParseError> {
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| EventParseError::Envelope {
        message: e.to_string(),
        excerpt: crate::error::excerpt(text.as_bytes(), 80),
    })?;
    let kind = EventKind::from_type(&env.kind);
    let kind_range = match &env.kind {
        Cow::Borrowed(s) => range_of(text, s).unwrap_or((0, 0)),
        Cow::Owned(_) => (0, 0),
    };
    let id = match &env.id {
        Some(Text(Cow::Borrowed(s))) => range_of(text, s).unwrap_or((0, 0)),
        _ => (0, 0),
    };
    let (props, session) = match env.properties {
        None => ((0, 0), Slice::None),
        Some(raw) => {
            let p = raw.get();
            let props = range_of(text, p).unwrap_or((0, 0));
            (props, session_slice(text, p))
        }
    };
    Ok((kind, kind_range, id, props, session))
}

/// Finds `properties.sessionID`: a byte-prefix fast path for the common layout
/// (`{"sessionID":"ses_…",…}`), a serde fallback for any other.
fn session_slice(text: &str, props: &str) -> Slice {
    if let Some(rest) = props.strip_prefix(FAST_PREFIX)
        && let Some(end) = plain_string_len(rest)
        && let Some((a, b)) = range_of(text, &rest[..end])
    {
        return Slice::Range(a, b);
    }
    match serde_json::from_str::<SessionField<'_>>(props) {
        Ok(SessionField {
            session_id: Some(Text(Cow::Borrowed(s))),
        }) => range_of(text, s).map_or(Slice::None, |(a, b)| Slice::Range(a, b)),
        Ok(SessionField {
            session_id: Some(Text(Cow::Owned(s))),
        }) => Slice::Owned(Arc::from(s)),
        _ => Slice::None,
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
                    event: &'a RawValue,
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

    #[test]
    fn fast_envelope_matches_the_json_parse_on_every_sample() {
        for text in samples() {
            let fast = fast_envelope(&text).expect("OpenCode layout");
            let (kind, kind_range, id, props, _) = slow_envelope(&text).unwrap();
            assert_eq!(fast, (kind_range, id, props), "{text}");
            assert_eq!(
                EventKind::from_type(&text[fast.0.0 as usize..fast.0.1 as usize]),
                kind
            );
        }
        // Other layouts fall back to the parser.
        assert!(fast_envelope(r#"{"type":"x","id":"e","properties":{}}"#).is_none());
        assert!(fast_envelope(r#"{"id":"e","type":"x","properties":{} }"#).is_none());
        assert!(fast_envelope(r#"{"id":"e\"","type":"x","properties":{}}"#).is_none());
    }

    #[test]
    fn envelope_fast_path_and_fallback_agree() {
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
}
