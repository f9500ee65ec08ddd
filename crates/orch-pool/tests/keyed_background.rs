//! The keyed pool's background work, on tokio's paused clock: recycling returned resources off
//! the caller's path, and keeping keys warm (`min_idle`, `prewarm`).

mod common;

use std::time::Duration;

use common::{Shared, TestManager};
use orch_pool::{KeyedPool, KeyedPoolBuilder, PoolError, RecycleMode, Replenish, TeardownReason};
use tokio::time::{Instant, sleep};

fn k(s: &str) -> String {
    s.to_owned()
}

fn pool(m: &Shared) -> KeyedPoolBuilder<Shared> {
    KeyedPool::builder(m.clone())
        .idle_timeout(None)
        .health_check_interval(None)
}

/// Lets spawned tasks run until they block.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn background_recycle_runs_off_the_get_path() {
    let m = Shared(TestManager::shared());
    *m.0.recycle_delay.lock() = Some(Duration::from_secs(1));
    let p = pool(&m)
        .recycle_mode(RecycleMode::Background)
        .build()
        .expect("builds");
    let mut a = p.get(k("w")).await.expect("get");
    a.dirty = true;
    drop(a);
    let s = p.stats();
    assert_eq!(
        (s.recycling, s.idle, s.live),
        (1, 0, 1),
        "recycling, not idle"
    );
    // `get` does not wait for the recycle: it creates another resource at once.
    let t = Instant::now();
    let b = p.get(k("w")).await.expect("get during the recycle");
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!(b.id, 1);
    drop(b); // recycled in the background too
    sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!((p.stats().recycling, p.stats().idle), (0, 2));
    // The recycled resource is handed out without another recycle, at no cost in time.
    let t = Instant::now();
    let a = p.get(k("w")).await.expect("hit");
    assert_eq!(t.elapsed(), Duration::ZERO);
    assert_eq!((a.resets, a.dirty, a.metrics().uses), (1, false, 2));
    let s = p.stats();
    assert_eq!(
        (s.recycled, s.recycle_failed, s.hits, s.misses, s.reused),
        (2, 0, 1, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn background_recycle_hands_the_resource_to_a_waiter() {
    let m = Shared(TestManager::shared());
    *m.0.recycle_delay.lock() = Some(Duration::from_millis(300));
    let p = pool(&m)
        .max_per_key(1)
        .recycle_mode(RecycleMode::Background)
        .build()
        .expect("builds");
    let held = p.get(k("w")).await.expect("get");
    let waiter = tokio::spawn({
        let p = p.clone();
        async move {
            let r = p.get(k("w")).await.expect("served after the recycle");
            (r.id, r.resets)
        }
    });
    settle().await;
    drop(held);
    settle().await;
    assert!(!waiter.is_finished(), "not before the recycle is done");
    assert_eq!(waiter.await.expect("task"), (0, 1));
    assert_eq!(p.stats().created, 1);
}

#[tokio::test(start_paused = true)]
async fn background_recycle_failure_tears_the_resource_down() {
    let m = Shared(TestManager::shared());
    let p = pool(&m)
        .recycle_mode(RecycleMode::Background)
        .build()
        .expect("builds");
    let mut a = p.get(k("w")).await.expect("get");
    a.fail_recycle = true;
    drop(a);
    settle().await;
    assert_eq!(
        m.0.teardowns(),
        vec![(k("w"), 0, TeardownReason::RecycleFailed)]
    );
    let s = p.stats();
    assert_eq!(
        (s.recycled, s.recycle_failed, s.live, s.recycling),
        (1, 1, 0, 0)
    );
    assert_eq!(p.get(k("w")).await.expect("a new one").id, 1);
}

#[tokio::test(start_paused = true)]
async fn close_stops_a_background_recycle_and_tears_down() {
    let m = Shared(TestManager::shared());
    *m.0.recycle_delay.lock() = Some(Duration::from_secs(3600));
    let p = pool(&m)
        .recycle_mode(RecycleMode::Background)
        .build()
        .expect("builds");
    drop(p.get(k("w")).await.expect("get"));
    settle().await;
    assert_eq!(p.stats().recycling, 1);
    let t = Instant::now();
    p.close().await;
    assert!(
        t.elapsed() < Duration::from_secs(3600),
        "close did not wait"
    );
    assert_eq!(
        m.0.teardowns(),
        vec![(k("w"), 0, TeardownReason::RecycleCancelled)]
    );
    let s = p.stats();
    assert_eq!((s.live, s.recycling, s.torn_down), (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn min_idle_keeps_seen_keys_warm_so_get_never_creates() {
    let m = Shared(TestManager::shared());
    *m.0.create_delay.lock() = Some(Duration::from_secs(1));
    let p = pool(&m).min_idle(2).build().expect("builds");
    // First sight of the key: a miss (created on the caller's path), and two more start.
    let t = Instant::now();
    let first = p.get(k("r")).await.expect("get");
    assert_eq!(t.elapsed(), Duration::from_secs(1));
    sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(p.key_status(&k("r")), (3, 2));
    // Every further get is a hit on a fresh resource, and a replacement starts behind it.
    for round in 0..4 {
        let t = Instant::now();
        let r = p.get(k("r")).await.expect("hit");
        assert_eq!(t.elapsed(), Duration::ZERO, "round {round}");
        assert_eq!((r.metrics().uses, r.resets), (1, 0), "never used before");
        r.retire();
        sleep(Duration::from_secs(1)).await;
        settle().await;
        assert_eq!(p.key_status(&k("r")), (3, 2), "round {round}");
    }
    drop(first);
    let s = p.stats();
    assert_eq!((s.hits, s.misses, s.prewarmed, s.created), (4, 1, 6, 7));
    assert_eq!(s.recycled, 0, "fresh resources are not recycled");
    let retired =
        m.0.teardowns()
            .iter()
            .filter(|t| t.2 == TeardownReason::Retired)
            .count();
    assert_eq!(retired, 4);
}

#[tokio::test(start_paused = true)]
async fn replenish_on_return_tops_up_when_given_back_or_dry() {
    let m = Shared(TestManager::shared());
    *m.0.create_delay.lock() = Some(Duration::from_secs(1));
    let p = pool(&m)
        .replenish(Replenish::OnReturn)
        .build()
        .expect("builds");
    p.prewarm(k("r"), 2);
    sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(p.key_status(&k("r")), (2, 2));
    // One left ready: no create while the caller uses what it got.
    let x = p.get(k("r")).await.expect("hit");
    assert_eq!(p.stats().creating, 0);
    // Coming back tops the key up.
    x.retire();
    assert_eq!(p.stats().creating, 1);
    sleep(Duration::from_secs(1)).await;
    settle().await;
    // Run dry: the hand-out tops up at once.
    let a = p.get(k("r")).await.expect("hit");
    let b = p.get(k("r")).await.expect("hit");
    assert_eq!(p.stats().creating, 2);
    sleep(Duration::from_secs(1)).await;
    settle().await;
    drop((a, b));
    assert_eq!(p.key_status(&k("r")), (4, 4), "returned ones stay idle");
    let s = p.stats();
    assert_eq!((s.hits, s.misses, s.prewarmed), (3, 0, 5));
}

#[tokio::test(start_paused = true)]
async fn prewarm_creates_within_the_limits() {
    let m = Shared(TestManager::shared());
    let p = pool(&m)
        .max_per_key(3)
        .max_total(4)
        .build()
        .expect("builds");
    p.prewarm(k("a"), 5);
    p.prewarm(k("b"), 2);
    settle().await;
    assert_eq!(p.key_status(&k("a")), (3, 3), "per-key limit");
    assert_eq!(p.key_status(&k("b")), (1, 1), "total limit");
    assert_eq!(p.stats().prewarmed, 4);
    // At its limit, a hand-out starts no create; the resource comes back.
    let a = p.get(k("a")).await.expect("hit");
    assert_eq!(p.stats().creating, 0);
    drop(a);
    assert_eq!(p.key_status(&k("a")), (3, 3));
    // Turning warming off stops replacements; the freed room goes to `b`.
    p.prewarm(k("a"), 0);
    p.get(k("a")).await.expect("hit").retire();
    settle().await;
    assert_eq!(p.key_status(&k("a")), (2, 2));
    assert_eq!(p.key_status(&k("b")), (2, 2));
    assert_eq!(p.stats().prewarmed, 5);
}

#[tokio::test(start_paused = true)]
async fn background_creates_leave_slots_to_waiting_callers() {
    let m = Shared(TestManager::shared());
    let p = pool(&m)
        .max_per_key(1)
        .max_total(2)
        .build()
        .expect("builds");
    let held = p.get(k("a")).await.expect("get");
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.get(k("a")).await.map(|r| r.id) }
    });
    settle().await;
    p.prewarm(k("b"), 1);
    settle().await;
    assert_eq!(p.key_status(&k("b")), (0, 0), "not while a caller waits");
    drop(held);
    assert_eq!(waiter.await.expect("task").expect("served"), 0);
    settle().await;
    assert_eq!(p.key_status(&k("b")), (1, 1), "once nobody waits");
}

#[tokio::test(start_paused = true)]
async fn failing_background_creates_back_off_and_recover() {
    let m = Shared(TestManager::shared());
    m.0.fail_create.lock().insert(k("a"));
    let p = pool(&m).build().expect("builds");
    p.prewarm(k("a"), 1);
    // Attempts at 0, 100 and 300 ms; the next one is due at 700 ms.
    sleep(Duration::from_millis(350)).await;
    settle().await;
    assert_eq!(p.stats().create_failed, 3);
    assert_eq!(p.key_status(&k("a")), (0, 0), "failed slots are freed");
    // `get` is not held up by the pause; it creates on its own path (and fails here).
    assert!(matches!(p.get(k("a")).await, Err(PoolError::Create { .. })));
    m.0.fail_create.lock().clear();
    sleep(Duration::from_millis(400)).await;
    settle().await;
    let s = p.stats();
    assert_eq!((s.create_failed, s.prewarmed, s.idle), (4, 1, 1));
    // Success resets the pause: a replacement starts at once after a hand-out.
    p.get(k("a")).await.expect("hit").retire();
    settle().await;
    assert_eq!(p.stats().prewarmed, 2);
}

#[tokio::test(start_paused = true)]
async fn close_waits_for_background_creates_and_tears_them_down() {
    let m = Shared(TestManager::shared());
    *m.0.create_delay.lock() = Some(Duration::from_secs(1));
    let p = pool(&m).build().expect("builds");
    p.prewarm(k("a"), 2);
    settle().await;
    assert_eq!(p.stats().creating, 2);
    p.close().await;
    let s = p.stats();
    assert_eq!((s.live, s.creating, s.prewarmed, s.torn_down), (0, 0, 2, 2));
    assert!(
        m.0.teardowns()
            .iter()
            .all(|t| t.2 == TeardownReason::Closed)
    );
    p.prewarm(k("a"), 2);
    settle().await;
    assert_eq!(p.stats().created, 2, "nothing starts after close");
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_spares_the_warm_resources() {
    let m = Shared(TestManager::shared());
    let p = KeyedPool::builder(m.clone())
        .idle_timeout(Some(Duration::from_secs(10)))
        .health_check_interval(None)
        .build()
        .expect("builds");
    p.prewarm(k("a"), 1);
    settle().await;
    let x = p.get(k("a")).await.expect("hit");
    settle().await;
    let y = p.get(k("a")).await.expect("hit");
    settle().await;
    assert_eq!((x.id, y.id), (0, 1));
    drop(x);
    drop(y);
    assert_eq!(p.key_status(&k("a")), (3, 3));
    sleep(Duration::from_secs(21)).await;
    settle().await;
    // The newest idle one stays warm; the others time out, and are not replaced.
    let mut gone: Vec<u64> = m.0.teardowns().iter().map(|t| t.1).collect();
    gone.sort_unstable();
    assert_eq!(gone, vec![0, 2]);
    assert_eq!(p.key_status(&k("a")), (1, 1));
    assert_eq!(p.stats().prewarmed, 3);
}

#[tokio::test(start_paused = true)]
async fn health_checks_do_not_start_extra_creates() {
    let m = Shared(TestManager::shared());
    let p = KeyedPool::builder(m.clone())
        .idle_timeout(None)
        .health_check_interval(Some(Duration::from_secs(60)))
        .min_idle(1)
        .build()
        .expect("builds");
    p.prewarm(k("a"), 1);
    settle().await;
    sleep(Duration::from_secs(61)).await;
    settle().await;
    let s = p.stats();
    assert_eq!((s.health_checks, s.created, s.idle), (1, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn background_recycle_counts_toward_the_warm_target() {
    let m = Shared(TestManager::shared());
    *m.0.recycle_delay.lock() = Some(Duration::from_secs(1));
    let p = pool(&m)
        .min_idle(1)
        .recycle_mode(RecycleMode::Background)
        .build()
        .expect("builds");
    let a = p.get(k("a")).await.expect("miss");
    settle().await;
    drop(a); // recycling: idle soon
    let b = p.get(k("a")).await.expect("hit on the prewarmed one");
    settle().await;
    assert_eq!(b.id, 1);
    assert_eq!(p.stats().creating, 0, "the recycling one will be ready");
    sleep(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(p.key_status(&k("a")), (2, 1));
    assert_eq!(p.stats().created, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_background_pool_drains_under_load() {
    let m = Shared(TestManager::shared());
    let p = KeyedPool::builder(m.clone())
        .max_per_key(3)
        .max_total(8)
        .min_idle(2)
        .recycle_mode(RecycleMode::Background)
        .wait_timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("builds");
    let mut tasks = Vec::new();
    for t in 0..12 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{}", t % 3);
            let mut served = 0u32;
            loop {
                match p.get(key.clone()).await {
                    Ok(r) => {
                        served += 1;
                        tokio::task::yield_now().await;
                        if served.is_multiple_of(5) {
                            r.retire();
                        }
                    }
                    Err(PoolError::Closed) => return served,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }));
    }
    sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(10), p.close())
        .await
        .expect("close drains in time");
    let mut served = 0u64;
    for t in tasks {
        served += u64::from(t.await.expect("task"));
    }
    let s = p.stats();
    assert!(served > 0);
    assert_eq!(
        (s.live, s.idle, s.recycling, s.creating, s.tearing_down),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(s.hits + s.misses, served);
    assert_eq!(s.created, s.misses + s.prewarmed);
    assert_eq!(s.created, s.discarded + s.detached);
    assert_eq!(s.discarded, s.torn_down);
    assert_eq!(m.0.teardowns().len() as u64, s.created);
}

#[test]
fn dropping_the_runtime_mid_background_work_ends_cleanly() {
    let m = Shared(TestManager::shared());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let p = rt.block_on(async {
        *m.0.create_delay.lock() = Some(Duration::from_secs(1));
        *m.0.recycle_delay.lock() = Some(Duration::from_secs(1));
        let p = pool(&m)
            .min_idle(2)
            .recycle_mode(RecycleMode::Background)
            .build()
            .expect("builds");
        let a = p.get(k("a")).await.expect("get");
        drop(a);
        p.prewarm(k("b"), 3);
        settle().await;
        let s = p.stats();
        assert_eq!((s.creating, s.recycling), (3, 1));
        p
    });
    // The tasks are dropped with the runtime; their leases come back without starting more
    // work (this used to recurse until the stack overflowed).
    drop(rt);
    let s = p.stats();
    assert_eq!((s.creating, s.recycling), (0, 0));
    drop(p);
}
