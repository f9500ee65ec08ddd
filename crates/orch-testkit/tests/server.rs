//! The scripted model over HTTP: selection, sequences, errors, faults, records.

use std::time::Duration;

use futures::StreamExt;
use orch_testkit::{
    Exhausted, Fault, Generation, Outcome, Reply, RequestKind, Rule, Script, ScriptedModel,
    ToolCall,
};
use serde_json::{Value, json};

fn body(user: &str, stream: bool) -> Value {
    json!({"model": "fake-model", "stream": stream,
           "messages": [{"role": "system", "content": "sys [orch-agent:worker]"},
                        {"role": "user", "content": user}]})
}

async fn post(model: &ScriptedModel, body: &Value, session: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/chat/completions", model.base_url()))
        .json(body);
    if let Some(session) = session {
        request = request.header("x-session-id", session);
    }
    request.send().await.unwrap()
}

/// The concatenated content deltas, and whether a finish_reason and `[DONE]` came.
async fn read_stream(response: reqwest::Response) -> (String, Option<String>, bool) {
    let text = response.text().await.unwrap();
    let mut content = String::new();
    let mut finish = None;
    let mut done = false;
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(line).unwrap();
        if let Some(c) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            content.push_str(c);
        }
        if let Some(f) = chunk
            .pointer("/choices/0/finish_reason")
            .and_then(Value::as_str)
        {
            finish = Some(f.to_owned());
        }
    }
    (content, finish, done)
}

#[tokio::test]
async fn first_matching_rule_answers_and_sequences_advance() {
    let script = Script::new()
        .rule(
            Rule::new("other agent")
                .agent("planner")
                .reply(Reply::text("wrong")),
        )
        .rule(
            Rule::new("seq")
                .agent("worker")
                .reply(Reply::text("A"))
                .reply(Reply::text("B")),
        );
    let model = ScriptedModel::start(script).unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            read_stream(post(&model, &body("go", true), None).await)
                .await
                .0,
        );
    }
    assert_eq!(got, ["A", "B", "B"]); // repeat_last by default
    let records = model.requests();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.rule.as_deref() == Some("seq")));
    assert_eq!(
        records
            .iter()
            .map(|r| r.reply_index.unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 1]
    );
}

#[tokio::test]
async fn exhausted_skip_falls_through_and_cycle_wraps() {
    let script = Script::new()
        .rule(
            Rule::new("once")
                .reply(Reply::text("once"))
                .exhausted(Exhausted::Skip),
        )
        .rule(
            Rule::new("cycle")
                .reply(Reply::text("x"))
                .reply(Reply::text("y"))
                .exhausted(Exhausted::Cycle),
        );
    let model = ScriptedModel::start(script).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            read_stream(post(&model, &body("go", true), None).await)
                .await
                .0,
        );
    }
    assert_eq!(got, ["once", "x", "y", "x"]);
}

#[tokio::test]
async fn per_session_rules_count_each_session_separately() {
    let script = Script::new().rule(
        Rule::new("s")
            .per_session()
            .reply(Reply::text("1"))
            .reply(Reply::text("2")),
    );
    let model = ScriptedModel::start(script).unwrap();
    let mut got = Vec::new();
    for session in ["ses_a", "ses_b", "ses_a", "ses_b"] {
        got.push(
            read_stream(post(&model, &body("go", true), Some(session)).await)
                .await
                .0,
        );
    }
    assert_eq!(got, ["1", "1", "2", "2"]);
    assert_eq!(model.requests_for_session("ses_a").len(), 2);
}

#[tokio::test]
async fn unmatched_request_is_a_400_that_names_it() {
    let model = ScriptedModel::start(Script::new()).unwrap();
    let response = post(&model, &body("mystery prompt", true), Some("ses_x")).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("no rule matched request #0"), "{message}");
    assert!(
        message.contains("mystery prompt") && message.contains("ses_x"),
        "{message}"
    );
    assert_eq!(model.requests()[0].outcome, Outcome::NoMatch);

    let garbage = reqwest::Client::new()
        .post(format!("{}/chat/completions", model.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    assert!(matches!(
        model.requests()[1].outcome,
        Outcome::BadRequest { .. }
    ));
}

#[tokio::test]
async fn http_errors_carry_status_body_and_retry_after() {
    let script = Script::new().rule(
        Rule::new("limited")
            .reply(
                Reply::error(429, "Rate limit exceeded")
                    .retry_after(2)
                    .times(2),
            )
            .reply(Reply::text("ok")),
    );
    let model = ScriptedModel::start(script).unwrap();
    for _ in 0..2 {
        let response = post(&model, &body("go", true), None).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "2");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["message"], "Rate limit exceeded");
        assert_eq!(error["error"]["type"], "rate_limit_error");
    }
    let (text, finish, done) = read_stream(post(&model, &body("go", true), None).await).await;
    assert_eq!(
        (text.as_str(), finish.as_deref(), done),
        ("ok", Some("stop"), true)
    );
}

#[tokio::test]
async fn non_streaming_requests_get_a_whole_completion() {
    let script = Script::new().rule(
        Rule::new("tool").reply(Reply::tool_call("bash", json!({"command": "ls"})).usage(9, 4)),
    );
    let model = ScriptedModel::start(script).unwrap();
    let response: Value = post(&model, &body("go", false), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(response["object"], "chat.completion");
    assert_eq!(response["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        response["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        r#"{"command":"ls"}"#
    );
    assert_eq!(response["usage"]["total_tokens"], 13);
}

#[tokio::test]
async fn a_cut_stream_ends_without_finish_reason() {
    let script = Script::new()
        .rule(Rule::new("cut").reply(Reply::fault(Fault::Cut).with_text("half an ans")));
    let model = ScriptedModel::start(script).unwrap();
    let (text, finish, done) = read_stream(post(&model, &body("go", true), None).await).await;
    assert_eq!(text, "half an ans");
    assert_eq!(finish, None);
    assert!(!done);
}

#[tokio::test]
async fn a_stream_error_sends_an_error_event() {
    let script = Script::new().rule(
        Rule::new("e").reply(Reply::fault(Fault::StreamError).with_text("upstream overloaded")),
    );
    let model = ScriptedModel::start(script).unwrap();
    let text = post(&model, &body("go", true), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"{"error":{"message":"upstream overloaded","type":"server_error"}}"#),
        "{text}"
    );
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn a_stalled_stream_sends_one_chunk_then_nothing_until_stopped() {
    let script = Script::new().rule(Rule::new("stall").reply(Reply::fault(Fault::Stall)));
    let model = ScriptedModel::start(script).unwrap();
    let response = post(&model, &body("go", true), None).await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().starts_with("data: "));
    let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(next.is_err(), "the stream should stall, got {next:?}");
    // Stopping the server cuts the stalled stream.
    drop(model);
    let after = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(matches!(after, None | Some(Err(_))), "{after:?}");
}

#[tokio::test]
async fn delays_and_chunk_delays_are_observed() {
    let script = Script::new().rule(
        Rule::new("slow").reply(
            Reply::text("abcdef")
                .chunk_chars(2)
                .delay(Duration::from_millis(100))
                .chunk_delay(Duration::from_millis(50)),
        ),
    );
    let model = ScriptedModel::start(script).unwrap();
    let started = std::time::Instant::now();
    let (text, _, _) = read_stream(post(&model, &body("go", true), None).await).await;
    assert_eq!(text, "abcdef");
    // 100 ms delay + at least 5 gaps of 50 ms between the 7 events before [DONE].
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn rules_can_be_added_over_http_and_models_are_listed() {
    let model = ScriptedModel::start(Script::new()).unwrap();
    let client = reqwest::Client::new();
    let added = client
        .post(format!("http://{}/_scripted/rules", model.addr()))
        .json(&json!({"name": "late", "replies": [{"text": "late answer"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 204);
    let invalid = client
        .post(format!("http://{}/_scripted/rules", model.addr()))
        .json(&json!({"name": "bad"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let (text, _, _) = read_stream(post(&model, &body("go", true), None).await).await;
    assert_eq!(text, "late answer");
    let models: Value = client
        .get(format!("{}/models", model.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "fake-model");
    let records: Value = client
        .get(format!("http://{}/_scripted/requests", model.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(records.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn wait_until_async_sees_new_requests() {
    let model = std::sync::Arc::new(
        ScriptedModel::start(Script::new().rule(Rule::new("a").reply(Reply::text("a")))).unwrap(),
    );
    assert!(
        !model
            .wait_until_async(Duration::from_millis(50), |r| !r.is_empty())
            .await
    );
    let poster = {
        let model = std::sync::Arc::clone(&model);
        tokio::spawn(async move { post(&model, &body("go", true), None).await.text().await })
    };
    assert!(
        model
            .wait_until_async(Duration::from_secs(5), |r| r.len() == 1)
            .await
    );
    poster.await.unwrap().unwrap();
    let m = std::sync::Arc::clone(&model);
    assert!(
        tokio::task::spawn_blocking(move || m.wait_until(Duration::from_secs(1), |r| r.len() == 1))
            .await
            .unwrap()
    );
}

/// The tools a request offers, as each generation names them (2.1.2 / 1.18.33 lists, cut).
fn offered(generation: Generation) -> Value {
    let (command, path) = match generation {
        Generation::V1 => ("bash", "filePath"),
        Generation::V2 => ("shell", "path"),
    };
    json!([
        {"type": "function", "function": {"name": "write",
            "parameters": {"type": "object", "properties": {path: {"type": "string"}, "content": {"type": "string"}}}}},
        {"type": "function", "function": {"name": command,
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}
    ])
}

/// An agent request of `generation` (its tools offered), whose last message is the result of
/// a call to `last_tool` when given.
fn request_of(generation: Generation, user: &str, last_tool: Option<(&str, &str)>) -> Value {
    let mut messages = vec![
        json!({"role": "system", "content": "sys [orch-agent:worker]"}),
        json!({"role": "user", "content": user}),
    ];
    if let Some((tool, output)) = last_tool {
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": tool, "arguments": "{}"}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": "call_1", "content": output}));
    }
    json!({"model": "fake-model", "stream": true, "tools": offered(generation), "messages": messages})
}

/// The tool calls of a streamed answer: `(name, arguments)`, arguments joined and parsed.
async fn streamed_calls(response: reqwest::Response) -> Vec<(String, Value)> {
    let text = response.text().await.unwrap();
    let mut calls: Vec<(String, String)> = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(line).unwrap();
        for call in chunk
            .pointer("/choices/0/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call["index"].as_u64().unwrap() as usize;
            if calls.len() <= index {
                calls.resize(index + 1, Default::default());
            }
            if let Some(name) = call.pointer("/function/name").and_then(Value::as_str) {
                calls[index].0 = name.to_owned();
            }
            if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                calls[index].1.push_str(args);
            }
        }
    }
    calls
        .into_iter()
        .map(|(name, args)| (name, serde_json::from_str(&args).unwrap()))
        .collect()
}

/// A V1-shaped script: write a file and run a command, then judge by the command's output.
fn v1_shaped_script() -> Script {
    Script::new()
        .rule(
            Rule::new("work")
                .tool_result(false)
                .reply(Reply::tool_calls(vec![
                    ToolCall::new("write", json!({"filePath": "a.txt", "content": "a\n"})),
                    ToolCall::new(
                        "bash",
                        json!({"command": "cat a.txt; echo EXIT=$?", "description": "check"}),
                    ),
                ])),
        )
        .rule(
            Rule::new("pass")
                .last_tool("bash")
                .tool_output("EXIT=0")
                .unwrap()
                .reply(Reply::text("PASS")),
        )
}

#[tokio::test]
async fn each_request_is_answered_in_the_shape_of_the_tools_it_offers() {
    let model = ScriptedModel::start(v1_shaped_script()).unwrap();
    assert_eq!(model.generation(), None);
    let v2 =
        streamed_calls(post(&model, &request_of(Generation::V2, "go", None), None).await).await;
    assert_eq!(
        v2,
        [
            (
                "write".to_owned(),
                json!({"path": "a.txt", "content": "a\n"})
            ),
            (
                "shell".to_owned(),
                json!({"command": "cat a.txt; echo EXIT=$?", "description": "check"})
            ),
        ]
    );
    let v1 =
        streamed_calls(post(&model, &request_of(Generation::V1, "go", None), None).await).await;
    assert_eq!(
        v1[0],
        (
            "write".to_owned(),
            json!({"filePath": "a.txt", "content": "a\n"})
        )
    );
    assert_eq!(v1[1].0, "bash");
    // No tools offered: sent as written.
    let plain = streamed_calls(post(&model, &body("go", true), None).await).await;
    assert_eq!(plain[1].0, "bash");
    let records = model.requests();
    assert_eq!(
        records.iter().map(|r| r.generation).collect::<Vec<_>>(),
        [Some(Generation::V2), Some(Generation::V1), None]
    );
    assert_eq!(
        records[0].outcome,
        Outcome::ToolCalls {
            tools: vec!["write".into(), "shell".into()]
        }
    );
}

#[tokio::test]
async fn a_fixed_generation_wins_over_the_offered_tools() {
    let model = ScriptedModel::builder(v1_shaped_script())
        .generation(Generation::V2)
        .start()
        .unwrap();
    assert_eq!(model.generation(), Some(Generation::V2));
    let calls = streamed_calls(post(&model, &body("go", true), None).await).await;
    assert_eq!(calls[0].1, json!({"path": "a.txt", "content": "a\n"}));
    assert_eq!(calls[1].0, "shell");
    assert_eq!(model.requests()[0].generation, Some(Generation::V2));
}

#[tokio::test]
async fn last_tool_bash_matches_a_shell_result_and_vice_versa() {
    let script = v1_shaped_script().rule(
        Rule::new("subagent done")
            .last_tool("subagent")
            .reply(Reply::text("child done")),
    );
    let model = ScriptedModel::start(script).unwrap();
    let shell = request_of(Generation::V2, "go", Some(("shell", "a\nEXIT=0\n")));
    assert_eq!(
        read_stream(post(&model, &shell, None).await).await.0,
        "PASS"
    );
    let task = request_of(
        Generation::V1,
        "go",
        Some(("task", "<task_result>ok</task_result>")),
    );
    assert_eq!(
        read_stream(post(&model, &task, None).await).await.0,
        "child done"
    );
    // A failed command (V2 appends its exit code) does not pass.
    let failed = request_of(
        Generation::V2,
        "go",
        Some(("shell", "boom\nEXIT=1\n\nExited with code 1")),
    );
    let response = post(&model, &failed, None).await;
    assert_eq!(response.status(), 400, "no rule for a failed run");
}

#[tokio::test]
async fn neutral_helpers_and_as_written_calls() {
    let script = Script::new()
        .rule(
            Rule::new("write")
                .user("write")
                .unwrap()
                .reply(Reply::write_file("b.txt", "b")),
        )
        .rule(
            Rule::new("run")
                .user("run")
                .unwrap()
                .reply(Reply::run_command("ls -a")),
        )
        .rule(
            Rule::new("raw")
                .user("raw")
                .unwrap()
                .reply(Reply::tool_calls(vec![
                    ToolCall::new("bash", json!({"command": "ls"})).as_written(),
                ])),
        );
    let model = ScriptedModel::start(script).unwrap();
    let ask = |user: &str, generation| request_of(generation, user, None);
    let v2_write = streamed_calls(post(&model, &ask("write", Generation::V2), None).await).await;
    assert_eq!(
        v2_write,
        [("write".to_owned(), json!({"path": "b.txt", "content": "b"}))]
    );
    let v1_write = streamed_calls(post(&model, &ask("write", Generation::V1), None).await).await;
    assert_eq!(
        v1_write,
        [(
            "write".to_owned(),
            json!({"filePath": "b.txt", "content": "b"})
        )]
    );
    let v2_run = streamed_calls(post(&model, &ask("run", Generation::V2), None).await).await;
    assert_eq!(v2_run, [("shell".to_owned(), json!({"command": "ls -a"}))]);
    let v1_run = streamed_calls(post(&model, &ask("run", Generation::V1), None).await).await;
    assert_eq!(v1_run, [("bash".to_owned(), json!({"command": "ls -a"}))]);
    let raw = streamed_calls(post(&model, &ask("raw", Generation::V2), None).await).await;
    assert_eq!(raw[0].0, "bash", "as written, even to V2");
}

#[tokio::test]
async fn a_v2_compaction_is_told_apart_and_its_summary_gets_a_template_heading() {
    let script = Script::new()
        .rule(
            Rule::new("compaction")
                .kind(RequestKind::Compaction)
                .reply(Reply::text("Summary of the earlier work.")),
        )
        .rule(Rule::new("agent").reply(Reply::text("agent step")));
    let model = ScriptedModel::start(script).unwrap();
    // OpenCode 2 asks under the agent's own system prompt, in a user message.
    let ask = request_of(
        Generation::V2,
        "You MUST summarize the conversation above into a structured summary that will be given to another agent",
        None,
    );
    let (text, ..) = read_stream(post(&model, &ask, None).await).await;
    assert_eq!(text, "## Objective\nSummary of the earlier work.");
    let retry = request_of(
        Generation::V2,
        "The previous response did not fill in the required summary template. Do not call tools.",
        None,
    );
    assert_eq!(
        read_stream(post(&model, &retry, None).await).await.0,
        "## Objective\nSummary of the earlier work."
    );
    // OpenCode 1 compacts under a system prompt of its own and takes the text as it is.
    let v1 = json!({"model": "fake-model", "stream": true, "tools": offered(Generation::V1), "messages": [
        {"role": "system", "content": "You are a helpful AI assistant tasked with summarizing conversations. You are a context summarization agent."},
        {"role": "user", "content": "Provide a detailed prompt for continuing our conversation above."}]});
    assert_eq!(
        read_stream(post(&model, &v1, None).await).await.0,
        "Summary of the earlier work."
    );
    let ordinary = request_of(Generation::V2, "hello", None);
    assert_eq!(
        read_stream(post(&model, &ordinary, None).await).await.0,
        "agent step"
    );
    let kinds: Vec<_> = model
        .requests()
        .iter()
        .map(|r| r.view.as_ref().unwrap().kind)
        .collect();
    assert_eq!(
        kinds,
        [
            RequestKind::Compaction,
            RequestKind::Compaction,
            RequestKind::Compaction,
            RequestKind::Agent
        ]
    );
}
