//! Property: random task trees, mixing every way of spawning, run every task exactly once on
//! real worker threads.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use orch_queue::{PoolBuilder, ShutdownPolicy, SpawnPriority, Spawner};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `spawn` from the parent task: the parent worker's local deque.
    Local,
    /// `spawn_with_priority`: an injector.
    Injected(SpawnPriority),
    /// A scoped task of a scope the parent opens.
    Scoped,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Local),
        prop::sample::select(SpawnPriority::ALL.to_vec()).prop_map(Kind::Injected),
        Just(Kind::Scoped),
    ]
}

struct Tree {
    children: Vec<Vec<(usize, Kind)>>,
    runs: Vec<AtomicU32>,
}

fn run_node(tree: &Arc<Tree>, spawner: &Spawner, node: usize) {
    tree.runs[node].fetch_add(1, Ordering::SeqCst);
    let kids = &tree.children[node];
    for &(child, kind) in kids {
        let (t, s) = (Arc::clone(tree), spawner.clone());
        let task = move || run_node(&t, &s, child);
        match kind {
            Kind::Local => spawner.spawn(task).unwrap(),
            Kind::Injected(p) => spawner.spawn_with_priority(p, task).unwrap(),
            Kind::Scoped => {}
        }
    }
    spawner.scope(|s| {
        for &(child, kind) in kids {
            if let Kind::Scoped = kind {
                s.spawn(move || run_node(tree, spawner, child));
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_task_trees_run_every_task_exactly_once(
        threads in 1usize..4,
        nodes in prop::collection::vec((any::<prop::sample::Index>(), kind()), 1..300),
    ) {
        let mut children = vec![Vec::new(); nodes.len() + 1];
        // Node 0 is the root; node i + 1 hangs under some earlier node.
        for (i, (parent, kind)) in nodes.iter().enumerate() {
            let parent = parent.index(i + 1);
            children[parent].push((i + 1, *kind));
        }
        let tree = Arc::new(Tree {
            runs: (0..children.len()).map(|_| AtomicU32::new(0)).collect(),
            children,
        });
        let pool = PoolBuilder::new().threads(threads).batch_limit(4).build().unwrap();
        let spawner = pool.spawner();
        let (t, s) = (Arc::clone(&tree), spawner.clone());
        pool.spawn(move || run_node(&t, &s, 0)).unwrap();
        let report = pool.shutdown(ShutdownPolicy::Drain).unwrap();
        for (i, r) in tree.runs.iter().enumerate() {
            prop_assert_eq!(r.load(Ordering::SeqCst), 1, "node {}", i);
        }
        prop_assert_eq!(report.discarded, 0);
        prop_assert_eq!(report.threads_joined, threads);
    }
}
