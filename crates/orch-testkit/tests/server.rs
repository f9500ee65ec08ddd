//! The scripted model over HTTP: selection, sequences, errors, faults, records.

use std::time::Duration;

use futures::StreamExt;
use orch_testkit::{Exhausted, Fault, Outcome, Reply, Rule, Script, ScriptedModel};
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
