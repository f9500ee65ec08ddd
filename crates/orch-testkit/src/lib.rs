//! A scripted OpenAI-compatible model server, for testing coding-agent pipelines offline.
//!
//! Real agent tools (OpenCode, or any OpenAI-compatible client) talk to
//! [`ScriptedModel`] as if it were a language model. A [`Script`] is an ordered list of
//! [`Rule`]s; the first rule that matches a request answers it with its next [`Reply`]: text,
//! tool calls, an HTTP error (with `Retry-After`), or a [`Fault`] (a stalled stream, a stream
//! cut without `finish_reason`, an in-stream error), after an optional delay. Rules match on
//! the agent (a marker in the system prompt, see [`agent_marker`]), a regex on the last user
//! message, whether the last message is a tool result (and of which tool), the step of the
//! turn, and OpenCode's `x-session-id` header. A request that no rule matches gets a 400 that
//! names it, never a silent default. Every request is recorded for assertions.
//!
//! The server streams OpenAI chat-completion chunks exactly as OpenCode 1.18.33 needs them
//! (every chunk carries a `finish_reason` on the last one, usage figures, `[DONE]`), and also
//! answers non-streaming requests. It runs on a thread of its own, so it can be shared by the
//! tests of a binary whatever runtime each test uses, and stops when dropped.
//!
//! The [`opencode`] module finds the OpenCode binary and prepares isolated projects and homes
//! for a real `opencode serve`.
//!
//! ```
//! use orch_testkit::{Reply, Rule, Script, ScriptedModel};
//!
//! let script = Script::from_toml_str(r#"
//!     [[rule]]
//!     name = "greet"
//!     user = "(?i)hello"
//!     [[rule.reply]]
//!     text = "Hello from the script."
//! "#)?;
//! let model = ScriptedModel::start(script)?;
//! model.add_rule(Rule::new("write").user("file")?.reply(
//!     Reply::tool_call("write", serde_json::json!({"filePath": "a.txt", "content": "a"})),
//! ))?;
//! assert!(model.base_url().starts_with("http://127.0.0.1:"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod opencode;
mod request;
mod script;
mod server;
mod wire;

pub use error::{ScriptError, StartError};
pub use request::{BadRequest, RequestView};
pub use script::{
    DEFAULT_MODEL, Exhausted, Fault, HttpError, Pattern, Reply, RequestKind, Rule, Script,
    ToolCall, Usage, agent_marker,
};
pub use server::{Outcome, RecordedRequest, ScriptedModel};
