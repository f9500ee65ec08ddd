//! The recorded event stream and the decode + route pipelines measured by
//! `benches/events.rs` and `examples/event_throughput.rs` (one copy, included by path; each
//! target uses a different subset, hence the `dead_code` allowance).
#![allow(dead_code)]

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use orch_opencode::{Delivery, EventRouter, KindSet, RawEvent, RouterConfig, SseDecoder};

pub(crate) const SAMPLES: &str = include_str!("../../tests/data/events-sample.jsonl");
pub(crate) const COPIES: usize = 50;

pub(crate) struct Recorded {
    /// One chunk per event.
    pub(crate) chunks: Vec<Bytes>,
    /// The same body in 64 KiB chunks split anywhere (what a socket read returns).
    pub(crate) big_chunks: Vec<Bytes>,
    pub(crate) sessions: Vec<String>,
}

/// The captured OpenCode 2.1.2 streams (`data:` lines).
pub(crate) const SAMPLES_V2: &[&str] = &[
    include_str!("../../tests/data/v2/events-one-turn-2.1.2.sse"),
    include_str!("../../tests/data/v2/events-write-turn.sse"),
    include_str!("../../tests/data/v2/events-429-retries-then-failed.sse"),
    include_str!("../../tests/data/v2/events-503-twice-then-ok.sse"),
    include_str!("../../tests/data/v2/events-interrupt.sse"),
    include_str!("../../tests/data/v2/events-permission-reject.sse"),
    include_str!("../../tests/data/v2/events-permission-reject-with-message.sse"),
    include_str!("../../tests/data/v2/events-plugin-command.sse"),
    include_str!("../../tests/data/v2/events-subagent.sse"),
];

/// The OpenCode 2 stream: the captured events, [`COPIES`] times with their session ids
/// rewritten, interleaved event by event, framed as OpenCode 2 frames them.
pub(crate) fn recorded_v2() -> Recorded {
    let events: Vec<String> = SAMPLES_V2
        .iter()
        .flat_map(|s| s.lines())
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect();
    copies(events)
}

pub(crate) fn recorded() -> Recorded {
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
    copies(events)
}

/// The captured events in their recorded order (`server.connected` excluded).
pub(crate) fn sample_events() -> Vec<String> {
    SAMPLES
        .lines()
        .map(|l| {
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                #[serde(borrow)]
                event: &'a serde_json::value::RawValue,
            }
            let line: Line<'_> = serde_json::from_str(l).expect("sample line");
            line.event.get().to_owned()
        })
        .filter(|e| !e.contains("\"type\":\"server.connected\""))
        .collect()
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

/// The outside setup: `sessions` concurrent sessions, each replaying the captured stream in
/// its recorded order (every captured session id of lane `j` rewritten to session `j`, same
/// length), merged in a seeded random order until `total` events: the kind changes from one
/// event to the next, as on a live server.
pub(crate) fn replayed(total: usize, sessions: usize) -> Recorded {
    let events = sample_events();
    let originals = session_ids(&events);
    let ids: Vec<String> = (0..sessions)
        .map(|j| {
            let mut id = format!("ses_r{j:04}");
            while id.len() < originals[0].len() {
                id.push('x');
            }
            id
        })
        .collect();
    let lanes: Vec<Vec<Bytes>> = ids
        .iter()
        .map(|id| {
            events
                .iter()
                .map(|e| {
                    let mut text = e.clone();
                    for orig in &originals {
                        text = text.replace(orig.as_str(), &id[..orig.len().min(id.len())]);
                    }
                    Bytes::from(format!("data: {text}\n\n"))
                })
                .collect()
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(18);
    let mut next = vec![0usize; sessions];
    let mut chunks = Vec::with_capacity(total);
    for _ in 0..total {
        let j = rng.usize(..sessions);
        chunks.push(lanes[j][next[j] % events.len()].clone());
        next[j] += 1;
    }
    let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let big_chunks = body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    Recorded {
        chunks,
        big_chunks,
        sessions: ids,
    }
}

/// [`COPIES`] copies of `events` with their session ids rewritten, interleaved.
fn copies(events: Vec<String>) -> Recorded {
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
    let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let big_chunks = body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    Recorded {
        chunks,
        big_chunks,
        sessions,
    }
}

/// The SSE decoder in front of the pipeline.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Framing {
    /// `eventsource-stream` 0.2.3 (what the router used before).
    EventsourceStream,
    /// `orch_opencode::SseDecoder`.
    Ours,
}

/// `eventsource-stream`'s events as a stream of data strings.
pub(crate) fn sse(chunks: &[Bytes]) -> impl futures::Stream<Item = String> + '_ {
    futures::stream::iter(chunks.iter().cloned().map(Ok::<_, Infallible>))
        .eventsource()
        .map(|e| e.expect("valid sse").data)
}

/// Calls `f` with the data of every event of `chunks`, as `framing` decodes it (UTF-8
/// checked either way); returns the number of events.
pub(crate) fn for_each_payload(
    chunks: &[Bytes],
    framing: Framing,
    mut f: impl FnMut(&str),
) -> usize {
    let mut n = 0;
    match framing {
        Framing::EventsourceStream => futures::executor::block_on(async {
            let mut stream = std::pin::pin!(sse(chunks));
            while let Some(data) = stream.next().await {
                f(&data);
                n += 1;
            }
        }),
        Framing::Ours => {
            let mut decoder = SseDecoder::new();
            for chunk in chunks {
                decoder.push(chunk.clone());
                while let Some(event) = decoder.next_event() {
                    f(event.expect("valid sse").data_str().expect("utf-8"));
                    n += 1;
                }
            }
        }
    }
    n
}

#[derive(Clone, Copy)]
pub(crate) enum Decode {
    None,
    Turn,
    All,
}

pub(crate) fn drain(subs: &mut [orch_opencode::Subscription], decode: Decode) -> usize {
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

pub(crate) fn routed(rec: &Recorded, decode: Decode, framing: Framing) -> usize {
    let router = EventRouter::detached(RouterConfig::default());
    let mut subs: Vec<_> = rec
        .sessions
        .iter()
        .map(|s| router.subscribe_session(s))
        .collect();
    let mut delivered = 0;
    let mut i = 0usize;
    for_each_payload(&rec.chunks, framing, |data| {
        match RawEvent::parse_str(data) {
            Ok(raw) => router.publish(raw),
            Err(e) => panic!("{e}"),
        }
        i += 1;
        if i.is_multiple_of(512) {
            delivered += drain(&mut subs, decode);
        }
    });
    delivered + drain(&mut subs, decode)
}

pub(crate) fn routed_payloads(rec: &Recorded, payloads: &[String], decode: Decode) -> usize {
    let router = EventRouter::detached(RouterConfig::default());
    let mut subs: Vec<_> = rec
        .sessions
        .iter()
        .map(|s| router.subscribe_session(s))
        .collect();
    let mut delivered = 0;
    for (i, p) in payloads.iter().enumerate() {
        router.publish(RawEvent::parse_str(p).expect("envelope"));
        if i % 512 == 511 {
            delivered += drain(&mut subs, decode);
        }
    }
    delivered + drain(&mut subs, decode)
}

/// Decode (OpenCode 2 envelopes) + route to one subscriber per session; the deliveries
/// (typed with [`RawEvent::decode_v2`] when `typed`).
pub(crate) fn routed_v2(rec: &Recorded, typed: bool) -> usize {
    let router = EventRouter::detached(RouterConfig::default());
    let mut subs: Vec<_> = rec
        .sessions
        .iter()
        .map(|s| router.subscribe_v2(s, orch_opencode::v2::KindSet::ALL))
        .collect();
    let drain = |subs: &mut [orch_opencode::Subscription]| {
        let mut n = 0;
        for sub in subs.iter_mut() {
            while let Some(d) = sub.try_recv() {
                if let Delivery::Event(raw) = d {
                    if typed {
                        black_box(raw.decode_v2().expect("typed event"));
                    }
                    n += 1;
                }
            }
        }
        n
    };
    let mut delivered = 0;
    let mut i = 0usize;
    for_each_payload(&rec.chunks, Framing::Ours, |data| {
        router.publish(RawEvent::parse_v2_str(data).expect("envelope"));
        i += 1;
        if i.is_multiple_of(512) {
            delivered += drain(&mut subs);
        }
    });
    delivered + drain(&mut subs)
}

/// The naive consumer: every event into a `serde_json::Value`.
pub(crate) fn baseline(rec: &Recorded, framing: Framing) -> usize {
    for_each_payload(&rec.chunks, framing, |data| {
        let v: serde_json::Value = serde_json::from_str(data).expect("json");
        black_box(&v);
    })
}
