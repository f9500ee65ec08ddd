//! Request and response shapes of the OpenCode HTTP API (1.18.33).
//!
//! Every response type tolerates unknown fields, and every closed set of strings (status,
//! finish reason, part type, error name…) has an `Other(String)` variant that keeps values a
//! newer server may send instead of rejecting them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::ids::{MessageId, PartId, PermissionId, QuestionId, SessionId};

/// Declares a string enum that keeps unknown values in `Other(String)`.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this client does not know (kept verbatim).
            Other(String),
        }

        impl $name {
            /// The value as OpenCode spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)+
                    Self::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)+
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::from(&*s))
            }
        }
    };
}

pub(crate) use open_enum;

open_enum!(
    /// Role of a message.
    Role { /// Sent by the user (us).
    User = "user", /// Produced by the model.
    Assistant = "assistant" }
);

open_enum!(
    /// Why a model step ended.
    Finish {
        /// Normal end of the turn.
        Stop = "stop",
        /// The step ended with tool calls (another step follows, unless a tool was rejected).
        ToolCalls = "tool-calls",
        /// The model stream ended without a finish reason.
        Unknown = "unknown",
        /// The output hit the length limit.
        Length = "length",
    }
);

open_enum!(
    /// Type of a message part.
    PartKind {
        /// Text.
        Text = "text",
        /// Model reasoning.
        Reasoning = "reasoning",
        /// A tool call and its state.
        Tool = "tool",
        /// Start of a model step.
        StepStart = "step-start",
        /// End of a model step, with tokens and cost.
        StepFinish = "step-finish",
        /// Files changed by a step.
        Patch = "patch",
        /// An attached file.
        File = "file",
        /// Marker of a compaction request.
        Compaction = "compaction",
        /// A subtask request.
        Subtask = "subtask",
        /// An agent mention.
        Agent = "agent",
        /// A retry notice.
        Retry = "retry",
    }
);

open_enum!(
    /// Status of a tool call.
    ToolStatus {
        /// Arguments still streaming.
        Pending = "pending",
        /// Executing (or waiting for a permission reply).
        Running = "running",
        /// Finished with output.
        Completed = "completed",
        /// Failed (rejected, aborted, tool error).
        Error = "error",
    }
);

open_enum!(
    /// `name` of an error reported by OpenCode for a message or a session.
    ErrorName {
        /// The model provider answered with an HTTP error (after OpenCode's own retries).
        Api = "APIError",
        /// Anything else (unknown model, mid-stream error…).
        Unknown = "UnknownError",
        /// The turn was aborted.
        Aborted = "MessageAbortedError",
        /// Provider credentials were rejected.
        ProviderAuth = "ProviderAuthError",
        /// The output hit the length limit.
        OutputLength = "MessageOutputLengthError",
        /// Structured output failed.
        StructuredOutput = "StructuredOutputError",
        /// The context window overflowed.
        ContextOverflow = "ContextOverflowError",
        /// The provider's content filter fired.
        ContentFilter = "ContentFilterError",
    }
);

open_enum!(
    /// What a permission rule does.
    PermissionAction {
        /// Allowed without asking.
        Allow = "allow",
        /// Asks (emits `permission.asked` and blocks the turn until answered).
        Ask = "ask",
        /// Denied: the tool is not even offered to the model.
        Deny = "deny",
    }
);

open_enum!(
    /// Answer to a permission request.
    PermissionReply {
        /// Allow this one call.
        Once = "once",
        /// Allow this call and the request's `always` patterns for every session of the
        /// project until the server exits.
        Always = "always",
        /// Reject: the tool call fails and (without a message) the turn ends.
        Reject = "reject",
    }
);

open_enum!(
    /// Toast variant for `tui/show-toast`.
    ToastVariant { /// Informational.
    Info = "info", /// Success.
    Success = "success", /// Warning.
    Warning = "warning", /// Error.
    Error = "error" }
);

/// Token counts of a message, a step or a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Tokens {
    /// Total, when OpenCode reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Prompt tokens.
    #[serde(default)]
    pub input: u64,
    /// Completion tokens.
    #[serde(default)]
    pub output: u64,
    /// Reasoning tokens.
    #[serde(default)]
    pub reasoning: u64,
    /// Cache reads and writes.
    #[serde(default)]
    pub cache: CacheTokens,
}

impl Tokens {
    /// Adds `other` to `self` (used to sum a turn's steps).
    pub fn add(&mut self, other: &Tokens) {
        self.total = match (self.total, other.total) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.input += other.input;
        self.output += other.output;
        self.reasoning += other.reasoning;
        self.cache.read += other.cache.read;
        self.cache.write += other.cache.write;
    }
}

/// Cache token counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CacheTokens {
    /// Tokens read from the cache.
    #[serde(default)]
    pub read: u64,
    /// Tokens written to the cache.
    #[serde(default)]
    pub write: u64,
}

/// A provider + model pair as prompts and `summarize` take it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    /// Provider id, e.g. `fake` or `anthropic`.
    #[serde(rename = "providerID")]
    pub provider_id: String,
    /// Model id within the provider.
    #[serde(rename = "modelID")]
    pub model_id: String,
}

impl ModelRef {
    /// `ModelRef::new("fake", "fake-model")`.
    pub fn new(provider_id: impl Into<String>, model_id: impl Into<String>) -> Self {
        Self {
            provider_id: provider_id.into(),
            model_id: model_id.into(),
        }
    }

    /// Parses `provider/model` (the form used in `opencode.json`).
    pub fn parse(s: &str) -> Option<Self> {
        let (p, m) = s.split_once('/')?;
        (!p.is_empty() && !m.is_empty()).then(|| Self::new(p, m))
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider_id, self.model_id)
    }
}

/// One permission rule (`{permission, pattern, action}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionRule {
    /// The permission key: `edit`, `bash`, `read`, `external_directory`, `question`, …
    pub permission: String,
    /// Glob pattern the rule applies to (`*` for everything).
    pub pattern: String,
    /// What happens.
    pub action: PermissionAction,
}

impl PermissionRule {
    /// Builds a rule.
    pub fn new(
        permission: impl Into<String>,
        pattern: impl Into<String>,
        action: PermissionAction,
    ) -> Self {
        Self {
            permission: permission.into(),
            pattern: pattern.into(),
            action,
        }
    }

    /// Rules that let a session edit only `files` (and deny every other edit): the shape a
    /// Worker session gets for its item. The last matching rule wins in OpenCode, so the deny
    /// comes first. OpenCode matches edit patterns against paths relative to the project's
    /// git worktree root, so give paths relative to it (verified against a real server; in a
    /// directory that is not a git repository the paths are not relative to it and every
    /// edit is denied).
    pub fn edit_only<I, S>(files: I) -> Vec<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut rules = vec![Self::new("edit", "*", PermissionAction::Deny)];
        rules.extend(
            files
                .into_iter()
                .map(|f| Self::new("edit", f, PermissionAction::Allow)),
        );
        rules
    }
}

/// Time stamps of a session (epoch milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionTime {
    /// Creation.
    #[serde(default)]
    pub created: u64,
    /// Last update.
    #[serde(default)]
    pub updated: u64,
    /// Archival, if archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<u64>,
}

/// The model a session last used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionModel {
    /// Model id.
    #[serde(deserialize_with = "crate::ids::shared")]
    pub id: Arc<str>,
    /// Provider id.
    #[serde(rename = "providerID", deserialize_with = "crate::ids::shared")]
    pub provider_id: Arc<str>,
    /// Variant, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Human-friendly slug (`brave-panda`).
    #[serde(default, deserialize_with = "crate::ids::shared")]
    pub slug: Arc<str>,
    /// Hash of the git root commit, `global` outside a repository.
    #[serde(rename = "projectID", default, deserialize_with = "crate::ids::shared")]
    pub project_id: Arc<str>,
    /// The directory (instance) the session lives in.
    #[serde(default, deserialize_with = "crate::ids::shared")]
    pub directory: Arc<str>,
    /// Parent session, for child sessions (subagents).
    #[serde(rename = "parentID", default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<SessionId>,
    /// Title.
    #[serde(default, deserialize_with = "crate::ids::shared")]
    pub title: Arc<str>,
    /// Agent of the last prompt.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::ids::shared_opt"
    )]
    pub agent: Option<Arc<str>>,
    /// Model of the last prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<SessionModel>,
    /// OpenCode version that created it.
    #[serde(default, deserialize_with = "crate::ids::shared")]
    pub version: Arc<str>,
    /// Accumulated cost.
    #[serde(default)]
    pub cost: f64,
    /// Accumulated tokens.
    #[serde(default)]
    pub tokens: Tokens,
    /// Session-level permission rules (they win over agent rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Vec<PermissionRule>>,
    /// Time stamps.
    #[serde(default)]
    pub time: SessionTime,
}

/// Body of `POST /session`.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct CreateSession {
    /// Title. Give one: an untitled session costs an extra model call for title generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Parent session.
    #[serde(rename = "parentID", skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<SessionId>,
    /// Session permission rules (win over agent rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<Vec<PermissionRule>>,
}

impl CreateSession {
    /// A session with a title.
    pub fn titled(title: impl Into<String>) -> Self {
        Self {
            title: Some(title.into()),
            ..Self::default()
        }
    }

    /// Sets the parent session.
    pub fn parent(mut self, parent: SessionId) -> Self {
        self.parent_id = Some(parent);
        self
    }

    /// Sets the session permission rules.
    pub fn permission(mut self, rules: Vec<PermissionRule>) -> Self {
        self.permission = Some(rules);
        self
    }
}

/// Body of `PATCH /session/{id}`.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct UpdateSession {
    /// New title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Rules **appended** to the session's ruleset (OpenCode does not dedupe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<Vec<PermissionRule>>,
    /// `{"archived": ms}` to archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<ArchiveTime>,
}

impl UpdateSession {
    /// Renames the session.
    pub fn title(title: impl Into<String>) -> Self {
        Self {
            title: Some(title.into()),
            ..Self::default()
        }
    }

    /// Appends permission rules.
    pub fn append_permission(mut self, rules: Vec<PermissionRule>) -> Self {
        self.permission = Some(rules);
        self
    }
}

/// Archive time stamp for [`UpdateSession`].
#[derive(Clone, Debug, Serialize)]
pub struct ArchiveTime {
    /// Epoch milliseconds.
    pub archived: u64,
}

/// Query of `GET /session`.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ListSessions {
    /// Only root sessions (no children).
    pub roots: Option<bool>,
    /// Substring search in titles.
    pub search: Option<String>,
    /// At most this many.
    pub limit: Option<u32>,
}

/// Status of a session (`GET /session/status`, `session.status` events).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum SessionStatus {
    /// Not running (idle sessions are absent from `GET /session/status`).
    Idle,
    /// A turn is running.
    Busy,
    /// Waiting before OpenCode's own retry of a failed model call.
    Retry {
        /// Attempt number (1-based).
        attempt: u32,
        /// The model error message.
        message: String,
        /// Epoch ms of the next attempt.
        next: u64,
    },
    /// A status this client does not know.
    Other(String),
}

impl SessionStatus {
    /// Whether a turn is running (busy or retrying).
    pub fn is_running(&self) -> bool {
        !matches!(self, Self::Idle)
    }
}

impl<'de> Deserialize<'de> for SessionStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Borrowed strings: `busy` and `idle` (most statuses) cost no allocation.
        #[derive(Deserialize)]
        struct Raw<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(default)]
            attempt: u32,
            #[serde(default, borrow)]
            message: std::borrow::Cow<'a, str>,
            #[serde(default)]
            next: u64,
        }
        let raw = Raw::deserialize(d)?;
        Ok(match &*raw.kind {
            "idle" => Self::Idle,
            "busy" => Self::Busy,
            "retry" => Self::Retry {
                attempt: raw.attempt,
                message: raw.message.into_owned(),
                next: raw.next,
            },
            _ => Self::Other(raw.kind.into_owned()),
        })
    }
}

impl Serialize for SessionStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = match self {
            Self::Idle => serde_json::json!({"type": "idle"}),
            Self::Busy => serde_json::json!({"type": "busy"}),
            Self::Retry {
                attempt,
                message,
                next,
            } => {
                serde_json::json!({"type": "retry", "attempt": attempt, "message": message, "next": next})
            }
            Self::Other(kind) => serde_json::json!({ "type": kind }),
        };
        v.serialize(s)
    }
}

/// Details of a [`MessageError`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorData {
    /// Human-readable message (for `APIError`, the provider's `error.message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Upstream HTTP status, for `APIError`.
    #[serde(
        rename = "statusCode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub status_code: Option<u16>,
    /// Whether the provider error was retryable.
    #[serde(
        rename = "isRetryable",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub is_retryable: Option<bool>,
    /// Upstream response body, for `APIError`.
    #[serde(
        rename = "responseBody",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub response_body: Option<String>,
    /// Upstream response headers, for `APIError` (`retry-after`, …). Values that are not
    /// strings are left out.
    #[serde(
        rename = "responseHeaders",
        default,
        deserialize_with = "string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub response_headers: Option<BTreeMap<String, String>>,
}

impl ErrorData {
    /// The delay the provider asked for (`retry-after-ms`, else `retry-after` in seconds or
    /// as an HTTP date, as OpenCode reads them), from [`ErrorData::response_headers`].
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        crate::retry::retry_after(self.response_headers.as_ref()?)
    }
}

/// A JSON object of strings, skipping other values and other shapes (a header map must
/// never fail the decoding of the error that carries it).
fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Object(m)) => Some(
            m.into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    })
}

/// An error attached to an assistant message or carried by `session.error`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MessageError {
    /// Error class.
    pub name: ErrorName,
    /// Details.
    #[serde(default)]
    pub data: ErrorData,
}

impl MessageError {
    /// The message, or the error name when there is none.
    pub fn message(&self) -> &str {
        self.data
            .message
            .as_deref()
            .unwrap_or_else(|| self.name.as_str())
    }
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message())?;
        if let Some(code) = self.data.status_code {
            write!(f, " (upstream HTTP {code})")?;
        }
        Ok(())
    }
}

/// Time stamps of a message (epoch ms).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MessageTime {
    /// Creation.
    #[serde(default)]
    pub created: u64,
    /// Completion (assistant messages; absent while running and after a server crash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

/// The `info` of a user or assistant message. One flat struct: fields that only one role has
/// are optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MessageInfo {
    /// Message id.
    pub id: MessageId,
    /// Session.
    #[serde(rename = "sessionID")]
    pub session_id: SessionId,
    /// Role.
    pub role: Role,
    /// Time stamps.
    #[serde(default)]
    pub time: MessageTime,
    /// For assistant messages: the user message of the turn.
    #[serde(rename = "parentID", default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<MessageId>,
    /// Agent name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::ids::shared_opt"
    )]
    pub agent: Option<Arc<str>>,
    /// Assistant mode.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::ids::shared_opt"
    )]
    pub mode: Option<Arc<str>>,
    /// Assistant: provider used.
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::ids::shared_opt"
    )]
    pub provider_id: Option<Arc<str>>,
    /// Assistant: model used.
    #[serde(
        rename = "modelID",
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::ids::shared_opt"
    )]
    pub model_id: Option<Arc<str>>,
    /// User: the model asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Assistant: cost of this message.
    #[serde(default)]
    pub cost: f64,
    /// Assistant: tokens of this message.
    #[serde(default)]
    pub tokens: Tokens,
    /// Assistant: why it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish: Option<Finish>,
    /// Assistant: the error, if the step failed or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    /// Assistant: structured output (`format: json_schema`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured: Option<Value>,
}

impl MessageInfo {
    /// Whether this is an assistant message.
    pub fn is_assistant(&self) -> bool {
        self.role == Role::Assistant
    }

    /// Whether OpenCode finalised the message (`time.completed` set).
    pub fn is_completed(&self) -> bool {
        self.time.completed.is_some()
    }
}

/// Time span of a part or tool call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PartTime {
    /// Start (epoch ms).
    #[serde(default)]
    pub start: u64,
    /// End (epoch ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<u64>,
}

/// State of a tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolState {
    /// Progress.
    pub status: ToolStatus,
    /// Arguments.
    #[serde(default)]
    pub input: Value,
    /// Output (completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Error text (error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Title (completed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Tool-specific metadata (for `task`: `sessionId` of the child).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Timing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<PartTime>,
}

/// A message part. One flat struct over all part types (`kind` says which fields apply), so a
/// part type this client does not know still decodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Part {
    /// Part id.
    pub id: PartId,
    /// Session.
    #[serde(rename = "sessionID")]
    pub session_id: SessionId,
    /// Message.
    #[serde(rename = "messageID")]
    pub message_id: MessageId,
    /// Part type.
    #[serde(rename = "type")]
    pub kind: PartKind,
    /// `text` / `reasoning`: the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `text`: inserted by OpenCode, not typed by the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<bool>,
    /// `tool`: tool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// `tool`: call id.
    #[serde(rename = "callID", default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
    /// `tool`: state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ToolState>,
    /// `step-finish`: reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Finish>,
    /// `step-finish`: tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Tokens>,
    /// `step-finish`: cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// `patch`: changed files (absolute paths).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// `file`: MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime: Option<String>,
    /// `file`: URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `file`: file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// A message with its parts (`{info, parts}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MessageWithParts {
    /// The message.
    pub info: MessageInfo,
    /// Its parts.
    #[serde(default)]
    pub parts: Vec<Part>,
}

impl MessageWithParts {
    /// The concatenated non-synthetic text of the `text` parts.
    pub fn text(&self) -> String {
        self.parts
            .iter()
            .filter(|p| p.kind == PartKind::Text && p.synthetic != Some(true))
            .filter_map(|p| p.text.as_deref())
            .collect::<Vec<_>>()
            .join("")
    }

    /// The tool parts.
    pub fn tool_parts(&self) -> impl Iterator<Item = &Part> {
        self.parts.iter().filter(|p| p.kind == PartKind::Tool)
    }
}

/// The opaque cursor of `GET /session/{id}/message` pagination (base64 of the oldest
/// message of a page; not a message id).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageCursor(String);

impl MessageCursor {
    /// Wraps a cursor received from OpenCode (`X-Next-Cursor`).
    pub fn new(cursor: impl Into<String>) -> Self {
        Self(cursor.into())
    }

    /// The cursor as sent in `before=`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MessageCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageCursor({})", self.0)
    }
}

/// One page of [`crate::Client::messages_page`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MessagePage {
    /// The messages of the page, oldest first.
    pub messages: Vec<MessageWithParts>,
    /// The cursor of the next older page; `None` on the oldest page.
    pub before: Option<MessageCursor>,
}

/// A part of a prompt (what we send).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
#[non_exhaustive]
pub enum PromptPart {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A file: `url` is `data:…;base64,…` or `file:///abs/path`.
    File {
        /// MIME type.
        mime: String,
        /// Location.
        url: String,
        /// Optional display name.
        #[serde(skip_serializing_if = "Option::is_none")]
        filename: Option<String>,
    },
}

/// Body of `POST /session/{id}/message` and `/prompt_async`.
///
/// Always send `agent` and `model`: the agent is not sticky (omitted means `build`) while the
/// model is (a bad one poisons the session), see `API.md` §6.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Prompt {
    /// Content.
    pub parts: Vec<PromptPart>,
    /// Our id for the user message; assistant messages of the turn carry it as `parentID`.
    #[serde(rename = "messageID")]
    pub message_id: MessageId,
    /// Agent name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// Extra system prompt for this message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Tools to enable/disable (sticky: stored as session permission rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<BTreeMap<String, bool>>,
    /// Store the message without calling the model.
    #[serde(rename = "noReply", skip_serializing_if = "std::ops::Not::not")]
    pub no_reply: bool,
}

impl Prompt {
    /// A text prompt with a freshly generated message id.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            parts: vec![PromptPart::Text { text: text.into() }],
            message_id: MessageId::generate(),
            agent: None,
            model: None,
            system: None,
            tools: None,
            no_reply: false,
        }
    }

    /// Sets the agent.
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Sets the model.
    pub fn model(mut self, model: ModelRef) -> Self {
        self.model = Some(model);
        self
    }

    /// Sets the per-message system prompt addition.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Uses `id` as the user message id.
    pub fn message_id(mut self, id: MessageId) -> Self {
        self.message_id = id;
        self
    }

    /// Adds a part.
    pub fn part(mut self, part: PromptPart) -> Self {
        self.parts.push(part);
        self
    }

    /// Enables or disables a tool (sticky for the session).
    pub fn tool(mut self, name: impl Into<String>, enabled: bool) -> Self {
        self.tools
            .get_or_insert_with(BTreeMap::new)
            .insert(name.into(), enabled);
        self
    }

    /// Stores the message as context without running a turn.
    pub fn no_reply(mut self) -> Self {
        self.no_reply = true;
        self
    }
}

/// A todo item (`todowrite`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Todo {
    /// Text.
    pub content: String,
    /// `pending`, `in_progress`, `completed`, `cancelled`.
    pub status: String,
    /// `high`, `medium`, `low`.
    #[serde(default)]
    pub priority: String,
}

/// The tool call a permission or question belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ToolRef {
    /// Assistant message.
    #[serde(rename = "messageID")]
    pub message_id: MessageId,
    /// Call id.
    #[serde(rename = "callID")]
    pub call_id: String,
}

/// A pending permission request (`GET /permission`, `permission.asked`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PermissionRequest {
    /// Request id.
    pub id: PermissionId,
    /// Session.
    #[serde(rename = "sessionID")]
    pub session_id: SessionId,
    /// Permission key (`edit`, `bash`, …).
    pub permission: String,
    /// What is asked for (file names, commands).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Tool details (file path and diff, command…).
    #[serde(default)]
    pub metadata: Value,
    /// Patterns an `always` reply would approve.
    #[serde(default)]
    pub always: Vec<String>,
    /// The tool call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolRef>,
}

/// One option of a question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuestionOption {
    /// Label (what a reply sends back).
    pub label: String,
    /// Description.
    #[serde(default)]
    pub description: String,
}

/// One question of a question request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Question {
    /// Question text.
    pub question: String,
    /// Short header.
    #[serde(default)]
    pub header: String,
    /// Options.
    #[serde(default)]
    pub options: Vec<QuestionOption>,
}

/// A pending question request (`GET /question`, `question.asked`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QuestionRequest {
    /// Request id.
    pub id: QuestionId,
    /// Session.
    #[serde(rename = "sessionID")]
    pub session_id: SessionId,
    /// Questions.
    #[serde(default)]
    pub questions: Vec<Question>,
    /// The tool call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<ToolRef>,
}

/// An agent (`GET /agent`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Agent {
    /// Name.
    pub name: String,
    /// `primary`, `subagent` or `all`.
    #[serde(default)]
    pub mode: String,
    /// Built in.
    #[serde(default)]
    pub native: bool,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Effective permission rules.
    #[serde(default)]
    pub permission: Vec<PermissionRule>,
    /// Prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
}

/// A provider of `GET /config/providers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Provider {
    /// Provider id.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Its models, by id (the model objects are kept as JSON).
    #[serde(default)]
    pub models: BTreeMap<String, Value>,
}

/// Answer of `GET /config/providers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Providers {
    /// Configured providers.
    pub providers: Vec<Provider>,
    /// Default model per provider.
    #[serde(default)]
    pub default: BTreeMap<String, String>,
}

/// `GET /global/health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// Always true when it answers.
    pub healthy: bool,
    /// Server version.
    pub version: String,
}

/// A TUI toast (`POST /tui/show-toast`, `tui.toast.show`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Toast {
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Message.
    pub message: String,
    /// Variant.
    pub variant: ToastVariant,
    /// Duration in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

impl Toast {
    /// A toast.
    pub fn new(variant: ToastVariant, message: impl Into<String>) -> Self {
        Self {
            title: None,
            message: message.into(),
            variant,
            duration: None,
        }
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Sets the duration (ms).
    pub fn duration_ms(mut self, ms: u64) -> Self {
        self.duration = Some(ms);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_kept() {
        let f: Finish = serde_json::from_str("\"brand-new\"").unwrap();
        assert_eq!(f, Finish::Other("brand-new".into()));
        assert_eq!(serde_json::to_string(&f).unwrap(), "\"brand-new\"");
        let s: SessionStatus = serde_json::from_str(r#"{"type":"paused","x":1}"#).unwrap();
        assert_eq!(s, SessionStatus::Other("paused".into()));
    }

    #[test]
    fn retry_status_decodes() {
        let s: SessionStatus = serde_json::from_str(
            r#"{"type":"retry","attempt":2,"message":"Rate limit","next":17}"#,
        )
        .unwrap();
        assert_eq!(
            s,
            SessionStatus::Retry {
                attempt: 2,
                message: "Rate limit".into(),
                next: 17
            }
        );
        assert!(s.is_running());
    }

    #[test]
    fn prompt_serializes_like_the_api_expects() {
        let p = Prompt::text("hi")
            .message_id(MessageId::new("msg_1"))
            .agent("worker")
            .model(ModelRef::new("fake", "fake-model"))
            .tool("bash", false);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "parts": [{"type": "text", "text": "hi"}],
                "messageID": "msg_1",
                "agent": "worker",
                "model": {"providerID": "fake", "modelID": "fake-model"},
                "tools": {"bash": false}
            })
        );
    }

    #[test]
    fn api_error_message_decodes_with_status() {
        let info: MessageInfo = serde_json::from_str(
            r#"{"id":"msg_1","sessionID":"ses_1","role":"assistant","time":{"created":1,"completed":2},
                "error":{"name":"APIError","data":{"message":"Rate limit exceeded","statusCode":429,"isRetryable":true,"new":1}},
                "brandNewField":true}"#,
        )
        .unwrap();
        let err = info.error.unwrap();
        assert_eq!(err.name, ErrorName::Api);
        assert_eq!(err.data.status_code, Some(429));
        assert_eq!(
            err.to_string(),
            "APIError: Rate limit exceeded (upstream HTTP 429)"
        );
    }

    #[test]
    fn model_ref_parses_provider_slash_model() {
        assert_eq!(
            ModelRef::parse("fake/fake-model"),
            Some(ModelRef::new("fake", "fake-model"))
        );
        assert_eq!(ModelRef::parse("nope"), None);
    }
}
