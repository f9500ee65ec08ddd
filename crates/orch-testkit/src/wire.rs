//! The OpenAI chat-completions wire format: streamed chunks and whole bodies.

use serde_json::{Value, json};

use crate::script::{HttpError, Reply, Usage};

/// The `created` timestamp written into every chunk (fixed, so replies are reproducible).
const CREATED: u64 = 1_795_315_000;

/// Text chunk size when a reply does not set `chunk_chars`.
const DEFAULT_CHUNK_CHARS: usize = 64;

/// The usage figures of `reply` for a prompt of `prompt_tokens`.
pub(crate) fn usage_for(reply: &Reply, prompt_tokens: u64) -> Usage {
    reply.usage.unwrap_or_else(|| {
        let completion_chars = reply.text.as_deref().map_or(0, str::len)
            + reply.reasoning.as_deref().map_or(0, str::len)
            + reply
                .tool_calls
                .iter()
                .map(|c| c.name.len() + c.arguments_string().len())
                .sum::<usize>();
        Usage {
            prompt_tokens: prompt_tokens.max(1),
            completion_tokens: (completion_chars as u64).div_ceil(4).max(1),
        }
    })
}

fn chunk(id: &str, model: &str, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    })
}

/// Splits `text` into pieces of at most `size` characters, on character boundaries.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

/// The `data:` payloads of a complete streamed reply, in order, ending with `[DONE]`.
///
/// `complete = false` leaves out the finish, usage and `[DONE]` events (a cut stream).
pub(crate) fn stream_events(
    id: &str,
    model: &str,
    reply: &Reply,
    usage: Usage,
    complete: bool,
) -> Vec<String> {
    let size = reply.chunk_chars.unwrap_or(DEFAULT_CHUNK_CHARS);
    let mut events = vec![chunk(
        id,
        model,
        json!({"role": "assistant", "content": ""}),
        None,
    )];
    if let Some(reasoning) = &reply.reasoning {
        for piece in pieces(reasoning, size) {
            events.push(chunk(id, model, json!({"reasoning_content": piece}), None));
        }
    }
    if let Some(text) = &reply.text {
        for piece in pieces(text, size) {
            events.push(chunk(id, model, json!({"content": piece}), None));
        }
    }
    for (index, call) in reply.tool_calls.iter().enumerate() {
        // Split the arguments in two, as real models do, so clients must join them.
        let args = call.arguments_string();
        let mid = args
            .char_indices()
            .map(|(i, _)| i)
            .nth(args.chars().count() / 2)
            .unwrap_or(args.len());
        let (head, tail) = args.split_at(mid);
        events.push(chunk(
            id,
            model,
            json!({"tool_calls": [{"index": index, "id": format!("call_{}", index + 1),
                "type": "function", "function": {"name": call.name, "arguments": head}}]}),
            None,
        ));
        if !tail.is_empty() {
            events.push(chunk(
                id,
                model,
                json!({"tool_calls": [{"index": index, "function": {"arguments": tail}}]}),
                None,
            ));
        }
    }
    let mut out: Vec<String> = events.iter().map(Value::to_string).collect();
    if complete {
        let finish = if reply.tool_calls.is_empty() {
            "stop"
        } else {
            "tool_calls"
        };
        out.push(chunk(id, model, json!({}), Some(finish)).to_string());
        out.push(usage_chunk(id, model, usage).to_string());
        out.push("[DONE]".to_owned());
    }
    out
}

fn usage_chunk(id: &str, model: &str, usage: Usage) -> Value {
    json!({
        "id": id, "object": "chat.completion.chunk", "created": CREATED, "model": model,
        "choices": [], "usage": usage_json(usage)
    })
}

fn usage_json(usage: Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens
    })
}

/// The first chunk of a stream (sent before a stall or an in-stream error).
pub(crate) fn opening_event(id: &str, model: &str) -> String {
    chunk(id, model, json!({"role": "assistant", "content": ""}), None).to_string()
}

/// An in-stream error event.
pub(crate) fn stream_error_event(message: &str) -> String {
    json!({"error": {"message": message, "type": "server_error"}}).to_string()
}

/// The non-streaming `chat.completion` body of `reply`.
pub(crate) fn completion_body(id: &str, model: &str, reply: &Reply, usage: Usage) -> Value {
    let mut message = json!({"role": "assistant", "content": reply.text});
    if !reply.tool_calls.is_empty() {
        message["tool_calls"] = reply
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                json!({"id": format!("call_{}", i + 1), "type": "function",
                       "function": {"name": call.name, "arguments": call.arguments_string()}})
            })
            .collect();
    }
    if let Some(reasoning) = &reply.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    let finish = if reply.tool_calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    json!({
        "id": id, "object": "chat.completion", "created": CREATED, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage_json(usage)
    })
}

/// The JSON body of an error answer.
pub(crate) fn error_body(error: &HttpError) -> Value {
    let kind = error.kind.clone().unwrap_or_else(|| {
        match error.status {
            429 => "rate_limit_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        }
        .to_owned()
    });
    json!({"error": {"message": error.message, "type": kind, "code": error.status}})
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::script::{Reply, ToolCall};

    fn parse(events: &[String]) -> Vec<Value> {
        events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect()
    }

    #[test]
    fn text_stream_joins_to_the_text_and_ends_with_stop_usage_and_done() {
        let reply = Reply::text("héllo wörld, this is long enough").chunk_chars(5);
        let usage = usage_for(&reply, 10);
        let events = stream_events("c1", "m", &reply, usage, true);
        assert_eq!(events.last().unwrap(), "[DONE]");
        let chunks = parse(&events);
        let text: String = chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/content")?.as_str())
            .collect();
        assert_eq!(text, "héllo wörld, this is long enough");
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 10);
        assert!(chunks.len() > 6, "text was split into pieces");
    }

    #[test]
    fn tool_call_arguments_are_split_but_rejoin_exactly() {
        let args = json!({"filePath": "a.txt", "content": "ünïcode\n"});
        let reply = Reply::tool_calls(vec![
            ToolCall::new("write", args.clone()),
            ToolCall::new("bash", json!({"command": "ls"})),
        ]);
        let events = stream_events("c2", "m", &reply, usage_for(&reply, 1), true);
        let chunks = parse(&events);
        let mut joined = [String::new(), String::new()];
        for c in &chunks {
            if let Some(calls) = c
                .pointer("/choices/0/delta/tool_calls")
                .and_then(Value::as_array)
            {
                for call in calls {
                    let i = call["index"].as_u64().unwrap() as usize;
                    joined[i].push_str(call["function"]["arguments"].as_str().unwrap());
                }
            }
        }
        assert_eq!(serde_json::from_str::<Value>(&joined[0]).unwrap(), args);
        assert_eq!(joined[1], r#"{"command":"ls"}"#);
        let finish = &chunks[chunks.len() - 2];
        assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn a_cut_stream_has_no_finish_reason_and_no_done() {
        let reply = Reply::text("partial");
        let events = stream_events("c3", "m", &reply, usage_for(&reply, 1), false);
        assert!(!events.iter().any(|e| e == "[DONE]"));
        assert!(
            parse(&events)
                .iter()
                .all(|c| c["choices"][0]["finish_reason"].is_null())
        );
    }

    #[test]
    fn completion_body_is_the_openai_shape() {
        let reply = Reply::tool_call("write", json!({"filePath": "x"})).with_text("ok");
        let body = completion_body("c4", "m", &reply, usage_for(&reply, 3));
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(body["choices"][0]["message"]["content"], "ok");
        assert_eq!(
            body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"filePath":"x"}"#
        );
        assert_eq!(
            body["usage"]["total_tokens"],
            3 + body["usage"]["completion_tokens"].as_u64().unwrap()
        );
    }

    #[test]
    fn error_type_follows_the_status() {
        let mk = |status| HttpError {
            status,
            message: "m".into(),
            kind: None,
            retry_after: None,
        };
        assert_eq!(error_body(&mk(429))["error"]["type"], "rate_limit_error");
        assert_eq!(
            error_body(&mk(400))["error"]["type"],
            "invalid_request_error"
        );
        assert_eq!(error_body(&mk(503))["error"]["type"], "server_error");
    }
}
