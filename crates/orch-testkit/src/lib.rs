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
//! **Both OpenCode generations.** OpenCode 1 and 2 give the model different tools (`write
//! {filePath}` vs `write {path}`, `bash` vs `shell`, `task` vs `subagent`). A script says
//! "write this file" or "run this command" once — in V1's shape, in V2's, or with the
//! neutral [`Reply::write_file`] / [`Reply::run_command`] — and the model answers each request
//! in the shape of the generation that sent it (told by the tools the request offers), or of
//! the one fixed with [`ScriptedModelBuilder::generation`]. `last_tool = "bash"` matches a
//! `shell` result too. OpenCode 2's compaction requests (a user message, not a system prompt)
//! are told apart, and their summary gets the template heading 2.1.2 requires.
//!
//! | what | OpenCode 1 (1.18.33) | OpenCode 2 (2.1.2) |
//! |---|---|---|
//! | write a file | `write {filePath, content}` | `write {path, content}` |
//! | edit a file | `edit {filePath, oldString, newString, replaceAll?}` | `edit {path, …}` |
//! | read a file | `read {filePath, offset?, limit?}` | `read {path, offset?, limit?}` |
//! | run a command | `bash {command, timeout?, workdir?}` | `shell {command, timeout?, workdir?, background?}` |
//! | start a subagent | `task {subagent_type, description, prompt, task_id?}` | `subagent {agent, description, prompt, sessionID?}` |
//! | load a skill | `skill {name}` | `skill {id}` |
//!
//! Only these names and keys are translated ([`ToolCall::for_generation`]); other keys pass
//! through (both generations ignore unknown argument keys), so V1 → V2 → V1 is the identity.
//!
//! The server streams OpenAI chat-completion chunks exactly as OpenCode needs them (the last
//! chunk carries a `finish_reason`, usage figures, `[DONE]`), and also answers non-streaming
//! requests. It runs on a thread of its own, so it can be shared by the tests of a binary
//! whatever runtime each test uses, and stops when dropped.
//!
//! The [`opencode`] module runs the real thing against it: [`opencode::TestServer`] starts an
//! isolated `opencode serve` of either generation whose only model is the scripted one, and
//! stops its whole process group on drop; helpers find each generation's binary and write
//! the configs.
//!
//! ```
//! use orch_testkit::{Generation, Reply, Rule, Script, ScriptedModel, ToolCall};
//!
//! let script = Script::from_toml_str(r#"
//!     [[rule]]
//!     name = "greet"
//!     user = "(?i)hello"
//!     [[rule.reply]]
//!     text = "Hello from the script."
//!
//!     [[rule]]
//!     name = "check"
//!     user = "(?i)check"
//!     [[rule.reply]]
//!     run_command = "python3 -m unittest 2>&1; echo EXIT=$?"
//! "#)?;
//! // Answer as OpenCode 2 whatever the request shows (without this: each request's own).
//! let model = ScriptedModel::builder(script).generation(Generation::V2).start()?;
//! model.add_rule(Rule::new("write").user("file")?.reply(Reply::write_file("a.txt", "a")))?;
//! // What OpenCode 2 will be asked to run:
//! let call = ToolCall::write_file("a.txt", "a").for_generation(Generation::V2);
//! assert_eq!(call.arguments, serde_json::json!({"path": "a.txt", "content": "a"}));
//! assert!(model.base_url().starts_with("http://127.0.0.1:"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// The README's examples are compiled as doc tests (as a new crate would use them).
#![cfg_attr(doctest, doc = include_str!("../README.md"))]
#![forbid(unsafe_code)]

mod dialect;
mod error;
pub mod opencode;
mod request;
mod script;
mod server;
mod wire;

pub use dialect::{same_tool, tool_name};
pub use error::{ScriptError, StartError};
pub use orch_opencode::Generation;
pub use request::{BadRequest, RequestView};
pub use script::{
    DEFAULT_MODEL, Exhausted, Fault, HttpError, Pattern, Reply, RequestKind, Rule, Script,
    ToolCall, Usage, agent_marker,
};
pub use server::{Outcome, RecordedRequest, ScriptedModel, ScriptedModelBuilder};
