//! Acquire + release, uncontended and contended, against `tokio::sync::Semaphore`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::FutureExt;
use orch_core::{AgentRole, ConcurrencyController, LimitConfig, Priority};
use tokio::sync::Semaphore;

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("acquire_release_uncontended");
    let ctl = ConcurrencyController::builder()
        .limit(AgentRole::Worker, LimitConfig::new(10))
        .build();
    let slots = ctl.slots(AgentRole::Worker);
    let sem = Arc::new(Semaphore::new(10));

    g.bench_function("orch_core_try_acquire", |b| {
        b.iter(|| drop(black_box(slots.try_acquire(Priority::Normal))))
    });
    g.bench_function("tokio_semaphore_try_acquire_owned", |b| {
        b.iter(|| drop(black_box(Arc::clone(&sem).try_acquire_owned())))
    });
    g.bench_function("orch_core_acquire", |b| {
        b.iter(|| drop(black_box(slots.acquire(Priority::Normal).now_or_never())))
    });
    g.bench_function("tokio_semaphore_acquire_owned", |b| {
        b.iter(|| drop(black_box(Arc::clone(&sem).acquire_owned().now_or_never())))
    });
    g.bench_function("orch_core_acquire_by_key", |b| {
        b.iter(|| {
            drop(black_box(
                ctl.acquire(AgentRole::Worker, Priority::Normal)
                    .now_or_never(),
            ))
        })
    });
    g.finish();
}

const TASKS: usize = 8;
const ROUNDS: usize = 200;
const LIMIT: usize = 2;

fn contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("acquire_release_contended_8_tasks_limit_2");
    g.throughput(Throughput::Elements((TASKS * ROUNDS) as u64));
    let ctl = ConcurrencyController::builder()
        .limit(AgentRole::Worker, LimitConfig::new(LIMIT))
        .build();
    let slots = ctl.slots(AgentRole::Worker);
    g.bench_function("orch_core", |b| {
        b.iter(|| {
            rt.block_on(async {
                let hs: Vec<_> = (0..TASKS)
                    .map(|i| {
                        let slots = Arc::clone(&slots);
                        let prio = [Priority::High, Priority::Normal][i % 2];
                        tokio::spawn(async move {
                            for _ in 0..ROUNDS {
                                let t = slots.acquire(prio).await.unwrap();
                                tokio::task::yield_now().await;
                                drop(t);
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.await.unwrap();
                }
            })
        })
    });
    let sem = Arc::new(Semaphore::new(LIMIT));
    g.bench_function("tokio_semaphore", |b| {
        b.iter(|| {
            rt.block_on(async {
                let hs: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let sem = Arc::clone(&sem);
                        tokio::spawn(async move {
                            for _ in 0..ROUNDS {
                                let t = Arc::clone(&sem).acquire_owned().await.unwrap();
                                tokio::task::yield_now().await;
                                drop(t);
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.await.unwrap();
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, uncontended, contended);
criterion_main!(benches);
