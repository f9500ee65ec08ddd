//! Benchmark 7: OpenCode 2 beside OpenCode 1, on the same machine, in the same run, against
//! the same scripted model.
//!
//! Both servers run at once (each with its own isolated home), are warmed up first
//! ([`real::warm_up`]), and are measured in alternation, so that whatever else the machine
//! does falls on both:
//!
//! - **Session life cycle**, [`ROUNDS`] rounds: create a session, a text turn (prompt → the
//!   turn's end as the event stream shows it: `session.idle` for OpenCode 1,
//!   `session.execution.succeeded` for OpenCode 2), a write turn (the model calls `write`;
//!   the file is checked on disk), delete the session. Each operation is timed alone, through
//!   `orch-opencode`'s clients and routers (what the backends use), median and p90.
//! - **Turns per second** one server sustains with 16 sessions and an instant model, and the
//!   server's CPU per turn (its process tree, `/proc/<pid>/stat`), snapshots off and on
//!   ([`real::sustained`]).
//! - **Speed-up** of 8 Workers over 1 on 16 independent items with 500 ms model turns, best of
//!   two each ([`real::speedup_run`], as benchmark 5).
//! - **Event decode + route** over HTTP: a captured stream of each generation (OpenCode 1:
//!   `orch-opencode`'s 383-event sample; OpenCode 2: its captured text turn and write turn of
//!   2.1.2) scaled to thousands of sessions ([`replay`]), routed by one
//!   [`EventRouter`] and decoded by one consumer per session, on one thread, as in
//!   benchmark 3.
//!
//! In the table "ours" is OpenCode 2, "baseline" OpenCode 1, and "ratio" is V2 ÷ V1 for
//! rates and speed-ups, V1 ÷ V2 for times: above 1, OpenCode 2 is better.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orch_opencode::{
    Client, Delivery, EventRouter, Generation, KindSet, OpencodeServer, RawEvent, RouterConfig, v2,
};
use orch_testkit::opencode::TestServer;
use orch_testkit::{Reply, Rule, ScriptedModel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::plans::{Shape, dag, plan_text, quantile};
use crate::real::{self, SpeedupRun};
use crate::{Row, fmt_duration};

/// The benchmark's number in the table.
pub const BENCH: u8 = 7;

/// Rounds of the session life cycle per generation.
pub const ROUNDS: usize = 30;

/// The prompt prefix the scripted model answers with a `write` call, then a text.
pub const WRITE: &str = "WRITE";

/// The file the write turn creates (relative to the project).
pub const WRITTEN: &str = "written-by-the-model.txt";

/// What the write turn puts in [`WRITTEN`].
pub const WRITTEN_TEXT: &str = "written by the scripted model\n";

/// Turns per second are measured with this many sessions.
pub const SESSIONS: usize = 16;

/// One generation's server.
struct Side {
    generation: Generation,
    version: String,
    test_server: TestServer,
}

impl Side {
    fn start(generation: Generation, model: &ScriptedModel) -> Result<Side, String> {
        let (test_server, version) = real::start_server_of(&model.base_url(), generation)?;
        Ok(Side {
            generation,
            version,
            test_server,
        })
    }

    fn server(&self) -> &OpencodeServer {
        self.test_server.server()
    }

    fn name(&self) -> String {
        format!("OpenCode {}", self.version)
    }
}

/// Median and p90 of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: Duration,
    /// The 90th percentile.
    pub p90: Duration,
}

impl Spread {
    /// Of `values` (none: zero).
    pub fn of(mut values: Vec<Duration>) -> Spread {
        Spread {
            median: quantile(&mut values, 0.5),
            p90: quantile(&mut values, 0.9),
        }
    }

    fn show(&self) -> String {
        format!("{} / {}", fmt_duration(self.median), fmt_duration(self.p90))
    }
}

/// Times of one session life cycle: create, text turn, write turn, delete.
#[derive(Debug, Clone, Copy, Default)]
struct Cycle {
    create: Duration,
    /// The text turn's prompt request alone (OpenCode 1: `prompt_async`, answered before the
    /// turn runs; OpenCode 2: the input durably admitted to the session's inbox).
    posted: Duration,
    text: Duration,
    write: Duration,
    delete: Duration,
}

/// Reads one step's time out of a [`Cycle`].
type Step = fn(&Cycle) -> Duration;

/// A project of one generation with its event stream open.
enum Lane {
    V1 {
        client: Client,
        router: EventRouter,
        project: tempfile::TempDir,
    },
    V2 {
        client: v2::Client,
        router: EventRouter,
        project: tempfile::TempDir,
    },
}

impl Lane {
    async fn open(side: &Side, model: &ScriptedModel) -> Result<Lane, String> {
        let project = real::project_of(&model.base_url(), side.generation, false)?;
        let directory = project.path().to_string_lossy().into_owned();
        Ok(match side.generation {
            Generation::V1 => {
                let client = side.server().client().with_directory(directory);
                let router = EventRouter::connect(client.clone(), RouterConfig::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Lane::V1 {
                    client,
                    router,
                    project,
                }
            }
            Generation::V2 => {
                let client = side.server().client_v2();
                let router = EventRouter::connect_v2(client.clone(), RouterConfig::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Lane::V2 {
                    client,
                    router,
                    project,
                }
            }
        })
    }

    fn project(&self) -> &Path {
        match self {
            Lane::V1 { project, .. } | Lane::V2 { project, .. } => project.path(),
        }
    }

    /// One life cycle, each step timed alone.
    async fn cycle(&self, n: usize) -> Result<Cycle, String> {
        let deadline = || Instant::now() + Duration::from_secs(60);
        let written = self.project().join(WRITTEN);
        let _ = std::fs::remove_file(&written);
        let mut c = Cycle::default();
        match self {
            Lane::V1 { client, router, .. } => {
                let t = Instant::now();
                let s = client
                    .create_session(&orch_opencode::CreateSession::titled(format!("cycle {n}")))
                    .await
                    .map_err(|e| format!("create: {e}"))?;
                c.create = t.elapsed();
                let prompt = orch_opencode::Prompt::text(format!("{} {n}", real::PING));
                let waiter = router.turn(&s.id, &prompt.message_id);
                let t = Instant::now();
                client
                    .prompt_async(&s.id, &prompt)
                    .await
                    .map_err(|e| format!("text prompt: {e}"))?;
                c.posted = t.elapsed();
                let out = waiter
                    .wait(deadline())
                    .await
                    .map_err(|e| format!("text turn: {e}"))?;
                c.text = t.elapsed();
                if out.text() != "pong" {
                    return Err(format!("text turn answered {:?}", out.text()));
                }
                let t = Instant::now();
                router
                    .run_turn(
                        &s.id,
                        &orch_opencode::Prompt::text(format!("{WRITE} {n}")),
                        deadline(),
                    )
                    .await
                    .map_err(|e| format!("write turn: {e}"))?;
                c.write = t.elapsed();
                check_written(&written)?;
                let t = Instant::now();
                client
                    .delete_session(&s.id)
                    .await
                    .map_err(|e| format!("delete: {e}"))?;
                c.delete = t.elapsed();
            }
            Lane::V2 {
                client,
                router,
                project,
            } => {
                let t = Instant::now();
                let s = client
                    .create_session(
                        &v2::CreateSession::titled(format!("cycle {n}"))
                            .directory(project.path().to_string_lossy()),
                    )
                    .await
                    .map_err(|e| format!("create: {e}"))?;
                c.create = t.elapsed();
                let prompt = v2::Prompt::text(format!("{} {n}", real::PING));
                let waiter = router.turn_v2(&s.id, &prompt.id);
                let t = Instant::now();
                client
                    .prompt(&s.id, &prompt)
                    .await
                    .map_err(|e| format!("text prompt: {e}"))?;
                c.posted = t.elapsed();
                let out = waiter
                    .wait(deadline())
                    .await
                    .map_err(|e| format!("text turn: {e}"))?;
                c.text = t.elapsed();
                if out.text() != "pong" {
                    return Err(format!("text turn answered {:?}", out.text()));
                }
                let t = Instant::now();
                router
                    .run_turn_v2(&s.id, &v2::Prompt::text(format!("{WRITE} {n}")), deadline())
                    .await
                    .map_err(|e| format!("write turn: {e}"))?;
                c.write = t.elapsed();
                check_written(&written)?;
                let t = Instant::now();
                client
                    .delete_session(&s.id)
                    .await
                    .map_err(|e| format!("delete: {e}"))?;
                c.delete = t.elapsed();
            }
        }
        Ok(c)
    }
}

fn check_written(path: &Path) -> Result<(), String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text == WRITTEN_TEXT => Ok(()),
        Ok(text) => Err(format!("the write turn wrote {text:?}")),
        Err(e) => Err(format!("the write turn left no file: {e}")),
    }
}

/// The write turn's rules: a `write` call (in the shape of the generation that asks), then a
/// text once the tool result is back.
fn write_rules() -> Result<[Rule; 2], String> {
    let e = |e: orch_testkit::ScriptError| e.to_string();
    let user = format!("^{WRITE} ");
    Ok([
        Rule::new("write-call")
            .user(&user)
            .map_err(e)?
            .tool_result(false)
            .reply(Reply::write_file(WRITTEN, WRITTEN_TEXT)),
        Rule::new("write-then")
            .user(&user)
            .map_err(e)?
            .tool_result(true)
            .reply(Reply::text("Wrote it.")),
    ])
}

/// `ratio` of `v2` over `v1` times (above 1: OpenCode 2 faster).
fn faster(v1: Duration, v2: Duration) -> f64 {
    v1.as_secs_f64() / v2.as_secs_f64().max(1e-9)
}

/// Benchmark 7 (see the module docs).
pub async fn bench7() -> Result<Vec<Row>, String> {
    let items = 16;
    let delay = Duration::from_millis(500);
    let model = ScriptedModel::start(real::script(&plan_text(&dag(Shape::Wide, items)), delay)?)
        .map_err(|e| e.to_string())?;
    for rule in write_rules()? {
        model.add_rule(rule).map_err(|e| e.to_string())?;
    }
    let sides = [
        Side::start(Generation::V1, &model)?,
        Side::start(Generation::V2, &model)?,
    ];
    let mut servers = Row::info(
        BENCH,
        "servers compared (ours = OpenCode 2, baseline = OpenCode 1; ratio > 1: OpenCode 2 better)",
        sides[1].name(),
    );
    servers.baseline = sides[0].name();
    let mut rows = vec![servers];
    let mut warm = Vec::new();
    for side in &sides {
        warm.push(real::warm_up(&model, side.server()).await?);
    }
    rows.push(
        Row::info(
            BENCH,
            "server start-up work after its first turn (CPU / wall until it settles)",
            format!("{} / {}", fmt_duration(warm[1].0), fmt_duration(warm[1].1)),
        )
        .baseline(
            format!(
                "V1 {} / {}",
                fmt_duration(warm[0].0),
                fmt_duration(warm[0].1)
            ),
            faster(warm[0].0, warm[1].0),
        ),
    );
    rows.extend(life_cycle(&sides, &model).await?);
    rows.extend(throughput(&sides, &model).await?);
    rows.extend(speedup(&sides, &model, items, delay).await?);
    rows.extend(events(200)?);
    Ok(rows)
}

/// The life-cycle rows: both generations in alternation, [`ROUNDS`] rounds each.
async fn life_cycle(sides: &[Side; 2], model: &ScriptedModel) -> Result<Vec<Row>, String> {
    let lanes = [
        Lane::open(&sides[0], model).await?,
        Lane::open(&sides[1], model).await?,
    ];
    // One untimed cycle each (the project's first session and turn).
    for lane in &lanes {
        lane.cycle(0).await?;
    }
    let mut cycles: [Vec<Cycle>; 2] = Default::default();
    for n in 1..=ROUNDS {
        for i in 0..2 {
            // Alternate which generation goes first.
            let k = (i + n) % 2;
            cycles[k].push(lanes[k].cycle(n).await?);
        }
    }
    let spread = |k: usize, f: Step| Spread::of(cycles[k].iter().map(f).collect());
    let mut rows = Vec::new();
    let steps: [(&str, Step); 5] = [
        ("session create (`POST`), median / p90", |c| c.create),
        (
            "the text turn's prompt request alone (V1 `prompt_async`; V2 `POST …/prompt`, the input durably admitted), median / p90",
            |c| c.posted,
        ),
        (
            "text turn in a new session (prompt → the turn's end event; model answers at once), median / p90",
            |c| c.text,
        ),
        (
            "write turn (the model calls `write`, then answers; the file checked on disk), median / p90",
            |c| c.write,
        ),
        ("session delete, median / p90", |c| c.delete),
    ];
    for (label, f) in steps {
        let (v1, v2) = (spread(0, f), spread(1, f));
        rows.push(
            Row::info(BENCH, format!("{label}; {ROUNDS} rounds"), v2.show())
                .baseline(format!("V1 {}", v1.show()), faster(v1.median, v2.median)),
        );
    }
    Ok(rows)
}

/// Turns per second and server CPU per turn, snapshots off (two passes, alternating) and on.
async fn throughput(sides: &[Side; 2], model: &ScriptedModel) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    for (snapshot, passes) in [(false, 2), (true, 1)] {
        let mut runs: [Vec<(f64, Duration)>; 2] = Default::default();
        for _ in 0..passes {
            for (k, side) in sides.iter().enumerate() {
                let project = real::project_of(&model.base_url(), side.generation, snapshot)?;
                runs[k].push(real::sustained(side.server(), project.path(), SESSIONS).await?);
            }
        }
        let show = |r: &[(f64, Duration)]| {
            r.iter()
                .map(|(tps, cpu)| format!("{tps:.1} turns/s, {}", fmt_duration(*cpu)))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let mean = |r: &[(f64, Duration)]| r.iter().map(|x| x.0).sum::<f64>() / r.len() as f64;
        rows.push(
            Row::info(
                BENCH,
                format!(
                    "turns/s one server sustains and its CPU per turn ({SESSIONS} sessions, instant model, snapshots {}; {passes} × 4 s)",
                    if snapshot { "on" } else { "off" }
                ),
                show(&runs[1]),
            )
            .baseline(format!("V1 {}", show(&runs[0])), mean(&runs[1]) / mean(&runs[0])),
        );
    }
    Ok(rows)
}

/// Best of two missions each on 1 and 8 Workers, per generation.
async fn best_runs(
    side: &Side,
    model: &ScriptedModel,
    delay: Duration,
) -> Result<(SpeedupRun, SpeedupRun), String> {
    let (mut r1, mut r8): (Option<SpeedupRun>, Option<SpeedupRun>) = (None, None);
    for _ in 0..2 {
        for (workers, best) in [(1, &mut r1), (8, &mut r8)] {
            let project = real::project_of(&model.base_url(), side.generation, false)?;
            let run =
                real::speedup_run(model, side.server(), project.path(), workers, delay).await?;
            if best.is_none_or(|b| run.items < b.items) {
                *best = Some(run);
            }
        }
    }
    r1.zip(r8).ok_or_else(|| "no speed-up run".to_owned())
}

/// The 8-Worker speed-up rows.
async fn speedup(
    sides: &[Side; 2],
    model: &ScriptedModel,
    items: usize,
    delay: Duration,
) -> Result<Vec<Row>, String> {
    let mut runs = Vec::new();
    for side in sides {
        runs.push(best_runs(side, model, delay).await?);
    }
    let ideal = ((items + 1) as f64) / ((items / 8 + 1) as f64);
    let factor = |(r1, r8): &(SpeedupRun, SpeedupRun)| {
        r1.items.as_secs_f64() / r8.items.as_secs_f64().max(1e-9)
    };
    let show = |r: &(SpeedupRun, SpeedupRun)| {
        format!(
            "{:.2} × ({} vs 1 Worker {})",
            factor(r),
            fmt_duration(r.1.items),
            fmt_duration(r.0.items)
        )
    };
    let mut rows = vec![
        Row::info(
            BENCH,
            format!(
                "{items} items, 500 ms turns: items phase, speed-up of 8 Workers over 1 (best of 2 each; ideal {ideal:.2} ×)"
            ),
            show(&runs[1]),
        )
        .baseline(format!("V1 {}", show(&runs[0])), factor(&runs[1]) / factor(&runs[0])),
    ];
    let split = |r: &SpeedupRun| {
        format!(
            "{} / {} / {}",
            fmt_duration(r.setup),
            fmt_duration(delay),
            fmt_duration(r.after)
        )
    };
    let cpu = |r: &SpeedupRun| {
        format!(
            "{} per turn ({:.0} % of a core), {:.1} requests per turn",
            fmt_duration(r.server_cpu / r.item_turns.max(1) as u32),
            100.0 * r.server_cpu.as_secs_f64() / r.items.as_secs_f64().max(1e-9),
            r.requests as f64 / (r.item_turns + 1) as f64
        )
    };
    for (label, which) in [("8 Workers", 1usize), ("1 Worker", 0usize)] {
        let pick = |r: &(SpeedupRun, SpeedupRun)| if which == 1 { r.1 } else { r.0 };
        let (v1, v2) = (pick(&runs[0]), pick(&runs[1]));
        rows.push(
            Row::info(
                BENCH,
                format!(
                    "{label}: mean turn split: turn start → model request / model's 500 ms / answer → turn returned"
                ),
                split(&v2),
            )
            .baseline(
                format!("V1 {}", split(&v1)),
                faster(v1.setup + v1.after, v2.setup + v2.after),
            ),
        );
        rows.push(
            Row::info(
                BENCH,
                format!(
                    "{label}: server CPU in the items phase ({} turns) and HTTP requests per turn",
                    v2.item_turns
                ),
                cpu(&v2),
            )
            .baseline(
                format!("V1 {}", cpu(&v1)),
                faster(
                    v1.server_cpu / v1.item_turns.max(1) as u32,
                    v2.server_cpu / v2.item_turns.max(1) as u32,
                ),
            ),
        );
    }
    Ok(rows)
}

// --- Event decode + route -----------------------------------------------------------------

/// A recorded stream scaled to many sessions.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The generation whose envelopes it carries.
    pub generation: Generation,
    /// `data: <json>\n\n` frames, `server.connected` first.
    pub body: Vec<u8>,
    /// The distinct session ids.
    pub sessions: Vec<String>,
    /// Events in the body (`server.connected` excluded).
    pub events: usize,
    /// Events naming a session (what the session subscribers get).
    pub routable: usize,
    /// Events without a session (a catch-all subscriber decodes them in the "every event"
    /// runs).
    pub sessionless: usize,
    /// The kinds (router bits) of the events without a session.
    sessionless_bits: Vec<u64>,
}

/// The captured OpenCode 1.18.33 events (`orch-opencode`'s test data), one event JSON each,
/// byte for byte as sent.
pub fn v1_events() -> Result<Vec<String>, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../orch-opencode/tests/data/events-sample.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    const KEY: &str = ",\"event\":";
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let at = line.find(KEY).ok_or("sample line without an event")?;
            line[at + KEY.len()..]
                .strip_suffix('}')
                .map(str::to_owned)
                .ok_or_else(|| "sample line does not end with the event".to_owned())
        })
        .collect()
}

/// The captured OpenCode 2.1.2 turns (`orch-opencode`'s test data: a text turn, the stream
/// of `/work/shared/opencode/v2/events-one-turn-2.1.2.sse`, and a write turn), one event JSON
/// each, byte for byte as sent.
pub fn v2_events() -> Result<Vec<String>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../orch-opencode/tests/data/v2");
    let mut out = Vec::new();
    for name in ["events-one-turn-2.1.2.sse", "events-write-turn.sse"] {
        let path = dir.join(name);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        out.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned),
        );
    }
    Ok(out)
}

fn parse(generation: Generation, text: String) -> Result<RawEvent, String> {
    match generation {
        Generation::V1 => RawEvent::parse(text),
        Generation::V2 => RawEvent::parse_v2(text),
    }
    .map_err(|e| e.to_string())
}

fn kind_bit(raw: &RawEvent) -> u64 {
    match raw.generation() {
        Generation::V1 => raw.kind().bit(),
        Generation::V2 => raw.kind_v2().bit(),
    }
}

/// Builds the stream: `copies` copies of every event of `events` (`server.connected`
/// dropped), session ids rewritten (same length) so that the copies are distinct sessions
/// (OpenCode 2's `durable.aggregateID` with them, so each copy keeps its own increasing
/// `seq`), interleaved event by event.
pub fn replay(generation: Generation, events: &[String], copies: usize) -> Result<Replay, String> {
    let events: Vec<&String> = events
        .iter()
        .filter(|e| !e.contains("\"type\":\"server.connected\""))
        .collect();
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
        let mut id = format!("ses_c{copy:04}s{i:03}");
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
    body.extend_from_slice(match generation {
        Generation::V1 => b"data: {\"type\":\"server.connected\",\"properties\":{}}\n\n",
        Generation::V2 => b"data: {\"id\":\"evt_0\",\"type\":\"server.connected\",\"data\":{}}\n\n",
    });
    let (mut n, mut routable) = (0, 0);
    let mut sessionless_bits: Vec<u64> = Vec::new();
    let mut routed_bits: Vec<u64> = Vec::new();
    for e in &events {
        for copy in 0..copies {
            let mut text = (*e).clone();
            for (i, orig) in originals.iter().enumerate() {
                text = text.replace(orig.as_str(), &rename(copy, i, orig));
            }
            let raw = parse(generation, text.clone())?;
            let bit = kind_bit(&raw);
            let list = if raw.session_id().is_some() {
                routable += 1;
                &mut routed_bits
            } else {
                &mut sessionless_bits
            };
            if !list.contains(&bit) {
                list.push(bit);
            }
            body.extend_from_slice(b"data: ");
            body.extend_from_slice(text.as_bytes());
            body.extend_from_slice(b"\n\n");
            n += 1;
        }
    }
    if let Some(kind) = sessionless_bits.iter().find(|b| routed_bits.contains(b)) {
        return Err(format!(
            "kind bit {kind:#x} comes with and without a session: the catch-all subscriber cannot tell them apart"
        ));
    }
    Ok(Replay {
        generation,
        body,
        sessions,
        events: n,
        routable,
        sessionless: n - routable,
        sessionless_bits,
    })
}

/// Serves `body` as the event stream (`/event`, `/global/event`, `/api/event`) of every
/// connection, then holds it open for a minute; `true` to anything else. Returns the base URL.
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
                let stream = ["/event", "/global/event", "/api/event"]
                    .iter()
                    .any(|p| path.starts_with(p));
                if stream {
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

fn decodes(raw: &RawEvent) -> bool {
    match raw.generation() {
        Generation::V1 => raw.decode().is_ok(),
        Generation::V2 => raw.decode_v2().is_ok(),
    }
}

fn is_turn_kind(raw: &RawEvent) -> bool {
    match raw.generation() {
        Generation::V1 => KindSet::turn().contains(raw.kind()),
        Generation::V2 => v2::KindSet::turn().contains(raw.kind_v2()),
    }
}

/// One router on the stream at `url`, one subscription per session, each consumer decoding
/// its events into the generation's typed `Event` (`all`; else only the kinds a turn waiter
/// follows, the others routed on their envelope alone); with `all`, one catch-all subscriber
/// decodes the events without a session. Returns the time from opening the stream until every
/// expected event was consumed.
pub async fn route(url: &str, rec: &Replay, all: bool) -> Result<Duration, String> {
    let delivered = Arc::new(AtomicU64::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let target = (rec.routable + if all { rec.sessionless } else { 0 }) as u64;
    let mut config = RouterConfig::default();
    config.buffer = 1 << 16;
    let t = Instant::now();
    let router = match rec.generation {
        Generation::V1 => EventRouter::spawn(
            Client::builder(url).build().map_err(|e| e.to_string())?,
            config,
        ),
        Generation::V2 => EventRouter::spawn_v2(
            v2::Client::builder(url)
                .build()
                .map_err(|e| e.to_string())?,
            config,
        ),
    };
    let mut consumers = tokio::task::JoinSet::new();
    let count = move |delivered: &AtomicU64, all_done: &tokio::sync::Notify| {
        if delivered.fetch_add(1, Ordering::Relaxed) + 1 == target {
            all_done.notify_one();
        }
    };
    if all && rec.sessionless > 0 {
        let mut sub = match rec.generation {
            Generation::V1 => {
                let mut kinds = KindSet::empty();
                for k in orch_opencode::EventKind::ALL
                    .iter()
                    .copied()
                    .chain([orch_opencode::EventKind::Other])
                {
                    if rec.sessionless_bits.contains(&k.bit()) {
                        kinds = kinds.with(k);
                    }
                }
                router.subscribe_all_filtered(kinds)
            }
            Generation::V2 => {
                let mut kinds = v2::KindSet::empty();
                for k in v2::EventKind::ALL
                    .iter()
                    .copied()
                    .chain([v2::EventKind::Other])
                {
                    if rec.sessionless_bits.contains(&k.bit()) {
                        kinds = kinds.with(k);
                    }
                }
                router.subscribe_all_v2(kinds)
            }
        };
        let (delivered, all_done) = (Arc::clone(&delivered), Arc::clone(&all_done));
        consumers.spawn(async move {
            while let Some(d) = sub.recv().await {
                if let Delivery::Event(raw) = d
                    && raw.kind_str() != "server.connected"
                    && decodes(&raw)
                {
                    count(&delivered, &all_done);
                }
            }
        });
    }
    for s in &rec.sessions {
        let mut sub = router.subscribe_session(s);
        let (delivered, all_done) = (Arc::clone(&delivered), Arc::clone(&all_done));
        consumers.spawn(async move {
            while let Some(d) = sub.recv().await {
                if let Delivery::Event(raw) = d
                    && (!(all || is_turn_kind(&raw)) || decodes(&raw))
                {
                    count(&delivered, &all_done);
                }
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
    drop(router);
    consumers.abort_all();
    Ok(elapsed)
}

/// [`route`] on its own thread with a single-threaded runtime and its own local server.
pub fn route_single_thread(rec: &Replay, all: bool) -> Result<Duration, String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let url = serve(Arc::new(rec.body.clone())).await?;
                route(&url, rec, all).await
            })
        })
        .join()
        .map_err(|_| "the consumer thread panicked".to_owned())?
    })
}

/// The event rows: OpenCode 1's sample × `v1_copies` against OpenCode 2's captured turns
/// scaled to about as many events; best of three, alternating.
pub fn events(v1_copies: usize) -> Result<Vec<Row>, String> {
    let v1_list = v1_events()?;
    let v2_list = v2_events()?;
    let v1 = replay(Generation::V1, &v1_list, v1_copies)?;
    let per_copy = replay(Generation::V2, &v2_list, 1)?.events.max(1);
    let v2 = replay(Generation::V2, &v2_list, v1.events.div_ceil(per_copy))?;
    // Warm-up, then best of three each.
    route_single_thread(&v1, true)?;
    route_single_thread(&v2, true)?;
    let mut best: HashMap<(usize, bool), f64> = HashMap::new();
    for _ in 0..3 {
        for all in [true, false] {
            for (k, rec) in [&v1, &v2].into_iter().enumerate() {
                let s = route_single_thread(rec, all)?.as_secs_f64();
                let b = best.entry((k, all)).or_insert(f64::MAX);
                *b = b.min(s);
            }
        }
    }
    let about = |r: &Replay, rate: f64| {
        format!(
            "{rate:.0} ({} events, {:.1} MB, {} sessions)",
            r.events,
            r.body.len() as f64 / 1e6,
            r.sessions.len()
        )
    };
    let mut rows = Vec::new();
    for (all, label) in [
        (
            true,
            "every event JSON-decoded into the generation's typed `Event`",
        ),
        (
            false,
            "typed turn kinds only (as the backends; others routed on their envelope)",
        ),
    ] {
        let r1 = v1.events as f64 / best[&(0, all)];
        let r2 = v2.events as f64 / best[&(1, all)];
        rows.push(
            Row::info(
                BENCH,
                format!(
                    "events/s over HTTP, recorded stream scaled to many sessions, route + {label} (best of 3)"
                ),
                about(&v2, r2),
            )
            .baseline(format!("V1 {}", about(&v1, r1)), r2 / r1),
        );
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_recorded_streams_scale_to_distinct_sessions() {
        for (generation, list) in [
            (Generation::V1, v1_events().expect("V1 sample")),
            (Generation::V2, v2_events().expect("V2 sample")),
        ] {
            let one = replay(generation, &list, 1).expect("builds");
            let three = replay(generation, &list, 3).expect("builds");
            assert_eq!(three.events, one.events * 3, "{generation:?}");
            assert_eq!(three.routable, one.routable * 3, "{generation:?}");
            assert_eq!(three.sessions.len(), one.sessions.len() * 3);
            assert!(one.routable > one.events / 2, "{generation:?}");
            let text = String::from_utf8(three.body).expect("utf-8");
            assert_eq!(text.matches("\n\n").count(), three.events + 1);
        }
        // OpenCode 2: every event of the captured turns names its session, and each copy is
        // its own durable aggregate.
        let v2 = replay(Generation::V2, &v2_events().unwrap(), 2).unwrap();
        assert_eq!(v2.sessionless, 0);
        let text = String::from_utf8(v2.body).unwrap();
        for s in &v2.sessions {
            assert!(text.contains(&format!("\"aggregateID\":\"{s}\"")), "{s}");
        }
    }

    #[test]
    fn the_v2_replay_is_routed_and_decoded_in_full() {
        // Small: a few copies through the real router and decoders, no OpenCode needed.
        for generation in [Generation::V1, Generation::V2] {
            let list = match generation {
                Generation::V1 => v1_events().unwrap(),
                Generation::V2 => v2_events().unwrap(),
            };
            let rec = replay(generation, &list, 4).unwrap();
            for all in [true, false] {
                route_single_thread(&rec, all)
                    .unwrap_or_else(|e| panic!("{generation:?} all={all}: {e}"));
            }
        }
    }

    /// Benchmark 7 alone, in this process (`run.sh --only 7` runs it in a child of `e2e`):
    /// `cargo test --release -p orch-bench --lib v2::tests::bench7_table -- --ignored
    /// --nocapture` with `OPENCODE_BIN_V1` and `OPENCODE_BIN_V2` set.
    #[test]
    #[ignore = "starts an OpenCode 1 and an OpenCode 2 server; about 3 minutes"]
    fn bench7_table() {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let rows = rt.block_on(bench7()).expect("benchmark 7 runs");
        println!("{}", crate::render(&rows));
    }

    #[test]
    fn spreads_are_median_and_p90() {
        let s = Spread::of((1..=10).map(Duration::from_millis).collect());
        assert_eq!(s.median, Duration::from_millis(6));
        assert_eq!(s.p90, Duration::from_millis(9));
    }
}
