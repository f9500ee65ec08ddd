//! Property tests: the invariants of each pool under random operation sequences.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BufMut;
use common::{Shared, TestManager};
use orch_pool::{BufferPool, InternError, Interner, KeyedPool, ObjectPool, RecycleMode, Replenish};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum ObjOp {
    Get,
    Drop(usize),
    Detach(usize),
    Dirty(usize),
    Poison(usize),
}

fn obj_op() -> impl Strategy<Value = ObjOp> {
    prop_oneof![
        3 => Just(ObjOp::Get),
        3 => (0usize..16).prop_map(ObjOp::Drop),
        1 => (0usize..16).prop_map(ObjOp::Detach),
        2 => (0usize..16).prop_map(ObjOp::Dirty),
        1 => (0usize..16).prop_map(ObjOp::Poison),
    ]
}

#[derive(Debug, Default)]
struct Obj {
    id: u64,
    dirty: bool,
    poisoned: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn object_pool_invariants(max in 1usize..6, prewarm in 0usize..8, ops in prop::collection::vec(obj_op(), 0..80)) {
        let ids = Arc::new(AtomicU64::new(0));
        let factory_ids = Arc::clone(&ids);
        let pool = ObjectPool::builder(move || Obj { id: factory_ids.fetch_add(1, Ordering::Relaxed), ..Obj::default() })
            .max_size(max)
            .prewarm(prewarm)
            .reset(|o: &mut Obj| o.dirty = false)
            .validate(|o: &Obj| !o.poisoned)
            .build();
        let mut held = Vec::new();
        let mut gets = 0u64;
        for op in ops {
            match op {
                ObjOp::Get => {
                    let g = pool.get();
                    prop_assert!(!g.dirty, "reset always ran");
                    prop_assert!(!g.poisoned, "invalid objects never come back");
                    gets += 1;
                    held.push(g);
                }
                ObjOp::Drop(i) if !held.is_empty() => { let n = held.len(); drop(held.swap_remove(i % n)); }
                ObjOp::Detach(i) if !held.is_empty() => { let n = held.len(); let _ = held.swap_remove(i % n).detach(); }
                ObjOp::Dirty(i) if !held.is_empty() => { let n = held.len(); held[i % n].dirty = true; }
                ObjOp::Poison(i) if !held.is_empty() => { let n = held.len(); held[i % n].poisoned = true; }
                _ => {}
            }
            prop_assert!(pool.available() <= max, "never above max");
            let live: HashSet<u64> = held.iter().map(|g| g.id).collect();
            prop_assert_eq!(live.len(), held.len(), "never two holders of one object");
        }
        let outstanding = held.len() as u64;
        drop(held);
        let s = pool.stats();
        prop_assert_eq!(s.hits + s.misses, gets);
        prop_assert_eq!(s.returns + s.discards + s.detached, gets);
        prop_assert_eq!(s.misses, ids.load(Ordering::Relaxed) - prewarm.min(max) as u64);
        prop_assert!(outstanding <= gets);
    }

    #[test]
    fn interner_invariants(max_entries in 1usize..40, max_len in 0usize..12, words in prop::collection::vec("[a-e]{0,14}", 0..120)) {
        let i = Interner::builder().max_entries(max_entries).max_len(max_len).build().expect("no prewarm");
        let mut model: HashMap<String, orch_pool::Symbol> = HashMap::new();
        for w in &words {
            match i.get_or_intern(w) {
                Ok(sym) => {
                    if let Some(&prev) = model.get(w) {
                        prop_assert_eq!(prev, sym);
                    }
                    model.insert(w.clone(), sym);
                    prop_assert_eq!(i.resolve(sym), Some(w.as_str()), "resolves to exactly the input");
                }
                Err(InternError::TooLong { len, .. }) => {
                    prop_assert!(w.len() > max_len && len == w.len());
                    prop_assert!(!model.contains_key(w));
                }
                Err(InternError::Full { .. }) => {
                    prop_assert_eq!(model.len(), max_entries);
                    prop_assert!(!model.contains_key(w));
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
            prop_assert!(i.len() <= max_entries);
        }
        prop_assert_eq!(i.len(), model.len());
        let distinct: HashSet<_> = model.values().collect();
        prop_assert_eq!(distinct.len(), model.len(), "distinct strings, distinct symbols");
        for (w, &sym) in &model {
            prop_assert_eq!(i.get(w), Some(sym));
        }
    }

    #[test]
    fn buffer_pool_invariants(per_class in 1usize..4, reqs in prop::collection::vec((0usize..80_000, 0usize..5_000, any::<bool>()), 0..40)) {
        let pool = BufferPool::builder().per_class(per_class).build();
        let classes = pool.classes();
        let mut held = Vec::new();
        for (min_len, write, release) in reqs {
            let mut b = pool.get(min_len);
            prop_assert!(b.is_empty(), "cleared");
            prop_assert!(b.capacity() >= min_len);
            match b.class_size() {
                Some(c) => {
                    prop_assert_eq!(b.capacity(), c);
                    let smallest = classes.iter().copied().find(|&c| c >= min_len);
                    prop_assert_eq!(Some(c), smallest, "smallest class that fits");
                }
                None => prop_assert!(min_len > *classes.last().expect("classes")),
            }
            b.put_bytes(7, write);
            if release { drop(b) } else { held.push(b) }
            for &c in &classes {
                prop_assert!(pool.available(c) <= per_class, "never above the cap");
            }
        }
        drop(held);
        let s = pool.stats();
        let pooled_gets = s.hits + s.misses;
        prop_assert_eq!(pooled_gets, s.returns + s.discards, "stats add up");
    }
}

#[derive(Debug, Clone)]
enum KOp {
    Get(u8),
    Drop(usize),
    Break(usize),
    Advance(u8),
}

fn k_op() -> impl Strategy<Value = KOp> {
    prop_oneof![
        4 => (0u8..3).prop_map(KOp::Get),
        3 => (0usize..16).prop_map(KOp::Drop),
        1 => (0usize..16).prop_map(KOp::Break),
        1 => (0u8..40).prop_map(KOp::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn keyed_pool_invariants(per_key in 1usize..4, total in 1usize..6, max_reuse in 0u32..4, ops in prop::collection::vec(k_op(), 0..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
        rt.block_on(async move {
            let m = Shared(TestManager::shared());
            let p = KeyedPool::builder(m.clone())
                .max_per_key(per_key)
                .max_total(total)
                .max_reuse(Some(max_reuse))
                .idle_timeout(Some(Duration::from_secs(30)))
                .health_check_interval(None)
                .build()
                .expect("builds");
            let mut held = Vec::new();
            let mut handed_out = 0u64;
            for op in ops {
                match op {
                    KOp::Get(key) => {
                        if let Ok(r) = p.get_timeout(format!("k{key}"), Duration::ZERO).await {
                            prop_assert_eq!(u64::from(r.resets) + 1, u64::from(r.metrics().uses), "recycle ran on every reuse");
                            prop_assert!(r.metrics().uses <= max_reuse + 1, "reuse limit");
                            handed_out += 1;
                            held.push(r);
                        }
                    }
                    KOp::Drop(i) if !held.is_empty() => { let n = held.len(); drop(held.swap_remove(i % n)); }
                    KOp::Break(i) if !held.is_empty() => { let n = held.len(); held[i % n].mark_broken(); }
                    KOp::Advance(s) => tokio::time::sleep(Duration::from_secs(u64::from(s))).await,
                    _ => {}
                }
                tokio::task::yield_now().await;
                let s = p.stats();
                prop_assert!(s.live <= total, "never above the total");
                for key in 0..3 {
                    prop_assert!(p.key_status(&format!("k{key}")).0 <= per_key, "never above the per-key limit");
                }
                let ids: HashSet<u64> = held.iter().map(|r| r.id).collect();
                prop_assert_eq!(ids.len(), held.len(), "never two holders of one resource");
                prop_assert_eq!(s.created, s.live as u64 + s.discarded + s.detached, "stats add up");
            }
            drop(held);
            p.close().await;
            let s = p.stats();
            prop_assert_eq!(s.live, 0);
            prop_assert_eq!(s.created, s.torn_down);
            prop_assert_eq!(s.reused + s.created, handed_out);
            prop_assert_eq!(m.0.teardowns().len() as u64, s.created);
            Ok(())
        })?;
    }
}

#[derive(Debug, Clone)]
enum WOp {
    Get(u8),
    Drop(usize),
    Retire(usize),
    Break(usize),
    Prewarm(u8, u8),
    Advance(u8),
}

fn w_op() -> impl Strategy<Value = WOp> {
    prop_oneof![
        4 => (0u8..3).prop_map(WOp::Get),
        3 => (0usize..16).prop_map(WOp::Drop),
        2 => (0usize..16).prop_map(WOp::Retire),
        1 => (0usize..16).prop_map(WOp::Break),
        1 => ((0u8..3), (0u8..4)).prop_map(|(k, n)| WOp::Prewarm(k, n)),
        1 => (0u8..40).prop_map(WOp::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The same invariants with background recycling and warm keys, whose creates and
    /// recycles take time (so they overlap gets, returns and the reaper).
    #[test]
    fn keyed_pool_warm_invariants(per_key in 1usize..4, total in 1usize..6, min_idle in 0usize..3, background in any::<bool>(), on_return in any::<bool>(), ops in prop::collection::vec(w_op(), 0..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime");
        rt.block_on(async move {
            let m = Shared(TestManager::shared());
            *m.0.create_delay.lock() = Some(Duration::from_secs(1));
            *m.0.recycle_delay.lock() = Some(Duration::from_secs(1));
            let p = KeyedPool::builder(m.clone())
                .max_per_key(per_key)
                .max_total(total)
                .max_reuse(Some(3))
                .min_idle(min_idle)
                .replenish(if on_return { Replenish::OnReturn } else { Replenish::Eager })
                .recycle_mode(if background { RecycleMode::Background } else { RecycleMode::OnAcquire })
                .idle_timeout(Some(Duration::from_secs(30)))
                .health_check_interval(Some(Duration::from_secs(20)))
                .build()
                .expect("builds");
            let mut held = Vec::new();
            let mut handed_out = 0u64;
            for op in ops {
                match op {
                    WOp::Get(key) => {
                        let got = tokio::time::timeout(Duration::from_millis(2500), p.get(format!("k{key}"))).await;
                        if let Ok(Ok(r)) = got {
                            prop_assert_eq!(u64::from(r.resets) + 1, u64::from(r.metrics().uses), "reset before every reuse");
                            handed_out += 1;
                            held.push(r);
                        }
                    }
                    WOp::Drop(i) if !held.is_empty() => { let n = held.len(); drop(held.swap_remove(i % n)); }
                    WOp::Retire(i) if !held.is_empty() => { let n = held.len(); held.swap_remove(i % n).retire(); }
                    WOp::Break(i) if !held.is_empty() => { let n = held.len(); held[i % n].mark_broken(); }
                    WOp::Prewarm(key, n) => p.prewarm(format!("k{key}"), usize::from(n)),
                    WOp::Advance(s) => tokio::time::sleep(Duration::from_millis(u64::from(s) * 100)).await,
                    _ => {}
                }
                tokio::task::yield_now().await;
                let s = p.stats();
                prop_assert!(s.live <= total, "never above the total");
                for key in 0..3 {
                    let (live, idle) = p.key_status(&format!("k{key}"));
                    prop_assert!(live <= per_key, "never above the per-key limit");
                    prop_assert!(idle <= live);
                }
                let ids: HashSet<u64> = held.iter().map(|r| r.id).collect();
                prop_assert_eq!(ids.len(), held.len(), "never two holders of one resource");
                prop_assert_eq!(s.created as usize + s.creating, s.live + (s.discarded + s.detached) as usize, "stats add up");
                prop_assert_eq!(s.created, s.misses + s.prewarmed);
                prop_assert_eq!(s.hits + s.misses, handed_out);
            }
            drop(held);
            p.close().await;
            let s = p.stats();
            prop_assert_eq!((s.live, s.creating, s.recycling, s.tearing_down), (0, 0, 0, 0));
            prop_assert_eq!(s.created, s.torn_down);
            prop_assert_eq!(s.hits + s.misses, handed_out);
            prop_assert_eq!(m.0.teardowns().len() as u64, s.created);
            Ok(())
        })?;
    }
}
