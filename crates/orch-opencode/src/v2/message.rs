//! A session's history (`GET /api/session/{id}/message`): typed entries.
//!
//! OpenCode 2 stores one entry per user input, per model step (`assistant`, with its text
//! and tool calls), and one `idle` entry per finished execution (with its outcome), plus
//! entries for switches of agent or model and synthetic inputs. Assistant entries do not
//! point at the user message they answer: a turn is the run of entries after our user
//! message, up to the first `idle` after it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::ids::MessageId;
use crate::types::{Tokens, open_enum};

use super::types::{ModelRef, Outcome, StructuredError};

open_enum!(
    /// Why a model step ended.
    Finish {
        /// The final answer.
        Stop = "stop",
        /// The output hit the length limit.
        Length = "length",
        /// Tool calls (another step follows).
        ToolCalls = "tool-calls",
        /// Filtered by the provider.
        ContentFilter = "content-filter",
        /// The step failed (`error` says why).
        Error = "error",
        /// The provider gave no reason.
        Unknown = "unknown",
    }
);

open_enum!(
    /// State of a tool call.
    ToolStatus {
        /// Arguments still streaming.
        Streaming = "streaming",
        /// Executing (or waiting for a permission reply).
        Running = "running",
        /// Finished with output.
        Completed = "completed",
        /// Failed (bad arguments, denied or rejected, interrupted).
        Error = "error",
    }
);

/// Times of an entry, in epoch milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct EntryTime {
    /// Created (for a user entry: when it was delivered).
    #[serde(default)]
    pub created: u64,
    /// First output streamed (assistant).
    #[serde(default)]
    pub streamed: Option<u64>,
    /// Completed (assistant).
    #[serde(default)]
    pub completed: Option<u64>,
}

/// One piece of tool output.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ToolContent {
    /// `text`, `file`, …
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The text, for `text` content.
    #[serde(default)]
    pub text: Option<String>,
}

/// A tool call's state.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ToolState {
    /// Status.
    pub status: ToolStatus,
    /// The arguments (V2 shapes: `write {path, content}`, `shell {command}`, …).
    #[serde(default)]
    pub input: Value,
    /// The output (completed, and some errors).
    #[serde(default)]
    pub content: Vec<ToolContent>,
    /// The error.
    #[serde(default)]
    pub error: Option<StructuredError>,
    /// Tool metadata (`exit` for `shell`, `truncated`, …).
    #[serde(default)]
    pub metadata: Value,
}

/// One part of an assistant entry.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Content {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// Reasoning.
    Reasoning {
        /// The text.
        text: String,
    },
    /// A tool call.
    Tool(Box<ToolCall>),
    /// Anything else (kept verbatim).
    Other(Value),
}

/// A tool call of an assistant entry.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct ToolCall {
    /// The call id (`call_1`).
    pub id: String,
    /// The tool (`write`, `shell`, `subagent`, …).
    pub name: String,
    /// Its state.
    pub state: ToolState,
}

impl ToolCall {
    /// The output text (the `text` contents joined).
    pub fn output(&self) -> String {
        self.state
            .content
            .iter()
            .filter_map(|c| c.text.as_deref())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        let text = |v: &Value| {
            v.get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(match value.get("type").and_then(Value::as_str) {
            Some("text") => Content::Text { text: text(&value) },
            Some("reasoning") => Content::Reasoning { text: text(&value) },
            Some("tool") => match serde_json::from_value::<ToolCall>(value.clone()) {
                Ok(call) => Content::Tool(Box::new(call)),
                Err(_) => Content::Other(value),
            },
            _ => Content::Other(value),
        })
    }
}

/// A step's snapshot: the files it changed.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Files changed, relative to the session directory.
    #[serde(default)]
    pub files: Vec<String>,
}

/// One model step (`assistant` entry).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct AssistantMessage {
    /// `msg_…` (server-made).
    pub id: MessageId,
    /// Times.
    #[serde(default)]
    pub time: EntryTime,
    /// The agent that ran it.
    #[serde(default)]
    pub agent: Option<String>,
    /// The model that ran it.
    #[serde(default)]
    pub model: Option<ModelRef>,
    /// Text, reasoning and tool calls, in order.
    #[serde(default)]
    pub content: Vec<Content>,
    /// Why it ended (`None` while running).
    #[serde(default)]
    pub finish: Option<Finish>,
    /// Tokens of this step.
    #[serde(default)]
    pub tokens: Tokens,
    /// Cost of this step.
    #[serde(default)]
    pub cost: f64,
    /// The error of a failed or interrupted step.
    #[serde(default)]
    pub error: Option<StructuredError>,
    /// Files it changed.
    #[serde(default)]
    pub snapshot: Option<Snapshot>,
}

impl AssistantMessage {
    /// The text parts joined.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.content {
            if let Content::Text { text } = c {
                out.push_str(text);
            }
        }
        out
    }

    /// The tool calls.
    pub fn tool_calls(&self) -> impl Iterator<Item = &ToolCall> {
        self.content.iter().filter_map(|c| match c {
            Content::Tool(t) => Some(&**t),
            _ => None,
        })
    }

    /// Whether the step is over (completed, or ended with an error).
    pub fn is_final(&self) -> bool {
        self.time.completed.is_some() || self.error.is_some()
    }
}

/// A user input.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct UserMessage {
    /// Our id (or a server-made one).
    pub id: MessageId,
    /// Times (`created` = delivery).
    #[serde(default)]
    pub time: EntryTime,
    /// The text.
    #[serde(default)]
    pub text: String,
}

/// The end of an execution.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct IdleMessage {
    /// The id of the execution's terminal event, `evt_` replaced by `msg_`.
    pub id: MessageId,
    /// Times.
    #[serde(default)]
    pub time: EntryTime,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<StructuredError>,
}

/// One history entry.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// A user input.
    User(UserMessage),
    /// A model step.
    Assistant(Box<AssistantMessage>),
    /// The end of an execution.
    Idle(IdleMessage),
    /// A synthetic input (a plugin's, or the restart notice of a resumed session).
    Synthetic {
        /// Id.
        id: MessageId,
        /// Text.
        text: String,
    },
    /// Any other type (`agent-switched`, `model-switched`, `system`, `shell`,
    /// `compaction`, …), verbatim.
    Other {
        /// Id.
        id: MessageId,
        /// `type`.
        kind: String,
        /// The whole entry.
        value: Value,
    },
}

impl Message {
    /// The entry's id.
    pub fn id(&self) -> &MessageId {
        match self {
            Message::User(m) => &m.id,
            Message::Assistant(m) => &m.id,
            Message::Idle(m) => &m.id,
            Message::Synthetic { id, .. } | Message::Other { id, .. } => id,
        }
    }

    /// The assistant entry, if it is one.
    pub fn as_assistant(&self) -> Option<&AssistantMessage> {
        match self {
            Message::Assistant(m) => Some(m),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = Value::deserialize(d)?;
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let typed = |v: Value| -> Result<Message, D::Error> {
            Ok(match kind.as_str() {
                "user" => Message::User(serde_json::from_value(v).map_err(D::Error::custom)?),
                "assistant" => {
                    Message::Assistant(serde_json::from_value(v).map_err(D::Error::custom)?)
                }
                "idle" => Message::Idle(serde_json::from_value(v).map_err(D::Error::custom)?),
                _ => unreachable!("only called for the typed kinds"),
            })
        };
        match kind.as_str() {
            "user" | "assistant" | "idle" => typed(value),
            _ => {
                let id: MessageId = value
                    .get("id")
                    .and_then(Value::as_str)
                    .map(MessageId::from)
                    .ok_or_else(|| D::Error::custom("history entry without an id"))?;
                if kind == "synthetic" {
                    let text = value
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    Ok(Message::Synthetic { id, text })
                } else {
                    Ok(Message::Other { id, kind, value })
                }
            }
        }
    }
}

/// A page of history.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct MessagePage {
    /// The entries, in the page's order.
    #[serde(rename = "data")]
    pub messages: Vec<Message>,
    /// The cursors (base64url JSON, opaque). `next` is set even on the last page: an empty
    /// or short page is the end.
    #[serde(default)]
    pub cursor: PageCursor,
}

/// Cursors of a page.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct PageCursor {
    /// The page before (towards the first page's start).
    #[serde(default)]
    pub previous: Option<String>,
    /// The page after (older entries, in `desc` order).
    #[serde(default)]
    pub next: Option<String>,
}

/// Order of a history page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the server's default).
    Desc,
}

/// `GET …/message` parameters.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MessageQuery {
    /// Page size (at most 200).
    pub limit: Option<u32>,
    /// Order of the first page (a cursor carries its own).
    pub order: Option<Order>,
    /// Only entries of this type (`user`, `assistant`, `idle`, …), filtered before paging.
    pub kind: Option<String>,
    /// A cursor from a previous page.
    pub cursor: Option<String>,
}

impl MessageQuery {
    /// The default page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Newest first, `limit` entries.
    pub fn newest(limit: u32) -> Self {
        Self {
            limit: Some(limit),
            order: Some(Order::Desc),
            ..Self::default()
        }
    }

    /// The page after `cursor`, `limit` entries.
    pub fn after(cursor: impl Into<String>, limit: u32) -> Self {
        Self {
            limit: Some(limit),
            cursor: Some(cursor.into()),
            ..Self::default()
        }
    }

    /// Oldest first.
    #[must_use]
    pub fn ascending(mut self) -> Self {
        self.order = Some(Order::Asc);
        self
    }

    /// Only entries of this type.
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE_TURN: &str = include_str!("../../tests/data/v2/messages-write-turn.json");
    const FAILED: &str = include_str!("../../tests/data/v2/messages-429-failed.json");
    const REJECT: &str = include_str!("../../tests/data/v2/messages-permission-reject.json");

    fn page(text: &str) -> MessagePage {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn a_write_turn_decodes_with_its_tool_call() {
        let p = page(WRITE_TURN);
        let kinds: Vec<&str> = p
            .messages
            .iter()
            .map(|m| match m {
                Message::User(_) => "user",
                Message::Assistant(_) => "assistant",
                Message::Idle(_) => "idle",
                Message::Synthetic { .. } => "synthetic",
                Message::Other { .. } => "other",
            })
            .collect();
        // This capture was read oldest first (`order=asc`).
        assert_eq!(kinds, ["user", "assistant", "assistant", "idle"]);
        let tool = p
            .messages
            .iter()
            .filter_map(Message::as_assistant)
            .flat_map(AssistantMessage::tool_calls)
            .next()
            .expect("a tool call");
        assert_eq!(tool.name, "write");
        assert_eq!(tool.state.status, ToolStatus::Completed);
        assert_eq!(tool.state.input["path"], "hello.txt");
        assert!(tool.output().contains("Created file"), "{}", tool.output());
    }

    #[test]
    fn a_failed_turn_keeps_its_error() {
        let p = page(FAILED);
        let Some(Message::Idle(idle)) = p.messages.first() else {
            panic!("{:?}", p.messages.first())
        };
        assert_eq!(idle.outcome, Outcome::Failed);
        let e = idle.error.as_ref().unwrap();
        assert_eq!(e.status, Some(429));
        assert_eq!(e.retry_after_ms, Some(2000));
    }

    #[test]
    fn every_sample_entry_decodes() {
        for text in [WRITE_TURN, FAILED, REJECT] {
            let p = page(text);
            assert!(!p.messages.is_empty());
            let raw: Value = serde_json::from_str(text).unwrap();
            assert_eq!(raw["data"].as_array().unwrap().len(), p.messages.len());
        }
    }
}
