//! The object pool across threads: per-thread slots, taking parked objects, the size bound,
//! and counts that add up after concurrent use.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use orch_pool::{ObjectPool, Pooled};
use proptest::prelude::*;

#[derive(Debug, Default)]
struct Obj {
    id: u64,
    /// Set while a guard holds the object.
    held: AtomicBool,
    /// Set by the holder, cleared by the reset hook.
    dirty: bool,
    poisoned: bool,
}

/// A pool whose factory numbers objects, with a reset hook and a validity check.
fn pool(max: usize, prewarm: usize) -> (ObjectPool<Obj>, Arc<AtomicU64>) {
    let created = Arc::new(AtomicU64::new(0));
    let ids = Arc::clone(&created);
    let pool = ObjectPool::builder(move || Obj {
        id: ids.fetch_add(1, Ordering::Relaxed),
        ..Obj::default()
    })
    .max_size(max)
    .prewarm(prewarm)
    .reset(|o: &mut Obj| o.dirty = false)
    .validate(|o: &Obj| !o.poisoned)
    .build();
    (pool, created)
}

/// Marks the guard's object as held; fails if another guard holds it or it was not reset.
fn hold(g: Pooled<'_, Obj>) -> Pooled<'_, Obj> {
    assert!(
        !g.held.swap(true, Ordering::SeqCst),
        "object {} given to two holders",
        g.id
    );
    assert!(!g.dirty, "object {} handed out without its reset", g.id);
    assert!(!g.poisoned, "invalid object {} handed out", g.id);
    g
}

/// Dirties the object and lets go of it (the guard decides what becomes of it).
fn unhold(g: &mut Pooled<'_, Obj>) {
    g.dirty = true;
    g.held.store(false, Ordering::SeqCst);
}

/// Every kept object, taken with `try_get` on this thread; checks each is free and reset.
fn drain_ids(pool: &ObjectPool<Obj>) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut guards = Vec::new();
    while let Some(g) = pool.try_get() {
        let g = hold(g);
        ids.push(g.id);
        guards.push(g);
    }
    for mut g in guards {
        unhold(&mut g);
    }
    ids
}

/// Checks the counters against what the callers did and what the factory made.
fn assert_counts_add_up(pool: &ObjectPool<Obj>, created: u64, prewarmed: u64, gets: u64) {
    let s = pool.stats();
    assert_eq!(s.hits + s.misses, gets, "{s:?}");
    assert_eq!(
        s.returns + s.discards + s.detached,
        gets,
        "every guard ended once: {s:?}"
    );
    assert_eq!(
        s.misses,
        created - prewarmed,
        "misses are the objects created: {s:?}"
    );
    let kept = prewarmed + s.returns - s.hits;
    assert!(
        kept <= pool.max_size() as u64,
        "{kept} kept, max {}",
        pool.max_size()
    );
    assert_eq!(pool.available() as u64, kept);
    let ids = drain_ids(pool);
    assert_eq!(ids.len() as u64, kept, "every kept object can be taken");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
}

#[test]
fn a_thread_gets_back_the_object_in_its_slot_first() {
    let (pool, _) = pool(64, 0);
    let (a, b) = (hold(pool.get()), hold(pool.get()));
    let (a_id, b_id) = (a.id, b.id);
    for mut g in [a, b] {
        unhold(&mut g); // `a` fills the thread's empty slot, `b` goes to the shared list
    }
    assert_eq!(pool.get().id, a_id, "the slot's object comes back first");
    assert_eq!(pool.try_get().map(|g| g.id), Some(a_id));
    let (first, second) = (pool.get(), pool.get());
    assert_eq!((first.id, second.id), (a_id, b_id));
    assert!(pool.try_get().is_none());
}

#[test]
fn an_object_parked_by_one_thread_is_taken_by_another() {
    let (pool, created) = pool(64, 0);
    let parked = std::thread::scope(|s| {
        s.spawn(|| {
            let mut g = hold(pool.get());
            unhold(&mut g);
            g.id
        })
        .join()
    })
    .expect("worker thread");
    assert_eq!(pool.available(), 1);
    let g = pool
        .try_get()
        .map(hold)
        .expect("the other thread's object is available");
    assert_eq!(g.id, parked);
    assert!(!g.dirty, "reset ran before the object was parked");
    assert_eq!(created.load(Ordering::Relaxed), 1);
    let s = pool.stats();
    assert_eq!((s.hits, s.misses, s.returns), (1, 1, 1));
}

#[test]
fn one_thread_can_fill_the_whole_pool_and_empty_it() {
    let (pool, created) = pool(64, 0);
    let mut guards: Vec<_> = (0..100).map(|_| hold(pool.get())).collect();
    guards.iter_mut().for_each(unhold);
    drop(guards);
    let s = pool.stats();
    assert_eq!((s.returns, s.discards), (64, 36));
    assert_eq!(pool.available(), 64);
    let guards: Vec<_> = (0..64).map(|_| hold(pool.get())).collect();
    assert_eq!(pool.stats().hits, 64, "every kept object is a hit");
    assert!(pool.try_get().is_none());
    let fresh = pool.get();
    assert_eq!(fresh.id, 100, "only an empty pool creates");
    assert_eq!(created.load(Ordering::Relaxed), 101);
    drop((guards, fresh));
}

#[test]
fn a_pool_filled_by_another_thread_can_be_emptied_by_this_one() {
    let (pool, _) = pool(64, 0);
    // Gives this thread its slot before the other thread runs.
    assert!(pool.try_get().is_none());
    // The other thread's returns fill its slot, then the shared list, then every empty slot,
    // this thread's included, without this thread knowing.
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut guards: Vec<_> = (0..64).map(|_| hold(pool.get())).collect();
            guards.iter_mut().for_each(unhold);
        })
        .join()
    })
    .expect("filling thread");
    assert_eq!(pool.available(), 64);
    let mut ids = drain_ids(&pool);
    ids.sort_unstable();
    assert_eq!(ids, (0..64).collect::<Vec<_>>());
}

#[test]
fn prewarm_may_fill_every_place_in_the_pool() {
    let (pool, created) = pool(64, 500);
    assert_eq!((pool.max_size(), pool.available()), (64, 64));
    let mut ids = drain_ids(&pool);
    ids.sort_unstable();
    assert_eq!(ids, (0..64).collect::<Vec<_>>());
    assert_eq!(created.load(Ordering::Relaxed), 64);
    assert_eq!(pool.stats().misses, 0);
}

#[test]
fn small_pools_keep_their_bound() {
    for max in 1..6 {
        let (pool, _) = pool(max, 0);
        let guards: Vec<_> = (0..10).map(|_| pool.get()).collect();
        drop(guards);
        assert_eq!(pool.max_size(), max);
        assert_eq!(pool.available(), max);
        assert_eq!(pool.stats().discards, 10 - max as u64);
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    Release(usize),
    Detach(usize),
    Discard(usize),
    Poison(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Get),
        4 => (0usize..8).prop_map(Op::Release),
        1 => (0usize..8).prop_map(Op::Detach),
        1 => (0usize..8).prop_map(Op::Discard),
        1 => (0usize..8).prop_map(Op::Poison),
    ]
}

/// Runs `ops` on this thread; returns the number of gets. Drops what it still holds at the end.
fn run_ops(pool: &ObjectPool<Obj>, ops: impl IntoIterator<Item = Op>) -> u64 {
    let mut held: Vec<Pooled<'_, Obj>> = Vec::new();
    let mut gets = 0;
    for op in ops {
        let n = held.len();
        match op {
            Op::Get => {
                held.push(hold(pool.get()));
                gets += 1;
            }
            Op::Release(i) if n > 0 => {
                let mut g = held.swap_remove(i % n);
                unhold(&mut g);
            }
            Op::Detach(i) if n > 0 => {
                let mut g = held.swap_remove(i % n);
                unhold(&mut g);
                let _ = g.detach();
            }
            Op::Discard(i) if n > 0 => {
                let mut g = held.swap_remove(i % n);
                unhold(&mut g);
                g.discard();
            }
            Op::Poison(i) if n > 0 => held[i % n].poisoned = true,
            _ => {}
        }
    }
    held.iter_mut().for_each(unhold);
    gets
}

/// A cheap deterministic op stream for the stress test.
fn op_stream(seed: u64, len: usize) -> impl Iterator<Item = Op> {
    let mut x = seed | 1;
    (0..len).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x >> 8) as usize % 8;
        match x % 16 {
            0..=6 => Op::Get,
            7..=12 => Op::Release(i),
            13 => Op::Detach(i),
            14 => Op::Discard(i),
            _ => Op::Poison(i),
        }
    })
}

#[test]
fn concurrent_use_never_shares_an_object_and_counts_add_up() {
    for (max, prewarm) in [(200, 50), (16, 16), (3, 0)] {
        let (pool, created) = pool(max, prewarm);
        let threads = 4;
        let barrier = Barrier::new(threads);
        let gets: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads as u64)
                .map(|t| {
                    let (pool, barrier) = (&pool, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        run_ops(pool, op_stream(0x9e37_79b9 * (t + 1), 20_000))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("stress thread"))
                .sum()
        });
        let prewarmed = prewarm.min(max) as u64;
        assert_counts_add_up(&pool, created.load(Ordering::Relaxed), prewarmed, gets);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn object_pool_invariants_across_threads(
        max in 1usize..40,
        prewarm in 0usize..50,
        per_thread in prop::collection::vec(prop::collection::vec(op(), 0..60), 1..4),
    ) {
        let (pool, created) = pool(max, prewarm);
        let gets: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = per_thread
                .iter()
                .map(|ops| {
                    let pool = &pool;
                    s.spawn(move || run_ops(pool, ops.iter().copied()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("op thread")).sum()
        });
        assert_counts_add_up(&pool, created.load(Ordering::Relaxed), prewarm.min(max) as u64, gets);
    }
}
