//! Stress: millions of tiny tasks, fork-join trees, and shutdown under load.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use orch_queue::{PoolBuilder, ShutdownPolicy, Spawner, WorkStealingPool};

#[test]
fn a_million_tasks_from_four_submitters_run_exactly_once() {
    const PER: usize = 250_000;
    let pool = WorkStealingPool::new(4).unwrap();
    let hits: Arc<Vec<AtomicU8>> = Arc::new((0..4 * PER).map(|_| AtomicU8::new(0)).collect());
    std::thread::scope(|s| {
        for sub in 0..4 {
            let (spawner, hits) = (pool.spawner(), Arc::clone(&hits));
            s.spawn(move || {
                for i in sub * PER..(sub + 1) * PER {
                    let hits = Arc::clone(&hits);
                    spawner
                        .spawn(move || {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        })
                        .unwrap();
                }
            });
        }
    });
    let report = pool.shutdown(ShutdownPolicy::Drain).unwrap();
    let wrong = hits
        .iter()
        .filter(|h| h.load(Ordering::Relaxed) != 1)
        .count();
    assert_eq!(wrong, 0);
    assert_eq!(report.completed, 4 * PER as u64);
    assert_eq!(report.threads_joined, 4);
}

fn fan_out(spawner: &Spawner, depth: u32, count: &Arc<AtomicU64>) {
    count.fetch_add(1, Ordering::Relaxed);
    if depth == 0 {
        return;
    }
    for _ in 0..2 {
        let (s, c) = (spawner.clone(), Arc::clone(count));
        spawner.spawn(move || fan_out(&s, depth - 1, &c)).unwrap();
    }
}

#[test]
fn a_million_tasks_spawned_from_tasks_all_run() {
    let pool = WorkStealingPool::new(3).unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let (s, c) = (pool.spawner(), Arc::clone(&count));
    pool.spawn(move || fan_out(&s, 19, &c)).unwrap();
    let report = pool.shutdown(ShutdownPolicy::Drain).unwrap();
    assert_eq!(count.load(Ordering::Relaxed), (1 << 20) - 1);
    assert_eq!(report.completed, (1 << 20) - 1);
    let stats = pool.stats();
    assert_eq!(stats.queued(), 0);
}

/// Counts whether its task ran or was dropped unrun.
struct Tracked {
    ran: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    done: bool,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if !self.done {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn tracked_chain(spawner: Spawner, mut t: Tracked, spawned: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    t.done = true;
    t.ran.fetch_add(1, Ordering::Relaxed);
    if stop.load(Ordering::Relaxed) {
        return;
    }
    for _ in 0..2 {
        let child = Tracked {
            ran: Arc::clone(&t.ran),
            dropped: Arc::clone(&t.dropped),
            done: false,
        };
        let (s2, sp2, st2) = (spawner.clone(), Arc::clone(&spawned), Arc::clone(&stop));
        // Spawned from a task: always accepted (local deque), also during shutdown.
        spawned.fetch_add(1, Ordering::Relaxed);
        spawner
            .spawn(move || tracked_chain(s2, child, sp2, st2))
            .unwrap();
    }
}

fn shutdown_under_load(policy: ShutdownPolicy, prefix: &str) {
    let pool = PoolBuilder::new()
        .threads(3)
        .name_prefix(prefix)
        .build()
        .unwrap();
    let (ran, dropped, spawned) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..64 {
        let t = Tracked {
            ran: Arc::clone(&ran),
            dropped: Arc::clone(&dropped),
            done: false,
        };
        let (s, sp, st) = (pool.spawner(), Arc::clone(&spawned), Arc::clone(&stop));
        spawned.fetch_add(1, Ordering::Relaxed);
        pool.spawn(move || tracked_chain(s, t, sp, st)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    if policy == ShutdownPolicy::Drain {
        // Bound the work so the drain terminates; tasks still run and spawn during it.
        stop.store(true, Ordering::Relaxed);
    }
    // With discard the tree is still growing when shutdown starts.
    let report = pool.shutdown(policy).unwrap();
    let (ran, dropped, spawned) = (
        ran.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        spawned.load(Ordering::Relaxed),
    );
    assert_eq!(ran + dropped, spawned, "every task ran or was dropped");
    assert_eq!(report.completed, ran);
    assert_eq!(report.discarded, dropped);
    match policy {
        ShutdownPolicy::Drain => assert_eq!(dropped, 0),
        ShutdownPolicy::Discard => assert!(dropped > 0, "nothing was queued at shutdown"),
    }
    assert_eq!(report.threads_joined, 3);
    #[cfg(target_os = "linux")]
    {
        // A joined thread has run to its end, but the kernel may list it in /proc/self/task
        // for a moment longer (a quiet clean-clone run saw one): wait, bounded.
        let alive = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .filter(|name| name.starts_with(prefix))
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(alive(), 0, "worker threads left behind");
    }
}

#[test]
fn drain_shutdown_under_load_runs_everything_and_joins_all_threads() {
    shutdown_under_load(ShutdownPolicy::Drain, "sd-drain");
}

#[test]
fn discard_shutdown_under_load_loses_nothing_and_joins_all_threads() {
    shutdown_under_load(ShutdownPolicy::Discard, "sd-disc");
}
