//! Property test: random operations from several writers (each with its own store handle on
//! one directory) against a plain in-memory model.

mod common;

use std::fs;

use orch_mvcc::{
    Durability, Item, ItemId, ItemState, Plan, StoreError, StoreOptions, TODO_FILE, TodoStore,
    render,
};
use proptest::prelude::*;

const WRITERS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    SetState {
        w: usize,
        item: usize,
        state: ItemState,
    },
    AddItem {
        w: usize,
        deps_on_last: bool,
    },
    AddNote {
        w: usize,
        item: usize,
        note: String,
    },
    Remove {
        w: usize,
        item: usize,
    },
    /// `w` reads, `other` commits, then `w` compare-and-swaps on the stale version.
    LostRace {
        w: usize,
        other: usize,
        item: usize,
    },
    /// A person edits TODO.md directly.
    ExternalEdit {
        item: usize,
        summary: String,
    },
    Reopen {
        w: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WRITERS;
    prop_oneof![
        4 => (w.clone(), any::<usize>(), prop::sample::select(ItemState::ALL.to_vec()))
            .prop_map(|(w, item, state)| Op::SetState { w, item, state }),
        2 => (w.clone(), any::<bool>()).prop_map(|(w, deps_on_last)| Op::AddItem { w, deps_on_last }),
        1 => (w.clone(), any::<usize>(), "[a-z][a-z ]{0,10}[a-z]")
            .prop_map(|(w, item, note)| Op::AddNote { w, item, note }),
        1 => (w.clone(), any::<usize>()).prop_map(|(w, item)| Op::Remove { w, item }),
        1 => (w.clone(), w.clone(), any::<usize>())
            .prop_map(|(w, other, item)| Op::LostRace { w, other, item }),
        1 => (any::<usize>(), "[A-Z][a-z]{1,8}")
            .prop_map(|(item, summary)| Op::ExternalEdit { item, summary }),
        1 => w.prop_map(|w| Op::Reopen { w }),
    ]
}

fn open(dir: &std::path::Path) -> TodoStore {
    TodoStore::open_with(
        dir,
        StoreOptions {
            durability: Durability::NoSync,
            ..StoreOptions::default()
        },
    )
    .expect("store opens")
}

fn pick(plan: &Plan, i: usize) -> Option<ItemId> {
    (!plan.items.is_empty()).then(|| plan.items[i % plan.items.len()].id.clone())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = common::fast_tempdir();
        let mut stores: Vec<TodoStore> = (0..WRITERS).map(|_| open(dir.path())).collect();
        let mut model = Plan::new("model");
        let mut version = stores[0].compare_and_swap("init", 0, model.clone()).unwrap();
        let mut next_id = 0usize;

        for op in ops {
            let before = version;
            match op {
                Op::SetState { w, item, state } => {
                    let Some(id) = pick(&model, item) else { continue };
                    let c = stores[w].update(&format!("w{w}"), |p| { p.set_state(&id, state); }).unwrap();
                    let old = model.set_state(&id, state);
                    if old == Some(state) {
                        prop_assert!(!c.changed);
                    } else {
                        version += 1;
                    }
                    prop_assert_eq!(c.version, version);
                }
                Op::AddItem { w, deps_on_last } => {
                    let new_id = ItemId::new(format!("N{next_id}")).unwrap();
                    next_id += 1;
                    let mut item = Item::new(new_id, "new item").with_files([format!("f{next_id}.rs")]);
                    if deps_on_last && let Some(last) = model.items.last() {
                        item.deps.push(last.id.clone());
                    }
                    let c = stores[w].update(&format!("w{w}"), |p| p.push(item.clone())).unwrap();
                    model.push(item);
                    version += 1;
                    prop_assert_eq!(c.version, version);
                }
                Op::AddNote { w, item, note } => {
                    let Some(id) = pick(&model, item) else { continue };
                    let c = stores[w].update(&format!("w{w}"), |p| {
                        p.item_mut(&id).unwrap().add_note(&note);
                    }).unwrap();
                    model.item_mut(&id).unwrap().add_note(&note);
                    version += 1;
                    prop_assert_eq!(c.version, version);
                }
                Op::Remove { w, item } => {
                    let Some(id) = pick(&model, item) else { continue };
                    let depended_on = model.items.iter().any(|i| i.deps.contains(&id));
                    let result = stores[w].update(&format!("w{w}"), |p| { p.remove(&id); });
                    if depended_on {
                        prop_assert!(matches!(result, Err(StoreError::InvalidPlan(_))), "{:?}", result);
                    } else {
                        prop_assert_eq!(result.unwrap().version, version + 1);
                        model.remove(&id);
                        version += 1;
                    }
                }
                Op::LostRace { w, other, item } => {
                    let Some(id) = pick(&model, item) else { continue };
                    let (seen, mut stale) = stores[w].snapshot().unwrap();
                    prop_assert_eq!(seen, version);
                    stores[other].update("racer", |p| p.item_mut(&id).unwrap().attempts += 1).unwrap();
                    model.item_mut(&id).unwrap().attempts += 1;
                    version += 1;
                    stale.item_mut(&id).unwrap().summary = "lost".into();
                    let err = stores[w].compare_and_swap("loser", seen, stale).unwrap_err();
                    prop_assert_eq!(err.current_version(), Some(version));
                }
                Op::ExternalEdit { item, summary } => {
                    let Some(id) = pick(&model, item) else { continue };
                    if model.item(&id).unwrap().summary == summary {
                        continue;
                    }
                    model.item_mut(&id).unwrap().summary = summary;
                    fs::write(dir.path().join(TODO_FILE), render(&model)).unwrap();
                    version += 1;
                }
                Op::Reopen { w } => {
                    stores[w] = open(dir.path());
                }
            }
            prop_assert!(version >= before);
            for store in &stores {
                let (v, plan) = store.snapshot().unwrap();
                prop_assert_eq!(v, version);
                prop_assert_eq!(&plan, &model);
            }
        }
        let summary = stores[0].verify().unwrap();
        prop_assert_eq!(summary.last_version, version);
        let records = stores[0].audit_records().unwrap();
        prop_assert!(records.windows(2).all(|w| w[1].version == w[0].version + 1));
    }
}
