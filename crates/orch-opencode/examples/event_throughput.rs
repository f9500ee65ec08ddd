//! Event decode + route throughput measured in **CPU time** of the measuring thread (from
//! `/proc/thread-self/schedstat`), so that a machine busy with other work does not distort
//! the per-core figure the way wall-clock benchmarks are distorted. Same pipelines as
//! `benches/events.rs`.
//!
//! `cargo run --release -p orch-opencode --example event_throughput`

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use orch_opencode::{Delivery, EventRouter, KindSet, RawEvent, RouterConfig};

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

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn measure(name: &str, n: usize, rounds: usize, mut f: impl FnMut() -> usize) {
    black_box(f());
    let mut best_cpu = f64::MAX;
    let mut best_wall = f64::MAX;
    for _ in 0..rounds {
        let (c0, w0) = (thread_cpu_ns(), Instant::now());
        black_box(f());
        let cpu = (thread_cpu_ns() - c0) as f64 / 1e9;
        let wall = w0.elapsed().as_secs_f64();
        best_cpu = best_cpu.min(cpu);
        best_wall = best_wall.min(wall);
    }
    println!(
        "{name:<48} {:>10.0} events/CPU-s {:>10.0} events/wall-s",
        n as f64 / best_cpu,
        n as f64 / best_wall
    );
}

fn main() {
    let rec = recorded();
    let n = rec.chunks.len();
    let payloads: Vec<String> = futures::executor::block_on(sse(&rec.chunks).collect());
    println!(
        "{n} events, {} sessions (best of 15 rounds)",
        rec.sessions.len()
    );
    measure("sse + serde_json::Value (baseline)", n, 15, || {
        baseline(&rec)
    });
    measure("sse + envelope + route", n, 15, || {
        routed(&rec, Decode::None)
    });
    measure("sse + envelope + route + typed turn kinds", n, 15, || {
        routed(&rec, Decode::Turn)
    });
    measure("sse + envelope + route + typed all", n, 15, || {
        routed(&rec, Decode::All)
    });
    measure("serde_json::Value (baseline, no sse)", n, 15, || {
        for p in &payloads {
            black_box(serde_json::from_str::<serde_json::Value>(p).expect("json"));
        }
        n
    });
    measure("envelope + route (no sse)", n, 15, || {
        routed_payloads(&rec, &payloads, Decode::None)
    });
    measure(
        "envelope + route + typed turn kinds (no sse)",
        n,
        15,
        || routed_payloads(&rec, &payloads, Decode::Turn),
    );
    measure("envelope + route + typed all (no sse)", n, 15, || {
        routed_payloads(&rec, &payloads, Decode::All)
    });
}
