//! Keyed pool get + return for one key vs deadpool, and vs creating the resource each time.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use orch_pool::{KeyedPool, Manager, Metrics};

/// A stand-in session: creating it allocates, recycling it clears it.
#[derive(Debug)]
struct Session {
    id: String,
    log: Vec<u8>,
}

fn new_session() -> Session {
    Session {
        id: format!("ses_{:016x}", black_box(42u64)),
        log: Vec::with_capacity(256),
    }
}

struct Ours;

impl Manager for Ours {
    type Key = &'static str;
    type Resource = Session;
    type Error = Infallible;
    async fn create(&self, _key: &&'static str) -> Result<Session, Infallible> {
        Ok(new_session())
    }
    async fn recycle(
        &self,
        _: &&'static str,
        s: &mut Session,
        _: &Metrics,
    ) -> Result<(), Infallible> {
        s.log.clear();
        Ok(())
    }
}

struct Dead;

impl deadpool::managed::Manager for Dead {
    type Type = Session;
    type Error = Infallible;
    async fn create(&self) -> Result<Session, Infallible> {
        Ok(new_session())
    }
    async fn recycle(
        &self,
        s: &mut Session,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        s.log.clear();
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let ours = rt.block_on(async {
        KeyedPool::builder(Ours)
            .max_per_key(5)
            .max_reuse(None)
            .build()
            .expect("inside a runtime")
    });
    let dead: deadpool::managed::Pool<Dead> = deadpool::managed::Pool::builder(Dead)
        .max_size(5)
        .build()
        .expect("builds");

    let mut g = c.benchmark_group("keyed/get_return_one_key");
    g.bench_function("orch_pool", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let mut s = ours.get("worker").await.expect("infallible");
                    s.log.push(1);
                    black_box(&s.id);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("deadpool", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let mut s = dead.get().await.expect("infallible");
                    s.log.push(1);
                    black_box(&s.id);
                }
                start.elapsed()
            })
        })
    });
    g.bench_function("create_each_time", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    let mut s = Ours.create(&"worker").await.expect("infallible");
                    s.log.push(1);
                    black_box(&s.id);
                }
                start.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
