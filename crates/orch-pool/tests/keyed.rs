//! Behaviour of the async keyed pool, on tokio's paused clock.

mod common;

use std::time::Duration;

use common::{Shared, TestManager};
use orch_pool::{BuildError, KeyedPool, PoolError, ReuseOrder, TeardownReason};
use tokio::time::sleep;

fn k(s: &str) -> String {
    s.to_owned()
}

fn pool(m: &Shared) -> orch_pool::KeyedPoolBuilder<Shared> {
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
async fn returned_resource_is_recycled_and_reused() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).build().expect("builds");
    let mut a = p.get(k("worker")).await.expect("first get");
    a.dirty = true;
    let id = a.id;
    assert_eq!(a.metrics().uses, 1);
    drop(a);
    let b = p.get(k("worker")).await.expect("second get");
    assert_eq!(b.id, id);
    assert_eq!(b.resets, 1, "recycle ran before reuse");
    assert!(!b.dirty);
    assert_eq!(b.metrics().uses, 2);
    let s = p.stats();
    assert_eq!(
        (s.created, s.reused, s.recycled, s.live, s.idle),
        (1, 1, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn build_outside_runtime_and_zero_limits_fail() {
    let m = Shared(TestManager::shared());
    assert!(matches!(
        pool(&m).max_per_key(0).build(),
        Err(BuildError::ZeroLimit {
            name: "max_per_key"
        })
    ));
    let built = std::thread::spawn(move || pool(&m).build().err())
        .join()
        .expect("thread");
    assert_eq!(built, Some(BuildError::NoRuntime));
}

#[tokio::test(start_paused = true)]
async fn per_key_limit_times_out_waiters() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_per_key(1).build().expect("builds");
    let _held = p.get(k("a")).await.expect("get");
    let err = p
        .get_timeout(k("a"), Duration::from_millis(50))
        .await
        .expect_err("must time out");
    match err {
        PoolError::Timeout { key, waited } => {
            assert_eq!(key, "\"a\"");
            assert_eq!(waited, Duration::from_millis(50));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Another key is not held up by `a`'s limit.
    let b = p.get(k("b")).await.expect("other key");
    assert_eq!(b.key(), "b");
    let s = p.stats();
    assert_eq!((s.waits, s.timeouts, s.waiting), (1, 1, 0));
    assert_eq!(s.wait_time, Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn a_key_sized_to_its_holders_serves_them_all_and_a_raise_serves_waiters() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_per_key(2).build().expect("builds");
    p.set_max_for_key(k("worker"), 8);
    // Eight long-lived holders of one key (eight Worker lanes), past the pool's default.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(
            p.get(k("worker"))
                .await
                .expect("within the key's own limit"),
        );
    }
    assert_eq!(p.key_status(&k("worker")), (8, 0));
    // The ninth waits; raising the limit serves it without any resource coming back.
    let waiter = tokio::spawn({
        let p = p.clone();
        async move { p.get(k("worker")).await.map(|r| r.id) }
    });
    settle().await;
    assert_eq!(p.stats().waiting, 1);
    p.set_max_for_key(k("worker"), 9);
    let got = tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("served at once")
        .expect("task")
        .expect("a resource");
    assert!(held.iter().all(|r| r.id != got));
    // Other keys keep the pool-wide limit.
    let _a = p.get(k("reviewer")).await.expect("first");
    let _b = p.get(k("reviewer")).await.expect("second");
    assert!(
        p.get_timeout(k("reviewer"), Duration::from_millis(10))
            .await
            .is_err()
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_per_key(1).build().expect("builds");
    let held = p.get(k("a")).await.expect("get");
    let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..3 {
        let (p, order) = (p.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let r = p.get(k("a")).await.expect("waiter served");
            order.lock().push(n);
            sleep(Duration::from_millis(1)).await;
            drop(r);
        }));
        settle().await;
    }
    assert_eq!(p.stats().waiting, 3);
    drop(held);
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(*order.lock(), vec![0, 1, 2]);
    assert_eq!(p.stats().created, 1);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_holding_a_grant_leaks_nothing() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_per_key(1).build().expect("builds");
    let held = p.get(k("a")).await.expect("get");
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.get(k("a")).await.map(|r| r.id) });
    settle().await;
    assert_eq!(p.stats().waiting, 1);
    // The resource is handed to the waiter's channel, then the waiter dies before running.
    drop(held);
    waiter.abort();
    assert!(waiter.await.is_err(), "task was cancelled");
    let s = p.stats();
    assert_eq!((s.live, s.idle, s.waiting), (1, 1, 0));
    // And it is usable again.
    assert_eq!(p.get(k("a")).await.expect("reuse").id, 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_waiter_leaves_the_queue() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_per_key(1).build().expect("builds");
    let held = p.get(k("a")).await.expect("get");
    let r = tokio::time::timeout(Duration::from_millis(5), p.get(k("a"))).await;
    assert!(r.is_err(), "outer timeout cancels the get");
    assert_eq!(p.stats().waiting, 0);
    drop(held);
    assert_eq!(p.stats().idle, 1);
}

#[tokio::test(start_paused = true)]
async fn broken_resource_is_torn_down_only_when_safe_and_close_waits() {
    let m = Shared(TestManager::shared());
    m.0.safe.send_replace(false);
    let p = pool(&m).build().expect("builds");
    let mut r = p.get(k("a")).await.expect("get");
    r.mark_broken();
    assert!(r.is_broken());
    drop(r); // returns at once: teardown runs in its own task
    settle().await;
    assert!(
        m.0.teardowns().is_empty(),
        "not torn down before it is safe"
    );
    let s = p.stats();
    assert_eq!(
        (s.live, s.discarded, s.tearing_down, s.torn_down),
        (0, 1, 1, 0)
    );
    let closing = tokio::spawn({
        let p = p.clone();
        async move { p.close().await }
    });
    settle().await;
    assert!(!closing.is_finished(), "close waits for the teardown");
    m.0.safe.send_replace(true);
    closing.await.expect("close finishes");
    assert_eq!(m.0.teardowns(), vec![(k("a"), 0, TeardownReason::Broken)]);
    assert_eq!(p.stats().torn_down, 1);
}

#[tokio::test(start_paused = true)]
async fn recycle_failure_discards_and_creates_another() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).build().expect("builds");
    let mut r = p.get(k("a")).await.expect("get");
    r.fail_recycle = true;
    drop(r);
    let r = p.get(k("a")).await.expect("get after failed recycle");
    assert_eq!(r.id, 1);
    settle().await;
    assert_eq!(
        m.0.teardowns(),
        vec![(k("a"), 0, TeardownReason::RecycleFailed)]
    );
    let s = p.stats();
    assert_eq!(
        (s.recycled, s.recycle_failed, s.reused, s.created),
        (1, 1, 0, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_recycle_tears_the_resource_down() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).build().expect("builds");
    drop(p.get(k("a")).await.expect("get"));
    *m.0.recycle_delay.lock() = Some(Duration::from_secs(1));
    let r = tokio::time::timeout(Duration::from_millis(10), p.get(k("a"))).await;
    assert!(r.is_err());
    settle().await;
    assert_eq!(
        m.0.teardowns(),
        vec![(k("a"), 0, TeardownReason::RecycleCancelled)]
    );
    assert_eq!(p.stats().live, 0);
}

#[tokio::test(start_paused = true)]
async fn create_failure_and_timeout_free_the_slot() {
    let m = Shared(TestManager::shared());
    let p = pool(&m)
        .max_per_key(1)
        .create_timeout(Some(Duration::from_millis(100)))
        .build()
        .expect("builds");
    m.0.fail_create.lock().insert(k("a"));
    let err = p.get(k("a")).await.expect_err("create fails");
    assert!(matches!(err, PoolError::Create { .. }), "{err:?}");
    assert_eq!(err.to_string(), "creating a resource for key \"a\" failed");
    m.0.fail_create.lock().clear();
    *m.0.create_delay.lock() = Some(Duration::from_secs(1));
    let err = p.get(k("a")).await.expect_err("create times out");
    assert!(matches!(err, PoolError::CreateTimeout { .. }), "{err:?}");
    *m.0.create_delay.lock() = None;
    assert!(p.get(k("a")).await.is_ok(), "slot was freed both times");
    assert_eq!(p.stats().create_failed, 2);
}

#[tokio::test(start_paused = true)]
async fn max_reuse_retires_resources() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_reuse(Some(2)).build().expect("builds");
    for _ in 0..3 {
        assert_eq!(p.get(k("a")).await.expect("get").id, 0);
    }
    assert_eq!(p.get(k("a")).await.expect("get").id, 1);
    settle().await;
    assert_eq!(m.0.teardowns(), vec![(k("a"), 0, TeardownReason::MaxReuse)]);
}

#[tokio::test(start_paused = true)]
async fn idle_resources_are_evicted_by_the_reaper() {
    let m = Shared(TestManager::shared());
    let p = KeyedPool::builder(m.clone())
        .idle_timeout(Some(Duration::from_secs(10)))
        .health_check_interval(None)
        .build()
        .expect("builds");
    let a = p.get(k("a")).await.expect("get");
    let b = p.get(k("a")).await.expect("get");
    drop(a);
    sleep(Duration::from_secs(8)).await;
    drop(b);
    // First reap at t=10: `a` idle 10 s (evicted), `b` idle 2 s (kept).
    sleep(Duration::from_millis(2_500)).await;
    settle().await;
    assert_eq!(
        m.0.teardowns(),
        vec![(k("a"), 0, TeardownReason::IdleTimeout)]
    );
    sleep(Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(m.0.teardowns().len(), 2);
    let s = p.stats();
    assert_eq!((s.live, s.idle_evicted, s.keys), (0, 2, 0));
}

#[tokio::test(start_paused = true)]
async fn failed_health_check_discards_only_the_sick() {
    let m = Shared(TestManager::shared());
    let p = KeyedPool::builder(m.clone())
        .idle_timeout(None)
        .health_check_interval(Some(Duration::from_secs(60)))
        .build()
        .expect("builds");
    let mut sick = p.get(k("a")).await.expect("get");
    let well = p.get(k("a")).await.expect("get");
    sick.fail_check = true;
    drop((sick, well));
    sleep(Duration::from_secs(61)).await;
    settle().await;
    assert_eq!(
        m.0.teardowns(),
        vec![(k("a"), 0, TeardownReason::HealthCheckFailed)]
    );
    let s = p.stats();
    assert_eq!((s.health_checks, s.health_check_failed, s.idle), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn total_limit_evicts_idle_of_another_key() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_total(2).build().expect("builds");
    let a1 = p.get(k("a")).await.expect("get");
    let a2 = p.get(k("a")).await.expect("get");
    drop((a1, a2));
    let b = p.get(k("b")).await.expect("served by evicting an idle `a`");
    assert_eq!(b.id, 2);
    settle().await;
    assert_eq!(m.0.teardowns(), vec![(k("a"), 0, TeardownReason::Evicted)]);
    assert_eq!(p.key_status(&k("a")), (1, 1));
    assert_eq!(p.stats().live, 2);
}

#[tokio::test(start_paused = true)]
async fn total_limit_serves_keys_first_come_first_served() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_total(1).build().expect("builds");
    let held = p.get(k("a")).await.expect("get");
    let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for key in ["b", "a"] {
        let (p, order) = (p.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let r = p.get(k(key)).await.expect("served");
            order.lock().push(key);
            sleep(Duration::from_millis(1)).await;
            drop(r);
        }));
        settle().await;
    }
    drop(held);
    for t in tasks {
        t.await.expect("task");
    }
    // `b` came first: it gets the slot (evicting idle `a`) though `a` could reuse directly.
    assert_eq!(*order.lock(), vec!["b", "a"]);
}

#[tokio::test(start_paused = true)]
async fn fifo_and_lifo_reuse_orders() {
    for (order, expected) in [(ReuseOrder::Lifo, 1), (ReuseOrder::Fifo, 0)] {
        let m = Shared(TestManager::shared());
        let p = pool(&m).reuse_order(order).build().expect("builds");
        let a = p.get(k("a")).await.expect("get");
        let b = p.get(k("a")).await.expect("get");
        drop(a);
        drop(b);
        assert_eq!(p.get(k("a")).await.expect("get").id, expected, "{order:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn detach_frees_the_slot_without_teardown() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_per_key(1).build().expect("builds");
    let r = p.get(k("a")).await.expect("get").detach();
    assert_eq!(r.id, 0);
    assert_eq!(p.get(k("a")).await.expect("slot free").id, 1);
    p.close().await;
    assert_eq!(m.0.teardowns(), vec![(k("a"), 1, TeardownReason::Closed)]);
    assert_eq!(p.stats().detached, 1);
}

#[tokio::test(start_paused = true)]
async fn close_fails_waiters_and_new_gets() {
    let m = Shared(TestManager::shared());
    let p = pool(&m).max_per_key(1).build().expect("builds");
    let held = p.get(k("a")).await.expect("get");
    let p2 = p.clone();
    let waiter = tokio::spawn(async move { p2.get(k("a")).await.map(|r| r.id) });
    settle().await;
    let closing = tokio::spawn({
        let p = p.clone();
        async move { p.close().await }
    });
    settle().await;
    assert!(matches!(
        waiter.await.expect("task"),
        Err(PoolError::Closed)
    ));
    assert!(matches!(p.get(k("b")).await, Err(PoolError::Closed)));
    assert!(!closing.is_finished(), "a resource is still in use");
    drop(held);
    closing.await.expect("drains");
    assert_eq!(m.0.teardowns(), vec![(k("a"), 0, TeardownReason::Closed)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_under_load_drains_everything() {
    let m = Shared(TestManager::shared());
    let p = KeyedPool::builder(m.clone())
        .max_per_key(3)
        .max_total(5)
        .wait_timeout(Some(Duration::from_secs(5)))
        .build()
        .expect("builds");
    let mut tasks = Vec::new();
    for t in 0..16 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("k{}", t % 4);
            let mut served = 0u32;
            loop {
                match p.get(key.clone()).await {
                    Ok(mut r) => {
                        served += 1;
                        if served.is_multiple_of(7) {
                            r.mark_broken();
                        }
                        tokio::task::yield_now().await;
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
    let mut served = 0;
    for t in tasks {
        served += t.await.expect("task");
    }
    assert!(served > 0);
    let s = p.stats();
    assert_eq!((s.live, s.idle, s.tearing_down, s.waiting), (0, 0, 0, 0));
    assert_eq!(s.created, s.discarded + s.detached);
    assert_eq!(s.discarded, s.torn_down);
    assert_eq!(m.0.teardowns().len() as u64, s.created);
    assert_eq!(m.0.created(), s.created);
}
