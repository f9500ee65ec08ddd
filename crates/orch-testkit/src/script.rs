//! The script: an ordered list of rules, each matching some requests and answering them.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::json;

use crate::error::ScriptError;

/// The model ids served by `GET /v1/models` when a script names none.
pub const DEFAULT_MODEL: &str = "fake-model";

/// A complete script: the rules, tried in order, and the model ids the server lists.
///
/// Load one from TOML or JSON ([`Script::load`], [`Script::from_toml_str`],
/// [`Script::from_json_str`]) or build one in code ([`Script::new`] and [`Script::rule`]).
/// Both file forms accept the rule list under `rule` (TOML's natural `[[rule]]`) or `rules`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Model ids listed by `GET /v1/models`; [`DEFAULT_MODEL`] when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// The rules, tried in order: the first rule that matches a request answers it.
    #[serde(default, rename = "rule", alias = "rules")]
    pub rules: Vec<Rule>,
}

impl Script {
    /// An empty script: every request is answered with a 400 naming it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule after the existing ones.
    #[must_use]
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Parses a TOML script and validates it.
    ///
    /// # Errors
    /// [`ScriptError::Toml`] (with line and column) for a syntax error, an unknown key, a bad
    /// value or an invalid regex; [`ScriptError::Invalid`] for a rule that cannot answer.
    pub fn from_toml_str(text: &str) -> Result<Self, ScriptError> {
        let script: Script = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_column(text, span.start))
                .unwrap_or((0, 0));
            ScriptError::Toml {
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        script.validate()?;
        Ok(script)
    }

    /// Parses a JSON script and validates it.
    ///
    /// # Errors
    /// [`ScriptError::Json`] (with line and column) for a syntax error, an unknown key, a bad
    /// value or an invalid regex; [`ScriptError::Invalid`] for a rule that cannot answer.
    pub fn from_json_str(text: &str) -> Result<Self, ScriptError> {
        let script: Script = serde_json::from_str(text).map_err(|e| ScriptError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        script.validate()?;
        Ok(script)
    }

    /// Reads a script file: `.json` files are JSON, everything else is TOML.
    ///
    /// # Errors
    /// [`ScriptError::Read`] when the file cannot be read, otherwise as
    /// [`Script::from_toml_str`] / [`Script::from_json_str`], with the path attached.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ScriptError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.to_owned(),
            source,
        })?;
        let is_json = path.extension().is_some_and(|ext| ext == "json");
        let parsed = if is_json {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        };
        parsed.map_err(|e| ScriptError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }

    /// Checks every rule (see [`Rule::validate`]).
    ///
    /// # Errors
    /// [`ScriptError::Invalid`] naming the first bad rule and what is wrong with it.
    pub fn validate(&self) -> Result<(), ScriptError> {
        self.rules.iter().try_for_each(Rule::validate)
    }

    /// The model ids to list.
    pub fn model_ids(&self) -> Vec<String> {
        if self.models.is_empty() {
            vec![DEFAULT_MODEL.to_owned()]
        } else {
            self.models.clone()
        }
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Which kind of request OpenCode is making; told apart by the system prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// An agent step (everything that is neither a title nor a compaction request).
    #[default]
    Agent,
    /// Session title generation (`You are a title generator` in the system prompt).
    Title,
    /// Compaction (`context summarization agent` in the system prompt).
    Compaction,
    /// Matches every kind.
    Any,
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestKind::Agent => "agent",
            RequestKind::Title => "title",
            RequestKind::Compaction => "compaction",
            RequestKind::Any => "any",
        })
    }
}

/// What a rule does once all its replies have been used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exhausted {
    /// Keep answering with the last reply (the default).
    #[default]
    RepeatLast,
    /// Start again from the first reply.
    Cycle,
    /// Stop matching, so later rules get the request.
    Skip,
}

/// A compiled regular expression that serialises as its source text.
#[derive(Clone)]
pub struct Pattern(Regex);

impl Pattern {
    /// Compiles `source`.
    ///
    /// # Errors
    /// [`ScriptError::Regex`] when `source` is not a valid regular expression.
    pub fn new(source: &str) -> Result<Self, ScriptError> {
        Regex::new(source)
            .map(Pattern)
            .map_err(|e| ScriptError::Regex {
                pattern: source.to_owned(),
                message: e.to_string(),
            })
    }

    /// The regex's source text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The compiled regex.
    pub fn regex(&self) -> &Regex {
        &self.0
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.0.as_str())
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Regex::new(&source)
            .map(Pattern)
            .map_err(|e| serde::de::Error::custom(format!("invalid regex {source:?}: {e}")))
    }
}

/// The marker that makes a request match a rule's `agent`: put it in the agent's prompt.
///
/// ```
/// assert_eq!(orch_testkit::agent_marker("worker"), "[orch-agent:worker]");
/// ```
pub fn agent_marker(agent: &str) -> String {
    format!("[orch-agent:{agent}]")
}

/// One rule: what it matches and how it answers.
///
/// Every matcher that is set must match; unset matchers match anything. A rule answers with its
/// replies in order (the *n*-th request it answers gets the *n*-th reply), counted over all
/// requests or, with `per_session`, separately for each OpenCode session.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A name for records and error messages.
    pub name: String,
    /// The kind of request matched; `agent` (the default) leaves out title and compaction
    /// requests.
    #[serde(default)]
    pub kind: RequestKind,
    /// Matches when the system prompt contains [`agent_marker`]`(agent)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A regex searched in the system prompt (all system messages joined by newlines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Pattern>,
    /// A regex searched in the text of the last user message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Pattern>,
    /// Whether the last message must be (`true`) or must not be (`false`) a tool result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_result: Option<bool>,
    /// The name of the tool whose result is the last message (implies `tool_result = true`).
    /// Either generation's name matches both: `bash` and `shell` are the same tool, as are
    /// `task` and `subagent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tool: Option<String>,
    /// A regex searched in the last tool result's text (implies `tool_result = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_output: Option<Pattern>,
    /// The step of the turn: how many assistant messages follow the last user message
    /// (0 for the first model call of a turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// The OpenCode session, from the `x-session-id` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The requested model id (the request's `model` field, e.g. `fake-model`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Count replies separately for each session (`x-session-id`).
    #[serde(default)]
    pub per_session: bool,
    /// What happens once the replies are used up.
    #[serde(default)]
    pub exhausted: Exhausted,
    /// The replies, in order (TOML: `[[rule.reply]]` tables; JSON: a `replies` array).
    #[serde(default, rename = "reply", alias = "replies")]
    pub replies: Vec<Reply>,
}

impl Rule {
    /// A rule with no matchers (it matches every agent request) and no replies yet.
    pub fn new(name: impl Into<String>) -> Self {
        Rule {
            name: name.into(),
            kind: RequestKind::Agent,
            agent: None,
            system: None,
            user: None,
            tool_result: None,
            last_tool: None,
            tool_output: None,
            step: None,
            session: None,
            model: None,
            per_session: false,
            exhausted: Exhausted::RepeatLast,
            replies: Vec::new(),
        }
    }

    /// Matches requests of this kind.
    #[must_use]
    pub fn kind(mut self, kind: RequestKind) -> Self {
        self.kind = kind;
        self
    }

    /// Matches requests whose system prompt carries [`agent_marker`]`(agent)`.
    #[must_use]
    pub fn agent(mut self, agent: impl Into<String>) -> Self {
        self.agent = Some(agent.into());
        self
    }

    /// Matches requests whose system prompt matches `regex`.
    ///
    /// # Errors
    /// [`ScriptError::Regex`] for an invalid regex.
    pub fn system(mut self, regex: &str) -> Result<Self, ScriptError> {
        self.system = Some(Pattern::new(regex)?);
        Ok(self)
    }

    /// Matches requests whose last user message matches `regex`.
    ///
    /// # Errors
    /// [`ScriptError::Regex`] for an invalid regex.
    pub fn user(mut self, regex: &str) -> Result<Self, ScriptError> {
        self.user = Some(Pattern::new(regex)?);
        Ok(self)
    }

    /// Matches requests whose last message is (or is not) a tool result.
    #[must_use]
    pub fn tool_result(mut self, is_tool_result: bool) -> Self {
        self.tool_result = Some(is_tool_result);
        self
    }

    /// Matches requests whose last message is the result of the tool `name`.
    #[must_use]
    pub fn last_tool(mut self, name: impl Into<String>) -> Self {
        self.last_tool = Some(name.into());
        self
    }

    /// Matches requests whose last tool result's text matches `regex`.
    ///
    /// # Errors
    /// [`ScriptError::Regex`] for an invalid regex.
    pub fn tool_output(mut self, regex: &str) -> Result<Self, ScriptError> {
        self.tool_output = Some(Pattern::new(regex)?);
        Ok(self)
    }

    /// Matches the `step`-th model call of a turn (0 = the first).
    #[must_use]
    pub fn step(mut self, step: usize) -> Self {
        self.step = Some(step);
        self
    }

    /// Matches requests of one OpenCode session (`x-session-id` header).
    #[must_use]
    pub fn session(mut self, session_id: impl Into<String>) -> Self {
        self.session = Some(session_id.into());
        self
    }

    /// Matches requests for one model id (the request's `model` field).
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Counts replies separately for each session.
    #[must_use]
    pub fn per_session(mut self) -> Self {
        self.per_session = true;
        self
    }

    /// Sets what happens once the replies are used up.
    #[must_use]
    pub fn exhausted(mut self, exhausted: Exhausted) -> Self {
        self.exhausted = exhausted;
        self
    }

    /// Appends a reply to the sequence.
    #[must_use]
    pub fn reply(mut self, reply: Reply) -> Self {
        self.replies.push(reply);
        self
    }

    /// Checks that the rule can answer and that each reply is well-formed.
    ///
    /// # Errors
    /// [`ScriptError::Invalid`] naming the rule and the problem.
    pub fn validate(&self) -> Result<(), ScriptError> {
        let invalid = |reason: String| ScriptError::Invalid {
            rule: self.name.clone(),
            reason,
        };
        if self.replies.is_empty() {
            return Err(invalid("it has no reply".into()));
        }
        for (index, reply) in self.replies.iter().enumerate() {
            reply
                .validate()
                .map_err(|reason| invalid(format!("reply {index}: {reason}")))?;
        }
        if self.tool_result == Some(false)
            && (self.last_tool.is_some() || self.tool_output.is_some())
        {
            return Err(invalid(
                "`tool_result = false` contradicts `last_tool` / `tool_output`".into(),
            ));
        }
        Ok(())
    }

    /// The replies with each reply's `times` expanded.
    pub(crate) fn expanded_len(&self) -> usize {
        self.replies.iter().map(|r| r.times.max(1)).sum()
    }

    /// The `index`-th reply of the expanded sequence.
    pub(crate) fn expanded(&self, mut index: usize) -> Option<&Reply> {
        for reply in &self.replies {
            let times = reply.times.max(1);
            if index < times {
                return Some(reply);
            }
            index -= times;
        }
        None
    }
}

/// A tool call the scripted model asks for.
///
/// Write it in either generation's shape, or with the generation-neutral constructors
/// ([`ToolCall::write_file`], [`ToolCall::run_command`], …): when the model answers an
/// OpenCode of a known generation, the call is translated to that generation's tool name and
/// argument keys ([`ToolCall::for_generation`]) unless it is marked
/// [`as_written`](ToolCall::as_written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    /// The tool name, e.g. `write` or `bash`.
    pub name: String,
    /// The arguments: a JSON object (serialised for the wire), or a string sent verbatim
    /// (which may be deliberately malformed).
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
    /// Send the call exactly as written to every generation (no translation), e.g. to see
    /// how OpenCode 2 rejects a V1-shaped call.
    #[serde(default, skip_serializing_if = "is_false")]
    pub as_written: bool,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl ToolCall {
    /// A tool call with JSON arguments.
    pub fn new(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        ToolCall {
            name: name.into(),
            arguments,
            as_written: false,
        }
    }

    /// Writes `content` to `path` (relative paths resolve against the session's directory):
    /// `write {filePath, content}` for OpenCode 1, `write {path, content}` for OpenCode 2.
    pub fn write_file(path: impl Into<String>, content: impl Into<String>) -> Self {
        Self::new(
            "write",
            json!({"filePath": path.into(), "content": content.into()}),
        )
    }

    /// Replaces `old` by `new` in `path`: `edit {filePath | path, oldString, newString}`.
    pub fn edit_file(
        path: impl Into<String>,
        old: impl Into<String>,
        new: impl Into<String>,
    ) -> Self {
        Self::new(
            "edit",
            json!({"filePath": path.into(), "oldString": old.into(), "newString": new.into()}),
        )
    }

    /// Reads `path`: `read {filePath}` / `read {path}`.
    pub fn read_file(path: impl Into<String>) -> Self {
        Self::new("read", json!({"filePath": path.into()}))
    }

    /// Runs `command` in the session's directory: `bash {command}` for OpenCode 1,
    /// `shell {command}` for OpenCode 2. Both return the command's output (stdout and stderr)
    /// to the model, so a `tool_output` matcher sees it.
    pub fn run_command(command: impl Into<String>) -> Self {
        Self::new("bash", json!({"command": command.into()}))
    }

    /// Starts a subagent: `task {subagent_type, description, prompt}` for OpenCode 1,
    /// `subagent {agent, description, prompt}` for OpenCode 2.
    pub fn subagent(
        agent: impl Into<String>,
        description: impl Into<String>,
        prompt: impl Into<String>,
    ) -> Self {
        Self::new(
            "task",
            json!({"subagent_type": agent.into(), "description": description.into(), "prompt": prompt.into()}),
        )
    }

    /// Marks the call to be sent exactly as written, whatever the generation.
    #[must_use]
    pub fn as_written(mut self) -> Self {
        self.as_written = true;
        self
    }

    /// The arguments as sent on the wire.
    pub fn arguments_string(&self) -> String {
        match &self.arguments {
            serde_json::Value::String(raw) => raw.clone(),
            other => other.to_string(),
        }
    }
}

/// An HTTP error answer, in OpenAI's error shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpError {
    /// The HTTP status (400..=599).
    pub status: u16,
    /// `error.message` in the body; OpenCode shows it to the user.
    #[serde(default = "default_error_message")]
    pub message: String,
    /// `error.type` in the body.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub kind: Option<String>,
    /// A `Retry-After` header, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

fn default_error_message() -> String {
    "scripted error".to_owned()
}

/// A broken stream, for resilience tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Send the first chunk, then nothing more, holding the connection open until the client
    /// goes away or the server stops.
    Stall,
    /// Send the reply's text, then close the stream without a `finish_reason` (OpenCode then
    /// calls the model again, forever).
    Cut,
    /// Send the first chunk, then an in-stream `{"error": …}` event, then close.
    StreamError,
}

/// Token usage reported in a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// `prompt_tokens`.
    pub prompt_tokens: u64,
    /// `completion_tokens`.
    pub completion_tokens: u64,
}

/// One answer: text, tool calls, an HTTP error or a fault, after an optional delay.
///
/// In a script file a reply may also say `write_file = { path, content }` and
/// `run_command = "…"`: generation-neutral shorthands for a [`ToolCall::write_file`] and a
/// [`ToolCall::run_command`], placed before the `tool_calls` (in that order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ReplyFile")]
pub struct Reply {
    /// Assistant text (may come before tool calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Reasoning text (`reasoning_content` deltas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Tool calls, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Answer with an HTTP error instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HttpError>,
    /// Break the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Wait this long before answering.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// Wait this long between streamed chunks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_delay_ms: u64,
    /// Split text into chunks of at most this many characters (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_chars: Option<usize>,
    /// Use this reply this many times in the sequence (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub times: usize,
    /// Token usage to report; estimated from the text lengths when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// A reply as a script file spells it (with the shorthands).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyFile {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    write_file: Option<WriteFile>,
    #[serde(default)]
    run_command: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCall>,
    #[serde(default)]
    error: Option<HttpError>,
    #[serde(default)]
    fault: Option<Fault>,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    chunk_delay_ms: u64,
    #[serde(default)]
    chunk_chars: Option<usize>,
    #[serde(default = "one")]
    times: usize,
    #[serde(default)]
    usage: Option<Usage>,
}

/// `write_file = { path, content }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteFile {
    path: String,
    content: String,
}

impl From<ReplyFile> for Reply {
    fn from(file: ReplyFile) -> Self {
        let shorthand = file
            .write_file
            .map(|w| ToolCall::write_file(w.path, w.content))
            .into_iter()
            .chain(file.run_command.map(ToolCall::run_command));
        Reply {
            text: file.text,
            reasoning: file.reasoning,
            tool_calls: shorthand.chain(file.tool_calls).collect(),
            error: file.error,
            fault: file.fault,
            delay_ms: file.delay_ms,
            chunk_delay_ms: file.chunk_delay_ms,
            chunk_chars: file.chunk_chars,
            times: file.times,
            usage: file.usage,
        }
    }
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn one() -> usize {
    1
}

fn is_one(value: &usize) -> bool {
    *value == 1
}

impl Default for Reply {
    /// An empty reply used once (not valid until it carries an answer).
    fn default() -> Self {
        Reply {
            text: None,
            reasoning: None,
            tool_calls: Vec::new(),
            error: None,
            fault: None,
            delay_ms: 0,
            chunk_delay_ms: 0,
            chunk_chars: None,
            times: 1,
            usage: None,
        }
    }
}

impl Reply {
    /// A text answer (`finish_reason: stop`).
    pub fn text(text: impl Into<String>) -> Self {
        Reply {
            text: Some(text.into()),
            ..Reply::default()
        }
    }

    /// One tool call (`finish_reason: tool_calls`).
    pub fn tool_call(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Reply {
            tool_calls: vec![ToolCall::new(name, arguments)],
            ..Reply::default()
        }
    }

    /// Writes a file, in the shape of the generation answered ([`ToolCall::write_file`]).
    pub fn write_file(path: impl Into<String>, content: impl Into<String>) -> Self {
        Self::tool_calls(vec![ToolCall::write_file(path, content)])
    }

    /// Edits a file, in the shape of the generation answered ([`ToolCall::edit_file`]).
    pub fn edit_file(
        path: impl Into<String>,
        old: impl Into<String>,
        new: impl Into<String>,
    ) -> Self {
        Self::tool_calls(vec![ToolCall::edit_file(path, old, new)])
    }

    /// Reads a file, in the shape of the generation answered ([`ToolCall::read_file`]).
    pub fn read_file(path: impl Into<String>) -> Self {
        Self::tool_calls(vec![ToolCall::read_file(path)])
    }

    /// Runs a command, with the generation's tool (`bash` or `shell`;
    /// [`ToolCall::run_command`]).
    pub fn run_command(command: impl Into<String>) -> Self {
        Self::tool_calls(vec![ToolCall::run_command(command)])
    }

    /// Several tool calls in one step.
    pub fn tool_calls(calls: Vec<ToolCall>) -> Self {
        Reply {
            tool_calls: calls,
            ..Reply::default()
        }
    }

    /// An HTTP error answer.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Reply {
            error: Some(HttpError {
                status,
                message: message.into(),
                kind: None,
                retry_after: None,
            }),
            ..Reply::default()
        }
    }

    /// A fault; for [`Fault::Cut`], set the text sent before the cut with [`Reply::with_text`].
    pub fn fault(fault: Fault) -> Self {
        Reply {
            fault: Some(fault),
            ..Reply::default()
        }
    }

    /// Adds a `Retry-After` header to an error reply.
    #[must_use]
    pub fn retry_after(mut self, seconds: u64) -> Self {
        if let Some(error) = &mut self.error {
            error.retry_after = Some(seconds);
        }
        self
    }

    /// Sets the text (before tool calls, or before a cut).
    #[must_use]
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Adds reasoning text.
    #[must_use]
    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.reasoning = Some(reasoning.into());
        self
    }

    /// Waits before answering.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Waits between streamed chunks.
    #[must_use]
    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Splits text into chunks of at most `chars` characters.
    #[must_use]
    pub fn chunk_chars(mut self, chars: usize) -> Self {
        self.chunk_chars = Some(chars);
        self
    }

    /// Repeats this reply `times` times in the sequence.
    #[must_use]
    pub fn times(mut self, times: usize) -> Self {
        self.times = times;
        self
    }

    /// Reports these token figures.
    #[must_use]
    pub fn usage(mut self, prompt_tokens: u64, completion_tokens: u64) -> Self {
        self.usage = Some(Usage {
            prompt_tokens,
            completion_tokens,
        });
        self
    }

    fn validate(&self) -> Result<(), String> {
        if self.times == 0 {
            return Err("`times` must be at least 1".into());
        }
        if self.chunk_chars == Some(0) {
            return Err("`chunk_chars` must be at least 1".into());
        }
        let content =
            self.text.is_some() || self.reasoning.is_some() || !self.tool_calls.is_empty();
        match (&self.error, &self.fault) {
            (Some(_), Some(_)) => Err("a reply cannot be both an `error` and a `fault`".into()),
            (Some(error), None) => {
                if content {
                    return Err("an `error` reply cannot also carry text or tool calls".into());
                }
                if !(400..=599).contains(&error.status) {
                    return Err(format!("error status {} is not in 400..=599", error.status));
                }
                Ok(())
            }
            (None, Some(Fault::Cut)) if !self.tool_calls.is_empty() => {
                Err("a `cut` fault sends text only; drop the tool calls".into())
            }
            (None, Some(_)) => Ok(()),
            (None, None) if !content => {
                Err("it needs `text`, `tool_calls`, `error` or `fault`".into())
            }
            (None, None) => {
                if let Some(call) = self.tool_calls.iter().find(|c| c.name.is_empty()) {
                    return Err(format!("a tool call has an empty name ({call:?})"));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r##"
models = ["fake-model", "other"]

[[rule]]
name = "plan"
agent = "planner"
user = "(?i)build"
tool_result = false

[[rule.reply]]
text = "# Plan"
delay_ms = 10

[[rule]]
name = "flaky"
per_session = true
exhausted = "cycle"

[[rule.reply]]
error = { status = 429, message = "slow down", retry_after = 1 }
times = 2

[[rule.reply]]
tool_calls = [{ name = "write", arguments = { filePath = "a.rs", content = "fn a() {}" } }]
"##;

    #[test]
    fn toml_example_parses_with_every_field() {
        let script = Script::from_toml_str(EXAMPLE).unwrap();
        assert_eq!(script.model_ids(), vec!["fake-model", "other"]);
        let plan = &script.rules[0];
        assert_eq!(plan.agent.as_deref(), Some("planner"));
        assert_eq!(plan.user.as_ref().unwrap().as_str(), "(?i)build");
        assert_eq!(plan.tool_result, Some(false));
        assert_eq!(plan.replies[0].delay_ms, 10);
        let flaky = &script.rules[1];
        assert!(flaky.per_session);
        assert_eq!(flaky.exhausted, Exhausted::Cycle);
        assert_eq!(flaky.expanded_len(), 3);
        assert_eq!(
            flaky
                .expanded(1)
                .unwrap()
                .error
                .as_ref()
                .unwrap()
                .retry_after,
            Some(1)
        );
        assert_eq!(flaky.expanded(2).unwrap().tool_calls[0].name, "write");
        assert!(flaky.expanded(3).is_none());
    }

    #[test]
    fn json_and_toml_forms_are_the_same_script() {
        let toml = Script::from_toml_str(EXAMPLE).unwrap();
        let json = serde_json::to_string_pretty(&toml).unwrap();
        let back = Script::from_json_str(&json).unwrap();
        assert_eq!(
            serde_json::to_value(&toml).unwrap(),
            serde_json::to_value(&back).unwrap()
        );
    }

    #[test]
    fn unknown_key_is_an_error_with_its_position() {
        let text = "[[rule]]\nname = \"x\"\nusr = \"typo\"\n";
        match Script::from_toml_str(text).unwrap_err() {
            ScriptError::Toml {
                line,
                column,
                message,
            } => {
                assert_eq!((line, column), (3, 1));
                assert!(message.contains("usr"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let json = "{\n  \"rules\": [{\"name\": \"x\", \"bogus\": 1}]\n}";
        match Script::from_json_str(json).unwrap_err() {
            ScriptError::Json { line, message, .. } => {
                assert_eq!(line, 2);
                assert!(message.contains("bogus"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn invalid_regex_is_reported_with_the_pattern() {
        let text = "[[rule]]\nname = \"x\"\nuser = \"(unclosed\"\n[[rule.reply]]\ntext = \"t\"\n";
        let err = Script::from_toml_str(text).unwrap_err().to_string();
        assert!(err.contains("(unclosed") && err.contains("line 3"), "{err}");
        assert!(matches!(
            Rule::new("r").user("("),
            Err(ScriptError::Regex { .. })
        ));
    }

    #[test]
    fn rules_that_cannot_answer_are_rejected() {
        let cases = [
            (Rule::new("none"), "no reply"),
            (Rule::new("empty").reply(Reply::default()), "needs `text`"),
            (
                Rule::new("both").reply(Reply {
                    fault: Some(Fault::Stall),
                    ..Reply::error(500, "x")
                }),
                "both",
            ),
            (
                Rule::new("status").reply(Reply::error(200, "x")),
                "not in 400..=599",
            ),
            (
                Rule::new("zero").reply(Reply::text("x").times(0)),
                "at least 1",
            ),
            (
                Rule::new("mixed").reply(Reply::error(500, "x").with_text("t")),
                "cannot also carry",
            ),
            (
                Rule::new("cut")
                    .reply(Reply::fault(Fault::Cut).with_text("t"))
                    .reply(Reply {
                        fault: Some(Fault::Cut),
                        ..Reply::tool_call("write", serde_json::json!({}))
                    }),
                "reply 1",
            ),
            (
                Rule::new("contradiction")
                    .tool_result(false)
                    .last_tool("bash")
                    .reply(Reply::text("x")),
                "contradicts",
            ),
        ];
        for (rule, expected) in cases {
            let err = rule.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{}: {err}", rule.name);
            assert!(err.contains(&rule.name), "{err}");
        }
    }

    #[test]
    fn shorthand_tool_calls_come_before_the_listed_ones() {
        let text = r#"
[[rule]]
name = "work"
[[rule.reply]]
text = "Working."
write_file = { path = "a.txt", content = "a\n" }
run_command = "cat a.txt"
tool_calls = [{ name = "glob", arguments = { pattern = "*" } }]
"#;
        let script = Script::from_toml_str(text).unwrap();
        let calls = &script.rules[0].replies[0].tool_calls;
        assert_eq!(
            calls,
            &[
                ToolCall::write_file("a.txt", "a\n"),
                ToolCall::run_command("cat a.txt"),
                ToolCall::new("glob", serde_json::json!({"pattern": "*"})),
            ]
        );
        assert_eq!(calls[0].arguments["filePath"], "a.txt");
        assert_eq!(calls[1].name, "bash");
        // The shorthand is spelled out when the script is written back.
        let json = serde_json::to_value(&script).unwrap();
        assert!(json.pointer("/rule/0/reply/0/write_file").is_none());
        assert_eq!(
            Script::from_json_str(&json.to_string()).unwrap().rules[0].replies[0].tool_calls,
            *calls
        );
        let bad = "[[rule]]\nname = \"x\"\n[[rule.reply]]\nwrite_file = { path = \"a\" }\n";
        let err = Script::from_toml_str(bad).unwrap_err().to_string();
        assert!(err.contains("content") && err.contains("line 4"), "{err}");
        let as_written = "[[rule]]\nname = \"x\"\n[[rule.reply]]\ntool_calls = [{ name = \"bash\", as_written = true }]\n";
        assert!(
            Script::from_toml_str(as_written).unwrap().rules[0].replies[0].tool_calls[0].as_written
        );
    }

    #[test]
    fn load_reads_json_by_extension_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("s.json");
        std::fs::write(
            &json,
            r#"{"rules":[{"name":"a","replies":[{"text":"hi"}]}]}"#,
        )
        .unwrap();
        assert_eq!(Script::load(&json).unwrap().rules[0].name, "a");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[[rule]]\nname = 3\n").unwrap();
        let err = Script::load(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
        let missing = Script::load(dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(missing, ScriptError::Read { .. }));
    }
}
