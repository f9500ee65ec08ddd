//! Interner intern-hit and resolve: orch-pool vs lasso's ThreadedRodeo.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lasso::ThreadedRodeo;
use orch_pool::Interner;

fn words() -> Vec<String> {
    let roles = [
        "commander",
        "planner",
        "worker",
        "reviewer",
        "status",
        "mode",
    ];
    (0..1000)
        .map(|i| format!("{}-{i}", roles[i % roles.len()]))
        .collect()
}

fn bench(c: &mut Criterion) {
    let words = words();
    let ours = Interner::builder()
        .max_entries(1000)
        .prewarm(words.iter().cloned())
        .build()
        .expect("prewarm fits the bounds");
    let rodeo: ThreadedRodeo = ThreadedRodeo::new();
    for w in &words {
        rodeo.get_or_intern(w.as_str());
    }
    let our_syms: Vec<_> = words.iter().filter_map(|w| ours.get(w)).collect();
    let lasso_syms: Vec<_> = words.iter().filter_map(|w| rodeo.get(w.as_str())).collect();

    let mut g = c.benchmark_group("interner/intern_hit");
    g.throughput(Throughput::Elements(words.len() as u64));
    g.bench_function("orch_pool", |b| {
        b.iter(|| {
            for w in &words {
                black_box(ours.get_or_intern(black_box(w)).ok());
            }
        })
    });
    g.bench_function("lasso", |b| {
        b.iter(|| {
            for w in &words {
                black_box(rodeo.get_or_intern(black_box(w.as_str())));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("interner/resolve");
    g.throughput(Throughput::Elements(words.len() as u64));
    g.bench_function("orch_pool", |b| {
        b.iter(|| {
            for &s in &our_syms {
                black_box(ours.resolve(black_box(s)));
            }
        })
    });
    g.bench_function("lasso", |b| {
        b.iter(|| {
            for s in &lasso_syms {
                black_box(rodeo.resolve(black_box(s)));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
