//! Benchmark 3: event throughput of `orch-opencode` against the official `@opencode-ai/sdk`
//! consumer in Node, on the same bytes served by the same local server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_opencode::{Client, Delivery, EventKind, EventRouter, KindSet, RawEvent, RouterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::Row;

/// A recorded stream: the SSE body and the sessions in it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `data: <json>\n\n` frames, ending with a `bench.end` event.
    pub body: Vec<u8>,
    /// The distinct session ids.
    pub sessions: Vec<String>,
    /// Events in the body (the end marker and `server.connected` excluded).
    pub events: usize,
    /// Events that name a session (what a router delivers).
    pub routable: usize,
    /// Events without a session (heartbeats, bootstrap noise, files, toasts): no session
    /// subscriber gets them; the "every event typed" run decodes them through one catch-all
    /// subscriber filtered by [`sessionless_kinds`].
    pub sessionless: usize,
}

/// The kinds that never carry a session (OpenCode's catalogue), unknown kinds included.
pub fn sessionless_kinds() -> KindSet {
    KindSet::of(&[
        EventKind::ServerConnected,
        EventKind::ServerHeartbeat,
        EventKind::FileEdited,
        EventKind::FileWatcherUpdated,
        EventKind::TuiToastShow,
        EventKind::Other,
    ])
}

/// The `event` of a sample line, byte for byte as OpenCode sent it (key order included;
/// re-serialising through `serde_json::Value` would sort the keys, which OpenCode never does).
fn event_text(line: &str) -> Result<&str, String> {
    const KEY: &str = ",\"event\":";
    let at = line.find(KEY).ok_or("sample line without an event")?;
    line[at + KEY.len()..]
        .strip_suffix('}')
        .ok_or_else(|| "sample line does not end with the event".to_owned())
}

/// The captured events of OpenCode 1.18.33 (`orch-opencode`'s test data).
pub fn sample_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../orch-opencode/tests/data/events-sample.jsonl")
}

/// Builds the stream: `copies` copies of every captured event, session ids rewritten (same
/// length) so that the copies are distinct sessions, interleaved event by event.
pub fn recorded(samples: &str, copies: usize) -> Result<Recorded, String> {
    let mut events: Vec<String> = Vec::new();
    for line in samples.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let event = v.get("event").ok_or("sample line without an event")?;
        if event.get("type").and_then(|t| t.as_str()) == Some("server.connected") {
            continue;
        }
        let text = event_text(line)?;
        let same: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if &same != event {
            return Err(format!("cannot cut the event out of {line}"));
        }
        events.push(text.to_owned());
    }
    let mut originals: Vec<String> = Vec::new();
    for e in &events {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("ses_") {
            let id: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !originals.contains(&id) {
                originals.push(id.clone());
            }
            rest = &rest[at + id.len()..];
        }
    }
    let rename = |copy: usize, i: usize, orig: &str| {
        let mut id = format!("ses_c{copy:03}s{i:03}");
        while id.len() < orig.len() {
            id.push('x');
        }
        id
    };
    let mut sessions = Vec::new();
    for copy in 0..copies {
        for (i, orig) in originals.iter().enumerate() {
            sessions.push(rename(copy, i, orig));
        }
    }
    let mut body = Vec::new();
    body.extend_from_slice(b"data: {\"type\":\"server.connected\",\"properties\":{}}\n\n");
    let (mut n, mut routable, mut sessionless) = (0, 0, 0);
    for e in &events {
        for copy in 0..copies {
            let mut text = e.clone();
            for (i, orig) in originals.iter().enumerate() {
                text = text.replace(orig.as_str(), &rename(copy, i, orig));
            }
            let raw = RawEvent::parse(text.clone()).map_err(|e| e.to_string())?;
            let in_sessionless = sessionless_kinds().contains(raw.kind());
            match raw.session_id() {
                Some(_) if !in_sessionless => routable += 1,
                None if in_sessionless => sessionless += 1,
                _ => {
                    return Err(format!(
                        "{}: session and kind filter disagree",
                        raw.kind_str()
                    ));
                }
            }
            body.extend_from_slice(b"data: ");
            body.extend_from_slice(text.as_bytes());
            body.extend_from_slice(b"\n\n");
            n += 1;
        }
    }
    body.extend_from_slice(b"data: {\"type\":\"bench.end\",\"properties\":{}}\n\n");
    Ok(Recorded {
        body,
        sessions,
        events: n,
        routable,
        sessionless,
    })
}

/// Serves `body` as the `/event` stream of every connection (then holds it open for a minute),
/// and `{}`/`true` to anything else. Returns the base URL.
pub async fn serve(body: Arc<Vec<u8>>) -> Result<String, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                if path.starts_with("/event") || path.starts_with("/global/event") {
                    let header = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
                    if sock.write_all(header.as_bytes()).await.is_err() {
                        return;
                    }
                    for chunk in body.chunks(64 * 1024) {
                        if sock.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                    let _ = sock.flush().await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                } else {
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4\r\nconnection: close\r\n\r\ntrue";
                    let _ = sock.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    Ok(format!("http://{addr}"))
}

/// Ours: one `EventRouter` on the stream, one subscription per session, each consumer
/// decoding the events it gets into the typed `Event`. Returns the time until every expected
/// event was decoded by its consumer.
///
/// `all`: every event of the stream is JSON-decoded, like the SDK's `JSON.parse`: the
/// session subscribers decode each of their events into the typed `Event`, and one catch-all
/// subscriber filtered by [`sessionless_kinds`] decodes the events without a session (into
/// `Event`, or `serde_json::Value` properties for unknown kinds). Otherwise (what
/// `OpencodeBackend` does) only the kinds a turn waiter uses (`KindSet::turn()`) are decoded;
/// the other events are routed on their envelope alone (`type` and `properties.sessionID`
/// read by position, the properties not parsed), and events without a session are not
/// looked at beyond that envelope.
pub async fn ours(url: &str, rec: &Recorded, all: bool) -> Result<Duration, String> {
    let delivered = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let target = (rec.routable + if all { rec.sessionless } else { 0 }) as u64;
    let mut config = RouterConfig::default();
    config.buffer = 1 << 16;
    let t = Instant::now();
    let router = EventRouter::spawn(
        Client::builder(url).build().map_err(|e| e.to_string())?,
        config,
    );
    let mut consumers = tokio::task::JoinSet::new();
    if all {
        let mut sub = router.subscribe_all_filtered(sessionless_kinds());
        let delivered = Arc::clone(&delivered);
        let all_done = Arc::clone(&all_done);
        consumers.spawn(async move {
            while let Some(d) = sub.recv().await {
                if let Delivery::Event(raw) = d
                    && raw.decode().is_ok()
                    && !matches!(raw.kind_str(), "server.connected" | "bench.end")
                    && delivered.fetch_add(1, Ordering::Relaxed) + 1 == target
                {
                    all_done.notify_one();
                }
            }
        });
    }
    for s in &rec.sessions {
        let mut sub = router.subscribe_session(s);
        let delivered = Arc::clone(&delivered);
        let all_done = Arc::clone(&all_done);
        let turn = KindSet::turn();
        consumers.spawn(async move {
            while let Some(d) = sub.recv().await {
                if let Delivery::Event(raw) = d
                    && (!(all || turn.contains(raw.kind())) || raw.decode().is_ok())
                    && delivered.fetch_add(1, Ordering::Relaxed) + 1 == target
                {
                    all_done.notify_one();
                }
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(60), all_done.notified())
        .await
        .is_err()
    {
        return Err(format!(
            "only {} of {} events delivered (router: {:?})",
            delivered.load(Ordering::Relaxed),
            rec.routable,
            router.stats()
        ));
    }
    let elapsed = t.elapsed();
    drop(router);
    consumers.abort_all();
    Ok(elapsed)
}

/// [`ours`] on its own thread with a single-threaded runtime (the consumer side of the
/// comparison runs on one thread, like Node's event loop; the server keeps its own threads).
pub fn ours_single_thread(url: &str, rec: &Recorded, all: bool) -> Result<Duration, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(ours(url, rec, all))
        })
        .join()
        .map_err(|_| "the consumer thread panicked".to_owned())?
    })
}

/// The Node consumer's answer.
#[derive(Debug, serde::Deserialize)]
struct NodeResult {
    events: usize,
    seconds: f64,
}

/// The baseline: `node node/consume.mjs URL` (the SDK must be installed in `node/`).
pub async fn node(url: &str) -> Result<(usize, f64), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node");
    if !dir.join("node_modules/@opencode-ai/sdk").exists() {
        return Err("the SDK is not installed: run crates/orch-bench/run.sh (npm ci)".into());
    }
    let out = tokio::process::Command::new("node")
        .arg("consume.mjs")
        .arg(url)
        .current_dir(&dir)
        .output()
        .await
        .map_err(|e| format!("node: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "node failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let r: NodeResult = serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))?;
    Ok((r.events, r.seconds))
}

/// Benchmark 3.
pub async fn bench3(copies: usize) -> Result<Vec<Row>, String> {
    let samples = std::fs::read_to_string(sample_path()).map_err(|e| e.to_string())?;
    let rec = recorded(&samples, copies)?;
    let url = serve(Arc::new(rec.body.clone())).await?;
    // Warm-up, then the measured runs (best of three each, alternating).
    let _ = ours_single_thread(&url, &rec, true)?;
    let (mut best_all, mut best_turn) = (f64::MAX, f64::MAX);
    let mut best_node: Option<f64> = None;
    let mut node_error = None;
    for _ in 0..3 {
        best_all = best_all.min(ours_single_thread(&url, &rec, true)?.as_secs_f64());
        best_turn = best_turn.min(ours_single_thread(&url, &rec, false)?.as_secs_f64());
        match node(&url).await {
            Ok((n, s)) if n == rec.events => {
                best_node = Some(best_node.map_or(s, |b: f64| b.min(s)));
            }
            Ok((n, _)) => node_error = Some(format!("node saw {n} of {} events", rec.events)),
            Err(e) => node_error = Some(e),
        }
    }
    let mb = rec.body.len() as f64 / 1e6;
    let node_rate = best_node.map(|s| rec.events as f64 / s);
    let mut rows = Vec::new();
    for (label, best) in [
        (
            "every event JSON-decoded (typed `Event`; unknown kinds to `Value`)",
            best_all,
        ),
        (
            "typed turn kinds only (as the backend; others routed on `type`/`sessionID`, properties not parsed)",
            best_turn,
        ),
    ] {
        let rate = rec.events as f64 / best;
        rows.push(
            Row::info(
                3,
                format!(
                    "events/s over HTTP, {} events ({mb:.0} MB, {} sessions), route + {label}",
                    rec.events,
                    rec.sessions.len()
                ),
                format!("{rate:.0}"),
            )
            .target("≥ 500,000 events/s", rate >= 500_000.0),
        );
        match node_rate {
            Some(node_rate) => {
                let ratio = rate / node_rate;
                rows.push(
                    Row::info(
                        3,
                        "same, vs @opencode-ai/sdk 1.18.33 `event.subscribe()` in Node",
                        format!("{rate:.0}"),
                    )
                    .baseline(format!("{node_rate:.0}"), ratio)
                    .target("≥ 5 ×", ratio >= 5.0),
                );
            }
            None => rows.push(Row::info(
                3,
                "vs @opencode-ai/sdk (Node)",
                format!("not run: {}", node_error.clone().unwrap_or_default()),
            )),
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_stream_has_distinct_sessions_per_copy() {
        let samples = std::fs::read_to_string(sample_path()).expect("sample file");
        let one = recorded(&samples, 1).expect("builds");
        let three = recorded(&samples, 3).expect("builds");
        assert_eq!(three.events, one.events * 3);
        assert_eq!(three.routable, one.routable * 3);
        assert_eq!(one.routable + one.sessionless, one.events);
        assert_eq!(three.sessions.len(), one.sessions.len() * 3);
        assert!(one.routable > one.events / 2);
        let text = String::from_utf8(three.body).expect("utf-8");
        assert!(text.ends_with("data: {\"type\":\"bench.end\",\"properties\":{}}\n\n"));
        // The events keep OpenCode's own key order (`id`, `type`, `properties`).
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), three.events + 2);
        for line in &lines[1..lines.len() - 1] {
            let json = line.strip_prefix("data: {\"id\":\"evt_").expect(line);
            let ty = json.find("\",\"type\":\"").expect(line);
            assert!(json.find("\",\"properties\":{").expect(line) > ty, "{line}");
        }
    }
}
