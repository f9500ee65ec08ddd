//! orch-agents, each figure beside its baseline in one group:
//!
//! - `mission_round`: a whole mission of 32 independent items on the simulated backend with
//!   zero latency (every turn instant; the journal not fsynced), against the same 65 turns
//!   run straight on the backend without the Commander: what the Commander costs per mission.
//! - `commander_pass`: a scheduling pass after one item finished — the incremental
//!   [`ReadyIndex`] against the full [`Plan::ready_batch`] scan, at 50 and 1,000 items.
//! - `offload`: a diff of two small files handed to `orch-queue`'s work-stealing pool (what
//!   the mission uses for file I/O and diffs) against `tokio::task::spawn_blocking`.
//! - `item_ids`: cloning and hashing an item id (a `String`, what the Commander keeps)
//!   against an `orch-pool` interner symbol: does interning ids pay?

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use orch_agents::{
    AgentBackend, AgentRole, Disposition, EditScope, Latency, Mission, MissionConfig, MissionSpec,
    ReadyIndex, SessionSpec, SimulatedBackend, TurnRequest, ignore_notices,
};
use orch_mvcc::{ItemState, Plan};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const ITEMS: usize = 32;

fn wide_plan(items: usize) -> String {
    let mut plan = String::from("# Wide\n\n");
    for i in 1..=items {
        plan.push_str(&format!("- [ ] T{i}: item {i}\n  - files: f{i}.txt\n"));
    }
    plan
}

fn backend(items: usize) -> SimulatedBackend {
    SimulatedBackend::builder()
        .latency(Latency::Fixed(Duration::ZERO))
        .plan(wide_plan(items))
        .build()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn turn(role: AgentRole, prompt: String) -> TurnRequest {
    TurnRequest {
        role,
        agent: format!("orch-{role}"),
        model: None,
        prompt,
        scope: EditScope::none(),
        item: None,
        attempt: 1,
    }
}

/// The mission's turns without the mission: the plan, then a Worker and a Reviewer turn per
/// item, each on a session opened and closed for it.
async fn raw_turns(backend: &SimulatedBackend, items: usize) {
    let stop = CancellationToken::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turns = vec![turn(AgentRole::Planner, "plan".into())];
    for i in 1..=items {
        turns.push(turn(
            AgentRole::Worker,
            format!("Your item: T{i}: item {i}"),
        ));
        turns.push(turn(AgentRole::Reviewer, format!("Review item T{i}:")));
    }
    for t in turns {
        let session = backend
            .open(SessionSpec {
                role: t.role,
                title: "bench".into(),
                scope: EditScope::none(),
            })
            .await
            .expect("a session");
        let _ = backend
            .run_turn(&session, t, deadline, &stop, &ignore_notices)
            .await;
        let _ = backend.close(session, Disposition::Reusable).await;
    }
}

fn mission_round(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("mission_round");
    group.sample_size(20);
    group.bench_function(BenchmarkId::new("mission", ITEMS), |b| {
        b.iter(|| {
            rt.block_on(async {
                let dir = tempfile::tempdir().expect("a directory");
                let config = MissionConfig {
                    workers: 4,
                    reviewers: 4,
                    journal_fsync: false,
                    store_interval: Duration::ZERO,
                    ..MissionConfig::default()
                };
                let report = Mission::new(
                    Arc::new(backend(ITEMS)),
                    MissionSpec::new("bench", dir.path()).config(config),
                )
                .run()
                .await
                .expect("the mission runs");
                assert!(report.status.is_success());
            });
        });
    });
    group.bench_function(BenchmarkId::new("raw_turns", ITEMS), |b| {
        b.iter(|| rt.block_on(raw_turns(&backend(ITEMS), ITEMS)));
    });
    group.finish();
}

fn commander_pass(c: &mut Criterion) {
    let mut group = c.benchmark_group("commander_pass");
    for items in [50usize, 1_000] {
        let mut plan: Plan = orch_mvcc::parse(&wide_plan(items)).expect("a plan");
        // Half the items done; the pass follows the last one finishing.
        for item in plan.items.iter_mut().take(items / 2) {
            item.state = ItemState::Done;
        }
        let last = plan.items[items / 2 - 1].id.to_string();
        let mut index = ReadyIndex::new();
        black_box(index.batch(&plan, items));
        group.bench_function(BenchmarkId::new("ready_index", items), |b| {
            b.iter(|| {
                index.touch(&last);
                black_box(index.batch(&plan, 8).len())
            });
        });
        group.bench_function(BenchmarkId::new("full_scan", items), |b| {
            b.iter(|| black_box(plan.ready_batch().len().min(8)));
        });
    }
    group.finish();
}

fn diff_work() -> usize {
    let before = "line\n".repeat(200);
    let after = format!("{before}more\n");
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .to_string()
        .len()
}

fn offload(c: &mut Criterion) {
    let rt = runtime();
    let pool = orch_queue::WorkStealingPool::new(2).expect("a pool");
    let mut group = c.benchmark_group("offload");
    group.bench_function("work_stealing_pool", |b| {
        b.iter(|| {
            rt.block_on(async {
                let (tx, rx) = tokio::sync::oneshot::channel();
                pool.spawn(move || {
                    let _ = tx.send(diff_work());
                })
                .map_err(|_| "rejected")
                .expect("accepted");
                black_box(rx.await.expect("a result"))
            })
        });
    });
    group.bench_function("spawn_blocking", |b| {
        b.iter(|| {
            rt.block_on(async {
                black_box(
                    tokio::task::spawn_blocking(diff_work)
                        .await
                        .expect("a result"),
                )
            })
        });
    });
    group.finish();
    let _ = pool.shutdown(orch_queue::ShutdownPolicy::Drain);
}

fn item_ids(c: &mut Criterion) {
    let ids: Vec<String> = (0..64).map(|i| format!("T{i}")).collect();
    let interner = orch_pool::Interner::builder().build().expect("an interner");
    let symbols: Vec<orch_pool::Symbol> = ids
        .iter()
        .map(|id| interner.get_or_intern(id).expect("interned"))
        .collect();
    let mut group = c.benchmark_group("item_ids");
    group.bench_function("string_clone_and_hash", |b| {
        b.iter(|| {
            let mut running: HashSet<String> = HashSet::new();
            for id in &ids {
                running.insert(id.clone());
            }
            black_box(running.len())
        });
    });
    group.bench_function("interned_symbol", |b| {
        b.iter(|| {
            let mut running: HashSet<orch_pool::Symbol> = HashSet::new();
            for s in &symbols {
                running.insert(*s);
            }
            black_box(running.len())
        });
    });
    group.finish();
}

criterion_group!(benches, mission_round, commander_pass, offload, item_ids);
criterion_main!(benches);
