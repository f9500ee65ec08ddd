//! Decode + route throughput on a recorded event stream, against a `serde_json::Value`
//! baseline; and session creation against a real server.
//!
//! The stream is built from the 383 captured events: 50 copies with their session ids
//! rewritten (600 distinct sessions), interleaved event by event, framed as OpenCode frames
//! them (`data: <json>\n\n`, one chunk per event). Every variant runs the same SSE decoder
//! (`eventsource-stream`) on one thread.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use orch_opencode::{Delivery, EventKind, EventRouter, KindSet, RawEvent, RouterConfig};

const SAMPLES: &str = include_str!("../tests/data/events-sample.jsonl");
const COPIES: usize = 50;

struct Recorded {
    chunks: Vec<Bytes>,
    sessions: Vec<String>,
}

fn recorded() -> Recorded {
    let events: Vec<String> = SAMPLES
        .lines()
        .map(|l| {
            // The event text exactly as OpenCode sent it (key order included).
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                #[serde(borrow)]
                event: &'a serde_json::value::RawValue,
            }
            let line: Line<'_> = serde_json::from_str(l).expect("sample line");
            line.event.get().to_owned()
        })
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
    let mut chunks = Vec::with_capacity(events.len() * COPIES);
    let mut sessions = Vec::new();
    for copy in 0..COPIES {
        for (i, orig) in originals.iter().enumerate() {
            // Same length as the original id, so the JSON stays realistic.
            let mut id = format!("ses_c{copy:03}s{i:03}");
            while id.len() < orig.len() {
                id.push('x');
            }
            if copy == 0 || !sessions.contains(&id) {
                sessions.push(id);
            }
        }
    }
    for e in &events {
        for copy in 0..COPIES {
            let mut text = e.clone();
            for (i, orig) in originals.iter().enumerate() {
                let mut id = format!("ses_c{copy:03}s{i:03}");
                while id.len() < orig.len() {
                    id.push('x');
                }
                text = text.replace(orig.as_str(), &id);
            }
            chunks.push(Bytes::from(format!("data: {text}\n\n")));
        }
    }
    Recorded { chunks, sessions }
}

fn sse(chunks: &[Bytes]) -> impl futures::Stream<Item = String> + '_ {
    futures::stream::iter(chunks.iter().cloned().map(Ok::<_, Infallible>))
        .eventsource()
        .map(|e| e.expect("valid sse").data)
}

#[derive(Clone, Copy)]
enum Decode {
    None,
    Turn,
    All,
}

fn drain(subs: &mut [orch_opencode::Subscription], decode: Decode) -> usize {
    let mut n = 0;
    let turn = KindSet::turn();
    for sub in subs.iter_mut() {
        while let Some(d) = sub.try_recv() {
            if let Delivery::Event(raw) = d {
                let wanted = match decode {
                    Decode::None => false,
                    Decode::Turn => turn.contains(raw.kind()),
                    Decode::All => true,
                };
                if wanted {
                    black_box(raw.decode().expect("typed event"));
                }
                n += 1;
            }
        }
    }
    n
}

fn routed(rec: &Recorded, decode: Decode) -> usize {
    let router = EventRouter::detached(RouterConfig::default());
    let mut subs: Vec<_> = rec
        .sessions
        .iter()
        .map(|s| router.subscribe_session(s))
        .collect();
    let mut delivered = 0;
    futures::executor::block_on(async {
        let mut stream = std::pin::pin!(sse(&rec.chunks));
        let mut i = 0usize;
        while let Some(data) = stream.next().await {
            match RawEvent::parse(data) {
                Ok(raw) => router.publish(raw),
                Err(e) => panic!("{e}"),
            }
            i += 1;
            if i.is_multiple_of(512) {
                delivered += drain(&mut subs, decode);
            }
        }
    });
    delivered + drain(&mut subs, decode)
}

fn routed_payloads(rec: &Recorded, payloads: &[String], decode: Decode) -> usize {
    let router = EventRouter::detached(RouterConfig::default());
    let mut subs: Vec<_> = rec
        .sessions
        .iter()
        .map(|s| router.subscribe_session(s))
        .collect();
    let mut delivered = 0;
    for (i, p) in payloads.iter().enumerate() {
        // The clone stands for the String the SSE decoder would hand over.
        router.publish(RawEvent::parse(p.clone()).expect("envelope"));
        if i % 512 == 511 {
            delivered += drain(&mut subs, decode);
        }
    }
    delivered + drain(&mut subs, decode)
}

fn baseline(rec: &Recorded) -> usize {
    futures::executor::block_on(async {
        let mut stream = std::pin::pin!(sse(&rec.chunks));
        let mut n = 0;
        while let Some(data) = stream.next().await {
            let v: serde_json::Value = serde_json::from_str(&data).expect("json");
            black_box(&v);
            n += 1;
        }
        n
    })
}

fn bench_events(c: &mut Criterion) {
    let rec = recorded();
    let n = rec.chunks.len();
    // Events without a session (heartbeats, bootstrap noise) have no subscriber here.
    let expected = routed(&rec, Decode::None);
    assert!(expected > n * 8 / 10, "{expected} of {n} delivered");
    assert_eq!(baseline(&rec), n);

    let mut g = c.benchmark_group("decode_and_route");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("serde_json_value_baseline", n), |b| {
        b.iter(|| baseline(&rec))
    });
    g.bench_function(BenchmarkId::new("envelope_route", n), |b| {
        b.iter(|| routed(&rec, Decode::None))
    });
    g.bench_function(
        BenchmarkId::new("envelope_route_typed_turn_kinds", n),
        |b| b.iter(|| routed(&rec, Decode::Turn)),
    );
    g.bench_function(BenchmarkId::new("envelope_route_typed_all", n), |b| {
        b.iter(|| routed(&rec, Decode::All))
    });
    g.finish();

    // The same pipeline with the SSE framing done beforehand (payload strings ready).
    let payloads: Vec<String> = futures::executor::block_on(sse(&rec.chunks).collect());
    let mut g = c.benchmark_group("route_without_sse_framing");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("serde_json_value_baseline", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(serde_json::from_str::<serde_json::Value>(p).expect("json"));
            }
        })
    });
    for (name, decode) in [
        ("envelope_route", Decode::None),
        ("envelope_route_typed_turn_kinds", Decode::Turn),
        ("envelope_route_typed_all", Decode::All),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| routed_payloads(&rec, &payloads, decode))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("envelope_only");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("raw_event_envelope", |b| {
        b.iter(|| {
            for p in &payloads {
                let raw = RawEvent::parse(p.clone()).expect("envelope");
                black_box(raw.kind() == EventKind::SessionIdle);
            }
        })
    });
    g.finish();
}

criterion_group! {
    name = events;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_events
}

fn main() {
    events();
    Criterion::default().configure_from_args().final_summary();
}
