//! Circuit-breaker call overhead, closed and open, against `recloser`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use orch_core::{BreakerConfig, CircuitBreaker};
use recloser::Recloser;

fn ours() -> CircuitBreaker {
    // Same shape as `theirs`: the open state must outlast the whole bench run.
    let config = BreakerConfig {
        recovery: Duration::from_secs(3600),
        ..BreakerConfig::default()
    };
    CircuitBreaker::new("bench", config)
}

fn theirs() -> Recloser {
    Recloser::custom()
        .error_rate(0.5)
        .closed_len(10)
        .half_open_len(2)
        .open_wait(Duration::from_secs(3600))
        .build()
}

fn closed(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_call");
    let b = ours();
    g.bench_function("orch_core", |bench| {
        bench.iter(|| black_box(b.call_sync(|| Ok::<_, ()>(black_box(1u64)))))
    });
    let r = theirs();
    g.bench_function("recloser", |bench| {
        bench.iter(|| black_box(r.call(|| Ok::<_, ()>(black_box(1u64)))))
    });
    g.finish();
}

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_open_reject");
    let b = ours();
    for _ in 0..5 {
        let _ = b.call_sync(|| Err::<(), _>(()));
    }
    assert!(b.try_acquire().is_err(), "ours must be open");
    g.bench_function("orch_core", |bench| {
        bench.iter(|| black_box(b.call_sync(|| Ok::<_, ()>(black_box(1u64)))).is_err())
    });
    let r = theirs();
    for _ in 0..20 {
        let _ = r.call(|| Err::<(), _>(()));
    }
    assert!(r.call(|| Ok::<_, ()>(())).is_err(), "recloser must be open");
    g.bench_function("recloser", |bench| {
        bench.iter(|| black_box(r.call(|| Ok::<_, ()>(black_box(1u64)))).is_err())
    });
    // Floor for both: an open breaker must read the clock on every call.
    g.bench_function("instant_now_only", |bench| {
        bench.iter(|| black_box(std::time::Instant::now()))
    });
    g.bench_function("orch_core_try_acquire", |bench| {
        bench.iter(|| black_box(b.try_acquire().is_err()))
    });
    g.finish();
}

fn contended_closed(c: &mut Criterion) {
    // Two threads calling the same closed breaker (the machine has 2 cores).
    const CALLS: u64 = 10_000;
    let mut g = c.benchmark_group("breaker_closed_call_2_threads");
    g.throughput(criterion::Throughput::Elements(2 * CALLS));
    let b = ours();
    g.bench_function("orch_core", |bench| {
        bench.iter(|| {
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for i in 0..CALLS {
                            let _ = black_box(b.call_sync(|| Ok::<_, ()>(i)));
                        }
                    });
                }
            })
        })
    });
    let r = theirs();
    g.bench_function("recloser", |bench| {
        bench.iter(|| {
            std::thread::scope(|s| {
                for _ in 0..2 {
                    s.spawn(|| {
                        for i in 0..CALLS {
                            let _ = black_box(r.call(|| Ok::<_, ()>(i)));
                        }
                    });
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, closed, open, contended_closed);
criterion_main!(benches);
