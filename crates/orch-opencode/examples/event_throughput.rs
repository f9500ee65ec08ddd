//! Event decode + route throughput measured in **CPU time** of the measuring thread (from
//! `/proc/thread-self/schedstat`), so that a machine busy with other work does not distort
//! the per-core figure the way wall-clock benchmarks are distorted. Same pipelines as
//! `benches/events.rs`: SSE framing alone (`eventsource-stream` against our `SseDecoder`),
//! then framing + envelope + routing with either decoder, then without framing.
//!
//! `cargo run --release -p orch-opencode --example event_throughput [-- --replayed]`: the
//! synthetic stream (each captured event 50 times in a row), or `--replayed`: 200,000
//! events of 50 sessions each replaying the capture in its recorded order (the kind changes
//! from one event to the next, as on a live server; `orch-bench`'s benchmark 3 serves the
//! same shape over HTTP).
//!
//! `-- --per-kind`: envelope and typed decode per event kind (captured events, in cache).
//! `-- --loop-envelope` / `-- --loop-decode`: one stage alone, 4,000 passes over the
//! captured events, to compare builds with `perf stat -e task-clock`.

use std::hint::black_box;
use std::time::Instant;

use futures::StreamExt;
use orch_opencode::RawEvent;

#[path = "../benches/support/pipelines.rs"]
mod pipelines;

use pipelines::*;
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Best of `rounds` rounds; each round repeats `f` for at least 100 ms, since the CPU clock
/// of `schedstat` only advances at scheduler ticks.
fn measure(name: &str, n: usize, rounds: usize, mut f: impl FnMut() -> usize) {
    let w0 = Instant::now();
    black_box(f());
    let once = w0.elapsed().as_secs_f64().max(1e-6);
    let reps = (0.1 / once).ceil().max(1.0) as usize;
    let mut best_cpu = f64::MAX;
    let mut best_wall = f64::MAX;
    for _ in 0..rounds {
        let (c0, w0) = (thread_cpu_ns(), Instant::now());
        for _ in 0..reps {
            black_box(f());
        }
        let cpu = (thread_cpu_ns() - c0) as f64 / 1e9 / reps as f64;
        let wall = w0.elapsed().as_secs_f64() / reps as f64;
        best_cpu = best_cpu.min(cpu);
        best_wall = best_wall.min(wall);
    }
    println!(
        "{name:<56} {:>10.0} events/CPU-s {:>10.0} events/wall-s",
        n as f64 / best_cpu,
        n as f64 / best_wall
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(stage) = args.iter().find_map(|a| a.strip_prefix("--loop-")) {
        stage_loop(stage);
        return;
    }
    if args.iter().any(|a| a == "--per-kind") {
        per_kind();
        return;
    }
    let rec = if args.iter().any(|a| a == "--replayed") {
        replayed(200_000, 50)
    } else {
        recorded()
    };
    let n = rec.chunks.len();
    let payloads: Vec<String> = futures::executor::block_on(sse(&rec.chunks).collect());
    println!(
        "{n} events, {} sessions (best of 7 rounds of ≥ 100 ms)",
        rec.sessions.len()
    );
    for (name, chunks) in [
        ("one chunk per event", &rec.chunks),
        ("64 KiB chunks", &rec.big_chunks),
    ] {
        measure(&format!("eventsource-stream framing, {name}"), n, 7, || {
            for_each_payload(chunks, Framing::EventsourceStream, |d| _ = black_box(d))
        });
        measure(&format!("SseDecoder framing, {name}"), n, 7, || {
            for_each_payload(chunks, Framing::Ours, |d| _ = black_box(d))
        });
    }
    for (name, framing) in [
        ("eventsource-stream", Framing::EventsourceStream),
        ("SseDecoder", Framing::Ours),
    ] {
        measure(
            &format!("{name} + serde_json::Value (baseline)"),
            n,
            7,
            || baseline(&rec, framing),
        );
        measure(&format!("{name} + envelope + route"), n, 7, || {
            routed(&rec, Decode::None, framing)
        });
        measure(
            &format!("{name} + envelope + route + typed turn kinds"),
            n,
            7,
            || routed(&rec, Decode::Turn, framing),
        );
        measure(
            &format!("{name} + envelope + route + typed all"),
            n,
            7,
            || routed(&rec, Decode::All, framing),
        );
    }
    measure("serde_json::Value (baseline, no sse)", n, 7, || {
        for p in &payloads {
            black_box(serde_json::from_str::<serde_json::Value>(p).expect("json"));
        }
        n
    });
    measure("envelope + route (no sse)", n, 7, || {
        routed_payloads(&rec, &payloads, Decode::None)
    });
    measure(
        "envelope + route + typed turn kinds (no sse)",
        n,
        15,
        || routed_payloads(&rec, &payloads, Decode::Turn),
    );
    measure("envelope + route + typed all (no sse)", n, 7, || {
        routed_payloads(&rec, &payloads, Decode::All)
    });
}

/// One stage alone, 4,000 passes over the captured events.
fn stage_loop(stage: &str) {
    let events = sample_events();
    let raws: Vec<RawEvent> = events
        .iter()
        .map(|e| RawEvent::parse_str(e).expect("envelope"))
        .collect();
    for _ in 0..4000 {
        if stage == "envelope" {
            for e in &events {
                black_box(RawEvent::parse_str(black_box(e)).expect("envelope"));
            }
        } else {
            for r in &raws {
                black_box(r.decode().expect("typed event"));
            }
        }
    }
}

/// Envelope and typed decode per kind, best of 5 rounds of about 20,000 events each.
fn per_kind() {
    let events = sample_events();
    let mut by: std::collections::BTreeMap<String, Vec<RawEvent>> = Default::default();
    for e in &events {
        let raw = RawEvent::parse_str(e).unwrap();
        by.entry(raw.kind_str().to_owned()).or_default().push(raw);
    }
    let mut total = 0.0;
    let mut total_env = 0.0;
    for (k, v) in &by {
        let reps = 20000 / v.len() + 1;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                for r in v {
                    black_box(r.decode().unwrap());
                }
            }
            best = best.min(t.elapsed().as_secs_f64() / (reps * v.len()) as f64);
        }
        let mut benv = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                for r in v {
                    black_box(RawEvent::parse_str(r.json()).unwrap());
                }
            }
            benv = benv.min(t.elapsed().as_secs_f64() / (reps * v.len()) as f64);
        }
        total += best * v.len() as f64;
        total_env += benv * v.len() as f64;
        println!(
            "{k:<24} n={:<4} len={:<5} decode {:>6.0} ns  envelope {:>5.0} ns",
            v.len(),
            v.iter().map(|r| r.json().len()).sum::<usize>() / v.len(),
            best * 1e9,
            benv * 1e9
        );
    }
    println!(
        "mean decode {:.0} ns, mean envelope {:.0} ns",
        total / events.len() as f64 * 1e9,
        total_env / events.len() as f64 * 1e9
    );
}
