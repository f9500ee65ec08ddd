//! SSE framing, and decode + route throughput on a recorded event stream, each against a
//! baseline in the same group.
//!
//! The stream is built from the 383 captured events: 50 copies with their session ids
//! rewritten (550 distinct sessions), interleaved event by event, framed as OpenCode frames
//! them (`data: <json>\n\n`), either one chunk per event or 64 KiB chunks cut anywhere (what a
//! socket read returns). Everything runs on one thread.
//!
//! * `sse_framing`: our `SseDecoder` against `eventsource-stream` 0.2.3 (what the router
//!   used before), both handing over every event's data as checked UTF-8 text.
//! * `decode_and_route`: SSE framing + envelope + routing to one subscriber per session,
//!   with either decoder, and a `serde_json::Value`-per-event baseline.
//! * `route_without_sse_framing`, `envelope_only`: the same without the framing (the
//!   envelope against a borrowing `serde_json` parse of the same three fields).
//! * `replayed_decode_and_route`: the shape of `orch-bench`'s benchmark 3 in memory: 50
//!   sessions each replaying the capture in its recorded order, interleaved (20,000
//!   events), every event framed, routed and decoded into its typed `Event`, against
//!   `eventsource-stream` + a `serde_json::Value` per event.
//! * `decode_and_route_v2`: the captured OpenCode 2.1.2 streams (`tests/data/v2`, 50 copies
//!   with rewritten session ids), framed, envelopes read with `RawEvent::parse_v2_str`
//!   (`data`, `durable`) and routed (replays checked), against a `serde_json::Value` per
//!   event.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use futures::StreamExt;
use orch_opencode::{EventKind, RawEvent};

#[path = "support/pipelines.rs"]
mod pipelines;

use pipelines::*;

fn bench_framing(c: &mut Criterion) {
    let rec = recorded();
    let n = rec.chunks.len();
    let mut g = c.benchmark_group("sse_framing");
    g.throughput(Throughput::Elements(n as u64));
    for (input, chunks) in [
        ("chunk_per_event", &rec.chunks),
        ("64KiB_chunks", &rec.big_chunks),
    ] {
        let chunks: &[Bytes] = chunks;
        assert_eq!(for_each_payload(chunks, Framing::Ours, |_| {}), n);
        assert_eq!(
            for_each_payload(chunks, Framing::EventsourceStream, |_| {}),
            n
        );
        g.bench_function(BenchmarkId::new("eventsource_stream", input), |b| {
            b.iter(|| for_each_payload(chunks, Framing::EventsourceStream, |d| _ = black_box(d)))
        });
        g.bench_function(BenchmarkId::new("orch_sse_decoder", input), |b| {
            b.iter(|| for_each_payload(chunks, Framing::Ours, |d| _ = black_box(d)))
        });
    }
    g.finish();
}

fn bench_events(c: &mut Criterion) {
    let rec = recorded();
    let n = rec.chunks.len();
    // Events without a session (heartbeats, bootstrap noise) have no subscriber here.
    let expected = routed(&rec, Decode::None, Framing::Ours);
    assert!(expected > n * 8 / 10, "{expected} of {n} delivered");
    assert_eq!(
        routed(&rec, Decode::None, Framing::EventsourceStream),
        expected
    );
    assert_eq!(baseline(&rec, Framing::EventsourceStream), n);

    let mut g = c.benchmark_group("decode_and_route");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(
        BenchmarkId::new("eventsource_stream_serde_json_value_baseline", n),
        |b| b.iter(|| baseline(&rec, Framing::EventsourceStream)),
    );
    g.bench_function(
        BenchmarkId::new("eventsource_stream_envelope_route", n),
        |b| b.iter(|| routed(&rec, Decode::None, Framing::EventsourceStream)),
    );
    g.bench_function(BenchmarkId::new("envelope_route", n), |b| {
        b.iter(|| routed(&rec, Decode::None, Framing::Ours))
    });
    g.bench_function(
        BenchmarkId::new("envelope_route_typed_turn_kinds", n),
        |b| b.iter(|| routed(&rec, Decode::Turn, Framing::Ours)),
    );
    g.bench_function(BenchmarkId::new("envelope_route_typed_all", n), |b| {
        b.iter(|| routed(&rec, Decode::All, Framing::Ours))
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
    // Baseline: a borrowing serde_json parse of the same envelope (type, id, properties).
    g.bench_function("serde_json_borrowed_envelope_baseline", |b| {
        #[derive(serde::Deserialize)]
        struct Envelope<'a> {
            #[serde(rename = "type", borrow)]
            kind: std::borrow::Cow<'a, str>,
            #[serde(borrow, default)]
            id: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow, default)]
            properties: Option<&'a serde_json::value::RawValue>,
        }
        b.iter(|| {
            for p in &payloads {
                let env: Envelope<'_> = serde_json::from_str(p).expect("envelope");
                black_box((env.kind == "session.idle", env.id, env.properties));
            }
        })
    });
    g.bench_function("raw_event_envelope", |b| {
        b.iter(|| {
            for p in &payloads {
                let raw = RawEvent::parse_str(p).expect("envelope");
                black_box(raw.kind() == EventKind::SessionIdle);
            }
        })
    });
    g.finish();
}

/// The replayed stream: kinds change from one event to the next.
fn bench_replayed(c: &mut Criterion) {
    let rec = replayed(20_000, 50);
    let n = rec.chunks.len();
    // Events without a session (bootstrap noise) have no subscriber here.
    let delivered = routed(&rec, Decode::All, Framing::Ours);
    assert!(delivered > n * 8 / 10, "{delivered} of {n} delivered");
    let mut g = c.benchmark_group("replayed_decode_and_route");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(
        BenchmarkId::new("eventsource_stream_serde_json_value_baseline", n),
        |b| b.iter(|| baseline(&rec, Framing::EventsourceStream)),
    );
    g.bench_function(BenchmarkId::new("envelope_route_typed_all", n), |b| {
        b.iter(|| routed(&rec, Decode::All, Framing::Ours))
    });
    g.finish();
}

/// The OpenCode 2 stream (`data` envelopes with `durable`), framed and routed.
fn bench_events_v2(c: &mut Criterion) {
    let rec = recorded_v2();
    let n = rec.chunks.len();
    let expected = routed_v2(&rec, false);
    assert!(expected > n * 8 / 10, "{expected} of {n} delivered");
    assert_eq!(routed_v2(&rec, true), expected);
    assert_eq!(baseline(&rec, Framing::Ours), n);
    let mut g = c.benchmark_group("decode_and_route_v2");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("serde_json_value_baseline", n), |b| {
        b.iter(|| baseline(&rec, Framing::Ours))
    });
    g.bench_function(BenchmarkId::new("envelope_route", n), |b| {
        b.iter(|| routed_v2(&rec, false))
    });
    g.bench_function(BenchmarkId::new("envelope_route_typed_all", n), |b| {
        b.iter(|| routed_v2(&rec, true))
    });
    g.finish();
}

criterion_group! {
    name = events;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_framing, bench_events, bench_replayed, bench_events_v2
}

fn main() {
    events();
    Criterion::default().configure_from_args().final_summary();
}
