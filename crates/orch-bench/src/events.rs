//! Benchmark 3: event throughput of `orch-opencode` against the official `@opencode-ai/sdk`
//! consumer in Node, on the same bytes served over the same loopback in the same run.
//!
//! **The stream** ([`replayed`]): 50 concurrent sessions, each replaying the captured OpenCode
//! 1.18.33 stream (`orch-opencode`'s test data) in its recorded order, merged in a seeded
//! random order until 200,000 events, so the kind and the size change from one event to the
//! next as on a live server. [`synthetic`] is the stream the first version of this benchmark
//! used (each captured event copied 200 times in a row with 2,200 session ids): runs of one
//! shape that keep the branch predictors and the caches warm.
//!
//! **The setup** (`isolated`): the bytes are served by a separate process
//! (`e2e --serve-sse`, [`serve_child`]) pinned to CPU 0; each consumer is its own process
//! pinned to CPU 1 (`taskset`), started cold, measured from opening the stream to the last
//! event consumed, in wall-clock time and in CPU time of the consumer process over the same
//! interval (all its threads; on a machine shared with other work the CPU time is the
//! steadier figure). The first version's setup ([`serve`], [`ours_single_thread`]): the
//! server on the multi-threaded runtime of the measuring process, our consumer on a thread
//! of it (either core), one warm-up run, best of three.
//!
//! **The work**, on both sides: every event of the stream is parsed; ours routes it to its
//! session's subscriber (events without a session to one catch-all subscriber) and decodes it
//! into its typed `Event` there ([`RawEvent::decode`]; unknown kinds to a `serde_json::Value`).
//! Node: `client.event.subscribe()` (the SDK's SSE reader, `JSON.parse` of each event) and a
//! per-session queue.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_opencode::{Client, Delivery, EventKind, EventRouter, KindSet, RawEvent, RouterConfig};
use tokio::time::Instant;

use crate::Row;

/// Events of the replayed stream (the outside measurement's size).
pub const REPLAY_EVENTS: usize = 200_000;
/// Sessions of the replayed stream.
pub const REPLAY_SESSIONS: usize = 50;
/// Copies of each captured event in the [`synthetic`] stream (the first version's).
pub const SYNTHETIC_COPIES: usize = 200;
/// The seed of the replayed stream's interleaving.
pub const SEED: u64 = 18;
/// Measured runs of each consumer (alternating).
pub const ROUNDS: usize = 5;
/// The CPU the server process is pinned to.
pub const SERVER_CPU: usize = 0;
/// The CPU each measured consumer is pinned to.
pub const CONSUMER_CPU: usize = 1;

/// A stream: the SSE body, and what a consumer must see of it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `data: <json>\n\n` frames, opening with `server.connected` and ending with a
    /// `bench.end` event.
    pub body: Vec<u8>,
    /// What a consumer needs to subscribe and to know when it is done.
    pub manifest: Manifest,
}

/// The sessions of a stream and its event counts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// The distinct session ids.
    pub sessions: Vec<String>,
    /// Events in the body (the end marker and `server.connected` excluded).
    pub events: usize,
    /// Events that name a session (what a router delivers to session subscribers).
    pub routable: usize,
    /// Events without a session (heartbeats, bootstrap noise, files, toasts): the catch-all
    /// subscriber filtered by [`sessionless_kinds`] decodes them.
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

/// The captured events in their recorded order, `server.connected` excluded.
fn sample_events(samples: &str) -> Result<Vec<String>, String> {
    let mut events = Vec::new();
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
    Ok(events)
}

/// The session ids of `events`, in order of appearance.
fn session_ids(events: &[String]) -> Vec<String> {
    let mut originals: Vec<String> = Vec::new();
    for e in events {
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
    originals
}

/// `id` padded with `x` to `len` bytes (session ids keep their length, so the JSON stays
/// realistic).
fn padded(mut id: String, len: usize) -> String {
    while id.len() < len {
        id.push('x');
    }
    id
}

/// Frames `events` and counts what a consumer must see.
fn frame(events: &[String], sessions: Vec<String>) -> Result<Recorded, String> {
    let mut body = Vec::with_capacity(events.iter().map(|e| e.len() + 8).sum::<usize>() + 128);
    body.extend_from_slice(b"data: {\"type\":\"server.connected\",\"properties\":{}}\n\n");
    let (mut routable, mut sessionless) = (0, 0);
    for text in events {
        let raw = RawEvent::parse_str(text).map_err(|e| e.to_string())?;
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
    }
    body.extend_from_slice(b"data: {\"type\":\"bench.end\",\"properties\":{}}\n\n");
    Ok(Recorded {
        body,
        manifest: Manifest {
            sessions,
            events: events.len(),
            routable,
            sessionless,
        },
    })
}

/// The first version's stream: `copies` copies of every captured event, session ids rewritten
/// (same length) so that the copies are distinct sessions, interleaved event by event (all
/// copies of the first event, then all copies of the second, …).
pub fn synthetic(samples: &str, copies: usize) -> Result<Recorded, String> {
    let events = sample_events(samples)?;
    let originals = session_ids(&events);
    let rename =
        |copy: usize, i: usize, orig: &str| padded(format!("ses_c{copy:03}s{i:03}"), orig.len());
    let mut sessions = Vec::new();
    for copy in 0..copies {
        for (i, orig) in originals.iter().enumerate() {
            sessions.push(rename(copy, i, orig));
        }
    }
    let mut out = Vec::with_capacity(events.len() * copies);
    for e in &events {
        for copy in 0..copies {
            let mut text = e.clone();
            for (i, orig) in originals.iter().enumerate() {
                text = text.replace(orig.as_str(), &rename(copy, i, orig));
            }
            out.push(text);
        }
    }
    frame(&out, sessions)
}

/// The outside setup's stream: `sessions` concurrent sessions, each replaying the captured
/// stream in its recorded order (lane `j`'s captured session ids all become session `j`),
/// merged in a random order drawn from `seed` until `total` events.
pub fn replayed(
    samples: &str,
    total: usize,
    sessions: usize,
    seed: u64,
) -> Result<Recorded, String> {
    let events = sample_events(samples)?;
    let originals = session_ids(&events);
    let len = originals.first().map_or(30, String::len);
    if originals.iter().any(|o| o.len() != len) {
        return Err("captured session ids of different lengths".into());
    }
    let ids: Vec<String> = (0..sessions)
        .map(|j| padded(format!("ses_r{j:04}"), len))
        .collect();
    let lanes: Vec<Vec<String>> = ids
        .iter()
        .map(|id| {
            events
                .iter()
                .map(|e| {
                    let mut text = e.clone();
                    for orig in &originals {
                        text = text.replace(orig.as_str(), id);
                    }
                    text
                })
                .collect()
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next = vec![0usize; sessions];
    let mut out = Vec::with_capacity(total);
    for _ in 0..total {
        let j = rng.usize(..sessions);
        out.push(lanes[j][next[j] % events.len()].clone());
        next[j] += 1;
    }
    frame(&out, ids)
}

/// Serves `body` as the `/event` stream of every connection (then holds the connection open
/// for a minute), `true` to anything else, from plain threads; returns the base URL. The
/// first version served from the measuring process's runtime ([`serve`]).
///
/// # Errors
/// When no loopback port can be bound.
pub fn serve_blocking(body: Arc<Vec<u8>>) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let body = Arc::clone(&body);
            std::thread::spawn(move || serve_one(sock, &body));
        }
    });
    Ok(format!("http://{addr}"))
}

fn serve_one(mut sock: TcpStream, body: &[u8]) {
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&req);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    if path.starts_with("/event") || path.starts_with("/global/event") {
        let header = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
        if sock.write_all(header.as_bytes()).is_err() {
            return;
        }
        for chunk in body.chunks(64 * 1024) {
            if sock.write_all(chunk).is_err() {
                return;
            }
        }
        let _ = sock.flush();
        std::thread::sleep(Duration::from_secs(60));
    } else {
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4\r\nconnection: close\r\n\r\ntrue";
        let _ = sock.write_all(reply.as_bytes());
    }
}

/// The first version's server: on the current Tokio runtime of the measuring process.
///
/// # Errors
/// When no loopback port can be bound.
pub async fn serve(body: Arc<Vec<u8>>) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
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
                if path.starts_with("/event") {
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

/// What one consumer run measured.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Measured {
    /// Events consumed.
    pub events: usize,
    /// From opening the stream to the last event consumed.
    pub seconds: f64,
    /// CPU time of the consumer process (all its threads) over the same interval, when
    /// known.
    #[serde(default)]
    pub cpu_seconds: Option<f64>,
}

impl Measured {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    /// Events per CPU-second of the consumer process, when known.
    pub fn cpu_rate(&self) -> Option<f64> {
        self.cpu_seconds
            .filter(|s| *s > 0.0)
            .map(|s| self.events as f64 / s)
    }
}

/// CPU time of this process so far, nanosecond resolution: the sum of its live threads'
/// `/proc/self/task/*/schedstat` (Linux; `None` elsewhere).
pub fn process_cpu() -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let path = task.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            // A thread that ended meanwhile.
            continue;
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Ours: one `EventRouter` on the stream, one subscription per session (plus one catch-all
/// for the events without a session), each decoding every event it gets into the typed
/// `Event`. Returns the time until every event was decoded by its consumer. `buffer`: each
/// subscriber's buffer (`RouterConfig::buffer`).
///
/// # Errors
/// When not every event arrives within a minute, or one fails to decode.
pub async fn ours(url: &str, m: &Manifest, buffer: usize) -> Result<Duration, String> {
    let delivered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let target = (m.routable + m.sessionless) as u64;
    let mut config = RouterConfig::default();
    config.buffer = buffer;
    let t = Instant::now();
    let router = EventRouter::spawn(
        Client::builder(url).build().map_err(|e| e.to_string())?,
        config,
    );
    let mut consumers = tokio::task::JoinSet::new();
    // Each consumer decodes what it has (one wake-up's worth), then adds it to the shared
    // count in one step.
    let count = {
        let delivered = Arc::clone(&delivered);
        let failed = Arc::clone(&failed);
        let all_done = Arc::clone(&all_done);
        move |n: u64, bad: u64| {
            if bad > 0 {
                failed.fetch_add(bad, Ordering::Relaxed);
            }
            if delivered.fetch_add(n, Ordering::Relaxed) + n == target {
                all_done.notify_one();
            }
        }
    };
    // `sentinels`: the catch-all subscriber skips the stream's own markers.
    let decode = |d: Delivery, n: &mut u64, bad: &mut u64, sentinels: bool| {
        if let Delivery::Event(raw) = d
            && !(sentinels && matches!(raw.kind_str(), "server.connected" | "bench.end"))
        {
            *n += 1;
            *bad += u64::from(raw.decode().is_err());
        }
    };
    let mut subs = vec![(router.subscribe_all_filtered(sessionless_kinds()), true)];
    subs.extend(
        m.sessions
            .iter()
            .map(|s| (router.subscribe_session(s), false)),
    );
    for (mut sub, sentinels) in subs {
        let count = count.clone();
        consumers.spawn(async move {
            while let Some(d) = sub.recv().await {
                let (mut n, mut bad) = (0, 0);
                decode(d, &mut n, &mut bad, sentinels);
                while let Some(d) = sub.try_recv() {
                    decode(d, &mut n, &mut bad, sentinels);
                }
                count(n, bad);
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(60), all_done.notified())
        .await
        .is_err()
    {
        return Err(format!(
            "only {} of {target} events delivered (router: {:?})",
            delivered.load(Ordering::Relaxed),
            router.stats()
        ));
    }
    let elapsed = t.elapsed();
    let stats = router.stats();
    drop(router);
    consumers.abort_all();
    if failed.load(Ordering::Relaxed) > 0 || stats.dropped > 0 || stats.malformed > 0 {
        return Err(format!(
            "{} events failed to decode (router: {stats:?})",
            failed.load(Ordering::Relaxed)
        ));
    }
    Ok(elapsed)
}

/// [`ours`] on its own thread with a single-threaded runtime (the first version's consumer:
/// inside the measuring process, which also runs the server).
///
/// # Errors
/// As [`ours`].
pub fn ours_single_thread(url: &str, m: &Manifest) -> Result<Duration, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(ours(url, m, 1 << 16))
        })
        .join()
        .map_err(|_| "the consumer thread panicked".to_owned())?
    })
}

/// The consumer process (`e2e --consume-events MANIFEST URL`): [`ours`] on a single-threaded
/// runtime with the default subscriber buffer; prints a [`Measured`] as JSON.
///
/// # Errors
/// As [`ours`], or when the manifest cannot be read.
pub fn consume_child(manifest: &Path, url: &str) -> Result<Measured, String> {
    let m: Manifest = serde_json::from_slice(&std::fs::read(manifest).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let cpu0 = process_cpu();
    let elapsed = rt.block_on(ours(url, &m, RouterConfig::default().buffer))?;
    let cpu = process_cpu()
        .zip(cpu0)
        .map(|(now, before)| now.saturating_sub(before).as_secs_f64());
    Ok(Measured {
        events: m.events,
        seconds: elapsed.as_secs_f64(),
        cpu_seconds: cpu,
    })
}

/// Writes a stream's `body.sse` and `manifest.json` into `dir` (`e2e --write-stream DIR
/// replayed|synthetic`), for running the server and the consumers by hand.
///
/// # Errors
/// On an unknown kind or a failed write.
pub fn write_stream(dir: &Path, kind: &str) -> Result<(), String> {
    let samples = std::fs::read_to_string(sample_path()).map_err(|e| e.to_string())?;
    let rec = match kind {
        "replayed" => replayed(&samples, REPLAY_EVENTS, REPLAY_SESSIONS, SEED)?,
        "synthetic" => synthetic(&samples, SYNTHETIC_COPIES)?,
        other => return Err(format!("unknown stream {other:?} (replayed or synthetic)")),
    };
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("body.sse"), &rec.body).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&rec.manifest).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())
}

/// Whether consumers can be pinned: `taskset` exists and there are at least two CPUs.
pub fn can_pin() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// `program args` pinned to `cpu` (when given) with `taskset`.
fn command(cpu: Option<usize>, program: &Path, args: &[&str]) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program).args(args);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    }
}

/// The server process (`e2e --serve-sse BODY`), killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl ServerProcess {
    /// Starts `exe --serve-sse body` pinned to `cpu` and reads the URL it prints.
    ///
    /// # Errors
    /// When the process does not start or prints no URL.
    pub fn start(exe: &Path, body: &Path, cpu: Option<usize>) -> Result<Self, String> {
        let body = body.to_str().ok_or("non-UTF-8 temporary path")?;
        let mut child = command(cpu, exe, &["--serve-sse", body])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("server process: {e}"))?;
        let stdout = child.stdout.take().ok_or("server without stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let url = line.trim().to_owned();
        if !url.starts_with("http://") {
            let _ = child.kill();
            return Err(format!("the server process printed {url:?}"));
        }
        Ok(Self { child, url })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server process's main (`e2e --serve-sse BODY`): serves the file, prints the URL, then
/// waits until killed.
///
/// # Errors
/// When the body cannot be read or no port bound.
pub fn serve_child(body: &Path) -> Result<(), String> {
    let body = std::fs::read(body).map_err(|e| e.to_string())?;
    let url = serve_blocking(Arc::new(body)).map_err(|e| e.to_string())?;
    println!("{url}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    loop {
        std::thread::park();
    }
}

fn run_json(mut cmd: Command, what: &str) -> Result<Measured, String> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| format!("{what}: {e}: {text}"))
}

/// Ours, as its own process (`exe --consume-events manifest url`), pinned to `cpu`.
///
/// # Errors
/// When the process fails.
pub fn ours_process(
    exe: &Path,
    manifest: &Path,
    url: &str,
    cpu: Option<usize>,
) -> Result<Measured, String> {
    let manifest = manifest.to_str().ok_or("non-UTF-8 temporary path")?;
    run_json(
        command(cpu, exe, &["--consume-events", manifest, url]),
        "our consumer",
    )
}

/// The Node directory (`node/`, where `run.sh` installs the SDK).
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// The SDK version installed in `node/` (from its `package.json`).
pub fn sdk_version() -> Option<String> {
    let text =
        std::fs::read_to_string(node_dir().join("node_modules/@opencode-ai/sdk/package.json"))
            .ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("version")?.as_str().map(str::to_owned)
}

/// The baseline: `node node/consume.mjs URL`, pinned to `cpu` when given.
///
/// # Errors
/// When the SDK is not installed or Node fails.
pub fn node(url: &str, cpu: Option<usize>) -> Result<Measured, String> {
    let dir = node_dir();
    if sdk_version().is_none() {
        return Err("the SDK is not installed: run crates/orch-bench/run.sh (npm ci)".into());
    }
    let mut cmd = command(cpu, Path::new("node"), &["consume.mjs", url]);
    cmd.current_dir(&dir);
    run_json(cmd, "node")
}

/// Median and range of `xs`.
fn spread(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = if v.is_empty() {
        f64::NAN
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (
        mid,
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
    )
}

fn fmt_rate(r: (f64, f64, f64)) -> String {
    format!("{:.0} ({:.0}–{:.0})", r.0, r.1, r.2)
}

/// The runs of one stream in the isolated setup.
struct Isolated {
    ours: Vec<Measured>,
    /// The SDK pinned to the consumers' CPU.
    node_pinned: Vec<Measured>,
    /// The SDK free to use both CPUs (only when asked).
    node_free: Vec<Measured>,
    node_error: Option<String>,
}

impl Isolated {
    fn wall(runs: &[Measured]) -> (f64, f64, f64) {
        spread(&runs.iter().map(Measured::rate).collect::<Vec<_>>())
    }

    fn cpu(runs: &[Measured]) -> (f64, f64, f64) {
        spread(
            &runs
                .iter()
                .filter_map(Measured::cpu_rate)
                .collect::<Vec<_>>(),
        )
    }
}

/// `rounds` alternating runs of our consumer and the SDK's on `rec`, each its own process,
/// pinned to [`CONSUMER_CPU`] (the server process to [`SERVER_CPU`]); `free`: also the SDK
/// unpinned.
fn isolated(rec: &Recorded, rounds: usize, free: bool) -> Result<Isolated, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let body = dir.path().join("body.sse");
    let manifest = dir.path().join("manifest.json");
    std::fs::write(&body, &rec.body).map_err(|e| e.to_string())?;
    std::fs::write(
        &manifest,
        serde_json::to_vec(&rec.manifest).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let pin = can_pin();
    let server = ServerProcess::start(&exe, &body, pin.then_some(SERVER_CPU))?;
    let cpu = pin.then_some(CONSUMER_CPU);
    let mut out = Isolated {
        ours: Vec::new(),
        node_pinned: Vec::new(),
        node_free: Vec::new(),
        node_error: None,
    };
    let n = rec.manifest.events;
    let node_run =
        |cpu: Option<usize>, into: &mut Vec<Measured>, error: &mut Option<String>| match node(
            &server.url,
            cpu,
        ) {
            Ok(m) if m.events == n => into.push(m),
            Ok(m) => *error = Some(format!("node saw {} of {n} events", m.events)),
            Err(e) => *error = Some(e),
        };
    for _ in 0..rounds {
        out.ours
            .push(ours_process(&exe, &manifest, &server.url, cpu)?);
        let mut error = None;
        node_run(cpu, &mut out.node_pinned, &mut error);
        if pin && free {
            node_run(None, &mut out.node_free, &mut error);
        }
        if error.is_some() {
            out.node_error = error;
        }
    }
    Ok(out)
}

/// The rows of one stream measured by [`isolated`]: our wall-clock rate (target ≥ 1 M/s),
/// against the SDK's (target ≥ 5 ×), and the same per CPU-second.
fn isolated_rows(rows: &mut Vec<Row>, name: &str, iso: &Isolated, sdk: &str, pinned: bool) {
    let where_ = if pinned {
        format!("consumers pinned to CPU {CONSUMER_CPU}, server process on CPU {SERVER_CPU}")
    } else {
        "not pinned: taskset or a second CPU missing".to_owned()
    };
    let rounds = iso.ours.len();
    let ours = Isolated::wall(&iso.ours);
    rows.push(
        Row::info(
            3,
            format!(
                "{name}: events/s over loopback HTTP/SSE, every event routed and decoded into its typed `Event`; {where_}; median (range) of {rounds} cold runs"
            ),
            fmt_rate(ours),
        )
        .target("≥ 1,000,000 events/s", ours.0 >= 1e6),
    );
    let mut vs = |label: &str, runs: &[Measured], ours: (f64, f64, f64), target: bool| {
        if runs.is_empty() {
            rows.push(Row::info(
                3,
                format!("{name}: vs @opencode-ai/sdk {sdk} (Node), {label}"),
                format!("not run: {}", iso.node_error.clone().unwrap_or_default()),
            ));
            return;
        }
        let node = if label.contains("CPU-second") {
            Isolated::cpu(runs)
        } else {
            Isolated::wall(runs)
        };
        let ratio = ours.0 / node.0;
        let row = Row::info(
            3,
            format!(
                "{name}: same, vs @opencode-ai/sdk {sdk} `event.subscribe()` in Node, {label} (medians; ratio range = worst/best pairing)"
            ),
            fmt_rate(ours),
        )
        .baseline(
            format!(
                "{} (ratio {:.2}–{:.2})",
                fmt_rate(node),
                ours.1 / node.2,
                ours.2 / node.1
            ),
            ratio,
        );
        rows.push(if target {
            row.target("≥ 5 ×", ratio >= 5.0)
        } else {
            row
        });
    };
    let same = if pinned {
        "pinned to the same CPU, events/s"
    } else {
        "not pinned, events/s"
    };
    vs(same, &iso.node_pinned, ours, true);
    if !iso.node_free.is_empty() {
        vs(
            "the SDK free to use both CPUs, events/s",
            &iso.node_free,
            ours,
            false,
        );
    }
    let ours_cpu = Isolated::cpu(&iso.ours);
    if !ours_cpu.0.is_nan() {
        vs(
            "events per CPU-second of the consumer process (all its threads)",
            &iso.node_pinned,
            ours_cpu,
            false,
        );
    }
}

/// Benchmark 3.
///
/// # Errors
/// When a stream cannot be built or our consumer fails.
pub async fn bench3() -> Result<Vec<Row>, String> {
    let samples = std::fs::read_to_string(sample_path()).map_err(|e| e.to_string())?;
    let sdk = sdk_version().unwrap_or_else(|| "(not installed)".into());
    let pinned = can_pin();
    let mut rows = Vec::new();

    // The target, on both streams: isolated processes, one core for each consumer.
    let rec = replayed(&samples, REPLAY_EVENTS, REPLAY_SESSIONS, SEED)?;
    let replayed_name = format!(
        "replayed {} events ({:.0} MB) of {REPLAY_SESSIONS} sessions",
        rec.manifest.events,
        rec.body.len() as f64 / 1e6
    );
    let iso = isolated(&rec, ROUNDS, true)?;
    isolated_rows(&mut rows, &replayed_name, &iso, &sdk, pinned);
    let syn = synthetic(&samples, SYNTHETIC_COPIES)?;
    let syn_name = format!(
        "synthetic {} events ({:.0} MB) of {} sessions (first version)",
        syn.manifest.events,
        syn.body.len() as f64 / 1e6,
        syn.manifest.sessions.len()
    );
    let syn_iso = isolated(&syn, ROUNDS, false)?;
    isolated_rows(&mut rows, &syn_name, &syn_iso, &sdk, pinned);

    // Why the first version's figures were higher: its setup on either stream.
    for (name, rec, iso) in [(&replayed_name, &rec, &iso), (&syn_name, &syn, &syn_iso)] {
        let url = serve(Arc::new(rec.body.clone())).await?;
        // The first version's method: one warm-up, best of three, in-process.
        let _ = ours_single_thread(&url, &rec.manifest)?;
        let mut best = f64::MAX;
        for _ in 0..3 {
            best = best.min(ours_single_thread(&url, &rec.manifest)?.as_secs_f64());
        }
        let in_process = rec.manifest.events as f64 / best;
        let mut node_best: Option<f64> = None;
        for _ in 0..3 {
            if let Ok(m) = node(&url, None)
                && m.events == rec.manifest.events
            {
                node_best = Some(node_best.map_or(m.rate(), |b: f64| b.max(m.rate())));
            }
        }
        let iso_r = Isolated::wall(&iso.ours).0;
        let iso_node_r = Isolated::wall(&iso.node_pinned).0;
        let node_best = node_best.unwrap_or(f64::NAN);
        rows.push(
            Row::info(
                3,
                format!(
                    "{name}: first version's setup (server in the measuring process, consumer thread unpinned, 1 warm-up, best of 3) vs isolated pinned cold processes (median)"
                ),
                format!("{in_process:.0} vs {iso_r:.0}"),
            )
            .baseline(
                format!("SDK {node_best:.0} vs {iso_node_r:.0}"),
                in_process / node_best,
            ),
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_stream_has_distinct_sessions_per_copy() {
        let samples = std::fs::read_to_string(sample_path()).expect("sample file");
        let one = synthetic(&samples, 1).expect("builds");
        let three = synthetic(&samples, 3).expect("builds");
        let (m1, m3) = (&one.manifest, &three.manifest);
        assert_eq!(m3.events, m1.events * 3);
        assert_eq!(m3.routable, m1.routable * 3);
        assert_eq!(m1.routable + m1.sessionless, m1.events);
        assert_eq!(m3.sessions.len(), m1.sessions.len() * 3);
        assert!(m1.routable > m1.events / 2);
        let text = String::from_utf8(three.body).expect("utf-8");
        assert!(text.ends_with("data: {\"type\":\"bench.end\",\"properties\":{}}\n\n"));
        // The events keep OpenCode's own key order (`id`, `type`, `properties`).
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), m3.events + 2);
        for line in &lines[1..lines.len() - 1] {
            let json = line.strip_prefix("data: {\"id\":\"evt_").expect(line);
            let ty = json.find("\",\"type\":\"").expect(line);
            assert!(json.find("\",\"properties\":{").expect(line) > ty, "{line}");
        }
    }

    #[test]
    fn the_replayed_stream_mixes_sessions_and_kinds_in_recorded_order() {
        let samples = std::fs::read_to_string(sample_path()).expect("sample file");
        let rec = replayed(&samples, 5_000, 50, 18).expect("builds");
        let m = &rec.manifest;
        assert_eq!(m.events, 5_000);
        assert_eq!(m.routable + m.sessionless, m.events);
        assert_eq!(m.sessions.len(), 50);
        let text = String::from_utf8(rec.body).expect("utf-8");
        let events: Vec<RawEvent> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| RawEvent::parse_str(d).expect("event"))
            .collect();
        assert_eq!(events.len(), m.events + 2);
        let mut seen = std::collections::HashSet::new();
        let mut changes = 0;
        for pair in events.windows(2) {
            changes += usize::from(pair[0].kind_str() != pair[1].kind_str());
            if let Some(s) = pair[1].session_id() {
                assert!(m.sessions.iter().any(|x| x == s), "{s}");
                seen.insert(s.to_owned());
            }
        }
        assert_eq!(seen.len(), 50);
        // Unlike the synthetic stream (one change every 200 events), the kind changes at
        // most steps.
        assert!(changes > m.events / 2, "{changes}");
        // Every lane replays the capture in order: session 0 sees the capture's kinds.
        let capture: Vec<String> = sample_events(&samples)
            .expect("samples")
            .iter()
            .map(|e| RawEvent::parse_str(e).expect("event"))
            .filter(|e| e.session_id().is_some())
            .map(|e| e.kind_str().to_owned())
            .collect();
        let lane0: Vec<&str> = events
            .iter()
            .filter(|e| e.session_id() == Some(m.sessions[0].as_str()))
            .map(RawEvent::kind_str)
            .collect();
        assert!(lane0.len() > 20);
        assert!(
            lane0
                .iter()
                .zip(capture.iter().cycle())
                .all(|(a, b)| a == b)
        );
    }
}
