//! A Commander loop in miniature: parse a plan, start ready items, mark them done, and print
//! the file and the audit trail.
//!
//! `cargo run -p orch-mvcc --example commander`

use std::error::Error;

use orch_mvcc::{ItemState, TodoStore};

const PLAN: &str = "\
# Add JWT auth

* [ ] T1: Add the JWT middleware
    * Files: `src/auth.rs`
* [ ] T2: Protect the /api routes
    * Files: src/routes/
    * Depends on: T1
* [ ] T3: Document the auth flow
    * Files: docs/auth.md
";

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let store = TodoStore::open(dir.path().join(".orchestrator"))?;
    store.compare_and_swap("planner", 0, orch_mvcc::parse(PLAN)?)?;

    loop {
        let started = store.update("commander", |plan| {
            let ids: Vec<_> = plan.ready_batch().iter().map(|i| i.id.clone()).collect();
            for id in &ids {
                if let Some(item) = plan.item_mut(id) {
                    item.state = ItemState::InProgress;
                    item.attempts += 1;
                }
            }
            ids
        })?;
        if started.value.is_empty() {
            break;
        }
        println!("v{}: started {:?}", started.version, started.value);
        // The workers finish and the reviewer accepts.
        let done = store.update("reviewer", |plan| {
            for id in &started.value {
                plan.set_state(id, ItemState::Done);
            }
        })?;
        println!("v{}: done {:?}", done.version, started.value);
    }

    let (version, plan) = store.snapshot()?;
    println!("\nTODO.md at v{version}:\n{}", orch_mvcc::render(&plan));
    for record in store.audit_records()? {
        println!(
            "v{} {:<10} {:?}",
            record.version,
            record.writer,
            record
                .changes
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }
    println!("audit chain: {:?}", store.verify()?);
    Ok(())
}
