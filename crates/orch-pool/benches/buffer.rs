//! Buffer pool get + write + release vs a fresh `BytesMut::with_capacity`, per class.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::{BufMut, BytesMut};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use orch_pool::{BufferPool, DEFAULT_CLASSES};

fn bench(c: &mut Criterion) {
    let pool = BufferPool::builder().prewarm(4).build();
    let mut g = c.benchmark_group("buffer/get_write_release");
    for size in DEFAULT_CLASSES {
        g.bench_with_input(BenchmarkId::new("orch_pool", size), &size, |b, &size| {
            b.iter(|| {
                let mut buf = pool.get(black_box(size));
                buf.put_slice(b"hello, session");
                black_box(&buf);
            })
        });
        g.bench_with_input(
            BenchmarkId::new("fresh_bytesmut", size),
            &size,
            |b, &size| {
                b.iter(|| {
                    let mut buf = BytesMut::with_capacity(black_box(size));
                    buf.put_slice(b"hello, session");
                    black_box(&buf);
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
