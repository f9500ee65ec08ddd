//! Behaviour of the thread pool: spawning, priorities, scopes, panics, shutdown, statistics.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

use orch_queue::{
    Error, PoolBuilder, ShutdownPolicy, SpawnPriority, WorkStealingPool, current_worker_index,
};

#[test]
fn every_spawned_task_runs_once() {
    let pool = WorkStealingPool::new(2).unwrap();
    let hits: Arc<Vec<AtomicUsize>> = Arc::new((0..1000).map(|_| AtomicUsize::new(0)).collect());
    for i in 0..1000 {
        let hits = Arc::clone(&hits);
        pool.spawn(move || {
            hits[i].fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    }
    let report = pool.shutdown(ShutdownPolicy::Drain).unwrap();
    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    assert_eq!(report.completed, 1000);
    assert_eq!(report.discarded, 0);
    assert_eq!(report.threads_joined, 2);
}

#[test]
fn spawn_from_task_goes_to_the_workers_local_deque() {
    let pool = WorkStealingPool::new(1).unwrap();
    let spawner = pool.spawner();
    let (tx, rx) = mpsc::channel();
    pool.spawn(move || {
        let me = current_worker_index();
        let inner = spawner.clone();
        for _ in 0..3 {
            let tx = tx.clone();
            spawner
                .spawn(move || tx.send(current_worker_index()).unwrap())
                .unwrap();
        }
        // Still running: the children sit in this worker's deque, not in an injector.
        let stats = inner.stats();
        assert_eq!(stats.workers[0].local_depth, 3);
        assert_eq!(stats.injector_depths, [0, 0, 0]);
        tx.send(me).unwrap();
    })
    .unwrap();
    let got: Vec<_> = rx.iter().take(4).collect();
    assert!(got.iter().all(|w| *w == Some(0)), "{got:?}");
}

#[test]
fn high_priority_runs_before_normal_and_low_when_queued_together() {
    let pool = PoolBuilder::new()
        .threads(1)
        .batch_limit(1)
        .build()
        .unwrap();
    let gate = Arc::new(Barrier::new(2));
    let order = Arc::new(Mutex::new(Vec::new()));
    {
        let gate = Arc::clone(&gate);
        pool.spawn(move || {
            gate.wait();
        })
        .unwrap();
    }
    // The single worker is blocked in the gate task while we queue.
    std::thread::sleep(Duration::from_millis(20));
    for (p, tag) in [
        (SpawnPriority::Low, "low"),
        (SpawnPriority::Normal, "normal"),
        (SpawnPriority::High, "high"),
    ] {
        let order = Arc::clone(&order);
        pool.spawn_with_priority(p, move || order.lock().unwrap().push(tag))
            .unwrap();
    }
    gate.wait();
    pool.shutdown(ShutdownPolicy::Drain).unwrap();
    assert_eq!(*order.lock().unwrap(), vec!["high", "normal", "low"]);
}

#[test]
fn low_priority_runs_while_high_keeps_arriving() {
    // One worker, a HIGH task that re-spawns itself forever, and one LOW task. The starvation
    // guard must get the LOW task through within 2 * interval injector polls.
    let interval = 4;
    let pool = PoolBuilder::new()
        .threads(1)
        .fairness_interval(interval)
        .batch_limit(1)
        .build()
        .unwrap();
    let spawner = pool.spawner();
    let high_runs = Arc::new(AtomicUsize::new(0));
    let low_seen_after = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    fn high(s: orch_queue::Spawner, runs: Arc<AtomicUsize>, stop: Arc<AtomicBool>) {
        runs.fetch_add(1, Ordering::SeqCst);
        if !stop.load(Ordering::SeqCst) {
            let s2 = s.clone();
            let _ = s.spawn_with_priority(SpawnPriority::High, move || high(s2, runs, stop));
        }
    }
    let gate = Arc::new(Barrier::new(2));
    {
        let gate = Arc::clone(&gate);
        pool.spawn(move || {
            gate.wait();
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    for _ in 0..4 {
        let (s, r, st) = (spawner.clone(), Arc::clone(&high_runs), Arc::clone(&stop));
        pool.spawn_with_priority(SpawnPriority::High, move || high(s, r, st))
            .unwrap();
    }
    {
        let (r, seen, st) = (
            Arc::clone(&high_runs),
            Arc::clone(&low_seen_after),
            Arc::clone(&stop),
        );
        pool.spawn_with_priority(SpawnPriority::Low, move || {
            seen.store(r.load(Ordering::SeqCst), Ordering::SeqCst);
            st.store(true, Ordering::SeqCst);
        })
        .unwrap();
    }
    gate.wait();
    pool.shutdown(ShutdownPolicy::Drain).unwrap();
    let seen = low_seen_after.load(Ordering::SeqCst);
    assert!(
        seen <= 2 * interval as usize,
        "low ran after {seen} high tasks"
    );
}

#[test]
fn scope_tasks_borrow_the_callers_stack() {
    let pool = WorkStealingPool::new(2).unwrap();
    let mut data = vec![1u64; 1000];
    let total = AtomicUsize::new(0);
    pool.scope(|s| {
        for chunk in data.chunks_mut(100) {
            let total = &total;
            s.spawn(move || {
                for x in chunk.iter_mut() {
                    *x *= 2;
                }
                total.fetch_add(chunk.len(), Ordering::Relaxed);
            });
        }
    });
    assert_eq!(total.into_inner(), 1000);
    assert!(data.iter().all(|&x| x == 2));
}

fn tree_sum(pool: &orch_queue::Spawner, depth: u32) -> u64 {
    if depth == 0 {
        return 1;
    }
    let (a, b) = pool.join(|| tree_sum(pool, depth - 1), || tree_sum(pool, depth - 1));
    a + b
}

#[test]
fn nested_join_inside_tasks_does_not_deadlock() {
    let pool = WorkStealingPool::new(2).unwrap();
    let s = pool.spawner();
    assert_eq!(tree_sum(&s, 12), 4096);
    let (tx, rx) = mpsc::channel();
    let s2 = s.clone();
    pool.spawn(move || tx.send(tree_sum(&s2, 10)).unwrap())
        .unwrap();
    assert_eq!(rx.recv().unwrap(), 1024);
}

#[test]
fn scope_rethrows_a_task_panic_after_all_tasks_finished() {
    let pool = WorkStealingPool::new(2).unwrap();
    let finished = AtomicUsize::new(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.scope(|s| {
            s.spawn(|| panic!("boom in scope"));
            for _ in 0..10 {
                s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(1));
                    finished.fetch_add(1, Ordering::SeqCst);
                });
            }
        })
    }));
    let payload = result.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom in scope"));
    assert_eq!(finished.load(Ordering::SeqCst), 10);
}

#[test]
fn panicking_task_is_reported_and_the_worker_survives() {
    let reported = Arc::new(Mutex::new(Vec::new()));
    let pool = {
        let reported = Arc::clone(&reported);
        PoolBuilder::new()
            .threads(1)
            .panic_handler(move |r| reported.lock().unwrap().push(r.message.clone()))
            .build()
            .unwrap()
    };
    pool.spawn(|| panic!("task exploded")).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..10 {
        let ran = Arc::clone(&ran);
        pool.spawn(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let report = pool.shutdown(ShutdownPolicy::Drain).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 10);
    assert_eq!(report.panicked, 1);
    assert_eq!(report.completed, 11);
    assert_eq!(*reported.lock().unwrap(), vec!["task exploded".to_owned()]);
    let log = pool.take_panics();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].worker, 0);
    assert_eq!(log[0].message, "task exploded");
}

#[test]
fn shutdown_rejects_new_work_and_hands_it_back() {
    let pool = WorkStealingPool::new(1).unwrap();
    pool.shutdown(ShutdownPolicy::Drain).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    let err = pool
        .spawn(move || flag.store(true, Ordering::SeqCst))
        .unwrap_err();
    assert_eq!(err.reason(), "pool is shut down");
    assert!(!ran.load(Ordering::SeqCst));
    (err.into_inner())();
    assert!(ran.load(Ordering::SeqCst));
}

#[test]
fn discard_drops_queued_work_and_counts_it() {
    let pool = WorkStealingPool::new(1).unwrap();
    let gate = Arc::new(Barrier::new(2));
    {
        let gate = Arc::clone(&gate);
        let spawner = pool.spawner();
        // The only worker stays in this task until the shutdown has begun, however long this
        // thread takes to queue the rest (a fixed pause failed on a loaded machine).
        pool.spawn(move || {
            gate.wait();
            let deadline = Instant::now() + Duration::from_secs(30);
            while !spawner.is_closed() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    }
    gate.wait();
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let ran = Arc::clone(&ran);
        pool.spawn(move || {
            ran.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let report = pool.shutdown(ShutdownPolicy::Discard).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(report.completed, 1);
    assert_eq!(report.discarded, 100);
}

#[test]
fn shutdown_from_a_worker_is_an_error() {
    let pool = Arc::new(WorkStealingPool::new(1).unwrap());
    let (tx, rx) = mpsc::channel();
    let p2 = Arc::clone(&pool);
    pool.spawn(move || {
        let r = p2.shutdown(ShutdownPolicy::Drain);
        tx.send(matches!(r, Err(Error::ShutdownFromWorker { index: 0 })))
            .unwrap();
        drop(p2);
    })
    .unwrap();
    assert!(rx.recv().unwrap());
}

#[test]
fn zero_threads_is_invalid() {
    assert!(matches!(
        WorkStealingPool::new(0),
        Err(Error::InvalidConfig { value: 0, .. })
    ));
}

#[test]
fn idle_workers_park_and_wake_for_new_work() {
    let pool = WorkStealingPool::new(2).unwrap();
    // A park is counted when the worker wakes from it. How soon an idle worker gets to park
    // depends on the machine's load (it spins and yields first): give it time, then hand it
    // work, until a park has been counted. Every task must run (a parked worker wakes).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut spawned = 0;
    let stats = loop {
        std::thread::sleep(Duration::from_millis(50));
        let (tx, rx) = mpsc::channel();
        pool.spawn(move || tx.send(current_worker_index()).unwrap())
            .unwrap();
        spawned += 1;
        assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().is_some());
        let stats = pool.stats();
        if stats.workers.iter().any(|w| w.parks > 0) || Instant::now() > deadline {
            break stats;
        }
    };
    assert!(stats.workers.iter().any(|w| w.parks > 0), "{stats:?}");
    assert!(
        stats.workers.iter().any(|w| w.idle > Duration::ZERO),
        "{stats:?}"
    );
    assert_eq!(
        pool.shutdown(ShutdownPolicy::Drain).unwrap().completed,
        spawned
    );
}

#[test]
fn spawn_batch_queues_every_task_once_and_is_rejected_after_shutdown() {
    let pool = WorkStealingPool::new(2).unwrap();
    let hits: Arc<Vec<AtomicUsize>> = Arc::new((0..5000).map(|_| AtomicUsize::new(0)).collect());
    let tasks = (0..5000).map(|i| {
        let hits = Arc::clone(&hits);
        move || {
            hits[i].fetch_add(1, Ordering::Relaxed);
        }
    });
    assert_eq!(pool.spawn_batch(SpawnPriority::Low, tasks).unwrap(), 5000);
    let report = pool.shutdown(ShutdownPolicy::Drain).unwrap();
    assert_eq!(report.completed, 5000);
    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
    let err = pool
        .spawn_batch(SpawnPriority::High, vec![|| ()])
        .unwrap_err();
    assert_eq!(err.into_inner().len(), 1);
}
