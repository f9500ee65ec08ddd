//! Which items may have become ready, so a scheduling pass looks at a handful of items
//! instead of the whole plan.
//!
//! [`Plan::ready_batch`] scans every item (dependencies, file ownership of every active
//! item); at a thousand items that is most of a Commander pass. The index keeps the items
//! whose readiness may have changed since the last pass: the Commander *touches* an item
//! whenever it changes the item's state, which makes the item itself, its dependants and the
//! items sharing a file with it candidates. A pass checks only the candidates, in plan order,
//! and picks the same conflict-free set `ready_batch` would. Anything that changes the plan's
//! structure (a new plan, fix-up items, writes by others merged in) rebuilds the index.

use std::collections::{BTreeSet, HashMap};

use orch_mvcc::{Item, ItemState, Plan};

/// The items whose readiness may have changed since the last scheduling pass (see the module
/// docs).
#[derive(Debug, Default)]
pub struct ReadyIndex {
    /// Set by [`invalidate`](Self::invalidate): the next pass rebuilds.
    stale: bool,
    /// Item id → position in `plan.items`.
    pos: HashMap<String, usize>,
    /// Position → positions of the items that depend on it.
    dependants: Vec<Vec<usize>>,
    /// Exact file path → positions of the items that own it.
    by_file: HashMap<String, Vec<usize>>,
    /// Position → the item's files.
    file_lists: Vec<Vec<String>>,
    /// Items owning a directory entry (`dir/`): checked against every item, which is fine
    /// because plans rarely have them.
    dir_owners: Vec<usize>,
    /// Positions whose readiness may have changed.
    candidates: BTreeSet<usize>,
}

impl ReadyIndex {
    /// An index that builds itself from the plan on the first pass.
    pub fn new() -> Self {
        ReadyIndex {
            stale: true,
            ..ReadyIndex::default()
        }
    }

    /// The plan's structure changed: the next pass rebuilds the index.
    pub fn invalidate(&mut self) {
        self.stale = true;
    }

    /// `id` changed state: it, its dependants and the items sharing a file with it become
    /// candidates.
    pub fn touch(&mut self, id: &str) {
        if self.stale {
            return;
        }
        let Some(&p) = self.pos.get(id) else {
            // An id the index does not know: the plan changed under it.
            self.stale = true;
            return;
        };
        if self.file_lists[p].iter().any(|f| f.ends_with('/')) {
            // A directory entry: any item may own a file inside it.
            self.candidates.extend(0..self.file_lists.len());
            return;
        }
        self.candidates.insert(p);
        self.candidates.extend(self.dependants[p].iter().copied());
        self.candidates.extend(self.dir_owners.iter().copied());
        for file in &self.file_lists[p] {
            if let Some(owners) = self.by_file.get(file) {
                self.candidates.extend(owners.iter().copied());
            }
        }
    }

    fn files_of(&self, p: usize) -> impl Iterator<Item = &Vec<usize>> {
        self.file_lists
            .get(p)
            .into_iter()
            .flatten()
            .filter_map(|f| self.by_file.get(f))
    }

    fn rebuild(&mut self, plan: &Plan) {
        let n = plan.items.len();
        self.pos = plan
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.id.as_str().to_owned(), i))
            .collect();
        self.dependants = vec![Vec::new(); n];
        self.by_file.clear();
        self.dir_owners.clear();
        self.file_lists = Vec::with_capacity(n);
        for (i, item) in plan.items.iter().enumerate() {
            for dep in &item.deps {
                if let Some(&d) = self.pos.get(dep.as_str()) {
                    self.dependants[d].push(i);
                }
            }
            if item.files.iter().any(|f| f.ends_with('/')) {
                self.dir_owners.push(i);
            }
            for file in &item.files {
                self.by_file.entry(file.clone()).or_default().push(i);
            }
            self.file_lists.push(item.files.clone());
        }
        self.candidates = (0..n)
            .filter(|&i| plan.items[i].state == ItemState::Pending)
            .collect();
        self.stale = false;
    }

    /// The ready candidates, in plan order, skipping any that shares a file with one picked
    /// before it: what [`Plan::ready_batch`] returns, computed from the candidates only, and
    /// cut at `limit` items (the rest stay candidates for the next pass).
    pub fn batch<'p>(&mut self, plan: &'p Plan, limit: usize) -> Vec<&'p Item> {
        if self.stale || self.pos.len() != plan.items.len() {
            self.rebuild(plan);
        }
        let mut candidates = std::mem::take(&mut self.candidates);
        let mut picked: Vec<&Item> = Vec::new();
        while let Some(p) = candidates.pop_first() {
            if picked.len() >= limit {
                candidates.insert(p);
                self.candidates = candidates;
                break;
            }
            let Some(item) = plan.items.get(p) else {
                continue;
            };
            if item.state != ItemState::Pending
                || !item.deps.iter().all(|d| {
                    self.pos
                        .get(d.as_str())
                        .is_some_and(|&q| plan.items[q].state == ItemState::Done)
                })
                || self.blocked_by_active(plan, p)
                || picked.iter().any(|q| q.shares_files_with(item))
            {
                // Not ready now: whatever would make it ready touches it again.
                continue;
            }
            picked.push(item);
        }
        picked
    }

    /// Whether an active (in progress or in review) item owns one of `p`'s files.
    fn blocked_by_active(&self, plan: &Plan, p: usize) -> bool {
        let item = &plan.items[p];
        let active = |q: &usize| *q != p && plan.items[*q].state.is_active();
        if item.files.iter().any(|f| f.ends_with('/')) {
            // A directory entry: every item may hold a file inside it.
            return plan
                .items
                .iter()
                .enumerate()
                .any(|(q, other)| active(&q) && other.shares_files_with(item));
        }
        self.files_of(p).any(|owners| owners.iter().any(active))
            || self
                .dir_owners
                .iter()
                .any(|q| active(q) && plan.items[*q].shares_files_with(item))
    }
}

#[cfg(test)]
mod tests {
    use orch_mvcc::ItemId;
    use proptest::prelude::*;

    use super::*;

    fn item(id: usize, files: &[String], deps: &[usize]) -> Item {
        Item::new(ItemId::new(format!("T{id}")).unwrap(), format!("item {id}"))
            .with_files(files.iter().cloned())
            .with_deps(deps.iter().map(|d| ItemId::new(format!("T{d}")).unwrap()))
    }

    fn ids(items: &[&Item]) -> Vec<String> {
        items.iter().map(|i| i.id.to_string()).collect()
    }

    const STATES: [ItemState; 5] = [
        ItemState::Pending,
        ItemState::InProgress,
        ItemState::InReview,
        ItemState::Done,
        ItemState::Failed,
    ];

    proptest! {
        /// Whatever states change (each change touched, as the Commander does), a pass picks
        /// exactly what a full scan picks.
        #[test]
        fn passes_agree_with_a_full_scan(
            n in 1usize..24,
            files in proptest::collection::vec((0usize..8, any::<bool>()), 24),
            deps in proptest::collection::vec(proptest::collection::vec(0usize..24, 0..3), 24),
            changes in proptest::collection::vec((0usize..24, 0usize..5), 0..60),
        ) {
            let mut plan = Plan::new("p");
            for i in 0..n {
                let (f, dir) = files[i];
                let file = if dir && f < 2 { format!("d{f}/") } else { format!("d{}/f{f}", f % 2) };
                let ds: Vec<usize> = deps[i].iter().copied().filter(|d| *d < i).collect();
                plan.push(item(i, &[file], &ds));
            }
            let mut index = ReadyIndex::new();
            for (i, s) in changes {
                // A pass, then what the Commander does with it: the picked items start.
                let picked = ids(&index.batch(&plan, usize::MAX));
                prop_assert_eq!(&picked, &ids(&plan.ready_batch()));
                for id in &picked {
                    plan.set_state(id, ItemState::InProgress);
                }
                if i < n {
                    let id = format!("T{i}");
                    plan.set_state(&id, STATES[s]);
                    index.touch(&id);
                }
            }
            prop_assert_eq!(ids(&index.batch(&plan, usize::MAX)), ids(&plan.ready_batch()));
        }
    }

    #[test]
    fn a_limited_pass_keeps_the_rest_for_later() {
        let mut plan = Plan::new("p");
        for i in 0..10 {
            plan.push(item(i, &[format!("f{i}")], &[]));
        }
        let mut index = ReadyIndex::new();
        let first = ids(&index.batch(&plan, 4));
        assert_eq!(first, ["T0", "T1", "T2", "T3"]);
        for id in &first {
            plan.set_state(id, ItemState::InProgress);
        }
        assert_eq!(ids(&index.batch(&plan, 4)), ["T4", "T5", "T6", "T7"]);
        assert_eq!(index.candidates.len(), 2);
    }

    #[test]
    fn a_pass_after_a_change_looks_only_at_touched_items() {
        let mut plan = Plan::new("p");
        for i in 0..100 {
            let deps: Vec<usize> = if i > 0 { vec![i - 1] } else { vec![] };
            plan.push(item(i, &[format!("f{i}")], &deps));
        }
        let mut index = ReadyIndex::new();
        assert_eq!(ids(&index.batch(&plan, usize::MAX)), ["T0"]);
        assert!(index.candidates.is_empty());
        plan.set_state("T0", ItemState::Done);
        index.touch("T0");
        assert_eq!(index.candidates.len(), 2, "T0 and its dependant");
        assert_eq!(ids(&index.batch(&plan, usize::MAX)), ["T1"]);
        plan.set_state("T1", ItemState::InProgress);
        // Structure changed (an item added): rebuilt from the whole plan.
        plan.push(item(100, &["g".into()], &[]));
        assert_eq!(ids(&index.batch(&plan, usize::MAX)), ["T100"]);
    }
}
