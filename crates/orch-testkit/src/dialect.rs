//! The tool vocabularies of the two OpenCode generations, and the translation between them.
//!
//! OpenCode 1 and 2 offer the model the same tools under other names and argument keys
//! (read from the tool lists of 1.18.33 and 2.1.2):
//!
//! | what | OpenCode 1 | OpenCode 2 |
//! |---|---|---|
//! | write a file | `write {filePath, content}` | `write {path, content}` |
//! | edit a file | `edit {filePath, oldString, newString, replaceAll?}` | `edit {path, oldString, newString, replaceAll?}` |
//! | read a file | `read {filePath, offset?, limit?}` | `read {path, offset?, limit?}` |
//! | run a command | `bash {command, timeout?, workdir?}` | `shell {command, timeout?, workdir?, background?}` |
//! | start a subagent | `task {subagent_type, description, prompt, task_id?}` | `subagent {agent, description, prompt, sessionID?}` |
//! | load a skill | `skill {name}` | `skill {id}` |
//!
//! Translation renames the tool and these keys, and nothing else: other keys pass through
//! (both generations ignore argument keys they do not know; a `description` on `shell` was
//! accepted by 2.1.2), so a call in V1 shape translated to V2 and back is the call itself.
//! Timeouts are milliseconds in both. Tools that are the same in both (`glob`, `grep`,
//! `webfetch`, …) or that one generation lacks (`todowrite`, `execute`) are left alone.

use std::borrow::Cow;

use orch_opencode::Generation;
use serde_json::{Map, Value};

use crate::script::{Reply, RequestKind, ToolCall};

/// One tool known under a name in each generation, with its renamed argument keys.
struct KnownTool {
    v1: &'static str,
    v2: &'static str,
    /// `(V1 key, V2 key)` pairs.
    keys: &'static [(&'static str, &'static str)],
}

const KNOWN: &[KnownTool] = &[
    KnownTool {
        v1: "write",
        v2: "write",
        keys: &[("filePath", "path")],
    },
    KnownTool {
        v1: "edit",
        v2: "edit",
        keys: &[("filePath", "path")],
    },
    KnownTool {
        v1: "read",
        v2: "read",
        keys: &[("filePath", "path")],
    },
    KnownTool {
        v1: "bash",
        v2: "shell",
        keys: &[],
    },
    KnownTool {
        v1: "task",
        v2: "subagent",
        keys: &[("subagent_type", "agent"), ("task_id", "sessionID")],
    },
    KnownTool {
        v1: "skill",
        v2: "skill",
        keys: &[("name", "id")],
    },
];

fn known(name: &str) -> Option<&'static KnownTool> {
    KNOWN.iter().find(|t| t.v1 == name || t.v2 == name)
}

/// The name `generation` gives the tool called `name` in either generation: `bash` ↔ `shell`,
/// `task` ↔ `subagent`; every other name is returned as it is.
///
/// ```
/// use orch_testkit::{Generation, tool_name};
///
/// assert_eq!(tool_name("bash", Generation::V2), "shell");
/// assert_eq!(tool_name("shell", Generation::V1), "bash");
/// assert_eq!(tool_name("write", Generation::V2), "write");
/// assert_eq!(tool_name("glob", Generation::V1), "glob");
/// ```
pub fn tool_name(name: &str, generation: Generation) -> &str {
    match known(name) {
        Some(tool) => match generation {
            Generation::V1 => tool.v1,
            Generation::V2 => tool.v2,
        },
        None => name,
    }
}

/// Whether `a` and `b` name the same tool, in either generation's vocabulary (`bash` and
/// `shell` are the same tool; so are `task` and `subagent`).
pub fn same_tool(a: &str, b: &str) -> bool {
    a == b || tool_name(a, Generation::V1) == tool_name(b, Generation::V1)
}

impl ToolCall {
    /// This call as `generation`'s model would make it: the tool's name and its renamed
    /// argument keys (see the table in the crate docs). A call already in that shape, a tool
    /// that both generations name and shape alike, and a call marked
    /// [`as_written`](ToolCall::as_written) come back unchanged; string arguments (sent
    /// verbatim) keep their text and get the new name only.
    ///
    /// ```
    /// use orch_testkit::{Generation, ToolCall};
    /// use serde_json::json;
    ///
    /// let v1 = ToolCall::new("write", json!({"filePath": "a.txt", "content": "a"}));
    /// let v2 = v1.for_generation(Generation::V2);
    /// assert_eq!(v2, ToolCall::new("write", json!({"path": "a.txt", "content": "a"})));
    /// assert_eq!(v2.for_generation(Generation::V1), v1);
    /// ```
    pub fn for_generation(&self, generation: Generation) -> ToolCall {
        if self.as_written {
            return self.clone();
        }
        let Some(tool) = known(&self.name) else {
            return self.clone();
        };
        let name = tool_name(&self.name, generation).to_owned();
        let arguments = match &self.arguments {
            Value::Object(args) => Value::Object(rename_keys(args, tool.keys, generation)),
            other => other.clone(),
        };
        ToolCall {
            name,
            arguments,
            as_written: false,
        }
    }
}

impl Reply {
    /// This reply with every tool call in `generation`'s shape
    /// ([`ToolCall::for_generation`]).
    pub fn for_generation(&self, generation: Generation) -> Reply {
        Reply {
            tool_calls: self
                .tool_calls
                .iter()
                .map(|call| call.for_generation(generation))
                .collect(),
            ..self.clone()
        }
    }
}

/// The reply to send to a request of `kind` from an OpenCode of `generation` (`None`:
/// unknown, send as written): tool calls translated, and a V2 compaction summary given the
/// heading 2.1.2 checks for.
pub(crate) fn answer_for(reply: Reply, generation: Option<Generation>, kind: RequestKind) -> Reply {
    let Some(generation) = generation else {
        return reply;
    };
    let mut reply = reply.for_generation(generation);
    if kind == RequestKind::Compaction
        && let Some(text) = &reply.text
        && let Cow::Owned(shaped) = summary_for(text, generation)
    {
        reply.text = Some(shaped);
    }
    reply
}

/// Moves each key of the other generation to this generation's name, unless this
/// generation's key is already there. Key order is kept (the renamed key takes the place of
/// the old one), so the wire text is stable.
fn rename_keys(
    args: &Map<String, Value>,
    keys: &[(&'static str, &'static str)],
    generation: Generation,
) -> Map<String, Value> {
    let rename = |key: &str| -> Option<&'static str> {
        keys.iter().find_map(|&(v1, v2)| {
            let (from, to) = match generation {
                Generation::V1 => (v2, v1),
                Generation::V2 => (v1, v2),
            };
            (key == from && !args.contains_key(to)).then_some(to)
        })
    };
    args.iter()
        .map(|(key, value)| {
            let key = rename(key).map_or_else(|| key.clone(), str::to_owned);
            (key, value.clone())
        })
        .collect()
}

/// The generation whose tools a request offers, told by tool names (`shell`, `subagent`,
/// `execute` are V2's; `bash`, `task`, `todowrite` V1's) or, when a permission removed
/// those, by the file tools' path key (`path` vs `filePath`). `None` for a request that
/// offers no tools (title generation) or none of these.
pub(crate) fn detect_generation(tools: &[Value]) -> Option<Generation> {
    let function = |tool: &Value| tool.get("function").cloned().unwrap_or(Value::Null);
    let mut by_keys = None;
    for tool in tools {
        let function = function(tool);
        let name = function.get("name").and_then(Value::as_str).unwrap_or("");
        match name {
            "shell" | "subagent" | "execute" => return Some(Generation::V2),
            "bash" | "task" | "todowrite" => return Some(Generation::V1),
            "write" | "edit" | "read" => {
                let properties = function.pointer("/parameters/properties");
                let has = |key: &str| properties.and_then(|p| p.get(key)).is_some();
                if has("filePath") {
                    by_keys = Some(Generation::V1);
                } else if has("path") {
                    by_keys = Some(Generation::V2);
                }
            }
            _ => {}
        }
    }
    by_keys
}

/// How OpenCode 2 asks for a compaction: a user message (under the session agent's own
/// system prompt), not a system prompt of its own as OpenCode 1 does.
pub(crate) const V2_COMPACTION_PROMPT: &str =
    "You MUST summarize the conversation above into a structured summary";

/// OpenCode 2's second try when the summary lacked the template (it then fails the
/// compaction with "Compaction summary did not match the required template").
pub(crate) const V2_COMPACTION_RETRY: &str =
    "The previous response did not fill in the required summary template";

/// The user messages OpenCode 2 adds on its own when it continues a turn: after a cut
/// stream ("interrupted") and after a reply that hit the output limit. They carry no new
/// request, so rules match on the user message before them (see `RequestView::continued`).
pub(crate) const V2_CONTINUATIONS: [&str; 2] = [
    "The previous response was interrupted. Continue from where you left off",
    "Your last response hit the output token limit (stop reason: length).",
];

/// The headings of OpenCode 2's summary template. A summary carrying one of them (exact
/// case, on a line of its own) passed 2.1.2's check; one with none, or another heading,
/// failed it.
const V2_SUMMARY_HEADINGS: &[&str] = &[
    "## Objective",
    "## Requirements",
    "## Decisions",
    "## Work State",
    "## Next Move",
    "## Relevant Files",
    "## Important Context",
];

/// A compaction summary `generation` accepts: for V2, `text` under an `## Objective` heading
/// unless it already has one of the template's headings; for V1, `text` itself.
pub(crate) fn summary_for(text: &str, generation: Generation) -> Cow<'_, str> {
    let has_heading = text
        .lines()
        .any(|line| V2_SUMMARY_HEADINGS.contains(&line.trim_end()));
    match generation {
        Generation::V2 if !has_heading => Cow::Owned(format!("## Objective\n{text}")),
        _ => Cow::Borrowed(text),
    }
}

/// Serde for an optional [`Generation`] as `"v1"` / `"v2"` (orch-opencode's type has no
/// serde of its own).
pub(crate) mod serde_generation {
    use orch_opencode::Generation;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        generation: &Option<Generation>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match generation {
            Some(g) => serializer.serialize_some(g.as_str()),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Generation>, D::Error> {
        Option::<String>::deserialize(deserializer)?
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn v1_calls_become_v2_calls() {
        let cases = [
            (
                ToolCall::new("write", json!({"filePath": "a.txt", "content": "a\n"})),
                ToolCall::new("write", json!({"path": "a.txt", "content": "a\n"})),
            ),
            (
                ToolCall::new(
                    "edit",
                    json!({"filePath": "a", "oldString": "x", "newString": "y", "replaceAll": true}),
                ),
                ToolCall::new(
                    "edit",
                    json!({"path": "a", "oldString": "x", "newString": "y", "replaceAll": true}),
                ),
            ),
            (
                ToolCall::new("read", json!({"filePath": "a", "offset": 2, "limit": 5})),
                ToolCall::new("read", json!({"path": "a", "offset": 2, "limit": 5})),
            ),
            (
                ToolCall::new(
                    "bash",
                    json!({"command": "ls", "timeout": 5000, "workdir": "sub", "description": "list"}),
                ),
                ToolCall::new(
                    "shell",
                    json!({"command": "ls", "timeout": 5000, "workdir": "sub", "description": "list"}),
                ),
            ),
            (
                ToolCall::new(
                    "task",
                    json!({"subagent_type": "general", "description": "d", "prompt": "p", "task_id": "ses_1"}),
                ),
                ToolCall::new(
                    "subagent",
                    json!({"agent": "general", "description": "d", "prompt": "p", "sessionID": "ses_1"}),
                ),
            ),
            (
                ToolCall::new("skill", json!({"name": "s"})),
                ToolCall::new("skill", json!({"id": "s"})),
            ),
        ];
        for (v1, v2) in cases {
            assert_eq!(v1.for_generation(Generation::V2), v2, "{v1:?}");
            assert_eq!(v2.for_generation(Generation::V1), v1, "{v2:?}");
            // Already in shape: unchanged.
            assert_eq!(v1.for_generation(Generation::V1), v1);
            assert_eq!(v2.for_generation(Generation::V2), v2);
        }
    }

    #[test]
    fn renamed_keys_keep_their_place_on_the_wire() {
        let v1 = ToolCall::new("write", json!({"content": "c", "filePath": "a", "zzz": 1}));
        // serde_json keeps keys sorted (no preserve_order), so check the mapping only.
        let v2 = v1.for_generation(Generation::V2);
        assert_eq!(v2.arguments, json!({"content": "c", "path": "a", "zzz": 1}));
    }

    #[test]
    fn other_tools_string_arguments_and_as_written_calls_are_left_alone() {
        let glob = ToolCall::new("glob", json!({"pattern": "*.rs", "path": "src"}));
        assert_eq!(glob.for_generation(Generation::V1), glob);
        assert_eq!(glob.for_generation(Generation::V2), glob);
        let todo = ToolCall::new("todowrite", json!({"todos": []}));
        assert_eq!(todo.for_generation(Generation::V2), todo);
        let raw = ToolCall::new("bash", json!("{\"command\": \"ls\""));
        let raw_v2 = raw.for_generation(Generation::V2);
        assert_eq!(raw_v2.name, "shell");
        assert_eq!(raw_v2.arguments, raw.arguments);
        let kept = ToolCall::new("write", json!({"filePath": "a", "content": "b"})).as_written();
        assert_eq!(kept.for_generation(Generation::V2), kept);
    }

    #[test]
    fn a_key_of_this_generation_wins_over_the_other_one() {
        let both = ToolCall::new(
            "write",
            json!({"filePath": "a", "path": "b", "content": "c"}),
        );
        assert_eq!(
            both.for_generation(Generation::V2).arguments,
            both.arguments
        );
        assert_eq!(
            both.for_generation(Generation::V1).arguments,
            both.arguments
        );
    }

    #[test]
    fn names_and_sameness() {
        assert_eq!(tool_name("task", Generation::V2), "subagent");
        assert_eq!(tool_name("subagent", Generation::V1), "task");
        assert_eq!(tool_name("nope", Generation::V2), "nope");
        assert!(same_tool("bash", "shell"));
        assert!(same_tool("shell", "bash"));
        assert!(same_tool("task", "subagent"));
        assert!(same_tool("write", "write"));
        assert!(same_tool("mystery", "mystery"));
        assert!(!same_tool("bash", "write"));
        assert!(!same_tool("shell", "subagent"));
    }

    fn tools(list: Value) -> Vec<Value> {
        list.as_array().cloned().unwrap_or_default()
    }

    #[test]
    fn the_offered_tools_tell_the_generation() {
        let v2 = tools(json!([{"type": "function", "function": {"name": "edit"}},
                              {"type": "function", "function": {"name": "shell"}}]));
        assert_eq!(detect_generation(&v2), Some(Generation::V2));
        let v1 = tools(json!([{"type": "function", "function": {"name": "bash"}}]));
        assert_eq!(detect_generation(&v1), Some(Generation::V1));
        // Only the file tools left (commands and subagents denied): the path key tells.
        let write = |key: &str| {
            tools(json!([{"type": "function", "function": {"name": "write",
                "parameters": {"properties": {key: {"type": "string"}, "content": {}}}}}]))
        };
        assert_eq!(detect_generation(&write("path")), Some(Generation::V2));
        assert_eq!(detect_generation(&write("filePath")), Some(Generation::V1));
        assert_eq!(detect_generation(&[]), None);
        let neutral = tools(json!([{"type": "function", "function": {"name": "glob"}}]));
        assert_eq!(detect_generation(&neutral), None);
    }

    #[test]
    fn v2_summaries_get_a_template_heading() {
        assert_eq!(
            summary_for("Summary of the work.", Generation::V2),
            "## Objective\nSummary of the work."
        );
        let templated = "Done so far.\n## Work State\n### Completed\n- x";
        assert_eq!(summary_for(templated, Generation::V2), templated);
        assert_eq!(summary_for("plain", Generation::V1), "plain");
        // A heading outside the template does not count (2.1.2 rejected it).
        assert_eq!(
            summary_for("## Summary\n- x", Generation::V2),
            "## Objective\n## Summary\n- x"
        );
    }

    fn text() -> BoxedStrategy<Value> {
        "[ -~\n]{0,12}".prop_map(Value::from).boxed()
    }

    fn number() -> BoxedStrategy<Value> {
        any::<u32>().prop_map(Value::from).boxed()
    }

    fn flag() -> BoxedStrategy<Value> {
        any::<bool>().prop_map(Value::from).boxed()
    }

    type Field = (&'static str, fn() -> BoxedStrategy<Value>);

    /// The `required` keys always, each `optional` key half of the time.
    fn fields(required: &[Field], optional: &[Field]) -> BoxedStrategy<Vec<(&'static str, Value)>> {
        let required: Vec<_> = required
            .iter()
            .map(|&(key, value)| value().prop_map(move |v| (key, v)).boxed())
            .collect();
        let optional: Vec<_> = optional
            .iter()
            .map(|&(key, value)| prop::option::of(value().prop_map(move |v| (key, v))).boxed())
            .collect();
        (required, optional)
            .prop_map(|(r, o)| r.into_iter().chain(o.into_iter().flatten()).collect())
            .boxed()
    }

    /// A call of one known tool in V1 shape: its V1 keys, plus keys neither generation
    /// renames.
    fn v1_call() -> impl Strategy<Value = ToolCall> {
        let tool = prop_oneof![
            fields(&[("filePath", text), ("content", text)], &[]).prop_map(|f| ("write", f)),
            fields(
                &[("filePath", text), ("oldString", text), ("newString", text)],
                &[("replaceAll", flag)]
            )
            .prop_map(|f| ("edit", f)),
            fields(
                &[("filePath", text)],
                &[("offset", number), ("limit", number)]
            )
            .prop_map(|f| ("read", f)),
            fields(
                &[("command", text)],
                &[
                    ("timeout", number),
                    ("workdir", text),
                    ("description", text)
                ]
            )
            .prop_map(|f| ("bash", f)),
            fields(
                &[
                    ("subagent_type", text),
                    ("description", text),
                    ("prompt", text)
                ],
                &[("task_id", text), ("command", text)]
            )
            .prop_map(|f| ("task", f)),
            fields(&[("name", text)], &[]).prop_map(|f| ("skill", f)),
        ];
        let extra = prop::collection::btree_map("zz_[a-z]{1,4}", text(), 0..3);
        (tool, extra).prop_map(|((name, fields), extra)| {
            let mut args: Map<String, Value> = extra.into_iter().collect();
            args.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
            ToolCall::new(name, Value::Object(args))
        })
    }

    proptest! {
        #[test]
        fn v1_to_v2_and_back_is_the_identity(call in v1_call()) {
            let v2 = call.for_generation(Generation::V2);
            prop_assert_eq!(&v2.name, tool_name(&call.name, Generation::V2));
            let args = v2.arguments.as_object().expect("an object");
            prop_assert!(!args.contains_key("filePath") && !args.contains_key("subagent_type"));
            prop_assert_eq!(v2.for_generation(Generation::V1), call.clone());
            // Translating twice changes nothing more.
            prop_assert_eq!(v2.for_generation(Generation::V2), v2);
        }
    }
}
