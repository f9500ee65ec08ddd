//! Object pool acquire + release: orch-pool vs opool, object-pool and plain allocation, one
//! object at a time and eight held at once.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use opool::PoolAllocator;
use orch_pool::ObjectPool;

const CAP: usize = 256;

struct VecAlloc;

impl PoolAllocator<Vec<u8>> for VecAlloc {
    fn allocate(&self) -> Vec<u8> {
        Vec::with_capacity(CAP)
    }
    fn reset(&self, v: &mut Vec<u8>) {
        v.clear();
    }
}

/// Runs `op` `iters` times on each of `threads` threads (the calling thread alone for one);
/// the slowest thread's time.
fn on_threads(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        for _ in 0..iters {
            op();
        }
        return start.elapsed();
    }
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .max()
            .unwrap_or_default()
    })
}

fn bench(c: &mut Criterion) {
    let ours = ObjectPool::builder(|| Vec::<u8>::with_capacity(CAP))
        .max_size(200)
        .prewarm(50)
        .reset(Vec::clear)
        .build();
    let theirs = opool::Pool::new_prefilled(200, VecAlloc);
    let object_pool = object_pool::Pool::new(200, || Vec::<u8>::with_capacity(CAP));

    // One object at a time: the acquire+release figure.
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("object_pool/acquire_release/{threads}t"));
        g.bench_function("opool", |b| {
            b.iter_custom(|n| {
                on_threads(threads, n, &|| {
                    let mut v = theirs.get();
                    v.push(black_box(1));
                    black_box(&v);
                })
            })
        });
        g.bench_function("orch_pool", |b| {
            b.iter_custom(|n| {
                on_threads(threads, n, &|| {
                    let mut v = ours.get();
                    v.push(black_box(1));
                    black_box(&v);
                })
            })
        });
        g.bench_function("object_pool", |b| {
            b.iter_custom(|n| {
                on_threads(threads, n, &|| {
                    let mut v = object_pool.pull(|| Vec::with_capacity(CAP));
                    v.clear();
                    v.push(black_box(1));
                    black_box(&v);
                })
            })
        });
        g.bench_function("plain_alloc", |b| {
            b.iter_custom(|n| {
                on_threads(threads, n, &|| {
                    let mut v = Vec::<u8>::with_capacity(CAP);
                    v.push(black_box(1));
                    black_box(&v);
                })
            })
        });
        g.finish();
    }

    // Eight objects held at once, then released: all but one go through the shared free list
    // (our per-thread slot keeps one object). Time per iteration = 8 acquire+release.
    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("object_pool/hold8/{threads}t"));
        g.bench_function("opool", |b| {
            b.iter_custom(|n| on_threads(threads, n, &|| hold8(|| theirs.get())))
        });
        g.bench_function("orch_pool", |b| {
            b.iter_custom(|n| on_threads(threads, n, &|| hold8(|| ours.get())))
        });
        g.bench_function("object_pool", |b| {
            b.iter_custom(|n| {
                on_threads(threads, n, &|| {
                    hold8(|| {
                        let mut v = object_pool.pull(|| Vec::with_capacity(CAP));
                        v.clear();
                        v
                    })
                })
            })
        });
        g.bench_function("plain_alloc", |b| {
            b.iter_custom(|n| on_threads(threads, n, &|| hold8(|| Plain(Vec::with_capacity(CAP)))))
        });
        g.finish();
    }
}

/// A freshly allocated vector, seen through `DerefMut` like the pools' guards.
struct Plain(Vec<u8>);

impl std::ops::Deref for Plain {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Plain {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Takes eight objects from `get`, writes to each, then drops them all.
#[inline(always)]
fn hold8<G: std::ops::DerefMut<Target = Vec<u8>>>(get: impl Fn() -> G) {
    let mut held = [get(), get(), get(), get(), get(), get(), get(), get()];
    for v in &mut held {
        v.push(black_box(1));
    }
    black_box(&held);
}

criterion_group!(benches, bench);
criterion_main!(benches);
