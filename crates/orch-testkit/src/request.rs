//! What a chat-completions request says, reduced to what rules match on.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use orch_opencode::Generation;

use crate::dialect::{self, V2_COMPACTION_PROMPT, V2_COMPACTION_RETRY, V2_CONTINUATIONS};
use crate::script::{RequestKind, Rule, agent_marker};

/// The facts of one `POST /v1/chat/completions` request that rules match on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestView {
    /// The kind, told apart by the system prompt.
    pub kind: RequestKind,
    /// The `model` field.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// All system messages joined by newlines.
    pub system: String,
    /// The text of the last user message (parts joined by newlines), OpenCode's own
    /// continuation messages left out (see [`RequestView::continued`]).
    pub last_user: String,
    /// How many continuation messages OpenCode 2 added after that user message (after a
    /// cut stream, or a reply that hit the output limit): the turn is a continued one.
    #[serde(default)]
    pub continued: usize,
    /// Whether the last message is a tool result.
    pub tool_result: bool,
    /// The tool whose result is the last message, when it is one.
    pub last_tool: Option<String>,
    /// The text of the last tool result, when the last message is one.
    pub tool_output: Option<String>,
    /// Assistant messages after the last user message.
    pub step: usize,
    /// OpenCode's `x-session-id` header.
    pub session: Option<String>,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    /// The OpenCode generation whose tools are offered (`None` when no tool tells, e.g. a
    /// title request).
    #[serde(default, with = "dialect::serde_generation")]
    pub generation: Option<Generation>,
    /// A rough token count of the whole prompt (characters / 4), used for usage figures.
    pub prompt_tokens: u64,
}

/// Why a request body could not be read as a chat-completions request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad chat-completions request: {0}")]
pub struct BadRequest(pub String);

impl RequestView {
    /// Reads the parts of a chat-completions body that rules match on.
    ///
    /// # Errors
    /// [`BadRequest`] when `messages` is missing or not an array.
    pub fn from_body(body: &Value, session: Option<String>) -> Result<Self, BadRequest> {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .ok_or_else(|| BadRequest("the body has no `messages` array".into()))?;
        let role = |m: &Value| {
            m.get("role")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };

        let system = messages
            .iter()
            .filter(|m| role(m) == "system")
            .map(|m| content_text(m.get("content")))
            .collect::<Vec<_>>()
            .join("\n");
        let is_continuation = |m: &Value| {
            let text = content_text(m.get("content"));
            V2_CONTINUATIONS.iter().any(|c| text.starts_with(c))
        };
        let last_user_index = messages
            .iter()
            .rposition(|m| role(m) == "user" && !is_continuation(m));
        let continued = messages
            .iter()
            .skip(last_user_index.map_or(0, |i| i + 1))
            .filter(|m| role(m) == "user")
            .count();
        let last_user = last_user_index
            .map(|i| content_text(messages[i].get("content")))
            .unwrap_or_default();
        let step = messages
            .iter()
            .skip(last_user_index.map_or(0, |i| i + 1))
            .filter(|m| role(m) == "assistant")
            .count();
        let last = messages.last();
        let tool_result = last.is_some_and(|m| role(m) == "tool");
        let (last_tool, tool_output) = match last {
            Some(m) if tool_result => {
                let call_id = m.get("tool_call_id").and_then(Value::as_str);
                (
                    call_id.and_then(|id| tool_name_for_call(messages, id)),
                    Some(content_text(m.get("content"))),
                )
            }
            _ => (None, None),
        };
        // OpenCode 1 compacts under a system prompt of its own; OpenCode 2 with a user
        // message under the session agent's prompt (and a second one when the summary
        // lacked its template).
        let kind = if system.contains("You are a title generator") {
            RequestKind::Title
        } else if system.contains("context summarization agent")
            || last_user.starts_with(V2_COMPACTION_PROMPT)
            || last_user.starts_with(V2_COMPACTION_RETRY)
        {
            RequestKind::Compaction
        } else {
            RequestKind::Agent
        };
        let offered = body
            .get("tools")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let tools = offered
            .iter()
            .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
            .map(str::to_owned)
            .collect();
        let prompt_chars: usize = messages
            .iter()
            .map(|m| content_text(m.get("content")).len())
            .sum();
        Ok(RequestView {
            kind,
            model: body
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
            system,
            last_user,
            continued,
            tool_result,
            last_tool,
            tool_output,
            step,
            session,
            tools,
            generation: dialect::detect_generation(offered),
            prompt_tokens: (prompt_chars as u64).div_ceil(4),
        })
    }

    /// Whether every matcher `rule` sets matches this request.
    pub fn matches(&self, rule: &Rule) -> bool {
        let kind_ok = rule.kind == RequestKind::Any || rule.kind == self.kind;
        let wants_tool_result = rule
            .tool_result
            .or((rule.last_tool.is_some() || rule.tool_output.is_some()).then_some(true));
        kind_ok
            && rule
                .agent
                .as_ref()
                .is_none_or(|a| self.system.contains(&agent_marker(a)))
            && rule
                .system
                .as_ref()
                .is_none_or(|p| p.regex().is_match(&self.system))
            && rule
                .user
                .as_ref()
                .is_none_or(|p| p.regex().is_match(&self.last_user))
            && wants_tool_result.is_none_or(|want| want == self.tool_result)
            && rule.last_tool.as_ref().is_none_or(|t| {
                self.last_tool
                    .as_deref()
                    .is_some_and(|last| dialect::same_tool(t, last))
            })
            && rule.tool_output.as_ref().is_none_or(|p| {
                self.tool_output
                    .as_deref()
                    .is_some_and(|out| p.regex().is_match(out))
            })
            && rule.step.is_none_or(|s| s == self.step)
            && rule
                .session
                .as_ref()
                .is_none_or(|s| self.session.as_ref() == Some(s))
            && rule.model.as_ref().is_none_or(|m| *m == self.model)
    }

    /// A one-line description for error messages and records.
    pub fn describe(&self) -> String {
        let mut user: String = self.last_user.chars().take(120).collect();
        if user.len() < self.last_user.len() {
            user.push('…');
        }
        format!(
            "kind={} session={} step={} tool_result={}{}{} last user message: {:?}",
            self.kind,
            self.session.as_deref().unwrap_or("-"),
            self.step,
            self.tool_result,
            self.last_tool
                .as_ref()
                .map(|t| format!(" last_tool={t}"))
                .unwrap_or_default(),
            if self.continued > 0 {
                format!(" continued={}", self.continued)
            } else {
                String::new()
            },
            user
        )
    }
}

/// The text of a message `content`: a string, or the `text` of each part of an array.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn tool_name_for_call(messages: &[Value], call_id: &str) -> Option<String> {
    messages.iter().rev().find_map(|m| {
        m.get("tool_calls")?.as_array()?.iter().find_map(|call| {
            (call.get("id")?.as_str()? == call_id)
                .then(|| call.pointer("/function/name")?.as_str().map(str::to_owned))
                .flatten()
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::script::{Reply, Rule};

    fn opencode_body() -> Value {
        json!({
            "model": "fake-model", "stream": true,
            "tools": [{"type":"function","function":{"name":"write","parameters":{}}}],
            "messages": [
                {"role":"system","content":"You are opencode.\n[orch-agent:worker]"},
                {"role":"user","content":[{"type":"text","text":"Create hello.txt"},{"type":"text","text":"please"}]},
                {"role":"assistant","content":"","tool_calls":[{"id":"call_1","type":"function",
                    "function":{"name":"write","arguments":"{}"}}]},
                {"role":"tool","tool_call_id":"call_1","content":"Wrote file successfully."}
            ]
        })
    }

    #[test]
    fn reads_last_user_text_tool_result_and_step() {
        let view = RequestView::from_body(&opencode_body(), Some("ses_1".into())).unwrap();
        assert_eq!(view.kind, RequestKind::Agent);
        assert_eq!(view.last_user, "Create hello.txt\nplease");
        assert!(view.tool_result);
        assert_eq!(view.last_tool.as_deref(), Some("write"));
        assert_eq!(
            view.tool_output.as_deref(),
            Some("Wrote file successfully.")
        );
        assert_eq!(view.step, 1);
        assert_eq!(view.tools, vec!["write".to_owned()]);
        assert!(view.stream);
    }

    #[test]
    fn tells_title_and_compaction_requests_apart() {
        let title = json!({"messages":[{"role":"system","content":"You are a title generator. You output ONLY"},
                                       {"role":"user","content":"x"}]});
        let compact = json!({"messages":[{"role":"system","content":"You are a context summarization agent."}]});
        assert_eq!(
            RequestView::from_body(&title, None).unwrap().kind,
            RequestKind::Title
        );
        assert_eq!(
            RequestView::from_body(&compact, None).unwrap().kind,
            RequestKind::Compaction
        );
    }

    #[test]
    fn opencode_2_continuations_keep_the_request_they_continue() {
        let body = json!({"messages":[
            {"role":"system","content":"You are opencode."},
            {"role":"user","content":"Your item: T3: write README.md"},
            {"role":"assistant","content":"partial answer"},
            {"role":"user","content":"The previous response was interrupted. Continue from where you left off without repeating completed content."}
        ]});
        let view = RequestView::from_body(&body, None).unwrap();
        assert_eq!(view.last_user, "Your item: T3: write README.md");
        assert_eq!(view.continued, 1);
        assert_eq!(view.step, 1);
        assert!(
            view.describe().contains("continued=1"),
            "{}",
            view.describe()
        );
        let plain = RequestView::from_body(&opencode_body(), None).unwrap();
        assert_eq!(plain.continued, 0);
    }

    #[test]
    fn missing_messages_is_a_bad_request() {
        let err = RequestView::from_body(&json!({"model":"x"}), None).unwrap_err();
        assert!(err.0.contains("messages"), "{err:?}");
    }

    #[test]
    fn every_set_matcher_must_match() {
        let view = RequestView::from_body(&opencode_body(), Some("ses_1".into())).unwrap();
        let base = || Rule::new("r").reply(Reply::text("x"));
        assert!(view.matches(&base()));
        assert!(view.matches(&base().agent("worker")));
        assert!(!view.matches(&base().agent("planner")));
        assert!(view.matches(&base().user("(?i)HELLO").unwrap()));
        assert!(!view.matches(&base().user("^please").unwrap()));
        assert!(view.matches(&base().tool_result(true)));
        assert!(!view.matches(&base().tool_result(false)));
        assert!(view.matches(&base().last_tool("write")));
        assert!(!view.matches(&base().last_tool("bash")));
        assert!(view.matches(&base().tool_output("successfully").unwrap()));
        assert!(!view.matches(&base().tool_output("failed").unwrap()));
        assert!(view.matches(&base().step(1)));
        assert!(!view.matches(&base().step(0)));
        assert!(view.matches(&base().session("ses_1")));
        assert!(!view.matches(&base().session("ses_2")));
        assert!(view.matches(&base().model("fake-model")));
        assert!(!view.matches(&base().model("other-model")));
        assert!(!view.matches(&base().kind(RequestKind::Title)));
        assert!(view.matches(&base().kind(RequestKind::Any)));
        assert!(view.matches(&base().system("opencode").unwrap()));
    }

    #[test]
    fn the_generation_comes_from_the_offered_tools_and_last_tool_matches_either_name() {
        let mut body = opencode_body();
        body["tools"] = json!([{"type":"function","function":{"name":"shell","parameters":{}}}]);
        body["messages"][2]["tool_calls"][0]["function"]["name"] = json!("shell");
        let view = RequestView::from_body(&body, None).unwrap();
        assert_eq!(view.generation, Some(Generation::V2));
        assert_eq!(view.last_tool.as_deref(), Some("shell"));
        let base = || Rule::new("r").reply(Reply::text("x"));
        assert!(view.matches(&base().last_tool("bash")));
        assert!(view.matches(&base().last_tool("shell")));
        assert!(!view.matches(&base().last_tool("write")));
        let v1 = RequestView::from_body(&opencode_body(), None).unwrap();
        // Only `write` offered, with no parameters: nothing tells.
        assert_eq!(v1.generation, None);
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["generation"], "v2");
        assert_eq!(serde_json::from_value::<RequestView>(json).unwrap(), view);
    }

    #[test]
    fn last_tool_implies_a_tool_result() {
        let body = json!({"messages":[{"role":"user","content":"hi"}]});
        let view = RequestView::from_body(&body, None).unwrap();
        let rule = Rule::new("r").last_tool("write").reply(Reply::text("x"));
        assert!(!view.matches(&rule));
    }
}
