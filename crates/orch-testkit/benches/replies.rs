//! Scripted replies per second: the scripted model serving streamed chat-completion requests
//! over loopback, beside a baseline that serves the same bytes.
//!
//! - `scripted/text`: a rule matched on the user message answers with text.
//! - `scripted/tool_call_v2`: a V1-shaped `write` + `bash` reply, translated for the
//!   OpenCode 2 tools the request offers (`write {path}`, `shell`).
//! - `axum_same_bytes/*`: the baseline, a minimal axum handler on a thread and runtime of its
//!   own (as the scripted model has) that reads the request body and answers with the bytes
//!   the scripted model sent for the same request, precomputed: what is left is HTTP and
//!   loopback, so the difference is the scripted model's own work (parsing the request,
//!   matching the rules, recording, translating, encoding the stream).
//!
//! One client, one keep-alive connection, one request at a time: replies per second is
//! 1 / latency. The request is a 3 KB OpenCode-2-like body (system prompt, user message,
//! four tool schemas).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use axum::serve::ListenerExt;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orch_testkit::{Reply, Rule, Script, ScriptedModel, ToolCall};
use serde_json::{Value, json};

/// A request as OpenCode 2 sends it, cut to four tools.
fn request(user: &str) -> Value {
    let string = json!({"type": "string"});
    let tool = |name: &str, properties: Value| {
        json!({"type": "function", "function": {"name": name, "description": format!("The {name} tool."),
               "parameters": {"type": "object", "additionalProperties": false, "properties": properties}}})
    };
    json!({
        "model": "fake-model",
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_completion_tokens": 32000,
        "messages": [
            {"role": "system", "content": format!(
                "[orch-agent:worker] You are the worker.\n{}",
                "Follow the plan; write only your item's files. ".repeat(40))},
            {"role": "user", "content": user}
        ],
        "tools": [
            tool("write", json!({"path": string, "content": string})),
            tool("edit", json!({"path": string, "oldString": string, "newString": string})),
            tool("read", json!({"path": string, "offset": {"type": "integer"}})),
            tool("shell", json!({"command": string, "timeout": {"type": "integer"}, "workdir": string})),
        ]
    })
}

fn script() -> Script {
    Script::new()
        .rule(
            Rule::new("text")
                .agent("worker")
                .user("^Say hello")
                .expect("regex")
                .reply(Reply::text(
                    "Hello! I read the plan and the item is done. Nothing else to change.",
                )),
        )
        .rule(
            Rule::new("tools")
                .agent("worker")
                .user("^Write it")
                .expect("regex")
                .reply(
                    Reply::tool_calls(vec![
                        ToolCall::new(
                            "write",
                            json!({"filePath": "calc.py", "content": "def add(a, b):\n    return a + b\n"}),
                        ),
                        ToolCall::new(
                            "bash",
                            json!({"command": "python3 -c 'import calc' 2>&1; echo EXIT=$?"}),
                        ),
                    ])
                    .with_text("Writing the module."),
                ),
        )
}

/// The baseline: answers every POST with `body`, as an event stream.
struct SameBytes {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SameBytes {
    fn start(body: Bytes) -> SameBytes {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().route(
            "/v1/chat/completions",
            post(move |request: Bytes| {
                let body = body.clone();
                async move {
                    drop(request);
                    ([(header::CONTENT_TYPE, "text/event-stream")], body)
                }
            }),
        );
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .expect("listener")
                    .tap_io(|tcp| {
                        let _ = tcp.set_nodelay(true);
                    });
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        SameBytes {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for SameBytes {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Client {
    fn new() -> Client {
        Client {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client"),
        }
    }

    /// One request, the whole streamed answer read.
    fn post(&self, url: &str, body: &Bytes) -> Bytes {
        self.runtime.block_on(async {
            let response = self
                .http
                .post(url)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await
                .expect("send");
            assert!(response.status().is_success(), "{}", response.status());
            response.bytes().await.expect("body")
        })
    }
}

fn replies(c: &mut Criterion) {
    let model = ScriptedModel::start(script()).expect("scripted model");
    let scripted_url = format!("{}/chat/completions", model.base_url());
    let client = Client::new();
    let cases = [
        ("text", Bytes::from(request("Say hello").to_string())),
        ("tool_call_v2", Bytes::from(request("Write it").to_string())),
    ];
    let mut group = c.benchmark_group("scripted_replies");
    group.throughput(Throughput::Elements(1));
    for (name, body) in &cases {
        // The bytes the scripted model answers with, for the baseline to send.
        let answer = client.post(&scripted_url, body);
        if *name == "tool_call_v2" {
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.contains("\"name\":\"shell\""),
                "not translated: {text}"
            );
        }
        let baseline = SameBytes::start(answer.clone());
        let baseline_url = format!("http://{}/v1/chat/completions", baseline.addr);
        assert_eq!(client.post(&baseline_url, body), answer);

        group.bench_function(format!("scripted/{name}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    client.post(&scripted_url, body);
                }
                let took = start.elapsed();
                // Records are kept for assertions; drop them outside the timed part.
                drop(model.take_requests());
                took
            });
        });
        group.bench_function(format!("axum_same_bytes/{name}"), |b| {
            b.iter(|| client.post(&baseline_url, body));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = replies
}
criterion_main!(benches);
