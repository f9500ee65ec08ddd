//! Shared test helpers: a proptest strategy for valid plans.
#![allow(dead_code, unreachable_pub)]

use orch_mvcc::{Item, ItemId, ItemState, Plan};
use proptest::prelude::*;

fn state() -> impl Strategy<Value = ItemState> {
    prop::sample::select(ItemState::ALL.to_vec())
}

fn trimmed(re: &'static str) -> impl Strategy<Value = String> {
    re.prop_map(|s: String| s.trim().to_owned())
}

fn note() -> impl Strategy<Value = String> {
    prop::collection::vec(trimmed("[A-Za-z0-9é][A-Za-z0-9 é.,:()*#`-]{0,24}"), 1..3)
        .prop_map(|lines| lines.join("\n"))
}

fn description() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9 #>*`.-]{0,30}", 0..5).prop_map(|lines| {
        let mut out: Vec<String> = Vec::new();
        for l in lines {
            let l = l.trim_end().to_owned();
            if l.is_empty() && out.last().is_none_or(String::is_empty) {
                continue;
            }
            out.push(l);
        }
        while out.last().is_some_and(String::is_empty) {
            out.pop();
        }
        out.join("\n")
    })
}

/// Valid plans of up to `max_items` items; dependencies point to earlier items.
pub fn plan(max_items: usize) -> impl Strategy<Value = Plan> {
    let item = (
        "[a-zA-Z][a-zA-Z0-9_.-]{0,6}",
        state(),
        trimmed("[A-Za-z0-9é][A-Za-z0-9 é—.,:()*`#\\[\\]/-]{0,30}"),
        prop::collection::vec(trimmed("[a-z0-9_][a-z0-9_./ -]{0,14}"), 0..3),
        prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        prop_oneof![Just(0u32), 1u32..10, Just(u32::MAX)],
        prop::collection::vec(note(), 0..3),
    );
    (
        trimmed("[A-Za-z0-9 :#*`-]{0,24}"),
        description(),
        prop::collection::vec(item, 0..=max_items),
    )
        .prop_map(|(title, description, items)| {
            let mut plan = Plan {
                title,
                description,
                items: Vec::new(),
            };
            for (i, (prefix, state, summary, files, deps, attempts, notes)) in
                items.into_iter().enumerate()
            {
                let id = ItemId::new(format!("{prefix}{i}")).expect("generated id is valid");
                let mut item = Item::new(id, summary).with_state(state).with_files(files);
                if i > 0 {
                    let mut ds: Vec<ItemId> = deps
                        .iter()
                        .map(|ix| plan.items[ix.index(i)].id.clone())
                        .collect();
                    ds.dedup();
                    item.deps = ds;
                }
                item.attempts = attempts;
                item.notes = notes;
                plan.items.push(item);
            }
            plan
        })
        .prop_filter("plan must be representable", |p| p.validate().is_ok())
}

/// A temporary directory, on tmpfs when the machine has one: the store's renames cost
/// milliseconds of journal work on some disks even without fsync, and these tests are about
/// logic, not disks.
pub fn fast_tempdir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("temporary directory")
}
