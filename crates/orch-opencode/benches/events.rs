//! Decode + route throughput on a recorded event stream, against a `serde_json::Value`
//! baseline; and session creation against a real server.
//!
//! The stream is built from the 383 captured events: 50 copies with their session ids
//! rewritten (600 distinct sessions), interleaved event by event, framed as OpenCode frames
//! them (`data: <json>\n\n`, one chunk per event). Every variant runs the same SSE decoder
//! (`eventsource-stream`) on one thread.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use futures::StreamExt;
use orch_opencode::{EventKind, RawEvent};

#[path = "support/pipelines.rs"]
mod pipelines;

use pipelines::*;
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
