//! A versioned, hand-editable `TODO.md` plan store.
//!
//! The plan of a mission lives in `.orchestrator/TODO.md`: a Markdown checklist that people
//! can read and edit, with one line per item (state, stable id, summary) and indented
//! `files`, `deps`, `attempts` and `note` lines. [`parse`] reads it (forgiving of what
//! language models write, precise about what it rejects) and [`render`] writes the canonical
//! form; `parse(&render(&plan)) == Ok(plan)` for every plan that passes [`Plan::validate`].
//!
//! [`TodoStore`] versions the file. Next to it, `todo.version.json` holds the version
//! number, the blake3 of `TODO.md` and the last writer, and `audit.jsonl` holds one
//! hash-chained record per commit. Changes are optimistic: [`TodoStore::update`] reads a
//! snapshot, runs the caller's closure outside any lock, and compare-and-swaps on the
//! version, retrying with backoff on conflict. The compare-and-swap itself is a short
//! critical section under an OS file lock, so threads *and processes* can share a store.
//!
//! Every commit appends the audit record first, then replaces `TODO.md` and the version file
//! by temp file + fsync + rename + directory fsync ([`Durability::NoSync`] drops the fsyncs).
//! Whatever instant a writer dies at, the next operation finds the files at a committed
//! version: a commit that reached `TODO.md` is completed, one that did not is undone, and a
//! torn audit line is truncated ([`RecoveryEvent`]). An edit made to `TODO.md` outside the
//! store is detected by its hash and committed as a new version by writer `external`; one
//! that does not parse is reported ([`StoreError::ExternalEditInvalid`]) and left alone.
//! [`TodoStore::verify`] walks the audit chain and names the first broken record.
//!
//! ```
//! use orch_mvcc::{Item, ItemId, ItemState, Plan, TodoStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = TodoStore::open(dir.path().join(".orchestrator"))?;
//!
//! let plan = orch_mvcc::parse(
//!     "# Add JWT auth\n\
//!      - [ ] T1: Add the middleware\n  - files: src/auth.rs\n\
//!      - [ ] T2: Protect the routes\n  - deps: T1\n",
//! )?;
//! let v1 = store.compare_and_swap("planner", 0, plan)?;
//!
//! let done = store.update("commander", |plan| {
//!     plan.set_state("T1", ItemState::Done);
//!     plan.ready_items().iter().map(|i| i.id.clone()).collect::<Vec<ItemId>>()
//! })?;
//! assert_eq!(done.version, v1 + 1);
//! assert_eq!(done.value, [ItemId::new("T2")?]);
//!
//! let (version, plan) = store.snapshot()?;
//! assert_eq!(version, 2);
//! assert_eq!(plan.item("T1").map(|i| i.state), Some(ItemState::Done));
//! assert_eq!(store.verify()?.records, 2);
//! # let _ = Item::new(ItemId::new("T3")?, "unused");
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(doctest, doc = include_str!("../README.md"))]

mod audit;
mod error;
mod fsio;
mod grammar;
mod plan;
mod store;

pub use audit::{
    AuditRecord, AuditSummary, GENESIS_HASH, ItemChange, diff_plans, read_audit_log,
    verify_audit_log,
};
pub use error::{AuditError, PlanError, StoreError};
pub use fsio::Durability;
pub use grammar::{is_item_line, parse, render};
pub use plan::{Item, ItemId, ItemState, Plan, StateCounts};
pub use store::{
    AUDIT_FILE, Committed, ConflictRetry, EXTERNAL_WRITER, LOCK_FILE, RecoveryEvent, StoreOptions,
    TODO_FILE, TodoStore, VERSION_FILE,
};
