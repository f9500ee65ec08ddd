//! Commit latency and contended throughput of `TodoStore`, each beside a baseline that
//! writes the file with no versioning.
//!
//! `cargo bench -p orch-mvcc --bench store -- --warm-up-time 1 --measurement-time 2`

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use orch_mvcc::{
    Durability, Item, ItemId, ItemState, Plan, StoreError, StoreOptions, TODO_FILE, TodoStore,
    render,
};

fn plan(items: usize) -> Plan {
    let mut plan = Plan::new("benchmark plan");
    for i in 0..items {
        let mut item = Item::new(
            ItemId::new(format!("T{i}")).expect("valid id"),
            format!("Implement part {i} of the feature and its tests"),
        )
        .with_files([format!("src/module_{i}.rs"), format!("tests/module_{i}.rs")]);
        if i > 0 {
            item.deps
                .push(ItemId::new(format!("T{}", i - 1)).expect("valid id"));
        }
        plan.push(item);
    }
    plan
}

/// A directory on tmpfs when there is one, else the system temp dir.
fn tmpfs_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().expect("temp dir")
}

/// A directory on the disk the target dir lives on (not tmpfs).
fn disk_dir() -> tempfile::TempDir {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    fs::create_dir_all(&base).ok();
    tempfile::tempdir_in(&base).unwrap_or_else(|_| tempfile::tempdir().expect("temp dir"))
}

fn open(dir: &Path, durability: Durability) -> TodoStore {
    TodoStore::open_with(
        dir,
        StoreOptions {
            durability,
            ..StoreOptions::default()
        },
    )
    .expect("store opens")
}

fn toggle(state: ItemState) -> ItemState {
    if state == ItemState::Pending {
        ItemState::InProgress
    } else {
        ItemState::Pending
    }
}

type MakeDir = fn() -> tempfile::TempDir;

fn commit_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("commit_latency");
    for items in [10usize, 200, 2_000] {
        let cases: [(&str, Durability, MakeDir); 3] = [
            ("nosync_tmpfs", Durability::NoSync, tmpfs_dir),
            ("nosync_disk", Durability::NoSync, disk_dir),
            ("fsync_disk", Durability::Fsync, disk_dir),
        ];
        for (name, durability, make_dir) in cases {
            let dir = make_dir();
            let store = open(dir.path(), durability);
            store
                .compare_and_swap("bench", 0, plan(items))
                .expect("seed commit");
            let target = format!("T{}", items / 2);
            group.bench_with_input(BenchmarkId::new(name, items), &items, |b, _| {
                b.iter(|| {
                    store
                        .update("bench", |p| {
                            let item = p.item_mut(&target).expect("item exists");
                            item.state = toggle(item.state);
                        })
                        .expect("commit")
                });
            });
        }
        // Baseline: render and overwrite the file in place; no lock file, version or audit.
        let dir = tmpfs_dir();
        let mut base = plan(items);
        let path = dir.path().join(TODO_FILE);
        group.bench_with_input(
            BenchmarkId::new("baseline_write_tmpfs", items),
            &items,
            |b, _| {
                b.iter(|| {
                    let item = &mut base.items[items / 2];
                    item.state = toggle(item.state);
                    fs::write(&path, render(black_box(&base))).expect("write");
                });
            },
        );
    }
    group.finish();
}

const PER_THREAD: usize = 10;
const CONTENDED_ITEMS: usize = 200;

/// `shared`: all threads use clones of one handle (one process); otherwise each thread opens
/// its own handle, as separate processes would.
fn store_round(dir: &Path, shared: Option<&TodoStore>, threads: usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = shared.map_or_else(|| open(dir, Durability::NoSync), Clone::clone);
            std::thread::spawn(move || {
                let id = format!("T{t}");
                for _ in 0..PER_THREAD {
                    loop {
                        match store.update(&format!("w{t}"), |p| {
                            p.item_mut(&id).expect("item exists").attempts += 1;
                        }) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
}

fn baseline_round(path: &Path, shared: &Arc<Mutex<Plan>>, threads: usize) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let shared = Arc::clone(shared);
            let path = path.to_owned();
            std::thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    let mut plan = shared.lock().expect("lock");
                    plan.items[t].attempts += 1;
                    fs::write(&path, render(&plan)).expect("write");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer thread");
    }
}

fn contended_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended_throughput");
    for threads in [2usize, 4, 8] {
        group.throughput(Throughput::Elements((threads * PER_THREAD) as u64));
        let dir = tmpfs_dir();
        open(dir.path(), Durability::NoSync)
            .compare_and_swap("bench", 0, plan(CONTENDED_ITEMS))
            .expect("seed commit");
        group.bench_with_input(
            BenchmarkId::new("store_handle_per_thread", threads),
            &threads,
            |b, &threads| b.iter(|| store_round(dir.path(), None, threads)),
        );
        let one = open(dir.path(), Durability::NoSync);
        group.bench_with_input(
            BenchmarkId::new("store_shared_handle", threads),
            &threads,
            |b, &threads| b.iter(|| store_round(dir.path(), Some(&one), threads)),
        );
        let base_dir = tmpfs_dir();
        let path = base_dir.path().join(TODO_FILE);
        let shared = Arc::new(Mutex::new(plan(CONTENDED_ITEMS)));
        group.bench_with_input(
            BenchmarkId::new("baseline_lock_rewrite", threads),
            &threads,
            |b, &threads| b.iter(|| baseline_round(&path, &shared, threads)),
        );
    }
    group.finish();
}

fn parse_render(c: &mut Criterion) {
    let mut group = c.benchmark_group("grammar");
    for items in [200usize, 2_000] {
        let p = plan(items);
        let text = render(&p);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("parse", items), &text, |b, t| {
            b.iter(|| orch_mvcc::parse(black_box(t)).expect("parses"));
        });
        group.bench_with_input(BenchmarkId::new("render", items), &p, |b, p| {
            b.iter(|| render(black_box(p)));
        });
        group.bench_with_input(BenchmarkId::new("blake3_baseline", items), &text, |b, t| {
            b.iter(|| blake3::hash(black_box(t.as_bytes())));
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = commit_latency, contended_throughput, parse_render
}
criterion_main!(benches);
