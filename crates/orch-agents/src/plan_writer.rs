//! The Commander's working copy of the plan, written behind to the `TODO.md` store.
//!
//! The Commander decides from an in-memory plan and changes it at once; the changes reach
//! the store ([`orch_mvcc::TodoStore`]: validation, render, hash, audit record, atomic
//! replace, fsync) in the background and in batches: while one commit is being written, later
//! changes queue, and the next commit carries all of them. A turn's hand-off (Worker done →
//! review; review passed → the dependant's Worker) therefore never waits for a disk write.
//!
//! A change is a closure, applied twice: to the working copy when it is made, and to the
//! store's current plan when it is written. So what other writers did in between (a person
//! editing `TODO.md`, another process) is merged, not overwritten; when a commit shows such
//! writes, the working copy becomes the store's plan with the still-queued changes applied on
//! top. Changes must therefore be deterministic functions of the plan they are given.
//!
//! Durability: a crash loses at most the changes not yet written. The mission journal is
//! written before the Commander acts on a change, and resume rebuilds from it what the store
//! lacks (finished Worker turns, passed reviews).

use orch_mvcc::{Plan, StoreError, TodoStore};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The writer id the Commander commits `TODO.md` changes under.
pub(crate) const WRITER: &str = "commander";

/// A change to the plan (see the module docs).
type Change = Box<dyn FnMut(&mut Plan) + Send + Sync>;

/// The outcome of one background commit.
struct Written {
    version: u64,
    /// The store's plan, when it holds writes by others.
    merged: Option<Plan>,
}

pub(crate) struct PlanWriter {
    store: TodoStore,
    plan: Plan,
    /// The store version the working copy reflects (with the changes in flight or queued).
    version: u64,
    queued: Vec<Change>,
    in_flight: Option<JoinHandle<Result<Written, StoreError>>>,
    /// Least time between the end of one commit and the start of the next.
    interval: Duration,
    next_at: Instant,
    commits: u64,
    batched: u64,
    merges: u64,
}

impl PlanWriter {
    /// A writer over `store` that starts a commit at most once per `interval`; the working
    /// copy is empty until the first [`sync`](Self::sync).
    pub(crate) fn new(store: TodoStore, interval: Duration) -> Self {
        PlanWriter {
            store,
            interval,
            next_at: Instant::now(),
            plan: Plan::default(),
            version: 0,
            queued: Vec::new(),
            in_flight: None,
            commits: 0,
            batched: 0,
            merges: 0,
        }
    }

    pub(crate) fn store(&self) -> &TodoStore {
        &self.store
    }

    /// The working copy.
    pub(crate) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Applies `change` to the working copy now and queues it for the store.
    pub(crate) fn change(&mut self, mut change: impl FnMut(&mut Plan) + Send + Sync + 'static) {
        change(&mut self.plan);
        self.queued.push(Box::new(change));
    }

    /// How many times the working copy was replaced by the store's plan (writes by others
    /// merged in): anything derived from the plan's structure must be rebuilt when it moves.
    pub(crate) fn merges(&self) -> u64 {
        self.merges
    }

    /// Commits (store writes) and the changes they carried, for the report.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (self.commits, self.batched)
    }

    /// Starts writing the queued changes unless a commit is being written or the last one
    /// ended less than the pacing interval ago (then they go with the next one, which
    /// [`drive`](Self::drive) starts).
    pub(crate) fn start(&mut self) {
        if self.in_flight.is_some() || self.queued.is_empty() || Instant::now() < self.next_at {
            return;
        }
        self.start_now();
    }

    fn start_now(&mut self) {
        let changes = std::mem::take(&mut self.queued);
        self.commits += 1;
        self.batched += changes.len() as u64;
        let store = self.store.clone();
        let known = self.version;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            write(&store, known, changes)
        }));
    }

    /// Drives the writes: waits for the commit being written, or for the pacing interval
    /// to start the next one. Pending forever when nothing is queued or in flight, so it can
    /// sit in a `select!`; cancel-safe. Returns when a commit ended and was folded into the
    /// working copy.
    ///
    /// # Errors
    /// The store's error; the changes of that commit stay in the working copy only.
    pub(crate) async fn drive(&mut self) -> Result<(), StoreError> {
        if self.in_flight.is_none() {
            if self.queued.is_empty() {
                return std::future::pending().await;
            }
            tokio::time::sleep_until(self.next_at).await;
            self.start_now();
        }
        let Some(handle) = self.in_flight.as_mut() else {
            unreachable!("a commit was just started")
        };
        let joined = handle.await;
        self.in_flight = None;
        self.next_at = Instant::now() + self.interval;
        let written = joined.map_err(|e| StoreError::Io {
            op: "writing",
            path: self.store.dir().to_owned(),
            source: std::io::Error::other(format!("the store task failed: {e}")),
        })??;
        self.fold(written);
        Ok(())
    }

    /// Writes everything queued and reads back what others wrote: afterwards the store and
    /// the working copy agree. Returns the store version.
    ///
    /// # Errors
    /// The store's error.
    pub(crate) async fn sync(&mut self) -> Result<u64, StoreError> {
        if self.in_flight.is_some() {
            self.drive().await?;
        }
        // Nothing is in flight now; one more commit (possibly of no change) picks up writes by
        // others.
        let changes = std::mem::take(&mut self.queued);
        if !changes.is_empty() {
            self.commits += 1;
            self.batched += changes.len() as u64;
        }
        let store = self.store.clone();
        let known = self.version;
        let written = tokio::task::spawn_blocking(move || write(&store, known, changes))
            .await
            .map_err(|e| StoreError::Io {
                op: "writing",
                path: self.store.dir().to_owned(),
                source: std::io::Error::other(format!("the store task failed: {e}")),
            })??;
        self.fold(written);
        Ok(self.version)
    }

    fn fold(&mut self, written: Written) {
        self.version = written.version;
        if let Some(mut plan) = written.merged {
            self.merges += 1;
            for change in &mut self.queued {
                change(&mut plan);
            }
            self.plan = plan;
        }
    }
}

/// One commit of `changes` (blocking). `known` is the version the working copy was based
/// on: a result other than `known` (+1 when something changed) means others wrote too.
fn write(store: &TodoStore, known: u64, mut changes: Vec<Change>) -> Result<Written, StoreError> {
    let committed = store.update(WRITER, |plan| {
        for change in &mut changes {
            change(plan);
        }
    })?;
    let ours = known + u64::from(committed.changed);
    let merged = if committed.version == ours {
        None
    } else {
        Some(store.snapshot()?.1)
    };
    Ok(Written {
        version: committed.version,
        merged,
    })
}

#[cfg(test)]
mod tests {
    use orch_mvcc::{Item, ItemId, ItemState};

    use super::*;

    fn plan(ids: &[&str]) -> Plan {
        let mut p = Plan::new("t");
        for id in ids {
            p.push(Item::new(ItemId::new(*id).unwrap(), format!("do {id}")).with_files([*id]));
        }
        p
    }

    fn set(id: &'static str, state: ItemState) -> impl FnMut(&mut Plan) + Send + Sync + 'static {
        move |p: &mut Plan| {
            p.set_state(id, state);
        }
    }

    #[tokio::test]
    async fn changes_reach_the_store_batched() {
        let dir = tempfile::tempdir().unwrap();
        let store = TodoStore::open(dir.path()).unwrap();
        let mut w = PlanWriter::new(store.clone(), Duration::ZERO);
        assert_eq!(w.sync().await.unwrap(), 0);
        let initial = plan(&["A", "B", "C"]);
        w.change(move |p| *p = initial.clone());
        w.start();
        // Queued while the first commit is in flight: they go together in the next one.
        w.change(set("A", ItemState::InProgress));
        w.change(set("B", ItemState::InProgress));
        assert_eq!(w.plan().item("A").unwrap().state, ItemState::InProgress);
        let version = w.sync().await.unwrap();
        assert_eq!(version, 2);
        assert_eq!(w.stats(), (2, 3));
        let (v, on_disk) = store.snapshot().unwrap();
        assert_eq!(v, 2);
        assert_eq!(&on_disk, w.plan());
    }

    #[tokio::test]
    async fn writes_by_others_are_merged_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = TodoStore::open(dir.path()).unwrap();
        store.update("seed", |p| *p = plan(&["A", "B"])).unwrap();
        let mut w = PlanWriter::new(store.clone(), Duration::ZERO);
        w.sync().await.unwrap();
        assert_eq!(w.plan().items.len(), 2);
        // Someone else adds an item and finishes B.
        store
            .update("person", |p| {
                p.push(Item::new(ItemId::new("C").unwrap(), "new").with_files(["C"]));
                p.set_state("B", ItemState::Done);
            })
            .unwrap();
        w.change(set("A", ItemState::InProgress));
        w.start();
        // A change queued while that commit is in flight survives the merge.
        w.change(set("A", ItemState::InReview));
        w.drive().await.unwrap();
        let p = w.plan();
        assert_eq!(
            p.items.len(),
            3,
            "the other writer's item is in the working copy"
        );
        assert_eq!(p.item("B").unwrap().state, ItemState::Done);
        assert_eq!(p.item("A").unwrap().state, ItemState::InReview);
        w.sync().await.unwrap();
        assert_eq!(&store.snapshot().unwrap().1, w.plan());
    }

    #[tokio::test]
    async fn a_failed_commit_is_an_error_and_the_working_copy_keeps_the_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = TodoStore::open(dir.path()).unwrap();
        store.update("seed", |p| *p = plan(&["A"])).unwrap();
        let mut w = PlanWriter::new(store.clone(), Duration::ZERO);
        w.sync().await.unwrap();
        // A dependency on a missing item fails validation in the store.
        w.change(|p| {
            if let Some(i) = p.item_mut("A") {
                i.deps.push(ItemId::new("Z").unwrap());
            }
        });
        let err = w.sync().await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidPlan(_)), "{err}");
        assert_eq!(store.snapshot().unwrap().1.item("A").unwrap().deps.len(), 0);
        assert_eq!(w.plan().item("A").unwrap().deps.len(), 1);
    }
}
